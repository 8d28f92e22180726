// SPDX-License-Identifier: Apache-2.0
// /metrics as a table of metric descriptors. Each row of kFamilies is one metric family: its
// name, type and HELP text, whether it exists only in cluster mode, and a reader that takes
// the family's samples from the snapshot (one unlabelled value, or one series per bus channel,
// per peer link, per event, or a histogram's buckets, sum and count). render_metrics() is the
// one loop that writes every row: "# HELP", "# TYPE", then each sample as
// `name[suffix]{label="value",...} value`, label values escaped.
//
// To add a metric, add a row (docs/api.md lists the names). Values are written as
// std::to_string writes them (integers exactly; doubles with six decimals), except the
// histogram's bounds (%g) and sum (%.9g).
//
// Threads: ApiServer::Impl::metrics() (the /metrics handler, at the end) runs on one of
// cpp-httplib's request pool threads; it takes the snapshot through the thread-safe Broker
// and Bus APIs, then renders it without locks.

#include "http/metrics.hpp"

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "http/api_impl.hpp"

namespace brokerha::http {

namespace {

using Snapshot = MetricsSnapshot;

// A sample's value as Prometheus text. Implicit from numbers, so a reader writes o.add(n).
struct Value {
  template <typename T,
            std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Value(T v) : text(std::to_string(v)) {}
  Value(bool v) : text(v ? "1" : "0") {}
  explicit Value(std::string t) : text(std::move(t)) {}
  std::string text;
};

// Label names and values of one series, in order.
using Labels = std::initializer_list<std::pair<const char*, std::string_view>>;

// Prometheus label values: backslash, double quote and newline escaped.
void append_label_value(std::string& out, std::string_view s) {
  for (const char c : s) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
}

// Where a family's reader writes its samples: one line each, under the family's name.
class Samples {
 public:
  Samples(std::string& out, const char* name) : out_(out), name_(name) {}

