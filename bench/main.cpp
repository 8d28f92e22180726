// SPDX-License-Identifier: Apache-2.0
// brokerha-bench: an MQTT 3.1.1 / 5.0 load generator for brokerha and other brokers.
//
// One thread, one io_context, every client connection on it (docs/benchmarks.md). Raw MQTT over
// Asio: frames are split with brokerha's mqtt::Framer, CONNECT/SUBSCRIBE are built with
// mqtt::encode and CONNACK/SUBACK read with mqtt::decode; PUBLISH and its acknowledgements,
// the hot path, are written from a pre-encoded template and parsed by hand.
//
// Traffic mode: publishers and subscribers in one of three shapes (fan-in: P publishers -> one
// topic -> S subscribers; pairs: publisher i -> topic i -> subscriber i; fan-out: the fan-in
// topology with the opposite counts), QoS 0/1/2, a fixed rate per publisher or max rate. At
// max rate a publisher pauses while any subscriber of its topic has `--backlog` messages
// outstanding (sent, not yet received) and resumes at half of that, so no broker queue limit
// is reached and nothing may be dropped, QoS 0 included. QoS 1/2 publishers keep at most
// `--inflight` messages unacknowledged. Every payload carries the publisher id, a sequence
// number and the steady_clock send time (payload.hpp): latency percentiles, loss, duplicates
// and reordering per publisher -> subscriber stream come from those (stats.hpp).
//
// Before the measured run, probes (payloads marked as such) are published on every topic until
// each subscriber has received one: subscriptions have reached the publishing broker, which
// matters in cross-host mode (--pub-host/--sub-host on different cluster nodes).
//
// Idle mode (--idle N): N connections that CONNECT and stay; with --broker-pid the broker's
// VmRSS before and after gives the memory per idle connection.
//
// Transports (every mode): plain TCP by default; --tls (asio::ssl::stream over the socket),
// --ws PATH (RFC 6455 client: the upgrade with the `mqtt` subprotocol, MQTT in masked binary
// frames) and --wss PATH (both). A plain TCP connection has no wrapper at all (Conn::wrap_ is
// null) and keeps the readiness + non-blocking read path; a wrapped one reads with
// async_read_some into its own buffer, and each flush becomes one write (one binary frame).
//
// Output: a progress line on stderr once a second, a human summary on stdout, then one
// machine-readable line on stdout: `RESULT key=value ...` (see print_usage()). Exit status: 0
// when the run completed with no loss, duplicate, reordering or invalid message; 1 when it
// completed but integrity checks failed; 2 for usage errors; 3 when the run failed (connection
// refused or closed, protocol error, timeout).

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include "asio_include.hpp"
#include "clock.hpp"
#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "options.hpp"
#include "payload.hpp"
#include "proc_sampler.hpp"
#include "stats.hpp"

