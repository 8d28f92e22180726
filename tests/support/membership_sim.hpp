// SPDX-License-Identifier: Apache-2.0
#pragma once
// A virtual-time network for the membership protocol core: N Cores in one process, one event
// queue ordered by (time, sequence), one seeded generator. Minutes of cluster time run in
// milliseconds and a seed replays exactly.
//
// Network model: per-packet loss (UDP) and per-segment loss on streams (a lost SYN costs 1 s, a
// lost data segment 200 ms, as Linux retransmits; a stream fails when that exceeds
// tcp_timeout), latency 0.2-2 ms with a 50 ms tail on 1% of packets, partitions, crashed nodes,
// and slow nodes (every inbound message delayed by a fixed time).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "membership/core.hpp"

namespace brokerha::test {

namespace mb = brokerha::membership;
using namespace std::chrono_literals;

class MembershipSim {
 public:
  struct Event {
    mb::TimePoint at;
    std::uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  struct Seen {
    mb::TimePoint at;
    mb::MemberEvent::Kind kind;
    std::string name;
    mb::NodeState state;
  };

  struct Node : mb::CoreOutput {
    MembershipSim* sim = nullptr;
    std::size_t index = 0;
    mb::Address addr;
    std::unique_ptr<mb::Core> core;
    bool up = false;
    mb::Duration inbound_delay{0};
    mb::TimePoint wake_at = mb::TimePoint::max();
    std::vector<Seen> seen;

    void send_packet(const mb::Address& to, std::string bytes) override {
      sim->deliver_packet(index, to, std::move(bytes));
    }
    void send_stream(std::uint64_t id, const mb::Address& to, std::string bytes,
                     bool expect_reply) override {
      sim->deliver_stream(index, id, to, std::move(bytes), expect_reply);
    }
    void member_event(const mb::MemberEvent& e) override {
      seen.push_back({sim->now(), e.kind, e.member.name, e.member.state});
    }
  };

  explicit MembershipSim(std::uint64_t seed) : rng_(seed), seed_(seed) {}

  mb::TimePoint now() const { return now_; }
  double loss = 0.0;                                      // UDP packets and stream segments alike
  std::function<bool(std::size_t, std::size_t)> blocked;  // partition: true drops a->b

  // Adds a node named "n<i>" at 10.0.x.y:7946 with the given config tweaks; not started.
  Node& add(const std::function<void(mb::CoreConfig&)>& tweak = nullptr) {
    auto n = std::make_unique<Node>();
    n->sim = this;
    n->index = nodes_.size();
    const auto i = static_cast<std::uint32_t>(n->index + 1);
    n->addr = {std::string{10, 0, static_cast<char>(i >> 8), static_cast<char>(i & 0xFF)}, 7946};
    mb::CoreConfig c;
    c.name = "n" + std::to_string(n->index);
    c.advertise = n->addr;
    c.seed = seed_ * 1000003u + i;
    if (tweak) tweak(c);
    n->core = std::make_unique<mb::Core>(c, *n);
    nodes_.push_back(std::move(n));
    return *nodes_.back();
  }

  void start(std::size_t i) {
    Node& n = *nodes_[i];
    n.up = true;
    n.core->start(now_);
    wake(n);
  }
  void join(std::size_t i, std::size_t seed_node) {
    Node& n = *nodes_[i];
    n.core->join(now_, {nodes_[seed_node]->addr});
    wake(n);
  }
  void leave(std::size_t i) {
    Node& n = *nodes_[i];
    n.core->leave(now_);
    wake(n);
  }
  void crash(std::size_t i) { nodes_[i]->up = false; }

  Node& node(std::size_t i) { return *nodes_[i]; }
  std::size_t size() const { return nodes_.size(); }

  void at(mb::TimePoint t, std::function<void()> fn) {
    queue_.push({t, next_seq_++, std::move(fn)});
  }

  void run_until(mb::TimePoint end) {
    while (!queue_.empty() && queue_.top().at <= end) {
      Event e = queue_.top();
      queue_.pop();
      now_ = e.at;
      e.fn();
    }
    now_ = std::max(now_, end);
  }
  void run_for(mb::Duration d) { run_until(now_ + d); }

