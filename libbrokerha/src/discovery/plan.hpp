// SPDX-License-Identifier: Apache-2.0
#pragma once
// The pure part of discovery (no I/O, unit-tested): DiscoveryOptions checked and parsed into a
// Plan, "host:port" parsing, the retry backoff, and the final shaping of a result's peers
// (ourselves removed, sorted, unique).

#include <brokerha/discovery.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace brokerha::discovery {

/// A parsed "host:port", "host", "[v6]:port", "[v6]" or bare "v6" entry.
struct HostPort {
  std::string host;  // a DNS name as written, or the canonical text of an IP literal
  std::uint16_t port = 0;
  bool is_ip = false;  // host is an IP literal (canonical form)

  bool operator==(const HostPort& o) const {
    return host == o.host && port == o.port && is_ip == o.is_ip;
  }
};

/// Parses `text`; a missing port becomes `default_port`. An explicit port must be 1..65535.
/// The host must be an IP literal or a valid DNS name. Returns nullopt when it does not parse.
std::optional<HostPort> parse_host_port(std::string_view text, std::uint16_t default_port);

/// The canonical text of an IPv4 or IPv6 literal (inet_ntop of inet_pton), or nullopt.
std::optional<std::string> canonical_ip(std::string_view text);

/// A DNS name we are willing to send: 1..253 characters (a trailing dot aside), labels of
/// 1..63 letters, digits, '-' or '_' (SRV owner names start with '_').
bool valid_dns_name(std::string_view name);

/// One of our own addresses; port 0 matches any port.
struct SelfAddress {
  std::string ip;  // canonical
  std::uint16_t port = 0;
};

/// DiscoveryOptions, checked.
struct Plan {
  std::string domain;             // empty: no SRV lookup
  std::vector<HostPort> members;  // static seeds
  std::string servers_csv;        // for ares_set_servers_ports_csv; empty: resolv.conf
  std::vector<SelfAddress> self;  //
  std::chrono::milliseconds refresh_interval{};
  std::chrono::milliseconds retry_min{};
  std::chrono::milliseconds retry_cap{};  // min(retry_max, refresh_interval)
  std::chrono::milliseconds query_timeout{};
  std::uint16_t default_port = 0;
};

/// Throws std::system_error(errc::invalid_argument) naming the first option that does not
/// parse: a bad domain, member, nameserver or self address, a zero default port, a
/// non-positive interval, retry_max < retry_min, or a query timeout beyond a minute.
Plan make_plan(const DiscoveryOptions& options);

/// The delay before the next lookup after `failures` consecutive failed results (>= 1):
/// retry_min * 2^(failures-1), at most `cap`.
std::chrono::milliseconds backoff_delay(unsigned failures, std::chrono::milliseconds retry_min,
                                        std::chrono::milliseconds cap);

/// Removes our own addresses from `peers` (returns whether any was there), then sorts them by
/// (address, port, target) and keeps one entry per (address, port).
bool finalize_peers(std::vector<DiscoveredPeer>& peers, const std::vector<SelfAddress>& self);

}  // namespace brokerha::discovery
