// SPDX-License-Identifier: Apache-2.0
// ClientProtocol: PUBLISH, SUBSCRIBE, UNSUBSCRIBE and DISCONNECT from the client, and the
// output to it (deliveries from the session queue, encoded once and shared where they can be).

#include "protocol/client_protocol.hpp"
#include "protocol/reasons.hpp"
#include "topic/topic.hpp"

namespace brokerha::protocol {

namespace {

using mqtt::ProtocolVersion;

// Bytes of topic names a client may pin with inbound topic aliases.
constexpr std::size_t kMaxAliasBytes = 1 << 20;

}  // namespace

// ---- PUBLISH ---------------------------------------------------------------------------------

mqtt::Status ClientProtocol::on_publish(mqtt::Publish& p) {
  ShardContext& shard = host_.shard();
  const BrokerOptions& opts = shard.options;
  const auto now_ms = static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(last_activity_.time_since_epoch())
          .count());
  if (!publish_rate_.take(shard.limits.max_publish_rate.load(std::memory_order_relaxed), now_ms)) {
    // Over max_publish_rate: the connection ends (v5 says why); the message is not routed.
    constexpr const char* why = "PUBLISH rate above the broker's max_publish_rate";
    counter(&router::Counters::publish_rate_limited);
    close_reason_ = ReasonCode::message_rate_too_high;
    if (version_ == ProtocolVersion::v5) send_disconnect(ReasonCode::message_rate_too_high, why);
    close_after_write();
    return {ReasonCode::message_rate_too_high, why};
  }
  std::string_view topic = p.topic;
  if (version_ == ProtocolVersion::v5) {
    if (!p.properties.subscription_identifiers.empty()) {
      constexpr const char* why = "subscription identifier in a client's PUBLISH";
      fail(ReasonCode::protocol_error, why);
      return {ReasonCode::protocol_error, why};
    }
    if (p.properties.topic_alias) {
      const std::uint16_t alias = *p.properties.topic_alias;
      if (alias > opts.topic_alias_maximum) {
        constexpr const char* why = "topic alias above the maximum";
        fail(ReasonCode::topic_alias_invalid, why);
        return {ReasonCode::topic_alias_invalid, why};
      }
      if (!topic.empty()) {
        Aliases& a = aliases();
        std::string& slot = a.in[alias];
        a.in_bytes += topic.size();
        a.in_bytes -= slot.size();
        slot.assign(topic);
        if (a.in_bytes > kMaxAliasBytes) {
          // 65535 aliases of 64 KiB topics would pin 4 GiB: the total is capped.
          constexpr const char* why = "topic aliases hold more than 1 MiB of topic names";
          fail(ReasonCode::quota_exceeded, why);
          return {ReasonCode::quota_exceeded, why};
        }
      } else if (auto it = aliases().in.find(alias); it != aliases_->in.end()) {
        topic = it->second;
      } else {
        constexpr const char* why = "unknown topic alias";
        fail(ReasonCode::protocol_error, why);
        return {ReasonCode::protocol_error, why};
      }
    }
  }
  if (p.qos == 2) {
    if (!session_->state.has_qos2(p.packet_id) &&
        session_->state.incoming_qos2() >= opts.receive_maximum) {
      constexpr const char* why = "receive maximum exceeded";
      fail(ReasonCode::receive_maximum_exceeded, why);
      return {ReasonCode::receive_maximum_exceeded, why};
    }
    if (!session_->state.receive_qos2(p.packet_id)) {
      // A resend of a message already received and routed: acknowledge again only.
      mqtt::Pubrec rec;
      rec.packet_id = p.packet_id;
      send(rec);
      return mqtt::Status::success();
    }
  }
  counter(&router::Counters::messages_received);
  published_ = true;
  // The arrival time of the bytes (on_bytes), shared by every packet of one read.
  const Clock::time_point now = last_activity_;
  MessagePtr message = Message::from_publish(p, topic, session_->state.client_id(),
                                             opts.max_message_expiry, now, shard.wall_at(now));
  const std::uint16_t packet_id = p.packet_id;
  if (shard.access.acl_hooks.empty()) {
    finish_publish(message, packet_id, Decision::defer);
    return mqtt::Status::success();
  }
  paused_ = true;
  Host& host = host_;
  access::Control::decide(
      shard.access.acl_hooks,
      [this, message](AclHook& hook, std::function<void(Decision)> done) {
        AclRequest req;
        req.client_id = session_->state.client_id();
        if (session_->username) req.username = *session_->username;
        req.remote_address = remote_address_;
        req.topic = message->topic;
        req.access = Access::write;
        hook.check(req, std::move(done));
      },
      [this, hold = host.hold(), message, packet_id](Decision d) {
        finish_publish(message, packet_id, d);
        resume();
      },
      [&host, hold = host.hold()](std::function<void()> f) { host.post(std::move(f)); });
  return mqtt::Status::success();
}

