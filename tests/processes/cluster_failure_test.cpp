// SPDX-License-Identifier: Apache-2.0
// Failure modes of a cluster of real brokerha-server processes: kill -9 of one node
// of three under a QoS 1 stream between the two others, and a SIGTERM drain with MQTT 5
// clients on every node while publishing across nodes. Real processes found through DNS SRV
// (tests/support/server_cluster.hpp), real MQTT clients on loopback, bounded waits and no
// timing assertions; processes are stopped only by their pid.

#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/server_cluster.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::test::make_connect;
using brokerha::test::make_publish;
using brokerha::test::MqttClient;
using brokerha::test::ServerCluster;
using brokerha::test::wait_until;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;
using Clock = std::chrono::steady_clock;

/// A v5 CONNECT; `expiry` > 0 asks for a session that outlives the connection.
mqtt::Connect v5_connect(std::string_view id, bool clean, std::uint32_t expiry = 0,
                         std::uint16_t keep_alive = 0) {
  mqtt::Connect c = make_connect(ProtocolVersion::v5, id, clean, keep_alive);
  if (expiry > 0) c.properties.session_expiry_interval = expiry;
  return c;
}

/// Connects `client` to `port`; the CONNACK, or nullopt.
std::optional<brokerha::test::Received> connect_to(MqttClient& client, std::uint16_t port,
                                                   const mqtt::Connect& c) {
  if (!client.open(port)) return std::nullopt;
  return client.connect(c, 5s);
}

bool connack_ok(const std::optional<brokerha::test::Received>& ack) {
  return ack && ack->as<mqtt::Connack>() != nullptr && ack->as<mqtt::Connack>()->code == 0;
}

/// A numbered QoS 1 stream: a publisher thread sends "0".."n-1" on `topic` at a steady pace
/// (each PUBLISH waits for its PUBACK), a subscriber thread counts what arrives.
class Stream {
 public:
  Stream(int n, std::chrono::microseconds pace)
      : n_(n), pace_(pace), counts_(static_cast<std::size_t>(n)) {}
  ~Stream() { join(); }

  void start(MqttClient& publisher, MqttClient& subscriber, const std::string& topic) {
    pub_ = std::thread([this, &publisher, topic] { publish(publisher, topic); });
    sub_ = std::thread([this, &subscriber] { receive(subscriber); });
  }
  void join() {
    if (pub_.joinable()) pub_.join();
    if (sub_.joinable()) sub_.join();
  }
  int received() const { return received_.load(); }
  int published() const { return published_.load(); }

  // After join():
  int lost() const {
    int n = 0;
    for (int c : counts_) n += c == 0 ? 1 : 0;
    return n;
  }
  int duplicates() const {
    int n = 0;
    for (int c : counts_) n += c > 1 ? c - 1 : 0;
    return n;
  }
  int foreign() const { return foreign_; }
  const std::string& publish_error() const { return publish_error_; }
  const std::string& receive_error() const { return receive_error_; }

 private:
  void publish(MqttClient& client, const std::string& topic) {
    const auto t0 = Clock::now();
    for (int i = 0; i < n_; ++i) {
      // The load's shape (a steady rate), not a wait for a condition.
      std::this_thread::sleep_until(t0 + pace_ * i);
      const std::string payload = std::to_string(i);
      const auto ack = client.publish(make_publish(topic, payload, 1), 10s);
      if (!ack) {
        publish_error_ = "no PUBACK for message " + payload + ": " + client.error();
        break;
      }
      published_.fetch_add(1);
    }
    publisher_done_ = true;
  }

  void count(const mqtt::Publish& p) {
    char* end = nullptr;
    const std::string text(p.payload);
    const long seq = std::strtol(text.c_str(), &end, 10);
    if (end == text.c_str() || *end != '\0' || seq < 0 || seq >= n_) {
      ++foreign_;
      return;
    }
    if (counts_[static_cast<std::size_t>(seq)]++ == 0) ++distinct_;
    received_.fetch_add(1);
  }

