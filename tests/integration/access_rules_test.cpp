// SPDX-License-Identifier: Apache-2.0
// The built-in authentication and ACL rules (docs/access-rules.md) end to end: an in-process broker
// on 127.0.0.1 (port 0) configured with BrokerOptions::access / Broker::set_access_rules(), and
// real clients: mosquitto_pub / mosquitto_sub (Debian mosquitto-clients, -V mqttv311|mqttv5)
// and password files written by mosquitto_passwd (Debian mosquitto).
//
// The clients run with -d, so their output names the reason codes they received ("received
// CONNACK (135)", "received PUBACK (Mid: 1, RC:135)", "Subscribed (mid: 1): 128").
// "Nothing was delivered" is checked without sleeping: the subscriber waits for a fixed number
// of messages (-C), and an allowed sentinel message is published after the denied one; the
// broker keeps the order, so a leak shows up in the subscriber's output before the sentinel.
//
// A case is skipped (with a MESSAGE) only when a client program is not installed.

#include <brokerha/broker.hpp>
#include <brokerha/hooks.hpp>
#include <brokerha/options.hpp>

#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/child_process.hpp"
#include "support/required_tool.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::AccessRules;
using brokerha::AclRule;
using brokerha::AuthRule;
using brokerha::BrokerOptions;
using brokerha::test::ProcessResult;
using brokerha::test::TestBroker;
using brokerha::test::wait_until;

const char* const kPub = "/usr/bin/mosquitto_pub";
const char* const kSub = "/usr/bin/mosquitto_sub";
const char* const kPasswd = "/usr/bin/mosquitto_passwd";

constexpr auto kClientTimeout = 20s;  // a normal client run takes tens of milliseconds
constexpr auto kWait = 10s;           // bound of every poll for a broker-side condition

