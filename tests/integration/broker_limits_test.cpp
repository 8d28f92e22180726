// SPDX-License-Identifier: Apache-2.0
// BrokerOptions limits with real connections: maximum packet size (both ways), receive
// maximum (ours and the client's), max_inflight, max_queued_messages, max_connections,
// max_keepalive, the keep-alive timeout and the CONNECT timeout; and the $SYS statistics.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::BrokerOptions;
using brokerha::ReasonCode;
using brokerha::test::find_client;
using brokerha::test::kAllVersions;
using brokerha::test::make_connect;
using brokerha::test::make_publish;
using brokerha::test::MqttClient;
using brokerha::test::publishes;
using brokerha::test::Received;
using brokerha::test::TestBroker;
using brokerha::test::wait_until;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 5000ms;

std::string suffix(ProtocolVersion v) {
  return v == ProtocolVersion::v31 ? "31" : v == ProtocolVersion::v311 ? "311" : "5";
}

std::string dump(const std::optional<std::vector<Received>>& packets) {
  return packets ? brokerha::test::describe(*packets) : std::string("<no PINGRESP>");
}

// The reason code of the only packet, a DISCONNECT, in `closing`; -1 otherwise.
int disconnect_reason(const std::optional<std::vector<Received>>& closing) {
  if (!closing || closing->size() != 1) return -1;
  const auto* d = (*closing)[0].as<mqtt::Disconnect>();
  return d ? static_cast<int>(d->reason_code) : -1;
}

BrokerOptions with(const std::function<void(BrokerOptions&)>& f) {
  BrokerOptions o;
  f(o);
  return o;
}

/// A persistent session `id` (via `c`) subscribed to `filter` at QoS 1, left offline; the
/// CONNECT that resumes it.
mqtt::Connect leave_offline(TestBroker& tb, MqttClient& c, const std::string& id,
                            const std::string& filter) {
  const ProtocolVersion v = c.version();
  mqtt::Connect conn = make_connect(v, id, false);
  if (v == ProtocolVersion::v5) conn.properties.session_expiry_interval = 300;
  REQUIRE(c.open_and_connect(tb.port, conn) == 0);
  REQUIRE(c.subscribe(filter, 1));
  c.disconnect();
  REQUIRE(wait_until([&] { return !brokerha::test::is_connected(tb.broker, id); }, kWait));
  return conn;
}

}  // namespace

TEST_CASE("max_packet_size: a larger PUBLISH closes the connection (MQTT 5.0: DISCONNECT 0x95)") {
  TestBroker tb(with([](BrokerOptions& o) { o.max_packet_size = 1024; }));
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient sub(v);
      REQUIRE(sub.open_and_connect(tb.port, make_connect(v, "mps-sub-" + suffix(v))) == 0);
      REQUIRE(sub.subscribe("mps/#", 1));

      MqttClient c(v);
      REQUIRE(c.open(tb.port));
      const auto ack = c.connect(make_connect(v, "mps-" + suffix(v)));
      REQUIRE(ack);
      if (v == ProtocolVersion::v5) {
        CHECK(ack->as<mqtt::Connack>()->properties.maximum_packet_size.value_or(0) == 1024);
      }
      const std::string fits(900, 'a');
      REQUIRE(c.publish(make_publish("mps/ok", fits, 1)));
      const std::string big(2000, 'b');
      c.publish(make_publish("mps/big", big, 1));
      const auto closing = c.wait_closed(kWait);
      REQUIRE(closing);
      INFO(brokerha::test::describe(*closing));
      if (v == ProtocolVersion::v5) {
        CHECK(disconnect_reason(closing) == 0x95);
      } else {
        CHECK(closing->empty());
      }
      // Other clients are unaffected; the subscriber got the message that fit, only.
      const auto got = sub.ping();
      INFO(dump(got));
      REQUIRE(got);
      const auto pubs = publishes(*got);
      REQUIRE(pubs.size() == 1);
      CHECK(pubs[0]->topic == "mps/ok");
    }
  }
}

