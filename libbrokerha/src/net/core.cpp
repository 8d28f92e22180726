// SPDX-License-Identifier: Apache-2.0
#include "net/core.hpp"

#include <brokerha/version.hpp>

#include <algorithm>
#include <functional>

#include "cluster/protocol.hpp"
#include "net/connection.hpp"
#include "topic/topic.hpp"

namespace brokerha::net {

// ---- SessionTable ----------------------------------------------------------------------------

const ClientSessionPtr* SessionTable::find(std::string_view id) const noexcept {
  if (size_ == 0) return nullptr;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = home(id);; i = (i + 1) & mask) {
    const ClientSessionPtr& s = slots_[i];
    if (!s) return nullptr;
    if (s->state.client_id() == id) return &s;
  }
}

void SessionTable::insert(ClientSessionPtr s) {
  if ((size_ + 1) * 4 > slots_.size() * 3) grow();
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = home(s->state.client_id());
  while (slots_[i]) i = (i + 1) & mask;
  slots_[i] = std::move(s);
  ++size_;
}

bool SessionTable::erase(const ClientSession* s) noexcept {
  if (size_ == 0 || s == nullptr) return false;
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = home(s->state.client_id());
  while (slots_[i] && slots_[i].get() != s) i = (i + 1) & mask;
  if (!slots_[i]) return false;
  slots_[i].reset();
  --size_;
  // Backward shift: move up every later entry of the run whose home is not in (i, j].
  for (std::size_t j = (i + 1) & mask; slots_[j]; j = (j + 1) & mask) {
    const std::size_t h = home(slots_[j]->state.client_id());
    const bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
    if (stays) continue;
    slots_[i] = std::move(slots_[j]);
    i = j;
  }
  return true;
}

void SessionTable::grow() {
  std::vector<ClientSessionPtr> old = std::move(slots_);
  slots_.clear();
  slots_.resize(old.empty() ? 16 : old.size() * 2);
  size_ = 0;
  for (ClientSessionPtr& s : old) {
    if (s) insert(std::move(s));
  }
}

namespace {

// Splits "$share/{group}/{filter}" into (group, filter); other filters have no group.
std::pair<std::string_view, std::string_view> split_shared(std::string_view full) {
  topic::SharedFilter shared;
  if (topic::parse_shared(full, shared)) return {shared.group, shared.filter};
  return {{}, full};
}

constexpr auto kSweepInterval = std::chrono::seconds(1);
// How long a shard remembers the claim on a client id it no longer holds: far longer than a
// claim takes to cross the cluster (bounded by the route ack timeout, about a second).
constexpr auto kClaimMemory = std::chrono::seconds(60);

}  // namespace

Core::Core(BrokerOptions options) : options_(std::move(options)) {
  set_rules(access::Rules::compile(options_.access));
  if (options_.cluster) {
    const ClusterOptions& c = *options_.cluster;
    node_name = c.membership.name;
    // A delete must outlive every way an older copy can come back: gossip of the dead node
    // and two rounds of discovery (docs/cluster.md, "Retained messages").
    retained_.set_tombstone_ttl(c.membership.gossip_to_the_dead_time +
                                2 * c.discovery.refresh_interval);
    retained_.set_max_tombstones(c.max_tombstones);
  }
  unsigned n = options_.io_threads;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  shards_.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    shards_.push_back(std::make_unique<Shard>(i));
    shards_.back()->outbox.resize(n);
  }
}

Core::~Core() = default;

unsigned Core::home_shard(std::string_view client_id) const noexcept {
  return static_cast<unsigned>(std::hash<std::string_view>{}(client_id) % shards_.size());
}

// ---- routing -------------------------------------------------------------------------------

