// SPDX-License-Identifier: Apache-2.0
// The HTTP API (docs/api.md) over real HTTP on loopback: a real Broker with a Bus, an
// ApiServer on port 0, real MQTT clients (tests/support/raw_client.hpp) and httplib clients.
// Every wait is bounded.

#include <brokerha/api.hpp>
#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>

#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/raw_client.hpp"
#include "support/required_tool.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::test::wait_until;
namespace raw = brokerha::test::raw;
namespace mqtt = brokerha::mqtt;
namespace channels = brokerha::bus_channels;

constexpr const char* kJson = "application/json";

rapidjson::Document parse(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str());
  INFO("body: " << body);
  REQUIRE_FALSE(doc.HasParseError());
  return doc;
}

std::string str(const rapidjson::Value& v) {
  return std::string(v.GetString(), v.GetStringLength());
}

// The key /proxy signs with in these tests (ApiOptions::proxy_keys).
const std::string kProxyKey = "0123456789abcdef0123456789abcdef";

// A broker with a bus and an API server on 127.0.0.1, both on free ports.
struct Node {
  explicit Node(brokerha::ApiOptions api_options = {})
      : bus(std::make_shared<brokerha::Bus>()),
        tb({}, [this](brokerha::Broker& b) { b.set_bus(bus); }),
        api(prepare(std::move(api_options)), tb.broker, *bus) {
    api.start();
  }

  static brokerha::ApiOptions prepare(brokerha::ApiOptions o) {
    o.bind = "127.0.0.1";
    o.port = 0;
    if (o.node_name.empty()) o.node_name = "node-a";
    o.sse_keepalive = 1s;
    o.proxy_timeout = 2s;
    return o;
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", api.port());
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    return c;
  }

  std::shared_ptr<brokerha::Bus> bus;
  brokerha::test::TestBroker tb;
  brokerha::ApiServer api;  // declared last: stopped first
};

// A loopback port nobody listens on (bound, then closed).
std::uint16_t dead_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

void check_error(const httplib::Result& r, int status, const std::string& error) {
  REQUIRE(r);
  CHECK(r->status == status);
  const auto doc = parse(r->body);
  CHECK(str(doc["status"]) == (status < 500 ? "Invalid request." : "Unable to perform request."));
  if (!error.empty()) CHECK(str(doc["error"]) == error);
}

// GETs `path`, checks the status and returns the parsed JSON body.
rapidjson::Document get_json(httplib::Client& c, const char* path, int status = 200) {
  auto r = c.Get(path);
  REQUIRE(r);
  CHECK(r->status == status);
  return parse(r->body);
}

bool connect_client(raw::Client& c, std::uint16_t port, const std::string& id) {
  if (!c.open(port)) return false;
  auto ack = c.handshake(c.connect_packet(id));
  return ack && ack->is(mqtt::PacketType::connack);
}

// Collects an SSE stream on a thread until told to stop.
struct SseReader {
  SseReader(std::uint16_t port, std::string target) {
    thread = std::thread([this, port, target] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(10);
      auto r = c.Get(
          target.c_str(),
          [this](const httplib::Response& res) {
            std::lock_guard<std::mutex> lock(mutex);
            status = res.status;
            content_type = res.get_header_value("Content-Type");
            return true;
          },
          [this](const char* data, std::size_t n) {
            std::lock_guard<std::mutex> lock(mutex);
            text.append(data, n);
            return !stop.load();
          });
      finished = true;
    });
  }
  ~SseReader() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
  std::string snapshot() {
    std::lock_guard<std::mutex> lock(mutex);
    return text;
  }
  bool contains(const std::string& s) { return snapshot().find(s) != std::string::npos; }

  std::atomic<bool> stop{false};
  std::atomic<bool> finished{false};
  std::mutex mutex;
  std::string text;
  int status = 0;
  std::string content_type;
  std::thread thread;
};

}  // namespace