TEST_CASE("MQTT 5.0: the broker sends nothing larger than the client's Maximum Packet Size") {
  TestBroker tb;
  const ProtocolVersion v = ProtocolVersion::v5;
  MqttClient small(v);
  mqtt::Connect c = make_connect(v, "small-client");
  c.properties.maximum_packet_size = 200;
  REQUIRE(small.open_and_connect(tb.port, c) == 0);
  REQUIRE(small.subscribe("mpc/#", 1));
  MqttClient pubc(v);
  REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "mpc-pub")) == 0);
  REQUIRE(pubc.publish(make_publish("mpc/big", std::string(500, 'x'), 1)));
  REQUIRE(pubc.publish(make_publish("mpc/small", "tiny", 1)));
  const auto got = small.ping();
  INFO(dump(got));
  REQUIRE(got);
  const auto pubs = publishes(*got);
  REQUIRE(pubs.size() == 1);  // the big one is dropped for this client (MQTT 5.0 3.1.2.11.4)
  CHECK(pubs[0]->topic == "mpc/small");
  CHECK(small.ping());  // still connected
  CHECK(tb.broker.stats().messages_dropped >= 1);
}

TEST_CASE("receive_maximum: CONNACK carries it, exceeding it with QoS 2 gets DISCONNECT 0x93") {
  TestBroker tb(with([](BrokerOptions& o) { o.receive_maximum = 2; }));
  const ProtocolVersion v = ProtocolVersion::v5;
  MqttClient c(v);
  REQUIRE(c.open(tb.port));
  const auto ack = c.connect(make_connect(v, "rm-client"));
  REQUIRE(ack);
  CHECK(ack->as<mqtt::Connack>()->properties.receive_maximum.value_or(0) == 2);

  // Two unreleased QoS 2 messages are within the limit; completing one frees its slot.
  for (std::uint16_t id : {std::uint16_t{1}, std::uint16_t{2}}) {
    mqtt::Publish p = make_publish("rm/t", "x", 2);
    p.packet_id = id;
    REQUIRE(c.send(p));
    REQUIRE(c.await_ack<mqtt::Pubrec>(id));
  }
  mqtt::Pubrel rel;
  rel.packet_id = 1;
  REQUIRE(c.send(rel));
  REQUIRE(c.await_ack<mqtt::Pubcomp>(1));
  mqtt::Publish p3 = make_publish("rm/t", "x", 2);
  p3.packet_id = 3;
  REQUIRE(c.send(p3));
  REQUIRE(c.await_ack<mqtt::Pubrec>(3));

  // A third unreleased one exceeds it.
  mqtt::Publish p4 = make_publish("rm/t", "x", 2);
  p4.packet_id = 4;
  REQUIRE(c.send(p4));
  const auto closing = c.wait_closed(kWait);
  REQUIRE(closing);
  INFO(brokerha::test::describe(*closing));
  CHECK(disconnect_reason(closing) == 0x93);
}

TEST_CASE("receive_maximum: a DUP resend of an unreleased QoS 2 message does not count twice") {
  // The PUBREC of message 1 is "lost" with the connection; the client resends the PUBLISH
  // with DUP after reconnecting. It is the same message, still within the limit of 1.
  TestBroker tb(with([](BrokerOptions& o) { o.receive_maximum = 1; }));
  const ProtocolVersion v = ProtocolVersion::v5;
  MqttClient sub(v);
  REQUIRE(sub.open_and_connect(tb.port, make_connect(v, "rmdup-sub")) == 0);
  REQUIRE(sub.subscribe("rmdup/t", 2));

  MqttClient c(v);
  mqtt::Connect conn = make_connect(v, "rmdup", false);
  conn.properties.session_expiry_interval = 60;
  REQUIRE(c.open_and_connect(tb.port, conn) == 0);
  mqtt::Publish p = make_publish("rmdup/t", "once", 2);
  p.packet_id = 1;
  REQUIRE(c.send(p));
  REQUIRE(c.await_ack<mqtt::Pubrec>(1));
  c.close();
  REQUIRE(wait_until([&] { return !brokerha::test::is_connected(tb.broker, "rmdup"); }, kWait));

  REQUIRE(c.open_and_connect(tb.port, conn) == 0);
  p.dup = true;
  REQUIRE(c.send(p));
  const auto rec = c.receive();
  REQUIRE(rec);
  INFO(rec->describe());
  REQUIRE(rec->is<mqtt::Pubrec>());  // not DISCONNECT 0x93
  mqtt::Pubrel rel;
  rel.packet_id = 1;
  REQUIRE(c.send(rel));
  REQUIRE(c.await_ack<mqtt::Pubcomp>(1));

  const auto got = sub.ping();
  INFO(dump(got));
  REQUIRE(got);
  CHECK(publishes(*got).size() == 1);
}

