// SPDX-License-Identifier: Apache-2.0
// Sessions with a client under the test's full control (tests/support/broker_mqtt_client.hpp,
// brokerha's codec on a plain socket): session present, MQTT 5.0 session expiry, QoS 2
// exactly once across reconnects in both directions, takeover of a client id, will delay,
// DISCONNECT with will, and the operator's stop_client() / stop().
//
// "ping barrier": MqttClient::ping() returns everything the broker sent before its PINGRESP,
// so "nothing more arrived" is checked without waiting for a timeout.

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"

namespace {

using namespace std::chrono_literals;
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

// A CONNECT that keeps its session: clean session 0 (v3), or clean start 0 with a session
// expiry of `expiry` seconds (v5).
mqtt::Connect persistent(ProtocolVersion v, std::string_view id, std::uint32_t expiry = 300) {
  mqtt::Connect c = make_connect(v, id, false);
  if (v == ProtocolVersion::v5) c.properties.session_expiry_interval = expiry;
  return c;
}

bool session_present(const std::optional<Received>& connack) {
  return connack && connack->as<mqtt::Connack>()->session_present;
}
// The session present flag to expect when a session was (`kept`) resumed: MQTT 3.1 has no
// such flag (the CONNACK's first byte is reserved).
bool expected_present(ProtocolVersion v, bool kept) { return kept && v != ProtocolVersion::v31; }
int connack_code(const std::optional<Received>& connack) {
  return connack ? connack->as<mqtt::Connack>()->code : -1;
}

bool offline(const brokerha::Broker& b, const std::string& id) {
  const auto c = find_client(b, id);
  return c && !c->connected;
}

std::string dump(const std::optional<std::vector<Received>>& packets) {
  return packets ? brokerha::test::describe(*packets) : std::string("<no PINGRESP>");
}

}  // namespace

TEST_CASE("session present: set when a kept session is resumed, clear otherwise") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "present-" + suffix(v);
      MqttClient c(v);
      REQUIRE(c.open(tb.port));
      auto ack = c.connect(persistent(v, id));
      CHECK(connack_code(ack) == 0);
      CHECK_FALSE(session_present(ack));  // no session yet
      REQUIRE(c.subscribe("present/t", 1));
      c.disconnect();
      REQUIRE(wait_until([&] { return offline(tb.broker, id); }, kWait));

      REQUIRE(c.open(tb.port));
      ack = c.connect(persistent(v, id));
      CHECK(connack_code(ack) == 0);
      CHECK(session_present(ack) == expected_present(v, true));
      const auto info = find_client(tb.broker, id);
      REQUIRE(info);
      CHECK(info->subscriptions.count("present/t") == 1);
      c.disconnect();

      // A clean session discards it.
      REQUIRE(c.open(tb.port));
      ack = c.connect(make_connect(v, id, true));
      CHECK(connack_code(ack) == 0);
      CHECK_FALSE(session_present(ack));
      const auto fresh = find_client(tb.broker, id);
      REQUIRE(fresh);
      CHECK(fresh->subscriptions.empty());
      c.disconnect();
      CHECK(wait_until([&] { return !find_client(tb.broker, id); }, kWait));
    }
  }
}

TEST_CASE("MQTT 5.0 session expiry: a session with expiry 1 s is gone after it") {
  TestBroker tb;
  const ProtocolVersion v = ProtocolVersion::v5;
  const std::string id = "expiring";
  MqttClient c(v);
  REQUIRE(c.open(tb.port));
  REQUIRE(connack_code(c.connect(persistent(v, id, 1))) == 0);
  REQUIRE(c.subscribe("expiry/t", 1));
  c.disconnect();
  const auto gone_from = Clock::now();
  REQUIRE(offline(tb.broker, id));  // kept for now
  CHECK(find_client(tb.broker, id)->subscriptions.count("expiry/t") == 1);

  // A message for the session while it still exists is queued...
  MqttClient pubc(v);
  REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "expiry-pub")) == 0);
  REQUIRE(pubc.publish(make_publish("expiry/t", "early", 1)));
  CHECK(brokerha::test::pending_deliveries(tb.broker, id) == 1);

  // ... and discarded with it. The broker checks expiries once a second: allow 3 s.
  REQUIRE(wait_until([&] { return !find_client(tb.broker, id); }, 3500ms));
  const auto lived = Clock::now() - gone_from;
  CHECK(lived >= 900ms);

  REQUIRE(pubc.publish(make_publish("expiry/t", "late", 1)));
  REQUIRE(c.open(tb.port));
  const auto ack = c.connect(persistent(v, id, 1));
  CHECK(connack_code(ack) == 0);
  CHECK_FALSE(session_present(ack));
  const auto after = c.ping();
  INFO(dump(after));
  REQUIRE(after);
  CHECK(publishes(*after).empty());
}

