// SPDX-License-Identifier: Apache-2.0
// The cluster as a user runs it: real brokerha-server processes that find each other through
// DNS SRV (a DNS server the test starts: tests/support/dns_server.py), real MQTT clients, the
// HTTP API, and kill -9 of a node. Also runs scripts/local-cluster.sh --check, the one-command
// local cluster of the README. Bounded waits, no timing assertions.

#include <arpa/inet.h>
#include <dirent.h>
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/broker_process.hpp"
#include "support/child_process.hpp"
#include "support/required_tool.hpp"
#include "support/server_cluster.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::test::free_port;
using brokerha::test::make_connect;
using brokerha::test::make_publish;
using brokerha::test::MqttClient;
using brokerha::test::ServerCluster;
using brokerha::test::wait_until;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;

const char* const kServer = BROKERHA_SERVER_PATH;
const std::string kDomain = brokerha::test::kClusterDomain;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// Descriptors the process `pid` holds open.
std::size_t open_fds(pid_t pid) {
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return 0;
  std::size_t n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

/// A TCP connection to `address`:`port` that sends `first` and then nothing; -1 on failure.
int raw_stream(const std::string& address, std::uint16_t port, char first) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &a.sin_addr);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 ||
      ::send(fd, &first, 1, MSG_NOSIGNAL) != 1) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TEST_CASE("cluster server: three processes found through DNS SRV form a cluster and route") {
  ServerCluster c(3);
  for (std::size_t i = 0; i < 3; ++i) c.start(i);
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return c.all_see(3, {0, 1, 2});
                      },
                      30s),
                  c.nodes[0]->process.describe());
  REQUIRE(wait_until(
      [&] {
        for (const auto& n : c.nodes) {
          if (n->get("/ready") != 200) return false;
        }
        return true;
      },
      15s));
  CHECK(c.dns->count_queries("", "SRV", kDomain) >= 3);

  MqttClient s2(ProtocolVersion::v5), s3(ProtocolVersion::v311), p1(ProtocolVersion::v5);
  REQUIRE(s2.open_and_connect(c.nodes[1]->mqtt_port, make_connect(ProtocolVersion::v5, "s2")) == 0);
  REQUIRE(s3.open_and_connect(c.nodes[2]->mqtt_port, make_connect(ProtocolVersion::v311, "s3")) ==
          0);
  REQUIRE(p1.open_and_connect(c.nodes[0]->mqtt_port, make_connect(ProtocolVersion::v5, "p1")) == 0);
  REQUIRE(s2.subscribe("proc/#", 1));
  REQUIRE(s3.subscribe("proc/#", 1));
  p1.publish(make_publish("proc/a", "hello", 1));
  for (MqttClient* s : {&s2, &s3}) {
    auto r = s->await<mqtt::Publish>(10s);
    REQUIRE(r);
    CHECK(r->as<mqtt::Publish>()->payload == "hello");
    s->acknowledge(*r->as<mqtt::Publish>());
  }

  // /metrics carries the cluster series, /proxy answers for every node.
  std::string metrics;
  REQUIRE(c.nodes[0]->get("/metrics", &metrics) == 200);
  CHECK(contains(metrics, "broker_cluster_members 3"));
  CHECK(contains(metrics, "broker_cluster_link_up{peer=\"node2\"} 1"));
  CHECK(contains(metrics, "broker_cluster_messages_forwarded_total 2"));
  std::string proxy;
  REQUIRE(c.nodes[1]->get("/proxy/api/mqtt/clients", &proxy) == 200);
  for (const char* name : {"\"node1\"", "\"node2\"", "\"node3\""}) CHECK(contains(proxy, name));
  CHECK(contains(proxy, "\"p1\""));
  CHECK(contains(proxy, "\"s3\""));
}

