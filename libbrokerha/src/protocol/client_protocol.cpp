// SPDX-License-Identifier: Apache-2.0
// ClientProtocol: reading, CONNECT and the session, ending. PUBLISH, SUBSCRIBE and output are
// in client_protocol_flow.cpp.

#include "protocol/client_protocol.hpp"

#include <random>

#include "protocol/reasons.hpp"

namespace brokerha::protocol {

namespace {

using mqtt::ProtocolVersion;

std::string random_client_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string id = "auto-";
  std::uint64_t v = rng();
  for (int i = 0; i < 16; ++i) {
    id.push_back(hex[v & 0xF]);
    v >>= 4;
  }
  return id;
}

}  // namespace

ClientProtocol::ClientProtocol(Host& host, std::uint32_t max_packet_size, Clock::time_point now)
    : host_(host), framer_(max_packet_size), last_activity_(now), since_(now) {
  send_window_ = host.shard().options.max_inflight;
}

ClientProtocol::~ClientProtocol() {
  if (session_ && session_->attached == this) session_->attached = nullptr;
}

void ClientProtocol::set_peer(std::string address, std::uint16_t port) {
  remote_address_ = std::move(address);
  remote_port_ = port;
}

// ---- reading ---------------------------------------------------------------------------------

bool ClientProtocol::on_bytes(std::string_view bytes, Clock::time_point now) {
  if (closing()) return false;
  last_activity_ = now;
  if (!first_bytes_ok(bytes)) return false;
  const mqtt::Status s = framer_.feed(
      bytes, [this](std::uint8_t first, std::string_view body) { return on_frame(first, body); });
  if (!s.ok()) {
    if (!closing()) fail(s.code, s.detail);
    return false;
  }
  return !closing();
}

bool ClientProtocol::first_bytes_ok(std::string_view bytes) {
  // The first packet must be CONNECT: anything else (a PROXY header or HTTP request sent to
  // the wrong listener, TLS sent to a plain port) is refused at its first byte instead of
  // waiting for a length it happens to encode.
  if (state_ != State::awaiting_connect || bytes.empty() || !framer_.idle() ||
      (static_cast<std::uint8_t>(bytes[0]) >> 4) ==
          static_cast<std::uint8_t>(mqtt::PacketType::connect)) {
    return true;
  }
  counter(&router::Counters::protocol_errors);
  close();
  return false;
}

mqtt::Status ClientProtocol::on_frame(std::uint8_t first, std::string_view body) {
  if (paused_) {
    parked().push_back(Frame{first, std::string(body)});
    return mqtt::Status::success();
  }
  return handle(first, body);
}

void ClientProtocol::resume() {
  paused_ = false;
  while (!paused_ && has_parked() && !closing()) {
    Frame f = std::move(parked_->front());
    parked_->pop_front();
    const mqtt::Status s = handle(f.first, f.body);
    if (!s.ok()) break;
  }
  host_.resumed();
}