  void add(const Value& v, Labels labels = {}, const char* suffix = "") {
    out_ += name_;
    out_ += suffix;
    if (labels.size() != 0) {
      char sep = '{';
      for (const auto& [label, value] : labels) {
        out_ += sep;
        out_ += label;
        out_ += "=\"";
        append_label_value(out_, value);
        out_ += '"';
        sep = ',';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += v.text;
    out_ += '\n';
  }

 private:
  std::string& out_;
  const char* name_;
};

enum class Scope { always, cluster };  // cluster: only when the snapshot's cluster is enabled

struct Family {
  const char* name;
  const char* type;  // counter, gauge or histogram
  Scope scope;
  const char* help;
  void (*read)(const Snapshot&, Samples&);
};

// Readers shared by several rows.

template <auto Field>
void per_link(const Snapshot& s, Samples& out) {  // one series per data-plane link
  for (const ClusterLinkInfo& l : s.cluster.links) out.add(l.*Field, {{"peer", l.peer}});
}

void per_channel_dropped(const Snapshot& s, Samples& out) {
  for (const auto& [channel, dropped] : s.bus_dropped) out.add(dropped, {{"channel", channel}});
}

void member_events(const Snapshot& s, Samples& out) {
  out.add(s.cluster.members_joined, {{"event", "join"}});
  out.add(s.cluster.members_left, {{"event", "leave"}});
  out.add(s.cluster.members_failed, {{"event", "failed"}});
}

void link_rtt(const Snapshot& s, Samples& out) {  // cumulative buckets, +Inf, sum, count
  for (const ClusterLinkInfo& l : s.cluster.links) {
    for (const auto& [bound, count] : l.rtt_buckets) {
      char le[32];
      std::snprintf(le, sizeof le, "%g", bound);
      out.add(count, {{"peer", l.peer}, {"le", le}}, "_bucket");
    }
    out.add(l.rtt_count, {{"peer", l.peer}, {"le", "+Inf"}}, "_bucket");
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.9g", l.rtt_sum);
    out.add(Value(std::string(sum)), {{"peer", l.peer}}, "_sum");
    out.add(l.rtt_count, {{"peer", l.peer}}, "_count");
  }
}

std::size_t suspect_members(const Snapshot& s) {
  return static_cast<std::size_t>(std::count_if(s.members.begin(), s.members.end(),
                                                [](const ApiMember& m) { return m.state != 0; }));
}

constexpr Scope kAll = Scope::always;
constexpr Scope kCluster = Scope::cluster;

// In the order they are written.
const Family
    kFamilies[] =
        {
            // broker-ha's gauges, same names and meaning.
            {"broker_clients_connected", "gauge", kAll, "Connected MQTT clients.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.clients_connected); }},
            {"broker_cluster_members", "gauge", kAll, "Members of the cluster, this node included.",
             [](const Snapshot& s, Samples& o) { o.add(s.members.size()); }},
            {"broker_cluster_member_health", "gauge", kAll,
             "Health score of this member (0 = healthy; suspect members seen).",
             [](const Snapshot& s, Samples& o) { o.add(suspect_members(s)); }},
            {"broker_cluster_insecure", "gauge", kAll,
             "1 when the cluster runs without authenticating its members (cluster.insecure), "
             "else 0.",
             [](const Snapshot& s, Samples& o) {
               o.add(std::uint64_t{s.cluster.enabled && s.cluster.insecure ? 1u : 0u});
             }},
            {"broker_retained_messages", "gauge", kAll, "Retained messages stored.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.retained_messages); }},
            {"broker_subscriptions", "gauge", kAll, "Subscriptions of all sessions.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.subscriptions); }},
            {"broker_uptime", "gauge", kAll, "Seconds since the broker started.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.uptime.count()); }},
            {"broker_messages_recv", "gauge", kAll, "PUBLISH packets received from clients.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.messages_received); }},
            {"broker_messages_sent", "gauge", kAll, "PUBLISH packets sent to clients.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.messages_sent); }},
            {"broker_messages_dropped", "gauge", kAll, "Deliveries dropped (queue full, expired).",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.messages_dropped); }},
            {"broker_inflight_messages", "gauge", kAll, "Unacknowledged QoS 1/2 deliveries.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.inflight_messages); }},
            // Improved.
            {"broker_sessions", "gauge", kAll, "Sessions, connected or not.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.sessions); }},
            {"broker_received_bytes_total", "counter", kAll, "Bytes received from MQTT clients.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.bytes_received); }},
            {"broker_sent_bytes_total", "counter", kAll, "Bytes sent to MQTT clients.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.bytes_sent); }},
            {"broker_connections_total", "counter", kAll, "MQTT connections accepted.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.connections_total); }},
            {"broker_auth_failures_total", "counter", kAll,
             "MQTT connections refused by authentication.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.auth_failures); }},
            {"broker_acl_denials_total", "counter", kAll,
             "Publishes and deliveries denied by the ACL.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.acl_denials); }},
            {"broker_protocol_errors_total", "counter", kAll,
             "Connections closed for malformed or invalid input.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.protocol_errors); }},
            {"broker_accept_errors_total", "counter", kAll,
             "Failed accepts on the MQTT listeners (out of descriptors...), each followed by a "
             "back-off.",
             [](const Snapshot& s, Samples& o) { o.add(s.broker.accept_errors); }},
            {"broker_limit_hits_total", "counter", kAll,
             "Connections, subscriptions and clients refused by an overload limit "
             "(docs/security.md).",
             [](const Snapshot& s, Samples& o) {
               o.add(s.broker.connections_refused, {{"limit", "max_connections"}});
               o.add(s.broker.connection_rate_refused, {{"limit", "max_connection_rate"}});
               o.add(s.broker.subscriptions_refused, {{"limit", "max_subscriptions"}});
               o.add(s.broker.publish_rate_limited, {{"limit", "max_publish_rate"}});
               o.add(s.broker.session_bytes_dropped, {{"limit", "max_session_queued_bytes"}});
               o.add(s.cluster.inbound_links_refused, {{"limit", "cluster_inbound_links"}});
             }},
            {"broker_draining", "gauge", kAll,
             "1 while the broker drains before stopping (SIGTERM).",
             [](const Snapshot& s, Samples& o) { o.add(s.draining); }},
            {"broker_api_sse_clients", "gauge", kAll, "Open SSE streams.",
             [](const Snapshot& s, Samples& o) { o.add(s.api.sse_clients); }},
            {"broker_api_sse_events_total", "counter", kAll, "Events written to SSE streams.",
             [](const Snapshot& s, Samples& o) { o.add(s.api.sse_events); }},
            {"broker_api_requests_total", "counter", kAll, "HTTP API requests.",
             [](const Snapshot& s, Samples& o) { o.add(s.api.requests); }},
            {"broker_api_auth_failures_total", "counter", kAll, "HTTP API requests refused (401).",
             [](const Snapshot& s, Samples& o) { o.add(s.api.auth_failures); }},
            // Process (the names of the Prometheus client libraries).
            {"process_cpu_seconds_total", "counter", kAll, "User and system CPU time in seconds.",
             [](const Snapshot& s, Samples& o) { o.add(s.process.cpu_seconds); }},
            {"process_resident_memory_bytes", "gauge", kAll, "Resident memory size in bytes.",
             [](const Snapshot& s, Samples& o) { o.add(s.process.resident_bytes); }},
            {"process_virtual_memory_bytes", "gauge", kAll, "Virtual memory size in bytes.",
             [](const Snapshot& s, Samples& o) { o.add(s.process.virtual_bytes); }},
            {"process_open_fds", "gauge", kAll, "Open file descriptors.",
             [](const Snapshot& s, Samples& o) { o.add(s.process.open_fds); }},
            {"process_max_fds", "gauge", kAll, "Maximum number of open file descriptors.",
             [](const Snapshot& s, Samples& o) { o.add(s.process.max_fds); }},
            {"process_threads", "gauge", kAll, "Threads of the process.",
             [](const Snapshot& s, Samples& o) { o.add(s.process.threads); }},
            {"process_start_time_seconds", "gauge", kAll,
             "Start time of the process (unix seconds).",
             [](const Snapshot& s, Samples& o) { o.add(s.process.start_time_seconds); }},
            // The bus, one series per channel.
            {"broker_bus_dropped_total", "counter", kAll,
             "Bus events dropped because a subscriber's buffer was full.", per_channel_dropped},
            // Cluster mode: this node's cluster counters.
            {"broker_cluster_messages_forwarded_total", "counter", kCluster,
             "Message copies queued to peers (one per peer).",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.messages_forwarded); }},
            {"broker_cluster_messages_received_total", "counter", kCluster,
             "Messages received from peers.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.messages_received); }},
            {"broker_cluster_forward_dropped_total", "counter", kCluster,
             "Message copies refused because a peer's link queue was full.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.forward_dropped); }},
            {"broker_cluster_retain_dropped_total", "counter", kCluster,
             "Frames still queued for a failed peer when link_retain ran out.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.retain_dropped); }},
            {"broker_cluster_malformed_frames_total", "counter", kCluster,
             "Data-plane frames from peers that did not decode.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.malformed_frames); }},
            {"broker_cluster_oversized_frames_total", "counter", kCluster,
             "Control frames larger than a link can carry, never sent.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.oversized_frames); }},
            {"broker_cluster_incompatible_peers_total", "counter", kCluster,
             "Peers whose cluster protocol versions do not meet this node's.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.incompatible_peers); }},
            {"broker_cluster_route_ack_timeouts_total", "counter", kCluster,
             "SUBACKs sent before every peer acknowledged the route.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.route_ack_timeouts); }},
            {"broker_cluster_retained_applied_total", "counter", kCluster,
             "Replicated retained entries that were newer than the local copy.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.retained_applied); }},
            {"broker_cluster_refused_total", "counter", kCluster,
             "Frames or entries from peers refused: versions too far ahead of the wall clock "
             "(cluster.max_clock_skew), answers to no open request.",
             [](const Snapshot& s, Samples& o) {
               o.add(s.cluster.clock_skew_refused, {{"reason", "clock_skew"}});
               o.add(s.cluster.unsolicited_refused, {{"reason", "unsolicited"}});
             }},
            {"broker_cluster_claims_total", "counter", kCluster,
             "Connects on this node that claimed their client id cluster-wide.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.claims); }},
            {"broker_cluster_claims_lost_total", "counter", kCluster,
             "Claims that lost to a newer claim on the same client id.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.claims_lost); }},
            {"broker_cluster_claim_timeouts_total", "counter", kCluster,
             "Claims that went ahead without the arbiter's or a peer's answer.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.claim_timeouts); }},
            {"broker_cluster_sessions_moved_in_total", "counter", kCluster,
             "Sessions received from other nodes when their clients resumed here.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.sessions_moved_in); }},
            {"broker_cluster_sessions_moved_out_total", "counter", kCluster,
             "Sessions handed to other nodes.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.sessions_moved_out); }},
            {"broker_cluster_sessions_taken_over_total", "counter", kCluster,
             "Local sessions ended or moved because their client id was claimed elsewhere.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.sessions_taken_over); }},
            {"broker_cluster_sessions_restored_total", "counter", kCluster,
             "Sessions that started to move to another node and stayed here, offline.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.sessions_restored); }},
            {"broker_cluster_shared_dropped_total", "counter", kCluster,
             "Messages for a shared group this node was chosen for after its last member left.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.shared_dropped); }},
            {"broker_cluster_membership_dropped_total", "counter", kCluster,
             "Membership packets dropped (malformed, wrong key or label).",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.membership.dropped); }},
            {"broker_cluster_probe_failures_total", "counter", kCluster,
             "Failed membership probes.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.membership.probe_failures); }},
            {"broker_cluster_accept_errors_total", "counter", kCluster,
             "Failed accepts on the cluster port (out of descriptors...), each followed by a "
             "back-off.",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.membership.accept_errors); }},
            {"broker_cluster_local_health", "gauge", kCluster,
             "Lifeguard's local health score (0 = healthy).",
             [](const Snapshot& s, Samples& o) { o.add(s.cluster.health); }},
            {"broker_cluster_member_events_total", "counter", kCluster,
             "Membership events about peers: joined, left (gracefully), failed.", member_events},
            // Cluster mode: one series per data-plane link, labelled with the peer's name.
            {"broker_cluster_link_up", "gauge", kCluster,
             "1 while the link to the peer is connected.", per_link<&ClusterLinkInfo::connected>},
            {"broker_cluster_link_sent_total", "counter", kCluster, "Frames written to the peer.",
             per_link<&ClusterLinkInfo::frames_sent>},
            {"broker_cluster_link_acked_total", "counter", kCluster,
             "Frames the peer acknowledged.", per_link<&ClusterLinkInfo::frames_acked>},
            {"broker_cluster_link_received_total", "counter", kCluster,
             "Frames received from the peer.", per_link<&ClusterLinkInfo::frames_received>},
            {"broker_cluster_link_failed_total", "counter", kCluster,
             "Failed connects, lost links and refused handshakes.",
             per_link<&ClusterLinkInfo::failures>},
            {"broker_cluster_link_dropped_total", "counter", kCluster,
             "Frames refused: the queue was full.", per_link<&ClusterLinkInfo::dropped>},
            {"broker_cluster_link_missing_total", "counter", kCluster,
             "Frames the peer numbered and never delivered here (dropped on its side).",
             per_link<&ClusterLinkInfo::missing>},
            {"broker_cluster_link_queue_frames", "gauge", kCluster,
             "Frames queued or unacknowledged.", per_link<&ClusterLinkInfo::queue_frames>},
            {"broker_cluster_link_queue_bytes", "gauge", kCluster,
             "Bytes queued or unacknowledged.", per_link<&ClusterLinkInfo::queue_bytes>},
            {"broker_cluster_link_protocol", "gauge", kCluster,
             "The cluster protocol version spoken with the peer.",
             [](const Snapshot& s, Samples& o) {
               for (const ClusterLinkInfo& l : s.cluster.links) {
                 o.add(static_cast<std::uint64_t>(l.protocol), {{"peer", l.peer}});
               }
             }},
            {"broker_cluster_link_rtt_seconds", "histogram", kCluster, "Round trip of link pings.",
             link_rtt},
};

}  // namespace

std::string render_metrics(const MetricsSnapshot& s) {
  std::string out;
  for (const Family& f : kFamilies) {
    if (f.scope == Scope::cluster && !s.cluster.enabled) continue;
    out += "# HELP ";
    out += f.name;
    out += ' ';
    out += f.help;
    out += "\n# TYPE ";
    out += f.name;
    out += ' ';
    out += f.type;
    out += '\n';
    Samples samples(out, f.name);
    f.read(s, samples);
  }
  return out;
}

}  // namespace brokerha::http

namespace brokerha {

http::Reply ApiServer::Impl::metrics(const httplib::Request&) {
  http::MetricsSnapshot s;
  s.broker = broker.stats();
  s.members = member_list();
  s.process = http::read_process_stats();
  s.draining = broker.draining();
  s.api.sse_clients = sse_clients.load();
  s.api.sse_events = sse_events.load();
  s.api.requests = requests.load();
  s.api.auth_failures = auth_failures.load();
  s.bus_dropped = bus.dropped_by_channel();
  s.cluster = broker.cluster();
  return http::Reply{200, http::render_metrics(s), http::kMetricsContentType};
}

}  // namespace brokerha
