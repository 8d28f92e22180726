// SPDX-License-Identifier: Apache-2.0
#include "cluster/claims.hpp"

#include <algorithm>

namespace brokerha::cluster {

namespace {

// claims_held frames are cut at this many entries (a node may hold 100,000 sessions), or at
// part_bytes_ (client ids may be long).
constexpr std::size_t kHeldPerFrame = 4096;

// Claims that went ahead without a peer's answer, remembered to take that late answer.
constexpr std::size_t kMaxLate = 4096;

std::uint64_t rendezvous_hash(std::string_view member, std::string_view client_id) noexcept {
  // FNV-1a over "member \0 client id", then a 64-bit finalizer (splitmix64) so that members
  // whose names differ in one character still spread evenly.
  std::uint64_t h = 14695981039346656037ull;
  auto mix = [&h](std::string_view s) {
    for (char c : s) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ull;
    }
  };
  mix(member);
  h ^= 0;
  h *= 1099511628211ull;
  mix(client_id);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace

Claims::Claims(registry::BrokerPort& core, asio::io_context& ctx, std::string self,
               std::chrono::milliseconds timeout, Send send, Peers peers)
    : core_(core),
      ctx_(ctx),
      self_(std::move(self)),
      timeout_(timeout),
      send_(std::move(send)),
      peers_(std::move(peers)) {}

const std::string& Claims::arbiter_of(std::string_view client_id,
                                      const std::vector<std::string>& members) {
  const std::string* best = &members.front();
  std::uint64_t best_hash = rendezvous_hash(*best, client_id);
  for (const std::string& m : members) {
    const std::uint64_t h = rendezvous_hash(m, client_id);
    if (h > best_hash || (h == best_hash && m > *best)) {
      best = &m;
      best_hash = h;
    }
  }
  return *best;
}

void Claims::claim(std::string client_id, bool resume, unsigned shard,
                   std::function<void(router::ClaimResult)> done) {
  counters_.claims.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t request = next_request_++;
  Pending& p = pending_[request];
  p.client_id = std::move(client_id);
  p.resume = resume;
  p.shard = shard;
  p.done = std::move(done);
  by_client_.emplace(p.client_id, request);

  std::vector<std::string> members{self_};
  std::vector<PeerView> peers = peers_();
  for (const PeerView& v : peers) {
    if (v.member) members.push_back(v.name);
  }
  const std::string& arbiter = arbiter_of(p.client_id, members);
  const bool reachable = std::any_of(peers.begin(), peers.end(),
                                     [&](const PeerView& v) { return v.name == arbiter && v.up; });
  if (arbiter == self_ || !reachable) {
    // This node arbitrates (or must: the arbiter has no link now, as during a partition).
    stamp(request, clock_.now());
    return;
  }
  p.arbiter = arbiter;
  send_(arbiter, Kind::claim_request, encode_claim_request(request, p.client_id));
  p.timer = std::make_unique<asio::steady_timer>(ctx_, timeout_);
  p.timer->async_wait([this, request](const std::error_code& ec) {
    if (ec) return;
    auto it = pending_.find(request);
    if (it == pending_.end() || it->second.version) return;
    counters_.arbiter_timeouts.fetch_add(1, std::memory_order_relaxed);
    stamp(request, clock_.now());
  });
}

void Claims::stamp(std::uint64_t request, std::uint64_t hlc) {
  auto it = pending_.find(request);
  if (it == pending_.end() || it->second.version) return;
  Pending& p = it->second;
  clock_.observe(hlc);
  p.arbiter.clear();
  p.version = ClaimVersion{hlc, self_};
  if (p.timer) p.timer->cancel();
  TakeRequest t;
  t.request = request;
  t.client_id = p.client_id;
  t.version = *p.version;
  t.resume = p.resume;
  std::string body;
  for (const PeerView& v : peers_()) {
    // A member whose link is coming (it rejoined after a drain, a restart or a healed
    // partition, and its link is still being dialled) may hold the session: it is asked when
    // its link comes up (on_up) within the same bound. A member whose link went down is not
    // waited for (it may be dying: every connect would wait for its failure detection).
    // Nothing is queued for a peer whose link is down: a request that waits in a queue would
    // arrive after the claim is settled; claims_held settles the id with that peer when the
    // link comes back.
    if (!v.up) {
      if (v.member && v.coming) {
        p.waiting.insert(v.name);
        p.unasked.insert(v.name);
      }
      continue;
    }
    if (body.empty()) body = encode_take_request(t);
    p.waiting.insert(v.name);
    send_(v.name, Kind::take_request, body);
  }
  if (p.waiting.empty()) {
    finish(request);
    return;
  }
  p.take_cap = std::chrono::steady_clock::now() + kTakeWaitCap * timeout_;
  arm_take_wait(request);
}

void Claims::arm_take_wait(std::uint64_t request) {
  Pending& p = pending_.at(request);
  const auto until = std::min(std::chrono::steady_clock::now() + 2 * timeout_, p.take_cap);
  if (!p.timer) p.timer = std::make_unique<asio::steady_timer>(ctx_);
  p.timer->expires_at(until);  // a wait armed before ends with operation_aborted
  p.timer->async_wait([this, request](const std::error_code& ec) {
    if (ec) return;
    if (pending_.count(request) == 0) return;
    counters_.take_timeouts.fetch_add(1, std::memory_order_relaxed);
    finish(request);
  });
}

void Claims::finish(std::uint64_t request) {
  auto it = pending_.find(request);
  if (it == pending_.end()) return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  for (const std::string& peer : p.waiting) remember_late(peer, request);
  for (auto [b, e] = by_client_.equal_range(p.client_id); b != e; ++b) {
    if (b->second == request) {
      by_client_.erase(b);
      break;
    }
  }
  if (p.timer) p.timer->cancel();
  router::ClaimResult result;
  result.won = !p.superseded;
  result.version = p.version.value_or(ClaimVersion{});
  if (p.superseded) {
    counters_.claims_lost.fetch_add(1, std::memory_order_relaxed);
    if (!p.move_peer.empty()) {
      // The session is not taken after all: its old node keeps it.
      send_(p.move_peer, Kind::take_ack,
            encode_take_ack(TakeAck{p.move_request, p.client_id, false}));
    }
  } else {
    result.session = std::move(p.session);
    if (!p.move_peer.empty()) {
      result.moved = [this, peer = p.move_peer, request = p.move_request, id = p.client_id](
                         bool ok, std::function<void(std::string)> then) {
        asio::post(ctx_, [this, peer, request, id, ok, then = std::move(then)]() mutable {
          send_(peer, Kind::take_ack, encode_take_ack(TakeAck{request, id, ok}));
          if (!ok) return;
          TrailWait& w = trail_waits_[{peer, request}];
          w.then = std::move(then);
          // Bounded: the old node withdraws its routes (up to the route ack bound) first.
          arm_trail_wait({peer, request});
        });
      };
    }
  }
  core_.on_shard(p.shard, [done = std::move(p.done), r = std::move(result)](
                              registry::ShardAccess&) mutable { done(std::move(r)); });
}

bool Claims::on_frame(const std::string& peer, Kind kind, std::string_view body) {
  switch (kind) {
    case Kind::claim_request: {
      ClaimRequest r;
      if (!decode_claim_request(body, r)) return false;
      // Arbiter: claims are ordered by the readings of this one clock.
      send_(peer, Kind::claim_grant, encode_claim_grant(r.request, clock_.now()));
      return true;
    }
    case Kind::claim_grant: {
      std::uint64_t request = 0, hlc = 0;
      if (!decode_claim_grant(body, request, hlc)) return false;
      // A stamp too far in the future is ignored: the claim is stamped here at the bound.
      if (!skew_ok(hlc)) return true;
      auto it = pending_.find(request);
      if (it != pending_.end() && it->second.arbiter == peer) stamp(request, hlc);
      return true;
    }
    case Kind::take_request: {
      TakeRequest t;
      if (!decode_take_request(body, t)) return false;
      on_take_request(peer, t);
      return true;
    }
    case Kind::take_reply: {
      TakeReply r;
      if (!decode_take_reply(body, r)) return false;
      on_take_reply(peer, r);
      return true;
    }
    case Kind::session_part: {
      std::uint64_t request = 0;
      std::string_view slice;
      if (!decode_session_part(body, request, slice)) return false;
      incoming_[{peer, request}].append(slice.data(), slice.size());
      // A session on its way to a claim of ours: its parts are progress, the wait goes on.
      if (auto it = pending_.find(request);
          it != pending_.end() && it->second.version && it->second.waiting.count(peer) != 0) {
        arm_take_wait(request);
      }
      // ... or the trail of a session that moved here: the wait for its end goes on too.
      if (auto w = trail_waits_.find({peer, request}); w != trail_waits_.end() && w->second.timer) {
        arm_trail_wait(w->first);
      }
      return true;
    }
    case Kind::take_ack: {
      TakeAck a;
      if (!decode_take_ack(body, a)) return false;
      auto it = moving_.find({peer, a.request});
      if (it == moving_.end() || it->second.client_id != a.client_id) {
        // Nothing moving (given back meanwhile): a claimant of version 3 waits for the trail.
        if (a.ok && proto_of(peer) >= 3) {
          send_(peer, Kind::trail_end, encode_trail_end(a.request, a.client_id));
        }
        return true;
      }
      const bool trail = it->second.trail;
      const std::string client_id = it->second.client_id;
      forget_moving(it, !a.ok);
      if (trail && a.ok) end_trail(peer, a.request, client_id);
      return true;
    }
    case Kind::trail_end: {
      std::uint64_t request = 0;
      std::string_view id;
      if (!decode_trail_end(body, request, id)) return false;
      std::string bytes;
      if (auto in = incoming_.find({peer, request}); in != incoming_.end()) {
        bytes = std::move(in->second);
        incoming_.erase(in);
      }
      if (auto w = trail_waits_.find({peer, request}); w != trail_waits_.end()) {
        // Messages a peer sent here before it stopped sending to the old node may still be
        // on their way (another link): once every peer acknowledged a route announcement
        // made now, they are here, and all of them are queued after the trail (marked DUP).
        if (w->second.timer) w->second.timer->cancel();
        w->second.timer.reset();
        routes_({}, [this, key = w->first, b = std::move(bytes)]() mutable {
          asio::post(ctx_, [this, key, b = std::move(b)]() mutable {
            after_shards(2, [this, key, b = std::move(b)]() mutable {
              finish_trail_wait(key, std::move(b));
            });
          });
        });
      } else if (!bytes.empty()) {
        // Late (the client was answered without it): what it holds goes after the rest.
        std::string client_id(id);
        core_.on_shard(core_.home_shard(client_id), [client_id, b = std::move(bytes)](
                                                        registry::ShardAccess& shard) {
          shard.sessions.splice_trail(client_id, b, SIZE_MAX, std::chrono::steady_clock::now());
        });
      }
      return true;
    }
    case Kind::session_handoff: {
      HandOffFrame h;
      if (!decode_session_handoff(body, h)) return false;
      std::string bytes;
      if (auto in = incoming_.find({peer, h.request}); in != incoming_.end()) {
        bytes = std::move(in->second);
        incoming_.erase(in);
      }
      if (!clock_.observe(h.version.hlc)) {
        // Refused: the sender keeps the session.
        counters_.clock_skew_refused.fetch_add(1, std::memory_order_relaxed);
        send_(peer, Kind::take_ack, encode_take_ack(TakeAck{h.request, h.client_id, false}));
        return true;
      }
      std::string client_id(h.client_id);
      core_.on_shard(core_.home_shard(client_id), [this, peer, request = h.request, client_id,
                                                   version = h.version, b = std::move(bytes)](
                                                      registry::ShardAccess& shard) {
        const bool ok =
            shard.sessions.receive_hand_off(version, b, std::chrono::steady_clock::now());
        asio::post(ctx_, [this, peer, request, client_id, ok] {
          if (ok) counters_.sessions_moved_in.fetch_add(1, std::memory_order_relaxed);
          send_(peer, Kind::take_ack, encode_take_ack(TakeAck{request, client_id, ok}));
        });
      });
      return true;
    }
    case Kind::claims_held: {
      std::vector<HeldClaim> held;
      if (!decode_claims_held(body, held)) return false;
      // Grouped per home shard: one post each.
      std::vector<std::vector<HeldClaim>> per_shard(core_.shard_count());
      for (HeldClaim& h : held) {
        if (!clock_.observe(h.version.hlc)) {
          // Not newer than what is held here: nothing yields to it.
          counters_.clock_skew_refused.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        per_shard[core_.home_shard(h.client_id)].push_back(std::move(h));
      }
      for (unsigned i = 0; i < per_shard.size(); ++i) {
        if (per_shard[i].empty()) continue;
        core_.on_shard(
            i, [this, peer, list = std::move(per_shard[i])](registry::ShardAccess& shard) {
              std::uint64_t n = 0;
              const auto now = std::chrono::steady_clock::now();
              std::vector<registry::SessionRegistry::HandOff> yielded;
              for (const HeldClaim& h : list) {
                // The older holder of an id yields: the newer claim wins after a partition, and
                // what this side's session holds goes to it, to be merged into its session.
                std::string exported;
                if (shard.sessions.take(h.client_id, h.version, router::TakeMode::yield, exported,
                                        now) == router::TakeResult::discarded) {
                  ++n;
                  if (!exported.empty()) {
                    yielded.push_back({h.client_id, h.version, std::move(exported)});
                  }
                }
              }
              if (n != 0) counters_.taken_over.fetch_add(n, std::memory_order_relaxed);
              if (yielded.empty()) return;
              asio::post(ctx_, [this, peer, yielded = std::move(yielded)]() mutable {
                for (auto& h : yielded) hand_to(peer, h, false);
              });
            });
      }
      return true;
    }
    default:
      return false;
  }
}

void Claims::on_take_request(const std::string& peer, const TakeRequest& t) {
  std::string client_id(t.client_id);
  TakeReply reply;
  reply.request = t.request;
  reply.client_id = client_id;
  reply.version = t.version;
  if (!clock_.observe(t.version.hlc)) {
    // A claim stamped too far in the future is not newer than anything: the claimant's
    // connect is refused (CONNACK 0x89) and nothing here is taken.
    counters_.clock_skew_refused.fetch_add(1, std::memory_order_relaxed);
    reply.outcome = TakeOutcome::newer_here;
    send_(peer, Kind::take_reply, encode_take_reply(reply));
    return;
  }
  for (auto [b, e] = by_client_.equal_range(client_id); b != e; ++b) {
    Pending& mine = pending_.at(b->second);
    if (!mine.version) continue;  // not stamped yet: its stamp will be newer than this one's
    if (mine.version->newer_than(t.version)) {
      reply.outcome = TakeOutcome::newer_here;
      send_(peer, Kind::take_reply, encode_take_reply(reply));
      return;
    }
    mine.superseded = true;
  }
  const unsigned home = core_.home_shard(client_id);
  const router::TakeMode mode = t.resume ? router::TakeMode::move : router::TakeMode::discard;
  // Version 3: a moved session leaves a trail here, ended once the claimant has it.
  const bool trail = mode == router::TakeMode::move && routes_ && proto_of(peer) >= 3;
  // The shard flushes right after: the DISCONNECT 0x8E and the withdrawn routes go out.
  core_.on_shard(home, [this, peer, client_id = std::move(client_id), version = t.version,
                        request = t.request, mode, trail](registry::ShardAccess& shard) {
    std::string exported;
    const router::TakeResult r = shard.sessions.take(client_id, version, mode, exported,
                                                     std::chrono::steady_clock::now(), trail);
    if (r == router::TakeResult::moved || r == router::TakeResult::discarded) {
      counters_.taken_over.fetch_add(1, std::memory_order_relaxed);
    }
    asio::post(ctx_,
               [this, peer, client_id, version, request, r, trail, exported = std::move(exported)] {
                 TakeReply answer;
                 answer.request = request;
                 answer.client_id = client_id;
                 answer.version = version;
                 switch (r) {
                   case router::TakeResult::none:
                     answer.outcome = TakeOutcome::none;
                     break;
                   case router::TakeResult::moved:
                     counters_.sessions_moved_out.fetch_add(1, std::memory_order_relaxed);
                     send_moved(peer, answer, exported, trail);
                     return;
                   case router::TakeResult::discarded:
                     answer.outcome = TakeOutcome::discarded;
                     break;
                   case router::TakeResult::newer_here:
                     answer.outcome = TakeOutcome::newer_here;
                     break;
                 }
                 send_(peer, Kind::take_reply, encode_take_reply(answer));
               });
  });
}

void Claims::send_moved(const std::string& peer, TakeReply& answer, const std::string& bytes,
                        bool trail) {
  std::uint8_t proto = 1;
  for (const PeerView& v : peers_()) {
    if (v.name == peer) proto = v.proto;
  }
  if (proto < 2) {
    // Version 1: the session in the reply itself. A reply the link cannot carry (larger than
    // a frame) does not destroy the session: it stays here, offline.
    answer.outcome = TakeOutcome::moved;
    answer.session = bytes;
    if (!send_(peer, Kind::take_reply, encode_take_reply(answer))) {
      counters_.moves_refused.fetch_add(1, std::memory_order_relaxed);
      restore(answer.client_id, answer.version, bytes);
    }
    return;
  }
  // Version 2: the bytes in session_part slices, then the reply; this node keeps a copy
  // until the claimant acknowledges it (take_ack), or gives the session back to its shard if
  // the claimant refuses it, restarts or is forgotten.
  bool sent = send_parts(peer, answer.request, bytes);
  answer.outcome = TakeOutcome::moved_in_parts;
  if (sent) sent = send_(peer, Kind::take_reply, encode_take_reply(answer));
  if (!sent) {
    counters_.moves_refused.fetch_add(1, std::memory_order_relaxed);
    restore(answer.client_id, answer.version, bytes);
    return;
  }
  Moving& m = moving_[{peer, answer.request}];
  m.client_id.assign(answer.client_id.data(), answer.client_id.size());
  m.version = answer.version;
  m.bytes = bytes;
  m.trail = trail;
}

bool Claims::send_parts(const std::string& peer, std::uint64_t request, const std::string& bytes) {
  bool sent = true;
  for (std::size_t at = 0; sent && at < bytes.size(); at += part_bytes_) {
    const std::string_view slice = std::string_view(bytes).substr(at, part_bytes_);
    sent = send_(peer, Kind::session_part, encode_session_part(request, slice));
  }
  return sent;
}

Claims::MovingMap::iterator Claims::forget_moving(MovingMap::iterator it, bool restore_it) {
  if (restore_it) restore(it->second.client_id, it->second.version, it->second.bytes);
  if (it->second.hand_off) hand_offs_pending_.fetch_sub(1);
  return moving_.erase(it);
}

void Claims::hand_off_all() {
  // Collected from every shard (each exports and removes its own), then sent from here.
  struct Gather {
    std::vector<registry::SessionRegistry::HandOff> all;
    unsigned left = 0;
  };
  auto g = std::make_shared<Gather>();
  g->left = core_.shard_count();
  for (unsigned i = 0; i < core_.shard_count(); ++i) {
    core_.on_shard(i, [this, g](registry::ShardAccess& shard) {
      std::vector<registry::SessionRegistry::HandOff> mine;
      shard.sessions.hand_off_all(mine, std::chrono::steady_clock::now());
      asio::post(ctx_, [this, g, mine = std::move(mine)]() mutable {
        for (auto& m : mine) g->all.push_back(std::move(m));
        if (--g->left != 0) return;
        std::vector<std::string> names;
        for (const PeerView& v : peers_()) {
          if (v.member && v.up && v.proto >= 2) names.push_back(v.name);
        }
        for (auto& h : g->all) {
          if (names.empty()) {
            restore(h.client_id, h.version, h.bytes);
            continue;
          }
          // The node that arbitrates the id once this one is gone: a client that comes back
          // anywhere finds the session there through its take_request.
          hand_to(arbiter_of(h.client_id, names), h, true);
        }
        hand_offs_sent_.store(true);
      });
    });
  }
}

void Claims::hand_to(const std::string& peer, registry::SessionRegistry::HandOff& h, bool drain) {
  std::uint8_t proto = 1;
  for (const PeerView& v : peers_()) {
    if (v.name == peer) proto = v.proto;
  }
  if (proto < 2) {
    // A peer of version 1 knows no hand-off: kept here when draining (as before), dropped
    // when yielding after a partition (as before).
    if (drain) restore(h.client_id, h.version, h.bytes);
    return;
  }
  const std::uint64_t request = next_request_++;
  const bool sent =
      send_parts(peer, request, h.bytes) &&
      send_(peer, Kind::session_handoff, encode_session_handoff({request, h.client_id, h.version}));
  if (!sent) {
    counters_.moves_refused.fetch_add(1, std::memory_order_relaxed);
    restore(h.client_id, h.version, h.bytes);
    return;
  }
  counters_.sessions_moved_out.fetch_add(1, std::memory_order_relaxed);
  if (drain) hand_offs_pending_.fetch_add(1);
  Moving& m = moving_[{peer, request}];
  m.client_id = std::move(h.client_id);
  m.version = h.version;
  m.bytes = std::move(h.bytes);
  m.hand_off = drain;
}

void Claims::restore(std::string_view client_id, const ClaimVersion& version,
                     const std::string& bytes) {
  counters_.moves_restored.fetch_add(1, std::memory_order_relaxed);
  std::string id(client_id);
  core_.on_shard(core_.home_shard(id), [version, bytes](registry::ShardAccess& shard) {
    shard.sessions.adopt(version, bytes, std::chrono::steady_clock::now());
  });
}

void Claims::on_gone(const std::string& peer) {
  std::vector<std::pair<std::string, std::uint64_t>> waits;
  for (auto it = trail_waits_.lower_bound({peer, 0});
       it != trail_waits_.end() && it->first.first == peer; ++it) {
    waits.push_back(it->first);
  }
  for (const auto& key : waits) finish_trail_wait(key, {});
  incoming_.erase(incoming_.lower_bound({peer, 0}), incoming_.lower_bound({peer + '\0', 0}));
  late_.erase(late_.lower_bound({peer, 0}), late_.lower_bound({peer + '\0', 0}));
  for (auto it = moving_.lower_bound({peer, 0}); it != moving_.end() && it->first.first == peer;) {
    it = forget_moving(it, true);
  }
}

void Claims::on_take_reply(const std::string& peer, const TakeReply& r) {
  auto it = pending_.find(r.request);
  const bool ours =
      it != pending_.end() && it->second.version && it->second.client_id == r.client_id &&
      !it->second.version->newer_than(r.version) && !r.version.newer_than(*it->second.version) &&
      it->second.waiting.count(peer) != 0;
  const bool in_parts = r.outcome == TakeOutcome::moved_in_parts;
  std::string parts;
  if (in_parts) {
    auto in = incoming_.find({peer, r.request});
    if (in != incoming_.end()) {
      parts = std::move(in->second);
      incoming_.erase(in);
    }
  }
  const std::string_view bytes = in_parts ? std::string_view(parts) : r.session;
  if (!ours && late_.erase({peer, r.request}) == 0) {
    // Answers no request of this node (none open with that peer, or answered already):
    // dropped. A sender of a session in parts is told, and keeps it.
    counters_.unsolicited.fetch_add(1, std::memory_order_relaxed);
    if (in_parts)
      send_(peer, Kind::take_ack, encode_take_ack(TakeAck{r.request, r.client_id, false}));
    return;
  }
  if (!ours) {
    // A late answer (the claim went ahead without it). A session in it is not thrown away:
    // it is installed as an offline session if its claim still holds the id; if it cannot
    // be (in parts), the sender is told and keeps it.
    if ((r.outcome == TakeOutcome::moved || in_parts) && !skew_ok(r.version.hlc)) {
      if (in_parts)
        send_(peer, Kind::take_ack, encode_take_ack(TakeAck{r.request, r.client_id, false}));
      return;
    }
    if (r.outcome == TakeOutcome::moved || in_parts) {
      counters_.sessions_moved_in.fetch_add(1, std::memory_order_relaxed);
      std::string client_id(r.client_id);
      core_.on_shard(
          core_.home_shard(client_id),
          [this, peer, in_parts, request = r.request, client_id, version = r.version,
           b = std::string(bytes)](registry::ShardAccess& shard) {
            const bool ok = shard.sessions.adopt(version, b, std::chrono::steady_clock::now());
            if (!in_parts) return;
            asio::post(ctx_, [this, peer, request, client_id, ok] {
              send_(peer, Kind::take_ack, encode_take_ack(TakeAck{request, client_id, ok}));
            });
          });
    }
    return;
  }
  Pending& p = it->second;
  p.waiting.erase(peer);
  switch (r.outcome) {
    case TakeOutcome::moved:
    case TakeOutcome::moved_in_parts: {
      counters_.sessions_moved_in.fetch_add(1, std::memory_order_relaxed);
      // Two holders (after a partition) cannot both be resumed: the first answer is kept,
      // and a sender of the second (in parts) keeps its copy.
      const bool keep = p.session.empty() && !p.superseded && !bytes.empty();
      if (keep) p.session.assign(bytes.data(), bytes.size());
      if (keep && in_parts && proto_of(peer) >= 3) {
        // Version 3: acknowledged once installed with its routes known (ClaimResult::moved).
        p.move_peer = peer;
        p.move_request = r.request;
      } else if (in_parts) {
        send_(peer, Kind::take_ack, encode_take_ack(TakeAck{r.request, r.client_id, keep}));
      }
      break;
    }
    case TakeOutcome::newer_here:
      p.superseded = true;
      break;
    case TakeOutcome::none:
    case TakeOutcome::discarded:
      break;
  }
  if (p.waiting.empty()) finish(r.request);
}

void Claims::on_up(const std::string& peer) {
  // Claims stamped while its link was down ask it now (before claims_held, which only
  // settles ids already held).
  for (auto& [request, p] : pending_) {
    if (!p.version || p.unasked.erase(peer) == 0) continue;
    TakeRequest t;
    t.request = request;
    t.client_id = p.client_id;
    t.version = *p.version;
    t.resume = p.resume;
    send_(peer, Kind::take_request, encode_take_request(t));
  }
  send_held(peer);
}

void Claims::on_down(const std::string& peer) {
  std::vector<std::uint64_t> ready, restamp;
  for (auto& [request, p] : pending_) {
    if (p.arbiter == peer && !p.version) {
      restamp.push_back(request);
    } else {
      // A member whose link was down when the claim was stamped and that failed before it
      // came back was never asked: not waited for, and no answer is expected from it.
      const bool asked = p.unasked.erase(peer) == 0;
      if (p.waiting.erase(peer) != 0) {
        // The link re-sends what it did not deliver: the answer may still come, late.
        if (asked) remember_late(peer, request);
        if (p.waiting.empty()) ready.push_back(request);
      }
    }
  }
  for (std::uint64_t r : restamp) {
    counters_.arbiter_timeouts.fetch_add(1, std::memory_order_relaxed);
    stamp(r, clock_.now());
  }
  for (std::uint64_t r : ready) finish(r);
}

void Claims::send_held(const std::string& peer) {
  // Collected from every shard (each reads its own table), then sent from here.
  struct Gather {
    std::vector<std::pair<std::string, ClaimVersion>> all;
    unsigned left = 0;
  };
  auto g = std::make_shared<Gather>();
  g->left = core_.shard_count();
  for (unsigned i = 0; i < core_.shard_count(); ++i) {
    core_.on_shard(i, [this, g, peer](registry::ShardAccess& shard) {
      std::vector<std::pair<std::string, ClaimVersion>> mine;
      shard.sessions.held_claims(mine);
      asio::post(ctx_, [this, g, peer, mine = std::move(mine)]() mutable {
        for (auto& m : mine) g->all.push_back(std::move(m));
        if (--g->left != 0) return;
        std::vector<HeldClaim> frame;
        std::size_t bytes = 0;
        for (std::size_t k = 0; k < g->all.size(); ++k) {
          bytes += g->all[k].first.size() + g->all[k].second.node.size() + 16;
          frame.push_back(HeldClaim{std::move(g->all[k].first), std::move(g->all[k].second)});
          if (frame.size() == kHeldPerFrame || bytes >= part_bytes_ || k + 1 == g->all.size()) {
            send_(peer, Kind::claims_held, encode_claims_held(frame));
            frame.clear();
            bytes = 0;
          }
        }
      });
    });
  }
}

void Claims::stop() {
  for (auto& [request, p] : pending_) {
    if (p.timer) p.timer->cancel();
  }
  for (auto& [key, w] : trail_waits_) {
    if (w.timer) w.timer->cancel();
  }
  trail_waits_.clear();
  pending_.clear();
  by_client_.clear();
}

ClaimStats Claims::stats() const {
  ClaimStats s;
  s.claims = counters_.claims.load(std::memory_order_relaxed);
  s.claims_lost = counters_.claims_lost.load(std::memory_order_relaxed);
  s.arbiter_timeouts = counters_.arbiter_timeouts.load(std::memory_order_relaxed);
  s.take_timeouts = counters_.take_timeouts.load(std::memory_order_relaxed);
  s.sessions_moved_in = counters_.sessions_moved_in.load(std::memory_order_relaxed);
  s.sessions_moved_out = counters_.sessions_moved_out.load(std::memory_order_relaxed);
  s.taken_over = counters_.taken_over.load(std::memory_order_relaxed);
  s.moves_refused = counters_.moves_refused.load(std::memory_order_relaxed);
  s.moves_restored = counters_.moves_restored.load(std::memory_order_relaxed);
  s.clock_skew_refused = counters_.clock_skew_refused.load(std::memory_order_relaxed);
  s.unsolicited = counters_.unsolicited.load(std::memory_order_relaxed);
  return s;
}

void Claims::remember_late(const std::string& peer, std::uint64_t request) {
  // Bounded: peers that never answer do not grow it for ever.
  if (late_.size() >= kMaxLate) late_.erase(late_.begin());
  late_.emplace(peer, request);
}

bool Claims::skew_ok(std::uint64_t hlc) {
  if (clock_.acceptable(hlc)) return true;
  counters_.clock_skew_refused.fetch_add(1, std::memory_order_relaxed);
  return false;
}

std::uint8_t Claims::proto_of(const std::string& peer) const {
  for (const PeerView& v : peers_()) {
    if (v.name == peer) return v.proto;
  }
  return 1;
}

void Claims::end_trail(const std::string& peer, std::uint64_t request,
                       const std::string& client_id) {
  const unsigned home = core_.home_shard(client_id);
  core_.on_shard(home, [this, peer, request, client_id, home](registry::ShardAccess& shard) {
    std::vector<std::string> changes;
    const bool held = shard.sessions.unroute_trail(client_id, changes);
    asio::post(
        ctx_, [this, peer, request, client_id, home, held, changes = std::move(changes)]() mutable {
          auto send_trail = [this, peer, request, client_id](const std::string& bytes) {
            const bool sent = send_parts(peer, request, bytes) &&
                              send_(peer, Kind::trail_end, encode_trail_end(request, client_id));
            if (!sent) counters_.moves_refused.fetch_add(1, std::memory_order_relaxed);
          };
          if (!held) {
            send_trail({});
            return;
          }
          // Once every peer acknowledged the withdrawal, nothing more is sent here for these
          // filters; what was sent before reached this node first (links are ordered). Then one
          // hop through this thread and two through the shards (a routed batch, then its flush)
          // let those messages reach the trail before it ends.
          routes_(std::move(changes), [this, home, client_id, send_trail] {
            asio::post(ctx_, [this, home, client_id, send_trail] {
              after_shards(2, [this, home, client_id, send_trail] {
                core_.on_shard(home, [this, client_id, send_trail](registry::ShardAccess& at) {
                  std::string bytes =
                      at.sessions.end_trail(client_id, std::chrono::steady_clock::now());
                  asio::post(ctx_, [send_trail, b = std::move(bytes)] { send_trail(b); });
                });
              });
            });
          });
        });
  });
}

void Claims::after_shards(int rounds, std::function<void()> then) {
  if (rounds <= 0) {
    then();
    return;
  }
  auto left = std::make_shared<unsigned>(core_.shard_count());
  auto next = std::make_shared<std::function<void()>>(std::move(then));
  for (unsigned i = 0; i < core_.shard_count(); ++i) {
    core_.on_shard(i, [this, left, next, rounds](registry::ShardAccess&) {
      asio::post(ctx_, [this, left, next, rounds] {
        if (--*left == 0) after_shards(rounds - 1, std::move(*next));
      });
    });
  }
}

void Claims::arm_trail_wait(const std::pair<std::string, std::uint64_t>& key) {
  TrailWait& w = trail_waits_.at(key);
  if (!w.timer) w.timer = std::make_unique<asio::steady_timer>(ctx_);
  w.timer->expires_after(2 * timeout_);  // a wait armed before ends with operation_aborted
  w.timer->async_wait([this, key](const std::error_code& ec) {
    if (!ec) finish_trail_wait(key, {});
  });
}

void Claims::finish_trail_wait(const std::pair<std::string, std::uint64_t>& key,
                               std::string bytes) {
  auto it = trail_waits_.find(key);
  if (it == trail_waits_.end()) return;
  TrailWait w = std::move(it->second);
  trail_waits_.erase(it);
  if (w.timer) w.timer->cancel();
  if (w.then) w.then(std::move(bytes));
}

}  // namespace brokerha::cluster