mqtt::Status ClientProtocol::handle(std::uint8_t first, std::string_view body) {
  if (closing()) return mqtt::Status::success();
  mqtt::Packet packet;
  const mqtt::Status s = mqtt::decode(first, body, version_, packet);
  const auto type = static_cast<mqtt::PacketType>(first >> 4);
  if (!s.ok()) {
    if (state_ == State::awaiting_connect && type == mqtt::PacketType::connect) {
      counter(&router::Counters::protocol_errors);
      if (const auto* c = std::get_if<mqtt::Connect>(&packet)) version_ = c->version;
      // The protocol level is answered in the CONNACK format the client asked for; other
      // CONNECT errors get a v5 CONNACK with the reason, and a plain close for v3.
      if (version_ == ProtocolVersion::v5) {
        mqtt::Connack ack;
        ack.code = static_cast<std::uint8_t>(s.code);
        add_reason_string(ack, s.detail, client_max_packet_);
        send(ack);
      } else if (s.code == ReasonCode::unsupported_protocol_version) {
        mqtt::Connack ack;
        ack.code = static_cast<std::uint8_t>(v3_code(s.code));
        send(ack);
      }
      close_after_write();
      return s;
    }
    fail(s.code, s.detail);
    return s;
  }
  if (state_ == State::awaiting_connect) {
    if (auto* c = std::get_if<mqtt::Connect>(&packet)) return on_connect(*c);
    counter(&router::Counters::protocol_errors);
    close();  // the first packet must be CONNECT
    return {ReasonCode::protocol_error, "first packet is not CONNECT"};
  }
  // Connected (connecting parks packets, so they arrive here only once connected).
  switch (type) {
    case mqtt::PacketType::publish:
      return on_publish(std::get<mqtt::Publish>(packet));
    case mqtt::PacketType::puback:
      if (session_->state.complete(std::get<mqtt::Puback>(packet).packet_id, false)) pump();
      return mqtt::Status::success();
    case mqtt::PacketType::pubrec: {
      const auto& rec = std::get<mqtt::Pubrec>(packet);
      if (static_cast<std::uint8_t>(rec.reason_code) >= 0x80) {
        // The receiver refused the message: the exchange ends here (MQTT 5.0 4.3.3).
        if (session_->state.abandon(rec.packet_id)) pump();
        return mqtt::Status::success();
      }
      mqtt::Pubrel rel;
      rel.packet_id = rec.packet_id;
      if (!session_->state.released(rec.packet_id)) {
        rel.reason_code = ReasonCode::packet_identifier_not_found;
      }
      send(rel);
      return mqtt::Status::success();
    }
    case mqtt::PacketType::pubrel: {
      const auto& rel = std::get<mqtt::Pubrel>(packet);
      mqtt::Pubcomp comp;
      comp.packet_id = rel.packet_id;
      if (!session_->state.release_qos2(rel.packet_id)) {
        comp.reason_code = ReasonCode::packet_identifier_not_found;
      }
      send(comp);
      return mqtt::Status::success();
    }
    case mqtt::PacketType::pubcomp:
      if (session_->state.complete(std::get<mqtt::Pubcomp>(packet).packet_id, true)) pump();
      return mqtt::Status::success();
    case mqtt::PacketType::subscribe:
      return on_subscribe(std::get<mqtt::Subscribe>(packet));
    case mqtt::PacketType::unsubscribe:
      return on_unsubscribe(std::get<mqtt::Unsubscribe>(packet));
    case mqtt::PacketType::pingreq:
      send(mqtt::Pingresp{});
      return mqtt::Status::success();
    case mqtt::PacketType::disconnect:
      return on_disconnect(std::get<mqtt::Disconnect>(packet));
    default:
      // A second CONNECT, AUTH (no enhanced authentication is offered), or a packet only a
      // server sends.
      fail(ReasonCode::protocol_error, "unexpected packet");
      return {ReasonCode::protocol_error, "unexpected packet"};
  }
}

// ---- CONNECT ---------------------------------------------------------------------------------

