// SPDX-License-Identifier: Apache-2.0
#pragma once
// A small blocking MQTT client over POSIX sockets, for tests that talk to a broker byte by
// byte: connect to 127.0.0.1:port, send raw bytes or packets encoded with mqtt::encode(),
// receive the next packet (framed with mqtt::Framer, decoded with mqtt::decode()), and notice
// that the server closed the connection (EOF or reset). Every wait is bounded by a timeout.
// Header-only.
//
//   brokerha::test::raw::Client c(brokerha::mqtt::ProtocolVersion::v5);
//   REQUIRE(c.open(port));
//   c.send_raw(raw::hex("10 0D 00 04 'MQTT' 05 02 00 3C 00 00 00"));
//   auto ack = c.receive();            // std::optional<raw::Incoming>; nullopt on timeout/EOF
//   CHECK(c.wait_closed());            // true once the server closed the connection
//
// Thread safety: a Client is used by one thread at a time.

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
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "support/packet_dump.hpp"

namespace brokerha::test::raw {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

/// The default bound of every wait.
constexpr Millis kDefaultTimeout{3000};

// ---- bytes ----------------------------------------------------------------------------------

/// Bytes from a hex listing: pairs of hex digits, whitespace ignored, text between single
/// quotes copied as is ("00 04 'MQTT' 05"). Throws std::invalid_argument on anything else.
inline std::string hex(std::string_view text) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  int high = -1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\t') continue;
    if (c == '\'') {
      const std::size_t end = text.find('\'', i + 1);
      if (high >= 0 || end == std::string_view::npos) throw std::invalid_argument("bad hex text");
      out.append(text.substr(i + 1, end - i - 1));
      i = end;
      continue;
    }
    const int d = digit(c);
    if (d < 0) throw std::invalid_argument("bad hex digit");
    if (high < 0) {
      high = d;
    } else {
      out.push_back(static_cast<char>((high << 4) | d));
      high = -1;
    }
  }
  if (high >= 0) throw std::invalid_argument("odd number of hex digits");
  return out;
}

/// "10 0C 00 04" (upper case), at most `limit` bytes then "...".
inline std::string to_hex(std::string_view bytes, std::size_t limit = 64) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < limit; ++i) {
    if (i != 0) out += ' ';
    const auto b = static_cast<unsigned char>(bytes[i]);
    out += kDigits[b >> 4];
    out += kDigits[b & 0x0F];
  }
  if (bytes.size() > limit) out += " ...";
  return out;
}

/// A two-byte length prefix and the bytes (an MQTT string or binary data).
inline std::string str(std::string_view s) {
  std::string out;
  out.push_back(static_cast<char>((s.size() >> 8) & 0xFF));
  out.push_back(static_cast<char>(s.size() & 0xFF));
  out.append(s);
  return out;
}

/// A big-endian 16-bit integer.
inline std::string u16(std::uint16_t v) {
  return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xFF)};
}

/// An MQTT 5.0 property section: the variable byte integer length, then `raw`.
inline std::string props(std::string_view raw = {}) {
  std::string out;
  mqtt::append_varint(out, static_cast<std::uint32_t>(raw.size()));
  out.append(raw);
  return out;
}

/// A whole packet: `first` byte, the remaining length, `body`.
inline std::string frame(std::uint8_t first, std::string_view body) {
  std::string out(1, static_cast<char>(first));
  mqtt::append_varint(out, static_cast<std::uint32_t>(body.size()));
  out.append(body);
  return out;
}

/// The encoding of `packet` for `version`; throws when it cannot be encoded.
inline std::string encode(const mqtt::Packet& packet, mqtt::ProtocolVersion version) {
  std::string out;
  if (!mqtt::encode(packet, version, out)) throw std::invalid_argument("packet not encodable");
  return out;
}

// ---- waiting --------------------------------------------------------------------------------

/// Polls `pred` every `step` until it returns true or `timeout` passes; returns its last value.
template <class Pred>
bool wait_until(Pred&& pred, Millis timeout = kDefaultTimeout, Millis step = Millis(10)) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(step);
  }
}

// ---- packets received -------------------------------------------------------------------------

/// One packet received: its raw bytes and, when they decode, the packet (whose views point
/// into `body`, which stays put when an Incoming is moved).
struct Incoming {
  std::uint8_t first = 0;
  std::shared_ptr<const std::string> body = std::make_shared<std::string>();
  mqtt::Packet packet;
  mqtt::Status status;  // the result of decoding