void ClientProtocol::finish_publish(const MessagePtr& message, std::uint16_t packet_id,
                                    Decision decision) {
  if (closed() || !session_) return;
  ShardContext& shard = host_.shard();
  const bool allowed = decision == Decision::defer
                           ? rules_allow(message->topic, Access::write, false)
                           : decision == Decision::allow;
  std::size_t targets = 0;
  if (allowed) {
    const router::RouteResult routed = host_.publish(message, packet_id);
    targets = routed.targets + routed.remote;
    if (!shard.access.event_hooks.empty()) {
      MessageEvent e;
      e.client_id = message->origin;
      e.topic = message->topic;
      e.payload = message->payload;
      e.qos = message->qos;
      e.retain = message->retain;
      shard.access.notify([&](EventHook& h) { h.on_publish(e); });
    }
  } else {
    counter(&router::Counters::acl_denials);
  }
  if (message->qos == 0) return;
  // MQTT 3.x has no way to say "denied": acknowledge and drop, as Mosquitto does.
  ReasonCode code = ReasonCode::success;
  if (version_ == ProtocolVersion::v5) {
    code = !allowed       ? ReasonCode::not_authorized
           : targets == 0 ? ReasonCode::no_matching_subscribers
                          : ReasonCode::success;
  }
  if (message->qos == 1) {
    mqtt::Puback ack;
    ack.packet_id = packet_id;
    ack.reason_code = code;
    if (!allowed)
      add_problem(ack, "not authorized to publish to this topic", problem_info(),
                  client_max_packet_);
    send(ack);
  } else {
    mqtt::Pubrec rec;
    rec.packet_id = packet_id;
    rec.reason_code = code;
    if (!allowed)
      add_problem(rec, "not authorized to publish to this topic", problem_info(),
                  client_max_packet_);
    if (static_cast<std::uint8_t>(code) >= 0x80) session_->state.release_qos2(packet_id);
    send(rec);
  }
}

access::Identity ClientProtocol::identity() const {
  access::Identity who;
  who.client_id = session_->state.client_id();
  if (session_->username) who.username = *session_->username;
  who.remote_ip = remote_address_;
  who.remote_port = remote_port_;
  return who;
}

bool ClientProtocol::rules_allow(std::string_view name, Access access, bool is_filter) const {
  const access::Control& control = host_.shard().access;
  if (control.rules().acl_allows_everything()) return true;
  return control.rules_allow(identity(), name, access, is_filter);
}

// ---- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------------

struct ClientProtocol::PendingSubscribe {
  std::uint16_t packet_id = 0;
  std::vector<std::pair<std::string, session::SubscriptionOptions>> subs;
  std::vector<Decision> decisions;  // one per filter, from the ACL hooks
};

