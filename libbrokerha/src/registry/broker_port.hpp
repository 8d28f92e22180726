// SPDX-License-Identifier: Apache-2.0
#pragma once
// The broker as the cluster reaches it: the shared router, and each shard's sessions on that
// shard's own thread. The shard runtime (net::Runtime) implements it; cluster::Node and
// cluster::Claims use nothing else of the broker, so the cluster never touches a shard's
// state from another thread.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "registry/session_registry.hpp"
#include "router/router.hpp"

namespace brokerha::registry {

/// One shard's state, handed to a function running on that shard's thread.
struct ShardAccess {
  unsigned index;
  SessionRegistry& sessions;
  router::Router& router;
  router::Outbox& outbox;

  /// A message from another node, routed to this node's subscribers (router::Router).
  router::RouteResult route_from_cluster(const message::MessagePtr& message,
                                         const std::optional<hlc::Version>& version,
                                         const std::vector<std::string>& shares) {
    return router.route_from_cluster(message, version, shares, outbox);
  }
};

class BrokerPort {
 public:
  virtual ~BrokerPort() = default;
  virtual unsigned shard_count() const noexcept = 0;
  /// The shard whose sessions hold `client_id`.
  virtual unsigned home_shard(std::string_view client_id) const noexcept = 0;
  /// Runs `f` on shard `index`'s thread; what it queued (deliveries, wills, route changes,
  /// DISCONNECTs) is flushed right after.
  virtual void on_shard(unsigned index, std::function<void(ShardAccess&)> f) = 0;
  /// The router: routes of other nodes, the retained set, this node's filters (any thread).
  virtual router::Router& router() noexcept = 0;
  /// The largest MQTT packet this broker accepts (the cluster sizes its frames from it).
  virtual std::uint32_t max_packet_size() const noexcept = 0;
};

}  // namespace brokerha::registry
