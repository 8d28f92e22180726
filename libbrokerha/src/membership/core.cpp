// SPDX-License-Identifier: Apache-2.0
#include "membership/core.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace brokerha::membership {
namespace {

constexpr std::uint8_t kProtocolMin = 1;
constexpr std::uint8_t kProtocolMax = 5;
constexpr std::uint8_t kProtocolCur = 2;
constexpr int kMaxCommandDepth = 4;
constexpr int kPushPullScaleThreshold = 32;
constexpr std::size_t kRefuteFanout = 64;

std::string vsn_bytes(const std::array<std::uint8_t, 6>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size());
}

std::array<std::uint8_t, 6> vsn_array(std::string_view s) {
  std::array<std::uint8_t, 6> v{};
  for (std::size_t i = 0; i < v.size() && i < s.size(); ++i) {
    v[i] = static_cast<std::uint8_t>(s[i]);
  }
  return v;
}

}  // namespace

std::string to_string(const Address& a) {
  std::string s;
  if (a.ip.size() == 4) {
    for (std::size_t i = 0; i < 4; ++i) {
      if (i != 0) s += '.';
      s += std::to_string(static_cast<std::uint8_t>(a.ip[i]));
    }
  } else {
    static const char* hex = "0123456789abcdef";
    s += '[';
    for (std::size_t i = 0; i < a.ip.size(); ++i) {
      if (i != 0 && i % 2 == 0) s += ':';
      s += hex[static_cast<std::uint8_t>(a.ip[i]) >> 4];
      s += hex[static_cast<std::uint8_t>(a.ip[i]) & 15];
    }
    s += ']';
  }
  return s + ":" + std::to_string(a.port);
}

// --- formulas ------------------------------------------------------------------------------------

Duration Core::suspicion_timeout(int mult, std::size_t n, Duration interval) {
  const double scale = std::max(1.0, std::log10(std::max(1.0, static_cast<double>(n))));
  // Go: Duration(mult) * Duration(scale*1000) * interval / 1000, in nanoseconds.
  const auto scale_ms = static_cast<std::int64_t>(scale * 1000.0);
  return Duration(static_cast<std::int64_t>(mult) * scale_ms * interval.count() / 1000);
}

Duration Core::remaining_suspicion_time(int confirmations, int k, Duration elapsed, Duration min,
                                        Duration max) {
  const double frac =
      std::log(static_cast<double>(confirmations) + 1.0) / std::log(static_cast<double>(k) + 1.0);
  const double max_s = static_cast<double>(max.count()) / 1e6;
  const double min_s = static_cast<double>(min.count()) / 1e6;
  const double raw = max_s - frac * (max_s - min_s);
  Duration timeout = std::chrono::milliseconds(static_cast<std::int64_t>(std::floor(1000.0 * raw)));
  if (timeout < min) timeout = min;
  return timeout - elapsed;
}

int Core::retransmit_limit(int mult, std::size_t n) {
  const double scale = std::ceil(std::log10(static_cast<double>(n) + 1.0));
  return mult * static_cast<int>(scale);
}

Duration Core::push_pull_scale(Duration interval, std::size_t n) {
  if (n <= static_cast<std::size_t>(kPushPullScaleThreshold)) return interval;
  const double mult =
      std::ceil(std::log2(static_cast<double>(n)) - std::log2(kPushPullScaleThreshold)) + 1.0;
  return interval * static_cast<std::int64_t>(mult);
}

// --- construction, timers ----------------------------------------------------------------------

Core::Core(CoreConfig cfg, CoreOutput& out) : cfg_(std::move(cfg)), out_(out), rng_(cfg_.seed) {}

std::uint64_t Core::schedule(TimePoint at, std::function<void()> fn) {
  const std::uint64_t id = next_id_++;
  timers_.emplace(std::make_pair(at, id), std::move(fn));
  timer_at_.emplace(id, at);
  return id;
}

void Core::cancel(std::uint64_t id) {
  auto it = timer_at_.find(id);
  if (it == timer_at_.end()) return;
  timers_.erase(std::make_pair(it->second, id));
  timer_at_.erase(it);
}

TimePoint Core::next_deadline() const {
  return timers_.empty() ? TimePoint::max() : timers_.begin()->first.first;
}

void Core::advance(TimePoint now) {
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto it = timers_.begin();
    now_ = std::max(now_, it->first.first);
    auto fn = std::move(it->second);
    timer_at_.erase(it->first.second);
    timers_.erase(it);
    fn();
  }
  now_ = std::max(now_, now);
}

Duration Core::scaled(Duration d) const { return d * (awareness_ + 1); }

