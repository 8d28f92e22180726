// The broker's side of the bus: a copy of each message a client of this node publishes goes
// to `cluster:message_to` (SPEC section 5). Called on the publisher's shard thread, only when
// the channel has a subscriber; the event is rendered here and offered without waiting.

#include "bus/message_json.hpp"
#include "net/core.hpp"

namespace brokerha::net {

void Core::emit_message_to(const Message& m, mqtt::ProtocolVersion version,
                           std::uint16_t packet_id) {
  bus::MessageView v = bus::view_of(m);
  v.packet_id = packet_id;
  v.protocol_version = static_cast<int>(version);
  std::string json;
  json.reserve(160 + m.topic.size() + m.payload.size() * 4 / 3);
  // The nodes a message goes to are not listed yet (docs/cluster.md, "Not yet").
  bus::append_message_json(json, v, ",\"Nodes\":[]");
  message_to.publish(std::move(json));
}

}  // namespace brokerha::net
