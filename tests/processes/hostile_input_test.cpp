// SPDX-License-Identifier: Apache-2.0
// The hostile-input suite (docs/security.md): a real brokerha-server process with every kind of
// listener (tcp, tls, ws, a PROXY-protocol tcp listener), its HTTP API and a one-node cluster
// is fed malformed and truncated MQTT packets of every type in MQTT 3.1, 3.1.1 and 5.0,
// slowloris connections at every stage (TCP, TLS handshake, WebSocket upgrade, CONNECT),
// floods (PINGREQ, WebSocket pings, SUBSCRIBE) and oversized fields, and garbage on the cluster
// and API ports. After each case the server must still be up and answer a control client; with
// 1,000 slowloris connections held its RSS may grow by at most 64 MiB and the control client's
// round trip p99 must stay under 10 ms. Every case prints its figures (MESSAGE).
//
// Every wait is bounded; the whole file stays well under the 120 s a processes test may take.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "support/broker_process.hpp"
#include "support/listener_support.hpp"
#include "support/raw_client.hpp"

using namespace brokerha;
using namespace brokerha::test;
using namespace brokerha::test::listeners;

#ifdef BROKERHA_SERVER_PATH

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::int64_t kMaxRssGrowthKib = 64 * 1024;
constexpr double kMaxControlP99Ms = 10.0;

// ---- a small non-blocking client socket -------------------------------------------------------

class Sock {
 public:
  Sock() = default;
  ~Sock() { close(); }
  Sock(const Sock&) = delete;
  Sock& operator=(const Sock&) = delete;
  Sock(Sock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }

  bool open(std::uint16_t port, int type = SOCK_STREAM, int receive_buffer = 0) {
    close();
    fd_ = ::socket(AF_INET, type, 0);
    if (fd_ < 0) return false;
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close();
      return false;
    }
    const int one = 1;
    if (type == SOCK_STREAM) ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    return true;
  }
  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool is_open() const noexcept { return fd_ >= 0; }

  /// Sends everything within `timeout`; false when the peer is gone or the time ran out.
  bool send(std::string_view bytes, milliseconds timeout = milliseconds(3000)) {
    const auto deadline = Clock::now() + timeout;
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) {
        bytes.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
      if (!wait(POLLOUT, deadline)) return false;
    }
    return true;
  }
  /// Sends what the socket takes now, without waiting; the bytes sent.
  std::size_t send_some(std::string_view bytes) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }

  enum class Got { bytes, closed, timeout };
  /// Appends what arrives to `in` until `done(in)` or EOF/reset or the timeout.
  template <class Done>
  Got read_until(std::string& in, Done&& done, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!done(in)) {
      char buf[16384];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) {
        in.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) return Got::closed;
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return Got::closed;
      if (!wait(POLLIN, deadline)) return Got::timeout;
    }
    return Got::bytes;
  }

 private:
  bool wait(short events, Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, events, 0};
    return ::poll(&p, 1, static_cast<int>(left)) > 0;
  }
  int fd_ = -1;
};

// ---- packets ---------------------------------------------------------------------------------

std::string encode(const mqtt::Packet& p, mqtt::ProtocolVersion v) {
  std::string out;
  REQUIRE(mqtt::encode(p, v, out));
  return out;
}

std::string frame(std::uint8_t first, std::string_view body) {
  std::string out(1, static_cast<char>(first));
  mqtt::append_varint(out, static_cast<std::uint32_t>(body.size()));
  out.append(body);
  return out;
}

// The body of a framed packet (after the fixed header).
std::string_view body_of(std::string_view packet) {
  std::size_t i = 1;
  while (i < packet.size() && (static_cast<std::uint8_t>(packet[i]) & 0x80u)) ++i;
  return packet.substr(i + 1);
}

std::string connect_bytes(mqtt::ProtocolVersion v, const std::string& id, bool full = false) {
  mqtt::Connect c;
  c.version = v;
  c.client_id = id;
  c.keep_alive = 60;
  c.clean_start = true;
  if (full) {
    mqtt::Will& w = c.will.emplace();
    w.topic = "will/t";
    w.payload = "bye";
    w.qos = 1;
    c.username = std::string_view("user");
    c.password = std::string_view("pass");
    if (v == mqtt::ProtocolVersion::v5) {
      c.properties.session_expiry_interval = 10;
      c.properties.receive_maximum = 10;
      c.properties.user_properties.push_back({"k", "v"});
      w.properties.message_expiry_interval = 10;
    }
  }
  return encode(mqtt::Packet(c), v);
}

