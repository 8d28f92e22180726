// The cluster as a user runs it: real brokerha-server processes that find each other through
// DNS SRV (a DNS server the test starts: tests/support/dns_server.py), real MQTT clients, the
// HTTP API, and kill -9 of a node. Also runs scripts/local-cluster.sh --check, the one-command
// local cluster of the README. Bounded waits, no timing assertions.

#include <doctest/doctest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <string>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/broker_process.hpp"
#include "support/child_process.hpp"
#include "support/server_cluster.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::test::free_port;
using brokerha::test::make_connect;
using brokerha::test::make_publish;
using brokerha::test::MqttClient;
using brokerha::test::ServerCluster;
using brokerha::test::wait_until;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;

const char* const kServer = BROKERHA_SERVER_PATH;
const std::string kDomain = brokerha::test::kClusterDomain;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("cluster server: three processes found through DNS SRV form a cluster and route") {
  ServerCluster c(3);
  for (std::size_t i = 0; i < 3; ++i) c.start(i);
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return c.all_see(3, {0, 1, 2});
                      },
                      30s),
                  c.nodes[0]->process.describe());
  REQUIRE(wait_until(
      [&] {
        for (const auto& n : c.nodes) {
          if (n->get("/ready") != 200) return false;
        }
        return true;
      },
      15s));
  CHECK(c.dns->count_queries("", "SRV", kDomain) >= 3);

  MqttClient s2(ProtocolVersion::v5), s3(ProtocolVersion::v311), p1(ProtocolVersion::v5);
  REQUIRE(s2.open_and_connect(c.nodes[1]->mqtt_port, make_connect(ProtocolVersion::v5, "s2")) == 0);
  REQUIRE(s3.open_and_connect(c.nodes[2]->mqtt_port, make_connect(ProtocolVersion::v311, "s3")) ==
          0);
  REQUIRE(p1.open_and_connect(c.nodes[0]->mqtt_port, make_connect(ProtocolVersion::v5, "p1")) == 0);
  REQUIRE(s2.subscribe("proc/#", 1));
  REQUIRE(s3.subscribe("proc/#", 1));
  p1.publish(make_publish("proc/a", "hello", 1));
  for (MqttClient* s : {&s2, &s3}) {
    auto r = s->await<mqtt::Publish>(10s);
    REQUIRE(r);
    CHECK(r->as<mqtt::Publish>()->payload == "hello");
    s->acknowledge(*r->as<mqtt::Publish>());
  }

  // /metrics carries the cluster series, /proxy answers for every node.
  std::string metrics;
  REQUIRE(c.nodes[0]->get("/metrics", &metrics) == 200);
  CHECK(contains(metrics, "broker_cluster_members 3"));
  CHECK(contains(metrics, "broker_cluster_link_up{peer=\"node2\"} 1"));
  CHECK(contains(metrics, "broker_cluster_messages_forwarded_total 2"));
  std::string proxy;
  REQUIRE(c.nodes[1]->get("/proxy/api/mqtt/clients", &proxy) == 200);
  for (const char* name : {"\"node1\"", "\"node2\"", "\"node3\""}) CHECK(contains(proxy, name));
  CHECK(contains(proxy, "\"p1\""));
  CHECK(contains(proxy, "\"s3\""));
}

TEST_CASE("cluster server: kill -9 of one node leaves the others ready and routing") {
  ServerCluster c(3);
  for (std::size_t i = 0; i < 3; ++i) c.start(i);
  REQUIRE(wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 30s));
  MqttClient p1(ProtocolVersion::v5), s2(ProtocolVersion::v5);
  REQUIRE(p1.open_and_connect(c.nodes[0]->mqtt_port, make_connect(ProtocolVersion::v5, "p1")) == 0);
  REQUIRE(s2.open_and_connect(c.nodes[1]->mqtt_port, make_connect(ProtocolVersion::v5, "s2")) == 0);
  REQUIRE(s2.subscribe("after/#", 1));

  c.nodes[2]->process.kill(SIGKILL);
  REQUIRE(wait_until([&] { return c.all_see(2, {0, 1}); }, 30s));
  // One dead peer does not make the survivors unready.
  CHECK(c.nodes[0]->get("/ready") == 200);
  CHECK(c.nodes[1]->get("/ready") == 200);
  p1.publish(make_publish("after/kill", "still here", 1));
  auto r = s2.await<mqtt::Publish>(10s);
  REQUIRE(r);
  CHECK(r->as<mqtt::Publish>()->payload == "still here");
  s2.acknowledge(*r->as<mqtt::Publish>());

  // The killed node restarts with the same name and address and rejoins.
  c.start(2);
  REQUIRE(wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 40s));
}

TEST_CASE("cluster server: the local-cluster script works as documented") {
  const std::string script = std::string(BROKERHA_SOURCE_DIR) + "/scripts/local-cluster.sh";
  if (brokerha::test::find_program("mosquitto_sub").empty() ||
      brokerha::test::find_program("curl").empty()) {
    MESSAGE("skipped: mosquitto-clients or curl is not installed");
    return;
  }
  const std::uint16_t base = free_port();
  REQUIRE(base != 0);
  const auto r = brokerha::test::run_process(
      {"/usr/bin/env", "BROKERHA_SERVER=" + std::string(kServer),
       "BASE_PORT=" + std::to_string(base % 40000 + 20000), "/bin/bash", script, "--check"},
      120s);
  INFO(r.out);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "reached node2 and node3"));
}