namespace brokerha::bench {
namespace {

// Bytes queued per connection before a publisher stops adding messages until a write is done.
constexpr std::size_t kMaxPending = 64 * 1024;
// Messages a publisher adds per pump call at most (keeps the loop fair between publishers).
constexpr std::uint64_t kMaxPerPump = 512;
// Shared read buffer (one thread: every connection reads into it and decodes at once).
constexpr std::size_t kReadBuffer = 256 * 1024;
// Read rounds per readiness event before yielding to other connections.
constexpr int kReadRounds = 4;
// Read buffer of each TLS / WebSocket connection (its reads are asynchronous, so they cannot
// share the plain connections' buffer; TLS has its own record buffers below it).
constexpr std::size_t kWrappedReadBuffer = 4 * 1024;

// Thousands separators for the human summary.
std::string group(std::uint64_t v) {
  std::string s = std::to_string(v);
  for (std::size_t i = s.size(); i > 3; i -= 3) s.insert(i - 3, ",");
  return s;
}

std::string format_ns(std::uint64_t ns) {
  char buf[64];
  if (ns < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%.0f us", static_cast<double>(ns) / 1e3);
  } else if (ns < 1'000'000'000) {
    std::snprintf(buf, sizeof buf, "%.2f ms", static_cast<double>(ns) / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f s", static_cast<double>(ns) / 1e9);
  }
  return buf;
}

// Exit status of a run that completed: 1 when an integrity check failed.
int g_exit_code = 0;

// ---- engine ---------------------------------------------------------------------------------

enum class Role : std::uint8_t { publisher, subscriber, idle };
enum class Phase : std::uint8_t { connecting, probing, running, draining, closing, done };
enum class ConnState : std::uint8_t { idle, connecting, connack, suback, ready, closing, closed };

class Engine;
class Conn;

struct Topic {
  std::string name;
  std::vector<Conn*> pubs;
  std::vector<Conn*> subs;
  std::uint64_t sent = 0;  // measured messages published on it (all its publishers)
  bool waiters = false;    // a publisher waits for the backlog to shrink
  bool probed = false;     // every subscriber has received a probe

  std::uint64_t max_outstanding() const;
};

// The layers of a TLS / WebSocket connection (null for plain TCP).
struct Wrapped {
  std::optional<asio::ssl::stream<tcp::socket&>> tls;
  bool ws = false;
  bool reading = false;    // an async_read_some is running
  std::vector<char> buf;   // its buffer
  std::string ws_in;       // received WebSocket bytes not yet parsed
  std::string ws_key;      // Sec-WebSocket-Key of the upgrade
  std::string ws_control;  // pong frames to write before the next data frame
  std::string handshake;   // the upgrade request while it is written
};

class Conn {
 public:
  Conn(Engine& engine, Role role, std::uint32_t index, tcp::endpoint endpoint);

  void start();
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
  void on_connected();
  void send_connect();
  void wait_readable();
  void on_readable();
  void write_completed(const std::error_code& ec);
  // TLS / WebSocket (wrap_ set).
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

class Engine {
 public:
  explicit Engine(Options options);
  int run();

  // Used by Conn.
  asio::io_context io;
  const Options opt;
  std::vector<char> read_buffer;
  Phase phase = Phase::connecting;
  std::vector<std::unique_ptr<Conn>> pubs;
  std::vector<std::unique_ptr<Conn>> subs;
  std::vector<std::unique_ptr<Conn>> idles;
  std::vector<Topic> topics;
  LatencyHistogram latency;
  std::uint64_t invalid = 0;
  std::uint64_t rejected = 0;  // QoS 1/2 publishes the broker acknowledged with an error
  std::uint64_t last_delivery_ns = 0;
  bool any_keepalive = false;
  std::unique_ptr<asio::ssl::context> tls_context;   // --tls
  std::uint64_t mask_state = 0x9E3779B97F4A7C15ull;  // WebSocket masking keys (xorshift)
  std::uint32_t next_mask() {
    mask_state ^= mask_state << 13;
    mask_state ^= mask_state >> 7;
    mask_state ^= mask_state << 17;
    return static_cast<std::uint32_t>(mask_state >> 16);
  }

  void on_conn_ready(Conn& c);
  void fail(const std::string& what);
  void on_conn_closed();
  void on_probe(Conn& sub);

 private:
  void start_next_connects();
  void start_probing();
  void probe_round();
  void start_running();
  void stop_publishing();
  void drain_check();
  void finish_run();
  void close_all();
  void progress_tick();
  void keepalive_tick();
  std::size_t total_conns() const { return pubs.size() + subs.size() + idles.size(); }
  Conn& conn_at(std::size_t i) {
    if (i < subs.size()) return *subs[i];
    i -= subs.size();
    if (i < pubs.size()) return *pubs[i];
    return *idles[i - pubs.size()];
  }
  void print_traffic_result();
  void print_idle_result();

  asio::steady_timer phase_timer_;
  asio::steady_timer poll_timer_;
  asio::steady_timer progress_timer_;
  asio::steady_timer keepalive_timer_;
  asio::signal_set signals_;
  std::size_t next_connect_ = 0;
  std::size_t connecting_ = 0;
  std::size_t ready_ = 0;
  std::size_t closed_ = 0;
  std::string error_;
  std::uint64_t start_ns_ = 0;  // first measured publish
  std::uint64_t publish_end_ns_ = 0;
  std::uint64_t end_ns_ = 0;  // drained (or gave up)
  std::uint64_t connect_start_ns_ = 0;
  std::uint64_t connect_end_ns_ = 0;
  std::uint64_t progress_last_ns_ = 0;
  std::uint64_t progress_last_delivered_ = 0;
  std::uint64_t progress_last_sent_ = 0;
  std::optional<double> broker_cpu_start_, broker_cpu_end_;
  double bench_cpu_start_ = 0, bench_cpu_end_ = 0;
  std::optional<std::uint64_t> rss_before_, rss_after_;
  bool drained_ = false;
};

// ---- Topic / Conn ---------------------------------------------------------------------------

std::uint64_t Topic::max_outstanding() const {
  std::uint64_t m = 0;
  for (const Conn* s : subs) {
    if (sent > s->received) m = std::max(m, sent - s->received);
  }
  return m;
}

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

void Conn::start() {
  state_ = ConnState::connecting;
  socket_.async_connect(endpoint_, [this](const std::error_code& ec) {
    if (state_ != ConnState::connecting) return;  // closed meanwhile
    if (ec) {
      fail("connect to " + endpoint_.address().to_string() + ":" +
           std::to_string(endpoint_.port()) + ": " + ec.message());
      return;
    }
    on_connected();
  });
}

void Conn::on_connected() {
  std::error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
  if (!ec) socket_.non_blocking(true, ec);
  if (ec) {
    fail("socket options: " + ec.message());
    return;
  }
  if (!wrap_) {
    send_connect();
    return;
  }
  if (!wrap_->tls) {
    start_websocket();
    return;
  }
  SSL* ssl = wrap_->tls->native_handle();
  asio::error_code addr_ec;
  asio::ip::make_address(host(), addr_ec);
  if (addr_ec) SSL_set_tlsext_host_name(ssl, host().c_str());  // SNI for names, not addresses
  if (!eng_.opt.tls_insecure) {
    wrap_->tls->set_verify_callback(asio::ssl::host_name_verification(host()));
  }
  wrap_->tls->async_handshake(asio::ssl::stream_base::client, [this](const std::error_code& e) {
    if (state_ == ConnState::closed) return;
    if (e) {
      fail("TLS handshake with " + host() + ": " + e.message());
      return;
    }
    if (wrap_->ws) {
      start_websocket();
    } else {
      send_connect();
    }
  });
}

// base64 (RFC 4648) with OpenSSL.
std::string base64(const unsigned char* data, std::size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&out[0]), data, static_cast<int>(n));
  out.resize(static_cast<std::size_t>(len));
  return out;
}

std::string websocket_accept(const std::string& key) {
  const std::string text = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return base64(digest, sizeof digest);
}

// Case-insensitive value of `name` in an HTTP response head ("" when absent).
std::string header_value(const std::string& head, const std::string& name) {
  std::size_t at = head.find("\r\n");
  while (at != std::string::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string line = head.substr(start, end == std::string::npos ? end : end - start);
    const std::size_t colon = line.find(':');
    if (colon == name.size() &&
        std::equal(name.begin(), name.end(), line.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      const std::size_t v = line.find_first_not_of(" \t", colon + 1);
      return v == std::string::npos ? std::string() : line.substr(v);
    }
    at = end;
  }
  return {};
}

void Conn::start_websocket() {
  unsigned char nonce[16];
  for (std::size_t i = 0; i < sizeof nonce; i += 4) {
    const std::uint32_t m = eng_.next_mask();
    std::memcpy(nonce + i, &m, 4);
  }
  wrap_->ws_key = base64(nonce, sizeof nonce);
  const std::uint16_t port = endpoint_.port();
  wrap_->handshake =
      "GET " + eng_.opt.ws_path + " HTTP/1.1\r\nHost: " + host() + ":" + std::to_string(port) +
      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + wrap_->ws_key +
      "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
  with_stream([this](auto& stream) {
    asio::async_write(stream, asio::buffer(wrap_->handshake),
                      [this](const std::error_code& ec, std::size_t) {
                        if (state_ == ConnState::closed) return;
                        std::string().swap(wrap_->handshake);
                        if (ec) {
                          fail("WebSocket upgrade: " + ec.message());
                          return;
                        }
                        wrap_->buf.resize(kWrappedReadBuffer);
                        read_upgrade_answer();
                      });
  });
}

void Conn::read_upgrade_answer() {
  with_stream([this](auto& stream) {
    stream.async_read_some(
        asio::buffer(wrap_->buf), [this](const std::error_code& ec, std::size_t n) {
          if (state_ == ConnState::closed) return;
          if (ec) {
            fail("WebSocket upgrade: " +
                 (ec == asio::error::eof ? std::string("connection closed") : ec.message()));
            return;
          }
          std::string& in = wrap_->ws_in;
          in.append(wrap_->buf.data(), n);
          const std::size_t end = in.find("\r\n\r\n");
          if (end == std::string::npos) {
            if (in.size() > 16 * 1024) {
              fail("WebSocket upgrade: answer head too long");
            } else {
              read_upgrade_answer();
            }
            return;
          }
          const std::string head = in.substr(0, end + 2);
          in.erase(0, end + 4);  // frames may follow the head
          if (head.rfind("HTTP/1.1 101", 0) != 0) {
            fail("WebSocket upgrade refused: " + head.substr(0, head.find("\r\n")));
            return;
          }
          if (header_value(head, "Sec-WebSocket-Accept") != websocket_accept(wrap_->ws_key)) {
            fail("WebSocket upgrade: wrong Sec-WebSocket-Accept");
            return;
          }
          std::string().swap(wrap_->ws_key);
          send_connect();
        });
  });
}

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

void Conn::read_failed(const std::error_code& ec) {
  if (state_ == ConnState::closing) {
    close_now();
    return;
  }
  fail(ec == asio::error::eof || ec == asio::ssl::error::stream_truncated
           ? std::string("connection closed by the broker")
           : "read: " + ec.message());
}

void Conn::read_wrapped() {
  if (wrap_->reading || state_ == ConnState::closed) return;
  if (wrap_->buf.empty()) wrap_->buf.resize(kWrappedReadBuffer);
  // Frames that came with the upgrade answer.
  if (wrap_->ws && !wrap_->ws_in.empty() && !on_wrapped_bytes(0)) return;
  wrap_->reading = true;
  with_stream([this](auto& stream) {
    stream.async_read_some(asio::buffer(wrap_->buf),
                           [this](const std::error_code& ec, std::size_t n) {
                             wrap_->reading = false;
                             if (state_ == ConnState::closed) return;
                             if (ec) {
                               if (ec != asio::error::operation_aborted) read_failed(ec);
                               return;
                             }
                             read_ns_ = now_ns();
                             if (!on_wrapped_bytes(n)) return;
                             after_read();
                             read_wrapped();
                           });
  });
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

// A WebSocket frame header from the client: FIN + opcode, the mask bit and the length, then the
// masking key.
void append_ws_header(std::string& out, std::uint8_t opcode, std::size_t len, std::uint32_t key) {
  out += static_cast<char>(0x80 | opcode);
  if (len < 126) {
    out += static_cast<char>(0x80 | len);
  } else if (len <= 0xFFFF) {
    out += static_cast<char>(0x80 | 126);
    out += static_cast<char>(len >> 8);
    out += static_cast<char>(len & 0xFF);
  } else {
    out += static_cast<char>(0x80 | 127);
    for (int shift = 56; shift >= 0; shift -= 8) {
      out += static_cast<char>((static_cast<std::uint64_t>(len) >> shift) & 0xFF);
    }
  }
  out.append(reinterpret_cast<const char*>(&key), 4);
}

// Appends one masked frame with `payload` (RFC 6455 5.3).
void append_ws_frame(std::string& out, std::uint8_t opcode, std::string_view payload,
                     std::uint32_t key) {
  append_ws_header(out, opcode, payload.size(), key);
  unsigned char mask[4];
  std::memcpy(mask, &key, 4);
  const std::size_t at = out.size();
  out.append(payload);
  char* p = &out[at];
  for (std::size_t i = 0; i < payload.size(); ++i) p[i] = static_cast<char>(p[i] ^ mask[i & 3]);
}

// `n` new bytes in wrap_->buf: MQTT bytes (TLS), or WebSocket frames carrying them.
bool Conn::on_wrapped_bytes(std::size_t n) {
  if (!wrap_->ws) return feed_mqtt(std::string_view(wrap_->buf.data(), n));
  std::string& in = wrap_->ws_in;
  in.append(wrap_->buf.data(), n);
  std::size_t pos = 0;
  bool alive = true;
  while (alive && in.size() - pos >= 2) {
    const auto b0 = static_cast<std::uint8_t>(in[pos]);
    const auto b1 = static_cast<std::uint8_t>(in[pos + 1]);
    std::size_t head = 2;
    std::uint64_t len = b1 & 0x7Fu;
    if (len == 126) head += 2;
    if (len == 127) head += 8;
    if (in.size() - pos < head) break;
    if (len >= 126) {
      len = 0;
      for (std::size_t i = pos + 2; i < pos + head; ++i) {
        len = (len << 8) | static_cast<std::uint8_t>(in[i]);
      }
    }
    if ((b1 & 0x80u) != 0) {
      fail("masked WebSocket frame from the broker");
      return false;
    }
    if (len > (64u << 20)) {
      fail("WebSocket frame of " + std::to_string(len) + " bytes from the broker");
      return false;
    }
    if (in.size() - pos - head < len) break;  // the rest of the frame has not arrived
    const std::string_view payload(in.data() + pos + head, static_cast<std::size_t>(len));
    pos += head + static_cast<std::size_t>(len);
    switch (b0 & 0x0Fu) {
      case 0x0:
      case 0x2:
        alive = payload.empty() || feed_mqtt(payload);
        break;
      case 0x8: {
        const unsigned code =
            payload.size() >= 2
                ? (static_cast<unsigned>(static_cast<std::uint8_t>(payload[0])) << 8) |
                      static_cast<std::uint8_t>(payload[1])
                : 0;
        if (state_ == ConnState::closing) {
          close_now();
        } else {
          fail("WebSocket close from the broker (code " + std::to_string(code) + ")");
        }
        return false;
      }
      case 0x9:
        append_ws_frame(wrap_->ws_control, 0xA, payload, eng_.next_mask());
        break;
      case 0xA:
        break;
      default:
        fail("unexpected WebSocket opcode " + std::to_string(b0 & 0x0Fu) + " from the broker");
        return false;
    }
  }
  if (!alive) return false;
  in.erase(0, pos);
  if (in.empty() && in.capacity() > kWrappedReadBuffer) std::string().swap(in);
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

// One write per flush: TLS encrypts the queued bytes, WebSocket sends them as one binary frame
// after any pong.
void Conn::flush_wrapped() {
  if (write_active_ || state_ == ConnState::closed) return;
  if (pending_.empty() && wrap_->ws_control.empty()) return;
  writing_.clear();
  if (wrap_->ws) {
    writing_.swap(wrap_->ws_control);
    if (!pending_.empty()) append_ws_frame(writing_, 0x2, pending_, eng_.next_mask());
    pending_.clear();
  } else {
    writing_.swap(pending_);
    pending_.clear();
  }
  write_active_ = true;
  last_write_ns_ = now_ns();
  with_stream([this](auto& stream) {
    asio::async_write(stream, asio::buffer(writing_),
                      [this](const std::error_code& ec, std::size_t) { write_completed(ec); });
  });
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

Engine::Engine(Options options)
    : opt(with_topic_prefix(std::move(options))),
      read_buffer(kReadBuffer),
      phase_timer_(io),
      poll_timer_(io),
      progress_timer_(io),
      keepalive_timer_(io),
      signals_(io, SIGINT, SIGTERM) {}

tcp::endpoint resolve(asio::io_context& io, const std::string& host, std::uint16_t port) {
  tcp::resolver resolver(io);
  std::error_code ec;
  const auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec || results.empty()) {
    std::fprintf(stderr, "brokerha-bench: cannot resolve %s: %s\n", host.c_str(),
                 ec ? ec.message().c_str() : "no address");
    std::exit(3);
  }
  return results.begin()->endpoint();
}

// The client TLS context: TLS 1.2+, the server verified against --cafile (or the system's CA
// paths) unless --insecure, an optional client certificate. nullptr with a message on error.
std::unique_ptr<asio::ssl::context> make_tls_context(const Options& o) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  std::error_code ec;
  const char* what = "";
  if (o.tls_insecure) {
    ctx->set_verify_mode(asio::ssl::verify_none);
  } else {
    ctx->set_verify_mode(asio::ssl::verify_peer);
    if (o.tls_ca.empty()) {
      what = "the default CA paths";
      ctx->set_default_verify_paths(ec);
    } else {
      what = "--cafile";
      ctx->load_verify_file(o.tls_ca, ec);
    }
  }
  if (!ec && !o.tls_cert.empty()) {
    what = "--cert";
    ctx->use_certificate_chain_file(o.tls_cert, ec);
    if (!ec) {
      what = "--key";
      ctx->use_private_key_file(o.tls_key, asio::ssl::context::pem, ec);
    }
  }
  if (ec) {
    std::fprintf(stderr, "brokerha-bench: TLS: %s: %s\n", what, ec.message().c_str());
    return nullptr;
  }
  return ctx;
}

int Engine::run() {
  const tcp::endpoint pub_ep = resolve(io, opt.pub_host, opt.pub_port);
  const tcp::endpoint sub_ep = resolve(io, opt.sub_host, opt.sub_port);
  if (opt.tls) {
    tls_context = make_tls_context(opt);
    if (!tls_context) return 2;
  }

  // Enough file descriptors for every connection.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  const std::size_t wanted = opt.mode == Mode::idle ? static_cast<std::size_t>(opt.idle)
                                                    : static_cast<std::size_t>(opt.pubs + opt.subs);
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      wanted + 32 > rl.rlim_cur) {
    std::fprintf(stderr,
                 "brokerha-bench: %zu connections need more open files than the limit %llu\n",
                 wanted, static_cast<unsigned long long>(rl.rlim_cur));
    return 2;
  }

  if (opt.mode == Mode::idle) {
    for (long i = 0; i < opt.idle; ++i) {
      idles.push_back(
          std::make_unique<Conn>(*this, Role::idle, static_cast<std::uint32_t>(i), sub_ep));
    }
    if (opt.broker_pid > 0) {
      rss_before_ = process_rss_kib(opt.broker_pid);
      if (!rss_before_) {
        std::fprintf(stderr, "brokerha-bench: cannot read /proc/%ld/status\n", opt.broker_pid);
        return 2;
      }
    }
  } else {
    const std::size_t n_topics = opt.shape == Shape::pairs ? static_cast<std::size_t>(opt.pubs) : 1;
    topics.resize(n_topics);
    for (std::size_t t = 0; t < n_topics; ++t) {
      topics[t].name = opt.topic_prefix + "/t/" + std::to_string(t);
    }
    for (long i = 0; i < opt.pubs; ++i) {
      auto c =
          std::make_unique<Conn>(*this, Role::publisher, static_cast<std::uint32_t>(i), pub_ep);
      c->topic = &topics[opt.shape == Shape::pairs ? static_cast<std::size_t>(i) : 0];
      c->topic->pubs.push_back(c.get());
      pubs.push_back(std::move(c));
    }
    for (long i = 0; i < opt.subs; ++i) {
      auto c =
          std::make_unique<Conn>(*this, Role::subscriber, static_cast<std::uint32_t>(i), sub_ep);
      c->topic = &topics[opt.shape == Shape::pairs ? static_cast<std::size_t>(i) : 0];
      c->topic->subs.push_back(c.get());
      c->trackers.resize(static_cast<std::size_t>(opt.pubs));
      subs.push_back(std::move(c));
    }
    if (opt.broker_pid > 0 && !process_cpu_seconds(opt.broker_pid)) {
      std::fprintf(stderr, "brokerha-bench: cannot read /proc/%ld/stat\n", opt.broker_pid);
      return 2;
    }
  }

  signals_.async_wait([this](const std::error_code& ec, int) {
    if (!ec) fail("interrupted");
  });

  phase = Phase::connecting;
  connect_start_ns_ = now_ns();
  phase_timer_.expires_after(seconds_to_duration(opt.connect_timeout));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (ec || phase != Phase::connecting) return;
    fail("timed out connecting: " + std::to_string(ready_) + " of " +
         std::to_string(total_conns()) + " connections ready after " +
         std::to_string(opt.connect_timeout) + " s");
  });
  progress_last_ns_ = now_ns();
  if (opt.progress) {
    progress_timer_.expires_after(std::chrono::seconds(1));
    progress_timer_.async_wait([this](const std::error_code& ec) {
      if (!ec) progress_tick();
    });
  }
  start_next_connects();
  io.run();

