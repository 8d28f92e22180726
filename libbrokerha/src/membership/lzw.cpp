// SPDX-License-Identifier: Apache-2.0
#include "membership/lzw.hpp"

#include <array>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace brokerha::membership {
namespace {

constexpr std::uint32_t kClear = 256;
constexpr std::uint32_t kEof = 257;
constexpr unsigned kMaxWidth = 12;

class BitWriter {
 public:
  explicit BitWriter(std::string& out) : out_(out) {}
  void put(std::uint32_t code, unsigned width) {
    bits_ |= code << n_;
    n_ += width;
    while (n_ >= 8) {
      out_.push_back(static_cast<char>(bits_ & 0xFF));
      bits_ >>= 8;
      n_ -= 8;
    }
  }
  void flush() {
    if (n_ > 0) out_.push_back(static_cast<char>(bits_ & 0xFF));
    bits_ = 0;
    n_ = 0;
  }

 private:
  std::string& out_;
  std::uint32_t bits_ = 0;
  unsigned n_ = 0;
};

}  // namespace

std::string lzw_compress(std::string_view in) {
  std::string out;
  BitWriter bw(out);
  unsigned width = 9;
  std::uint32_t hi = kEof;
  std::uint32_t overflow = 1u << width;
  std::unordered_map<std::uint32_t, std::uint32_t> table;
  bw.put(kClear, width);
  // Go's incHi: the next implied code; when it reaches the 12-bit limit, emit clear and reset.
  auto inc_hi = [&]() -> bool {
    ++hi;
    if (hi == overflow) {
      ++width;
      overflow <<= 1;
    }
    if (hi == (1u << kMaxWidth) - 1) {
      bw.put(kClear, width);
      width = 9;
      hi = kEof;
      overflow = 1u << width;
      table.clear();
      return false;
    }
    return true;
  };
  if (in.empty()) {
    bw.put(kEof, width);
    bw.flush();
    return out;
  }
  std::uint32_t code = static_cast<std::uint8_t>(in[0]);
  for (std::size_t i = 1; i < in.size(); ++i) {
    const std::uint32_t lit = static_cast<std::uint8_t>(in[i]);
    const std::uint32_t key = code << 8 | lit;
    auto it = table.find(key);
    if (it != table.end()) {
      code = it->second;
      continue;
    }
    bw.put(code, width);
    code = lit;
    if (!inc_hi()) continue;
    table.emplace(key, hi);
  }
  bw.put(code, width);
  inc_hi();
  bw.put(kEof, width);
  bw.flush();
  return out;
}

bool lzw_decompress(std::string_view in, std::string& out, std::size_t max_out) {
  out.clear();
  constexpr std::uint32_t kInvalid = 0xFFFF;
  std::vector<std::uint8_t> suffix(1u << kMaxWidth);
  std::vector<std::uint16_t> prefix(1u << kMaxWidth);
  std::vector<std::uint8_t> scratch;
  unsigned width = 9;
  std::uint32_t hi = kEof;
  std::uint32_t overflow = 1u << width;
  std::uint32_t last = kInvalid;
  std::uint32_t bits = 0;
  unsigned nbits = 0;
  std::size_t pos = 0;
  while (true) {
    while (nbits < width) {
      if (pos >= in.size()) return false;  // no eof code
      bits |= static_cast<std::uint32_t>(static_cast<std::uint8_t>(in[pos++])) << nbits;
      nbits += 8;
    }
    const std::uint32_t code = bits & ((1u << width) - 1);
    bits >>= width;
    nbits -= width;
    if (code < kClear) {
      if (out.size() >= max_out) return false;
      out.push_back(static_cast<char>(code));
      if (last != kInvalid) {
        suffix[hi] = static_cast<std::uint8_t>(code);
        prefix[hi] = static_cast<std::uint16_t>(last);
      }
    } else if (code == kClear) {
      width = 9;
      hi = kEof;
      overflow = 1u << width;
      last = kInvalid;
      continue;
    } else if (code == kEof) {
      return true;
    } else if (code <= hi) {
      scratch.clear();
      std::uint32_t c = code;
      if (code == hi) {
        if (last == kInvalid) return false;
        // KwKwK: the last expansion followed by its own first byte.
        std::uint32_t head = last;
        while (head >= kClear) head = prefix[head];
        scratch.push_back(static_cast<std::uint8_t>(head));
        c = last;
      }
      while (c >= kClear) {
        scratch.push_back(suffix[c]);
        c = prefix[c];
        if (scratch.size() > (1u << kMaxWidth)) return false;
      }
      scratch.push_back(static_cast<std::uint8_t>(c));
      if (out.size() + scratch.size() > max_out) return false;
      out.append(scratch.rbegin(), scratch.rend());
      if (last != kInvalid) {
        suffix[hi] = static_cast<std::uint8_t>(c);
        prefix[hi] = static_cast<std::uint16_t>(last);
      }
    } else {
      return false;
    }
    last = code;
    ++hi;
    if (hi >= overflow) {
      if (width == kMaxWidth) {
        last = kInvalid;
        --hi;
      } else {
        ++width;
        overflow = 1u << width;
      }
    }
  }
}

}  // namespace brokerha::membership
