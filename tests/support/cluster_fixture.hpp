// SPDX-License-Identifier: Apache-2.0
#pragma once
// An in-process cluster for tests: N brokerha::Broker on loopback, each with cluster options
// (membership + data plane on a free port, static discovery seeds), plus the client helpers
// the cluster tests share. Bounded waits, no timing assertions.

#include <brokerha/broker.hpp>
#include <brokerha/options.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"

namespace brokerha::test::cluster {

using namespace std::chrono_literals;
using brokerha::BrokerOptions;
using brokerha::ClusterInfo;
using mqtt::ProtocolVersion;

inline constexpr auto kFormTimeout = 30s;

/// The key the test clusters share when a test names none: a cluster needs one
/// (ClusterOptions::insecure aside), as users run it.
inline const std::string kTestClusterKey = "0123456789abcdef0123456789abcdef";

/// `key` empty: kTestClusterKey. A test about a cluster without a key clears
/// `cluster->membership.secret_key` and sets `cluster->insecure`.
inline BrokerOptions node_options(const std::string& name, const std::vector<std::string>& seeds,
                                  const std::string& key = {},
                                  const std::string& address = "127.0.0.1") {
  BrokerOptions o;
  brokerha::ClusterOptions c;
  c.membership.name = name;
  c.membership.bind_address = address;
  c.membership.port = 0;
  c.membership.secret_key = key.empty() ? kTestClusterKey : key;
  c.discovery.members = seeds;
  c.discovery.refresh_interval = 1000ms;
  c.discovery.retry_min = 100ms;
  c.leave_timeout = 500ms;
  c.repair_interval = 2000ms;
  o.cluster = c;
  o.sys_interval = 0ms;
  return o;
}

/// Failure detection fast enough for partition tests: a node is dead after ~2 s and gossiped
/// about for 2 s. Pass as TestCluster's `tune`.
inline void fast_failure_detection(BrokerOptions& o) {
  auto& m = o.cluster->membership;
  m.probe_interval = 200ms;
  m.probe_timeout = 100ms;
  m.gossip_to_the_dead_time = 2000ms;
  m.push_pull_interval = 2000ms;
  o.cluster->discovery.refresh_interval = 2000ms;
}

/// N brokers; node i > 0 seeds with node 0. With `distinct_addresses`, node i's cluster
/// port is on 127.0.0.(21+i), so that a partition can cut nodes off by address.
struct TestCluster {
  /// `key` empty: kTestClusterKey (see node_options).
  explicit TestCluster(std::size_t n, const std::string& key = {}, bool distinct_addresses = false,
                       const std::function<void(BrokerOptions&)>& tune = nullptr)
      : key_(key), distinct_(distinct_addresses), tune_(tune) {
    for (std::size_t i = 0; i < n; ++i) add();
  }

  std::string address(std::size_t i) const {
    return distinct_ ? "127.0.0." + std::to_string(21 + i) : "127.0.0.1";
  }

  TestBroker& add() {
    std::vector<std::string> seeds;
    if (!nodes.empty()) seeds.push_back(address(0) + ":" + std::to_string(cluster_port(0)));
    BrokerOptions o =
        node_options("n" + std::to_string(nodes.size() + 1), seeds, key_, address(nodes.size()));
    if (tune_) tune_(o);
    nodes.push_back(std::make_unique<TestBroker>(std::move(o)));
    return *nodes.back();
  }

  std::uint16_t cluster_port(std::size_t i) const { return nodes[i]->broker.cluster().port; }

  /// Every node sees every other as a member and has a connected link to it.
  bool formed() const {
    for (const auto& n : nodes) {
      const ClusterInfo ci = n->broker.cluster();
      if (ci.members.size() != nodes.size()) return false;
      std::size_t up = 0;
      for (const auto& l : ci.links) up += l.connected ? 1 : 0;
      if (up != nodes.size() - 1) return false;
    }
    return true;
  }

  brokerha::Broker& operator[](std::size_t i) { return nodes[i]->broker; }
  std::uint16_t port(std::size_t i) const { return nodes[i]->port; }

  std::vector<std::unique_ptr<TestBroker>> nodes;

 private:
  std::string key_;
  bool distinct_ = false;
  std::function<void(BrokerOptions&)> tune_;
};

inline std::string describe(const TestCluster& c) {
  std::string s;
  for (const auto& n : c.nodes) {
    const ClusterInfo ci = n->broker.cluster();
    s += ci.node_name + ": " + std::to_string(ci.members.size()) + " members, links";
    for (const auto& l : ci.links) s += " " + l.peer + (l.connected ? "(up)" : "(down)");
    s += "\n";
  }
  return s;
}

/// Connects a client to `port` and subscribes `filter` at `qos`.
inline std::unique_ptr<MqttClient> subscriber(std::uint16_t port, const std::string& id,
                                              const std::string& filter, std::uint8_t qos,
                                              ProtocolVersion v = ProtocolVersion::v5) {
  auto c = std::make_unique<MqttClient>(v);
  REQUIRE(c->open_and_connect(port, make_connect(v, id)) == 0);
  REQUIRE(c->subscribe(filter, qos));
  return c;
}

inline std::unique_ptr<MqttClient> publisher(std::uint16_t port, const std::string& id,
                                             ProtocolVersion v = ProtocolVersion::v5) {
  auto c = std::make_unique<MqttClient>(v);
  REQUIRE(c->open_and_connect(port, make_connect(v, id)) == 0);
  return c;
}

/// Receives `n` PUBLISH packets (acknowledging QoS 1/2), then checks nothing more arrives
/// before a PINGRESP.
inline std::vector<Received> receive_exactly(MqttClient& c, std::size_t n) {
  std::vector<Received> got;
  while (got.size() < n) {
    auto r = c.await<mqtt::Publish>(5s);
    if (!r) break;
    c.acknowledge(*r->as<mqtt::Publish>());
    got.push_back(std::move(*r));
  }
  CHECK(got.size() == n);
  const auto more = c.ping(1s);
  REQUIRE(more);
  CHECK(publishes(*more).empty());
  return got;
}

}  // namespace brokerha::test::cluster
