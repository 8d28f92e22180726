// SPDX-License-Identifier: Apache-2.0
#include "registry/session_registry.hpp"

namespace brokerha::registry {

namespace {

// How long a shard remembers the claim on a client id it no longer holds: far longer than a
// claim takes to cross the cluster (bounded by the route ack timeout, about a second).
constexpr auto kClaimMemory = std::chrono::seconds(60);
// A moved session's trail ends within a few round trips; one this old lost its new node.
constexpr auto kTrailMemory = std::chrono::seconds(60);

}  // namespace

access::Identity SessionRegistry::identity(const ClientSession& s) {
  access::Identity who;
  who.client_id = s.state.client_id();
  if (s.username) who.username = *s.username;
  if (s.attached != nullptr) {
    who.remote_ip = s.attached->remote_address();
    who.remote_port = s.attached->remote_port();
  } else if (s.last_peer) {
    who.remote_ip = s.last_peer->address;
    who.remote_port = s.last_peer->port;
  }
  return who;
}

void SessionRegistry::recheck(ClientSession& s) {
  if (cx_.access.deliveries_unchecked()) return;
  const access::Identity who = identity(s);
  auto denied = [&](const session::Delivery& d) {
    return !cx_.access.delivery_allowed(who, d.message->topic);
  };
  const std::size_t before = s.state.queued_bytes();
  std::size_t n = s.state.drop_queued_if(denied);
  cx_.counters.account(static_cast<std::int64_t>(s.state.queued_bytes()) -
                       static_cast<std::int64_t>(before));
  // In flight: a PUBLISH not yet acknowledged is not sent again to a client that may not read
  // it; one already released (PUBREL pending) was delivered and completes normally.
  std::vector<std::uint16_t> abandon;
  for (const session::Inflight& f : s.state.inflight()) {
    if (!f.released && denied(f.delivery)) abandon.push_back(f.packet_id);
  }
  for (std::uint16_t id : abandon) s.state.abandon(id);
  n += abandon.size();
  if (n != 0) router::Counters::add(cx_.counters.acl_denials, n);
}

Attached SessionRegistry::attach(const AttachRequest& request, Attachment* who) {
  Attached out;
  if (const ClientSessionPtr* found = table_.find(request.client_id)) {
    ClientSessionPtr existing = *found;
    if (existing->attached != nullptr) existing->attached->kick(ReasonCode::session_taken_over);
    // The old connection's session may have ended with it (clean session, expiry 0): then
    // there is nothing to resume or discard.
    if (existing->removed) {
      out.present = false;
    } else if (request.clean_start) {
      discard(existing);  // publishes a will still waiting for its delay
    } else {
      out.present = true;
      existing->will.reset();  // reconnected within the will delay: no will (MQTT 5.0 3.1.3.2.2)
      out.session = existing;
    }
  }
  const bool resumed = out.session != nullptr;
  if (!out.session) {
    out.session = std::make_shared<ClientSession>(request.client_id, cx_.shard);
    table_.insert(out.session);
    router::Counters::add(cx_.counters.sessions);
  }
  ClientSession& s = *out.session;
  s.attached = who;
  s.version = request.version;
  s.username = request.username;
  s.clean = request.clean_start;
  s.expiry_interval = request.session_expiry;
  s.expires_at.reset();
  s.last_peer.reset();
  router::Counters::add(cx_.counters.clients_connected);
  if (resumed) recheck(s);
  return out;
}

void SessionRegistry::detach(const ClientSessionPtr& s, Attachment* who, message::MessagePtr will,
                             std::uint32_t will_delay, Clock::time_point now) {
  if (s->attached == who) {
    s->last_peer = std::make_unique<session::LastPeer>(
        session::LastPeer{who->remote_address(), who->remote_port()});
    s->attached = nullptr;
    router::Counters::sub(cx_.counters.clients_connected);
  }
  s->state.connection_lost();
  const bool session_ends = s->expiry_interval == 0;
  if (will) {
    if (will_delay == 0 || session_ends) {
      publish_will(will);
    } else {
      s->will = std::make_unique<session::PendingWill>(
          session::PendingWill{std::move(will), now + std::chrono::seconds(will_delay)});
    }
  }
  if (session_ends) {
    discard(s);
    return;
  }
  if (s->expiry_interval != 0xFFFFFFFFu) {
    s->expires_at = now + std::chrono::seconds(s->expiry_interval);
  }
  const std::size_t before = s->state.queued_bytes();
  s->state.drop_qos0();  // an offline session keeps QoS 1/2 only (as Mosquitto)
  cx_.counters.account(static_cast<std::int64_t>(s->state.queued_bytes()) -
                       static_cast<std::int64_t>(before));
}

void SessionRegistry::discard(const ClientSessionPtr& session) {
  if (session->removed) return;
  session->removed = true;
  cx_.counters.account(-static_cast<std::int64_t>(session->state.queued_bytes()));
  if (session->will) {
    publish_will(session->will->message);
    session->will.reset();
  }
  cx_.router.routes().unsubscribe_all(*session, route_changes());
  table_.erase(session.get());
  router::Counters::sub(cx_.counters.sessions);
}

void SessionRegistry::publish_will(const message::MessagePtr& will) {
  const router::RouteResult r = cx_.router.route(will, cx_.outbox);
  if (r.targets != 0 || r.remote != 0) cx_.schedule_flush();
}

std::error_code SessionRegistry::install(session::ImportedSession imported, Clock::time_point now) {
  const std::string id = imported.session->client_id();
  if (const ClientSessionPtr* found = table_.find(id)) {
    if ((*found)->attached != nullptr) return make_error_code(errc::session_in_use);
    ClientSessionPtr old = *found;
    old->will.reset();  // replaced, not ended: its delayed will is not due
    discard(old);
  }
  auto s = std::make_shared<ClientSession>(id, cx_.shard);
  s->state = std::move(*imported.session);
  s->version = static_cast<mqtt::ProtocolVersion>(imported.meta.protocol_version);
  s->username = std::move(imported.meta.username);
  s->clean = imported.meta.clean;
  s->expiry_interval = imported.meta.expiry_interval;
  if (s->expiry_interval != 0xFFFFFFFFu) {
    s->expires_at = now + std::chrono::seconds(s->expiry_interval);
  }
  for (const auto& [filter, options] : s->state.subscriptions()) {
    cx_.router.routes().subscribe(s, filter, options, route_changes());
  }
  if (ClientSessionPtr t = drop_trail(id)) {
    // The session comes back to the node it left (its move failed, or the client returned):
    // what its trail queued meanwhile joins it, after what it holds.
    std::vector<std::string> added;
    s->state.merge_from(t->state, added);
    for (const std::string& filter : added) {
      cx_.router.routes().subscribe(s, filter, s->state.subscriptions().at(filter),
                                    route_changes());
    }
  }
  cx_.counters.account(static_cast<std::int64_t>(s->state.queued_bytes()));
  table_.insert(std::move(s));
  router::Counters::add(cx_.counters.sessions);
  return {};
}

void SessionRegistry::deliver(router::Target& target) {
  ClientSession* sp = target.session.get();
  if (sp->removed) {
    // Routed before its session moved away and left a trail: the trail takes it.
    auto t = trails_.empty() ? trails_.end() : trails_.find(sp->state.client_id());
    if (t == trails_.end() || t->second.session.get() == sp) return;
    sp = t->second.session.get();
  }
  ClientSession& s = *sp;
  if (!cx_.access.deliveries_unchecked() &&
      !cx_.access.delivery_allowed(identity(s), target.delivery.message->topic)) {
    router::Counters::add(cx_.counters.acl_denials);
    return;
  }
  if (s.attached == nullptr && target.delivery.qos == 0) return;  // offline: QoS 1/2 only
  const std::size_t before = s.state.queued_bytes();
  session::QueueLimits limits{cx_.max_queued_messages};
  if (cx_.max_queued_bytes != nullptr) {
    limits.max_bytes = cx_.max_queued_bytes->load(std::memory_order_relaxed);
  }
  std::size_t over_bytes = 0;
  const std::size_t dropped = s.state.enqueue(std::move(target.delivery), limits, &over_bytes);
  cx_.counters.account(static_cast<std::int64_t>(s.state.queued_bytes()) -
                       static_cast<std::int64_t>(before));
  if (dropped != 0) router::Counters::add(cx_.counters.messages_dropped, dropped);
  if (over_bytes != 0) router::Counters::add(cx_.counters.session_bytes_dropped, over_bytes);
  if (s.attached != nullptr) s.attached->pump();
}

void SessionRegistry::sweep(Clock::time_point now, std::uint32_t sweeps) {
  std::vector<ClientSessionPtr> expired;
  std::uint64_t inflight = 0;
  std::vector<message::MessagePtr> wills;  // published after the walk (routing may not touch
                                           // the table)
  table_.for_each([&](const ClientSessionPtr& s) {
    inflight += s->state.inflight().size();
    s->state.shrink_if_empty();
    if (s->attached != nullptr) return;
    if (s->will && now >= s->will->due) {
      wills.push_back(std::move(s->will->message));
      s->will.reset();
    }
    if (s->expires_at && now >= *s->expires_at) expired.push_back(s);
  });
  for (const message::MessagePtr& w : wills) publish_will(w);
  for (const auto& s : expired) discard(s);
  for (auto it = trails_.begin(); it != trails_.end();) {
    // A trail ends when its session's new node has it (end_trail) or it comes back
    // (install): one older than kTrailMemory lost both (its peers are gone).
    if (now - it->second.since > kTrailMemory) {
      const std::string id = (it++)->first;
      drop_trail(id);
    } else {
      ++it;
    }
  }
  if (sweeps % 16 == 0 && !claims_.empty()) {
    // A claim record outlives its session by kClaimMemory: long past any late claim.
    for (auto it = claims_.begin(); it != claims_.end();) {
      if (now - it->second.at > kClaimMemory && !table_.contains(it->first)) {
        it = claims_.erase(it);
      } else {
        ++it;
      }
    }
  }
  cx_.counters.inflight.store(inflight, std::memory_order_relaxed);
}

bool SessionRegistry::accept_claim(const std::string& client_id, const ClaimVersion& version,
                                   Clock::time_point now) {
  auto [it, inserted] = claims_.try_emplace(client_id);
  if (!inserted && it->second.version.newer_than(version)) return false;
  it->second.version = version;
  it->second.at = now;
  return true;
}

router::TakeResult SessionRegistry::take(const std::string& client_id, const ClaimVersion& version,
                                         router::TakeMode mode, std::string& exported,
                                         Clock::time_point now, bool trail) {
  using router::TakeMode;
  using router::TakeResult;
  auto [it, inserted] = claims_.try_emplace(client_id);
  if (!inserted && it->second.version.newer_than(version)) return TakeResult::newer_here;
  it->second.version = version;
  it->second.at = now;
  const ClientSessionPtr* found = table_.find(client_id);
  if (found == nullptr) return TakeResult::none;
  ClientSessionPtr s = *found;
  if (mode != TakeMode::discard) s->will.reset();  // resumed elsewhere, or superseded
  if (s->attached != nullptr) {
    // Closes with DISCONNECT 0x8E; a clean session (expiry 0) ends with the connection.
    s->attached->kick(ReasonCode::session_taken_over);
    if (mode != TakeMode::discard) s->will.reset();  // a will the kick left waiting
  }
  if (s->removed) return TakeResult::discarded;
  // Moved to the claimant; or, yielding after a partition, handed to the newer holder to be
  // merged into its session.
  if (mode != TakeMode::discard) exported = export_of(*s, now);
  if (mode == TakeMode::move && trail) {
    // The trail subscribes before the session leaves: the filters stay announced, so what
    // peers send here until they know the new node's routes is kept, not dropped.
    ClientSessionPtr older = drop_trail(client_id);
    auto t = std::make_shared<ClientSession>(client_id, cx_.shard);
    t->username = s->username;
    t->version = s->version;
    const access::Identity who = identity(*s);
    if (!who.remote_ip.empty()) {
      t->last_peer = std::make_unique<session::LastPeer>(
          session::LastPeer{std::string(who.remote_ip), who.remote_port});
    }
    for (const auto& [filter, options] : s->state.subscriptions()) {
      if (router::split_shared(filter).first.empty()) {
        t->state.subscriptions().emplace(filter, options);
      }
    }
    // In the session's place in the tree (one lock): a message is routed to the session or
    // to its trail, never to both. What was routed to the session before goes to the trail
    // (deliver()).
    cx_.router.routes().hand_over(*s, t);
    if (older) {
      // A trail of an earlier move that had not ended: what it queued stays first.
      for (const session::Delivery& d : older->state.queue()) t->state.restore_queued(d);
    }
    cx_.counters.account(static_cast<std::int64_t>(t->state.queued_bytes()));
    trails_[client_id] = Trail{std::move(t), now};
  }
  discard(s);
  return mode == TakeMode::move ? TakeResult::moved : TakeResult::discarded;
}

ClientSessionPtr SessionRegistry::drop_trail(const std::string& id) {
  auto it = trails_.find(id);
  if (it == trails_.end()) return nullptr;
  ClientSessionPtr t = std::move(it->second.session);
  trails_.erase(it);
  cx_.router.routes().unsubscribe_all(*t, route_changes());
  t->removed = true;
  cx_.counters.account(-static_cast<std::int64_t>(t->state.queued_bytes()));
  return t;
}

bool SessionRegistry::unroute_trail(const std::string& client_id,
                                    std::vector<std::string>& changes) {
  auto it = trails_.find(client_id);
  if (it == trails_.end()) return false;
  cx_.router.routes().uncount_all(*it->second.session, &changes);
  return true;
}

std::string SessionRegistry::end_trail(const std::string& client_id, Clock::time_point now) {
  ClientSessionPtr t = drop_trail(client_id);
  if (!t || t->state.queued() == 0) return {};
  return export_of(*t, now);
}

bool SessionRegistry::splice_trail(const std::string& client_id, std::string_view bytes,
                                   std::size_t at, Clock::time_point now) {
  const ClientSessionPtr* found = table_.find(client_id);
  if (found == nullptr) return false;
  if (bytes.empty()) return true;
  std::string error;
  auto imported = session::import_session(bytes, now, error);
  if (!imported || imported->session->client_id() != client_id) return false;
  ClientSession& s = **found;
  const std::size_t before = s.state.queued_bytes();
  s.state.splice_trail(std::min(at, s.state.queued()), *imported->session);
  cx_.counters.account(static_cast<std::int64_t>(s.state.queued_bytes()) -
                       static_cast<std::int64_t>(before));
  recheck(s);  // queued for the old node's identity of the client: checked again for this one
  if (s.attached != nullptr) s.attached->pump();
  return true;
}

bool SessionRegistry::adopt(const ClaimVersion& version, std::string_view bytes,
                            Clock::time_point now) {
  std::string error;
  auto imported = session::import_session(bytes, now, error);
  if (!imported) return false;
  const std::string& id = imported->session->client_id();
  auto it = claims_.find(id);
  if (it == claims_.end() || it->second.version.newer_than(version) ||
      version.newer_than(it->second.version)) {
    return false;
  }
  if (const ClientSessionPtr* found = table_.find(id)) {
    // A late answer: the claim went ahead with a fresh session, which the moved one's
    // subscriptions and messages join.
    merge(*found, *imported);
    return true;
  }
  return !install(std::move(*imported), now);
}

std::string SessionRegistry::export_of(const ClientSession& s, Clock::time_point now) {
  session::SessionMeta meta;
  meta.protocol_version = static_cast<std::uint8_t>(s.version);
  meta.clean = s.clean;
  meta.username = s.username;
  meta.expiry_interval = s.expiry_interval;
  return session::export_session(s.state, meta, now);
}

void SessionRegistry::hand_off_all(std::vector<HandOff>& out, Clock::time_point now) {
  std::vector<ClientSessionPtr> offline;
  table_.for_each([&](const ClientSessionPtr& s) {
    if (s->attached == nullptr && !s->removed) offline.push_back(s);
  });
  for (const ClientSessionPtr& s : offline) {
    HandOff h;
    h.client_id = s->state.client_id();
    if (auto it = claims_.find(h.client_id); it != claims_.end()) h.version = it->second.version;
    h.bytes = export_of(*s, now);
    out.push_back(std::move(h));
    discard(s);
  }
}

bool SessionRegistry::receive_hand_off(const ClaimVersion& version, std::string_view bytes,
                                       Clock::time_point now) {
  std::string error;
  auto imported = session::import_session(bytes, now, error);
  if (!imported) return false;
  const std::string id = imported->session->client_id();
  if (const ClientSessionPtr* found = table_.find(id)) {
    // The client is here already (it came back first, or this side won after a partition):
    // what the other node held is merged into its session.
    merge(*found, *imported);
    return true;
  }
  auto [it, inserted] = claims_.try_emplace(id);
  if (!inserted && it->second.version.newer_than(version)) return false;
  it->second.version = version;
  it->second.at = now;
  return !install(std::move(*imported), now);
}

void SessionRegistry::merge(const ClientSessionPtr& s, session::ImportedSession& imported) {
  const std::size_t before = s->state.queued_bytes();
  std::vector<std::string> added;
  s->state.merge_from(*imported.session, added);
  for (const std::string& filter : added) {
    cx_.router.routes().subscribe(s, filter, s->state.subscriptions().at(filter), route_changes());
  }
  cx_.counters.account(static_cast<std::int64_t>(s->state.queued_bytes()) -
                       static_cast<std::int64_t>(before));
  recheck(*s);  // checked for the other node's identity of the client: again for this one
  if (!added.empty()) cx_.schedule_flush();
  if (s->attached != nullptr) s->attached->pump();
}

void SessionRegistry::held_claims(std::vector<std::pair<std::string, ClaimVersion>>& out) const {
  for (const auto& [id, record] : claims_) {
    if (table_.contains(id)) out.emplace_back(id, record.version);
  }
}

}  // namespace brokerha::registry
