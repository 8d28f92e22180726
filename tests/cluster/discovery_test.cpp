// SPDX-License-Identifier: Apache-2.0
// brokerha::Discovery (and discovery::Engine) against a real DNS server on loopback
// (tests/support/dns_server.py): SRV targets resolved to peers without ourselves, members
// joining and leaving, NXDOMAIN / SERVFAIL / REFUSED / malformed / silent answers reported and
// retried with backoff, truncated UDP answers retried over TCP, static members merged, bad
// options refused, and stop() while a query is in flight. Waits poll with a bound; no
// timing is asserted beyond generous upper bounds and the timers' lower bounds.

#include <brokerha/discovery.hpp>
#include <brokerha/error.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "discovery/engine.hpp"
#include "discovery/plan.hpp"
#include "io/asio.hpp"
#include "support/dns_server.hpp"

using namespace std::chrono_literals;
using brokerha::DiscoveredPeer;
using brokerha::DiscoveryOptions;
using brokerha::DiscoveryResult;
using brokerha::test::DnsServer;
using brokerha::test::DnsZone;

namespace brokerha {
inline bool operator==(const DiscoveredPeer& a, const DiscoveredPeer& b) {
  return std::tie(a.address, a.port, a.target) == std::tie(b.address, b.port, b.target);
}
inline std::ostream& operator<<(std::ostream& os, const DiscoveredPeer& p) {
  return os << p.address << ":" << p.port << "(" << p.target << ")";
}
}  // namespace brokerha

namespace {

const std::string kDomain = "_broker._tcp.test";

template <class Pred>
bool wait_for(Pred&& pred, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

std::string describe(const std::vector<DiscoveredPeer>& peers) {
  std::string s;
  for (const auto& p : peers) {
    s += p.address + ":" + std::to_string(p.port) + "(" + p.target + ") ";
  }
  return s;
}

// Collects every result delivered to the callback.
struct Results {
  mutable std::mutex mu;
  std::vector<DiscoveryResult> all;

  brokerha::Discovery::Callback callback() {
    return [this](const DiscoveryResult& r) {
      std::lock_guard<std::mutex> lock(mu);
      all.push_back(r);
    };
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu);
    return all.size();
  }
  DiscoveryResult at(std::size_t i) const {
    std::lock_guard<std::mutex> lock(mu);
    return all.at(i);
  }
  DiscoveryResult latest() const {
    std::lock_guard<std::mutex> lock(mu);
    return all.empty() ? DiscoveryResult{} : all.back();
  }
  // Waits for a result after the first `after` ones that satisfies `pred`.
  bool wait(const std::function<bool(const DiscoveryResult&)>& pred, std::size_t after = 0,
            std::chrono::milliseconds timeout = 20s) const {
    return wait_for(
        [&] {
          std::lock_guard<std::mutex> lock(mu);
          for (std::size_t i = after; i < all.size(); ++i) {
            if (pred(all[i])) return true;
          }
          return false;
        },
        timeout);
  }
  // The first result after `after` that satisfies `pred` (call after wait() succeeded).
  DiscoveryResult find(const std::function<bool(const DiscoveryResult&)>& pred,
                       std::size_t after = 0) const {
    std::lock_guard<std::mutex> lock(mu);
    for (std::size_t i = after; i < all.size(); ++i) {
      if (pred(all[i])) return all[i];
    }
    return {};
  }
};

DiscoveryOptions options_for(const DnsServer& dns) {
  DiscoveryOptions o;
  o.domain = kDomain;
  o.nameservers = {dns.nameserver()};
  o.refresh_interval = 60s;  // only refresh() and retries run lookups during a test
  o.retry_min = 20ms;
  o.retry_max = 160ms;
  o.query_timeout = 1000ms;
  return o;
}

DiscoveredPeer peer(const std::string& address, std::uint16_t port, const std::string& target) {
  return DiscoveredPeer{address, port, target};
}

bool is_ok(const DiscoveryResult& r) { return r.ok; }

DnsZone three_nodes_and_self() {
  DnsZone z;
  z.srv(kDomain, 7001, "n1.test")
      .srv(kDomain, 7002, "n2.test")
      .srv(kDomain, 7003, "n3.test")
      .srv(kDomain, 7946, "self.test");
  z.a("n1.test", "10.0.0.1").a("n2.test", "10.0.0.2").a("n3.test", "10.0.0.3");
  z.a("self.test", "10.0.0.9");
  return z;
}

bool any(const DiscoveryResult&) { return true; }

// A DNS server serving `zone` and a started Discovery pointed at it (options_for(), then
// `tweak`), whose results are collected. Destroyed in reverse: Discovery first.
struct Run {
  explicit Run(const DnsZone& zone, const std::function<void(DiscoveryOptions&)>& tweak = {})
      : dns(zone) {
    REQUIRE_MESSAGE(dns.started(), dns.error());
    options = options_for(dns);
    if (tweak) tweak(options);
    d = std::make_unique<brokerha::Discovery>(options);
    d->set_callback(results.callback());
    d->start();
  }
  // The first result (waits for it).
  DiscoveryResult first() {
    REQUIRE(results.wait(any));
    return results.at(0);
  }

