// SPDX-License-Identifier: Apache-2.0
// brokerha-server's configuration (docs/configuration.md), tested through the real binary:
// `--check-config` with a temporary config file and a controlled environment (run under
// `env -i`, so the test's own environment never leaks in), checked on its exit code and on
// the effective configuration it prints; and two runs of the server itself with
// mosquitto_pub as the client (auth from the config file, SIGHUP reload).
//
// Every child runs with a bounded wait (run_process / BackgroundProcess) and is stopped by
// its pid.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "support/broker_process.hpp"
#include "support/child_process.hpp"
#include "support/raw_client.hpp"
#include "support/required_tool.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::test::BackgroundProcess;
using brokerha::test::ProcessResult;

const char* const kServer = BROKERHA_SERVER_PATH;
constexpr auto kRun = 20s;   // a --check-config run takes milliseconds
constexpr auto kWait = 10s;  // bound of every wait for the running server

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/brokerha-config-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

  /// Writes `content` to `name` in the directory (replacing it) and returns its path.
  std::string write(const std::string& name, const std::string& content) const {
    const std::string p = path_ + "/" + name;
    const std::string tmp = p + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << content;
    }
    std::filesystem::rename(tmp, p);  // atomic: a SIGHUP never sees half a file
    return p;
  }

 private:
  std::string path_;
};

// Runs brokerha-server with exactly `env` as its environment (plus the sanitizer options),
// in `cwd` when given.
ProcessResult run_server(const std::vector<std::string>& args,
                         const std::vector<std::string>& env = {}, const std::string& cwd = "") {
  static const std::string env_program = brokerha::test::find_program("env");
  std::vector<std::string> argv{env_program, "-i"};
  if (!cwd.empty()) argv.insert(argv.end(), {"-C", cwd});
  for (const char* pass : {"UBSAN_OPTIONS", "ASAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"}) {
    if (const char* v = std::getenv(pass)) argv.push_back(std::string(pass) + "=" + v);
  }
  argv.insert(argv.end(), env.begin(), env.end());
  argv.push_back(kServer);
  argv.insert(argv.end(), args.begin(), args.end());
  return brokerha::test::run_process(argv, kRun);
}

// The --check-config output as "section.key" -> value (collections are printed in flow
// style, so every key is one line).
std::map<std::string, std::string> flatten(const std::string& yaml) {
  std::map<std::string, std::string> out;
  std::vector<std::string> sections;
  std::size_t start = 0;
  while (start < yaml.size()) {
    std::size_t end = yaml.find('\n', start);
    if (end == std::string::npos) end = yaml.size();
    const std::string line = yaml.substr(start, end - start);
    start = end + 1;
    const std::size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;
    sections.resize(std::min(sections.size(), indent / 2));
    const std::string rest = line.substr(indent);
    const std::size_t colon = rest.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = rest.substr(0, colon);
    std::string path;
    for (const std::string& s : sections) path += s + ".";
    path += key;
    if (colon + 1 >= rest.size()) {
      sections.push_back(key);
    } else {
      out[path] = rest.substr(colon + 2);
    }
  }
  return out;
}

// A config file body that sets one key path ("mqtt.tls.port") to a YAML value.
std::string nested_yaml(const std::string& path, const std::string& value) {
  std::string out;
  std::size_t depth = 0;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
    out += std::string(depth * 2, ' ') + part + ":";
    if (dot == std::string::npos) break;
    out += "\n";
    ++depth;
    start = dot + 1;
  }
  return out + " " + value + "\n";
}

std::string env_name(const std::string& path) {
  std::string out = "BROKER_";
  for (char ch : path) {
    out += ch == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  }
  return out;
}

std::uint16_t free_port() {
  const std::uint16_t port = brokerha::test::free_port();
  REQUIRE(port != 0);
  return port;
}

struct KeyCase {
  const char* path;
  const char* file_value;              // YAML, written as the value of `path` in the file
  const char* expected;                // as --check-config prints it
  const char* env_value;               // nullptr = file_value
  const char* env_expected;            // nullptr = expected
  std::vector<std::string> extra_env;  // other keys this value needs (both runs)
};

// A key whose value is printed as written, from file and env alike.
KeyCase same(const char* path, const char* value, std::vector<std::string> extra_env = {}) {
  return KeyCase{path, value, value, nullptr, nullptr, std::move(extra_env)};
}

// Cluster mode (discovery set) needs a key.
const std::string kClusterKeyEnv = "BROKER_CLUSTER_CONFIG_SECRET_KEY=0123456789abcdef";