  void receive(MqttClient& client) {
    const auto give_up = Clock::now() + 180s;
    auto last = Clock::now();
    while (distinct_ < n_ && Clock::now() < give_up) {
      auto r = client.await<mqtt::Publish>(1s);
      if (!r) {
        if (client.eof()) {
          receive_error_ = "the subscriber's connection closed: " + client.error();
          return;
        }
        // Nothing more will come once the publisher is done and the stream stays silent.
        if (publisher_done_.load() && Clock::now() - last > 20s) return;
        continue;
      }
      last = Clock::now();
      const mqtt::Publish& p = *r->as<mqtt::Publish>();
      count(p);
      client.acknowledge(p);
    }
    // Whatever arrived before the PINGRESP (a late duplicate) counts too.
    if (auto rest = client.ping(5s)) {
      for (const mqtt::Publish* p : brokerha::test::publishes(*rest)) {
        count(*p);
        client.acknowledge(*p);
      }
    }
  }

  const int n_;
  const std::chrono::microseconds pace_;
  std::vector<int> counts_;  // subscriber thread, then read after join()
  int distinct_ = 0;
  int foreign_ = 0;
  std::atomic<int> received_{0};
  std::atomic<int> published_{0};
  std::atomic<bool> publisher_done_{false};
  std::string publish_error_;
  std::string receive_error_;
  std::thread pub_, sub_;
};

void form(ServerCluster& c) {
  for (std::size_t i = 0; i < c.nodes.size(); ++i) c.start(i);
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return c.all_see(3, {0, 1, 2});
                      },
                      30s),
                  c.nodes[0]->process.describe());
  REQUIRE(wait_until([&] { return c.all_ready({0, 1, 2}); }, 15s));
}

double metric_or(const brokerha::test::ServerNode& n, const std::string& sample, double fallback) {
  return n.metric(sample).value_or(fallback);
}

const std::string kLeft = "broker_cluster_member_events_total{event=\"leave\"}";
const std::string kFailed = "broker_cluster_member_events_total{event=\"failed\"}";

}  // namespace

TEST_CASE("cluster failure: kill -9 of one node of three loses nothing between the others") {
  ServerCluster c(3);
  form(c);
  auto& n1 = *c.nodes[0];
  auto& n2 = *c.nodes[1];
  auto& n3 = *c.nodes[2];

  // A client of the node that will die, with a persistent session and a subscription.
  MqttClient victim(ProtocolVersion::v5);
  REQUIRE(connack_ok(connect_to(victim, n3.mqtt_port, v5_connect("victim", false, 3600))));
  REQUIRE(victim.subscribe("victim/#", 1));

  // Publisher on node 1, persistent subscriber on node 2.
  MqttClient publisher(ProtocolVersion::v5), subscriber(ProtocolVersion::v5);
  REQUIRE(connack_ok(connect_to(publisher, n1.mqtt_port, v5_connect("stream-pub", true))));
  REQUIRE(connack_ok(connect_to(subscriber, n2.mqtt_port, v5_connect("stream-sub", false, 3600))));
  REQUIRE(subscriber.subscribe("stream/#", 1));

  constexpr int kMessages = 5000;
  Stream stream(kMessages, 2ms);  // about 10 s
  stream.start(publisher, subscriber, "stream/seq");
  REQUIRE(wait_until([&] { return stream.received() >= 1000; }, 60s));

  n3.process.kill(SIGKILL);
  victim.close();
  const bool survivors_see_two = wait_until([&] { return c.all_see(2, {0, 1}); }, 30s);
  // Restarted with the same name and address while the stream may still run.
  c.start(2);
  stream.join();
  INFO("publish error: " << stream.publish_error());
  INFO("receive error: " << stream.receive_error());
  CHECK(survivors_see_two);
  CHECK(stream.published() == kMessages);
  CHECK(stream.lost() == 0);
  CHECK(stream.duplicates() == 0);
  CHECK(stream.foreign() == 0);
  // The survivors recorded a failure, not a leave.
  CHECK(metric_or(n1, kFailed, 0) >= 1);
  CHECK(metric_or(n2, kFailed, 0) >= 1);

  // The restarted node rejoins: three alive members everywhere, all ready.
  CHECK(wait_until(
      [&] {
        for (const auto& n : c.nodes) {
          if (n->alive_members() != 3) return false;
        }
        return true;
      },
      40s));
  CHECK(wait_until([&] { return c.all_ready({0, 1, 2}); }, 15s));

  // The victim resumes on node 1: its session died with node 3 (sessions are not replicated,
  // docs/cluster.md), so the broker says so, and a new subscription there works.
  const auto ack = connect_to(victim, n1.mqtt_port, v5_connect("victim", false, 3600));
  REQUIRE(connack_ok(ack));
  CHECK_FALSE(ack->as<mqtt::Connack>()->session_present);
  REQUIRE(victim.subscribe("victim/#", 1));
  MqttClient other(ProtocolVersion::v5);
  REQUIRE(connack_ok(connect_to(other, n2.mqtt_port, v5_connect("victim-peer", true))));
  REQUIRE(other.publish(make_publish("victim/after", "resumed", 1)));
  auto got = victim.await<mqtt::Publish>(10s);
  REQUIRE(got);
  CHECK(got->as<mqtt::Publish>()->payload == "resumed");
  victim.acknowledge(*got->as<mqtt::Publish>());
}

