// SPDX-License-Identifier: Apache-2.0
// Authentication and ACL hooks (docs/embedding.md) with real connections: a test AuthHook
// that refuses the username "mallory", a test AclHook that refuses publishing to secret/#,
// subscribing to private/# and receiving hidden/#, hook chaining, and hooks that answer
// later from another thread without disturbing packet order.

#include <brokerha/hooks.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/broker_process.hpp"
#include "support/required_tool.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::Access;
using brokerha::AclRequest;
using brokerha::AuthRequest;
using brokerha::Decision;
using brokerha::ReasonCode;
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

constexpr auto kWait = 5000ms;

std::string suffix(ProtocolVersion v) {
  return v == ProtocolVersion::v31 ? "31" : v == ProtocolVersion::v311 ? "311" : "5";
}

// `topic` is `prefix` or below it ("secret" and "secret/a" for "secret").
bool under(std::string_view topic, std::string_view prefix) {
  return topic == prefix ||
         (topic.size() > prefix.size() && topic.compare(0, prefix.size(), prefix) == 0 &&
          topic[prefix.size()] == '/');
}

// Runs functions on its own thread after a delay, as a hook that asks a remote service would
// answer. Tasks still pending at destruction are dropped.
class DelayedRunner {
 public:
  DelayedRunner() : thread_([this] { run(); }) {}
  ~DelayedRunner() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  DelayedRunner(const DelayedRunner&) = delete;
  DelayedRunner& operator=(const DelayedRunner&) = delete;

  void post_after(std::chrono::milliseconds delay, std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back({std::chrono::steady_clock::now() + delay, std::move(f)});
      ++pending_;
    }
    cv_.notify_all();
  }
  std::size_t pending() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return pending_;
  }
  std::size_t answered() const { return answered_.load(); }

 private:
  struct Task {
    std::chrono::steady_clock::time_point due;
    std::function<void()> f;
  };
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      if (tasks_.empty()) {
        cv_.wait(lock);
        continue;
      }
      // Tasks run in the order they were posted (each waits for its own time).
      const auto due = tasks_.front().due;
      if (std::chrono::steady_clock::now() < due) {
        cv_.wait_until(lock, due);
        continue;
      }
      Task t = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      t.f();
      ++answered_;
      lock.lock();
      --pending_;
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;
  std::size_t pending_ = 0;
  std::atomic<std::size_t> answered_{0};
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the rest is constructed
};

// Refuses the username "mallory"; defers on everything else.
class DenyMallory : public brokerha::AuthHook {
 public:
  void authenticate(const AuthRequest& r, std::function<void(Decision)> done) override {
    ++calls;
    done(r.username && *r.username == "mallory" ? Decision::deny : Decision::defer);
  }
  std::atomic<int> calls{0};
};

// Refuses publishing to secret/#, subscribing to private/#, receiving hidden/#.
class TestAcl : public brokerha::AclHook {
 public:
  void check(const AclRequest& r, std::function<void(Decision)> done) override {
    if (r.access == Access::write && under(r.topic, "secret")) return done(Decision::deny);
    if (r.access == Access::read && r.is_filter && under(r.topic, "private")) {
      return done(Decision::deny);
    }
    done(Decision::defer);
  }
  Decision check_delivery(const AclRequest& r) noexcept override {
    return under(r.topic, "hidden") ? Decision::deny : Decision::defer;
  }
};

// Answers authentication 50 ms later from the runner's thread; refuses "mallory".
struct SlowAuth : brokerha::AuthHook {
  explicit SlowAuth(std::shared_ptr<DelayedRunner> r) : runner(std::move(r)) {}
  void authenticate(const AuthRequest& r, std::function<void(Decision)> done) override {
    const bool deny = r.username && *r.username == "mallory";
    runner->post_after(50ms, [done, deny] { done(deny ? Decision::deny : Decision::allow); });
  }
  std::shared_ptr<DelayedRunner> runner;
};