template <class Pick>
std::size_t Core::match_local(const MessagePtr& message, Shard& from, Pick&& pick) {
  std::size_t targets = 0;
  const Message& m = *message;
  std::vector<const SubEntry*>& matches = from.match_scratch;
  matches.clear();
  tree_.match(
      m.topic, [&](const SubEntry& e) { matches.push_back(&e); },
      [&](const topic::SubscriptionTree<SubEntry>::Group& g) {
        if (g.members.empty()) return;
        if (const SubEntry* e = pick(g)) matches.push_back(e);
      });
  if (matches.empty()) return targets;
  // One delivery per session: the highest granted QoS of its matching subscriptions, with
  // all their subscription identifiers (MQTT 5.0 3.3.4).
  if (matches.size() > 1) {
    std::stable_sort(matches.begin(), matches.end(), [](const SubEntry* a, const SubEntry* b) {
      return std::less<const ClientSession*>{}(a->key, b->key);
    });
  }
  for (std::size_t i = 0; i < matches.size();) {
    const ClientSession* key = matches[i]->key;
    std::size_t j = i;
    session::Delivery d;
    bool any = false;
    for (; j < matches.size() && matches[j]->key == key; ++j) {
      const session::SubscriptionOptions& o = matches[j]->options;
      if (o.no_local && key->state.client_id() == m.origin) continue;
      any = true;
      d.qos = std::max(d.qos, std::min(m.qos, o.qos));
      if (o.retain_as_published && m.retain) d.retain = true;
      if (o.identifier != 0) d.subscription_ids.push_back(o.identifier);
    }
    if (any) {
      d.message = message;
      from.outbox[key->shard].push_back(Target{matches[i]->session, std::move(d)});
      ++targets;
    }
    i = j;
  }
  return targets;
}

// Shared subscriptions in a cluster (docs/cluster.md, "Shared subscriptions"): the node where
// a message is published makes the one choice per matching group (g, f). The slots are this
// node's members of the group, one each, and every other node that announced "$share/g/f",
// one each; the group's round-robin cursor picks a slot. A node picked gets the message with
// the group named in it and delivers to one of its members; no other node delivers it to
// that group.
RouteResult Core::route(const MessagePtr& message, Shard& from) {
  using LocalGroup = topic::SubscriptionTree<SubEntry>::Group;
  const Message& m = *message;
  // Cluster: `$SYS` stays on this node; retained writes go to every peer (each holds the
  // whole retained set), other messages to the peers that announced a matching filter.
  const bool clustered = cluster != nullptr && !cluster::node_local_topic(m.topic);
  std::optional<broker::RetainedVersion> version;
  if (m.retain) {
    std::lock_guard<std::mutex> lock(retained_mutex_);
    version = retained_.write(message, node_name);
  }
  RouteResult result;
  std::vector<std::uint32_t>& peers = from.peer_scratch;
  std::vector<RemoteGroupMatch>& groups = from.remote_groups;
  std::vector<SharedPick> picks;  // no allocation unless a remote group is chosen
  peers.clear();
  groups.clear();
  std::shared_lock<std::shared_mutex> lock(tree_mutex_);
  const bool all = clustered && m.retain && peer_count.load(std::memory_order_relaxed) != 0;
  if (clustered) {
    remote_tree_.match(
        m.topic,
        [&](const RemoteSub& r) {
          if (!all) peers.push_back(r.key);
        },
        [&](const topic::SubscriptionTree<RemoteSub>::Group& g) {
          if (!g.members.empty()) groups.push_back(RemoteGroupMatch{&g, false});
        });
  }
  result.targets = match_local(message, from, [&](const LocalGroup& g) -> const SubEntry* {
    const topic::SubscriptionTree<RemoteSub>::Group* remote = nullptr;
    for (RemoteGroupMatch& r : groups) {
      if (!r.paired && r.group->share == g.share) {
        r.paired = true;
        remote = r.group;
        break;
      }
    }
    const std::size_t local = g.members.size();
    const std::size_t slots = local + (remote != nullptr ? remote->members.size() : 0);
    const std::size_t n = g.next.fetch_add(1, std::memory_order_relaxed) % slots;
    if (n < local) return &g.members[n];
    picks.push_back(SharedPick{remote->members[n - local].key, g.share});
    return nullptr;
  });
  if (!clustered) {
    lock.unlock();
    if (result.targets != 0) schedule_flush(from);
    return result;
  }
  for (const RemoteGroupMatch& r : groups) {
    if (r.paired) continue;  // chosen above, with the local members
    const auto& members = r.group->members;
    const std::uint32_t n = r.group->next.fetch_add(1, std::memory_order_relaxed);
    picks.push_back(SharedPick{members[n % members.size()].key, r.group->share});
  }
  if (!picks.empty()) {
    std::sort(picks.begin(), picks.end(),
              [](const SharedPick& a, const SharedPick& b) { return a.peer < b.peer; });
    if (!all) {
      for (const SharedPick& p : picks) peers.push_back(p.peer);
    }
  }
  if (all || !peers.empty()) {
    if (peers.size() > 1) {
      std::sort(peers.begin(), peers.end());
      peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
    }
    RemoteSend r;
    r.message = message;
    if (m.retain) r.version = version;
    r.all = all;
    r.peers = peers;
    r.shared = std::move(picks);
    from.remote_outbox.push_back(std::move(r));
    result.remote = all ? std::size_t{peer_count.load(std::memory_order_relaxed)} : peers.size();
  }
  lock.unlock();
  if (result.targets != 0 || result.remote != 0) schedule_flush(from);
  return result;
}

