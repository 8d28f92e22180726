// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha::Broker: an MQTT 3.1 / 3.1.1 / 5.0 broker that an application embeds.
//
//   brokerha::BrokerOptions opts;
//   opts.listeners.push_back({"127.0.0.1", 0});
//   brokerha::Broker broker(opts);
//   broker.start();                        // binds synchronously; throws std::system_error
//   auto port = broker.listen_endpoints()[0].port;
//   broker.stop();                         // idempotent, any thread
//
// Thread safety: every member function may be called from any thread, except that the
// snapshot functions and publish() must not be called from inside a hook or callback (they
// wait for the broker's I/O threads). Hooks must be added before start().

#include <brokerha/error.hpp>
#include <brokerha/export.hpp>
#include <brokerha/hooks.hpp>
#include <brokerha/membership.hpp>
#include <brokerha/options.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace brokerha {

namespace detail {
struct BrokerAccess;  // the library's own access (testing.hpp's fault injection)
}  // namespace detail

/// One subscription of a client, as SUBSCRIBE gave it.
struct SubscriptionInfo {
  std::string filter;  // without the "$share/{group}/" prefix
  int qos = 0;
  bool no_local = false;
  bool retain_as_published = false;
  int retain_handling = 0;
  std::uint32_t identifier = 0;  // 0 = none
  std::string share_name;        // non-empty for "$share/{group}/..."
};

/// A client session, connected or not.
struct ClientInfo {
  std::string id;
  int protocol_version = 4;
  std::optional<std::string> username;
  bool clean_session = true;
  bool connected = false;
  std::string remote_address;                             // empty when not connected
  std::map<std::string, SubscriptionInfo> subscriptions;  // by full filter as subscribed
  std::size_t inflight = 0;                               // unacknowledged QoS 1/2 deliveries
  std::size_t queued = 0;  // deliveries waiting for the in-flight window or a connection
};

/// A message: retained, in flight, or to publish.
struct MessageInfo {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  bool dup = false;
  std::uint16_t packet_id = 0;  // in-flight messages only
  std::chrono::system_clock::time_point created{};
  std::optional<std::chrono::seconds> expiry;  // remaining message expiry interval
  std::string origin;                          // publishing client id (empty: the host program)
  std::vector<std::pair<std::string, std::string>> user_properties;
  std::optional<std::string> content_type;
  std::optional<std::string> response_topic;
  std::optional<std::string> correlation_data;
  std::optional<int> payload_format;
};

/// Counters and gauges; plain data for /metrics and /api to render.
struct BrokerStats {
  std::uint64_t clients_connected = 0;
  std::uint64_t sessions = 0;
  std::uint64_t subscriptions = 0;
  std::uint64_t retained_messages = 0;
  std::uint64_t inflight_messages = 0;
  std::uint64_t messages_received = 0;  // PUBLISH packets received from clients
  std::uint64_t messages_sent = 0;      // PUBLISH packets sent to clients
  std::uint64_t messages_dropped = 0;   // deliveries dropped (queue full, expired)
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t connections_total = 0;
  std::uint64_t auth_failures = 0;
  std::uint64_t acl_denials = 0;
  std::uint64_t protocol_errors = 0;         // connections closed for malformed or invalid input
  std::uint64_t keepalive_timeouts = 0;      // connections closed for silence past 1.5x keep alive
  std::uint64_t stuck_consumers_closed = 0;  // closed to get the broker under its memory bound
  std::uint64_t accept_errors = 0;  // failed accepts (out of descriptors...), each then a back-off
  // Overload limits hit (BrokerOptions, docs/security.md).
  std::uint64_t connections_refused = 0;      // over max_connections
  std::uint64_t connection_rate_refused = 0;  // over max_connection_rate
  std::uint64_t subscriptions_refused = 0;    // over max_subscriptions (per filter refused)
  std::uint64_t publish_rate_limited = 0;     // connections ended over max_publish_rate
  std::uint64_t session_bytes_dropped = 0;    // deliveries dropped over max_session_queued_bytes
  std::chrono::seconds uptime{0};
};

