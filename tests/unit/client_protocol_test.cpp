// SPDX-License-Identifier: Apache-2.0
// protocol::ClientProtocol without sockets: the MQTT server side of one connection driven by
// packets and clock ticks through tests/support/protocol_harness.hpp, on a one-shard broker
// made of the real router, session registry and access control. CONNECT variants, QoS 1 and 2
// in both directions, topic aliases both ways, receive maximum both ways, keep alive,
// takeover, resending after a reconnect and the client's maximum packet size on resend.

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <variant>
#include <vector>

#include "support/protocol_harness.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::ReasonCode;
using brokerha::test::ProtocolBroker;
using brokerha::test::ProtocolClient;
namespace mqtt = brokerha::mqtt;
using V = mqtt::ProtocolVersion;

mqtt::Connect connect(std::string_view id, V v = V::v5, bool clean = true) {
  mqtt::Connect c;
  c.version = v;
  c.client_id = id;
  c.clean_start = clean;
  c.keep_alive = 60;
  if (v == V::v5 && !clean) c.properties.session_expiry_interval = 300;
  return c;
}

mqtt::Publish publish(std::string_view topic, std::string_view payload, std::uint8_t qos,
                      std::uint16_t id = 0) {
  mqtt::Publish p;
  p.topic = topic;
  p.payload = payload;
  p.qos = qos;
  p.packet_id = id;
  return p;
}

mqtt::Subscribe subscribe(std::string_view filter, std::uint8_t qos, std::uint16_t id = 1) {
  mqtt::Subscribe s;
  s.packet_id = id;
  mqtt::Subscription sub;
  sub.filter = filter;
  sub.qos = qos;
  s.subscriptions.push_back(sub);
  return s;
}

template <class P>
const P& only(const std::vector<mqtt::Packet>& packets) {
  REQUIRE(packets.size() == 1);
  REQUIRE(std::holds_alternative<P>(packets[0]));
  return std::get<P>(packets[0]);
}

template <class P>
std::vector<P> all_of(const std::vector<mqtt::Packet>& packets) {
  std::vector<P> out;
  for (const auto& p : packets) {
    if (const auto* x = std::get_if<P>(&p)) out.push_back(*x);
  }
  return out;
}

// Connects `c` and returns its CONNACK.
mqtt::Connack connect_ok(ProtocolClient& c, const mqtt::Connect& packet) {
  c.send(packet);
  const auto got = c.received();
  REQUIRE(!got.empty());
  REQUIRE(std::holds_alternative<mqtt::Connack>(got[0]));
  const auto ack = std::get<mqtt::Connack>(got[0]);
  REQUIRE(ack.code == 0);
  return ack;
}

}  // namespace

TEST_CASE("client protocol: CONNECT v3.1.1 and v5 get CONNACK, v5 with the server's limits") {
  ProtocolBroker b;
  ProtocolClient v3(b, V::v311);
  const auto a3 = connect_ok(v3, connect("c3", V::v311));
  CHECK_FALSE(a3.session_present);
  CHECK(v3.protocol().connected());

  ProtocolClient v5(b, V::v5);
  const auto a5 = connect_ok(v5, connect("c5"));
  CHECK(a5.properties.receive_maximum == b.options.receive_maximum);
  CHECK(a5.properties.topic_alias_maximum == b.options.topic_alias_maximum);
  CHECK(b.counters.clients_connected.load() == 2);
  CHECK(b.sessions.table().size() == 2);
}

TEST_CASE(
    "client protocol: an empty client id is assigned in v5, refused with a v3 persistent session") {
  ProtocolBroker b;
  ProtocolClient v5(b, V::v5);
  const auto ack = connect_ok(v5, connect(""));
  REQUIRE(ack.properties.assigned_client_identifier);
  CHECK(ack.properties.assigned_client_identifier->substr(0, 5) == "auto-");

  ProtocolClient v3(b, V::v311);
  v3.send(connect("", V::v311, false));
  const auto refused = only<mqtt::Connack>(v3.received());
  CHECK(refused.code == static_cast<std::uint8_t>(mqtt::ConnackReturnCode::identifier_rejected));
  CHECK(v3.protocol().closing());
}