  DnsServer dns;
  DiscoveryOptions options;
  Results results;
  std::unique_ptr<brokerha::Discovery> d;
};

}  // namespace

TEST_CASE("discovery resolves SRV targets to peers and skips its own address") {
  Run run(three_nodes_and_self(),
          [](DiscoveryOptions& o) { o.self_addresses = {"10.0.0.9:7946"}; });
  const DiscoveryResult r = run.first();
  INFO("error: " << r.error << " peers: " << describe(r.peers));
  CHECK(r.ok);
  CHECK(r.error.empty());
  CHECK(r.self_seen);
  CHECK(r.attempt == 0u);
  CHECK(r.at.time_since_epoch().count() != 0);
  const std::vector<DiscoveredPeer> want = {peer("10.0.0.1", 7001, "n1.test"),
                                            peer("10.0.0.2", 7002, "n2.test"),
                                            peer("10.0.0.3", 7003, "n3.test")};
  CHECK(r.peers == want);
  CHECK(run.d->last().peers == want);
  // The SRV query went out, and each target was resolved through the same server.
  CHECK(run.dns.count_queries("udp", "SRV", kDomain) >= 1);
  CHECK(run.dns.count_queries("udp", "A", "n1.test") >= 1);
  run.d->stop();
  CHECK(run.d->last().peers == want);  // kept after stop()
}

TEST_CASE("discovery last is empty before the first result") {
  DnsZone z;
  z.mode("*", "silent");
  DnsServer dns(z);
  REQUIRE_MESSAGE(dns.started(), dns.error());
  brokerha::Discovery d(options_for(dns));
  CHECK_FALSE(d.last().ok);
  d.start();
  CHECK_FALSE(d.last().ok);
  CHECK(d.last().peers.empty());
}

TEST_CASE("discovery with a self address without port skips any port of it") {
  DnsZone z;
  z.srv(kDomain, 7001, "n1.test").srv(kDomain, 7002, "n1.test").srv(kDomain, 7003, "n2.test");
  z.a("n1.test", "10.0.0.1").a("n2.test", "10.0.0.2");
  Run run(z, [](DiscoveryOptions& o) { o.self_addresses = {"10.0.0.1"}; });
  const DiscoveryResult r = run.first();
  CHECK(r.ok);
  CHECK(r.self_seen);
  CHECK(r.peers == std::vector<DiscoveredPeer>{peer("10.0.0.2", 7003, "n2.test")});
}

TEST_CASE("discovery prefers IPv4 and falls back to IPv6 per target") {
  DnsZone z;
  z.srv(kDomain, 7001, "dual.test").srv(kDomain, 7002, "v6.test").srv(kDomain, 0, "v4.test");
  z.a("dual.test", "10.0.0.1").aaaa("dual.test", "fd00::1");
  z.aaaa("v6.test", "fd00:0:0:0::2");
  z.a("v4.test", "10.0.0.4");
  // default_port is for the SRV record with port 0.
  Run run(z, [](DiscoveryOptions& o) { o.default_port = 7999; });
  const DiscoveryResult r = run.first();
  INFO("error: " << r.error << " peers: " << describe(r.peers));
  CHECK(r.ok);
  const std::vector<DiscoveredPeer> want = {peer("10.0.0.1", 7001, "dual.test"),
                                            peer("10.0.0.4", 7999, "v4.test"),
                                            peer("fd00::2", 7002, "v6.test")};
  CHECK(r.peers == want);
}

