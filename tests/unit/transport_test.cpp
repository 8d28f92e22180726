// SPDX-License-Identifier: Apache-2.0
// net::Transport without sockets: the WebSocket upgrade and frames and the PROXY headers fed
// in every possible split (one byte at a time, and at every cut point), and its output.

#include "net/transport.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using brokerha::ListenerOptions;
using brokerha::ListenerType;
using brokerha::net::ListenerState;
using brokerha::net::Transport;

namespace {

std::string masked(std::uint8_t first, const std::string& payload) {
  std::string f;
  f.push_back(static_cast<char>(first));
  if (payload.size() < 126) {
    f.push_back(static_cast<char>(0x80 | payload.size()));
  } else {
    f.push_back(static_cast<char>(0x80 | 126));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size() & 0xFF));
  }
  const char key[4] = {'\x12', '\x34', '\x56', '\x78'};
  f.append(key, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) f.push_back(payload[i] ^ key[i % 4]);
  return f;
}

const std::string kRequest =
    "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: mqtt\r\n\r\n";

struct Fed {
  std::string delivered;
  std::string wire;  // what the transport wants written
  Transport::Result last = Transport::Result::ok;
};

// Feeds `input` in pieces cut at `cuts` (sorted offsets), each through a scratch buffer as
// the connection does.
Fed feed(Transport& t, const std::string& input, const std::vector<std::size_t>& cuts) {
  Fed fed;
  std::vector<char> scratch(64 * 1024);
  std::size_t at = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(input.size());
  for (std::size_t end : ends) {
    if (end <= at) continue;
    std::copy(input.begin() + static_cast<std::ptrdiff_t>(at),
              input.begin() + static_cast<std::ptrdiff_t>(end), scratch.begin());
    fed.last = t.input(scratch.data(), scratch.size(), end - at, [&](std::string_view b) {
      fed.delivered.append(b);
      return true;
    });
    at = end;
    if (fed.last != Transport::Result::ok) break;
  }
  std::string own;
  std::vector<asio::const_buffer> wire;
  t.wrap({}, own, wire);
  for (const auto& b : wire) fed.wire.append(static_cast<const char*>(b.data()), b.size());
  return fed;
}

ListenerState state(ListenerType type, bool proxy) {
  ListenerOptions o;
  o.type = type;
  o.proxy_protocol = proxy;
  return ListenerState(o);
}

}  // namespace

TEST_CASE("transport: websocket upgrade and frames in every two-piece split") {
  const std::string mqtt_bytes =
      "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00" + std::string(200, 'z');
  const std::string input = kRequest + masked(0x02, mqtt_bytes.substr(0, 5)) + masked(0x89, "hi") +
                            masked(0x00, mqtt_bytes.substr(5, 150)) +
                            masked(0x80, mqtt_bytes.substr(155));
  const ListenerState ws = state(ListenerType::ws, false);
  for (std::size_t cut = 0; cut <= input.size(); ++cut) {
    CAPTURE(cut);
    Transport t(ws, 1 << 20);
    const Fed fed = feed(t, input, {cut});
    REQUIRE(fed.last == Transport::Result::ok);
    CHECK(fed.delivered == mqtt_bytes);
    CHECK(fed.wire.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0) == 0);
    CHECK(fed.wire.find("\x8a\x02hi") != std::string::npos);  // the pong
  }
}

TEST_CASE("transport: websocket byte by byte") {
  const std::string payload(300, 'q');
  const std::string input = kRequest + masked(0x82, payload);
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < input.size(); ++i) cuts.push_back(i);
  const ListenerState ws = state(ListenerType::ws, false);
  Transport t(ws, 1 << 20);
  const Fed fed = feed(t, input, cuts);
  CHECK(fed.last == Transport::Result::ok);
  CHECK(fed.delivered == payload);
}

