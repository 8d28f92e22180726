// SPDX-License-Identifier: Apache-2.0
// Prints the version of brokerha this program runs with, and warns when it differs from the
// headers it was compiled against.
#include <brokerha/version.hpp>

#include <cstdio>
#include <cstring>

int main() {
  std::printf("brokerha %s\n", brokerha::library_version());
  if (std::strcmp(brokerha::library_version(), BROKERHA_VERSION_STRING) != 0) {
    std::fprintf(stderr, "warning: compiled against brokerha %s\n", BROKERHA_VERSION_STRING);
  }
  return 0;
}
