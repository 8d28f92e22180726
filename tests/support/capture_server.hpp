// SPDX-License-Identifier: Apache-2.0
#pragma once
// A capture server for interoperability tests: a minimal MQTT "broker" on 127.0.0.1 (port 0)
// that records every byte real clients send, frames the stream with brokerha::mqtt::Framer,
// decodes each packet with brokerha::mqtt::decode (the protocol version learned from
// CONNECT), and answers with brokerha::mqtt::encode just enough for the client to proceed:
// CONNACK, SUBACK granting the requested QoS (optionally followed by one PUBLISH), UNSUBACK,
// PUBACK / PUBREC+PUBCOMP, PUBREL for its own QoS 2 PUBLISH, PINGRESP; it closes the
// connection after DISCONNECT, at end of stream, or at the first framing/decoding error.
//
// Header-only, POSIX sockets, no Asio: one thread runs a poll() loop over the listening
// socket, the accepted connections and a wake-up pipe.
//
// Thread safety: the server thread owns open sessions. A session is handed to the test only
// once it is closed (wait_closed()), after which nothing modifies it, so the test reads it
// without locks.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
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

namespace brokerha::test {

/// One packet as a client sent it, and what brokerha's decoder made of it.
struct CapturedPacket {
  std::string wire;  // the whole packet: fixed header and body
  std::uint8_t first_byte = 0;
  std::string_view body;  // the remaining-length bytes, inside `wire`
  mqtt::Packet packet;    // decoded; its strings point into `wire`
  mqtt::Status status;    // the decoder's verdict

  CapturedPacket() = default;
  CapturedPacket(const CapturedPacket&) = delete;  // `packet` points into `wire`
  CapturedPacket& operator=(const CapturedPacket&) = delete;

  mqtt::PacketType type() const noexcept { return mqtt::packet_type(packet); }
};

/// Everything one client connection sent.
struct CapturedSession {
  std::string bytes;                             // the raw stream, in order, exactly as received
  std::optional<mqtt::ProtocolVersion> version;  // from the CONNECT
  std::vector<std::unique_ptr<CapturedPacket>> packets;  // decoded ones (and the failing one)
  mqtt::Status error;  // first framing or decoding error; ok() when none
  bool error_seen = false;
  bool got_disconnect = false;               // the client sent DISCONNECT
  bool incomplete_tail = false;              // the stream ended inside a packet
  std::vector<std::string> encode_failures;  // replies our encoder refused (test bug)
  std::string sent;                          // every byte the server sent to the client