void Core::apply_awareness(int delta) {
  awareness_ = std::clamp(awareness_ + delta, 0, cfg_.awareness_max_multiplier - 1);
}

const Member& Core::self() const { return map_.at(cfg_.name)->m; }

const Member* Core::find(const std::string& name) const {
  auto it = map_.find(name);
  return it == map_.end() ? nullptr : &it->second->m;
}

std::vector<Member> Core::members() const {
  std::vector<Member> out;
  for (const auto& n : nodes_) {
    if (n->m.state == NodeState::alive || n->m.state == NodeState::suspect) out.push_back(n->m);
  }
  return out;
}

void Core::start(TimePoint now) {
  now_ = now;
  if (started_) return;
  started_ = true;
  Alive a;
  a.incarnation = ++incarnation_;
  a.node = cfg_.name;
  a.addr = cfg_.advertise.ip;
  a.port = cfg_.advertise.port;
  a.meta = cfg_.meta;
  a.vsn = vsn_bytes({kProtocolMin, kProtocolMax, kProtocolCur, cfg_.delegate_protocol_min,
                     cfg_.delegate_protocol_max, cfg_.delegate_protocol_version});
  alive_node(a, true);
  auto stagger = [&](Duration d) {
    return Duration(static_cast<std::int64_t>(
        rng_() % static_cast<std::uint64_t>(std::max<std::int64_t>(1, d.count()))));
  };
  schedule(now + stagger(cfg_.probe_interval), [this] { probe_tick(); });
  schedule(now + stagger(cfg_.gossip_interval), [this] { gossip_tick(); });
  if (cfg_.push_pull_interval.count() > 0) {
    schedule(now + stagger(cfg_.push_pull_interval), [this] { push_pull_tick(); });
  }
}

// --- node selection ------------------------------------------------------------------------------

std::vector<Core::Node*> Core::random_nodes(std::size_t k,
                                            const std::function<bool(const Node&)>& skip) {
  std::vector<Node*> out;
  const std::size_t n = nodes_.size();
  for (std::size_t i = 0; i < 3 * n && out.size() < k; ++i) {
    Node* c = nodes_[rng_() % n].get();
    if (skip(*c) || std::find(out.begin(), out.end(), c) != out.end()) continue;
    out.push_back(c);
  }
  return out;
}

void Core::reset_nodes() {
  // Reap dead and left nodes past gossip_to_the_dead_time, then reshuffle (memberlist resetNodes).
  auto keep = [&](const std::unique_ptr<Node>& n) {
    const bool gone = n->m.state == NodeState::dead || n->m.state == NodeState::left;
    return !(gone && now_ - n->m.state_change > cfg_.gossip_to_the_dead_time);
  };
  auto mid = std::stable_partition(nodes_.begin(), nodes_.end(), keep);
  for (auto it = mid; it != nodes_.end(); ++it) map_.erase((*it)->m.name);
  nodes_.erase(mid, nodes_.end());
  std::shuffle(nodes_.begin(), nodes_.end(), rng_);
}

// --- probe ---------------------------------------------------------------------------------------

void Core::probe_tick() {
  schedule(now_ + cfg_.probe_interval, [this] { probe_tick(); });
  if (probe_.active) {
    tick_pending_ = true;  // Go's ticker buffers one tick
    return;
  }
  run_probe();
}

std::string Core::ping_msg(std::uint32_t seq, const std::string& target) const {
  Ping p;
  p.seq_no = seq;
  p.node = target;
  p.source_addr = cfg_.advertise.ip;
  p.source_port = cfg_.advertise.port;
  p.source_node = cfg_.name;
  return encode(p);
}

void Core::run_probe() {
  Node* target = nullptr;
  for (std::size_t checked = 0; checked <= nodes_.size() && target == nullptr;) {
    if (probe_index_ >= nodes_.size()) {
      reset_nodes();
      probe_index_ = 0;
      ++checked;
      continue;
    }
    Node* n = nodes_[probe_index_++].get();
    if (n->m.name == cfg_.name || n->m.state == NodeState::dead || n->m.state == NodeState::left) {
      ++checked;
      continue;
    }
    target = n;
  }
  if (target == nullptr) return;
  ++stats_.probes;
  const std::uint32_t seq = ++seq_;
  probe_ = Probe{};
  probe_.active = true;
  probe_.target = target->m.name;
  probe_.seq = seq;
  probe_.start = now_;
  const std::string ping = ping_msg(seq, target->m.name);
  if (target->m.state == NodeState::alive) {
    send_msg(target->m.addr, &target->m.name, ping);
  } else {
    // Lifeguard buddy system: tell a suspect it is suspected, so it can refute at once.
    Suspect s{target->m.incarnation, target->m.name, cfg_.name};
    raw_send(target->m.addr, &target->m.name, make_compound({ping, encode_suspect(s)}));
  }
  AckHandler h;
  h.on_ack = [this, seq] { probe_acked(seq); };
  h.on_nack = [this, seq] {
    if (probe_.active && probe_.seq == seq) ++probe_.nacks;
  };
  acks_[seq] = std::move(h);
  probe_.timeout_timer = schedule(now_ + cfg_.probe_timeout, [this, seq] { probe_timed_out(seq); });
  probe_.end_timer =
      schedule(now_ + scaled(cfg_.probe_interval), [this, seq] { probe_ended(seq); });
}