TEST_CASE("cluster server: kill -9 of one node leaves the others ready and routing") {
  ServerCluster c(3);
  for (std::size_t i = 0; i < 3; ++i) c.start(i);
  REQUIRE(wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 30s));
  MqttClient p1(ProtocolVersion::v5), s2(ProtocolVersion::v5);
  REQUIRE(p1.open_and_connect(c.nodes[0]->mqtt_port, make_connect(ProtocolVersion::v5, "p1")) == 0);
  REQUIRE(s2.open_and_connect(c.nodes[1]->mqtt_port, make_connect(ProtocolVersion::v5, "s2")) == 0);
  REQUIRE(s2.subscribe("after/#", 1));

  c.nodes[2]->process.kill(SIGKILL);
  REQUIRE(wait_until([&] { return c.all_see(2, {0, 1}); }, 30s));
  // One dead peer does not make the survivors unready.
  CHECK(c.nodes[0]->get("/ready") == 200);
  CHECK(c.nodes[1]->get("/ready") == 200);
  p1.publish(make_publish("after/kill", "still here", 1));
  auto r = s2.await<mqtt::Publish>(10s);
  REQUIRE(r);
  CHECK(r->as<mqtt::Publish>()->payload == "still here");
  s2.acknowledge(*r->as<mqtt::Publish>());

  // The killed node restarts with the same name and address and rejoins.
  c.start(2);
  REQUIRE(wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 40s));
}

TEST_CASE("cluster server: a shared group with members on two processes gets each message once") {
  ServerCluster c(3);
  for (std::size_t i = 0; i < 3; ++i) c.start(i);
  REQUIRE(wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 30s));
  MqttClient a(ProtocolVersion::v5), b(ProtocolVersion::v311), p(ProtocolVersion::v5);
  REQUIRE(a.open_and_connect(c.nodes[0]->mqtt_port, make_connect(ProtocolVersion::v5, "a")) == 0);
  REQUIRE(b.open_and_connect(c.nodes[1]->mqtt_port, make_connect(ProtocolVersion::v311, "b")) == 0);
  REQUIRE(p.open_and_connect(c.nodes[2]->mqtt_port, make_connect(ProtocolVersion::v5, "p")) == 0);
  // SUBACK waits until the peers have the route (here: n1 and n2 in group g).
  REQUIRE(a.subscribe("$share/g/jobs/#", 1));
  REQUIRE(b.subscribe("$share/g/jobs/#", 1));
  constexpr int kCount = 300;
  for (int i = 0; i < kCount; ++i) {
    const std::string payload = std::to_string(i);
    REQUIRE(p.publish(make_publish("jobs/" + payload, payload, 1)));
  }
  std::map<std::string, int> seen;
  std::size_t got_a = 0, got_b = 0, total = 0;
  auto progress = std::chrono::steady_clock::now();
  while (total < kCount && std::chrono::steady_clock::now() - progress < 10s) {
    for (MqttClient* m : {&a, &b}) {
      auto r = m->await<mqtt::Publish>(20ms);
      if (!r) continue;
      const auto* pub = r->as<mqtt::Publish>();
      m->acknowledge(*pub);
      ++seen[std::string(pub->payload)];
      ++(m == &a ? got_a : got_b);
      ++total;
      progress = std::chrono::steady_clock::now();
    }
  }
  // Nothing more after the last one (a PINGRESP round on each).
  for (MqttClient* m : {&a, &b}) {
    const auto more = m->ping(2s);
    REQUIRE(more);
    for (const auto* pub : brokerha::test::publishes(*more)) {
      ++seen[std::string(pub->payload)];
      ++total;
    }
  }
  CHECK(total == kCount);
  CHECK(seen.size() == static_cast<std::size_t>(kCount));
  for (const auto& [payload, n] : seen) {
    if (n != 1) FAIL_CHECK("payload " << payload << " delivered " << n << " times");
  }
  CHECK(got_a > 0);
  CHECK(got_b > 0);
  std::string metrics;
  REQUIRE(c.nodes[0]->get("/metrics", &metrics) == 200);
  CHECK(contains(metrics, "broker_cluster_shared_dropped_total 0"));
}

TEST_CASE("cluster server: the local-cluster script works as documented") {
  const std::string script = std::string(BROKERHA_SOURCE_DIR) + "/scripts/local-cluster.sh";
  if (brokerha::test::find_program("mosquitto_sub").empty() ||
      brokerha::test::find_program("curl").empty()) {
    brokerha::test::tool_missing("mosquitto_sub (Debian mosquitto-clients) or curl");
    return;
  }
  const std::uint16_t base = free_port();
  REQUIRE(base != 0);
  const auto r = brokerha::test::run_process(
      {"/usr/bin/env", "BROKERHA_SERVER=" + std::string(kServer),
       "BASE_PORT=" + std::to_string(base % 40000 + 20000), "/bin/bash", script, "--check"},
      120s);
  INFO(r.out);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "reached node2 and node3"));
}

