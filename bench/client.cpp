// SPDX-License-Identifier: Apache-2.0
// brokerha-bench's MQTT client engine (client.hpp): a connection's CONNECT/SUBSCRIBE handshake,
// the plain TCP read path (readiness, then non-blocking reads into the shared buffer), packet
// parsing, the QoS 1/2 flows both ways, the publishers' pump (rate, backlog, in-flight window)
// and the subscribers' sequence and latency tracking, write batching, keep-alive and close.
// Runs on the bench's one thread; the hot path of every message is in this file.

#include "client.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>
#include <variant>

#include "clock.hpp"
#include "engine.hpp"
#include "mqtt/packet.hpp"
#include "payload.hpp"

namespace brokerha::bench {
namespace {

// Bytes queued per connection before a publisher stops adding messages until a write is done.
constexpr std::size_t kMaxPending = 64 * 1024;
// Messages a publisher adds per pump call at most (keeps the loop fair between publishers).
constexpr std::uint64_t kMaxPerPump = 512;
// Read rounds per readiness event before yielding to other connections.
constexpr int kReadRounds = 4;

// Reads a big-endian 16-bit number at `at` (bounds checked by the caller).
std::uint16_t read_u16(std::string_view b, std::size_t at) {
  return static_cast<std::uint16_t>((static_cast<unsigned>(static_cast<std::uint8_t>(b[at])) << 8) |
                                    static_cast<std::uint8_t>(b[at + 1]));
}

void append_ack(std::string& out, std::uint8_t first, std::uint16_t id) {
  const char bytes[4] = {static_cast<char>(first), 2, static_cast<char>(id >> 8),
                         static_cast<char>(id & 0xFF)};
  out.append(bytes, 4);
}

}  // namespace

Conn::Conn(Engine& engine, Role role, std::uint32_t index, tcp::endpoint endpoint)
    : eng_(engine),
      role_(role),
      index_(index),
      endpoint_(std::move(endpoint)),
      socket_(engine.io),
      timer_(engine.io) {
  if (engine.tls_context || engine.opt.ws) {
    wrap_ = std::make_unique<Wrapped>();
    if (engine.tls_context) wrap_->tls.emplace(socket_, *engine.tls_context);
    wrap_->ws = engine.opt.ws;
  }
}

const std::string& Conn::host() const {
  return role_ == Role::publisher ? eng_.opt.pub_host : eng_.opt.sub_host;
}

std::string Conn::name() const {
  switch (role_) {
    case Role::publisher:
      return "publisher " + std::to_string(index_);
    case Role::subscriber:
      return "subscriber " + std::to_string(index_);
    case Role::idle:
      break;
  }
  return "idle connection " + std::to_string(index_);
}

void Conn::fail(const std::string& what) { eng_.fail(name() + ": " + what); }

void Conn::send_connect() {
  const std::string prefix = eng_.opt.topic_prefix;
  std::string client_id = "bhb-" + prefix.substr(prefix.rfind('/') + 1) + "-" +
                          (role_ == Role::publisher    ? "p"
                           : role_ == Role::subscriber ? "s"
                                                       : "c") +
                          std::to_string(index_);
  mqtt::Connect c;
  c.version = eng_.opt.version;
  c.clean_start = true;
  c.keep_alive = eng_.opt.keepalive;
  c.client_id = client_id;
  keepalive_ = eng_.opt.keepalive;
  std::string out;
  if (!mqtt::encode(mqtt::Packet{c}, eng_.opt.version, out)) {
    fail("cannot encode CONNECT");
    return;
  }
  queue(out);
  state_ = ConnState::connack;
  flush();
  wait_readable();
}

void Conn::wait_readable() {
  if (wrap_) {
    read_wrapped();
    return;
  }
  if (wait_active_ || state_ == ConnState::closed) return;
  wait_active_ = true;
  socket_.async_wait(tcp::socket::wait_read, [this](const std::error_code& ec) {
    wait_active_ = false;
    if (state_ == ConnState::closed) return;
    if (ec) {
      if (ec != asio::error::operation_aborted) fail("read: " + ec.message());
      return;
    }
    on_readable();
  });
}

void Conn::on_readable() {
  std::vector<char>& buf = eng_.read_buffer;
  for (int round = 0; round < kReadRounds; ++round) {
    std::error_code ec;
    const std::size_t n = socket_.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec) {
      if (state_ == ConnState::closing) {
        close_now();
        return;
      }
      fail(ec == asio::error::eof ? std::string("connection closed by the broker")
                                  : "read: " + ec.message());
      return;
    }
    read_ns_ = now_ns();
    const mqtt::Status s = framer_.feed(
        std::string_view(buf.data(), n),
        [this](std::uint8_t first, std::string_view body) { return on_packet(first, body); });
    if (state_ == ConnState::closed) return;
    if (!s.ok()) {
      fail(std::string("bad packet from the broker: ") + s.detail);
      return;
    }
    if (n < buf.size()) break;
  }
  after_read();
  wait_readable();
}

