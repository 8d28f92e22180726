// SPDX-License-Identifier: Apache-2.0
#include "http/process_stats.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string_view>

namespace brokerha::http {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The fields of a /proc/<pid>/stat line after the command name (field 3 is index 0).
std::vector<std::string> stat_fields(const std::string& line, std::string* name) {
  std::vector<std::string> out;
  const std::size_t open = line.find('(');
  const std::size_t close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return out;
  if (name != nullptr) *name = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 1));
  std::string f;
  while (rest >> f) out.push_back(f);
  return out;
}

double ticks_to_seconds(const std::vector<std::string>& f, std::size_t utime_index) {
  if (f.size() <= utime_index + 1) return 0;
  const long hz = sysconf(_SC_CLK_TCK);
  if (hz <= 0) return 0;
  return static_cast<double>(std::stoull(f[utime_index]) + std::stoull(f[utime_index + 1])) /
         static_cast<double>(hz);
}

std::uint64_t count_entries(const char* dir) {
  std::uint64_t n = 0;
  if (DIR* d = opendir(dir)) {
    while (const dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    closedir(d);
  }
  return n;
}

}  // namespace

ProcessStats read_process_stats() {
  ProcessStats s;
  try {
    // Fields (man 5 proc), counted from 1: utime 14, stime 15, num_threads 20, starttime 22,
    // vsize 23, rss 24 (pages). Index here = field - 3.
    const auto f = stat_fields(read_file("/proc/self/stat"), nullptr);
    if (f.size() > 21) {
      s.cpu_seconds = ticks_to_seconds(f, 11);
      s.threads = std::stoull(f[17]);
      s.virtual_bytes = std::stoull(f[20]);
      const long page = sysconf(_SC_PAGESIZE);
      s.resident_bytes = std::stoull(f[21]) * static_cast<std::uint64_t>(page > 0 ? page : 4096);
      const long hz = sysconf(_SC_CLK_TCK);
      // Boot time + start ticks.
      std::istringstream proc_stat(read_file("/proc/stat"));
      std::string line;
      while (std::getline(proc_stat, line)) {
        if (line.rfind("btime ", 0) == 0 && hz > 0) {
          s.start_time_seconds = static_cast<double>(std::stoull(line.substr(6))) +
                                 static_cast<double>(std::stoull(f[19])) / static_cast<double>(hz);
        }
      }
    }
  } catch (const std::exception&) {
    // A field that does not parse leaves the rest at 0.
  }
  s.open_fds = count_entries("/proc/self/fd");
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) s.max_fds = lim.rlim_cur;
  return s;
}

std::vector<ThreadStats> read_thread_stats() {
  std::vector<ThreadStats> out;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    ThreadStats t;
    try {
      t.tid = std::stoi(e->d_name);
      const auto f =
          stat_fields(read_file(std::string("/proc/self/task/") + e->d_name + "/stat"), &t.name);
      t.cpu_seconds = ticks_to_seconds(f, 11);
    } catch (const std::exception&) {
      continue;  // the thread ended meanwhile
    }
    out.push_back(std::move(t));
  }
  closedir(d);
  return out;
}

}  // namespace brokerha::http