TEST_CASE(
    "cluster server: a persistent session follows its client to another node and races have one "
    "winner") {
  const std::string sub = brokerha::test::find_program("mosquitto_sub");
  const std::string pub = brokerha::test::find_program("mosquitto_pub");
  if (sub.empty() || pub.empty()) {
    brokerha::test::tool_missing("mosquitto_sub / mosquitto_pub (Debian mosquitto-clients)");
    return;
  }
  ServerCluster c(3);
  for (std::size_t i = 0; i < 3; ++i) c.start(i);
  REQUIRE(wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 30s));
  auto port = [&](std::size_t i) { return std::to_string(c.nodes[i]->mqtt_port); };

  // mosquitto_sub subscribes on node 1 with a session kept for 300 s, then leaves (-E).
  auto r = brokerha::test::run_process(
      {sub, "-h", "127.0.0.1", "-p", port(0), "-V", "mqttv5", "-c", "-x", "300", "-i", "follower",
       "-q", "1", "-t", "follow/t", "-E"},
      20s);
  REQUIRE_MESSAGE(r.ok(), r.err);
  // 20 QoS 1 messages published on node 3 are queued in the session on node 1.
  r = brokerha::test::run_process({"/bin/sh", "-c",
                                   "seq 1 20 | " + pub + " -h 127.0.0.1 -p " + port(2) +
                                       " -V mqttv5 -i feeder -q 1 -t follow/t -l"},
                                  20s);
  REQUIRE_MESSAGE(r.ok(), r.err);
  auto queued_on_node1 = [&] {
    httplib::Client api(c.nodes[0]->address, c.nodes[0]->api_port);
    api.set_read_timeout(5);
    auto res =
        api.Post("/api/mqtt/client/inflight", R"({"client_id":"follower"})", "application/json");
    if (!res || res->status != 200) return std::size_t{0};
    std::size_t n = 0;
    for (std::size_t at = res->body.find("\"TopicName\""); at != std::string::npos;
         at = res->body.find("\"TopicName\"", at + 1)) {
      ++n;
    }
    return n;
  };
  REQUIRE(wait_until([&] { return queued_on_node1() == 20; }, 10s));

  // The client comes back on node 2: the session moves there, with its 20 messages.
  r = brokerha::test::run_process(
      {sub,  "-h",       "127.0.0.1", "-p", port(1), "-V",       "mqttv5", "-c", "-x", "300",
       "-i", "follower", "-q",        "1",  "-t",    "follow/t", "-C",     "20", "-W", "15"},
      30s);
  INFO(r.err);
  CHECK(r.ok());
  std::string expected;
  for (int i = 1; i <= 20; ++i) expected += std::to_string(i) + "\n";
  CHECK(r.out == expected);
  CHECK(queued_on_node1() == 0);  // node 1 no longer holds the session

  // Two connects with one client id on two nodes at once: one winner, every time.
  for (int round = 0; round < 5; ++round) {
    INFO("race round " << round);
    const std::string id = "racer-" + std::to_string(round);
    MqttClient a(ProtocolVersion::v5), b(ProtocolVersion::v5);
    REQUIRE(a.open(c.nodes[static_cast<std::size_t>(round % 3)]->mqtt_port));
    REQUIRE(b.open(c.nodes[static_cast<std::size_t>((round + 1) % 3)]->mqtt_port));
    const mqtt::Connect connect = make_connect(ProtocolVersion::v5, id, false);
    REQUIRE(a.send(connect));
    REQUIRE(b.send(connect));
    REQUIRE(a.await<mqtt::Connack>(5s));
    REQUIRE(b.await<mqtt::Connack>(5s));
    int alive = 0;
    for (MqttClient* m : {&a, &b}) alive += m->ping(2s).has_value() && !m->eof() ? 1 : 0;
    CHECK(alive == 1);
  }
}