TEST_CASE("MQTT 5.0 session expiry 0: the session ends with the connection") {
  TestBroker tb;
  MqttClient c(ProtocolVersion::v5);
  mqtt::Connect conn = make_connect(ProtocolVersion::v5, "no-expiry", false);  // no property: 0
  REQUIRE(c.open_and_connect(tb.port, conn) == 0);
  REQUIRE(c.subscribe("noexp/t", 1));
  c.disconnect();
  CHECK(wait_until([&] { return !find_client(tb.broker, "no-expiry"); }, kWait));
  REQUIRE(c.open(tb.port));
  CHECK_FALSE(session_present(c.connect(conn)));
}

TEST_CASE("QoS 2 delivery without PUBREC is resent with DUP after a reconnect, once") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "q2-out-" + suffix(v);
      MqttClient sub(v);
      REQUIRE(sub.open(tb.port));
      REQUIRE(connack_code(sub.connect(persistent(v, id))) == 0);
      REQUIRE(sub.subscribe("q2out/t", 2));

      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "q2-out-pub-" + suffix(v))) == 0);
      REQUIRE(pubc.publish(make_publish("q2out/t", "exactly once", 2)));

      const auto first = sub.await<mqtt::Publish>();
      REQUIRE(first);
      const mqtt::Publish p1 = *first->as<mqtt::Publish>();
      CHECK(int{p1.qos} == 2);
      CHECK_FALSE(p1.dup);
      CHECK(p1.payload == "exactly once");
      sub.close();  // no PUBREC
      REQUIRE(wait_until([&] { return offline(tb.broker, id); }, kWait));
      CHECK(tb.broker.inflight(id).size() == 1);

      REQUIRE(sub.open(tb.port));
      const auto ack = sub.connect(persistent(v, id));
      CHECK(session_present(ack) == expected_present(v, true));
      const auto again = sub.await<mqtt::Publish>();
      REQUIRE(again);
      const auto* p2 = again->as<mqtt::Publish>();
      CHECK(p2->dup);
      CHECK(p2->packet_id == p1.packet_id);
      CHECK(p2->payload == "exactly once");
      CHECK(int{p2->qos} == 2);
      CHECK(sub.acknowledge(*p2));
      const auto rest = sub.ping();
      INFO(dump(rest));
      REQUIRE(rest);
      CHECK(publishes(*rest).empty());
      CHECK(wait_until([&] { return tb.broker.inflight(id).empty(); }, kWait));
      sub.disconnect();
      // Nothing is left to resend.
      REQUIRE(sub.open(tb.port));
      REQUIRE(connack_code(sub.connect(persistent(v, id))) == 0);
      const auto none = sub.ping();
      REQUIRE(none);
      CHECK(none->empty());
      sub.disconnect();
    }
  }
}

TEST_CASE("QoS 2 delivery after PUBREC: the broker resends PUBREL, not the PUBLISH") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "q2-rel-" + suffix(v);
      MqttClient sub(v);
      REQUIRE(sub.open(tb.port));
      REQUIRE(connack_code(sub.connect(persistent(v, id))) == 0);
      REQUIRE(sub.subscribe("q2rel/t", 2));
      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "q2-rel-pub-" + suffix(v))) == 0);
      REQUIRE(pubc.publish(make_publish("q2rel/t", "released", 2)));

      const auto got = sub.await<mqtt::Publish>();
      REQUIRE(got);
      const std::uint16_t pid = got->as<mqtt::Publish>()->packet_id;
      mqtt::Pubrec rec;
      rec.packet_id = pid;
      REQUIRE(sub.send(rec));
      REQUIRE(sub.await_ack<mqtt::Pubrel>(pid));
      sub.close();  // no PUBCOMP
      REQUIRE(wait_until([&] { return offline(tb.broker, id); }, kWait));

      REQUIRE(sub.open(tb.port));
      CHECK(session_present(sub.connect(persistent(v, id))) == expected_present(v, true));
      const auto rel = sub.receive();
      REQUIRE(rel);
      INFO(rel->describe());
      REQUIRE(rel->is<mqtt::Pubrel>());
      CHECK(rel->as<mqtt::Pubrel>()->packet_id == pid);
      mqtt::Pubcomp comp;
      comp.packet_id = pid;
      REQUIRE(sub.send(comp));
      const auto rest = sub.ping();
      INFO(dump(rest));
      REQUIRE(rest);
      CHECK(publishes(*rest).empty());  // the message is not delivered a second time
      CHECK(wait_until([&] { return tb.broker.inflight(id).empty(); }, kWait));
      sub.disconnect();
    }
  }
}

