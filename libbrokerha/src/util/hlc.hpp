// SPDX-License-Identifier: Apache-2.0
#pragma once
// Versions that order writes across the cluster without trusting wall clocks: a hybrid
// logical clock reading (milliseconds since the epoch << 16 | a logical counter) plus the name
// of the node that made it. The newer of two versions has the larger reading; equal readings
// are ordered by node name, so every node agrees. Retained writes and client-id claims carry
// them.

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

/// A hybrid logical clock: monotonic, close to wall time, advanced by what it observes.
/// Not thread-safe: its owner serialises calls.
class Clock {
 public:
  std::uint64_t now() noexcept;
  void observe(std::uint64_t remote) noexcept;

 private:
  std::uint64_t last_ = 0;
};

}  // namespace brokerha::hlc