void Core::probe_acked(std::uint32_t seq) {
  if (!probe_.active || probe_.seq != seq) return;
  if (!probe_.indirect_started) apply_awareness(-1);  // direct ack within probe_timeout
  finish_probe();
}

void Core::probe_timed_out(std::uint32_t seq) {
  if (!probe_.active || probe_.seq != seq) return;
  probe_.indirect_started = true;
  Node* target = map_.count(probe_.target) ? map_[probe_.target] : nullptr;
  if (target == nullptr) return;
  const std::string tname = target->m.name;
  auto relays = random_nodes(static_cast<std::size_t>(cfg_.indirect_checks), [&](const Node& n) {
    return n.m.name == cfg_.name || n.m.name == tname || n.m.state != NodeState::alive;
  });
  for (Node* r : relays) {
    IndirectPing ip;
    ip.seq_no = seq;
    ip.target = target->m.addr.ip;
    ip.port = target->m.addr.port;
    ip.node = tname;
    ip.nack = r->m.vsn[1] >= 4;
    if (ip.nack) ++probe_.expected_nacks;
    ip.source_addr = cfg_.advertise.ip;
    ip.source_port = cfg_.advertise.port;
    ip.source_node = cfg_.name;
    send_msg(r->m.addr, &r->m.name, encode(ip));
  }
  if (!cfg_.disable_tcp_pings && target->m.vsn[1] >= 3) {
    const std::uint64_t id = next_id_++;
    PendingStream ps;
    ps.kind = PendingStream::Kind::tcp_ping;
    ps.seq = seq;
    streams_[id] = ps;
    out_.send_stream(id, target->m.addr, encode_stream(cfg_.codec, ping_msg(seq, tname)), true);
  }
}

void Core::probe_ended(std::uint32_t seq) {
  if (!probe_.active || probe_.seq != seq) return;
  if (probe_.tcp_ok) {
    ++stats_.tcp_fallback_saves;  // memberlist warns: "network may be misconfigured"
    finish_probe();
    return;
  }
  ++stats_.probe_failures;
  int delta = 0;
  if (probe_.expected_nacks > 0) {
    if (probe_.nacks < probe_.expected_nacks) delta = probe_.expected_nacks - probe_.nacks;
  } else {
    delta = 1;
  }
  apply_awareness(delta);
  const std::string target = probe_.target;
  finish_probe();
  if (const Member* m = find(target)) suspect_node(Suspect{m->incarnation, target, cfg_.name});
}

void Core::finish_probe() {
  cancel(probe_.timeout_timer);
  cancel(probe_.end_timer);
  acks_.erase(probe_.seq);
  probe_.active = false;
  if (tick_pending_) {
    tick_pending_ = false;
    run_probe();
  }
}

// --- gossip and push-pull ------------------------------------------------------------------------

std::size_t Core::packet_overhead() const {
  std::size_t o = cfg_.codec.label.empty() ? 0 : 2 + cfg_.codec.label.size();
  if (cfg_.codec.keyring.enabled()) o += kEncryptOverhead;
  return o;
}

void Core::gossip_tick() {
  schedule(now_ + cfg_.gossip_interval, [this] { gossip_tick(); });
  auto targets = random_nodes(static_cast<std::size_t>(cfg_.gossip_nodes), [&](const Node& n) {
    if (n.m.name == cfg_.name) return true;
    switch (n.m.state) {
      case NodeState::alive:
      case NodeState::suspect:
        return false;
      case NodeState::dead:
        return now_ - n.m.state_change > cfg_.gossip_to_the_dead_time;
      default:
        return true;
    }
  });
  const std::size_t avail = cfg_.udp_buffer_size - kCompoundHeaderOverhead - packet_overhead();
  for (Node* t : targets) {
    auto msgs = get_broadcasts(kCompoundPartOverhead, avail);
    if (msgs.empty()) return;
    raw_send(t->m.addr, &t->m.name, msgs.size() == 1 ? msgs[0] : make_compound(msgs));
  }
}

