// SPDX-License-Identifier: Apache-2.0
#pragma once
// What brokerha-bench samples of processes: the broker's CPU time and resident memory from
// /proc/<pid> (--broker-pid), and the bench's own CPU time. Each call reads once, synchronously;
// called on the bench's one thread when a phase starts or ends, never per message.

#include <cstdint>
#include <optional>

namespace brokerha::bench {

/// utime + stime of `pid` in seconds, from /proc/<pid>/stat; nullopt when unreadable.
std::optional<double> process_cpu_seconds(long pid);

/// VmRSS of `pid` in KiB, from /proc/<pid>/status; nullopt when unreadable.
std::optional<std::uint64_t> process_rss_kib(long pid);

/// User + system CPU seconds of this process (getrusage).
double own_cpu_seconds();

}  // namespace brokerha::bench