// Valid packets of every type a client may or may not send, after CONNECT.
std::vector<std::string> packets_of_every_type(mqtt::ProtocolVersion v) {
  const bool v5 = v == mqtt::ProtocolVersion::v5;
  std::vector<std::string> out;
  for (std::uint8_t qos = 0; qos <= 2; ++qos) {
    mqtt::Publish p;
    p.topic = "a/b";
    p.qos = qos;
    p.packet_id = qos ? 7 : 0;
    p.payload = "payload";
    if (v5) {
      p.properties.message_expiry_interval = 60;
      p.properties.content_type = std::string_view("text/plain");
      p.properties.user_properties.push_back({"k", "v"});
    }
    out.push_back(encode(mqtt::Packet(p), v));
  }
  mqtt::Puback pa;
  pa.packet_id = 3;
  mqtt::Pubrec prec;
  prec.packet_id = 3;
  mqtt::Pubrel prel;
  prel.packet_id = 3;
  mqtt::Pubcomp pcomp;
  pcomp.packet_id = 3;
  if (v5) {
    pa.reason_code = ReasonCode::no_matching_subscribers;
    pa.properties.reason_string = std::string_view("r");
    prec.reason_code = ReasonCode::no_matching_subscribers;
    prel.reason_code = ReasonCode::packet_identifier_not_found;
    pcomp.reason_code = ReasonCode::packet_identifier_not_found;
  }
  out.push_back(encode(mqtt::Packet(pa), v));
  out.push_back(encode(mqtt::Packet(prec), v));
  out.push_back(encode(mqtt::Packet(prel), v));
  out.push_back(encode(mqtt::Packet(pcomp), v));
  mqtt::Subscribe s;
  s.packet_id = 9;
  s.subscriptions.push_back({"x/+", 1});
  s.subscriptions.push_back({"y/#", 2});
  if (v5) s.properties.subscription_identifiers.push_back(5);
  out.push_back(encode(mqtt::Packet(s), v));
  mqtt::Unsubscribe u;
  u.packet_id = 10;
  u.filters = {"x/+", "y/#"};
  out.push_back(encode(mqtt::Packet(u), v));
  out.push_back(encode(mqtt::Packet(mqtt::Pingreq{}), v));
  // Packets only a server sends.
  mqtt::Connack ca;
  out.push_back(encode(mqtt::Packet(ca), v));
  mqtt::Suback sa;
  sa.packet_id = 9;
  sa.reason_codes = {ReasonCode::granted_qos_1};
  out.push_back(encode(mqtt::Packet(sa), v));
  mqtt::Unsuback ua;
  ua.packet_id = 10;
  if (v5) ua.reason_codes = {ReasonCode::success};
  out.push_back(encode(mqtt::Packet(ua), v));
  out.push_back(encode(mqtt::Packet(mqtt::Pingresp{}), v));
  if (v5) {
    mqtt::Auth a;
    a.reason_code = ReasonCode::continue_authentication;
    a.properties.authentication_method = std::string_view("SCRAM");
    out.push_back(encode(mqtt::Packet(a), v));
  }
  out.push_back(connect_bytes(v, "second"));  // a second CONNECT
  mqtt::Disconnect d;
  out.push_back(encode(mqtt::Packet(d), v));
  return out;
}

// Every hostile variant of `packet`: each shorter body with the remaining length saying so,
// each other fixed-header flag value, and the body with one byte too many.
std::vector<std::string> variants_of(std::string_view packet) {
  const auto first = static_cast<std::uint8_t>(packet[0]);
  const std::string_view body = body_of(packet);
  std::vector<std::string> out;
  for (std::size_t n = 0; n < body.size(); ++n) out.push_back(frame(first, body.substr(0, n)));
  for (std::uint8_t flags = 0; flags < 16; ++flags) {
    const auto f = static_cast<std::uint8_t>((first & 0xF0u) | flags);
    if (f != first) out.push_back(frame(f, body));
  }
  out.push_back(frame(first, std::string(body) + '\x00'));
  return out;
}

// ---- the server --------------------------------------------------------------------------------

std::int64_t rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

struct HostileServer {
  TempDir dir;
  TestCa ca{dir};
  std::uint16_t mqtt_port = free_port();
  std::uint16_t tls_port = free_port();
  std::uint16_t ws_port = free_port();
  std::uint16_t proxy_port = free_port();
  std::uint16_t api_port = free_port();
  std::uint16_t cluster_port = free_port();
  BackgroundProcess process;