  if (opt.mode == Mode::idle) {
    print_idle_result();
  } else {
    print_traffic_result();
  }
  std::fflush(stdout);
  if (!error_.empty()) return 3;
  return 0;  // print_traffic_result sets g_exit_code to 1 when an integrity check failed
}

void Engine::start_next_connects() {
  const std::size_t total = total_conns();
  while (phase == Phase::connecting && next_connect_ < total &&
         connecting_ < static_cast<std::size_t>(opt.connect_window)) {
    ++connecting_;
    conn_at(next_connect_++).start();
  }
}

void Engine::on_conn_ready(Conn&) {
  if (phase != Phase::connecting) return;
  --connecting_;
  ++ready_;
  if (ready_ < total_conns()) {
    start_next_connects();
    return;
  }
  connect_end_ns_ = now_ns();
  phase_timer_.cancel();
  if (any_keepalive) {
    keepalive_timer_.expires_after(std::chrono::seconds(1));
    keepalive_timer_.async_wait([this](const std::error_code& ec) {
      if (!ec) keepalive_tick();
    });
  }
  if (opt.mode == Mode::idle) {
    phase = Phase::running;
    phase_timer_.expires_after(seconds_to_duration(opt.settle));
    phase_timer_.async_wait([this](const std::error_code& ec) {
      if (ec || phase != Phase::running) return;
      if (opt.broker_pid > 0) rss_after_ = process_rss_kib(opt.broker_pid);
      phase = Phase::draining;
      phase_timer_.expires_after(seconds_to_duration(opt.hold));
      phase_timer_.async_wait([this](const std::error_code& ec2) {
        if (ec2 || phase != Phase::draining) return;
        close_all();
      });
    });
    return;
  }
  start_probing();
}

void Engine::start_probing() {
  phase = Phase::probing;
  phase_timer_.expires_after(seconds_to_duration(opt.probe_timeout));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (ec || phase != Phase::probing) return;
    std::size_t missing = 0;
    for (const auto& s : subs) missing += s->got_probe ? 0 : 1;
    fail("timed out waiting for subscriptions to route: " + std::to_string(missing) + " of " +
         std::to_string(subs.size()) + " subscribers received no probe after " +
         std::to_string(opt.probe_timeout) + " s");
  });
  probe_round();
}

