// SPDX-License-Identifier: Apache-2.0
// The cluster data path with in-process brokers (docs/cluster.md): several brokerha::Broker on
// 127.0.0.1 in one process, each with cluster options (membership + data plane on a free
// port, static discovery seeds), and real MQTT clients on their listeners. What crosses the
// cluster: publishes (only to nodes with a matching subscriber, exactly once, in order, with
// MQTT 5 properties), routes before SUBACK, wills, and the replicated retained set (writes,
// deletes, a late joiner's single snapshot). Bounded waits, no timing assertions.
//
// Real processes with DNS discovery: tests/processes/cluster_server_test.cpp.

#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/options.hpp>
#include <brokerha/testing.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "cluster/protocol.hpp"
#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/cluster_fixture.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::BrokerOptions;
using brokerha::ClusterInfo;
using brokerha::test::make_connect;
using brokerha::test::make_publish;
using brokerha::test::MqttClient;
using brokerha::test::publishes;
using brokerha::test::Received;
using brokerha::test::TestBroker;
using brokerha::test::wait_until;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;
using namespace brokerha::test::cluster;

/// Reads PUBLISH packets from all `clients` (acknowledging each) until `total` arrived in
/// all, or none came for 5 s; then a PINGRESP round per client collects anything more. The
/// payloads each client received, in order.
std::vector<std::vector<std::string>> receive_spread(const std::vector<MqttClient*>& clients,
                                                     std::size_t total) {
  std::vector<std::vector<std::string>> got(clients.size());
  std::size_t n = 0;
  auto progress = std::chrono::steady_clock::now();
  while (n < total && std::chrono::steady_clock::now() - progress < 5s) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      auto r = clients[i]->await<mqtt::Publish>(20ms);
      if (!r) continue;
      const auto* p = r->as<mqtt::Publish>();
      clients[i]->acknowledge(*p);
      got[i].emplace_back(p->payload);
      ++n;
      progress = std::chrono::steady_clock::now();
    }
  }
  for (std::size_t i = 0; i < clients.size(); ++i) {
    const auto more = clients[i]->ping(1s);
    REQUIRE(more);
    for (const auto* p : publishes(*more)) got[i].emplace_back(p->payload);
  }
  return got;
}

/// Checks that `got` (per member of one group) holds each of `sent` exactly once in total,
/// and returns how many each member received.
std::vector<std::size_t> check_once_per_group(const std::vector<std::vector<std::string>>& got,
                                              const std::vector<std::string>& sent) {
  std::map<std::string, int> seen;
  std::vector<std::size_t> per_member;
  for (const auto& member : got) {
    per_member.push_back(member.size());
    for (const auto& p : member) ++seen[p];
  }
  std::size_t missing = 0, duplicated = 0;
  for (const auto& p : sent) {
    const int n = seen.count(p) != 0 ? seen[p] : 0;
    if (n == 0) ++missing;
    if (n > 1) ++duplicated;
  }
  std::size_t total = 0;
  for (std::size_t n : per_member) total += n;
  INFO("received " << total << " of " << sent.size());
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  CHECK(total == sent.size());
  return per_member;
}

/// Publishes `count` QoS 1 messages on `topic_prefix/i` from `p`, payloads `tag-i`; every
/// `retain_every`th one retained (0: none). Returns the payloads.
std::vector<std::string> publish_numbered(MqttClient& p, const std::string& topic_prefix,
                                          const std::string& tag, int count, int retain_every = 0) {
  std::vector<std::string> sent;
  for (int i = 0; i < count; ++i) {
    const std::string topic = topic_prefix + "/" + std::to_string(i);
    sent.push_back(tag + "-" + std::to_string(i));
    const bool retain = retain_every != 0 && i % retain_every == 0;
    REQUIRE(p.publish(make_publish(topic, sent.back(), 1, retain)));
  }
  return sent;
}

bool unsubscribe(MqttClient& c, std::string_view filter) {
  mqtt::Unsubscribe u;
  u.packet_id = c.next_packet_id();
  u.filters.push_back(filter);
  return c.send(u) && c.await_ack<mqtt::Unsuback>(u.packet_id).has_value();
}

std::uint64_t shared_dropped(TestCluster& c) {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < c.nodes.size(); ++i) n += c[i].cluster().shared_dropped;
  return n;
}

}  // namespace

TEST_CASE("cluster broker: three nodes form and publishes reach the other nodes exactly once") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));

  auto s2 = subscriber(c.port(1), "s2", "t/#", 2);
  auto s3 = subscriber(c.port(2), "s3", "t/#", 2, ProtocolVersion::v311);
  auto p1 = publisher(c.port(0), "p1");
  for (std::uint8_t qos = 0; qos <= 2; ++qos) {
    // make_publish keeps views: the strings must outlive the packet.
    const std::string topic = "t/" + std::to_string(qos);
    const std::string payload = "q" + std::to_string(qos);
    auto p = make_publish(topic, payload, qos);
    mqtt::Properties props;
    props.user_properties.push_back(mqtt::UserProperty{"k", "v"});
    props.content_type = "text/plain";
    props.response_topic = "r/1";
    props.correlation_data = "cd";
    p.properties = props;
    p1->publish(p);
  }
  for (auto* s : {s2.get(), s3.get()}) {
    const auto got = receive_exactly(*s, 3);
    for (std::size_t i = 0; i < got.size(); ++i) {
      const auto* p = got[i].as<mqtt::Publish>();
      CHECK(p->topic == "t/" + std::to_string(i));
      CHECK(p->qos == i);
      if (s == s2.get()) {
        CHECK(p->properties.content_type == std::optional<std::string_view>("text/plain"));
        CHECK(p->properties.response_topic == std::optional<std::string_view>("r/1"));
        CHECK(p->properties.correlation_data == std::optional<std::string_view>("cd"));
        REQUIRE(p->properties.user_properties.size() == 1);
        CHECK(p->properties.user_properties[0].name == "k");
      }
    }
  }
}

