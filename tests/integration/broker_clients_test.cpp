// SPDX-License-Identifier: Apache-2.0
// The broker with real clients: mosquitto_pub / mosquitto_sub (Debian mosquitto-clients,
// -V mqttv31 | mqttv311 | mqttv5) against an in-process brokerha::Broker on 127.0.0.1 port 0.
// Publish/subscribe at every QoS, -v output, overlapping subscriptions, wildcard and
// '$'-topic rules, retained messages, wills and persistent sessions.
//
// Where a check needs protocol-level control (a delivery's exact QoS, an abrupt close), the
// small codec-based client of tests/support/broker_mqtt_client.hpp stands in. Waiting is
// always bounded polling of a condition (the broker's snapshots, a client's output), never a
// fixed sleep. A case is skipped (with a MESSAGE) only when mosquitto-clients is missing.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/broker_process.hpp"
#include "support/required_tool.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::test::BackgroundProcess;
using brokerha::test::find_client;
using brokerha::test::has_subscription;
using brokerha::test::kAllVersions;
using brokerha::test::make_connect;
using brokerha::test::make_publish;
using brokerha::test::MqttClient;
using brokerha::test::ProcessResult;
using brokerha::test::Received;
using brokerha::test::TestBroker;
using brokerha::test::wait_until;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;

constexpr auto kRun = 5000ms;   // one mosquitto_pub run
constexpr auto kWait = 5000ms;  // a condition that normally holds within milliseconds

bool have_mosquitto() {
  if (!brokerha::test::mosquitto_pub_path().empty() &&
      !brokerha::test::mosquitto_sub_path().empty()) {
    return true;
  }
  brokerha::test::tool_missing("mosquitto_pub / mosquitto_sub (Debian mosquitto-clients)");
  return false;
}

std::string suffix(ProtocolVersion v) {
  return v == ProtocolVersion::v31 ? "31" : v == ProtocolVersion::v311 ? "311" : "5";
}

// mosquitto_sub against `tb` with protocol `v`, then `extra`.
std::vector<std::string> sub_argv(const TestBroker& tb, ProtocolVersion v,
                                  const std::vector<std::string>& extra) {
  std::vector<std::string> argv{
      brokerha::test::mosquitto_sub_path(), "-h", "127.0.0.1", "-p", tb.port_string(), "-V",
      brokerha::test::mosquitto_version(v)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// Runs mosquitto_pub against `tb` with protocol `v`, then `extra`.
ProcessResult pub(const TestBroker& tb, ProtocolVersion v, const std::vector<std::string>& extra) {
  std::vector<std::string> argv{
      brokerha::test::mosquitto_pub_path(), "-h", "127.0.0.1", "-p", tb.port_string(), "-V",
      brokerha::test::mosquitto_version(v)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return brokerha::test::run_process(argv, kRun);
}

// Runs mosquitto_sub with `extra` until it exits (it must bound itself with -C / -W / -E).
ProcessResult sub_run(const TestBroker& tb, ProtocolVersion v,
                      const std::vector<std::string>& extra) {
  return brokerha::test::run_process(sub_argv(tb, v, extra), kRun);
}

bool output_has_lines(const std::string& out, int n) {
  return static_cast<int>(brokerha::test::split_lines(out).size()) >= n;
}

// A raw client subscribed to `filter` at QoS 2 as `id`, for watching what the broker sends.
void watch(MqttClient& c, const TestBroker& tb, const std::string& id, const std::string& filter) {
  REQUIRE(c.open_and_connect(tb.port, make_connect(c.version(), id)) == 0);
  REQUIRE(c.subscribe(filter, 2));
}

}  // namespace

TEST_CASE("mosquitto_sub -v receives QoS 0, 1 and 2 publishes from mosquitto_pub") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "sub-v-" + suffix(v);
      BackgroundProcess sub(
          sub_argv(tb, v, {"-i", id, "-q", "2", "-t", "pubsub/#", "-v", "-C", "3"}));
      REQUIRE(sub.running());
      REQUIRE(wait_until([&] { return has_subscription(tb.broker, id, "pubsub/#"); }, kWait));
      for (int qos = 0; qos <= 2; ++qos) {
        const std::string q = std::to_string(qos);
        const ProcessResult r = pub(tb, v, {"-q", q, "-t", "pubsub/q" + q, "-m", "payload " + q});
        INFO(r.describe());
        REQUIRE(r.ok());
        // One at a time: the next publisher starts once this message has arrived, so the
        // expected order does not depend on how the broker's threads interleave.
        REQUIRE(sub.wait_output([&](const std::string& o) { return output_has_lines(o, qos + 1); },
                                kWait));
      }
      REQUIRE(sub.wait_exit(kWait));
      INFO(sub.describe());
      CHECK(sub.exit_code() == 0);
      CHECK(sub.out() == "pubsub/q0 payload 0\npubsub/q1 payload 1\npubsub/q2 payload 2\n");
    }
  }
}

