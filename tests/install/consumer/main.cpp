// An outside program using an installed (or add_subdirectory'd) brokerha: it must compile against
// the public headers and link and run against the library (library_version() is exported).
#include <brokerha/version.hpp>

#include <cstdio>
#include <cstring>

int main() {
  const char* linked = brokerha::library_version();
  if (std::strcmp(linked, brokerha::version_string) != 0) {
    std::fprintf(stderr, "headers are %s but the library is %s\n", brokerha::version_string,
                 linked);
    return 1;
  }
  std::printf("brokerha %s\n", linked);
  return 0;
}
