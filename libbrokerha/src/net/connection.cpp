#include "net/connection.hpp"

#include <unistd.h>

#include <algorithm>
#include <random>

#include "topic/topic.hpp"

namespace brokerha::net {

namespace {

using mqtt::ProtocolVersion;

// Output queued beyond this stops taking deliveries off the session queue (QoS 0 then waits
// in the bounded session queue instead of growing the write queue without bound).
constexpr std::size_t kMaxBacklogBytes = 1 << 20;
// A connection that is closing but whose peer does not read is closed after this long.
constexpr auto kCloseGrace = std::chrono::seconds(5);
// Read rounds per readiness event before yielding to other connections on the shard.
constexpr int kReadRounds = 4;

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

mqtt::ConnackReturnCode v3_code(ReasonCode r) {
  switch (r) {
    case ReasonCode::unsupported_protocol_version:
      return mqtt::ConnackReturnCode::unacceptable_protocol_version;
    case ReasonCode::client_identifier_not_valid:
      return mqtt::ConnackReturnCode::identifier_rejected;
    case ReasonCode::bad_username_or_password:
      return mqtt::ConnackReturnCode::bad_username_or_password;
    case ReasonCode::not_authorized:
      return mqtt::ConnackReturnCode::not_authorized;
    default:
      return mqtt::ConnackReturnCode::server_unavailable;
  }
}

}  // namespace

Connection::Connection(Core& core, Shard& shard, asio::ip::tcp::socket socket)
    : core_(core),
      shard_(&shard),
      socket_(std::move(socket)),
      framer_(core.options().max_packet_size) {
  std::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  socket_.non_blocking(true, ec);
  const auto peer = socket_.remote_endpoint(ec);
  if (!ec) {
    const asio::ip::address a = peer.address();
    // IPv4 peers of a dual-stack listener are reported as IPv4 (for rules, logs and the API).
    remote_address_ = a.is_v6() && a.to_v6().is_v4_mapped()
                          ? asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string()
                          : a.to_string();
    remote_port_ = peer.port();
  }
  send_window_ = core.options().max_inflight;
}

Connection::~Connection() {
  if (session_ && session_->connection == this) session_->connection = nullptr;
  core_.connection_count.fetch_sub(1, std::memory_order_relaxed);
}

void Connection::start() {
  link_ = shard_->connections.insert(shard_->connections.end(), weak_from_this());
  linked_ = true;
  shard_->counters.add(shard_->counters.connections_total);
  start_read();
}

// ---- reading ---------------------------------------------------------------------------------

void Connection::start_read() {
  if (reading_ || state_ == State::closed || close_when_written_ || paused_ || memory_paused_) {
    return;
  }
  reading_ = true;
  socket_.async_wait(
      asio::ip::tcp::socket::wait_read,
      [self = shared_from_this()](const std::error_code& ec) { self->on_readable(ec); });
}

void Connection::on_readable(const std::error_code& ec) {
  reading_ = false;
  if (state_ == State::closed) return;
  if (ec) {
    if (ec != asio::error::operation_aborted) close();
    return;
  }
  in_handler_ = true;
  published_ = false;
  std::vector<char>& buffer = shard_->read_buffer;
  for (int round = 0; round < kReadRounds; ++round) {
    std::error_code rec;
    const std::size_t n = socket_.read_some(asio::buffer(buffer), rec);
    if (rec == asio::error::would_block || rec == asio::error::try_again) break;
    if (rec) {
      close();  // EOF or reset without DISCONNECT: the will is published
      break;
    }
    shard_->counters.add(shard_->counters.bytes_received, n);
    last_activity_ = Clock::now();
    const mqtt::Status s = framer_.feed(
        std::string_view(buffer.data(), n),
        [this](std::uint8_t first, std::string_view body) { return on_frame(first, body); });
    if (!s.ok()) {
      if (state_ != State::closed && !close_when_written_) fail(s.code);
      break;
    }
    if (state_ == State::closed || close_when_written_ || n < buffer.size()) break;
  }
  in_handler_ = false;
  core_.flush(*shard_);
  if (framer_.idle()) framer_.shrink();
  if (backlog_bytes_ >= kMaxBacklogBytes) {
    // The client does not read what it asks for (PINGRESP, acks, deliveries): stop reading
    // it until its backlog drains, so its output cannot grow without bound.
    return;
  }
  if (published_ && core_.memory_over()) {
    // Back-pressure: this publisher is not read again until the queues drain (or the next
    // sweep), so TCP pushes back on it instead of the broker dropping messages.
    memory_paused_ = true;
    shard_->memory_paused.push_back(shared_from_this());
    return;
  }
  start_read();
}

void Connection::resume_reading() {
  if (!memory_paused_) return;
  memory_paused_ = false;
  start_read();
}

mqtt::Status Connection::on_frame(std::uint8_t first, std::string_view body) {
  if (paused_) {
    parked_.push_back(Frame{first, std::string(body)});
    return mqtt::Status::success();
  }
  return handle(first, body);
}

void Connection::resume() {
  paused_ = false;
  in_handler_ = true;
  while (!paused_ && !parked_.empty() && state_ != State::closed && !close_when_written_) {
    Frame f = std::move(parked_.front());
    parked_.pop_front();
    const mqtt::Status s = handle(f.first, f.body);
    if (!s.ok()) break;
  }
  in_handler_ = false;
  core_.flush(*shard_);
  start_read();
}

mqtt::Status Connection::handle(std::uint8_t first, std::string_view body) {
  if (state_ == State::closed || close_when_written_) return mqtt::Status::success();
  mqtt::Packet packet;
  const mqtt::Status s = mqtt::decode(first, body, version_, packet);
  const auto type = static_cast<mqtt::PacketType>(first >> 4);
  if (!s.ok()) {
    if (state_ == State::awaiting_connect && type == mqtt::PacketType::connect) {
      shard_->counters.add(shard_->counters.protocol_errors);
      if (const auto* c = std::get_if<mqtt::Connect>(&packet)) version_ = c->version;
      // The protocol level is answered in the CONNACK format the client asked for; other
      // CONNECT errors get a v5 CONNACK with the reason, and a plain close for v3.
      if (version_ == ProtocolVersion::v5) {
        mqtt::Connack ack;
        ack.code = static_cast<std::uint8_t>(s.code);
        send(ack);
      } else if (s.code == ReasonCode::unsupported_protocol_version) {
        mqtt::Connack ack;
        ack.code = static_cast<std::uint8_t>(v3_code(s.code));
        send(ack);
      }
      close_after_write();
      return s;
    }
    fail(s.code);
    return s;
  }
  if (state_ == State::awaiting_connect) {
    if (auto* c = std::get_if<mqtt::Connect>(&packet)) return on_connect(*c);
    shard_->counters.add(shard_->counters.protocol_errors);
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
      fail(ReasonCode::protocol_error);
      return {ReasonCode::protocol_error, "unexpected packet"};
  }
}

// ---- CONNECT ---------------------------------------------------------------------------------

mqtt::Status Connection::on_connect(mqtt::Connect& c) {
  const BrokerOptions& opts = core_.options();
  version_ = c.version;
  state_ = State::connecting;
  const bool v5 = version_ == ProtocolVersion::v5;
  auto refuse = [this](ReasonCode code) {
    mqtt::Connack ack;
    ack.code = version_ == ProtocolVersion::v5 ? static_cast<std::uint8_t>(code)
                                               : static_cast<std::uint8_t>(v3_code(code));
    send(ack);
    close_after_write();
    return mqtt::Status{code, "CONNECT refused"};
  };

  auto info = std::make_shared<ConnectInfo>();
  info->version = version_;
  info->clean_start = c.clean_start;
  info->client_id.assign(c.client_id);
  if (info->client_id.empty()) {
    if (!v5 && (!c.clean_start || version_ == ProtocolVersion::v31)) {
      return refuse(ReasonCode::client_identifier_not_valid);
    }
    // Assign an id whose session lives on this shard, so the connection need not move.
    do {
      info->client_id = random_client_id();
    } while (core_.home_shard(info->client_id) != shard_->index ||
             shard_->sessions.count(info->client_id) != 0);
    info->assigned_id = true;
  }
  info->keep_alive = c.keep_alive;
  if (c.keep_alive > opts.max_keepalive || (c.keep_alive == 0 && opts.max_keepalive < 65535)) {
    // MQTT 3.x cannot be told a lower keep alive: refused, as Mosquitto does.
    if (!v5) return refuse(ReasonCode::client_identifier_not_valid);
    info->keep_alive = opts.max_keepalive;
    info->keep_alive_lowered = true;
  }
  if (c.username) info->username.emplace(*c.username);
  if (c.password) info->password.emplace(*c.password);
  if (v5) {
    const mqtt::Properties& p = c.properties;
    if (p.authentication_method) return refuse(ReasonCode::bad_authentication_method);
    if (p.receive_maximum) {
      send_window_ = std::min<std::uint16_t>(opts.max_inflight, *p.receive_maximum);
    }
    if (p.maximum_packet_size) client_max_packet_ = *p.maximum_packet_size;
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
    PendingWill pending;
    pending.message =
        Message::from_publish(w, w.topic, info->client_id, opts.max_message_expiry, Clock::now());
    info->will = std::move(pending);
    info->will_delay = c.will->properties.will_delay_interval.value_or(0);
  }

  if (core_.auth_hooks.empty()) {
    finish_connect(info, Decision::defer);
    return mqtt::Status::success();
  }
  paused_ = true;
  decide(
      core_.auth_hooks,
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
      [self = shared_from_this(), info](Decision d) { self->finish_connect(info, d); });
  return mqtt::Status::success();
}

void Connection::finish_connect(std::shared_ptr<ConnectInfo> info, Decision decision) {
  if (state_ == State::closed) return;
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
    refused = core_.rules().authenticate(who, password);
  }
  if (refused != ReasonCode::success) {
    shard_->counters.add(shard_->counters.auth_failures);
    mqtt::Connack ack;
    ack.code = version_ == ProtocolVersion::v5 ? static_cast<std::uint8_t>(refused)
                                               : static_cast<std::uint8_t>(v3_code(refused));
    send(ack);
    close_after_write();
    return;
  }
  paused_ = true;  // park whatever follows CONNECT until the session is attached
  if (!info->will) {
    proceed_connect(std::move(info));
    return;
  }
  // A will is a publish made late: the write check applies to it now, while the client's
  // identity is at hand (else a client could publish anywhere through its will).
  auto with_rules = [self = shared_from_this(), info](Decision d) {
    bool allowed = d == Decision::allow;
    if (d == Decision::defer) {
      access::Identity who;
      who.client_id = info->client_id;
      if (info->username) who.username = *info->username;
      who.remote_ip = self->remote_address_;
      who.remote_port = self->remote_port_;
      allowed = self->core_.rules().allows(who, info->will->message->topic, Access::write, false);
    }
    if (!allowed) {
      self->shard_->counters.add(self->shard_->counters.acl_denials);
      info->will.reset();
    }
    self->proceed_connect(info);
  };
  if (core_.acl_hooks.empty()) {
    with_rules(Decision::defer);
    return;
  }
  decide(
      core_.acl_hooks,
      [info, this](AclHook& hook, std::function<void(Decision)> done) {
        AclRequest req;
        req.client_id = info->client_id;
        if (info->username) req.username = *info->username;
        req.remote_address = remote_address_;
        req.topic = info->will->message->topic;
        req.access = Access::write;
        hook.check(req, std::move(done));
      },
      std::move(with_rules));
}