RouteResult Core::route_from_cluster(const MessagePtr& message,
                                     const std::optional<broker::RetainedVersion>& version,
                                     const std::vector<std::string>& shares, Shard& from) {
  if (message->retain && version) {
    std::lock_guard<std::mutex> lock(retained_mutex_);
    retained_.apply(message->topic, message, *version);
  }
  RouteResult result;
  std::size_t served = 0;
  {
    std::shared_lock<std::shared_mutex> lock(tree_mutex_);
    // A group gets the message only when the publishing node chose this node for it: a
    // message forwarded for a plain subscriber (or for another group) must not reach it,
    // since the publishing node may have chosen another node or a member of its own.
    result.targets = match_local(
        message, from, [&](const topic::SubscriptionTree<SubEntry>::Group& g) -> const SubEntry* {
          if (shares.empty() || std::find(shares.begin(), shares.end(), g.share) == shares.end())
            return nullptr;
          ++served;
          const std::uint32_t n = g.next_member.fetch_add(1, std::memory_order_relaxed);
          return &g.members[n % g.members.size()];
        });
  }
  // Each listed group matched at most once (a group is one entry of the tree).
  result.shared_missed = shares.size() - std::min(served, shares.size());
  if (result.targets != 0) schedule_flush(from);
  return result;
}

void Core::schedule_flush(Shard& shard) {
  if (shard.flush_scheduled) return;
  shard.flush_scheduled = true;
  asio::post(shard.ctx, [this, &shard] {
    shard.flush_scheduled = false;
    flush(shard);
  });
}

void Core::flush(Shard& from) {
  if (cluster != nullptr) {
    if (!from.remote_outbox.empty()) {
      std::vector<RemoteSend> batch;
      batch.swap(from.remote_outbox);
      cluster->forward(std::move(batch));
    }
    if (!from.route_changes.empty()) {
      std::vector<std::string> changes;
      changes.swap(from.route_changes);
      cluster->routes_changed(std::move(changes), {});
    }
  }
  for (unsigned i = 0; i < from.outbox.size(); ++i) {
    std::vector<Target>& batch = from.outbox[i];
    if (batch.empty()) continue;
    if (i == from.index) {
      std::vector<Target> local;
      local.swap(batch);
      for (Target& t : local) deliver(from, t);
      local.clear();
      if (batch.empty()) batch.swap(local);  // keep the capacity
      continue;
    }
    Shard& target = *shards_[i];
    asio::post(target.ctx, [this, &target, b = std::move(batch)]() mutable {
      for (Target& t : b) deliver(target, t);
      flush(target);
    });
    batch = std::vector<Target>();
  }
  std::vector<std::shared_ptr<Connection>> dirty;
  dirty.swap(from.dirty);
  for (const auto& c : dirty) c->flush();
  dirty.clear();
  if (from.dirty.empty()) from.dirty.swap(dirty);  // keep the capacity
}