mqtt::Status ClientProtocol::on_subscribe(mqtt::Subscribe& s) {
  auto pending = std::make_shared<PendingSubscribe>();
  pending->packet_id = s.packet_id;
  const std::uint32_t id =
      s.properties.subscription_identifiers.empty() ? 0 : s.properties.subscription_identifiers[0];
  for (const mqtt::Subscription& sub : s.subscriptions) {
    session::SubscriptionOptions o;
    o.qos = sub.qos;
    o.no_local = sub.no_local;
    o.retain_as_published = sub.retain_as_published;
    o.retain_handling = sub.retain_handling;
    o.identifier = id;
    pending->subs.emplace_back(std::string(sub.filter), o);
  }
  const access::Control& access = host_.shard().access;
  if (access.acl_hooks.empty()) {
    finish_subscribe(*pending);
    return mqtt::Status::success();
  }
  // One ACL check per filter, in order; the SUBACK goes out when all have answered.
  paused_ = true;
  Host& host = host_;
  auto step = std::make_shared<std::function<void()>>();
  // The step holds itself weakly; a pending hook answer holds it strongly.
  *step = [this, hold = host.hold(), pending, weak = std::weak_ptr<std::function<void()>>(step)]() {
    if (closed()) return;
    if (pending->decisions.size() == pending->subs.size()) {
      if (!finish_subscribe(*pending)) resume();
      return;
    }
    auto next = weak.lock();
    if (!next) return;
    const std::string& filter = pending->subs[pending->decisions.size()].first;
    Host& h = host_;
    access::Control::decide(
        h.shard().access.acl_hooks,
        [this, &filter](AclHook& hook, std::function<void(Decision)> done) {
          AclRequest req;
          req.client_id = session_->state.client_id();
          if (session_->username) req.username = *session_->username;
          req.remote_address = remote_address_;
          req.topic = filter;
          req.access = Access::read;
          req.is_filter = true;
          hook.check(req, std::move(done));
        },
        [pending, next](Decision d) {
          pending->decisions.push_back(d);
          (*next)();
        },
        [&h, hold = h.hold()](std::function<void()> f) { h.post(std::move(f)); });
  };
  (*step)();
  return mqtt::Status::success();
}

bool ClientProtocol::finish_subscribe(PendingSubscribe& p) {
  ShardContext& shard = host_.shard();
  mqtt::Suback ack;
  ack.packet_id = p.packet_id;
  std::vector<session::Delivery> retained;
  const auto now = Clock::now();
  std::vector<std::string>* changes =
      shard.router.clustered() ? &shard.outbox.route_changes : nullptr;
  std::vector<std::string> subscribed;  // the cluster must know these before the SUBACK
  for (std::size_t i = 0; i < p.subs.size(); ++i) {
    const auto& [filter, o] = p.subs[i];
    const Decision d = i < p.decisions.size() ? p.decisions[i] : Decision::defer;
    // The rules see the filter a "$share/{group}/" subscription receives from.
    topic::SharedFilter share;
    const bool is_shared = topic::parse_shared(filter, share);
    const std::string_view acl_filter = is_shared ? share.filter : std::string_view(filter);
    const bool allowed =
        d == Decision::defer ? rules_allow(acl_filter, Access::read, true) : d == Decision::allow;
    if (!allowed) {
      counter(&router::Counters::acl_denials);
      ack.reason_codes.push_back(version_ == ProtocolVersion::v5 ? ReasonCode::not_authorized
                                                                 : ReasonCode::unspecified_error);
      add_problem(ack, "not authorized to subscribe to a filter", problem_info(),
                  client_max_packet_);
      continue;
    }
    const std::uint32_t max_subs = shard.limits.max_subscriptions.load(std::memory_order_relaxed);
    auto& held = session_->state.subscriptions();
    if (max_subs != 0 && held.size() >= max_subs && held.find(filter) == held.end()) {
      counter(&router::Counters::subscriptions_refused);
      ack.reason_codes.push_back(version_ == ProtocolVersion::v5 ? ReasonCode::quota_exceeded
                                                                 : ReasonCode::unspecified_error);
      add_problem(ack, "the session holds max_subscriptions subscriptions", problem_info(),
                  client_max_packet_);
      continue;
    }
    const bool existed = shard.router.routes().subscribe(session_, filter, o, changes);
    session_->state.subscriptions()[filter] = o;
    if (changes != nullptr) subscribed.push_back(filter);
    ack.reason_codes.push_back(static_cast<ReasonCode>(o.qos));
    if (!shard.access.event_hooks.empty()) {
      SubscriptionEvent e{session_->state.client_id(), filter, o.qos};
      shard.access.notify([&](EventHook& h) { h.on_subscribe(e); });
    }
    if (is_shared) continue;  // no retained messages for shared subscriptions
    if (o.retain_handling == 2 || (o.retain_handling == 1 && existed)) continue;
    for (MessagePtr& m : shard.router.retained_matching(filter)) {
      if (m->expired(now)) continue;
      if (!shard.access.deliveries_unchecked() &&
          !shard.access.delivery_allowed(registry::SessionRegistry::identity(*session_),
                                         m->topic)) {
        counter(&router::Counters::acl_denials);
        continue;
      }
      session::Delivery rd;
      rd.qos = std::min(m->qos, o.qos);
      rd.retain = true;
      if (o.identifier != 0) rd.subscription_ids.push_back(o.identifier);
      rd.message = std::move(m);
      retained.push_back(std::move(rd));
    }
  }
  // Peers must know the route before the client is told it is subscribed, or a publish on
  // another node right after SUBACK would miss it: for a filter new on this node, and for one
  // whose announcement is not acknowledged yet.
  auto state = std::make_shared<std::pair<mqtt::Suback, std::vector<session::Delivery>>>(
      std::move(ack), std::move(retained));
  if (host_.await_routes(std::move(subscribed), [this, hold = host_.hold(), state] {
        if (closed()) return;
        complete_subscribe(state->first, state->second);
        resume();
      })) {
    paused_ = true;
    return true;
  }
  complete_subscribe(state->first, state->second);
  return false;
}