// Every key. @CERT@ @KEY@ @CA@ @PW@ are files the test creates.
std::vector<KeyCase> key_cases() {
  const std::string cc = "BROKER_CLUSTER_CONFIG_";
  const std::vector<std::string> tls{"BROKER_MQTT_TLS_CERT=@CERT@", "BROKER_MQTT_TLS_KEY=@KEY@"};
  return {
      same("mqtt.port", "1884"),
      same("mqtt.bind", "127.0.0.1"),
      {"mqtt.subscription_size",
       "{\"cluster:message_from\": 5}",
       "{cluster:message_from: 5, cluster:new_member: 10}",
       "{\"cluster:new_member\": 7}",
       "{cluster:message_from: 1024, cluster:new_member: 7}",
       {}},
      {"mqtt.auth",
       "[{username: Ann, password: pw1, client: \"c-*\", remote: 10.0.0.0/8, allow: true}]",
       "[{username: Ann, client: c-*, remote: 10.0.0.0/8, password: <redacted>, allow: true}]",
       "[{\"username\":\"u\",\"password\":\"p\",\"allow\":true}]",
       "[{username: u, password: <redacted>, allow: true}]",
       {}},
      {"mqtt.acl",
       "[{username: Ann, filters: {\"Home/#\": 1, \"b/+\": 3}}]",
       "[{username: Ann, filters: {Home/#: 1, b/+: 3}}]",
       "[{\"client\":\"c1\",\"filters\":{\"x/#\":2}}]",
       "[{client: c1, filters: {x/#: 2}}]",
       {}},
      same("mqtt.acl_default", "deny"),
      same("mqtt.password_file", "@PW@"),
      same("mqtt.tls.port", "8883", tls),
      same("mqtt.tls.cert", "/etc/cert.pem"),
      same("mqtt.tls.key", "/etc/key.pem"),
      same("mqtt.tls.ca", "/etc/ca.pem"),
      same("mqtt.tls.require_client_cert", "true", {"BROKER_MQTT_TLS_CA=@CA@"}),
      same("mqtt.tls.use_identity_as_username", "true",
           {"BROKER_MQTT_TLS_CA=@CA@", "BROKER_MQTT_TLS_REQUIRE_CLIENT_CERT=true"}),
      same("mqtt.websocket.port", "9001"),
      same("mqtt.websocket.path", "/ws"),
      same("mqtt.websocket.tls", "true"),
      {"mqtt.listeners",
       "[{type: tcp, bind: 127.0.0.1, port: 1999}]",
       "[{type: tcp, bind: 127.0.0.1, port: 1999, path: /mqtt, proxy_protocol: false}]",
       "[{\"type\":\"ws\",\"port\":2000,\"path\":\"/m\"}]",
       "[{type: ws, bind: 0.0.0.0, port: 2000, path: /m, proxy_protocol: false}]",
       {}},
      same("mqtt.max_packet_size", "1000"),
      same("mqtt.receive_maximum", "10"),
      same("mqtt.max_inflight", "20"),
      same("mqtt.topic_alias_maximum", "5"),
      same("mqtt.max_queued_messages", "7"),
      same("mqtt.max_connections", "100"),
      same("mqtt.max_connection_rate", "50"),
      same("mqtt.max_subscriptions", "200"),
      same("mqtt.max_publish_rate", "1000"),
      same("mqtt.max_session_queued_bytes", "1048576"),
      same("mqtt.max_keepalive", "60"),
      same("mqtt.max_session_expiry", "3600"),
      same("mqtt.max_message_expiry", "60"),
      same("mqtt.connect_timeout", "5000"),
      same("mqtt.io_threads", "2"),
      same("cluster.expected_members", "5"),
      same("cluster.bind", "127.0.0.1"),
      same("cluster.port", "7947"),
      same("cluster.advertise", "10.0.0.5"),
      same("cluster.node_name", "node-a"),
      same("cluster.link_retain", "30000"),
      same("cluster.max_clock_skew", "5000"),
      same("cluster.max_inbound_links", "32"),
      same("cluster.insecure", "true"),
      same("cluster.config.tcp_timeout", "2000"),
      same("cluster.config.indirect_checks", "3"),
      same("cluster.config.retransmit_mult", "4"),
      same("cluster.config.suspicion_mult", "5"),
      same("cluster.config.suspicion_max_timeout_mult", "7"),
      same("cluster.config.push_pull_interval", "30000"),
      same("cluster.config.probe_interval", "250"),
      same("cluster.config.probe_timeout", "100"),
      same("cluster.config.disable_tcp_pings", "true"),
      same("cluster.config.awareness_max_multiplier", "4"),
      same("cluster.config.gossip_interval", "200"),
      same("cluster.config.gossip_nodes", "4"),
      same("cluster.config.gossip_to_the_dead_time", "30000"),
      same("cluster.config.gossip_verify_incoming", "false"),
      same("cluster.config.gossip_verify_outgoing", "false"),
      same("cluster.config.enable_compression", "false"),
      {"cluster.config.secret_key",
       "\"someSecretKey13$\"",
       "<redacted>",
       "0123456789abcdef01234567",
       "<redacted>",
       {}},
      {"cluster.config.secret_keys",
       "[\"0123456789abcdef\", \"fedcba9876543210fedcba98\"]",
       "[<redacted>, <redacted>]",
       "0123456789abcdef,fedcba9876543210",
       "[<redacted>, <redacted>]",
       {}},
      same("cluster.config.delegate_protocol_min", "2",
           {cc + "DELEGATE_PROTOCOL_MAX=5", cc + "DELEGATE_PROTOCOL_VERSION=5"}),
      same("cluster.config.delegate_protocol_max", "5"),
      same("cluster.config.delegate_protocol_version", "3", {cc + "DELEGATE_PROTOCOL_MAX=5"}),
      same("cluster.config.dead_node_reclaim_time", "60000"),
      same("cluster.config.udp_buffer_size", "1200"),
      same("cluster.config.label", "prod"),
      same("cluster.config.handoff_queue_depth", "512"),
      same("discovery.domain", "broker-headless.broker-ha.svc.cluster.local", {kClusterKeyEnv}),
      {"discovery.subscription_size",
       "{\"cluster:message_to\": 8}",
       "{cluster:message_to: 8}",
       "{\"cluster:message_to\": 9}",
       "{cluster:message_to: 9}",
       {}},
      {"discovery.members",
       "[a.example:7946, \"10.0.0.2:7946\"]",
       "[a.example:7946, 10.0.0.2:7946]",
       "a:7946,b:7947",
       "[a:7946, b:7947]",
       {kClusterKeyEnv}},
      same("discovery.refresh_interval", "1000"),
      {"discovery.nameservers",
       "[\"127.0.0.1:5353\"]",
       "[127.0.0.1:5353]",
       "[\"127.0.0.1:53\", \"[::1]:53\"]",
       "[127.0.0.1:53, \"[::1]:53\"]",
       {}},
      same("api.port", "9090"),
      same("api.bind", "127.0.0.1"),
      {"api.user",
       "{Admin: pw}",
       "{Admin: <redacted>}",
       "{\"Ops\":\"x\"}",
       "{Ops: <redacted>}",
       {}},
      same("log.level", "debug"),
      same("log.format", "json"),
      same("shutdown.grace_period", "40000"),
      same("shutdown.session_wait", "5000"),
  };
}

}  // namespace