bool have(const char* program) {
  if (!brokerha::test::find_program(program).empty()) return true;
  brokerha::test::tool_missing(std::string(program) + " (Debian mosquitto-clients / mosquitto)");
  return false;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// One client's identity and protocol version.
struct Who {
  std::string version = "mqttv311";  // -V
  std::string client_id;             // -i ("" = the client's own)
  std::string username;              // -u ("" = none)
  std::string password;              // -P ("" = none)
};

std::vector<std::string> base_args(const char* program, std::uint16_t port, const Who& w) {
  std::vector<std::string> a{program, "-d",     "-h", "127.0.0.1", "-p", std::to_string(port),
                             "-V",    w.version};
  if (!w.client_id.empty()) a.insert(a.end(), {"-i", w.client_id});
  if (!w.username.empty()) a.insert(a.end(), {"-u", w.username});
  if (!w.password.empty()) a.insert(a.end(), {"-P", w.password});
  return a;
}

ProcessResult publish(std::uint16_t port, const Who& w, const std::string& topic,
                      const std::string& payload, int qos = 0, bool retain = false) {
  auto a = base_args(kPub, port, w);
  a.insert(a.end(), {"-t", topic, "-m", payload, "-q", std::to_string(qos)});
  if (retain) a.emplace_back("-r");
  return brokerha::test::run_process(a, kClientTimeout);
}

// A mosquitto_sub that prints "topic payload" lines and exits after `count` messages; it runs
// on another thread until then (or until its -W timeout).
struct Subscriber {
  std::future<ProcessResult> result;
  ProcessResult get() { return result.get(); }
};

Subscriber subscribe(std::uint16_t port, const Who& w, const std::vector<std::string>& filters,
                     int count, int qos = 1) {
  auto a = base_args(kSub, port, w);
  a.insert(a.end(), {"-v", "-C", std::to_string(count), "-W", "30", "-q", std::to_string(qos)});
  for (const std::string& f : filters) a.insert(a.end(), {"-t", f});
  Subscriber s;
  s.result = std::async(std::launch::async, [a] {
    return brokerha::test::run_process(a, std::chrono::milliseconds(40'000));
  });
  return s;
}

// The "topic payload" lines mosquitto_sub -v -d printed (the debug lines start "Client ").
std::vector<std::string> messages(const ProcessResult& r) {
  std::vector<std::string> out;
  for (const std::string& line : brokerha::test::split_lines(r.out)) {
    if (line.rfind("Client ", 0) == 0 || line.rfind("Subscribed (", 0) == 0) continue;
    out.push_back(line);
  }
  return out;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const std::string& l : lines) s += l + "\n";
  return s;
}

// Waits until `id` is connected with a subscription to every filter in `filters`.
bool subscribed(const brokerha::Broker& b, const std::string& id,
                const std::vector<std::string>& filters) {
  return wait_until(
      [&] {
        const auto c = brokerha::test::find_client(b, id);
        if (!c || !c->connected) return false;
        for (const std::string& f : filters) {
          if (c->subscriptions.count(f) == 0) return false;
        }
        return true;
      },
      kWait);
}

BrokerOptions with_access(AccessRules rules) {
  BrokerOptions o;
  o.access = std::move(rules);
  o.sys_interval = std::chrono::milliseconds(0);
  return o;
}

AuthRule auth_rule(bool allow) {
  AuthRule r;
  r.allow = allow;
  return r;
}

AclRule acl_rule(std::vector<std::pair<std::string, int>> filters) {
  AclRule r;
  r.filters = std::move(filters);
  return r;
}

// A temporary directory, removed with its files at the end of the scope.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/brokerha-access-it-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    for (const std::string& f : files_) ::unlink(f.c_str());
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  bool ok() const { return !path_.empty(); }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

// Writes `users` (name, password) with mosquitto_passwd -c -b / -b.
void make_password_file(const std::string& file,
                        const std::vector<std::pair<std::string, std::string>>& users) {
  bool first = true;
  for (const auto& [user, password] : users) {
    std::vector<std::string> argv{kPasswd};
    if (first) argv.emplace_back("-c");
    argv.insert(argv.end(), {"-b", file, user, password});
    const ProcessResult r = brokerha::test::run_process(argv, kClientTimeout);
    INFO(r.describe());
    REQUIRE(r.ok());
    first = false;
  }
  std::ifstream in(file);
  std::string line;
  REQUIRE(std::getline(in, line));
  REQUIRE(contains(line, ":$7$"));
}

// Connection refused with a CONNACK code (the -d line and mosquitto_pub's message).
void check_refused(const ProcessResult& r, int connack_code, std::string_view text) {
  INFO(r.describe());
  CHECK(r.started);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code != 0);
  CHECK(contains(r.out, "received CONNACK (" + std::to_string(connack_code) + ")"));
  CHECK(contains(r.err, text));
  CHECK_FALSE(contains(r.out, "sending PUBLISH"));
}

void check_published(const ProcessResult& r) {
  INFO(r.describe());
  CHECK(r.ok());
  CHECK(contains(r.out, "received CONNACK (0)"));
  CHECK(contains(r.out, "sending PUBLISH"));
  CHECK_FALSE(contains(r.err, "failed"));
}

// Records deliveries and disconnects (on the broker's I/O threads).
class Recorder : public brokerha::EventHook {
 public:
  void on_deliver(const brokerha::MessageEvent& e) override {
    std::lock_guard<std::mutex> lock(mutex_);
    deliveries_.push_back(std::string(e.client_id) + " " + std::string(e.topic));
  }
  void on_disconnect(const brokerha::ClientEvent& e) override {
    std::lock_guard<std::mutex> lock(mutex_);
    disconnects_.emplace_back(e.client_id);
  }
  bool delivered(const std::string& client, const std::string& topic) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const std::string& d : deliveries_) {
      if (d == client + " " + topic) return true;
    }
    return false;
  }
  std::size_t disconnects_of(const std::string& client) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t n = 0;
    for (const std::string& d : disconnects_) n += d == client ? 1 : 0;
    return n;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> deliveries_;
  std::vector<std::string> disconnects_;
};

}  // namespace

// ---- authentication ----------------------------------------------------------------------------

