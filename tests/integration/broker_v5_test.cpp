// SPDX-License-Identifier: Apache-2.0
// MQTT 5.0 features with python3-paho-mqtt 1.6.1 (Debian's, so run with /usr/bin/python3)
// and with the codec-based test client: retain handling and retain-as-published,
// subscription identifiers, no-local, inbound topic aliases, message expiry, forwarded
// properties, assigned client identifiers; and shared subscriptions.
//
// Each python script prints "key=value" lines; the checks are made here, on those lines. A
// script that cannot get what it waits for prints "FAIL ..." and exits non-zero (every wait
// in it is bounded). Cases using paho are skipped (with a MESSAGE) only when
// /usr/bin/python3 cannot import paho.mqtt.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/broker_process.hpp"
#include "support/required_tool.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::BrokerOptions;
using brokerha::test::find_client;
using brokerha::test::has_line;
using brokerha::test::line_value;
using brokerha::test::make_connect;
using brokerha::test::make_publish;
using brokerha::test::MqttClient;
using brokerha::test::ProcessResult;
using brokerha::test::publishes;
using brokerha::test::Received;
using brokerha::test::TestBroker;
using brokerha::test::wait_until;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 5000ms;

bool have_paho() {
  if (brokerha::test::have_python_paho()) return true;
  brokerha::test::tool_missing("paho.mqtt for /usr/bin/python3 (Debian python3-paho-mqtt)");
  return false;
}

// Helpers shared by the scripts. C(...) connects and runs the network loop in a thread;
// every wait is bounded and ends the script with "FAIL ..." when it times out.
const char* const kPrelude = R"PY(
import os, sys, queue, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])

def die(msg):
    print("FAIL " + msg, flush=True)
    os._exit(3)

def props(ptype=PacketTypes.PUBLISH, **kw):
    p = Properties(ptype)
    for k, v in kw.items():
        setattr(p, k, v)
    return p

def out(key, value):
    print("%s=%s" % (key, value), flush=True)

class C:
    def __init__(self, cid, clean_start=True, properties=None):
        self.msgs = queue.Queue()
        self.subacks = {}
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_subscribe = self._on_subscribe
        self.c.connect("127.0.0.1", PORT, 60, clean_start=clean_start, properties=properties)
        self.c.loop_start()
        if not self.connected.wait(5):
            die("no CONNACK for " + cid)

    def _on_connect(self, c, u, flags, rc, properties=None):
        self.flags = flags
        self.rc = rc
        self.connack = properties
        self.connected.set()

    def _on_subscribe(self, c, u, mid, codes, properties=None):
        with self.cond:
            self.subacks[mid] = codes
            self.cond.notify_all()

    def subscribe(self, topic, qos=1, options=None, properties=None):
        if options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.subacks, 5):
                die("no SUBACK for " + topic)
        return self.subacks[mid]

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos > 0:
            info.wait_for_publish(5)
            if not info.is_published():
                die("no acknowledgement for " + topic)

    def get(self, what):
        try:
            return self.msgs.get(timeout=5)
        except queue.Empty:
            die("no message: " + what)

    def until(self, marker):
        """The messages before the one whose payload is `marker`."""
        got = []
        while True:
            m = self.get("marker " + marker)
            if m.payload.decode() == marker:
                return got
            got.append(m)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()
)PY";

ProcessResult run_script(const TestBroker& tb, const std::string& body) {
  return brokerha::test::run_python(std::string(kPrelude) + body, {tb.port_string()});
}

std::string dump(const std::optional<std::vector<Received>>& packets) {
  return packets ? brokerha::test::describe(*packets) : std::string("<no PINGRESP>");
}

}  // namespace

TEST_CASE("paho v5: retain handling 0/1/2 and retain-as-published") {
  if (!have_paho()) return;
  TestBroker tb;
  const ProcessResult r = run_script(tb, R"PY(
pub = C("rh-pub")
pub.publish("rh/t", "kept", retain=True)
subs = {}
for rh in (0, 1, 2):
    subs[rh] = C("rh%d" % rh)
    subs[rh].subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=rh))
