// SPDX-License-Identifier: Apache-2.0
// Links against the packaged libbrokerha and starts a broker on a free loopback port.
#include <brokerha/broker.hpp>
#include <brokerha/version.hpp>

#include <cstdio>
#include <system_error>

int main() {
  brokerha::BrokerOptions options;
  options.listeners.push_back({"127.0.0.1", 0});
  brokerha::Broker broker(options);
  std::error_code ec;
  broker.start(ec);
  if (ec) {
    std::fprintf(stderr, "test_package: start failed: %s\n", ec.message().c_str());
    return 1;
  }
  const unsigned port = broker.listen_endpoints().at(0).port;
  broker.stop();
  std::printf("brokerha %s: a broker listened on 127.0.0.1:%u\n", brokerha::library_version(),
              port);
  return 0;
}
