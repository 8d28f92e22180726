// SPDX-License-Identifier: Apache-2.0
#pragma once
// The MQTT wire codec: framing, decoding and encoding, sans-I/O.
//
// Reading is two steps, so a connection can decode straight out of its read buffer:
//  1. Framer splits a byte stream (any chunking, down to one byte at a time) into packets:
//     the fixed header's first byte and the body (the "remaining length" bytes). It enforces
//     the maximum packet size as soon as the remaining length is known, before it buffers
//     any of the body, and it copies only the bytes of a packet that is not complete yet.
//  2. decode() checks one packet against every session-independent rule of the protocol
//     version and fills a Packet whose strings point into the body.
// Violations come back as a Status naming the reason code the specification gives for them
// (0x81 Malformed Packet, 0x82 Protocol Error, 0x8F, 0x90, 0x94, 0x95, 0x99, 0x84) and a
// static description. No exceptions, no allocation except the Framer's partial-packet buffer
// and the vectors of a Packet.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mqtt/packet.hpp"

namespace brokerha::mqtt {

/// Outcome of a framing or decoding step: success, or the reason code of the violation.
struct Status {
  ReasonCode code = ReasonCode::success;
  const char* detail = "";  // static text naming the rule, "" on success

  bool ok() const noexcept { return code == ReasonCode::success; }
  static Status success() noexcept { return {}; }
};

/// Largest remaining length the variable byte integer can express (MQTT: 268,435,455).
constexpr std::uint32_t kMaxRemainingLength = 268'435'455;
/// Largest whole packet: one type byte, four length bytes and the largest remaining length.
constexpr std::uint32_t kMaxPacketSize = kMaxRemainingLength + 5;

/// Splits a byte stream into MQTT packets.
///
/// Thread safety: none; one Framer per connection, used by the thread that reads it.
class Framer {
 public:
  /// `max_packet_size` bounds the whole packet (fixed header included), as MQTT 5.0's
  /// Maximum Packet Size does; a larger packet fails with 0x95 before its body is read.
  explicit Framer(std::uint32_t max_packet_size = kMaxPacketSize) noexcept
      : max_packet_size_(max_packet_size) {}

  void set_max_packet_size(std::uint32_t bytes) noexcept { max_packet_size_ = bytes; }
  std::uint32_t max_packet_size() const noexcept { return max_packet_size_; }

  /// Consumes `data`, calling `on_packet(std::uint8_t first_byte, std::string_view body)` for
  /// each complete packet, in order. `body` is valid only during the call. `on_packet` returns
  /// a Status; the first one that is not ok stops feeding and is returned. After an error
  /// the Framer is unusable (the stream has lost its framing): close the connection.
  template <class OnPacket>
  Status feed(std::string_view data, OnPacket&& on_packet);

  /// True when no partial packet is buffered.
  bool idle() const noexcept { return header_len_ == 0 && body_.empty(); }
  /// Bytes of partial packets held.
  std::size_t buffered() const noexcept { return header_len_ + body_.size(); }
  /// Frees the partial-packet buffer's memory if it is idle (keeps idle connections small).
  void shrink() noexcept;

 private:
  // Reads the fixed header from header_ (header_len_ bytes). Returns 1 when complete
  // (remaining_ set), 0 when more bytes are needed, or an error.
  Status parse_header(bool& complete) noexcept;

