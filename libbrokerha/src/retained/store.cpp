// SPDX-License-Identifier: Apache-2.0
#include "retained/store.hpp"

#include <algorithm>

#include "topic/topic.hpp"

namespace brokerha::retained {

hlc::Version Store::write(const MessagePtr& message, std::string_view node) {
  hlc::Version v{clock_.now(), std::string(node)};
  set(message->topic, message, v);
  return v;
}

bool Store::apply(const std::string& topic, const MessagePtr& message,
                  const hlc::Version& version) {
  if (!clock_.observe(version.hlc)) {
    ++refused_skew_;
    return false;
  }
  auto it = entries_.find(topic);
  if (it != entries_.end() && !version.newer_than(it->second.version)) return false;
  set(topic, message, version);
  return true;
}

void Store::set(const std::string& topic, const MessagePtr& message, const hlc::Version& version) {
  const bool deleting = !message || message->payload.empty();
  auto it = entries_.find(topic);
  const bool was_live = it != entries_.end() && it->second.message != nullptr;
  const bool dollar = !topic.empty() && topic[0] == '$';
  if (deleting) {
    if (was_live) {
      --live_;
      if (dollar) --live_dollar_;
    }
    if (tombstone_ttl_.count() == 0) {
      if (it != entries_.end()) entries_.erase(it);
      return;
    }
    Entry& e = entries_[topic];
    e.message = nullptr;
    e.version = version;
    e.deleted_at = Clock::now();
    return;
  }
  if (!was_live) {
    ++live_;
    if (dollar) ++live_dollar_;
  }
  Entry& e = entries_[topic];
  e.message = message;
  e.version = version;
}

std::vector<MessagePtr> Store::matching(std::string_view filter) const {
  std::vector<MessagePtr> out;
  if (!topic::has_wildcard(filter)) {
    auto it = entries_.find(filter);
    if (it != entries_.end() && it->second.message &&
        !it->second.message->expired(Message::Clock::now())) {
      out.push_back(it->second.message);
    }
    return out;
  }
  const auto now = Message::Clock::now();
  for (const auto& [name, e] : entries_) {
    if (e.message && !e.message->expired(now) && topic::matches(filter, name)) {
      out.push_back(e.message);
    }
  }
  return out;
}

void Store::for_each(const std::function<void(const std::string&, const Entry&)>& f) const {
  for (const auto& [name, e] : entries_) f(name, e);
}

void Store::prune(Clock::time_point now) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.message && it->second.message->expired(now)) {
      // Expired: gone for good, as if deleted at its expiry (no tombstone needed: every
      // replica expires it at the same moment).
      --live_;
      if (!it->first.empty() && it->first[0] == '$') --live_dollar_;
      it = entries_.erase(it);
    } else if (!it->second.message && now - it->second.deleted_at >= tombstone_ttl_) {
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  const std::size_t dead = entries_.size() - live_;
  if (dead <= max_tombstones_) return;
  std::vector<Clock::time_point> ages;
  ages.reserve(dead);
  for (const auto& [name, e] : entries_) {
    if (!e.message) ages.push_back(e.deleted_at);
  }
  const std::size_t drop = dead - max_tombstones_;
  std::nth_element(ages.begin(), ages.begin() + static_cast<std::ptrdiff_t>(drop - 1), ages.end());
  const Clock::time_point cutoff = ages[drop - 1];
  std::size_t dropped = 0;
  for (auto it = entries_.begin(); it != entries_.end() && dropped < drop;) {
    if (!it->second.message && it->second.deleted_at <= cutoff) {
      it = entries_.erase(it);
      ++dropped;
    } else {
      ++it;
    }
  }
}

}  // namespace brokerha::retained
