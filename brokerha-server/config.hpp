// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha-server's configuration (docs/configuration.md): each config.yaml key with its default,
// the loader (file search, YAML, deep merge over the defaults, BROKER_* environment overrides,
// validation), the redacted rendering for --check-config, and the mapping to the library's
// BrokerOptions. yaml-cpp stays inside config.cpp; the library only sees plain structs.
//
// Errors: load_config() throws ConfigError, whose message names where the value came from
// (file:line:column, or the environment variable), the key path and what was expected.

#include <brokerha/options.hpp>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace brokerha::server {

/// A configuration that cannot be used. what() is one line, ready to print after
/// "brokerha-server: config error: ".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One entry of `mqtt.listeners`.

/// The default of `mqtt.max_connections`: the open-files limit (RLIMIT_NOFILE) less 256
/// descriptors left for what is not an MQTT client (the process's files, listeners and event
/// loops, the HTTP API's connections, the cluster's links, membership streams and DNS); half
/// the limit when it is below 512; 0 (unlimited) when the limit is unlimited.
std::uint32_t default_max_connections();

struct ListenerConfig {
  std::string type = "tcp";  // tcp | tls | ws | wss
  std::string bind;          // empty = mqtt.bind
  std::uint16_t port = 0;    // required, 1..65535
  std::string path = "/mqtt";
  bool proxy_protocol = false;
};

struct TlsConfig {
  std::uint16_t port = 0;  // 0 = off
  std::string cert;
  std::string key;
  std::string ca;
  bool require_client_cert = false;
  bool use_identity_as_username = false;  // the client certificate's CN becomes the username
};

struct WebSocketConfig {
  std::uint16_t port = 0;  // 0 = off
  std::string path = "/mqtt";
  bool tls = false;  // wss with the mqtt.tls certificate
};

struct MqttConfig {
  std::uint16_t port = 1883;  // 0 = no plain TCP listener
  std::string bind = "0.0.0.0";
  std::map<std::string, std::int64_t> subscription_size{{"cluster:message_from", 1024},
                                                        {"cluster:new_member", 10}};
  std::vector<AuthRule> auth;
  std::vector<AclRule> acl;
  std::string acl_default = "allow";  // allow | deny
  std::string password_file;
  TlsConfig tls;
  WebSocketConfig websocket;
  std::vector<ListenerConfig> listeners;
  std::uint32_t max_packet_size = 16'777'216;
  std::uint16_t receive_maximum = 1024;
  std::uint16_t max_inflight = 1024;
  std::uint16_t topic_alias_maximum = 65535;
  std::uint32_t max_queued_messages = 1000;
  std::uint32_t max_connections = default_max_connections();  // 0 = unlimited
  std::uint32_t max_connection_rate = 0;       // per listener, per second; 0 = unlimited
  std::uint32_t max_subscriptions = 0;         // per session; 0 = unlimited
  std::uint32_t max_publish_rate = 0;          // per client, per second; 0 = unlimited
  std::uint64_t max_session_queued_bytes = 0;  // per session; 0 = unlimited
  std::uint16_t max_keepalive = 65535;
  std::uint32_t max_session_expiry = 4'294'967'295u;
  std::uint32_t max_message_expiry = 0;
  std::uint32_t connect_timeout = 10'000;  // ms
  std::uint32_t io_threads = 0;            // 0 = number of cores
};

/// `cluster.config.*`: memberlist knobs with the values broker-ha runs with
/// (memberlist's DefaultLocalConfig plus broker-ha's probe/push-pull overrides). Times in ms.
struct MemberlistConfig {
  std::uint32_t tcp_timeout = 1000;
  std::uint32_t indirect_checks = 1;
  std::uint32_t retransmit_mult = 2;
  std::uint32_t suspicion_mult = 3;
  std::uint32_t suspicion_max_timeout_mult = 6;
  std::uint32_t push_pull_interval = 15000;
  std::uint32_t probe_interval = 500;
  std::uint32_t probe_timeout = 200;
  bool disable_tcp_pings = false;
  std::uint32_t awareness_max_multiplier = 8;
  std::uint32_t gossip_interval = 100;
  std::uint32_t gossip_nodes = 3;
  std::uint32_t gossip_to_the_dead_time = 15000;
  bool gossip_verify_incoming = true;
  bool gossip_verify_outgoing = true;
  bool enable_compression = true;
  std::string secret_key;  // empty or 16/24/32 bytes
  /// More keys (rotation): after secret_key; the first key of all encrypts, every key
  /// decrypts and is accepted on the links.
  std::vector<std::string> secret_keys;
  std::uint32_t delegate_protocol_min = 0;
  std::uint32_t delegate_protocol_max = 0;
  std::uint32_t delegate_protocol_version = 0;
  std::uint32_t dead_node_reclaim_time = 0;  // 0 = never
  std::uint32_t udp_buffer_size = 1400;
  std::string label;
  std::uint32_t handoff_queue_depth = 1024;
};

