// SPDX-License-Identifier: Apache-2.0
// PROXY protocol v1 and v2 (opt-in per listener): the client's real address reaches the auth
// rules and the client snapshots (the HTTP API); truncated and malformed headers and a header
// sent to a listener without PROXY enabled are refused.

#include <arpa/inet.h>
#include <doctest/doctest.h>

#include <cstring>
#include <thread>
#include <tuple>

#include "support/listener_support.hpp"

using namespace brokerha;
using namespace brokerha::test;
using namespace brokerha::test::listeners;

namespace {

std::string v2_header(std::uint8_t ver_cmd, std::uint8_t family, const std::string& addresses) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h.push_back(static_cast<char>(ver_cmd));
  h.push_back(static_cast<char>(family));
  h.push_back(static_cast<char>(addresses.size() >> 8));
  h.push_back(static_cast<char>(addresses.size() & 0xFF));
  return h + addresses;
}

std::string v2_tcp4(const char* src, std::uint16_t sport) {
  std::string a(12, '\0');
  in_addr s{};
  inet_pton(AF_INET, src, &s);
  std::memcpy(a.data(), &s, 4);
  a[4] = 10;  // destination 10.0.0.1
  a[7] = 1;
  a[8] = static_cast<char>(sport >> 8);
  a[9] = static_cast<char>(sport & 0xFF);
  a[10] = 0x07;
  a[11] = 0x5B;
  return v2_header(0x21, 0x11, a);
}

std::string v2_tcp6(const char* src, std::uint16_t sport) {
  std::string a(36, '\0');
  in6_addr s{};
  inet_pton(AF_INET6, src, &s);
  std::memcpy(a.data(), &s, 16);
  a[31] = 1;
  a[32] = static_cast<char>(sport >> 8);
  a[33] = static_cast<char>(sport & 0xFF);
  return v2_header(0x21, 0x21, a);
}

// Sends `header` then CONNECT as `id`; true when CONNACK accepted it.
bool connects_with(std::uint16_t port, const std::string& header, const std::string& id) {
  Wire w;
  if (!w.open(port)) return false;
  if (!w.send(header + connect_packet(id))) return false;
  return is_connack_ok(w.receive_mqtt());
}

std::string remote_of(Broker& b, const std::string& id) {
  const auto c = find_client(b, id);
  return c ? c->remote_address : std::string("<none>");
}

}  // namespace

TEST_CASE("proxy: v1 and v2 headers give the real client address") {
  ListenerBroker b({listener(ListenerType::tcp, true)});
  const std::uint16_t port = b.ports[0];
  const std::vector<std::tuple<std::string, std::string, std::string>> cases{
      {"v1", "PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n", "203.0.113.7"},
      {"v1six", "PROXY TCP6 2001:db8::5 2001:db8::1 4000 1883\r\n", "2001:db8::5"},
      {"v1unknown", "PROXY UNKNOWN\r\n", "127.0.0.1"},
      {"v2six", v2_tcp6("2001:db8::77", 1234), "2001:db8::77"},
      // LOCAL (a health check of the load balancer): the socket's address stays.
      {"v2local", v2_header(0x20, 0x00, ""), "127.0.0.1"},
  };
  std::vector<std::unique_ptr<Wire>> wires;
  for (const auto& c : cases) {
    const std::string id = std::get<0>(c);
    CAPTURE(id);
    auto w = std::make_unique<Wire>();
    REQUIRE(w->open(port));
    REQUIRE(w->send(std::get<1>(c) + connect_packet(id)));
    REQUIRE(is_connack_ok(w->receive_mqtt()));
    CHECK(remote_of(b.broker(), id) == std::get<2>(c));
    wires.push_back(std::move(w));
  }

  Wire v2;
  REQUIRE(v2.open(port));
  // Split in the middle of the header: it is reassembled.
  const std::string h = v2_tcp4("198.51.100.9", 40000);
  REQUIRE(v2.send(h.substr(0, 7)));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  REQUIRE(v2.send(h.substr(7) + connect_packet("v2")));
  REQUIRE(is_connack_ok(v2.receive_mqtt()));
  CHECK(remote_of(b.broker(), "v2") == "198.51.100.9");
}