mqtt::Status ClientProtocol::on_connect(mqtt::Connect& c) {
  ShardContext& shard = host_.shard();
  const BrokerOptions& opts = shard.options;
  version_ = c.version;
  state_ = State::connecting;
  const bool v5 = version_ == ProtocolVersion::v5;
  auto refuse = [this](ReasonCode code, const char* why) {
    mqtt::Connack ack;
    ack.code = version_ == ProtocolVersion::v5 ? static_cast<std::uint8_t>(code)
                                               : static_cast<std::uint8_t>(v3_code(code));
    if (version_ == ProtocolVersion::v5) add_reason_string(ack, why, client_max_packet_);
    send(ack);
    close_after_write();
    return mqtt::Status{code, why};
  };

  auto info = std::make_shared<ConnectInfo>();
  info->version = version_;
  info->clean_start = c.clean_start;
  info->client_id.assign(c.client_id);
  if (info->client_id.empty()) {
    if (!v5 && (!c.clean_start || version_ == ProtocolVersion::v31)) {
      return refuse(ReasonCode::client_identifier_not_valid,
                    "an empty client id needs a clean session");
    }
    // Assign an id whose session lives on this shard, so the connection need not move.
    do {
      info->client_id = random_client_id();
    } while (home_shard(info->client_id, shard.shard_count) != shard.index ||
             shard.sessions.table().contains(info->client_id));
    info->assigned_id = true;
  }
  info->keep_alive = c.keep_alive;
  if (c.keep_alive > opts.max_keepalive || (c.keep_alive == 0 && opts.max_keepalive < 65535)) {
    // MQTT 3.x cannot be told a lower keep alive: refused, as Mosquitto does.
    if (!v5) {
      return refuse(ReasonCode::client_identifier_not_valid, "keep alive above the maximum");
    }
    info->keep_alive = opts.max_keepalive;
    info->keep_alive_lowered = true;
  }
  if (c.username) info->username.emplace(*c.username);
  if (auto name = host_.certificate_username()) {
    // The certificate names the client (mqtt.tls.use_identity_as_username).
    if (name->empty()) return refuse(ReasonCode::not_authorized, "no verified client certificate");
    info->username = std::move(*name);
  }
  if (c.password) info->password.emplace(*c.password);
  if (v5) {
    const mqtt::Properties& p = c.properties;
    if (p.maximum_packet_size) client_max_packet_ = *p.maximum_packet_size;
    problem_info_ = p.request_problem_information.value_or(1) != 0;
    // Enhanced authentication (AUTH exchanges) is not offered: refused as Mosquitto does
    // without an auth plugin, so the client can fall back to username/password.
    if (p.authentication_method) {
      return refuse(ReasonCode::bad_authentication_method,
                    "enhanced authentication is not supported");
    }
    if (p.receive_maximum) {
      send_window_ = std::min<std::uint16_t>(opts.max_inflight, *p.receive_maximum);
    }
    if (opts.send_topic_aliases) client_alias_max_ = p.topic_alias_maximum.value_or(0);
    const std::uint32_t requested = p.session_expiry_interval.value_or(0);
    info->session_expiry = std::min(requested, opts.max_session_expiry);
    info->session_expiry_lowered = info->session_expiry != requested;
  } else {
    info->session_expiry = c.clean_start ? 0 : 0xFFFFFFFFu;
  }
  if (c.will) {
    mqtt::Publish w;
    w.qos = c.will->qos;
    w.retain = c.will->retain;
    w.topic = c.will->topic;
    w.payload = c.will->payload;
    w.properties = c.will->properties;
    info->will =
        Message::from_publish(w, w.topic, info->client_id, opts.max_message_expiry, Clock::now());
    info->will_delay = c.will->properties.will_delay_interval.value_or(0);
  }

  const access::Control& access = shard.access;
  if (access.auth_hooks.empty()) {
    authenticated(info, Decision::defer);
    return mqtt::Status::success();
  }
  paused_ = true;
  Host& host = host_;
  access::Control::decide(
      access.auth_hooks,
      [info, this](AuthHook& hook, std::function<void(Decision)> done) {
        AuthRequest req;
        req.client_id = info->client_id;
        if (info->username) req.username = *info->username;
        if (info->password) req.password = *info->password;
        req.remote_address = remote_address_;
        req.remote_port = remote_port_;
        req.protocol_version = static_cast<int>(info->version);
        hook.authenticate(req, std::move(done));
      },
      [this, hold = host.hold(), info](Decision d) { authenticated(info, d); },
      [&host, hold = host.hold()](std::function<void()> f) { host.post(std::move(f)); });
  return mqtt::Status::success();
}