TEST_CASE("server config: --version and --help") {
  const ProcessResult v = run_server({"--version"});
  INFO(v.describe());
  CHECK(v.exit_code == 0);
  CHECK(v.out.rfind("brokerha-server ", 0) == 0);
  CHECK(std::count(v.out.begin(), v.out.end(), '\n') == 1);
  const ProcessResult h = run_server({"--help"});
  CHECK(h.exit_code == 0);
  CHECK(contains(h.out, "--check-config"));
}

TEST_CASE("server config: every key from the file and from the environment") {
  TempDir dir;
  REQUIRE(!dir.path().empty());
  const std::map<std::string, std::string> files{
      {"@CERT@", dir.write("cert.pem", "not checked yet\n")},
      {"@KEY@", dir.write("key.pem", "not checked yet\n")},
      {"@CA@", dir.write("ca.pem", "not checked yet\n")},
      {"@PW@", dir.write("passwd", "# no users\n")}};
  auto subst = [&](std::string s) {
    for (const auto& [placeholder, path] : files) s = replace_all(s, placeholder, path);
    return s;
  };
  const std::string empty = dir.write("empty.yaml", "");

  // The defaults list every key: each must have a case below.
  const ProcessResult defaults = run_server({"--check-config", "--config", empty});
  REQUIRE_MESSAGE(defaults.exit_code == 0, defaults.describe());
  const auto default_keys = flatten(defaults.out);
  std::vector<KeyCase> cases = key_cases();
  CHECK(default_keys.size() == cases.size());
  for (const auto& entry : default_keys) {
    const bool covered = std::any_of(cases.begin(), cases.end(),
                                     [&](const KeyCase& c) { return entry.first == c.path; });
    CHECK_MESSAGE(covered, "no test case for key " << entry.first);
  }

  for (const KeyCase& c : cases) {
    CAPTURE(c.path);
    std::vector<std::string> extra;
    for (const std::string& e : c.extra_env) extra.push_back(subst(e));
    REQUIRE(default_keys.count(c.path) == 1);
    CHECK(default_keys.at(c.path) != subst(c.expected));  // the case really changes the value

    const std::string file = dir.write("key.yaml", nested_yaml(c.path, subst(c.file_value)));
    const ProcessResult from_file = run_server({"--check-config", "--config", file}, extra);
    INFO("file run: " << from_file.describe());
    REQUIRE(from_file.exit_code == 0);
    CHECK(flatten(from_file.out)[c.path] == subst(c.expected));

    std::vector<std::string> env = extra;
    env.push_back(env_name(c.path) + "=" + subst(c.env_value ? c.env_value : c.file_value));
    const ProcessResult from_env = run_server({"--check-config", "--config", empty}, env);
    INFO("env run: " << from_env.describe());
    REQUIRE(from_env.exit_code == 0);
    CHECK(flatten(from_env.out)[c.path] ==
          subst(c.env_expected ? c.env_expected : (c.env_value ? c.env_value : c.expected)));
  }
}

TEST_CASE("server config: partial sections keep their defaults and env beats file") {
  TempDir dir;
  const std::string file = dir.write("c.yaml",
                                     "mqtt:\n"
                                     "  max_inflight: 7\n"
                                     "  subscription_size:\n"
                                     "    \"cluster:new_member\": 3\n"
                                     "cluster:\n"
                                     "  config:\n"
                                     "    probe_interval: 900\n"
                                     "api:\n");
  const ProcessResult r =
      run_server({"--check-config", "--config", file}, {"BROKER_MQTT_MAX_INFLIGHT=8"});
  INFO(r.describe());
  REQUIRE(r.exit_code == 0);
  auto flat = flatten(r.out);
  CHECK(flat["mqtt.max_inflight"] == "8");  // env beats file
  CHECK(flat["mqtt.port"] == "1883");
  CHECK(flat["mqtt.receive_maximum"] == "1024");
  CHECK(flat["mqtt.subscription_size"] == "{cluster:message_from: 1024, cluster:new_member: 3}");
  CHECK(flat["cluster.config.probe_interval"] == "900");
  CHECK(flat["cluster.config.tcp_timeout"] == "1000");
  CHECK(flat["cluster.config.probe_timeout"] == "200");
  CHECK(flat["cluster.expected_members"] == "3");
  CHECK(flat["api.port"] == "8080");
  CHECK(contains(r.out, "source: " + file));
}

