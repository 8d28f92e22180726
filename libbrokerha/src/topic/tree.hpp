// SPDX-License-Identifier: Apache-2.0
#pragma once
// The subscription tree: topic filters -> subscribers, matched against topic names.
//
// One node per filter level; '+' and '#' children are kept apart from the named ones so a
// match visits only the branches that can match (MQTT 5.0 section 4.7; the matching rules
// are topic::matches(), which the tests compare this against). Shared subscriptions
// ("$share/{group}/{filter}") hang off the filter's node as groups whose members the caller
// picks from (round robin via the group's counters). A group knows its full "$share/g/f" name,
// so the router can pair a group of one tree with the same group in another (the cluster's
// tree of remote routes) and recognise the groups a peer asks it to serve.
//
// Not thread-safe: the owner guards it (the broker reads it under a shared lock per publish
// and changes it under an exclusive lock per SUBSCRIBE/UNSUBSCRIBE). Match callbacks run
// inline and must not change the tree.
//
// `Sub` is the per-subscription value; it must have a `key` member that identifies the
// subscriber (one subscription per subscriber and filter/group).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace brokerha::topic {

template <class Sub>
class SubscriptionTree {
 public:
  /// The members of one shared-subscription group at one filter.
  struct Group {
    std::string share;  // "$share/{group}/{filter}"
    std::vector<Sub> members;
    mutable std::atomic<std::uint32_t> next{0};  // round-robin cursor
    // A second cursor, for choices over the members only when `next` also serves choices
    // over a larger set (the cluster picks among local members and other nodes with `next`,
    // and among local members with this one for messages another node chose it for), so
    // that interleaving the two kinds of choice does not skew either.
    mutable std::atomic<std::uint32_t> next_member{0};
  };

  /// Adds or replaces `sub` for (filter, group); `group` empty = a non-shared subscription.
  /// `filter` must be valid and without the "$share/{group}/" prefix. Returns true when it
  /// replaced an existing subscription of the same key.
  bool insert(std::string_view filter, std::string_view group, const Sub& sub) {
    Node* n = &root_;
    for_each_level(filter, [&](std::string_view level) { n = &n->child(level); });
    std::vector<Sub>* list = &n->subs;
    if (!group.empty()) {
      auto it = n->groups.find(group);
      if (it == n->groups.end()) {
        constexpr std::string_view kPrefix = "$share/";
        auto g = std::make_unique<Group>();
        g->share.reserve(kPrefix.size() + group.size() + 1 + filter.size());
        g->share.append(kPrefix).append(group).append(1, '/').append(filter);
        it = n->groups.emplace(std::string(group), std::move(g)).first;
      }
      list = &it->second->members;
    }
    for (Sub& s : *list) {
      if (s.key == sub.key) {
        s = sub;
        return true;
      }
    }
    list->push_back(sub);
    ++count_;
    return false;
  }

  /// Removes the subscription of `key` for (filter, group). Returns false if there was none.
  template <class Key>
  bool erase(std::string_view filter, std::string_view group, const Key& key) {
    std::vector<Node*> path;  // path[i] is the parent of levels[i]
    std::vector<std::string_view> levels;
    Node* n = &root_;
    bool found = true;
    for_each_level(filter, [&](std::string_view level) {
      if (!found) return;
      path.push_back(n);
      levels.push_back(level);
      n = n->find(level);
      if (n == nullptr) found = false;
    });
    if (!found) return false;
    std::vector<Sub>* list = &n->subs;
    typename decltype(Node::groups)::iterator git;
    if (!group.empty()) {
      git = n->groups.find(group);
      if (git == n->groups.end()) return false;
      list = &git->second->members;
    }
    bool erased = false;
    for (auto it = list->begin(); it != list->end(); ++it) {
      if (it->key == key) {
        list->erase(it);
        erased = true;
        break;
      }
    }
    if (!erased) return false;
    --count_;
    if (!group.empty() && list->empty()) n->groups.erase(git);
    // Prune the nodes that hold nothing any more, bottom up.
    std::size_t depth = path.size();
    while (depth > 0 && n->empty()) {
      Node* parent = path[depth - 1];
      parent->remove_child(levels[depth - 1]);
      n = parent;
      --depth;
    }
    return true;
  }

