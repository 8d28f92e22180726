// SPDX-License-Identifier: Apache-2.0
// brokerha-bench's command line: the usage text, the value parsers and parse_options() (the
// flags, their ranges and the shapes' default counts), and the run id of the default topic
// prefix. Runs once on the main thread before the run starts.

#include "options.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "clock.hpp"
#include "payload.hpp"

namespace brokerha::bench {

const char* shape_name(Shape s) {
  switch (s) {
    case Shape::fan_in:
      return "fan-in";
    case Shape::pairs:
      return "pairs";
    case Shape::fan_out:
      return "fan-out";
  }
  return "?";
}

const char* transport_name(const Options& o) {
  return o.ws ? (o.tls ? "wss" : "ws") : (o.tls ? "tls" : "tcp");
}

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(
      out,
      "Usage: brokerha-bench [options]\n"
      "\n"
      "MQTT load generator (one thread). Traffic mode by default; --idle N for idle "
      "connections.\n"
      "\n"
      "Brokers:\n"
      "  --host H / --port P          both publishers and subscribers [127.0.0.1:1883]\n"
      "  --pub-host H / --pub-port P  publishers only (cross-host mode)\n"
      "  --sub-host H / --sub-port P  subscribers (and idle connections) only\n"
      "  --mqtt 3.1.1|5               protocol version [3.1.1]\n"
      "  --keepalive S                keep alive in CONNECT [0 = off]\n"
      "Transport (every mode; plain TCP by default):\n"
      "  --tls                        MQTT in TLS (1.2+), the server verified with --cafile\n"
      "  --cafile PATH                CA file for the server certificate (implies --tls;\n"
      "                               default: the system's CA paths)\n"
      "  --cert PATH / --key PATH     client certificate and key (implies --tls)\n"
      "  --insecure                   TLS without certificate or host name verification\n"
      "  --ws PATH                    MQTT over WebSocket on PATH (subprotocol mqtt)\n"
      "  --wss PATH                   MQTT over WebSocket in TLS (--ws PATH --tls)\n"
      "Traffic:\n"
      "  --shape fan-in|pairs|fan-out  [pairs]; defaults 10->1, 10->10, 1->50\n"
      "  --pubs N / --subs N          publishers / subscribers (pairs: equal)\n"
      "  --qos 0|1|2                  publish and subscription QoS [0]\n"
      "  --payload BYTES              payload size, >= %zu [64]\n"
      "  --rate R                     messages/s per publisher; 0 = max rate [0]\n"
      "  --backlog N                  max outstanding messages per subscriber [100]\n"
      "  --inflight N                 QoS 1/2 unacknowledged messages per publisher [16]\n"
      "  --duration S                 publishing time [15]\n"
      "  --drain-timeout S            wait for outstanding messages after it [10]\n"
      "  --topic-prefix T             [bench/<run id>]\n"
      "Idle connections:\n"
      "  --idle N                     open N connections that only CONNECT\n"
      "  --settle S                   wait after the last CONNACK before measuring [1]\n"
      "  --hold S                     keep them open this much longer [0]\n"
      "Common:\n"
      "  --broker-pid PID             report this process's CPU (traffic) / VmRSS (idle)\n"
      "  --connect-window N           connections being set up at once [64]\n"
      "  --connect-timeout S          for all connections together [60]\n"
      "  --probe-timeout S            until every subscription routes [10]\n"
      "  --label NAME                 echoed as scenario=NAME in the RESULT line\n"
      "  --no-progress                no progress line on stderr\n"
      "\n"
      "The last stdout line is `RESULT key=value ...`: traffic keys mode transport shape qos\n"
      "mqtt pubs subs payload rate backlog inflight duration_s sent expected delivered received\n"
      "throughput publish_rate p50_us p99_us p999_us max_us mean_us lost duplicates reordered\n"
      "invalid broker_cpu_s broker_cpu_s_per_m bench_cpu_s ok error; idle keys mode transport\n"
      "mqtt connections connected connect_s rss_before_kib rss_after_kib rss_delta_kib\n"
      "kib_per_conn ok error.\n"
      "Exit status: 0 ok, 1 loss/duplicates/reordering/invalid, 2 usage, 3 run failed.\n",
      kPayloadHeaderSize);
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "brokerha-bench: %s (see --help)\n", msg.c_str());
  std::exit(2);
}

double parse_double(const std::string& name, const std::string& v, double min, double max) {
  errno = 0;
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (errno != 0 || end == v.c_str() || *end != '\0' || !(d >= min) || !(d <= max)) {
    usage_error(name + " \"" + v + "\": expected a number from " + std::to_string(min) + " to " +
                std::to_string(max));
  }
  return d;
}

long parse_long(const std::string& name, const std::string& v, long min, long max) {
  errno = 0;
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (errno != 0 || end == v.c_str() || *end != '\0' || n < min || n > max) {
    usage_error(name + " \"" + v + "\": expected a whole number from " + std::to_string(min) +
                " to " + std::to_string(max));
  }
  return n;
}