void Engine::probe_round() {
  if (phase != Phase::probing) return;
  for (Topic& t : topics) {
    if (!t.probed && !t.pubs.empty()) t.pubs.front()->send_probe();
  }
  poll_timer_.expires_after(std::chrono::milliseconds(200));
  poll_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) probe_round();
  });
}

void Engine::on_probe(Conn& sub) {
  Topic& t = *sub.topic;
  if (t.probed) return;
  for (const Conn* s : t.subs) {
    if (!s->got_probe) return;
  }
  t.probed = true;
  if (phase != Phase::probing) return;
  for (const Topic& other : topics) {
    if (!other.probed) return;
  }
  // Every route works: start once the current read batch is done.
  asio::post(io, [this] {
    if (phase == Phase::probing) start_running();
  });
}

void Engine::start_running() {
  poll_timer_.cancel();
  phase_timer_.cancel();
  if (opt.broker_pid > 0) broker_cpu_start_ = process_cpu_seconds(opt.broker_pid);
  bench_cpu_start_ = own_cpu_seconds();
  phase = Phase::running;
  start_ns_ = now_ns();
  progress_last_ns_ = start_ns_;
  // Spread the publishers' schedules evenly over one interval (rate mode).
  if (opt.rate > 0) {
    const double interval = 1e9 / opt.rate;
    for (std::size_t i = 0; i < pubs.size(); ++i) {
      pubs[i]->rate_origin_ns =
          start_ns_ + static_cast<std::uint64_t>(interval * static_cast<double>(i) /
                                                 static_cast<double>(pubs.size()));
    }
  }
  phase_timer_.expires_after(seconds_to_duration(opt.duration));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec && phase == Phase::running) stop_publishing();
  });
  for (auto& p : pubs) p->pump();
}

