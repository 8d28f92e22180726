// SPDX-License-Identifier: Apache-2.0
#pragma once
// A token bucket for rate limits (connections per second on a listener, PUBLISH packets per
// second from a client): `rate` tokens a second, at most one second's worth saved up (the
// burst), full at the first take. Time comes in as a millisecond clock that may wrap (32 bits,
// 49 days: an idle bucket that long is simply full again, give or take).
//
// Thread: its owner's; 12 bytes, kept per connection.

#include <algorithm>
#include <cstdint>

namespace brokerha::util {

class TokenBucket {
 public:
  /// The largest rate honoured (a higher one is treated as this): a second's burst in
  /// thousandths of a token fits 32 bits.
  static constexpr std::uint32_t kMaxRate = 1'000'000;

  /// Takes one token at `now_ms`; false when none is left. `rate` 0: no limit (always true).
  bool take(std::uint32_t rate, std::uint32_t now_ms) noexcept {
    if (rate == 0) return true;
    rate = std::min(rate, kMaxRate);
    const std::uint64_t cap = std::uint64_t{rate} * 1000;  // thousandths of a token
    std::uint64_t have = milli_;
    if (!started_) {
      have = cap;
      started_ = true;
    } else {
      const std::uint32_t elapsed = now_ms - stamp_ms_;  // wraps correctly
      have = std::min<std::uint64_t>(cap, have + std::uint64_t{elapsed} * rate);
    }
    stamp_ms_ = now_ms;
    if (have < 1000) {
      milli_ = static_cast<std::uint32_t>(have);
      return false;
    }
    milli_ = static_cast<std::uint32_t>(have - 1000);
    return true;
  }

 private:
  std::uint32_t stamp_ms_ = 0;
  std::uint32_t milli_ = 0;
  bool started_ = false;
};

}  // namespace brokerha::util