TEST_CASE("access rules: auth rules allow and deny (CONNACK 5 / 0x87)") {
  if (!have(kPub)) return;
  AuthRule deny_blocked = auth_rule(false);
  deny_blocked.username = "blocked";
  AuthRule devices = auth_rule(true);
  devices.client = "dev-*";
  AuthRule with_password = auth_rule(true);
  with_password.username = "pwuser";
  with_password.password = "let-me-in";
  AccessRules rules;
  rules.auth = {deny_blocked, devices, with_password};
  TestBroker tb(with_access(rules));
  const std::uint16_t port = tb.port;

  for (const char* version : {"mqttv311", "mqttv5"}) {
    INFO("version: " << std::string(version));
    const bool v5 = std::string(version) == "mqttv5";
    const int not_authorized = v5 ? 0x87 : 5;
    const char* text = v5 ? "Not authorized" : "not authorised";

    check_published(publish(port, {version, "dev-1", "", ""}, "a", "x"));
    check_published(publish(port, {version, "dev-2", "someone", "pw"}, "a", "x"));
    check_published(publish(port, {version, "other", "pwuser", "let-me-in"}, "a", "x"));
    // The first rule decides: "blocked" is refused although its client id is a dev-*.
    check_refused(publish(port, {version, "dev-3", "blocked", ""}, "a", "x"), not_authorized, text);
    // No rule matches.
    check_refused(publish(port, {version, "other", "", ""}, "a", "x"), not_authorized, text);
    check_refused(publish(port, {version, "other", "pwuser", "wrong"}, "a", "x"), not_authorized,
                  text);
    check_refused(publish(port, {version, "other", "pwuser", ""}, "a", "x"), not_authorized, text);
  }
  CHECK(tb.broker.stats().auth_failures == 8);
}

TEST_CASE("access rules: the broker-ha README rule `remote: 127.0.0.1` admits loopback clients") {
  if (!have(kPub)) return;
  for (const char* remote : {"127.0.0.1", "127.0.0.0/8", "127.0.0.1:*"}) {
    INFO("remote: " << std::string(remote));
    AuthRule local = auth_rule(true);
    local.remote = remote;
    AccessRules rules;
    rules.auth = {local};
    TestBroker tb(with_access(rules));
    check_published(publish(tb.port, {"mqttv311", "local-1", "", ""}, "a", "x"));
    check_published(publish(tb.port, {"mqttv5", "local-2", "u", "p"}, "a", "x"));
    CHECK(tb.broker.stats().auth_failures == 0);
  }
  // A rule for another network does not admit them.
  AuthRule lan = auth_rule(true);
  lan.remote = "10.0.0.0/8";
  AccessRules rules;
  rules.auth = {lan};
  TestBroker tb(with_access(rules));
  check_refused(publish(tb.port, {"mqttv311", "local-3", "", ""}, "a", "x"), 5, "not authorised");
  check_refused(publish(tb.port, {"mqttv5", "local-4", "", ""}, "a", "x"), 0x87, "Not authorized");
}

TEST_CASE("access rules: `remote` matches an IPv6 loopback peer") {
  if (!have(kPub)) return;
  AuthRule v6 = auth_rule(true);
  v6.remote = "::1";
  AccessRules rules;
  rules.auth = {v6};
  BrokerOptions o = with_access(rules);
  o.listeners.push_back({"::1", 0});
  o.io_threads = 2;
  auto broker = std::make_unique<brokerha::Broker>(o);
  std::error_code ec;
  broker->start(ec);
  if (ec) {
    MESSAGE("skipped: cannot listen on ::1: " << ec.message());
    return;
  }
  const std::string port = std::to_string(broker->listen_endpoints().at(0).port);
  auto pub6 = [&](const std::string& id) {
    return brokerha::test::run_process(
        {kPub, "-d", "-h", "::1", "-p", port, "-V", "mqttv5", "-i", id, "-t", "a", "-m", "x"},
        kClientTimeout);
  };
  check_published(pub6("six-1"));

  AuthRule v6net = auth_rule(true);
  v6net.remote = "::1/128";
  rules.auth = {v6net};
  broker->set_access_rules(rules);
  check_published(pub6("six-2"));

  AuthRule v4 = auth_rule(true);
  v4.remote = "127.0.0.0/8";
  rules.auth = {v4};
  broker->set_access_rules(rules);
  check_refused(pub6("six-3"), 0x87, "Not authorized");
  brokerha::test::BackgroundStopper::instance().stop(std::move(broker));
}