void Engine::stop_publishing() {
  phase = Phase::draining;
  publish_end_ns_ = now_ns();
  for (auto& p : pubs) {
    p->cancel_timer();
    p->waiting_backlog = false;
  }
  phase_timer_.expires_after(seconds_to_duration(opt.drain_timeout));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (ec || phase != Phase::draining) return;
    std::fprintf(stderr,
                 "brokerha-bench: drain timeout (%.1f s): counting what is missing as lost\n",
                 opt.drain_timeout);
    finish_run();
  });
  drain_check();
}

void Engine::drain_check() {
  if (phase != Phase::draining) return;
  bool done = true;
  for (const auto& s : subs) {
    if (s->received < s->topic->sent || !s->write_idle()) done = false;
  }
  for (const auto& p : pubs) {
    if (p->inflight > 0 || !p->write_idle()) done = false;
  }
  if (done) {
    drained_ = true;
    finish_run();
    return;
  }
  poll_timer_.expires_after(std::chrono::milliseconds(2));
  poll_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) drain_check();
  });
}

void Engine::finish_run() {
  end_ns_ = now_ns();
  if (opt.broker_pid > 0) broker_cpu_end_ = process_cpu_seconds(opt.broker_pid);
  bench_cpu_end_ = own_cpu_seconds();
  close_all();
}