TEST_CASE("a delivery has the lower of the publish QoS and the subscription QoS") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      for (int sub_qos = 0; sub_qos <= 2; ++sub_qos) {
        CAPTURE(sub_qos);
        const std::string id = "sub-q" + std::to_string(sub_qos) + "-" + suffix(v);
        BackgroundProcess sub(sub_argv(tb, v,
                                       {"-i", id, "-q", std::to_string(sub_qos), "-t", "qos/#",
                                        "-F", "%t %q %r %p", "-C", "3"}));
        REQUIRE(wait_until([&] { return has_subscription(tb.broker, id, "qos/#"); }, kWait));
        std::string expected;
        for (int pub_qos = 0; pub_qos <= 2; ++pub_qos) {
          const std::string q = std::to_string(pub_qos);
          REQUIRE(pub(tb, v, {"-q", q, "-t", "qos/p" + q, "-m", "m" + q}).ok());
          REQUIRE(sub.wait_output(
              [&](const std::string& o) { return output_has_lines(o, pub_qos + 1); }, kWait));
          expected +=
              "qos/p" + q + " " + std::to_string(std::min(pub_qos, sub_qos)) + " 0 m" + q + "\n";
        }
        REQUIRE(sub.wait_exit(kWait));
        INFO(sub.describe());
        CHECK(sub.out() == expected);
      }
    }
  }
}

TEST_CASE("overlapping subscriptions deliver one copy (mosquitto_sub a/# and a/+)") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "overlap-" + suffix(v);
      // -C 2: with a duplicate the second line would be the first message again.
      BackgroundProcess sub(
          sub_argv(tb, v, {"-i", id, "-q", "1", "-t", "ov/#", "-t", "ov/+", "-v", "-C", "2"}));
      REQUIRE(wait_until(
          [&] {
            return has_subscription(tb.broker, id, "ov/#") &&
                   has_subscription(tb.broker, id, "ov/+");
          },
          kWait));
      REQUIRE(pub(tb, v, {"-q", "1", "-t", "ov/x", "-m", "first"}).ok());
      REQUIRE(pub(tb, v, {"-q", "1", "-t", "ov/y", "-m", "second"}).ok());
      REQUIRE(sub.wait_exit(kWait));
      INFO(sub.describe());
      CHECK(sub.out() == "ov/x first\nov/y second\n");
    }
  }
}