TEST_CASE("http api: probes are up on a single node") {
  Node n;
  auto c = n.client();
  auto doc = get_json(c, "/ready");
  CHECK(str(doc["status"]) == "up");
  CHECK(str(doc["details"]["readiness_cluster_health"]["status"]) == "up");
  CHECK(doc["details"]["readiness_cluster_health"]["timestamp"].GetStringLength() > 20);
  CHECK_FALSE(doc["details"]["readiness_cluster_health"].HasMember("error"));
  doc = get_json(c, "/healthz");
  CHECK(str(doc["status"]) == "up");
  for (const char* check : {"liveness_cluster_health", "liveness_cluster_discovered_members",
                            "liveness_member_in_cluster"}) {
    CHECK(str(doc["details"][check]["status"]) == "up");
  }
}

TEST_CASE("http api: probes report the cluster hook") {
  brokerha::ApiOptions o;
  o.expected_members = 3;
  o.cluster_health = [] {
    brokerha::ClusterHealth h;
    h.discovery = true;
    h.cluster_error = "not joined yet";
    h.discovered_members = 1;
    return h;
  };
  Node n(o);
  auto c = n.client();
  auto doc = get_json(c, "/ready", 503);
  CHECK(str(doc["status"]) == "down");
  CHECK(str(doc["details"]["readiness_cluster_health"]["error"]) == "not joined yet");
  doc = get_json(c, "/healthz", 503);
  CHECK(str(doc["details"]["liveness_cluster_discovered_members"]["status"]) == "down");
  CHECK(str(doc["details"]["liveness_member_in_cluster"]["status"]) == "up");
}

TEST_CASE("http api: metrics have the broker-ha gauges and pass promtool") {
  Node n;
  raw::Client m;
  REQUIRE(connect_client(m, n.tb.port, "metrics-client"));
  REQUIRE(wait_until([&] { return n.tb.broker.stats().clients_connected == 1; }, 5s));
  auto c = n.client();
  auto r = c.Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type").rfind("text/plain", 0) == 0);
  for (const char* name : {"broker_clients_connected 1\n",
                           "broker_cluster_members 1\n",
                           "broker_cluster_insecure 0\n",
                           "broker_cluster_member_health",
                           "broker_retained_messages",
                           "broker_subscriptions",
                           "broker_uptime",
                           "broker_messages_recv",
                           "broker_messages_sent",
                           "broker_messages_dropped",
                           "broker_inflight_messages",
                           "broker_received_bytes_total",
                           "broker_auth_failures_total",
                           "broker_acl_denials_total",
                           "broker_protocol_errors_total",
                           "broker_bus_dropped_total{channel=\"cluster:message_to\"} 0",
                           "process_cpu_seconds_total",
                           "process_resident_memory_bytes",
                           "process_open_fds",
                           "process_threads"}) {
    INFO(name);
    CHECK(r->body.find(name) != std::string::npos);
  }
  const char* promtool = "/usr/bin/promtool";
  if (::access(promtool, X_OK) != 0) {
    brokerha::test::tool_missing("promtool (Debian prometheus): the format check");
    return;
  }
  char path[] = "/tmp/brokerha-metrics-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::ofstream(path) << r->body;
  const std::string cmd = std::string(promtool) + " check metrics < " + path + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int rc = ::pclose(p);
  ::unlink(path);
  INFO("promtool: " << out);
  CHECK(rc == 0);
  CHECK(out.empty());
}

