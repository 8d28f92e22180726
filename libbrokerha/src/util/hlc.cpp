// SPDX-License-Identifier: Apache-2.0
#include "util/hlc.hpp"

namespace brokerha::hlc {

namespace {

std::uint64_t wall_ms() noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace

std::uint64_t Clock::now() noexcept {
  const std::uint64_t physical = wall_ms() << 16;
  last_ = physical > last_ ? physical : last_ + 1;
  return last_;
}

bool Clock::acceptable(std::uint64_t remote) const noexcept {
  // Compared in milliseconds (the reading's physical part), so no shift can overflow.
  const std::uint64_t skew = static_cast<std::uint64_t>(max_skew_.count());
  return (remote >> 16) <= wall_ms() + skew;
}

bool Clock::observe(std::uint64_t remote) noexcept {
  if (!acceptable(remote)) return false;
  if (remote > last_) last_ = remote;
  return true;
}

}  // namespace brokerha::hlc