TEST_CASE("discovery follows members added and removed on refresh") {
  DnsZone z;
  z.srv(kDomain, 7946, "n1.test").srv(kDomain, 7946, "n2.test");
  z.a("n1.test", "10.0.0.1").a("n2.test", "10.0.0.2").a("n3.test", "10.0.0.3");
  Run run(z);
  REQUIRE(run.results.wait(is_ok));
  CHECK(run.results.latest().peers ==
        std::vector<DiscoveredPeer>{peer("10.0.0.1", 7946, "n1.test"),
                                    peer("10.0.0.2", 7946, "n2.test")});

  // n3 joins, n2 leaves.
  DnsZone z2;
  z2.srv(kDomain, 7946, "n1.test").srv(kDomain, 7946, "n3.test");
  z2.a("n1.test", "10.0.0.1").a("n3.test", "10.0.0.3");
  REQUIRE(run.dns.set_zone(z2));
  std::size_t before = run.results.size();
  run.d->refresh();
  const std::vector<DiscoveredPeer> want2 = {peer("10.0.0.1", 7946, "n1.test"),
                                             peer("10.0.0.3", 7946, "n3.test")};
  CHECK(
      run.results.wait([&](const DiscoveryResult& r) { return r.ok && r.peers == want2; }, before));

  // Everyone but n1 leaves.
  DnsZone z3;
  z3.srv(kDomain, 7946, "n1.test").a("n1.test", "10.0.0.1");
  REQUIRE(run.dns.set_zone(z3));
  before = run.results.size();
  run.d->refresh();
  const std::vector<DiscoveredPeer> want3 = {peer("10.0.0.1", 7946, "n1.test")};
  CHECK(
      run.results.wait([&](const DiscoveryResult& r) { return r.ok && r.peers == want3; }, before));
  CHECK(run.d->last().peers == want3);
  CHECK(run.d->last().attempt == 0u);
}

TEST_CASE("discovery retries NXDOMAIN with a growing backoff and recovers") {
  DnsZone empty;
  empty.mode("*", "nxdomain");
  Run run(empty);
  const Results& results = run.results;
  REQUIRE(wait_for([&] { return results.size() >= 4; }));
  for (std::size_t i = 0; i < 4; ++i) {
    const DiscoveryResult r = results.at(i);
    INFO("result " << i << ": " << r.error);
    CHECK_FALSE(r.ok);
    CHECK(r.peers.empty());
    CHECK(r.attempt == i);  // consecutive failures before this one
    CHECK(r.error.find("NXDOMAIN") != std::string::npos);
    CHECK(r.error.find(kDomain) != std::string::npos);
    if (i > 0) {
      // The retry waited at least its backoff (timers never fire early).
      const auto gap = results.at(i).at - results.at(i - 1).at;
      const auto backoff = brokerha::discovery::backoff_delay(
          static_cast<unsigned>(i), run.options.retry_min, run.options.retry_max);
      CHECK(gap >= backoff - 2ms);
    }
  }
  CHECK_FALSE(run.d->last().ok);

  // The answer appears: a retry (no refresh() needed) finds it.
  DnsZone z;
  z.srv(kDomain, 7946, "n1.test").a("n1.test", "10.0.0.1");
  REQUIRE(run.dns.set_zone(z));
  REQUIRE(results.wait(is_ok));
  const DiscoveryResult ok = results.find(is_ok);
  CHECK(ok.attempt >= 4u);  // the failures before it
  CHECK(ok.error.empty());
  CHECK(ok.peers == std::vector<DiscoveredPeer>{peer("10.0.0.1", 7946, "n1.test")});
  // The result after a success counts no failure.
  const std::size_t before = results.size();
  run.d->refresh();
  REQUIRE(results.wait(any, before));
  CHECK(results.at(before).ok);
  CHECK(results.at(before).attempt == 0u);
}

TEST_CASE("discovery reports SERVFAIL and REFUSED answers") {
  for (const std::string mode : {"servfail", "refused"}) {
    CAPTURE(mode);
    DnsZone z;
    z.mode(kDomain, mode);
    Run run(z);
    const DiscoveryResult r = run.first();
    INFO("error: " << r.error);
    CHECK_FALSE(r.ok);
    CHECK(r.error.find(mode == "servfail" ? "SERVFAIL" : "REFUSED") != std::string::npos);
  }
}