bool Conn::feed_mqtt(std::string_view bytes) {
  const mqtt::Status s = framer_.feed(
      bytes, [this](std::uint8_t first, std::string_view body) { return on_packet(first, body); });
  if (state_ == ConnState::closed) return false;
  if (!s.ok()) {
    fail(std::string("bad packet from the broker: ") + s.detail);
    return false;
  }
  return true;
}

mqtt::Status Conn::on_packet(std::uint8_t first, std::string_view body) {
  // The run failed while this read was being decoded: stop feeding the rest.
  if (state_ == ConnState::closed) return {ReasonCode::unspecified_error, "connection closed"};
  const auto type = static_cast<std::uint8_t>(first >> 4);
  switch (static_cast<mqtt::PacketType>(type)) {
    case mqtt::PacketType::publish:
      return on_publish(first, body);
    case mqtt::PacketType::puback:
    case mqtt::PacketType::pubrec:
    case mqtt::PacketType::pubrel:
    case mqtt::PacketType::pubcomp:
      return on_ack(type, body);
    default:
      return on_control(first, body);
  }
}

mqtt::Status Conn::on_publish(std::uint8_t first, std::string_view body) {
  const mqtt::Status malformed{ReasonCode::malformed_packet, "malformed PUBLISH"};
  if (role_ != Role::subscriber) return {ReasonCode::protocol_error, "unexpected PUBLISH"};
  const unsigned qos = (first >> 1) & 3u;
  if (qos == 3) return malformed;
  if (body.size() < 2) return malformed;
  const std::size_t topic_len = read_u16(body, 0);
  std::size_t pos = 2 + topic_len;
  if (pos > body.size()) return malformed;
  const std::string_view topic_name = body.substr(2, topic_len);
  std::uint16_t id = 0;
  if (qos > 0) {
    if (pos + 2 > body.size()) return malformed;
    id = read_u16(body, pos);
    pos += 2;
  }
  if (eng_.opt.version == ProtocolVersion::v5) {
    std::uint32_t len = 0;
    unsigned shift = 0;
    bool done = false;
    for (int i = 0; i < 4 && pos < body.size(); ++i) {
      const auto b = static_cast<std::uint8_t>(body[pos++]);
      len |= static_cast<std::uint32_t>(b & 0x7Fu) << shift;
      shift += 7;
      if ((b & 0x80u) == 0) {
        done = true;
        break;
      }
    }
    if (!done || len > body.size() - pos) return malformed;
    pos += len;
  }
  const std::string_view payload = body.substr(pos);

  if (qos == 1) append_ack(pending_, 0x40, id);
  if (qos == 2) append_ack(pending_, 0x50, id);

  const PayloadHeader h = read_payload_header(payload);
  if (h.kind == PayloadKind::probe) {
    if (!got_probe) {
      got_probe = true;
      eng_.on_probe(*this);
    }
    return mqtt::Status::success();
  }
  // A measured message: from a publisher of this subscriber's topic, a number it has sent.
  if (h.kind != PayloadKind::message || topic_name != topic->name ||
      h.publisher >= eng_.pubs.size() || eng_.pubs[h.publisher]->topic != topic ||
      h.sequence >= eng_.pubs[h.publisher]->seq) {
    ++eng_.invalid;
    return mqtt::Status::success();
  }
  ++received;
  eng_.last_delivery_ns = read_ns_;
  auto& tracker = trackers[h.publisher];
  if (!tracker) tracker = std::make_unique<SequenceTracker>();
  if (tracker->record(h.sequence) != Arrival::duplicate) {
    eng_.latency.record(read_ns_ > h.sent_ns ? read_ns_ - h.sent_ns : 0);
  }
  return mqtt::Status::success();
}

