// SPDX-License-Identifier: Apache-2.0
#pragma once
// A small blocking MQTT client for broker integration tests, built on brokerha's own codec
// (mqtt::encode / Framer / decode). It does exactly what the test says and nothing else: no
// automatic acknowledgements, no keep alive, no reconnect. So a test can leave a QoS 2
// PUBLISH unacknowledged, drop the connection without DISCONNECT, exceed a receive maximum or
// never send CONNECT. Header-only, POSIX sockets, 127.0.0.1 only.
//
//   MqttClient c(mqtt::ProtocolVersion::v5);
//   REQUIRE(c.open(port));
//   auto ack = c.connect(make_connect(c.version(), "id"));   // the CONNACK, or nullopt
//   c.subscribe({{"a/#", 1}});
//   auto p = c.await<mqtt::Publish>();                         // next PUBLISH (others stashed)
//   auto before = c.ping();                                    // what arrived before PINGRESP
//
// Packets received while waiting for a particular one are stashed and returned, in order, by
// later receive() / await() calls. A received packet owns its bytes (Received::body), so its
// string_views stay valid as long as the Received lives.
//
// Thread safety: none; one thread uses a client.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "support/packet_dump.hpp"

namespace brokerha::test {

/// One packet received from the broker.
struct Received {
  std::uint8_t first = 0;             // fixed header byte 0 (type and flags)
  std::unique_ptr<std::string> body;  // the packet's strings point into it
  mqtt::Packet packet;

  mqtt::PacketType type() const noexcept { return mqtt::packet_type(packet); }
  template <class T>
  const T* as() const noexcept {
    return std::get_if<T>(&packet);
  }
  template <class T>
  bool is() const noexcept {
    return std::holds_alternative<T>(packet);
  }
  std::string describe() const { return dump(packet); }
};

/// The packets of `list`, one per line (for doctest INFO).
inline std::string describe(const std::vector<Received>& list) {
  std::string s;
  for (const Received& r : list) s += r.describe() + "\n";
  return s.empty() ? "<none>" : s;
}

/// The PUBLISH packets of `list`.
inline std::vector<const mqtt::Publish*> publishes(const std::vector<Received>& list) {
  std::vector<const mqtt::Publish*> out;
  for (const Received& r : list) {
    if (const auto* p = r.as<mqtt::Publish>()) out.push_back(p);
  }
  return out;
}

/// A CONNECT for `id` (the view must outlive the packet's use).
inline mqtt::Connect make_connect(mqtt::ProtocolVersion v, std::string_view id, bool clean = true,
                                  std::uint16_t keep_alive = 60) {
  mqtt::Connect c;
  c.version = v;
  c.client_id = id;
  c.clean_start = clean;
  c.keep_alive = keep_alive;
  return c;
}

/// A PUBLISH (packet id 0: MqttClient::publish() assigns one for QoS 1/2).
inline mqtt::Publish make_publish(std::string_view topic, std::string_view payload,
                                  std::uint8_t qos = 0, bool retain = false) {
  mqtt::Publish p;
  p.topic = topic;
  p.payload = payload;
  p.qos = qos;
  p.retain = retain;
  return p;
}

class MqttClient {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kDefaultTimeout{3000};

  explicit MqttClient(mqtt::ProtocolVersion version = mqtt::ProtocolVersion::v311)
      : version_(version) {}
  ~MqttClient() { close(); }
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  mqtt::ProtocolVersion version() const noexcept { return version_; }
  void set_version(mqtt::ProtocolVersion v) noexcept { version_ = v; }
  /// Why the last operation failed ("" when none did): connect, send, framing or decoding.
  const std::string& error() const noexcept { return error_; }
  /// The broker closed the connection (EOF or reset).
  bool eof() const noexcept { return eof_; }
  bool is_open() const noexcept { return fd_ >= 0; }