TEST_CASE("http api: clients and inflight and stop") {
  Node n;
  raw::Client m;
  REQUIRE(connect_client(m, n.tb.port, "c1"));
  auto ack = m.subscribe("a/#", 1);
  REQUIRE(ack);
  auto c = n.client();

  auto doc = get_json(c, "/api/mqtt/clients");
  REQUIRE(doc.IsArray());
  REQUIRE(doc.Size() == 1);
  const auto& cl = doc[0];
  CHECK(str(cl["ID"]) == "c1");
  CHECK(cl["ProtocolVersion"].GetInt() == 5);
  CHECK(cl["Done"].GetBool() == false);
  CHECK(cl["CleanSession"].IsBool());
  CHECK(cl["Username"].IsString());
  const auto& sub = cl["Subscriptions"]["a/#"];
  CHECK(str(sub["Filter"]) == "a/#");
  CHECK(sub["Qos"].GetInt() == 1);
  for (const char* k :
       {"NoLocal", "RetainAsPublished", "RetainHandling", "Identifier", "ShareName"}) {
    CHECK(sub.HasMember(k));
  }

  auto r = c.Post("/api/mqtt/client/inflight", R"({"client_id":"c1"})", kJson);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(parse(r->body).IsArray());
  check_error(c.Post("/api/mqtt/client/inflight", R"({"client_id":"nobody"})", kJson), 500,
              "unknown client");

  // Errors of the JSON bodies.
  check_error(c.Post("/api/mqtt/client/stop", R"({})", kJson), 400, "client_id is required");
  check_error(c.Post("/api/mqtt/client/stop", R"({"client_id":)", kJson), 400,
              "malformed JSON body");
  check_error(c.Post("/api/mqtt/client/stop", R"({"client_id":"c1"})", "text/plain"), 400,
              "Content-Type must be application/json");
  check_error(c.Post("/api/mqtt/client/stop", R"({"client_id":"c1","x":1})", kJson), 400,
              "unknown field \"x\"");
  check_error(c.Post("/api/mqtt/client/stop", R"({"client_id":7})", kJson), 400,
              "client_id must be a string");
  check_error(c.Post("/api/mqtt/client/stop", R"(["c1"])", kJson), 400, "");
  check_error(c.Post("/api/mqtt/client/stop", R"({"client_id":"nobody"})", kJson), 500,
              "unknown client");
  r = c.Get("/api/mqtt/client/stop");
  REQUIRE(r);
  CHECK(r->status == 405);
  CHECK(r->get_header_value("Allow") == "POST");
  r = c.Delete("/api/mqtt/clients");
  REQUIRE(r);
  CHECK(r->status == 405);
  r = c.Get("/api/nothing/here");
  REQUIRE(r);
  CHECK(r->status == 404);

  r = c.Post("/api/mqtt/client/stop", R"({"client_id":"c1"})", kJson);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.empty());
  CHECK(m.wait_closed(5s));
}