void Core::deliver(Shard& shard, Target& target) {
  ClientSession& s = *target.session;
  if (s.removed) return;
  if (!delivery_allowed(s, target.delivery.message->topic)) {
    shard.counters.add(shard.counters.acl_denials);
    return;
  }
  if (s.connection == nullptr && target.delivery.qos == 0) return;  // offline: QoS 1/2 only
  const std::size_t before = s.state.queued_bytes();
  const std::size_t dropped =
      s.state.enqueue(std::move(target.delivery), {options_.max_queued_messages});
  shard.account(static_cast<std::int64_t>(s.state.queued_bytes()) -
                static_cast<std::int64_t>(before));
  if (dropped != 0) shard.counters.add(shard.counters.messages_dropped, dropped);
  if (s.connection != nullptr) s.connection->pump();
}

bool Core::delivery_allowed(const ClientSession& s, std::string_view topic_name) const {
  const access::Rules& r = rules();
  if (acl_hooks.empty() && r.acl_allows_everything()) return true;
  access::Identity who;
  who.client_id = s.state.client_id();
  if (s.username) who.username = *s.username;
  if (s.connection != nullptr) {
    who.remote_ip = s.connection->remote_address();
    who.remote_port = s.connection->remote_port();
  }
  if (!acl_hooks.empty()) {
    AclRequest req;
    req.client_id = who.client_id;
    req.username = who.username;
    req.remote_address = who.remote_ip;
    req.topic = topic_name;
    req.access = Access::read;
    for (const auto& hook : acl_hooks) {
      const Decision d = hook->check_delivery(req);
      if (d != Decision::defer) return d == Decision::allow;
    }
  }
  return r.allows(who, topic_name, Access::read, false);
}

void Core::set_rules(std::unique_ptr<access::Rules> rules) {
  std::lock_guard<std::mutex> lock(rules_mutex_);
  rules_.store(rules.get(), std::memory_order_release);
  rules_history_.push_back(std::move(rules));
}

// ---- sessions ------------------------------------------------------------------------------

void Core::discard_session(Shard& shard, const ClientSessionPtr& session) {
  if (session->removed) return;
  session->removed = true;
  shard.account(-static_cast<std::int64_t>(session->state.queued_bytes()));
  if (session->will) {
    publish_will(shard, session->will->message);
    session->will.reset();
  }
  {
    std::unique_lock<std::shared_mutex> lock(tree_mutex_);
    for (const auto& entry : session->state.subscriptions()) {
      const auto [group, filter] = split_shared(entry.first);
      if (tree_.erase(filter, group, session.get())) note_filter(*session, entry.first, -1);
    }
  }
  shard.sessions.erase(session.get());
  shard.counters.sessions.store(shard.counters.sessions.load(std::memory_order_relaxed) - 1,
                                std::memory_order_relaxed);
}

std::error_code Core::install_session(Shard& shard, session::ImportedSession imported) {
  const std::string id = imported.session->client_id();
  if (const ClientSessionPtr* found = shard.sessions.find(id)) {
    if ((*found)->connection != nullptr) return make_error_code(errc::session_in_use);
    ClientSessionPtr old = *found;
    old->will.reset();  // replaced, not ended: its delayed will is not due
    discard_session(shard, old);
  }
  auto s = std::make_shared<ClientSession>(id, shard.index);
  s->state = std::move(*imported.session);
  s->version = static_cast<mqtt::ProtocolVersion>(imported.meta.protocol_version);
  s->username = std::move(imported.meta.username);
  s->clean = imported.meta.clean;
  s->expiry_interval = imported.meta.expiry_interval;
  if (s->expiry_interval != 0xFFFFFFFFu) {
    s->expires_at = Clock::now() + std::chrono::seconds(s->expiry_interval);
  }
  for (const auto& [filter, options] : s->state.subscriptions()) subscribe(s, filter, options);
  shard.account(static_cast<std::int64_t>(s->state.queued_bytes()));
  shard.sessions.insert(std::move(s));
  shard.counters.add(shard.counters.sessions);
  return {};
}