/// The subscriptions matching one topic name (broker-ha's `/api/mqtt/topic/subscribers`).
/// A client with several matching filters appears once, with its highest-QoS subscription.
struct TopicSubscribers {
  std::map<std::string, std::map<std::string, SubscriptionInfo>> shared;  // group -> client id
  std::map<std::string, SubscriptionInfo> subscriptions;                  // client id
};

/// One data-plane link to a peer (cluster mode).
struct ClusterLinkInfo {
  std::string peer;
  std::string address;  // "ip:port"
  bool connected = false;
  std::uint64_t frames_sent = 0;
  std::uint64_t frames_acked = 0;
  std::uint64_t frames_received = 0;
  std::uint64_t duplicates = 0;  // re-sent frames not delivered twice
  std::uint64_t missing = 0;     // gaps in the peer's numbering: frames it dropped (counted there)
  std::uint64_t dropped =
      0;  // refused (the queue was full), or queued for an incarnation that restarted
  std::uint64_t failures = 0;  // failed connects, lost links, refused handshakes
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::size_t queue_frames = 0;
  std::size_t queue_bytes = 0;
  /// The cluster protocol version spoken with this peer (the highest both speak; 1 until the
  /// peer told its versions, and with a peer that predates the negotiation).
  int protocol = 1;
  /// Round-trip histogram (seconds): cumulative counts of samples <= each bound.
  std::vector<std::pair<double, std::uint64_t>> rtt_buckets;
  std::uint64_t rtt_count = 0;
  double rtt_sum = 0;
};

/// The cluster as this node sees it (Broker::cluster()). `enabled` is false on a single node.
struct ClusterInfo {
  bool enabled = false;
  /// The members are not authenticated: no secret key, or plaintext gossip accepted
  /// (allowed only with ClusterOptions::insecure).
  bool insecure = false;
  std::string node_name;
  std::uint16_t port = 0;       // bound membership and data-plane port
  std::vector<Member> members;  // alive and suspect, this node included
  int health = 0;               // Lifeguard's local health score (0 = healthy)
  // Discovery.
  bool discovery_configured = false;
  bool discovery_ok = false;  // the last lookup succeeded
  std::string discovery_error;
  std::size_t discovered_peers = 0;  // in the last result, this node excluded
  /// Discovery has named nobody but this node for expected_members x refresh_interval.
  bool provably_alone = false;
  /// This node has received a retained snapshot from a peer (or never had a peer).
  bool retained_synced = false;
  /// Joined and caught up: every member's link was up with its route set received and a
  /// retained snapshot was in (or 30 s passed since it joined, or it is provably alone).
  /// Latched; /ready waits for it, so clients reach a node that can route what they publish.
  bool caught_up = false;
  // Data plane.
  std::vector<ClusterLinkInfo> links;
  std::uint64_t messages_forwarded = 0;  // message copies queued to peers
  std::uint64_t messages_received = 0;   // messages received from peers
  std::uint64_t forward_dropped = 0;     // copies refused by a full link queue
  /// Frames still queued for a failed peer when ClusterOptions::link_retain ran out.
  std::uint64_t retain_dropped = 0;
  std::uint64_t malformed_frames = 0;
  /// Control frames larger than a link can carry (max_packet_size + 64 KiB, or the link
  /// queue): never sent. A route set, a snapshot or a moved session is cut into parts.
  std::uint64_t oversized_frames = 0;
  /// Peers whose cluster protocol versions do not meet this node's (spoken to in version 1).
  std::uint64_t incompatible_peers = 0;
  std::uint64_t route_ack_timeouts = 0;  // SUBACKs sent before every peer acknowledged
  std::uint64_t retained_applied = 0;    // replicated retained entries that were newer
  /// Retained entries and claim versions from peers refused for being further ahead of this
  /// node's wall clock than ClusterOptions::max_clock_skew.
  std::uint64_t clock_skew_refused = 0;
  /// Answers from peers (take replies, retained entries, route acknowledgements) that no open
  /// request of this node asked for: dropped.
  std::uint64_t unsolicited_refused = 0;
  /// Inbound link connections closed at once: ClusterOptions::max_inbound_links were pending.
  std::uint64_t inbound_links_refused = 0;
  // Cluster-wide client ids (a connect claims its id; docs/cluster.md).
  std::uint64_t claims = 0;               // connects here that claimed their client id
  std::uint64_t claims_lost = 0;          // ... and lost to a newer claim (CONNACK 0x89)
  std::uint64_t claim_timeouts = 0;       // went ahead without the arbiter or a peer answering
  std::uint64_t sessions_moved_in = 0;    // sessions received from peers (takeover, resume)
  std::uint64_t sessions_moved_out = 0;   // sessions handed to peers
  std::uint64_t sessions_taken_over = 0;  // local sessions ended or moved for a claim elsewhere
  /// Sessions that started to move and stayed (or came back) here, offline: the link could
  /// not carry the reply, or the claimant refused the session, restarted or was forgotten
  /// before it acknowledged it.
  std::uint64_t sessions_restored = 0;
  /// Messages a peer chose this node for, for a shared group with no member here any more
  /// (the member left meanwhile): lost for that group, never forwarded again.
  std::uint64_t shared_dropped = 0;
  // Membership events this node saw about its peers: joins, graceful leaves, failures.
  std::uint64_t members_joined = 0;
  std::uint64_t members_left = 0;
  std::uint64_t members_failed = 0;
  MembershipStats membership;
};

