// SPDX-License-Identifier: Apache-2.0
#include "cluster/node.hpp"

#include <brokerha/testing.hpp>

#include <algorithm>
#include <cstdio>
#include <future>

#include "bus/message_json.hpp"
#include "membership/stream_seam.hpp"
#include "topic/topic.hpp"
#include "util/lifecycle.hpp"

namespace brokerha::cluster {

namespace {

using SteadyClock = std::chrono::steady_clock;

// A joined node reports itself caught up (ready) at the latest this long after it joined,
// whatever a silent member has not sent it.
constexpr std::chrono::seconds kCatchUpBound{30};

std::shared_ptr<const std::string> shared(std::string s) {
  return std::make_shared<const std::string>(std::move(s));
}

std::string endpoint_text(const std::string& address, std::uint16_t port) {
  if (address.find(':') != std::string::npos) return "[" + address + "]:" + std::to_string(port);
  return address + ":" + std::to_string(port);
}

// A filter a peer announces: plain, or "$share/g/f" for a group it has members of.
bool valid_remote_filter(std::string_view f) { return topic::is_valid_filter(f); }

// A group a peer asks this node to serve (publish_shared).
bool valid_share(std::string_view f) {
  topic::SharedFilter shared;
  return topic::parse_shared(f, shared) && topic::is_valid_filter(f);
}

}  // namespace

Node::Node(registry::BrokerPort& core, ClusterOptions options, std::shared_ptr<Bus> bus)
    : core_(core), options_(std::move(options)), bus_(std::move(bus)) {
  if (bus_) {
    new_member_ = bus_->channel(bus_channels::kNewMember);
    message_from_ = bus_->channel(bus_channels::kMessageFrom);
    message_to_ = bus_->channel(bus_channels::kMessageTo);
  }
  incoming_.resize(core_.shard_count());
}

Node::~Node() { stop(false); }

std::uint16_t Node::port() const noexcept {
  return membership_ ? membership_->bound_port() : std::uint16_t{0};
}

void Node::start() {
  if (started_.exchange(true)) throw std::system_error(make_error_code(errc::already_started));
  boot_epoch_ = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
  LinkOptions lo;
  lo.node_name = options_.membership.name;
  lo.boot_epoch = boot_epoch_;
  lo.secret_key = options_.membership.secret_key;
  lo.secret_keys = options_.membership.secret_keys;
  {
    std::lock_guard<std::mutex> lock(info_mutex_);
    keys_ = options_.membership.keyring();
  }
  lo.max_queue_bytes = options_.link_queue_bytes;
  lo.max_pending_inbound = options_.max_inbound_links;
  lo.max_frame_bytes = std::size_t{core_.max_packet_size()} + 65536;
  max_body_ = lo.max_frame_bytes - kLinkMinLength;
  // Large transfers are cut into frames of about this size: 256 KiB, or less when the
  // largest frame is small (one entry of max_packet_size still fits beside a cut).
  frame_target_ = std::min<std::size_t>(256 * 1024, max_body_ / 2);
  LinkManager::Handlers h;
  h.on_frame = [this](const std::string& peer, std::uint8_t kind, std::string_view body) {
    on_frame(peer, kind, body);
  };
  h.on_up = [this](const std::string& peer, std::uint64_t epoch) { on_up(peer, epoch); };
  h.on_down = [this](const std::string& peer) { on_down(peer); };
  links_ = std::make_unique<LinkManager>(ctx_, std::move(lo), std::move(h));
  claims_ = std::make_unique<Claims>(
      core_, ctx_, options_.membership.name, options_.route_ack_timeout,
      [this](const std::string& peer, Kind kind, std::string body) {
        return send_control(peer, kind, shared(std::move(body)));
      },
      [this] {
        std::vector<Claims::PeerView> v;
        v.reserve(peers_.size());
        for (const auto& [name, p] : peers_) {
          v.push_back(Claims::PeerView{name, p.member, p.up, p.proto, p.link_expected});
        }
        return v;
      });
  claims_->set_part_bytes(frame_target_);
  claims_->set_max_clock_skew(options_.max_clock_skew);
  claims_->set_routes([this](std::vector<std::string> filters, std::function<void()> done) {
    apply_route_changes(filters, std::move(done), true);
  });

  membership_ = std::make_unique<Membership>(options_.membership);
  membership_->set_event_callback(
      [this](const MemberEvent& e) { asio::post(ctx_, [this, e] { on_member_event(e); }); });
  membership::set_stream_handler(
      *membership_, [this](int fd, std::string_view first) { links_->accept(fd, first); });
  membership_->start();  // throws: the port is taken, bad options

  const DiscoveryOptions& d = options_.discovery;
  if (!d.domain.empty() || !d.members.empty()) {
    DiscoveryOptions dopts = d;
    const std::string& adv = options_.membership.advertise_address.empty()
                                 ? options_.membership.bind_address
                                 : options_.membership.advertise_address;
    const std::uint16_t adv_port = options_.membership.advertise_port != 0
                                       ? options_.membership.advertise_port
                                       : membership_->bound_port();
    dopts.self_addresses.push_back(endpoint_text(adv, adv_port));
    try {
      discovery_ = std::make_unique<discovery::Engine>(
          ctx_, std::move(dopts), [this](const DiscoveryResult& r) { on_discovery(r); });
    } catch (...) {
      membership_->stop();
      throw;
    }
  }

  work_.emplace(asio::make_work_guard(ctx_));
  asio::post(ctx_, [this] {
    for (std::string& f : core_.router().routes().local_filters()) announced_.insert(std::move(f));
  });
  thread_ = util::start_guarded_thread("the cluster thread", [this] { ctx_.run(); });
  joiner_ = std::thread([this] { joiner_loop(); });
  if (discovery_) discovery_->start();
  asio::post(ctx_, [this] { schedule_repair(); });
}

void Node::stop(bool leave) noexcept {
  if (!started_.load() || stopped_.exchange(true)) return;
  if (leave && membership_ && !left_.exchange(true)) membership_->leave(options_.leave_timeout);
  {
    std::lock_guard<std::mutex> lock(join_mutex_);
    joiner_stop_ = true;
  }
  join_cv_.notify_all();
  if (joiner_.joinable()) joiner_.join();
  if (membership_) membership_->stop();  // no event or stream after this
  asio::post(ctx_, [this] {
    if (discovery_) discovery_->stop();
    if (claims_) claims_->stop();
    if (links_) links_->stop();
    repair_timer_.cancel();
    pump_timer_.cancel();
    catch_up_timer_.cancel();
    // SUBACKs waiting for peers go out now.
    std::vector<std::uint64_t> keys;
    for (const auto& [k, w] : waiters_) keys.push_back(k);
    for (std::uint64_t k : keys) finish_waiter(k, false);
    ctx_.stop();
  });
  work_.reset();
  if (thread_.joinable()) thread_.join();
}

bool Node::flush_links(std::chrono::steady_clock::time_point deadline,
                       const std::atomic<bool>& cancel) noexcept {
  if (!started_.load() || stopped_.load()) return false;
  // Asked on the control thread, behind whatever the shards handed over before this call.
  while (!cancel.load() && SteadyClock::now() < deadline) {
    auto answer = std::make_shared<std::promise<bool>>();
    auto idle = answer->get_future();
    asio::post(ctx_, [this, answer] {
      bool quiet = links_->idle();
      for (const auto& [name, p] : peers_) quiet = quiet && p.backlog.empty();
      answer->set_value(quiet);
    });
    while (idle.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
      if (cancel.load() || SteadyClock::now() >= deadline) return false;
    }
    try {
      if (idle.get()) return true;
    } catch (const std::future_error&) {
      return false;  // the node stopped
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

void Node::set_keys(const std::vector<std::string>& keys) {
  if (!started_.load() || stopped_.load() || !membership_) {
    throw std::system_error(make_error_code(errc::not_started), "cluster keys");
  }
  if (options_.membership.keyring().empty()) {
    throw std::invalid_argument(
        "cluster keys: the cluster was started without a key (adding one needs a restart)");
  }
  if (keys.empty()) throw std::invalid_argument("cluster keys: at least one key is needed");
  for (const std::string& k : keys) {
    if (k.size() != 16 && k.size() != 24 && k.size() != 32) {
      throw std::invalid_argument("cluster keys: each key must be 16, 24 or 32 bytes");
    }
  }
  auto applied = std::make_shared<std::promise<void>>();
  auto done = applied->get_future();
  asio::post(ctx_, [this, keys, applied] {
    try {
      links_->set_keys(keys);
      applied->set_value();
    } catch (...) {
      applied->set_exception(std::current_exception());
    }
  });
  if (done.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    throw std::system_error(make_error_code(errc::timed_out), "cluster keys: the links");
  }
  done.get();
  if (const std::error_code ec = membership_->set_keys(keys)) {
    throw std::system_error(ec, "cluster keys: the membership");
  }
  std::lock_guard<std::mutex> lock(info_mutex_);
  keys_ = keys;
}

std::vector<std::string> Node::keys() const {
  std::lock_guard<std::mutex> lock(info_mutex_);
  return keys_;
}

bool Node::hand_off_sessions(std::chrono::steady_clock::time_point deadline,
                             const std::atomic<bool>& cancel) noexcept {
  if (!started_.load() || stopped_.load() || !claims_) return false;
  asio::post(ctx_, [this] { claims_->hand_off_all(); });
  while (!cancel.load() && SteadyClock::now() < deadline) {
    if (claims_->hand_offs_done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

void Node::leave(std::chrono::milliseconds timeout) noexcept {
  if (!started_.load() || stopped_.load() || !membership_ || left_.exchange(true)) return;
  membership_->leave(timeout);
}

void Node::inject_frame(const std::string& peer, std::uint8_t kind, const std::string& body) {
  asio::post(ctx_, [this, peer, kind, body] { on_frame(peer, kind, body); });
}

void Node::set_partition(const std::string& address, bool blocked, bool membership, bool link) {
  if (!membership_) return;
  if (membership) testing::set_membership_blocked(*membership_, address, blocked);
  if (!link) return;
  asio::post(ctx_, [this, address, blocked] {
    if (blocked) {
      partitioned_.insert(address);
    } else {
      partitioned_.erase(address);
    }
    for (const auto& [name, p] : peers_) {
      if (p.address == address) links_->set_blocked(name, blocked);
    }
  });
}

// ---- shard side ------------------------------------------------------------------------------

void Node::forward(std::vector<router::RemoteSend>&& batch) {
  asio::post(ctx_, [this, b = std::move(batch)]() mutable { send_batch(b); });
}

void Node::routes_changed(std::vector<std::string> filters, std::function<void()> done) {
  asio::post(ctx_, [this, f = std::move(filters), d = std::move(done)]() mutable {
    apply_route_changes(f, std::move(d));
  });
}

void Node::claim(const std::string& client_id, bool resume, unsigned shard,
                 std::function<void(router::ClaimResult)> done) {
  asio::post(ctx_, [this, id = client_id, resume, shard, d = std::move(done)]() mutable {
    claims_->claim(std::move(id), resume, shard, std::move(d));
  });
}

// ---- control thread ----------------------------------------------------------------------------

Node::Peer& Node::peer_named(const std::string& name) {
  auto it = peers_.find(name);
  if (it != peers_.end()) return it->second;
  Peer& p = peers_[name];
  p.name = name;
  p.id = next_peer_id_++;
  names_by_id_[p.id] = name;
  return p;
}

Node::Peer* Node::find_peer(const std::string& name) {
  auto it = peers_.find(name);
  return it == peers_.end() ? nullptr : &it->second;
}

void Node::update_peer_count() {
  std::uint32_t n = 0;
  // A retained (failed) peer still counts: retained writes queue on its link for its return.
  for (const auto& [name, p] : peers_) n += p.member || p.retained ? 1 : 0;
  core_.router().peer_count.store(n, std::memory_order_relaxed);
}

void Node::on_member_event(const MemberEvent& e) {
  if (e.member.name == options_.membership.name) return;
  switch (e.kind) {
    case MemberEvent::Kind::join:
    case MemberEvent::Kind::update: {
      Peer& p = peer_named(e.member.name);
      const bool moved = p.address != e.member.address || p.port != e.member.port;
      const bool joined = !p.member;
      const bool was_retained = p.retained;
      if (p.retained) {
        // Back within link_retain: its link re-sends what it has not acknowledged.
        p.retained = false;
        if (p.retain_timer) p.retain_timer->cancel();
        p.retain_timer.reset();
      }
      p.member = true;
      p.address = e.member.address;
      p.port = e.member.port;
      if (moved || joined) {
        links_->add_peer(p.name, p.address, p.port);
        if (partitioned_.count(p.address) != 0) links_->set_blocked(p.name, true);
        // Back after a failure or a restart: its link may be waiting out a long backoff
        // (dials failed during the split); claims and routes need it now.
        if (!moved) links_->redial(p.name);
      }
      update_peer_count();
      if (was_retained && links_->connected(p.name)) {
        // The link outlived the failure (a short partition does not always break TCP): no
        // on_up will come, so the state each side set aside (shared-group routes, claims
        // settled during the split) is exchanged now.
        p.up = true;
        resync(p);
      }
      if (joined) {
        members_joined_.fetch_add(1, std::memory_order_relaxed);
        p.link_expected = !p.up;  // claims wait for its link (Claims::PeerView::coming)
      }
      if (!joined_at_) {
        joined_at_ = SteadyClock::now();
        catch_up_timer_.expires_after(kCatchUpBound);
        catch_up_timer_.async_wait([this](const std::error_code& ec) {
          if (!ec) check_caught_up();
        });
      }
      if (joined && new_member_.active()) {
        std::string json;
        bus::append_json_string(json, endpoint_text(p.address, p.port));
        new_member_.publish(std::move(json));
      }
      break;
    }
    case MemberEvent::Kind::leave:
      members_left_.fetch_add(1, std::memory_order_relaxed);
      // It flushed its links before leaving: nothing of it is worth keeping.
      if (Peer* p = find_peer(e.member.name)) forget_peer(*p);
      break;
    case MemberEvent::Kind::failed:
      members_failed_.fetch_add(1, std::memory_order_relaxed);
      if (Peer* p = find_peer(e.member.name)) retain_peer(*p);
      break;
  }
  check_caught_up();  // a member gone may have been the last one it waited for
}

void Node::forget_peer(Peer& p) {
  if (p.retained) {
    // link_retain ran out: what is still queued for it is lost, and counted.
    retain_dropped_.fetch_add(links_->queued_frames(p.name), std::memory_order_relaxed);
  }
  p.member = false;
  p.up = false;
  p.retained = false;
  if (p.retain_timer) p.retain_timer->cancel();
  p.retain_timer.reset();
  p.acked_routes = 0;
  p.backlog.clear();
  p.routes_incoming.clear();
  links_->remove_peer(p.name);
  claims_->on_down(p.name);
  claims_->on_gone(p.name);
  set_routes(p, {});
  update_peer_count();
  release_waiters(p);
  if (snapshot_peer_ == p.name) {
    snapshot_peer_.clear();
    request_snapshot();
  }
}

void Node::retain_peer(Peer& p) {
  if (options_.link_retain.count() <= 0) {
    forget_peer(p);
    return;
  }
  p.member = false;
  p.up = false;
  p.retained = true;
  claims_->on_down(p.name);
  // Its plain routes stay (what is published for it queues on its link); a shared group must
  // not pick a node that cannot deliver now: its memberships go, and come back with the full
  // route set it sends when its link is up again.
  std::set<std::string> plain;
  for (const std::string& f : p.routes) {
    if (!topic::is_shared(f)) plain.insert(f);
  }
  set_routes(p, std::move(plain));
  update_peer_count();
  release_waiters(p);
  if (snapshot_peer_ == p.name) {
    snapshot_peer_.clear();
    request_snapshot();
  }
  auto timer = std::make_shared<asio::steady_timer>(ctx_, options_.link_retain);
  p.retain_timer = timer;
  timer->async_wait([this, name = p.name, timer](const std::error_code& ec) {
    if (ec) return;
    Peer* q = find_peer(name);
    if (q != nullptr && q->retained && q->retain_timer == timer) forget_peer(*q);
  });
}

void Node::release_waiters(Peer& p) {
  std::vector<std::uint64_t> done;
  for (auto& [k, w] : waiters_) {
    w.pending.erase(p.name);
    if (w.pending.empty()) done.push_back(k);
  }
  for (std::uint64_t k : done) finish_waiter(k, false);
}

void Node::send_batch(std::vector<router::RemoteSend>& batch) {
  const auto now = message::Message::Clock::now();
  std::vector<std::pair<std::uint32_t, const std::string*>> targets;  // (peer id, name)
  std::vector<std::string_view> shares;
  for (router::RemoteSend& r : batch) {
    targets.clear();
    if (r.all) {
      for (const auto& [name, p] : peers_) {
        if (p.member || p.retained) targets.emplace_back(p.id, &p.name);
      }
    } else {
      for (std::uint32_t id : r.peers) {
        auto it = names_by_id_.find(id);
        if (it != names_by_id_.end()) targets.emplace_back(id, &it->second);
      }
    }
    if (r.tap) {
      std::vector<std::string> names;
      for (const auto& t : targets) names.push_back(*t.second);
      message_to_.publish(bus::render_message_to(*r.message, static_cast<int>(r.tap->version),
                                                 r.tap->packet_id, names));
    }
    if (targets.empty()) continue;
    auto body = shared(encode_message(*r.message, r.version ? &*r.version : nullptr, now));
    for (const auto& [id, name] : targets) {
      // A peer chosen for shared groups gets the same message bytes behind their names.
      shares.clear();
      for (const router::SharedPick& pick : r.shared) {
        if (pick.peer == id) shares.emplace_back(pick.filter);
      }
      const bool sent = shares.empty()
                            ? links_->send(*name, static_cast<std::uint8_t>(Kind::publish), body)
                            : links_->send(*name, static_cast<std::uint8_t>(Kind::publish_shared),
                                           shared(encode_publish_shared(shares, *body)));
      if (sent) {
        forwarded_.fetch_add(1, std::memory_order_relaxed);
      } else {
        forward_dropped_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
}

void Node::on_up(const std::string& name, std::uint64_t epoch) {
  Peer& p = peer_named(name);
  if (p.epoch != 0 && p.epoch != epoch) {
    // The peer restarted: whatever it knew from us is gone, and its routes will come again.
    set_routes(p, {});
    p.acked_routes = 0;
    p.routes_incoming.clear();
    p.routes_known = false;
    p.backlog.clear();  // addressed to the incarnation that is gone, as the link's queue was
    claims_->on_gone(p.name);
  }
  if (p.epoch != epoch) {
    set_protocol(p, 1);  // a new incarnation tells its versions again
    p.proto_known = false;
  }
  p.epoch = epoch;
  p.up = true;
  p.link_expected = false;
  resync(p);
}

void Node::resync(Peer& p) {
  const std::string& name = p.name;
  // First on every link up: the versions this node speaks (a version 1 peer counts the frame
  // as malformed and carries on).
  send_control(p, Kind::capabilities,
               shared(encode_capabilities({kClusterProtocolMin, kClusterProtocolMax})));
  send_routes_full(p);
  claims_->on_up(name);
  if (!synced_.load() && snapshot_peer_.empty()) {
    request_snapshot();
  } else if (synced_.load()) {
    send_control(p, Kind::digest, shared(encode_digest(digest())));
  }
}

void Node::check_caught_up() {
  if (caught_up_.load() || !joined_at_) return;
  bool all = synced_.load();
  for (const auto& [name, p] : peers_) {
    if (p.member && (!p.up || !p.routes_known)) all = false;
  }
  if (all || SteadyClock::now() - *joined_at_ >= kCatchUpBound) caught_up_.store(true);
}

void Node::set_protocol(Peer& p, std::uint8_t version) {
  p.proto = version;
  std::lock_guard<std::mutex> lock(info_mutex_);
  peer_protocols_[p.name] = version;
}

void Node::on_down(const std::string& name) {
  Peer* p = find_peer(name);
  if (p == nullptr) return;
  // Waiters keep waiting for it: the link reconnects and the delta is re-sent (bounded by
  // route_ack_timeout); a peer that failed is forgotten through its membership event.
  p->up = false;
  claims_->on_down(name);
}

void Node::on_frame(const std::string& name, std::uint8_t kind, std::string_view body) {
  Peer& p = peer_named(name);
  auto bad = [this] { malformed_.fetch_add(1, std::memory_order_relaxed); };
  switch (static_cast<Kind>(kind)) {
    case Kind::capabilities: {
      Capabilities theirs;
      if (!decode_capabilities(body, theirs)) return bad();
      const std::uint8_t v = common_version({kClusterProtocolMin, kClusterProtocolMax}, theirs);
      if (v == 0) incompatible_peers_.fetch_add(1, std::memory_order_relaxed);
      set_protocol(p, v == 0 ? 1 : v);
      p.proto_known = true;
      return;
    }
    case Kind::publish:
    case Kind::publish_shared: {
      WireMessage w;
      std::vector<std::string_view> share_views;
      const bool ok = static_cast<Kind>(kind) == Kind::publish
                          ? decode_message(body, w)
                          : decode_publish_shared(body, share_views, w);
      if (!ok || !topic::is_valid_name(w.topic)) return bad();
      std::vector<std::string> shares;
      shares.reserve(share_views.size());
      for (std::string_view f : share_views) {
        if (!valid_share(f)) return bad();
        shares.emplace_back(f);
      }
      auto m = to_message(w, message::Message::Clock::now());
      received_.fetch_add(1, std::memory_order_relaxed);
      if (message_from_.active()) emit_message_from(name, *m);
      // Both kinds on one shard per sending peer: one publisher's order holds.
      const std::size_t shard = std::hash<std::string>{}(name) % incoming_.size();
      incoming_[shard].push_back(Incoming{std::move(m), std::move(w.version), std::move(shares)});
      if (!incoming_scheduled_) {
        incoming_scheduled_ = true;
        asio::post(ctx_, [this] { deliver_incoming(); });
      }
      return;
    }
    case Kind::claim_request:
    case Kind::claim_grant:
    case Kind::take_request:
    case Kind::take_reply:
    case Kind::claims_held:
    case Kind::session_part:
    case Kind::take_ack:
    case Kind::session_handoff:
    case Kind::trail_end:
      if (!claims_->on_frame(name, static_cast<Kind>(kind), body)) bad();
      return;
    case Kind::routes_full: {
      std::uint64_t number;
      std::vector<std::string> filters;
      if (!decode_routes_full(body, number, filters)) return bad();
      std::set<std::string> routes;
      for (std::string& f : filters) {
        if (valid_remote_filter(f)) routes.insert(std::move(f));
      }
      p.routes_incoming.clear();
      set_routes(p, std::move(routes));
      send_control(p, Kind::routes_ack, shared(encode_u64(number)));
      p.routes_known = true;
      check_caught_up();
      return;
    }
    case Kind::routes_part: {
      std::uint64_t number;
      bool last = false;
      std::vector<std::string> filters;
      if (!decode_routes_part(body, number, last, filters)) return bad();
      for (std::string& f : filters) {
        if (valid_remote_filter(f)) p.routes_incoming.insert(std::move(f));
      }
      if (!last) return;
      set_routes(p, std::move(p.routes_incoming));
      p.routes_incoming.clear();
      send_control(p, Kind::routes_ack, shared(encode_u64(number)));
      p.routes_known = true;
      check_caught_up();
      return;
    }
    case Kind::routes_delta: {
      std::uint64_t number;
      std::vector<RouteChange> changes;
      if (!decode_routes_delta(body, number, changes)) return bad();
      std::set<std::string> routes = p.routes;
      for (RouteChange& c : changes) {
        if (!valid_remote_filter(c.filter)) continue;
        if (c.add) {
          routes.insert(std::move(c.filter));
        } else {
          routes.erase(c.filter);
        }
      }
      set_routes(p, std::move(routes));
      send_control(p, Kind::routes_ack, shared(encode_u64(number)));
      return;
    }
    case Kind::routes_ack: {
      std::uint64_t number;
      if (!decode_u64(body, number)) return bad();
      if (number > route_number_) {
        // Acknowledges a route number this node never sent: taking it would let later SUBACKs
        // go out before the peer has the routes.
        unsolicited_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      ack_routes(p, number);
      return;
    }
    case Kind::snapshot_request:
      send_entries(name, nullptr, true);
      return;
    case Kind::retained_entries:
      if (!entries_wanted(p)) return;
      return apply_entries(body);
    case Kind::snapshot_end:
      if (snapshot_peer_ == name) {
        snapshot_peer_.clear();
        synced_.store(true);
        check_caught_up();
      }
      return;
    case Kind::digest: {
      Digest d;
      if (!decode_digest(body, d)) return bad();
      if (synced_.load()) on_digest(p, d);
      return;
    }
    case Kind::bucket_request: {
      std::vector<std::uint16_t> buckets;
      if (!decode_buckets(body, buckets)) return bad();
      send_entries(name, &buckets, false);
      return;
    }
  }
  bad();
}

void Node::deliver_incoming() {
  incoming_scheduled_ = false;
  for (unsigned i = 0; i < incoming_.size(); ++i) {
    if (incoming_[i].empty()) continue;
    core_.on_shard(i, [this, batch = std::move(incoming_[i])](registry::ShardAccess& shard) {
      std::uint64_t missed = 0;
      for (const Incoming& in : batch) {
        missed += shard.route_from_cluster(in.message, in.version, in.shares).shared_missed;
      }
      if (missed != 0) shared_dropped_.fetch_add(missed, std::memory_order_relaxed);
    });
    incoming_[i] = {};
  }
}

void Node::emit_message_from(const std::string& peer, const message::Message& m) {
  const bus::MessageView v = bus::view_of(m);
  std::string extra = ",\"Node\":";
  bus::append_json_string(extra, peer);
  std::string json;
  bus::append_message_json(json, v, extra);
  message_from_.publish(std::move(json));
}

// ---- discovery and joins ------------------------------------------------------------------------

void Node::on_discovery(const DiscoveryResult& r) {
  {
    std::lock_guard<std::mutex> lock(info_mutex_);
    last_discovery_ = r;
    discovery_seen_ = true;
    if (r.peers.empty()) {
      if (!alone_since_) alone_since_ = SteadyClock::now();
    } else {
      alone_since_.reset();
    }
  }
  if (r.peers.empty()) return;
  std::set<std::string> known;
  for (const auto& [name, p] : peers_) {
    if (p.member) known.insert(endpoint_text(p.address, p.port));
  }
  std::vector<std::string> seeds;
  for (const DiscoveredPeer& d : r.peers) {
    std::string e = endpoint_text(d.address, d.port);
    if (known.count(e) == 0) seeds.push_back(std::move(e));
  }
  if (seeds.empty()) return;
  {
    std::lock_guard<std::mutex> lock(join_mutex_);
    for (std::string& s : seeds) {
      if (std::find(join_queue_.begin(), join_queue_.end(), s) == join_queue_.end())
        join_queue_.push_back(std::move(s));
    }
  }
  join_cv_.notify_all();
}

void Node::joiner_loop() {
  std::unique_lock<std::mutex> lock(join_mutex_);
  for (;;) {
    join_cv_.wait(lock, [this] { return joiner_stop_ || !join_queue_.empty(); });
    if (joiner_stop_) return;
    std::vector<std::string> seeds;
    seeds.swap(join_queue_);
    lock.unlock();
    std::error_code ec;
    membership_->join(seeds, ec);  // failures: the next discovery round tries again
    lock.lock();
  }
}

ClusterInfo Node::info() const {
  ClusterInfo info;
  info.enabled = true;
  info.insecure =
      options_.membership.keyring().empty() || !options_.membership.gossip_verify_incoming;
  info.node_name = options_.membership.name;
  info.port = port();
  if (membership_) {
    info.members = membership_->members();
    info.health = membership_->local_health();
    info.membership = membership_->stats();
  }
  info.discovery_configured = discovery_ != nullptr;
  {
    std::lock_guard<std::mutex> lock(info_mutex_);
    if (discovery_seen_) {
      info.discovery_ok = last_discovery_.ok;
      info.discovery_error = last_discovery_.error;
      info.discovered_peers = last_discovery_.peers.size();
    }
    if (alone_since_) {
      const auto needed = options_.discovery.refresh_interval *
                          static_cast<long>(std::max(1u, options_.expected_members));
      info.provably_alone = SteadyClock::now() - *alone_since_ >= needed;
    }
  }
  info.retained_synced = synced_.load();
  if (info.provably_alone) caught_up_.store(true);  // nobody to catch up with
  info.caught_up = caught_up_.load();
  if (links_) {
    for (const LinkStats& s : links_->stats()) {
      ClusterLinkInfo l;
      l.peer = s.peer;
      l.address = s.address;
      l.connected = s.connected;
      l.frames_sent = s.frames_sent;
      l.frames_acked = s.frames_acked;
      l.frames_received = s.frames_received;
      l.duplicates = s.duplicates;
      l.missing = s.missing;
      l.dropped = s.dropped;
      l.failures = s.failures;
      l.bytes_sent = s.bytes_sent;
      l.bytes_received = s.bytes_received;
      l.queue_frames = s.queue_frames;
      l.queue_bytes = s.queue_bytes;
      {
        std::lock_guard<std::mutex> lock(info_mutex_);
        auto it = peer_protocols_.find(s.peer);
        l.protocol = it != peer_protocols_.end() ? it->second : 1;
      }
      for (std::size_t i = 0; i < LinkStats::kRttBounds.size(); ++i) {
        l.rtt_buckets.emplace_back(LinkStats::kRttBounds[i], s.rtt_buckets[i]);
      }
      l.rtt_count = s.rtt_count;
      l.rtt_sum = s.rtt_sum;
      info.links.push_back(std::move(l));
    }
  }
  info.messages_forwarded = forwarded_.load();
  info.messages_received = received_.load();
  info.forward_dropped = forward_dropped_.load();
  info.malformed_frames = malformed_.load();
  info.oversized_frames = oversized_.load();
  info.incompatible_peers = incompatible_peers_.load();
  info.retain_dropped = retain_dropped_.load();
  info.route_ack_timeouts = ack_timeouts_.load();
  info.retained_applied = retained_applied_.load();
  if (claims_) {
    const ClaimStats c = claims_->stats();
    info.claims = c.claims;
    info.claims_lost = c.claims_lost;
    info.claim_timeouts = c.arbiter_timeouts + c.take_timeouts;
    info.sessions_moved_in = c.sessions_moved_in;
    info.sessions_moved_out = c.sessions_moved_out;
    info.sessions_taken_over = c.taken_over;
    info.sessions_restored = c.moves_restored;
    info.clock_skew_refused = c.clock_skew_refused;
    info.unsolicited_refused = c.unsolicited;
  }
  info.unsolicited_refused += unsolicited_.load();
  if (links_) info.inbound_links_refused = links_->inbound_over_limit();
  info.clock_skew_refused += core_.router().retained_refused_skew();
  info.shared_dropped = shared_dropped_.load();
  info.members_joined = members_joined_.load();
  info.members_left = members_left_.load();
  info.members_failed = members_failed_.load();
  return info;
}

}  // namespace brokerha::cluster