bool Core::accept_claim(Shard& shard, const std::string& client_id, const ClaimVersion& version) {
  auto [it, inserted] = shard.claims.try_emplace(client_id);
  if (!inserted && it->second.version.newer_than(version)) return false;
  it->second.version = version;
  it->second.at = Clock::now();
  return true;
}

TakeResult Core::take_session(Shard& shard, const std::string& client_id,
                              const ClaimVersion& version, TakeMode mode, std::string& exported) {
  auto [it, inserted] = shard.claims.try_emplace(client_id);
  if (!inserted && it->second.version.newer_than(version)) return TakeResult::newer_here;
  it->second.version = version;
  it->second.at = Clock::now();
  const ClientSessionPtr* found = shard.sessions.find(client_id);
  if (found == nullptr) return TakeResult::none;
  ClientSessionPtr s = *found;
  if (mode != TakeMode::discard) s->will.reset();  // resumed elsewhere, or superseded
  if (s->connection != nullptr) {
    // Closes with DISCONNECT 0x8E; a clean session (expiry 0) ends with the connection.
    s->connection->kick(ReasonCode::session_taken_over);
    if (mode != TakeMode::discard) s->will.reset();  // a will the kick left waiting
  }
  if (s->removed) return TakeResult::discarded;
  if (mode == TakeMode::move) {
    session::SessionMeta meta;
    meta.protocol_version = static_cast<std::uint8_t>(s->version);
    meta.clean = s->clean;
    meta.username = s->username;
    meta.expiry_interval = s->expiry_interval;
    exported = session::export_session(s->state, meta, Clock::now());
  }
  discard_session(shard, s);
  return mode == TakeMode::move ? TakeResult::moved : TakeResult::discarded;
}

bool Core::adopt_session(Shard& shard, const ClaimVersion& version, std::string_view bytes) {
  std::string error;
  auto imported = session::import_session(bytes, Clock::now(), error);
  if (!imported) return false;
  const std::string& id = imported->session->client_id();
  auto it = shard.claims.find(id);
  if (it == shard.claims.end() || it->second.version.newer_than(version) ||
      version.newer_than(it->second.version) || shard.sessions.contains(id)) {
    return false;
  }
  return !install_session(shard, std::move(*imported));
}

void Core::held_claims(const Shard& shard,
                       std::vector<std::pair<std::string, ClaimVersion>>& out) const {
  for (const auto& [id, record] : shard.claims) {
    if (shard.sessions.contains(id)) out.emplace_back(id, record.version);
  }
}

bool Core::subscribe(const ClientSessionPtr& session, const std::string& full_filter,
                     const session::SubscriptionOptions& options) {
  const auto [group, filter] = split_shared(full_filter);
  std::unique_lock<std::shared_mutex> lock(tree_mutex_);
  const bool replaced = tree_.insert(filter, group, SubEntry{session.get(), session, options});
  if (!replaced) note_filter(*session, full_filter, +1);
  return replaced;
}

bool Core::unsubscribe(const ClientSessionPtr& session, const std::string& full_filter) {
  const auto [group, filter] = split_shared(full_filter);
  std::unique_lock<std::shared_mutex> lock(tree_mutex_);
  const bool erased = tree_.erase(filter, group, session.get());
  if (erased) note_filter(*session, full_filter, -1);
  return erased;
}