TEST_CASE("discovery reports a malformed answer") {
  DnsZone z;
  z.mode(kDomain, "malformed");
  Run run(z);
  REQUIRE(wait_for([&] { return run.results.size() >= 2; }));
  const DiscoveryResult r = run.results.at(0);
  INFO("error: " << r.error);
  CHECK_FALSE(r.ok);
  CHECK(r.error.find("malformed") != std::string::npos);
  CHECK(run.results.at(1).attempt == 1u);  // retried
}

TEST_CASE("discovery reports an SRV target that does not resolve and keeps the others") {
  DnsZone z;
  z.srv(kDomain, 7001, "n1.test").srv(kDomain, 7002, "gone.test").srv(kDomain, 7003, "bad.test");
  z.a("n1.test", "10.0.0.1").mode("gone.test", "nxdomain").mode("bad.test", "malformed");
  Run run(z);
  const DiscoveryResult r = run.first();
  INFO("error: " << r.error);
  CHECK_FALSE(r.ok);  // so it is retried sooner than refresh_interval
  CHECK(r.error.find("gone.test") != std::string::npos);
  CHECK(r.error.find("bad.test") != std::string::npos);
  CHECK(r.peers == std::vector<DiscoveredPeer>{peer("10.0.0.1", 7001, "n1.test")});
}

TEST_CASE("discovery retries a truncated UDP answer over TCP") {
  DnsZone z;
  z.mode(kDomain, "truncate")
      .srv(kDomain, 7001, "n1.test")
      .srv(kDomain, 7002, "n2.test")
      .a("n1.test", "10.0.0.1")
      .a("n2.test", "10.0.0.2");
  Run run(z);
  const DiscoveryResult r = run.first();
  INFO("error: " << r.error << "\nqueries:\n" << run.dns.query_log());
  CHECK(r.ok);
  CHECK(r.peers == std::vector<DiscoveredPeer>{peer("10.0.0.1", 7001, "n1.test"),
                                               peer("10.0.0.2", 7002, "n2.test")});
  CHECK(run.dns.count_queries("udp", "SRV", kDomain) >= 1);
  CHECK(run.dns.count_queries("tcp", "SRV", kDomain) >= 1);
}

TEST_CASE("discovery reports a silent server as a timeout within bounds") {
  // "garbage" answers random bytes, which c-ares cannot match to the query: a timeout too.
  for (const std::string mode : {"silent", "garbage"}) {
    CAPTURE(mode);
    DnsZone z;
    z.mode("*", mode);
    const auto t0 = std::chrono::steady_clock::now();
    Run run(z, [](DiscoveryOptions& o) { o.query_timeout = 200ms; });
    const DiscoveryResult r = run.first();
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    INFO("error: " << r.error);
    CHECK_FALSE(r.ok);
    CHECK(r.error.find("timed out") != std::string::npos);
    CHECK(elapsed >= run.options.query_timeout);
    // Two tries of 200 ms and 400 ms; a generous bound for loaded machines and sanitizers.
    CHECK(elapsed < 10s);
  }
}

TEST_CASE("discovery reports that no DNS server listens") {
  std::string nameserver;
  {
    DnsServer gone;  // a port that was free a moment ago and is closed now
    REQUIRE_MESSAGE(gone.started(), gone.error());
    nameserver = gone.nameserver();
  }
  Results results;
  DiscoveryOptions o;
  o.domain = kDomain;
  o.nameservers = {nameserver};
  o.retry_min = 20ms;
  o.retry_max = 40ms;
  o.query_timeout = 300ms;
  brokerha::Discovery d(o);
  d.set_callback(results.callback());
  d.start();
  REQUIRE(wait_for([&] { return results.size() >= 2; }));
  const DiscoveryResult r = results.at(0);
  INFO("error: " << r.error);
  CHECK_FALSE(r.ok);
  // Loopback answers with ICMP port unreachable; a timeout is acceptable too.
  CHECK((r.error.find("connection refused") != std::string::npos ||
         r.error.find("timed out") != std::string::npos));
  CHECK(results.at(1).attempt == 1u);
}

