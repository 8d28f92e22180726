// SPDX-License-Identifier: Apache-2.0
#pragma once
// Helpers shared by the MQTT codec unit tests: hex literals, field-by-field packet comparison
// and an encode -> frame -> decode -> encode round trip. Header-only; everything is inline.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"

namespace brokerha::test {

// ---- Bytes -------------------------------------------------------------------------------

/// Bytes from a hex listing: pairs of hex digits, whitespace ignored, and text between single
/// quotes copied as is ("00 04 'MQTT' 05"). Throws std::invalid_argument on anything else.
inline std::string hex(std::string_view text) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  int high = -1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\t') continue;
    if (c == '\'') {
      const std::size_t end = text.find('\'', i + 1);
      if (high >= 0 || end == std::string_view::npos) throw std::invalid_argument("bad hex text");
      out.append(text.substr(i + 1, end - i - 1));
      i = end;
      continue;
    }
    const int d = digit(c);
    if (d < 0) throw std::invalid_argument("bad hex digit");
    if (high < 0) {
      high = d;
    } else {
      out.push_back(static_cast<char>((high << 4) | d));
      high = -1;
    }
  }
  if (high >= 0) throw std::invalid_argument("odd number of hex digits");
  return out;
}

/// "10 0C 00 04" (upper case, one space between bytes).
inline std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const auto b = static_cast<std::uint8_t>(bytes[i]);
    if (i) out.push_back(' ');
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0F]);
  }
  return out;
}

/// Splits an encoded packet into the first byte and the body, checking the remaining length
/// against the bytes present. Fails the test when `wire` is not exactly one packet.
struct WireFrame {
  std::uint8_t first_byte = 0;
  std::uint32_t remaining_length = 0;
  std::size_t header_size = 0;
  std::string_view body;
};

inline WireFrame split_wire(std::string_view wire) {
  REQUIRE(wire.size() >= 2);
  WireFrame f;
  f.first_byte = static_cast<std::uint8_t>(wire[0]);
  std::size_t i = 1;
  unsigned shift = 0;
  for (;; ++i) {
    REQUIRE(i < wire.size());
    REQUIRE(i <= 4);
    const auto b = static_cast<std::uint8_t>(wire[i]);
    f.remaining_length |= static_cast<std::uint32_t>(b & 0x7Fu) << shift;
    shift += 7;
    if ((b & 0x80u) == 0) break;
  }
  f.header_size = i + 1;
  REQUIRE(wire.size() - f.header_size == f.remaining_length);
  f.body = wire.substr(f.header_size);
  return f;
}

/// Decodes a whole encoded packet; `out` points into `wire`.
inline mqtt::Status decode_wire(std::string_view wire, mqtt::ProtocolVersion version,
                                mqtt::Packet& out) {
  const WireFrame f = split_wire(wire);
  return mqtt::decode(f.first_byte, f.body, version, out);
}

// ---- Showing values in failure messages ----------------------------------------------------

inline std::string show(std::string_view s) {
  std::string out = "\"";
  const std::size_t n = s.size() > 48 ? 48 : s.size();
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F) {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x" + to_hex(s.substr(i, 1));
    }
  }
  out += "\"";
  if (n < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}
inline std::string show(bool v) { return v ? "true" : "false"; }
inline std::string show(std::uint8_t v) { return std::to_string(v); }
inline std::string show(std::uint16_t v) { return std::to_string(v); }
inline std::string show(std::uint32_t v) { return std::to_string(v); }
inline std::string show(ReasonCode v) {
  return "0x" + to_hex(std::string(1, static_cast<char>(v)));
}
inline std::string show(mqtt::ProtocolVersion v) { return std::to_string(static_cast<int>(v)); }
inline std::string show(const mqtt::UserProperty& u) { return show(u.name) + "=" + show(u.value); }
template <class T>
std::string show(const std::optional<T>& v) {
  return v ? show(*v) : std::string("(absent)");
}
template <class T>
std::string show(const std::vector<T>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + show(v[i]);
  return out + "]";
}

// ---- Field-by-field comparison ------------------------------------------------------------

inline bool same(const mqtt::UserProperty& a, const mqtt::UserProperty& b) {
  return a.name == b.name && a.value == b.value;
}
template <class T>
bool same(const T& a, const T& b) {
  return a == b;
}
template <class T>
bool same(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!same(a[i], b[i])) return false;
  }
  return true;
}

template <class T>
void check_field(const char* name, const T& actual, const T& expected) {
  INFO(std::string(name) << ": decoded " << show(actual) << ", expected " << show(expected));
  CHECK(same(actual, expected));
}

