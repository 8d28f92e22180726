// SPDX-License-Identifier: Apache-2.0
// The broker's side of the bus: a copy of each message a client of this node publishes goes
// to `cluster:message_to` (docs/api.md) with the names of the nodes it was sent to. Called
// on the publisher's shard thread, only when the channel has a subscriber. On a single node
// the event is rendered here; in cluster mode the cluster's control thread renders it when it
// knows the nodes (off the data path either way), and offers it without waiting.

#include "bus/message_json.hpp"
#include "net/core.hpp"

namespace brokerha::net {

void Core::emit_message_to(const MessagePtr& message, mqtt::ProtocolVersion version,
                           std::uint16_t packet_id, Shard& shard) {
  if (cluster != nullptr) {
    std::vector<RemoteSend>& out = shard.remote_outbox;
    if (out.empty() || out.back().message != message) {
      RemoteSend r;  // no peer: only the event
      r.message = message;
      out.push_back(std::move(r));
      schedule_flush(shard);
    }
    out.back().tap = RemoteSend::Tap{version, packet_id};
    return;
  }
  message_to.publish(render_message_to(*message, version, packet_id, {}));
}

std::string render_message_to(const Message& m, mqtt::ProtocolVersion version,
                              std::uint16_t packet_id, const std::vector<std::string>& nodes) {
  bus::MessageView v = bus::view_of(m);
  v.packet_id = packet_id;
  v.protocol_version = static_cast<int>(version);
  std::string extra = ",\"Nodes\":[";
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    if (i != 0) extra += ',';
    bus::append_json_string(extra, nodes[i]);
  }
  extra += ']';
  std::string json;
  json.reserve(160 + m.topic.size() + m.payload.size() * 4 / 3 + extra.size());
  bus::append_message_json(json, v, extra);
  return json;
}

}  // namespace brokerha::net