TEST_CASE("access rules: password_file from mosquitto_passwd (0x86 Bad user name or password)") {
  if (!have(kPub) || !have(kPasswd)) return;
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string file = dir.file("passwd");
  make_password_file(file, {{"alice", "wonder land"}, {"bob", "b0b:pw"}});
  AccessRules rules;
  rules.password_file = file;
  TestBroker tb(with_access(rules));
  const std::uint16_t port = tb.port;

  for (const char* version : {"mqttv311", "mqttv5"}) {
    INFO("version: " << std::string(version));
    const bool v5 = std::string(version) == "mqttv5";
    check_published(publish(port, {version, "pa-1", "alice", "wonder land"}, "a", "x"));
    check_published(publish(port, {version, "pa-2", "bob", "b0b:pw"}, "a", "x"));
    // Wrong or missing password of a listed user.
    check_refused(publish(port, {version, "pa-3", "alice", "wonderland"}, "a", "x"), v5 ? 0x86 : 4,
                  v5 ? "Bad User Name or Password" : "bad user name or password");
    check_refused(publish(port, {version, "pa-4", "alice", "b0b:pw"}, "a", "x"), v5 ? 0x86 : 4,
                  v5 ? "Bad User Name or Password" : "bad user name or password");
    check_refused(publish(port, {version, "pa-5", "bob", ""}, "a", "x"), v5 ? 0x86 : 4,
                  v5 ? "Bad User Name or Password" : "bad user name or password");
    // Not listed, and anonymous: no auth rules, so only listed users may connect.
    check_refused(publish(port, {version, "pa-6", "carol", "wonder land"}, "a", "x"), v5 ? 0x87 : 5,
                  v5 ? "Not authorized" : "not authorised");
    check_refused(publish(port, {version, "pa-7", "", ""}, "a", "x"), v5 ? 0x87 : 5,
                  v5 ? "Not authorized" : "not authorised");
  }
  CHECK(tb.broker.stats().auth_failures == 10);
}

// ---- ACL ---------------------------------------------------------------------------------------

TEST_CASE("access rules: a denied PUBLISH from MQTT 3.1.1 is acknowledged and dropped") {
  if (!have(kPub) || !have(kSub)) return;
  AccessRules rules;
  rules.acl_default_allow = false;
  rules.acl = {acl_rule({{"ro/#", 1}, {"ok/#", 3}})};
  TestBroker tb(with_access(rules));
  const std::uint16_t port = tb.port;

  Subscriber sub = subscribe(port, {"mqttv311", "watcher", "", ""}, {"ro/#", "ok/#"}, 1);
  REQUIRE(subscribed(tb.broker, "watcher", {"ro/#", "ok/#"}));
  const auto before = tb.broker.stats();

  for (int qos : {0, 1, 2}) {
    CAPTURE(qos);
    const ProcessResult denied =
        publish(port, {"mqttv311", "writer", "", ""}, "ro/x", "denied-" + std::to_string(qos), qos);
    INFO(denied.describe());
    CHECK(denied.ok());  // no error for the client
    CHECK(contains(denied.out, "sending PUBLISH"));
    if (qos == 1) CHECK(contains(denied.out, "received PUBACK (Mid: 1, RC:0)"));
    if (qos == 2) CHECK(contains(denied.out, "received PUBCOMP"));
    CHECK(denied.err.empty());
  }
  check_published(publish(port, {"mqttv311", "writer", "", ""}, "ok/sentinel", "after", 1));

  const ProcessResult got = sub.get();
  INFO(got.describe());
  CHECK(got.ok());
  CHECK(joined(messages(got)) == "ok/sentinel after\n");
  const auto after = tb.broker.stats();
  CHECK(after.acl_denials == before.acl_denials + 3);
  CHECK(after.messages_received == before.messages_received + 4);
}

