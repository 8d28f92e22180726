// SPDX-License-Identifier: Apache-2.0
// is_valid_utf8: well-formed UTF-8 per RFC 3629 as MQTT requires (MQTT 5.0 section 1.5.4,
// 3.1.1 section 1.5.3), with and without U+0000, including the 8-byte ASCII fast path.

#include "mqtt/utf8.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

using brokerha::mqtt::is_valid_utf8;
using namespace std::string_view_literals;

namespace {

// Encodes `cp` in `len` bytes (1..4) the way UTF-8 would, without checking that `len` is the
// shortest form or that `cp` is a scalar value: overlong forms and surrogates on purpose.
std::string encode(std::uint32_t cp, int len) {
  std::string out;
  auto byte = [&out](std::uint32_t b) { out.push_back(static_cast<char>(b & 0xFFu)); };
  switch (len) {
    case 1:
      byte(cp);
      break;
    case 2:
      byte(0xC0u | (cp >> 6));
      byte(0x80u | (cp & 0x3Fu));
      break;
    case 3:
      byte(0xE0u | (cp >> 12));
      byte(0x80u | ((cp >> 6) & 0x3Fu));
      byte(0x80u | (cp & 0x3Fu));
      break;
    default:
      byte(0xF0u | (cp >> 18));
      byte(0x80u | ((cp >> 12) & 0x3Fu));
      byte(0x80u | ((cp >> 6) & 0x3Fu));
      byte(0x80u | (cp & 0x3Fu));
      break;
  }
  return out;
}

int shortest_length(std::uint32_t cp) {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

struct Row {
  const char* name;
  std::string_view bytes;
  bool valid;  // with allow_nul false
};

}  // namespace

TEST_CASE("utf8 boundaries of every sequence length") {
  const Row rows[] = {
      {"empty", ""sv, true},
      {"U+0001", "\x01"sv, true},
      {"U+007F", "\x7F"sv, true},
      {"U+0080", "\xC2\x80"sv, true},
      {"U+07FF", "\xDF\xBF"sv, true},
      {"U+0800", "\xE0\xA0\x80"sv, true},
      {"U+D7FF", "\xED\x9F\xBF"sv, true},
      {"U+D800 surrogate", "\xED\xA0\x80"sv, false},
      {"U+DBFF surrogate", "\xED\xAF\xBF"sv, false},
      {"U+DC00 surrogate", "\xED\xB0\x80"sv, false},
      {"U+DFFF surrogate", "\xED\xBF\xBF"sv, false},
      {"U+E000", "\xEE\x80\x80"sv, true},
      {"U+FEFF BOM", "\xEF\xBB\xBF"sv, true},
      {"U+FFFE noncharacter", "\xEF\xBF\xBE"sv, true},
      {"U+FFFF", "\xEF\xBF\xBF"sv, true},
      {"U+10000", "\xF0\x90\x80\x80"sv, true},
      {"U+1F600", "\xF0\x9F\x98\x80"sv, true},
      {"U+10FFFF", "\xF4\x8F\xBF\xBF"sv, true},
      {"U+110000", "\xF4\x90\x80\x80"sv, false},
      {"U+13FFFF", "\xF4\xBF\xBF\xBF"sv, false},
      {"F5 lead U+140000", "\xF5\x80\x80\x80"sv, false},
      {"F7 lead U+1FFFFF", "\xF7\xBF\xBF\xBF"sv, false},
      {"surrogate pair in CESU-8", "\xED\xA0\xBD\xED\xB8\x80"sv, false},
      {"mixed lengths", "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z"sv, true},
  };
  for (const Row& row : rows) {
    INFO("row: " << std::string(row.name));
    CHECK(is_valid_utf8(row.bytes) == row.valid);
    CHECK(is_valid_utf8(row.bytes, true) == row.valid);
  }
}

TEST_CASE("utf8 overlong forms are rejected") {
  const Row rows[] = {
      {"C0 80 overlong U+0000", "\xC0\x80"sv, false},
      {"C0 AF overlong slash", "\xC0\xAF"sv, false},
      {"C1 BF overlong U+007F", "\xC1\xBF"sv, false},
      {"E0 80 80 overlong U+0000", "\xE0\x80\x80"sv, false},
      {"E0 80 AF overlong slash", "\xE0\x80\xAF"sv, false},
      {"E0 9F BF overlong U+07FF", "\xE0\x9F\xBF"sv, false},
      {"F0 80 80 80 overlong U+0000", "\xF0\x80\x80\x80"sv, false},
      {"F0 80 80 AF overlong slash", "\xF0\x80\x80\xAF"sv, false},
      {"F0 8F BF BF overlong U+FFFF", "\xF0\x8F\xBF\xBF"sv, false},
      {"F8 five-byte form", "\xF8\x88\x80\x80\x80"sv, false},
      {"FC six-byte form", "\xFC\x84\x80\x80\x80\x80"sv, false},
  };
  for (const Row& row : rows) {
    INFO("row: " << std::string(row.name));
    CHECK(is_valid_utf8(row.bytes) == row.valid);
    CHECK(is_valid_utf8(row.bytes, true) == row.valid);
  }
}

TEST_CASE("utf8 truncated sequences and stray bytes are rejected") {
  const Row rows[] = {
      {"lone continuation 80", "\x80"sv, false},
      {"lone continuation BF", "\xBF"sv, false},
      {"two continuations", "\x80\x80"sv, false},
      {"continuation after ASCII", "a\x80"sv, false},
      {"FE", "\xFE"sv, false},
      {"FF", "\xFF"sv, false},
      {"C2 at the end", "\xC2"sv, false},
      {"E0 A0 at the end", "\xE0\xA0"sv, false},
      {"E2 at the end", "\xE2"sv, false},
      {"F0 90 80 at the end", "\xF0\x90\x80"sv, false},
      {"F4 at the end", "\xF4"sv, false},
      {"C2 then ASCII", "\xC2\x41"sv, false},
      {"E0 A0 then ASCII", "\xE0\xA0\x41"sv, false},
      {"F0 90 80 then ASCII", "\xF0\x90\x80\x41"sv, false},
      {"two lead bytes", "\xC2\xC2\x80"sv, false},
      {"lead then lead of a longer form", "\xE2\xF0\x9F\x98\x80"sv, false},
      {"valid then truncated", "\xC3\xA9\xC3"sv, false},
      {"ASCII then truncated 4-byte", "abcdefghij\xF0\x9F\x98"sv, false},
  };
  for (const Row& row : rows) {
    INFO("row: " << std::string(row.name));
    CHECK(is_valid_utf8(row.bytes) == row.valid);
    CHECK(is_valid_utf8(row.bytes, true) == row.valid);
  }
}

TEST_CASE("utf8 NUL is allowed only with allow_nul") {
  CHECK_FALSE(is_valid_utf8("\0"sv));
  CHECK(is_valid_utf8("\0"sv, true));
  CHECK_FALSE(is_valid_utf8("a\0b"sv));
  CHECK(is_valid_utf8("a\0b"sv, true));
  CHECK(is_valid_utf8("\0\0\0\0\0\0\0\0\0\0"sv, true));
  // allow_nul does not relax anything else.
  CHECK_FALSE(is_valid_utf8("\0\xC0\x80"sv, true));
  CHECK_FALSE(is_valid_utf8("\0\0\0\0\0\0\0\0\xFF"sv, true));
}

TEST_CASE("utf8 ASCII fast path with NUL at every position") {
  for (std::size_t length : {8u, 9u, 15u, 16u, 17u, 24u, 31u, 64u}) {
    std::string s(length, 'a');
    for (std::size_t i = 0; i < length; ++i) s[i] = static_cast<char>('A' + i % 26);
    CAPTURE(length);
    CHECK(is_valid_utf8(s));
    CHECK(is_valid_utf8(s, true));
    for (std::size_t pos = 0; pos < 16 && pos < length; ++pos) {
      CAPTURE(pos);
      std::string with_nul = s;
      with_nul[pos] = '\0';
      CHECK_FALSE(is_valid_utf8(with_nul));
      CHECK(is_valid_utf8(with_nul, true));
    }
    // NUL as the last byte too.
    std::string last = s;
    last.back() = '\0';
    CHECK_FALSE(is_valid_utf8(last));
    CHECK(is_valid_utf8(last, true));
  }
}

TEST_CASE("utf8 ASCII fast path with an invalid byte at every position") {
  const std::string base(40, 'x');
  for (std::size_t pos = 0; pos < base.size(); ++pos) {
    CAPTURE(pos);
    std::string bad = base;
    bad[pos] = '\x80';  // a lone continuation byte
    CHECK_FALSE(is_valid_utf8(bad));
    CHECK_FALSE(is_valid_utf8(bad, true));
    std::string high = base;
    high[pos] = '\xFF';
    CHECK_FALSE(is_valid_utf8(high, true));
    std::string del = base;
    del[pos] = '\x7F';  // DEL is ASCII
    CHECK(is_valid_utf8(del));
  }
}

TEST_CASE("utf8 multi-byte sequences straddling 8-byte words") {
  const std::string_view seqs[] = {"\xC3\xA9"sv, "\xE2\x82\xAC"sv, "\xF0\x9F\x98\x80"sv};
  for (std::string_view seq : seqs) {
    for (std::size_t pos = 0; pos <= 16; ++pos) {
      CAPTURE(pos);
      CAPTURE(seq.size());
      std::string s = std::string(pos, 'a') + std::string(seq) + std::string(16, 'b');
      CHECK(is_valid_utf8(s));
      // Cut the sequence one byte short: invalid wherever it sits.
      std::string cut =
          std::string(pos, 'a') + std::string(seq.substr(0, seq.size() - 1)) + std::string(16, 'b');
      CHECK_FALSE(is_valid_utf8(cut));
      // The same truncated sequence at the very end.
      CHECK_FALSE(
          is_valid_utf8(std::string(pos, 'a') + std::string(seq.substr(0, seq.size() - 1))));
    }
  }
}

TEST_CASE("utf8 every code point in its shortest form and every overlong form") {
  // Every scalar value is valid in its shortest form; surrogates never are.
  int failures = 0;
  std::uint32_t first_failure = 0;
  for (std::uint32_t cp = 1; cp <= 0x10FFFF; ++cp) {
    const std::string s = encode(cp, shortest_length(cp));
    const bool expected = cp < 0xD800 || cp > 0xDFFF;
    if (is_valid_utf8(s) != expected && failures++ == 0) first_failure = cp;
  }
  CAPTURE(first_failure);
  CHECK(failures == 0);

  // Every code point below 0x10000 encoded in more bytes than it needs is invalid.
  int accepted_overlong = 0;
  for (std::uint32_t cp = 0; cp < 0x10000; ++cp) {
    for (int len = shortest_length(cp) + 1; len <= 4; ++len) {
      if (is_valid_utf8(encode(cp, len), true)) ++accepted_overlong;
    }
  }
  CHECK(accepted_overlong == 0);

  // Four-byte forms above U+10FFFF are invalid.
  int accepted_above = 0;
  for (std::uint32_t cp = 0x110000; cp <= 0x1FFFFF; cp += 0x101) {
    if (is_valid_utf8(encode(cp, 4))) ++accepted_above;
  }
  CHECK(accepted_above == 0);
}
