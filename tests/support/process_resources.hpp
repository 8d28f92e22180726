// SPDX-License-Identifier: Apache-2.0
#pragma once
// What this test process uses (the broker under test runs in it): its resident set, its CPU
// time, and a way to run it out of file descriptors on purpose. Header-only; Linux.
//
//   const std::size_t before = brokerha::test::resident_bytes();
//   {
//     brokerha::test::NoFreeDescriptors none;  // every new descriptor now fails with EMFILE
//     ...
//   }                                          // the limit is back
//
// Thread safety: the functions may be called from any thread; NoFreeDescriptors changes the
// process-wide limit (RLIMIT_NOFILE), so no other test may run alongside it.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

namespace brokerha::test {

/// The resident set size of this process, in bytes.
inline std::size_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  REQUIRE(f != nullptr);
  unsigned long size = 0;
  unsigned long resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  REQUIRE(n == 2);
  return static_cast<std::size_t>(resident) * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

/// User and system CPU time this process has used, in microseconds.
inline std::int64_t cpu_microseconds() {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  return (std::int64_t{r.ru_utime.tv_sec} + std::int64_t{r.ru_stime.tv_sec}) * 1000000 +
         std::int64_t{r.ru_utime.tv_usec} + std::int64_t{r.ru_stime.tv_usec};
}

/// While it lives, this process can open no further descriptor: the soft RLIMIT_NOFILE is set
/// to the lowest free descriptor (every descriptor below it is in use), so socket(), accept()
/// and open() fail with EMFILE. The destructor restores the limit.
class NoFreeDescriptors {
 public:
  NoFreeDescriptors() {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    const int lowest_free = ::open("/dev/null", O_RDONLY);
    REQUIRE(lowest_free >= 0);
    ::close(lowest_free);
    rlimit tight = saved_;
    tight.rlim_cur = static_cast<rlim_t>(lowest_free);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  }
  ~NoFreeDescriptors() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  NoFreeDescriptors(const NoFreeDescriptors&) = delete;
  NoFreeDescriptors& operator=(const NoFreeDescriptors&) = delete;

 private:
  rlimit saved_{};
};

/// What happened while the process had no free descriptor (starve_listener()).
struct Starved {
  int connected = 0;        // connections completed into the listener's backlog
  std::int64_t cpu_us = 0;  // CPU time the whole process used meanwhile
};

/// Runs this process out of descriptors with `waiting` connections completed (by the kernel)
/// into the backlog of the listener on 127.0.0.1:`port`, which therefore cannot accept them,
/// for `time`; then `at_end` runs (still without descriptors: read counters there), the limit
/// is restored and the connections are closed.
inline Starved starve_listener(std::uint16_t port, int waiting, std::chrono::milliseconds time,
                               const std::function<void()>& at_end) {
  std::vector<int> sockets;  // made while descriptors are free, connected once none are
  for (int i = 0; i < waiting; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockets.push_back(fd);
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  Starved out;
  {
    NoFreeDescriptors none;
    for (int fd : sockets) {
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
        ++out.connected;
      }
    }
    const std::int64_t before = cpu_microseconds();
    std::this_thread::sleep_for(time);
    out.cpu_us = cpu_microseconds() - before;
    at_end();
  }
  for (int fd : sockets) ::close(fd);
  return out;
}

}  // namespace brokerha::test