void Core::push_pull_tick() {
  schedule(now_ + push_pull_scale(cfg_.push_pull_interval, nodes_.size()),
           [this] { push_pull_tick(); });
  auto peer = random_nodes(
      1, [&](const Node& n) { return n.m.name == cfg_.name || n.m.state != NodeState::alive; });
  if (!peer.empty()) start_push_pull(peer[0]->m.addr, false, 0);
}

std::string Core::local_push_pull(bool join) {
  PushPull pp;
  pp.header.join = join;
  for (const auto& n : nodes_) {
    pp.nodes.push_back(PushNodeState{n->m.name, n->m.addr.ip, n->m.addr.port, n->m.meta,
                                     n->m.incarnation, n->m.state, vsn_bytes(n->m.vsn)});
  }
  pp.user_state = out_.local_state(join);
  return encode(pp);
}

void Core::start_push_pull(const Address& to, bool join, std::uint64_t join_id) {
  ++stats_.push_pulls;
  const std::uint64_t id = next_id_++;
  PendingStream ps;
  ps.kind = PendingStream::Kind::push_pull;
  ps.join = join;
  ps.join_id = join_id;
  streams_[id] = ps;
  out_.send_stream(id, to, encode_stream(cfg_.codec, local_push_pull(join)), true);
}

void Core::join(TimePoint now, const std::vector<Address>& seeds,
                std::function<void(int, int)> done) {
  advance(now);
  const std::uint64_t jid = next_id_++;
  JoinOp op;
  op.pending = static_cast<int>(seeds.size());
  op.done = std::move(done);
  joins_[jid] = std::move(op);
  if (seeds.empty()) join_step(jid, false);
  for (const auto& s : seeds) start_push_pull(s, true, jid);
}

void Core::join_step(std::uint64_t join_id, bool ok) {
  auto it = joins_.find(join_id);
  if (it == joins_.end()) return;
  (ok ? it->second.ok : it->second.failed)++;
  if (--it->second.pending > 0) return;
  auto op = std::move(it->second);
  joins_.erase(it);
  if (op.done) op.done(op.ok, op.failed);
}

void Core::merge_state(const std::vector<PushNodeState>& remote) {
  for (const auto& r : remote) {
    switch (r.state) {
      case NodeState::alive: {
        Alive a{r.incarnation, r.name, normalize_ip(r.addr), r.port, r.meta, r.vsn};
        alive_node(a, false);
        break;
      }
      case NodeState::left:
        dead_node(Dead{r.incarnation, r.name, r.name});
        break;
      case NodeState::dead:  // a remote "dead" becomes a suspicion here, never a death
      case NodeState::suspect:
        suspect_node(Suspect{r.incarnation, r.name, cfg_.name});
        break;
    }
  }
}

void Core::on_stream_reply(TimePoint now, std::uint64_t id, std::optional<std::string> bytes) {
  advance(now);
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  const PendingStream ps = it->second;
  streams_.erase(it);
  std::string msg;
  std::size_t used = 0;
  const bool ok = bytes && decode_stream(cfg_.codec, *bytes, msg, used) == DecodeStatus::ok;
  if (ps.kind == PendingStream::Kind::tcp_ping) {
    Ack a;
    if (ok && static_cast<MsgType>(msg[0]) == MsgType::ack && decode(msg.substr(1), a) &&
        a.seq_no == ps.seq && probe_.active && probe_.seq == ps.seq) {
      probe_.tcp_ok = true;
    }
    return;
  }
  PushPull pp;
  bool truncated = false;
  const bool good = ok && static_cast<MsgType>(msg[0]) == MsgType::push_pull &&
                    decode_push_pull(std::string_view(msg).substr(1), pp, truncated) != 0;
  if (good) {
    merge_state(pp.nodes);
    out_.merge_remote_state(pp.user_state, ps.join);
  } else if (bytes) {
    ++stats_.dropped_malformed;
  }
  if (ps.join) join_step(ps.join_id, good);
}

