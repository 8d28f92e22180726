// SPDX-License-Identifier: Apache-2.0
#pragma once
// Reason codes and reason strings on the packets the server sends.

#include <brokerha/error.hpp>

#include <cstdint>
#include <string_view>

#include "mqtt/codec.hpp"

namespace brokerha::protocol {

/// Sets `why` as the Reason String of a v5 packet unless that would make it larger than the
/// client's Maximum Packet Size (MQTT 5.0 3.1.2.11.4, 3.2.2.3.7: then it is left out).
template <typename P>
void add_reason_string(P& packet, std::string_view why, std::uint32_t max_packet) {
  if (why.empty()) return;
  packet.properties.reason_string = why;
  if (mqtt::encoded_size(mqtt::Packet(packet), mqtt::ProtocolVersion::v5) > max_packet) {
    packet.properties.reason_string.reset();
  }
}

/// The same on an acknowledgement, only when the client asked for problem information.
template <typename P>
void add_problem(P& packet, std::string_view why, bool wanted, std::uint32_t max_packet) {
  if (wanted) add_reason_string(packet, why, max_packet);
}

/// The MQTT 3.x CONNACK return code for a v5 reason.
inline mqtt::ConnackReturnCode v3_code(ReasonCode r) noexcept {
  switch (r) {
    case ReasonCode::unsupported_protocol_version:
      return mqtt::ConnackReturnCode::unacceptable_protocol_version;
    case ReasonCode::client_identifier_not_valid:
      return mqtt::ConnackReturnCode::identifier_rejected;
    case ReasonCode::bad_username_or_password:
      return mqtt::ConnackReturnCode::bad_username_or_password;
    case ReasonCode::not_authorized:
      return mqtt::ConnackReturnCode::not_authorized;
    default:
      return mqtt::ConnackReturnCode::server_unavailable;
  }
}

}  // namespace brokerha::protocol
