// SPDX-License-Identifier: Apache-2.0
// The probes (docs/api.md, "Probes"): /ready (readiness) and /healthz (liveness), open without
// auth. 200 with {"status":"up",...} when every check passes, else 503 with the failing checks'
// errors. A single node (no discovery) passes the cluster checks; a draining node is live but
// not ready.
//
// Threads: cpp-httplib's request pool threads, concurrently. The pool always keeps
// ApiOptions::threads workers for these (SSE and /proxy are capped), so a probe is answered
// even with every SSE stream open.

#include <cstdio>
#include <ctime>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http/api_impl.hpp"

namespace brokerha {

namespace {

using http::Reply;

std::string rfc3339_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
  const auto nanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() %
      1'000'000'000;
  char out[64];
  std::snprintf(out, sizeof out, "%s.%09lldZ", date, static_cast<long long>(nanos));
  return out;
}

// docs/cluster.md, "Health": ready when joined to at least one peer, or provably alone (discovery
// named nobody else for expected_members x refresh_interval). One dead peer changes
// neither: the survivors still have each other.
ClusterHealth cluster_health(const ClusterInfo& ci) {
  ClusterHealth h;
  h.discovery = ci.discovery_configured;
  h.discovered_members = ci.members.size();
  if (!ci.discovery_configured) return h;
  const bool joined = ci.members.size() > 1;
  if (!joined && !ci.provably_alone) {
    std::string why = "not joined to a cluster yet";
    if (!ci.discovery_error.empty()) why += " (discovery: " + ci.discovery_error + ")";
    h.cluster_error = why;
  }
  if (ci.port == 0) h.member_error = "the cluster port is not bound";
  if (joined && !ci.caught_up) {
    h.catching_up =
        "joined; catching up: the route sets of its peers and the retained "
        "messages have not all arrived yet";
  }
  return h;
}

// The probe's checks (name, error when failing), rendered.
Reply health(const ApiOptions& options, Broker& broker, bool liveness) {
  ClusterHealth h = options.cluster_health ? options.cluster_health() : [&] {
    const ClusterInfo ci = broker.cluster();
    return ci.enabled ? cluster_health(ci) : ClusterHealth{};
  }();
  if (!h.discovery) h = ClusterHealth{};  // single node: the cluster checks pass
  // A draining node (Broker::drain, SIGTERM) takes no new clients: not ready, still live.
  if (!liveness && broker.draining()) {
    h.cluster_error = "draining: this node is shutting down";
  }
  std::vector<std::pair<const char*, std::optional<std::string>>> checks;
  if (liveness) {
    checks.emplace_back("liveness_cluster_health", h.cluster_error);
    std::optional<std::string> alone;
    if (h.discovery && options.expected_members > 1 && h.discovered_members < 2) {
      alone = "only this node was discovered, " + std::to_string(options.expected_members) +
              " members are expected";
    }
    checks.emplace_back("liveness_cluster_discovered_members", alone);
    checks.emplace_back("liveness_member_in_cluster", h.member_error);
  } else {
    checks.emplace_back("readiness_cluster_health",
                        h.cluster_error ? h.cluster_error : h.catching_up);
  }
  const std::string now = rfc3339_now();
  bool up = true;
  rapidjson::StringBuffer buf;
  http::JsonWriter w(buf);
  w.StartObject();
  w.Key("status");
  for (const auto& c : checks) up = up && !c.second;
  w.String(up ? "up" : "down");
  w.Key("details");
  w.StartObject();
  for (const auto& [name, error] : checks) {
    w.Key(name);
    w.StartObject();
    w.Key("status");
    w.String(error ? "down" : "up");
    w.Key("timestamp");
    http::write_string(w, now);
    if (error) {
      w.Key("error");
      http::write_string(w, *error);
    }
    w.EndObject();
  }
  w.EndObject();
  w.EndObject();
  return Reply{up ? 200 : 503, buf.GetString()};
}

}  // namespace

Reply ApiServer::Impl::ready(const httplib::Request&) { return health(options, broker, false); }

Reply ApiServer::Impl::healthz(const httplib::Request&) { return health(options, broker, true); }

}  // namespace brokerha
