// SPDX-License-Identifier: Apache-2.0
// Node, continued: the control lane (node.hpp). Runs on the control thread like the rest of
// Node.
#include <chrono>

#include "cluster/node.hpp"

namespace brokerha::cluster {

namespace {

// How often a peer with a backlog is looked at again: acknowledgements free room on the link
// at about this pace (they are coalesced for a few milliseconds).
constexpr std::chrono::milliseconds kPumpInterval{5};

// How long after a request for retained entries (or the last entries frame received) a peer's
// entries are accepted.
constexpr std::chrono::seconds kEntriesWindow{30};

}  // namespace

bool Node::send_control(const std::string& peer, Kind kind,
                        std::shared_ptr<const std::string> body) {
  Peer* p = find_peer(peer);
  if (p == nullptr) return false;
  return send_control(*p, kind, std::move(body));
}

bool Node::send_control(Peer& p, Kind kind, std::shared_ptr<const std::string> body) {
  if (body->size() > max_body_ || body->size() + 64 > options_.link_queue_bytes) {
    oversized_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (kind == Kind::snapshot_request || kind == Kind::digest || kind == Kind::bucket_request) {
    p.entries_until = std::chrono::steady_clock::now() + kEntriesWindow;  // answered by entries
  }
  p.backlog.push_back(Outgoing{static_cast<std::uint8_t>(kind), std::move(body), nullptr});
  pump(p);
  return true;
}

bool Node::entries_wanted(Peer& p) {
  const auto now = std::chrono::steady_clock::now();
  if (snapshot_peer_ != p.name && now >= p.entries_until) {
    unsolicited_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  p.entries_until = now + kEntriesWindow;
  return true;
}

void Node::send_stream(Peer& p, Outgoing::Next next) {
  p.backlog.push_back(Outgoing{0, nullptr, std::move(next)});
  pump(p);
}

void Node::pump(Peer& p) {
  const std::size_t half = options_.link_queue_bytes / 2;
  auto room = [&](std::size_t size) {
    const std::size_t queued = links_->queued_bytes(p.name);
    return queued == 0 || queued + size <= half;
  };
  while (!p.backlog.empty()) {
    Outgoing& o = p.backlog.front();
    if (o.next && !o.body) {
      // A producer: the next frame is encoded only when it can go out soon.
      if (!room(0)) break;
      std::uint8_t kind = 0;
      std::shared_ptr<const std::string> body;
      const Produced r = o.next(kind, body);
      if (r == Produced::later) break;
      if (r == Produced::done) {
        p.backlog.pop_front();
        continue;
      }
      if (body->size() > max_body_) {
        oversized_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      o.kind = kind;
      o.body = std::move(body);  // sent below, and the producer asked again after it
    }
    if (!room(o.body->size())) break;
    if (!links_->send(p.name, o.kind, o.body)) break;  // full after all: again on the timer
    if (o.next) {
      o.body.reset();
    } else {
      p.backlog.pop_front();
    }
  }
  if (!p.backlog.empty()) arm_pump();
}

void Node::arm_pump() {
  if (pump_armed_) return;
  pump_armed_ = true;
  pump_timer_.expires_after(kPumpInterval);
  pump_timer_.async_wait([this](const std::error_code& ec) {
    pump_armed_ = false;
    if (ec) return;
    for (auto& [name, p] : peers_) {
      if (!p.backlog.empty()) pump(p);
    }
  });
}

}  // namespace brokerha::cluster
