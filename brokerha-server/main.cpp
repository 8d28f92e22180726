// brokerha-server: command-line entry point.
//
// Runs a single-node broker on built-in defaults (MQTT on 0.0.0.0:1883). The config file and
// the full set of BROKER_* environment overrides arrive with the server issue; until then a
// config file that exists is refused rather than ignored, so auth rules are never silently
// dropped.

#include <brokerha/broker.hpp>
#include <brokerha/version.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "Usage: brokerha-server [--config PATH]\n"
               "       brokerha-server --version | --help\n"
               "\n"
               "MQTT broker (3.1, 3.1.1, 5.0) with clustering.\n"
               "\n"
               "Options:\n"
               "  --config PATH  configuration file (default: /config/config.yaml, then\n"
               "                 ./config.yaml, then built-in defaults)\n"
               "  --version      print the version and exit\n"
               "  -h, --help     print this help and exit\n"
               "\n"
               "Environment (built-in defaults in brackets):\n"
               "  BROKER_MQTT_BIND        MQTT listen address [0.0.0.0]\n"
               "  BROKER_MQTT_PORT        MQTT port [1883]\n"
               "  BROKER_MQTT_IO_THREADS  I/O threads [number of cores]\n");
}

bool file_exists(const char* path) {
  struct stat st {};
  return ::stat(path, &st) == 0;
}

// Parses an unsigned environment value; exits with code 2 naming the variable when invalid.
unsigned long env_number(const char* name, unsigned long def, unsigned long max) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return def;
  errno = 0;
  char* end = nullptr;
  const unsigned long n = std::strtoul(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n > max || v[0] == '-') {
    std::fprintf(stderr, "brokerha-server: %s=\"%s\": expected a whole number from 0 to %lu\n",
                 name, v, max);
    std::exit(2);
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  const char* config = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("brokerha-server %s\n", brokerha::library_version());
      return 0;
    }
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      print_usage(stdout);
      return 0;
    }
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      config = argv[++i];
      continue;
    }
    std::fprintf(stderr, "brokerha-server: unknown argument \"%s\" (see --help)\n", argv[i]);
    return 2;
  }
  if (config == nullptr) {
    if (file_exists("/config/config.yaml")) {
      config = "/config/config.yaml";
    } else if (file_exists("config.yaml")) {
      config = "config.yaml";
    }
  }
  if (config != nullptr) {
    std::fprintf(stderr,
                 "brokerha-server: %s: configuration files are not supported by this version "
                 "yet; refusing to start rather than ignore its auth and ACL rules\n",
                 config);
    return 2;
  }

  brokerha::BrokerOptions options;
  brokerha::ListenerOptions listener;
  if (const char* bind = std::getenv("BROKER_MQTT_BIND"); bind != nullptr && *bind != '\0') {
    listener.bind = bind;
  }
  listener.port = static_cast<std::uint16_t>(env_number("BROKER_MQTT_PORT", 1883, 65535));
  options.listeners.push_back(listener);
  options.io_threads = static_cast<unsigned>(env_number("BROKER_MQTT_IO_THREADS", 0, 1024));
  try {
    options.validate();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "brokerha-server: invalid configuration: %s\n", e.what());
    return 2;
  }

  // Signals are taken by this thread with sigwait; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  brokerha::Broker broker(options);
  std::error_code ec;
  broker.start(ec);
  if (ec) {
    std::fprintf(stderr, "brokerha-server: cannot start: %s (%s:%u)\n", ec.message().c_str(),
                 listener.bind.c_str(), static_cast<unsigned>(listener.port));
    return 1;
  }
  for (const brokerha::Endpoint& ep : broker.listen_endpoints()) {
    std::printf("brokerha-server %s: MQTT listening on %s:%u\n", brokerha::library_version(),
                ep.address.c_str(), static_cast<unsigned>(ep.port));
  }
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  std::printf("brokerha-server: %s received, stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  std::fflush(stdout);
  broker.stop();
  return 0;
}