TEST_CASE("cluster broker: a subscription on one node gets the next publish on another") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto p1 = publisher(c.port(0), "p1");
  for (int i = 0; i < 30; ++i) {
    const std::string topic = "fresh/" + std::to_string(i);
    MqttClient s(ProtocolVersion::v5);
    REQUIRE(s.open_and_connect(c.port(2), make_connect(ProtocolVersion::v5, "s3-" + topic)) == 0);
    // Every third one as the only member of a shared group (node 3 announces "$share/g/...").
    REQUIRE(s.subscribe(i % 3 == 2 ? "$share/g/" + topic : topic, 1));
    // Right after SUBACK: node 1 must already route this topic to node 3.
    p1->publish(make_publish(topic, "x", 1));
    auto r = s.await<mqtt::Publish>(5s);
    REQUIRE_MESSAGE(r, "publish " << i << " missed");
    CHECK(r->as<mqtt::Publish>()->topic == topic);
  }
}

TEST_CASE("cluster broker: no traffic to a node without a matching subscriber") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto s2 = subscriber(c.port(1), "s2", "only/two", 1);
  auto p1 = publisher(c.port(0), "p1");
  for (int i = 0; i < 50; ++i) p1->publish(make_publish("only/two", std::to_string(i), 1));
  receive_exactly(*s2, 50);
  CHECK(c[1].cluster().messages_received == 50);
  CHECK(c[2].cluster().messages_received == 0);
  CHECK(c[0].cluster().messages_forwarded == 50);
}

TEST_CASE("cluster broker: one publisher's messages arrive in order on another node") {
  TestCluster c(2);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto s2 = subscriber(c.port(1), "s2", "seq", 1);
  auto p1 = publisher(c.port(0), "p1");
  constexpr int kCount = 2000;
  for (int i = 0; i < kCount; ++i) {
    const std::string payload = std::to_string(i);  // outlives the packet's view
    auto p = make_publish("seq", payload, i % 2 == 0 ? 0 : 1);
    if (p.qos == 0) {
      p1->send(p);
    } else {
      p1->publish(p);
    }
  }
  int expected = 0;
  bool in_order = true;
  while (expected < kCount) {
    auto r = s2->await<mqtt::Publish>(5s);
    if (!r) break;
    const auto* p = r->as<mqtt::Publish>();
    s2->acknowledge(*p);
    if (in_order && std::string(p->payload) != std::to_string(expected)) {
      in_order = false;
      MESSAGE("expected " << expected << " got " << std::string(p->payload));
    }
    ++expected;
  }
  CHECK(expected == kCount);
  CHECK(in_order);
}

TEST_CASE("cluster broker: a retained message set on one node and deleted on another converges") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto p2 = publisher(c.port(1), "p2");
  p2->publish(make_publish("ret/a", "one", 1, true));
  auto everywhere = [&](std::size_t want) {
    for (std::size_t i = 0; i < c.nodes.size(); ++i) {
      if (c[i].retained("ret/#").size() != want) return false;
    }
    return true;
  };
  REQUIRE(wait_until([&] { return everywhere(1); }, 10s));
  CHECK(c[2].retained("ret/a").at(0).payload == "one");

  auto p3 = publisher(c.port(2), "p3");
  p3->publish(make_publish("ret/a", "", 1, true));
  REQUIRE(wait_until([&] { return everywhere(0); }, 10s));
  // A new subscriber anywhere gets nothing.
  MqttClient s(ProtocolVersion::v5);
  REQUIRE(s.open_and_connect(c.port(0), make_connect(ProtocolVersion::v5, "late")) == 0);
  REQUIRE(s.subscribe("ret/#", 1));
  const auto more = s.ping(1s);
  REQUIRE(more);
  CHECK(publishes(*more).empty());
}

TEST_CASE("cluster broker: a late joiner receives the retained set once") {
  TestCluster c(2);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto p1 = publisher(c.port(0), "p1");
  constexpr std::size_t kRetained = 300;
  for (std::size_t i = 0; i < kRetained; ++i) {
    p1->publish(make_publish("r/" + std::to_string(i), "v" + std::to_string(i), 1, true));
  }
  p1->publish(make_publish("r/gone", "x", 1, true));
  p1->publish(make_publish("r/gone", "", 1, true));  // a tombstone travels too
  REQUIRE(wait_until([&] { return c[1].retained("r/#").size() == kRetained; }, 10s));
  c.add();
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  REQUIRE(wait_until([&] { return c[2].retained("r/#").size() == kRetained; }, 10s));
  const ClusterInfo ci = c[2].cluster();
  CHECK(ci.retained_synced);
  // One snapshot: each entry (tombstone included) applied once, not once per peer.
  CHECK(ci.retained_applied == kRetained + 1);
  CHECK(c[2].retained("r/17").at(0).payload == "v17");
}

