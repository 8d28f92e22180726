// SPDX-License-Identifier: Apache-2.0
#include "router/router.hpp"

#include <algorithm>

#include "topic/topic.hpp"

namespace brokerha::router {

Router::Router(Options options) : options_(std::move(options)) {
  retained_.set_tombstone_ttl(options_.tombstone_ttl);
  if (options_.max_tombstones) retained_.set_max_tombstones(*options_.max_tombstones);
  retained_.set_max_clock_skew(options_.max_clock_skew);
}

template <class Pick>
std::size_t Router::match_local(const RouteTable::LocalTree& tree, const MessagePtr& message,
                                Outbox& out, Pick&& pick) const {
  std::size_t targets = 0;
  const Message& m = *message;
  std::vector<const SubEntry*>& matches = out.matches;
  matches.clear();
  tree.match(
      m.topic, [&](const SubEntry& e) { matches.push_back(&e); },
      [&](const RouteTable::LocalTree::Group& g) {
        if (g.members.empty()) return;
        if (const SubEntry* e = pick(g)) matches.push_back(e);
      });
  if (matches.empty()) return targets;
  // One delivery per session: the highest granted QoS of its matching subscriptions, with
  // all their subscription identifiers (MQTT 5.0 3.3.4).
  if (matches.size() > 1) {
    std::stable_sort(matches.begin(), matches.end(), [](const SubEntry* a, const SubEntry* b) {
      return std::less<const ClientSession*>{}(a->key, b->key);
    });
  }
  for (std::size_t i = 0; i < matches.size();) {
    const ClientSession* key = matches[i]->key;
    std::size_t j = i;
    session::Delivery d;
    bool any = false;
    for (; j < matches.size() && matches[j]->key == key; ++j) {
      const session::SubscriptionOptions& o = matches[j]->options;
      if (o.no_local && key->state.client_id() == m.origin) continue;
      any = true;
      d.qos = std::max(d.qos, std::min(m.qos, o.qos));
      if (o.retain_as_published && m.retain) d.retain = true;
      if (o.identifier != 0) d.subscription_ids.push_back(o.identifier);
    }
    if (any) {
      d.message = message;
      out.deliveries[key->shard].push_back(Target{matches[i]->session, std::move(d)});
      ++targets;
    }
    i = j;
  }
  return targets;
}

// Shared subscriptions in a cluster (docs/cluster.md, "Shared subscriptions"): the node where
// a message is published makes the one choice per matching group (g, f). The slots are this
// node's members of the group, one each, and every other node that announced "$share/g/f",
// one each; the group's round-robin cursor picks a slot. A node picked gets the message with
// the group named in it and delivers to one of its members; no other node delivers it to
// that group.
RouteResult Router::route(const MessagePtr& message, Outbox& out) {
  using LocalGroup = RouteTable::LocalTree::Group;
  using RemoteGroup = RouteTable::RemoteTree::Group;
  const Message& m = *message;
  // `$SYS` stays on this node; retained writes go to every peer (each holds the whole
  // retained set), other messages to the peers that announced a matching filter.
  const bool clustered = options_.clustered && !topic::is_node_local(m.topic);
  std::optional<hlc::Version> version;
  if (m.retain) {
    std::lock_guard<std::mutex> lock(retained_mutex_);
    version = retained_.write(message, options_.node_name);
  }
  RouteResult result;
  std::vector<std::uint32_t>& peers = out.peers;
  std::vector<RemoteGroupMatch>& groups = out.remote_groups;
  std::vector<SharedPick> picks;  // no allocation unless a remote group is chosen
  peers.clear();
  groups.clear();
  const bool all = clustered && m.retain && peer_count.load(std::memory_order_relaxed) != 0;
  routes_.read([&](const RouteTable::LocalTree& local, const RouteTable::RemoteTree& remote) {
    if (clustered) {
      remote.match(
          m.topic,
          [&](const RemoteSub& r) {
            if (!all) peers.push_back(r.key);
          },
          [&](const RemoteGroup& g) {
            if (!g.members.empty()) groups.push_back(RemoteGroupMatch{&g, false});
          });
    }
    result.targets = match_local(local, message, out, [&](const LocalGroup& g) -> const SubEntry* {
      const RemoteGroup* paired = nullptr;
      for (RemoteGroupMatch& r : groups) {
        if (!r.paired && r.group->share == g.share) {
          r.paired = true;
          paired = r.group;
          break;
        }
      }
      const std::size_t local_n = g.members.size();
      const std::size_t slots = local_n + (paired != nullptr ? paired->members.size() : 0);
      const std::size_t n = g.next.fetch_add(1, std::memory_order_relaxed) % slots;
      if (n < local_n) return &g.members[n];
      picks.push_back(SharedPick{paired->members[n - local_n].key, g.share});
      return nullptr;
    });
    if (!clustered) return;
    for (const RemoteGroupMatch& r : groups) {
      if (r.paired) continue;  // chosen above, with the local members
      const auto& members = r.group->members;
      const std::uint32_t n = r.group->next.fetch_add(1, std::memory_order_relaxed);
      picks.push_back(SharedPick{members[n % members.size()].key, r.group->share});
    }
  });
  if (!clustered) return result;
  if (!picks.empty()) {
    std::sort(picks.begin(), picks.end(),
              [](const SharedPick& a, const SharedPick& b) { return a.peer < b.peer; });
    if (!all) {
      for (const SharedPick& p : picks) peers.push_back(p.peer);
    }
  }
  if (all || !peers.empty()) {
    if (peers.size() > 1) {
      std::sort(peers.begin(), peers.end());
      peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
    }
    RemoteSend r;
    r.message = message;
    if (m.retain) r.version = version;
    r.all = all;
    r.peers = peers;
    r.shared = std::move(picks);
    out.remote.push_back(std::move(r));
    result.remote = all ? std::size_t{peer_count.load(std::memory_order_relaxed)} : peers.size();
  }
  return result;
}

RouteResult Router::route_from_cluster(const MessagePtr& message,
                                       const std::optional<hlc::Version>& version,
                                       const std::vector<std::string>& shares, Outbox& out) {
  if (message->retain && version) {
    std::lock_guard<std::mutex> lock(retained_mutex_);
    retained_.apply(message->topic, message, *version);
  }
  RouteResult result;
  std::size_t served = 0;
  routes_.read([&](const RouteTable::LocalTree& local, const RouteTable::RemoteTree&) {
    // A group gets the message only when the publishing node chose this node for it: a
    // message forwarded for a plain subscriber (or for another group) must not reach it,
    // since the publishing node may have chosen another node or a member of its own.
    result.targets = match_local(
        local, message, out, [&](const RouteTable::LocalTree::Group& g) -> const SubEntry* {
          if (shares.empty() || std::find(shares.begin(), shares.end(), g.share) == shares.end())
            return nullptr;
          ++served;
          const std::uint32_t n = g.next_member.fetch_add(1, std::memory_order_relaxed);
          return &g.members[n % g.members.size()];
        });
  });
  // Each listed group matched at most once (a group is one entry of the tree).
  result.shared_missed = shares.size() - std::min(served, shares.size());
  return result;
}

bool Router::retained_apply(const std::string& topic, const MessagePtr& message,
                            const hlc::Version& version) {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  return retained_.apply(topic, message, version);
}

void Router::retained_for_each(
    const std::function<void(const std::string&, const retained::Store::Entry&)>& f) const {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  retained_.for_each(f);
}

std::vector<MessagePtr> Router::retained_matching(std::string_view filter) const {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  return retained_.matching(filter);
}

std::size_t Router::retained_count() const {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  return retained_.size();
}

void Router::prune_retained(retained::Store::Clock::time_point now) {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  retained_.prune(now);
}

std::uint64_t Router::retained_refused_skew() const {
  std::lock_guard<std::mutex> lock(retained_mutex_);
  return retained_.refused_skew();
}

}  // namespace brokerha::router
