// SPDX-License-Identifier: Apache-2.0
#include "session/session.hpp"

#include <algorithm>

namespace brokerha::session {

std::size_t Session::enqueue(Delivery d, const QueueLimits& limits, std::size_t* over_bytes) {
  std::size_t dropped = 0;
  if (queue_.size() >= limits.max_queued) {
    auto oldest_qos0 =
        std::find_if(queue_.begin(), queue_.end(), [](const Delivery& q) { return q.qos == 0; });
    if (oldest_qos0 == queue_.end()) return 1;  // all QoS 1/2: drop the new one
    queued_bytes_ -= size_of(*oldest_qos0);
    queue_.erase(oldest_qos0);
    dropped = 1;
  }
  const std::size_t size = size_of(d);
  if (limits.max_bytes != 0 && queued_bytes_ + size > limits.max_bytes) {
    // The oldest QoS 0 deliveries make room if together they can; else the new one goes.
    std::size_t qos0_bytes = 0;
    for (const Delivery& q : queue_) {
      if (q.qos == 0) qos0_bytes += size_of(q);
    }
    if (size > limits.max_bytes || queued_bytes_ - qos0_bytes + size > limits.max_bytes) {
      if (over_bytes != nullptr) ++*over_bytes;
      return dropped + 1;
    }
    for (auto it = queue_.begin(); queued_bytes_ + size > limits.max_bytes;) {
      if (it->qos != 0) {
        ++it;
        continue;
      }
      queued_bytes_ -= size_of(*it);
      it = queue_.erase(it);
      ++dropped;
      if (over_bytes != nullptr) ++*over_bytes;
    }
  }
  queued_bytes_ += size;
  queue_.push_back(std::move(d));
  return dropped;
}

bool Session::next(std::uint16_t window, LazyNow& now, Delivery& out_qos0, Inflight*& out_inflight,
                   std::size_t& expired) {
  out_inflight = nullptr;
  while (!queue_.empty()) {
    Delivery& front = queue_.front();
    if (front.message->expires_at && front.message->expired(now.get())) {
      queued_bytes_ -= size_of(front);
      queue_.pop_front();
      ++expired;
      continue;
    }
    if (front.qos != 0 && inflight_.size() >= window) return false;
    queued_bytes_ -= size_of(front);
    if (front.qos == 0) {
      out_qos0 = std::move(front);
      queue_.pop_front();
      return true;
    }
    Inflight f;
    f.packet_id = allocate_packet_id();
    f.delivery = std::move(front);
    f.sent = true;
    queue_.pop_front();
    inflight_.push_back(std::move(f));
    out_inflight = &inflight_.back();
    return true;
  }
  return false;
}

bool Session::complete(std::uint16_t packet_id, bool qos2) {
  for (auto it = inflight_.begin(); it != inflight_.end(); ++it) {
    if (it->packet_id != packet_id) continue;
    const bool matches = qos2 ? (it->delivery.qos == 2 && it->released) : (it->delivery.qos == 1);
    if (!matches) return false;
    inflight_.erase(it);
    return true;
  }
  return false;
}

bool Session::abandon(std::uint16_t packet_id) {
  for (auto it = inflight_.begin(); it != inflight_.end(); ++it) {
    if (it->packet_id == packet_id) {
      inflight_.erase(it);
      return true;
    }
  }
  return false;
}

bool Session::released(std::uint16_t packet_id) {
  for (Inflight& f : inflight_) {
    if (f.packet_id == packet_id && f.delivery.qos == 2) {
      f.released = true;
      return true;
    }
  }
  return false;
}

void Session::connection_lost() noexcept {
  for (Inflight& f : inflight_) f.sent = false;
}

std::size_t Session::drop_qos0() noexcept {
  return queue_.erase_if([this](const Delivery& d) {
    if (d.qos != 0) return false;
    queued_bytes_ -= size_of(d);
    return true;
  });
}

std::uint16_t Session::allocate_packet_id() {
  // Sequential ids, skipping any still in flight (only possible after a wrap-around).
  for (;;) {
    last_packet_id_ =
        static_cast<std::uint16_t>(last_packet_id_ == 65535 ? 1 : last_packet_id_ + 1);
    const std::uint16_t id = last_packet_id_;
    const bool in_use = std::any_of(inflight_.begin(), inflight_.end(),
                                    [id](const Inflight& f) { return f.packet_id == id; });
    if (!in_use) return id;
  }
}

void Session::merge_from(Session& other, std::vector<std::string>& added) {
  for (auto& [filter, options] : other.subscriptions_) {
    if (subscriptions_.emplace(filter, options).second) added.push_back(filter);
  }
  other.subscriptions_.clear();
  while (!other.inflight_.empty()) {
    Inflight f = std::move(other.inflight_.front());
    other.inflight_.pop_front();
    // A QoS 2 delivery past PUBREC reached the client: only its PUBCOMP is missing.
    if (f.released) continue;
    f.delivery.dup = true;
    restore_queued(std::move(f.delivery));
  }
  while (!other.queue_.empty()) {
    // Both sessions were subscribed meanwhile (two sides of a partition, a claim that went
    // ahead, a client back before its hand-off): a peer may have sent it to both. DUP, as
    // MQTT means it: may have been delivered before (never on QoS 0).
    Delivery& d = other.queue_.front();
    if (d.qos > 0) d.dup = true;
    restore_queued(std::move(d));
    other.queue_.pop_front();
  }
  other.queued_bytes_ = 0;
  for (std::uint16_t id : other.incoming_qos2_) receive_qos2(id);
  other.incoming_qos2_.clear();
}

void Session::splice_trail(std::size_t at, Session& trail) {
  if (trail.queue_.empty()) return;
  std::vector<Delivery> all;
  all.reserve(queue_.size());
  while (!queue_.empty()) {
    all.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  queued_bytes_ = 0;
  for (std::size_t i = 0; i < at && i < all.size(); ++i) restore_queued(std::move(all[i]));
  while (!trail.queue_.empty()) {
    restore_queued(std::move(trail.queue_.front()));
    trail.queue_.pop_front();
  }
  trail.queued_bytes_ = 0;
  for (std::size_t i = at; i < all.size(); ++i) {
    if (all[i].qos > 0) all[i].dup = true;  // DUP is never set on QoS 0
    restore_queued(std::move(all[i]));
  }
}

}  // namespace brokerha::session
