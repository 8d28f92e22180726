// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha-bench's clock: steady_clock in nanoseconds, the send time every payload carries and
// the arrival time every latency is measured against (payload.hpp). Header-only, so the hot
// paths that read it (client.cpp) inline it as before. Read on the bench's one thread.

#include <chrono>
#include <cstdint>

namespace brokerha::bench {

using Clock = std::chrono::steady_clock;

inline std::uint64_t now_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

inline Clock::duration seconds_to_duration(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace brokerha::bench