for rh in (0, 1, 2):  # subscribe again to the same filter
    subs[rh].subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=rh))
pub.publish("rh/t", "marker")
for rh in (0, 1, 2):
    out("rh%d" % rh, ",".join("%s r%d" % (m.payload.decode(), m.retain) for m in subs[rh].until("marker")))

rap1 = C("rap1")
rap1.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=True))
rap0 = C("rap0")
rap0.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=False))
pub.publish("rap/t", "live", retain=True)
pub.publish("rap/t", "plain")
pub.publish("rap/t", "marker")
for name, c in (("rap1", rap1), ("rap0", rap0)):
    out(name, ",".join("%s r%d" % (m.payload.decode(), m.retain) for m in c.until("marker")))
)PY");
  INFO(r.describe());
  REQUIRE(r.ok());
  CHECK(has_line(r.out, "rh0=kept r1,kept r1"));  // 0: on every subscribe
  CHECK(has_line(r.out, "rh1=kept r1"));          // 1: only when the subscription is new
  CHECK(has_line(r.out, "rh2="));                 // 2: never
  CHECK(has_line(r.out, "rap1=live r1,plain r0"));
  CHECK(has_line(r.out, "rap0=live r0,plain r0"));
}

TEST_CASE("paho v5: subscription identifiers are delivered with each matching subscription") {
  if (!have_paho()) return;
  TestBroker tb;
  const ProcessResult r = run_script(tb, R"PY(
c = C("sid")
c.subscribe("sid/#", properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42))
c.subscribe("sid/+", properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
c.subscribe("sidnone/t")
pub = C("sid-pub")
for t in ("sid/x", "sid/x/y", "sidnone/t"):
    pub.publish(t, "p")
    m = c.get(t)
    ids = getattr(m.properties, "SubscriptionIdentifier", [])
    out(m.topic, ",".join(str(i) for i in sorted(ids)))
pub.publish("sid/r", "retained", retain=True)
c.get("sid/r")
c.subscribe("sid/r", properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=99))
m = c.get("retained on subscribe")
out("retained " + m.topic, ",".join(str(i) for i in getattr(m.properties, "SubscriptionIdentifier", [])))
)PY");
  INFO(r.describe());
  REQUIRE(r.ok());
  CHECK(has_line(r.out, "sid/x=7,42"));  // one PUBLISH carrying both identifiers
  CHECK(has_line(r.out, "sid/x/y=42"));
  CHECK(has_line(r.out, "sidnone/t="));
  CHECK(has_line(r.out, "retained sid/r=99"));
}

TEST_CASE("paho v5: no-local subscriptions do not receive the client's own messages") {
  if (!have_paho()) return;
  TestBroker tb;
  const ProcessResult r = run_script(tb, R"PY(
me = C("nl-self")
me.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=True))
other = C("nl-other")
other.subscribe("nl/t", options=SubscribeOptions(qos=1))
me.publish("nl/t", "mine")
other.publish("nl/t", "theirs")
out("self", me.get("theirs").payload.decode())
out("other", ",".join(other.get(x).payload.decode() for x in ("mine", "theirs")))
)PY");
  INFO(r.describe());
  REQUIRE(r.ok());
  CHECK(has_line(r.out, "self=theirs"));  // "mine" would have come first
  CHECK(has_line(r.out, "other=mine,theirs"));
}