TEST_CASE("client protocol: the first packet must be CONNECT") {
  ProtocolBroker b;
  ProtocolClient c(b, V::v311);
  std::string bytes;
  REQUIRE(mqtt::encode(mqtt::Packet(mqtt::Pingreq{}), V::v311, bytes));
  CHECK_FALSE(c.send_bytes(bytes));
  CHECK(c.protocol().closed());
  CHECK(c.socket_closed());
  CHECK(b.counters.protocol_errors.load() == 1);
}

TEST_CASE("client protocol: keep alive above the maximum is refused in v3 and lowered in v5") {
  brokerha::BrokerOptions o;
  o.max_keepalive = 30;
  ProtocolBroker b(o);
  ProtocolClient v3(b, V::v311);
  v3.send(connect("k3", V::v311));  // asks for 60
  CHECK(only<mqtt::Connack>(v3.received()).code ==
        static_cast<std::uint8_t>(mqtt::ConnackReturnCode::identifier_rejected));
  ProtocolClient v5(b, V::v5);
  const auto ack = connect_ok(v5, connect("k5"));
  CHECK(ack.properties.server_keep_alive == 30);
}

TEST_CASE("client protocol: the built-in rules refuse a bad password") {
  brokerha::BrokerOptions o;
  brokerha::AuthRule rule;
  rule.username = "alice";
  rule.password = "secret";
  rule.allow = true;
  o.access.auth.push_back(rule);
  ProtocolBroker b(o);
  ProtocolClient c(b, V::v5);
  auto packet = connect("a");
  packet.username = "alice";
  packet.password = "wrong";
  c.send(packet);
  // No rule matches: refused as not authorized (0x87), as a client with no rule at all.
  CHECK(only<mqtt::Connack>(c.received()).code ==
        static_cast<std::uint8_t>(ReasonCode::not_authorized));
  CHECK(b.counters.auth_failures.load() == 1);
  CHECK(c.protocol().closing());

  ProtocolClient ok(b, V::v5);
  packet.password = "secret";
  connect_ok(ok, packet);
}

TEST_CASE("client protocol: QoS 1 from the client is acknowledged, v5 says when nobody listens") {
  ProtocolBroker b;
  ProtocolClient pub(b, V::v5);
  connect_ok(pub, connect("pub"));
  pub.send(publish("t/1", "x", 1, 7));
  auto ack = only<mqtt::Puback>(pub.received());
  CHECK(ack.packet_id == 7);
  CHECK(ack.reason_code == ReasonCode::no_matching_subscribers);

  ProtocolClient sub(b, V::v5);
  connect_ok(sub, connect("sub"));
  sub.send(subscribe("t/+", 1));
  CHECK(only<mqtt::Suback>(sub.received()).reason_codes.at(0) == ReasonCode::granted_qos_1);
  pub.send(publish("t/1", "y", 1, 8));
  ack = only<mqtt::Puback>(pub.received());
  CHECK(ack.reason_code == ReasonCode::success);
  const auto got = only<mqtt::Publish>(sub.received());
  CHECK(got.topic == "t/1");
  CHECK(got.payload == "y");
  CHECK(got.qos == 1);
  CHECK(got.packet_id != 0);
  // Until the subscriber acknowledges, the delivery is in flight.
  REQUIRE(b.sessions.table().find("sub") != nullptr);
  CHECK((*b.sessions.table().find("sub"))->state.inflight().size() == 1);
  mqtt::Puback back;
  back.packet_id = got.packet_id;
  sub.send(back);
  CHECK((*b.sessions.table().find("sub"))->state.inflight().empty());
}

TEST_CASE("client protocol: QoS 2 from the client is routed once, however often it is resent") {
  ProtocolBroker b;
  ProtocolClient sub(b, V::v311);
  connect_ok(sub, connect("sub", V::v311));
  sub.send(subscribe("q", 0));
  sub.received();
  ProtocolClient pub(b, V::v311);
  connect_ok(pub, connect("pub", V::v311));
  pub.send(publish("q", "once", 2, 3));
  CHECK(only<mqtt::Pubrec>(pub.received()).packet_id == 3);
  auto resend = publish("q", "once", 2, 3);
  resend.dup = true;
  pub.send(resend);
  CHECK(only<mqtt::Pubrec>(pub.received()).packet_id == 3);
  CHECK(all_of<mqtt::Publish>(sub.received()).size() == 1);
  mqtt::Pubrel rel;
  rel.packet_id = 3;
  pub.send(rel);
  CHECK(only<mqtt::Pubcomp>(pub.received()).packet_id == 3);
  // A PUBREL for an id that is not pending is answered with "not found" (v5) and nothing else.
  pub.send(rel);
  CHECK(only<mqtt::Pubcomp>(pub.received()).packet_id == 3);
  CHECK(b.counters.messages_received.load() == 1);
}

