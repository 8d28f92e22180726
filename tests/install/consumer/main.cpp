// An outside program using an installed (or add_subdirectory'd) brokerha: it must compile against
// the public headers and link and run against the library: the version check, and the library
// API minimum of SPEC section 7 (a broker on a free loopback port, started and stopped).
#include <brokerha/broker.hpp>
#include <brokerha/options.hpp>
#include <brokerha/version.hpp>

#include <cstdio>
#include <cstring>
#include <system_error>
#include <vector>

int main() {
  const char* linked = brokerha::library_version();
  if (std::strcmp(linked, brokerha::version_string) != 0) {
    std::fprintf(stderr, "headers are %s but the library is %s\n", brokerha::version_string,
                 linked);
    return 1;
  }
  brokerha::BrokerOptions opts;
  opts.listeners.push_back({/*bind*/ "127.0.0.1", /*port*/ 0});
  brokerha::Broker broker(opts);
  std::error_code ec;
  broker.start(ec);
  if (ec) {
    std::fprintf(stderr, "start failed: %s\n", ec.message().c_str());
    return 1;
  }
  const std::vector<brokerha::Endpoint> eps = broker.listen_endpoints();
  if (eps.size() != 1 || eps[0].port == 0) {
    std::fprintf(stderr, "no bound port\n");
    return 1;
  }
  broker.stop();
  broker.stop();  // idempotent
  std::fprintf(stderr, "broker listened on port %u\n", static_cast<unsigned>(eps[0].port));
  std::printf("brokerha %s\n", linked);
  return 0;
}
