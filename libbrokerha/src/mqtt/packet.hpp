// SPDX-License-Identifier: Apache-2.0
#pragma once
// MQTT control packets as plain structs (MQTT 3.1, 3.1.1 and 5.0).
//
// Strings and binary data are std::string_view: a decoded packet points into the bytes it was
// decoded from, and a packet to encode points into storage its builder owns. Either way the
// bytes must outlive the struct's use. Nothing here allocates except the vectors of SUBSCRIBE,
// SUBACK, UNSUBSCRIBE and UNSUBACK entries and of user properties and subscription identifiers.

#include <brokerha/error.hpp>

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace brokerha::mqtt {

/// The protocol level byte of CONNECT.
enum class ProtocolVersion : std::uint8_t {
  v31 = 3,   // MQTT 3.1, protocol name "MQIsdp"
  v311 = 4,  // MQTT 3.1.1, protocol name "MQTT"
  v5 = 5,    // MQTT 5.0, protocol name "MQTT"
};

enum class PacketType : std::uint8_t {
  connect = 1,
  connack = 2,
  publish = 3,
  puback = 4,
  pubrec = 5,
  pubrel = 6,
  pubcomp = 7,
  subscribe = 8,
  suback = 9,
  unsubscribe = 10,
  unsuback = 11,
  pingreq = 12,
  pingresp = 13,
  disconnect = 14,
  auth = 15,  // MQTT 5.0 only
};

/// MQTT 5.0 property identifiers (section 2.2.2.2).
enum class PropertyId : std::uint8_t {
  payload_format_indicator = 0x01,
  message_expiry_interval = 0x02,
  content_type = 0x03,
  response_topic = 0x08,
  correlation_data = 0x09,
  subscription_identifier = 0x0B,
  session_expiry_interval = 0x11,
  assigned_client_identifier = 0x12,
  server_keep_alive = 0x13,
  authentication_method = 0x15,
  authentication_data = 0x16,
  request_problem_information = 0x17,
  will_delay_interval = 0x18,
  request_response_information = 0x19,
  response_information = 0x1A,
  server_reference = 0x1C,
  reason_string = 0x1F,
  receive_maximum = 0x21,
  topic_alias_maximum = 0x22,
  topic_alias = 0x23,
  maximum_qos = 0x24,
  retain_available = 0x25,
  user_property = 0x26,
  maximum_packet_size = 0x27,
  wildcard_subscription_available = 0x28,
  subscription_identifier_available = 0x29,
  shared_subscription_available = 0x2A,
};

struct UserProperty {
  std::string_view name;
  std::string_view value;
};

/// The MQTT 5.0 properties of a packet (or of a will). A field that is not set was absent.
/// Always empty for MQTT 3.x packets.
struct Properties {
  std::optional<std::uint8_t> payload_format_indicator;
  std::optional<std::uint32_t> message_expiry_interval;
  std::optional<std::string_view> content_type;
  std::optional<std::string_view> response_topic;
  std::optional<std::string_view> correlation_data;
  std::vector<std::uint32_t> subscription_identifiers;  // several only in a server's PUBLISH
  std::optional<std::uint32_t> session_expiry_interval;
  std::optional<std::string_view> assigned_client_identifier;
  std::optional<std::uint16_t> server_keep_alive;
  std::optional<std::string_view> authentication_method;
  std::optional<std::string_view> authentication_data;
  std::optional<std::uint8_t> request_problem_information;
  std::optional<std::uint32_t> will_delay_interval;
  std::optional<std::uint8_t> request_response_information;
  std::optional<std::string_view> response_information;
  std::optional<std::string_view> server_reference;
  std::optional<std::string_view> reason_string;
  std::optional<std::uint16_t> receive_maximum;
  std::optional<std::uint16_t> topic_alias_maximum;
  std::optional<std::uint16_t> topic_alias;
  std::optional<std::uint8_t> maximum_qos;
  std::optional<std::uint8_t> retain_available;
  std::vector<UserProperty> user_properties;  // in the order they appeared
  std::optional<std::uint32_t> maximum_packet_size;
  std::optional<std::uint8_t> wildcard_subscription_available;
  std::optional<std::uint8_t> subscription_identifier_available;
  std::optional<std::uint8_t> shared_subscription_available;
};

struct Will {
  std::string_view topic;
  std::string_view payload;
  std::uint8_t qos = 0;
  bool retain = false;
  Properties properties;  // MQTT 5.0 will properties
};

struct Connect {
  ProtocolVersion version = ProtocolVersion::v311;
  bool clean_start = true;  // "clean session" in MQTT 3.x
  std::uint16_t keep_alive = 0;
  std::string_view client_id;
  std::optional<Will> will;
  std::optional<std::string_view> username;
  std::optional<std::string_view> password;
  Properties properties;
};

/// MQTT 3.x CONNACK return codes (MQTT 3.1.1 section 3.2.2.3).
enum class ConnackReturnCode : std::uint8_t {
  accepted = 0,
  unacceptable_protocol_version = 1,
  identifier_rejected = 2,
  server_unavailable = 3,
  bad_username_or_password = 4,
  not_authorized = 5,
};

struct Connack {
  bool session_present = false;
  /// MQTT 5.0: a ReasonCode. MQTT 3.x: a ConnackReturnCode (0..5).
  std::uint8_t code = 0;
  Properties properties;
};

struct Publish {
  bool dup = false;
  std::uint8_t qos = 0;
  bool retain = false;
  std::string_view topic;       // may be empty in MQTT 5.0 when a topic alias is set
  std::uint16_t packet_id = 0;  // 0 for QoS 0
  Properties properties;
  std::string_view payload;
};

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
template <PacketType Type>
struct PublishAck {
  static constexpr PacketType type = Type;
  std::uint16_t packet_id = 0;
  ReasonCode reason_code = ReasonCode::success;  // MQTT 5.0 only
  Properties properties;
};
using Puback = PublishAck<PacketType::puback>;
using Pubrec = PublishAck<PacketType::pubrec>;
using Pubrel = PublishAck<PacketType::pubrel>;
using Pubcomp = PublishAck<PacketType::pubcomp>;

struct Subscription {
  std::string_view filter;
  std::uint8_t qos = 0;
  bool no_local = false;             // MQTT 5.0
  bool retain_as_published = false;  // MQTT 5.0
  std::uint8_t retain_handling = 0;  // MQTT 5.0: 0, 1 or 2
};

struct Subscribe {
  std::uint16_t packet_id = 0;
  Properties properties;
  std::vector<Subscription> subscriptions;  // at least one
};

struct Suback {
  std::uint16_t packet_id = 0;
  Properties properties;
  /// MQTT 3.x return codes 0, 1, 2 and 0x80 have the values of the matching ReasonCodes.
  std::vector<ReasonCode> reason_codes;
};

struct Unsubscribe {
  std::uint16_t packet_id = 0;
  Properties properties;
  std::vector<std::string_view> filters;  // at least one
};

struct Unsuback {
  std::uint16_t packet_id = 0;
  Properties properties;
  std::vector<ReasonCode> reason_codes;  // MQTT 5.0 only; empty for MQTT 3.x
};

struct Pingreq {};
struct Pingresp {};

struct Disconnect {
  ReasonCode reason_code = ReasonCode::success;  // MQTT 5.0 only
  Properties properties;
};

struct Auth {
  ReasonCode reason_code = ReasonCode::success;
  Properties properties;
};

/// Any control packet. The alternative's index + 1 is its PacketType value.
using Packet = std::variant<Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe,
                            Suback, Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth>;

inline PacketType packet_type(const Packet& p) noexcept {
  return static_cast<PacketType>(p.index() + 1);
}

/// "CONNECT", "PUBLISH", ... for logs and errors; "RESERVED" for other values.
std::string_view packet_type_name(PacketType type) noexcept;

}  // namespace brokerha::mqtt