TEST_CASE("client protocol: QoS 2 to the client: PUBREC is answered with PUBREL, PUBCOMP ends it") {
  ProtocolBroker b;
  ProtocolClient sub(b, V::v5);
  connect_ok(sub, connect("sub"));
  sub.send(subscribe("q", 2));
  sub.received();
  ProtocolClient pub(b, V::v5);
  connect_ok(pub, connect("pub"));
  pub.send(publish("q", "two", 2, 1));
  const auto got = only<mqtt::Publish>(sub.received());
  CHECK(got.qos == 2);
  mqtt::Pubrec rec;
  rec.packet_id = got.packet_id;
  sub.send(rec);
  CHECK(only<mqtt::Pubrel>(sub.received()).packet_id == got.packet_id);
  const auto& s = *b.sessions.table().find("sub");
  REQUIRE(s->state.inflight().size() == 1);
  CHECK(s->state.inflight().front().released);
  mqtt::Pubcomp comp;
  comp.packet_id = got.packet_id;
  sub.send(comp);
  CHECK(s->state.inflight().empty());
}

TEST_CASE("client protocol: topic aliases from the client: set, used, unknown, above the maximum") {
  brokerha::BrokerOptions o;
  o.topic_alias_maximum = 5;
  ProtocolBroker b(o);
  ProtocolClient sub(b, V::v311);
  connect_ok(sub, connect("sub", V::v311));
  sub.send(subscribe("a/b", 0));
  sub.received();
  ProtocolClient pub(b, V::v5);
  connect_ok(pub, connect("pub"));
  auto first = publish("a/b", "1", 0);
  first.properties.topic_alias = 2;
  pub.send(first);
  auto by_alias = publish("", "2", 0);
  by_alias.properties.topic_alias = 2;
  pub.send(by_alias);
  const auto got = all_of<mqtt::Publish>(sub.received());
  REQUIRE(got.size() == 2);
  CHECK(got[1].topic == "a/b");
  CHECK(got[1].payload == "2");

  auto unknown = publish("", "3", 0);
  unknown.properties.topic_alias = 4;
  pub.send(unknown);
  CHECK(only<mqtt::Disconnect>(pub.received()).reason_code == ReasonCode::protocol_error);
  CHECK(pub.protocol().closing());

  ProtocolClient over(b, V::v5);
  connect_ok(over, connect("over"));
  auto too_high = publish("a/b", "4", 0);
  too_high.properties.topic_alias = 6;
  over.send(too_high);
  CHECK(only<mqtt::Disconnect>(over.received()).reason_code == ReasonCode::topic_alias_invalid);
}

TEST_CASE("client protocol: topic aliases to the client: the topic once, then the alias alone") {
  ProtocolBroker b;
  ProtocolClient sub(b, V::v5);
  auto c = connect("sub");
  c.properties.topic_alias_maximum = 4;
  connect_ok(sub, c);
  sub.send(subscribe("x/#", 0));
  sub.received();
  ProtocolClient pub(b, V::v311);
  connect_ok(pub, connect("pub", V::v311));
  pub.send(publish("x/long/topic", "1", 0));
  pub.send(publish("x/long/topic", "2", 0));
  const auto got = all_of<mqtt::Publish>(sub.received());
  REQUIRE(got.size() == 2);
  CHECK(got[0].topic == "x/long/topic");
  REQUIRE(got[0].properties.topic_alias);
  CHECK(got[1].topic.empty());
  CHECK(got[1].properties.topic_alias == got[0].properties.topic_alias);
}

TEST_CASE("client protocol: the client's receive maximum bounds the deliveries in flight") {
  ProtocolBroker b;
  ProtocolClient sub(b, V::v5);
  auto c = connect("sub");
  c.properties.receive_maximum = 2;
  connect_ok(sub, c);
  sub.send(subscribe("r", 1));
  sub.received();
  ProtocolClient pub(b, V::v311);
  connect_ok(pub, connect("pub", V::v311));
  for (std::uint16_t i = 1; i <= 5; ++i) pub.send(publish("r", std::to_string(i), 1, i));
  auto got = all_of<mqtt::Publish>(sub.received());
  REQUIRE(got.size() == 2);
  mqtt::Puback ack;
  ack.packet_id = got[0].packet_id;
  sub.send(ack);
  got = all_of<mqtt::Publish>(sub.received());
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "3");
}

