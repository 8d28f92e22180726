// SPDX-License-Identifier: Apache-2.0
#include "util/base64.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <climits>

namespace brokerha::util {

namespace {

bool in_alphabet(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  if (bytes.empty()) return out;
  // EVP_EncodeBlock takes an int length; encode in chunks of a multiple of three bytes.
  constexpr std::size_t kChunk = 3 * (1u << 20);
  out.resize((bytes.size() + 2) / 3 * 4 + 1);
  std::size_t written = 0;
  for (std::size_t off = 0; off < bytes.size(); off += kChunk) {
    const std::size_t n = std::min(kChunk, bytes.size() - off);
    const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + written),
                                    reinterpret_cast<const unsigned char*>(bytes.data() + off),
                                    static_cast<int>(n));
    written += static_cast<std::size_t>(len);
  }
  out.resize(written);
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  if (text.empty()) return std::string();
  // EVP_DecodeBlock skips leading and trailing white space and decodes '=' as zero bits
  // anywhere: check the text is canonical first, so its length arithmetic below holds.
  std::size_t padding = 0;
  if (text.back() == '=') padding = text[text.size() - 2] == '=' ? 2 : 1;
  for (std::size_t i = 0; i < text.size() - padding; ++i) {
    if (!in_alphabet(text[i])) return std::nullopt;
  }
  if (text.size() > static_cast<std::size_t>(INT_MAX)) return std::nullopt;
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0 || static_cast<std::size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - padding);  // EVP_DecodeBlock counts the padding as zero bytes
  return out;
}

}  // namespace brokerha::util