mqtt::Status Conn::on_ack(std::uint8_t type, std::string_view body) {
  if (body.size() < 2) return {ReasonCode::malformed_packet, "malformed acknowledgement"};
  const std::uint16_t id = read_u16(body, 0);
  const bool error = body.size() >= 3 && static_cast<std::uint8_t>(body[2]) >= 0x80;
  const auto t = static_cast<mqtt::PacketType>(type);
  if (t == mqtt::PacketType::pubrel) {
    if (role_ != Role::subscriber) return {ReasonCode::protocol_error, "unexpected PUBREL"};
    append_ack(pending_, 0x70, id);  // PUBCOMP
    return mqtt::Status::success();
  }
  if (role_ != Role::publisher || id_state_.empty()) {
    return {ReasonCode::protocol_error, "unexpected acknowledgement"};
  }
  const unsigned qos = eng_.opt.qos;
  std::uint8_t& st = id_state_[id];
  if (t == mqtt::PacketType::puback && qos == 1 && st == 1) {
    if (error) ++eng_.rejected;
  } else if (t == mqtt::PacketType::pubrec && qos == 2 && st == 1) {
    if (error) {
      ++eng_.rejected;
    } else {
      st = 2;
      append_ack(pending_, 0x62, id);  // PUBREL
      return mqtt::Status::success();
    }
  } else if (t == mqtt::PacketType::pubcomp && qos == 2 && st == 2) {
    // complete
  } else {
    return {ReasonCode::protocol_error, "acknowledgement for an unknown packet identifier"};
  }
  st = 0;
  --inflight;
  return mqtt::Status::success();
}

mqtt::Status Conn::on_control(std::uint8_t first, std::string_view body) {
  mqtt::Packet p;
  const mqtt::Status s = mqtt::decode(first, body, eng_.opt.version, p);
  if (!s.ok()) return s;
  if (const auto* ack = std::get_if<mqtt::Connack>(&p)) {
    if (state_ != ConnState::connack) return {ReasonCode::protocol_error, "unexpected CONNACK"};
    if (ack->code != 0) {
      fail("CONNACK refused the connection (code " + std::to_string(ack->code) + ")");
      return mqtt::Status::success();
    }
    if (ack->properties.server_keep_alive) keepalive_ = *ack->properties.server_keep_alive;
    if (keepalive_ > 0) eng_.any_keepalive = true;
    if (role_ == Role::subscriber) {
      mqtt::Subscribe sub;
      sub.packet_id = 1;
      mqtt::Subscription entry;
      entry.filter = topic->name;
      entry.qos = static_cast<std::uint8_t>(eng_.opt.qos);
      sub.subscriptions.push_back(entry);
      std::string out;
      if (!mqtt::encode(mqtt::Packet{sub}, eng_.opt.version, out)) {
        fail("cannot encode SUBSCRIBE");
        return mqtt::Status::success();
      }
      queue(out);
      state_ = ConnState::suback;
      return mqtt::Status::success();
    }
    if (role_ == Role::publisher) {
      if (!build_publish_templates()) {
        fail("cannot encode PUBLISH");
        return mqtt::Status::success();
      }
      if (eng_.opt.qos > 0) id_state_.assign(65536, 0);
    }
    state_ = ConnState::ready;
    eng_.on_conn_ready(*this);
    return mqtt::Status::success();
  }
  if (const auto* ack = std::get_if<mqtt::Suback>(&p)) {
    if (state_ != ConnState::suback || ack->packet_id != 1 || ack->reason_codes.size() != 1) {
      return {ReasonCode::protocol_error, "unexpected SUBACK"};
    }
    const auto code = static_cast<std::uint8_t>(ack->reason_codes[0]);
    if (code >= 0x80) {
      fail("SUBACK refused the subscription (code " + std::to_string(code) + ")");
      return mqtt::Status::success();
    }
    if (code != eng_.opt.qos) {
      std::fprintf(stderr, "brokerha-bench: %s: granted QoS %u instead of %u\n", name().c_str(),
                   static_cast<unsigned>(code), eng_.opt.qos);
    }
    state_ = ConnState::ready;
    eng_.on_conn_ready(*this);
    return mqtt::Status::success();
  }
  if (std::holds_alternative<mqtt::Pingresp>(p)) return mqtt::Status::success();
  if (const auto* d = std::get_if<mqtt::Disconnect>(&p)) {
    fail("DISCONNECT from the broker (reason " +
         std::to_string(static_cast<unsigned>(d->reason_code)) + ")");
    return mqtt::Status::success();
  }
  return {ReasonCode::protocol_error, "unexpected packet"};
}