TEST_CASE("proxy: auth remote rules see the address from the header") {
  BrokerOptions o;
  AuthRule lan;
  lan.remote = "10.0.0.0/8";
  lan.allow = true;
  o.access.auth.push_back(lan);
  ListenerBroker b({listener(ListenerType::tcp, true)}, o);
  CHECK(connects_with(b.ports[0], "PROXY TCP4 10.1.2.3 10.0.0.1 5000 1883\r\n", "inside"));
  CHECK_FALSE(connects_with(b.ports[0], "PROXY TCP4 192.0.2.1 10.0.0.1 5000 1883\r\n", "outside"));
  CHECK(connects_with(b.ports[0], v2_tcp4("10.9.9.9", 1), "inside-v2"));
}

TEST_CASE("proxy: truncated and malformed headers are refused") {
  BrokerOptions o;
  o.connect_timeout = std::chrono::milliseconds(300);
  ListenerBroker b({listener(ListenerType::tcp, true)}, o);
  const std::vector<std::pair<const char*, std::string>> bad{
      {"no header", connect_packet("x")},
      {"bad v1 address", "PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\n"},
      {"v1 family mismatch", "PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"},
      {"v1 bad port", "PROXY TCP4 1.2.3.4 10.0.0.1 70000 2\r\n"},
      {"v1 too long", "PROXY TCP4 " + std::string(120, '1')},
      {"v1 missing fields", "PROXY TCP4 1.2.3.4\r\n"},
      {"v2 bad version", v2_header(0x31, 0x11, std::string(12, '\0'))},
      {"v2 short addresses", v2_header(0x21, 0x11, std::string(4, '\0'))},
      {"v2 too long", v2_header(0x21, 0x11, std::string(2000, '\0'))},
  };
  for (const auto& item : bad) {
    const std::string name = item.first;
    const std::string& bytes = item.second;
    CAPTURE(name);
    Wire w;
    REQUIRE(w.open(b.ports[0]));
    REQUIRE(w.send(bytes));
    CHECK(w.wait_closed());
  }
  // Truncated: the rest never comes; the connect timeout ends it.
  for (const std::string& part :
       {std::string("PROXY TCP4 1.2.3.4 10.0"), v2_tcp4("1.2.3.4", 1).substr(0, 20)}) {
    Wire w;
    REQUIRE(w.open(b.ports[0]));
    REQUIRE(w.send(part));
    CHECK(w.wait_closed(std::chrono::milliseconds(3000)));
  }
  CHECK(b.broker().clients().empty());
}

TEST_CASE("proxy: a header sent to a listener without PROXY enabled is refused") {
  ListenerBroker b({listener(ListenerType::tcp), listener(ListenerType::ws)});
  Wire tcp;
  REQUIRE(tcp.open(b.ports[0]));
  REQUIRE(tcp.send("PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n" + connect_packet("spoof")));
  CHECK(tcp.wait_closed());
  Wire tcp2;
  REQUIRE(tcp2.open(b.ports[0]));
  REQUIRE(tcp2.send(v2_tcp4("203.0.113.7", 1) + connect_packet("spoof2")));
  CHECK(tcp2.wait_closed());
  WsClient ws;
  const std::string head =
      ws.open(b.ports[1], "/mqtt", "mqtt", std::nullopt, "PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n");
  CHECK(head.rfind("HTTP/1.1 405", 0) == 0);
  CHECK(b.broker().clients().empty());
}

TEST_CASE("proxy: in front of WebSocket and TLS") {
  TempDir dir;
  TestCa ca(dir);
  const auto server = ca.issue("server", "localhost", 30, true);
  ListenerOptions ws = listener(ListenerType::ws, true);
  ListenerOptions tls = tls_listener(ListenerType::tls, server.first, server.second);
  tls.proxy_protocol = true;
  ListenerBroker b({ws, tls});
  WsClient c;
  const std::string head =
      c.open(b.ports[0], "/mqtt", "mqtt", std::nullopt, "PROXY TCP4 192.0.2.44 10.0.0.1 1 2\r\n");
  REQUIRE(head.rfind("HTTP/1.1 101", 0) == 0);
  REQUIRE(c.send_frame(0x2, connect_packet("ws-proxied")));
  REQUIRE(is_connack_ok(c.receive_mqtt()));
  CHECK(remote_of(b.broker(), "ws-proxied") == "192.0.2.44");
  // TLS: the header comes before the ClientHello, in clear.
  Wire t;
  REQUIRE(t.open(b.ports[1], TlsSettings{ca.cert(), {}, {}}, kWait, v2_tcp4("192.0.2.45", 9)));
  REQUIRE(t.send(connect_packet("tls-proxied")));
  REQUIRE(is_connack_ok(t.receive_mqtt()));
  CHECK(remote_of(b.broker(), "tls-proxied") == "192.0.2.45");
}
