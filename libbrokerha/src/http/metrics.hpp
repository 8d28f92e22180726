// SPDX-License-Identifier: Apache-2.0
#pragma once
// /metrics: the Prometheus text exposition (format 0.0.4) of one snapshot of the broker, the
// bus, the HTTP API, the process and (cluster mode) the cluster. The metric families are a
// table of descriptors in metrics.cpp; docs/api.md lists them.
//
// render_metrics() is a function of its argument: it runs on the cpp-httplib request pool
// thread that took the snapshot (ApiServer::Impl::metrics()).

#include <brokerha/api.hpp>
#include <brokerha/broker.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "http/process_stats.hpp"

namespace brokerha::http {

/// The HTTP API's own counters.
struct ApiCounters {
  std::uint64_t sse_clients = 0;  // open SSE streams
  std::uint64_t sse_events = 0;   // events written to them
  std::uint64_t requests = 0;
  std::uint64_t auth_failures = 0;  // 401 replies
};

/// Everything one scrape shows, read once.
struct MetricsSnapshot {
  BrokerStats broker;
  bool draining = false;
  std::vector<ApiMember> members;                    // this node included
  std::map<std::string, std::uint64_t> bus_dropped;  // per bus channel
  ApiCounters api;
  ProcessStats process;
  ClusterInfo cluster;  // its families are left out when !cluster.enabled
};

inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition of `s`: for each family "# HELP", "# TYPE" and its samples.
std::string render_metrics(const MetricsSnapshot& s);

}  // namespace brokerha::http
