// SPDX-License-Identifier: Apache-2.0
#pragma once
// Plain option structs for the Broker (and, later, Membership and Discovery).
//
// The library takes these structs; the server fills them from config.yaml and the
// environment. validate() checks ranges and throws std::invalid_argument naming the field.
//
// Thread safety: plain data; copy freely.

#include <brokerha/discovery.hpp>
#include <brokerha/export.hpp>
#include <brokerha/membership.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace brokerha {

/// What a listener speaks: MQTT over TCP, TLS, WebSocket, or WebSocket over TLS.
enum class ListenerType { tcp, tls, ws, wss };

/// One MQTT listener. `{"127.0.0.1", 0}` listens on loopback on a free port.
/// docs/listeners.md describes the transports.
struct ListenerOptions {
  std::string bind = "0.0.0.0";  // IPv4 or IPv6 address to bind
  std::uint16_t port = 1883;     // 0 = a free port (see Broker::listen_endpoints())
  ListenerType type = ListenerType::tcp;
  std::string path = "/mqtt";   // WebSocket path (ws, wss)
  bool proxy_protocol = false;  // expect a PROXY protocol v1/v2 header before anything else

  // TLS (tls, wss): PEM files, re-read by Broker::reload_tls(). TLS 1.2 or later only.
  std::string tls_cert{};            // certificate chain (required for tls/wss)
  std::string tls_key{};             // private key (required for tls/wss)
  std::string tls_ca{};              // CA that signs client certificates; empty = none asked for
  bool require_client_cert = false;  // refuse clients without a certificate (needs tls_ca)
  /// The verified client certificate's CN replaces the CONNECT username; a client without
  /// a certificate is refused (Not authorized).
  bool use_identity_as_username = false;
};

/// A bound listener: its real address and port.
struct Endpoint {
  std::string address;
  std::uint16_t port = 0;
  ListenerType type = ListenerType::tcp;
};

/// One `mqtt.auth` rule. A field left unset matches anything; a trailing `*` is a prefix
/// glob ("sensor-*"); `remote` matches the peer IP, a CIDR ("10.0.0.0/8") or "ip:port". The
/// first rule whose set fields all match decides (`allow`).
struct AuthRule {
  std::optional<std::string> username;
  std::optional<std::string> password;  // plaintext; compared in constant time
  std::optional<std::string> client;
  std::optional<std::string> remote;
  bool allow = false;
};

/// One `mqtt.acl` rule: identity fields as AuthRule, and topic filters with their access
/// (0 deny, 1 read, 2 write, 3 read+write). A rule without filters grants everything.
struct AclRule {
  std::optional<std::string> username;
  std::optional<std::string> client;
  std::optional<std::string> remote;
  std::vector<std::pair<std::string, int>> filters;
};

/// The built-in authentication and ACL rules (docs/access-rules.md). They run after every hook an
/// embedder registers. Empty `auth` and no `password_file`: anonymous clients are allowed.
struct AccessRules {
  std::vector<AuthRule> auth;
  std::vector<AclRule> acl;
  bool acl_default_allow = true;  // `mqtt.acl_default`: the decision when no rule decides
  /// Mosquitto password file (`user:$7$...` PBKDF2-SHA512 or `user:$6$...`). A user listed
  /// there must present the matching password; with no `auth` rules, only listed users may
  /// connect.
  std::string password_file;
};

/// Cluster mode (docs/cluster.md): membership, discovery and the data plane between nodes.
/// docs/cluster.md describes what crosses the cluster and how.
struct ClusterOptions {
  /// Name, addresses, secret key and the `cluster.config.*` knobs. The data plane shares the
  /// membership port (and its secret key: TLS 1.3 with a PSK derived from it).
  MembershipOptions membership;
  /// How members are found (`discovery.*`). The broker adds its own advertised address to
  /// `self_addresses`.
  DiscoveryOptions discovery;
  unsigned expected_members = 3;  // `cluster.expected_members` (health checks)
  /// A SUBACK waits at most this long for connected peers to acknowledge the new route.
  std::chrono::milliseconds route_ack_timeout{1000};
  /// Retained-set digests are exchanged with one peer this often (anti-entropy).
  std::chrono::milliseconds repair_interval{30000};
  /// Graceful stop: how long leaving the cluster may take.
  std::chrono::milliseconds leave_timeout{2000};
  std::size_t link_queue_bytes = 64u << 20;  // per peer; beyond it messages are dropped, counted
  /// A peer the membership declares failed keeps its link (and what is queued for it, up to
  /// link_queue_bytes) this long: a short partition loses nothing, the frames are re-sent when
  /// it comes back. 0: forget a failed peer at once. A peer that leaves is forgotten at once.
  std::chrono::milliseconds link_retain{60000};
  std::size_t max_tombstones = 100000;  // retained deletes remembered (oldest go first)
  /// A version (hybrid logical clock) from a peer further ahead of this node's wall clock is
  /// refused: a retained entry is not stored, a claim is treated as not newer. At least 1 s.
  std::chrono::milliseconds max_clock_skew{60000};
  /// Inbound data-plane link connections on the cluster port that have not yet proved the key
  /// (TLS handshake and hello, each bounded by the link's 1 s connect timeout) at once; one
  /// beyond it is closed at once and counted (ClusterInfo::inbound_links_refused).
  std::size_t max_inbound_links = 256;
  /// Run without authenticating the members: Broker::start() refuses a cluster whose
  /// `membership.secret_key` is empty or whose `membership.gossip_verify_incoming` is false
  /// unless this is true (the server's `cluster.insecure`). Anyone who reaches the cluster
  /// port of such a cluster can join it; ClusterInfo::insecure and the
  /// `broker_cluster_insecure` gauge say that it runs so.
  bool insecure = false;
};

