// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the broker's routing and sessions need from the cluster, and the values they exchange.
// The cluster (cluster::Node) implements ClusterPort; nothing here knows how nodes talk.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "message/message.hpp"
#include "mqtt/packet.hpp"
#include "util/hlc.hpp"

namespace brokerha::router {

using message::MessagePtr;

/// A shared subscription group this node chose another node for: that node delivers the
/// message to one of its members of `filter` ("$share/{group}/{filter}").
struct SharedPick {
  std::uint32_t peer;  // peer id
  std::string filter;
};

/// A message this node's clients published, on its way to other nodes.
struct RemoteSend {
  MessagePtr message;
  std::optional<hlc::Version> version;  // retained writes: the version stored here
  std::vector<std::uint32_t> peers;     // peer ids with a matching subscription
  bool all = false;                     // retained: every peer
  /// The groups chosen for a peer (sorted by peer; each peer also in `peers` unless `all`).
  /// Empty unless a shared subscription on another node matched: the common case costs
  /// nothing.
  std::vector<SharedPick> shared;
  /// Set when `cluster:message_to` has a subscriber: the cluster publishes the event with the
  /// names of the nodes the message went to (the publisher's protocol version and packet id).
  struct Tap {
    mqtt::ProtocolVersion version;
    std::uint16_t packet_id;
  };
  std::optional<Tap> tap;
};

/// A claim on a client id: its version orders concurrent claims cluster-wide (the arbiter's
/// HLC reading and the claiming node; cluster/claims.hpp).
using ClaimVersion = hlc::Version;

/// What the cluster answers a local connect's claim (ClusterPort::claim).
struct ClaimResult {
  bool won = true;       // false: a newer claim for the id exists elsewhere
  ClaimVersion version;  // this claim's version
  std::string session;   // a session moved here from another node (export bytes), or empty
  /// Set when `session` came from a node that keeps a trail of what still reaches it there
  /// (cluster protocol 3). Call it exactly once: moved(true, then) once the session is
  /// installed and its routes acknowledged — `then` runs later, on a cluster thread, with
  /// the trail's bytes (empty: nothing, or not within the bound) — or moved(false, {}) when
  /// the session was not installed (the old node keeps it).
  std::function<void(bool ok, std::function<void(std::string trail)> then)> moved;
};

/// What a claim from another node does to the id here (SessionRegistry::take).
enum class TakeMode : std::uint8_t {
  move,     // the client resumes elsewhere: export the session, then end it here
  discard,  // the client starts clean elsewhere: end the session here (a delayed will is due)
  yield,    // a newer claim won after a partition: end it without its will
};
enum class TakeResult : std::uint8_t { none, moved, discarded, newer_here };

/// The cluster as the broker sees it. Called on shard threads.
class ClusterPort {
 public:
  virtual ~ClusterPort() = default;
  /// A client connects here with `client_id` (on its home shard `shard`; `resume` = clean
  /// start 0). The cluster has the claim stamped by the id's arbiter and asks every peer to
  /// give the id up (moving its session here when `resume`); `done` then runs on `shard`.
  virtual void claim(const std::string& client_id, bool resume, unsigned shard,
                     std::function<void(ClaimResult)> done) = 0;
  /// Messages routed by this node for other nodes: one call per flush of a shard.
  virtual void forward(std::vector<RemoteSend>&& batch) = 0;
  /// The local subscriber count of these filters may have gone to or from zero. The cluster
  /// announces what RouteTable::local_filter_present() says when it gets to them, so calls
  /// from different shards may arrive in any order, and a filter that did not change is
  /// announced again by nobody. `done` (may be empty) runs on a cluster thread once every
  /// connected peer acknowledged every announcement made so far (so also a filter's earlier,
  /// still unacknowledged one), or the wait bound passed.
  virtual void routes_changed(std::vector<std::string> filters, std::function<void()> done) = 0;
};

}  // namespace brokerha::router
