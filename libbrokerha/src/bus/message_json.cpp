// SPDX-License-Identifier: Apache-2.0
#include "bus/message_json.hpp"

#include "util/base64.hpp"

namespace brokerha::bus {

MessageView view_of(const MessageInfo& m, std::chrono::system_clock::time_point now) {
  MessageView v;
  v.topic = m.topic;
  v.payload = m.payload;
  v.qos = m.qos;
  v.retain = m.retain;
  v.dup = m.dup;
  v.packet_id = m.packet_id;
  v.created = m.created;
  if (m.expiry) {
    v.expiry_unix =
        std::chrono::duration_cast<std::chrono::seconds>((now + *m.expiry).time_since_epoch())
            .count();
  }
  v.origin = m.origin;
  v.payload_format = m.payload_format;
  if (m.content_type) v.content_type = *m.content_type;
  if (m.response_topic) v.response_topic = *m.response_topic;
  if (m.correlation_data) v.correlation_data = *m.correlation_data;
  v.user_properties = &m.user_properties;
  return v;
}

MessageView view_of(const message::Message& m) {
  MessageView v;
  v.topic = m.topic;
  v.payload = m.payload;
  v.qos = m.qos;
  v.retain = m.retain;
  v.created = m.created;
  if (m.expires_at) {
    const auto left = *m.expires_at - message::Message::Clock::now();
    v.expiry_unix = std::chrono::duration_cast<std::chrono::seconds>(
                        (std::chrono::system_clock::now() + left).time_since_epoch())
                        .count();
  }
  v.origin = m.origin;
  const auto& p = m.properties;
  if (p.payload_format_indicator) v.payload_format = *p.payload_format_indicator;
  if (p.content_type) v.content_type = *p.content_type;
  if (p.response_topic) v.response_topic = *p.response_topic;
  if (p.correlation_data) v.correlation_data = *p.correlation_data;
  v.user_properties = &p.user_properties;
  return v;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out.push_back(kHex[u >> 4]);
          out.push_back(kHex[u & 0xF]);
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

void append_message_json(std::string& out, const MessageView& m, std::string_view extra) {
  const auto created =
      std::chrono::duration_cast<std::chrono::seconds>(m.created.time_since_epoch()).count();
  out += "{\"TopicName\":";
  append_json_string(out, m.topic);
  out += ",\"Payload\":\"";
  out += util::base64_encode(m.payload);
  out += "\",\"FixedHeader\":{\"qos\":";
  out += std::to_string(m.qos);
  out += m.retain ? ",\"retain\":true" : ",\"retain\":false";
  out += m.dup ? ",\"dup\":true}" : ",\"dup\":false}";
  out += ",\"PacketID\":";
  out += std::to_string(m.packet_id);
  out += ",\"Created\":";
  out += std::to_string(created);
  out += ",\"Expiry\":";
  out += std::to_string(m.expiry_unix);
  out += ",\"Origin\":";
  append_json_string(out, m.origin);
  out += ",\"ProtocolVersion\":";
  out += std::to_string(m.protocol_version);
  out += ",\"Properties\":{";
  bool first = true;
  auto key = [&](const char* k) {
    if (!first) out.push_back(',');
    first = false;
    out += k;
  };
  if (m.payload_format) {
    key("\"PayloadFormat\":");
    out += std::to_string(*m.payload_format);
    out += ",\"PayloadFormatFlag\":true";
  }
  if (m.content_type) {
    key("\"ContentType\":");
    append_json_string(out, *m.content_type);
  }
  if (m.response_topic) {
    key("\"ResponseTopic\":");
    append_json_string(out, *m.response_topic);
  }
  if (m.correlation_data) {
    key("\"CorrelationData\":\"");
    out += util::base64_encode(*m.correlation_data);
    out.push_back('"');
  }
  if (m.user_properties != nullptr && !m.user_properties->empty()) {
    key("\"User\":[");
    bool first_user = true;
    for (const auto& [k, v] : *m.user_properties) {
      if (!first_user) out.push_back(',');
      first_user = false;
      out += "{\"k\":";
      append_json_string(out, k);
      out += ",\"v\":";
      append_json_string(out, v);
      out.push_back('}');
    }
    out.push_back(']');
  }
  out.push_back('}');
  out += extra;
  out.push_back('}');
}

std::string render_message_to(const message::Message& m, int protocol_version,
                              std::uint16_t packet_id, const std::vector<std::string>& nodes) {
  MessageView v = view_of(m);
  v.packet_id = packet_id;
  v.protocol_version = protocol_version;
  std::string extra = ",\"Nodes\":[";
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    if (i != 0) extra += ',';
    append_json_string(extra, nodes[i]);
  }
  extra += ']';
  std::string json;
  json.reserve(160 + m.topic.size() + m.payload.size() * 4 / 3 + extra.size());
  append_message_json(json, v, extra);
  return json;
}

}  // namespace brokerha::bus