#define BROKERHA_CHECK_FIELD(field) ::brokerha::test::check_field(#field, a.field, b.field)

inline void check_equal(const mqtt::Properties& a, const mqtt::Properties& b) {
  BROKERHA_CHECK_FIELD(payload_format_indicator);
  BROKERHA_CHECK_FIELD(message_expiry_interval);
  BROKERHA_CHECK_FIELD(content_type);
  BROKERHA_CHECK_FIELD(response_topic);
  BROKERHA_CHECK_FIELD(correlation_data);
  BROKERHA_CHECK_FIELD(subscription_identifiers);
  BROKERHA_CHECK_FIELD(session_expiry_interval);
  BROKERHA_CHECK_FIELD(assigned_client_identifier);
  BROKERHA_CHECK_FIELD(server_keep_alive);
  BROKERHA_CHECK_FIELD(authentication_method);
  BROKERHA_CHECK_FIELD(authentication_data);
  BROKERHA_CHECK_FIELD(request_problem_information);
  BROKERHA_CHECK_FIELD(will_delay_interval);
  BROKERHA_CHECK_FIELD(request_response_information);
  BROKERHA_CHECK_FIELD(response_information);
  BROKERHA_CHECK_FIELD(server_reference);
  BROKERHA_CHECK_FIELD(reason_string);
  BROKERHA_CHECK_FIELD(receive_maximum);
  BROKERHA_CHECK_FIELD(topic_alias_maximum);
  BROKERHA_CHECK_FIELD(topic_alias);
  BROKERHA_CHECK_FIELD(maximum_qos);
  BROKERHA_CHECK_FIELD(retain_available);
  BROKERHA_CHECK_FIELD(user_properties);
  BROKERHA_CHECK_FIELD(maximum_packet_size);
  BROKERHA_CHECK_FIELD(wildcard_subscription_available);
  BROKERHA_CHECK_FIELD(subscription_identifier_available);
  BROKERHA_CHECK_FIELD(shared_subscription_available);
}

inline void check_equal(const mqtt::Will& a, const mqtt::Will& b) {
  BROKERHA_CHECK_FIELD(topic);
  BROKERHA_CHECK_FIELD(payload);
  BROKERHA_CHECK_FIELD(qos);
  BROKERHA_CHECK_FIELD(retain);
  INFO("will properties");
  check_equal(a.properties, b.properties);
}

inline void check_equal(const mqtt::Connect& a, const mqtt::Connect& b) {
  BROKERHA_CHECK_FIELD(version);
  BROKERHA_CHECK_FIELD(clean_start);
  BROKERHA_CHECK_FIELD(keep_alive);
  BROKERHA_CHECK_FIELD(client_id);
  BROKERHA_CHECK_FIELD(username);
  BROKERHA_CHECK_FIELD(password);
  REQUIRE(a.will.has_value() == b.will.has_value());
  if (a.will) check_equal(*a.will, *b.will);
  check_equal(a.properties, b.properties);
}

inline void check_equal(const mqtt::Connack& a, const mqtt::Connack& b) {
  BROKERHA_CHECK_FIELD(session_present);
  BROKERHA_CHECK_FIELD(code);
  check_equal(a.properties, b.properties);
}

inline void check_equal(const mqtt::Publish& a, const mqtt::Publish& b) {
  BROKERHA_CHECK_FIELD(dup);
  BROKERHA_CHECK_FIELD(qos);
  BROKERHA_CHECK_FIELD(retain);
  BROKERHA_CHECK_FIELD(topic);
  BROKERHA_CHECK_FIELD(packet_id);
  BROKERHA_CHECK_FIELD(payload);
  check_equal(a.properties, b.properties);
}

template <mqtt::PacketType Type>
void check_equal(const mqtt::PublishAck<Type>& a, const mqtt::PublishAck<Type>& b) {
  BROKERHA_CHECK_FIELD(packet_id);
  BROKERHA_CHECK_FIELD(reason_code);
  check_equal(a.properties, b.properties);
}

inline void check_equal(const mqtt::Subscribe& a, const mqtt::Subscribe& b) {
  BROKERHA_CHECK_FIELD(packet_id);
  check_equal(a.properties, b.properties);
  REQUIRE(a.subscriptions.size() == b.subscriptions.size());
  for (std::size_t i = 0; i < a.subscriptions.size(); ++i) {
    CAPTURE(i);
    const mqtt::Subscription& x = a.subscriptions[i];
    const mqtt::Subscription& y = b.subscriptions[i];
    check_field("filter", x.filter, y.filter);
    check_field("qos", x.qos, y.qos);
    check_field("no_local", x.no_local, y.no_local);
    check_field("retain_as_published", x.retain_as_published, y.retain_as_published);
    check_field("retain_handling", x.retain_handling, y.retain_handling);
  }
}