// Encodes the PUBLISH every message is copied from (the payload header and, for QoS 1/2, the
// packet identifier are patched per message) and the QoS 0 probe.
bool Conn::build_publish_templates() {
  const std::string filler(eng_.opt.payload, 'x');
  mqtt::Publish pub;
  pub.qos = static_cast<std::uint8_t>(eng_.opt.qos);
  pub.topic = topic->name;
  pub.packet_id = eng_.opt.qos > 0 ? 1 : 0;
  pub.payload = filler;
  if (!mqtt::encode(mqtt::Packet{pub}, eng_.opt.version, template_)) return false;
  payload_offset_ = template_.size() - filler.size();
  id_offset_ = mqtt::publish_packet_id_offset(template_);
  pub.qos = 0;
  pub.packet_id = 0;
  if (!mqtt::encode(mqtt::Packet{pub}, eng_.opt.version, probe_template_)) return false;
  probe_payload_offset_ = probe_template_.size() - filler.size();
  return true;
}

void Conn::after_read() {
  if (role_ == Role::subscriber && topic != nullptr && topic->waiters) {
    if (topic->max_outstanding() <= eng_.opt.backlog / 2) {
      topic->waiters = false;
      for (Conn* p : topic->pubs) {
        if (p->waiting_backlog) {
          p->waiting_backlog = false;
          p->pump();
        }
      }
    }
  }
  if (role_ == Role::publisher) pump();
  flush();
}

void Conn::flush() {
  if (wrap_) {
    flush_wrapped();
    return;
  }
  if (write_active_ || pending_.empty() || state_ == ConnState::closed) return;
  writing_.swap(pending_);
  pending_.clear();
  write_active_ = true;
  last_write_ns_ = now_ns();
  asio::async_write(socket_, asio::buffer(writing_),
                    [this](const std::error_code& ec, std::size_t) { write_completed(ec); });
}

void Conn::write_completed(const std::error_code& ec) {
  write_active_ = false;
  writing_.clear();
  if (state_ == ConnState::closed) return;
  if (ec) {
    if (state_ == ConnState::closing) {
      close_now();
    } else if (ec != asio::error::operation_aborted) {
      fail("write: " + ec.message());
    }
    return;
  }
  on_written();
}

void Conn::on_written() {
  if (role_ == Role::publisher) pump();
  flush();
  if (state_ == ConnState::closing && write_idle()) {
    std::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    close_now();
  }
}

std::uint16_t Conn::allocate_id() {
  // inflight < 65535, so a free identifier exists and the loop ends within 65535 steps.
  for (;;) {
    const std::uint16_t id = next_id_;
    next_id_ = static_cast<std::uint16_t>(next_id_ == 65535 ? 1 : next_id_ + 1);
    if (id_state_[id] == 0) return id;
  }
}

void Conn::arm_rate_timer(std::uint64_t due_ns) {
  if (timer_armed_) return;
  timer_armed_ = true;
  const std::uint64_t now = now_ns();
  timer_.expires_after(std::chrono::nanoseconds(due_ns > now ? due_ns - now : 0));
  timer_.async_wait([this](const std::error_code& ec) {
    timer_armed_ = false;
    if (!ec) pump();
  });
}

