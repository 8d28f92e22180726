// SPDX-License-Identifier: Apache-2.0
// brokerha-server: command-line entry point.
//
// Loads the configuration (config.hpp: --config PATH, /config/config.yaml, ./config.yaml or
// the built-in defaults, then BROKER_* environment overrides), starts the broker and waits
// for signals with sigwait: SIGTERM/SIGINT drain it (Broker::drain, bounded by
// shutdown.grace_period; a second SIGTERM/SIGINT stops at once), SIGHUP re-reads the
// configuration and replaces the auth/ACL rules (an invalid file keeps the old rules and logs
// the error).
// A bad configuration exits with code 2 before anything is started.

#include <brokerha/api.hpp>
#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/version.hpp>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#if BROKERHA_WITH_MIMALLOC
#include <mimalloc.h>
#endif
#include <vector>

#include "config.hpp"
#include "log.hpp"

namespace {

namespace server = brokerha::server;

constexpr int kExitConfig = 2;

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "Usage: brokerha-server [--config PATH] [--check-config]\n"
               "       brokerha-server --version | --help\n"
               "\n"
               "MQTT broker (3.1, 3.1.1, 5.0) with clustering.\n"
               "\n"
               "Options:\n"
               "  --config PATH   configuration file (must exist); default: /config/config.yaml,\n"
               "                  then ./config.yaml, then built-in defaults\n"
               "  --check-config  validate the configuration, print the effective configuration\n"
               "                  (secrets redacted) and exit: 0 valid, 2 invalid\n"
               "  --version       print the version and exit\n"
               "  -h, --help      print this help and exit\n"
               "\n"
               "Every key can be overridden by BROKER_<KEY PATH> in upper case with '.' -> '_'\n"
               "(BROKER_MQTT_PORT=1884, BROKER_LOG_LEVEL=debug; lists and maps as JSON).\n"
               "Signals: SIGTERM/SIGINT drain and stop within shutdown.grace_period (25000 ms):\n"
               "  stop accepting, report not ready, disconnect clients (v5: DISCONNECT 0x8B) so\n"
               "  they reconnect elsewhere, let persistent sessions move to other nodes (at most\n"
               "  shutdown.session_wait), flush the cluster links, leave the cluster, exit 0;\n"
               "  a second SIGTERM/SIGINT stops at once. SIGHUP reloads the auth and ACL rules\n"
               "  and the TLS files.\n"
               "Keys and defaults: docs/configuration.md.\n");
}

int config_error(const std::string& message) {
  std::fprintf(stderr, "brokerha-server: config error: %s\n", message.c_str());
  return kExitConfig;
}

// Checks what only the library can check (its option ranges, the access rules compiled and
// the password file read) without starting anything. Throws ConfigError.
void check_with_library(const brokerha::BrokerOptions& options) {
  const brokerha::BrokerOptions& served = options;
  try {
    served.validate();
  } catch (const std::invalid_argument& e) {
    throw server::ConfigError(std::string("mqtt: ") + e.what());
  }
  try {
    brokerha::Broker probe(served);
    probe.set_access_rules(options.access);
  } catch (const std::exception& e) {
    throw server::ConfigError(
        std::string("access rules (mqtt.auth, mqtt.acl, mqtt.password_file): ") + e.what());
  }
}

// SIGHUP: re-reads the configuration and replaces the access rules and the overload limits
// (mqtt.max_connections, max_connection_rate, max_subscriptions, max_publish_rate,
// max_session_queued_bytes) and the cluster keyring; the old ones stay on any error.
void reload(brokerha::Broker& broker, const server::LoadOptions& load) {
  try {
    const server::ServerConfig config = server::load_config(load, server::process_environment());
    const brokerha::BrokerOptions options = server::to_broker_options(config);
    broker.set_access_rules(options.access);
    broker.set_limits(options);
    try {
      broker.reload_tls();  // the certificate files of the running listeners, re-read
    } catch (const std::exception& e) {
      server::log_error(std::string("SIGHUP: TLS files: ") + e.what() +
                        "; the previous certificates stay in use");
    }
    // The cluster keyring (key rotation, docs/operations.md): replaced without a restart.
    std::string keys_note;
    if (options.cluster && broker.cluster().enabled) {
      const std::vector<std::string> keys = options.cluster->membership.keyring();
      try {
        if (!keys.empty()) {
          broker.set_cluster_keys(keys);
          keys_note = ", the cluster keyring (" + std::to_string(keys.size()) + " key" +
                      (keys.size() == 1 ? "" : "s") + ")";
        }
      } catch (const std::exception& e) {
        server::log_error(std::string("SIGHUP: cluster.config.secret_key/secret_keys: ") +
                          e.what() + "; the previous keyring stays in use");
      }
    }
    server::configure_log(config.log.level, config.log.format);
    for (const std::string& w : config.warnings) server::log_warn("config: " + w);
    server::log_info("SIGHUP: configuration reloaded from " +
                     (config.source.empty() ? std::string("built-in defaults") : config.source) +
                     ": " + std::to_string(options.access.auth.size()) + " auth and " +
                     std::to_string(options.access.acl.size()) +
                     " ACL rules and the overload limits in force (max_connections " +
                     std::to_string(options.max_connections) + ", max_connection_rate " +
                     std::to_string(options.max_connection_rate) + ", max_subscriptions " +
                     std::to_string(options.max_subscriptions) + ", max_publish_rate " +
                     std::to_string(options.max_publish_rate) + ", max_session_queued_bytes " +
                     std::to_string(options.max_session_queued_bytes) + ")" + keys_note +
                     "; other changes take effect at the next restart");
  } catch (const std::exception& e) {
    server::log_error(std::string("SIGHUP: config error: ") + e.what() +
                      "; the previous auth/ACL rules stay in force, and the previous limits");
  }
}