  bool start() {
    const auto server = ca.issue("server", "localhost", 30, true);
    const std::string config = dir.file("config.yaml");
    std::ofstream(config) << "mqtt:\n  port: " << mqtt_port << "\n  bind: 127.0.0.1\n"
                          << "  tls:\n    port: " << tls_port << "\n    cert: " << server.first
                          << "\n    key: " << server.second << "\n"
                          << "  websocket:\n    port: " << ws_port << "\n    path: /mqtt\n"
                          << "  listeners:\n    - {type: tcp, port: " << proxy_port
                          << ", proxy_protocol: true}\n"
                          << "api:\n  port: " << api_port << "\n  bind: 127.0.0.1\n"
                          << "cluster:\n  node_name: hostile\n  bind: 127.0.0.1\n  port: "
                          << cluster_port << "\n  expected_members: 1\n"
                          << "  config:\n    secret_key: \"0123456789abcdef0123456789abcdef\"\n"
                          << "discovery:\n  members: [\"127.0.0.1:" << cluster_port << "\"]\n"
                          << "log:\n  level: error\n";
    if (!process.start({BROKERHA_SERVER_PATH, "--config", config})) return false;
    return process.wait_output(
        [](const std::string& out) { return out.find("cluster node") != std::string::npos; },
        std::chrono::seconds(15));
  }

  /// Reads the server's output pipes so that its logging never blocks on them.
  void pump() {
    process.wait_output([](const std::string&) { return false; }, milliseconds(1));
  }

  std::int64_t rss() const { return rss_kib(process.pid()); }

  /// True when the process is alive and a fresh MQTT client connects and gets a PINGRESP.
  bool answers() {
    pump();
    if (!process.running() || ::kill(process.pid(), 0) != 0) return false;
    Sock c;
    if (!c.open(mqtt_port)) return false;
    if (!c.send(connect_bytes(mqtt::ProtocolVersion::v311, "control-check"))) return false;
    std::string in;
    if (c.read_until(
            in, [](const std::string& s) { return s.size() >= 4; }, milliseconds(3000)) !=
        Sock::Got::bytes) {
      return false;
    }
    if (static_cast<std::uint8_t>(in[0]) != 0x20 || in[3] != 0) return false;
    in.clear();
    if (!c.send(std::string("\xC0\x00", 2))) return false;
    return c.read_until(
               in, [](const std::string& s) { return s.size() >= 2; }, milliseconds(3000)) ==
               Sock::Got::bytes &&
           static_cast<std::uint8_t>(in[0]) == 0xD0;
  }

  /// An HTTP GET on the API; the status line ("" when none came).
  std::string http_get(const std::string& path) {
    Sock c;
    if (!c.open(api_port)) return {};
    if (!c.send("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")) {
      return {};
    }
    std::string in;
    c.read_until(
        in, [](const std::string& s) { return s.find("\r\n") != std::string::npos; },
        milliseconds(3000));
    return in.substr(0, in.find("\r\n"));
  }
};

/// Round trips of a QoS 0 publish to a topic the control client subscribes to.
class ControlClient {
 public:
  bool open(std::uint16_t port) {
    if (!sock_.open(port)) return false;
    if (!sock_.send(connect_bytes(mqtt::ProtocolVersion::v311, "control"))) return false;
    std::string in;
    if (sock_.read_until(
            in, [](const std::string& s) { return s.size() >= 4; }, milliseconds(3000)) !=
        Sock::Got::bytes) {
      return false;
    }
    mqtt::Subscribe sub;
    sub.packet_id = 1;
    sub.subscriptions.push_back({"control/echo", 0});
    if (!sock_.send(encode(mqtt::Packet(sub), mqtt::ProtocolVersion::v311))) return false;
    in.clear();
    return sock_.read_until(
               in, [](const std::string& s) { return s.size() >= 5; }, milliseconds(3000)) ==
               Sock::Got::bytes &&
           static_cast<std::uint8_t>(in[0]) == 0x90;
  }

  /// One publish -> delivery round trip in milliseconds; negative when it failed.
  double round_trip() {
    mqtt::Publish p;
    p.topic = "control/echo";
    p.payload = "ping";
    const std::string bytes = encode(mqtt::Packet(p), mqtt::ProtocolVersion::v311);
    const auto start = Clock::now();
    if (!sock_.send(bytes)) return -1;
    std::string in;
    if (sock_.read_until(
            in, [&](const std::string& s) { return s.size() >= bytes.size(); },
            milliseconds(3000)) != Sock::Got::bytes) {
      return -1;
    }
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }

