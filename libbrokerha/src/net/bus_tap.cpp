// SPDX-License-Identifier: Apache-2.0
// The broker's side of the bus: a copy of each message a client of this node publishes goes
// to `cluster:message_to` (docs/api.md) with the names of the nodes it was sent to. Called
// on the publisher's shard thread, only when the channel has a subscriber. On a single node
// the event is rendered here; in cluster mode the cluster's control thread renders it when it
// knows the nodes (off the data path either way), and offers it without waiting.

#include "bus/message_json.hpp"
#include "net/runtime.hpp"

namespace brokerha::net {

void Runtime::emit_message_to(const message::MessagePtr& message, mqtt::ProtocolVersion version,
                              std::uint16_t packet_id, Shard& shard) {
  if (cluster != nullptr) {
    std::vector<router::RemoteSend>& out = shard.outbox.remote;
    if (out.empty() || out.back().message != message) {
      router::RemoteSend r;  // no peer: only the event
      r.message = message;
      out.push_back(std::move(r));
      schedule_flush(shard);
    }
    out.back().tap = router::RemoteSend::Tap{version, packet_id};
    return;
  }
  message_to.publish(bus::render_message_to(*message, static_cast<int>(version), packet_id, {}));
}

}  // namespace brokerha::net
