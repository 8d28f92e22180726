// SPDX-License-Identifier: Apache-2.0
#pragma once
// Versions that order writes across the cluster without trusting wall clocks: a hybrid
// logical clock reading (milliseconds since the epoch << 16 | a logical counter) plus the name
// of the node that made it. The newer of two versions has the larger reading; equal readings
// are ordered by node name, so every node agrees. Retained writes and client-id claims carry
// them.
//
// A reading from another node is believed only up to a bound ahead of this node's wall clock
// (`cluster.max_clock_skew`): one from further in the future would drag the clock with it
// (a reading of UINT64_MAX wraps it to 0), and every later local version would lose to it.

#include <chrono>
#include <cstdint>
#include <string>

namespace brokerha::hlc {

struct Version {
  std::uint64_t hlc = 0;
  std::string node;  // origin node ("" on a single node)

  bool newer_than(const Version& other) const noexcept {
    return hlc != other.hlc ? hlc > other.hlc : node > other.node;
  }
};

/// The default bound on how far ahead of the wall clock a remote reading may be.
inline constexpr std::chrono::milliseconds kDefaultMaxSkew{60000};

/// A hybrid logical clock: monotonic, close to wall time, advanced by what it observes.
/// Not thread-safe: its owner serialises calls.
class Clock {
 public:
  std::uint64_t now() noexcept;
  /// Moves the clock up to `remote` when it is at most max_skew() ahead of the wall clock;
  /// false (the clock untouched) for a reading further ahead.
  bool observe(std::uint64_t remote) noexcept;
  /// True when `remote` is at most max_skew() ahead of the wall clock.
  bool acceptable(std::uint64_t remote) const noexcept;

  void set_max_skew(std::chrono::milliseconds skew) noexcept { max_skew_ = skew; }
  std::chrono::milliseconds max_skew() const noexcept { return max_skew_; }

 private:
  std::uint64_t last_ = 0;
  std::chrono::milliseconds max_skew_ = kDefaultMaxSkew;
};

}  // namespace brokerha::hlc
