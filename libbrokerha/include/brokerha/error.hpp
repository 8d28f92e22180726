// SPDX-License-Identifier: Apache-2.0
#pragma once
// Error codes of brokerha.
//
// Two families:
//  - brokerha::ReasonCode: the MQTT 5.0 reason codes (one byte on the wire). Decoding errors,
//    protocol violations and hook decisions are reported as the reason code the MQTT
//    specification names for them, so the broker can send it to a v5 client unchanged.
//  - brokerha::errc: library errors that are not MQTT reason codes.
// Both convert to std::error_code (std::is_error_code_enum), with their own categories.
//
// Thread safety: everything here is immutable and may be used from any thread.

#include <brokerha/export.hpp>

#include <cstdint>
#include <string_view>
#include <system_error>

namespace brokerha {

/// MQTT 5.0 reason codes (MQTT 5.0 section 2.4). Several codes share a value (0x00 is
/// Success, Normal disconnection and Granted QoS 0); the enumerators name the common meaning.
enum class ReasonCode : std::uint8_t {
  success = 0x00,  // also: normal disconnection, granted QoS 0
  granted_qos_1 = 0x01,
  granted_qos_2 = 0x02,
  disconnect_with_will = 0x04,
  no_matching_subscribers = 0x10,
  no_subscription_existed = 0x11,
  continue_authentication = 0x18,
  reauthenticate = 0x19,
  unspecified_error = 0x80,
  malformed_packet = 0x81,
  protocol_error = 0x82,
  implementation_specific_error = 0x83,
  unsupported_protocol_version = 0x84,
  client_identifier_not_valid = 0x85,
  bad_username_or_password = 0x86,
  not_authorized = 0x87,
  server_unavailable = 0x88,
  server_busy = 0x89,
  banned = 0x8A,
  server_shutting_down = 0x8B,
  bad_authentication_method = 0x8C,
  keep_alive_timeout = 0x8D,
  session_taken_over = 0x8E,
  topic_filter_invalid = 0x8F,
  topic_name_invalid = 0x90,
  packet_identifier_in_use = 0x91,
  packet_identifier_not_found = 0x92,
  receive_maximum_exceeded = 0x93,
  topic_alias_invalid = 0x94,
  packet_too_large = 0x95,
  message_rate_too_high = 0x96,
  quota_exceeded = 0x97,
  administrative_action = 0x98,
  payload_format_invalid = 0x99,
  retain_not_supported = 0x9A,
  qos_not_supported = 0x9B,
  use_another_server = 0x9C,
  server_moved = 0x9D,
  shared_subscriptions_not_supported = 0x9E,
  connection_rate_exceeded = 0x9F,
  maximum_connect_time = 0xA0,
  subscription_identifiers_not_supported = 0xA1,
  wildcard_subscriptions_not_supported = 0xA2,
};

/// The specification's name of a reason code ("Malformed Packet"), or "Unknown reason code".
BROKERHA_API std::string_view reason_code_name(ReasonCode code) noexcept;

/// True when `value` is one of the reason codes MQTT 5.0 defines.
BROKERHA_API bool is_known_reason_code(std::uint8_t value) noexcept;

/// The category of ReasonCode error codes; `message()` is the specification's name.
BROKERHA_API const std::error_category& reason_code_category() noexcept;

inline std::error_code make_error_code(ReasonCode code) noexcept {
  return {static_cast<int>(code), reason_code_category()};
}

/// Library errors that are not MQTT reason codes.
enum class errc {
  ok = 0,
  invalid_argument = 1,  // an option or argument out of range
  already_started = 2,   // start() called twice
  not_started = 3,       // an operation that needs a running component
  stopped = 4,           // the component was stopped
  address_in_use = 5,    // a listener could not bind
  timed_out = 6,         // a bounded wait ran out
  session_in_use = 7,    // a session is connected and cannot be replaced
  malformed_input = 8,   // bytes that do not parse (an imported session)
};

/// The category of brokerha::errc.
BROKERHA_API const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace brokerha

namespace std {
template <>
struct is_error_code_enum<brokerha::ReasonCode> : true_type {};
template <>
struct is_error_code_enum<brokerha::errc> : true_type {};
}  // namespace std