TEST_CASE("paho v5: inbound topic aliases are resolved") {
  if (!have_paho()) return;
  TestBroker tb;
  const ProcessResult r = run_script(tb, R"PY(
sub = C("ta-sub")
sub.subscribe("ta/#")
pub = C("ta-pub")
out("alias_max", getattr(pub.connack, "TopicAliasMaximum", None))
pub.publish("ta/t", "one", properties=props(TopicAlias=1))
pub.publish("", "two", properties=props(TopicAlias=1))
pub.publish("ta/u", "three", properties=props(TopicAlias=1))  # alias 1 now means ta/u
pub.publish("", "four", properties=props(TopicAlias=1))
pub.publish("ta/v", "five", properties=props(TopicAlias=2))
pub.publish("", "six", properties=props(TopicAlias=2))
for i in range(6):
    m = sub.get("message %d" % i)
    out("got%d" % i, "%s %s alias=%s" % (m.topic, m.payload.decode(), getattr(m.properties, "TopicAlias", None)))
)PY");
  INFO(r.describe());
  REQUIRE(r.ok());
  CHECK(has_line(r.out, "alias_max=65535"));
  CHECK(has_line(r.out, "got0=ta/t one alias=None"));
  CHECK(has_line(r.out, "got1=ta/t two alias=None"));
  CHECK(has_line(r.out, "got2=ta/u three alias=None"));
  CHECK(has_line(r.out, "got3=ta/u four alias=None"));
  CHECK(has_line(r.out, "got4=ta/v five alias=None"));
  CHECK(has_line(r.out, "got5=ta/v six alias=None"));
}

TEST_CASE("MQTT 5.0 topic alias errors: unknown alias, 0, above the maximum -> DISCONNECT") {
  TestBroker tb([] {
    BrokerOptions o;
    o.topic_alias_maximum = 5;
    return o;
  }());
  struct Case {
    const char* name;
    std::uint16_t alias;
    const char* topic;
    int reason;
  };
  const Case cases[] = {
      {"unknown alias with an empty topic", 3, "", 0x82},
      {"alias above the maximum", 6, "tae/t", 0x94},
      {"alias 0", 0, "tae/t", 0x94},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    MqttClient cl(ProtocolVersion::v5);
    REQUIRE(cl.open(tb.port));
    const auto ack = cl.connect(make_connect(ProtocolVersion::v5, "tae"));
    REQUIRE(ack);
    CHECK(ack->as<mqtt::Connack>()->properties.topic_alias_maximum.value_or(0) == 5);
    mqtt::Publish p = make_publish(c.topic, "x", 0);
    p.properties.topic_alias = c.alias;
    REQUIRE(cl.send(p));
    const auto closing = cl.wait_closed(kWait);
    REQUIRE(closing);
    INFO(brokerha::test::describe(*closing));
    REQUIRE(closing->size() == 1);
    REQUIRE((*closing)[0].is<mqtt::Disconnect>());
    const auto* d = (*closing)[0].as<mqtt::Disconnect>();
    CHECK(static_cast<int>(d->reason_code) == c.reason);
    // The DISCONNECT says why in a Reason String.
    REQUIRE(d->properties.reason_string);
    CHECK_FALSE(d->properties.reason_string->empty());
  }
}