// Frames and entries refused from peers, logged at most once per wait of the signal loop
// (10 s) so that a peer sending many of them cannot flood the log.
struct Refused {
  std::uint64_t clock_skew = 0;
  std::uint64_t unsolicited = 0;
};

void warn_refused(brokerha::Broker& broker, Refused& seen) {
  const brokerha::ClusterInfo ci = broker.cluster();
  if (!ci.enabled) return;
  if (ci.clock_skew_refused > seen.clock_skew) {
    server::log_warn("cluster: " + std::to_string(ci.clock_skew_refused - seen.clock_skew) +
                     " retained entries or claims from peers refused: their versions are more "
                     "than cluster.max_clock_skew ahead of this node's clock (check NTP on the "
                     "members; broker_cluster_refused_total{reason=\"clock_skew\"})");
  }
  if (ci.unsolicited_refused > seen.unsolicited) {
    server::log_warn("cluster: " + std::to_string(ci.unsolicited_refused - seen.unsolicited) +
                     " answers from peers to no open request dropped "
                     "(broker_cluster_refused_total{reason=\"unsolicited\"})");
  }
  seen = {ci.clock_skew_refused, ci.unsolicited_refused};
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken by this thread with sigwait; block them before any thread starts (and
  // before the config is read, so an early SIGHUP does not end the process).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  server::LoadOptions load;
  bool check_config = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--version") {
      std::printf("brokerha-server %s\n", brokerha::library_version());
      return 0;
    }
    if (arg == "--help" || arg == "-h") {
      print_usage(stdout);
      return 0;
    }
    if (arg == "--check-config") {
      check_config = true;
    } else if (arg == "--config") {
      if (i + 1 >= argc || argv[i + 1][0] == '\0') return config_error("--config needs a PATH");
      load.config_path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      load.config_path = arg.substr(std::strlen("--config="));
      if (load.config_path.empty()) return config_error("--config needs a PATH");
    } else {
      std::fprintf(stderr, "brokerha-server: unknown argument \"%s\" (see --help)\n", argv[i]);
      return kExitConfig;
    }
  }

  server::ServerConfig config;
  brokerha::BrokerOptions options;
  try {
    config = server::load_config(load, server::process_environment());
    options = server::to_broker_options(config);
    check_with_library(options);
  } catch (const server::ConfigError& e) {
    return config_error(e.what());
  } catch (const std::exception& e) {  // not expected (yaml-cpp, allocation): still a clean exit
    return config_error(std::string("unexpected error while loading: ") + e.what());
  }
  server::configure_log(config.log.level, config.log.format);

  if (check_config) {
    for (const std::string& w : config.warnings) {
      std::fprintf(stderr, "brokerha-server: config warning: %s\n", w.c_str());
    }
    std::fputs(server::render_config(config).c_str(), stdout);
    return 0;
  }
  for (const std::string& w : config.warnings) server::log_warn("config: " + w);
  // SIGHUP re-reads the file that was read now: if it disappears, that is an error (the old
  // rules stay) rather than a silent fall-back to the defaults, which allow anonymous clients.
  server::LoadOptions reload_load = load;
  if (!config.source.empty()) reload_load.config_path = config.source;
  server::log_info("configuration: " +
                   (config.source.empty() ? std::string("built-in defaults") : config.source));