TEST_CASE("overlapping subscriptions deliver one copy at the highest granted QoS") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient sub(v);
      const std::string id = "ovq-" + suffix(v);
      REQUIRE(sub.open_and_connect(tb.port, make_connect(v, id)) == 0);
      mqtt::Subscription low;
      low.filter = "ovq/#";
      low.qos = 0;
      mqtt::Subscription high;
      high.filter = "ovq/+";
      high.qos = 2;
      const auto ack = sub.subscribe({low, high});
      REQUIRE(ack);
      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "ovq-pub-" + suffix(v))) == 0);
      for (std::uint8_t qos = 0; qos <= 2; ++qos) {
        CAPTURE(int{qos});
        const std::string payload = "p" + std::to_string(qos);
        pubc.publish(make_publish("ovq/t", payload, qos));
        REQUIRE(pubc.ping());  // routed before the subscriber's ping below is read
        const auto got = sub.ping();
        REQUIRE(got);
        INFO(brokerha::test::describe(*got));
        const auto pubs = brokerha::test::publishes(*got);
        REQUIRE(pubs.size() == 1);
        CHECK(pubs[0]->payload == payload);
        CHECK(int{pubs[0]->qos} == qos);  // max(min(qos, 0), min(qos, 2)) = qos
        if (!sub.acknowledge(*pubs[0])) FAIL("could not acknowledge: " << sub.error());
      }
    }
  }
}

TEST_CASE("'$' topics are not matched by '#' or '+' at the first level") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string wild = "dollar-wild-" + suffix(v);
      const std::string exact = "dollar-exact-" + suffix(v);
      BackgroundProcess all(
          sub_argv(tb, v, {"-i", wild, "-q", "1", "-t", "#", "-t", "+/bar", "-v", "-C", "1"}));
      BackgroundProcess dollar(
          sub_argv(tb, v, {"-i", exact, "-q", "1", "-t", "$foo/+", "-v", "-C", "1"}));
      REQUIRE(wait_until(
          [&] {
            return has_subscription(tb.broker, wild, "+/bar") &&
                   has_subscription(tb.broker, exact, "$foo/+");
          },
          kWait));
      REQUIRE(pub(tb, v, {"-q", "1", "-t", "$foo/bar", "-m", "dollar"}).ok());
      REQUIRE(pub(tb, v, {"-q", "1", "-t", "foo/bar", "-m", "plain"}).ok());
      REQUIRE(all.wait_exit(kWait));
      REQUIRE(dollar.wait_exit(kWait));
      INFO(all.describe());
      INFO(dollar.describe());
      CHECK(all.out() == "foo/bar plain\n");  // a copy of $foo/bar would have come first
      CHECK(dollar.out() == "$foo/bar dollar\n");
    }
  }
}

TEST_CASE("wildcard matching: '+' is one level, '#' includes the parent level") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  const ProtocolVersion v = ProtocolVersion::v311;
  BackgroundProcess sub(sub_argv(tb, v,
                                 {"-i", "wild", "-q", "1", "-t", "sport/+/player1", "-t", "fin/#",
                                  "-t", "+", "-v", "-C", "4"}));
  REQUIRE(wait_until([&] { return has_subscription(tb.broker, "wild", "+"); }, kWait));
  const std::vector<std::string> topics{
      "sport/tennis/player1",    // yes: sport/+/player1
      "sport/tennis/x/player1",  // no: + is exactly one level
      "sport/player1",           // no
      "fin",                     // yes: fin/# matches its parent
      "fin/a/b/c",               // yes
      "finance",                 // no for fin/#; but + matches it (one level)
      "/finance",                // no: two levels ("" and "finance")
  };
  for (const std::string& t : topics) REQUIRE(pub(tb, v, {"-q", "1", "-t", t, "-m", "x"}).ok());
  REQUIRE(sub.wait_exit(kWait));
  INFO(sub.describe());
  CHECK(sub.out() == "sport/tennis/player1 x\nfin x\nfin/a/b/c x\nfinance x\n");
}