TEST_CASE("server config: key names match case-insensitively and map keys keep their case") {
  TempDir dir;
  const std::string file = dir.write("c.yaml",
                                     "MQTT:\n"
                                     "  Port: 1999\n"
                                     "  AUTH:\n"
                                     "    - UserName: Alice\n"
                                     "      PassWord: Secret1\n"
                                     "      Allow: TRUE\n"
                                     "  Acl:\n"
                                     "    - USERNAME: Alice\n"
                                     "      Filters:\n"
                                     "        \"Home/Kitchen/#\": 3\n"
                                     "Cluster:\n"
                                     "  Config:\n"
                                     "    Probe_Interval: 700\n"
                                     "Api:\n"
                                     "  User:\n"
                                     "    BobSmith: Pw\n");
  const ProcessResult r = run_server({"--check-config", "--config", file});
  INFO(r.describe());
  REQUIRE(r.exit_code == 0);
  auto flat = flatten(r.out);
  CHECK(flat["mqtt.port"] == "1999");
  CHECK(flat["mqtt.auth"] == "[{username: Alice, password: <redacted>, allow: true}]");
  CHECK(flat["mqtt.acl"] == "[{username: Alice, filters: {Home/Kitchen/#: 3}}]");
  CHECK(flat["cluster.config.probe_interval"] == "700");
  CHECK(flat["api.user"] == "{BobSmith: <redacted>}");
  CHECK(!contains(r.out, "Secret1"));
}

TEST_CASE("server config: environment variables that name no key are ignored") {
  TempDir dir;
  const std::string empty = dir.write("empty.yaml", "");
  // What Kubernetes injects for Services named "broker" and "broker-mqtt" (service links),
  // except BROKER_MQTT_PORT itself, which is a real key (see the bad-config cases).
  const ProcessResult r = run_server(
      {"--check-config", "--config", empty},
      {"BROKER_PORT=tcp://10.0.0.1:1883", "BROKER_SERVICE_HOST=10.0.0.1",
       "BROKER_MQTT_PORT_1883_TCP=tcp://10.0.0.1:1883", "BROKER_MQTT_PORT_1883_TCP_PROTO=tcp",
       "BROKER_MQTT_PORT_1883_TCP_ADDR=10.0.0.1", "BROKER_MQTT_SERVICE_PORT=1883",
       "BROKER_MQTT_SERVICE_HOST=10.0.0.1", "BROKER_API_PORT_8080_TCP=tcp://10.0.0.2:8080",
       "BROKER_NOT_A_KEY=1", "BROKER_MQTT_MAX_INFLIGHT="});
  INFO(r.describe());
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.empty());
  auto flat = flatten(r.out);
  CHECK(flat["mqtt.port"] == "1883");
  CHECK(flat["api.port"] == "8080");
  CHECK(flat["mqtt.max_inflight"] == "1024");  // an empty variable counts as unset (viper)
}

TEST_CASE("server config: JSON in the environment for mqtt.auth and mqtt.acl") {
  TempDir dir;
  const std::string file =
      dir.write("c.yaml", "mqtt:\n  auth:\n    - username: file\n      allow: true\n");
  const ProcessResult r = run_server(
      {"--check-config", "--config", file},
      {"BROKER_MQTT_AUTH=[{\"username\":\"u\",\"password\":\"p4ss\",\"allow\":true},"
       "{\"remote\":\"127.0.0.1\",\"allow\":false}]",
       "BROKER_MQTT_ACL=[{\"username\":\"u\",\"filters\":{\"Sensors/+/temp\":1,\"#\":0}}]"});
  INFO(r.describe());
  REQUIRE(r.exit_code == 0);
  auto flat = flatten(r.out);
  CHECK(flat["mqtt.auth"] ==
        "[{username: u, password: <redacted>, allow: true}, {remote: 127.0.0.1, allow: false}]");
  CHECK(flat["mqtt.acl"] == "[{username: u, filters: {Sensors/+/temp: 1, \"#\": 0}}]");
  CHECK(!contains(r.out, "p4ss"));
}

TEST_CASE("server config: search path and built-in defaults") {
  if (std::filesystem::exists("/config/config.yaml")) {
    MESSAGE("skipped: /config/config.yaml exists on this machine and is searched first");
    return;
  }
  TempDir dir;
  const ProcessResult none = run_server({"--check-config"}, {}, dir.path());
  INFO(none.describe());
  REQUIRE(none.exit_code == 0);
  CHECK(contains(none.out, "source: built-in defaults"));
  CHECK(flatten(none.out)["mqtt.port"] == "1883");

  dir.write("config.yaml", "mqtt:\n  port: 1890\n");
  const ProcessResult found = run_server({"--check-config"}, {}, dir.path());
  INFO(found.describe());
  REQUIRE(found.exit_code == 0);
  CHECK(contains(found.out, "source: config.yaml"));
  CHECK(flatten(found.out)["mqtt.port"] == "1890");
}

TEST_CASE("server config: unknown keys under cluster.config only warn") {
  TempDir dir;
  const std::string file =
      dir.write("c.yaml", "cluster:\n  config:\n    probe_intervall: 100\n    bind_port: 1\n");
  const ProcessResult r = run_server({"--check-config", "--config", file});
  INFO(r.describe());
  CHECK(r.exit_code == 0);
  CHECK(contains(r.err, "brokerha-server: config warning: " + file +
                            ":3:5: unknown key \"cluster.config.probe_intervall\" ignored (did "
                            "you mean \"cluster.config.probe_interval\"?)"));
  CHECK(contains(r.err, "unknown key \"cluster.config.bind_port\" ignored"));
  CHECK(flatten(r.out)["cluster.config.probe_interval"] == "500");
}