TEST_CASE("discovery merges static members with the SRV answer") {
  DnsZone z;
  z.srv(kDomain, 7001, "n1.test").a("n1.test", "10.0.0.1");
  z.a("seed.test", "10.2.0.1");
  z.a("seed6.test", "10.2.0.6");
  Run run(z, [](DiscoveryOptions& o) {
    o.members = {"10.1.0.1:9000",  "10.1.0.2",      "seed.test:9100", "seed.test",
                 "[fd00::7]:9200", "10.0.0.1:7001", "10.1.0.9:7946",  "seed6.test."};
    o.self_addresses = {"10.1.0.9:7946"};
  });
  const DiscoveryResult r = run.first();
  INFO("error: " << r.error << " peers: " << describe(r.peers));
  CHECK(r.ok);
  CHECK(r.self_seen);
  const std::vector<DiscoveredPeer> want = {
      peer("10.0.0.1", 7001, "10.0.0.1"),  // also an SRV target: one entry
      peer("10.1.0.1", 9000, "10.1.0.1"),    peer("10.1.0.2", 7946, "10.1.0.2"),
      peer("10.2.0.1", 7946, "seed.test"),   peer("10.2.0.1", 9100, "seed.test"),
      peer("10.2.0.6", 7946, "seed6.test."), peer("fd00::7", 9200, "fd00::7")};
  CHECK(r.peers == want);
  // IP literals never reach DNS.
  CHECK(run.dns.count_queries("", "", "10.1.0.1") == 0);
}

TEST_CASE("discovery with static members only resolves them and skips SRV") {
  DnsZone z;
  z.a("seed.test", "10.2.0.1").mode("gone.test", "nxdomain");
  {
    Run run(z, [](DiscoveryOptions& o) {
      o.domain.clear();
      o.members = {"seed.test:9100", "10.1.0.1"};
    });
    REQUIRE(run.results.wait(is_ok));
    CHECK(run.results.latest().peers ==
          std::vector<DiscoveredPeer>{peer("10.1.0.1", 7946, "10.1.0.1"),
                                      peer("10.2.0.1", 9100, "seed.test")});
    CHECK(run.dns.count_queries("", "SRV", "") == 0);
  }
  // A member that does not resolve: reported, the rest still returned, retried.
  Run run(z, [](DiscoveryOptions& o) {
    o.domain.clear();
    o.members = {"gone.test", "10.1.0.1"};
  });
  REQUIRE(wait_for([&] { return run.results.size() >= 2; }));
  const DiscoveryResult r = run.results.at(0);
  INFO("error: " << r.error);
  CHECK_FALSE(r.ok);
  CHECK(r.error.find("gone.test") != std::string::npos);
  CHECK(r.peers == std::vector<DiscoveredPeer>{peer("10.1.0.1", 7946, "10.1.0.1")});
  CHECK(run.results.at(1).attempt == 1u);
}

TEST_CASE("discovery refuses invalid options with invalid_argument") {
  std::vector<std::function<void(DiscoveryOptions&)>> bad = {
      [](DiscoveryOptions& o) { o.domain = "bad domain.test"; },
      [](DiscoveryOptions& o) { o.domain = std::string(300, 'a'); },
      [](DiscoveryOptions& o) { o.members = {"host:0"}; },
      [](DiscoveryOptions& o) { o.members = {"host:99999"}; },
      [](DiscoveryOptions& o) { o.members = {"[::1"}; },
      [](DiscoveryOptions& o) { o.members = {""}; },
      [](DiscoveryOptions& o) { o.nameservers = {"dns.example:53"}; },
      [](DiscoveryOptions& o) { o.self_addresses = {"me.test"}; },
      [](DiscoveryOptions& o) { o.refresh_interval = 0ms; },
      [](DiscoveryOptions& o) { o.retry_min = -1ms; },
      [](DiscoveryOptions& o) { o.retry_max = 1ms; },
      [](DiscoveryOptions& o) { o.query_timeout = 0ms; },
      [](DiscoveryOptions& o) { o.default_port = 0; },
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    CAPTURE(i);
    DiscoveryOptions o;
    o.domain = kDomain;
    o.nameservers = {"127.0.0.1:1"};
    bad[i](o);
    brokerha::Discovery d(o);
    std::error_code ec;
    d.start(ec);
    CHECK(ec == brokerha::errc::invalid_argument);
    try {
      d.start();
      FAIL("start() did not throw");
    } catch (const std::system_error& e) {
      CHECK(e.code() == brokerha::errc::invalid_argument);
    }
    asio::io_context ctx;
    try {
      brokerha::discovery::Engine engine(ctx, o, nullptr);
      FAIL("Engine did not throw");
    } catch (const std::system_error& e) {
      CHECK(e.code() == brokerha::errc::invalid_argument);
    }
    d.stop();  // never started: nothing to do
  }
}