TEST_CASE("the client's Receive Maximum bounds unacknowledged QoS 1 deliveries") {
  TestBroker tb;
  const ProtocolVersion v = ProtocolVersion::v5;
  MqttClient c(v);
  mqtt::Connect conn = make_connect(v, "rmax-client");
  conn.properties.receive_maximum = 3;
  REQUIRE(c.open_and_connect(tb.port, conn) == 0);
  REQUIRE(c.subscribe("rmax/t", 1));
  MqttClient pubc(v);
  REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "rmax-pub")) == 0);
  for (int i = 0; i < 10; ++i) {
    REQUIRE(pubc.publish(make_publish("rmax/t", "m" + std::to_string(i), 1)));
  }
  REQUIRE(wait_until(
      [&] { return brokerha::test::pending_deliveries(tb.broker, "rmax-client") == 10; }, kWait));

  auto got = c.ping();
  INFO(dump(got));
  REQUIRE(got);
  auto pubs = publishes(*got);
  REQUIRE(pubs.size() == 3);
  const auto info = find_client(tb.broker, "rmax-client");
  REQUIRE(info);
  CHECK(info->inflight == 3);
  CHECK(info->queued == 7);
  CHECK(tb.broker.inflight("rmax-client").size() == 10);

  // Each PUBACK lets exactly one more through, in order.
  std::vector<std::string> payloads;
  std::vector<mqtt::Publish> unacked;
  for (const auto* p : pubs) {
    payloads.emplace_back(p->payload);
    unacked.push_back(*p);
  }
  std::vector<Received> keep = std::move(*got);  // keeps the payload bytes alive
  std::size_t max_outstanding = unacked.size();
  while (!unacked.empty()) {
    REQUIRE(c.acknowledge(unacked.front()));
    unacked.erase(unacked.begin());
    auto more = c.ping();
    REQUIRE(more);
    for (const auto* p : publishes(*more)) {
      payloads.emplace_back(p->payload);
      unacked.push_back(*p);
    }
    max_outstanding = std::max(max_outstanding, unacked.size());
    for (Received& r : *more) keep.push_back(std::move(r));
  }
  CHECK(max_outstanding == 3);
  std::vector<std::string> expected;
  for (int i = 0; i < 10; ++i) expected.push_back("m" + std::to_string(i));
  CHECK(payloads == expected);
}