void Connection::proceed_connect(std::shared_ptr<ConnectInfo> info) {
  if (state_ == State::closed) return;
  const unsigned home = core_.home_shard(info->client_id);
  if (home == shard_->index) {
    attach(std::move(info));
    return;
  }
  if (in_handler_) {
    // Move once the read handler has finished with this shard's state.
    asio::post(shard_->ctx, [self = shared_from_this(), info = std::move(info)]() mutable {
      self->migrate_and_attach(std::move(info));
    });
  } else {
    migrate_and_attach(std::move(info));
  }
}

void Connection::migrate_and_attach(std::shared_ptr<ConnectInfo> info) {
  if (state_ == State::closed) return;
  // No operation is pending on the socket here: reading stopped when CONNECT paused the
  // connection, and nothing was written before CONNACK.
  std::error_code ec;
  const auto protocol = socket_.local_endpoint(ec).protocol();
  const int fd = ec ? -1 : socket_.release(ec);
  if (ec || fd < 0) {
    close();
    return;
  }
  Shard& target = core_.shard(core_.home_shard(info->client_id));
  if (linked_) {
    shard_->connections.erase(link_);
    linked_ = false;
  }
  shard_ = &target;
  asio::post(
      target.ctx, [self = shared_from_this(), fd, protocol, info = std::move(info)]() mutable {
        std::error_code aec;
        self->socket_ = asio::ip::tcp::socket(self->shard_->ctx);
        self->socket_.assign(protocol, fd, aec);
        if (aec) {
          ::close(fd);
          self->state_ = State::closed;
          return;
        }
        self->socket_.non_blocking(true, aec);
        self->link_ = self->shard_->connections.insert(self->shard_->connections.end(), self);
        self->linked_ = true;
        self->attach(std::move(info));
      });
}