void Engine::close_all() {
  if (phase == Phase::closing || phase == Phase::done) return;
  phase = Phase::closing;
  phase_timer_.cancel();
  poll_timer_.cancel();
  keepalive_timer_.cancel();
  for (std::size_t i = 0; i < total_conns(); ++i) conn_at(i).close_gracefully();
  if (closed_ == total_conns()) {
    on_conn_closed();
    return;
  }
  // Give the DISCONNECTs a moment to be written, then close whatever is left.
  phase_timer_.expires_after(std::chrono::seconds(2));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (ec) return;
    for (std::size_t i = 0; i < total_conns(); ++i) conn_at(i).close_now();
  });
}

void Engine::on_conn_closed() {
  if (phase != Phase::closing) {
    if (closed_ < total_conns()) ++closed_;
    return;
  }
  if (closed_ < total_conns()) ++closed_;
  if (closed_ >= total_conns()) {
    phase = Phase::done;
    phase_timer_.cancel();
    poll_timer_.cancel();
    progress_timer_.cancel();
    keepalive_timer_.cancel();
    signals_.cancel();
    io.stop();
  }
}

void Engine::fail(const std::string& what) {
  if (phase == Phase::closing || phase == Phase::done) return;
  if (error_.empty()) {
    error_ = what;
    std::fprintf(stderr, "brokerha-bench: error: %s\n", what.c_str());
  }
  if (end_ns_ == 0) {
    end_ns_ = now_ns();
    if (opt.broker_pid > 0) broker_cpu_end_ = process_cpu_seconds(opt.broker_pid);
    bench_cpu_end_ = own_cpu_seconds();
  }
  phase = Phase::closing;
  phase_timer_.cancel();
  poll_timer_.cancel();
  progress_timer_.cancel();
  keepalive_timer_.cancel();
  signals_.cancel();
  for (std::size_t i = 0; i < total_conns(); ++i) conn_at(i).close_now();
  io.stop();
}

void Engine::keepalive_tick() {
  if (phase == Phase::closing || phase == Phase::done) return;
  const std::uint64_t now = now_ns();
  for (std::size_t i = 0; i < total_conns(); ++i) conn_at(i).ping_if_due(now);
  keepalive_timer_.expires_after(std::chrono::seconds(1));
  keepalive_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) keepalive_tick();
  });
}

