// SPDX-License-Identifier: Apache-2.0
#pragma once
// Real brokerha-server processes forming a cluster on loopback, for the cluster suite: node i
// binds its cluster port and HTTP API on 127.0.0.(40+i) and its MQTT listener on 127.0.0.1,
// all on free ports; the nodes find each other through DNS SRV answered by a DNS server the
// cluster starts (tests/support/dns_server.py). Header-only; needs BROKERHA_SERVER_PATH.
//
//   ServerCluster c(3);                 // or ServerCluster(3, "shutdown:\n  grace_period: 8000\n")
//   for (std::size_t i = 0; i < 3; ++i) c.start(i);
//   wait_until([&] { return c.all_see(3, {0, 1, 2}); }, 30s);
//   c.nodes[2]->process.kill(SIGKILL);  // by pid; the destructor kills what is left
//
// Thread safety: one thread uses a ServerCluster (the HTTP helpers may run on any thread).

#include <doctest/doctest.h>
#include <httplib.h>
#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/broker_process.hpp"
#include "support/dns_server.hpp"

namespace brokerha::test {

inline const std::string kClusterDomain = "_broker._tcp.cluster.test";

/// The key the nodes share: a cluster needs one, as users run it.
inline const std::string kServerClusterKey = "0123456789abcdef0123456789abcdef";

/// One brokerha-server process: node i on 127.0.0.(40+i) for the cluster port and the API.
struct ServerNode {
  int index = 0;
  std::string address;
  std::uint16_t mqtt_port = 0;
  std::uint16_t api_port = 0;
  std::uint16_t cluster_port = 0;
  std::string dir;
  std::string extra_yaml;  // appended to the generated config (whole top-level sections)
  /// cluster.config.secret_key (the cluster test key; a test may give one node another);
  /// empty: none written.
  std::string secret_key = kServerClusterKey;
  std::vector<std::string> secret_keys;  // cluster.config.secret_keys, when not empty
  bool insecure = false;                 // cluster.insecure: true

  std::string config_path() const { return dir + "/" + name() + ".yaml"; }

  /// (Re)writes the node's config file (a running node reads it again on SIGHUP).
  void write_config(const std::string& nameserver) const {
    std::string keys;
    if (!secret_key.empty()) keys += "    secret_key: \"" + secret_key + "\"\n";
    if (!secret_keys.empty()) {
      keys += "    secret_keys:\n";
      for (const std::string& k : secret_keys) keys += "      - \"" + k + "\"\n";
    }
    std::ofstream(config_path()) << "mqtt:\n  port: " << mqtt_port << "\n  bind: 127.0.0.1\n"
                                 << "api:\n  port: " << api_port << "\n  bind: " << address << "\n"
                                 << "cluster:\n  node_name: " << name() << "\n  bind: " << address
                                 << "\n  port: " << cluster_port << "\n  expected_members: 3\n"
                                 << (insecure ? "  insecure: true\n" : "")
                                 << (keys.empty() ? "" : "  config:\n" + keys)
                                 << "discovery:\n  domain: " << kClusterDomain
                                 << "\n  nameservers: [\"" << nameserver
                                 << "\"]\n  refresh_interval: 1000\n"
                                 << extra_yaml;
  }
  BackgroundProcess process;

  std::string name() const { return "node" + std::to_string(index); }

  /// Writes the config and starts the process; true once it printed "cluster node".
  bool start(const std::string& nameserver) {
    write_config(nameserver);
    const std::string config = config_path();
    if (!process.start({BROKERHA_SERVER_PATH, "--config", config})) return false;
    return process.wait_output(
        [](const std::string& out) { return out.find("cluster node") != std::string::npos; },
        std::chrono::seconds(15));
  }

  /// GET on the node's HTTP API: the status, -1 when there was no answer.
  int get(const std::string& path, std::string* body = nullptr) const {
    httplib::Client c(address, api_port);  // /proxy reaches peers' APIs at their address
    c.set_connection_timeout(2);
    c.set_read_timeout(5);
    auto r = c.Get(path.c_str());
    if (!r) return -1;
    if (body != nullptr) *body = r->body;
    return r->status;
  }

  /// Members listed by /api/discovery/members (alive and suspect).
  std::size_t members() const { return count_in_members("\"Name\""); }
  /// Members listed as alive (State 0).
  std::size_t alive_members() const { return count_in_members("\"State\":0"); }

  /// The value of one /metrics sample, e.g. `broker_cluster_member_events_total{event="leave"}`.
  std::optional<double> metric(const std::string& sample) const {
    std::string body;
    if (get("/metrics", &body) != 200) return std::nullopt;
    const std::string head = "\n" + sample + " ";
    const std::size_t at = body.find(head);
    if (at == std::string::npos) return std::nullopt;
    return std::strtod(body.c_str() + at + head.size(), nullptr);
  }

 private:
  std::size_t count_in_members(const std::string& needle) const {
    std::string body;
    if (get("/api/discovery/members", &body) != 200) return 0;
    std::size_t n = 0;
    for (std::size_t at = body.find(needle); at != std::string::npos;
         at = body.find(needle, at + 1)) {
      ++n;
    }
    return n;
  }
};

/// `n` nodes (not started) and the DNS server that names them all.
struct ServerCluster {
  explicit ServerCluster(int n, const std::string& extra_yaml = "") {
    std::string templ = "/tmp/brokerha-cluster-test-XXXXXX";
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    dir = templ;
    for (int i = 1; i <= n; ++i) {
      auto node = std::make_unique<ServerNode>();
      node->index = i;
      node->address = "127.0.0." + std::to_string(40 + i);
      node->mqtt_port = free_port();
      node->api_port = free_port();
      node->cluster_port = free_port();
      node->dir = dir;
      node->extra_yaml = extra_yaml;
      nodes.push_back(std::move(node));
    }
    DnsZone zone;
    for (const auto& node : nodes) {
      const std::string target = node->name() + ".cluster.test";
      zone.srv(kClusterDomain, node->cluster_port, target).a(target, node->address);
    }
    dns = std::make_unique<DnsServer>(zone);
    REQUIRE_MESSAGE(dns->started(), dns->error());
  }
  ~ServerCluster() {
    nodes.clear();  // kills the processes by pid
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  ServerCluster(const ServerCluster&) = delete;
  ServerCluster& operator=(const ServerCluster&) = delete;

  void start(std::size_t i) {
    REQUIRE_MESSAGE(nodes[i]->start(dns->nameserver()), nodes[i]->process.describe());
  }
  /// Every node of `which` lists `members` members.
  bool all_see(std::size_t members, const std::vector<std::size_t>& which) const {
    for (std::size_t i : which) {
      if (nodes[i]->members() != members) return false;
    }
    return true;
  }
  /// Every node of `which` answers /ready with 200.
  bool all_ready(const std::vector<std::size_t>& which) const {
    for (std::size_t i : which) {
      if (nodes[i]->get("/ready") != 200) return false;
    }
    return true;
  }

  std::string dir;
  std::unique_ptr<DnsServer> dns;
  std::vector<std::unique_ptr<ServerNode>> nodes;
};

}  // namespace brokerha::test