// Answers PUBLISH/SUBSCRIBE checks 2 ms later from the runner's thread; refuses writing to
// secret/#.
struct SlowAcl : brokerha::AclHook {
  explicit SlowAcl(std::shared_ptr<DelayedRunner> r) : runner(std::move(r)) {}
  void check(const AclRequest& r, std::function<void(Decision)> done) override {
    const bool deny = r.access == Access::write && under(r.topic, "secret");
    runner->post_after(2ms, [done, deny] { done(deny ? Decision::deny : Decision::defer); });
  }
  Decision check_delivery(const AclRequest&) noexcept override { return Decision::defer; }
  std::shared_ptr<DelayedRunner> runner;
};

void add_test_hooks(brokerha::Broker& b) {
  b.add_auth_hook(std::make_shared<DenyMallory>());
  b.add_acl_hook(std::make_shared<TestAcl>());
}

std::string dump(const std::optional<std::vector<Received>>& packets) {
  return packets ? brokerha::test::describe(*packets) : std::string("<no PINGRESP>");
}

}  // namespace

TEST_CASE("auth hook: a refused client gets CONNACK 5 (MQTT 3) / 0x87 (MQTT 5.0)") {
  TestBroker tb({}, add_test_hooks);
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const auto failures = tb.broker.stats().auth_failures;
      MqttClient bad(v);
      const std::string id = "mallory-" + suffix(v);
      mqtt::Connect c = make_connect(v, id);
      c.username = "mallory";
      c.password = "secret";
      REQUIRE(bad.open(tb.port));
      const auto ack = bad.connect(c);
      REQUIRE(ack);
      const auto* connack = ack->as<mqtt::Connack>();
      CHECK(int{connack->code} == (v == ProtocolVersion::v5 ? 0x87 : 5));
      CHECK_FALSE(connack->session_present);
      CHECK(bad.wait_closed(kWait));
      CHECK(tb.broker.stats().auth_failures == failures + 1);
      CHECK_FALSE(brokerha::test::find_client(tb.broker, "mallory-" + suffix(v)));

      MqttClient good(v);
      c.client_id = "alice";
      c.username = "alice";
      CHECK(good.open_and_connect(tb.port, c) == 0);
    }
  }
}

TEST_CASE("auth hook: mosquitto_pub with a refused username fails") {
  if (brokerha::test::mosquitto_pub_path().empty()) {
    brokerha::test::tool_missing("mosquitto_pub (Debian mosquitto-clients)");
    return;
  }
  TestBroker tb({}, add_test_hooks);
  const auto r = brokerha::test::run_process(
      {brokerha::test::mosquitto_pub_path(), "-h", "127.0.0.1", "-p", tb.port_string(), "-u",
       "mallory", "-P", "pw", "-t", "t", "-m", "x"},
      5000ms);
  INFO(r.describe());
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("not authorised") != std::string::npos);
  CHECK(tb.broker.stats().auth_failures == 1);
}

TEST_CASE("ACL hook: a refused PUBLISH is acknowledged and dropped (MQTT 3), 0x87 (MQTT 5.0)") {
  TestBroker tb({}, add_test_hooks);
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient sub(v);
      REQUIRE(sub.open_and_connect(tb.port, make_connect(v, "acl-sub-" + suffix(v))) == 0);
      REQUIRE(sub.subscribe("#", 2));
      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "acl-pub-" + suffix(v))) == 0);
      const auto denials = tb.broker.stats().acl_denials;

      pubc.publish(make_publish("secret/a", "q0", 0));
      const auto ack1 = pubc.publish(make_publish("secret/a", "q1", 1));
      REQUIRE(ack1);  // v3: acknowledged although dropped; the client does not resend forever
      CHECK(static_cast<int>(ack1->as<mqtt::Puback>()->reason_code) ==
            (v == ProtocolVersion::v5 ? 0x87 : 0));
      const auto ack2 = pubc.publish(make_publish("secret", "q2", 2));
      REQUIRE(ack2);  // v3: PUBREC, then PUBREL / PUBCOMP completed by publish()
      CHECK(static_cast<int>(ack2->as<mqtt::Pubrec>()->reason_code) ==
            (v == ProtocolVersion::v5 ? 0x87 : 0));
      CHECK(pubc.error().empty());
      const auto ok = pubc.publish(make_publish("open/a", "allowed", 1));
      REQUIRE(ok);
      CHECK(static_cast<int>(ok->as<mqtt::Puback>()->reason_code) == 0);

      const auto got = sub.ping();
      INFO(dump(got));
      REQUIRE(got);
      const auto pubs = publishes(*got);
      REQUIRE(pubs.size() == 1);
      CHECK(pubs[0]->topic == "open/a");
      CHECK(tb.broker.stats().acl_denials == denials + 3);
      CHECK(brokerha::test::is_connected(tb.broker, "acl-pub-" + suffix(v)));  // not disconnected
    }
  }
}

