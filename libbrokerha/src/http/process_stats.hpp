// SPDX-License-Identifier: Apache-2.0
#pragma once
// This process's resource use, read from /proc when asked (for /metrics and /debug).
// Linux only; on other systems (or when /proc is missing) the values stay 0.

#include <cstdint>
#include <string>
#include <vector>

namespace brokerha::http {

struct ThreadStats {
  int tid = 0;
  std::string name;
  double cpu_seconds = 0;
};

struct ProcessStats {
  double cpu_seconds = 0;         // user + system
  double start_time_seconds = 0;  // unix time the process started
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;
  std::uint64_t threads = 0;
};

ProcessStats read_process_stats();
std::vector<ThreadStats> read_thread_stats();

}  // namespace brokerha::http
