// SPDX-License-Identifier: Apache-2.0
#pragma once
// The outer layers of memberlist packets and streams.
//
// UDP send: message (or compound) -> compress (only when smaller) -> CRC (peer PMax >= 5)
//           -> encrypt (AAD = label) -> label prefix.
// UDP receive: label check -> decrypt (every key) -> CRC check -> the message, which may still be
//           a compound or a compress wrapper (the protocol core unwraps those recursively).
// TCP stream: [label][encrypt: 10, u32 BE length, blob (AAD = 10 + length + label)] around
//           [compress: 9, msgpack{Algo, Buf}] around the message. Compression is always used on
//           streams when enabled, as memberlist does.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "membership/crypto.hpp"

namespace brokerha::membership {

enum class DecodeStatus : std::uint8_t {
  ok,
  need_more,    // a stream prefix that is not complete yet
  bad_label,    // missing, unexpected or different label
  auth_failed,  // encryption expected and no key authenticates, or plaintext refused
  bad_crc,
  malformed,
  too_large,
};

const char* to_string(DecodeStatus s) noexcept;

struct CodecConfig {
  Keyring keyring;    // empty: no encryption
  std::string label;  // empty: no label
  bool enable_compression = true;
  bool skip_inbound_label_check = false;
  bool verify_incoming = true;  // false: accept plaintext too (migration), as memberlist
  std::size_t max_stream = 20u << 20;
};

std::string encode_packet(const CodecConfig& c, std::string_view msg, bool with_crc);
DecodeStatus decode_packet(const CodecConfig& c, std::string_view in, std::string& msg);

std::string encode_stream(const CodecConfig& c, std::string_view msg);
// `msg` gets the plaintext, decompressed message (type byte first); `consumed` how many input
// bytes it took. need_more: read more bytes and call again with the longer buffer.
DecodeStatus decode_stream(const CodecConfig& c, std::string_view in, std::string& msg,
                           std::size_t& consumed);

// [9][msgpack{Algo: 0, Buf: lzw(msg)}]
std::string compress_message(std::string_view msg);
// `body` follows the compress type byte.
DecodeStatus decompress_message(std::string_view body, std::string& msg,
                                std::size_t max_out = 40u << 20);

// Length of one plaintext stream message at the start of `msg` (type byte first): 0 with
// `need_more` set when incomplete, 0 without it when malformed.
std::size_t stream_message_length(std::string_view msg, bool& need_more, std::size_t max);

}  // namespace brokerha::membership