TEST_CASE("ACL hook: a refused SUBSCRIBE gets 0x80 (MQTT 3) / 0x87 (MQTT 5.0)") {
  TestBroker tb({}, add_test_hooks);
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      const std::string id = "acl-subscriber-" + suffix(v);
      MqttClient sub(v);
      REQUIRE(sub.open_and_connect(tb.port, make_connect(v, id)) == 0);
      mqtt::Subscription denied;
      denied.filter = "private/#";
      denied.qos = 1;
      mqtt::Subscription granted;
      granted.filter = "open/#";
      granted.qos = 1;
      mqtt::Subscription denied2;
      denied2.filter = "private/x";
      denied2.qos = 2;
      const auto ack = sub.subscribe({denied, granted, denied2});
      REQUIRE(ack);
      const int refused = v == ProtocolVersion::v5 ? 0x87 : 0x80;
      std::vector<int> codes;
      for (ReasonCode c : ack->as<mqtt::Suback>()->reason_codes)
        codes.push_back(static_cast<int>(c));
      CHECK(codes == std::vector<int>{refused, 1, refused});
      const auto info = brokerha::test::find_client(tb.broker, id);
      REQUIRE(info);
      CHECK(info->subscriptions.size() == 1);
      CHECK(info->subscriptions.count("open/#") == 1);

      MqttClient pubc(v);
      REQUIRE(pubc.open_and_connect(tb.port, make_connect(v, "acl-sp-" + suffix(v))) == 0);
      REQUIRE(pubc.publish(make_publish("private/x", "no", 1)));
      REQUIRE(pubc.publish(make_publish("open/x", "yes", 1)));
      const auto got = sub.ping();
      INFO(dump(got));
      REQUIRE(got);
      const auto pubs = publishes(*got);
      REQUIRE(pubs.size() == 1);
      CHECK(pubs[0]->payload == "yes");
    }
  }
}

TEST_CASE("ACL hook: deliveries refused by check_delivery are not sent (live and retained)") {
  TestBroker tb({}, add_test_hooks);
  MqttClient pubc(ProtocolVersion::v311);
  REQUIRE(pubc.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "hid-pub")) == 0);
  REQUIRE(pubc.publish(make_publish("hidden/kept", "retained secret", 1, true)));
  REQUIRE(pubc.publish(make_publish("shown/kept", "retained public", 1, true)));
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient sub(v);
      REQUIRE(sub.open_and_connect(tb.port, make_connect(v, "hid-sub-" + suffix(v))) == 0);
      REQUIRE(sub.subscribe("#", 1));
      auto got = sub.ping();
      INFO(dump(got));
      REQUIRE(got);
      auto pubs = publishes(*got);
      REQUIRE(pubs.size() == 1);  // the retained messages it may see
      CHECK(pubs[0]->topic == "shown/kept");
      for (const auto* p : pubs) sub.acknowledge(*p);

      const auto denials = tb.broker.stats().acl_denials;
      REQUIRE(pubc.publish(make_publish("hidden/a", "no", 1)));
      REQUIRE(pubc.publish(make_publish("shown/a", "yes", 1)));
      got = sub.ping();
      INFO(dump(got));
      REQUIRE(got);
      pubs = publishes(*got);
      REQUIRE(pubs.size() == 1);
      CHECK(pubs[0]->topic == "shown/a");
      CHECK(tb.broker.stats().acl_denials == denials + 1);
    }
  }
}

