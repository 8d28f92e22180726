// SPDX-License-Identifier: Apache-2.0
#include "discovery/plan.hpp"

#include <brokerha/error.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <system_error>
#include <tuple>

namespace brokerha::discovery {

namespace {

[[noreturn]] void invalid(const std::string& what) {
  throw std::system_error(make_error_code(errc::invalid_argument), "discovery: " + what);
}

// "1".."65535" only: no sign, no spaces, no leading '+'.
std::optional<std::uint16_t> parse_port(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v == 0 || v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

bool is_label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

}  // namespace

std::optional<std::string> canonical_ip(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  char out[INET6_ADDRSTRLEN] = {};
  in_addr v4{};
  if (::inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    if (::inet_ntop(AF_INET, &v4, out, sizeof out) == nullptr) return std::nullopt;
    return std::string(out);
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    if (::inet_ntop(AF_INET6, &v6, out, sizeof out) == nullptr) return std::nullopt;
    return std::string(out);
  }
  return std::nullopt;
}

bool valid_dns_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!is_label_char(c) || ++label > 63) return false;
  }
  return label != 0;
}

std::optional<HostPort> parse_host_port(std::string_view text, std::uint16_t default_port) {
  HostPort hp;
  hp.port = default_port;
  std::string_view host = text;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      const auto port = parse_port(rest.substr(1));
      if (!port) return std::nullopt;
      hp.port = *port;
    }
    // Brackets hold an IPv6 literal, nothing else.
    if (host.find(':') == std::string_view::npos) return std::nullopt;
  } else {
    const std::size_t colon = text.find(':');
    if (colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
      host = text.substr(0, colon);
      const auto port = parse_port(text.substr(colon + 1));
      if (!port) return std::nullopt;
      hp.port = *port;
    }
    // Two colons or more without brackets: a bare IPv6 literal (checked below).
  }
  if (auto ip = canonical_ip(host)) {
    hp.host = *ip;
    hp.is_ip = true;
    return hp;
  }
  if (host.find(':') != std::string_view::npos || !valid_dns_name(host)) return std::nullopt;
  hp.host = std::string(host);
  return hp;
}

Plan make_plan(const DiscoveryOptions& o) {
  using std::chrono::milliseconds;
  Plan p;
  if (!o.domain.empty()) {
    if (!valid_dns_name(o.domain)) invalid("domain \"" + o.domain + "\" is not a DNS name");
    p.domain = o.domain;
  }
  if (o.default_port == 0) invalid("default_port must not be 0");
  p.default_port = o.default_port;
  for (const std::string& m : o.members) {
    auto hp = parse_host_port(m, o.default_port);
    if (!hp) invalid("member \"" + m + "\" is not host, host:port or an IP literal");
    p.members.push_back(std::move(*hp));
  }
  for (const std::string& ns : o.nameservers) {
    auto hp = parse_host_port(ns, 53);
    if (!hp || !hp->is_ip) invalid("nameserver \"" + ns + "\" is not ip or ip:port");
    if (!p.servers_csv.empty()) p.servers_csv += ',';
    const bool v6 = hp->host.find(':') != std::string::npos;
    p.servers_csv += (v6 ? "[" + hp->host + "]" : hp->host) + ":" + std::to_string(hp->port);
  }
  for (const std::string& s : o.self_addresses) {
    auto hp = parse_host_port(s, 0);
    if (!hp || !hp->is_ip) invalid("self address \"" + s + "\" is not ip or ip:port");
    p.self.push_back(SelfAddress{hp->host, hp->port});
  }
  const milliseconds kMinute{60000};
  if (o.refresh_interval <= milliseconds::zero()) invalid("refresh_interval must be positive");
  if (o.retry_min <= milliseconds::zero()) invalid("retry_min must be positive");
  if (o.retry_max < o.retry_min) invalid("retry_max must not be below retry_min");
  if (o.query_timeout <= milliseconds::zero() || o.query_timeout > kMinute) {
    invalid("query_timeout must be in (0, 60000] ms");
  }
  p.refresh_interval = o.refresh_interval;
  p.retry_min = o.retry_min;
  p.retry_cap = std::min(o.retry_max, o.refresh_interval);
  p.query_timeout = o.query_timeout;
  return p;
}

std::chrono::milliseconds backoff_delay(unsigned failures, std::chrono::milliseconds retry_min,
                                        std::chrono::milliseconds cap) {
  std::chrono::milliseconds d = std::min(retry_min, cap);
  for (unsigned i = 1; i < failures && d < cap; ++i) {
    d = d > cap / 2 ? cap : d * 2;
  }
  return std::min(d, cap);
}

bool finalize_peers(std::vector<DiscoveredPeer>& peers, const std::vector<SelfAddress>& self) {
  const auto is_self = [&](const DiscoveredPeer& p) {
    return std::any_of(self.begin(), self.end(), [&](const SelfAddress& s) {
      return s.ip == p.address && (s.port == 0 || s.port == p.port);
    });
  };
  const auto before = peers.size();
  peers.erase(std::remove_if(peers.begin(), peers.end(), is_self), peers.end());
  const bool self_seen = peers.size() != before;
  std::sort(peers.begin(), peers.end(), [](const DiscoveredPeer& a, const DiscoveredPeer& b) {
    return std::tie(a.address, a.port, a.target) < std::tie(b.address, b.port, b.target);
  });
  peers.erase(std::unique(peers.begin(), peers.end(),
                          [](const DiscoveredPeer& a, const DiscoveredPeer& b) {
                            return a.address == b.address && a.port == b.port;
                          }),
              peers.end());
  return self_seen;
}

}  // namespace brokerha::discovery