void Connection::attach(std::shared_ptr<ConnectInfo> info) {
  if (state_ == State::closed) return;
  Shard& shard = *shard_;
  const BrokerOptions& opts = core_.options();
  bool present = false;
  auto it = shard.sessions.find(info->client_id);
  if (it != shard.sessions.end()) {
    ClientSessionPtr existing = it->second;
    if (existing->connection != nullptr) existing->connection->kick(ReasonCode::session_taken_over);
    // The old connection's session may have ended with it (clean session, expiry 0): then
    // there is nothing to resume or discard.
    if (existing->removed) {
      present = false;
    } else if (info->clean_start) {
      core_.discard_session(shard, existing);  // publishes a will still waiting for its delay
    } else {
      present = true;
      existing->will.reset();  // reconnected within the will delay: no will (MQTT 5.0 3.1.3.2.2)
      session_ = existing;
    }
  }
  if (!session_) {
    session_ = std::make_shared<ClientSession>(info->client_id, shard.index);
    shard.sessions[info->client_id] = session_;
    shard.counters.add(shard.counters.sessions);
  }
  ClientSession& s = *session_;
  s.connection = this;
  s.version = info->version;
  s.username = info->username;
  s.clean = info->clean_start;
  s.expiry_interval = info->session_expiry;
  s.expires_at.reset();
  keep_alive_ = info->keep_alive;
  will_ = std::move(info->will);
  will_delay_ = info->will_delay;
  state_ = State::connected;
  shard.counters.add(shard.counters.clients_connected);

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
  if (!core_.event_hooks.empty()) {
    ClientEvent e;
    e.client_id = s.state.client_id();
    if (s.username) e.username = *s.username;
    e.remote_address = remote_address_;
    e.protocol_version = static_cast<int>(version_);
    e.session_present = present;
    core_.notify([&](EventHook& h) { h.on_connect(e); });
  }

  // Resend what was in flight (MQTT 4.4): PUBLISH with DUP, or PUBREL for released QoS 2.
  for (session::Inflight& f : s.state.inflight()) {
    if (f.released) {
      mqtt::Pubrel rel;
      rel.packet_id = f.packet_id;
      send(rel);
    } else {
      send_delivery(f.delivery, f.packet_id, true);
    }
    f.sent = true;
  }
  pump();
  resume();
}