TEST_CASE("inbound QoS 2 resent with DUP after a reconnect is delivered once") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient sub(v);
      REQUIRE(sub.open_and_connect(tb.port, make_connect(v, "q2-in-sub-" + suffix(v))) == 0);
      REQUIRE(sub.subscribe("q2in/t", 2));

      const std::string id = "q2-in-pub-" + suffix(v);
      MqttClient pubc(v);
      REQUIRE(pubc.open(tb.port));
      REQUIRE(connack_code(pubc.connect(persistent(v, id))) == 0);
      mqtt::Publish p = make_publish("q2in/t", "once", 2);
      p.packet_id = 7;
      REQUIRE(pubc.send(p));
      REQUIRE(pubc.await_ack<mqtt::Pubrec>(7));
      pubc.close();  // before PUBREL
      REQUIRE(wait_until([&] { return offline(tb.broker, id); }, kWait));

      REQUIRE(pubc.open(tb.port));
      CHECK(session_present(pubc.connect(persistent(v, id))) == expected_present(v, true));
      p.dup = true;
      REQUIRE(pubc.send(p));
      const auto rec = pubc.await_ack<mqtt::Pubrec>(7);
      REQUIRE(rec);
      CHECK(static_cast<int>(rec->as<mqtt::Pubrec>()->reason_code) == 0);
      mqtt::Pubrel rel;
      rel.packet_id = 7;
      REQUIRE(pubc.send(rel));
      const auto comp = pubc.await_ack<mqtt::Pubcomp>(7);
      REQUIRE(comp);
      CHECK(static_cast<int>(comp->as<mqtt::Pubcomp>()->reason_code) == 0);

      // The same packet id is free again: a new message with it is a new message.
      mqtt::Publish next = make_publish("q2in/t", "second", 2);
      next.packet_id = 7;
      REQUIRE(pubc.publish(next));

      std::vector<std::string> payloads;
      while (payloads.size() < 2) {
        const auto got = sub.await<mqtt::Publish>();
        if (!got) break;
        payloads.emplace_back(got->as<mqtt::Publish>()->payload);
        CHECK(sub.acknowledge(*got->as<mqtt::Publish>()));
      }
      const auto rest = sub.ping();
      REQUIRE(rest);
      for (const auto* extra : publishes(*rest)) payloads.emplace_back(extra->payload);
      CHECK(payloads == std::vector<std::string>{"once", "second"});
      pubc.disconnect();
    }
  }
}

TEST_CASE("takeover: the first connection is closed (MQTT 5.0: DISCONNECT 0x8E)") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "taken-" + suffix(v);
      MqttClient first(v);
      REQUIRE(first.open_and_connect(tb.port, make_connect(v, id)) == 0);
      REQUIRE(first.ping());
      MqttClient second(v);
      REQUIRE(second.open_and_connect(tb.port, make_connect(v, id)) == 0);
      const auto closing = first.wait_closed(kWait);
      REQUIRE(closing);
      INFO(brokerha::test::describe(*closing));
      if (v == ProtocolVersion::v5) {
        REQUIRE(closing->size() == 1);
        REQUIRE((*closing)[0].is<mqtt::Disconnect>());
        CHECK((*closing)[0].as<mqtt::Disconnect>()->reason_code == ReasonCode::session_taken_over);
      } else {
        CHECK(closing->empty());
      }
      REQUIRE(second.ping());  // the new connection is unaffected
      CHECK(brokerha::test::is_connected(tb.broker, id));
    }
  }
}

TEST_CASE("takeover with a kept session: subscriptions and queued messages move") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "move-" + suffix(v);
      MqttClient first(v);
      REQUIRE(first.open(tb.port));
      REQUIRE(connack_code(first.connect(persistent(v, id))) == 0);
      REQUIRE(first.subscribe("move/t", 1));

      MqttClient second(v);
      REQUIRE(second.open(tb.port));
      const auto ack = second.connect(persistent(v, id));
      CHECK(connack_code(ack) == 0);
      CHECK(session_present(ack) == expected_present(v, true));
      REQUIRE(first.wait_closed(kWait));

      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "move-pub-" + suffix(v))) == 0);
      REQUIRE(pubc.publish(make_publish("move/t", "moved", 1)));
      const auto got = second.await<mqtt::Publish>();  // no SUBSCRIBE on this connection
      REQUIRE(got);
      CHECK(got->as<mqtt::Publish>()->payload == "moved");
      CHECK(second.acknowledge(*got->as<mqtt::Publish>()));
    }
  }
}