TEST_CASE("client protocol: QoS 2 from the client beyond our receive maximum is a violation") {
  brokerha::BrokerOptions o;
  o.receive_maximum = 2;
  ProtocolBroker b(o);
  ProtocolClient pub(b, V::v5);
  connect_ok(pub, connect("pub"));
  pub.send(publish("t", "1", 2, 1));
  pub.send(publish("t", "2", 2, 2));
  CHECK(all_of<mqtt::Pubrec>(pub.received()).size() == 2);
  pub.send(publish("t", "3", 2, 3));
  CHECK(only<mqtt::Disconnect>(pub.received()).reason_code == ReasonCode::receive_maximum_exceeded);
}

TEST_CASE("client protocol: keep alive: 1.5 times the interval of silence ends the connection") {
  ProtocolBroker b;
  const auto t0 = brokerha::test::Clock::now();
  ProtocolClient c(b, V::v5, t0);
  auto packet = connect("ka");
  packet.keep_alive = 10;
  c.send(packet, t0);
  c.received();
  c.protocol().on_tick(t0 + 14s, false);
  CHECK_FALSE(c.protocol().closing());
  // Not read on purpose (back-pressure): the silence is ours, not the client's.
  c.protocol().on_tick(t0 + 20s, true);
  CHECK_FALSE(c.protocol().closing());
  c.protocol().on_tick(t0 + 36s, false);
  CHECK(only<mqtt::Disconnect>(c.received()).reason_code == ReasonCode::keep_alive_timeout);
  CHECK(c.protocol().closing());
  CHECK(b.counters.keepalive_timeouts.load() == 1);
}

TEST_CASE("client protocol: no CONNECT within the connect timeout closes") {
  ProtocolBroker b;
  const auto t0 = brokerha::test::Clock::now();
  ProtocolClient c(b, V::v311, t0);
  c.protocol().on_tick(t0 + b.options.connect_timeout / 2, false);
  CHECK_FALSE(c.protocol().closed());
  c.protocol().on_tick(t0 + b.options.connect_timeout + 1s, false);
  CHECK(c.protocol().closed());
}

TEST_CASE("client protocol: takeover: the old connection gets 0x8E, the session continues") {
  ProtocolBroker b;
  ProtocolClient first(b, V::v5);
  connect_ok(first, connect("same", V::v5, false));
  first.send(subscribe("s", 1));
  first.received();
  ProtocolClient second(b, V::v5);
  const auto ack = connect_ok(second, connect("same", V::v5, false));
  CHECK(ack.session_present);
  CHECK(only<mqtt::Disconnect>(first.received()).reason_code == ReasonCode::session_taken_over);
  CHECK(first.protocol().closing());
  CHECK(b.sessions.table().size() == 1);
  CHECK((*b.sessions.table().find("same"))->attached == &second.protocol());
  // The subscription came along.
  ProtocolClient pub(b, V::v311);
  connect_ok(pub, connect("pub", V::v311));
  pub.send(publish("s", "after", 1, 1));
  CHECK(only<mqtt::Publish>(second.received()).payload == "after");
}

TEST_CASE("client protocol: in-flight deliveries are resent with DUP after a reconnect") {
  ProtocolBroker b;
  auto sub = std::make_unique<ProtocolClient>(b, V::v311);
  connect_ok(*sub, connect("sub", V::v311, false));
  sub->send(subscribe("d", 1));
  sub->received();
  ProtocolClient pub(b, V::v311);
  connect_ok(pub, connect("pub", V::v311));
  pub.send(publish("d", "unacked", 1, 1));
  const auto first = only<mqtt::Publish>(sub->received());
  CHECK_FALSE(first.dup);
  sub->protocol().close();  // the connection drops without DISCONNECT
  sub.reset();
  ProtocolClient again(b, V::v311);
  again.send(connect("sub", V::v311, false));
  const auto got = again.received();
  REQUIRE(got.size() == 2);
  CHECK(std::get<mqtt::Connack>(got[0]).session_present);
  const auto resent = std::get<mqtt::Publish>(got[1]);
  CHECK(resent.dup);
  CHECK(resent.packet_id == first.packet_id);
  CHECK(resent.payload == "unacked");
}