TEST_CASE("ACL hook: a will to a topic the client may not publish to is not published") {
  // A will is a message the client publishes (late): the write check applies to it, or a
  // client could publish anywhere by setting a will and dropping its connection.
  TestBroker tb({}, add_test_hooks);
  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient sub(v);
      REQUIRE(sub.open_and_connect(tb.port, make_connect(v, "wacl-sub")) == 0);
      REQUIRE(sub.subscribe("#", 1));
      for (const char* topic : {"secret/will", "open/will"}) {
        CAPTURE(std::string(topic));
        MqttClient c(v);
        mqtt::Connect conn = make_connect(v, "wacl-client");
        mqtt::Will w;
        w.topic = topic;
        w.payload = "will";
        w.qos = 1;
        conn.will = w;
        REQUIRE(c.open_and_connect(tb.port, conn) == 0);
        c.close();
        REQUIRE(wait_until([&] { return !brokerha::test::find_client(tb.broker, "wacl-client"); },
                           kWait));
        const auto got = sub.ping();
        INFO(dump(got));
        REQUIRE(got);
        const auto pubs = publishes(*got);
        if (std::string_view(topic) == "secret/will") {
          CHECK(pubs.empty());
        } else {
          REQUIRE(pubs.size() == 1);
          CHECK(pubs[0]->topic == "open/will");
          sub.acknowledge(*pubs[0]);
        }
      }
    }
  }
}

TEST_CASE("hooks chain in registration order, the first answer that is not defer wins") {
  struct Vip : brokerha::AuthHook {
    void authenticate(const AuthRequest& r, std::function<void(Decision)> done) override {
      done(r.username && *r.username == "vip" ? Decision::allow : Decision::defer);
    }
  };
  struct DenyNamed : brokerha::AuthHook {
    void authenticate(const AuthRequest& r, std::function<void(Decision)> done) override {
      done(r.username ? Decision::deny : Decision::defer);
    }
  };
  TestBroker tb({}, [](brokerha::Broker& b) {
    b.add_auth_hook(std::make_shared<Vip>());
    b.add_auth_hook(std::make_shared<DenyNamed>());
  });
  const ProtocolVersion v = ProtocolVersion::v5;
  auto try_user = [&](const char* id, std::optional<std::string_view> user) {
    MqttClient c(v);
    mqtt::Connect conn = make_connect(v, id);
    conn.username = user;
    return c.open_and_connect(tb.port, conn);
  };
  CHECK(try_user("a", "vip") == 0);         // the first hook allows: the second cannot veto
  CHECK(try_user("b", "other") == 0x87);    // the first defers, the second denies
  CHECK(try_user("c", std::nullopt) == 0);  // everyone defers: the default (allow)
}