TEST_CASE("transport: output is one binary frame around the chunks") {
  const ListenerState ws = state(ListenerType::ws, false);
  Transport t(ws, 1 << 20);
  feed(t, kRequest, {});
  const std::string a = "\x30\x03", b("\x00\x01x", 3);
  std::string own;
  std::vector<asio::const_buffer> wire;
  t.wrap({asio::buffer(a), asio::buffer(b)}, own, wire);
  REQUIRE(wire.size() == 3);  // header, then the two chunks where they are
  CHECK(std::string(static_cast<const char*>(wire[0].data()), wire[0].size()) ==
        std::string("\x82\x05", 2));
  CHECK(wire[1].data() == a.data());
  CHECK(wire[2].data() == b.data());
  // Closing: a close frame after the last data.
  t.closing();
  CHECK(t.has_output());
  t.wrap({asio::buffer(a)}, own, wire);
  std::string all;
  for (const auto& w : wire) all.append(static_cast<const char*>(w.data()), w.size());
  CHECK(all == std::string("\x82\x02\x30\x03\x88\x02\x03\xe8", 8));
  // Nothing after the close frame.
  t.wrap({asio::buffer(a)}, own, wire);
  CHECK(wire.empty());
}

TEST_CASE("transport: proxy headers in every two-piece split") {
  const std::string v1 = "PROXY TCP4 192.0.2.1 10.0.0.1 4321 1883\r\n";
  std::string v2("\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c", 16);
  v2 += std::string("\xc6\x33\x64\x05\x0a\x00\x00\x01\x10\xe1\x07\x5b", 12);
  const ListenerState tcp = state(ListenerType::tcp, true);
  for (const auto& [header, ip, port] :
       {std::tuple<std::string, std::string, std::uint16_t>{v1, "192.0.2.1", 4321},
        std::tuple<std::string, std::string, std::uint16_t>{v2, "198.51.100.5", 4321}}) {
    const std::string input = header + "\x10\x02xy";
    for (std::size_t cut = 0; cut <= input.size(); ++cut) {
      CAPTURE(cut);
      Transport t(tcp, 1 << 20);
      const Fed fed = feed(t, input, {cut});
      REQUIRE(fed.last == Transport::Result::ok);
      CHECK(fed.delivered == "\x10\x02xy");
      const auto peer = t.take_peer();
      REQUIRE(peer);
      CHECK(peer->first == ip);
      CHECK(peer->second == port);
      CHECK(t.passthrough());
    }
  }
}

TEST_CASE("transport: a proxy listener refuses bytes that are no header at once") {
  const ListenerState tcp = state(ListenerType::tcp, true);
  for (const std::string& input : {std::string("\x10\x0c"), std::string("GET / HTTP/1.1\r\n"),
                                   std::string("PROXZ"), std::string("\r\n\r\n\0\r\nQUIX", 12)}) {
    CAPTURE(input);
    Transport t(tcp, 1 << 20);
    CHECK(feed(t, input, {}).last == Transport::Result::error);
  }
}

TEST_CASE("transport: pings before a write are answered with one pong, the latest") {
  // RFC 6455 5.5.3: only the latest ping needs an answer. A client that streams pings while
  // the answer cannot be written costs one pending pong, not one per ping.
  const ListenerState ws = state(ListenerType::ws, false);
  Transport t(ws, 1 << 20);
  std::string input = kRequest;
  for (int i = 0; i < 10000; ++i) input += masked(0x89, "ping-" + std::to_string(i));
  std::vector<char> scratch(input.size());
  std::copy(input.begin(), input.end(), scratch.begin());
  const auto r =
      t.input(scratch.data(), scratch.size(), input.size(), [](std::string_view) { return true; });
  REQUIRE(r == Transport::Result::ok);
  CHECK(t.has_output());
  CHECK(t.queued_bytes() < 512);  // the 101 answer and one pong payload
  std::string own;
  std::vector<asio::const_buffer> wire;
  t.wrap({}, own, wire);
  std::string bytes;
  for (const auto& b : wire) bytes.append(static_cast<const char*>(b.data()), b.size());
  const std::string last = std::string("\x8a\x09ping-9999", 11);
  CHECK(bytes.find(last) != std::string::npos);
  CHECK(bytes.find("ping-9998") == std::string::npos);
  CHECK(bytes.find('\x8a') == bytes.rfind('\x8a'));  // one pong
  CHECK_FALSE(t.has_output());
  CHECK(t.queued_bytes() == 0);
}