TEST_CASE("cluster server: a flood of link connections that never authenticate stays bounded") {
  // Each inbound link connection holds a descriptor and a read buffer until it proves the key
  // (the TLS PSK handshake: here it sends the first byte of a handshake record and stops) or
  // its 1 s connect timeout passes. Before the bound a burst of
  // them was held whole; now at most cluster.max_inbound_links are pending, the rest closed at
  // once and counted, and the cluster keeps routing.
  constexpr int kLimit = 32;
  constexpr int kFlood = 400;
  ::setenv("BROKER_CLUSTER_MAX_INBOUND_LINKS", std::to_string(kLimit).c_str(), 1);
  ServerCluster c(2);
  for (std::size_t i = 0; i < 2; ++i) c.start(i);
  ::unsetenv("BROKER_CLUSTER_MAX_INBOUND_LINKS");
  REQUIRE(wait_until([&] { return c.all_see(2, {0, 1}); }, 30s));
  MqttClient s2(ProtocolVersion::v5), p1(ProtocolVersion::v5);
  REQUIRE(s2.open_and_connect(c.nodes[1]->mqtt_port, make_connect(ProtocolVersion::v5, "s2")) == 0);
  REQUIRE(s2.subscribe("flood/#", 1));
  const std::string hits = "broker_limit_hits_total{limit=\"cluster_inbound_links\"}";
  // node2 accepts the link from node1 (the lower name dials): it is the one flooded.
  const auto& target = *c.nodes[1];
  REQUIRE(target.metric(hits) == 0.0);

  const pid_t pid = target.process.pid();
  const std::size_t fds_before = open_fds(pid);
  std::vector<int> socks;
  std::size_t peak = 0;
  for (int i = 0; i < kFlood; ++i) {
    const int fd = raw_stream(target.address, target.cluster_port, '\x16');
    if (fd >= 0) socks.push_back(fd);
    if (i % 50 == 49) peak = std::max(peak, open_fds(pid));
  }
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(20ms);
    peak = std::max(peak, open_fds(pid));
  }
  INFO("server descriptors " << fds_before << " before, at most " << peak << " during "
                             << socks.size() << " raw link connections");
  CHECK(socks.size() == static_cast<std::size_t>(kFlood));
  // Pending links, plus streams the membership listener is still reading the first bytes of
  // (at most its 128 concurrent streams), plus descriptors accepted and not yet closed on a
  // loaded machine (255 seen in CI): below the flood (all 400 were held for the 1 s connect
  // timeout before the bound, 423 descriptors).
  CHECK(peak <= fds_before + kLimit + 128 + 128);
  CHECK(wait_until([&] { return target.metric(hits).value_or(0) > 0; }, 10s));
  for (int fd : socks) ::close(fd);

  // The link between the members stayed up, and messages still cross it.
  CHECK(target.metric("broker_cluster_link_up{peer=\"node1\"}") == 1.0);
  REQUIRE(p1.open_and_connect(c.nodes[0]->mqtt_port, make_connect(ProtocolVersion::v5, "p1")) == 0);
  p1.publish(make_publish("flood/a", "through", 1));
  auto r = s2.await<mqtt::Publish>(10s);
  REQUIRE(r);
  CHECK(r->as<mqtt::Publish>()->payload == "through");
  s2.acknowledge(*r->as<mqtt::Publish>());
}

TEST_CASE("cluster server: cluster.insecure runs without a key and says so") {
  ServerCluster c(2);
  for (const auto& n : c.nodes) {
    n->secret_key.clear();
    n->insecure = true;
  }
  for (std::size_t i = 0; i < 2; ++i) c.start(i);
  REQUIRE(wait_until([&] { return c.all_see(2, {0, 1}); }, 30s));
  CHECK(c.nodes[0]->metric("broker_cluster_insecure") == 1.0);
  c.nodes[0]->process.wait_output(
      [&](const std::string&) { return contains(c.nodes[0]->process.err(), "cluster.insecure"); },
      2s);
  CHECK(contains(c.nodes[0]->process.err(), "cluster.insecure: the cluster does not authenticate"));
  // /proxy answers for this node only, and says why for the other.
  std::string proxy;
  REQUIRE(c.nodes[0]->get("/proxy/api/mqtt/clients", &proxy) == 200);
  CHECK(contains(proxy, "\"node1\":["));
  CHECK(contains(proxy, "\"node2\":{\"error\":\"not asked: the cluster runs without a key"));
}

TEST_CASE("cluster server: a cluster without a key is refused at start, naming the key") {
  ServerCluster c(1);
  c.nodes[0]->secret_key.clear();
  c.nodes[0]->write_config(c.dns->nameserver());
  brokerha::test::BackgroundProcess p({kServer, "--config", c.nodes[0]->config_path()});
  REQUIRE(p.wait_exit(10s));
  CHECK(p.exit_code() == 2);
  CHECK(contains(p.err(), "cluster.config.secret_key: required in cluster mode"));
  CHECK(contains(p.err(), "cluster.insecure"));
}