  /// p99 of `n` round trips, `pace` apart; `failures` counts the ones that failed.
  double p99(int n, milliseconds pace, int& failures) {
    std::vector<double> times;
    failures = 0;
    for (int i = 0; i < n; ++i) {
      const double t = round_trip();
      if (t < 0) {
        ++failures;
      } else {
        times.push_back(t);
      }
      if (pace.count() > 0) std::this_thread::sleep_for(pace);
    }
    if (times.empty()) return 1e9;
    std::sort(times.begin(), times.end());
    return times[std::min(times.size() - 1, times.size() * 99 / 100)];
  }

 private:
  Sock sock_;
};

/// What a connection did after a hostile packet and a PINGREQ: closed, or answered the PINGREQ.
enum class Outcome { closed, answered, hung };

Outcome after(Sock& c) {
  // The PINGREQ after the case: answered when the case was harmless, else the server closes.
  if (!c.send(std::string("\xC0\x00", 2), milliseconds(500))) return Outcome::closed;
  std::string in;
  auto has_pingresp = [](const std::string& s) {
    // A PINGRESP ends the stream of answers (nothing follows the PINGREQ we sent last).
    return s.size() >= 2 && s.compare(s.size() - 2, 2, std::string("\xD0\x00", 2)) == 0;
  };
  switch (c.read_until(in, has_pingresp, milliseconds(3000))) {
    case Sock::Got::bytes:
      return Outcome::answered;
    case Sock::Got::closed:
      return Outcome::closed;
    case Sock::Got::timeout:
      break;
  }
  return Outcome::hung;
}

}  // namespace

TEST_CASE(
    "hostile server: malformed and truncated packets of every type in MQTT 3.1, 3.1.1 and 5.0") {
  HostileServer server;
  REQUIRE(server.start());
  INFO(server.process.describe());
  const auto started = Clock::now();
  const std::int64_t rss_before = server.rss();
  std::size_t cases = 0;
  std::size_t closed = 0;
  std::size_t answered = 0;
  std::vector<std::string> hung;
  using V = mqtt::ProtocolVersion;
  for (const V v : {V::v31, V::v311, V::v5}) {
    const std::string name = v == V::v5 ? "5.0" : v == V::v311 ? "3.1.1" : "3.1";
    // Before CONNECT: every truncation and flag variant of a CONNECT with every field.
    for (const std::string& bad : variants_of(connect_bytes(v, "hostile-c", true))) {
      Sock c;
      REQUIRE(c.open(server.mqtt_port));
      REQUIRE(c.send(bad));
      ++cases;
      std::string in;
      // Nothing here is a valid CONNECT but the one extra byte's: the server refuses and
      // closes (a CONNACK first is allowed).
      const auto got = c.read_until(
          in, [](const std::string&) { return false; }, milliseconds(3000));
      if (got == Sock::Got::closed) {
        ++closed;
      } else {
        hung.push_back(name + " CONNECT " + raw::to_hex(bad, 24));
      }
    }
    // After CONNECT: every packet type, valid, truncated and with every flag value.
    for (const std::string& good : packets_of_every_type(v)) {
      std::vector<std::string> all = variants_of(good);
      all.push_back(good);
      for (const std::string& bad : all) {
        Sock c;
        REQUIRE(c.open(server.mqtt_port));
        REQUIRE(c.send(connect_bytes(v, "hostile-" + std::to_string(cases % 7))));
        std::string in;
        REQUIRE(c.read_until(
                    in, [](const std::string& s) { return s.size() >= 4; }, milliseconds(3000)) ==
                Sock::Got::bytes);
        c.send(bad, milliseconds(500));
        ++cases;
        switch (after(c)) {
          case Outcome::closed:
            ++closed;
            break;
          case Outcome::answered:
            ++answered;
            break;
          case Outcome::hung:
            hung.push_back(name + " " + raw::to_hex(bad, 24));
            break;
        }
      }
      server.pump();
    }
  }
  const std::int64_t rss_after = server.rss();
  const auto seconds = std::chrono::duration<double>(Clock::now() - started).count();
  MESSAGE("hostile packets: " << cases << " cases (" << closed << " closed, " << answered
                              << " answered) in " << seconds << " s; RSS " << rss_before
                              << " KiB -> " << rss_after << " KiB");
  for (const std::string& h : hung) MESSAGE("no answer and no close: " << h);
  CHECK(hung.empty());
  CHECK(cases > 1000);
  CHECK(server.answers());
  CHECK(rss_after - rss_before < kMaxRssGrowthKib);
}