TEST_CASE("cluster failure: SIGTERM drains a node and its clients move on") {
  constexpr int kGraceMs = 10000;
  ServerCluster c(
      3, "shutdown:\n  grace_period: " + std::to_string(kGraceMs) + "\n  session_wait: 3000\n");
  form(c);
  auto& n1 = *c.nodes[0];
  auto& n2 = *c.nodes[1];
  auto& n3 = *c.nodes[2];

  // Node 3's clients: a v5 subscriber that will move, a v5 client with a persistent session
  // that it resumes on node 1 during the drain (the session moves there, and the drain stops
  // waiting for it), a v3.1.1 client, and a v5 publisher.
  MqttClient mover(ProtocolVersion::v5), keeper(ProtocolVersion::v5);
  MqttClient old(ProtocolVersion::v311), pub3(ProtocolVersion::v5);
  REQUIRE(connack_ok(connect_to(mover, n3.mqtt_port, v5_connect("mover", true))));
  REQUIRE(mover.subscribe("drain/#", 1));
  REQUIRE(connack_ok(connect_to(keeper, n3.mqtt_port, v5_connect("keeper", false, 600))));
  REQUIRE(keeper.subscribe("keeper/#", 1));
  REQUIRE(connack_ok(
      connect_to(old, n3.mqtt_port, make_connect(ProtocolVersion::v311, "old-v3", true, 0))));
  REQUIRE(connack_ok(connect_to(pub3, n3.mqtt_port, v5_connect("pub3", true))));

  // The stream between the nodes that stay: publisher on node 1, subscriber on node 2.
  MqttClient publisher(ProtocolVersion::v5), subscriber(ProtocolVersion::v5);
  REQUIRE(connack_ok(connect_to(publisher, n1.mqtt_port, v5_connect("drain-pub", true))));
  REQUIRE(connack_ok(connect_to(subscriber, n2.mqtt_port, v5_connect("drain-sub", false, 3600))));
  REQUIRE(subscriber.subscribe("drain/#", 1));
  // Node 3 publishes across too, before it goes.
  REQUIRE(pub3.publish(make_publish("drain/from3", "x", 1)));

  constexpr int kMessages = 3000;
  Stream stream(kMessages, 2ms);  // about 6 s
  stream.start(publisher, subscriber, "drain/seq");
  REQUIRE(wait_until([&] { return stream.received() >= 500; }, 60s));

  n3.process.kill(SIGTERM);
  // While it drains (at least the 3 s it waits for the keeper's session) it is not ready.
  std::string ready_body;
  int ready_status = 0;
  const bool saw_not_ready = wait_until(
      [&] {
        ready_status = n3.get("/ready", &ready_body);
        return ready_status == 503;
      },
      5s);

  // The v5 clients get DISCONNECT 0x8B (Server shutting down); the v3.1.1 client is closed.
  for (MqttClient* client : {&mover, &keeper, &pub3}) {
    const auto seen = client->wait_closed(15s);
    REQUIRE(seen);
    bool shutting_down = false;
    for (const auto& r : *seen) {
      if (const auto* d = r.as<mqtt::Disconnect>()) {
        shutting_down = d->reason_code == brokerha::ReasonCode::server_shutting_down;
      }
    }
    INFO(brokerha::test::describe(*seen));
    CHECK(shutting_down);
  }
  CHECK(old.wait_closed(15s).has_value());

  // The keeper resumes on node 1 while node 3 drains: its session, with its subscription, is
  // taken over from node 3 (session present).
  const auto resumed = connect_to(keeper, n1.mqtt_port, v5_connect("keeper", false, 600));
  REQUIRE(connack_ok(resumed));
  CHECK(resumed->as<mqtt::Connack>()->session_present);

  // The process exits 0 within its grace period (bounded wait, not a timing assertion).
  REQUIRE(n3.process.wait_exit(std::chrono::milliseconds(kGraceMs + 10000)));
  INFO(n3.process.describe());
  CHECK(n3.process.exit_code() == 0);
  CHECK(n3.process.signal() == 0);
  INFO("last /ready during the drain: " << ready_status << " " << ready_body);
  CHECK(saw_not_ready);

  // The mover reconnects to node 2 and gets what node 1 publishes from then on.
  // (Only drain/after: a client that does not read while the stream runs would fill its
  // in-flight window and queue, and the broker would drop what comes next.)
  REQUIRE(connack_ok(connect_to(mover, n2.mqtt_port, v5_connect("mover", true))));
  REQUIRE(mover.subscribe("drain/after", 1));

  stream.join();
  INFO("publish error: " << stream.publish_error());
  INFO("receive error: " << stream.receive_error());
  CHECK(stream.published() == kMessages);
  CHECK(stream.lost() == 0);
  CHECK(stream.duplicates() == 0);

  MqttClient late(ProtocolVersion::v5);
  REQUIRE(connack_ok(connect_to(late, n1.mqtt_port, v5_connect("late-pub", true))));
  REQUIRE(late.publish(make_publish("drain/after", "still flowing", 1)));
  auto got = mover.await<mqtt::Publish>(10s);
  REQUIRE(got);
  CHECK(got->as<mqtt::Publish>()->topic == "drain/after");
  CHECK(got->as<mqtt::Publish>()->payload == "still flowing");
  // The keeper's subscription came along from node 3.
  REQUIRE(late.publish(make_publish("keeper/after", "kept", 1)));
  auto kept = keeper.await<mqtt::Publish>(10s);
  REQUIRE(kept);
  CHECK(kept->as<mqtt::Publish>()->payload == "kept");

  // The survivors recorded a graceful leave, not a failure.
  CHECK(wait_until([&] { return c.all_see(2, {0, 1}); }, 30s));
  CHECK(wait_until([&] { return metric_or(n1, kLeft, 0) >= 1 && metric_or(n2, kLeft, 0) >= 1; },
                   10s));
  CHECK(metric_or(n1, kFailed, -1) == 0);
  CHECK(metric_or(n2, kFailed, -1) == 0);
  CHECK(c.all_ready({0, 1}));
}