  /// Packets of type T, in order.
  template <class T>
  std::vector<const T*> all() const {
    std::vector<const T*> found;
    for (const auto& p : packets) {
      if (const T* t = std::get_if<T>(&p->packet)) found.push_back(t);
    }
    return found;
  }
  /// The first packet of type T, or nullptr.
  template <class T>
  const T* first() const {
    for (const auto& p : packets) {
      if (const T* t = std::get_if<T>(&p->packet)) return t;
    }
    return nullptr;
  }
  /// "CONNECT PUBLISH DISCONNECT": the packet types in order, for sequence checks.
  std::string sequence() const {
    std::string s;
    for (const auto& p : packets) {
      if (!s.empty()) s += ' ';
      s += std::string(mqtt::packet_type_name(p->type()));
    }
    return s;
  }
  /// A multi-line description (for doctest INFO when a check fails).
  std::string describe() const {
    std::string s = "packets: " + sequence();
    for (const auto& p : packets) {
      s += "\n  " + (p->status.ok() ? dump(p->packet) : std::string("error: ") + p->status.detail);
    }
    s += "\nbytes:";
    static const char* hex = "0123456789abcdef";
    for (std::size_t i = 0; i < bytes.size() && i < 2048; ++i) {
      const auto b = static_cast<unsigned char>(bytes[i]);
      s += ' ';
      s += hex[b >> 4];
      s += hex[b & 0x0F];
    }
    if (error_seen) s += std::string("\nerror: ") + error.detail;
    for (const std::string& f : encode_failures) s += "\nencode failure: " + f;
    return s;
  }
};

/// A PUBLISH the server sends to a client once it subscribed (e.g. so that
/// `mosquitto_sub -C 1` receives one message and exits): right after the SUBACK of the first
/// SUBSCRIBE, or after the n-th UNSUBACK when CaptureOptions::publish_after_unsubacks is n.
struct OutgoingPublish {
  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool retain = false;
  // MQTT 5.0 properties (ignored for 3.x). The SUBSCRIBE's subscription identifier, if any,
  // is echoed as a broker would.
  std::optional<std::uint8_t> payload_format_indicator;
  std::optional<std::uint32_t> message_expiry_interval;
  std::optional<std::string> content_type;
  std::optional<std::string> response_topic;
  std::optional<std::string> correlation_data;
  std::vector<std::pair<std::string, std::string>> user_properties;
};

struct CaptureOptions {
  // MQTT 5.0 CONNACK properties.
  std::uint16_t receive_maximum = 20;
  std::uint16_t topic_alias_maximum = 10;  // clients may use topic aliases 1..10
  std::optional<OutgoingPublish> publish_to_subscriber;
  // When > 0, send publish_to_subscriber after this many UNSUBACKs instead of after the
  // SUBACK. For a client that unsubscribes right after subscribing and exits on its first
  // message without reading the UNSUBACKs: had they been in flight when it closed, its
  // kernel would answer them with a reset, which discards the client's last packets
  // (PUBACK, DISCONNECT) from our receive queue before we read them.
  std::size_t publish_after_unsubacks = 0;
};

class CaptureServer {
 public:
  explicit CaptureServer(CaptureOptions options = {}) : options_(std::move(options)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) throw std::runtime_error(errno_text("socket"));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;  // the kernel picks a free port
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        ::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
      const std::string what = errno_text("bind/listen/getsockname/pipe2");
      ::close(listen_fd_);
      throw std::runtime_error(what);
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { run(); });
  }

  ~CaptureServer() {
    stop_.store(true);
    const char b = 0;
    [[maybe_unused]] const ssize_t n = ::write(wake_[1], &b, 1);
    thread_.join();
    for (Conn& c : conns_) ::close(c.fd);
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  CaptureServer(const CaptureServer&) = delete;
  CaptureServer& operator=(const CaptureServer&) = delete;

  std::uint16_t port() const noexcept { return port_; }
  std::string port_string() const { return std::to_string(port_); }

  /// Waits until `n` connections have closed and returns the closed sessions in the order
  /// they were accepted; fewer if `timeout` passes first.
  std::vector<std::shared_ptr<const CapturedSession>> wait_closed(
      std::size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return closed_count_ >= n; });
    std::vector<std::shared_ptr<const CapturedSession>> out;
    for (const Entry& e : sessions_) {
      if (e.closed) out.push_back(e.session);
    }
    return out;
  }

  /// Connections accepted so far.
  std::size_t accepted() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return sessions_.size();
  }

 private:
  struct Conn {
    int fd = -1;
    std::size_t index = 0;  // into sessions_
    std::shared_ptr<CapturedSession> session;
    std::unique_ptr<mqtt::Framer> framer;
    bool published = false;  // sent the OutgoingPublish already
    bool subscribed = false;
    std::size_t unsubacks = 0;
    std::vector<std::uint32_t> subscription_ids;  // of the first SUBSCRIBE, echoed
    bool close = false;
  };
  struct Entry {
    std::shared_ptr<CapturedSession> session;
    bool closed = false;
  };

  static std::string errno_text(const char* what) {
    return std::string(what) + ": " + std::strerror(errno);
  }

  void run() {
    while (!stop_.load()) {
      std::vector<pollfd> fds;
      fds.push_back({wake_[0], POLLIN, 0});
      fds.push_back({listen_fd_, POLLIN, 0});
      for (const Conn& c : conns_) fds.push_back({c.fd, POLLIN, 0});
      const int n = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), 1000);
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (stop_.load()) break;
      if (fds[1].revents & POLLIN) accept_one();
      // conns_ may have grown in accept_one(); only the polled ones have revents.
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].revents != 0) read_from(conns_[i - 2]);
      }
      for (std::size_t i = conns_.size(); i-- > 0;) {
        if (conns_[i].close) {
          finish(conns_[i]);
          conns_.erase(conns_.begin() + static_cast<std::ptrdiff_t>(i));
        }
      }
    }
  }

  void accept_one() {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn c;
    c.fd = fd;
    c.session = std::make_shared<CapturedSession>();
    c.framer = std::make_unique<mqtt::Framer>();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      c.index = sessions_.size();
      sessions_.push_back({c.session, false});
    }
    conns_.push_back(std::move(c));
  }

  void finish(Conn& c) {
    ::shutdown(c.fd, SHUT_RDWR);
    ::close(c.fd);
    c.fd = -1;
    if (!c.framer->idle()) c.session->incomplete_tail = true;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sessions_[c.index].closed = true;
      ++closed_count_;
    }
    cv_.notify_all();
  }

  void read_from(Conn& c) {
    char buf[16384];
    const ssize_t got = ::recv(c.fd, buf, sizeof buf, 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (got <= 0) {
      c.close = true;  // end of stream or reset
      return;
    }
    const std::string_view data(buf, static_cast<std::size_t>(got));
    CapturedSession& s = *c.session;
    s.bytes.append(data);
    std::string reply;
    const mqtt::Status st = c.framer->feed(data, [&](std::uint8_t first, std::string_view body) {
      return on_packet(c, first, body, reply);
    });
    if (!st.ok() && !s.error_seen) {
      s.error = st;
      s.error_seen = true;
    }
    if (!reply.empty()) {
      send_all(c.fd, reply);
      s.sent += reply;
    }
    if (!st.ok() || s.got_disconnect) c.close = true;
  }

  static void send_all(int fd, std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // the client went away; it is recorded when the read fails
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  mqtt::Status on_packet(Conn& c, std::uint8_t first, std::string_view body, std::string& reply) {
    using namespace brokerha::mqtt;
    CapturedSession& s = *c.session;
    auto cp = std::make_unique<CapturedPacket>();
    cp->wire.push_back(static_cast<char>(first));
    append_varint(cp->wire, static_cast<std::uint32_t>(body.size()));
    cp->wire.append(body);
    cp->first_byte = first;
    cp->body = std::string_view(cp->wire).substr(cp->wire.size() - body.size());
    const ProtocolVersion v = s.version.value_or(ProtocolVersion::v311);
    cp->status = decode(first, cp->body, v, cp->packet);
    const Packet& p = cp->packet;
    const Status status = cp->status;
    if (const auto* connect = std::get_if<Connect>(&p)) s.version = connect->version;
    s.packets.push_back(std::move(cp));
    if (!status.ok()) return status;

    const ProtocolVersion version = s.version.value_or(ProtocolVersion::v311);
    const bool v5 = version == ProtocolVersion::v5;
    auto send = [&](const Packet& out) {
      if (!encode(out, version, reply)) {
        s.encode_failures.push_back(std::string(packet_type_name(packet_type(out))));
      }
    };

    if (const auto* connect = std::get_if<Connect>(&p)) {
      Connack ack;
      if (v5) {
        ack.properties.receive_maximum = options_.receive_maximum;
        ack.properties.topic_alias_maximum = options_.topic_alias_maximum;
        if (connect->client_id.empty()) {
          ack.properties.assigned_client_identifier = "capture-assigned";
        }
      }
      send(ack);
    } else if (const auto* pub = std::get_if<Publish>(&p)) {
      if (pub->qos == 1) send(Puback{pub->packet_id, ReasonCode::success, {}});
      if (pub->qos == 2) send(Pubrec{pub->packet_id, ReasonCode::success, {}});
    } else if (const auto* rel = std::get_if<Pubrel>(&p)) {
      send(Pubcomp{rel->packet_id, ReasonCode::success, {}});
    } else if (const auto* rec = std::get_if<Pubrec>(&p)) {
      send(Pubrel{rec->packet_id, ReasonCode::success, {}});
    } else if (const auto* sub = std::get_if<Subscribe>(&p)) {
      Suback ack;
      ack.packet_id = sub->packet_id;
      for (const Subscription& e : sub->subscriptions) {
        ack.reason_codes.push_back(static_cast<ReasonCode>(e.qos));
      }
      send(ack);
      if (!c.subscribed) {
        c.subscribed = true;
        c.subscription_ids = sub->properties.subscription_identifiers;
      }
      if (options_.publish_after_unsubacks == 0) maybe_publish(c, version, send);
    } else if (const auto* unsub = std::get_if<Unsubscribe>(&p)) {
      Unsuback ack;
      ack.packet_id = unsub->packet_id;
      if (v5) ack.reason_codes.assign(unsub->filters.size(), ReasonCode::success);
      send(ack);
      if (++c.unsubacks == options_.publish_after_unsubacks && c.subscribed) {
        maybe_publish(c, version, send);
      }
    } else if (std::holds_alternative<Pingreq>(p)) {
      send(Pingresp{});
    } else if (std::holds_alternative<Disconnect>(p)) {
      s.got_disconnect = true;
    }
    return Status::success();
  }

  template <class Send>
  void maybe_publish(Conn& c, mqtt::ProtocolVersion version, Send& send) {
    using namespace brokerha::mqtt;
    if (!options_.publish_to_subscriber || c.published) return;
    c.published = true;
    const OutgoingPublish& o = *options_.publish_to_subscriber;
    Publish out;
    out.topic = o.topic;
    out.payload = o.payload;
    out.qos = o.qos;
    out.retain = o.retain;
    out.packet_id = o.qos > 0 ? 1 : 0;
    if (version == ProtocolVersion::v5) {
      Properties& props = out.properties;
      props.payload_format_indicator = o.payload_format_indicator;
      props.message_expiry_interval = o.message_expiry_interval;
      if (o.content_type) props.content_type = *o.content_type;
      if (o.response_topic) props.response_topic = *o.response_topic;
      if (o.correlation_data) props.correlation_data = *o.correlation_data;
      for (const auto& [k, val] : o.user_properties) props.user_properties.push_back({k, val});
      props.subscription_identifiers = c.subscription_ids;
    }
    send(out);
  }

  CaptureOptions options_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<Conn> conns_;  // server thread only

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Entry> sessions_;
  std::size_t closed_count_ = 0;

  std::thread thread_;  // last: started after everything else is initialised
};

}  // namespace brokerha::test