  // Runs until pred() holds (checked after each event) or `limit` passes; returns pred().
  bool run_until_true(const std::function<bool()>& pred, mb::Duration limit) {
    const mb::TimePoint end = now_ + limit;
    while (!pred()) {
      if (queue_.empty() || queue_.top().at > end) {
        now_ = end;
        return pred();
      }
      Event e = queue_.top();
      queue_.pop();
      now_ = e.at;
      e.fn();
    }
    return true;
  }

  std::uint64_t bytes_out() const {
    std::uint64_t b = 0;
    for (const auto& n : nodes_) b += n->core->stats().bytes_out;
    return b;
  }

 private:
  void wake(Node& n) {
    const mb::TimePoint d = n.core->next_deadline();
    if (d >= n.wake_at) return;
    n.wake_at = d;
    Node* p = &n;
    at(d, [this, p, d] {
      if (p->wake_at != d) return;
      p->wake_at = mb::TimePoint::max();
      if (!p->up) return;
      p->core->advance(now_);
      wake(*p);
    });
  }

  bool lost() { return loss > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < loss; }

  mb::Duration latency() {
    if (std::uniform_int_distribution<int>(0, 99)(rng_) == 0) return 50ms;
    return mb::Duration(std::uniform_int_distribution<std::int64_t>(200, 2000)(rng_));
  }

  Node* by_addr(const mb::Address& a) {
    for (auto& n : nodes_) {
      if (n->addr == a) return n.get();
    }
    return nullptr;
  }

  bool reachable(std::size_t from, const Node* to) const {
    return to != nullptr && to->up && nodes_[from]->up && !(blocked && blocked(from, to->index));
  }

  void deliver_packet(std::size_t from, const mb::Address& to, std::string bytes) {
    Node* dst = by_addr(to);
    if (!reachable(from, dst) || lost()) return;
    const mb::Address src = nodes_[from]->addr;
    at(now_ + latency() + dst->inbound_delay, [this, dst, src, b = std::move(bytes)] {
      if (!dst->up) return;
      dst->core->on_packet(now_, src, b);
      wake(*dst);
    });
  }

  // One request and one reply; each direction's segment may be lost and retransmitted.
  mb::Duration stream_leg(bool connect) {
    mb::Duration d = latency();
    if (connect && lost()) d += 1s;  // SYN or SYN-ACK retransmission
    while (lost()) d += 200ms;       // data segment RTO
    return d;
  }

  void deliver_stream(std::size_t from, std::uint64_t id, const mb::Address& to, std::string bytes,
                      bool expect_reply) {
    Node* src = nodes_[from].get();
    Node* dst = by_addr(to);
    const mb::Duration timeout = src->core->config().tcp_timeout;
    const mb::Duration there = stream_leg(true);
    auto fail = [this, src, id, timeout, expect_reply] {
      if (!expect_reply) return;
      at(now_ + timeout, [this, src, id] {
        if (!src->up) return;
        src->core->on_stream_reply(now_, id, std::nullopt);
        wake(*src);
      });
    };
    if (!reachable(from, dst) || there > timeout) return fail();
    const mb::Address src_addr = src->addr;
    at(now_ + there + dst->inbound_delay, [=, b = std::move(bytes)] {
      if (!dst->up || !src->up) {
        if (expect_reply && src->up) src->core->on_stream_reply(now_, id, std::nullopt);
        if (src->up) wake(*src);
        return;
      }
      std::optional<std::string> reply = dst->core->on_stream(now_, src_addr, b);
      wake(*dst);
      if (!expect_reply) return;
      const mb::Duration back = stream_leg(false);
      const bool ok = reply.has_value() && there + back <= timeout;
      at(now_ + (ok ? back : timeout - there), [=] {
        if (!src->up) return;
        src->core->on_stream_reply(now_, id, ok ? reply : std::nullopt);
        wake(*src);
      });
    });
  }

  std::mt19937_64 rng_;
  std::uint64_t seed_;
  mb::TimePoint now_{0};
  std::uint64_t next_seq_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> queue_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

}  // namespace brokerha::test