TEST_CASE("takeover of a clean session by a clean-start-0 connection starts a working session") {
  // The first connection's session ends with it (clean session 1 / session expiry 0), so the
  // second connection (clean session 0) must get a new session: session present 0, and its
  // own subscriptions must work.
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "clean-then-kept-" + suffix(v);
      MqttClient first(v);
      REQUIRE(first.open_and_connect(tb.port, make_connect(v, id, true)) == 0);
      REQUIRE(first.subscribe("ctk/old", 1));

      MqttClient second(v);
      REQUIRE(second.open(tb.port));
      const auto ack = second.connect(persistent(v, id));
      CHECK(connack_code(ack) == 0);
      CHECK_FALSE(session_present(ack));
      REQUIRE(first.wait_closed(kWait));
      REQUIRE(second.subscribe("ctk/new", 1));
      const auto info = find_client(tb.broker, id);
      REQUIRE(info);
      CHECK(info->connected);
      CHECK(info->subscriptions.count("ctk/old") == 0);

      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "ctk-pub-" + suffix(v))) == 0);
      REQUIRE(pubc.publish(make_publish("ctk/new", "hello", 1)));
      const auto got = second.await<mqtt::Publish>(2000ms);
      REQUIRE(got);
      CHECK(got->as<mqtt::Publish>()->payload == "hello");
    }
  }
}

TEST_CASE("MQTT 5.0 will delay: the will is published after the delay") {
  TestBroker tb;
  const ProtocolVersion v = ProtocolVersion::v5;
  MqttClient watcher(v);
  REQUIRE(watcher.open_and_connect(tb.port, make_connect(v, "delay-watch")) == 0);
  REQUIRE(watcher.subscribe("delay/will", 1));

  MqttClient victim(v);
  mqtt::Connect c = persistent(v, "delay-victim", 60);
  mqtt::Will w;
  w.topic = "delay/will";
  w.payload = "late";
  w.qos = 1;
  w.properties.will_delay_interval = 1;
  c.will = w;
  REQUIRE(victim.open_and_connect(tb.port, c) == 0);
  victim.close();
  const auto dropped = Clock::now();
  REQUIRE(wait_until([&] { return offline(tb.broker, "delay-victim"); }, kWait));
  const auto early = watcher.ping();
  REQUIRE(early);
  CHECK(publishes(*early).empty());  // not at once

  const auto got = watcher.await<mqtt::Publish>(4000ms);
  REQUIRE(got);
  const auto waited = Clock::now() - dropped;
  CHECK(got->as<mqtt::Publish>()->payload == "late");
  CHECK(waited >= 900ms);
  CHECK(waited <= 3000ms);  // 1 s delay, checked once a second
}

TEST_CASE("MQTT 5.0 will delay: no will when the client reconnects within the delay") {
  TestBroker tb;
  const ProtocolVersion v = ProtocolVersion::v5;
  MqttClient watcher(v);
  REQUIRE(watcher.open_and_connect(tb.port, make_connect(v, "back-watch")) == 0);
  REQUIRE(watcher.subscribe("back/will", 1));

  MqttClient victim(v);
  mqtt::Connect c = persistent(v, "back-victim", 60);
  mqtt::Will w;
  w.topic = "back/will";
  w.payload = "must not appear";
  w.qos = 1;
  w.properties.will_delay_interval = 1;
  c.will = w;
  REQUIRE(victim.open_and_connect(tb.port, c) == 0);
  victim.close();
  const auto dropped = Clock::now();
  REQUIRE(wait_until([&] { return offline(tb.broker, "back-victim"); }, kWait));
  REQUIRE(victim.open(tb.port));
  const auto ack = victim.connect(persistent(v, "back-victim", 60));  // no will this time
  CHECK(session_present(ack));

  // Wait until the will would certainly have been due (1 s delay + the 1 s check period),
  // then a ping barrier shows that nothing was published.
  const auto got = watcher.await<mqtt::Publish>(2500ms);
  CHECK_FALSE(got);
  CHECK(Clock::now() - dropped >= 2000ms);
  victim.disconnect();
}

