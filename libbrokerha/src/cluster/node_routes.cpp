// SPDX-License-Identifier: Apache-2.0
// Node, continued: the route sets peers hold of each other (routes_full, its parts and
// routes_delta) and the SUBACKs waiting for their acknowledgement. Runs on the control thread
// like the rest of Node.
#include <algorithm>

#include "cluster/node.hpp"
#include "topic/topic.hpp"

namespace brokerha::cluster {

namespace {

using SteadyClock = std::chrono::steady_clock;

std::shared_ptr<const std::string> shared(std::string s) {
  return std::make_shared<const std::string>(std::move(s));
}

}  // namespace

void Node::set_routes(Peer& p, std::set<std::string> routes) {
  for (const std::string& f : p.routes) {
    if (routes.count(f) == 0) core_.router().routes().remote_remove(p.id, f);
  }
  for (const std::string& f : routes) {
    if (p.routes.count(f) == 0) core_.router().routes().remote_add(p.id, f);
  }
  p.routes = std::move(routes);
}

void Node::apply_route_changes(std::vector<std::string>& filters, std::function<void()> done,
                               bool barrier) {
  std::sort(filters.begin(), filters.end());
  filters.erase(std::unique(filters.begin(), filters.end()), filters.end());
  std::vector<RouteChange> delta;
  for (std::string& f : filters) {
    const bool present = core_.router().routes().local_filter_present(f);
    const bool announced = announced_.count(f) != 0;
    if (present == announced) continue;
    if (present) {
      announced_.insert(f);
    } else {
      announced_.erase(f);
    }
    delta.push_back(RouteChange{present, std::move(f)});
  }
  if (barrier && delta.empty()) {
    ++route_number_;
    auto body = shared(encode_routes_delta(route_number_, {}));
    for (auto& [name, p] : peers_) {
      if (p.member || p.up || p.retained) send_control(p, Kind::routes_delta, body);
    }
  }
  // Cut into deltas of about frame_target_, each numbered (a peer acknowledges the last).
  for (std::size_t i = 0; i < delta.size();) {
    std::vector<RouteChange> part;
    std::size_t bytes = 0;
    for (; i < delta.size() && (part.empty() || bytes < frame_target_); ++i) {
      bytes += delta[i].filter.size() + 4;
      part.push_back(std::move(delta[i]));
    }
    ++route_number_;
    auto body = shared(encode_routes_delta(route_number_, part));
    for (auto& [name, p] : peers_) {
      if (p.member || p.up || p.retained) send_control(p, Kind::routes_delta, body);
    }
  }
  if (!done) return;
  RouteWaiter w;
  w.number = route_number_;
  // Every member counts, connected or not yet: a link still coming up (a node that just
  // joined) gets the delta when it connects, and the wait is bounded anyway.
  for (const auto& [name, p] : peers_) {
    if ((p.up || p.member) && p.acked_routes < route_number_) w.pending.insert(name);
  }
  if (w.pending.empty()) {
    done();
    return;
  }
  w.done = std::move(done);
  const std::uint64_t key = next_waiter_++;
  w.timer = std::make_unique<asio::steady_timer>(ctx_, options_.route_ack_timeout);
  w.timer->async_wait([this, key](const std::error_code& ec) {
    if (!ec) finish_waiter(key, true);
  });
  waiters_.emplace(key, std::move(w));
}

void Node::ack_routes(Peer& p, std::uint64_t number) {
  if (number <= p.acked_routes) return;
  p.acked_routes = number;
  std::vector<std::uint64_t> done;
  for (auto& [k, w] : waiters_) {
    if (w.number <= number) w.pending.erase(p.name);
    if (w.pending.empty()) done.push_back(k);
  }
  for (std::uint64_t k : done) finish_waiter(k, false);
}

void Node::finish_waiter(std::uint64_t key, bool timed_out) {
  auto it = waiters_.find(key);
  if (it == waiters_.end()) return;
  if (timed_out) ack_timeouts_.fetch_add(1, std::memory_order_relaxed);
  std::function<void()> done = std::move(it->second.done);
  if (it->second.timer) it->second.timer->cancel();
  waiters_.erase(it);
  if (done) done();
}

void Node::send_routes_full(Peer& p) {
  std::vector<std::string> all(announced_.begin(), announced_.end());
  std::string body = encode_routes_full(route_number_, all);
  if (body.size() <= frame_target_) {
    send_control(p, Kind::routes_full, shared(std::move(body)));
    return;
  }
  // Too large for one frame. To a peer of version 2: routes_part frames, applied together
  // with the last. To a peer of version 1: a routes_full of the first part and deltas adding
  // the rest (its view is partial until the last arrives). The version is known once the
  // peer's capabilities arrived (right after the link came up); a peer that sends none
  // within a second speaks version 1.
  struct Parts {
    std::vector<std::vector<std::string>> parts;
    std::size_t next = 0;
    std::uint64_t number = 0;
    SteadyClock::time_point deadline;
  };
  auto st = std::make_shared<Parts>();
  st->number = route_number_;
  st->deadline = SteadyClock::now() + std::chrono::seconds(1);
  std::size_t bytes = 0;
  for (std::string& f : all) {
    if (st->parts.empty() || bytes >= frame_target_) {
      st->parts.emplace_back();
      bytes = 0;
    }
    bytes += f.size() + 4;
    st->parts.back().push_back(std::move(f));
  }
  send_stream(
      p, [this, name = p.name, st](std::uint8_t& kind, std::shared_ptr<const std::string>& out) {
        if (st->next == st->parts.size()) return Produced::done;
        Peer* q = find_peer(name);
        if (q == nullptr) return Produced::done;
        if (!q->proto_known && SteadyClock::now() < st->deadline) return Produced::later;
        const bool last = st->next + 1 == st->parts.size();
        const std::uint64_t number = last ? st->number : 0;
        std::vector<std::string>& part = st->parts[st->next];
        if (q->proto >= 2) {
          kind = static_cast<std::uint8_t>(Kind::routes_part);
          out = shared(encode_routes_part(number, last, part));
        } else if (st->next == 0) {
          kind = static_cast<std::uint8_t>(Kind::routes_full);
          out = shared(encode_routes_full(number, part));
        } else {
          std::vector<RouteChange> adds;
          for (std::string& f : part) adds.push_back(RouteChange{true, std::move(f)});
          kind = static_cast<std::uint8_t>(Kind::routes_delta);
          out = shared(encode_routes_delta(number, adds));
        }
        part = {};
        ++st->next;
        return Produced::frame;
      });
}

}  // namespace brokerha::cluster
