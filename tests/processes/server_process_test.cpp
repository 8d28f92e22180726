// SPDX-License-Identifier: Apache-2.0
// brokerha-server as a process: graceful stop on SIGTERM (docs/cluster.md, drain) and the
// HTTP API it serves from its configuration. Real binary, real sockets on loopback; every
// wait is bounded and the server is stopped by its pid.

#include <doctest/doctest.h>
#include <httplib.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>

#include "support/broker_process.hpp"
#include "support/raw_client.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::test::BackgroundProcess;
namespace raw = brokerha::test::raw;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;

const char* const kServer = BROKERHA_SERVER_PATH;
constexpr auto kWait = 10s;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A config file in a fresh directory, removed at the end.
class ConfigFile {
 public:
  explicit ConfigFile(const std::string& content) {
    std::string tmpl = "/tmp/brokerha-process-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return;
    dir_ = tmpl;
    path_ = dir_ + "/config.yaml";
    std::ofstream(path_) << content;
  }
  ~ConfigFile() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  ConfigFile(const ConfigFile&) = delete;
  ConfigFile& operator=(const ConfigFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

// Starts the server on `config` and waits until it says it listens.
void start(BackgroundProcess& server, const ConfigFile& config) {
  REQUIRE(server.start({kServer, "--config", config.path()}));
  REQUIRE_MESSAGE(
      server.wait_output([](const std::string& out) { return contains(out, "MQTT listening on"); },
                         kWait),
      server.describe());
}

}  // namespace

TEST_CASE("server process: SIGTERM sends v5 clients DISCONNECT 0x8B and exits 0 in time") {
  const std::uint16_t port = brokerha::test::free_port();
  REQUIRE(port != 0);
  ConfigFile config("mqtt:\n  port: " + std::to_string(port) +
                    "\n  bind: 127.0.0.1\napi:\n  port: 0\n");
  BackgroundProcess server;
  start(server, config);

  raw::Client v5(ProtocolVersion::v5);
  REQUIRE(v5.open(port));
  const auto ack5 = v5.handshake(v5.connect_packet("graceful-v5", 60));
  REQUIRE(ack5);
  REQUIRE(ack5->is(mqtt::PacketType::connack));
  raw::Client v3(ProtocolVersion::v311);
  REQUIRE(v3.open(port));
  const auto ack3 = v3.handshake(v3.connect_packet("graceful-v3", 60));
  REQUIRE(ack3);
  REQUIRE(ack3->is(mqtt::PacketType::connack));

  const auto t0 = std::chrono::steady_clock::now();
  server.kill(SIGTERM);
  // v5: DISCONNECT "server shutting down", then the close. v3 has no DISCONNECT from a server:
  // the connection closes.
  std::vector<raw::Incoming> seen;
  CHECK(v5.wait_closed(kWait, &seen));
  REQUIRE(seen.size() == 1);
  REQUIRE(seen[0].get<mqtt::Disconnect>() != nullptr);
  CHECK(static_cast<int>(seen[0].get<mqtt::Disconnect>()->reason_code) == 0x8B);
  std::vector<raw::Incoming> seen3;
  CHECK(v3.wait_closed(kWait, &seen3));
  CHECK(seen3.empty());
  REQUIRE(server.wait_exit(kWait));
  INFO(server.describe());
  CHECK(server.exit_code() == 0);
  // Well inside Kubernetes' default terminationGracePeriodSeconds (30 s).
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK(contains(server.err(), "SIGTERM received, stopping"));
}

TEST_CASE("server process: the HTTP API listens on api.port with api.user basic auth") {
  const std::uint16_t port = brokerha::test::free_port();
  const std::uint16_t api_port = brokerha::test::free_port();
  REQUIRE(port != 0);
  REQUIRE(api_port != 0);
  ConfigFile config(
      "mqtt:\n  port: " + std::to_string(port) +
      "\n  bind: 127.0.0.1\napi:\n  bind: 127.0.0.1\n  port: " + std::to_string(api_port) +
      "\n  user:\n    admin: s3cret\ncluster:\n  node_name: node-a\n"
      "  expected_members: 3\n");
  BackgroundProcess server;
  start(server, config);
  CHECK(contains(server.out(), "HTTP API listening on 127.0.0.1:" + std::to_string(api_port)));

  raw::Client c(ProtocolVersion::v311);
  REQUIRE(c.open(port));
  REQUIRE(c.handshake(c.connect_packet("api-visible", 60)));

  httplib::Client http("127.0.0.1", api_port);
  http.set_connection_timeout(5, 0);
  http.set_read_timeout(5, 0);
  // Probes are open; without discovery the cluster checks pass (expected_members unused).
  const auto ready = http.Get("/ready");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  const auto health = http.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  // /api needs the configured user.
  const auto denied = http.Get("/api/mqtt/clients");
  REQUIRE(denied);
  CHECK(denied->status == 401);
  CHECK(denied->get_header_value("WWW-Authenticate") == "Basic realm=\"api\"");
  http.set_basic_auth("admin", "wrong");
  const auto wrong = http.Get("/api/mqtt/clients");
  REQUIRE(wrong);
  CHECK(wrong->status == 401);
  http.set_basic_auth("admin", "s3cret");
  const auto clients = http.Get("/api/mqtt/clients");
  REQUIRE(clients);
  CHECK(clients->status == 200);
  CHECK(contains(clients->body, "\"ID\":\"api-visible\""));
  // /proxy answers under the configured node name.
  const auto proxied = http.Get("/proxy/api/mqtt/clients");
  REQUIRE(proxied);
  CHECK(proxied->status == 200);
  CHECK(contains(proxied->body, "\"node-a\":"));

  server.kill(SIGTERM);
  REQUIRE(server.wait_exit(kWait));
  CHECK(server.exit_code() == 0);
}
