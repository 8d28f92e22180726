// SPDX-License-Identifier: Apache-2.0
#pragma once
// Reading and writing binary formats: the one bounds-checked reader and the one set of
// appenders that every wire and storage format of the library is built on (MQTT packets, the
// cluster link's frame headers and hello, cluster messages, exported sessions). Each format adds
// only what is its own on top: the MQTT variable byte integer and two-byte-length strings
// (mqtt/codec.cpp), LEB128-length strings (cluster/protocol.cpp), four-byte-length blobs
// (session/export.cpp).
//
// Integers come big-endian (`be16`/`be32`/`be64`: MQTT, the link header, sessions) or
// little-endian in 1..8 bytes (`le`: cluster messages), or as unsigned LEB128 (`leb128`, at
// most ten bytes, no bits beyond 64). A read that would run past the end returns false and
// leaves the value unspecified; nothing here throws or allocates.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace brokerha::util {

// A cursor over bytes that never reads past their end.
class ByteReader {
 public:
  explicit ByteReader(std::string_view data) noexcept
      : p_(reinterpret_cast<const std::uint8_t*>(data.data())), end_(p_ + data.size()) {}

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  bool empty() const noexcept { return p_ == end_; }

  bool u8(std::uint8_t& v) noexcept {
    if (p_ == end_) return false;
    v = *p_++;
    return true;
  }
  bool be16(std::uint16_t& v) noexcept {
    if (remaining() < 2) return false;
    v = static_cast<std::uint16_t>((p_[0] << 8) | p_[1]);
    p_ += 2;
    return true;
  }
  bool be32(std::uint32_t& v) noexcept {
    if (remaining() < 4) return false;
    v = (std::uint32_t{p_[0]} << 24) | (std::uint32_t{p_[1]} << 16) | (std::uint32_t{p_[2]} << 8) |
        std::uint32_t{p_[3]};
    p_ += 4;
    return true;
  }
  bool be64(std::uint64_t& v) noexcept {
    if (remaining() < 8) return false;
    v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p_[i];
    p_ += 8;
    return true;
  }
  // `bytes` (1..8) little-endian bytes.
  bool le(std::uint64_t& v, int bytes) noexcept {
    if (bytes < 1 || bytes > 8 || remaining() < static_cast<std::size_t>(bytes)) return false;
    v = 0;
    for (int i = 0; i < bytes; ++i) v |= std::uint64_t{p_[i]} << (8 * i);
    p_ += bytes;
    return true;
  }
  // Unsigned LEB128: seven bits a byte, low first; false past ten bytes or 64 bits.
  bool leb128(std::uint64_t& v) noexcept {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      std::uint8_t b;
      if (!u8(b)) return false;
      v |= std::uint64_t{b & 0x7Fu} << shift;
      if ((b & 0x80u) == 0) return shift < 63 || (b & 0x7Eu) == 0;
    }
    return false;
  }
  // The next `n` bytes, as a view into the input.
  bool take(std::size_t n, std::string_view& v) noexcept {
    if (remaining() < n) return false;
    v = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }
  bool skip(std::size_t n) noexcept {
    if (remaining() < n) return false;
    p_ += n;
    return true;
  }
  // Everything left; the reader is empty afterwards.
  std::string_view rest() noexcept {
    std::string_view v(reinterpret_cast<const char*>(p_), remaining());
    p_ = end_;
    return v;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// ---- writing into a fixed place (headers patched in place) -------------------------------------

inline void store_be16(char* p, std::uint16_t v) noexcept {
  p[0] = static_cast<char>(v >> 8);
  p[1] = static_cast<char>(v & 0xFF);
}
inline void store_be32(char* p, std::uint32_t v) noexcept {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xFF);
}
inline void store_be64(char* p, std::uint64_t v) noexcept {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xFF);
}
inline std::uint16_t load_be16(const char* p) noexcept {
  return static_cast<std::uint16_t>((static_cast<std::uint8_t>(p[0]) << 8) |
                                    static_cast<std::uint8_t>(p[1]));
}
inline std::uint32_t load_be32(const char* p) noexcept {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}
inline std::uint64_t load_be64(const char* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

// ---- appending ---------------------------------------------------------------------------------

inline void put_u8(std::string& out, std::uint8_t v) { out.push_back(static_cast<char>(v)); }
inline void put_be16(std::string& out, std::uint16_t v) {
  char b[2];
  store_be16(b, v);
  out.append(b, 2);
}
inline void put_be32(std::string& out, std::uint32_t v) {
  char b[4];
  store_be32(b, v);
  out.append(b, 4);
}
inline void put_be64(std::string& out, std::uint64_t v) {
  char b[8];
  store_be64(b, v);
  out.append(b, 8);
}
// The low `bytes` (1..8) bytes of `v`, little-endian.
inline void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
inline void put_leb128(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

}  // namespace brokerha::util
