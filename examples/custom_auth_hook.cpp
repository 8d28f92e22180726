// SPDX-License-Identifier: Apache-2.0
// Embedding brokerha in a program: a Broker with a custom AuthHook, and a Bus consumer that
// prints every message the broker's clients publish.
//
//   brokerha-example-custom_auth_hook [PORT]
//
// Serves MQTT on 127.0.0.1:PORT (default 1883; 0 = a free port) until SIGINT/SIGTERM. Only the
// user "demo" with the password "demo-password" may connect:
//
//   mosquitto_sub -p 1883 -u demo -P demo-password -t 'demo/#' &
//   mosquitto_pub -p 1883 -u demo -P demo-password -t demo/hello -m world
//
// and the program prints `bus cluster:message_to {...}` for the publish. Public headers only.
#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/hooks.hpp>
#include <brokerha/options.hpp>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <thread>

namespace {

// Decides on the client's I/O thread. It must not block: a real service that asks a remote
// identity provider calls `done` later, from its own thread; the broker parks the client's
// packets until then.
class DemoAuth : public brokerha::AuthHook {
 public:
  void authenticate(const brokerha::AuthRequest& request,
                    std::function<void(brokerha::Decision)> done) override {
    const bool ok = request.username && *request.username == "demo" && request.password &&
                    *request.password == "demo-password";
    // deny ends the chain; `defer` would let the next hook (or the config rules) decide.
    done(ok ? brokerha::Decision::allow : brokerha::Decision::deny);
  }
};

}  // namespace

int main(int argc, char** argv) {
  // Take SIGINT/SIGTERM with sigwait below: block them before the broker starts its threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  brokerha::BrokerOptions options;
  const long port = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 1883;
  if (port < 0 || port > 65535) {
    std::fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
    return 2;
  }
  options.listeners.push_back({"127.0.0.1", static_cast<std::uint16_t>(port)});

  auto bus = std::make_shared<brokerha::Bus>();
  brokerha::Broker broker(options);
  broker.add_auth_hook(std::make_shared<DemoAuth>());
  broker.set_bus(bus);

  // The consumer takes events on its own thread; the broker never waits for it (a full
  // buffer drops events for this subscriber and counts them).
  auto events = bus->subscribe({"cluster:message_to"}, 1024);
  std::atomic<bool> running{true};
  std::thread consumer([&] {
    while (running) {
      if (auto e = events->pop(std::chrono::milliseconds(200))) {
        std::printf("bus %s %s\n", e->channel.c_str(), e->data.c_str());
        std::fflush(stdout);
      }
    }
  });

  std::error_code ec;
  broker.start(ec);
  if (ec) {
    std::fprintf(stderr, "cannot start: %s\n", ec.message().c_str());
    running = false;
    consumer.join();
    return 1;
  }
  std::printf("listening on 127.0.0.1:%u\n",
              static_cast<unsigned>(broker.listen_endpoints()[0].port));
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  broker.stop();
  running = false;
  consumer.join();
  std::printf("dropped events: %llu\n", static_cast<unsigned long long>(events->dropped()));
  return 0;
}