// ---- PUBLISH ---------------------------------------------------------------------------------

mqtt::Status Connection::on_publish(mqtt::Publish& p) {
  const BrokerOptions& opts = core_.options();
  std::string_view topic = p.topic;
  if (version_ == ProtocolVersion::v5) {
    if (!p.properties.subscription_identifiers.empty()) {
      fail(ReasonCode::protocol_error);
      return {ReasonCode::protocol_error, "subscription identifier in a client's PUBLISH"};
    }
    if (p.properties.topic_alias) {
      const std::uint16_t alias = *p.properties.topic_alias;
      if (alias > opts.topic_alias_maximum) {
        fail(ReasonCode::topic_alias_invalid);
        return {ReasonCode::topic_alias_invalid, "topic alias above the maximum"};
      }
      if (!topic.empty()) {
        topic_aliases_[alias].assign(topic);
      } else if (auto it = topic_aliases_.find(alias); it != topic_aliases_.end()) {
        topic = it->second;
      } else {
        fail(ReasonCode::protocol_error);
        return {ReasonCode::protocol_error, "unknown topic alias"};
      }
    }
  }
  if (p.qos == 2) {
    if (!session_->state.has_qos2(p.packet_id) &&
        session_->state.incoming_qos2() >= opts.receive_maximum) {
      fail(ReasonCode::receive_maximum_exceeded);
      return {ReasonCode::receive_maximum_exceeded, "receive maximum exceeded"};
    }
    if (!session_->state.receive_qos2(p.packet_id)) {
      // A resend of a message already received and routed: acknowledge again only.
      mqtt::Pubrec rec;
      rec.packet_id = p.packet_id;
      send(rec);
      return mqtt::Status::success();
    }
  }
  shard_->counters.add(shard_->counters.messages_received);
  published_ = true;
  MessagePtr message = Message::from_publish(p, topic, session_->state.client_id(),
                                             opts.max_message_expiry, Clock::now());
  const std::uint16_t packet_id = p.packet_id;
  if (core_.acl_hooks.empty()) {
    finish_publish(message, packet_id, Decision::defer);
    return mqtt::Status::success();
  }
  paused_ = true;
  decide(
      core_.acl_hooks,
      [this, message](AclHook& hook, std::function<void(Decision)> done) {
        AclRequest req;
        req.client_id = session_->state.client_id();
        if (session_->username) req.username = *session_->username;
        req.remote_address = remote_address_;
        req.topic = message->topic;
        req.access = Access::write;
        hook.check(req, std::move(done));
      },
      [self = shared_from_this(), message, packet_id](Decision d) {
        self->finish_publish(message, packet_id, d);
        self->resume();
      });
  return mqtt::Status::success();
}

