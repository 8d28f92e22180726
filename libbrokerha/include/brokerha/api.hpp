// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha::ApiServer: the HTTP API of docs/api.md (broker-ha compatible endpoints,
// Server-Sent Events from the Bus, probes, Prometheus metrics, /debug introspection and the
// /proxy fan-out to every cluster member).
//
//   brokerha::ApiOptions api;
//   api.bind = "127.0.0.1";
//   api.port = 0;                                   // a free port: see port()
//   brokerha::ApiServer server(api, broker, *bus);  // broker started (or not) by the caller
//   server.start();  // binds synchronously; throws std::system_error
//   server.stop();   // idempotent; bounded with SSE streams open
//
// Threads: the server runs its own listener thread and a fixed pool of request threads
// (ApiOptions::threads + max_sse_clients + max_proxy_calls). An SSE stream holds one pool
// thread for its life, a /proxy call one while it waits for the members; both are capped
// (503 beyond the cap) so probes and /metrics always find a thread. Handlers call only the
// thread-safe Broker snapshot API. The `members` and `cluster_health` callbacks run on a
// request thread, concurrently: they must be thread-safe and must not block for long.
//
// Thread safety: start(), stop() and port() may be called from any thread. The Broker and Bus
// must outlive the ApiServer (or at least its stop()).

#include <brokerha/export.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace brokerha {

class Broker;
class Bus;

/// One cluster member as `/api/discovery/members` shows it (memberlist's Node) plus where
/// its HTTP API listens, for /proxy.
struct ApiMember {
  std::string name;
  std::string address;         // IP address
  std::uint16_t port = 0;      // membership port
  std::uint16_t api_port = 0;  // HTTP API port; 0 = the same as this node's
  std::string meta;            // raw bytes (rendered base64, as Go renders []byte)
  int state = 0;               // 0 alive, 1 suspect
  // Protocol and delegate versions as memberlist advertises them.
  int pmin = 1, pmax = 5, pcur = 2;
  int dmin = 0, dmax = 0, dcur = 0;
  bool self = false;  // this node: /proxy answers its part in-process
};

/// What the cluster reports to the probes. The defaults are a single node (every check
/// passes). An error string makes that check fail with it.
struct ClusterHealth {
  /// Discovery is configured (otherwise the cluster checks pass and expected_members is
  /// not used).
  bool discovery = false;
  /// `readiness_cluster_health` and `liveness_cluster_health`: set when this node is not
  /// (yet) joined or provably alone.
  std::optional<std::string> cluster_error;
  /// `liveness_member_in_cluster`: set when this node is not a member of its cluster.
  std::optional<std::string> member_error;
  /// `readiness_cluster_health` only: joined, but the peers' route sets or the retained
  /// snapshot have not all arrived yet (ClusterInfo::caught_up).
  std::optional<std::string> catching_up;
  /// Members this node knows (itself included), for `liveness_cluster_discovered_members`.
  std::size_t discovered_members = 1;
};

/// ApiServer settings (`api.*` of the server's config).
struct ApiOptions {
  std::string bind = "0.0.0.0";
  std::uint16_t port = 8080;  // 0 = a free port (ApiServer::port())
  /// Basic-auth users (name -> password) for /api, /proxy and /debug; empty = no auth.
  std::map<std::string, std::string> users;
  unsigned expected_members = 3;  // `cluster.expected_members`, for /healthz
  std::string node_name;          // this node's name; empty = the host name
  unsigned max_sse_clients = 16;  // concurrent SSE streams; more get 503
  /// Event data one SSE stream may hold unsent (its bus buffer): events beyond it are dropped
  /// and counted (`broker_bus_dropped_total`); 0 = bounded by channel_size alone.
  std::size_t max_sse_buffer_bytes = 8 * 1024 * 1024;
  unsigned max_proxy_calls = 4;  // concurrent /proxy requests; more get 503
  unsigned threads = 4;          // request threads reserved for everything else (probes...)
  std::chrono::milliseconds proxy_timeout{5000};   // per member of a /proxy call
  std::chrono::milliseconds sse_keepalive{30000};  // an SSE comment at least this often
  std::size_t max_body_bytes = 1024 * 1024;        // request bodies above it: 413
  /// The cluster's members (called per request). Null = Broker::cluster()'s members in
  /// cluster mode (their API port from the "api=<port>" metadata), else only this node.
  std::function<std::vector<ApiMember>()> members;
  /// The keys that sign the requests /proxy forwards (the first) and that verify the
  /// signed requests other members forward here (any), in place of Basic auth; called per
  /// request. Null = the cluster's keyring in cluster mode (Broker::set_cluster_keys), else
  /// none. None: /proxy answers for this node only. docs/api.md, "/proxy".
  std::function<std::vector<std::string>()> proxy_keys;
  /// The cluster's state for /ready and /healthz (called per probe). Null = derived from
  /// Broker::cluster() in cluster mode (docs/api.md, "Probes"), else a single node.
  std::function<ClusterHealth()> cluster_health;
};

class BROKERHA_API ApiServer {
 public:
  /// `broker` and `bus` must outlive this object.
  ApiServer(ApiOptions options, Broker& broker, Bus& bus);
  ~ApiServer();  // stops
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  /// Binds (synchronously) and starts serving on the server's own threads. Throws
  /// std::system_error when the address cannot be bound or the server was started already.
  void start();
  /// As start(), reporting the error instead of throwing.
  void start(std::error_code& ec) noexcept;

  /// Ends SSE streams, stops listening and joins the threads. Idempotent; any thread but
  /// the server's own. Bounded: SSE loops notice within a fraction of a second, /proxy calls
  /// within their timeout.
  void stop() noexcept;

  /// The bound port (0 before start()).
  std::uint16_t port() const noexcept;

  /// The node name in use (ApiOptions::node_name or the host name).
  const std::string& node_name() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace brokerha