TEST_CASE("server config: bad configurations exit 2 with a precise message") {
  TempDir dir;
  struct BadCase {
    const char* name;
    const char* file;  // nullptr = no --config at all (then args)
    std::vector<std::string> env;
    const char* fragment;  // @F@ = the config file's path
  };
  const std::vector<BadCase> cases{
      {"yaml syntax",
       "mqtt:\n  port: 1\na: b: c\n",
       {},
       "@F@:3:5: YAML syntax error: illegal map value"},
      {"yaml indentation", "mqtt:\n  port: 1\n bind: x\n", {}, "@F@:3:2: YAML syntax error"},
      {"wrong type",
       "mqtt:\n  port: abc\n",
       {},
       "@F@:2:9: mqtt.port: expected an integer from 0 to 65535, got \"abc\""},
      {"out of range",
       "mqtt:\n  port: 70000\n",
       {},
       "@F@:2:9: mqtt.port: out of range: 70000 (expected an integer from 0 to 65535)"},
      {"negative", "mqtt:\n  max_inflight: -1\n", {}, "mqtt.max_inflight: out of range: -1"},
      {"packet size too small",
       "mqtt:\n  max_packet_size: 10\n",
       {},
       "mqtt.max_packet_size: out of range: 10 (expected an integer from 64 to 268435460)"},
      {"unknown key",
       "mqtt:\n  prot: 1883\n",
       {},
       "@F@:2:3: mqtt.prot: unknown key (did you mean \"mqtt.port\"?)"},
      {"unknown section",
       "mqt:\n  port: 1883\n",
       {},
       "@F@:1:1: mqt: unknown key (did you mean \"mqtt\"?)"},
      {"key in the wrong section",
       "mqtt:\n  expected_members: 3\n",
       {},
       "mqtt.expected_members: unknown key (did you mean \"cluster.expected_members\"?)"},
      {"top level not a map", "- a\n- b\n", {}, "(top level): expected a map of keys, got a list"},
      {"secret_key length",
       "cluster:\n  config:\n    secret_key: tooshort\n",
       {},
       "@F@:3:17: cluster.config.secret_key: must be 16, 24 or 32 bytes (AES-128/192/256), got 8 "
       "bytes"},
      {"acl access 4",
       "mqtt:\n  acl:\n    - username: u\n      filters:\n        \"a/#\": 4\n",
       {},
       "@F@:5:16: mqtt.acl[0].filters.a/#: out of range: 4 (expected an integer from 0 to 3)"},
      {"acl access text",
       "mqtt:\n  acl:\n    - filters: {\"a\": rw}\n",
       {},
       "mqtt.acl[0].filters.a: expected an integer from 0 to 3, got \"rw\""},
      {"acl bad filter",
       "mqtt:\n  acl:\n    - filters: {\"a/#/b\": 1}\n",
       {},
       "mqtt.acl[0].filters: not a valid MQTT topic filter: \"a/#/b\""},
      {"auth unknown field",
       "mqtt:\n  auth:\n    - usrname: u\n      allow: true\n",
       {},
       "@F@:3:7: mqtt.auth[0]: unknown field \"usrname\" (did you mean \"username\"?)"},
      {"auth allow not bool",
       "mqtt:\n  auth:\n    - username: u\n      allow: maybe\n",
       {},
       "mqtt.auth[0].allow: expected a boolean (true or false), got \"maybe\""},
      {"auth not a list",
       "mqtt:\n  auth:\n    username: u\n",
       {},
       "mqtt.auth: expected a list, got a map"},
      {"auth rule not a map",
       "mqtt:\n  auth:\n    - u\n",
       {},
       "mqtt.auth[0]: expected a map, got \"u\""},
      {"listener type",
       "mqtt:\n  listeners:\n    - {type: udp, port: 1}\n",
       {},
       "mqtt.listeners[0].type: expected one of tcp, tls, ws, wss, got \"udp\""},
      {"listener without port",
       "mqtt:\n  listeners:\n    - {type: tcp}\n",
       {},
       "mqtt.listeners[0]: missing field \"port\""},
      {"bind not an ip",
       "mqtt:\n  bind: localhost\n",
       {},
       "mqtt.bind: expected an IP address, got \"localhost\""},
      {"log level",
       "log:\n  level: verbose\n",
       {},
       "log.level: expected one of debug, info, warn, error, got \"verbose\""},
      {"bus channel",
       "mqtt:\n  subscription_size: {\"cluster:mesage_from\": 1}\n",
       {},
       "unknown bus channel \"cluster:mesage_from\" (did you mean \"cluster:message_from\"?)"},
      {"discovery member",
       "discovery:\n  members: [\"a b:1\"]\n",
       {},
       "discovery.members[0]: expected \"host:port\", got \"a b:1\""},
      {"probe_timeout not below probe_interval",
       "cluster:\n  config:\n    probe_timeout: 600\n",
       {},
       "@F@:3:20: cluster.config.probe_timeout: must be less than cluster.config.probe_interval "
       "(500 ms), got 600"},
      {"tls without cert",
       "mqtt:\n  tls:\n    port: 8883\n",
       {},
       "mqtt.tls.cert: required by the TLS listener(s)"},
      {"password file missing",
       "mqtt:\n  password_file: /nonexistent/passwd\n",
       {},
       "mqtt.password_file: cannot read file \"/nonexistent/passwd\""},
      {"env service link",
       "",
       {"BROKER_MQTT_PORT=tcp://10.0.0.1:1883"},
       "BROKER_MQTT_PORT: mqtt.port: expected an integer from 0 to 65535, got "
       "\"tcp://10.0.0.1:1883\" (Kubernetes service links?"},
      {"env not a number",
       "",
       {"BROKER_CLUSTER_CONFIG_PROBE_INTERVAL=fast"},
       "BROKER_CLUSTER_CONFIG_PROBE_INTERVAL: cluster.config.probe_interval: expected an integer"},
      {"env not a boolean",
       "",
       {"BROKER_MQTT_TLS_REQUIRE_CLIENT_CERT=maybe"},
       "BROKER_MQTT_TLS_REQUIRE_CLIENT_CERT: mqtt.tls.require_client_cert: expected a boolean"},
      {"env bad json",
       "",
       {"BROKER_MQTT_AUTH=[{\"username\":\"u\","},
       "BROKER_MQTT_AUTH: mqtt.auth: expected JSON, got a syntax error"},
      {"env json of the wrong shape",
       "",
       {"BROKER_API_USER=[\"a\"]"},
       "BROKER_API_USER: api.user: expected a map, got a list"},
      {"env secret_key length",
       "",
       {"BROKER_CLUSTER_CONFIG_SECRET_KEY=hunter2"},
       "BROKER_CLUSTER_CONFIG_SECRET_KEY: cluster.config.secret_key: must be 16, 24 or 32 bytes"},
      {"clock skew bound below a second",
       "",
       {"BROKER_CLUSTER_MAX_CLOCK_SKEW=0"},
       "BROKER_CLUSTER_MAX_CLOCK_SKEW: cluster.max_clock_skew: out of range: 0 (expected an "
       "integer from 1000 to 2147483647)"},
      {"cluster mode without a key",
       "discovery:\n  members: [\"127.0.0.1:7946\"]\n",
       {},
       "cluster.config.secret_key: required in cluster mode (a valid key is 16, 24 or 32 "
       "characters shared by every member, e.g. the 32 hex characters of `openssl rand -hex "
       "16`; or set cluster.insecure: true"},
      {"cluster mode (domain, env) without a key",
       "",
       {"BROKER_DISCOVERY_DOMAIN=_cluster._tcp.example"},
       "cluster.config.secret_key: required in cluster mode"},
      {"cluster mode with gossip_verify_incoming false",
       "cluster:\n  config:\n    secret_key: \"0123456789abcdef\"\n"
       "    gossip_verify_incoming: false\ndiscovery:\n  members: [\"127.0.0.1:7946\"]\n",
       {},
       "@F@:4:29: cluster.config.secret_key: not enforced: "
       "cluster.config.gossip_verify_incoming is false, so members are not authenticated"},
      {"cluster mode with gossip_verify_outgoing false",
       "",
       {"BROKER_DISCOVERY_MEMBERS=127.0.0.1:7946",
        "BROKER_CLUSTER_CONFIG_SECRET_KEY=0123456789abcdef",
        "BROKER_CLUSTER_CONFIG_GOSSIP_VERIFY_OUTGOING=false"},
       "BROKER_CLUSTER_CONFIG_GOSSIP_VERIFY_OUTGOING: cluster.config.secret_key: not enforced: "
       "cluster.config.gossip_verify_outgoing is false"},
      {"a base64 key (serf keygen)",
       "cluster:\n  config:\n    secret_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
       {},
       "cluster.config.secret_key: must be 16, 24 or 32 bytes (AES-128/192/256), got 44 bytes: "
       "this looks like a base64-encoded key"},
      {"a bad key among secret_keys",
       "",
       {"BROKER_CLUSTER_CONFIG_SECRET_KEYS=0123456789abcdef,hunter2"},
       "BROKER_CLUSTER_CONFIG_SECRET_KEYS: cluster.config.secret_keys[1]: must be 16, 24 or 32 "
       "bytes"},
      {"env beats a valid file",
       "mqtt:\n  port: 1884\n",
       {"BROKER_MQTT_PORT=-5"},
       "BROKER_MQTT_PORT: mqtt.port: out of range: -5"},
  };
  for (const BadCase& c : cases) {
    CAPTURE(c.name);
    const std::string file = dir.write("bad.yaml", c.file);
    const ProcessResult r = run_server({"--check-config", "--config", file}, c.env);
    INFO(r.describe());
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("brokerha-server: config error: ", 0) == 0);
    CHECK(contains(r.err, replace_all(c.fragment, "@F@", file)));
    CHECK(!contains(r.err, "hunter2"));  // secrets are never echoed
  }
}