struct ClusterConfig {
  std::uint32_t expected_members = 3;
  std::string bind = "0.0.0.0";
  std::uint16_t port = 7946;
  std::string advertise;  // empty = the bind address (0.0.0.0: first non-loopback address)
  std::string node_name;  // the loader fills in the hostname when left empty
  std::uint32_t link_retain = 60000;      // ms a failed peer's link and queue are kept
  std::uint32_t max_clock_skew = 60000;   // ms a peer's version may be ahead of the wall clock
  std::uint32_t max_inbound_links = 256;  // inbound link connections not yet authenticated
  /// Run a cluster without secret_key (or with gossip verification off): anyone who reaches
  /// the cluster port can join. Refused at start unless set.
  bool insecure = false;
  MemberlistConfig config;
};

struct DiscoveryConfig {
  std::string domain;
  std::map<std::string, std::int64_t> subscription_size{{"cluster:message_to", 1024}};
  std::vector<std::string> members;
  std::uint32_t refresh_interval = 30000;  // ms
  std::vector<std::string> nameservers;
};

struct ApiConfig {
  std::uint16_t port = 8080;  // 0 = no HTTP API
  std::string bind = "0.0.0.0";
  std::map<std::string, std::string> user;  // username -> password (basic auth)
};

struct LogConfig {
  std::string level = "info";   // debug | info | warn | error
  std::string format = "text";  // text | json
};

/// SIGTERM/SIGINT: the graceful drain (Broker::drain). Times in ms.
struct ShutdownConfig {
  std::uint32_t grace_period = 25000;  // the whole drain; fits Kubernetes' default 30 s
  std::uint32_t session_wait = 12500;  // for persistent sessions to move; at most half of it
};

/// Every key of docs/configuration.md, defaults included.
struct ServerConfig {
  MqttConfig mqtt;
  ClusterConfig cluster;
  DiscoveryConfig discovery;
  ApiConfig api;
  LogConfig log;
  ShutdownConfig shutdown;

  std::string source;                 // the file read, "" = built-in defaults only
  std::vector<std::string> warnings;  // unknown cluster.config keys, ...
};

/// What load_config() needs from the command line.
struct LoadOptions {
  std::string config_path;  // --config PATH; "" = search /config/config.yaml, ./config.yaml
  /// The files searched when config_path is empty (tests may replace them).
  std::vector<std::string> search_path{"/config/config.yaml", "config.yaml"};
};

/// The environment as NAME=VALUE pairs (only BROKER_* names are looked at).
using Environment = std::vector<std::pair<std::string, std::string>>;

/// The process environment.
Environment process_environment();

/// Finds and reads the file, merges it over the defaults, applies the environment and
/// validates. Throws ConfigError.
ServerConfig load_config(const LoadOptions& options, const Environment& env);

/// The effective configuration as YAML, passwords and the secret key redacted.
std::string render_config(const ServerConfig& config);

/// The library's options: listeners (mqtt.port/bind, mqtt.tls.port, mqtt.websocket.port,
/// mqtt.listeners), limits, and the access rules.
BrokerOptions to_broker_options(const ServerConfig& config);

/// "tcp", "tls", "ws" or "wss": the `type` of a listener in mqtt.listeners.
const char* listener_type_name(ListenerType type);

/// The environment variable of a key path ("mqtt.port" -> "BROKER_MQTT_PORT").
std::string env_name(const std::string& key_path);

}  // namespace brokerha::server