void ClientProtocol::authenticated(std::shared_ptr<ConnectInfo> info, Decision decision) {
  if (closed()) return;
  ShardContext& shard = host_.shard();
  ReasonCode refused = ReasonCode::success;
  if (decision == Decision::deny) {
    refused = ReasonCode::not_authorized;
  } else if (decision == Decision::defer) {
    access::Identity who;
    who.client_id = info->client_id;
    if (info->username) who.username = *info->username;
    who.remote_ip = remote_address_;
    who.remote_port = remote_port_;
    std::optional<std::string_view> password;
    if (info->password) password = *info->password;
    refused = shard.access.rules().authenticate(who, password);
  }
  if (refused != ReasonCode::success) {
    counter(&router::Counters::auth_failures);
    mqtt::Connack ack;
    ack.code = version_ == ProtocolVersion::v5 ? static_cast<std::uint8_t>(refused)
                                               : static_cast<std::uint8_t>(v3_code(refused));
    send(ack);
    close_after_write();
    return;
  }
  paused_ = true;  // park whatever follows CONNECT until the session is attached
  if (!info->will) {
    host_.place(std::move(info));
    return;
  }
  // A will is a publish made late: the write check applies to it now, while the client's
  // identity is at hand (else a client could publish anywhere through its will).
  auto with_rules = [this, hold = host_.hold(), info](Decision d) {
    if (closed()) return;
    bool allowed = d == Decision::allow;
    if (d == Decision::defer) {
      access::Identity who;
      who.client_id = info->client_id;
      if (info->username) who.username = *info->username;
      who.remote_ip = remote_address_;
      who.remote_port = remote_port_;
      allowed = host_.shard().access.rules().allows(who, info->will->topic, Access::write, false);
    }
    if (!allowed) {
      counter(&router::Counters::acl_denials);
      info->will.reset();
    }
    host_.place(info);
  };
  if (shard.access.acl_hooks.empty()) {
    with_rules(Decision::defer);
    return;
  }
  Host& host = host_;
  access::Control::decide(
      shard.access.acl_hooks,
      [info, this](AclHook& hook, std::function<void(Decision)> done) {
        AclRequest req;
        req.client_id = info->client_id;
        if (info->username) req.username = *info->username;
        req.remote_address = remote_address_;
        req.topic = info->will->topic;
        req.access = Access::write;
        hook.check(req, std::move(done));
      },
      std::move(with_rules),
      [&host, hold = host.hold()](std::function<void()> f) { host.post(std::move(f)); });
}

void ClientProtocol::placed(std::shared_ptr<ConnectInfo> info) {
  if (closed()) return;
  if (!info->claimed && !info->assigned_id) {
    // Client ids are unique cluster-wide: settle the claim before touching the session.
    info->claimed = true;
    if (host_.claim(info->client_id, !info->clean_start,
                    [this, hold = host_.hold(), info](router::ClaimResult r) {
                      claim_settled(info, std::move(r));
                    })) {
      return;
    }
  }
  attach(std::move(info));
}

void ClientProtocol::claim_settled(std::shared_ptr<ConnectInfo> info, router::ClaimResult result) {
  ShardContext& shard = host_.shard();
  const auto now = Clock::now();
  if (!result.won || !shard.sessions.accept_claim(info->client_id, result.version, now)) {
    // A newer claim on this client id exists elsewhere: it won the race.
    if (result.moved) result.moved(false, {});
    if (closed()) return;
    mqtt::Connack ack;
    ack.code = version_ == ProtocolVersion::v5
                   ? static_cast<std::uint8_t>(ReasonCode::server_busy)
                   : static_cast<std::uint8_t>(mqtt::ConnackReturnCode::server_unavailable);
    if (version_ == ProtocolVersion::v5) {
      add_reason_string(ack, "another connection with this client id won", client_max_packet_);
    }
    send(ack);
    close_after_write();
    return;
  }
  if (!result.session.empty()) {
    // The session moved here from another node. A local session for the id (an older
    // claim's) gives way to it.
    if (const ClientSessionPtr* found = shard.sessions.table().find(info->client_id)) {
      ClientSessionPtr old = *found;
      if (old->attached != nullptr) old->attached->kick(ReasonCode::session_taken_over);
      old->will.reset();
      shard.sessions.discard(old);
    }
    std::string error;
    auto imported = session::import_session(result.session, now, error);
    // Its subscriptions are routes here now: peers learn them before CONNACK, or a message
    // published elsewhere right after it would miss the client.
    if (imported && imported->session->client_id() == info->client_id) {
      std::vector<std::string> filters;
      for (const auto& entry : imported->session->subscriptions()) filters.push_back(entry.first);
      const std::size_t came = imported->session->queued();
      if (!shard.sessions.install(std::move(*imported), now)) {
        auto moved = std::move(result.moved);
        if (host_.await_routes(std::move(filters), [this, hold = host_.hold(), info, moved, came] {
              settle_move(info, moved, came);
            })) {
          return;
        }
        settle_move(std::move(info), std::move(moved), came);
        return;
      }
    }
    if (result.moved) result.moved(false, {});
  }
  attach(std::move(info));
}