TEST_CASE(
    "client protocol: a resend larger than the client's maximum packet is dropped, not stuck") {
  // MQTT 5.0 3.1.2.25: a packet too large for the client is discarded and the server behaves
  // as if it had completed sending it; it must not stay in flight forever.
  ProtocolBroker b;
  auto sub = std::make_unique<ProtocolClient>(b, V::v5);
  connect_ok(*sub, connect("sub", V::v5, false));
  sub->send(subscribe("m", 1));
  sub->received();
  ProtocolClient pub(b, V::v5);
  connect_ok(pub, connect("pub"));
  pub.send(publish("m", std::string(500, 'x'), 1, 1));
  CHECK(only<mqtt::Publish>(sub->received()).payload.size() == 500);
  sub->protocol().close();
  sub.reset();
  ProtocolClient small(b, V::v5);
  auto c = connect("sub", V::v5, false);
  c.properties.maximum_packet_size = 128;
  small.send(c);
  const auto got = small.received();
  REQUIRE(got.size() == 1);  // the CONNACK only
  CHECK(std::get<mqtt::Connack>(got[0]).session_present);
  const auto& s = *b.sessions.table().find("sub");
  CHECK(s->state.inflight().empty());
  CHECK(b.counters.messages_dropped.load() >= 1);
  // A small message still gets through.
  pub.send(publish("m", "ok", 1, 2));
  CHECK(only<mqtt::Publish>(small.received()).payload == "ok");
}

TEST_CASE("client protocol: a clean DISCONNECT publishes no will, a dropped connection does") {
  ProtocolBroker b;
  ProtocolClient watcher(b, V::v311);
  connect_ok(watcher, connect("w", V::v311));
  watcher.send(subscribe("will/#", 0));
  watcher.received();
  for (const bool graceful : {true, false}) {
    ProtocolClient c(b, V::v311);
    auto packet = connect(graceful ? "g" : "d", V::v311);
    mqtt::Will w;
    w.topic = graceful ? "will/g" : "will/d";
    w.payload = "bye";
    packet.will = w;
    connect_ok(c, packet);
    if (graceful) {
      c.send(mqtt::Disconnect{});
    } else {
      c.protocol().close();
      c.run();
    }
    CHECK(c.protocol().closed());
    CHECK(all_of<mqtt::Publish>(watcher.received()).size() == (graceful ? 0u : 1u));
  }
}

TEST_CASE("client protocol: cluster mode: CONNACK waits for the claim and SUBACK for the routes") {
  ProtocolBroker b({}, true);
  ProtocolClient c(b, V::v5);
  c.send(connect("cl"));
  CHECK(c.received().empty());  // claiming
  CHECK(c.protocol().paused());
  REQUIRE(b.claims.size() == 1);
  CHECK(b.claims[0].first == "cl");
  brokerha::router::ClaimResult won;
  won.version = brokerha::hlc::Version{1, "n1"};
  b.claims[0].second(won);
  c.run();
  only<mqtt::Connack>(c.received());
  c.send(subscribe("routes/#", 0));
  CHECK(c.received().empty());  // the route is announced first
  REQUIRE(b.route_waits.size() == 1);
  CHECK(b.routes_announced == std::vector<std::string>{"routes/#"});
  b.route_waits[0]();
  c.run();
  only<mqtt::Suback>(c.received());

  // A lost claim is refused with 0x89 (server busy).
  ProtocolClient loser(b, V::v5);
  loser.send(connect("cl2"));
  REQUIRE(b.claims.size() == 2);
  brokerha::router::ClaimResult lost;
  lost.won = false;
  b.claims[1].second(lost);
  loser.run();
  CHECK(only<mqtt::Connack>(loser.received()).code ==
        static_cast<std::uint8_t>(ReasonCode::server_busy));
}