/// How Broker::drain() spends its time (docs/cluster.md, "Graceful drain").
struct DrainOptions {
  /// Everything from the first step until the threads are joined. The default leaves 5 s of
  /// Kubernetes' default terminationGracePeriodSeconds (30 s) for the rest of the process.
  std::chrono::milliseconds budget{25000};
  /// Cluster mode: how long at most to wait, while live peers exist, for this node's
  /// persistent sessions to be taken over by the nodes their clients reconnect to. Capped
  /// at half the budget; negative = half the budget.
  std::chrono::milliseconds session_wait{-1};
};

class Bus;

class BROKERHA_API Broker {
 public:
  explicit Broker(BrokerOptions options);
  ~Broker();  // stops and joins
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  /// Adds a hook to the chain (registration order). Before start() only.
  void add_auth_hook(std::shared_ptr<AuthHook> hook);
  void add_acl_hook(std::shared_ptr<AclHook> hook);
  void add_event_hook(std::shared_ptr<EventHook> hook);

  /// Attaches the bus the broker publishes `cluster:message_to` on (a copy of each message
  /// its clients publish, rendered on the publisher's I/O thread only while the channel has a
  /// subscriber). Before start() only; null detaches.
  void set_bus(std::shared_ptr<Bus> bus);
  std::shared_ptr<Bus> bus() const;

  /// Validates the options, binds every listener and starts the I/O threads. Throws
  /// std::system_error (bind failures, already started) or std::invalid_argument (options).
  void start();
  /// As start(), reporting the error instead of throwing.
  void start(std::error_code& ec) noexcept;

  /// Closes listeners and connections (v5 clients get DISCONNECT 0x8B), joins the threads.
  /// Idempotent; any thread except the broker's own.
  void stop() noexcept;