TEST_CASE("discovery start twice is already_started and stop is idempotent") {
  DnsZone z;
  z.srv(kDomain, 7001, "n1.test").a("n1.test", "10.0.0.1");
  DnsServer dns(z);
  REQUIRE_MESSAGE(dns.started(), dns.error());
  brokerha::Discovery d(options_for(dns));
  d.start();
  std::error_code ec;
  d.start(ec);
  CHECK(ec == brokerha::errc::already_started);
  CHECK(wait_for([&] { return d.last().ok; }));
  d.stop();
  d.stop();
  d.refresh();  // after stop: ignored
  CHECK(d.last().ok);
}

TEST_CASE("discovery stop returns promptly while a query is in flight") {
  DnsZone z;
  z.mode("*", "silent");
  DnsServer dns(z);
  REQUIRE_MESSAGE(dns.started(), dns.error());
  std::atomic<int> calls{0};
  auto o = options_for(dns);
  o.query_timeout = 30s;  // the query would stay in flight for the whole test
  o.members = {"seed.test"};
  brokerha::Discovery d(o);
  d.set_callback([&](const DiscoveryResult&) { ++calls; });
  d.start();
  REQUIRE(wait_for([&] {
    return dns.count_queries("udp", "SRV", kDomain) >= 1 &&
           dns.count_queries("udp", "", "seed.test") >= 1;
  }));
  const auto t0 = std::chrono::steady_clock::now();
  d.stop();
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 2s);
  CHECK(calls.load() == 0);
  CHECK_FALSE(d.last().ok);
}

TEST_CASE("discovery engine runs on a given io_context and stops on its thread") {
  DnsZone z;
  z.srv(kDomain, 7001, "n1.test").a("n1.test", "10.0.0.1").mode("slow.test", "silent");
  DnsServer dns(z);
  REQUIRE_MESSAGE(dns.started(), dns.error());
  asio::io_context ctx;
  auto work = asio::make_work_guard(ctx);
  std::thread th([&] { ctx.run(); });
  Results results;
  auto o = options_for(dns);
  o.members = {"slow.test"};  // never answered: a query stays in flight
  o.query_timeout = 30s;
  auto engine = std::make_unique<brokerha::discovery::Engine>(ctx, o, results.callback());
  engine->start();
  engine->refresh();  // during the first round: one more round after it, not two at once
  REQUIRE(wait_for([&] { return dns.count_queries("udp", "A", "n1.test") >= 1; }));
  CHECK(results.size() == 0u);

  // Stop and destroy on the context's thread, while queries are in flight.
  std::atomic<bool> done{false};
  asio::post(ctx, [&] {
    engine->stop();
    engine.reset();
    done = true;
  });
  REQUIRE(wait_for([&] { return done.load(); }));
  work.reset();
  ctx.stop();
  th.join();
  CHECK(results.size() == 0u);
}

TEST_CASE("discovery engine can be destroyed after its context stopped") {
  DnsZone z;
  z.mode("*", "silent");
  DnsServer dns(z);
  REQUIRE_MESSAGE(dns.started(), dns.error());
  asio::io_context ctx;
  Results results;
  auto o = options_for(dns);
  o.query_timeout = 30s;
  {
    brokerha::discovery::Engine engine(ctx, o, results.callback());
    engine.start();
    // Run until the query is out, then leave the context stopped with work pending.
    ctx.run_for(10ms);
    REQUIRE(wait_for([&] {
      ctx.run_for(10ms);
      return dns.count_queries("udp", "SRV", kDomain) >= 1;
    }));
    ctx.stop();
    CHECK(engine.last().ok == false);
  }  // ~Engine: stop() after the context stopped
  ctx.restart();
  ctx.run_for(50ms);  // whatever was queued runs harmlessly
  CHECK(results.size() == 0u);
}
