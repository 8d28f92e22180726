// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha-bench's MQTT client engine: Conn, one client connection (publisher, subscriber or
// idle), and Topic, the publishers and subscribers of one topic.
//
// Raw MQTT 3.1.1 / 5.0 over Asio: frames are split with brokerha's mqtt::Framer, CONNECT and
// SUBSCRIBE are built with mqtt::encode and CONNACK/SUBACK read with mqtt::decode; PUBLISH and
// its acknowledgements, the hot path, are written from a pre-encoded template and parsed by
// hand. Writes are batched per connection (one write per batch of queued packets); a plain TCP
// connection reads on readiness, non-blocking, into the engine's shared buffer. Publishers keep
// to the rate, the backlog and the in-flight window (pump()); subscribers check every payload
// (sequence, latency) into stats.hpp's trackers.
//
// client.cpp defines the engine; transports.cpp defines the members that connect and that
// read and write through TLS / WebSocket. Everything runs on the bench's one thread, driven by
// Engine's io_context (engine.hpp).

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "asio_include.hpp"
#include "mqtt/codec.hpp"
#include "stats.hpp"
#include "transports.hpp"

namespace brokerha::bench {

// Shared read buffer (one thread: every plain connection reads into it and decodes at once).
constexpr std::size_t kReadBuffer = 256 * 1024;

enum class Role : std::uint8_t { publisher, subscriber, idle };
enum class ConnState : std::uint8_t { idle, connecting, connack, suback, ready, closing, closed };

class Engine;
class Conn;

// One topic of a traffic run: its publishers and subscribers (shapes.cpp attaches them) and
// how many measured messages were published on it. max_outstanding() is the backlog rule: the
// most any of its subscribers has still to receive.
struct Topic {
  std::string name;
  std::vector<Conn*> pubs;
  std::vector<Conn*> subs;
  std::uint64_t sent = 0;  // measured messages published on it (all its publishers)
  bool waiters = false;    // a publisher waits for the backlog to shrink
  bool probed = false;     // every subscriber has received a probe

  std::uint64_t max_outstanding() const;  // inline below: the publishers' pump runs it
};

// One client connection: a publisher, a subscriber or an idle connection. Engine owns it and
// calls the public members; the public fields are its counters, read by the engine and the report.
class Conn {
 public:
  Conn(Engine& engine, Role role, std::uint32_t index, tcp::endpoint endpoint);

  void start();       // connect, then TLS / WebSocket handshakes, then CONNECT (transports.cpp)
  void pump();        // publisher: add messages while limits allow, then write
  void send_probe();  // publisher: one probe on its topic
  void queue(std::string_view bytes) { pending_.append(bytes); }
  void flush();             // start writing the queued bytes unless a write is running
  void close_gracefully();  // DISCONNECT, then close once written
  void close_now();         // close the socket at once
  void cancel_timer() { timer_.cancel(); }
  void ping_if_due(std::uint64_t now);

  Role role() const noexcept { return role_; }
  std::uint32_t index() const noexcept { return index_; }
  ConnState state() const noexcept { return state_; }
  bool write_idle() const noexcept { return !write_active_ && pending_.empty(); }

  Topic* topic = nullptr;
  // Publisher.
  std::uint64_t seq = 0;       // measured messages sent (the next sequence number)
  std::uint32_t inflight = 0;  // QoS 1/2 messages not completely acknowledged
  bool waiting_backlog = false;
  std::uint64_t rate_origin_ns = 0;
  // Subscriber.
  std::uint64_t received = 0;  // measured arrivals (duplicates included)
  bool got_probe = false;
  std::vector<std::unique_ptr<SequenceTracker>> trackers;  // by publisher id

 private:
  void on_connected();  // transports.cpp
  void send_connect();
  void wait_readable();
  void on_readable();
  void write_completed(const std::error_code& ec);
  // TLS / WebSocket (wrap_ set): transports.cpp, except feed_mqtt.
  template <typename F>
  void with_stream(F&& f) {
    if (wrap_->tls) {
      f(*wrap_->tls);
    } else {
      f(socket_);
    }
  }
  void start_websocket();
  void read_upgrade_answer();
  void read_wrapped();
  bool on_wrapped_bytes(std::size_t n);  // false: the connection failed or closed
  bool feed_mqtt(std::string_view bytes);
  void flush_wrapped();
  void read_failed(const std::error_code& ec);
  // client.cpp.
  const std::string& host() const;
  mqtt::Status on_packet(std::uint8_t first, std::string_view body);
  mqtt::Status on_publish(std::uint8_t first, std::string_view body);
  mqtt::Status on_ack(std::uint8_t type, std::string_view body);
  mqtt::Status on_control(std::uint8_t first, std::string_view body);
  void after_read();
  void on_written();
  void fail(const std::string& what);
  void arm_rate_timer(std::uint64_t due_ns);
  bool build_publish_templates();
  std::uint16_t allocate_id();
  std::string name() const;

  Engine& eng_;
  Role role_;
  std::uint32_t index_;
  tcp::endpoint endpoint_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  ConnState state_ = ConnState::idle;
  mqtt::Framer framer_;
  std::string pending_;
  std::string writing_;
  bool write_active_ = false;
  bool wait_active_ = false;
  bool timer_armed_ = false;
  std::uint16_t keepalive_ = 0;  // effective keep alive (s), 0 = none
  std::uint64_t last_write_ns_ = 0;
  // Publisher: the encoded PUBLISH copied per message (payload and packet id patched).
  std::string template_;
  std::string probe_template_;
  std::size_t id_offset_ = 0;
  std::size_t payload_offset_ = 0;
  std::size_t probe_payload_offset_ = 0;
  std::vector<std::uint8_t> id_state_;  // 0 free, 1 awaiting PUBACK/PUBREC, 2 awaiting PUBCOMP
  std::uint16_t next_id_ = 1;
  std::uint64_t read_ns_ = 0;  // when the current read completed
  std::unique_ptr<Wrapped> wrap_;
};

inline std::uint64_t Topic::max_outstanding() const {
  std::uint64_t m = 0;
  for (const Conn* s : subs) {
    if (sent > s->received) m = std::max(m, sent - s->received);
  }
  return m;
}

}  // namespace brokerha::bench