void Connection::finish_publish(const MessagePtr& message, std::uint16_t packet_id,
                                Decision decision) {
  if (state_ == State::closed || !session_) return;
  const bool allowed = decision == Decision::defer
                           ? rules_allow(message->topic, Access::write, false)
                           : decision == Decision::allow;
  std::size_t targets = 0;
  if (allowed) {
    targets = core_.route(message, *shard_).targets;
    if (core_.message_to.active()) core_.emit_message_to(*message, version_, packet_id);
    if (!core_.event_hooks.empty()) {
      MessageEvent e;
      e.client_id = message->origin;
      e.topic = message->topic;
      e.payload = message->payload;
      e.qos = message->qos;
      e.retain = message->retain;
      core_.notify([&](EventHook& h) { h.on_publish(e); });
    }
  } else {
    shard_->counters.add(shard_->counters.acl_denials);
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
    send(ack);
  } else {
    mqtt::Pubrec rec;
    rec.packet_id = packet_id;
    rec.reason_code = code;
    if (static_cast<std::uint8_t>(code) >= 0x80) session_->state.release_qos2(packet_id);
    send(rec);
  }
}

bool Connection::rules_allow(std::string_view name, Access access, bool is_filter) const {
  const access::Rules& r = core_.rules();
  if (r.acl_allows_everything()) return true;
  access::Identity who;
  who.client_id = session_->state.client_id();
  if (session_->username) who.username = *session_->username;
  who.remote_ip = remote_address_;
  who.remote_port = remote_port_;
  return r.allows(who, name, access, is_filter);
}

// ---- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------------