void Engine::progress_tick() {
  const std::uint64_t now = now_ns();
  const double dt = static_cast<double>(now - progress_last_ns_) / 1e9;
  if (phase == Phase::connecting) {
    std::fprintf(stderr, "[connecting] %zu of %zu connections ready\n", ready_, total_conns());
  } else if (opt.mode == Mode::idle) {
    std::fprintf(stderr, "[idle] %zu connections held\n", ready_);
  } else if (phase == Phase::probing) {
    std::fprintf(stderr, "[probing] waiting for every subscription to route\n");
  } else if (phase == Phase::running || phase == Phase::draining) {
    std::uint64_t sent = 0, delivered = 0, outstanding = 0;
    for (const auto& p : pubs) sent += p->seq;
    for (const auto& s : subs) delivered += s->received;
    for (const Topic& t : topics) outstanding = std::max(outstanding, t.max_outstanding());
    const double elapsed = static_cast<double>(now - start_ns_) / 1e9;
    std::fprintf(stderr,
                 "[%5.1f s%s] sent %s (%.0f/s)  delivered %s (%.0f/s)  max outstanding %" PRIu64
                 "  p99 %s\n",
                 elapsed, phase == Phase::draining ? " drain" : "", group(sent).c_str(),
                 dt > 0 ? static_cast<double>(sent - progress_last_sent_) / dt : 0.0,
                 group(delivered).c_str(),
                 dt > 0 ? static_cast<double>(delivered - progress_last_delivered_) / dt : 0.0,
                 outstanding, format_ns(latency.percentile(0.99)).c_str());
    progress_last_sent_ = sent;
    progress_last_delivered_ = delivered;
  }
  progress_last_ns_ = now;
  progress_timer_.expires_after(std::chrono::seconds(1));
  progress_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) progress_tick();
  });
}

std::string error_token(const std::string& e) {
  if (e.empty()) return "-";
  std::string t = e;
  for (char& c : t) {
    if (c == ' ' || c == '\t' || c == '\n') c = '_';
  }
  return t;
}

void Engine::print_traffic_result() {
  StreamCounters total;
  std::uint64_t expected = 0;
  for (const auto& s : subs) {
    expected += s->topic->sent;
    for (const Conn* p : s->topic->pubs) {
      const auto& tr = s->trackers[p->index()];
      if (tr) {
        total.add(tr->finish(p->seq));
      } else {
        total.lost += p->seq;
      }
    }
  }
  std::uint64_t sent = 0;
  for (const auto& p : pubs) sent += p->seq;
  const bool ran = start_ns_ != 0;
  const std::uint64_t pub_end = publish_end_ns_ != 0 ? publish_end_ns_ : end_ns_;
  const double publish_s = ran ? static_cast<double>(pub_end - start_ns_) / 1e9 : 0.0;
  const double deliver_s = ran && last_delivery_ns > start_ns_
                               ? static_cast<double>(last_delivery_ns - start_ns_) / 1e9
                               : 0.0;
  const double throughput = deliver_s > 0 ? static_cast<double>(total.unique) / deliver_s : 0.0;
  const double publish_rate = publish_s > 0 ? static_cast<double>(sent) / publish_s : 0.0;
  std::optional<double> broker_cpu;
  if (broker_cpu_start_ && broker_cpu_end_) broker_cpu = *broker_cpu_end_ - *broker_cpu_start_;
  const double bench_cpu = ran ? bench_cpu_end_ - bench_cpu_start_ : 0.0;
  const bool clean = total.lost == 0 && total.duplicates == 0 && total.reordered == 0 &&
                     invalid == 0 && rejected == 0;
  const bool ok = error_.empty() && clean;
  if (error_.empty() && !clean) g_exit_code = 1;

  const char* version = opt.version == ProtocolVersion::v5 ? "5" : "3.1.1";
  const auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e3; };
  std::printf(
      "brokerha-bench: %s, QoS %u, MQTT %s over %s, %ld publishers -> %ld subscribers, "
      "%zu-byte payloads, ",
      shape_name(opt.shape), opt.qos, version, transport_name(opt), opt.pubs, opt.subs,
      opt.payload);
  if (opt.rate > 0) {
    std::printf("%g msg/s per publisher", opt.rate);
  } else {
    std::printf("max rate (backlog %" PRIu64 "%s)", opt.backlog,
                opt.qos > 0 ? (", inflight " + std::to_string(opt.inflight)).c_str() : "");
  }
  std::printf(", %.1f s\n", opt.duration);
  if (opt.pub_host != opt.sub_host || opt.pub_port != opt.sub_port) {
    std::printf("  cross-host  publishers on %s:%u, subscribers on %s:%u\n", opt.pub_host.c_str(),
                static_cast<unsigned>(opt.pub_port), opt.sub_host.c_str(),
                static_cast<unsigned>(opt.sub_port));
  }
  std::printf("  published   %s messages (%.0f/s)\n", group(sent).c_str(), publish_rate);
  std::printf("  delivered   %s of %s expected (%.0f/s)\n", group(total.unique).c_str(),
              group(expected).c_str(), throughput);
  std::printf("  latency     p50 %s  p99 %s  p99.9 %s  max %s  mean %s\n",
              format_ns(latency.percentile(0.5)).c_str(),
              format_ns(latency.percentile(0.99)).c_str(),
              format_ns(latency.percentile(0.999)).c_str(), format_ns(latency.max()).c_str(),
              format_ns(static_cast<std::uint64_t>(latency.mean())).c_str());
  std::printf("  integrity   lost %s  duplicates %s  reordered %s  invalid %s%s\n",
              group(total.lost).c_str(), group(total.duplicates).c_str(),
              group(total.reordered).c_str(), group(invalid).c_str(),
              rejected > 0 ? ("  rejected " + group(rejected)).c_str() : "");
  if (broker_cpu) {
    std::printf("  broker      pid %ld: %.2f s CPU (%.2f cores), %.2f s per million deliveries\n",
                opt.broker_pid, *broker_cpu,
                end_ns_ > start_ns_ && ran
                    ? *broker_cpu / (static_cast<double>(end_ns_ - start_ns_) / 1e9)
                    : 0.0,
                total.unique > 0 ? *broker_cpu * 1e6 / static_cast<double>(total.unique) : 0.0);
  }
  std::printf("  bench       %.2f s CPU (%.2f cores)%s\n", bench_cpu,
              end_ns_ > start_ns_ && ran
                  ? bench_cpu / (static_cast<double>(end_ns_ - start_ns_) / 1e9)
                  : 0.0,
              drained_ || !ran ? "" : "  (not drained)");
  if (!error_.empty()) std::printf("  error       %s\n", error_.c_str());

  std::printf("RESULT");
  if (!opt.label.empty()) std::printf(" scenario=%s", opt.label.c_str());
  std::printf(" mode=traffic transport=%s", transport_name(opt));
  std::printf(" shape=%s qos=%u mqtt=%s pubs=%ld subs=%ld payload=%zu rate=%g backlog=%" PRIu64
              " inflight=%u duration_s=%.3f sent=%" PRIu64 " expected=%" PRIu64
              " delivered=%" PRIu64 " received=%" PRIu64
              " throughput=%.0f publish_rate=%.0f p50_us=%.1f p99_us=%.1f"
              " p999_us=%.1f max_us=%.1f mean_us=%.1f lost=%" PRIu64 " duplicates=%" PRIu64
              " reordered=%" PRIu64 " invalid=%" PRIu64 " rejected=%" PRIu64,
              shape_name(opt.shape), opt.qos, version, opt.pubs, opt.subs, opt.payload, opt.rate,
              opt.backlog, opt.inflight, publish_s, sent, expected, total.unique, total.received,
              throughput, publish_rate, us(latency.percentile(0.5)), us(latency.percentile(0.99)),
              us(latency.percentile(0.999)), us(latency.max()), latency.mean() / 1e3, total.lost,
              total.duplicates, total.reordered, invalid, rejected);
  if (broker_cpu) {
    std::printf(" broker_cpu_s=%.3f broker_cpu_s_per_m=%.4f", *broker_cpu,
                total.unique > 0 ? *broker_cpu * 1e6 / static_cast<double>(total.unique) : 0.0);
  } else {
    std::printf(" broker_cpu_s=- broker_cpu_s_per_m=-");
  }
  std::printf(" bench_cpu_s=%.3f ok=%d error=%s\n", bench_cpu, ok ? 1 : 0,
              error_token(error_).c_str());
}