std::optional<std::string> Core::on_stream(TimePoint now, const Address& from,
                                           std::string_view bytes) {
  advance(now);
  (void)from;
  std::string msg;
  std::size_t used = 0;
  const DecodeStatus st = decode_stream(cfg_.codec, bytes, msg, used);
  if (st != DecodeStatus::ok) {
    if (st == DecodeStatus::auth_failed) {
      ++stats_.dropped_auth;
    } else if (st == DecodeStatus::bad_label) {
      ++stats_.dropped_label;
    } else {
      ++stats_.dropped_malformed;
    }
    return std::nullopt;
  }
  const std::string_view body = std::string_view(msg).substr(1);
  switch (static_cast<MsgType>(msg[0])) {
    case MsgType::ping: {
      Ping p;
      if (!decode(body, p)) break;
      if (!p.node.empty() && p.node != cfg_.name) {
        ++stats_.dropped_wrong_node;
        return std::nullopt;
      }
      return encode_stream(cfg_.codec, encode(Ack{p.seq_no, ""}));
    }
    case MsgType::push_pull: {
      PushPull pp;
      bool truncated = false;
      if (decode_push_pull(body, pp, truncated) == 0) break;
      std::string reply = encode_stream(cfg_.codec, local_push_pull(pp.header.join));
      merge_state(pp.nodes);
      out_.merge_remote_state(pp.user_state, pp.header.join);
      return reply;
    }
    case MsgType::user: {
      std::string payload;
      if (!decode_user_stream(body, payload)) break;
      out_.user_message(payload);
      return std::nullopt;
    }
    default:
      break;
  }
  ++stats_.dropped_malformed;
  return std::nullopt;
}

// --- state machine -------------------------------------------------------------------------------

Alive Core::alive_of(const Member& m) const {
  return Alive{m.incarnation, m.name, m.addr.ip, m.addr.port, m.meta, vsn_bytes(m.vsn)};
}

void Core::alive_node(const Alive& a, bool bootstrap, std::function<void()> notify) {
  const bool is_local = a.node == cfg_.name;
  if (leaving_ && is_local) return;
  if (a.vsn.size() >= 3 &&
      static_cast<std::uint8_t>(a.vsn[1]) < static_cast<std::uint8_t>(a.vsn[0])) {
    return;
  }
  if (a.node.empty()) return;
  const Address addr{normalize_ip(a.addr), a.port};
  auto it = map_.find(a.node);
  Node* state = nullptr;
  bool updates_node = false;
  if (it == map_.end()) {
    auto n = std::make_unique<Node>();
    n->m.name = a.node;
    n->m.addr = addr;
    n->m.meta = a.meta;
    n->m.state = NodeState::dead;  // so that the transition below reports a join
    n->m.vsn = vsn_array(a.vsn);
    state = n.get();
    map_[a.node] = state;
    // Insert at a random offset so that detection time stays low on average.
    const std::size_t count = nodes_.size();
    nodes_.push_back(std::move(n));
    const std::size_t offset = count == 0 ? 0 : rng_() % count;
    std::swap(nodes_[offset], nodes_[count]);
  } else {
    state = it->second;
    if (state->m.addr != addr) {
      const bool can_reclaim = cfg_.dead_node_reclaim_time.count() > 0 &&
                               now_ - state->m.state_change > cfg_.dead_node_reclaim_time;
      if (state->m.state == NodeState::left || (state->m.state == NodeState::dead && can_reclaim)) {
        updates_node = true;
      } else {
        ++stats_.conflicts;
        return;
      }
    }
  }
  if (a.incarnation <= state->m.incarnation && !is_local && !updates_node) return;
  if (a.incarnation < state->m.incarnation && is_local) return;
  if (auto s = suspicions_.find(a.node); s != suspicions_.end()) {
    cancel(s->second.timer);
    suspicions_.erase(s);
  }
  const NodeState old_state = state->m.state;
  const std::string old_meta = state->m.meta;
  if (!bootstrap && is_local) {
    if (a.incarnation == state->m.incarnation && a.meta == state->m.meta &&
        vsn_array(a.vsn) == state->m.vsn) {
      return;
    }
    refute(*state, a.incarnation);
  } else {
    queue_broadcast(a.node, encode(a), std::move(notify));
    if (!a.vsn.empty()) state->m.vsn = vsn_array(a.vsn);
    state->m.incarnation = a.incarnation;
    state->m.meta = a.meta;
    state->m.addr = addr;
    if (state->m.state != NodeState::alive) {
      state->m.state = NodeState::alive;
      state->m.state_change = now_;
    }
  }
  if (old_state == NodeState::dead || old_state == NodeState::left) {
    out_.member_event({MemberEvent::Kind::join, state->m});
  } else if (old_meta != state->m.meta) {
    out_.member_event({MemberEvent::Kind::update, state->m});
  }
}