TEST_CASE("client protocol: an offline session's deliveries are checked with its last address") {
  // ACL: read access to secret/# only from 127.0.0.1 (the harness's clients' address).
  brokerha::BrokerOptions o;
  brokerha::AclRule writers;  // first: the first rule that matches the topic decides
  writers.client = "pub";
  writers.filters = {{"#", 2}};
  o.access.acl.push_back(writers);
  brokerha::AclRule rule;
  rule.remote = "127.0.0.1";
  rule.filters = {{"secret/#", 1}};
  o.access.acl.push_back(rule);
  o.access.acl_default_allow = false;
  ProtocolBroker b(o);
  auto sub = std::make_unique<ProtocolClient>(b, V::v311);
  connect_ok(*sub, connect("sub", V::v311, false));
  sub->send(subscribe("secret/#", 1));
  CHECK(only<mqtt::Suback>(sub->received()).reason_codes.at(0) == ReasonCode::granted_qos_1);
  sub->protocol().close();
  sub.reset();
  ProtocolClient pub(b, V::v311);
  connect_ok(pub, connect("pub", V::v311));
  pub.send(publish("secret/x", "queued while offline", 1, 1));
  only<mqtt::Puback>(pub.received());
  // The session is offline: its last address, not an empty one, is what the rule sees.
  CHECK((*b.sessions.table().find("sub"))->state.queued() == 1);
  ProtocolClient again(b, V::v311);
  again.send(connect("sub", V::v311, false));
  const auto got = again.received();
  REQUIRE(got.size() == 2);
  CHECK(std::get<mqtt::Publish>(got[1]).payload == "queued while offline");
}

TEST_CASE("client protocol: a session resumed under another identity gets only what it may read") {
  brokerha::BrokerOptions o;
  brokerha::AclRule writers;
  writers.client = "pub";
  writers.filters = {{"#", 2}};
  o.access.acl.push_back(writers);
  brokerha::AclRule alice;
  alice.username = "alice";
  alice.filters = {{"private/#", 1}};
  o.access.acl.push_back(alice);
  o.access.acl_default_allow = false;
  ProtocolBroker b(o);
  auto as_alice = std::make_unique<ProtocolClient>(b, V::v311);
  auto c = connect("shared-id", V::v311, false);
  c.username = "alice";
  connect_ok(*as_alice, c);
  as_alice->send(subscribe("private/#", 1));
  only<mqtt::Suback>(as_alice->received());
  as_alice->protocol().close();
  as_alice.reset();
  ProtocolClient pub(b, V::v311);
  connect_ok(pub, connect("pub", V::v311));
  pub.send(publish("private/a", "for alice", 1, 1));
  pub.received();
  CHECK((*b.sessions.table().find("shared-id"))->state.queued() == 1);
  // Bob resumes alice's session (same client id): the queue is checked again, for bob.
  ProtocolClient as_bob(b, V::v311);
  c.username = "bob";
  as_bob.send(c);
  const auto got = as_bob.received();
  REQUIRE(got.size() == 1);  // the CONNACK only
  CHECK(std::get<mqtt::Connack>(got[0]).session_present);
  CHECK((*b.sessions.table().find("shared-id"))->state.queued() == 0);
  CHECK(b.counters.acl_denials.load() >= 1);
}

TEST_CASE(
    "client protocol: cluster mode: a second subscriber of a filter also waits for the peers") {
  // The first subscriber's announcement is still unacknowledged when the second subscribes:
  // its SUBACK must wait too, or a publish on another node right after it misses the client.
  ProtocolBroker b({}, true);
  auto connect_clustered = [&](ProtocolClient& c, const char* id) {
    c.send(connect(id));
    REQUIRE(!b.claims.empty());
    brokerha::router::ClaimResult won;
    won.version = brokerha::hlc::Version{b.claims.size(), "n1"};
    b.claims.back().second(won);
    b.claims.pop_back();
    c.run();
    only<mqtt::Connack>(c.received());
  };
  ProtocolClient first(b, V::v5);
  connect_clustered(first, "first");
  ProtocolClient second(b, V::v5);
  connect_clustered(second, "second");
  first.send(subscribe("shared/filter", 1));
  CHECK(first.received().empty());
  REQUIRE(b.route_waits.size() == 1);
  second.send(subscribe("shared/filter", 1));
  CHECK(second.received().empty());  // not before the peers know the filter
  REQUIRE(b.route_waits.size() == 2);
  for (auto& done : b.route_waits) done();
  first.run();
  second.run();
  only<mqtt::Suback>(first.received());
  only<mqtt::Suback>(second.received());
}