TEST_CASE("server config: cluster.insecure allows a cluster without a key") {
  TempDir dir;
  const std::string file =
      dir.write("insecure.yaml",
                "cluster:\n  insecure: true\n  config:\n    gossip_verify_incoming: false\n"
                "discovery:\n  members: [\"127.0.0.1:7946\"]\n");
  const ProcessResult file_run = run_server({"--check-config", "--config", file});
  INFO(file_run.describe());
  CHECK(file_run.exit_code == 0);
  const std::string empty = dir.write("empty.yaml", "");
  const ProcessResult env_run =
      run_server({"--check-config", "--config", empty},
                 {"BROKER_DISCOVERY_MEMBERS=127.0.0.1:7946", "BROKER_CLUSTER_INSECURE=true"});
  INFO(env_run.describe());
  CHECK(env_run.exit_code == 0);
  CHECK(flatten(env_run.out)["cluster.insecure"] == "true");
}

TEST_CASE("server config: a --config file that does not exist") {
  TempDir dir;
  {
    const ProcessResult r = run_server({"--check-config", "--config", dir.path() + "/nope.yaml"});
    INFO(r.describe());
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "brokerha-server: config error: " + dir.path() +
                              "/nope.yaml: cannot read config file: No such file or directory"));
  }
}

TEST_CASE("server config: --config without a path") {
  {
    const ProcessResult r = run_server({"--config"});
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "brokerha-server: config error: --config needs a PATH"));
  }
}