  mqtt::PacketType type() const noexcept { return static_cast<mqtt::PacketType>(first >> 4); }
  bool is(mqtt::PacketType t) const noexcept { return status.ok() && type() == t; }
  template <class T>
  const T* get() const noexcept {
    return status.ok() ? std::get_if<T>(&packet) : nullptr;
  }
  /// The decoded packet (packet_dump form), or the raw bytes and the decoding error.
  std::string describe() const {
    if (status.ok()) return dump(packet);
    std::string raw(1, static_cast<char>(first));
    mqtt::append_varint(raw, static_cast<std::uint32_t>(body->size()));
    raw += *body;
    return "undecodable [" + to_hex(raw) + "]: " + status.detail;
  }
};

/// Describes an optional packet for failure messages.
inline std::string describe(const std::optional<Incoming>& p) {
  return p ? p->describe() : std::string("(nothing: timeout or closed)");
}

// ---- the client -----------------------------------------------------------------------------

class Client {
 public:
  explicit Client(mqtt::ProtocolVersion version = mqtt::ProtocolVersion::v5) : version_(version) {}
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// The version packets are encoded and decoded with (a CONNECT carries its own).
  mqtt::ProtocolVersion version() const noexcept { return version_; }
  void set_version(mqtt::ProtocolVersion v) noexcept { version_ = v; }