TEST_CASE("max_inflight bounds unacknowledged QoS 1 and 2 deliveries to any client") {
  TestBroker tb(with([](BrokerOptions& o) { o.max_inflight = 2; }));
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      for (std::uint8_t qos : {std::uint8_t{1}, std::uint8_t{2}}) {
        CAPTURE(int{qos});
        const std::string id = "mi-" + suffix(v) + "-" + std::to_string(qos);
        const std::string topic = "mi/" + id;
        MqttClient c(v);
        REQUIRE(c.open_and_connect(tb.port, make_connect(v, id)) == 0);
        REQUIRE(c.subscribe(topic, qos));
        MqttClient pubc(v);
        REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, id + "-pub")) == 0);
        for (int i = 0; i < 5; ++i) REQUIRE(pubc.publish(make_publish(topic, "x", qos)));
        REQUIRE(wait_until([&] { return brokerha::test::pending_deliveries(tb.broker, id) == 5; },
                           kWait));
        auto got = c.ping();
        INFO(dump(got));
        REQUIRE(got);
        auto pubs = publishes(*got);
        CHECK(pubs.size() == 2);
        REQUIRE(!pubs.empty());
        if (qos == 2) {
          // PUBREC alone does not free the slot: only PUBCOMP completes a QoS 2 delivery.
          mqtt::Pubrec rec;
          rec.packet_id = pubs[0]->packet_id;
          REQUIRE(c.send(rec));
          REQUIRE(c.await_ack<mqtt::Pubrel>(rec.packet_id));
          auto after_rec = c.ping();
          REQUIRE(after_rec);
          CHECK(publishes(*after_rec).empty());
          mqtt::Pubcomp comp;
          comp.packet_id = rec.packet_id;
          REQUIRE(c.send(comp));
        } else {
          REQUIRE(c.acknowledge(*pubs[0]));
        }
        const auto next = c.ping();
        INFO(dump(next));
        REQUIRE(next);
        CHECK(publishes(*next).size() == 1);
      }
    }
  }
}

TEST_CASE("max_queued_messages: offline QoS 1 beyond the limit is dropped and counted") {
  TestBroker tb(with([](BrokerOptions& o) { o.max_queued_messages = 5; }));
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "mq-" + suffix(v);
      MqttClient c(v);
      const mqtt::Connect conn = leave_offline(tb, c, id, "mq/t");

      const auto dropped = tb.broker.stats().messages_dropped;
      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, id + "-pub")) == 0);
      for (int i = 0; i < 8; ++i) {
        REQUIRE(pubc.publish(make_publish("mq/t", "m" + std::to_string(i), 1)));
      }
      CHECK(wait_until([&] { return tb.broker.stats().messages_dropped == dropped + 3; }, kWait));
      CHECK(brokerha::test::pending_deliveries(tb.broker, id) == 5);

      REQUIRE(c.open(tb.port));
      const auto ack = c.connect(conn);
      REQUIRE(ack);
      CHECK(ack->as<mqtt::Connack>()->session_present == (v != ProtocolVersion::v31));
      std::vector<std::string> payloads;
      while (payloads.size() < 5) {
        const auto r = c.await<mqtt::Publish>();
        if (!r) break;
        payloads.emplace_back(r->as<mqtt::Publish>()->payload);
        c.acknowledge(*r->as<mqtt::Publish>());
      }
      const auto rest = c.ping();
      REQUIRE(rest);
      CHECK(publishes(*rest).empty());
      CHECK(payloads == std::vector<std::string>{"m0", "m1", "m2", "m3", "m4"});
      c.disconnect();
    }
  }
}

TEST_CASE("max_session_queued_bytes: an offline session's queue stays under the byte cap") {
  // Each message costs 1,004 bytes (a 1,000-byte payload and the topic "mb/t"): 10 fit.
  const std::string payload(1000, 'p');
  const std::uint64_t cap = 10 * (1000 + 4);
  TestBroker tb(with([&](BrokerOptions& o) { o.max_session_queued_bytes = cap; }));
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "mb-" + suffix(v);
      MqttClient c(v);
      const mqtt::Connect conn = leave_offline(tb, c, id, "mb/t");

      const auto before = tb.broker.stats();
      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, id + "-pub")) == 0);
      for (int i = 0; i < 30; ++i) REQUIRE(pubc.publish(make_publish("mb/t", payload, 1)));
      CHECK(wait_until(
          [&] {
            return tb.broker.stats().session_bytes_dropped == before.session_bytes_dropped + 20;
          },
          kWait));
      CHECK(tb.broker.stats().messages_dropped == before.messages_dropped + 20);
      CHECK(brokerha::test::pending_deliveries(tb.broker, id) == 10);  // 10 x 1,004 bytes

      // Reloaded while running (as SIGHUP does): unlimited now, the next ones are queued.
      BrokerOptions limits;
      limits.max_session_queued_bytes = 0;
      tb.broker.set_limits(limits);
      for (int i = 0; i < 5; ++i) REQUIRE(pubc.publish(make_publish("mb/t", payload, 1)));
      CHECK(wait_until([&] { return brokerha::test::pending_deliveries(tb.broker, id) == 15; },
                       kWait));
      CHECK(tb.broker.stats().session_bytes_dropped == before.session_bytes_dropped + 20);
      limits.max_session_queued_bytes = cap;
      tb.broker.set_limits(limits);
      REQUIRE(c.open(tb.port));
      REQUIRE(c.connect(conn));
      c.disconnect();
    }
  }
}