void Conn::pump() {
  if (role_ != Role::publisher || state_ != ConnState::ready || eng_.phase != Phase::running) {
    return;
  }
  const Options& o = eng_.opt;
  const std::size_t packet = template_.size();
  std::uint64_t credit = kMaxPerPump;
  // Room in the pending buffer (at least one message when it is empty).
  const std::size_t room = pending_.size() >= kMaxPending
                               ? 0
                               : std::max<std::size_t>((kMaxPending - pending_.size()) / packet,
                                                       pending_.empty() ? 1 : 0);
  credit = std::min<std::uint64_t>(credit, room);
  if (credit == 0) return;  // the running write's completion pumps again
  if (o.qos > 0) {
    credit = std::min<std::uint64_t>(credit, o.inflight - inflight);
    if (credit == 0) return;  // an acknowledgement pumps again
  }
  const std::uint64_t now = now_ns();
  if (o.rate > 0) {
    const double interval = 1e9 / o.rate;
    const std::uint64_t due =
        now < rate_origin_ns
            ? 0
            : static_cast<std::uint64_t>(static_cast<double>(now - rate_origin_ns) / interval) + 1;
    if (due <= seq) {
      arm_rate_timer(rate_origin_ns +
                     static_cast<std::uint64_t>(static_cast<double>(seq) * interval));
      return;
    }
    credit = std::min(credit, due - seq);
  }
  // The backlog: a share of what the slowest subscriber of the topic can still take.
  const std::uint64_t out = topic->max_outstanding();
  if (out >= o.backlog) {
    waiting_backlog = true;
    topic->waiters = true;
    return;
  }
  const std::uint64_t n_pubs = topic->pubs.size();
  credit = std::min(credit, (o.backlog - out + n_pubs - 1) / n_pubs);

  for (std::uint64_t k = 0; k < credit; ++k) {
    const std::size_t at = pending_.size();
    pending_.append(template_);
    char* p = &pending_[at];
    if (o.qos > 0) {
      const std::uint16_t id = allocate_id();
      id_state_[id] = 1;
      ++inflight;
      p[id_offset_] = static_cast<char>(id >> 8);
      p[id_offset_ + 1] = static_cast<char>(id & 0xFF);
    }
    write_payload_header(p + payload_offset_, PayloadKind::message, index_, seq, now);
    ++seq;
    ++topic->sent;
  }
  if (o.rate > 0) {
    const double interval = 1e9 / o.rate;
    arm_rate_timer(rate_origin_ns +
                   static_cast<std::uint64_t>(static_cast<double>(seq) * interval));
  }
  flush();
}

void Conn::send_probe() {
  const std::size_t at = pending_.size();
  pending_.append(probe_template_);
  write_payload_header(&pending_[at] + probe_payload_offset_, PayloadKind::probe, index_, 0,
                       now_ns());
  flush();
}

void Conn::ping_if_due(std::uint64_t now) {
  if (keepalive_ == 0 || state_ != ConnState::ready) return;
  if (now - last_write_ns_ >= std::uint64_t{keepalive_} * 1'000'000'000 / 2) {
    queue(std::string_view("\xC0\x00", 2));
    flush();
  }
}

void Conn::close_gracefully() {
  if (state_ == ConnState::closed || state_ == ConnState::closing) return;
  if (state_ != ConnState::ready) {
    close_now();
    return;
  }
  timer_.cancel();
  if (eng_.opt.version == ProtocolVersion::v5) {
    queue(std::string_view("\xE0\x01\x00", 3));
  } else {
    queue(std::string_view("\xE0\x00", 2));
  }
  state_ = ConnState::closing;
  flush();
}

void Conn::close_now() {
  if (state_ == ConnState::closed) return;
  state_ = ConnState::closed;
  std::error_code ec;
  timer_.cancel();
  socket_.close(ec);
  eng_.on_conn_closed();
}

}  // namespace brokerha::bench
