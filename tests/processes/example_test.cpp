// SPDX-License-Identifier: Apache-2.0
// examples/custom_auth_hook.cpp run as a program with mosquitto_pub/mosquitto_sub as the
// clients: its AuthHook decides who connects, and its Bus consumer prints the publishes.

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <string>

#include "support/broker_process.hpp"
#include "support/child_process.hpp"
#include "support/required_tool.hpp"

#ifdef BROKERHA_EXAMPLE_AUTH_HOOK_PATH

namespace {

using namespace std::chrono_literals;
using brokerha::test::BackgroundProcess;
using brokerha::test::ProcessResult;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

ProcessResult pub(std::uint16_t port, const std::string& user, const std::string& password) {
  return brokerha::test::run_process(
      {brokerha::test::mosquitto_pub_path(), "-h", "127.0.0.1", "-p", std::to_string(port), "-u",
       user, "-P", password, "-t", "demo/hello", "-m", "world", "-q", "1"},
      20s);
}

}  // namespace

TEST_CASE("example custom_auth_hook: the hook decides and the bus consumer sees publishes") {
  if (brokerha::test::mosquitto_pub_path().empty()) {
    brokerha::test::tool_missing("mosquitto_pub (Debian mosquitto-clients)");
    return;
  }
  const std::uint16_t port = brokerha::test::free_port();
  REQUIRE(port != 0);
  BackgroundProcess example({BROKERHA_EXAMPLE_AUTH_HOOK_PATH, std::to_string(port)});
  REQUIRE_MESSAGE(example.wait_output(
                      [](const std::string& out) { return contains(out, "listening on"); }, 10s),
                  example.describe());

  const ProcessResult refused = pub(port, "demo", "wrong");
  INFO(refused.describe());
  CHECK(refused.exit_code != 0);
  const ProcessResult accepted = pub(port, "demo", "demo-password");
  INFO(accepted.describe());
  CHECK(accepted.exit_code == 0);
  CHECK(example.wait_output(
      [](const std::string& out) {
        return contains(out, "bus cluster:message_to") &&
               contains(out, "\"TopicName\":\"demo/hello\"");
      },
      10s));

  example.kill(SIGTERM);
  REQUIRE(example.wait_exit(10s));
  INFO(example.describe());
  CHECK(example.exit_code() == 0);
  CHECK(contains(example.out(), "dropped events: 0"));
}

#endif