  /// Calls `on_sub(const Sub&)` for each non-shared subscription whose filter matches
  /// `topic`, and `on_group(const Group&)` for each shared group with a matching filter.
  template <class OnSub, class OnGroup>
  void match(std::string_view topic, OnSub&& on_sub, OnGroup&& on_group) const {
    const bool dollar = !topic.empty() && topic[0] == '$';
    walk(root_, topic, false, true, dollar, on_sub, on_group);
  }

  /// Number of subscriptions (shared members included).
  std::size_t size() const noexcept { return count_; }

 private:
  struct Node {
    std::map<std::string, std::unique_ptr<Node>, std::less<>> named;
    std::unique_ptr<Node> plus;
    std::unique_ptr<Node> hash;
    std::vector<Sub> subs;
    std::map<std::string, std::unique_ptr<Group>, std::less<>> groups;

    Node& child(std::string_view level) {
      if (level == "+") {
        if (!plus) plus = std::make_unique<Node>();
        return *plus;
      }
      if (level == "#") {
        if (!hash) hash = std::make_unique<Node>();
        return *hash;
      }
      auto it = named.find(level);
      if (it == named.end()) {
        it = named.emplace(std::string(level), std::make_unique<Node>()).first;
      }
      return *it->second;
    }
    Node* find(std::string_view level) const {
      if (level == "+") return plus.get();
      if (level == "#") return hash.get();
      auto it = named.find(level);
      return it == named.end() ? nullptr : it->second.get();
    }
    void remove_child(std::string_view level) {
      if (level == "+") {
        plus.reset();
      } else if (level == "#") {
        hash.reset();
      } else {
        auto it = named.find(level);
        if (it != named.end()) named.erase(it);
      }
    }
    bool empty() const { return named.empty() && !plus && !hash && subs.empty() && groups.empty(); }
  };

  template <class F>
  static void for_each_level(std::string_view s, F&& f) {
    std::size_t start = 0;
    for (;;) {
      const std::size_t end = s.find('/', start);
      if (end == std::string_view::npos) {
        f(s.substr(start));
        return;
      }
      f(s.substr(start, end - start));
      start = end + 1;
    }
  }

  template <class OnSub, class OnGroup>
  static void emit(const Node& n, OnSub& on_sub, OnGroup& on_group) {
    for (const Sub& s : n.subs) on_sub(s);
    for (const auto& g : n.groups) on_group(*g.second);
  }

  // `rest` holds the levels still to match; `done` is true once every level was consumed.
  template <class OnSub, class OnGroup>
  static void walk(const Node& n, std::string_view rest, bool done, bool first, bool dollar,
                   OnSub& on_sub, OnGroup& on_group) {
    if (done) {
      emit(n, on_sub, on_group);
      if (n.hash) emit(*n.hash, on_sub, on_group);  // "a/#" matches "a"
      return;
    }
    const std::size_t slash = rest.find('/');
    const std::string_view level = rest.substr(0, slash);
    const bool last = slash == std::string_view::npos;
    const std::string_view next = last ? std::string_view() : rest.substr(slash + 1);
    if (!n.named.empty()) {
      auto it = n.named.find(level);
      if (it != n.named.end()) walk(*it->second, next, last, false, dollar, on_sub, on_group);
    }
    if (first && dollar) return;  // '$' topics: no wildcard at the first level
    if (n.plus) walk(*n.plus, next, last, false, dollar, on_sub, on_group);
    if (n.hash) emit(*n.hash, on_sub, on_group);
  }

  Node root_;
  std::size_t count_ = 0;
};

}  // namespace brokerha::topic