TEST_CASE("server config: a password file the library cannot parse") {
  TempDir dir;
  const std::string pw = dir.write("bad-passwd", "user:plaintext\n");
  {
    const std::string file = dir.write("c.yaml", "mqtt:\n  password_file: " + pw + "\n");
    const ProcessResult r = run_server({"--check-config", "--config", file});
    INFO(r.describe());
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err,
                   "brokerha-server: config error: access rules (mqtt.auth, mqtt.acl, "
                   "mqtt.password_file): " +
                       pw + ": line 1: unsupported hash"));
  }
}

TEST_CASE("server config: ws and tls listeners are accepted by --check-config") {
  TempDir dir;
  const std::string file = dir.write("c.yaml", "mqtt:\n  websocket:\n    port: 9001\n");
  const ProcessResult check = run_server({"--check-config", "--config", file});
  INFO(check.describe());
  CHECK(check.exit_code == 0);
  CHECK_FALSE(contains(check.err, "config warning"));
}

namespace {

// mosquitto_pub -u user -P password on 127.0.0.1:port; true when the broker accepted it.
ProcessResult publish(std::uint16_t port, const std::string& user, const std::string& password) {
  return brokerha::test::run_process(
      {brokerha::test::mosquitto_pub_path(), "-h", "127.0.0.1", "-p", std::to_string(port), "-V",
       "mqttv311", "-u", user, "-P", password, "-t", "b/x", "-m", "hello", "-q", "1"},
      kRun);
}

bool wait_accepted(std::uint16_t port, const std::string& user, const std::string& password) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (std::chrono::steady_clock::now() < deadline) {
    if (publish(port, user, password).exit_code == 0) return true;
    ::usleep(50'000);  // a bounded poll step while the reload is applied
  }
  return false;
}

// The broker-ha README example (its `//` comment made a YAML comment), without the rule
// `remote: 127.0.0.1, allow: true`: the test clients connect from 127.0.0.1, so that rule
// would accept any password. Its cluster binds 127.0.0.1 on a free port instead of
// 0.0.0.0:7946, so that it never collides with another test's nodes.
std::string readme_config(std::uint16_t port, const std::string& password,
                          std::uint16_t cluster_port) {
  return "api:\n"
         "  user:\n"
         "    admin: admin\n"
         "  port: 0\n"
         "discovery:\n"
         "  domain: broker-headless.broker-ha.svc.cluster.local\n"
         "  subscription_size:\n"
         "    \"cluster:message_to\": 1024\n"
         "mqtt:\n"
         "  port: " +
         std::to_string(port) +
         "\n"
         "  bind: 127.0.0.1\n"
         "  subscription_size:\n"
         "    \"cluster:message_from\": 1024\n"
         "    \"cluster:new_member\": 10\n"
         "  auth:\n"
         "    - username: test\n"
         "      password: " +
         password +
         "\n"
         "      allow: true\n"
         "    - client: someClientID\n"
         "      allow: true\n"
         "  acl:\n"
         "    # 0 = deny, 1 = read only, 2 = write only, 3 = read and write\n"
         "    - username: test\n"
         "      filters:\n"
         "        \"a/#\": 0\n"
         "        \"b/#\": 2\n"
         "cluster:\n"
         "  expected_members: 3\n"
         "  bind: 127.0.0.1\n"
         "  port: " +
         std::to_string(cluster_port) +
         "\n"
         "  config:\n"
         "    secret_key: \"someSecretKey13$\"\n"
         "    tcp_timeout: 1000\n"
         "    push_pull_interval: 15000\n"
         "    probe_interval: 1000\n"
         "    probe_timeout: 200\n"
         "    gossip_interval: 100\n"
         "    gossip_to_the_dead_time: 15000\n"
         "    indirect_checks: 1\n"
         "    retransmit_mult: 2\n"
         "    suspicion_mult: 3\n";
}

}  // namespace