std::string run_id() {
  static const char* hex = "0123456789abcdef";
  std::uint64_t v = now_ns() ^ (static_cast<std::uint64_t>(::getpid()) << 40);
  std::string s;
  for (int i = 0; i < 10; ++i) {
    s.push_back(hex[v & 0xF]);
    v >>= 4;
  }
  return s;
}

}  // namespace

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    auto port = [&]() { return static_cast<std::uint16_t>(parse_long(arg, next(), 1, 65535)); };
    if (arg == "-h" || arg == "--help") {
      print_usage(stdout);
      std::exit(0);
    } else if (arg == "--host") {
      o.pub_host = o.sub_host = next();
    } else if (arg == "--port") {
      o.pub_port = o.sub_port = port();
    } else if (arg == "--pub-host") {
      o.pub_host = next();
    } else if (arg == "--pub-port") {
      o.pub_port = port();
    } else if (arg == "--sub-host") {
      o.sub_host = next();
    } else if (arg == "--sub-port") {
      o.sub_port = port();
    } else if (arg == "--mqtt") {
      const std::string v = next();
      if (v == "3.1.1" || v == "311" || v == "4") {
        o.version = ProtocolVersion::v311;
      } else if (v == "5" || v == "5.0") {
        o.version = ProtocolVersion::v5;
      } else {
        usage_error("--mqtt \"" + v + "\": expected 3.1.1 or 5");
      }
    } else if (arg == "--keepalive") {
      o.keepalive = static_cast<std::uint16_t>(parse_long(arg, next(), 0, 65535));
    } else if (arg == "--shape") {
      const std::string v = next();
      if (v == "fan-in") {
        o.shape = Shape::fan_in;
      } else if (v == "pairs") {
        o.shape = Shape::pairs;
      } else if (v == "fan-out") {
        o.shape = Shape::fan_out;
      } else {
        usage_error("--shape \"" + v + "\": expected fan-in, pairs or fan-out");
      }
    } else if (arg == "--pubs") {
      o.pubs = parse_long(arg, next(), 1, 100000);
    } else if (arg == "--subs") {
      o.subs = parse_long(arg, next(), 1, 100000);
    } else if (arg == "--qos") {
      o.qos = static_cast<unsigned>(parse_long(arg, next(), 0, 2));
    } else if (arg == "--payload") {
      o.payload = static_cast<std::size_t>(
          parse_long(arg, next(), static_cast<long>(kPayloadHeaderSize), 16 * 1024 * 1024));
    } else if (arg == "--rate") {
      o.rate = parse_double(arg, next(), 0, 1e9);
    } else if (arg == "--backlog") {
      o.backlog = static_cast<std::uint64_t>(parse_long(arg, next(), 1, 1000000));
    } else if (arg == "--inflight") {
      o.inflight = static_cast<std::uint32_t>(parse_long(arg, next(), 1, 65535));
    } else if (arg == "--duration") {
      o.duration = parse_double(arg, next(), 0.1, 86400);
    } else if (arg == "--drain-timeout") {
      o.drain_timeout = parse_double(arg, next(), 0, 3600);
    } else if (arg == "--connect-timeout") {
      o.connect_timeout = parse_double(arg, next(), 0.1, 3600);
    } else if (arg == "--probe-timeout") {
      o.probe_timeout = parse_double(arg, next(), 0.1, 3600);
    } else if (arg == "--topic-prefix") {
      o.topic_prefix = next();
      if (o.topic_prefix.empty() || o.topic_prefix.find_first_of("+#") != std::string::npos) {
        usage_error("--topic-prefix must be a non-empty topic name without wildcards");
      }
    } else if (arg == "--idle") {
      o.mode = Mode::idle;
      o.idle = parse_long(arg, next(), 1, 1000000);
    } else if (arg == "--settle") {
      o.settle = parse_double(arg, next(), 0, 3600);
    } else if (arg == "--hold") {
      o.hold = parse_double(arg, next(), 0, 86400);
    } else if (arg == "--connect-window") {
      o.connect_window = parse_long(arg, next(), 1, 100000);
    } else if (arg == "--broker-pid") {
      o.broker_pid = parse_long(arg, next(), 1, 1L << 30);
    } else if (arg == "--label") {
      o.label = next();
      if (o.label.find_first_of(" \t\n=") != std::string::npos) {
        usage_error("--label must not contain spaces or '='");
      }
    } else if (arg == "--no-progress") {
      o.progress = false;
    } else if (arg == "--tls") {
      o.tls = true;
    } else if (arg == "--cafile") {
      o.tls = true;
      o.tls_ca = next();
    } else if (arg == "--cert") {
      o.tls = true;
      o.tls_cert = next();
    } else if (arg == "--key") {
      o.tls = true;
      o.tls_key = next();
    } else if (arg == "--insecure") {
      o.tls = true;
      o.tls_insecure = true;
    } else if (arg == "--ws" || arg == "--wss") {
      o.ws = true;
      if (arg == "--wss") o.tls = true;
      o.ws_path = next();
      if (o.ws_path.empty() || o.ws_path[0] != '/' ||
          o.ws_path.find_first_of(" \t\r\n") != std::string::npos) {
        usage_error(arg + " \"" + o.ws_path + "\": expected a path starting with '/'");
      }
    } else {
      usage_error("unknown argument \"" + arg + "\"");
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) usage_error("--cert and --key go together");
  if (o.mode == Mode::traffic) {
    switch (o.shape) {
      case Shape::fan_in:
        if (o.pubs < 0) o.pubs = 10;
        if (o.subs < 0) o.subs = 1;
        break;
      case Shape::pairs:
        if (o.pubs < 0) o.pubs = o.subs < 0 ? 10 : o.subs;
        if (o.subs < 0) o.subs = o.pubs;
        if (o.pubs != o.subs) usage_error("--shape pairs needs as many --subs as --pubs");
        break;
      case Shape::fan_out:
        if (o.pubs < 0) o.pubs = 1;
        if (o.subs < 0) o.subs = 50;
        break;
    }
  }
  return o;
}

Options with_topic_prefix(Options o) {
  if (o.topic_prefix.empty()) o.topic_prefix = "bench/" + run_id();
  return o;
}

}  // namespace brokerha::bench