TEST_CASE("MQTT 5.0 topic aliases may pin at most 1 MiB of topic names") {
  TestBroker tb;
  MqttClient cl(ProtocolVersion::v5);
  REQUIRE(cl.open(tb.port));
  REQUIRE(cl.connect(make_connect(ProtocolVersion::v5, "alias-hog")));
  // Re-pointing one alias does not add up: the old topic's bytes are released.
  for (int i = 0; i < 40; ++i) {
    const std::string topic = "hog/" + std::string(60'000, static_cast<char>('a' + i % 26));
    mqtt::Publish p = make_publish(topic, "x", 0);  // views `topic`
    p.properties.topic_alias = 1;
    INFO("publish " << i);
    REQUIRE_MESSAGE(cl.send(p), cl.error());
  }
  REQUIRE(cl.ping());
  // Twenty aliases of 60 kB topics exceed the cap.
  for (std::uint16_t alias = 2; alias < 40; ++alias) {
    const std::string topic = "hog/" + std::string(60'000, 'b');
    mqtt::Publish p = make_publish(topic, "x", 0);  // views `topic`
    p.properties.topic_alias = alias;
    if (!cl.send(p)) break;
  }
  const auto closing = cl.wait_closed(kWait);
  REQUIRE(closing);
  REQUIRE(closing->size() == 1);
  const auto* d = (*closing)[0].as<mqtt::Disconnect>();
  REQUIRE(d);
  CHECK(static_cast<int>(d->reason_code) == 0x97);
  CHECK(tb.broker.stats().protocol_errors >= 1);
}

TEST_CASE("MQTT 5.0 reason strings follow Request Problem Information and Maximum Packet Size") {
  TestBroker tb([] {
    BrokerOptions o;
    brokerha::AclRule rule;
    rule.filters = {{"private/#", 0}};
    o.access.acl.push_back(rule);
    return o;
  }());
  auto denied_subscribe = [&](const mqtt::Connect& c) {
    MqttClient cl(ProtocolVersion::v5);
    REQUIRE(cl.open_and_connect(tb.port, c) == 0);
    mqtt::Subscription s;
    s.filter = "private/#";
    s.qos = 1;
    auto ack = cl.subscribe({s});
    REQUIRE(ack);
    REQUIRE(ack->as<mqtt::Suback>()->reason_codes.size() == 1);
    CHECK(static_cast<int>(ack->as<mqtt::Suback>()->reason_codes[0]) == 0x87);
    auto pub = cl.publish(make_publish("private/x", "no", 1));
    REQUIRE(pub);
    REQUIRE(pub->as<mqtt::Puback>());
    CHECK(static_cast<int>(pub->as<mqtt::Puback>()->reason_code) == 0x87);
    return std::make_pair(ack->as<mqtt::Suback>()->properties.reason_string.has_value(),
                          pub->as<mqtt::Puback>()->properties.reason_string.has_value());
  };
  // Default (problem information requested): the refusals say why.
  CHECK(denied_subscribe(make_connect(ProtocolVersion::v5, "rpi-default")) ==
        std::make_pair(true, true));
  // Request Problem Information 0: no reason string on SUBACK or PUBACK.
  mqtt::Connect quiet = make_connect(ProtocolVersion::v5, "rpi-0");
  quiet.properties.request_problem_information = 0;
  CHECK(denied_subscribe(quiet) == std::make_pair(false, false));

  // A DISCONNECT with the reason string would exceed the client's Maximum Packet Size: the
  // reason string is left out, the DISCONNECT still sent.
  MqttClient small(ProtocolVersion::v5);
  REQUIRE(small.open(tb.port));
  mqtt::Connect sc = make_connect(ProtocolVersion::v5, "rpi-small");
  sc.properties.maximum_packet_size = 8;
  REQUIRE(small.connect(sc));
  mqtt::Publish p = make_publish("", "x", 0);
  p.properties.topic_alias = 3;  // unknown alias
  REQUIRE(small.send(p));
  const auto closing = small.wait_closed(kWait);
  REQUIRE(closing);
  REQUIRE(closing->size() == 1);
  const auto* d = (*closing)[0].as<mqtt::Disconnect>();
  REQUIRE(d);
  CHECK(static_cast<int>(d->reason_code) == 0x82);
  CHECK_FALSE(d->properties.reason_string.has_value());
}

TEST_CASE("MQTT 5.0 enhanced authentication is refused with 0x8C and a reason string") {
  TestBroker tb;
  MqttClient cl(ProtocolVersion::v5);
  REQUIRE(cl.open(tb.port));
  mqtt::Connect c = make_connect(ProtocolVersion::v5, "enhanced-auth");
  c.properties.authentication_method = "SCRAM-SHA-256";
  c.properties.authentication_data = "n,,n=user,r=abc";
  const auto ack = cl.connect(c);
  REQUIRE(ack);
  REQUIRE(ack->as<mqtt::Connack>());
  CHECK(static_cast<int>(ack->as<mqtt::Connack>()->code) == 0x8C);
  CHECK(ack->as<mqtt::Connack>()->properties.reason_string.has_value());
  CHECK(cl.wait_closed(kWait));
  CHECK_FALSE(find_client(tb.broker, "enhanced-auth").has_value());
}

TEST_CASE("paho v5: user properties, content type, response topic, correlation data pass through") {
  if (!have_paho()) return;
  TestBroker tb;
  MqttClient v3(ProtocolVersion::v311);  // a 3.1.1 subscriber gets the message without them
  REQUIRE(v3.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "pp-v3")) == 0);
  REQUIRE(v3.subscribe("pp/t", 1));
  const ProcessResult r = run_script(tb, R"PY(
sub = C("pp-sub")
sub.subscribe("pp/t")
pub = C("pp-pub")
p = props(UserProperty=[("a", "1"), ("b", "2"), ("a", "3")], ContentType="application/json",
          ResponseTopic="pp/reply", CorrelationData=b"\x00\x01corr", PayloadFormatIndicator=1)
pub.publish("pp/t", '{"x":1}', properties=p)
m = sub.get("pp/t")
mp = m.properties
out("user", getattr(mp, "UserProperty", None))
out("content_type", getattr(mp, "ContentType", None))
out("response_topic", getattr(mp, "ResponseTopic", None))
out("correlation", getattr(mp, "CorrelationData", b"").hex())
out("format", getattr(mp, "PayloadFormatIndicator", None))
out("payload", m.payload.decode())

# request/response: a responder answers on the response topic with the correlation data
responder = C("pp-responder")
responder.subscribe("pp/request")
requester = C("pp-requester")
requester.subscribe("pp/reply")
requester.publish("pp/request", "ping", properties=props(ResponseTopic="pp/reply", CorrelationData=b"42"))
req = responder.get("request")
responder.publish(req.properties.ResponseTopic, "pong",
                  properties=props(CorrelationData=req.properties.CorrelationData))
rep = requester.get("reply")
out("reply", "%s %s" % (rep.payload.decode(), rep.properties.CorrelationData.decode()))
)PY");
  INFO(r.describe());
  REQUIRE(r.ok());
  CHECK(has_line(r.out, "user=[('a', '1'), ('b', '2'), ('a', '3')]"));
  CHECK(has_line(r.out, "content_type=application/json"));
  CHECK(has_line(r.out, "response_topic=pp/reply"));
  CHECK(has_line(r.out, "correlation=0001636f7272"));
  CHECK(has_line(r.out, "format=1"));
  CHECK(has_line(r.out, "payload={\"x\":1}"));
  CHECK(has_line(r.out, "reply=pong 42"));

  const auto got = v3.await<mqtt::Publish>();
  REQUIRE(got);
  CHECK(got->as<mqtt::Publish>()->payload == "{\"x\":1}");
}