TEST_CASE(
    "server config: the broker-ha README config enforces its auth rules and SIGHUP reloads them") {
  if (brokerha::test::mosquitto_pub_path().empty()) {
    brokerha::test::tool_missing("mosquitto_pub (Debian mosquitto-clients)");
    return;
  }
  TempDir dir;
  const std::uint16_t port = free_port();
  const std::uint16_t cluster_port = free_port();
  const std::string file = dir.write("config.yaml", readme_config(port, "test", cluster_port));
  BackgroundProcess server({kServer, "--config", file});
  REQUIRE_MESSAGE(server.running(), server.error());
  REQUIRE_MESSAGE(
      server.wait_output([](const std::string& out) { return contains(out, "MQTT listening on"); },
                         kWait),
      server.describe());

  const ProcessResult wrong = publish(port, "test", "wrong");
  INFO(wrong.describe());
  CHECK(wrong.exit_code != 0);
  CHECK(contains(wrong.err, "not authorised"));
  CHECK(publish(port, "test", "test").exit_code == 0);

  {  // SIGHUP with a new password
    dir.write("config.yaml", readme_config(port, "n3w-pass", cluster_port));
    ::kill(server.pid(), SIGHUP);
    CHECK(wait_accepted(port, "test", "n3w-pass"));
    CHECK(publish(port, "test", "test").exit_code != 0);

    // An invalid file: logged, and the rules in force stay.
    dir.write("config.yaml", "mqtt:\n  port: [\n");
    ::kill(server.pid(), SIGHUP);
    CHECK(server.wait_output(
        [&](const std::string&) { return contains(server.err(), "SIGHUP: config error: "); },
        kWait));
    CHECK(contains(server.err(), "YAML syntax error"));
    CHECK(contains(server.err(), "the previous auth/ACL rules stay in force"));
    CHECK(publish(port, "test", "n3w-pass").exit_code == 0);
    CHECK(publish(port, "test", "test").exit_code != 0);

    // The file gone: an error too, never a fall-back to the defaults (anonymous allowed).
    std::filesystem::remove(file);
    ::kill(server.pid(), SIGHUP);
    CHECK(server.wait_output(
        [&](const std::string&) { return contains(server.err(), "cannot read config file"); },
        kWait));
    CHECK(publish(port, "test", "n3w-pass").exit_code == 0);
    CHECK(publish(port, "anyone", "anything").exit_code != 0);
  }

  server.kill(SIGTERM);
  CHECK(server.wait_exit(kWait));
  CHECK(server.exit_code() == 0);
}

TEST_CASE("server config: log.format and log.level shape what the server writes on stderr") {
  TempDir dir;
  for (const std::string level : {"debug", "error"}) {
    CAPTURE(level);
    const std::uint16_t port = free_port();
    const std::string file = dir.write("config.yaml", "mqtt:\n  port: " + std::to_string(port) +
                                                          "\n  bind: 127.0.0.1\n"
                                                          "log:\n  format: json\n  level: " +
                                                          level + "\n");
    BackgroundProcess server({kServer, "--config", file});
    REQUIRE_MESSAGE(server.running(), server.error());
    REQUIRE_MESSAGE(
        server.wait_output(
            [](const std::string& out) { return contains(out, "MQTT listening on"); }, kWait),
        server.describe());
    server.kill(SIGTERM);
    REQUIRE(server.wait_exit(kWait));
    INFO(server.describe());
    CHECK(server.exit_code() == 0);
    if (level == "error") {
      CHECK(server.err().empty());  // info lines are below the level
      continue;
    }
    CHECK(contains(server.err(), "\"level\":\"info\",\"msg\":\"MQTT listening on 127.0.0.1:" +
                                     std::to_string(port) + "\"}"));
    CHECK(contains(server.err(), "\"msg\":\"SIGTERM received, stopping\"}"));
    std::size_t start = 0;
    while (start < server.err().size()) {
      const std::size_t end = server.err().find('\n', start);
      REQUIRE(end != std::string::npos);
      const std::string line = server.err().substr(start, end - start);
      CHECK(line.rfind("{\"time\":\"", 0) == 0);
      CHECK(line.back() == '}');
      start = end + 1;
    }
  }
}

TEST_CASE("server config: SIGHUP reloads the overload limits") {
  TempDir dir;
  const std::uint16_t port = free_port();
  auto config = [&](int max_subscriptions) {
    return "mqtt:\n  bind: 127.0.0.1\n  port: " + std::to_string(port) +
           "\n  max_subscriptions: " + std::to_string(max_subscriptions) +
           "\n  max_publish_rate: 1000\napi:\n  port: 0\n";
  };
  const std::string file = dir.write("config.yaml", config(1));
  BackgroundProcess server({kServer, "--config", file});
  REQUIRE_MESSAGE(server.running(), server.error());
  REQUIRE_MESSAGE(
      server.wait_output([](const std::string& out) { return contains(out, "MQTT listening on"); },
                         kWait),
      server.describe());
  namespace raw = brokerha::test::raw;
  namespace mqtt = brokerha::mqtt;
  raw::Client c(mqtt::ProtocolVersion::v5);
  REQUIRE(c.open(port));
  const auto ack = c.handshake(c.connect_packet("limits"));
  REQUIRE(ack);
  REQUIRE(ack->get<mqtt::Connack>() != nullptr);
  auto code = [&](const std::string& filter, std::uint16_t id) {
    const auto a = c.subscribe(filter, 0, id);
    REQUIRE(a);
    REQUIRE(a->get<mqtt::Suback>() != nullptr);
    return static_cast<int>(a->get<mqtt::Suback>()->reason_codes.at(0));
  };
  CHECK(code("a", 1) == 0);
  CHECK(code("b", 2) == 0x97);  // max_subscriptions 1

  dir.write("config.yaml", config(3));
  ::kill(server.pid(), SIGHUP);
  CHECK(server.wait_output(
      [&](const std::string&) { return contains(server.err(), "max_subscriptions 3"); }, kWait));
  CHECK(code("b", 3) == 0);
  CHECK(code("c", 4) == 0);
  CHECK(code("d", 5) == 0x97);

  server.kill(SIGTERM);
  CHECK(server.wait_exit(kWait));
}