TEST_CASE("max_connections: connections beyond the limit are closed") {
  TestBroker tb(with([](BrokerOptions& o) { o.max_connections = 2; }));
  MqttClient a;
  MqttClient b;
  REQUIRE(a.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "mc-a")) == 0);
  REQUIRE(b.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "mc-b")) == 0);
  MqttClient c;
  if (c.open(tb.port)) {  // the kernel may accept it before the broker closes it
    c.send(make_connect(ProtocolVersion::v311, "mc-c"));
    const auto closing = c.wait_closed(kWait);
    REQUIRE(closing);
    INFO(brokerha::test::describe(*closing));
    CHECK(closing->empty());  // no CONNACK
  }
  CHECK_FALSE(find_client(tb.broker, "mc-c"));
  CHECK(tb.broker.stats().clients_connected == 2);

  // A slot frees when a client leaves.
  a.disconnect();
  CHECK(wait_until(
      [&] { return c.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "mc-c")) == 0; },
      kWait, 50ms));
}

TEST_CASE(
    "max_keepalive: MQTT 5.0 gets Server Keep Alive, MQTT 3 above it is refused (CONNACK 2)") {
  TestBroker tb(with([](BrokerOptions& o) { o.max_keepalive = 10; }));
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      for (std::uint16_t ka :
           {std::uint16_t{5}, std::uint16_t{10}, std::uint16_t{60}, std::uint16_t{0}}) {
        CAPTURE(ka);
        MqttClient c(v);
        REQUIRE(c.open(tb.port));
        const auto ack = c.connect(make_connect(v, "ka-" + suffix(v), true, ka));
        REQUIRE(ack);
        const auto* connack = ack->as<mqtt::Connack>();
        const bool within = ka != 0 && ka <= 10;
        if (v == ProtocolVersion::v5) {
          CHECK(int{connack->code} == 0);
          if (within) {
            CHECK_FALSE(connack->properties.server_keep_alive.has_value());
          } else {
            CHECK(connack->properties.server_keep_alive.value_or(0) == 10);
          }
          c.disconnect();
        } else if (within) {
          CHECK(int{connack->code} == 0);
          c.disconnect();
        } else {
          CHECK(int{connack->code} == 2);  // identifier rejected, as Mosquitto answers
          CHECK(c.wait_closed(kWait));
        }
      }
    }
  }
}