TEST_CASE("assigned client identifier for an empty client id") {
  TestBroker tb;
  SUBCASE("paho v5") {
    if (!have_paho()) return;
    const ProcessResult r = run_script(tb, R"PY(
c = C("")
out("assigned", getattr(c.connack, "AssignedClientIdentifier", ""))
c.subscribe("aid/t")
c.publish("aid/t", "echo")
out("echo", c.get("echo").payload.decode())
)PY");
    INFO(r.describe());
    REQUIRE(r.ok());
    const auto assigned = line_value(r.out, "assigned");
    REQUIRE(assigned);
    CHECK_FALSE(assigned->empty());
    CHECK(has_line(r.out, "echo=echo"));
  }
  SUBCASE("MQTT 5.0: the assigned id names the session") {
    MqttClient c(ProtocolVersion::v5);
    REQUIRE(c.open(tb.port));
    const auto ack = c.connect(make_connect(ProtocolVersion::v5, ""));
    REQUIRE(ack);
    CHECK(int{ack->as<mqtt::Connack>()->code} == 0);
    const auto assigned = ack->as<mqtt::Connack>()->properties.assigned_client_identifier;
    REQUIRE(assigned);
    REQUIRE_FALSE(assigned->empty());
    CHECK(brokerha::test::is_connected(tb.broker, *assigned));
  }
  SUBCASE("MQTT 3.1.1: accepted with clean session 1, refused (2) with clean session 0") {
    MqttClient c(ProtocolVersion::v311);
    CHECK(c.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "", true)) == 0);
    CHECK(c.ping());
    MqttClient d(ProtocolVersion::v311);
    CHECK(d.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "", false)) == 2);
  }
  SUBCASE("MQTT 3.1: refused (2)") {
    MqttClient c(ProtocolVersion::v31);
    CHECK(c.open_and_connect(tb.port, make_connect(ProtocolVersion::v31, "", true)) == 2);
  }
}

