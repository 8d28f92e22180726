// SPDX-License-Identifier: Apache-2.0
// The overload limits (docs/security.md) with real connections on loopback: max_connections,
// max_connection_rate (per listener), max_subscriptions (per session) and max_publish_rate (per
// client), each hit and counted in BrokerStats, and each replaced while the broker runs with
// Broker::set_limits() (the server's SIGHUP).

#include <brokerha/broker.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mqtt/packet.hpp"
#include "support/raw_client.hpp"

namespace {

using namespace std::chrono_literals;
namespace mqtt = brokerha::mqtt;
namespace raw = brokerha::test::raw;
using brokerha::ReasonCode;
using mqtt::ProtocolVersion;

brokerha::BrokerOptions options() {
  brokerha::BrokerOptions o;
  o.listeners.push_back({"127.0.0.1", 0});
  o.io_threads = 2;
  o.sys_interval = 0ms;
  return o;
}

struct Running {
  explicit Running(const brokerha::BrokerOptions& o) : broker(o) {
    broker.start();
    port = broker.listen_endpoints().at(0).port;
  }
  ~Running() { broker.stop(); }
  brokerha::Broker broker;
  std::uint16_t port = 0;
};

// A client connected (CONNACK 0) or null when the broker closed it without one.
std::unique_ptr<raw::Client> connect(std::uint16_t port, ProtocolVersion v, const std::string& id) {
  auto c = std::make_unique<raw::Client>(v);
  if (!c->open(port)) return nullptr;
  const auto ack = c->handshake(c->connect_packet(id), 2000ms);
  if (!ack || ack->get<mqtt::Connack>() == nullptr || ack->get<mqtt::Connack>()->code != 0) {
    return nullptr;
  }
  return c;
}

// The SUBACK codes for one SUBSCRIBE of `filters` at QoS 1.
std::vector<int> subscribe(raw::Client& c, const std::vector<std::string>& filters,
                           std::uint16_t id) {
  mqtt::Subscribe s;
  s.packet_id = id;
  for (const std::string& f : filters) {
    mqtt::Subscription sub;
    sub.filter = f;
    sub.qos = 1;
    s.subscriptions.push_back(sub);
  }
  REQUIRE(c.send(mqtt::Packet(s)));
  const auto ack = c.receive_type(mqtt::PacketType::suback);
  INFO("answer: " << raw::describe(ack));
  REQUIRE(ack);
  REQUIRE(ack->get<mqtt::Suback>() != nullptr);
  std::vector<int> codes;
  for (ReasonCode r : ack->get<mqtt::Suback>()->reason_codes) codes.push_back(static_cast<int>(r));
  return codes;
}

}  // namespace

TEST_CASE("overload: max_connections closes connections beyond it, counted, and reloads") {
  auto o = options();
  o.max_connections = 2;
  Running r(o);
  auto a = connect(r.port, ProtocolVersion::v311, "mc-a");
  auto b = connect(r.port, ProtocolVersion::v311, "mc-b");
  REQUIRE(a);
  REQUIRE(b);
  CHECK_FALSE(connect(r.port, ProtocolVersion::v311, "mc-c"));
  CHECK(raw::wait_until([&] { return r.broker.stats().connections_refused == 1; }, 3s));

  o.max_connections = 3;  // raised at run time
  r.broker.set_limits(o);
  auto c = connect(r.port, ProtocolVersion::v311, "mc-c");
  CHECK(c);
  CHECK_FALSE(connect(r.port, ProtocolVersion::v311, "mc-d"));
  CHECK(raw::wait_until([&] { return r.broker.stats().connections_refused == 2; }, 3s));

  o.max_connections = 0;  // unlimited
  r.broker.set_limits(o);
  CHECK(connect(r.port, ProtocolVersion::v311, "mc-d"));
}

