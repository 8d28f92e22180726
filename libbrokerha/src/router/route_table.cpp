// SPDX-License-Identifier: Apache-2.0
#include "router/route_table.hpp"

#include "topic/topic.hpp"

namespace brokerha::router {

std::pair<std::string_view, std::string_view> split_shared(std::string_view full) {
  topic::SharedFilter shared;
  if (topic::parse_shared(full, shared)) return {shared.group, shared.filter};
  return {{}, full};
}

bool RouteTable::subscribe(const ClientSessionPtr& session, const std::string& full_filter,
                           const session::SubscriptionOptions& options,
                           std::vector<std::string>* changes) {
  const auto [group, filter] = split_shared(full_filter);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  const bool replaced = local_.insert(filter, group, SubEntry{session.get(), session, options});
  if (!replaced && !session->uncounted) note(full_filter, +1, changes);
  return replaced;
}

bool RouteTable::unsubscribe(const ClientSession& session, const std::string& full_filter,
                             std::vector<std::string>* changes) {
  const auto [group, filter] = split_shared(full_filter);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  const bool erased = local_.erase(filter, group, &session);
  if (erased && !session.uncounted) note(full_filter, -1, changes);
  return erased;
}

void RouteTable::unsubscribe_all(const ClientSession& session, std::vector<std::string>* changes) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  for (const auto& entry : session.state.subscriptions()) {
    const auto [group, filter] = split_shared(entry.first);
    if (local_.erase(filter, group, &session) && !session.uncounted) {
      note(entry.first, -1, changes);
    }
  }
}

void RouteTable::uncount_all(ClientSession& session, std::vector<std::string>* changes) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (session.uncounted) return;
  session.uncounted = true;
  for (const auto& entry : session.state.subscriptions()) note(entry.first, -1, changes);
}

void RouteTable::note(std::string_view filter, int delta, std::vector<std::string>* changes) {
  auto it = refs_.find(filter);
  if (delta > 0) {
    if (it == refs_.end()) {
      refs_.emplace(std::string(filter), 1u);
      if (changes != nullptr) changes->emplace_back(filter);
    } else {
      ++it->second;
    }
    return;
  }
  if (it == refs_.end()) return;
  if (--it->second == 0) {
    refs_.erase(it);
    if (changes != nullptr) changes->emplace_back(filter);
  }
}

void RouteTable::hand_over(const ClientSession& from, const ClientSessionPtr& to) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  for (const auto& [full, options] : to->state.subscriptions()) {
    const auto [group, filter] = split_shared(full);
    if (local_.erase(filter, group, &from)) {
      local_.insert(filter, group, SubEntry{to.get(), to, options});
    } else if (!local_.insert(filter, group, SubEntry{to.get(), to, options}) && !to->uncounted) {
      note(full, +1, nullptr);  // `from` did not hold it: `to` counts as a new subscriber
    }
  }
}

bool RouteTable::local_filter_present(const std::string& filter) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return refs_.find(filter) != refs_.end();
}

std::vector<std::string> RouteTable::local_filters() const {
  std::vector<std::string> out;
  std::shared_lock<std::shared_mutex> lock(mutex_);
  out.reserve(refs_.size());
  for (const auto& [f, n] : refs_) out.push_back(f);
  return out;
}

std::size_t RouteTable::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return local_.size();
}

void RouteTable::remote_add(std::uint32_t peer, const std::string& full_filter) {
  const auto [group, filter] = split_shared(full_filter);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  remote_.insert(filter, group, RemoteSub{peer});
}

void RouteTable::remote_remove(std::uint32_t peer, const std::string& full_filter) {
  const auto [group, filter] = split_shared(full_filter);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  remote_.erase(filter, group, peer);
}

}  // namespace brokerha::router