TEST_CASE(
    "hostile server: 1000 slowloris connections at every stage, RSS and a control client's p99") {
  HostileServer server;
  REQUIRE(server.start());
  INFO(server.process.describe());
  ControlClient control;
  REQUIRE(control.open(server.mqtt_port));
  int failures = 0;
  const double p99_quiet = control.p99(100, milliseconds(1), failures);
  CHECK(failures == 0);
  const std::int64_t rss_before = server.rss();
  const auto started = Clock::now();

  // 250 connections at each stage: TCP connected and silent; a TLS ClientHello cut short; a
  // WebSocket upgrade request without its end; an MQTT CONNECT cut short. Each is trickled one
  // more byte (or header line) a second, as slowloris does.
  constexpr int kPerStage = 250;
  const std::string tls_start = raw::hex("16 03 01 02 00 01 00 01 FC 03 03");  // ClientHello
  const std::string ws_start = "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  const std::string connect_start = raw::hex("10 7F 00 04 'MQTT' 04 02 00 3C 00 6F");
  struct Stage {
    const char* name;
    std::uint16_t port;
    std::string start;
    std::string trickle;
  };
  const Stage stages[] = {{"tcp", server.mqtt_port, "", ""},
                          {"tls handshake", server.tls_port, tls_start, std::string(1, '\x00')},
                          {"websocket upgrade", server.ws_port, ws_start, "X-Slow: 1\r\n"},
                          {"connect", server.mqtt_port, connect_start, "a"}};
  std::vector<std::pair<const Stage*, Sock>> slow;
  slow.reserve(4 * kPerStage);
  for (const Stage& st : stages) {
    for (int i = 0; i < kPerStage; ++i) {
      Sock s;
      REQUIRE(s.open(st.port));
      if (!st.start.empty()) REQUIRE(s.send(st.start));
      slow.emplace_back(&st, std::move(s));
    }
    server.pump();
  }
  const double open_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  // Hold them for three seconds of trickling while the control client measures.
  std::vector<double> p99s;
  int control_failures = 0;
  for (int second = 0; second < 3; ++second) {
    for (auto& [st, s] : slow) {
      if (!st->trickle.empty()) s.send_some(st->trickle);
    }
    server.pump();
    int f = 0;
    p99s.push_back(control.p99(200, milliseconds(5), f));
    control_failures += f;
  }
  const std::int64_t rss_held = server.rss();
  // How many of the slow connections the server still holds open (it may close them early).
  std::size_t open_now = 0;
  for (auto& [st, s] : slow) {
    std::string in;
    if (s.read_until(
            in, [](const std::string&) { return false; }, milliseconds(0)) == Sock::Got::timeout) {
      ++open_now;
    }
  }
  slow.clear();
  const double p99 = *std::max_element(p99s.begin(), p99s.end());
  const auto seconds = std::chrono::duration<double>(Clock::now() - started).count();
  MESSAGE("slowloris: " << 4 * kPerStage << " connections opened in " << open_seconds << " s, "
                        << open_now << " still open after 3 s; RSS " << rss_before << " KiB -> "
                        << rss_held << " KiB (+" << (rss_held - rss_before) / 1024
                        << " MiB); control p99 " << p99_quiet << " ms quiet, " << p99
                        << " ms under load; " << seconds << " s");
  CHECK(control_failures == 0);
  CHECK(rss_held - rss_before < kMaxRssGrowthKib);
  CHECK(p99 < kMaxControlP99Ms);
  CHECK(server.answers());
}