void ClientProtocol::settle_move(
    std::shared_ptr<ConnectInfo> info,
    const std::function<void(bool, std::function<void(std::string)>)>& moved, std::size_t came) {
  if (!moved) {
    attach(std::move(info));
    return;
  }
  // The old node still queues what reaches it for the session (its trail) until every peer
  // knows this node's routes. CONNACK waits for that trail, which goes in before what was
  // queued here meanwhile: nothing is lost and each publisher's order holds.
  moved(true, [this, hold = host_.hold(), info, came](std::string trail) mutable {
    host_.post([this, hold, info, came, t = std::move(trail)]() mutable {
      host_.shard().sessions.splice_trail(info->client_id, t, came, Clock::now());
      attach(std::move(info));
    });
  });
}

void ClientProtocol::attach(std::shared_ptr<ConnectInfo> info) {
  if (closed()) return;
  ShardContext& shard = host_.shard();
  const BrokerOptions& opts = shard.options;
  registry::AttachRequest request;
  request.client_id = info->client_id;
  request.clean_start = info->clean_start;
  request.version = info->version;
  request.username = info->username;
  request.session_expiry = info->session_expiry;
  registry::Attached attached = shard.sessions.attach(request, this);
  session_ = std::move(attached.session);
  const bool present = attached.present;
  session::ClientSession& s = *session_;
  keep_alive_ = info->keep_alive;
  will_ = std::move(info->will);
  will_delay_ = info->will_delay;
  state_ = State::connected;

  mqtt::Connack ack;
  ack.session_present = present;
  if (version_ == ProtocolVersion::v5) {
    mqtt::Properties& p = ack.properties;
    if (info->assigned_id) p.assigned_client_identifier = s.state.client_id();
    if (info->keep_alive_lowered) p.server_keep_alive = keep_alive_;
    if (opts.receive_maximum != 65535) p.receive_maximum = opts.receive_maximum;
    if (opts.max_packet_size < mqtt::kMaxPacketSize) p.maximum_packet_size = opts.max_packet_size;
    if (opts.topic_alias_maximum > 0) p.topic_alias_maximum = opts.topic_alias_maximum;
    if (info->session_expiry_lowered) p.session_expiry_interval = info->session_expiry;
  }
  send(ack);
  if (!shard.access.event_hooks.empty()) {
    ClientEvent e;
    e.client_id = s.state.client_id();
    if (s.username) e.username = *s.username;
    e.remote_address = remote_address_;
    e.protocol_version = static_cast<int>(version_);
    e.session_present = present;
    shard.access.notify([&](EventHook& h) { h.on_connect(e); });
  }

  // Resend what was in flight (MQTT 4.4): PUBLISH with DUP, or PUBREL for released QoS 2. A
  // message now larger than the client's maximum packet is dropped as if it had been sent
  // (MQTT 5.0 3.1.2.25), not left in flight holding a slot of the window forever.
  std::vector<std::uint16_t> too_large;
  for (session::Inflight& f : s.state.inflight()) {
    if (f.released) {
      mqtt::Pubrel rel;
      rel.packet_id = f.packet_id;
      send(rel);
    } else if (!send_delivery(f.delivery, f.packet_id, true)) {
      too_large.push_back(f.packet_id);
    }
    f.sent = true;
  }
  for (std::uint16_t id : too_large) s.state.abandon(id);
  pump();
  resume();
}