void ClientProtocol::complete_subscribe(const mqtt::Suback& ack,
                                        std::vector<session::Delivery>& retained) {
  ShardContext& shard = host_.shard();
  send(ack);
  session::QueueLimits limits{
      shard.options.max_queued_messages,
      shard.limits.max_session_queued_bytes.load(std::memory_order_relaxed)};
  const std::size_t before = session_->state.queued_bytes();
  for (session::Delivery& rd : retained) {
    std::size_t over_bytes = 0;
    counter(&router::Counters::messages_dropped,
            session_->state.enqueue(std::move(rd), limits, &over_bytes));
    counter(&router::Counters::session_bytes_dropped, over_bytes);
  }
  shard.counters.account(static_cast<std::int64_t>(session_->state.queued_bytes()) -
                         static_cast<std::int64_t>(before));
  pump();
}

mqtt::Status ClientProtocol::on_unsubscribe(const mqtt::Unsubscribe& u) {
  ShardContext& shard = host_.shard();
  std::vector<std::string>* changes =
      shard.router.clustered() ? &shard.outbox.route_changes : nullptr;
  mqtt::Unsuback ack;
  ack.packet_id = u.packet_id;
  for (std::string_view f : u.filters) {
    const std::string filter(f);
    const bool existed = shard.router.routes().unsubscribe(*session_, filter, changes);
    session_->state.subscriptions().erase(filter);
    if (existed && !shard.access.event_hooks.empty()) {
      SubscriptionEvent e{session_->state.client_id(), filter, 0};
      shard.access.notify([&](EventHook& h) { h.on_unsubscribe(e); });
    }
    if (version_ == ProtocolVersion::v5) {
      ack.reason_codes.push_back(existed ? ReasonCode::success
                                         : ReasonCode::no_subscription_existed);
    }
  }
  send(ack);
  return mqtt::Status::success();
}

mqtt::Status ClientProtocol::on_disconnect(const mqtt::Disconnect& d) {
  if (version_ == ProtocolVersion::v5) {
    if (d.properties.session_expiry_interval) {
      if (session_->expiry_interval == 0 && *d.properties.session_expiry_interval != 0) {
        constexpr const char* why = "session expiry set on DISCONNECT after 0";
        fail(ReasonCode::protocol_error, why);  // MQTT 5.0 3.14.2.2.2
        return {ReasonCode::protocol_error, why};
      }
      session_->expiry_interval =
          std::min(*d.properties.session_expiry_interval, host_.shard().options.max_session_expiry);
    }
    graceful_ = d.reason_code != ReasonCode::disconnect_with_will;
  } else {
    graceful_ = true;
  }
  close_reason_ = d.reason_code;
  close();
  return mqtt::Status::success();
}

// ---- output ----------------------------------------------------------------------------------

void ClientProtocol::pump() {
  if (!session_ || state_ != State::connected) return;
  ShardContext& shard = host_.shard();
  session::LazyNow now;
  std::size_t expired = 0;
  const std::size_t queued_before = session_->state.queued_bytes();
  while (backlog_ < kMaxBacklogBytes) {
    session::Delivery qos0;
    session::Inflight* inflight = nullptr;
    if (!session_->state.next(send_window_, now, qos0, inflight, expired)) break;
    if (inflight != nullptr) {
      if (!send_delivery(inflight->delivery, inflight->packet_id, inflight->delivery.dup)) {
        session_->state.abandon(inflight->packet_id);
      }
    } else {
      send_delivery(qos0, 0, false);
    }
  }
  if (expired != 0) counter(&router::Counters::messages_dropped, expired);
  shard.counters.account(static_cast<std::int64_t>(session_->state.queued_bytes()) -
                         static_cast<std::int64_t>(queued_before));
}

