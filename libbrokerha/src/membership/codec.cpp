// SPDX-License-Identifier: Apache-2.0
#include "membership/codec.hpp"

#include "membership/lzw.hpp"
#include "membership/msgpack.hpp"
#include "membership/wire.hpp"

namespace brokerha::membership {
namespace {

constexpr auto kEncrypt = static_cast<char>(MsgType::encrypt);

bool label_ok(const CodecConfig& c, const std::string& got) {
  return c.skip_inbound_label_check || got == c.label;
}

std::string stream_aad(std::string_view len4, std::string_view label) {
  std::string aad(1, kEncrypt);
  aad.append(len4);
  aad.append(label);
  return aad;
}

}  // namespace

const char* to_string(DecodeStatus s) noexcept {
  switch (s) {
    case DecodeStatus::ok:
      return "ok";
    case DecodeStatus::need_more:
      return "need more";
    case DecodeStatus::bad_label:
      return "label mismatch";
    case DecodeStatus::auth_failed:
      return "no installed key could decrypt the message";
    case DecodeStatus::bad_crc:
      return "CRC mismatch";
    case DecodeStatus::malformed:
      return "malformed";
    case DecodeStatus::too_large:
      return "too large";
  }
  return "?";
}

std::string compress_message(std::string_view msg) {
  Compress cm;
  cm.algo = 0;
  cm.buf = lzw_compress(msg);
  return encode(cm);
}

DecodeStatus decompress_message(std::string_view body, std::string& msg, std::size_t max_out) {
  Compress cm;
  if (!decode(body, cm) || cm.algo != 0) return DecodeStatus::malformed;
  if (!lzw_decompress(cm.buf, msg, max_out)) return DecodeStatus::malformed;
  return msg.empty() ? DecodeStatus::malformed : DecodeStatus::ok;
}

std::string encode_packet(const CodecConfig& c, std::string_view msg, bool with_crc) {
  std::string buf(msg);
  if (c.enable_compression) {
    std::string z = compress_message(buf);
    if (z.size() < buf.size()) buf = std::move(z);
  }
  if (with_crc) buf = add_crc(buf);
  if (c.keyring.enabled()) buf = c.keyring.encrypt(buf, c.label);
  return add_label(c.label, buf);
}

DecodeStatus decode_packet(const CodecConfig& c, std::string_view in, std::string& msg) {
  std::string label;
  std::string_view rest;
  if (!strip_label(in, label, rest)) return DecodeStatus::malformed;
  if (!label_ok(c, label)) return DecodeStatus::bad_label;
  if (rest.empty()) return DecodeStatus::malformed;
  std::string plain;
  if (c.keyring.enabled()) {
    if (c.keyring.decrypt(rest, label, plain)) {
      rest = plain;
    } else if (c.verify_incoming) {
      return DecodeStatus::auth_failed;
    }
  }
  if (static_cast<std::uint8_t>(rest[0]) == static_cast<std::uint8_t>(MsgType::has_crc)) {
    std::string_view inner;
    if (!check_crc(rest.substr(1), inner)) return DecodeStatus::bad_crc;
    rest = inner;
  }
  if (rest.empty()) return DecodeStatus::malformed;
  msg.assign(rest);
  return DecodeStatus::ok;
}

std::string encode_stream(const CodecConfig& c, std::string_view msg) {
  std::string buf(msg);
  if (c.enable_compression) buf = compress_message(buf);
  if (c.keyring.enabled()) {
    // The length covers the encrypted blob: version + nonce + ciphertext + tag.
    const std::size_t blob_len = buf.size() + kEncryptOverhead;
    std::string len4;
    for (int i = 3; i >= 0; --i) len4.push_back(static_cast<char>((blob_len >> (8 * i)) & 0xFF));
    std::string framed(1, kEncrypt);
    framed.append(len4);
    framed.append(c.keyring.encrypt(buf, stream_aad(len4, c.label)));
    buf = std::move(framed);
  }
  return add_label(c.label, buf);
}

std::size_t stream_message_length(std::string_view msg, bool& need_more, std::size_t max) {
  need_more = false;
  if (msg.empty()) {
    need_more = true;
    return 0;
  }
  const auto type = static_cast<MsgType>(static_cast<std::uint8_t>(msg[0]));
  const std::string_view body = msg.substr(1);
  switch (type) {
    case MsgType::push_pull: {
      PushPull pp;
      const std::size_t n = decode_push_pull(body, pp, need_more, 1u << 20, max);
      return n == 0 ? 0 : n + 1;
    }
    case MsgType::user: {
      msgpack::Reader r(body);
      std::uint32_t fields = 0;
      std::int64_t len = -1;
      std::string key;
      if (r.map_header(fields)) {
        for (std::uint32_t i = 0; i < fields && r.ok(); ++i) {
          if (!r.raw(key, 256)) break;
          if (key == "UserMsgLen") {
            r.sint(len);
          } else {
            r.skip();
          }
        }
      }
      if (!r.ok()) {
        need_more = r.truncated();
        return 0;
      }
      if (len < 0 || static_cast<std::uint64_t>(len) > max) return 0;
      const std::size_t total = 1 + (body.size() - r.remaining()) + static_cast<std::size_t>(len);
      if (total > msg.size()) {
        need_more = true;
        return 0;
      }
      return total;
    }
    case MsgType::ping:
    case MsgType::ack:
    case MsgType::err:
    case MsgType::compress: {
      msgpack::Reader r(body);
      if (!r.skip()) {
        need_more = r.truncated();
        return 0;
      }
      return 1 + body.size() - r.remaining();
    }
    default:
      return 0;
  }
}

DecodeStatus decode_stream(const CodecConfig& c, std::string_view in, std::string& msg,
                           std::size_t& consumed) {
  consumed = 0;
  if (in.empty()) return DecodeStatus::need_more;
  std::string_view rest = in;
  std::string label;
  if (!rest.empty() &&
      static_cast<std::uint8_t>(rest[0]) == static_cast<std::uint8_t>(MsgType::has_label)) {
    if (rest.size() < 2 || rest.size() < 2u + static_cast<std::uint8_t>(rest[1])) {
      return DecodeStatus::need_more;
    }
    if (!strip_label(rest, label, rest)) return DecodeStatus::malformed;
  }
  if (!label_ok(c, label)) return DecodeStatus::bad_label;
  if (rest.empty()) return DecodeStatus::need_more;
  const std::size_t label_bytes = in.size() - rest.size();
  std::string plain;
  std::size_t outer = 0;  // bytes of `rest` the (encrypted) message took
  if (rest[0] == kEncrypt) {
    if (!c.keyring.enabled()) return DecodeStatus::auth_failed;
    if (rest.size() < 5) return DecodeStatus::need_more;
    std::size_t len = 0;
    for (std::size_t i = 1; i < 5; ++i) len = (len << 8) | static_cast<std::uint8_t>(rest[i]);
    if (len > c.max_stream) return DecodeStatus::too_large;
    if (rest.size() < 5 + len) return DecodeStatus::need_more;
    if (!c.keyring.decrypt(rest.substr(5, len), stream_aad(rest.substr(1, 4), label), plain)) {
      return DecodeStatus::auth_failed;
    }
    outer = 5 + len;
  } else if (c.keyring.enabled() && c.verify_incoming) {
    return DecodeStatus::auth_failed;
  }
  std::string_view body = outer != 0 ? std::string_view(plain) : rest;
  if (body.empty()) return DecodeStatus::malformed;
  bool need_more = false;
  const std::size_t n = stream_message_length(body, need_more, c.max_stream);
  if (n == 0) {
    if (need_more && outer == 0) return DecodeStatus::need_more;
    return DecodeStatus::malformed;
  }
  if (outer == 0) outer = n;
  if (static_cast<std::uint8_t>(body[0]) == static_cast<std::uint8_t>(MsgType::compress)) {
    const DecodeStatus s = decompress_message(body.substr(1, n - 1), msg, c.max_stream);
    if (s != DecodeStatus::ok) return s;
  } else {
    msg.assign(body.substr(0, n));
  }
  consumed = label_bytes + outer;
  return DecodeStatus::ok;
}

}  // namespace brokerha::membership
