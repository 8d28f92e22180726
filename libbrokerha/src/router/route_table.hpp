// SPDX-License-Identifier: Apache-2.0
#pragma once
// The subscriptions this node routes by: the local sessions' (one tree), the filters other
// nodes announced (a second tree), and how many local subscriptions use each filter (what this
// node announces to the others: a filter while its count is above zero).
//
// Thread safety: every member may be called from any thread. Both trees sit under one
// shared mutex: read (shared) for every PUBLISH routed, written (exclusive) per SUBSCRIBE,
// UNSUBSCRIBE, session end and route announcement. Lock order: this mutex before the
// retained store's (Router), never the other way.

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "session/client_session.hpp"
#include "topic/tree.hpp"

namespace brokerha::router {

using session::ClientSession;
using session::ClientSessionPtr;

/// One local subscription in the tree.
struct SubEntry {
  const ClientSession* key;  // identity; `session` keeps it alive
  ClientSessionPtr session;
  session::SubscriptionOptions options;
};

/// A remote node's subscription: a plain filter, or membership of a shared group (the node has
/// at least one local member of "$share/g/f").
struct RemoteSub {
  std::uint32_t key;  // peer id (the cluster numbers its peers)
};

class RouteTable {
 public:
  using LocalTree = topic::SubscriptionTree<SubEntry>;
  using RemoteTree = topic::SubscriptionTree<RemoteSub>;

  /// Subscribes `session` to `full_filter` ("$share/g/f": joins group g at f). When the
  /// filter's local count goes from zero to one it is appended to `changes` (null: not
  /// recorded, as on a single node). True when it replaced the session's subscription to the
  /// same filter.
  bool subscribe(const ClientSessionPtr& session, const std::string& full_filter,
                 const session::SubscriptionOptions& options, std::vector<std::string>* changes);
  /// Removes one subscription; `changes` as for subscribe(). True when it existed.
  bool unsubscribe(const ClientSession& session, const std::string& full_filter,
                   std::vector<std::string>* changes);
  /// Removes every subscription listed in the session's state, under one lock.
  void unsubscribe_all(const ClientSession& session, std::vector<std::string>* changes);
  /// Keeps the session's subscriptions in the local tree (messages still match them) but no
  /// longer counts them for the filters this node announces; `changes` as for subscribe().
  /// Later subscribe/unsubscribe calls for the session do not count either.
  void uncount_all(ClientSession& session, std::vector<std::string>* changes);
  /// Puts `to` in the place of `from` for every filter in `to`'s state, under one lock and
  /// with the counts unchanged: a message is routed to one of them, never to both.
  void hand_over(const ClientSession& from, const ClientSessionPtr& to);

  /// True while some local session subscribes to `filter`: a plain filter counts its
  /// non-shared subscriptions, a "$share/g/f" the members of that group.
  bool local_filter_present(const std::string& filter) const;
  /// Every filter with a local subscriber: what this node announces.
  std::vector<std::string> local_filters() const;
  /// Local subscriptions.
  std::size_t size() const;

  /// Changes a peer's routes ("$share/g/f": the peer joins group g at f).
  void remote_add(std::uint32_t peer, const std::string& full_filter);
  void remote_remove(std::uint32_t peer, const std::string& full_filter);

  /// Runs `f(local, remote)` under the shared lock: how routing reads both trees at once.
  template <class F>
  decltype(auto) read(F&& f) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    return f(local_, remote_);
  }

 private:
  void note(std::string_view filter, int delta, std::vector<std::string>* changes);

  mutable std::shared_mutex mutex_;
  LocalTree local_;
  RemoteTree remote_;
  std::map<std::string, std::uint32_t, std::less<>> refs_;  // local count per announced filter
};

/// Splits "$share/{group}/{filter}" into (group, filter); other filters have no group.
std::pair<std::string_view, std::string_view> split_shared(std::string_view full);

}  // namespace brokerha::router
