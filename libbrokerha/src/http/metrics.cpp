// SPDX-License-Identifier: Apache-2.0
// /metrics: the Prometheus text exposition (format 0.0.4) of the broker, the bus, the HTTP
// API, the process and (cluster mode) the cluster. docs/api.md lists the metrics.
//
// Threads: cpp-httplib's request pool threads, concurrently; the values are read through the
// thread-safe Broker and Bus APIs at scrape time.

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "http/api_impl.hpp"
#include "http/process_stats.hpp"

namespace brokerha {

namespace {

using http::Reply;

// Prometheus label values: backslash, double quote and newline escaped.
std::string label_value(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// Cluster counters and one series per data-plane link (cluster mode only).
void append_cluster_metrics(std::string& out, const ClusterInfo& ci) {
  if (!ci.enabled) return;
  auto n = [](auto v) { return std::to_string(v); };
  auto one = [&](const char* name, const char* type, const char* help, const std::string& v) {
    out += std::string("# HELP ") + name + ' ' + help + "\n# TYPE " + name + ' ' + type + '\n' +
           name + ' ' + v + '\n';
  };
  one("broker_cluster_messages_forwarded_total", "counter",
      "Message copies queued to peers (one per peer).", n(ci.messages_forwarded));
  one("broker_cluster_messages_received_total", "counter", "Messages received from peers.",
      n(ci.messages_received));
  one("broker_cluster_forward_dropped_total", "counter",
      "Message copies refused because a peer's link queue was full.", n(ci.forward_dropped));
  one("broker_cluster_malformed_frames_total", "counter",
      "Data-plane frames from peers that did not decode.", n(ci.malformed_frames));
  one("broker_cluster_route_ack_timeouts_total", "counter",
      "SUBACKs sent before every peer acknowledged the route.", n(ci.route_ack_timeouts));
  one("broker_cluster_retained_applied_total", "counter",
      "Replicated retained entries that were newer than the local copy.", n(ci.retained_applied));
  one("broker_cluster_claims_total", "counter",
      "Connects on this node that claimed their client id cluster-wide.", n(ci.claims));
  one("broker_cluster_claims_lost_total", "counter",
      "Claims that lost to a newer claim on the same client id.", n(ci.claims_lost));
  one("broker_cluster_claim_timeouts_total", "counter",
      "Claims that went ahead without the arbiter's or a peer's answer.", n(ci.claim_timeouts));
  one("broker_cluster_sessions_moved_in_total", "counter",
      "Sessions received from other nodes when their clients resumed here.",
      n(ci.sessions_moved_in));
  one("broker_cluster_sessions_moved_out_total", "counter", "Sessions handed to other nodes.",
      n(ci.sessions_moved_out));
  one("broker_cluster_sessions_taken_over_total", "counter",
      "Local sessions ended or moved because their client id was claimed elsewhere.",
      n(ci.sessions_taken_over));
  one("broker_cluster_shared_dropped_total", "counter",
      "Messages for a shared group this node was chosen for after its last member left.",
      n(ci.shared_dropped));
  one("broker_cluster_membership_dropped_total", "counter",
      "Membership packets dropped (malformed, wrong key or label).", n(ci.membership.dropped));
  one("broker_cluster_probe_failures_total", "counter", "Failed membership probes.",
      n(ci.membership.probe_failures));
  one("broker_cluster_local_health", "gauge", "Lifeguard's local health score (0 = healthy).",
      n(ci.health));
  out +=
      "# HELP broker_cluster_member_events_total Membership events about peers: joined, left "
      "(gracefully), failed.\n# TYPE broker_cluster_member_events_total counter\n"
      "broker_cluster_member_events_total{event=\"join\"} " +
      n(ci.members_joined) + "\nbroker_cluster_member_events_total{event=\"leave\"} " +
      n(ci.members_left) + "\nbroker_cluster_member_events_total{event=\"failed\"} " +
      n(ci.members_failed) + "\n";
  struct Series {
    const char* name;
    const char* type;
    const char* help;
    std::function<std::string(const ClusterLinkInfo&)> value;
  };
  const Series series[] = {
      {"broker_cluster_link_up", "gauge", "1 while the link to the peer is connected.",
       [&](const ClusterLinkInfo& l) { return n(l.connected ? 1 : 0); }},
      {"broker_cluster_link_sent_total", "counter", "Frames written to the peer.",
       [&](const ClusterLinkInfo& l) { return n(l.frames_sent); }},
      {"broker_cluster_link_acked_total", "counter", "Frames the peer acknowledged.",
       [&](const ClusterLinkInfo& l) { return n(l.frames_acked); }},
      {"broker_cluster_link_received_total", "counter", "Frames received from the peer.",
       [&](const ClusterLinkInfo& l) { return n(l.frames_received); }},
      {"broker_cluster_link_failed_total", "counter",
       "Failed connects, lost links and refused handshakes.",
       [&](const ClusterLinkInfo& l) { return n(l.failures); }},
      {"broker_cluster_link_dropped_total", "counter", "Frames refused: the queue was full.",
       [&](const ClusterLinkInfo& l) { return n(l.dropped); }},
      {"broker_cluster_link_queue_frames", "gauge", "Frames queued or unacknowledged.",
       [&](const ClusterLinkInfo& l) { return n(l.queue_frames); }},
      {"broker_cluster_link_queue_bytes", "gauge", "Bytes queued or unacknowledged.",
       [&](const ClusterLinkInfo& l) { return n(l.queue_bytes); }},
  };
  for (const Series& m : series) {
    out +=
        std::string("# HELP ") + m.name + ' ' + m.help + "\n# TYPE " + m.name + ' ' + m.type + '\n';
    for (const ClusterLinkInfo& l : ci.links) {
      out += std::string(m.name) + "{peer=\"" + label_value(l.peer) + "\"} " + m.value(l) + '\n';
    }
  }
  const char* rtt = "broker_cluster_link_rtt_seconds";
  out +=
      std::string("# HELP ") + rtt + " Round trip of link pings.\n# TYPE " + rtt + " histogram\n";
  for (const ClusterLinkInfo& l : ci.links) {
    const std::string peer = "peer=\"" + label_value(l.peer) + "\"";
    for (const auto& [bound, count] : l.rtt_buckets) {
      char le[32];
      std::snprintf(le, sizeof le, "%g", bound);
      out += std::string(rtt) + "_bucket{" + peer + ",le=\"" + le + "\"} " + n(count) + '\n';
    }
    out += std::string(rtt) + "_bucket{" + peer + ",le=\"+Inf\"} " + n(l.rtt_count) + '\n';
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.9g", l.rtt_sum);
    out += std::string(rtt) + "_sum{" + peer + "} " + sum + '\n';
    out += std::string(rtt) + "_count{" + peer + "} " + n(l.rtt_count) + '\n';
  }
}

}  // namespace

Reply ApiServer::Impl::metrics(const httplib::Request&) {
  const BrokerStats s = broker.stats();
  const std::vector<ApiMember> members = member_list();
  const http::ProcessStats p = http::read_process_stats();
  std::size_t suspect = 0;
  for (const ApiMember& m : members) suspect += m.state != 0 ? 1 : 0;
  auto n = [](auto v) { return std::to_string(v); };
  struct Metric {
    const char* name;
    const char* type;
    const char* help;
    std::string value;
  };
  const Metric table[] = {
      // broker-ha's gauges, same names and meaning.
      {"broker_clients_connected", "gauge", "Connected MQTT clients.", n(s.clients_connected)},
      {"broker_cluster_members", "gauge", "Members of the cluster, this node included.",
       n(members.size())},
      {"broker_cluster_member_health", "gauge",
       "Health score of this member (0 = healthy; suspect members seen).", n(suspect)},
      {"broker_retained_messages", "gauge", "Retained messages stored.", n(s.retained_messages)},
      {"broker_subscriptions", "gauge", "Subscriptions of all sessions.", n(s.subscriptions)},
      {"broker_uptime", "gauge", "Seconds since the broker started.", n(s.uptime.count())},
      {"broker_messages_recv", "gauge", "PUBLISH packets received from clients.",
       n(s.messages_received)},
      {"broker_messages_sent", "gauge", "PUBLISH packets sent to clients.", n(s.messages_sent)},
      {"broker_messages_dropped", "gauge", "Deliveries dropped (queue full, expired).",
       n(s.messages_dropped)},
      {"broker_inflight_messages", "gauge", "Unacknowledged QoS 1/2 deliveries.",
       n(s.inflight_messages)},
      // Improved.
      {"broker_sessions", "gauge", "Sessions, connected or not.", n(s.sessions)},
      {"broker_received_bytes_total", "counter", "Bytes received from MQTT clients.",
       n(s.bytes_received)},
      {"broker_sent_bytes_total", "counter", "Bytes sent to MQTT clients.", n(s.bytes_sent)},
      {"broker_connections_total", "counter", "MQTT connections accepted.", n(s.connections_total)},
      {"broker_auth_failures_total", "counter", "MQTT connections refused by authentication.",
       n(s.auth_failures)},
      {"broker_acl_denials_total", "counter", "Publishes and deliveries denied by the ACL.",
       n(s.acl_denials)},
      {"broker_protocol_errors_total", "counter",
       "Connections closed for malformed or invalid input.", n(s.protocol_errors)},
      {"broker_draining", "gauge", "1 while the broker drains before stopping (SIGTERM).",
       n(broker.draining() ? 1 : 0)},
      {"broker_api_sse_clients", "gauge", "Open SSE streams.", n(sse_clients.load())},
      {"broker_api_sse_events_total", "counter", "Events written to SSE streams.",
       n(sse_events.load())},
      {"broker_api_requests_total", "counter", "HTTP API requests.", n(requests.load())},
      {"broker_api_auth_failures_total", "counter", "HTTP API requests refused (401).",
       n(auth_failures.load())},
      // Process (the names of the Prometheus client libraries).
      {"process_cpu_seconds_total", "counter", "User and system CPU time in seconds.",
       n(p.cpu_seconds)},
      {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
       n(p.resident_bytes)},
      {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
       n(p.virtual_bytes)},
      {"process_open_fds", "gauge", "Open file descriptors.", n(p.open_fds)},
      {"process_max_fds", "gauge", "Maximum number of open file descriptors.", n(p.max_fds)},
      {"process_threads", "gauge", "Threads of the process.", n(p.threads)},
      {"process_start_time_seconds", "gauge", "Start time of the process (unix seconds).",
       n(p.start_time_seconds)},
  };
  std::string out;
  for (const Metric& m : table) {
    out += std::string("# HELP ") + m.name + ' ' + m.help + "\n# TYPE " + m.name + ' ' + m.type +
           '\n' + m.name + ' ' + m.value + '\n';
  }
  out +=
      "# HELP broker_bus_dropped_total Bus events dropped because a subscriber's buffer was "
      "full.\n# TYPE broker_bus_dropped_total counter\n";
  for (const auto& [channel, dropped] : bus.dropped_by_channel()) {
    out +=
        "broker_bus_dropped_total{channel=\"" + label_value(channel) + "\"} " + n(dropped) + "\n";
  }
  append_cluster_metrics(out, broker.cluster());
  return Reply{200, std::move(out), "text/plain; version=0.0.4; charset=utf-8"};
}

}  // namespace brokerha