TEST_CASE("access rules: a denied PUBLISH from MQTT 5.0 gets 0x87") {
  if (!have(kPub) || !have(kSub)) return;
  AccessRules rules;
  rules.acl_default_allow = false;
  rules.acl = {acl_rule({{"ro/#", 1}, {"ok/#", 3}})};
  TestBroker tb(with_access(rules));
  const std::uint16_t port = tb.port;

  Subscriber sub = subscribe(port, {"mqttv5", "watcher5", "", ""}, {"ro/#", "ok/#"}, 1);
  REQUIRE(subscribed(tb.broker, "watcher5", {"ro/#", "ok/#"}));
  const auto before = tb.broker.stats();

  const ProcessResult q1 = publish(port, {"mqttv5", "writer5", "", ""}, "ro/x", "denied", 1);
  {
    INFO(q1.describe());
    CHECK(q1.started);
    CHECK_FALSE(q1.timed_out);
    CHECK(contains(q1.out, "received PUBACK (Mid: 1, RC:135)"));
    CHECK(contains(q1.err, "Publish 1 failed: Not authorized"));
  }
  const ProcessResult q2 = publish(port, {"mqttv5", "writer5", "", ""}, "ro/y", "denied", 2);
  {
    INFO(q2.describe());
    CHECK_FALSE(q2.timed_out);
    CHECK(contains(q2.out, "received PUBREC"));
    CHECK_FALSE(contains(q2.out, "sending PUBREL"));  // a PUBREC >= 0x80 ends the exchange
    CHECK(contains(q2.err, "Publish 1 failed: Not authorized"));
  }
  const ProcessResult q0 = publish(port, {"mqttv5", "writer5", "", ""}, "ro/z", "denied", 0);
  {
    INFO(q0.describe());
    CHECK(q0.ok());
  }
  const ProcessResult ok = publish(port, {"mqttv5", "writer5", "", ""}, "ok/sentinel", "after", 1);
  check_published(ok);
  CHECK(contains(ok.out, "received PUBACK (Mid: 1, RC:0)"));

  const ProcessResult got = sub.get();
  INFO(got.describe());
  CHECK(got.ok());
  CHECK(joined(messages(got)) == "ok/sentinel after\n");
  CHECK(tb.broker.stats().acl_denials == before.acl_denials + 3);
}

TEST_CASE("access rules: a denied SUBSCRIBE gets SUBACK 0x80 (3.1.1) / 0x87 (5.0)") {
  if (!have(kPub) || !have(kSub)) return;
  AccessRules rules;
  rules.acl_default_allow = true;
  AclRule publisher = acl_rule({{"#", 3}});
  publisher.client = "pub";
  rules.acl = {publisher, acl_rule({{"nope/#", 0}, {"wo/#", 2}})};
  TestBroker tb(with_access(rules));
  const std::uint16_t port = tb.port;

  for (const char* version : {"mqttv311", "mqttv5"}) {
    INFO("version: " << std::string(version));
    const bool v5 = std::string(version) == "mqttv5";
    const std::string code = v5 ? "135" : "128";
    const std::string id = std::string("sub-") + version;

    // Every filter denied: mosquitto_sub reports it and gives up.
    const auto before = tb.broker.stats().acl_denials;
    auto all = subscribe(port, {version, id, "", ""}, {"nope/#", "wo/x"}, 1).get();
    {
      INFO(all.describe());
      CHECK_FALSE(all.timed_out);
      CHECK(contains(all.out, "Subscribed (mid: 1): " + code + ", " + code));
      CHECK(contains(all.err, "All subscription requests were denied"));
      CHECK(messages(all).empty());
    }
    CHECK(tb.broker.stats().acl_denials == before + 2);

    // One denied, one granted: only the granted one is in the session.
    Subscriber mixed = subscribe(port, {version, id, "", ""}, {"nope/x", "ok/#"}, 1);
    REQUIRE(subscribed(tb.broker, id, {"ok/#"}));
    const auto c = brokerha::test::find_client(tb.broker, id);
    REQUIRE(c);
    CHECK(c->subscriptions.count("nope/x") == 0);
    CHECK(c->subscriptions.size() == 1);
    check_published(publish(port, {version, "pub", "", ""}, "nope/x", "hidden", 1));
    check_published(publish(port, {version, "pub", "", ""}, "ok/1", "shown", 1));
    const ProcessResult got = mixed.get();
    INFO(got.describe());
    CHECK(contains(got.out, "Subscribed (mid: 1): " + code + ", 1"));
    CHECK(joined(messages(got)) == "ok/1 shown\n");
  }
}