/// Broker settings; defaults are the `mqtt.*` defaults of the server's config.
struct BrokerOptions {
  std::vector<ListenerOptions> listeners;  // none = a broker reachable only via publish()

  std::uint32_t max_packet_size = 16'777'216;  // bytes, both directions
  std::uint16_t receive_maximum = 1024;        // QoS 1/2 a client may have unacknowledged to us
  std::uint16_t max_inflight = 1024;           // our unacknowledged QoS 1/2 deliveries per session
  std::uint16_t topic_alias_maximum = 65535;   // aliases we accept from a client
  /// Send topic aliases to v5 clients that announce a Topic Alias Maximum (the first message
  /// on a topic carries topic + alias, later ones only the alias). Some clients announce a
  /// maximum but cannot resolve aliases (libmosquitto 2.0.11, paho-mqtt 1.6.1): turn it off
  /// for them.
  bool send_topic_aliases = true;
  std::uint32_t max_queued_messages = 1000;  // per session beyond in-flight
  // Overload limits (docs/security.md). These four may be replaced while the broker runs
  // (Broker::set_limits(), the server's SIGHUP); each refusal is counted in BrokerStats.
  std::uint32_t max_connections = 0;  // connections open at once; beyond: closed, 0 = unlimited
  /// New connections per second on each listener (a token bucket with one second's burst);
  /// beyond it a new connection is closed at once. 0 = unlimited.
  std::uint32_t max_connection_rate = 0;
  /// Subscriptions one session may hold; a SUBSCRIBE of a new filter beyond it is refused for
  /// that filter (v5 SUBACK 0x97 Quota exceeded, v3 0x80). 0 = unlimited.
  std::uint32_t max_subscriptions = 0;
  /// PUBLISH packets per second one client may send (token bucket, one second's burst).
  /// Beyond it the connection ends: v5 DISCONNECT 0x96 (Message rate too high), v3 a close.
  /// 0 = unlimited.
  std::uint32_t max_publish_rate = 0;
  /// Bytes (topic + payload) one session may queue beyond in flight; beyond it the oldest
  /// QoS 0 deliveries make room, else the new delivery is dropped (as for
  /// max_queued_messages), counted in BrokerStats::session_bytes_dropped. 0 = unlimited.
  std::uint64_t max_session_queued_bytes = 0;
  std::uint16_t max_keepalive = 65535;                // seconds; larger client values are lowered
  std::uint32_t max_session_expiry = 4'294'967'295u;  // seconds
  std::uint32_t max_message_expiry = 0;               // seconds, 0 = none
  std::chrono::milliseconds connect_timeout{10'000};  // CONNECT must arrive within it
  unsigned io_threads = 0;                            // 0 = one per core
  /// Bytes of messages queued in the whole broker above which it stops reading from
  /// publishers until the queues drain (TCP back-pressure instead of dropping).
  std::uint64_t max_queued_bytes = 512ull * 1024 * 1024;
  /// While the broker is over max_queued_bytes, a subscriber connection whose output has not
  /// moved for this long is closed (its will published, its session kept), so one client
  /// that never reads cannot hold every publisher back. Checked once a second.
  std::chrono::milliseconds stuck_consumer_timeout{10'000};
  /// Publish `$SYS/broker/...` statistics every this often; 0 = never.
  std::chrono::milliseconds sys_interval{10'000};
  /// Authentication and ACL rules from the configuration (replaceable at run time with
  /// Broker::set_access_rules()).
  AccessRules access;
  /// Cluster mode; unset = a single broker that opens no cluster port.
  std::optional<ClusterOptions> cluster;

  /// Throws std::invalid_argument("<field>: <reason>") when a value is out of range.
  BROKERHA_API void validate() const;
};

}  // namespace brokerha