TEST_CASE("http api: retained messages and topic subscribers") {
  Node n;
  brokerha::MessageInfo msg;
  msg.topic = "r/1";
  msg.payload = "hello";
  msg.retain = true;
  msg.qos = 1;
  n.tb.broker.publish(msg);
  REQUIRE(wait_until([&] { return n.tb.broker.retained("r/1").size() == 1; }, 5s));
  raw::Client m;
  REQUIRE(connect_client(m, n.tb.port, "c2"));
  REQUIRE(m.subscribe("r/+", 0, 1));
  REQUIRE(m.subscribe("$share/g/r/#", 1, 2));
  auto c = n.client();

  auto r = c.Post("/api/mqtt/topic/messages", R"({"topic":"r/#"})", kJson);
  REQUIRE(r);
  CHECK(r->status == 200);
  auto doc = parse(r->body);
  REQUIRE(doc.IsArray());
  REQUIRE(doc.Size() == 1);
  CHECK(str(doc[0]["TopicName"]) == "r/1");
  CHECK(str(doc[0]["Payload"]) == "aGVsbG8=");
  CHECK(doc[0]["FixedHeader"]["retain"].GetBool());
  CHECK(doc[0]["FixedHeader"]["qos"].GetInt() == 1);
  for (const char* k :
       {"PacketID", "Created", "Expiry", "Origin", "ProtocolVersion", "Properties"}) {
    CHECK(doc[0].HasMember(k));
  }
  check_error(c.Post("/api/mqtt/topic/messages", R"({"topic":"a/#/b"})", kJson), 400,
              "invalid topic filter");
  check_error(c.Post("/api/mqtt/topic/messages", R"({})", kJson), 400, "topic is required");

  r = c.Post("/api/mqtt/topic/subscribers", R"({"topic":"r/1"})", kJson);
  REQUIRE(r);
  CHECK(r->status == 200);
  doc = parse(r->body);
  CHECK(str(doc["Subscriptions"]["c2"]["Filter"]) == "r/+");
  CHECK(str(doc["Shared"]["g"]["c2"]["Filter"]) == "r/#");
  CHECK(str(doc["Shared"]["g"]["c2"]["ShareName"][0]) == "g");
  CHECK(doc["SharedSelected"].IsObject());
  CHECK(doc["InlineSubscriptions"].IsObject());
  check_error(c.Post("/api/mqtt/topic/subscribers", R"({"topic":"r/+"})", kJson), 400,
              "invalid topic name");
}

TEST_CASE("http api: basic auth guards api and proxy and debug") {
  brokerha::ApiOptions o;
  o.users = {{"admin", "secret"}, {"ops", "other"}};
  Node n(o);
  auto c = n.client();
  for (const char* path : {"/api/mqtt/clients", "/debug/stats", "/proxy/api/mqtt/clients"}) {
    INFO(path);
    auto r = c.Get(path);
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(r->get_header_value("WWW-Authenticate") == "Basic realm=\"api\"");
  }
  // 401 comes before 405: an unauthenticated caller learns nothing about the methods.
  auto r = c.Get("/api/mqtt/client/stop");
  REQUIRE(r);
  CHECK(r->status == 401);
  auto status_as = [&](const char* user, const char* pass) {
    c.set_basic_auth(user, pass);
    auto res = c.Get("/api/mqtt/clients");
    return res ? res->status : 0;
  };
  CHECK(status_as("admin", "wrong") == 401);
  CHECK(status_as("admin", "secre") == 401);
  CHECK(status_as("nobody", "secret") == 401);
  CHECK(status_as("ops", "other") == 200);
  c.set_basic_auth("admin", "secret");
  r = c.Get("/proxy/api/mqtt/clients");
  REQUIRE(r);
  CHECK(r->status == 200);  // this node only: no other member
  CHECK(parse(r->body)["node-a"].IsArray());
  // Probes and metrics stay open.
  auto open = n.client();
  for (const char* path : {"/metrics", "/ready", "/healthz"}) {
    auto pr = open.Get(path);
    REQUIRE(pr);
    CHECK(pr->status == 200);
  }
  // Without users, no auth.
  Node plain;
  auto pc = plain.client();
  r = pc.Get("/api/mqtt/clients");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("http api: debug endpoints") {
  Node n;
  auto c = n.client();
  auto doc = get_json(c, "/debug/stats");
  CHECK(str(doc["node"]) == "node-a");
  CHECK(doc["broker"]["clients_connected"].IsUint64());
  CHECK(doc["bus"]["cluster:message_to"]["dropped"].GetUint64() == 0);
  doc = get_json(c, "/debug/threads");
  CHECK(doc["count"].GetUint64() > 2);
  doc = get_json(c, "/debug/memory");
  CHECK(doc["resident_bytes"].GetUint64() > 0);
  CHECK(doc["open_fds"].GetUint64() > 0);
  CHECK(get_json(c, "/debug")["endpoints"].IsArray());
}

TEST_CASE("http api: members and proxy fan-out with a dead member") {
  // node-b is a second API server (on the same broker) reached over HTTP; node-dead listens
  // nowhere.
  const auto keys = [] { return std::vector<std::string>{kProxyKey}; };
  Node b([&] {
    brokerha::ApiOptions o;
    o.node_name = "node-b";
    o.proxy_keys = keys;
    return o;
  }());
  const std::uint16_t b_port = b.api.port();
  const std::uint16_t dead = dead_port();
  brokerha::ApiOptions o;
  o.proxy_keys = keys;
  o.members = [b_port, dead] {
    std::vector<brokerha::ApiMember> list(3);
    list[0].name = "node-a";
    list[0].address = "127.0.0.1";
    list[0].port = 7946;
    list[0].self = true;
    list[1].name = "node-b";
    list[1].address = "127.0.0.1";
    list[1].api_port = b_port;
    list[1].state = 1;
    list[2].name = "node-dead";
    list[2].address = "127.0.0.1";
    list[2].api_port = dead;
    return list;
  };
  Node a(o);
  raw::Client m;
  REQUIRE(connect_client(m, b.tb.port, "on-b"));
  auto c = a.client();

  auto doc = get_json(c, "/api/discovery/members");
  REQUIRE(doc.Size() == 3);
  CHECK(str(doc[0]["Name"]) == "node-a");
  CHECK(str(doc[0]["Addr"]) == "127.0.0.1");
  CHECK(doc[0]["Port"].GetInt() == 7946);
  CHECK(doc[1]["State"].GetInt() == 1);
  for (const char* k : {"Meta", "PMin", "PMax", "PCur", "DMin", "DMax", "DCur"}) {
    CHECK(doc[0].HasMember(k));
  }

  doc = get_json(c, "/proxy/api/mqtt/clients");
  REQUIRE(doc.IsObject());
  CHECK(doc["node-a"].IsArray());
  REQUIRE(doc["node-b"].IsArray());
  CHECK(doc["node-b"].Size() == 1);
  REQUIRE(doc["node-dead"].IsObject());
  CHECK(doc["node-dead"]["error"].IsString());

  auto r = c.Post("/proxy/api/mqtt/topic/messages", R"({"topic":"#"})", kJson);
  REQUIRE(r);
  CHECK(r->status == 200);
  doc = parse(r->body);
  CHECK(doc["node-b"].IsArray());
  // A request this node rejects is rejected as a whole.
  check_error(c.Post("/proxy/api/mqtt/topic/messages", R"({"topic":1})", kJson), 400,
              "topic must be a string");
  // stop and sse are not proxied.
  r = c.Post("/proxy/api/mqtt/client/stop", R"({"client_id":"x"})", kJson);
  REQUIRE(r);
  CHECK(r->status == 404);
  // The metrics count the members.
  r = c.Get("/metrics");
  REQUIRE(r);
  CHECK(r->body.find("broker_cluster_members 3\n") != std::string::npos);
}

TEST_CASE("http api: sse streams cluster:message_to events from mqtt publishes") {
  Node n;
  SseReader reader(n.api.port(), "/api/sse?filters=cluster:message_to&channel_size=10");
  REQUIRE(wait_until([&] { return n.bus->has_subscribers(channels::kMessageTo); }, 5s));
  raw::Client m;
  REQUIRE(connect_client(m, n.tb.port, "sse-pub"));
  REQUIRE(m.publish("s/1", "payload", 0));
  REQUIRE(wait_until([&] { return reader.contains("\n\n") && reader.contains("s/1"); }, 5s));
  const std::string text = reader.snapshot();
  {
    std::lock_guard<std::mutex> lock(reader.mutex);
    CHECK(reader.status == 200);
    CHECK(reader.content_type.rfind("text/event-stream", 0) == 0);
  }
  const std::size_t at = text.find("event: cluster:message_to\ndata: ");
  REQUIRE(at != std::string::npos);
  const std::size_t data = text.find("data: ", at) + 6;
  const std::size_t end = text.find("\n\n", data);
  REQUIRE(end != std::string::npos);
  const auto doc = parse(text.substr(data, end - data));
  CHECK(str(doc["TopicName"]) == "s/1");
  CHECK(str(doc["Payload"]) == "cGF5bG9hZA==");
  CHECK(str(doc["Origin"]) == "sse-pub");
  CHECK(doc["ProtocolVersion"].GetInt() == 5);
  CHECK(doc["Nodes"].IsArray());
  // Keepalive comments while idle (1 s in this test).
  REQUIRE(wait_until([&] { return reader.contains(": keepalive\n\n"); }, 5s));
  // Disconnecting unsubscribes.
  reader.stop = true;
  REQUIRE(wait_until([&] { return !n.bus->has_subscribers(channels::kMessageTo); }, 10s));
}

TEST_CASE("http api: sse by post and its errors") {
  Node n;
  auto c = n.client();
  check_error(c.Get("/api/sse?filters=cluster:message_to,bogus"), 400, "unknown filter \"bogus\"");
  check_error(c.Get("/api/sse?channel_size=-1"), 400, "");
  check_error(c.Post("/api/sse", R"({"filters":"cluster:new_member"})", kJson), 400,
              "filters must be an array of strings");
  check_error(c.Post("/api/sse", R"({"filters":["nope"]})", kJson), 400, "unknown filter \"nope\"");
  check_error(c.Post("/api/sse", R"({"channel_size":10,"other":1})", kJson), 400,
              "unknown field \"other\"");

  // POST with a JSON body; a small channel_size is raised to the minimum 100.
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::string text;
  std::thread t([&] {
    httplib::Client sc("127.0.0.1", n.api.port());
    sc.set_read_timeout(10);
    httplib::Request req;
    req.method = "POST";
    req.path = "/api/sse";
    req.body = R"({"filters":["cluster:new_member"],"channel_size":5})";
    req.set_header("Content-Type", kJson);
    req.content_receiver = [&](const char* d, std::size_t len, std::uint64_t, std::uint64_t) {
      std::lock_guard<std::mutex> lock(mutex);
      text.append(d, len);
      return !stop.load();
    };
    sc.send(req);
  });
  REQUIRE(wait_until([&] { return n.bus->has_subscribers(channels::kNewMember); }, 5s));
  CHECK_FALSE(n.bus->has_subscribers(channels::kMessageTo));
  for (int i = 0; i < 150; ++i) n.bus->publish(channels::kNewMember, "\"10.0.0.2:7946\"");
  const std::string expected = "event: cluster:new_member\ndata: \"10.0.0.2:7946\"\n\n";
  auto count = [&] {
    std::lock_guard<std::mutex> lock(mutex);
    std::size_t k = 0;
    for (std::size_t p = text.find(expected); p != std::string::npos;
         p = text.find(expected, p + 1)) {
      ++k;
    }
    return k;
  };
  // 150 events fit in the stream (buffer of at least 100 and a reader that keeps up).
  CHECK(wait_until([&] { return count() >= 100; }, 5s));
  stop = true;
  t.join();
}

TEST_CASE("http api: a slow sse client does not block mqtt traffic") {
  Node n;
  // A raw HTTP client with a tiny receive buffer that never reads its SSE stream.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(n.api.port());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  const std::string get =
      "GET /api/sse?filters=cluster:message_to HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  REQUIRE(::send(fd, get.data(), get.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(get.size()));
  REQUIRE(wait_until([&] { return n.bus->has_subscribers(channels::kMessageTo); }, 5s));

  raw::Client sub;
  REQUIRE(connect_client(sub, n.tb.port, "load-sub"));
  REQUIRE(sub.subscribe("load/#", 0));
  raw::Client pub;
  REQUIRE(connect_client(pub, n.tb.port, "load-pub"));
  const std::string payload(2048, 'x');
  constexpr int kMessages = 2000;
  int received = 0;
  std::thread reader([&] {
    while (received < kMessages) {
      auto p = sub.receive_type(mqtt::PacketType::publish, 10s);
      if (!p) break;
      ++received;
    }
  });
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kMessages; ++i)
    REQUIRE(pub.publish("load/" + std::to_string(i % 10), payload));
  reader.join();
  CHECK(received == kMessages);
  CHECK(std::chrono::steady_clock::now() - started < 30s);
  CHECK(wait_until([&] { return n.bus->dropped(channels::kMessageTo) > 0; }, 5s));
  auto c = n.client();
  auto r = c.Get("/metrics");
  REQUIRE(r);
  CHECK(r->body.find("broker_bus_dropped_total{channel=\"cluster:message_to\"} 0\n") ==
        std::string::npos);
  ::close(fd);
}

TEST_CASE("http api: stop is bounded with sse streams open and start reports bind errors") {
  Node n;
  SseReader reader(n.api.port(), "/api/sse");
  REQUIRE(wait_until([&] { return n.bus->has_subscribers(channels::kNewMember); }, 5s));
  const auto t0 = std::chrono::steady_clock::now();
  n.api.stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 4s);
  n.api.stop();  // idempotent
  CHECK(wait_until([&] { return reader.finished.load(); }, 10s));
  CHECK_FALSE(n.bus->has_subscribers(channels::kNewMember));

  // A port in use: start() throws std::system_error.
  Node other;
  brokerha::ApiOptions o;
  o.bind = "127.0.0.1";
  o.port = other.api.port();
  brokerha::ApiServer clash(o, other.tb.broker, *other.bus);
  CHECK_THROWS_AS(clash.start(), std::system_error);
  std::error_code ec;
  other.api.start(ec);
  CHECK(ec);  // already started
}

namespace {

// Streams `head` and then `filler` repeatedly to the API until the server refuses more (the
// send fails: reset or closed) or `limit` bytes or 10 s are spent; the bytes sent.
std::size_t stream_until_refused(std::uint16_t port, const std::string& head,
                                 const std::string& filler, std::size_t limit, bool& refused) {
  refused = false;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{0, 200 * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::size_t sent = 0;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  std::string_view next = head;
  while (sent < limit && std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = ::send(fd, next.data(), next.size(), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n <= 0) {
      refused = true;  // EPIPE or ECONNRESET: the server closed the connection
      break;
    }
    sent += static_cast<std::size_t>(n);
    next.remove_prefix(static_cast<std::size_t>(n));
    if (next.empty()) next = filler;
  }
  ::close(fd);
  return sent;
}

}  // namespace

// A request line or header block without end costs the server a bounded amount: the head may
// take 64 KiB, then the connection is closed (cpp-httplib 0.11 read any number of headers).
TEST_CASE("http api: a request head without end is cut off at its byte cap") {
  Node n;
  std::string headers;
  for (int i = 0; i < 1000; ++i)
    headers += "X-Filler-" + std::to_string(i) + ": " + std::string(100, 'v') + "\r\n";
  constexpr std::size_t kLimit = 64u * 1024 * 1024;
  bool refused = false;
  const std::size_t sent = stream_until_refused(
      n.api.port(), "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", headers, kLimit, refused);
  INFO("sent " << sent << " bytes of headers");
  CHECK(refused);
  CHECK(sent < kLimit);
  const std::size_t line =
      stream_until_refused(n.api.port(), "GET /", std::string(65536, 'a'), kLimit, refused);
  INFO("sent " << line << " bytes of request line");
  CHECK(refused);
  CHECK(line < kLimit);
  // The API still answers.
  auto c = n.client();
  auto r = c.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 200);
}

// Each cap an HTTP peer can reach is hit: concurrent SSE streams (503 beyond
// max_sse_clients, a freed slot serves the next), and request bodies (413 above max_body_bytes).
TEST_CASE("http api: the SSE stream cap and the body cap are hit") {
  brokerha::ApiOptions o;
  o.max_sse_clients = 2;
  o.max_body_bytes = 1024;
  Node n(o);
  auto first = std::make_unique<SseReader>(n.api.port(), "/api/sse");
  SseReader second(n.api.port(), "/api/sse");
  REQUIRE(wait_until(
      [&] { return first->contains(": connected") && second.contains(": connected"); }, 5s));
  auto c = n.client();
  check_error(c.Get("/api/sse"), 503, "too many SSE clients");
  first.reset();  // closes its stream: its slot is free again
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    SseReader third(n.api.port(), "/api/sse");
    served = wait_until([&] { return third.contains(": connected"); }, 200ms);
  }
  CHECK(served);
  auto r = c.Post("/api/sse", "{\"filters\":[\"" + std::string(2000, 'x') + "\"]}", kJson);
  REQUIRE(r);
  CHECK(r->status == 413);
}

namespace {

// A stand-in for another member's API: records the headers of each request, answers [].
struct RecordingMember {
  RecordingMember() {
    server.Get("/api/mqtt/clients", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu);
      requests.push_back(req.headers);
      res.set_content("[]", "application/json");
    });
    port = static_cast<std::uint16_t>(server.bind_to_any_port("127.0.0.1"));
    thread = std::thread([this] { server.listen_after_bind(); });
    while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~RecordingMember() {
    server.stop();
    thread.join();
  }
  std::vector<httplib::Headers> seen() {
    std::lock_guard<std::mutex> lock(mu);
    return requests;
  }
  httplib::Server server;
  std::uint16_t port = 0;
  std::thread thread;
  std::mutex mu;
  std::vector<httplib::Headers> requests;
};

std::vector<brokerha::ApiMember> members_of(
    const std::vector<std::pair<std::string, std::uint16_t>>& others) {
  std::vector<brokerha::ApiMember> list(1);
  list[0].name = "node-a";
  list[0].address = "127.0.0.1";
  list[0].self = true;
  for (const auto& [name, port] : others) {
    brokerha::ApiMember m;
    m.name = name;
    m.address = "127.0.0.1";
    m.api_port = port;
    list.push_back(m);
  }
  return list;
}

}  // namespace