TEST_CASE("retained messages: delivered on subscribe with RETAIN, replaced, deleted by -r -n") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string topic = "ret/" + suffix(v);
      const std::vector<std::string> read_one{"-t", topic, "-F", "%r %q %t %p",
                                              "-C", "1",   "-q", "1"};

      REQUIRE(pub(tb, v, {"-r", "-q", "1", "-t", topic, "-m", "first"}).ok());
      REQUIRE(tb.broker.retained(topic).size() == 1);
      CHECK(tb.broker.retained(topic)[0].payload == "first");
      ProcessResult r = sub_run(tb, v, read_one);
      INFO(r.describe());
      CHECK(r.ok());
      CHECK(r.out == "1 1 " + topic + " first\n");

      REQUIRE(pub(tb, v, {"-r", "-q", "2", "-t", topic, "-m", "second"}).ok());
      r = sub_run(tb, v, read_one);
      CHECK(r.out == "1 1 " + topic + " second\n");
      CHECK(tb.broker.retained(topic).size() == 1);

      // Deleted by an empty retained message; a later subscriber sees only a live message.
      REQUIRE(pub(tb, v, {"-r", "-q", "1", "-t", topic, "-n"}).ok());
      CHECK(tb.broker.retained(topic).empty());
      const std::string id = "ret-after-delete-" + suffix(v);
      BackgroundProcess sub(
          sub_argv(tb, v, {"-i", id, "-t", topic, "-F", "%r %t %p", "-C", "1", "-q", "1"}));
      REQUIRE(wait_until([&] { return has_subscription(tb.broker, id, topic); }, kWait));
      REQUIRE(pub(tb, v, {"-q", "1", "-t", topic, "-m", "live"}).ok());
      REQUIRE(sub.wait_exit(kWait));
      INFO(sub.describe());
      CHECK(sub.out() == "0 " + topic + " live\n");
    }
  }
}

TEST_CASE("a retained publish reaches existing subscribers with RETAIN clear") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "ret-live-" + suffix(v);
      const std::string topic = "retlive/" + suffix(v);
      BackgroundProcess sub(sub_argv(tb, v, {"-i", id, "-t", topic, "-F", "%r %p", "-C", "1"}));
      REQUIRE(wait_until([&] { return has_subscription(tb.broker, id, topic); }, kWait));
      REQUIRE(pub(tb, v, {"-r", "-q", "1", "-t", topic, "-m", "kept"}).ok());
      REQUIRE(sub.wait_exit(kWait));
      INFO(sub.describe());
      CHECK(sub.out() ==
            "0 kept\n");  // MQTT 3.3.1.3: RETAIN 0 when sent to an existing subscription
      CHECK(tb.broker.retained(topic).size() == 1);
    }
  }
}

TEST_CASE("the will is published when mosquitto_sub is killed with SIGKILL") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string will_topic = "will/" + suffix(v);
      MqttClient watcher(v);
      watch(watcher, tb, "will-watch-" + suffix(v), will_topic);
      const std::string id = "will-victim-" + suffix(v);
      BackgroundProcess victim(
          sub_argv(tb, v,
                   {"-i", id, "-t", "unrelated", "--will-topic", will_topic, "--will-payload",
                    "gone", "--will-qos", "1", "--will-retain"}));
      REQUIRE(wait_until([&] { return has_subscription(tb.broker, id, "unrelated"); }, kWait));
      // Nothing yet: the client is alive.
      const auto before = watcher.ping();
      REQUIRE(before);
      CHECK(brokerha::test::publishes(*before).empty());

      victim.kill(SIGKILL);
      const auto will = watcher.await<mqtt::Publish>(kWait);
      REQUIRE(will);
      const auto* p = will->as<mqtt::Publish>();
      CHECK(p->topic == will_topic);
      CHECK(p->payload == "gone");
      CHECK(int{p->qos} == 1);
      CHECK_FALSE(p->retain);  // live delivery to an existing subscription
      watcher.acknowledge(*p);
      const auto kept = tb.broker.retained(will_topic);
      REQUIRE(kept.size() == 1);  // --will-retain: the will is retained
      CHECK(kept[0].payload == "gone");
      CHECK(wait_until([&] { return !find_client(tb.broker, id); }, kWait));
    }
  }
}