  /// Opens a TCP connection to 127.0.0.1:`port`; closes any previous one first.
  bool open(std::uint16_t port) {
    close();
    eof_ = false;
    error_.clear();
    stash_.clear();
    framer_ = mqtt::Framer();
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return fail_errno("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      fail_errno("connect");
      close();
      return false;
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return true;
  }

  /// Closes the socket without DISCONNECT (an abrupt network loss, as far as MQTT knows).
  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  /// Closes with a TCP reset instead of a FIN (SO_LINGER 0).
  void reset() noexcept {
    if (fd_ < 0) return;
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }

  /// Encodes and writes `packet`. False when it could not be encoded or written.
  bool send(const mqtt::Packet& packet) {
    std::string bytes;
    if (!mqtt::encode(packet, version_, bytes)) {
      error_ = "encode failed: " + dump(packet);
      return false;
    }
    return send_bytes(bytes);
  }

  /// Writes raw bytes.
  bool send_bytes(std::string_view bytes) {
    if (fd_ < 0) {
      error_ = "send on a closed client";
      return false;
    }
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail_errno("send");
      }
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  /// The next packet (stashed ones first), or nullopt on timeout, EOF or a decoding error.
  std::optional<Received> receive(std::chrono::milliseconds timeout = kDefaultTimeout) {
    return await_if([](const Received&) { return true; }, timeout);
  }

  /// The next packet of type T; packets of other types are stashed.
  template <class T>
  std::optional<Received> await(std::chrono::milliseconds timeout = kDefaultTimeout) {
    return await_if([](const Received& r) { return r.is<T>(); }, timeout);
  }

  /// The next packet for which `match` holds; others are stashed.
  std::optional<Received> await_if(const std::function<bool(const Received&)>& match,
                                   std::chrono::milliseconds timeout = kDefaultTimeout) {
    for (auto it = stash_.begin(); it != stash_.end(); ++it) {
      if (match(*it)) {
        Received r = std::move(*it);
        stash_.erase(it);
        return r;
      }
    }
    const auto deadline = Clock::now() + timeout;
    while (true) {
      const std::size_t before = stash_.size();
      if (!read_some(deadline)) return std::nullopt;
      for (std::size_t i = before; i < stash_.size(); ++i) {
        if (match(stash_[i])) {
          Received r = std::move(stash_[i]);
          stash_.erase(stash_.begin() + static_cast<std::ptrdiff_t>(i));
          return r;
        }
      }
    }
  }

  /// Every packet that arrives until the broker closes the connection, or nullopt when it is
  /// still open after `timeout`.
  std::optional<std::vector<Received>> wait_closed(
      std::chrono::milliseconds timeout = kDefaultTimeout) {
    const auto deadline = Clock::now() + timeout;
    while (!eof_) {
      if (!read_some(deadline) && !eof_) return std::nullopt;
    }
    std::vector<Received> all;
    for (Received& r : stash_) all.push_back(std::move(r));
    stash_.clear();
    return all;
  }

  /// Sends PINGREQ and returns every packet received before the PINGRESP (stashed ones
  /// included), or nullopt when no PINGRESP came. Everything the broker queued for this
  /// client before it read the PINGREQ is in the result.
  std::optional<std::vector<Received>> ping(std::chrono::milliseconds timeout = kDefaultTimeout) {
    if (!send(mqtt::Pingreq{})) return std::nullopt;
    if (!await<mqtt::Pingresp>(timeout)) return std::nullopt;
    std::vector<Received> before;
    for (Received& r : stash_) before.push_back(std::move(r));
    stash_.clear();
    return before;
  }

  /// Sends CONNECT and returns the CONNACK (nullopt: none came).
  std::optional<Received> connect(const mqtt::Connect& c,
                                  std::chrono::milliseconds timeout = kDefaultTimeout) {
    mqtt::Connect copy = c;
    copy.version = version_;
    if (!send(copy)) return std::nullopt;
    return await<mqtt::Connack>(timeout);
  }

  /// open() + connect(): the CONNACK's code, or -1 when there was none.
  int open_and_connect(std::uint16_t port, const mqtt::Connect& c) {
    if (!open(port)) return -1;
    const auto ack = connect(c);
    return ack ? ack->as<mqtt::Connack>()->code : -1;
  }

  /// Sends SUBSCRIBE and returns the SUBACK.
  std::optional<Received> subscribe(std::vector<mqtt::Subscription> subs,
                                    const mqtt::Properties& properties = {},
                                    std::chrono::milliseconds timeout = kDefaultTimeout) {
    mqtt::Subscribe s;
    s.packet_id = next_packet_id();
    s.subscriptions = std::move(subs);
    s.properties = properties;
    if (!send(s)) return std::nullopt;
    const std::uint16_t id = s.packet_id;
    return await_if(
        [id](const Received& r) {
          const auto* a = r.as<mqtt::Suback>();
          return a != nullptr && a->packet_id == id;
        },
        timeout);
  }

  /// One filter at one QoS; true when the SUBACK grants exactly that QoS.
  bool subscribe(std::string_view filter, std::uint8_t qos) {
    mqtt::Subscription sub;
    sub.filter = filter;
    sub.qos = qos;
    const auto ack = subscribe({sub});
    if (!ack) return false;
    const auto& codes = ack->as<mqtt::Suback>()->reason_codes;
    return codes.size() == 1 && static_cast<std::uint8_t>(codes[0]) == qos;
  }

  /// Publishes `p` and completes its flow: QoS 0 returns nullopt at once; QoS 1 waits for
  /// the PUBACK and returns it; QoS 2 waits for the PUBREC, then (unless it refused the
  /// message) sends PUBREL, waits for the PUBCOMP, and returns the PUBREC. A packet id of 0
  /// is replaced by the next free one.
  std::optional<Received> publish(mqtt::Publish p,
                                  std::chrono::milliseconds timeout = kDefaultTimeout) {
    if (p.qos > 0 && p.packet_id == 0) p.packet_id = next_packet_id();
    if (!send(p) || p.qos == 0) return std::nullopt;
    const std::uint16_t id = p.packet_id;
    if (p.qos == 1) return await_ack<mqtt::Puback>(id, timeout);
    auto rec = await_ack<mqtt::Pubrec>(id, timeout);
    if (!rec || static_cast<std::uint8_t>(rec->as<mqtt::Pubrec>()->reason_code) >= 0x80) {
      return rec;
    }
    mqtt::Pubrel rel;
    rel.packet_id = id;
    if (!send(rel) || !await_ack<mqtt::Pubcomp>(id, timeout)) return std::nullopt;
    return rec;
  }

  /// Waits for the acknowledgement of type T carrying `packet_id`.
  template <class T>
  std::optional<Received> await_ack(std::uint16_t packet_id,
                                    std::chrono::milliseconds timeout = kDefaultTimeout) {
    return await_if(
        [packet_id](const Received& r) {
          const auto* a = r.as<T>();
          return a != nullptr && a->packet_id == packet_id;
        },
        timeout);
  }

  /// Acknowledges a received QoS 1/2 PUBLISH completely (PUBACK, or PUBREC / PUBREL /
  /// PUBCOMP). False when the QoS 2 exchange did not complete.
  bool acknowledge(const mqtt::Publish& p, std::chrono::milliseconds timeout = kDefaultTimeout) {
    if (p.qos == 1) {
      mqtt::Puback a;
      a.packet_id = p.packet_id;
      return send(a);
    }
    if (p.qos == 2) {
      mqtt::Pubrec rec;
      rec.packet_id = p.packet_id;
      if (!send(rec) || !await_ack<mqtt::Pubrel>(p.packet_id, timeout)) return false;
      mqtt::Pubcomp comp;
      comp.packet_id = p.packet_id;
      return send(comp);
    }
    return true;
  }

  /// Sends DISCONNECT (v5: with `reason`) and closes the socket.
  void disconnect(ReasonCode reason = ReasonCode::success, const mqtt::Properties& props = {}) {
    mqtt::Disconnect d;
    d.reason_code = reason;
    d.properties = props;
    send(d);
    // Wait for the broker to close, so that the DISCONNECT is processed before the test goes
    // on (bounded: a broker that keeps the connection open is reported by the test's checks).
    wait_closed(std::chrono::milliseconds(2000));
    close();
  }

  std::uint16_t next_packet_id() noexcept {
    next_id_ = static_cast<std::uint16_t>(next_id_ == 65535 ? 1 : next_id_ + 1);
    return next_id_;
  }

 private:
  // Reads and decodes what arrives before `deadline` into the stash. False on timeout, EOF
  // or an error (then eof_ / error_ tell which).
  bool read_some(Clock::time_point deadline) {
    if (fd_ < 0 || eof_) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0) return errno == EINTR;
    if (n == 0) return false;
    char buf[64 * 1024];
    const ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
    if (got == 0 || (got < 0 && (errno == ECONNRESET || errno == EPIPE))) {
      eof_ = true;
      return false;
    }
    if (got < 0) return errno == EINTR || errno == EAGAIN ? true : fail_errno("recv");
    const mqtt::Status s = framer_.feed(std::string_view(buf, static_cast<std::size_t>(got)),
                                        [this](std::uint8_t first, std::string_view body) {
                                          Received r;
                                          r.first = first;
                                          r.body = std::make_unique<std::string>(body);
                                          const mqtt::Status d =
                                              mqtt::decode(first, *r.body, version_, r.packet);
                                          if (d.ok()) stash_.push_back(std::move(r));
                                          return d;
                                        });
    if (!s.ok()) {
      error_ = std::string("cannot decode the broker's packet: ") + s.detail;
      eof_ = true;  // the stream has lost its framing
      return false;
    }
    return true;
  }

  bool fail_errno(const char* what) {
    error_ = std::string(what) + ": " + std::strerror(errno);
    return false;
  }

  mqtt::ProtocolVersion version_;
  int fd_ = -1;
  bool eof_ = false;
  std::string error_;
  mqtt::Framer framer_;
  std::deque<Received> stash_;
  std::uint16_t next_id_ = 0;
};

}  // namespace brokerha::test