TEST_CASE(
    "http api: /proxy signs with the cluster key and never forwards the caller's credentials") {
  RecordingMember spy;
  const auto keys = [] { return std::vector<std::string>{kProxyKey}; };
  // node-b: a real API with users; it answers the signed request without credentials.
  brokerha::ApiOptions bo;
  bo.node_name = "node-b";
  bo.users = {{"admin", "secret"}};
  bo.proxy_keys = keys;
  Node b(bo);
  // node-c: holds another key: refuses the signature.
  brokerha::ApiOptions co;
  co.node_name = "node-c";
  co.users = {{"admin", "secret"}};
  co.proxy_keys = [] { return std::vector<std::string>{std::string(32, 'z')}; };
  Node other(co);
  brokerha::ApiOptions ao;
  ao.users = {{"admin", "secret"}};
  ao.proxy_keys = keys;
  const std::uint16_t spy_port = spy.port, b_port = b.api.port(), c_port = other.api.port();
  ao.members = [=] {
    return members_of({{"node-spy", spy_port}, {"node-b", b_port}, {"node-c", c_port}});
  };
  Node a(ao);
  auto c = a.client();
  c.set_basic_auth("admin", "secret");
  auto r = c.Get("/proxy/api/mqtt/clients?x=1");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  auto doc = parse(r->body);
  CHECK(doc["node-a"].IsArray());
  CHECK(doc["node-spy"].IsArray());
  CHECK(doc["node-b"].IsArray());  // no credentials reached it, the signature did
  REQUIRE(doc["node-c"].IsObject());
  CHECK(str(doc["node-c"]["error"]).find("does not verify") != std::string::npos);

  const auto seen = spy.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].count("Authorization") == 0);
  for (const auto& header : seen[0]) {  // (no structured binding: doctest captures it)
    CHECK_MESSAGE(header.second.find("YWRtaW46c2VjcmV0") == std::string::npos,
                  header.first);  // admin:secret
  }
  CHECK(seen[0].count("X-Brokerha-Proxy-Mac") == 1);

  // The signature is good once, for that request only: replayed, or on another path, refused.
  httplib::Headers replay;
  for (const auto& [name, value] : seen[0]) {
    if (name.rfind("X-Brokerha-Proxy-", 0) == 0) replay.emplace(name, value);
  }
  auto bc = b.client();
  auto first = bc.Get("/api/mqtt/clients?x=1", replay);
  REQUIRE(first);
  CHECK(first->status == 200);  // the spy's copy, not used on node-b yet
  auto again = bc.Get("/api/mqtt/clients?x=1", replay);
  REQUIRE(again);
  CHECK(again->status == 401);
  CHECK(again->body.find("replayed") != std::string::npos);
  auto elsewhere = bc.Get("/api/mqtt/clients?x=2", replay);
  REQUIRE(elsewhere);
  CHECK(elsewhere->status == 401);
  // A signed request cannot be proxied on.
  auto onward = bc.Get("/proxy/api/mqtt/clients?x=1", replay);
  REQUIRE(onward);
  CHECK(onward->status == 401);

  // Without a key, /proxy answers for this node only, and says so.
  brokerha::ApiOptions lo;
  lo.node_name = "node-a";
  lo.proxy_keys = [] { return std::vector<std::string>{}; };
  lo.members = [=] { return members_of({{"node-spy", spy_port}}); };
  Node keyless(lo);
  auto kc = keyless.client();
  doc = get_json(kc, "/proxy/api/mqtt/clients");
  CHECK(doc["node-a"].IsArray());
  REQUIRE(doc["node-spy"].IsObject());
  CHECK(str(doc["node-spy"]["error"]).find("without a key (cluster.insecure)") !=
        std::string::npos);
  CHECK(spy.seen().size() == 1);
}
