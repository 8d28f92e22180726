// SPDX-License-Identifier: Apache-2.0
#include <brokerha/version.hpp>

#include <doctest/doctest.h>

#include <string>

TEST_CASE("version: BROKERHA_VERSION_STRING is major.minor.patch") {
  const std::string expected = std::to_string(BROKERHA_VERSION_MAJOR) + "." +
                               std::to_string(BROKERHA_VERSION_MINOR) + "." +
                               std::to_string(BROKERHA_VERSION_PATCH);
  CHECK(std::string(BROKERHA_VERSION_STRING) == expected);
  CHECK(std::string(brokerha::version_string) == expected);
}

TEST_CASE("version: numeric constants match the macros") {
  CHECK(brokerha::version_major == BROKERHA_VERSION_MAJOR);
  CHECK(brokerha::version_minor == BROKERHA_VERSION_MINOR);
  CHECK(brokerha::version_patch == BROKERHA_VERSION_PATCH);
}

TEST_CASE("version: the library reports the headers' version") {
  REQUIRE(brokerha::library_version() != nullptr);
  CHECK(std::string(brokerha::library_version()) == BROKERHA_VERSION_STRING);
}