TEST_CASE("hostile server: PINGREQ and SUBSCRIBE floods from clients that never read") {
  HostileServer server;
  REQUIRE(server.start());
  INFO(server.process.describe());
  const std::int64_t rss_before = server.rss();
  const auto started = Clock::now();

  // 2 MB of PINGREQ (a million) from a client with a small receive buffer that never reads.
  {
    Sock c;
    REQUIRE(c.open(server.mqtt_port, SOCK_STREAM, 4096));
    REQUIRE(c.send(connect_bytes(mqtt::ProtocolVersion::v311, "ping-flood")));
    std::string pings;
    for (int i = 0; i < 64 * 1024; ++i) pings.append("\xC0\x00", 2);
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    std::size_t sent = 0;
    while (sent < 2 * 1024 * 1024 && Clock::now() < deadline) {
      if (!c.send(pings, milliseconds(200))) break;
      sent += pings.size();
    }
    server.pump();
    MESSAGE("PINGREQ flood: " << sent
                              << " bytes sent before the server stopped reading or "
                                 "closed; RSS "
                              << server.rss() << " KiB");
  }
  CHECK(server.answers());
  const std::int64_t rss_after_ping = server.rss();

  // 20,000 SUBSCRIBE packets with distinct filters, then one with 1,000 filters.
  {
    Sock c;
    REQUIRE(c.open(server.mqtt_port));
    REQUIRE(c.send(connect_bytes(mqtt::ProtocolVersion::v311, "sub-flood")));
    std::string burst;
    std::vector<std::string> names;
    names.reserve(20000);
    for (int i = 0; i < 20000; ++i) names.push_back("flood/" + std::to_string(i) + "/+");
    for (int i = 0; i < 20000; ++i) {
      mqtt::Subscribe s;
      s.packet_id = static_cast<std::uint16_t>(i % 65535 + 1);
      s.subscriptions.push_back({names[static_cast<std::size_t>(i)], 1});
      burst += encode(mqtt::Packet(s), mqtt::ProtocolVersion::v311);
    }
    mqtt::Subscribe big;
    big.packet_id = 1;
    for (int i = 0; i < 1000; ++i)
      big.subscriptions.push_back({names[static_cast<std::size_t>(i)], 0});
    burst += encode(mqtt::Packet(big), mqtt::ProtocolVersion::v311);
    c.send(burst, milliseconds(10000));
    std::string in;
    c.read_until(
        in, [&](const std::string& s) { return s.size() >= 20000 * 5; }, milliseconds(10000));
    server.pump();
    MESSAGE("SUBSCRIBE flood: " << in.size() << " bytes of answers; RSS " << server.rss()
                                << " KiB");
  }
  CHECK(server.answers());
  const std::int64_t rss_after = server.rss();
  const auto seconds = std::chrono::duration<double>(Clock::now() - started).count();
  MESSAGE("floods: RSS " << rss_before << " KiB -> " << rss_after_ping << " (ping) -> " << rss_after
                         << " KiB (subscribe); " << seconds << " s");
  CHECK(rss_after_ping - rss_before < kMaxRssGrowthKib);
  CHECK(rss_after - rss_before < kMaxRssGrowthKib);
}

// Each WebSocket ping is answered with a pong the client must read: one that never reads
// may cost the server its output backlog, not what it sends.
TEST_CASE("hostile server: WebSocket pings from a client that never reads its pongs") {
  HostileServer server;
  REQUIRE(server.start());
  INFO(server.process.describe());
  const std::int64_t rss_before = server.rss();
  const auto started = Clock::now();
  WsClient ws;
  REQUIRE(ws.open(server.ws_port, "/mqtt").rfind("HTTP/1.1 101", 0) == 0);
  std::string pings;
  const std::string payload(125, 'p');
  for (int i = 0; i < 1024; ++i) pings += ws_frame(0x9, payload);
  // 80 MB of pings, as long as the server takes them (it may stop reading or close).
  const auto deadline = Clock::now() + std::chrono::seconds(8);
  std::size_t sent = 0;
  while (sent < 80u * 1024 * 1024 && Clock::now() < deadline) {
    if (!ws.wire.send(pings, milliseconds(500))) break;
    sent += pings.size();
  }
  server.pump();
  std::this_thread::sleep_for(milliseconds(200));  // what the server has read, it has handled
  const std::int64_t rss_flooded = server.rss();   // the flooding client is still connected
  ws.wire.close();
  const auto seconds = std::chrono::duration<double>(Clock::now() - started).count();
  MESSAGE("WebSocket ping flood: " << sent << " bytes sent; RSS " << rss_before << " KiB -> "
                                   << rss_flooded << " KiB while connected; " << seconds << " s");
  CHECK(rss_flooded - rss_before < kMaxRssGrowthKib);
  CHECK(server.answers());
}

