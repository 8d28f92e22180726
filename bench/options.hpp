// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha-bench's command line: the Options of one run, their defaults and parse_options(),
// which prints the usage and exits (status 0 for --help, 2 for a usage error) instead of
// returning when the command line is not a run. Read once on the main thread before the run.

#include <cstddef>
#include <cstdint>
#include <string>

#include "mqtt/packet.hpp"

namespace brokerha::bench {

using mqtt::ProtocolVersion;

enum class Mode { traffic, idle };
// The traffic shapes (shapes.hpp says what each opens).
enum class Shape { fan_in, pairs, fan_out };

const char* shape_name(Shape s);

struct Options {
  Mode mode = Mode::traffic;
  Shape shape = Shape::pairs;
  std::string pub_host = "127.0.0.1";
  std::string sub_host = "127.0.0.1";
  std::uint16_t pub_port = 1883;
  std::uint16_t sub_port = 1883;
  long pubs = -1;  // -1: the shape's default
  long subs = -1;
  unsigned qos = 0;
  std::size_t payload = 64;
  double rate = 0;  // messages/s per publisher; 0 = max rate
  std::uint64_t backlog = 100;
  std::uint32_t inflight = 16;
  double duration = 15;
  double drain_timeout = 10;
  double connect_timeout = 60;
  double probe_timeout = 10;
  ProtocolVersion version = ProtocolVersion::v311;
  std::uint16_t keepalive = 0;
  std::string topic_prefix;  // default bench/<run id>
  long idle = 0;             // idle mode: connections
  double settle = 1.0;       // idle mode: wait before reading the RSS
  double hold = 0;           // idle mode: keep the connections this long after measuring
  long connect_window = 64;  // connections being set up at once
  long broker_pid = 0;
  bool progress = true;
  std::string label;
  // Transport.
  bool tls = false;
  std::string tls_ca;    // --cafile (empty: the system's default CA paths)
  std::string tls_cert;  // --cert / --key: client certificate
  std::string tls_key;
  bool tls_insecure = false;  // --insecure: no certificate or host name verification
  bool ws = false;
  std::string ws_path;
};

/// "tcp", "tls", "ws" or "wss".
const char* transport_name(const Options& o);

/// The options of argv; the shape's publisher and subscriber counts filled in (traffic mode).
Options parse_options(int argc, char** argv);

/// `o` with the default --topic-prefix, bench/<run id>, when none was given.
Options with_topic_prefix(Options o);

}  // namespace brokerha::bench