TEST_CASE("cluster broker: a will of a client on one node reaches another node") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto s3 = subscriber(c.port(2), "s3", "wills/#", 1);
  MqttClient w(ProtocolVersion::v5);
  auto con = make_connect(ProtocolVersion::v5, "dying");
  mqtt::Will will;
  will.topic = "wills/dying";
  will.payload = "gone";
  will.qos = 1;
  con.will = will;
  REQUIRE(w.open_and_connect(c.port(0), con) == 0);
  w.close();  // no DISCONNECT: the will is published
  auto r = s3->await<mqtt::Publish>(10s);
  REQUIRE(r);
  CHECK(r->as<mqtt::Publish>()->topic == "wills/dying");
  CHECK(r->as<mqtt::Publish>()->payload == "gone");
}

TEST_CASE("cluster broker: a node with the wrong secret key neither joins nor injects") {
  const std::string key(16, 'k');
  TestCluster c(2, key);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto s2 = subscriber(c.port(1), "s2", "#", 1);
  // The members' own traffic flows (over TLS 1.3 with the PSK from the key).
  auto p1 = publisher(c.port(0), "p1");
  p1->publish(make_publish("keyed", "ok", 1));
  auto got = s2->await<mqtt::Publish>(5s);
  REQUIRE(got);
  CHECK(got->as<mqtt::Publish>()->payload == "ok");
  s2->acknowledge(*got->as<mqtt::Publish>());
  TestBroker intruder(node_options("intruder", {"127.0.0.1:" + std::to_string(c.cluster_port(0))},
                                   std::string(16, 'x')));
  auto pi = publisher(intruder.port, "pi");
  for (int i = 0; i < 5; ++i) pi->publish(make_publish("inject", "bad", 1, true));
  // Give it time to try: the cluster stays two nodes, nothing arrives.
  wait_until([&] { return c[0].cluster().membership.dropped > 0; }, 5s);
  CHECK(c[0].cluster().members.size() == 2);
  CHECK(c[1].cluster().members.size() == 2);
  CHECK(intruder.broker.cluster().members.size() == 1);
  const auto more = s2->ping(1s);
  REQUIRE(more);
  CHECK(publishes(*more).empty());
  CHECK(c[0].retained("inject").empty());
}

TEST_CASE(
    "cluster broker: a partition longer than the dead time heals and retained state converges") {
  // Fast failure detection so the test stays short: dead after ~2 s, gossiped for 2 s.
  TestCluster c(3, {}, true, fast_failure_detection);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto p1 = publisher(c.port(0), "p1");
  p1->publish(make_publish("p/keep", "v0", 1, true));
  p1->publish(make_publish("p/del1", "x", 1, true));
  p1->publish(make_publish("p/del2", "y", 1, true));
  REQUIRE(wait_until([&] { return c[2].retained("p/#").size() == 3; }, 10s));

  // {n1, n2} | {n3}
  for (std::size_t side_a : {0u, 1u}) {
    brokerha::testing::set_cluster_partition(c[side_a], c.address(2), true);
    brokerha::testing::set_cluster_partition(c[2], c.address(side_a), true);
  }
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return c[0].cluster().members.size() == 2 &&
                               c[1].cluster().members.size() == 2 &&
                               c[2].cluster().members.size() == 1;
                      },
                      30s),
                  describe(c));
  // Longer than gossip_to_the_dead_time: the dead are no longer gossiped about.
  std::this_thread::sleep_for(2500ms);

  // Writes and deletes on both sides.
  p1->publish(make_publish("p/del1", "", 1, true));
  p1->publish(make_publish("p/keep", "A-new", 1, true));
  p1->publish(make_publish("p/a", "A", 1, true));
  auto p3 = publisher(c.port(2), "p3");
  p3->publish(make_publish("p/del2", "", 1, true));
  p3->publish(make_publish("p/b", "B", 1, true));
  REQUIRE(wait_until([&] { return c[1].retained("p/#").size() == 3; }, 10s));

  for (std::size_t side_a : {0u, 1u}) {
    brokerha::testing::set_cluster_partition(c[side_a], c.address(2), false);
    brokerha::testing::set_cluster_partition(c[2], c.address(side_a), false);
  }
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, 60s), describe(c));
  const std::map<std::string, std::string> expected{
      {"p/a", "A"}, {"p/b", "B"}, {"p/keep", "A-new"}};
  auto state = [&](std::size_t i) {
    std::map<std::string, std::string> out;
    for (const auto& m : c[i].retained("p/#")) out[m.topic] = m.payload;
    return out;
  };
  const bool converged = wait_until(
      [&] { return state(0) == expected && state(1) == expected && state(2) == expected; }, 30s);
  for (std::size_t i = 0; i < 3; ++i) {
    std::string s;
    for (const auto& [t, v] : state(i)) s += t + "=" + v + " ";
    INFO("n" << i + 1 << ": " << s);
    CHECK(converged);
  }
}