TEST_CASE("access rules: the read check on delivery (live and retained)") {
  if (!have(kPub) || !have(kSub)) return;
  AclRule hide = acl_rule({{"hidden/#", 0}});
  hide.username = "reader";
  AclRule read_all = acl_rule({{"#", 1}});
  read_all.username = "reader";
  AclRule others = acl_rule({{"#", 3}});
  AccessRules rules;
  rules.acl_default_allow = false;
  rules.acl = {hide, read_all, others};
  TestBroker tb(with_access(rules));
  const std::uint16_t port = tb.port;
  const Who writer{"mqttv311", "writer", "writer", ""};

  check_published(publish(port, writer, "hidden/r", "retained-hidden", 1, true));
  check_published(publish(port, writer, "ok/r", "retained-ok", 1, true));
  REQUIRE(wait_until([&] { return tb.broker.retained().size() == 2; }, kWait));

  for (const char* version : {"mqttv311", "mqttv5"}) {
    INFO("version: " << std::string(version));
    const std::string id = std::string("reader-") + version;
    const auto before = tb.broker.stats().acl_denials;
    // Subscribing to "#" is allowed (a rule "hidden/#" does not cover "#").
    Subscriber sub = subscribe(port, {version, id, "reader", ""}, {"#"}, 2);
    REQUIRE(subscribed(tb.broker, id, {"#"}));
    check_published(publish(port, writer, "hidden/x", "live-hidden", 1));
    check_published(publish(port, writer, "ok/x", "live-ok", 1));
    const ProcessResult got = sub.get();
    INFO(got.describe());
    CHECK(got.ok());
    CHECK(joined(messages(got)) == "ok/r retained-ok\nok/x live-ok\n");
    CHECK(tb.broker.stats().acl_denials >= before + 1);  // live hidden/x at least
  }
}

TEST_CASE("access rules: ACL rules apply to anonymous clients (empty auth rules)") {
  if (!have(kPub) || !have(kSub)) return;
  AccessRules rules;
  rules.acl_default_allow = false;
  rules.acl = {acl_rule({{"public/#", 3}})};
  TestBroker tb(with_access(rules));
  const std::uint16_t port = tb.port;

  const ProcessResult denied = publish(port, {"mqttv5", "anon-1", "", ""}, "private/x", "x", 1);
  {
    INFO(denied.describe());
    CHECK(contains(denied.out, "received CONNACK (0)"));
    CHECK(contains(denied.out, "RC:135"));
    CHECK(contains(denied.err, "Not authorized"));
  }
  const ProcessResult allowed = publish(port, {"mqttv5", "anon-1", "", ""}, "public/x", "x", 1);
  check_published(allowed);
  CHECK_FALSE(contains(allowed.out, "RC:135"));

  const ProcessResult sub311 =
      subscribe(port, {"mqttv311", "anon-2", "", ""}, {"private/#"}, 1).get();
  {
    INFO(sub311.describe());
    CHECK(contains(sub311.out, "Subscribed (mid: 1): 128"));
  }
  const ProcessResult sub5 = subscribe(port, {"mqttv5", "anon-3", "", ""}, {"private/#"}, 1).get();
  {
    INFO(sub5.describe());
    CHECK(contains(sub5.out, "Subscribed (mid: 1): 135"));
  }
  CHECK(tb.broker.stats().auth_failures == 0);
  CHECK(tb.broker.stats().acl_denials == 3);
}

// ---- reload ------------------------------------------------------------------------------------

TEST_CASE("access rules: set_access_rules() applies to the next publish and delivery") {
  if (!have(kPub) || !have(kSub)) return;
  auto recorder = std::make_shared<Recorder>();
  AccessRules open;  // everything allowed
  TestBroker tb(with_access(open), [&](brokerha::Broker& b) { b.add_event_hook(recorder); });
  const std::uint16_t port = tb.port;
  const Who pubber{"mqttv5", "pubber", "", ""};

  Subscriber sub = subscribe(port, {"mqttv311", "keeper", "", ""}, {"t/#"}, 2);
  REQUIRE(subscribed(tb.broker, "keeper", {"t/#"}));
  check_published(publish(port, pubber, "t/secret/1", "before", 1));
  REQUIRE(wait_until([&] { return recorder->delivered("keeper", "t/secret/1"); }, kWait));
  const auto connections = tb.broker.stats().connections_total;

  AclRule keeper = acl_rule({{"t/secret/#", 0}});
  keeper.client = "keeper";
  AclRule pub_rule = acl_rule({{"t/blocked", 0}});
  pub_rule.client = "pubber";
  AclRule everyone = acl_rule({{"#", 3}});
  AccessRules reloaded;
  reloaded.acl = {keeper, pub_rule, everyone};
  reloaded.acl_default_allow = false;
  REQUIRE_NOTHROW(tb.broker.set_access_rules(reloaded));

  // The subscriber stays connected.
  CHECK(brokerha::test::is_connected(tb.broker, "keeper"));
  CHECK(recorder->disconnects_of("keeper") == 0);

  const ProcessResult blocked = publish(port, pubber, "t/blocked", "denied", 1);
  {
    INFO(blocked.describe());
    CHECK(contains(blocked.out, "RC:135"));
  }
  check_published(publish(port, pubber, "t/secret/2", "after", 1));  // write ok, read denied
  CHECK(brokerha::test::is_connected(tb.broker, "keeper"));
  CHECK(recorder->disconnects_of("keeper") == 0);
  check_published(publish(port, pubber, "t/open", "after", 1));

  const ProcessResult got = sub.get();
  INFO(got.describe());
  CHECK(got.ok());
  CHECK(joined(messages(got)) == "t/secret/1 before\nt/open after\n");
  CHECK_FALSE(recorder->delivered("keeper", "t/secret/2"));
  CHECK_FALSE(recorder->delivered("keeper", "t/blocked"));
  // The same subscriber connection all along: only the three publishers connected since.
  CHECK(tb.broker.stats().connections_total == connections + 3);
  // Its own DISCONNECT at the end is its only one.
  CHECK(wait_until([&] { return recorder->disconnects_of("keeper") == 1; }, kWait));
}