void Core::suspect_node(const Suspect& s) {
  auto it = map_.find(s.node);
  if (it == map_.end()) return;
  Node* state = it->second;
  if (s.incarnation < state->m.incarnation) {
    if (s.node == cfg_.name) correct_stale_sender();
    return;
  }
  if (auto t = suspicions_.find(s.node); t != suspicions_.end()) {
    Suspicion& sp = t->second;
    // A confirmation from a new accuser shortens the timer and is re-gossiped.
    if (sp.n < sp.k && sp.confirmations.insert(s.from).second) {
      ++sp.n;
      const Duration remaining =
          remaining_suspicion_time(sp.n, sp.k, now_ - sp.start, sp.min, sp.max);
      const TimePoint at = now_ + std::max(Duration(0), remaining);
      auto fn = std::move(timers_.at({timer_at_.at(sp.timer), sp.timer}));
      cancel(sp.timer);
      sp.timer = schedule(at, std::move(fn));
      queue_broadcast(s.node, encode_suspect(s));
    }
    return;
  }
  if (state->m.state != NodeState::alive) return;
  if (state->m.name == cfg_.name) {
    refute(*state, s.incarnation);
    return;
  }
  queue_broadcast(s.node, encode_suspect(s));
  ++stats_.suspicions;
  state->m.incarnation = s.incarnation;
  state->m.state = NodeState::suspect;
  const TimePoint change = now_;
  state->m.state_change = change;
  int k = cfg_.suspicion_mult - 2;
  const std::size_t n = nodes_.size();
  if (static_cast<int>(n) - 2 < k) k = 0;
  Suspicion sp;
  sp.k = k;
  sp.min = suspicion_timeout(cfg_.suspicion_mult, n, cfg_.probe_interval);
  sp.max = sp.min * cfg_.suspicion_max_timeout_mult;
  sp.start = now_;
  sp.confirmations.insert(s.from);
  const std::string name = s.node;
  sp.timer = schedule(now_ + (k < 1 ? sp.min : sp.max), [this, name, change] {
    suspicions_.erase(name);
    auto f = map_.find(name);
    if (f == map_.end()) return;
    const Member& m = f->second->m;
    if (m.state == NodeState::suspect && m.state_change == change) {
      dead_node(Dead{m.incarnation, name, cfg_.name});
    }
  });
  suspicions_[name] = std::move(sp);
}

void Core::dead_node(const Dead& d) {
  auto it = map_.find(d.node);
  if (it == map_.end()) return;
  Node* state = it->second;
  if (d.incarnation < state->m.incarnation) {
    if (d.node == cfg_.name && !leaving_) correct_stale_sender();
    return;
  }
  if (auto s = suspicions_.find(d.node); s != suspicions_.end()) {
    cancel(s->second.timer);
    suspicions_.erase(s);
  }
  if (state->m.state == NodeState::dead || state->m.state == NodeState::left) return;
  if (state->m.name == cfg_.name) {
    if (!leaving_) {
      refute(*state, d.incarnation);
      return;
    }
    queue_broadcast(d.node, encode_dead(d), [this] { leave_done_ = true; });
  } else {
    queue_broadcast(d.node, encode_dead(d));
  }
  state->m.incarnation = d.incarnation;
  state->m.state = d.node == d.from ? NodeState::left : NodeState::dead;
  state->m.state_change = now_;
  out_.member_event({MemberEvent::Kind::leave, state->m});
}

void Core::refute(Node& me, std::uint32_t accused_inc) {
  ++incarnation_;
  if (accused_inc >= incarnation_) incarnation_ = accused_inc + 1;
  me.m.incarnation = incarnation_;
  apply_awareness(1);
  ++stats_.refutes;
  const std::string alive = encode(alive_of(me.m));
  queue_broadcast(me.m.name, alive);
  // Improvement over memberlist (not visible on the wire): a refutation is rare and urgent, and
  // a peer that misses it declares us dead when its suspicion timer runs out. Besides gossip,
  // send it directly to up to kRefuteFanout members, now and once more a probe interval later.
  const std::uint32_t inc = incarnation_;
  auto direct = [this, inc] {
    if (incarnation_ != inc || leaving_) return;
    const std::string msg = encode(alive_of(map_.at(cfg_.name)->m));
    auto targets = random_nodes(kRefuteFanout, [&](const Node& n) {
      return n.m.name == cfg_.name || n.m.state == NodeState::left ||
             (n.m.state == NodeState::dead &&
              now_ - n.m.state_change > cfg_.gossip_to_the_dead_time);
    });
    for (Node* t : targets) raw_send(t->m.addr, &t->m.name, msg);
  };
  direct();
  schedule(now_ + cfg_.probe_interval, direct);
}