TEST_CASE("cluster broker: the bus reports new members and messages from peers") {
  auto bus = std::make_shared<brokerha::Bus>();
  auto sub = bus->subscribe({std::string(brokerha::bus_channels::kNewMember),
                             std::string(brokerha::bus_channels::kMessageFrom),
                             std::string(brokerha::bus_channels::kMessageTo)},
                            100);
  TestBroker n1(node_options("n1", {}), [&](brokerha::Broker& b) { b.set_bus(bus); });
  const std::uint16_t n1_cluster = n1.broker.cluster().port;
  TestBroker n2(node_options("n2", {"127.0.0.1:" + std::to_string(n1_cluster)}));
  REQUIRE(wait_until([&] { return n1.broker.cluster().members.size() == 2; }, kFormTimeout));
  const std::string n2_endpoint = "\"127.0.0.1:" + std::to_string(n2.broker.cluster().port) + "\"";
  auto linked = [](const brokerha::Broker& b) {
    const ClusterInfo ci = b.cluster();
    return ci.links.size() == 1 && ci.links[0].connected;
  };
  REQUIRE(wait_until([&] { return linked(n1.broker) && linked(n2.broker); }, 10s));
  auto s1 = subscriber(n1.port, "s1", "bus/#", 0);
  auto s2 = subscriber(n2.port, "s2", "bus/to/#", 0);
  auto p2 = publisher(n2.port, "p2");
  p2->publish(make_publish("bus/x", "payload", 1));
  REQUIRE(s1->await<mqtt::Publish>(5s));
  // Published on n1: the event names the node it went to (n2), and a local-only one none.
  auto p1 = publisher(n1.port, "p1");
  p1->publish(make_publish("bus/to/2", "remote", 1));
  p1->publish(make_publish("bus/local", "local", 1));
  REQUIRE(s2->await<mqtt::Publish>(5s));

  bool member = false, message = false, to_remote = false, to_local = false;
  for (int i = 0; i < 50 && !(member && message && to_remote && to_local); ++i) {
    auto e = sub->pop(100ms);
    if (!e) continue;
    if (e->channel == brokerha::bus_channels::kNewMember) {
      CHECK(e->data == n2_endpoint);
      member = true;
    }
    if (e->channel == brokerha::bus_channels::kMessageFrom) {
      CHECK(e->data.find("\"TopicName\":\"bus/x\"") != std::string::npos);
      CHECK(e->data.find("\"Node\":\"n2\"") != std::string::npos);
      message = true;
    }
    if (e->channel == brokerha::bus_channels::kMessageTo) {
      if (e->data.find("\"TopicName\":\"bus/to/2\"") != std::string::npos) {
        CHECK(e->data.find("\"Nodes\":[\"n2\"]") != std::string::npos);
        to_remote = true;
      }
      if (e->data.find("\"TopicName\":\"bus/local\"") != std::string::npos) {
        CHECK(e->data.find("\"Nodes\":[]") != std::string::npos);
        to_local = true;
      }
    }
  }
  CHECK(member);
  CHECK(message);
  CHECK(to_remote);
  CHECK(to_local);
}

TEST_CASE("cluster broker: the read ACL of the receiving node applies to messages from peers") {
  // Every node's rules: client "blocked" may not read secret/#; everything else is allowed.
  TestCluster c(2, {}, false, [](BrokerOptions& o) {
    brokerha::AclRule rule;
    rule.client = "blocked";
    rule.filters.emplace_back("secret/#", 0);
    o.access.acl.push_back(rule);
  });
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  // "#" is granted at SUBSCRIBE (no rule names it); each delivery is checked on node 2.
  auto blocked = subscriber(c.port(1), "blocked", "#", 1);
  auto open = subscriber(c.port(1), "open", "#", 1);
  auto p1 = publisher(c.port(0), "p1");
  p1->publish(make_publish("secret/x", "s", 1));
  p1->publish(make_publish("open/x", "o", 1));
  const auto got_open = receive_exactly(*open, 2);
  const auto got_blocked = receive_exactly(*blocked, 1);
  REQUIRE(got_blocked.size() == 1);
  CHECK(got_blocked[0].as<mqtt::Publish>()->topic == "open/x");
  CHECK(c[1].stats().acl_denials >= 1);
}

// ---- shared subscriptions across nodes ---------------------------------------------------------

TEST_CASE("cluster broker: a shared group with members on two nodes gets each message once") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  // Members on n1 and n2; publishers on n3 (no member) and on n1 (a member's node).
  auto a = subscriber(c.port(0), "a", "$share/g/work/#", 1);
  auto b = subscriber(c.port(1), "b", "$share/g/work/#", 1);
  auto p3 = publisher(c.port(2), "p3");
  auto p1 = publisher(c.port(0), "p1");
  // Every 10th message retained: retained writes go to every node, and still reach the
  // group once.
  std::vector<std::string> sent = publish_numbered(*p3, "work/from3", "n3", 500, 10);
  const std::vector<std::string> more = publish_numbered(*p1, "work/from1", "n1", 500, 10);
  sent.insert(sent.end(), more.begin(), more.end());
  const auto got = receive_spread({a.get(), b.get()}, sent.size());
  const auto per_member = check_once_per_group(got, sent);
  // Round robin over the slots (a node each, or a member of the publishing node each).
  CHECK(per_member[0] > 0);
  CHECK(per_member[1] > 0);
  auto from = [&](std::size_t member, const std::string& tag) {
    std::size_t n = 0;
    for (const auto& p : got[member]) n += p.rfind(tag, 0) == 0 ? 1 : 0;
    return n;
  };
  CHECK(from(0, "n3-") > 0);
  CHECK(from(1, "n3-") > 0);
  CHECK(from(0, "n1-") > 0);
  CHECK(from(1, "n1-") > 0);
  CHECK(shared_dropped(c) == 0);
}