void ClientProtocol::detach_session(bool publish_will) {
  if (!session_) return;
  ClientSessionPtr s = std::move(session_);
  session_.reset();
  ShardContext& shard = host_.shard();
  if (!shard.access.event_hooks.empty()) {
    ClientEvent e;
    e.client_id = s->state.client_id();
    if (s->username) e.username = *s->username;
    e.remote_address = remote_address_;
    e.protocol_version = static_cast<int>(version_);
    e.reason = close_reason_;
    shard.access.notify([&](EventHook& h) { h.on_disconnect(e); });
  }
  shard.sessions.detach(s, this, publish_will ? std::move(will_) : nullptr, will_delay_,
                        Clock::now());
  will_.reset();
}

// ---- ending ----------------------------------------------------------------------------------

void ClientProtocol::fail(ReasonCode reason, std::string_view why) {
  if (closing()) return;
  counter(reason == ReasonCode::keep_alive_timeout ? &router::Counters::keepalive_timeouts
                                                   : &router::Counters::protocol_errors);
  close_reason_ = reason;
  if (state_ == State::connected && version_ == ProtocolVersion::v5) send_disconnect(reason, why);
  close_after_write();
}

void ClientProtocol::send_disconnect(ReasonCode reason, std::string_view why) {
  mqtt::Disconnect d;
  d.reason_code = reason;
  add_reason_string(d, why, client_max_packet_);
  send(d);
}

void ClientProtocol::kick(ReasonCode reason) {
  if (closed()) return;
  close_reason_ = reason;
  if (state_ == State::connected && version_ == ProtocolVersion::v5) {
    send_disconnect(reason, reason == ReasonCode::session_taken_over
                                ? "another connection took over the session"
                            : reason == ReasonCode::server_shutting_down ? "server shutting down"
                                                                         : "");
  }
  detach_session(reason != ReasonCode::server_shutting_down);
  close_after_write();
}

void ClientProtocol::close_after_write() {
  if (closed()) return;
  if (!closing_) since_ = Clock::now();
  closing_ = true;
  // WebSocket close code (RFC 6455 7.4.1): 1001 "going away" when the broker shuts down.
  host_.close_when_written(close_reason_ == ReasonCode::server_shutting_down ? 1001 : 1000);
}

void ClientProtocol::close(ReasonCode reason) {
  if (closed()) return;
  close_reason_ = reason;
  close();
}

void ClientProtocol::close() {
  if (closed()) return;
  detach_session(!graceful_);
  state_ = State::closed;
  parked_.reset();
  if (out_) {
    written(out_->clear());  // never sent: out of the memory account
    out_.reset();
  }
  host_.close_socket();
}

void ClientProtocol::on_tick(Clock::time_point now, bool not_read) {
  if (closing()) return;
  if (state_ == State::awaiting_connect || state_ == State::connecting) {
    if (now - since_ > host_.shard().options.connect_timeout) close();
    return;
  }
  if (not_read) {
    last_activity_ = now;  // not read on purpose: the silence is ours, not the client's
    return;
  }
  if (keep_alive_ != 0 &&
      now - last_activity_ > std::chrono::milliseconds(std::uint64_t{keep_alive_} * 1500)) {
    fail(ReasonCode::keep_alive_timeout, "no packet within 1.5 times the keep alive");
  }
}

void ClientProtocol::shrink_idle() {
  if (framer_.idle()) framer_.shrink();
  if (out_ && out_->empty()) out_.reset();
}

}  // namespace brokerha::protocol
