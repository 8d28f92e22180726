// SPDX-License-Identifier: Apache-2.0
#include "util/hlc.hpp"

#include <chrono>

namespace brokerha::hlc {

std::uint64_t Clock::now() noexcept {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  const std::uint64_t physical = static_cast<std::uint64_t>(ms) << 16;
  last_ = physical > last_ ? physical : last_ + 1;
  return last_;
}

void Clock::observe(std::uint64_t remote) noexcept {
  if (remote > last_) last_ = remote;
}

}  // namespace brokerha::hlc