bool ClientProtocol::send_delivery(const session::Delivery& d, std::uint16_t packet_id, bool dup) {
  const Message& m = *d.message;
  const access::Control& access = host_.shard().access;
  if (!access.event_hooks.empty()) {
    MessageEvent e;
    e.client_id = session_ ? std::string_view(session_->state.client_id()) : std::string_view();
    e.topic = m.topic;
    e.payload = m.payload;
    e.qos = d.qos;
    e.retain = d.retain;
    access.notify([&](EventHook& h) { h.on_deliver(e); });
  }
  const bool per_subscriber =
      version_ == ProtocolVersion::v5 &&
      (!d.subscription_ids.empty() || m.expires_at || client_alias_max_ > 0);
  if (!per_subscriber) {
    if (const std::string* enc = m.encoded(version_, d.qos, d.retain)) {
      if (enc->size() > client_max_packet_) {
        counter(&router::Counters::messages_dropped);
        return false;
      }
      OutputQueue& o = out();
      if (d.qos == 0) {
        queued(o.shared(d.message, enc));
      } else {
        std::string& own = o.own();
        const std::size_t begin = own.size();
        own.append(*enc);
        const std::size_t at = begin + mqtt::publish_packet_id_offset(*enc);
        own[at] = static_cast<char>(packet_id >> 8);
        own[at + 1] = static_cast<char>(packet_id & 0xFF);
        if (dup) own[begin] = static_cast<char>(own[begin] | 0x08);
        queued(o.own_appended(begin));
      }
      counter(&router::Counters::messages_sent);
      return true;
    }
  }
  mqtt::Publish p =
      m.to_publish(d.qos, d.retain, packet_id, m.expires_at ? Clock::now() : Clock::time_point{});
  p.dup = dup && d.qos > 0;
  p.properties.subscription_identifiers = d.subscription_ids;
  // Outgoing topic alias (MQTT 5.0 3.3.2.3.4): the first message on a topic carries the
  // topic and a new alias, later ones only the alias, while the client's maximum allows.
  bool new_alias = false;
  if (client_alias_max_ > 0) {
    Aliases& a = aliases();
    auto it = a.out.find(m.topic);
    if (it != a.out.end()) {
      p.topic = {};
      p.properties.topic_alias = it->second;
    } else if (a.out.size() < client_alias_max_ && a.out_bytes + m.topic.size() <= kMaxAliasBytes) {
      // (The byte cap bounds what publishers' topics can pin here, as for inbound aliases.)
      const auto alias = static_cast<std::uint16_t>(a.out.size() + 1);
      a.out.emplace(m.topic, alias);
      a.out_bytes += m.topic.size();
      p.properties.topic_alias = alias;
      new_alias = true;
    }
  }
  const mqtt::Packet packet(std::move(p));
  const std::size_t size = mqtt::encoded_size(packet, version_);
  if (size == 0 || size > client_max_packet_) {
    if (new_alias) {
      aliases_->out.erase(m.topic);
      aliases_->out_bytes -= m.topic.size();
    }
    counter(&router::Counters::messages_dropped);
    return false;
  }
  send(packet);
  counter(&router::Counters::messages_sent);
  return true;
}

void ClientProtocol::send(const mqtt::Packet& packet) {
  if (closed()) return;
  OutputQueue& o = out();
  std::string& own = o.own();
  const std::size_t begin = own.size();
  if (!mqtt::encode(packet, version_, own)) return;
  queued(o.own_appended(begin));
}

void ClientProtocol::queued(std::size_t bytes) {
  backlog_ += bytes;
  host_.shard().counters.account(static_cast<std::int64_t>(bytes));
  host_.output_ready();
}

void ClientProtocol::written(std::size_t bytes) noexcept {
  bytes = std::min(bytes, backlog_);
  backlog_ -= bytes;
  host_.shard().counters.account(-static_cast<std::int64_t>(bytes));
}

}  // namespace brokerha::protocol
