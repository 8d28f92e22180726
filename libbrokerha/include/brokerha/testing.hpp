// SPDX-License-Identifier: Apache-2.0
#pragma once
// Fault injection, for tests only: cut a node off from a peer as a network partition would,
// without touching the network, or feed it a frame a misbehaving peer could send. brokerha's own
// cluster tests use it; a program embedding the library can use it in its tests. Never in
// production: nothing here is needed to run a broker, and a blocked peer looks exactly like a
// partitioned one.
//
// Thread safety: the functions may be called from any thread while the object runs.

#include <brokerha/export.hpp>

#include <cstdint>
#include <string>

namespace brokerha {

class Broker;
class Membership;

namespace testing {

/// While `address` (a peer's numeric IP) is blocked, `broker` neither sends to it nor hears
/// from it, on the membership and the data plane alike. No effect on a single node.
BROKERHA_API void set_cluster_partition(Broker& broker, const std::string& address, bool blocked);

/// While `address` is blocked, `broker`'s data-plane link to it is cut (no frame either way,
/// no new connection) while membership still hears it: the member is alive, its link down, as
/// just after a partition heals and before the link has re-dialled.
BROKERHA_API void set_cluster_link_blocked(Broker& broker, const std::string& address,
                                           bool blocked);

/// Membership alone: while `address` is blocked, `broker`'s membership neither sends to it nor
/// hears from it; its data-plane link is left as it is. With set_cluster_link_blocked, a
/// partition can heal in two steps (membership first, then the link).
BROKERHA_API void set_cluster_membership_blocked(Broker& broker, const std::string& address,
                                                 bool blocked);

/// While `address` (numeric IP) is blocked, `membership` sends nothing to it and hears
/// nothing from it (UDP and TCP).
BROKERHA_API void set_membership_blocked(Membership& membership, const std::string& address,
                                         bool blocked);

/// Hands `broker`'s cluster node a data-plane frame (`kind` and `body` as in
/// docs/cluster-protocol.md) as if it had arrived on the link from `peer`: a misbehaving
/// member. No effect on a single node.
BROKERHA_API void inject_cluster_frame(Broker& broker, const std::string& peer, std::uint8_t kind,
                                       const std::string& body);

}  // namespace testing
}  // namespace brokerha
