// SPDX-License-Identifier: Apache-2.0
#pragma once
// The msgpack subset memberlist speaks (go-msgpack 0.5.x, MsgpackHandle defaults).
//
// Writer emits exactly what Go emits: structs as maps keyed by field name, integers in their
// smallest form, and strings and byte slices both in the *legacy raw* family (fixstr, str16,
// str32; never str8 or bin). A nil byte slice is written as nil.
//
// Reader accepts every msgpack format, works on a bounded buffer, never throws and never reads
// past the end: each call returns false on malformed or truncated input and leaves the reader
// failed. truncated() tells "ran out of bytes" apart from "malformed", which stream readers use
// to ask for more data.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace brokerha::membership::msgpack {

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void map_header(std::uint32_t n);
  void array_header(std::uint32_t n);
  void nil();
  void boolean(bool v);
  void uint(std::uint64_t v);
  void sint(std::int64_t v);
  void raw(std::string_view v);    // legacy raw: fixstr / str16 / str32
  void bytes(std::string_view v);  // a Go []byte: nil when empty, raw otherwise
  void key(std::string_view k) { raw(k); }

 private:
  void be(std::uint64_t v, int n);
  void container(std::uint8_t fix, std::uint8_t code16, std::uint32_t n);
  std::string& out_;
};

class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : p_(data), end_(data + size) {}
  explicit Reader(std::string_view s)
      : Reader(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()) {}

  bool map_header(std::uint32_t& n);
  bool array_header(std::uint32_t& n);
  bool boolean(bool& v);
  bool uint(std::uint64_t& v);  // any non-negative integer
  bool sint(std::int64_t& v);   // any integer that fits int64
  // A str, bin or nil (nil reads as empty). At most `max` bytes.
  bool raw(std::string& v, std::size_t max = kMaxRaw);
  bool skip();  // one whole value, nested up to kMaxDepth

  template <typename T>
  bool uint_as(T& v) {
    std::uint64_t u = 0;
    if (!uint(u) || u > static_cast<std::uint64_t>(static_cast<T>(~T{0}))) return fail();
    v = static_cast<T>(u);
    return true;
  }

  bool ok() const noexcept { return !failed_; }
  bool truncated() const noexcept { return truncated_; }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  const std::uint8_t* position() const noexcept { return p_; }

  static constexpr std::size_t kMaxRaw = 64u << 20;
  static constexpr int kMaxDepth = 32;

 private:
  bool fail() {
    failed_ = true;
    return false;
  }
  bool need(std::size_t n);
  bool byte(std::uint8_t& b);
  bool be(int n, std::uint64_t& v);
  bool skip_depth(int depth);
  bool container(std::uint8_t fix, std::uint8_t code16, std::uint32_t& n);

  const std::uint8_t* p_;
  const std::uint8_t* end_;
  bool failed_ = false;
  bool truncated_ = false;
};

}  // namespace brokerha::membership::msgpack
