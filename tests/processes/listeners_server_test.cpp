// SPDX-License-Identifier: Apache-2.0
// brokerha-server serves the listeners of its config (mqtt.tls.*, mqtt.websocket.*,
// mqtt.listeners) and re-reads the TLS files on SIGHUP without dropping connections.

#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>

#include "support/broker_process.hpp"
#include "support/listener_support.hpp"

using namespace brokerha;
using namespace brokerha::test;
using namespace brokerha::test::listeners;

#ifdef BROKERHA_SERVER_PATH

TEST_CASE("listeners server: tls ws and wss from the config and a SIGHUP certificate reload") {
  TempDir dir;
  TestCa ca(dir);
  const auto server = ca.issue("server", "localhost", 30, true);
  const std::uint16_t tls_port = free_port();
  const std::uint16_t ws_port = free_port();
  const std::uint16_t wss_port = free_port();
  const std::uint16_t proxy_port = free_port();
  REQUIRE(tls_port != 0);
  const std::string config = dir.file("config.yaml");
  {
    std::ofstream f(config);
    f << "mqtt:\n  port: 0\n  bind: 127.0.0.1\n"
      << "  tls:\n    port: " << tls_port << "\n    cert: " << server.first
      << "\n    key: " << server.second << "\n"
      << "  websocket:\n    port: " << ws_port << "\n    path: /ws\n"
      << "  listeners:\n    - {type: wss, port: " << wss_port << "}\n"
      << "    - {type: tcp, port: " << proxy_port << ", proxy_protocol: true}\n"
      << "api:\n  port: 0\n";
  }
  BackgroundProcess p({BROKERHA_SERVER_PATH, "--config", config});
  auto listening = [](const std::string& out) {
    std::size_t n = 0;
    for (std::size_t at = out.find("MQTT listening"); at != std::string::npos;
         at = out.find("MQTT listening", at + 1)) {
      ++n;
    }
    return n >= 4;
  };
  REQUIRE(p.wait_output(listening, std::chrono::seconds(10)));
  INFO(p.describe());
  CHECK(p.out().find(":" + std::to_string(wss_port) + " (wss)") != std::string::npos);
  Wire tls;
  REQUIRE(tls.open(tls_port, TlsSettings{ca.cert(), {}, {}}));
  REQUIRE(tls.send(connect_packet("server-tls")));
  CHECK(is_connack_ok(tls.receive_mqtt()));
  WsClient ws;
  REQUIRE(ws.open(ws_port, "/ws").rfind("HTTP/1.1 101", 0) == 0);
  REQUIRE(ws.send_frame(0x2, connect_packet("server-ws")));
  CHECK(is_connack_ok(ws.receive_mqtt()));
  WsClient wss;
  REQUIRE(wss.open(wss_port, "/mqtt", "mqtt", TlsSettings{ca.cert(), {}, {}})
              .rfind("HTTP/1.1 101", 0) == 0);
  Wire proxied;
  REQUIRE(proxied.open(proxy_port));
  REQUIRE(proxied.send("PROXY TCP4 192.0.2.1 10.0.0.1 1 2\r\n" + connect_packet("server-proxy")));
  CHECK(is_connack_ok(proxied.receive_mqtt()));

  // A new CA signs the certificate at the same paths; SIGHUP makes new connections use it.
  TestCa next(dir, "next");
  const auto fresh = next.issue("fresh", "localhost", 30, true);
  REQUIRE(std::rename(fresh.first.c_str(), server.first.c_str()) == 0);
  REQUIRE(std::rename(fresh.second.c_str(), server.second.c_str()) == 0);
  p.kill(SIGHUP);
  const bool reloaded = wait_until(
      [&] {
        Wire w;
        return w.open(tls_port, TlsSettings{next.cert(), {}, {}}) && w.send(connect_packet("n")) &&
               is_connack_ok(w.receive_mqtt());
      },
      std::chrono::seconds(5), std::chrono::milliseconds(100));
  CHECK(reloaded);
  // The connections made before the reload still work.
  REQUIRE(tls.send(encode311(mqtt::Pingreq{})));
  const auto pong = tls.receive_mqtt();
  REQUIRE(pong);
  CHECK(static_cast<std::uint8_t>((*pong)[0]) == 0xD0);
  p.kill(SIGTERM);
  CHECK(p.wait_exit(std::chrono::seconds(10)));
}

#endif