TEST_CASE("overload: max_connection_rate refuses a burst beyond one second's worth") {
  auto o = options();
  o.max_connection_rate = 5;
  Running r(o);
  std::vector<std::unique_ptr<raw::Client>> open;
  int accepted = 0;
  const auto start = raw::Clock::now();
  for (int i = 0; i < 20; ++i) {
    auto c = connect(r.port, ProtocolVersion::v311, "rate-" + std::to_string(i));
    if (c) {
      ++accepted;
      open.push_back(std::move(c));
    }
  }
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(raw::Clock::now() - start);
  INFO("accepted " << accepted << " of 20 in " << took.count() << " ms");
  // The burst (5) plus what refilled meanwhile (5 a second).
  CHECK(accepted >= 5);
  CHECK(accepted <= 5 + 1 + static_cast<int>(took.count() * 5 / 1000));
  CHECK(r.broker.stats().connection_rate_refused == static_cast<std::uint64_t>(20 - accepted));

  // Refilled after a second; and unlimited once set to 0.
  std::this_thread::sleep_for(1100ms);
  CHECK(connect(r.port, ProtocolVersion::v311, "rate-later"));
  o.max_connection_rate = 0;
  r.broker.set_limits(o);
  for (int i = 0; i < 10; ++i)
    CHECK(connect(r.port, ProtocolVersion::v5, "free-" + std::to_string(i)));
}

TEST_CASE("overload: max_subscriptions refuses new filters beyond it, per filter") {
  auto o = options();
  o.max_subscriptions = 2;
  Running r(o);
  auto v5 = connect(r.port, ProtocolVersion::v5, "subs-5");
  REQUIRE(v5);
  CHECK(subscribe(*v5, {"a", "b", "c"}, 1) == std::vector<int>{1, 1, 0x97});
  CHECK(subscribe(*v5, {"a"}, 2) == std::vector<int>{1});  // held already: not a new one
  auto v3 = connect(r.port, ProtocolVersion::v311, "subs-3");
  REQUIRE(v3);
  CHECK(subscribe(*v3, {"x", "y", "z", "w"}, 1) == std::vector<int>{1, 1, 0x80, 0x80});
  CHECK(r.broker.stats().subscriptions_refused == 3);
  CHECK(r.broker.stats().subscriptions == 4);

  o.max_subscriptions = 3;
  r.broker.set_limits(o);
  CHECK(subscribe(*v3, {"z", "w"}, 2) == std::vector<int>{1, 0x80});
  CHECK(r.broker.stats().subscriptions_refused == 4);
}

TEST_CASE("overload: max_publish_rate ends a flooding client (v5 DISCONNECT 0x96, v3 close)") {
  auto o = options();
  o.max_publish_rate = 20;
  Running r(o);
  auto sub = connect(r.port, ProtocolVersion::v5, "watcher");
  REQUIRE(sub);
  REQUIRE(subscribe(*sub, {"flood/#"}, 1) == std::vector<int>{1});

  // Within the rate: 10 messages in half a second are all delivered.
  auto calm = connect(r.port, ProtocolVersion::v5, "calm");
  REQUIRE(calm);
  for (int i = 0; i < 10; ++i) {
    REQUIRE(calm->publish("flood/calm", "m"));
    std::this_thread::sleep_for(50ms);
  }
  for (int i = 0; i < 10; ++i) REQUIRE(sub->receive_type(mqtt::PacketType::publish));

  for (const ProtocolVersion v : {ProtocolVersion::v5, ProtocolVersion::v311}) {
    CAPTURE(static_cast<int>(v));
    auto flood = connect(r.port, v, "flood-" + std::to_string(static_cast<int>(v)));
    REQUIRE(flood);
    std::string burst;
    for (int i = 0; i < 200; ++i) {
      mqtt::Publish p;
      p.topic = "flood/x";
      p.payload = "f";
      REQUIRE(mqtt::encode(mqtt::Packet(p), v, burst));
    }
    flood->send_raw(burst);  // may fail once the broker has closed: fine
    std::vector<raw::Incoming> seen;
    CHECK(flood->wait_closed(3000ms, &seen));
    if (v == ProtocolVersion::v5) {
      REQUIRE(seen.size() == 1);
      REQUIRE(seen[0].get<mqtt::Disconnect>() != nullptr);
      CHECK(static_cast<int>(seen[0].get<mqtt::Disconnect>()->reason_code) == 0x96);
    } else {
      CHECK(seen.empty());
    }
  }
  CHECK(r.broker.stats().publish_rate_limited == 2);
  CHECK_FALSE(calm->closed());

  o.max_publish_rate = 0;  // unlimited at run time
  r.broker.set_limits(o);
  auto free = connect(r.port, ProtocolVersion::v5, "free");
  REQUIRE(free);
  for (int i = 0; i < 200; ++i) REQUIRE(free->publish("free/x", "f"));
  std::vector<raw::Incoming> none;
  CHECK_FALSE(free->wait_closed(300ms, &none));
  CHECK(r.broker.stats().publish_rate_limited == 2);
}