TEST_CASE("cluster broker: a plain subscriber gets every message and a shared group each once") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  // n1 has a plain subscriber and a group member: a message forwarded to n1 for the plain
  // subscriber must not reach n1's member unless the group was given to n1.
  auto plain = subscriber(c.port(0), "plain", "mix/#", 1);
  auto a = subscriber(c.port(0), "a", "$share/g/mix/#", 1);
  auto b = subscriber(c.port(1), "b", "$share/g/mix/#", 1);
  auto p3 = publisher(c.port(2), "p3");
  const std::vector<std::string> sent = publish_numbered(*p3, "mix", "m", 200);
  const auto got_plain = receive_spread({plain.get()}, sent.size());
  check_once_per_group(got_plain, sent);
  const auto per_member =
      check_once_per_group(receive_spread({a.get(), b.get()}, sent.size()), sent);
  CHECK(per_member[0] > 0);
  CHECK(per_member[1] > 0);
  CHECK(shared_dropped(c) == 0);
}

TEST_CASE("cluster broker: two groups on one filter each get every message once") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto g1 = subscriber(c.port(0), "g1", "$share/g/two/#", 1);
  auto g2 = subscriber(c.port(1), "g2", "$share/g/two/#", 1);
  auto h2 = subscriber(c.port(1), "h2", "$share/h/two/#", 1);
  auto h3 = subscriber(c.port(2), "h3", "$share/h/two/#", 1);
  auto p1 = publisher(c.port(0), "p1");
  const std::vector<std::string> sent = publish_numbered(*p1, "two", "t", 200);
  const auto g = check_once_per_group(receive_spread({g1.get(), g2.get()}, sent.size()), sent);
  const auto h = check_once_per_group(receive_spread({h2.get(), h3.get()}, sent.size()), sent);
  CHECK(g[0] > 0);
  CHECK(g[1] > 0);
  CHECK(h[0] > 0);
  CHECK(h[1] > 0);
  CHECK(shared_dropped(c) == 0);
}

TEST_CASE("cluster broker: after a group member leaves the remaining member gets everything") {
  TestCluster c(3);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  const std::string group = "$share/g/leave/#";
  auto a = subscriber(c.port(0), "a", group, 1);
  auto b = subscriber(c.port(1), "b", group, 1);
  auto p3 = publisher(c.port(2), "p3");
  auto round = [&](const std::string& tag) {
    const std::vector<std::string> sent = publish_numbered(*p3, "leave", tag, 100);
    return check_once_per_group(receive_spread({a.get(), b.get()}, sent.size()), sent);
  };
  auto spread = round("both");
  CHECK(spread[0] > 0);
  CHECK(spread[1] > 0);

  // b unsubscribes. Its route withdrawal and a later SUBSCRIBE's route change go to the
  // peers in order, and that SUBACK waits for their acknowledgement: once it is back, every
  // node has withdrawn n2 from the group.
  REQUIRE(unsubscribe(*b, group));
  REQUIRE(b->subscribe("barrier/1", 1));
  spread = round("unsubscribed");
  CHECK(spread[0] == 100);
  CHECK(spread[1] == 0);

  REQUIRE(b->subscribe(group, 1));
  spread = round("again");
  CHECK(spread[0] > 0);
  CHECK(spread[1] > 0);

  // b disconnects (clean start: its session ends). The same client id lands on the same
  // shard of n2, so its next SUBACK again orders after the withdrawal.
  b->disconnect();
  b = subscriber(c.port(1), "b", "barrier/2", 1);
  spread = round("disconnected");
  CHECK(spread[0] == 100);
  CHECK(spread[1] == 0);
  CHECK(shared_dropped(c) == 0);
}