TEST_CASE("access rules: set_access_rules() applies to the next CONNECT") {
  if (!have(kPub)) return;
  TestBroker tb(with_access(AccessRules{}));
  check_published(publish(tb.port, {"mqttv5", "c-1", "", ""}, "a", "x"));

  AuthRule only_alice = auth_rule(true);
  only_alice.username = "alice";
  AccessRules rules;
  rules.auth = {only_alice};
  tb.broker.set_access_rules(rules);
  check_refused(publish(tb.port, {"mqttv5", "c-2", "", ""}, "a", "x"), 0x87, "Not authorized");
  check_published(publish(tb.port, {"mqttv5", "c-3", "alice", ""}, "a", "x"));

  tb.broker.set_access_rules(AccessRules{});
  check_published(publish(tb.port, {"mqttv5", "c-4", "", ""}, "a", "x"));
}

TEST_CASE("access rules: set_access_rules() with a bad password file throws, old rules stay") {
  if (!have(kPub)) return;
  TempDir dir;
  REQUIRE(dir.ok());
  AuthRule only_alice = auth_rule(true);
  only_alice.username = "alice";
  AccessRules old_rules;
  old_rules.auth = {only_alice};
  old_rules.acl = {acl_rule({{"x/#", 0}})};
  TestBroker tb(with_access(old_rules));
  const std::uint16_t port = tb.port;

  auto check_old_rules = [&] {
    check_refused(publish(port, {"mqttv5", "o-1", "bob", ""}, "a", "x"), 0x87, "Not authorized");
    check_published(publish(port, {"mqttv5", "o-2", "alice", ""}, "a", "x"));
    const ProcessResult denied = publish(port, {"mqttv5", "o-3", "alice", ""}, "x/y", "x", 1);
    INFO(denied.describe());
    CHECK(contains(denied.out, "RC:135"));
  };
  check_old_rules();

  AccessRules everyone;
  everyone.auth = {auth_rule(true)};
  everyone.password_file = dir.file("does-not-exist");
  try {
    tb.broker.set_access_rules(everyone);
    FAIL("set_access_rules() accepted a missing password file");
  } catch (const std::runtime_error& e) {
    CHECK(contains(e.what(), everyone.password_file));
  }
  check_old_rules();

  everyone.password_file = dir.file("bad");
  {
    std::ofstream out(everyone.password_file);
    out << "# users\nalice:plaintext\n";
  }
  try {
    tb.broker.set_access_rules(everyone);
    FAIL("set_access_rules() accepted a password file with a plaintext password");
  } catch (const std::runtime_error& e) {
    CHECK(contains(e.what(), everyone.password_file));
    CHECK(contains(e.what(), "line 2"));
  }
  check_old_rules();

  // A good reload still works afterwards.
  everyone.password_file.clear();
  REQUIRE_NOTHROW(tb.broker.set_access_rules(everyone));
  check_published(publish(port, {"mqttv5", "o-4", "bob", ""}, "x/y", "x", 1));
}