mqtt::Status Connection::on_subscribe(mqtt::Subscribe& s) {
  struct Pending {
    std::uint16_t packet_id;
    std::vector<std::pair<std::string, session::SubscriptionOptions>> subs;
    std::vector<Decision> decisions;
  };
  auto pending = std::make_shared<Pending>();
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

  auto finish = [this](Pending& p) {
    mqtt::Suback ack;
    ack.packet_id = p.packet_id;
    std::vector<session::Delivery> retained;
    const auto now = Clock::now();
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
        shard_->counters.add(shard_->counters.acl_denials);
        ack.reason_codes.push_back(version_ == ProtocolVersion::v5 ? ReasonCode::not_authorized
                                                                   : ReasonCode::unspecified_error);
        continue;
      }
      const bool existed = core_.subscribe(session_, filter, o);
      session_->state.subscriptions()[filter] = o;
      ack.reason_codes.push_back(static_cast<ReasonCode>(o.qos));
      if (!core_.event_hooks.empty()) {
        SubscriptionEvent e{session_->state.client_id(), filter, o.qos};
        core_.notify([&](EventHook& h) { h.on_subscribe(e); });
      }
      if (is_shared) continue;  // no retained messages for shared subscriptions
      if (o.retain_handling == 2 || (o.retain_handling == 1 && existed)) continue;
      for (MessagePtr& m : core_.retained_matching(filter)) {
        if (m->expired(now)) continue;
        if (!core_.delivery_allowed(*session_, m->topic)) {
          shard_->counters.add(shard_->counters.acl_denials);
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
    send(ack);
    session::QueueLimits limits{core_.options().max_queued_messages};
    const std::size_t before = session_->state.queued_bytes();
    for (session::Delivery& rd : retained) {
      shard_->counters.add(shard_->counters.messages_dropped,
                           session_->state.enqueue(std::move(rd), limits));
    }
    shard_->account(static_cast<std::int64_t>(session_->state.queued_bytes()) -
                    static_cast<std::int64_t>(before));
    pump();
  };

  if (core_.acl_hooks.empty()) {
    finish(*pending);
    return mqtt::Status::success();
  }
  // One ACL check per filter, in order; the SUBACK goes out when all have answered.
  paused_ = true;
  auto self = shared_from_this();
  auto step = std::make_shared<std::function<void()>>();
  // The step holds itself weakly; a pending hook answer holds it strongly.
  *step = [self, pending, finish, weak = std::weak_ptr<std::function<void()>>(step)]() {
    if (self->state_ == State::closed) return;
    if (pending->decisions.size() == pending->subs.size()) {
      finish(*pending);
      self->resume();
      return;
    }
    auto next = weak.lock();
    if (!next) return;
    const std::string& filter = pending->subs[pending->decisions.size()].first;
    self->decide(
        self->core_.acl_hooks,
        [self, &filter](AclHook& hook, std::function<void(Decision)> done) {
          AclRequest req;
          req.client_id = self->session_->state.client_id();
          if (self->session_->username) req.username = *self->session_->username;
          req.remote_address = self->remote_address_;
          req.topic = filter;
          req.access = Access::read;
          req.is_filter = true;
          hook.check(req, std::move(done));
        },
        [pending, next](Decision d) {
          pending->decisions.push_back(d);
          (*next)();
        });
  };
  (*step)();
  return mqtt::Status::success();
}

mqtt::Status Connection::on_unsubscribe(const mqtt::Unsubscribe& u) {
  mqtt::Unsuback ack;
  ack.packet_id = u.packet_id;
  for (std::string_view f : u.filters) {
    const std::string filter(f);
    const bool existed = core_.unsubscribe(session_, filter);
    session_->state.subscriptions().erase(filter);
    if (existed && !core_.event_hooks.empty()) {
      SubscriptionEvent e{session_->state.client_id(), filter, 0};
      core_.notify([&](EventHook& h) { h.on_unsubscribe(e); });
    }
    if (version_ == ProtocolVersion::v5) {
      ack.reason_codes.push_back(existed ? ReasonCode::success
                                         : ReasonCode::no_subscription_existed);
    }
  }
  send(ack);
  return mqtt::Status::success();
}

mqtt::Status Connection::on_disconnect(const mqtt::Disconnect& d) {
  if (version_ == ProtocolVersion::v5) {
    if (d.properties.session_expiry_interval) {
      if (session_->expiry_interval == 0 && *d.properties.session_expiry_interval != 0) {
        fail(ReasonCode::protocol_error);  // MQTT 5.0 3.14.2.2.2
        return {ReasonCode::protocol_error, "session expiry set on DISCONNECT after 0"};
      }
      session_->expiry_interval =
          std::min(*d.properties.session_expiry_interval, core_.options().max_session_expiry);
    }
    graceful_ = d.reason_code != ReasonCode::disconnect_with_will;
  } else {
    graceful_ = true;
  }
  close_reason_ = d.reason_code;
  close();
  return mqtt::Status::success();
}

// ---- hooks -----------------------------------------------------------------------------------

template <class Hook, class Ask>
void Connection::decide(const std::vector<std::shared_ptr<Hook>>& hooks, Ask ask,
                        std::function<void(Decision)> k) {
  // Each hook may answer inline or later from any thread. A hook that answers later resumes
  // the chain on this connection's shard. `state`: 0 waiting, 1 answered, 2 caller returned.
  struct Chain : std::enable_shared_from_this<Chain> {
    Chain(std::vector<std::shared_ptr<Hook>> h, Ask a, std::function<void(Decision)> kk,
          asio::io_context* c)
        : hooks(std::move(h)), ask(std::move(a)), k(std::move(kk)), ctx(c) {}

    std::vector<std::shared_ptr<Hook>> hooks;
    Ask ask;
    std::function<void(Decision)> k;
    asio::io_context* ctx;
    std::size_t index = 0;

    void run() {
      while (index < hooks.size()) {
        struct Slot {
          std::atomic<int> state{0};
          Decision decision = Decision::defer;
        };
        auto slot = std::make_shared<Slot>();
        auto self = this->shared_from_this();
        ask(*hooks[index], [self, slot](Decision d) {
          slot->decision = d;
          if (slot->state.exchange(1) == 2) {
            asio::post(*self->ctx, [self, slot] { self->answered(slot->decision); });
          }
        });
        if (slot->state.exchange(2) != 1) return;  // answers later
        if (slot->decision != Decision::defer) {
          k(slot->decision);
          return;
        }
        ++index;
      }
      k(Decision::defer);
    }
    void answered(Decision d) {
      if (d != Decision::defer) {
        k(d);
        return;
      }
      ++index;
      run();
    }
  };
  std::make_shared<Chain>(hooks, std::move(ask), std::move(k), &shard_->ctx)->run();
}

// ---- writing ---------------------------------------------------------------------------------

void Connection::pump() {
  if (!session_ || state_ != State::connected) return;
  const auto now = Clock::now();
  std::size_t expired = 0;
  const std::size_t queued_before = session_->state.queued_bytes();
  while (backlog_bytes_ < kMaxBacklogBytes) {
    session::Delivery qos0;
    session::Inflight* inflight = nullptr;
    if (!session_->state.next(send_window_, now, qos0, inflight, expired)) break;
    if (inflight != nullptr) {
      if (!send_delivery(inflight->delivery, inflight->packet_id, false)) {
        session_->state.abandon(inflight->packet_id);
      }
    } else {
      send_delivery(qos0, 0, false);
    }
  }
  if (expired != 0) shard_->counters.add(shard_->counters.messages_dropped, expired);
  shard_->account(static_cast<std::int64_t>(session_->state.queued_bytes()) -
                  static_cast<std::int64_t>(queued_before));
}

bool Connection::send_delivery(const session::Delivery& d, std::uint16_t packet_id, bool dup) {
  const Message& m = *d.message;
  if (!core_.event_hooks.empty()) {
    MessageEvent e;
    e.client_id = session_ ? std::string_view(session_->state.client_id()) : std::string_view();
    e.topic = m.topic;
    e.payload = m.payload;
    e.qos = d.qos;
    e.retain = d.retain;
    core_.notify([&](EventHook& h) { h.on_deliver(e); });
  }
  const bool per_subscriber =
      version_ == ProtocolVersion::v5 &&
      (!d.subscription_ids.empty() || m.expires_at || client_alias_max_ > 0);
  if (!per_subscriber) {
    if (const std::string* enc = m.encoded(version_, d.qos, d.retain)) {
      if (enc->size() > client_max_packet_) {
        shard_->counters.add(shard_->counters.messages_dropped);
        return false;
      }
      if (d.qos == 0) {
        pending_.push_back(Chunk{d.message, enc, 0, 0});
        add_backlog(enc->size());
        mark_dirty();
      } else {
        const std::size_t begin = pending_own_.size();
        pending_own_.append(*enc);
        const std::size_t at = begin + mqtt::publish_packet_id_offset(*enc);
        pending_own_[at] = static_cast<char>(packet_id >> 8);
        pending_own_[at + 1] = static_cast<char>(packet_id & 0xFF);
        if (dup) pending_own_[begin] = static_cast<char>(pending_own_[begin] | 0x08);
        append_own(begin);
      }
      shard_->counters.add(shard_->counters.messages_sent);
      return true;
    }
  }
  mqtt::Publish p = m.to_publish(d.qos, d.retain, packet_id, Clock::now());
  p.dup = dup && d.qos > 0;
  p.properties.subscription_identifiers = d.subscription_ids;
  // Outgoing topic alias (MQTT 5.0 3.3.2.3.4): the first message on a topic carries the
  // topic and a new alias, later ones only the alias, while the client's maximum allows.
  bool new_alias = false;
  if (client_alias_max_ > 0) {
    auto it = out_aliases_.find(m.topic);
    if (it != out_aliases_.end()) {
      p.topic = {};
      p.properties.topic_alias = it->second;
    } else if (out_aliases_.size() < client_alias_max_) {
      const auto alias = static_cast<std::uint16_t>(out_aliases_.size() + 1);
      out_aliases_.emplace(m.topic, alias);
      p.properties.topic_alias = alias;
      new_alias = true;
    }
  }
  const mqtt::Packet packet(std::move(p));
  const std::size_t size = mqtt::encoded_size(packet, version_);
  if (size == 0 || size > client_max_packet_) {
    if (new_alias) out_aliases_.erase(m.topic);
    shard_->counters.add(shard_->counters.messages_dropped);
    return false;
  }
  send(packet);
  shard_->counters.add(shard_->counters.messages_sent);
  return true;
}

void Connection::send(const mqtt::Packet& packet) {
  if (state_ == State::closed) return;
  const std::size_t begin = pending_own_.size();
  if (!mqtt::encode(packet, version_, pending_own_)) return;
  append_own(begin);
}

void Connection::append_own(std::size_t begin) {
  const std::size_t end = pending_own_.size();
  if (!pending_.empty() && pending_.back().shared == nullptr && pending_.back().end == begin) {
    pending_.back().end = end;
  } else {
    pending_.push_back(Chunk{nullptr, nullptr, begin, end});
  }
  add_backlog(end - begin);
  mark_dirty();
}

void Connection::add_backlog(std::size_t bytes) {
  backlog_bytes_ += bytes;
  shard_->account(static_cast<std::int64_t>(bytes));
}

void Connection::remove_backlog(std::size_t bytes) {
  bytes = std::min(bytes, backlog_bytes_);
  backlog_bytes_ -= bytes;
  shard_->account(-static_cast<std::int64_t>(bytes));
}

void Connection::mark_dirty() {
  if (dirty_) return;
  dirty_ = true;
  shard_->dirty.push_back(shared_from_this());
  core_.schedule_flush(*shard_);
}

void Connection::flush() {
  dirty_ = false;
  if (write_active_ || pending_.empty() || state_ == State::closed) return;
  writing_.swap(pending_);
  writing_own_.swap(pending_own_);
  pending_.clear();
  pending_own_.clear();
  buffers_.clear();
  for (const Chunk& c : writing_) {
    if (c.shared != nullptr) {
      buffers_.push_back(asio::buffer(*c.shared));
    } else {
      buffers_.push_back(asio::buffer(writing_own_.data() + c.begin, c.end - c.begin));
    }
  }
  write_active_ = true;
  asio::async_write(socket_, buffers_,
                    [self = shared_from_this()](const std::error_code& ec, std::size_t n) {
                      self->on_written(ec, n);
                    });
}

void Connection::on_written(const std::error_code& ec, std::size_t bytes) {
  write_active_ = false;
  shard_->counters.add(shard_->counters.bytes_sent, bytes);
  std::size_t queued = 0;
  for (const Chunk& c : writing_) queued += c.shared ? c.shared->size() : c.end - c.begin;
  remove_backlog(queued);
  writing_.clear();
  writing_own_.clear();
  if (writing_own_.capacity() > 64 * 1024) std::string().swap(writing_own_);
  if (state_ == State::closed) return;
  if (ec) {
    close();
    return;
  }
  if (close_when_written_ && pending_.empty()) {
    close();
    return;
  }
  pump();
  flush();
  if (!reading_ && backlog_bytes_ < kMaxBacklogBytes / 2) start_read();
}

// ---- ending ----------------------------------------------------------------------------------

void Connection::fail(ReasonCode reason) {
  if (state_ == State::closed || close_when_written_) return;
  shard_->counters.add(shard_->counters.protocol_errors);
  close_reason_ = reason;
  if (state_ == State::connected && version_ == ProtocolVersion::v5) {
    mqtt::Disconnect d;
    d.reason_code = reason;
    send(d);
  }
  close_after_write();
}

void Connection::kick(ReasonCode reason) {
  if (state_ == State::closed) return;
  close_reason_ = reason;
  if (state_ == State::connected && version_ == ProtocolVersion::v5) {
    mqtt::Disconnect d;
    d.reason_code = reason;
    send(d);
  }
  detach_session(reason != ReasonCode::server_shutting_down);
  close_after_write();
}

void Connection::shutdown() { kick(ReasonCode::server_shutting_down); }

void Connection::close_after_write() {
  if (state_ == State::closed) return;
  if (!close_when_written_) close_requested_at_ = Clock::now();
  close_when_written_ = true;
  if (!write_active_ && pending_.empty()) {
    close();
    return;
  }
  mark_dirty();
}

void Connection::close() {
  if (state_ == State::closed) return;
  detach_session(!graceful_);
  state_ = State::closed;
  std::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  parked_.clear();
  std::size_t unsent = 0;
  for (const Chunk& c : pending_) unsent += c.shared ? c.shared->size() : c.end - c.begin;
  pending_.clear();
  pending_own_.clear();
  remove_backlog(unsent);  // what is being written is settled by on_written
}

void Connection::detach_session(bool publish_will) {
  if (!session_) return;
  ClientSessionPtr s = std::move(session_);
  session_.reset();
  if (s->connection == this) {
    s->connection = nullptr;
    shard_->counters.clients_connected.store(
        shard_->counters.clients_connected.load(std::memory_order_relaxed) - 1,
        std::memory_order_relaxed);
  }
  s->state.connection_lost();
  if (!core_.event_hooks.empty()) {
    ClientEvent e;
    e.client_id = s->state.client_id();
    if (s->username) e.username = *s->username;
    e.remote_address = remote_address_;
    e.protocol_version = static_cast<int>(version_);
    e.reason = close_reason_;
    core_.notify([&](EventHook& h) { h.on_disconnect(e); });
  }
  const bool session_ends = s->expiry_interval == 0;
  if (publish_will && will_) {
    if (will_delay_ == 0 || session_ends) {
      core_.publish_will(*shard_, will_->message);
    } else {
      s->will = PendingWill{will_->message, Clock::now() + std::chrono::seconds(will_delay_)};
    }
  }
  will_.reset();
  if (session_ends) {
    core_.discard_session(*shard_, s);
  } else {
    if (s->expiry_interval != 0xFFFFFFFFu) {
      s->expires_at = Clock::now() + std::chrono::seconds(s->expiry_interval);
    }
    const std::size_t before = s->state.queued_bytes();
    s->state.drop_qos0();  // an offline session keeps QoS 1/2 only (as Mosquitto)
    shard_->account(static_cast<std::int64_t>(s->state.queued_bytes()) -
                    static_cast<std::int64_t>(before));
  }
}

void Connection::check_timeouts(Clock::time_point now) {
  if (state_ == State::closed) return;
  if (close_when_written_) {
    if (now - close_requested_at_ > kCloseGrace) close();
    return;
  }
  if (state_ == State::awaiting_connect || state_ == State::connecting) {
    if (now - opened_at_ > core_.options().connect_timeout) close();
    return;
  }
  if (memory_paused_ || backlog_bytes_ >= kMaxBacklogBytes) {
    last_activity_ = now;  // not read on purpose: the silence is ours, not the client's
    return;
  }
  if (keep_alive_ != 0 &&
      now - last_activity_ > std::chrono::milliseconds(std::uint64_t{keep_alive_} * 1500)) {
    fail(ReasonCode::keep_alive_timeout);
  }
}

}  // namespace brokerha::net
