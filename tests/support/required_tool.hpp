// SPDX-License-Identifier: Apache-2.0
#pragma once
// Tests that use an outside program (mosquitto-clients, python3-paho-mqtt, serf, promtool, the
// example program) skip with a message when it is missing on a developer's machine, and fail
// when BROKERHA_REQUIRE_TOOLS is set to anything but 0. scripts/test.sh sets it: its deps stage
// installs every tool, so there a missing one is a broken stage, never a silent skip.

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

namespace brokerha::test {

inline bool tools_required() {
  const char* v = std::getenv("BROKERHA_REQUIRE_TOOLS");
  return v != nullptr && *v != '\0' && std::string(v) != "0";
}

// Call where a test gives up for want of `what` (a program and the package that has it): a
// MESSAGE, or a failure when tools are required.
inline void tool_missing(const std::string& what) {
  if (tools_required()) FAIL_CHECK("required tool missing (BROKERHA_REQUIRE_TOOLS): " << what);
  MESSAGE("skipped: " << what);
}

}  // namespace brokerha::test
