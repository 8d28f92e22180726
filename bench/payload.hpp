// SPDX-License-Identifier: Apache-2.0
#pragma once
// The payload brokerha-bench publishes: a fixed 24-byte header, then filler up to the payload
// size. Header-only, no I/O (the unit tests use it).
//
//   offset  size  field
//        0     4  magic: "BHB1" for a measured message, "BHBP" for a probe (engine.cpp)
//        4     4  publisher id (little endian)
//        8     8  sequence number of this publisher, from 0 (little endian)
//       16     8  send time, steady_clock nanoseconds (little endian)
//
// The send time is comparable only within one process: publishers and subscribers of a run are
// all in the same brokerha-bench process, so latency = receive time - send time.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace brokerha::bench {

constexpr std::size_t kPayloadHeaderSize = 24;

enum class PayloadKind : std::uint8_t { invalid, message, probe };

struct PayloadHeader {
  PayloadKind kind = PayloadKind::invalid;
  std::uint32_t publisher = 0;
  std::uint64_t sequence = 0;
  std::uint64_t sent_ns = 0;
};

namespace detail {
inline void put_le(char* p, std::uint64_t v, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
}
inline std::uint64_t get_le(const char* p, std::size_t n) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return v;
}
}  // namespace detail

/// Writes the header into `p` (at least kPayloadHeaderSize bytes).
inline void write_payload_header(char* p, PayloadKind kind, std::uint32_t publisher,
                                 std::uint64_t sequence, std::uint64_t sent_ns) noexcept {
  std::memcpy(p, kind == PayloadKind::probe ? "BHBP" : "BHB1", 4);
  detail::put_le(p + 4, publisher, 4);
  detail::put_le(p + 8, sequence, 8);
  detail::put_le(p + 16, sent_ns, 8);
}

/// Reads a payload's header; kind is invalid when it is too short or the magic is wrong.
inline PayloadHeader read_payload_header(std::string_view payload) noexcept {
  PayloadHeader h;
  if (payload.size() < kPayloadHeaderSize) return h;
  const char* p = payload.data();
  if (std::memcmp(p, "BHB1", 4) == 0) {
    h.kind = PayloadKind::message;
  } else if (std::memcmp(p, "BHBP", 4) == 0) {
    h.kind = PayloadKind::probe;
  } else {
    return h;
  }
  h.publisher = static_cast<std::uint32_t>(detail::get_le(p + 4, 4));
  h.sequence = detail::get_le(p + 8, 8);
  h.sent_ns = detail::get_le(p + 16, 8);
  return h;
}

}  // namespace brokerha::bench