TEST_CASE("hostile server: oversized packets, fields, frames and headers on every listener") {
  HostileServer server;
  REQUIRE(server.start());
  INFO(server.process.describe());
  const std::int64_t rss_before = server.rss();
  std::vector<std::string> failed;
  auto expect_closed = [&](const char* what, std::uint16_t port, const std::string& bytes,
                           bool after_connect) {
    Sock c;
    REQUIRE(c.open(port));
    if (after_connect) {
      REQUIRE(c.send(connect_bytes(mqtt::ProtocolVersion::v5, "big")));
      std::string in;
      REQUIRE(c.read_until(
                  in, [](const std::string& s) { return s.size() >= 4; }, milliseconds(3000)) ==
              Sock::Got::bytes);
    }
    c.send(bytes, milliseconds(3000));
    std::string in;
    if (c.read_until(
            in, [](const std::string&) { return false; }, milliseconds(5000)) !=
        Sock::Got::closed) {
      failed.push_back(what);
    }
    server.pump();
  };
  // A remaining length at its maximum: refused from the fixed header (0x95), body never read.
  expect_closed("PUBLISH of 256 MiB", server.mqtt_port, raw::hex("30 FF FF FF 7F 00 01 'a'"), true);
  expect_closed("CONNECT of 256 MiB", server.mqtt_port, raw::hex("10 FF FF FF 7F 00 04 'MQTT'"),
                false);
  // A 17 MiB PUBLISH sent whole (above the default 16 MiB maximum packet size).
  {
    std::string big = frame(0x30, raw::str("a") + std::string(17u * 1024 * 1024, 'x'));
    expect_closed("PUBLISH of 17 MiB sent whole", server.mqtt_port, big, true);
  }
  // CONNECT with a 65,535-byte client id, user name and password: accepted or refused, but
  // answered; then a v5 CONNECT with 20,000 user properties.
  {
    mqtt::Connect c;
    c.version = mqtt::ProtocolVersion::v5;
    const std::string id(65535, 'i');
    c.client_id = id;
    c.username = std::string_view(id);
    c.password = std::string_view(id);
    const std::string k(100, 'k');
    for (int i = 0; i < 20000; ++i) c.properties.user_properties.push_back({k, k});
    Sock s;
    REQUIRE(s.open(server.mqtt_port));
    s.send(encode(mqtt::Packet(c), mqtt::ProtocolVersion::v5), milliseconds(5000));
    std::string in;
    const auto got = s.read_until(
        in, [](const std::string& x) { return x.size() >= 4; }, milliseconds(5000));
    if (got == Sock::Got::timeout) failed.push_back("CONNECT with 4 MB of fields");
    server.pump();
  }
  // A WebSocket frame claiming 2^62 bytes, and an HTTP upgrade request line of 1 MB.
  {
    WsClient ws;
    REQUIRE(ws.open(server.ws_port, "/mqtt").rfind("HTTP/1.1 101", 0) == 0);
    ws.wire.send(raw::hex("82 FF 40 00 00 00 00 00 00 00 01 02 03 04"));
    if (!ws.wire.wait_closed(milliseconds(5000))) failed.push_back("WebSocket frame of 2^62");
  }
  expect_closed("HTTP request line of 1 MB", server.ws_port,
                "GET /" + std::string(1024 * 1024, 'a') + " HTTP/1.1\r\n", false);
  expect_closed(
      "HTTP headers of 1 MB", server.ws_port,
      "GET /mqtt HTTP/1.1\r\n" + std::string(1024 * 1024 / 16, 'h') + ": 1\r\n" +
          [] {
            std::string h;
            for (int i = 0; i < 65536; ++i) h += "X-" + std::to_string(i) + ": 1\r\n";
            return h;
          }(),
      false);
  // A PROXY v1 header without its end, and a v2 header claiming 64 KiB of addresses.
  expect_closed("PROXY v1 header of 1 MB", server.proxy_port,
                "PROXY TCP4 " + std::string(1024 * 1024, '1'), false);
  expect_closed(
      "PROXY v2 header of 64 KiB", server.proxy_port,
      raw::hex("0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A 21 11 FF FF") + std::string(65535, '\x00'),
      false);
  // A TLS record of 1 MB of garbage, and a ClientHello record of the largest length.
  expect_closed("TLS garbage of 1 MB", server.tls_port,
                raw::hex("16 03 01 FF FF") + std::string(1024 * 1024, '\x01'), false);
  // The HTTP API: a 1 MB request line, 1 MB of headers, a body above its limit.
  {
    Sock c;
    REQUIRE(c.open(server.api_port));
    c.send("GET /" + std::string(1024 * 1024, 'a') + " HTTP/1.1\r\n\r\n", milliseconds(3000));
    std::string in;
    c.read_until(
        in, [](const std::string&) { return false; }, milliseconds(5000));
    if (in.find(" 414 ") == std::string::npos && in.find(" 400 ") == std::string::npos &&
        !in.empty()) {
      failed.push_back("API request line of 1 MB: " + in.substr(0, 40));
    }
  }
  {
    Sock c;
    REQUIRE(c.open(server.api_port));
    std::string h = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 65536; ++i) h += "X-" + std::to_string(i) + ": 1\r\n";
    c.send(h + "\r\n", milliseconds(5000));
    std::string in;
    c.read_until(
        in, [](const std::string&) { return false; }, milliseconds(5000));
  }
  {
    Sock c;
    REQUIRE(c.open(server.api_port));
    c.send(
        "POST /api/sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2000000000\r\n\r\n{",
        milliseconds(3000));
    std::string in;
    c.read_until(
        in, [](const std::string& s) { return s.find("\r\n") != std::string::npos; },
        milliseconds(5000));
    // 413, or closed once the body passed the limit.
    if (!in.empty() && in.find(" 413 ") == std::string::npos) {
      failed.push_back("API body of 2 GB: " + in);
    }
  }
  server.pump();
  const std::int64_t rss_after = server.rss();
  MESSAGE("oversized: RSS " << rss_before << " KiB -> " << rss_after << " KiB");
  for (const std::string& f : failed) MESSAGE("not refused: " << f);
  CHECK(failed.empty());
  CHECK(server.answers());
  // A one-node cluster is "not joined" for /healthz (503); the API must still answer it.
  CHECK(server.http_get("/healthz").rfind("HTTP/1.1 ", 0) == 0);
  CHECK(server.http_get("/metrics").find(" 200 ") != std::string::npos);
  CHECK(rss_after - rss_before < kMaxRssGrowthKib);
}