  /// Graceful stop (SIGTERM), in this order:
  ///  1. draining() turns true (the HTTP API's /ready answers 503) and the listeners close;
  ///  2. every client is disconnected, v5 clients with DISCONNECT 0x8B (Server shutting
  ///     down), so that they reconnect to another node; a connection that slips in later is
  ///     closed the same way;
  ///  3. cluster mode: while this node still holds persistent sessions and has live peers,
  ///     it waits (at most DrainOptions::session_wait) so that clients resuming elsewhere
  ///     can take their sessions over; it ends as soon as none is left;
  ///  4. cluster mode: waits until every data-plane link has its frames acknowledged, then
  ///     leaves the cluster (peers record "left", not "failed"), bounded by the budget and
  ///     ClusterOptions::leave_timeout;
  ///  5. stops as stop() does.
  /// Returns within the budget plus the time the threads take to end. A stop() from another
  /// thread during a drain cuts its waits short. Nothing to do before start() or after
  /// stop(); a second drain() while one runs returns at once. Blocks the calling thread; any
  /// thread except the broker's own. The Broker must outlive the call (stop() or the
  /// destructor after drain() are fine).
  void drain(const DrainOptions& options = {}) noexcept;
  /// drain() with `budget` and the default share for sessions.
  void drain(std::chrono::milliseconds budget) noexcept;
  /// True from the start of drain() on (any thread).
  bool draining() const noexcept;

  /// Blocks until stop() has completed.
  void wait() noexcept;

  /// The bound listeners with their real ports, in the order of BrokerOptions::listeners.
  std::vector<Endpoint> listen_endpoints() const;

  /// Publishes a message as the host program (no client, no ACL check). Thread-safe.
  void publish(const MessageInfo& message);

  /// Snapshots, safe from any thread except the broker's own.
  std::vector<ClientInfo> clients() const;
  std::vector<MessageInfo> retained(const std::string& filter = "#") const;
  std::vector<MessageInfo> inflight(const std::string& client_id) const;
  BrokerStats stats() const;
  /// The subscriptions whose filter matches the topic name `topic` (empty when invalid).
  TopicSubscribers subscribers(const std::string& topic) const;

  /// Replaces the built-in auth/ACL rules (SIGHUP reload): every later connect, publish,
  /// subscribe and delivery uses the new rules; connected clients stay. Reads the password
  /// file; throws std::runtime_error naming the problem and keeps the old rules on error.
  void set_access_rules(const AccessRules& rules);

  /// Replaces the overload limits (SIGHUP reload): max_connections, max_connection_rate,
  /// max_subscriptions and max_publish_rate of `options`; its other fields are ignored. What
  /// is above a lowered limit stays (open connections, held subscriptions); later connections,
  /// subscriptions and publishes meet the new limits. Any thread; before start() too.
  void set_limits(const BrokerOptions& options);

  /// Re-reads the certificate, key and CA files of every TLS listener (SIGHUP). New
  /// connections use the new files; open connections keep theirs. Throws std::runtime_error
  /// naming the file on error, and then keeps the old material of every listener.
  void reload_tls();

  /// Replaces the cluster's keyring (SIGHUP reload, key rotation; docs/operations.md):
  /// `keys[0]` encrypts membership packets and is the PSK this node offers on the links it
  /// opens; every key decrypts and is accepted from peers. The membership applies it on its
  /// thread and the links on the cluster's control thread; the call returns once both have.
  /// Open links stay up. Any thread. Throws std::invalid_argument (a key not 16, 24 or 32
  /// bytes, no key, or a cluster started without a key) and then keeps the old keyring;
  /// std::system_error (errc::not_started) without a running cluster.
  void set_cluster_keys(const std::vector<std::string>& keys);

  /// Exports a client's session (subscriptions, queued and in-flight messages, packet-id
  /// state) in the format of docs/session-format.md, to move it to another broker. Nullopt
  /// when there is no such session.
  std::optional<std::string> export_session(const std::string& client_id) const;

  /// Installs an exported session as an offline session that its client can resume. Errors:
  /// errc::malformed_input, errc::session_in_use (a client with that id is connected),
  /// errc::not_started, errc::timed_out.
  std::error_code import_session(std::string_view bytes);

  /// The cluster's state (members, discovery, links, counters); `enabled` false on a single
  /// node. Any thread; never waits for the broker's threads.
  ClusterInfo cluster() const;

  /// Disconnects a client (v5: DISCONNECT 0x98 Administrative action). False if unknown.
  bool stop_client(const std::string& client_id);

 private:
  friend struct detail::BrokerAccess;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace brokerha
