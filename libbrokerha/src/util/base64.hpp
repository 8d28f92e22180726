// SPDX-License-Identifier: Apache-2.0
#pragma once
// Base64 (RFC 4648, the standard alphabet with padding) on OpenSSL's EVP_EncodeBlock and
// EVP_DecodeBlock: the one implementation the library uses (the bus and API message JSON,
// HTTP Basic credentials, mosquitto_passwd hashes, the WebSocket handshake).

#include <optional>
#include <string>
#include <string_view>

namespace brokerha::util {

std::string base64_encode(std::string_view bytes);

// The decoded bytes, or nullopt unless `text` is canonical base64: a multiple of four
// characters of the standard alphabet, with '=' only as one or two final padding characters.
// No whitespace is accepted.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace brokerha::util