void Core::note_filter(ClientSession& session, std::string_view filter, int delta) {
  auto it = local_filter_refs_.find(filter);
  if (delta > 0) {
    if (it == local_filter_refs_.end()) {
      local_filter_refs_.emplace(std::string(filter), 1u);
      if (cluster != nullptr) shards_[session.shard]->route_changes.emplace_back(filter);
    } else {
      ++it->second;
    }
    return;
  }
  if (it == local_filter_refs_.end()) return;
  if (--it->second == 0) {
    local_filter_refs_.erase(it);
    if (cluster != nullptr) shards_[session.shard]->route_changes.emplace_back(filter);
  }
}

bool Core::local_filter_present(const std::string& filter) const {
  std::shared_lock<std::shared_mutex> lock(tree_mutex_);
  return local_filter_refs_.find(filter) != local_filter_refs_.end();
}

std::vector<std::string> Core::local_filters() const {
  std::vector<std::string> out;
  std::shared_lock<std::shared_mutex> lock(tree_mutex_);
  out.reserve(local_filter_refs_.size());
  for (const auto& [f, n] : local_filter_refs_) out.push_back(f);
  return out;
}

void Core::remote_routes_add(std::uint32_t peer, const std::string& full_filter) {
  const auto [group, filter] = split_shared(full_filter);
  std::unique_lock<std::shared_mutex> lock(tree_mutex_);
  remote_tree_.insert(filter, group, RemoteSub{peer});
}

void Core::remote_routes_remove(std::uint32_t peer, const std::string& full_filter) {
  const auto [group, filter] = split_shared(full_filter);
  std::unique_lock<std::shared_mutex> lock(tree_mutex_);
  remote_tree_.erase(filter, group, peer);
}

bool Core::retained_apply(const std::string& topic, const MessagePtr& message,
                          const broker::RetainedVersion& version) {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  return retained_.apply(topic, message, version);
}

void Core::retained_for_each(
    const std::function<void(const std::string&, const broker::RetainedStore::Entry&)>& f) const {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  retained_.for_each(f);
}

std::vector<MessagePtr> Core::retained_matching(std::string_view filter) const {
  std::vector<MessagePtr> out;
  std::lock_guard<std::mutex> lock(retained_mutex_);
  out = retained_.matching(filter);
  return out;
}

std::size_t Core::retained_count() const {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  return retained_.size();
}

std::size_t Core::subscription_count() const {
  std::shared_lock<std::shared_mutex> lock(tree_mutex_);
  return tree_.size();
}

bool Core::memory_over() const noexcept {
  std::int64_t total = 0;
  for (const auto& s : shards_) total += s->counters.queued_bytes.load(std::memory_order_relaxed);
  return total > static_cast<std::int64_t>(options_.max_queued_bytes);
}

void Core::resume_paused(Shard& shard) {
  if (shard.memory_paused.empty()) return;
  std::vector<std::shared_ptr<Connection>> paused;
  paused.swap(shard.memory_paused);
  for (const auto& c : paused) c->resume_reading();
}

void Core::prune_retained() {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  retained_.prune(Clock::now());
}

void Core::publish_will(Shard& shard, const MessagePtr& will) { route(will, shard); }

// ---- the sweep: timeouts, expiries, delayed wills ------------------------------------------

void Core::start_sweeps() {
  for (auto& s : shards_) {
    Shard* shard = s.get();
    asio::post(shard->ctx, [this, shard] { sweep(*shard); });
  }
  if (options_.sys_interval.count() > 0) {
    Shard* shard = shards_[0].get();
    asio::post(shard->ctx, [this, shard] { publish_sys(*shard); });
  }
}

BrokerStats Core::stats() const {
  BrokerStats st;
  auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  for (const auto& shard : shards_) {
    const ShardCounters& c = shard->counters;
    st.clients_connected += get(c.clients_connected);
    st.sessions += get(c.sessions);
    st.inflight_messages += get(c.inflight);
    st.messages_received += get(c.messages_received);
    st.messages_sent += get(c.messages_sent);
    st.messages_dropped += get(c.messages_dropped);
    st.bytes_received += get(c.bytes_received);
    st.bytes_sent += get(c.bytes_sent);
    st.connections_total += get(c.connections_total);
    st.auth_failures += get(c.auth_failures);
    st.acl_denials += get(c.acl_denials);
    st.protocol_errors += get(c.protocol_errors);
    st.keepalive_timeouts += get(c.keepalive_timeouts);
    st.stuck_consumers_closed += get(c.stuck_consumers_closed);
  }
  st.subscriptions = subscription_count();
  st.retained_messages = retained_count();
  st.uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_at);
  return st;
}