void Engine::print_idle_result() {
  const double connect_s = connect_end_ns_ > connect_start_ns_
                               ? static_cast<double>(connect_end_ns_ - connect_start_ns_) / 1e9
                               : 0.0;
  std::printf("brokerha-bench: %ld idle connections (MQTT %s, %s) to %s:%u\n", opt.idle,
              opt.version == ProtocolVersion::v5 ? "5" : "3.1.1", transport_name(opt),
              opt.sub_host.c_str(), static_cast<unsigned>(opt.sub_port));
  std::printf("  connected   %zu in %.2f s\n", ready_, connect_s);
  std::optional<std::int64_t> delta;
  if (rss_before_ && rss_after_) {
    delta = static_cast<std::int64_t>(*rss_after_) - static_cast<std::int64_t>(*rss_before_);
    std::printf("  broker RSS  pid %ld: %" PRIu64 " KiB -> %" PRIu64 " KiB, +%" PRId64
                " KiB, %.3f KiB per connection\n",
                opt.broker_pid, *rss_before_, *rss_after_, *delta,
                static_cast<double>(*delta) / static_cast<double>(opt.idle));
  }
  if (!error_.empty()) std::printf("  error       %s\n", error_.c_str());
  std::printf("RESULT");
  if (!opt.label.empty()) std::printf(" scenario=%s", opt.label.c_str());
  std::printf(" mode=idle transport=%s mqtt=%s connections=%ld connected=%zu connect_s=%.3f",
              transport_name(opt), opt.version == ProtocolVersion::v5 ? "5" : "3.1.1", opt.idle,
              ready_, connect_s);
  if (delta) {
    std::printf(" rss_before_kib=%" PRIu64 " rss_after_kib=%" PRIu64 " rss_delta_kib=%" PRId64
                " kib_per_conn=%.3f",
                *rss_before_, *rss_after_, *delta,
                static_cast<double>(*delta) / static_cast<double>(opt.idle));
  } else {
    std::printf(" rss_before_kib=- rss_after_kib=- rss_delta_kib=- kib_per_conn=-");
  }
  std::printf(" ok=%d error=%s\n", error_.empty() ? 1 : 0, error_token(error_).c_str());
}

}  // namespace
}  // namespace brokerha::bench

int main(int argc, char** argv) {
  using namespace brokerha::bench;
  ::signal(SIGPIPE, SIG_IGN);
  const Options options = parse_options(argc, argv);
  Engine engine(options);
  const int rc = engine.run();
  return rc != 0 ? rc : g_exit_code;
}