TEST_CASE(
    "asynchronous hooks keep packet order: 20 publishes right after CONNECT arrive in order") {
  // The auth hook answers after 50 ms from another thread; the ACL hook answers every
  // PUBLISH/SUBSCRIBE check a few milliseconds later from that thread too. The client
  // writes CONNECT, SUBSCRIBE and 20 PUBLISHes in one go, without waiting for anything.
  auto runner = std::make_shared<DelayedRunner>();
  TestBroker tb({}, [&](brokerha::Broker& b) {
    b.add_auth_hook(std::make_shared<SlowAuth>(runner));
    b.add_acl_hook(std::make_shared<SlowAcl>(runner));
  });

  for (ProtocolVersion v : kAllVersions) {
    SUBCASE(brokerha::test::version_name(v).c_str()) {
      MqttClient watcher(v);  // a second subscriber, on its own connection
      REQUIRE(watcher.open_and_connect(tb.port, make_connect(v, "order-watch-" + suffix(v))) == 0);
      REQUIRE(watcher.subscribe("order/#", 1));

      MqttClient c(v);
      REQUIRE(c.open(tb.port));
      std::string burst;
      const std::string id = "order-" + suffix(v);
      REQUIRE(mqtt::encode(make_connect(v, id), v, burst));
      mqtt::Subscribe s;
      s.packet_id = 1000;
      mqtt::Subscription sub;
      sub.filter = "order/#";
      sub.qos = 1;
      s.subscriptions.push_back(sub);
      REQUIRE(mqtt::encode(s, v, burst));
      std::vector<std::string> payloads;
      for (int i = 0; i < 20; ++i) payloads.push_back("m" + std::to_string(i));
      for (int i = 0; i < 20; ++i) {
        mqtt::Publish p =
            make_publish(i == 7 ? "secret/x" : "order/t", payloads[std::size_t(i)], 1);
        p.packet_id = static_cast<std::uint16_t>(i + 1);
        REQUIRE(mqtt::encode(p, v, burst));
      }
      REQUIRE(c.send_bytes(burst));

      // The connection's own packets: CONNACK first, then SUBACK, then the PUBACKs in order;
      // its own subscription delivers every allowed message in order.
      std::vector<std::string> order;
      std::vector<std::string> own;
      std::vector<int> acked;
      while (acked.size() < 20 || own.size() < 19) {
        const auto r = c.receive(kWait);
        if (!r) break;
        order.push_back(std::string(mqtt::packet_type_name(r->type())));
        if (const auto* a = r->as<mqtt::Puback>()) acked.push_back(a->packet_id);
        if (const auto* p = r->as<mqtt::Publish>()) {
          own.emplace_back(p->payload);
          c.acknowledge(*p);
        }
      }
      REQUIRE(order.size() >= 2);
      CHECK(order[0] == "CONNACK");
      CHECK(order[1] == "SUBACK");
      std::vector<int> expected_acks;
      std::vector<std::string> expected_payloads;
      for (int i = 0; i < 20; ++i) {
        expected_acks.push_back(i + 1);
        if (i != 7) expected_payloads.push_back(payloads[std::size_t(i)]);
      }
      CHECK(acked == expected_acks);
      CHECK(own == expected_payloads);

      std::vector<std::string> seen;
      while (seen.size() < 19) {
        const auto r = watcher.await<mqtt::Publish>(kWait);
        if (!r) break;
        seen.emplace_back(r->as<mqtt::Publish>()->payload);
        watcher.acknowledge(*r->as<mqtt::Publish>());
      }
      CHECK(seen == expected_payloads);
      c.disconnect();
    }
  }

  CHECK(wait_until([&] { return runner->pending() == 0; }, kWait));  // no answer still to come
}

TEST_CASE("asynchronous auth refusal: packets queued behind the CONNECT are never processed") {
  auto runner = std::make_shared<DelayedRunner>();
  TestBroker tb({}, [&](brokerha::Broker& b) {
    b.add_auth_hook(std::make_shared<SlowAuth>(runner));
    b.add_acl_hook(std::make_shared<SlowAcl>(runner));
  });
  MqttClient watcher(ProtocolVersion::v311);
  REQUIRE(watcher.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "bad-watch")) == 0);
  REQUIRE(watcher.subscribe("order/#", 1));
  MqttClient bad(ProtocolVersion::v311);
  REQUIRE(bad.open(tb.port));
  std::string burst;
  mqtt::Connect conn = make_connect(ProtocolVersion::v311, "order-bad");
  conn.username = "mallory";
  REQUIRE(mqtt::encode(conn, ProtocolVersion::v311, burst));
  REQUIRE(mqtt::encode(make_publish("order/t", "from mallory", 0), ProtocolVersion::v311, burst));
  REQUIRE(bad.send_bytes(burst));
  const auto closing = bad.wait_closed(kWait);
  REQUIRE(closing);
  INFO(brokerha::test::describe(*closing));
  REQUIRE(closing->size() == 1);
  CHECK(int{(*closing)[0].as<mqtt::Connack>()->code} == 5);
  const auto after = watcher.ping();
  INFO(dump(after));
  REQUIRE(after);
  CHECK(publishes(*after).empty());

  CHECK(wait_until([&] { return runner->pending() == 0; }, kWait));  // no answer still to come
}