void Core::publish_sys(Shard& shard) {
  if (stopping.load()) return;
  const BrokerStats st = stats();
  auto put = [&](const char* name, std::string value) {
    auto m = std::make_shared<Message>();
    m->topic = std::string("$SYS/broker/") + name;
    m->payload = std::move(value);
    m->retain = true;
    route(m, shard);
  };
  put("version", std::string("brokerha ") + library_version());
  put("uptime", std::to_string(st.uptime.count()) + " seconds");
  put("clients/connected", std::to_string(st.clients_connected));
  put("clients/total", std::to_string(st.sessions));
  put("clients/disconnected",
      std::to_string(st.sessions >= st.clients_connected ? st.sessions - st.clients_connected : 0));
  put("messages/received", std::to_string(st.messages_received));
  put("messages/sent", std::to_string(st.messages_sent));
  put("messages/dropped", std::to_string(st.messages_dropped));
  put("messages/inflight", std::to_string(st.inflight_messages));
  put("load/bytes/received", std::to_string(st.bytes_received));
  put("load/bytes/sent", std::to_string(st.bytes_sent));
  put("subscriptions/count", std::to_string(st.subscriptions));
  put("retained messages/count", std::to_string(st.retained_messages));
  flush(shard);
  shard.sys_timer.expires_after(options_.sys_interval);
  shard.sys_timer.async_wait([this, &shard](const std::error_code& ec) {
    if (!ec) publish_sys(shard);
  });
}

void Core::sweep(Shard& shard) {
  if (stopping.load()) return;
  const auto now = Clock::now();
  ++shard.sweeps;
  auto& conns = shard.connections;
  for (auto it = conns.begin(); it != conns.end();) {
    auto c = it->lock();
    if (!c || c->closed()) {
      if (c) c->unlinked();
      it = conns.erase(it);
      continue;
    }
    ++it;
    c->check_timeouts(now);  // may close it: unlinked at the next sweep
  }
  std::vector<ClientSessionPtr> expired;
  std::uint64_t inflight = 0;
  std::vector<MessagePtr> wills;  // published after the walk (routing may not touch the table)
  shard.sessions.for_each([&](const ClientSessionPtr& s) {
    inflight += s->state.inflight().size();
    s->state.shrink_if_empty();
    if (s->connection != nullptr) return;
    if (s->will && now >= s->will->due) {
      wills.push_back(std::move(s->will->message));
      s->will.reset();
    }
    if (s->expires_at && now >= *s->expires_at) expired.push_back(s);
  });
  for (const MessagePtr& w : wills) publish_will(shard, w);
  for (const auto& s : expired) discard_session(shard, s);
  if (shard.sweeps % 16 == 0 && !shard.claims.empty()) {
    // A claim record outlives its session by kClaimMemory: long past any late claim.
    for (auto it = shard.claims.begin(); it != shard.claims.end();) {
      if (now - it->second.at > kClaimMemory && !shard.sessions.contains(it->first)) {
        it = shard.claims.erase(it);
      } else {
        ++it;
      }
    }
  }
  shard.counters.inflight.store(inflight, std::memory_order_relaxed);
  resume_paused(shard);  // over the bound, publishers still get one read per sweep
  if (shard.index == 0) prune_retained();
  flush(shard);
  shard.sweep_timer.expires_after(kSweepInterval);
  shard.sweep_timer.async_wait([this, &shard](const std::error_code& ec) {
    if (!ec) sweep(shard);
  });
}

}  // namespace brokerha::net