TEST_CASE(
    "cluster broker: a message for a group whose member left meanwhile is dropped and counted") {
  TestCluster c(3, {}, true);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  const std::string group = "$share/g/gone/#";
  auto a = subscriber(c.port(0), "a", group, 1);
  auto b = subscriber(c.port(1), "b", group, 1);
  auto p3 = publisher(c.port(2), "p3");
  // Hold n3's frames to n2 (the link stops; membership still reaches n2 through n1), so that
  // n3 picks n2 for messages that arrive after b has left.
  brokerha::testing::set_cluster_partition(c[2], c.address(1), true);
  brokerha::testing::set_cluster_partition(c[1], c.address(2), true);
  const std::vector<std::string> held = publish_numbered(*p3, "gone", "held", 20);
  REQUIRE(unsubscribe(*b, group));
  brokerha::testing::set_cluster_partition(c[2], c.address(1), false);
  brokerha::testing::set_cluster_partition(c[1], c.address(2), false);
  REQUIRE(wait_until([&] { return c[1].cluster().shared_dropped != 0; }, 20s));
  const auto got = receive_spread({a.get(), b.get()}, held.size());
  const std::uint64_t dropped = c[1].cluster().shared_dropped;
  // n3 alternated between n1 and n2: n2's share was dropped there, not delivered elsewhere.
  CHECK(got[1].empty());
  CHECK(got[0].size() + dropped == held.size());
  CHECK(dropped > 0);

  // Once n3 has n2's withdrawal, a gets everything. A SUBSCRIBE on b's connection orders
  // after it (see the test of a member leaving).
  REQUIRE(b->subscribe("barrier/1", 1));
  const std::vector<std::string> after = publish_numbered(*p3, "gone", "after", 20);
  const auto per_member =
      check_once_per_group(receive_spread({a.get(), b.get()}, after.size()), after);
  CHECK(per_member[0] == after.size());
  CHECK(c[1].cluster().shared_dropped == dropped);
}

TEST_CASE("cluster broker: every subscriber's SUBACK waits until the peers know the filter") {
  // The first subscriber of a filter makes the node announce it; a second subscriber of the
  // same filter, while that announcement is unacknowledged, must not get its SUBACK sooner:
  // a publish on the other node right after it would miss the client. Holding n2's
  // acknowledgements (a partition) makes the wait visible: each SUBACK comes at the bound.
  TestCluster c(2, {}, true);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto first = publisher(c.port(0), "first");
  auto second = publisher(c.port(0), "second");
  brokerha::testing::set_cluster_partition(c[0], c.address(1), true);
  brokerha::testing::set_cluster_partition(c[1], c.address(0), true);
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(first->subscribe("held/#", 1));
  const auto t1 = std::chrono::steady_clock::now();
  REQUIRE(second->subscribe("held/#", 1));
  const auto t2 = std::chrono::steady_clock::now();
  brokerha::testing::set_cluster_partition(c[0], c.address(1), false);
  brokerha::testing::set_cluster_partition(c[1], c.address(0), false);
  const auto bound = brokerha::ClusterOptions{}.route_ack_timeout;  // the nodes' (default)
  INFO("first SUBACK after "
       << std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count()
       << " ms, second after "
       << std::chrono::duration_cast<std::chrono::milliseconds>(t2 - t1).count() << " ms");
  CHECK(t1 - t0 >= bound / 2);
  CHECK(t2 - t1 >= bound / 2);
}

TEST_CASE("cluster broker: nodes of this build speak the highest cluster protocol version") {
  TestCluster c(2);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto negotiated = [&](std::size_t i) {
    const ClusterInfo ci = c[i].cluster();
    return ci.links.size() == 1 && ci.links[0].protocol == brokerha::cluster::kClusterProtocolMax;
  };
  CHECK(wait_until([&] { return negotiated(0) && negotiated(1); }, 5s));
  CHECK(c[0].cluster().incompatible_peers == 0);
  CHECK(c[0].cluster().malformed_frames == 0);
}

TEST_CASE("cluster broker: a partition shorter than link_retain loses nothing between survivors") {
  // n3 is cut off long enough for n1 and n2 to declare it failed; what n1's publisher sends to
  // n3's subscriber meanwhile waits on the link (kept for link_retain) and arrives once the
  // partition heals, in order. Before link_retain the failure cleared the queue.
  TestCluster c(3, {}, true, fast_failure_detection);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto s3 = subscriber(c.port(2), "s3", "kept/#", 1);
  auto p1 = publisher(c.port(0), "p1");
  const std::vector<std::string> before = publish_numbered(*p1, "kept", "before", 20);
  for (std::size_t side_a : {0u, 1u}) {
    brokerha::testing::set_cluster_partition(c[side_a], c.address(2), true);
    brokerha::testing::set_cluster_partition(c[2], c.address(side_a), true);
  }
  REQUIRE_MESSAGE(wait_until([&] { return c[0].cluster().members.size() == 2; }, 30s), describe(c));
  const std::vector<std::string> during = publish_numbered(*p1, "kept", "during", 50);
  for (std::size_t side_a : {0u, 1u}) {
    brokerha::testing::set_cluster_partition(c[side_a], c.address(2), false);
    brokerha::testing::set_cluster_partition(c[2], c.address(side_a), false);
  }
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, 60s), describe(c));
  std::vector<std::string> expected = before;
  expected.insert(expected.end(), during.begin(), during.end());
  const auto got = receive_spread({s3.get()}, expected.size());
  CHECK(got[0] == expected);
  CHECK(c[0].cluster().retain_dropped == 0);
}