TEST_CASE("the will is published when the TCP connection drops without DISCONNECT") {
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      for (bool with_reset : {false, true}) {
        CAPTURE(with_reset);
        MqttClient watcher(v);
        watch(watcher, tb, "drop-watch-" + suffix(v), "dropwill/#");
        MqttClient victim(v);
        const std::string id = "drop-victim-" + suffix(v);
        mqtt::Connect c = make_connect(v, id);
        mqtt::Will w;
        w.topic = "dropwill/t";
        w.payload = "lost";
        w.qos = 2;
        if (v == ProtocolVersion::v5) {
          w.properties.content_type = "text/plain";
          w.properties.user_properties.push_back({"k", "v"});
        }
        c.will = w;
        REQUIRE(victim.open_and_connect(tb.port, c) == 0);
        REQUIRE(victim.ping());  // connected and idle
        if (with_reset) {
          victim.reset();
        } else {
          victim.close();
        }
        const auto got = watcher.await<mqtt::Publish>(kWait);
        REQUIRE(got);
        const auto* p = got->as<mqtt::Publish>();
        CHECK(p->topic == "dropwill/t");
        CHECK(p->payload == "lost");
        CHECK(int{p->qos} == 2);
        if (v == ProtocolVersion::v5) {
          CHECK(p->properties.content_type.value_or("") == "text/plain");
          REQUIRE(p->properties.user_properties.size() == 1);
          CHECK(p->properties.user_properties[0].name == "k");
          CHECK(p->properties.user_properties[0].value == "v");
        }
        CHECK(watcher.acknowledge(*p));
      }
    }
  }
}

TEST_CASE("the will is not published after a clean DISCONNECT") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient watcher(v);
      watch(watcher, tb, "clean-watch-" + suffix(v), "cleanwill/#");
      const std::string id = "clean-pub-" + suffix(v);
      const ProcessResult r = pub(tb, v,
                                  {"-i", id, "-q", "1", "-t", "other", "-m", "x", "--will-topic",
                                   "cleanwill/t", "--will-payload", "should not appear"});
      INFO(r.describe());
      REQUIRE(r.ok());
      // The session ended with the DISCONNECT; a will would have been routed before that.
      REQUIRE(wait_until([&] { return !find_client(tb.broker, id); }, kWait));
      const auto got = watcher.ping();
      REQUIRE(got);
      INFO(brokerha::test::describe(*got));
      CHECK(brokerha::test::publishes(*got).empty());
    }
  }
}

TEST_CASE("persistent session (mosquitto_sub -c): QoS 1 and 2 published while offline arrive") {
  if (!have_mosquitto()) return;
  TestBroker tb;
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "persist-" + suffix(v);
      const std::string topic = "persist/" + suffix(v);
      // -E: subscribe, then disconnect cleanly once the SUBACK arrived.
      ProcessResult r = sub_run(tb, v, {"-c", "-i", id, "-q", "2", "-t", topic, "-E"});
      INFO(r.describe());
      REQUIRE(r.ok());
      REQUIRE(wait_until(
          [&] {
            const auto c = find_client(tb.broker, id);
            return c && !c->connected;
          },
          kWait));
      const auto offline = find_client(tb.broker, id);
      REQUIRE(offline);
      CHECK(offline->subscriptions.count(topic) == 1);
      CHECK_FALSE(offline->clean_session);

      REQUIRE(pub(tb, v, {"-q", "0", "-t", topic, "-m", "qos0 is not kept"}).ok());
      REQUIRE(pub(tb, v, {"-q", "1", "-t", topic, "-m", "one"}).ok());
      REQUIRE(pub(tb, v, {"-q", "2", "-t", topic, "-m", "two"}).ok());
      CHECK(wait_until([&] { return brokerha::test::pending_deliveries(tb.broker, id) == 2; },
                       kWait));

      r = sub_run(tb, v, {"-c", "-i", id, "-q", "2", "-t", topic, "-F", "%q %t %p", "-C", "2"});
      INFO(r.describe());
      CHECK(r.ok());
      CHECK(r.out == "1 " + topic + " one\n2 " + topic + " two\n");
      CHECK(wait_until([&] { return brokerha::test::pending_deliveries(tb.broker, id) == 0; },
                       kWait));
    }
  }
}