void Core::correct_stale_sender() {
  // A stale suspect or dead about us: whoever relayed it still believes it. Tell it directly.
  if (current_from_ == nullptr || !map_.count(cfg_.name)) return;
  ++stats_.stale_corrections;
  raw_send(*current_from_, nullptr, encode(alive_of(map_.at(cfg_.name)->m)));
}

void Core::leave(TimePoint now) {
  advance(now);
  if (leaving_) return;
  leaving_ = true;
  Node* me = map_.count(cfg_.name) ? map_[cfg_.name] : nullptr;
  if (me == nullptr) return;
  const bool any_alive = std::any_of(nodes_.begin(), nodes_.end(), [&](const auto& n) {
    return n->m.name != cfg_.name && n->m.state != NodeState::dead && n->m.state != NodeState::left;
  });
  dead_node(Dead{me->m.incarnation, cfg_.name, cfg_.name});
  if (!any_alive) leave_done_ = true;
}

// --- broadcasts ----------------------------------------------------------------------------------

void Core::queue_broadcast(const std::string& key, std::string msg,
                           std::function<void()> finished) {
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->key == key) {
      if (it->finished) it->finished();
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  queue_.push_back(Broadcast{key, std::move(msg), 0, next_id_++, std::move(finished)});
}

std::vector<std::string> Core::get_broadcasts(std::size_t overhead, std::size_t limit) {
  std::vector<std::string> out;
  if (queue_.empty()) return out;
  // memberlist's order: fewest transmits first, then largest, then newest.
  std::sort(queue_.begin(), queue_.end(), [](const Broadcast& a, const Broadcast& b) {
    if (a.transmits != b.transmits) return a.transmits < b.transmits;
    if (a.msg.size() != b.msg.size()) return a.msg.size() > b.msg.size();
    return a.id > b.id;
  });
  const int max_tx = retransmit_limit(cfg_.retransmit_mult, nodes_.size());
  std::size_t used = 0;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (used + overhead + it->msg.size() > limit || out.size() >= kMaxCompoundParts - 1) {
      ++it;
      continue;
    }
    used += overhead + it->msg.size();
    out.push_back(it->msg);
    if (++it->transmits >= max_tx) {
      auto fin = std::move(it->finished);
      it = queue_.erase(it);
      if (fin) fin();
    } else {
      ++it;
    }
  }
  return out;
}

// --- sending -------------------------------------------------------------------------------------

void Core::send_msg(const Address& to, const std::string* node, std::string msg) {
  const std::size_t overhead = kCompoundHeaderOverhead + packet_overhead() + msg.size();
  const std::size_t avail = cfg_.udp_buffer_size > overhead ? cfg_.udp_buffer_size - overhead : 0;
  auto extra = get_broadcasts(kCompoundPartOverhead, avail);
  if (extra.empty()) return raw_send(to, node, msg);
  extra.insert(extra.begin(), std::move(msg));
  raw_send(to, node, make_compound(extra));
}

void Core::raw_send(const Address& to, const std::string* node, const std::string& msg) {
  bool crc = false;
  if (node != nullptr) {
    if (const Member* m = find(*node)) crc = m->vsn[1] >= 5;
  }
  std::string wire = encode_packet(cfg_.codec, msg, crc);
  if (wire.size() > cfg_.udp_buffer_size + packet_overhead() + 5) ++stats_.oversized;
  ++stats_.packets_out;
  stats_.bytes_out += wire.size();
  out_.send_packet(to, std::move(wire));
}

bool Core::send_user_packet(const std::string& node, std::string_view payload) {
  const Member* m = find(node);
  if (m == nullptr) return false;
  const std::string msg = encode_user(payload);
  if (msg.size() + packet_overhead() + 5 > cfg_.udp_buffer_size) return false;
  const Address to = m->addr;
  const std::string name = m->name;
  raw_send(to, &name, msg);
  return true;
}

bool Core::send_user_stream(const std::string& node, std::string_view payload) {
  const Member* m = find(node);
  if (m == nullptr) return false;
  out_.send_stream(next_id_++, m->addr, encode_stream(cfg_.codec, encode_user_stream(payload)),
                   false);
  return true;
}

// --- receiving -----------------------------------------------------------------------------------

void Core::on_packet(TimePoint now, const Address& from, std::string_view bytes) {
  advance(now);
  ++stats_.packets_in;
  stats_.bytes_in += bytes.size();
  std::string msg;
  const DecodeStatus st = decode_packet(cfg_.codec, bytes, msg);
  switch (st) {
    case DecodeStatus::ok:
      current_from_ = &from;
      handle_command(msg, from, 0);
      current_from_ = nullptr;
      return;
    case DecodeStatus::auth_failed:
      ++stats_.dropped_auth;
      return;
    case DecodeStatus::bad_label:
      ++stats_.dropped_label;
      return;
    case DecodeStatus::bad_crc:
      ++stats_.dropped_crc;
      return;
    default:
      ++stats_.dropped_malformed;
      return;
  }
}