inline void check_equal(const mqtt::Suback& a, const mqtt::Suback& b) {
  BROKERHA_CHECK_FIELD(packet_id);
  BROKERHA_CHECK_FIELD(reason_codes);
  check_equal(a.properties, b.properties);
}

inline void check_equal(const mqtt::Unsubscribe& a, const mqtt::Unsubscribe& b) {
  BROKERHA_CHECK_FIELD(packet_id);
  BROKERHA_CHECK_FIELD(filters);
  check_equal(a.properties, b.properties);
}

inline void check_equal(const mqtt::Unsuback& a, const mqtt::Unsuback& b) {
  BROKERHA_CHECK_FIELD(packet_id);
  BROKERHA_CHECK_FIELD(reason_codes);
  check_equal(a.properties, b.properties);
}

inline void check_equal(const mqtt::Pingreq&, const mqtt::Pingreq&) {}
inline void check_equal(const mqtt::Pingresp&, const mqtt::Pingresp&) {}

inline void check_equal(const mqtt::Disconnect& a, const mqtt::Disconnect& b) {
  BROKERHA_CHECK_FIELD(reason_code);
  check_equal(a.properties, b.properties);
}

inline void check_equal(const mqtt::Auth& a, const mqtt::Auth& b) {
  BROKERHA_CHECK_FIELD(reason_code);
  check_equal(a.properties, b.properties);
}

#undef BROKERHA_CHECK_FIELD

/// Compares two packets of any type field by field.
inline void check_equal(const mqtt::Packet& actual, const mqtt::Packet& expected) {
  REQUIRE(actual.index() == expected.index());
  std::visit(
      [&](const auto& a) {
        using T = std::decay_t<decltype(a)>;
        check_equal(a, std::get<T>(expected));
      },
      actual);
}

// ---- Round trip -------------------------------------------------------------------------

/// Encodes `packet`, checks encoded_size() and the fixed header, frames the bytes with a Framer,
/// decodes them, and encodes the decoded packet again, which must give the same bytes. The
/// decoded packet points into wire(), so a Roundtrip is neither copied nor moved.
class Roundtrip {
 public:
  Roundtrip(const mqtt::Packet& packet, mqtt::ProtocolVersion version) {
    const std::size_t predicted = mqtt::encoded_size(packet, version);
    REQUIRE(mqtt::encode(packet, version, wire_));
    CHECK(predicted == wire_.size());
    frame_ = split_wire(wire_);
    CHECK((frame_.first_byte >> 4) == static_cast<int>(mqtt::packet_type(packet)));

    // The Framer delivers the same single frame.
    int frames = 0;
    mqtt::Framer framer;
    const mqtt::Status fs = framer.feed(wire_, [&](std::uint8_t first, std::string_view body) {
      ++frames;
      CHECK(first == frame_.first_byte);
      CHECK(body == frame_.body);
      return mqtt::Status::success();
    });
    CHECK(fs.ok());
    CHECK(frames == 1);
    CHECK(framer.idle());

    const mqtt::Status ds = mqtt::decode(frame_.first_byte, frame_.body, version, decoded_);
    INFO("decode: " << show(ds.code) << " " << std::string(ds.detail));
    REQUIRE(ds.ok());
    CHECK(std::string_view(ds.detail).empty());

    std::string again;
    REQUIRE(mqtt::encode(decoded_, version, again));
    CHECK(again.size() == wire_.size());
    CHECK(again == wire_);
  }
  Roundtrip(const Roundtrip&) = delete;
  Roundtrip& operator=(const Roundtrip&) = delete;

  const std::string& wire() const { return wire_; }
  const WireFrame& frame() const { return frame_; }
  const mqtt::Packet& decoded() const { return decoded_; }

  template <class T>
  const T& get() const {
    REQUIRE(std::holds_alternative<T>(decoded_));
    return std::get<T>(decoded_);
  }

 private:
  std::string wire_;
  WireFrame frame_;
  mqtt::Packet decoded_;
};

inline std::string version_name(mqtt::ProtocolVersion v) {
  switch (v) {
    case mqtt::ProtocolVersion::v31:
      return "MQTT 3.1";
    case mqtt::ProtocolVersion::v311:
      return "MQTT 3.1.1";
    case mqtt::ProtocolVersion::v5:
      return "MQTT 5.0";
  }
  return "?";
}

inline constexpr mqtt::ProtocolVersion kAllVersions[] = {
    mqtt::ProtocolVersion::v31, mqtt::ProtocolVersion::v311, mqtt::ProtocolVersion::v5};

}  // namespace brokerha::test
