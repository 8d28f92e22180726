// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha::Discovery: finds the other members of the cluster (docs/discovery.md,
// docs/cluster.md): a DNS SRV lookup of `domain` (a Kubernetes headless service) through c-ares,
// with the SRV targets resolved to addresses, and/or a static list of "host:port" members.
//
//   brokerha::DiscoveryOptions o;
//   o.domain = "broker-headless.broker-ha.svc.cluster.local";
//   o.self_addresses = {"10.0.0.7:7946"};       // skipped in the answers
//   brokerha::Discovery d(o);
//   d.set_callback([](const brokerha::DiscoveryResult& r) { ... join r.peers ... });
//   d.start();                                  // resolves now, then every refresh_interval
//   ...
//   d.stop();
//
// No answer (NXDOMAIN, SERVFAIL, REFUSED, timeout, malformed reply, no reachable server, an
// SRV target or static name that does not resolve) is retried with exponential backoff
// (retry_min .. min(retry_max, refresh_interval)) and never stops the program; each attempt
// is reported, so the owner can say "alone" in its health checks. A UDP answer with the TC
// bit is retried over TCP (c-ares does this). SRV targets and static names resolve to their
// IPv4 addresses, or to their IPv6 ones when they have none. docs/discovery.md has more.
//
// Thread safety: every member function may be called from any thread. The callback runs on
// the discovery thread (Discovery's own, or the control thread of the broker that embeds
// it); it must not block and must not call stop(). Set it before start().

#include <brokerha/export.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace brokerha {

struct DiscoveryOptions {
  std::string domain;                    // SRV name; empty: no DNS lookup
  std::vector<std::string> members;      // static "host:port" (or "host", port 7946) seeds
  std::vector<std::string> nameservers;  // "ip:port" or "ip"; empty: /etc/resolv.conf
  std::chrono::milliseconds refresh_interval{30000};
  std::chrono::milliseconds retry_min{500};    // first retry after a failed lookup
  std::chrono::milliseconds retry_max{30000};  // backoff cap (never beyond refresh_interval)
  /// Per DNS query attempt: a query gets two tries, the second twice as long (1..60000 ms).
  std::chrono::milliseconds query_timeout{2000};
  /// Our own "ip:port" or "ip" (any port) entries, removed from every result.
  std::vector<std::string> self_addresses;
  std::uint16_t default_port = 7946;  // for static members and SRV records with port 0
};

struct DiscoveredPeer {
  std::string address;  // numeric IP
  std::uint16_t port = 0;
  std::string target;  // SRV target or the static entry's host
};

struct DiscoveryResult {
  /// Every lookup of the round succeeded (the SRV query, each SRV target, each static name);
  /// when false, `error` says which failed and why ("; "-separated) and `peers` still holds
  /// every peer that did resolve (static members, and the SRV targets that resolved).
  bool ok = false;
  std::string error;
  std::vector<DiscoveredPeer> peers;  // without ourselves, sorted, unique
  bool self_seen = false;             // the answer named one of self_addresses
  std::chrono::system_clock::time_point at{};
  unsigned attempt = 0;  // consecutive failures before this result (0 after a success)
};

class BROKERHA_API Discovery {
 public:
  using Callback = std::function<void(const DiscoveryResult&)>;

  explicit Discovery(DiscoveryOptions options);
  ~Discovery();  // stop()
  Discovery(const Discovery&) = delete;
  Discovery& operator=(const Discovery&) = delete;

  /// Before start() only.
  void set_callback(Callback cb);

  /// Starts the discovery thread and the first lookup. Throws std::system_error
  /// (errc::invalid_argument for options that do not parse, errc::already_started).
  void start();
  void start(std::error_code& ec) noexcept;

  /// Cancels lookups and joins the thread. Idempotent; any thread except the callback's.
  void stop() noexcept;

  /// Runs a lookup now (outside the refresh schedule).
  void refresh() noexcept;

  /// The latest result (ok == false and no peers before the first one completes).
  DiscoveryResult last() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace brokerha
