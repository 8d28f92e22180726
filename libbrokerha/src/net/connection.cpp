// SPDX-License-Identifier: Apache-2.0
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
// Bytes of topic names a client may pin with inbound topic aliases.
constexpr std::size_t kMaxAliasBytes = 1 << 20;
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

// Sets `why` as the Reason String of a v5 packet unless that would make it larger than the
// client's Maximum Packet Size (MQTT 5.0 3.1.2.11.4, 3.2.2.3.7: then it is left out).
template <typename P>
void add_reason_string(P& packet, std::string_view why, std::uint32_t max_packet) {
  if (why.empty()) return;
  packet.properties.reason_string = why;
  if (mqtt::encoded_size(mqtt::Packet(packet), mqtt::ProtocolVersion::v5) > max_packet) {
    packet.properties.reason_string.reset();
  }
}

// The same on an acknowledgement, only when the client asked for problem information.
template <typename P>
void add_problem(P& packet, std::string_view why, bool wanted, std::uint32_t max_packet) {
  if (wanted) add_reason_string(packet, why, max_packet);
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

Connection::Connection(Core& core, Shard& shard, Socket socket,
                       std::unique_ptr<Transport> transport)
    : core_(core),
      shard_(&shard),
      socket_(std::move(socket)),
      framer_(core.options().max_packet_size),
      transport_(std::move(transport)) {
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
    if (transport_) {
      if (!transport_input(buffer, n) || state_ == State::closed || close_when_written_ ||
          n < buffer.size()) {
        break;
      }
      continue;
    }
    if (!first_bytes_ok(std::string_view(buffer.data(), n))) break;
    const mqtt::Status s = framer_.feed(
        std::string_view(buffer.data(), n),
        [this](std::uint8_t first, std::string_view body) { return on_frame(first, body); });
    if (!s.ok()) {
      if (state_ != State::closed && !close_when_written_) fail(s.code, s.detail);
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

bool Connection::first_bytes_ok(std::string_view bytes) {
  // The first packet must be CONNECT: anything else (a PROXY header or HTTP request sent to
  // the wrong listener, TLS sent to a plain port) is refused at its first byte instead of
  // waiting for a length it happens to encode.
  if (state_ != State::awaiting_connect || bytes.empty() || !framer_.idle() ||
      (static_cast<std::uint8_t>(bytes[0]) >> 4) ==
          static_cast<std::uint8_t>(mqtt::PacketType::connect)) {
    return true;
  }
  shard_->counters.add(shard_->counters.protocol_errors);
  close();
  return false;
}

bool Connection::transport_input(std::vector<char>& buffer, std::size_t n) {
  const Transport::Result r =
      transport_->input(buffer.data(), buffer.size(), n, [this](std::string_view bytes) {
        if (auto peer = transport_->take_peer()) {  // before CONNECT is judged
          remote_address_ = std::move(peer->first);
          remote_port_ = peer->second;
        }
        if (!first_bytes_ok(bytes)) return false;
        const mqtt::Status s = framer_.feed(
            bytes,
            [this](std::uint8_t first, std::string_view body) { return on_frame(first, body); });
        if (!s.ok()) {
          if (state_ != State::closed && !close_when_written_) fail(s.code, s.detail);
          return false;
        }
        return state_ != State::closed && !close_when_written_;
      });
  if (auto peer = transport_->take_peer()) {
    remote_address_ = std::move(peer->first);
    remote_port_ = peer->second;
  }
  if (state_ == State::closed) return false;
  if (transport_->has_output()) mark_dirty();
  switch (r) {
    case Transport::Result::ok:
      if (transport_->passthrough()) transport_.reset();  // PROXY header read on plain TCP
      return true;
    case Transport::Result::stop:
      return false;
    case Transport::Result::closing:
      close_after_write();
      return false;
    case Transport::Result::error:
      close();
      return false;
  }
  return false;
}

void Connection::resume_reading() {
  if (!memory_paused_) return;
  memory_paused_ = false;
  start_read();
}

mqtt::Status Connection::on_frame(std::uint8_t first, std::string_view body) {
  if (paused_) {
    parked().push_back(Frame{first, std::string(body)});
    return mqtt::Status::success();
  }
  return handle(first, body);
}

void Connection::resume() {
  paused_ = false;
  in_handler_ = true;
  while (!paused_ && has_parked() && state_ != State::closed && !close_when_written_) {
    Frame f = std::move(parked_->front());
    parked_->pop_front();
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
      fail(ReasonCode::protocol_error, "unexpected packet");
      return {ReasonCode::protocol_error, "unexpected packet"};
  }
}

// ---- CONNECT ---------------------------------------------------------------------------------

mqtt::Status Connection::on_connect(mqtt::Connect& c) {
  const BrokerOptions& opts = core_.options();
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
    } while (core_.home_shard(info->client_id) != shard_->index ||
             shard_->sessions.contains(info->client_id));
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
  if (transport_ && transport_->use_identity_as_username()) {
    // The certificate names the client (mqtt.tls.use_identity_as_username).
    if (transport_->identity().empty()) {
      return refuse(ReasonCode::not_authorized, "no verified client certificate");
    }
    info->username = transport_->identity();
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
  if (write_active_) {
    // A transport's handshake answer is still being written (plain TCP writes nothing before
    // CONNACK): move once it is done, with no operation pending on the socket.
    transport_->after_write = [self = shared_from_this(), info = std::move(info)]() mutable {
      self->migrate_and_attach(std::move(info));
    };
    return;
  }
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
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 sees Asio's move of a just-constructed, closed socket as reading uninitialized
// reactor data (it is not read for a closed socket).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
        self->socket_ = Socket(self->shard_->ctx);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
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

void Connection::finish_claim(std::shared_ptr<ConnectInfo> info, ClaimResult result) {
  Shard& shard = *shard_;
  if (!result.won || !core_.accept_claim(shard, info->client_id, result.version)) {
    // A newer claim on this client id exists elsewhere: it won the race.
    if (state_ == State::closed) return;
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
    if (const ClientSessionPtr* found = shard.sessions.find(info->client_id)) {
      ClientSessionPtr old = *found;
      if (old->connection != nullptr) old->connection->kick(ReasonCode::session_taken_over);
      old->will.reset();
      core_.discard_session(shard, old);
    }
    std::string error;
    auto imported = session::import_session(result.session, Clock::now(), error);
    if (imported && imported->session->client_id() == info->client_id &&
        !core_.install_session(shard, std::move(*imported)) && !shard.route_changes.empty()) {
      // Its subscriptions are new routes here: peers learn them before CONNACK, or a message
      // published elsewhere right after it would miss the client.
      std::vector<std::string> changes;
      changes.swap(shard.route_changes);
      core_.cluster->routes_changed(std::move(changes), [self = shared_from_this(), info] {
        asio::post(self->shard_->ctx, [self, info] { self->attach(info); });
      });
      return;
    }
  }
  attach(std::move(info));
}

void Connection::attach(std::shared_ptr<ConnectInfo> info) {
  if (state_ == State::closed) return;
  Shard& shard = *shard_;
  if (core_.cluster != nullptr && !info->claimed && !info->assigned_id) {
    // Client ids are unique cluster-wide: settle the claim before touching the session.
    info->claimed = true;
    core_.cluster->claim(info->client_id, !info->clean_start, shard.index,
                         [self = shared_from_this(), info](ClaimResult r) {
                           self->finish_claim(info, std::move(r));
                         });
    return;
  }
  const BrokerOptions& opts = core_.options();
  bool present = false;
  if (const ClientSessionPtr* found = shard.sessions.find(info->client_id)) {
    ClientSessionPtr existing = *found;
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
    shard.sessions.insert(session_);
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
  if (info->will) will_ = std::move(info->will->message);
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
    const RouteResult routed = core_.route(message, *shard_);
    targets = routed.targets + routed.remote;
    if (core_.message_to.active()) core_.emit_message_to(message, version_, packet_id, *shard_);
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

  // Returns true when the SUBACK waits for the cluster (the connection is then paused and
  // resumed by the completion).
  auto finish = [this](Pending& p) -> bool {
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
        add_problem(ack, "not authorized to subscribe to a filter", problem_info(),
                    client_max_packet_);
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
    if (core_.cluster != nullptr && !shard_->route_changes.empty()) {
      // A new filter on this node: peers must know the route before the client is told it
      // is subscribed, or a publish on another node right after SUBACK would miss it.
      std::vector<std::string> changes;
      changes.swap(shard_->route_changes);
      paused_ = true;
      auto self = shared_from_this();
      auto state = std::make_shared<std::pair<mqtt::Suback, std::vector<session::Delivery>>>(
          std::move(ack), std::move(retained));
      core_.cluster->routes_changed(std::move(changes), [self, state] {
        asio::post(self->shard_->ctx, [self, state] {
          if (self->state_ == State::closed) return;
          self->complete_subscribe(state->first, state->second);
          self->resume();
        });
      });
      return true;
    }
    complete_subscribe(ack, retained);
    return false;
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
      if (!finish(*pending)) self->resume();
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

void Connection::complete_subscribe(const mqtt::Suback& ack,
                                    std::vector<session::Delivery>& retained) {
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
        constexpr const char* why = "session expiry set on DISCONNECT after 0";
        fail(ReasonCode::protocol_error, why);  // MQTT 5.0 3.14.2.2.2
        return {ReasonCode::protocol_error, why};
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
      Output& o = out();
      if (d.qos == 0) {
        o.pending.push_back(Chunk{d.message, enc, 0, 0});
        add_backlog(enc->size());
        mark_dirty();
      } else {
        std::string& own = o.pending_own;
        const std::size_t begin = own.size();
        own.append(*enc);
        const std::size_t at = begin + mqtt::publish_packet_id_offset(*enc);
        own[at] = static_cast<char>(packet_id >> 8);
        own[at + 1] = static_cast<char>(packet_id & 0xFF);
        if (dup) own[begin] = static_cast<char>(own[begin] | 0x08);
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
    shard_->counters.add(shard_->counters.messages_dropped);
    return false;
  }
  send(packet);
  shard_->counters.add(shard_->counters.messages_sent);
  return true;
}

void Connection::send(const mqtt::Packet& packet) {
  if (state_ == State::closed) return;
  std::string& own = out().pending_own;
  const std::size_t begin = own.size();
  if (!mqtt::encode(packet, version_, own)) return;
  append_own(begin);
}

void Connection::append_own(std::size_t begin) {
  Output& o = *out_;
  const std::size_t end = o.pending_own.size();
  if (!o.pending.empty() && o.pending.back().shared == nullptr && o.pending.back().end == begin) {
    o.pending.back().end = end;
  } else {
    o.pending.push_back(Chunk{nullptr, nullptr, begin, end});
  }
  add_backlog(end - begin);
  mark_dirty();
}

void Connection::add_backlog(std::size_t bytes) {
  if (backlog_bytes_ == 0) output_moved_ = shard_->sweeps;
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
  if (write_active_ || !has_output() || state_ == State::closed) return;
  Output& o = out();
  o.writing.swap(o.pending);
  o.writing_own.swap(o.pending_own);
  o.pending.clear();
  o.pending_own.clear();
  o.buffers.clear();
  for (const Chunk& c : o.writing) {
    if (c.shared != nullptr) {
      o.buffers.push_back(asio::buffer(*c.shared));
    } else {
      o.buffers.push_back(asio::buffer(o.writing_own.data() + c.begin, c.end - c.begin));
    }
  }
  if (transport_) {
    transport_->wrap(o.buffers, o.wire, o.wire_buffers);
    o.buffers.swap(o.wire_buffers);
  }
  write_active_ = true;
  // The completion condition runs after every partial write: a consumer that reads slowly
  // but steadily is not mistaken for a stuck one (see check_timeouts()).
  auto progress = [this, last = std::size_t{0}](const std::error_code& ec,
                                                std::size_t n) mutable -> std::size_t {
    if (n != last) {
      last = n;
      output_moved_ = shard_->sweeps;
    }
    return asio::transfer_all()(ec, n);
  };
  asio::async_write(socket_, o.buffers, progress,
                    [self = shared_from_this()](const std::error_code& ec, std::size_t n) {
                      self->on_written(ec, n);
                    });
}

void Connection::on_written(const std::error_code& ec, std::size_t bytes) {
  write_active_ = false;
  shard_->counters.add(shard_->counters.bytes_sent, bytes);
  std::size_t queued = 0;
  Output& o = *out_;  // kept while a write is active
  for (const Chunk& c : o.writing) queued += c.shared ? c.shared->size() : c.end - c.begin;
  remove_backlog(queued);
  o.writing.clear();
  o.writing_own.clear();
  if (o.writing_own.capacity() > 64 * 1024) std::string().swap(o.writing_own);
  if (state_ == State::closed) return;
  if (ec) {
    close();
    return;
  }
  if (close_when_written_ && !has_output()) {
    close();
    return;
  }
  if (transport_ && transport_->after_write) {
    auto next = std::move(transport_->after_write);
    transport_->after_write = nullptr;
    next();
    return;
  }
  pump();
  if (!has_pending() && last_write_sweep_ != shard_->sweeps) {
    // The first write since the last sweep, and nothing follows it: a quiet connection (a
    // CONNACK, a PINGRESP). Its buffers go back now, while the allocator can hand them to
    // the next connection; a busy one keeps them (at most one allocation per sweep).
    out_.reset();
  }
  last_write_sweep_ = shard_->sweeps;
  flush();
  if (!reading_ && backlog_bytes_ < kMaxBacklogBytes / 2) start_read();
}

// ---- ending ----------------------------------------------------------------------------------

void Connection::fail(ReasonCode reason, std::string_view why) {
  if (state_ == State::closed || close_when_written_) return;
  shard_->counters.add(reason == ReasonCode::keep_alive_timeout
                           ? shard_->counters.keepalive_timeouts
                           : shard_->counters.protocol_errors);
  close_reason_ = reason;
  if (state_ == State::connected && version_ == ProtocolVersion::v5) send_disconnect(reason, why);
  close_after_write();
}

void Connection::send_disconnect(ReasonCode reason, std::string_view why) {
  mqtt::Disconnect d;
  d.reason_code = reason;
  add_reason_string(d, why, client_max_packet_);
  send(d);
}

void Connection::kick(ReasonCode reason) {
  if (state_ == State::closed) return;
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

void Connection::shutdown() { kick(ReasonCode::server_shutting_down); }

void Connection::close_after_write() {
  if (state_ == State::closed) return;
  if (!close_when_written_) since_ = Clock::now();
  close_when_written_ = true;
  if (transport_) {
    // WebSocket close code (RFC 6455 7.4.1): 1001 "going away" when the broker shuts down.
    transport_->closing(close_reason_ == ReasonCode::server_shutting_down ? 1001 : 1000);
  }
  if (!write_active_ && !has_output()) {
    close();
    return;
  }
  mark_dirty();
}

void Connection::close() {
  if (state_ == State::closed) return;
  detach_session(!graceful_);
  state_ = State::closed;
  if (transport_) transport_->after_write = nullptr;  // it holds this connection
  std::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  parked_.reset();
  std::size_t unsent = 0;
  if (out_) {
    for (const Chunk& c : out_->pending) unsent += c.shared ? c.shared->size() : c.end - c.begin;
    out_->pending.clear();
    out_->pending_own.clear();
    if (!write_active_) out_.reset();
  }
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
      core_.publish_will(*shard_, will_);
    } else {
      s->will = std::make_unique<PendingWill>(
          PendingWill{will_, Clock::now() + std::chrono::seconds(will_delay_)});
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
    if (now - since_ > kCloseGrace) close();
    return;
  }
  if (state_ == State::awaiting_connect || state_ == State::connecting) {
    if (now - since_ > core_.options().connect_timeout) close();
    return;
  }
  if (backlog_bytes_ != 0 && state_ == State::connected) {
    const auto stuck_for = std::chrono::seconds(std::uint32_t(shard_->sweeps - output_moved_));
    if (stuck_for >= core_.options().stuck_consumer_timeout && core_.memory_over()) {
      // Its output has not moved for the timeout and the broker is over its memory bound:
      // keeping it would keep every publisher paused. It cannot read a DISCONNECT either.
      shard_->counters.add(shard_->counters.stuck_consumers_closed);
      close_reason_ = ReasonCode::quota_exceeded;
      close();
      return;
    }
  }
  // Idle output: hand the buffers back (an active connection re-allocates at most once per
  // sweep; an idle one holds none).
  if (out_ && !write_active_ && out_->pending.empty()) out_.reset();
  if (memory_paused_ || backlog_bytes_ >= kMaxBacklogBytes) {
    last_activity_ = now;  // not read on purpose: the silence is ours, not the client's
    return;
  }
  if (keep_alive_ != 0 &&
      now - last_activity_ > std::chrono::milliseconds(std::uint64_t{keep_alive_} * 1500)) {
    fail(ReasonCode::keep_alive_timeout, "no packet within 1.5 times the keep alive");
  }
}

}  // namespace brokerha::net
