// SPDX-License-Identifier: Apache-2.0
#include "mqtt/codec.hpp"

#include <cstring>
#include <type_traits>

#include "mqtt/utf8.hpp"
#include "topic/topic.hpp"
#include "util/bytes.hpp"
#include "util/chars.hpp"

namespace brokerha::mqtt {

namespace {

// ---- Status helpers ------------------------------------------------------------------------

constexpr Status malformed(const char* detail) noexcept {
  return {ReasonCode::malformed_packet, detail};
}
constexpr Status protocol_error(const char* detail) noexcept {
  return {ReasonCode::protocol_error, detail};
}

#define BROKERHA_TRY(expr)           \
  do {                               \
    const Status try_s_ = (expr);    \
    if (!try_s_.ok()) return try_s_; \
  } while (false)

// ---- Reading -------------------------------------------------------------------------------

// The byte reader over a packet body, plus MQTT's own fields. Every read returns false when
// the body is too short; callers turn that into a Malformed Packet status naming the field.
class Reader : public util::ByteReader {
 public:
  using ByteReader::ByteReader;

  // A variable byte integer: at most four bytes, minimally encoded (MQTT-1.5.5-1).
  bool varint(std::uint32_t& v) noexcept {
    v = 0;
    for (unsigned i = 0; i < 4; ++i) {
      std::uint8_t b;
      if (!u8(b)) return false;
      v |= std::uint32_t{b & 0x7Fu} << (7 * i);
      if ((b & 0x80u) == 0) return i == 0 || b != 0;
    }
    return false;
  }
  // Two-byte length followed by that many bytes (Binary Data, or a UTF-8 string's bytes).
  bool bytes(std::string_view& v) noexcept {
    std::uint16_t n;
    return be16(n) && take(n, v);
  }
};

Status read_utf8(Reader& r, std::string_view& v, const char* truncated,
                 const char* invalid) noexcept {
  if (!r.bytes(v)) return malformed(truncated);
  if (!is_valid_utf8(v)) return malformed(invalid);
  return Status::success();
}

// ---- Property table ------------------------------------------------------------------------

enum class PropType : std::uint8_t { none, byte, u16, u32, varint, utf8, binary, pair };

// Bit per packet type that may carry a property; bit 0 stands for the will properties.
constexpr std::uint32_t bit(PacketType t) noexcept { return 1u << static_cast<unsigned>(t); }
constexpr std::uint32_t kWillBit = 1u;
constexpr std::uint32_t kAllPackets = 0xFFFEu;  // user properties: every packet with properties

struct PropInfo {
  PropType type = PropType::none;
  std::uint32_t packets = 0;
};

constexpr std::uint32_t kPublishAndWill = bit(PacketType::publish) | kWillBit;
constexpr std::uint32_t kAcks = bit(PacketType::puback) | bit(PacketType::pubrec) |
                                bit(PacketType::pubrel) | bit(PacketType::pubcomp);

struct PropTable {
  PropInfo info[0x2B];
  constexpr PropTable() : info() {
    using P = PacketType;
    info[0x01] = {PropType::byte, kPublishAndWill};
    info[0x02] = {PropType::u32, kPublishAndWill};
    info[0x03] = {PropType::utf8, kPublishAndWill};
    info[0x08] = {PropType::utf8, kPublishAndWill};
    info[0x09] = {PropType::binary, kPublishAndWill};
    info[0x0B] = {PropType::varint, bit(P::publish) | bit(P::subscribe)};
    info[0x11] = {PropType::u32, bit(P::connect) | bit(P::connack) | bit(P::disconnect)};
    info[0x12] = {PropType::utf8, bit(P::connack)};
    info[0x13] = {PropType::u16, bit(P::connack)};
    info[0x15] = {PropType::utf8, bit(P::connect) | bit(P::connack) | bit(P::auth)};
    info[0x16] = {PropType::binary, bit(P::connect) | bit(P::connack) | bit(P::auth)};
    info[0x17] = {PropType::byte, bit(P::connect)};
    info[0x18] = {PropType::u32, kWillBit};
    info[0x19] = {PropType::byte, bit(P::connect)};
    info[0x1A] = {PropType::utf8, bit(P::connack)};
    info[0x1C] = {PropType::utf8, bit(P::connack) | bit(P::disconnect)};
    info[0x1F] = {PropType::utf8, bit(P::connack) | kAcks | bit(P::suback) | bit(P::unsuback) |
                                      bit(P::disconnect) | bit(P::auth)};
    info[0x21] = {PropType::u16, bit(P::connect) | bit(P::connack)};
    info[0x22] = {PropType::u16, bit(P::connect) | bit(P::connack)};
    info[0x23] = {PropType::u16, bit(P::publish)};
    info[0x24] = {PropType::byte, bit(P::connack)};
    info[0x25] = {PropType::byte, bit(P::connack)};
    info[0x26] = {PropType::pair, kAllPackets | kWillBit};
    info[0x27] = {PropType::u32, bit(P::connect) | bit(P::connack)};
    info[0x28] = {PropType::byte, bit(P::connack)};
    info[0x29] = {PropType::byte, bit(P::connack)};
    info[0x2A] = {PropType::byte, bit(P::connack)};
  }
};
constexpr PropTable kProps;

template <class T>
Status set_once(std::optional<T>& field, T value) noexcept {
  if (field) return protocol_error("property included more than once");
  field = value;
  return Status::success();
}

Status set_flag(std::optional<std::uint8_t>& field, std::uint32_t value,
                const char* bad_value) noexcept {
  if (value > 1) return protocol_error(bad_value);
  return set_once(field, static_cast<std::uint8_t>(value));
}

// Reads the property length and the properties of a packet whose type bit is `packet_bit`.
Status decode_properties(Reader& r, std::uint32_t packet_bit, Properties& props) {
  std::uint32_t length;
  if (!r.varint(length)) return malformed("property length is not a valid variable byte integer");
  std::string_view block;
  if (!r.take(length, block)) return malformed("property length exceeds the packet");
  Reader pr(block);
  while (!pr.empty()) {
    std::uint32_t id;
    if (!pr.varint(id))
      return malformed("property identifier is not a valid variable byte integer");
    if (id >= std::size(kProps.info) || kProps.info[id].type == PropType::none) {
      return malformed("unknown property identifier");
    }
    const PropInfo& info = kProps.info[id];
    if ((info.packets & packet_bit) == 0) return malformed("property not allowed in this packet");

    std::uint32_t num = 0;
    std::string_view str;
    std::string_view str2;
    switch (info.type) {
      case PropType::byte: {
        std::uint8_t v;
        if (!pr.u8(v)) return malformed("truncated property value");
        num = v;
        break;
      }
      case PropType::u16: {
        std::uint16_t v;
        if (!pr.be16(v)) return malformed("truncated property value");
        num = v;
        break;
      }
      case PropType::u32:
        if (!pr.be32(num)) return malformed("truncated property value");
        break;
      case PropType::varint:
        if (!pr.varint(num))
          return malformed("property value is not a valid variable byte integer");
        break;
      case PropType::utf8:
        BROKERHA_TRY(
            read_utf8(pr, str, "truncated property string", "property string is not valid UTF-8"));
        break;
      case PropType::binary:
        if (!pr.bytes(str)) return malformed("truncated property binary data");
        break;
      case PropType::pair:
        BROKERHA_TRY(read_utf8(pr, str, "truncated user property name",
                               "user property name is not valid UTF-8"));
        BROKERHA_TRY(read_utf8(pr, str2, "truncated user property value",
                               "user property value is not valid UTF-8"));
        break;
      case PropType::none:
        break;
    }

    switch (static_cast<PropertyId>(id)) {
      case PropertyId::payload_format_indicator:
        BROKERHA_TRY(set_flag(props.payload_format_indicator, num,
                              "payload format indicator is not 0 or 1"));
        break;
      case PropertyId::message_expiry_interval:
        BROKERHA_TRY(set_once(props.message_expiry_interval, num));
        break;
      case PropertyId::content_type:
        BROKERHA_TRY(set_once(props.content_type, str));
        break;
      case PropertyId::response_topic:
        if (!topic::is_valid_name(str)) {
          return {ReasonCode::topic_name_invalid, "response topic is not a valid topic name"};
        }
        BROKERHA_TRY(set_once(props.response_topic, str));
        break;
      case PropertyId::correlation_data:
        BROKERHA_TRY(set_once(props.correlation_data, str));
        break;
      case PropertyId::subscription_identifier:
        if (num == 0) return protocol_error("subscription identifier is 0");
        if (packet_bit == bit(PacketType::subscribe) && !props.subscription_identifiers.empty()) {
          return protocol_error("property included more than once");
        }
        props.subscription_identifiers.push_back(num);
        break;
      case PropertyId::session_expiry_interval:
        BROKERHA_TRY(set_once(props.session_expiry_interval, num));
        break;
      case PropertyId::assigned_client_identifier:
        BROKERHA_TRY(set_once(props.assigned_client_identifier, str));
        break;
      case PropertyId::server_keep_alive:
        BROKERHA_TRY(set_once(props.server_keep_alive, static_cast<std::uint16_t>(num)));
        break;
      case PropertyId::authentication_method:
        BROKERHA_TRY(set_once(props.authentication_method, str));
        break;
      case PropertyId::authentication_data:
        BROKERHA_TRY(set_once(props.authentication_data, str));
        break;
      case PropertyId::request_problem_information:
        BROKERHA_TRY(set_flag(props.request_problem_information, num,
                              "request problem information is not 0 or 1"));
        break;
      case PropertyId::will_delay_interval:
        BROKERHA_TRY(set_once(props.will_delay_interval, num));
        break;
      case PropertyId::request_response_information:
        BROKERHA_TRY(set_flag(props.request_response_information, num,
                              "request response information is not 0 or 1"));
        break;
      case PropertyId::response_information:
        BROKERHA_TRY(set_once(props.response_information, str));
        break;
      case PropertyId::server_reference:
        BROKERHA_TRY(set_once(props.server_reference, str));
        break;
      case PropertyId::reason_string:
        BROKERHA_TRY(set_once(props.reason_string, str));
        break;
      case PropertyId::receive_maximum:
        if (num == 0) return protocol_error("receive maximum is 0");
        BROKERHA_TRY(set_once(props.receive_maximum, static_cast<std::uint16_t>(num)));
        break;
      case PropertyId::topic_alias_maximum:
        BROKERHA_TRY(set_once(props.topic_alias_maximum, static_cast<std::uint16_t>(num)));
        break;
      case PropertyId::topic_alias:
        if (num == 0) return {ReasonCode::topic_alias_invalid, "topic alias is 0"};
        BROKERHA_TRY(set_once(props.topic_alias, static_cast<std::uint16_t>(num)));
        break;
      case PropertyId::maximum_qos:
        BROKERHA_TRY(set_flag(props.maximum_qos, num, "maximum QoS is not 0 or 1"));
        break;
      case PropertyId::retain_available:
        BROKERHA_TRY(set_flag(props.retain_available, num, "retain available is not 0 or 1"));
        break;
      case PropertyId::user_property:
        props.user_properties.push_back({str, str2});
        break;
      case PropertyId::maximum_packet_size:
        if (num == 0) return protocol_error("maximum packet size is 0");
        BROKERHA_TRY(set_once(props.maximum_packet_size, num));
        break;
      case PropertyId::wildcard_subscription_available:
        BROKERHA_TRY(set_flag(props.wildcard_subscription_available, num,
                              "wildcard subscription available is not 0 or 1"));
        break;
      case PropertyId::subscription_identifier_available:
        BROKERHA_TRY(set_flag(props.subscription_identifier_available, num,
                              "subscription identifier available is not 0 or 1"));
        break;
      case PropertyId::shared_subscription_available:
        BROKERHA_TRY(set_flag(props.shared_subscription_available, num,
                              "shared subscription available is not 0 or 1"));
        break;
    }
  }
  return Status::success();
}

// ---- Reason codes allowed per packet (MQTT 5.0 section 2.4 and each packet's table) ---------

bool in(std::uint8_t v, std::initializer_list<std::uint8_t> set) noexcept {
  for (std::uint8_t x : set) {
    if (x == v) return true;
  }
  return false;
}

bool valid_connack_code(std::uint8_t v) noexcept {
  return v == 0x00 || (v >= 0x80 && v <= 0x8A) || v == 0x8C || v == 0x90 || v == 0x95 ||
         v == 0x97 || (v >= 0x99 && v <= 0x9D) || v == 0x9F;
}
bool valid_puback_code(std::uint8_t v) noexcept {  // PUBACK and PUBREC
  return in(v, {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99});
}
bool valid_pubrel_code(std::uint8_t v) noexcept { return v == 0x00 || v == 0x92; }  // + PUBCOMP
bool valid_suback_code(std::uint8_t v) noexcept {
  return in(v, {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2});
}
bool valid_unsuback_code(std::uint8_t v) noexcept {
  return in(v, {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91});
}
bool valid_disconnect_code(std::uint8_t v) noexcept {
  return v == 0x00 || v == 0x04 || (v >= 0x80 && v <= 0x83) || v == 0x87 || v == 0x89 ||
         v == 0x8B || (v >= 0x8D && v <= 0xA2 && v != 0x91 && v != 0x92);
}
bool valid_auth_code(std::uint8_t v) noexcept { return in(v, {0x00, 0x18, 0x19}); }

// ---- Decoding, packet by packet ------------------------------------------------------------

Status decode_connect(Reader& r, Connect& c) {
  std::string_view name;
  if (!r.bytes(name)) return malformed("truncated protocol name");
  std::uint8_t level;
  if (!r.u8(level)) return malformed("truncated protocol level");
  if (name == "MQTT") {
    // An unknown level is answered in the nearest format we know: above 5 as MQTT 5.0
    // (CONNACK 0x84), below as MQTT 3.1.1 (return code 1).
    c.version = level >= 5 ? ProtocolVersion::v5 : ProtocolVersion::v311;
    if (level != 4 && level != 5) {
      return {ReasonCode::unsupported_protocol_version, "unsupported protocol level"};
    }
  } else if (name == "MQIsdp") {
    c.version = ProtocolVersion::v31;
    if (level != 3) {
      return {ReasonCode::unsupported_protocol_version, "unsupported protocol level"};
    }
  } else {
    return protocol_error("unknown protocol name");
  }
  const bool v5 = c.version == ProtocolVersion::v5;

  std::uint8_t flags;
  if (!r.u8(flags)) return malformed("truncated connect flags");
  if (flags & 0x01u) return malformed("reserved connect flag is set");
  const bool has_username = flags & 0x80u;
  const bool has_password = flags & 0x40u;
  const bool will_retain = flags & 0x20u;
  const auto will_qos = static_cast<std::uint8_t>((flags >> 3) & 0x03u);
  const bool has_will = flags & 0x04u;
  c.clean_start = flags & 0x02u;
  if (will_qos == 3) return malformed("will QoS is 3");
  if (!has_will && (will_qos != 0 || will_retain)) {
    return malformed("will QoS or will retain set without the will flag");
  }
  if (!v5 && has_password && !has_username) {
    return protocol_error("password flag set without the user name flag");
  }
  if (!r.be16(c.keep_alive)) return malformed("truncated keep alive");
  if (v5) BROKERHA_TRY(decode_properties(r, bit(PacketType::connect), c.properties));

  BROKERHA_TRY(read_utf8(r, c.client_id, "truncated client identifier",
                         "client identifier is not valid UTF-8"));
  if (has_will) {
    Will& w = c.will.emplace();
    w.qos = will_qos;
    w.retain = will_retain;
    if (v5) BROKERHA_TRY(decode_properties(r, kWillBit, w.properties));
    BROKERHA_TRY(read_utf8(r, w.topic, "truncated will topic", "will topic is not valid UTF-8"));
    if (!topic::is_valid_name(w.topic)) {
      return {ReasonCode::topic_name_invalid, "will topic is not a valid topic name"};
    }
    if (!r.bytes(w.payload)) return malformed("truncated will payload");
    if (w.properties.payload_format_indicator.value_or(0) == 1 && !is_valid_utf8(w.payload, true)) {
      return {ReasonCode::payload_format_invalid, "will payload is not valid UTF-8"};
    }
  }
  if (has_username) {
    std::string_view u;
    BROKERHA_TRY(read_utf8(r, u, "truncated user name", "user name is not valid UTF-8"));
    c.username = u;
  }
  if (has_password) {
    std::string_view p;
    if (!r.bytes(p)) return malformed("truncated password");
    c.password = p;
  }
  if (!r.empty()) return malformed("bytes after the end of CONNECT");
  return Status::success();
}

Status decode_connack(Reader& r, ProtocolVersion version, Connack& c) {
  std::uint8_t flags;
  if (!r.u8(flags) || !r.u8(c.code)) return malformed("truncated CONNACK");
  if (version == ProtocolVersion::v31) {
    flags = 0;  // MQTT 3.1 has no session present flag; the byte is reserved
  } else if (flags & 0xFEu) {
    return malformed("reserved CONNACK flags are set");
  }
  c.session_present = flags & 0x01u;
  if (version == ProtocolVersion::v5) {
    if (!valid_connack_code(c.code)) return malformed("invalid CONNACK reason code");
    BROKERHA_TRY(decode_properties(r, bit(PacketType::connack), c.properties));
  } else if (c.code > 5) {
    return malformed("invalid CONNACK return code");
  }
  if (c.session_present && c.code != 0) {
    return protocol_error("session present set on a refused connection");
  }
  if (!r.empty()) return malformed("bytes after the end of CONNACK");
  return Status::success();
}

Status decode_publish(Reader& r, std::uint8_t flags, ProtocolVersion version, Publish& p) {
  p.dup = flags & 0x08u;
  p.qos = static_cast<std::uint8_t>((flags >> 1) & 0x03u);
  p.retain = flags & 0x01u;
  BROKERHA_TRY(read_utf8(r, p.topic, "truncated topic name", "topic name is not valid UTF-8"));
  if (util::contains_any(p.topic, "+#")) {
    return {ReasonCode::topic_name_invalid, "wildcard in a PUBLISH topic name"};
  }
  if (p.qos > 0) {
    if (!r.be16(p.packet_id)) return malformed("truncated packet identifier");
    if (p.packet_id == 0) return protocol_error("packet identifier 0");
  }
  if (version == ProtocolVersion::v5) {
    BROKERHA_TRY(decode_properties(r, bit(PacketType::publish), p.properties));
    if (p.topic.empty() && !p.properties.topic_alias) {
      return protocol_error("empty topic name without a topic alias");
    }
  } else if (p.topic.empty()) {
    return {ReasonCode::topic_name_invalid, "empty topic name"};
  }
  p.payload = r.rest();
  if (p.properties.payload_format_indicator.value_or(0) == 1 && !is_valid_utf8(p.payload, true)) {
    return {ReasonCode::payload_format_invalid, "payload marked as UTF-8 is not valid UTF-8"};
  }
  return Status::success();
}

template <PacketType Type>
Status decode_ack(Reader& r, ProtocolVersion version, PublishAck<Type>& a) {
  if (!r.be16(a.packet_id)) return malformed("truncated packet identifier");
  if (a.packet_id == 0) return protocol_error("packet identifier 0");
  if (version != ProtocolVersion::v5) {
    if (!r.empty()) return malformed("bytes after the packet identifier");
    return Status::success();
  }
  if (r.empty()) return Status::success();  // reason code 0 and no properties
  std::uint8_t code;
  r.u8(code);
  const bool valid = (Type == PacketType::puback || Type == PacketType::pubrec)
                         ? valid_puback_code(code)
                         : valid_pubrel_code(code);
  if (!valid) return malformed("invalid reason code for this acknowledgement");
  a.reason_code = static_cast<ReasonCode>(code);
  if (!r.empty()) BROKERHA_TRY(decode_properties(r, bit(Type), a.properties));
  if (!r.empty()) return malformed("bytes after the properties");
  return Status::success();
}

// Reads a topic filter. Its meaning (wildcard placement) is judged into `meaning`, the first
// such error only: SUBSCRIBE and UNSUBSCRIBE check the whole packet's structure first, so a
// truncated packet is Malformed (0x81) even when a filter before the cut is invalid too.
Status read_filter(Reader& r, std::string_view& filter, Status& meaning) {
  BROKERHA_TRY(read_utf8(r, filter, "truncated topic filter", "topic filter is not valid UTF-8"));
  if (meaning.ok() && !topic::is_valid_filter(filter)) {
    meaning = {ReasonCode::topic_filter_invalid, "invalid topic filter"};
  }
  return Status::success();
}

Status decode_subscribe(Reader& r, ProtocolVersion version, Subscribe& s) {
  if (!r.be16(s.packet_id)) return malformed("truncated packet identifier");
  if (s.packet_id == 0) return protocol_error("packet identifier 0");
  const bool v5 = version == ProtocolVersion::v5;
  if (v5) BROKERHA_TRY(decode_properties(r, bit(PacketType::subscribe), s.properties));
  if (r.empty()) return protocol_error("SUBSCRIBE without a topic filter");
  Status meaning = Status::success();  // the first error of meaning, once the structure is whole
  while (!r.empty()) {
    Subscription sub;
    BROKERHA_TRY(read_filter(r, sub.filter, meaning));
    std::uint8_t options;
    if (!r.u8(options)) return malformed("truncated subscription options");
    if (options & (v5 ? 0xC0u : 0xFCu)) return malformed("reserved subscription option bits set");
    sub.qos = options & 0x03u;
    if (sub.qos == 3) return malformed("subscription QoS is 3");
    if (v5) {
      sub.no_local = options & 0x04u;
      sub.retain_as_published = options & 0x08u;
      sub.retain_handling = static_cast<std::uint8_t>((options >> 4) & 0x03u);
      if (sub.retain_handling == 3 && meaning.ok()) {
        meaning = protocol_error("retain handling is 3");
      }
      topic::SharedFilter shared;
      if (meaning.ok() && sub.no_local && topic::parse_shared(sub.filter, shared)) {
        meaning = protocol_error("no local set on a shared subscription");
      }
    }
    s.subscriptions.push_back(sub);
  }
  return meaning;
}

Status decode_suback(Reader& r, ProtocolVersion version, Suback& s) {
  if (!r.be16(s.packet_id)) return malformed("truncated packet identifier");
  if (s.packet_id == 0) return protocol_error("packet identifier 0");
  const bool v5 = version == ProtocolVersion::v5;
  if (v5) BROKERHA_TRY(decode_properties(r, bit(PacketType::suback), s.properties));
  if (r.empty()) return protocol_error("SUBACK without a reason code");
  while (!r.empty()) {
    std::uint8_t code;
    r.u8(code);
    if (v5 ? !valid_suback_code(code) : !in(code, {0x00, 0x01, 0x02, 0x80})) {
      return malformed("invalid SUBACK reason code");
    }
    s.reason_codes.push_back(static_cast<ReasonCode>(code));
  }
  return Status::success();
}

Status decode_unsubscribe(Reader& r, ProtocolVersion version, Unsubscribe& u) {
  if (!r.be16(u.packet_id)) return malformed("truncated packet identifier");
  if (u.packet_id == 0) return protocol_error("packet identifier 0");
  if (version == ProtocolVersion::v5) {
    BROKERHA_TRY(decode_properties(r, bit(PacketType::unsubscribe), u.properties));
  }
  if (r.empty()) return protocol_error("UNSUBSCRIBE without a topic filter");
  Status meaning = Status::success();
  while (!r.empty()) {
    std::string_view filter;
    BROKERHA_TRY(read_filter(r, filter, meaning));
    u.filters.push_back(filter);
  }
  return meaning;
}

Status decode_unsuback(Reader& r, ProtocolVersion version, Unsuback& u) {
  if (!r.be16(u.packet_id)) return malformed("truncated packet identifier");
  if (u.packet_id == 0) return protocol_error("packet identifier 0");
  if (version != ProtocolVersion::v5) {
    if (!r.empty()) return malformed("bytes after the packet identifier");
    return Status::success();
  }
  BROKERHA_TRY(decode_properties(r, bit(PacketType::unsuback), u.properties));
  if (r.empty()) return protocol_error("UNSUBACK without a reason code");
  while (!r.empty()) {
    std::uint8_t code;
    r.u8(code);
    if (!valid_unsuback_code(code)) return malformed("invalid UNSUBACK reason code");
    u.reason_codes.push_back(static_cast<ReasonCode>(code));
  }
  return Status::success();
}

// DISCONNECT and AUTH (MQTT 5.0): optional reason code, then optional properties.
template <class T>
Status decode_reason_and_properties(Reader& r, PacketType type, bool (*valid)(std::uint8_t),
                                    T& out) {
  if (r.empty()) return Status::success();
  std::uint8_t code;
  r.u8(code);
  if (!valid(code)) return malformed("invalid reason code");
  out.reason_code = static_cast<ReasonCode>(code);
  if (!r.empty()) BROKERHA_TRY(decode_properties(r, bit(type), out.properties));
  if (!r.empty()) return malformed("bytes after the properties");
  return Status::success();
}

}  // namespace

// ---- decode --------------------------------------------------------------------------------

Status decode(std::uint8_t first_byte, std::string_view body, ProtocolVersion version,
              Packet& out) {
  const auto type = static_cast<PacketType>(first_byte >> 4);
  const auto flags = static_cast<std::uint8_t>(first_byte & 0x0Fu);
  // PUBREL, SUBSCRIBE and UNSUBSCRIBE carry flags 0010. MQTT 3.1 allowed the DUP flag on them
  // as well (a resend, 1010); 3.1.1 and 5.0 do not.
  const auto qos1_flags = [&](std::uint8_t f) {
    return f == 0x02 || (version == ProtocolVersion::v31 && f == 0x0A);
  };
  Reader r(body);
  switch (type) {
    case PacketType::connect:
      if (flags != 0) return malformed("reserved fixed header flags are set");
      return decode_connect(r, out.emplace<Connect>());
    case PacketType::connack:
      if (flags != 0) return malformed("reserved fixed header flags are set");
      return decode_connack(r, version, out.emplace<Connack>());
    case PacketType::publish:
      if (((flags >> 1) & 0x03u) == 3) return malformed("PUBLISH QoS is 3");
      if ((flags & 0x08u) && (flags & 0x06u) == 0) return malformed("DUP set on a QoS 0 PUBLISH");
      return decode_publish(r, flags, version, out.emplace<Publish>());
    case PacketType::puback:
      if (flags != 0) return malformed("reserved fixed header flags are set");
      return decode_ack(r, version, out.emplace<Puback>());
    case PacketType::pubrec:
      if (flags != 0) return malformed("reserved fixed header flags are set");
      return decode_ack(r, version, out.emplace<Pubrec>());
    case PacketType::pubrel:
      if (!qos1_flags(flags)) return malformed("PUBREL fixed header flags are not 0010");
      return decode_ack(r, version, out.emplace<Pubrel>());
    case PacketType::pubcomp:
      if (flags != 0) return malformed("reserved fixed header flags are set");
      return decode_ack(r, version, out.emplace<Pubcomp>());
    case PacketType::subscribe:
      if (!qos1_flags(flags)) return malformed("SUBSCRIBE fixed header flags are not 0010");
      return decode_subscribe(r, version, out.emplace<Subscribe>());
    case PacketType::suback:
      if (flags != 0) return malformed("reserved fixed header flags are set");
      return decode_suback(r, version, out.emplace<Suback>());
    case PacketType::unsubscribe:
      if (!qos1_flags(flags)) return malformed("UNSUBSCRIBE fixed header flags are not 0010");
      return decode_unsubscribe(r, version, out.emplace<Unsubscribe>());
    case PacketType::unsuback:
      if (flags != 0) return malformed("reserved fixed header flags are set");
      return decode_unsuback(r, version, out.emplace<Unsuback>());
    case PacketType::pingreq:
    case PacketType::pingresp:
      if (flags != 0) return malformed("reserved fixed header flags are set");
      if (!body.empty()) return malformed("PINGREQ/PINGRESP with a body");
      if (type == PacketType::pingreq) {
        out.emplace<Pingreq>();
      } else {
        out.emplace<Pingresp>();
      }
      return Status::success();
    case PacketType::disconnect: {
      if (flags != 0) return malformed("reserved fixed header flags are set");
      auto& d = out.emplace<Disconnect>();
      if (version != ProtocolVersion::v5) {
        return body.empty() ? Status::success() : malformed("DISCONNECT with a body");
      }
      return decode_reason_and_properties(r, type, valid_disconnect_code, d);
    }
    case PacketType::auth: {
      if (version != ProtocolVersion::v5) return malformed("reserved packet type 15");
      if (flags != 0) return malformed("reserved fixed header flags are set");
      return decode_reason_and_properties(r, type, valid_auth_code, out.emplace<Auth>());
    }
  }
  return malformed("reserved packet type 0");
}

// ---- Encoding ------------------------------------------------------------------------------

namespace {

// Counts what a Writer would write. `ok` turns false when a field exceeds its wire limit.
struct SizeSink {
  std::size_t n = 0;
  bool ok = true;
  void u8(std::uint8_t) noexcept { n += 1; }
  void u16(std::uint16_t) noexcept { n += 2; }
  void u32(std::uint32_t) noexcept { n += 4; }
  void varint(std::uint32_t v) noexcept {
    if (v > kMaxRemainingLength) ok = false;
    n += varint_size(v);
  }
  void raw(std::string_view s) noexcept { n += s.size(); }
  void bytes(std::string_view s) noexcept {
    if (s.size() > 0xFFFF) ok = false;
    n += 2 + s.size();
  }
};

// Writes into a buffer that SizeSink has sized.
struct WriteSink {
  char* p;
  bool ok = true;
  void u8(std::uint8_t v) noexcept { *p++ = static_cast<char>(v); }
  void u16(std::uint16_t v) noexcept {
    util::store_be16(p, v);
    p += 2;
  }
  void u32(std::uint32_t v) noexcept {
    util::store_be32(p, v);
    p += 4;
  }
  void varint(std::uint32_t v) noexcept {
    do {
      auto b = static_cast<std::uint8_t>(v & 0x7Fu);
      v >>= 7;
      if (v) b |= 0x80u;
      u8(b);
    } while (v);
  }
  void raw(std::string_view s) noexcept {
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    p += s.size();
  }
  void bytes(std::string_view s) noexcept {
    u16(static_cast<std::uint16_t>(s.size()));
    raw(s);
  }
};

template <class S>
void put_properties_body(S& s, const Properties& p) {
  auto id = [&](PropertyId i) { s.u8(static_cast<std::uint8_t>(i)); };
  auto byte = [&](PropertyId i, const std::optional<std::uint8_t>& v) {
    if (v) id(i), s.u8(*v);
  };
  auto two = [&](PropertyId i, const std::optional<std::uint16_t>& v) {
    if (v) id(i), s.u16(*v);
  };
  auto four = [&](PropertyId i, const std::optional<std::uint32_t>& v) {
    if (v) id(i), s.u32(*v);
  };
  auto str = [&](PropertyId i, const std::optional<std::string_view>& v) {
    if (v) id(i), s.bytes(*v);
  };
  using P = PropertyId;
  byte(P::payload_format_indicator, p.payload_format_indicator);
  four(P::message_expiry_interval, p.message_expiry_interval);
  str(P::content_type, p.content_type);
  str(P::response_topic, p.response_topic);
  str(P::correlation_data, p.correlation_data);
  for (std::uint32_t v : p.subscription_identifiers) id(P::subscription_identifier), s.varint(v);
  four(P::session_expiry_interval, p.session_expiry_interval);
  str(P::assigned_client_identifier, p.assigned_client_identifier);
  two(P::server_keep_alive, p.server_keep_alive);
  str(P::authentication_method, p.authentication_method);
  str(P::authentication_data, p.authentication_data);
  byte(P::request_problem_information, p.request_problem_information);
  four(P::will_delay_interval, p.will_delay_interval);
  byte(P::request_response_information, p.request_response_information);
  str(P::response_information, p.response_information);
  str(P::server_reference, p.server_reference);
  str(P::reason_string, p.reason_string);
  two(P::receive_maximum, p.receive_maximum);
  two(P::topic_alias_maximum, p.topic_alias_maximum);
  two(P::topic_alias, p.topic_alias);
  byte(P::maximum_qos, p.maximum_qos);
  byte(P::retain_available, p.retain_available);
  for (const UserProperty& u : p.user_properties)
    id(P::user_property), s.bytes(u.name), s.bytes(u.value);
  four(P::maximum_packet_size, p.maximum_packet_size);
  byte(P::wildcard_subscription_available, p.wildcard_subscription_available);
  byte(P::subscription_identifier_available, p.subscription_identifier_available);
  byte(P::shared_subscription_available, p.shared_subscription_available);
}

std::size_t properties_size(const Properties& p) {
  SizeSink s;
  put_properties_body(s, p);
  return s.n;
}

bool properties_empty(const Properties& p) { return properties_size(p) == 0; }

template <class S>
void put_properties(S& s, const Properties& p) {
  const std::size_t n = properties_size(p);
  if (n > kMaxRemainingLength) {
    s.ok = false;
    return;
  }
  s.varint(static_cast<std::uint32_t>(n));
  put_properties_body(s, p);
}

constexpr std::uint8_t first_byte(PacketType t, std::uint8_t flags = 0) noexcept {
  return static_cast<std::uint8_t>((static_cast<unsigned>(t) << 4) | flags);
}

// Each put_body writes the remaining-length bytes and returns the fixed header's first byte.
template <class S>
std::uint8_t put_body(S& s, const Connect& c, ProtocolVersion) {
  const bool v5 = c.version == ProtocolVersion::v5;
  s.bytes(c.version == ProtocolVersion::v31 ? "MQIsdp" : "MQTT");
  s.u8(static_cast<std::uint8_t>(c.version));
  std::uint8_t flags = c.clean_start ? 0x02 : 0x00;
  if (c.will) {
    flags = static_cast<std::uint8_t>(flags | 0x04u | ((c.will->qos & 0x03u) << 3) |
                                      (c.will->retain ? 0x20u : 0u));
  }
  if (c.password) flags |= 0x40;
  if (c.username) flags |= 0x80;
  s.u8(flags);
  s.u16(c.keep_alive);
  if (v5) put_properties(s, c.properties);
  s.bytes(c.client_id);
  if (c.will) {
    if (v5) put_properties(s, c.will->properties);
    s.bytes(c.will->topic);
    s.bytes(c.will->payload);
  }
  if (c.username) s.bytes(*c.username);
  if (c.password) s.bytes(*c.password);
  return first_byte(PacketType::connect);
}

template <class S>
std::uint8_t put_body(S& s, const Connack& c, ProtocolVersion v) {
  s.u8(v != ProtocolVersion::v31 && c.session_present ? 1 : 0);
  s.u8(c.code);
  if (v == ProtocolVersion::v5) put_properties(s, c.properties);
  return first_byte(PacketType::connack);
}

template <class S>
std::uint8_t put_body(S& s, const Publish& p, ProtocolVersion v) {
  s.bytes(p.topic);
  if (p.qos > 0) s.u16(p.packet_id);
  if (v == ProtocolVersion::v5) put_properties(s, p.properties);
  s.raw(p.payload);
  return first_byte(PacketType::publish,
                    static_cast<std::uint8_t>((p.dup ? 0x08u : 0u) | ((p.qos & 0x03u) << 1) |
                                              (p.retain ? 0x01u : 0u)));
}

template <class S, PacketType Type>
std::uint8_t put_body(S& s, const PublishAck<Type>& a, ProtocolVersion v) {
  s.u16(a.packet_id);
  if (v == ProtocolVersion::v5) {
    const bool no_props = properties_empty(a.properties);
    if (a.reason_code != ReasonCode::success || !no_props) {
      s.u8(static_cast<std::uint8_t>(a.reason_code));
      if (!no_props) put_properties(s, a.properties);
    }
  }
  return first_byte(Type, Type == PacketType::pubrel ? 0x02 : 0x00);
}

template <class S>
std::uint8_t put_body(S& s, const Subscribe& sub, ProtocolVersion v) {
  s.u16(sub.packet_id);
  const bool v5 = v == ProtocolVersion::v5;
  if (v5) put_properties(s, sub.properties);
  for (const Subscription& e : sub.subscriptions) {
    s.bytes(e.filter);
    std::uint8_t options = e.qos & 0x03u;
    if (v5) {
      options = static_cast<std::uint8_t>(options | (e.no_local ? 0x04u : 0u) |
                                          (e.retain_as_published ? 0x08u : 0u) |
                                          ((e.retain_handling & 0x03u) << 4));
    }
    s.u8(options);
  }
  return first_byte(PacketType::subscribe, 0x02);
}

template <class S>
std::uint8_t put_body(S& s, const Suback& a, ProtocolVersion v) {
  s.u16(a.packet_id);
  if (v == ProtocolVersion::v5) put_properties(s, a.properties);
  for (ReasonCode c : a.reason_codes) s.u8(static_cast<std::uint8_t>(c));
  return first_byte(PacketType::suback);
}

template <class S>
std::uint8_t put_body(S& s, const Unsubscribe& u, ProtocolVersion v) {
  s.u16(u.packet_id);
  if (v == ProtocolVersion::v5) put_properties(s, u.properties);
  for (std::string_view f : u.filters) s.bytes(f);
  return first_byte(PacketType::unsubscribe, 0x02);
}

template <class S>
std::uint8_t put_body(S& s, const Unsuback& a, ProtocolVersion v) {
  s.u16(a.packet_id);
  if (v == ProtocolVersion::v5) {
    put_properties(s, a.properties);
    for (ReasonCode c : a.reason_codes) s.u8(static_cast<std::uint8_t>(c));
  }
  return first_byte(PacketType::unsuback);
}

template <class S>
std::uint8_t put_body(S&, const Pingreq&, ProtocolVersion) {
  return first_byte(PacketType::pingreq);
}

template <class S>
std::uint8_t put_body(S&, const Pingresp&, ProtocolVersion) {
  return first_byte(PacketType::pingresp);
}

template <class S, class T>
void put_reason_and_properties(S& s, const T& p) {
  const bool no_props = properties_empty(p.properties);
  if (p.reason_code != ReasonCode::success || !no_props) {
    s.u8(static_cast<std::uint8_t>(p.reason_code));
    if (!no_props) put_properties(s, p.properties);
  }
}

template <class S>
std::uint8_t put_body(S& s, const Disconnect& d, ProtocolVersion v) {
  if (v == ProtocolVersion::v5) put_reason_and_properties(s, d);
  return first_byte(PacketType::disconnect);
}

template <class S>
std::uint8_t put_body(S& s, const Auth& a, ProtocolVersion v) {
  if (v != ProtocolVersion::v5) s.ok = false;  // MQTT 3.x has no AUTH
  put_reason_and_properties(s, a);
  return first_byte(PacketType::auth);
}

}  // namespace

std::size_t encoded_size(const Packet& packet, ProtocolVersion version) {
  SizeSink s;
  std::visit([&](const auto& p) { put_body(s, p, version); }, packet);
  if (!s.ok || s.n > kMaxRemainingLength) return 0;
  return 1 + varint_size(static_cast<std::uint32_t>(s.n)) + s.n;
}

bool encode(const Packet& packet, ProtocolVersion version, std::string& out) {
  SizeSink size;
  std::visit([&](const auto& p) { put_body(size, p, version); }, packet);
  if (!size.ok || size.n > kMaxRemainingLength) return false;
  const auto remaining = static_cast<std::uint32_t>(size.n);
  const std::size_t start = out.size();
  out.resize(start + 1 + varint_size(remaining) + remaining);
  WriteSink w{out.data() + start};
  w.u8(0);  // the first byte, known once the body is written
  w.varint(remaining);
  const std::uint8_t first =
      std::visit([&](const auto& p) { return put_body(w, p, version); }, packet);
  out[start] = static_cast<char>(first);
  return true;
}

std::size_t publish_packet_id_offset(std::string_view encoded) noexcept {
  std::size_t i = 1;
  while (i < encoded.size() && (static_cast<std::uint8_t>(encoded[i]) & 0x80u)) ++i;
  ++i;  // past the last remaining-length byte
  if (i + 2 > encoded.size()) return encoded.size();
  const std::size_t topic_len = (std::size_t{static_cast<std::uint8_t>(encoded[i])} << 8) |
                                static_cast<std::uint8_t>(encoded[i + 1]);
  return i + 2 + topic_len;
}

void append_varint(std::string& out, std::uint32_t value) {
  const std::size_t start = out.size();
  out.resize(start + varint_size(value));
  WriteSink w{out.data() + start};
  w.varint(value);
}

// ---- Framer --------------------------------------------------------------------------------

Status Framer::parse_header(bool& complete) noexcept {
  const std::uint8_t last = header_[header_len_ - 1];
  if (last & 0x80u) {
    if (header_len_ == 5) return malformed("remaining length longer than four bytes");
    complete = false;
    return Status::success();
  }
  if (header_len_ > 2 && last == 0) {
    return malformed("remaining length not minimally encoded");
  }
  std::uint32_t value = 0;
  for (std::uint8_t i = 1; i < header_len_; ++i) {
    value |= std::uint32_t{header_[i] & 0x7Fu} << (7 * (i - 1));
  }
  if (static_cast<std::uint64_t>(value) + header_len_ > max_packet_size_) {
    return {ReasonCode::packet_too_large, "packet exceeds the maximum packet size"};
  }
  remaining_ = value;
  complete = true;
  return Status::success();
}

void Framer::shrink() noexcept {
  if (body_.empty()) std::string().swap(body_);
}

std::string_view packet_type_name(PacketType type) noexcept {
  switch (type) {
    case PacketType::connect:
      return "CONNECT";
    case PacketType::connack:
      return "CONNACK";
    case PacketType::publish:
      return "PUBLISH";
    case PacketType::puback:
      return "PUBACK";
    case PacketType::pubrec:
      return "PUBREC";
    case PacketType::pubrel:
      return "PUBREL";
    case PacketType::pubcomp:
      return "PUBCOMP";
    case PacketType::subscribe:
      return "SUBSCRIBE";
    case PacketType::suback:
      return "SUBACK";
    case PacketType::unsubscribe:
      return "UNSUBSCRIBE";
    case PacketType::unsuback:
      return "UNSUBACK";
    case PacketType::pingreq:
      return "PINGREQ";
    case PacketType::pingresp:
      return "PINGRESP";
    case PacketType::disconnect:
      return "DISCONNECT";
    case PacketType::auth:
      return "AUTH";
  }
  return "RESERVED";
}

}  // namespace brokerha::mqtt