TEST_CASE("cluster broker: a retained snapshot larger than the link queue arrives whole") {
  // 400 retained messages of 8 KiB (3.2 MiB) through links that queue at most 1 MiB: the
  // snapshot is paced by the link's acknowledgements, and snapshot_end comes only after the
  // last entry. Before, the entries past the queue bound were refused while the small
  // snapshot_end still fitted, and the joiner believed it was synced with a partial set.
  auto tune = [](BrokerOptions& o) {
    o.cluster->link_queue_bytes = 1u << 20;
    o.cluster->repair_interval = 0ms;  // no digest repair to cover a partial snapshot
  };
  TestCluster c(1, {}, false, tune);
  auto p1 = publisher(c.port(0), "p1");
  constexpr std::size_t kRetained = 400;
  const std::string payload(8 * 1024, 'x');
  for (std::size_t i = 0; i < kRetained; ++i) {
    REQUIRE(p1->publish(make_publish("big/" + std::to_string(i), payload, 1, true)));
  }
  REQUIRE(c[0].retained("big/#").size() == kRetained);
  auto s1 = subscriber(c.port(0), "s1", "live/#", 1);
  c.add();
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  REQUIRE(wait_until([&] { return c[1].cluster().retained_synced; }, 20s));
  CHECK(c[1].retained("big/#").size() == kRetained);
  // Live QoS 1 traffic to the joiner's side is not refused meanwhile.
  auto p2 = publisher(c.port(1), "p2");
  const std::vector<std::string> sent = publish_numbered(*p2, "live", "l", 20);
  const auto got = receive_spread({s1.get()}, sent.size());
  CHECK(got[0] == sent);
  CHECK(c[0].cluster().forward_dropped == 0);
  std::uint64_t dropped = 0;
  for (const auto& l : c[0].cluster().links) dropped += l.dropped;
  CHECK(dropped == 0);
}

TEST_CASE("cluster broker: a route set larger than a link frame reaches a joining node") {
  // 6,000 filters of about 40 bytes (240 KB) with max_packet_size 64 KiB (a link frame holds
  // at most 128 KiB). Before, the full route set was one frame that the link refused: the
  // joining node never learned any of n1's filters and forwarded nothing to it.
  auto tune = [](BrokerOptions& o) { o.max_packet_size = 65536; };
  TestCluster c(1, {}, false, tune);
  MqttClient s1(ProtocolVersion::v5);
  REQUIRE(s1.open_and_connect(c.port(0), make_connect(ProtocolVersion::v5, "many")) == 0);
  constexpr int kFilters = 6000, kBatch = 500;
  std::vector<std::string> filters;
  for (int i = 0; i < kFilters; ++i) {
    filters.push_back("routes/a-rather-long-level-name/" + std::to_string(i) + "/#");
  }
  for (int b = 0; b < kFilters; b += kBatch) {
    std::vector<mqtt::Subscription> subs;
    for (int i = b; i < b + kBatch; ++i) {
      mqtt::Subscription sub;
      sub.filter = filters[static_cast<std::size_t>(i)];
      sub.qos = 1;
      subs.push_back(sub);
    }
    REQUIRE(s1.subscribe(std::move(subs)));
  }
  c.add();
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  // Once n2 acknowledged n1's set, a publish on n2 to the first and the last filter arrives.
  auto p2 = publisher(c.port(1), "p2");
  std::vector<std::string> sent;
  for (int i : {0, kFilters / 2, kFilters - 1}) {
    const std::string topic = "routes/a-rather-long-level-name/" + std::to_string(i) + "/x";
    sent.push_back(topic);
  }
  REQUIRE(wait_until(
      [&] {
        // A probe: the first topic reaches n1 once n2 holds the routes.
        if (!p2->publish(make_publish(sent.front(), "probe", 1))) return false;
        auto r = s1.await<mqtt::Publish>(200ms);
        if (r) s1.acknowledge(*r->as<mqtt::Publish>());
        return r.has_value();
      },
      10s));
  for (const std::string& t : sent) REQUIRE(p2->publish(make_publish(t, t, 1)));
  std::vector<std::string> got;
  while (got.size() < sent.size()) {
    auto r = s1.await<mqtt::Publish>(5s);
    if (!r) break;
    const auto* p = r->as<mqtt::Publish>();
    s1.acknowledge(*p);
    if (p->payload != "probe") got.emplace_back(p->payload);
  }
  CHECK(got == sent);
  CHECK(c[0].cluster().oversized_frames == 0);
}

TEST_CASE("cluster broker: a joining node is caught up only once every member's routes arrived") {
  // A node that joined but has not yet received a member's route set would acknowledge what
  // its clients publish and not forward it: it reports itself not caught up (and /ready 503)
  // until the link to every member is up with its routes and a retained snapshot is in.
  TestCluster c(2, {}, true);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto sub = subscriber(c.port(0), "caught-sub", "caught/#", 1);
  // n1 refuses the data-plane link of the node about to join (its membership still hears it).
  brokerha::testing::set_cluster_link_blocked(c[0], c.address(2), true);
  c.add();
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        const ClusterInfo ci = c[2].cluster();
                        std::size_t up = 0;
                        for (const auto& l : ci.links) up += l.connected ? 1 : 0;
                        return ci.members.size() == 3 && up == 1 && ci.retained_synced;
                      },
                      kFormTimeout),
                  describe(c));
  std::this_thread::sleep_for(500ms);
  CHECK_FALSE(c[2].cluster().caught_up);  // n1's routes are missing
  CHECK(c[0].cluster().caught_up);        // the others were caught up already and stay so
  CHECK(c[1].cluster().caught_up);
  brokerha::testing::set_cluster_link_blocked(c[0], c.address(2), false);
  REQUIRE_MESSAGE(wait_until([&] { return c[2].cluster().caught_up; }, 10s), describe(c));
  // Caught up means routed: a message published on n3 reaches n1's subscriber.
  auto pub = publisher(c.port(2), "caught-pub");
  REQUIRE(pub->publish(make_publish("caught/t", "hello", 1)));
  auto got = sub->await<mqtt::Publish>(5s);
  REQUIRE(got);
  CHECK(got->as<mqtt::Publish>()->payload == "hello");
}

