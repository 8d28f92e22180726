// SPDX-License-Identifier: Apache-2.0
// The pure helpers of discovery (discovery/plan.hpp): "host:port" parsing, IP literals, DNS
// names, option checking, the backoff and the shaping of peers.

#include <brokerha/discovery.hpp>
#include <brokerha/error.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <ostream>
#include <string>
#include <system_error>
#include <vector>

#include "discovery/plan.hpp"

using namespace std::chrono_literals;
using brokerha::discovery::HostPort;
using brokerha::discovery::parse_host_port;

namespace {

std::optional<HostPort> hp(const std::string& host, std::uint16_t port, bool ip) {
  return HostPort{host, port, ip};
}

}  // namespace

TEST_CASE("discovery parse_host_port accepts names and IP literals") {
  CHECK(parse_host_port("node.test:7000", 7946) == hp("node.test", 7000, false));
  CHECK(parse_host_port("node.test", 7946) == hp("node.test", 7946, false));
  CHECK(parse_host_port("node.test.", 7946) == hp("node.test.", 7946, false));
  CHECK(parse_host_port("seed", 7946) == hp("seed", 7946, false));
  CHECK(parse_host_port("10.0.0.1:65535", 7946) == hp("10.0.0.1", 65535, true));
  CHECK(parse_host_port("10.0.0.1", 7946) == hp("10.0.0.1", 7946, true));
  CHECK(parse_host_port("[fd00::1]:7000", 7946) == hp("fd00::1", 7000, true));
  CHECK(parse_host_port("[fd00::1]", 7946) == hp("fd00::1", 7946, true));
  CHECK(parse_host_port("fd00:0::1", 7946) == hp("fd00::1", 7946, true));  // canonical
  CHECK(parse_host_port("::1", 1) == hp("::1", 1, true));
}

TEST_CASE("discovery parse_host_port refuses what does not parse") {
  for (const char* bad :
       {"",           ":7000",     "host:", "host:0", "host:65536", "host:-1",  "host:+80",
        "host:80x",   "host: 80",  " host", "ho st",  "host:80:90", "[fd00::1", "[fd00::1]x",
        "[fd00::1]:", "[host]:80", "[]",    "a..b",   ".a",         "bad/name", "host:123456"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_host_port(bad, 7946).has_value());
  }
  CHECK_FALSE(parse_host_port(std::string(64, 'a') + ".test", 1).has_value());  // label > 63
  CHECK_FALSE(parse_host_port(std::string("a\0b", 3), 1).has_value());
}

TEST_CASE("discovery canonical_ip and valid_dns_name") {
  using brokerha::discovery::canonical_ip;
  using brokerha::discovery::valid_dns_name;
  CHECK(canonical_ip("10.0.0.1") == std::optional<std::string>("10.0.0.1"));
  CHECK(canonical_ip("FD00:0:0::1") == std::optional<std::string>("fd00::1"));
  CHECK_FALSE(canonical_ip("10.0.0").has_value());
  CHECK_FALSE(canonical_ip("010.0.0.1x").has_value());
  CHECK_FALSE(canonical_ip("").has_value());
  CHECK(valid_dns_name("_broker._tcp.broker-headless.svc.cluster.local"));
  CHECK(valid_dns_name("a."));
  CHECK_FALSE(valid_dns_name("."));
  CHECK_FALSE(valid_dns_name(""));
  CHECK_FALSE(valid_dns_name("a..b"));
  CHECK_FALSE(valid_dns_name("a b"));
  CHECK_FALSE(valid_dns_name(std::string(254, 'a')));
  std::string long_ok;
  for (int i = 0; i < 4; ++i) long_ok += std::string(62, 'a') + ".";
  CHECK(valid_dns_name(long_ok));  // 252 characters before the trailing dot
}

TEST_CASE("discovery make_plan parses the options") {
  brokerha::DiscoveryOptions o;
  o.domain = "_b._tcp.test";
  o.members = {"10.0.0.1", "seed.test:9000"};
  o.nameservers = {"127.0.0.1:5353", "::1", "[fd00::53]:53"};
  o.self_addresses = {"10.0.0.9", "10.0.0.8:7946"};
  o.refresh_interval = 10s;
  o.retry_max = 60s;
  const auto p = brokerha::discovery::make_plan(o);
  CHECK(p.domain == "_b._tcp.test");
  REQUIRE(p.members.size() == 2);
  CHECK(p.members[0] == HostPort{"10.0.0.1", 7946, true});
  CHECK(p.members[1] == HostPort{"seed.test", 9000, false});
  CHECK(p.servers_csv == "127.0.0.1:5353,[::1]:53,[fd00::53]:53");
  REQUIRE(p.self.size() == 2);
  CHECK(p.self[0].ip == "10.0.0.9");
  CHECK(p.self[0].port == 0);
  CHECK(p.self[1].port == 7946);
  CHECK(p.retry_cap == 10s);  // never beyond refresh_interval

  o.retry_max = 0ms;  // below retry_min
  try {
    brokerha::discovery::make_plan(o);
    FAIL("no exception");
  } catch (const std::system_error& e) {
    CHECK(e.code() == brokerha::errc::invalid_argument);
    CHECK(std::string(e.what()).find("retry_max") != std::string::npos);
  }
}

TEST_CASE("discovery backoff doubles from retry_min up to the cap") {
  using brokerha::discovery::backoff_delay;
  CHECK(backoff_delay(1, 500ms, 30s) == 500ms);
  CHECK(backoff_delay(2, 500ms, 30s) == 1000ms);
  CHECK(backoff_delay(3, 500ms, 30s) == 2000ms);
  CHECK(backoff_delay(6, 500ms, 30s) == 16000ms);
  CHECK(backoff_delay(7, 500ms, 30s) == 30s);
  CHECK(backoff_delay(1000, 500ms, 30s) == 30s);
  CHECK(backoff_delay(0, 500ms, 30s) == 500ms);
  CHECK(backoff_delay(3, 500ms, 200ms) == 200ms);  // cap below retry_min
}

TEST_CASE("discovery finalize_peers removes self and sorts and dedups") {
  using brokerha::DiscoveredPeer;
  std::vector<DiscoveredPeer> peers = {{"10.0.0.3", 7946, "c"},    {"10.0.0.1", 7946, "z"},
                                       {"10.0.0.1", 7946, "a"},    {"10.0.0.2", 7946, "self"},
                                       {"10.0.0.2", 8000, "self"}, {"10.0.0.4", 7000, "d"},
                                       {"10.0.0.4", 7946, "d"}};
  std::vector<brokerha::discovery::SelfAddress> self = {{"10.0.0.2", 0}, {"10.0.0.4", 7000}};
  CHECK(brokerha::discovery::finalize_peers(peers, self));
  REQUIRE(peers.size() == 3);
  CHECK(peers[0].address == "10.0.0.1");
  CHECK(peers[0].target == "a");
  CHECK(peers[1].address == "10.0.0.3");
  CHECK(peers[2].address == "10.0.0.4");
  CHECK(peers[2].port == 7946);
  CHECK_FALSE(brokerha::discovery::finalize_peers(peers, self));
}