  /// Connects to 127.0.0.1:`port`. `receive_buffer` > 0 sets SO_RCVBUF first (a small one
  /// makes a client that never reads fill up quickly). False on failure (see error()).
  bool open(std::uint16_t port, Millis timeout = kDefaultTimeout, int receive_buffer = 0) {
    close();
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return fail_errno("socket");
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      if (errno != EINPROGRESS) return fail_errno("connect");
      if (!wait_for(POLLOUT, Clock::now() + timeout)) {
        error_ = "connect: timed out";
        close();
        return false;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        errno = err;
        return fail_errno("connect");
      }
    }
    eof_ = false;
    reset_ = false;
    broken_ = false;
    framer_ = mqtt::Framer();
    frames_.clear();
    error_.clear();
    return true;
  }

  bool is_open() const noexcept { return fd_ >= 0; }
  int fd() const noexcept { return fd_; }
  const std::string& error() const noexcept { return error_; }

  /// Closes our end (idempotent).
  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  /// Sends `bytes`, waiting at most `timeout` for the socket to accept them. False when the
  /// peer is gone or the time ran out (error() says which).
  bool send_raw(std::string_view bytes, Millis timeout = kDefaultTimeout) {
    if (fd_ < 0) {
      error_ = "send: not open";
      return false;
    }
    const auto deadline = Clock::now() + timeout;
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        bytes.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait_for(POLLOUT, deadline)) {
          error_ = "send: timed out";
          return false;
        }
        continue;
      }
      error_ = std::string("send: ") + std::strerror(errno);
      return false;
    }
    return true;
  }

  /// Sends `bytes` one byte per write, `pace` apart (a peer must reassemble the packet).
  bool send_bytewise(std::string_view bytes, Millis pace = Millis(1)) {
    for (char c : bytes) {
      if (!send_raw(std::string_view(&c, 1))) return false;
      std::this_thread::sleep_for(pace);
    }
    return true;
  }

  /// Encodes `packet` with version() and sends it.
  bool send(const mqtt::Packet& packet, Millis timeout = kDefaultTimeout) {
    std::string bytes;
    if (!mqtt::encode(packet, version_, bytes)) {
      error_ = "send: packet not encodable";
      return false;
    }
    return send_raw(bytes, timeout);
  }

  /// The next packet, decoded with version(); nullopt when none arrives within `timeout` or
  /// the connection ended first (closed() then says so). A packet that does not decode is
  /// returned with its status.
  std::optional<Incoming> receive(Millis timeout = kDefaultTimeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (!frames_.empty()) {
        Incoming in = std::move(frames_.front());
        frames_.pop_front();
        in.status = mqtt::decode(in.first, *in.body, version_, in.packet);
        return in;
      }
      if (eof_ || broken_ || fd_ < 0) return std::nullopt;
      if (!fill(deadline)) return std::nullopt;
    }
  }

  /// The next packet of type `type`, skipping others (PINGRESP, other messages); nullopt on
  /// timeout or close. Skipped packets are appended to `skipped` when given.
  std::optional<Incoming> receive_type(mqtt::PacketType type, Millis timeout = kDefaultTimeout,
                                       std::vector<Incoming>* skipped = nullptr) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
      auto in = receive(left.count() > 0 ? left : Millis(0));
      if (!in) return std::nullopt;
      if (in->type() == type) return in;
      if (skipped != nullptr) skipped->push_back(std::move(*in));
    }
  }

  /// Reads (and keeps, in `seen` when given) whatever arrives until the server closes the
  /// connection; true when it did within `timeout`, or had already. False when it did not,
  /// or when our end is not open.
  bool wait_closed(Millis timeout = kDefaultTimeout, std::vector<Incoming>* seen = nullptr) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      while (!frames_.empty()) {
        Incoming in = std::move(frames_.front());
        frames_.pop_front();
        in.status = mqtt::decode(in.first, *in.body, version_, in.packet);
        if (seen != nullptr) seen->push_back(std::move(in));
      }
      if (eof_) return true;
      if (fd_ < 0) return false;
      if (!fill(deadline)) {
        if (eof_) return true;
        if (Clock::now() >= deadline) return false;
      }
    }
  }

  /// True once the server's end of the connection was seen (EOF or reset).
  bool closed() const noexcept { return eof_; }
  /// True when the end was a reset (RST) rather than an orderly EOF.
  bool was_reset() const noexcept { return reset_; }
  /// True when the server's bytes did not frame as MQTT (error() says how).
  bool broken() const noexcept { return broken_; }
  /// Bytes received in total (framed or not).
  std::size_t bytes_received() const noexcept { return bytes_received_; }

  // ---- conveniences for well-behaved clients ----

  /// A CONNECT for this client's version, clean start, with `client_id` and `keep_alive`.
  mqtt::Connect connect_packet(std::string_view client_id, std::uint16_t keep_alive = 30) const {
    mqtt::Connect c;
    c.version = version_;
    c.client_id = client_id;
    c.keep_alive = keep_alive;
    c.clean_start = true;
    return c;
  }

  /// Sends `c` and returns the packet that answers it (normally CONNACK).
  std::optional<Incoming> handshake(const mqtt::Connect& c, Millis timeout = kDefaultTimeout) {
    if (!send(mqtt::Packet(c), timeout)) return std::nullopt;
    return receive(timeout);
  }

  /// SUBSCRIBE to one filter; returns the answer (normally SUBACK).
  std::optional<Incoming> subscribe(std::string_view filter, std::uint8_t qos,
                                    std::uint16_t packet_id = 1, Millis timeout = kDefaultTimeout) {
    mqtt::Subscribe s;
    s.packet_id = packet_id;
    mqtt::Subscription sub;
    sub.filter = filter;
    sub.qos = qos;
    s.subscriptions.push_back(sub);
    if (!send(mqtt::Packet(s), timeout)) return std::nullopt;
    return receive_type(mqtt::PacketType::suback, timeout);
  }

  /// PUBLISH `payload` to `topic` (no answer awaited).
  bool publish(std::string_view topic, std::string_view payload, std::uint8_t qos = 0,
               std::uint16_t packet_id = 0, Millis timeout = kDefaultTimeout) {
    mqtt::Publish p;
    p.topic = topic;
    p.payload = payload;
    p.qos = qos;
    p.packet_id = qos > 0 ? packet_id : 0;
    return send(mqtt::Packet(p), timeout);
  }

 private:
  bool fail_errno(const char* what) {
    error_ = std::string(what) + ": " + std::strerror(errno);
    close();
    return false;
  }

  // Waits for `events` on the socket until `deadline`; true when ready (or in error/hang-up,
  // which the following call reports).
  bool wait_for(short events, Clock::time_point deadline) {
    for (;;) {
      const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
      pollfd p{fd_, events, 0};
      const int r = ::poll(&p, 1, left > 0 ? static_cast<int>(left) : 0);
      if (r > 0) return true;
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
  }

  // Reads what is available (waiting until `deadline`) into the framer. False on timeout, at
  // the end of the stream (eof_ set) or when the server's bytes do not frame.
  bool fill(Clock::time_point deadline) {
    if (!wait_for(POLLIN, deadline)) return false;
    char buffer[65536];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n == 0) {
      eof_ = true;
      return false;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
      eof_ = true;
      reset_ = errno == ECONNRESET;
      return false;
    }
    bytes_received_ += static_cast<std::size_t>(n);
    if (broken_) return true;  // the stream lost its framing: discard until the end
    const mqtt::Status s = framer_.feed(std::string_view(buffer, static_cast<std::size_t>(n)),
                                        [this](std::uint8_t first, std::string_view body) {
                                          Incoming in;
                                          in.first = first;
                                          in.body = std::make_shared<std::string>(body);
                                          frames_.push_back(std::move(in));
                                          return mqtt::Status::success();
                                        });
    if (!s.ok()) {
      broken_ = true;
      error_ = std::string("server bytes do not frame: ") + s.detail;
      return false;
    }
    return true;
  }

  mqtt::ProtocolVersion version_;
  int fd_ = -1;
  bool eof_ = false;
  bool reset_ = false;
  bool broken_ = false;  // the server's bytes did not frame (error() says how)
  std::size_t bytes_received_ = 0;
  mqtt::Framer framer_;
  std::deque<Incoming> frames_;
  std::string error_;
};

}  // namespace brokerha::test::raw
