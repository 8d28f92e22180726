// SPDX-License-Identifier: Apache-2.0
#pragma once
// The router: where one message goes. Pure code over the route table and the retained store:
// a message in, deliveries out (per target shard, one per session with the merged options of
// its overlapping subscriptions), plus the other nodes it must reach and the shared groups
// chosen among them. No sockets, no threads of its own; the shard runtime carries the result.
//
// Thread safety: route() and route_from_cluster() may run on any number of threads at once
// (the route table's shared lock, the retained store's mutex); each caller passes its own
// Outbox. Lock order: the route table's mutex, then the retained store's.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "message/message.hpp"
#include "retained/store.hpp"
#include "router/cluster_port.hpp"
#include "router/route_table.hpp"
#include "session/client_session.hpp"

namespace brokerha::router {

using message::Message;
using message::MessagePtr;

/// A delivery routed to a session on some shard.
struct Target {
  ClientSessionPtr session;
  session::Delivery delivery;
};

/// A group of the remote tree that matched a publish (route()'s scratch).
struct RemoteGroupMatch {
  const RouteTable::RemoteTree::Group* group;
  bool paired;  // a local group with the same name and filter made the choice
};

/// What routing produced on one shard until the shard flushes it, and the buffers every
/// route() reuses. One per shard (its thread only).
struct Outbox {
  explicit Outbox(unsigned shards) : deliveries(shards) {}

  std::vector<std::vector<Target>> deliveries;  // per target shard
  std::vector<RemoteSend> remote;               // for ClusterPort::forward()
  std::vector<std::string> route_changes;       // filters whose local presence changed

  // Scratch, kept for its capacity.
  std::vector<const SubEntry*> matches;
  std::vector<std::uint32_t> peers;
  std::vector<RemoteGroupMatch> remote_groups;
};

/// The result of routing one message.
struct RouteResult {
  std::size_t targets = 0;  // local sessions
  std::size_t remote = 0;   // other nodes it is forwarded to
  /// route_from_cluster(): shared groups the sending node chose this node for that have no
  /// local member (any more): the message is lost for that group.
  std::size_t shared_missed = 0;
};

class Router {
 public:
  struct Options {
    bool clustered = false;  // remote targets are computed (a cluster node)
    std::string node_name;   // part of every retained version written here ("" single node)
    std::chrono::milliseconds tombstone_ttl{0};
    std::optional<std::size_t> max_tombstones;  // unset: the store's default
    /// Replicated retained versions further ahead of the wall clock are refused.
    std::chrono::milliseconds max_clock_skew = hlc::kDefaultMaxSkew;
  };
  explicit Router(Options options);

  RouteTable& routes() noexcept { return routes_; }
  const RouteTable& routes() const noexcept { return routes_; }
  bool clustered() const noexcept { return options_.clustered; }
  const std::string& node_name() const noexcept { return options_.node_name; }

  /// A message published here: stores or deletes its retained copy, queues a delivery to
  /// every matching session in `out`, and, in a cluster, picks for each matching shared group
  /// one slot among this node's members and the other nodes with members, and queues the
  /// message for the nodes that need it (retained: all of them).
  RouteResult route(const MessagePtr& message, Outbox& out);
  /// A message received from another node: stored if retained and newer than what is held
  /// (`version`), delivered to local subscribers only, never forwarded again. Shared groups
  /// get it only when listed in `shares` ("$share/g/f" the sender chose this node for), and
  /// then one member each.
  RouteResult route_from_cluster(const MessagePtr& message,
                                 const std::optional<hlc::Version>& version,
                                 const std::vector<std::string>& shares, Outbox& out);

  /// Peers the cluster has (retained messages go to all of them); set by the cluster.
  std::atomic<std::uint32_t> peer_count{0};

  // ---- the retained store (any thread) ----
  /// A replicated write: applied when newer than what is held.
  bool retained_apply(const std::string& topic, const MessagePtr& message,
                      const hlc::Version& version);
  void retained_for_each(
      const std::function<void(const std::string&, const retained::Store::Entry&)>& f) const;
  /// Retained messages matching `filter` (for a new subscription).
  std::vector<MessagePtr> retained_matching(std::string_view filter) const;
  std::size_t retained_count() const;
  /// Drops expired messages and old tombstones.
  void prune_retained(retained::Store::Clock::time_point now);
  /// Replicated retained writes refused for a version too far ahead of the wall clock.
  std::uint64_t retained_refused_skew() const;

 private:
  /// The local part of routing, with the route table read-locked: matches the local tree and
  /// fills `out`'s deliveries; returns the number of sessions. `pick(group)` returns the
  /// member of a matching shared group to deliver to, or null for none on this node.
  template <class Pick>
  std::size_t match_local(const RouteTable::LocalTree& tree, const MessagePtr& message, Outbox& out,
                          Pick&& pick) const;

  const Options options_;
  RouteTable routes_;
  mutable std::mutex retained_mutex_;
  retained::Store retained_;
};

}  // namespace brokerha::router