TEST_CASE("hostile server: garbage on the cluster port (TCP and UDP) and on the API port") {
  HostileServer server;
  REQUIRE(server.start());
  INFO(server.process.describe());
  const std::int64_t rss_before = server.rss();
  std::mt19937 rng(20);
  auto garbage = [&](std::size_t n) {
    std::string g(n, '\0');
    for (char& c : g) c = static_cast<char>(rng());
    return g;
  };
  int tcp_cases = 0;
  // TCP: 50 connections of random bytes, some starting like the link or membership framing.
  for (int i = 0; i < 50; ++i) {
    Sock c;
    REQUIRE(c.open(server.cluster_port));
    std::string g = garbage(1 + rng() % 65536);
    if (i % 5 == 0) g[0] = '\x00';  // membership's ping message type
    if (i % 5 == 1) g[0] = '\x0C';  // membership's compressed type
    c.send(g, milliseconds(2000));
    std::string in;
    c.read_until(
        in, [](const std::string&) { return false; }, milliseconds(i < 5 ? 2000 : 20));
    ++tcp_cases;
  }
  // UDP: 2,000 datagrams of random bytes.
  {
    Sock u;
    REQUIRE(u.open(server.cluster_port, SOCK_DGRAM));
    for (int i = 0; i < 2000; ++i) u.send_some(garbage(1 + rng() % 1400));
  }
  server.pump();
  // The API: 50 connections of random bytes and of broken HTTP.
  const char* broken[] = {"GET\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "\r\n\r\n\r\n",
                          "POST /api/sse HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                          "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"};
  int api_cases = 0;
  for (int i = 0; i < 50; ++i) {
    Sock c;
    REQUIRE(c.open(server.api_port));
    c.send(i < 5 ? std::string(broken[i]) : garbage(1 + rng() % 16384), milliseconds(2000));
    std::string in;
    c.read_until(
        in, [](const std::string&) { return false; }, milliseconds(i < 5 ? 2000 : 20));
    ++api_cases;
  }
  server.pump();
  const std::int64_t rss_after = server.rss();
  MESSAGE("garbage: " << tcp_cases << " cluster TCP connections, 2000 UDP datagrams, " << api_cases
                      << " API connections; RSS " << rss_before << " KiB -> " << rss_after
                      << " KiB");
  CHECK(server.answers());
  CHECK(server.http_get("/healthz").rfind("HTTP/1.1 ", 0) == 0);
  CHECK(server.http_get("/metrics").find(" 200 ") != std::string::npos);
  CHECK(rss_after - rss_before < kMaxRssGrowthKib);
}

#endif