TEST_CASE("cluster broker: start refuses a cluster without a key unless it is insecure") {
  BrokerOptions o = node_options("keyless", {});
  o.cluster->membership.secret_key.clear();
  auto refused = [](const BrokerOptions& options) -> std::string {
    brokerha::Broker b(options);
    try {
      b.start();
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    b.stop();
    return "started";
  };
  const std::string no_key = refused(o);
  CHECK(no_key.find("cluster.membership.secret_key: required in cluster mode") !=
        std::string::npos);
  CHECK(no_key.find("cluster.insecure") != std::string::npos);
  {
    brokerha::Broker b(o);
    std::error_code ec;
    b.start(ec);
    CHECK(static_cast<bool>(ec));
  }
  BrokerOptions unverified = node_options("unverified", {});
  unverified.cluster->membership.gossip_verify_incoming = false;
  CHECK(
      refused(unverified).find("cluster.membership.secret_key: gossip_verify_incoming is false") !=
      std::string::npos);

  o.cluster->insecure = true;
  TestBroker insecure(o);
  CHECK(insecure.broker.cluster().insecure);
  TestBroker keyed(node_options("keyed", {}));
  CHECK(!keyed.broker.cluster().insecure);
  // A keyed node's keyring can be replaced; an insecure one cannot get a key at run time.
  CHECK_THROWS_AS(insecure.broker.set_cluster_keys({kTestClusterKey}), std::invalid_argument);
  CHECK_THROWS_AS(keyed.broker.set_cluster_keys({"short"}), std::invalid_argument);
  CHECK_THROWS_AS(keyed.broker.set_cluster_keys({}), std::invalid_argument);
  keyed.broker.set_cluster_keys({kTestClusterKey});
}

TEST_CASE(
    "cluster broker: the keyring rotates at run time and nodes joining at each step link up") {
  const std::string old_key(32, 'o');
  const std::string new_key(32, 'n');
  TestCluster c(2, old_key);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  auto s2 = subscriber(c.port(1), "s2", "rot/#", 1);
  auto p1 = publisher(c.port(0), "p1");
  int sent = 0;
  auto flows = [&] {
    const std::string payload = "m" + std::to_string(++sent);
    p1->publish(make_publish("rot/x", payload, 1));
    auto got = s2->await<mqtt::Publish>(10s);
    if (!got) return false;
    s2->acknowledge(*got->as<mqtt::Publish>());
    return got->as<mqtt::Publish>()->payload == payload;
  };
  REQUIRE(flows());
  // A node that joins with `keys` (first encrypts): it must become a full member, links up.
  std::vector<std::unique_ptr<TestBroker>> joiners;
  auto join_with = [&](const std::vector<std::string>& keys) {
    BrokerOptions o = node_options("j" + std::to_string(joiners.size() + 1),
                                   {"127.0.0.1:" + std::to_string(c.cluster_port(0))}, keys[0]);
    o.cluster->membership.secret_keys.assign(keys.begin() + 1, keys.end());
    joiners.push_back(std::make_unique<TestBroker>(std::move(o)));
    const std::size_t want = 2 + joiners.size();
    auto& j = joiners.back()->broker;
    return wait_until(
        [&] {
          const ClusterInfo ci = j.cluster();
          std::size_t up = 0;
          for (const auto& l : ci.links) up += l.connected ? 1 : 0;
          return ci.members.size() == want && up == want - 1;
        },
        kFormTimeout);
  };
  auto rekey = [&](const std::vector<std::string>& keys) {
    c[0].set_cluster_keys(keys);
    c[1].set_cluster_keys(keys);
    for (auto& j : joiners) j->broker.set_cluster_keys(keys);
  };
  // Before the rotation, a node with only the old key (the lone-key PSK identity) links up
  // with nodes that hold two keys.
  rekey({old_key, new_key});  // step 1
  CHECK(flows());
  CHECK(join_with({old_key}));
  CHECK(join_with({old_key, new_key}));
  rekey({new_key, old_key});  // step 2
  CHECK(flows());
  CHECK(join_with({new_key, old_key}));
  rekey({new_key});  // step 3
  CHECK(flows());
  CHECK(join_with({new_key}));
  CHECK(c[0].cluster().members.size() == 2 + joiners.size());
  CHECK(c[1].cluster().members.size() == 2 + joiners.size());
  // Only the old key: no longer let in.
  TestBroker stale(
      node_options("stale", {"127.0.0.1:" + std::to_string(c.cluster_port(0))}, old_key));
  wait_until([&] { return stale.broker.cluster().members.size() > 1; }, 5s);
  CHECK(stale.broker.cluster().members.size() == 1);
  CHECK(flows());
}