TEST_CASE(
    "message expiry: expired retained and queued messages are dropped, the rest is forwarded "
    "with the remaining interval") {
  if (!have_paho()) return;
  BrokerOptions o;
  o.sys_interval = std::chrono::milliseconds(0);  // no retained $SYS messages in the count
  TestBroker tb(o);
  // An offline session that will receive a short-lived and a long-lived message.
  MqttClient offline(ProtocolVersion::v5);
  mqtt::Connect conn = make_connect(ProtocolVersion::v5, "exp-offline", false);
  conn.properties.session_expiry_interval = 300;
  REQUIRE(offline.open_and_connect(tb.port, conn) == 0);
  REQUIRE(offline.subscribe("expq/t", 1));
  offline.disconnect();

  ProcessResult r = run_script(tb, R"PY(
pub = C("exp-pub")
pub.publish("exp/short", "short", retain=True, properties=props(MessageExpiryInterval=1))
pub.publish("exp/keep", "keep", retain=True)
pub.publish("exp/long", "long", retain=True, properties=props(MessageExpiryInterval=10))
pub.publish("expq/t", "queued short", properties=props(MessageExpiryInterval=1))
pub.publish("expq/t", "queued long", properties=props(MessageExpiryInterval=30))
out("published", 1)
)PY");
  const auto published = Clock::now();
  INFO(r.describe());
  REQUIRE(r.ok());
  const auto short_lived = tb.broker.retained("exp/short");
  REQUIRE(short_lived.size() == 1);
  REQUIRE(short_lived[0].expiry);
  CHECK(short_lived[0].expiry->count() <= 1);
  CHECK(brokerha::test::pending_deliveries(tb.broker, "exp-offline") == 2);
  CHECK(tb.broker.stats().retained_messages == 3);
  const auto dropped = tb.broker.stats().messages_dropped;

  // The retained store forgets the expired message (checked once the time has passed).
  CHECK(wait_until([&] { return tb.broker.retained("exp/short").empty(); }, 2500ms, 50ms));
  std::this_thread::sleep_until(published + 2s);    // the message expiry itself is the subject
  CHECK(tb.broker.stats().retained_messages == 2);  // exp/keep and exp/long

  r = run_script(tb, R"PY(
s = C("exp-sub")
s.subscribe("exp/#")
C("exp-marker").publish("exp/marker", "marker")
for m in sorted(s.until("marker"), key=lambda m: m.topic):
    out(m.topic, "%s r%d exp=%s" % (m.payload.decode(), m.retain, getattr(m.properties, "MessageExpiryInterval", None)))
)PY");
  INFO(r.describe());
  REQUIRE(r.ok());
  CHECK_FALSE(line_value(r.out, "exp/short"));
  CHECK(has_line(r.out, "exp/keep=keep r1 exp=None"));
  const auto long_line = line_value(r.out, "exp/long");
  REQUIRE(long_line);
  const std::string prefix = "long r1 exp=";
  REQUIRE(long_line->compare(0, prefix.size(), prefix) == 0);
  const int remaining = std::stoi(long_line->substr(prefix.size()));
  CHECK(remaining >= 1);
  CHECK(remaining <= 9);  // 10 s minus the ~2 s it waited

  REQUIRE(offline.open(tb.port));
  REQUIRE(offline.connect(conn));
  const auto queued = offline.ping();
  INFO(dump(queued));
  REQUIRE(queued);
  const auto pubs = publishes(*queued);
  REQUIRE(pubs.size() == 1);
  CHECK(pubs[0]->payload == "queued long");
  REQUIRE(pubs[0]->properties.message_expiry_interval);
  CHECK(*pubs[0]->properties.message_expiry_interval <= 29);
  CHECK(*pubs[0]->properties.message_expiry_interval >= 1);
  CHECK(tb.broker.stats().messages_dropped >= dropped + 1);  // the expired queued message
}

