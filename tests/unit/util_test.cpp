// SPDX-License-Identifier: Apache-2.0
// The shared helpers under libbrokerha/src/util/: base64 (on OpenSSL) and the byte reader and
// appenders every binary format is built on.

#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "util/base64.hpp"
#include "util/bytes.hpp"
#include "util/chars.hpp"

namespace util = brokerha::util;

TEST_CASE("util: base64 encodes the RFC 4648 test vectors") {
  CHECK(util::base64_encode("") == "");
  CHECK(util::base64_encode("f") == "Zg==");
  CHECK(util::base64_encode("fo") == "Zm8=");
  CHECK(util::base64_encode("foo") == "Zm9v");
  CHECK(util::base64_encode("foob") == "Zm9vYg==");
  CHECK(util::base64_encode("fooba") == "Zm9vYmE=");
  CHECK(util::base64_encode("foobar") == "Zm9vYmFy");
  CHECK(util::base64_encode(std::string("\xff\xfe\x00", 3)) == "//4A");
}

TEST_CASE("util: base64 decodes what it encodes, every length and byte") {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    const auto decoded = util::base64_decode(util::base64_encode(bytes));
    REQUIRE(decoded.has_value());
    CHECK(*decoded == bytes);
    bytes.push_back(static_cast<char>(i * 37));
  }
}

TEST_CASE("util: base64 refuses what is not canonical") {
  CHECK(util::base64_decode("")->empty());
  CHECK(util::base64_decode("Zm9vYmFy") == std::string("foobar"));
  CHECK(util::base64_decode("Zg==") == std::string("f"));
  CHECK_FALSE(util::base64_decode("Zg").has_value());         // no padding
  CHECK_FALSE(util::base64_decode("Zg=").has_value());        // not a multiple of four
  CHECK_FALSE(util::base64_decode("Z===").has_value());       // three padding characters
  CHECK_FALSE(util::base64_decode("Z=g=").has_value());       // '=' inside
  CHECK_FALSE(util::base64_decode("Zm9v Zm9v").has_value());  // white space
  CHECK_FALSE(util::base64_decode(" Zm9").has_value());
  CHECK_FALSE(util::base64_decode("Zm9*").has_value());  // not in the alphabet
  CHECK_FALSE(util::base64_decode("Zm9-").has_value());  // the URL alphabet is not accepted
}

TEST_CASE("util: the byte reader reads each width and never past the end") {
  std::string b;
  util::put_u8(b, 0xAB);
  util::put_be16(b, 0x1234);
  util::put_be32(b, 0xDEADBEEF);
  util::put_be64(b, 0x0102030405060708ull);
  util::put_le(b, 0x0A0B0C, 3);
  util::put_leb128(b, 300);
  util::put_leb128(b, UINT64_MAX);
  b += "xyz";

  util::ByteReader r(b);
  std::uint8_t u8 = 0;
  std::uint16_t u16 = 0;
  std::uint32_t u32 = 0;
  std::uint64_t u64 = 0, le = 0, v1 = 0, v2 = 0;
  std::string_view s;
  REQUIRE(r.u8(u8));
  REQUIRE(r.be16(u16));
  REQUIRE(r.be32(u32));
  REQUIRE(r.be64(u64));
  REQUIRE(r.le(le, 3));
  REQUIRE(r.leb128(v1));
  REQUIRE(r.leb128(v2));
  REQUIRE(r.take(2, s));
  CHECK(u8 == 0xAB);
  CHECK(u16 == 0x1234);
  CHECK(u32 == 0xDEADBEEF);
  CHECK(u64 == 0x0102030405060708ull);
  CHECK(le == 0x0A0B0C);
  CHECK(v1 == 300);
  CHECK(v2 == UINT64_MAX);
  CHECK(s == "xy");
  CHECK(r.remaining() == 1);
  CHECK_FALSE(r.take(2, s));
  CHECK_FALSE(r.be16(u16));
  CHECK_FALSE(r.be32(u32));
  CHECK_FALSE(r.be64(u64));
  CHECK_FALSE(r.le(le, 2));
  CHECK(r.rest() == "z");
  CHECK(r.empty());
  CHECK_FALSE(r.u8(u8));
  CHECK_FALSE(r.leb128(v1));
}

TEST_CASE("util: LEB128 refuses more than 64 bits and unterminated values") {
  std::uint64_t v = 0;
  const std::string eleven(10, '\x80');
  CHECK_FALSE(util::ByteReader(eleven + std::string(1, '\x01')).leb128(v));
  // Ten bytes whose last carries bits beyond the 64th.
  CHECK_FALSE(util::ByteReader(std::string(9, '\xff') + std::string(1, '\x02')).leb128(v));
  CHECK_FALSE(util::ByteReader(std::string(3, '\x80')).leb128(v));
  CHECK(util::ByteReader(std::string(9, '\xff') + std::string(1, '\x01')).leb128(v));
  CHECK(v == UINT64_MAX);
}

TEST_CASE("util: big-endian loads and stores in place") {
  char b[8];
  util::store_be16(b, 0xBEEF);
  CHECK(util::load_be16(b) == 0xBEEF);
  util::store_be32(b, 0x89ABCDEF);
  CHECK(util::load_be32(b) == 0x89ABCDEF);
  CHECK(static_cast<unsigned char>(b[0]) == 0x89);
  util::store_be64(b, 0xFEDCBA9876543210ull);
  CHECK(util::load_be64(b) == 0xFEDCBA9876543210ull);
  CHECK(static_cast<unsigned char>(b[7]) == 0x10);
}

TEST_CASE("util: contains_any finds any character of the set, anywhere") {
  CHECK_FALSE(util::contains_any("", "+#"));
  CHECK_FALSE(util::contains_any("a/b/c", ""));
  CHECK_FALSE(util::contains_any("sensors/kitchen/temp", "+#"));
  CHECK(util::contains_any("+", "+#"));
  CHECK(util::contains_any("a/#", "+#"));
  CHECK(util::contains_any("a/+/c", "+#"));
  CHECK(util::contains_any("group/x", "/+#"));
  // Every position of a long string, and a NUL inside it does not end the scan.
  std::string s(300, 'x');
  s[10] = '\0';
  for (std::size_t i = 0; i < s.size(); ++i) {
    std::string t = s;
    t[i] = '#';
    CHECK(util::contains_any(t, "+#"));
  }
  CHECK_FALSE(util::contains_any(s, "+#"));
}
