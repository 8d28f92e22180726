// SPDX-License-Identifier: Apache-2.0
// brokerha-bench's transports (--tls, --cafile, --cert/--key, --ws, --wss) against an
// in-process broker with tcp, tls, ws and wss listeners and a test CA made with openssl:
// idle mode and traffic mode over each, client certificates, and the refusals (wrong CA,
// missing client certificate, wrong WebSocket path, usage errors). The bench is run as a
// program (BROKERHA_BENCH_PATH), every run bounded.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "support/listener_support.hpp"

#ifdef BROKERHA_BENCH_PATH

using namespace brokerha;
using namespace brokerha::test;
using namespace brokerha::test::listeners;

namespace {

ProcessResult bench(std::uint16_t port, std::vector<std::string> args) {
  std::vector<std::string> argv{BROKERHA_BENCH_PATH,  "--port",
                                std::to_string(port), "--no-progress",
                                "--connect-timeout",  "30"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, std::chrono::seconds(60));
}

// The RESULT line (the last line of stdout).
std::string result_line(const ProcessResult& r) {
  const std::size_t at = r.out.rfind("RESULT ");
  return at == std::string::npos ? std::string() : r.out.substr(at, r.out.find('\n', at) - at);
}

bool has_field(const std::string& result, const std::string& field) {
  return (" " + result + " ").find(" " + field + " ") != std::string::npos;
}

struct Setup {
  TempDir dir;
  TestCa ca{dir, "ca"};
  std::pair<std::string, std::string> server = ca.issue("server", "localhost", 30, true);
  std::pair<std::string, std::string> client = ca.issue("client", "bench-client");
};

}  // namespace

TEST_CASE("bench transports: idle and traffic over tcp tls ws and wss") {
  Setup s;
  // tls: client certificates optional (tls_ca set); wss: none asked for.
  ListenerBroker b({listener(ListenerType::tcp),
                    tls_listener(ListenerType::tls, s.server.first, s.server.second, s.ca.cert()),
                    listener(ListenerType::ws),
                    tls_listener(ListenerType::wss, s.server.first, s.server.second)});
  REQUIRE(b.ports.size() == 4);
  struct Case {
    const char* transport;
    std::uint16_t port;
    std::vector<std::string> args;
  };
  const std::vector<Case> cases{
      {"tcp", b.ports[0], {}},
      {"tls", b.ports[1], {"--cafile", s.ca.cert()}},
      {"ws", b.ports[2], {"--ws", "/mqtt"}},
      {"wss", b.ports[3], {"--wss", "/mqtt", "--cafile", s.ca.cert()}},
  };
  for (const Case& k : cases) {
    CAPTURE(k.transport);
    // Idle connections, then QoS 1 with MQTT 5 and payloads larger than one TLS record and one
    // 16-bit WebSocket length: packets span reads, frames and records.
    const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> runs{
        {{"--idle", "40", "--settle", "0.2", "--connect-window", "8"},
         {"mode=idle", "connected=40", "ok=1"}},
        {{"--pubs", "2", "--qos", "1", "--mqtt", "5", "--payload", "70000", "--backlog", "8",
          "--duration", "0.5"},
         {"mode=traffic", "lost=0", "ok=1"}},
    };
    for (const auto& [extra, fields] : runs) {
      std::vector<std::string> args = k.args;
      args.insert(args.end(), extra.begin(), extra.end());
      const ProcessResult r = bench(k.port, args);
      INFO(r.describe());
      CHECK(r.ok());
      const std::string result = result_line(r);
      CHECK(has_field(result, std::string("transport=") + k.transport));
      for (const std::string& f : fields) CHECK(has_field(result, f));
      CHECK_FALSE(has_field(result, "delivered=0"));
    }
  }
}

TEST_CASE("bench transports: client certificates and refusals") {
  Setup s;
  TestCa other(s.dir, "other");
  ListenerBroker b(
      {tls_listener(ListenerType::tls, s.server.first, s.server.second, s.ca.cert(), true),
       listener(ListenerType::ws)});

  // A required client certificate, given.
  const ProcessResult with_cert =
      bench(b.ports[0], {"--cafile", s.ca.cert(), "--cert", s.client.first, "--key",
                         s.client.second, "--idle", "5", "--settle", "0.1"});
  INFO(with_cert.describe());
  CHECK(with_cert.ok());
  CHECK(has_field(result_line(with_cert), "connected=5"));

  // Not given: the broker ends the handshake, the run fails (exit 3).
  const ProcessResult without = bench(b.ports[0], {"--cafile", s.ca.cert(), "--idle", "2"});
  INFO(without.describe());
  CHECK(without.exit_code == 3);
  CHECK(has_field(result_line(without), "ok=0"));

  // The server certificate checked against another CA: refused by the bench.
  const ProcessResult wrong_ca = bench(b.ports[0], {"--cafile", other.cert(), "--idle", "2"});
  INFO(wrong_ca.describe());
  CHECK(wrong_ca.exit_code == 3);
  CHECK(wrong_ca.err.find("certificate verify failed") != std::string::npos);

  // --insecure skips the check (the client certificate is still needed).
  const ProcessResult insecure =
      bench(b.ports[0], {"--insecure", "--cert", s.client.first, "--key", s.client.second, "--idle",
                         "2", "--settle", "0.1"});
  INFO(insecure.describe());
  CHECK(insecure.ok());

  // A WebSocket path the listener does not serve.
  const ProcessResult wrong_path = bench(b.ports[1], {"--ws", "/other", "--idle", "2"});
  INFO(wrong_path.describe());
  CHECK(wrong_path.exit_code == 3);
  CHECK(wrong_path.err.find("404") != std::string::npos);

  // Usage errors (exit 2): a certificate without its key, a path without '/', a missing CA file.
  CHECK(bench(b.ports[0], {"--cert", s.client.first, "--idle", "1"}).exit_code == 2);
  CHECK(bench(b.ports[1], {"--ws", "mqtt", "--idle", "1"}).exit_code == 2);
  CHECK(bench(b.ports[0], {"--cafile", s.dir.file("missing.pem"), "--idle", "1"}).exit_code == 2);
}

#endif  // BROKERHA_BENCH_PATH