TEST_CASE("MQTT 5.0 PUBACK / PUBREC carry 0x10 when no subscription matched") {
  TestBroker tb;
  MqttClient c(ProtocolVersion::v5);
  REQUIRE(c.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "nomatch")) == 0);
  const auto ack1 = c.publish(make_publish("nobody/listens", "x", 1));
  REQUIRE(ack1);
  CHECK(static_cast<int>(ack1->as<mqtt::Puback>()->reason_code) == 0x10);
  const auto rec = c.publish(make_publish("nobody/listens", "x", 2));
  REQUIRE(rec);
  CHECK(static_cast<int>(rec->as<mqtt::Pubrec>()->reason_code) == 0x10);
  REQUIRE(c.subscribe("nobody/listens", 0));
  const auto ack2 = c.publish(make_publish("nobody/listens", "x", 1));
  REQUIRE(ack2);
  CHECK(static_cast<int>(ack2->as<mqtt::Puback>()->reason_code) == 0);
}

TEST_CASE("shared subscriptions: each message goes to one member of the group") {
  TestBroker tb;
  for (ProtocolVersion v : {ProtocolVersion::v311, ProtocolVersion::v5}) {
    CAPTURE(brokerha::test::version_name(v));
    const std::string tag = v == ProtocolVersion::v5 ? "5" : "311";
    MqttClient a(v);
    MqttClient b(v);
    MqttClient plain(v);
    REQUIRE(a.open_and_connect(tb.port, make_connect(v, "share-a-" + tag)) == 0);
    REQUIRE(b.open_and_connect(tb.port, make_connect(v, "share-b-" + tag)) == 0);
    REQUIRE(plain.open_and_connect(tb.port, make_connect(v, "share-plain-" + tag)) == 0);
    const std::string topic = "sh/" + tag;
    const std::string shared = "$share/g/" + topic;
    REQUIRE(a.subscribe(shared, 1));
    REQUIRE(b.subscribe(shared, 1));
    REQUIRE(plain.subscribe(topic, 1));
    const auto info = find_client(tb.broker, "share-a-" + tag);
    REQUIRE(info);
    REQUIRE(info->subscriptions.count(shared) == 1);
    CHECK(info->subscriptions.at(shared).share_name == "g");
    CHECK(info->subscriptions.at(shared).filter == topic);

    MqttClient pubc(v);
    REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "share-pub-" + tag)) == 0);
    for (int i = 0; i < 10; ++i) {
      REQUIRE(pubc.publish(make_publish(topic, "m" + std::to_string(i), 1)));
    }
    std::multiset<std::string> seen;
    std::size_t got_a = 0;
    std::size_t got_b = 0;
    for (MqttClient* c : {&a, &b}) {
      const auto got = c->ping();
      REQUIRE(got);
      for (const auto* p : publishes(*got)) {
        seen.emplace(p->payload);
        c->acknowledge(*p);
        ++(c == &a ? got_a : got_b);
      }
    }
    CAPTURE(got_a);
    CAPTURE(got_b);
    std::multiset<std::string> all;
    for (int i = 0; i < 10; ++i) all.emplace("m" + std::to_string(i));
    CHECK(seen == all);  // each once in total
    CHECK(got_a >= 1);   // split between the members
    CHECK(got_b >= 1);
    const auto everything = plain.ping();
    REQUIRE(everything);
    CHECK(publishes(*everything).size() == 10);  // a plain subscription gets every one
  }
}

TEST_CASE("shared subscriptions get no retained messages on subscribe") {
  TestBroker tb;
  MqttClient pubc(ProtocolVersion::v5);
  REQUIRE(pubc.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "shr-pub")) == 0);
  REQUIRE(pubc.publish(make_publish("shr/t", "retained", 1, true)));
  MqttClient s(ProtocolVersion::v5);
  REQUIRE(s.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "shr-sub")) == 0);
  REQUIRE(s.subscribe("$share/g/shr/t", 1));
  const auto got = s.ping();
  INFO(dump(got));
  REQUIRE(got);
  CHECK(publishes(*got).empty());  // MQTT 5.0 4.8.2
}