TEST_CASE(
    "keep alive: a silent client is disconnected after 1.5 x keep alive, its will is sent, "
    "PINGREQ keeps a client connected") {
  TestBroker tb;
  MqttClient watcher(ProtocolVersion::v311);
  REQUIRE(watcher.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "ka-watch")) == 0);
  REQUIRE(watcher.subscribe("ka/will/#", 1));

  // All three at once, so their timers run in parallel.
  std::vector<std::unique_ptr<MqttClient>> silent;
  std::vector<std::string> topics;
  std::vector<std::unique_ptr<std::string>> ids;  // the CONNECTs' views point into them
  for (ProtocolVersion v : kAllVersions) {
    topics.push_back("ka/will/" + suffix(v));
    auto c = std::make_unique<MqttClient>(v);
    ids.push_back(std::make_unique<std::string>("silent-" + suffix(v)));
    mqtt::Connect conn = make_connect(v, *ids.back(), true, 1);
    mqtt::Will w;
    w.topic = topics.back();
    w.payload = "timed out";
    w.qos = 1;
    conn.will = w;
    REQUIRE(c->open_and_connect(tb.port, conn) == 0);
    silent.push_back(std::move(c));
  }
  // Meanwhile a client with the same keep alive that sends PINGREQ stays connected.
  MqttClient pinger(ProtocolVersion::v311);
  REQUIRE(pinger.open_and_connect(tb.port,
                                  make_connect(ProtocolVersion::v311, "pinger", true, 1)) == 0);

  const auto t0 = Clock::now();
  auto last_ping = t0;
  std::vector<std::optional<std::vector<Received>>> closing(silent.size());
  std::vector<Clock::duration> took(silent.size());
  // Until every silent client is gone and at least 2.6 s have passed (the longest a silent
  // client may survive is 1.5 s plus the 1 s period of the broker's check).
  while (Clock::now() - t0 < 4000ms) {
    bool all_closed = true;
    for (std::size_t i = 0; i < silent.size(); ++i) {
      if (closing[i]) continue;
      closing[i] = silent[i]->wait_closed(20ms);
      if (closing[i]) took[i] = Clock::now() - t0;
      all_closed = all_closed && closing[i].has_value();
    }
    if (Clock::now() - last_ping >= 300ms) {
      REQUIRE(pinger.ping(1000ms));
      last_ping = Clock::now();
    }
    if (all_closed && Clock::now() - t0 >= 2600ms) break;
  }
  for (std::size_t i = 0; i < silent.size(); ++i) {
    CAPTURE(i);
    REQUIRE(closing[i]);
    INFO(brokerha::test::describe(*closing[i]));
    CHECK(took[i] >= 1400ms);  // not before 1.5 x 1 s
    CHECK(took[i] <= 3000ms);  // checked once a second
    if (silent[i]->version() == ProtocolVersion::v5) {
      CHECK(disconnect_reason(closing[i]) == 0x8D);
    } else {
      CHECK(closing[i]->empty());
    }
  }
  CHECK(pinger.ping(1000ms));
  CHECK(brokerha::test::is_connected(tb.broker, "pinger"));

  std::vector<std::string> wills;
  while (wills.size() < 3) {
    const auto r = watcher.await<mqtt::Publish>(kWait);
    if (!r) break;
    wills.emplace_back(r->as<mqtt::Publish>()->topic);
    watcher.acknowledge(*r->as<mqtt::Publish>());
  }
  std::sort(wills.begin(), wills.end());
  std::sort(topics.begin(), topics.end());
  CHECK(wills == topics);
}

TEST_CASE("connect_timeout: a socket that never sends CONNECT is closed") {
  TestBroker tb(with([](BrokerOptions& o) { o.connect_timeout = 500ms; }));
  MqttClient idle;
  MqttClient partial;
  REQUIRE(idle.open(tb.port));
  REQUIRE(partial.open(tb.port));
  REQUIRE(partial.send_bytes(std::string("\x10\x20\x00\x04MQ", 6)));  // half a CONNECT
  const auto t0 = Clock::now();
  const auto closed = idle.wait_closed(4000ms);
  CHECK(Clock::now() - t0 <= 2500ms);  // 0.5 s, checked once a second
  REQUIRE(closed);
  CHECK(closed->empty());
  CHECK(partial.wait_closed(2000ms));
  // A client that does connect in time stays.
  MqttClient ok;
  REQUIRE(ok.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "in-time")) == 0);
  CHECK(ok.ping());
}

TEST_CASE("$SYS: broker statistics are published under $SYS/broker/ every sys_interval") {
  TestBroker tb(with([](BrokerOptions& o) { o.sys_interval = 200ms; }));
  MqttClient c(ProtocolVersion::v311);
  REQUIRE(c.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "sys-reader")) == 0);
  REQUIRE(c.subscribe("$SYS/broker/#", 0));
  const auto got = c.await<mqtt::Publish>(3000ms);
  REQUIRE(got);
  CHECK(got->as<mqtt::Publish>()->topic.substr(0, 12) == "$SYS/broker/");
}
