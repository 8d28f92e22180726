// SPDX-License-Identifier: Apache-2.0
#pragma once
// A canonical one-line text form of a decoded MQTT packet, for tests: two packets have the
// same dump exactly when every field (properties included, user properties and
// subscription identifiers in order) is equal. Used to compare packets semantically when
// their encodings may legitimately differ (MQTT 5.0 properties in another order), and to
// print packets in failure messages. Header-only.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "mqtt/packet.hpp"

namespace brokerha::test {

namespace dump_detail {

inline void put(std::string& out, const char* name, std::string_view v) {
  out += ' ';
  out += name;
  out += "=\"";
  static const char* hex = "0123456789abcdef";
  for (const char ch : v) {
    const auto b = static_cast<unsigned char>(ch);
    if (b >= 0x20 && b < 0x7F && b != '"' && b != '\\') {
      out += ch;
    } else {
      out += "\\x";
      out += hex[b >> 4];
      out += hex[b & 0x0F];
    }
  }
  out += '"';
}
inline void put(std::string& out, const char* name, std::uint64_t v) {
  out += ' ';
  out += name;
  out += '=';
  out += std::to_string(v);
}
template <class T>
void put(std::string& out, const char* name, const std::optional<T>& v) {
  if (!v) return;
  if constexpr (std::is_same_v<T, std::string_view>) {
    put(out, name, *v);
  } else {
    put(out, name, static_cast<std::uint64_t>(*v));
  }
}
inline void put(std::string& out, const char* name, bool v) { put(out, name, std::uint64_t{v}); }
inline void put(std::string& out, const char* name, ReasonCode v) {
  put(out, name, static_cast<std::uint64_t>(v));
}

inline void put(std::string& out, const char* name, const mqtt::Properties& p) {
  out += ' ';
  out += name;
  out += "{";
  put(out, "payload_format_indicator", p.payload_format_indicator);
  put(out, "message_expiry_interval", p.message_expiry_interval);
  put(out, "content_type", p.content_type);
  put(out, "response_topic", p.response_topic);
  put(out, "correlation_data", p.correlation_data);
  for (std::uint32_t id : p.subscription_identifiers) {
    put(out, "subscription_identifier", std::uint64_t{id});
  }
  put(out, "session_expiry_interval", p.session_expiry_interval);
  put(out, "assigned_client_identifier", p.assigned_client_identifier);
  put(out, "server_keep_alive", p.server_keep_alive);
  put(out, "authentication_method", p.authentication_method);
  put(out, "authentication_data", p.authentication_data);
  put(out, "request_problem_information", p.request_problem_information);
  put(out, "will_delay_interval", p.will_delay_interval);
  put(out, "request_response_information", p.request_response_information);
  put(out, "response_information", p.response_information);
  put(out, "server_reference", p.server_reference);
  put(out, "reason_string", p.reason_string);
  put(out, "receive_maximum", p.receive_maximum);
  put(out, "topic_alias_maximum", p.topic_alias_maximum);
  put(out, "topic_alias", p.topic_alias);
  put(out, "maximum_qos", p.maximum_qos);
  put(out, "retain_available", p.retain_available);
  for (const mqtt::UserProperty& u : p.user_properties) {
    put(out, "user_property.name", u.name);
    put(out, "user_property.value", u.value);
  }
  put(out, "maximum_packet_size", p.maximum_packet_size);
  put(out, "wildcard_subscription_available", p.wildcard_subscription_available);
  put(out, "subscription_identifier_available", p.subscription_identifier_available);
  put(out, "shared_subscription_available", p.shared_subscription_available);
  out += " }";
}

inline void fields(std::string& out, const mqtt::Connect& c) {
  put(out, "version", static_cast<std::uint64_t>(c.version));
  put(out, "clean_start", c.clean_start);
  put(out, "keep_alive", std::uint64_t{c.keep_alive});
  put(out, "client_id", c.client_id);
  if (c.will) {
    put(out, "will.topic", c.will->topic);
    put(out, "will.payload", c.will->payload);
    put(out, "will.qos", std::uint64_t{c.will->qos});
    put(out, "will.retain", c.will->retain);
    put(out, "will.properties", c.will->properties);
  }
  put(out, "username", c.username);
  put(out, "password", c.password);
  put(out, "properties", c.properties);
}
inline void fields(std::string& out, const mqtt::Connack& c) {
  put(out, "session_present", c.session_present);
  put(out, "code", std::uint64_t{c.code});
  put(out, "properties", c.properties);
}
inline void fields(std::string& out, const mqtt::Publish& p) {
  put(out, "dup", p.dup);
  put(out, "qos", std::uint64_t{p.qos});
  put(out, "retain", p.retain);
  put(out, "topic", p.topic);
  put(out, "packet_id", std::uint64_t{p.packet_id});
  put(out, "properties", p.properties);
  put(out, "payload", p.payload);
}
template <mqtt::PacketType T>
void fields(std::string& out, const mqtt::PublishAck<T>& a) {
  put(out, "packet_id", std::uint64_t{a.packet_id});
  put(out, "reason_code", a.reason_code);
  put(out, "properties", a.properties);
}
inline void fields(std::string& out, const mqtt::Subscribe& s) {
  put(out, "packet_id", std::uint64_t{s.packet_id});
  put(out, "properties", s.properties);
  for (const mqtt::Subscription& e : s.subscriptions) {
    put(out, "filter", e.filter);
    put(out, "qos", std::uint64_t{e.qos});
    put(out, "no_local", e.no_local);
    put(out, "retain_as_published", e.retain_as_published);
    put(out, "retain_handling", std::uint64_t{e.retain_handling});
  }
}
inline void fields(std::string& out, const mqtt::Suback& s) {
  put(out, "packet_id", std::uint64_t{s.packet_id});
  put(out, "properties", s.properties);
  for (ReasonCode c : s.reason_codes) put(out, "reason_code", c);
}
inline void fields(std::string& out, const mqtt::Unsubscribe& u) {
  put(out, "packet_id", std::uint64_t{u.packet_id});
  put(out, "properties", u.properties);
  for (std::string_view f : u.filters) put(out, "filter", f);
}
inline void fields(std::string& out, const mqtt::Unsuback& u) {
  put(out, "packet_id", std::uint64_t{u.packet_id});
  put(out, "properties", u.properties);
  for (ReasonCode c : u.reason_codes) put(out, "reason_code", c);
}
inline void fields(std::string&, const mqtt::Pingreq&) {}
inline void fields(std::string&, const mqtt::Pingresp&) {}
inline void fields(std::string& out, const mqtt::Disconnect& d) {
  put(out, "reason_code", d.reason_code);
  put(out, "properties", d.properties);
}
inline void fields(std::string& out, const mqtt::Auth& a) {
  put(out, "reason_code", a.reason_code);
  put(out, "properties", a.properties);
}

}  // namespace dump_detail

/// "PUBLISH dup=0 qos=1 ... payload=\"hi\"": every field of `packet`.
inline std::string dump(const mqtt::Packet& packet) {
  std::string out(mqtt::packet_type_name(mqtt::packet_type(packet)));
  std::visit([&](const auto& p) { dump_detail::fields(out, p); }, packet);
  return out;
}

}  // namespace brokerha::test