TEST_CASE("MQTT 5.0 DISCONNECT with reason 0x04 publishes the will") {
  TestBroker tb;
  const ProtocolVersion v = ProtocolVersion::v5;
  MqttClient watcher(v);
  REQUIRE(watcher.open_and_connect(tb.port, make_connect(v, "dw-watch")) == 0);
  REQUIRE(watcher.subscribe("dw/will", 1));

  for (ReasonCode reason : {ReasonCode::success, ReasonCode::disconnect_with_will}) {
    CAPTURE(static_cast<int>(reason));
    MqttClient c(v);
    mqtt::Connect conn = make_connect(v, "dw-client");
    mqtt::Will w;
    w.topic = "dw/will";
    w.payload = "bye";
    w.qos = 1;
    conn.will = w;
    REQUIRE(c.open_and_connect(tb.port, conn) == 0);
    c.disconnect(reason);
    REQUIRE(wait_until([&] { return !find_client(tb.broker, "dw-client"); }, kWait));
    const auto got = watcher.ping();
    REQUIRE(got);
    INFO(dump(got));
    const auto pubs = publishes(*got);
    if (reason == ReasonCode::success) {
      CHECK(pubs.empty());
    } else {
      REQUIRE(pubs.size() == 1);
      CHECK(pubs[0]->payload == "bye");
      CHECK(watcher.acknowledge(*pubs[0]));
    }
  }
}

TEST_CASE("stop_client() disconnects a client (MQTT 5.0: DISCONNECT 0x98) and sends its will") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient watcher(v);
      REQUIRE(watcher.open_and_connect(tb.port, make_connect(v, "sc-watch-" + suffix(v))) == 0);
      REQUIRE(watcher.subscribe("sc/will", 0));
      const std::string id = "sc-" + suffix(v);
      MqttClient c(v);
      mqtt::Connect conn = make_connect(v, id);
      mqtt::Will w;
      w.topic = "sc/will";
      w.payload = "stopped";
      conn.will = w;
      REQUIRE(c.open_and_connect(tb.port, conn) == 0);
      CHECK_FALSE(tb.broker.stop_client("no-such-client"));
      CHECK(tb.broker.stop_client(id));
      const auto closing = c.wait_closed(kWait);
      REQUIRE(closing);
      INFO(brokerha::test::describe(*closing));
      if (v == ProtocolVersion::v5) {
        REQUIRE(closing->size() == 1);
        REQUIRE((*closing)[0].is<mqtt::Disconnect>());
        CHECK((*closing)[0].as<mqtt::Disconnect>()->reason_code ==
              ReasonCode::administrative_action);
      } else {
        CHECK(closing->empty());
      }
      const auto will = watcher.await<mqtt::Publish>();
      REQUIRE(will);
      CHECK(will->as<mqtt::Publish>()->payload == "stopped");
    }
  }
}

TEST_CASE("Broker::stop() sends each MQTT 5.0 client one DISCONNECT 0x8B and closes every client") {
  // Several clients, so that some of them were accepted on one I/O thread and moved to their
  // session's thread at CONNECT.
  TestBroker tb;
  std::vector<std::unique_ptr<MqttClient>> clients;
  for (int i = 0; i < 10; ++i) {
    const ProtocolVersion v = i < 8 ? ProtocolVersion::v5 : ProtocolVersion::v311;
    clients.push_back(std::make_unique<MqttClient>(v));
    const std::string id = "stop-" + std::to_string(i);
    REQUIRE(clients.back()->open_and_connect(tb.port, make_connect(v, id)) == 0);
  }
  tb.stop();
  for (std::size_t i = 0; i < clients.size(); ++i) {
    CAPTURE(i);
    const auto closing = clients[i]->wait_closed(1000ms);
    REQUIRE(closing);
    INFO(brokerha::test::describe(*closing));
    if (clients[i]->version() == ProtocolVersion::v5) {
      CHECK(closing->size() == 1);  // exactly one DISCONNECT
      for (const Received& r : *closing) {
        REQUIRE(r.is<mqtt::Disconnect>());
        CHECK(r.as<mqtt::Disconnect>()->reason_code == ReasonCode::server_shutting_down);
      }
    } else {
      CHECK(closing->empty());
    }
  }
}

TEST_CASE("Broker::stop() with no client returns promptly") {
  brokerha::BrokerOptions o;
  o.listeners.push_back({"127.0.0.1", 0});
  o.io_threads = 2;
  brokerha::Broker b(o);
  b.start();
  const auto t0 = Clock::now();
  b.stop();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  CHECK(took.count() < 1000);
}