namespace {

// How many times the node logged a keyring reload (one per SIGHUP that applied the keys).
std::size_t keyring_reloads(const brokerha::test::ServerNode& n) {
  std::size_t count = 0;
  const std::string& err = n.process.err();
  for (std::size_t at = err.find("the cluster keyring ("); at != std::string::npos;
       at = err.find("the cluster keyring (", at + 1)) {
    ++count;
  }
  return count;
}

}  // namespace

TEST_CASE(
    "cluster server: the three-step key rotation with SIGHUP keeps the cluster and a stream") {
  const std::string old_key = "0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld00";
  const std::string new_key = "n3wn3wn3wn3wn3wn3wn3wn3wn3wn3w00";
  const std::string other_key = "0th3r0th3r0th3r0th3r0th3r0th3r00";
  ServerCluster c(4);  // node4: only an unrelated key, at the end
  for (std::size_t i = 0; i < 3; ++i) c.nodes[i]->secret_key = old_key;
  for (std::size_t i = 0; i < 3; ++i) c.start(i);
  REQUIRE(wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 30s));

  // A QoS 1 stream from node1 to a subscriber on node3.
  MqttClient sub(ProtocolVersion::v5), pub(ProtocolVersion::v5);
  REQUIRE(sub.open_and_connect(c.nodes[2]->mqtt_port, make_connect(ProtocolVersion::v5, "sub")) ==
          0);
  REQUIRE(sub.subscribe("rotate/#", 1));
  REQUIRE(pub.open_and_connect(c.nodes[0]->mqtt_port, make_connect(ProtocolVersion::v5, "pub")) ==
          0);
  int sent = 0;
  auto flows = [&] {
    const std::string payload = "m" + std::to_string(++sent);
    pub.publish(make_publish("rotate/s", payload, 1));
    auto r = sub.await<mqtt::Publish>(10s);
    if (!r) return false;
    sub.acknowledge(*r->as<mqtt::Publish>());
    return r->as<mqtt::Publish>()->payload == payload;
  };
  auto links_up = [&](std::size_t i) {
    for (std::size_t j = 0; j < 3; ++j) {
      if (j == i) continue;
      const auto up =
          c.nodes[i]->metric("broker_cluster_link_up{peer=\"" + c.nodes[j]->name() + "\"}");
      if (!up || *up != 1.0) return false;
    }
    return true;
  };
  REQUIRE(wait_until([&] { return links_up(0) && links_up(1) && links_up(2); }, 20s));
  REQUIRE(flows());

  // Each step: every node in turn, its file rewritten and SIGHUP; the stream flows after each
  // node, and the cluster stays formed.
  const std::vector<std::pair<std::string, std::vector<std::string>>> steps{
      {"1: the new key second", {old_key, new_key}},
      {"2: the new key first", {new_key, old_key}},
      {"3: the old key removed", {new_key}}};
  std::size_t step_no = 0;
  for (const auto& step : steps) {  // (no structured binding: doctest captures it)
    const std::string& what = step.first;
    const std::vector<std::string>& keys = step.second;
    ++step_no;
    CAPTURE(what);
    for (std::size_t i = 0; i < 3; ++i) {
      auto& n = *c.nodes[i];
      n.secret_key = keys[0];
      n.secret_keys.assign(keys.begin() + 1, keys.end());
      n.write_config(c.dns->nameserver());
      ::kill(n.process.pid(), SIGHUP);
      REQUIRE_MESSAGE(n.process.wait_output(
                          [&](const std::string&) { return keyring_reloads(n) >= step_no; }, 10s),
                      n.process.err());
      CHECK(flows());
      CHECK(c.all_see(3, {0, 1, 2}));
    }
    CHECK(links_up(0));
    CHECK(links_up(1));
    CHECK(links_up(2));
  }

  // Links made now use the new key alone: node3 restarts with it and rejoins.
  c.nodes[2]->process.kill(SIGKILL);
  sub.close();
  REQUIRE(wait_until([&] { return c.all_see(2, {0, 1}); }, 30s));
  c.start(2);
  REQUIRE(wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 30s));
  REQUIRE(wait_until([&] { return links_up(0) && links_up(1) && links_up(2); }, 20s));

  // A node with only an unrelated key cannot join.
  c.nodes[3]->secret_key = other_key;
  c.start(3);
  std::this_thread::sleep_for(5s);  // its discovery finds the others; its joins must fail
  CHECK(c.nodes[3]->members() == 1);
  CHECK(c.all_see(3, {0, 1, 2}));
}
