// SPDX-License-Identifier: Apache-2.0
// brokerha-bench: an MQTT 3.1.1 / 5.0 load generator for brokerha and other brokers.
//
// One thread, one io_context, every client connection on it (docs/benchmarks.md). Raw MQTT over
// Asio: frames are split with brokerha's mqtt::Framer, CONNECT/SUBSCRIBE are built with
// mqtt::encode and CONNACK/SUBACK read with mqtt::decode; PUBLISH and its acknowledgements,
// the hot path, are written from a pre-encoded template and parsed by hand.
//
// Traffic mode: publishers and subscribers in one of three shapes (fan-in: P publishers -> one
// topic -> S subscribers; pairs: publisher i -> topic i -> subscriber i; fan-out: the fan-in
// topology with the opposite counts), QoS 0/1/2, a fixed rate per publisher or max rate. At
// max rate a publisher pauses while any subscriber of its topic has `--backlog` messages
// outstanding (sent, not yet received) and resumes at half of that, so no broker queue limit
// is reached and nothing may be dropped, QoS 0 included. QoS 1/2 publishers keep at most
// `--inflight` messages unacknowledged. Every payload carries the publisher id, a sequence
// number and the steady_clock send time (payload.hpp): latency percentiles, loss, duplicates
// and reordering per publisher -> subscriber stream come from those (stats.hpp).
//
// Before the measured run, probes (payloads marked as such) are published on every topic until
// each subscriber has received one: subscriptions have reached the publishing broker, which
// matters in cross-host mode (--pub-host/--sub-host on different cluster nodes).
//
// Idle mode (--idle N): N connections that CONNECT and stay; with --broker-pid the broker's
// VmRSS before and after gives the memory per idle connection.
//
// Transports (every mode): plain TCP by default; --tls (asio::ssl::stream over the socket),
// --ws PATH (RFC 6455 client: the upgrade with the `mqtt` subprotocol, MQTT in masked binary
// frames) and --wss PATH (both).
//
// Output: a progress line on stderr once a second, a human summary on stdout, then one
// machine-readable line on stdout: `RESULT key=value ...` (see --help). Exit status: 0
// when the run completed with no loss, duplicate, reordering or invalid message; 1 when it
// completed but integrity checks failed; 2 for usage errors; 3 when the run failed (connection
// refused or closed, protocol error, timeout).
//
// The files, each on the bench's one thread (this main() runs the whole program on it):
//   options.{hpp,cpp}       the command line
//   engine.{hpp,cpp}        the run: io_context, connections, phases
//   shapes.{hpp,cpp}        which connections and topics each shape opens, rate schedules
//   client.{hpp,cpp}        the MQTT client engine (one Conn per connection; the hot path)
//   transports.{hpp,cpp}    connecting, TLS and WebSocket
//   report.{hpp,cpp}        the progress line, the summary and the RESULT line
//   proc_sampler.{hpp,cpp}  the broker's CPU and RSS from /proc, the bench's own CPU
//   stats.hpp, payload.hpp  latency histogram and sequence tracking; the payload header
//   clock.hpp, asio_include.hpp

#include <signal.h>

#include "engine.hpp"
#include "options.hpp"

int main(int argc, char** argv) {
  using namespace brokerha::bench;
  ::signal(SIGPIPE, SIG_IGN);
  const Options options = parse_options(argc, argv);
  Engine engine(options);
  return engine.run();
}