#if BROKERHA_WITH_MIMALLOC
  {
    const int v = mi_version();  // e.g. 209 for 2.0.9
    server::log_info("memory allocator: mimalloc " + std::to_string(v / 100) + "." +
                     std::to_string(v / 10 % 10) + "." + std::to_string(v % 10));
  }
#else
  server::log_info("memory allocator: the C library's malloc");
#endif

  // The bus is the observation tap the HTTP API's SSE streams serve (docs/api.md).
  auto bus = std::make_shared<brokerha::Bus>();
  brokerha::Broker broker(options);
  broker.set_bus(bus);
  std::error_code ec;
  try {
    broker.start();  // throws with the reason (a port in use, an unreadable certificate)
  } catch (const std::exception& e) {
    server::log_error(std::string("cannot start: ") + e.what());
    return 1;
  }
  std::unique_ptr<brokerha::ApiServer> api;
  if (config.api.port != 0) {
    brokerha::ApiOptions api_options;
    api_options.bind = config.api.bind;
    api_options.port = config.api.port;
    api_options.users = config.api.user;
    api_options.expected_members = config.cluster.expected_members;
    api_options.node_name = config.cluster.node_name;
    api = std::make_unique<brokerha::ApiServer>(api_options, broker, *bus);
    api->start(ec);
    if (ec) {
      server::log_error("cannot start the HTTP API on " + config.api.bind + ":" +
                        std::to_string(config.api.port) + " (api.bind, api.port): " + ec.message());
      broker.stop();
      return 1;
    }
    std::printf("brokerha-server %s: HTTP API listening on %s:%u\n", brokerha::library_version(),
                config.api.bind.c_str(), static_cast<unsigned>(api->port()));
    server::log_info("HTTP API listening on " + config.api.bind + ":" +
                     std::to_string(api->port()));
  }
  for (const brokerha::Endpoint& ep : broker.listen_endpoints()) {
    // Plain TCP keeps the historical line; other types name themselves.
    const std::string kind = ep.type == brokerha::ListenerType::tcp
                                 ? std::string()
                                 : std::string(" (") + server::listener_type_name(ep.type) + ")";
    std::printf("brokerha-server %s: MQTT listening on %s:%u%s\n", brokerha::library_version(),
                ep.address.c_str(), static_cast<unsigned>(ep.port), kind.c_str());
    server::log_info("MQTT listening on " + ep.address + ":" + std::to_string(ep.port) + kind);
  }
  if (const brokerha::ClusterInfo ci = broker.cluster(); ci.enabled) {
    std::printf("brokerha-server %s: cluster node %s on port %u\n", brokerha::library_version(),
                ci.node_name.c_str(), static_cast<unsigned>(ci.port));
    server::log_info("cluster node " + ci.node_name + " on port " + std::to_string(ci.port));
    if (ci.insecure) {
      server::log_warn(
          "cluster.insecure: the cluster does not authenticate its members (no "
          "cluster.config.secret_key, or gossip verification off): anyone who reaches port " +
          std::to_string(ci.port) + " can join it and read every message");
    }
  }
  std::fflush(stdout);

  int sig = 0;
  Refused refused_seen;
  while (true) {
    const timespec tick{10, 0};
    sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig < 0) {
      warn_refused(broker, refused_seen);
      continue;
    }
    if (sig != SIGHUP) break;
    reload(broker, reload_load);
  }
  // The drain runs on its own thread so that this one can still take a second signal. The
  // HTTP API stays up meanwhile: /ready answers 503, peers' /proxy calls are answered.
  brokerha::DrainOptions drain;
  drain.budget = std::chrono::milliseconds(config.shutdown.grace_period);
  drain.session_wait = std::chrono::milliseconds(config.shutdown.session_wait);
  server::log_info(std::string(sig == SIGTERM ? "SIGTERM" : "SIGINT") + " received, stopping");
  server::log_info("draining: at most " + std::to_string(config.shutdown.grace_period) +
                   " ms (shutdown.grace_period); a second SIGTERM/SIGINT stops at once");
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    broker.drain(drain);
    drained = true;
  });
  bool forced = false;
  while (!drained.load()) {
    const timespec step{0, 50'000'000};
    const int again = sigtimedwait(&signals, nullptr, &step);
    if ((again == SIGTERM || again == SIGINT) && !forced) {
      forced = true;
      server::log_info("second signal: stopping now");
      broker.stop();  // the drain's waits end; it returns once the stop is done
    }
  }
  drainer.join();
  if (api) api->stop();
  broker.stop();  // done already; idempotent
  server::log_info("stopped");
  return 0;
}