  std::uint32_t max_packet_size_;
  std::uint8_t header_[5] = {};
  std::uint8_t header_len_ = 0;  // bytes of the fixed header held in header_
  bool header_complete_ = false;
  std::uint32_t remaining_ = 0;  // remaining length of the packet being assembled
  std::string body_;             // the partial body
};

/// Decodes one packet. `first_byte` is the fixed header's first byte and `body` the
/// remaining-length bytes (as Framer delivers them). `version` is the connection's protocol
/// version; a CONNECT carries its own and ignores it. On error `out` holds what was decoded
/// before the violation: for CONNECT at least `version` once the protocol level was read, so
/// the caller can answer in the right CONNACK format.
Status decode(std::uint8_t first_byte, std::string_view body, ProtocolVersion version, Packet& out);

/// Appends the encoding of `packet` for `version` to `out`. Returns false and appends nothing
/// when a field cannot be encoded (a string longer than 65,535 bytes, a packet longer than
/// the largest remaining length, a packet type the version does not have).
bool encode(const Packet& packet, ProtocolVersion version, std::string& out);

/// The size encode() would append, or 0 when it would fail.
std::size_t encoded_size(const Packet& packet, ProtocolVersion version);

/// Offset of the packet identifier in an encoded QoS 1/2 PUBLISH (the bytes encode() made),
/// for patching the identifier of a shared encoding per subscriber. The DUP flag is bit 3 of
/// byte 0.
std::size_t publish_packet_id_offset(std::string_view encoded_publish) noexcept;

/// Appends the variable byte integer encoding of `value` (<= kMaxRemainingLength).
void append_varint(std::string& out, std::uint32_t value);

/// The number of bytes of the variable byte integer encoding of `value`.
constexpr std::size_t varint_size(std::uint32_t value) noexcept {
  return value < 128 ? 1 : value < 16'384 ? 2 : value < 2'097'152 ? 3 : 4;
}

// ---- Framer::feed -------------------------------------------------------------------------

template <class OnPacket>
Status Framer::feed(std::string_view data, OnPacket&& on_packet) {
  std::size_t pos = 0;
  const std::size_t n = data.size();
  while (pos < n) {
    if (!header_complete_) {
      // Fast path: nothing partial and the whole packet is in `data`: no copy at all.
      if (header_len_ == 0 && n - pos >= 2) {
        std::uint32_t value = 0;
        std::size_t i = 1;
        unsigned shift = 0;
        bool done = false;
        for (; i <= 4 && pos + i < n; ++i) {
          const auto b = static_cast<std::uint8_t>(data[pos + i]);
          value |= static_cast<std::uint32_t>(b & 0x7Fu) << shift;
          shift += 7;
          if ((b & 0x80u) == 0) {
            done = true;
            ++i;
            break;
          }
        }
        if (done) {
          const std::size_t header_size = i;  // type byte + length bytes
          if (header_size > 2 && static_cast<std::uint8_t>(data[pos + header_size - 1]) == 0) {
            return {ReasonCode::malformed_packet, "remaining length not minimally encoded"};
          }
          if (static_cast<std::uint64_t>(value) + header_size > max_packet_size_) {
            return {ReasonCode::packet_too_large, "packet exceeds the maximum packet size"};
          }
          if (n - pos - header_size >= value) {
            const auto first = static_cast<std::uint8_t>(data[pos]);
            Status s = on_packet(first, data.substr(pos + header_size, value));
            if (!s.ok()) return s;
            pos += header_size + value;
            continue;
          }
        }
      }
      // Slow path: gather the fixed header byte by byte.
      while (pos < n && !header_complete_) {
        header_[header_len_++] = static_cast<std::uint8_t>(data[pos++]);
        if (header_len_ >= 2) {
          Status s = parse_header(header_complete_);
          if (!s.ok()) return s;
        }
      }
      if (!header_complete_) break;
      // Grow with the data actually received: a peer that announces a large packet and then
      // trickles bytes must not make us reserve the whole size up front.
      body_.reserve(std::min<std::uint32_t>(remaining_, 65'536));
    }
    const std::size_t take = std::min<std::size_t>(remaining_ - body_.size(), n - pos);
    body_.append(data.data() + pos, take);
    pos += take;
    if (body_.size() == remaining_) {
      const std::uint8_t first = header_[0];
      header_len_ = 0;
      header_complete_ = false;
      Status s = on_packet(first, std::string_view(body_));
      body_.clear();
      if (body_.capacity() > 4096) shrink();
      if (!s.ok()) return s;
    }
  }
  return Status::success();
}

}  // namespace brokerha::mqtt
