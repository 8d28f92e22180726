// The broker's side of the bus: a copy of each message a client of this node publishes goes
// to `cluster:message_to` (SPEC section 5). Called on the publisher's shard thread, only when
// the channel has a subscriber; the event is rendered here and offered without waiting.

#include "bus/message_json.hpp"
#include "net/core.hpp"

namespace brokerha::net {

void Core::emit_message_to(const Message& m, mqtt::ProtocolVersion version,
                           std::uint16_t packet_id) {
  bus::MessageView v;
  v.topic = m.topic;
  v.payload = m.payload;
  v.qos = m.qos;
  v.retain = m.retain;
  v.packet_id = packet_id;
  v.created = m.created;
  if (m.expires_at) {
    const auto left = *m.expires_at - Clock::now();
    v.expiry_unix = std::chrono::duration_cast<std::chrono::seconds>(
                        (std::chrono::system_clock::now() + left).time_since_epoch())
                        .count();
  }
  v.origin = m.origin;
  v.protocol_version = static_cast<int>(version);
  if (m.properties.payload_format_indicator) {
    v.payload_format = *m.properties.payload_format_indicator;
  }
  if (m.properties.content_type) v.content_type = *m.properties.content_type;
  if (m.properties.response_topic) v.response_topic = *m.properties.response_topic;
  if (m.properties.correlation_data) v.correlation_data = *m.properties.correlation_data;
  v.user_properties = &m.properties.user_properties;
  std::string json;
  json.reserve(160 + m.topic.size() + m.payload.size() * 4 / 3);
  // Single node: the message goes to no other node. The cluster fills the list in later.
  bus::append_message_json(json, v, ",\"Nodes\":[]");
  message_to.publish(std::move(json));
}

}  // namespace brokerha::net