void Core::handle_command(std::string_view msg, const Address& from, int depth) {
  if (msg.empty() || depth > kMaxCommandDepth) {
    ++stats_.dropped_malformed;
    return;
  }
  const std::string_view body = msg.substr(1);
  switch (static_cast<MsgType>(static_cast<std::uint8_t>(msg[0]))) {
    case MsgType::compound: {
      std::vector<std::string_view> parts;
      std::size_t truncated = 0;
      if (!split_compound(body, parts, truncated)) {
        ++stats_.dropped_malformed;
        return;
      }
      stats_.dropped_malformed += truncated;
      for (auto p : parts) handle_command(p, from, depth + 1);
      return;
    }
    case MsgType::compress: {
      std::string inner;
      if (decompress_message(body, inner, 1u << 20) != DecodeStatus::ok) {
        ++stats_.dropped_malformed;
        return;
      }
      handle_command(inner, from, depth + 1);
      return;
    }
    case MsgType::ping:
      return handle_ping(body, from);
    case MsgType::indirect_ping:
      return handle_indirect_ping(body, from);
    case MsgType::ack:
      return handle_ack_or_nack(body, true);
    case MsgType::nack:
      return handle_ack_or_nack(body, false);
    case MsgType::suspect: {
      Suspect s;
      if (!decode(body, s)) break;
      suspect_node(s);
      return;
    }
    case MsgType::alive: {
      Alive a;
      if (!decode(body, a)) break;
      alive_node(a, false);
      return;
    }
    case MsgType::dead: {
      Dead d;
      if (!decode(body, d)) break;
      dead_node(d);
      return;
    }
    case MsgType::user:
      out_.user_message(body);
      return;
    default:
      break;
  }
  ++stats_.dropped_malformed;
}

void Core::handle_ping(std::string_view body, const Address& from) {
  Ping p;
  if (!decode(body, p)) {
    ++stats_.dropped_malformed;
    return;
  }
  if (!p.node.empty() && p.node != cfg_.name) {
    ++stats_.dropped_wrong_node;
    return;
  }
  Address to = from;
  if (!p.source_addr.empty() && p.source_port != 0)
    to = {normalize_ip(p.source_addr), p.source_port};
  send_msg(to, p.source_node.empty() ? nullptr : &p.source_node, encode(Ack{p.seq_no, ""}));
}

void Core::handle_indirect_ping(std::string_view body, const Address& from) {
  IndirectPing ip;
  if (!decode(body, ip)) {
    ++stats_.dropped_malformed;
    return;
  }
  Address requester = from;
  if (!ip.source_addr.empty() && ip.source_port != 0) {
    requester = {normalize_ip(ip.source_addr), ip.source_port};
  }
  const std::uint32_t local = ++seq_;
  const std::uint32_t orig = ip.seq_no;
  std::uint64_t nack_timer = 0;
  if (ip.nack) {
    nack_timer = schedule(now_ + cfg_.probe_timeout, [this, requester, orig] {
      send_msg(requester, nullptr, encode(Nack{orig}));
    });
  }
  AckHandler h;
  h.on_ack = [this, requester, orig, nack_timer] {
    cancel(nack_timer);
    send_msg(requester, nullptr, encode(Ack{orig, ""}));
  };
  h.timer = schedule(now_ + cfg_.probe_timeout, [this, local] { acks_.erase(local); });
  acks_[local] = std::move(h);
  send_msg(Address{normalize_ip(ip.target), ip.port}, &ip.node, ping_msg(local, ip.node));
}

void Core::handle_ack_or_nack(std::string_view body, bool is_ack) {
  // Ack and nack share what the handler lookup needs: {SeqNo} (an ack's Payload is optional).
  Ack a;
  if (!decode(body, a)) {
    ++stats_.dropped_malformed;
    return;
  }
  auto it = acks_.find(a.seq_no);
  if (it == acks_.end()) {
    if (is_ack) ++stats_.unknown_ack;
    return;
  }
  if (!is_ack) {
    if (it->second.on_nack) it->second.on_nack();
    return;
  }
  auto h = std::move(it->second);
  acks_.erase(it);
  cancel(h.timer);
  if (h.on_ack) h.on_ack();
}

}  // namespace brokerha::membership
