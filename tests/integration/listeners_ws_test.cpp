// SPDX-License-Identifier: Apache-2.0
// MQTT over WebSocket (ws and wss): paho with transport="websockets", a browser-style
// handshake with the mqtt subprotocol, and a raw client for fragmentation, several packets in
// one frame, ping/pong, the close handshake, masking rules, oversized frames, invalid UTF-8 in
// a close reason, and hostile input next to other listeners.

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <thread>

#include "support/broker_process.hpp"
#include "support/listener_support.hpp"
#include "support/process_resources.hpp"

using namespace brokerha;
using namespace brokerha::test;
using namespace brokerha::test::listeners;

namespace {

// Status line of an HTTP response head.
std::string status_line(const std::string& head) { return head.substr(0, head.find("\r\n")); }

// A WebSocket client upgraded and MQTT-connected on `port`.
void ws_connect(WsClient& c, std::uint16_t port, const std::string& id) {
  const std::string head = c.open(port);
  REQUIRE(status_line(head) == "HTTP/1.1 101 Switching Protocols");
  REQUIRE(c.send_frame(0x2, connect_packet(id)));
  REQUIRE(is_connack_ok(c.receive_mqtt()));
}

}  // namespace

TEST_CASE("websocket: pings from a client that never reads cost bounded memory") {
  // Each ping is answered with a pong of the same payload. A client that streams pings and
  // reads nothing must not grow the broker by what it sends: before CONNECT and after it.
  ListenerBroker b({listener(ListenerType::ws)});
  for (const bool connected : {false, true}) {
    CAPTURE(connected);
    WsClient c;
    REQUIRE(status_line(c.open(b.ports[0])) == "HTTP/1.1 101 Switching Protocols");
    const int small = 4096;
    ::setsockopt(c.wire.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (connected) {
      REQUIRE(c.send_frame(0x2, connect_packet(std::string("pinger"))));
      REQUIRE(is_connack_ok(c.receive_mqtt()));
    }
    std::string chunk;
    while (chunk.size() < (1u << 20)) chunk += ws_frame(0x9, std::string(125, 'p'));
    const std::size_t before = resident_bytes();
    int sent_mib = 0;
    while (sent_mib < 32 && c.wire.send(chunk, std::chrono::milliseconds(1000))) ++sent_mib;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the broker reads on
    const std::size_t after = resident_bytes();
    const double grown_mib = static_cast<double>(after > before ? after - before : 0) / 1048576.0;
    INFO("sent " << sent_mib << " MiB of pings; resident set grew by " << grown_mib << " MiB");
    CHECK(grown_mib < 12.0);
  }
  // The broker still serves a well-behaved WebSocket client.
  WsClient ok;
  ws_connect(ok, b.ports[0], "after-pings");
}

TEST_CASE("websocket: paho over ws on a configured path") {
  ListenerOptions l = listener(ListenerType::ws);
  l.path = "/custom/mqtt";
  ListenerBroker b({l});
  const ProcessResult r = run_python(
      kPahoRoundTrip, {std::to_string(b.ports[0]), "websockets", "/custom/mqtt", "-", "-", "-"});
  INFO(r.describe());
  CHECK(r.ok());
  CHECK(has_line(r.out, "got=big70000"));
  CHECK(has_line(r.out, "got=hello-paho"));
}

TEST_CASE("websocket: paho over wss") {
  TempDir dir;
  TestCa ca(dir);
  const auto server = ca.issue("server", "localhost", 30, true);
  ListenerBroker b({tls_listener(ListenerType::wss, server.first, server.second)});
  const ProcessResult r = run_python(
      kPahoRoundTrip, {std::to_string(b.ports[0]), "websockets", "/mqtt", ca.cert(), "-", "-"});
  INFO(r.describe());
  CHECK(r.ok());
  CHECK(has_line(r.out, "got=hello-paho"));
  // And a raw client over TLS.
  WsClient c;
  const std::string head = c.open(b.ports[0], "/mqtt", "mqtt", TlsSettings{ca.cert(), {}, {}});
  CHECK(status_line(head) == "HTTP/1.1 101 Switching Protocols");
  REQUIRE(c.send_frame(0x2, connect_packet("raw-wss")));
  CHECK(is_connack_ok(c.receive_mqtt()));
}

TEST_CASE("websocket: browser-style handshake with the mqtt subprotocol") {
  ListenerBroker b({listener(ListenerType::ws)});
  WsClient c;
  const std::string head = c.open(b.ports[0], "/mqtt", "mqttv3.1, mqtt");
  INFO(head);
  CHECK(status_line(head) == "HTTP/1.1 101 Switching Protocols");
  // RFC 6455 1.3's example key and answer.
  CHECK(head.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos);
  CHECK(head.find("Sec-WebSocket-Protocol: mqtt\r\n") != std::string::npos);
  REQUIRE(c.send_frame(0x2, connect_packet("browser")));
  const auto f = c.read_frame();
  REQUIRE(f);
  CHECK(f->opcode == 0x2);
  CHECK(f->fin);
  CHECK_FALSE(f->masked);  // server frames are never masked
  CHECK(f->payload == std::string("\x20\x02\x00\x00", 4));
  CHECK(is_connected(b.broker(), "browser"));
}

TEST_CASE("websocket: handshake refusals") {
  ListenerBroker b({listener(ListenerType::ws)});
  {
    WsClient c;
    CHECK(status_line(c.open(b.ports[0], "/other")) == "HTTP/1.1 404 Not Found");
    CHECK(c.wire.wait_closed());
  }
  {
    WsClient c;
    CHECK(status_line(c.open(b.ports[0], "/mqtt", "chat")) == "HTTP/1.1 400 Bad Request");
  }
  {
    // No subprotocol named: served, and none is answered.
    WsClient c;
    const std::string head = c.open(b.ports[0], "/mqtt", "");
    CHECK(status_line(head) == "HTTP/1.1 101 Switching Protocols");
    CHECK(head.find("Sec-WebSocket-Protocol") == std::string::npos);
  }
  {
    // Not a WebSocket request at all.
    Wire w;
    REQUIRE(w.open(b.ports[0]));
    REQUIRE(w.send("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n"));
    const auto head = w.receive_until("\r\n\r\n");
    REQUIRE(head);
    CHECK(status_line(*head) == "HTTP/1.1 400 Bad Request");
  }
  {
    // An endless header is cut off.
    Wire w;
    REQUIRE(w.open(b.ports[0]));
    REQUIRE(w.send("GET /mqtt HTTP/1.1\r\n" + std::string(9000, 'a')));
    const auto head = w.receive_until("\r\n\r\n");
    REQUIRE(head);
    CHECK(status_line(*head) == "HTTP/1.1 431 Request Header Fields Too Large");
  }
}

TEST_CASE("websocket: fragmentation and several packets in one frame") {
  ListenerBroker b({listener(ListenerType::ws)});
  WsClient c;
  REQUIRE(status_line(c.open(b.ports[0])) == "HTTP/1.1 101 Switching Protocols");
  // CONNECT in three fragments, with a ping between them (control frames may interleave).
  const std::string connect = connect_packet("fragmented");
  REQUIRE(c.send_frame(0x2, connect.substr(0, 3), false));
  REQUIRE(c.send_frame(0x9, "ping-data"));
  const auto pong = c.read_frame();
  REQUIRE(pong);
  CHECK(pong->opcode == 0xA);
  CHECK(pong->payload == "ping-data");
  REQUIRE(c.send_frame(0x0, connect.substr(3, 5), false));
  REQUIRE(c.send_frame(0x0, connect.substr(8), true));
  REQUIRE(is_connack_ok(c.receive_mqtt()));
  // SUBSCRIBE + PUBLISH + PINGREQ in one frame, the PUBLISH split over the next frame too.
  mqtt::Subscribe sub;
  sub.packet_id = 7;
  mqtt::Subscription s;
  s.filter = "f/#";
  sub.subscriptions.push_back(s);
  mqtt::Publish pub;
  pub.topic = "f/x";
  pub.payload = "split-payload";
  const std::string pub_bytes = encode311(pub);
  const std::string all = encode311(sub) + pub_bytes + encode311(mqtt::Pingreq{});
  const std::size_t cut = all.size() - 6;
  REQUIRE(c.send_frame(0x2, all.substr(0, cut)));
  REQUIRE(c.send_frame(0x2, all.substr(cut)));
  const auto suback = c.receive_mqtt();
  REQUIRE(suback);
  CHECK(static_cast<std::uint8_t>((*suback)[0]) == 0x90);
  // The delivery to ourselves is routed, the PINGRESP answered at once: either order.
  const auto one = c.receive_mqtt();
  const auto two = c.receive_mqtt();
  REQUIRE(one);
  REQUIRE(two);
  const std::string pingresp("\xd0\x00", 2);
  CHECK(((*one == pub_bytes && *two == pingresp) || (*one == pingresp && *two == pub_bytes)));
  // An empty binary frame and an unsolicited pong are harmless.
  REQUIRE(c.send_frame(0x2, ""));
  REQUIRE(c.send_frame(0xA, "x"));
  REQUIRE(c.send_frame(0x2, encode311(mqtt::Pingreq{})));
  const auto again = c.receive_mqtt();
  REQUIRE(again);
  CHECK(static_cast<std::uint8_t>((*again)[0]) == 0xD0);
  // The close handshake: our close is answered, then the connection ends.
  REQUIRE(c.send_frame(0x8, std::string("\x03\xe8", 2) + "bye"));
  CHECK(c.read_close_code() == std::optional<std::uint16_t>(1000));
  CHECK(c.wire.wait_closed());
}

TEST_CASE("websocket: protocol violations close with the right code") {
  ListenerBroker b({listener(ListenerType::ws)});
  struct Case {
    const char* name;
    std::string frame;
    std::uint16_t code;
  };
  const std::vector<Case> cases{
      {"unmasked client frame", ws_frame(0x2, connect_packet("u"), true, false), 1002},
      {"text frame", ws_frame(0x1, "hello"), 1003},
      {"reserved bit", ws_frame(0x2, "x", true, true, 0x40), 1002},
      {"reserved opcode", ws_frame(0x3, "x"), 1002},
      {"continuation without a start", ws_frame(0x0, "x"), 1002},
      {"fragmented ping", ws_frame(0x9, "x", false), 1002},
      {"control frame over 125 bytes", ws_frame(0x9, std::string(126, 'p')), 1002},
      {"invalid UTF-8 in a close reason", ws_frame(0x8, std::string("\x03\xe8\xc3\x28", 4)), 1007},
      {"close payload of one byte", ws_frame(0x8, std::string("\x03", 1)), 1002},
      {"invalid close code", ws_frame(0x8, std::string("\x03\xed", 2)), 1002},
      // A 64-bit length far above mqtt.max_packet_size: refused from the header alone.
      {"oversized frame",
       std::string("\x82\xff\x00\x00\x01\x00\x00\x00\x00\x00\x01\x02\x03\x04", 14), 1009},
  };
  for (const Case& k : cases) {
    CAPTURE(k.name);
    WsClient c;
    REQUIRE(status_line(c.open(b.ports[0])) == "HTTP/1.1 101 Switching Protocols");
    REQUIRE(c.wire.send(k.frame));
    CHECK(c.read_close_code() == std::optional<std::uint16_t>(k.code));
    CHECK(c.wire.wait_closed());
  }
  // A new message inside a fragmented one, after CONNECT.
  WsClient c;
  ws_connect(c, b.ports[0], "interleaved");
  REQUIRE(c.send_frame(0x2, std::string("\xc0", 1), false));
  REQUIRE(c.send_frame(0x2, std::string("\x00", 1)));
  CHECK(c.read_close_code() == std::optional<std::uint16_t>(1002));
  CHECK(c.wire.wait_closed());
}

TEST_CASE("websocket: an MQTT protocol error ends with a close frame") {
  ListenerBroker b({listener(ListenerType::ws)});
  WsClient c;
  ws_connect(c, b.ports[0], "bad-mqtt");
  REQUIRE(c.send_frame(0x2, std::string("\x10\x00", 2)));  // a second CONNECT
  CHECK(c.read_close_code() == std::optional<std::uint16_t>(1000));
  CHECK(c.wire.wait_closed());
  CHECK_FALSE(is_connected(b.broker(), "bad-mqtt"));
}

TEST_CASE("websocket: hostile input does not block other listeners") {
  BrokerOptions o;
  o.io_threads = 1;
  ListenerBroker b({listener(ListenerType::ws), listener(ListenerType::tcp)}, o);
  // A handshake that never ends, a frame header that never completes, a huge frame that is
  // sent slowly.
  Wire stalled;
  REQUIRE(stalled.open(b.ports[0]));
  REQUIRE(stalled.send("GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\n"));
  WsClient half;
  REQUIRE(status_line(half.open(b.ports[0])) == "HTTP/1.1 101 Switching Protocols");
  REQUIRE(half.wire.send(std::string("\x82\xfe\x10", 3)));
  WsClient slow;
  ws_connect(slow, b.ports[0], "slow");
  REQUIRE(slow.wire.send(ws_frame(0x2, std::string(60000, '\x30')).substr(0, 1000)));
  // Everyone else is served.
  WsClient ok;
  ws_connect(ok, b.ports[0], "ws-ok");
  Wire plain;
  REQUIRE(plain.open(b.ports[1]));
  REQUIRE(plain.send(connect_packet("tcp-ok")));
  CHECK(is_connack_ok(plain.receive_mqtt()));
  // Random bytes after the handshake end that connection only.
  WsClient junk;
  REQUIRE(status_line(junk.open(b.ports[0])) == "HTTP/1.1 101 Switching Protocols");
  REQUIRE(junk.wire.send(std::string(2048, '\x7f')));
  CHECK(junk.wire.wait_closed());
  REQUIRE(ok.send_frame(0x2, encode311(mqtt::Pingreq{})));
  const auto pong = ok.receive_mqtt();
  REQUIRE(pong);
  CHECK(static_cast<std::uint8_t>((*pong)[0]) == 0xD0);
}

TEST_CASE("websocket: broker shutdown closes with 1001 going away") {
  TempDir dir;
  TestCa ca(dir);
  const auto server = ca.issue("server", "localhost", 30, true);
  ListenerBroker b(
      {listener(ListenerType::ws), tls_listener(ListenerType::wss, server.first, server.second)});
  WsClient plain;
  ws_connect(plain, b.ports[0], "going-away-ws");
  WsClient secure;
  REQUIRE(status_line(secure.open(b.ports[1], "/mqtt", "mqtt", TlsSettings{ca.cert(), {}, {}})) ==
          "HTTP/1.1 101 Switching Protocols");
  REQUIRE(secure.send_frame(0x2, connect_packet("going-away-wss")));
  REQUIRE(is_connack_ok(secure.receive_mqtt()));
  b.broker().stop();
  // RFC 6455 7.4.1: 1001 "going away", a server going down.
  CHECK(plain.read_close_code() == std::optional<std::uint16_t>(1001));
  CHECK(plain.wire.wait_closed());
  CHECK(secure.read_close_code() == std::optional<std::uint16_t>(1001));
  CHECK(secure.wire.wait_closed());
}
