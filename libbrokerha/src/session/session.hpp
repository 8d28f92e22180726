// SPDX-License-Identifier: Apache-2.0
#pragma once
// A client session: its subscriptions, the deliveries it has in flight and queued, the QoS 2
// packet ids it has received, its will and expiry. Pure state and rules, no I/O: the
// connection that owns the session asks it what to send and tells it what was acknowledged,
// so the QoS and queue logic is tested without sockets.
//
// Thread: a session belongs to one shard (I/O thread), chosen by its client id; only that
// thread touches it.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "message/message.hpp"
#include "mqtt/packet.hpp"
#include "util/ring.hpp"

namespace brokerha::session {

using message::MessagePtr;

/// Options of one subscription (SUBSCRIBE), kept per filter.
struct SubscriptionOptions {
  std::uint8_t qos = 0;
  bool no_local = false;
  bool retain_as_published = false;
  std::uint8_t retain_handling = 0;
  std::uint32_t identifier = 0;  // 0 = none
};

/// One message to one session.
struct Delivery {
  MessagePtr message;
  std::uint8_t qos = 0;  // the granted QoS: min(message, subscription)
  bool retain = false;   // the RETAIN flag to send
  bool dup = false;      // it may have reached the client before (from a merged session): DUP
  std::vector<std::uint32_t> subscription_ids;
};

/// A QoS 1/2 delivery sent and not yet completely acknowledged.
struct Inflight {
  std::uint16_t packet_id = 0;
  Delivery delivery;
  bool released = false;  // QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP
  bool sent = false;      // sent on the current connection (false after a reconnect)
};

/// The current time, read on first use (or fixed): most deliveries carry no expiry, and a
/// clock read per delivery is measurable on the hot path.
class LazyNow {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  LazyNow() = default;
  explicit LazyNow(time_point fixed) : t_(fixed), read_(true) {}
  time_point get() {
    if (!read_) {
      t_ = std::chrono::steady_clock::now();
      read_ = true;
    }
    return t_;
  }

 private:
  time_point t_{};
  bool read_ = false;
};

struct QueueLimits {
  std::size_t max_queued = 1000;  // deliveries queued beyond in flight
  std::uint64_t max_bytes = 0;    // bytes (size_of) queued beyond in flight; 0 = unlimited
};

class Session {
 public:
  explicit Session(std::string client_id) : client_id_(std::move(client_id)) {}

  const std::string& client_id() const noexcept { return client_id_; }

  // ---- subscriptions (full filter as subscribed, "$share/..." included) ----
  std::map<std::string, SubscriptionOptions>& subscriptions() noexcept { return subscriptions_; }
  const std::map<std::string, SubscriptionOptions>& subscriptions() const noexcept {
    return subscriptions_;
  }

  // ---- outgoing deliveries ----

  /// Queues a delivery. When the queue is full (max_queued), drops the oldest QoS 0 delivery,
  /// else the new one. When it would hold more than max_bytes, drops the oldest QoS 0
  /// deliveries until the new one fits, else the new one. Returns the number of deliveries
  /// dropped; those dropped for max_bytes are also added to `*over_bytes`.
  std::size_t enqueue(Delivery d, const QueueLimits& limits, std::size_t* over_bytes = nullptr);

  /// Takes the next queued delivery that may be sent now: a QoS 0 one, or a QoS 1/2 one
  /// while fewer than `window` are in flight (it then gets a packet id and is recorded as in
  /// flight and sent). Expired messages are skipped and counted in `expired`. Returns false
  /// when nothing can be sent.
  bool next(std::uint16_t window, LazyNow& now, Delivery& out_qos0, Inflight*& out_inflight,
            std::size_t& expired);
  bool next(std::uint16_t window, std::chrono::steady_clock::time_point now, Delivery& out_qos0,
            Inflight*& out_inflight, std::size_t& expired) {
    LazyNow fixed(now);
    return next(window, fixed, out_qos0, out_inflight, expired);
  }

  /// PUBACK (QoS 1) and PUBCOMP (QoS 2, after PUBREL): completes a delivery.
  bool complete(std::uint16_t packet_id, bool qos2);
  /// Forgets an in-flight delivery (refused by the client, or impossible to send).
  bool abandon(std::uint16_t packet_id);
  /// PUBREC: the QoS 2 delivery moves to the release phase. False if unknown.
  bool released(std::uint16_t packet_id);

  /// The deliveries in flight, oldest first (resent on reconnect: PUBLISH with DUP, or PUBREL).
  util::Ring<Inflight>& inflight() noexcept { return inflight_; }
  const util::Ring<Inflight>& inflight() const noexcept { return inflight_; }
  std::size_t queued() const noexcept { return queue_.size(); }
  /// Bytes of the messages queued (topic + payload), for the broker's global memory bound.
  std::size_t queued_bytes() const noexcept { return queued_bytes_; }
  const util::Ring<Delivery>& queue() const noexcept { return queue_; }

  /// Gives the arrays of empty queues back (called for idle sessions by the sweep).
  void shrink_if_empty() noexcept {
    queue_.shrink_to_fit();
    inflight_.shrink_to_fit();
  }

  /// Marks every in-flight delivery as not sent (the connection went away).
  void connection_lost() noexcept;

  /// Drops every queued QoS 0 delivery (an offline session keeps only QoS 1/2).
  std::size_t drop_qos0() noexcept;
  /// Drops the queued deliveries `drop(delivery)` says to; returns how many.
  template <class Pred>
  std::size_t drop_queued_if(Pred&& drop) {
    return queue_.erase_if([&](const Delivery& d) {
      if (!drop(d)) return false;
      queued_bytes_ -= size_of(d);
      return true;
    });
  }

  /// Takes in what `other` (the same client's session from another node, older) holds:
  /// the subscriptions this one lacks (their filters appended to `added`), its in-flight
  /// deliveries not yet acknowledged (queued again with DUP: the client may have them), its
  /// queued deliveries (after this one's, with DUP too: both sessions were subscribed, so the
  /// same message may have reached this one), and its incoming QoS 2 packet ids. `other` is
  /// left empty.
  void merge_from(Session& other, std::vector<std::string>& added);
  /// Takes in the queue of `trail` (what this session's old node received for it after the
  /// session left) after the first `at` queued deliveries, which came with the session:
  /// before the deliveries queued here since, which are marked DUP (the trail may hold the
  /// same messages). `trail` is left empty.
  void splice_trail(std::size_t at, Session& trail);

  // ---- restoring an imported session (session/export.hpp) ----
  void restore_inflight(Inflight f) { inflight_.push_back(std::move(f)); }
  void restore_queued(Delivery d) {
    queued_bytes_ += size_of(d);
    queue_.push_back(std::move(d));
  }
  std::uint16_t last_packet_id() const noexcept { return last_packet_id_; }
  void set_last_packet_id(std::uint16_t id) noexcept { last_packet_id_ = id; }
  const std::vector<std::uint16_t>& incoming_qos2_ids() const noexcept { return incoming_qos2_; }

  // ---- incoming QoS 2 ----
  /// Records a received QoS 2 packet id. False if it was already recorded (a duplicate).
  bool receive_qos2(std::uint16_t packet_id) {
    auto it = std::lower_bound(incoming_qos2_.begin(), incoming_qos2_.end(), packet_id);
    if (it != incoming_qos2_.end() && *it == packet_id) return false;
    incoming_qos2_.insert(it, packet_id);
    return true;
  }
  bool has_qos2(std::uint16_t packet_id) const {
    return std::binary_search(incoming_qos2_.begin(), incoming_qos2_.end(), packet_id);
  }
  /// PUBREL: forgets the packet id. False if it was not known.
  bool release_qos2(std::uint16_t packet_id) {
    auto it = std::lower_bound(incoming_qos2_.begin(), incoming_qos2_.end(), packet_id);
    if (it == incoming_qos2_.end() || *it != packet_id) return false;
    incoming_qos2_.erase(it);
    if (incoming_qos2_.empty()) incoming_qos2_.shrink_to_fit();
    return true;
  }
  std::size_t incoming_qos2() const noexcept { return incoming_qos2_.size(); }

 private:
  std::uint16_t allocate_packet_id();
  static std::size_t size_of(const Delivery& d) noexcept {
    return d.message->topic.size() + d.message->payload.size();
  }

  std::string client_id_;
  std::map<std::string, SubscriptionOptions> subscriptions_;
  util::Ring<Delivery> queue_;
  util::Ring<Inflight> inflight_;
  // QoS 2 packet ids received and not yet released, sorted: at most receive_maximum (1024
  // by default), usually a handful; a sorted vector is 24 bytes where a hash set is 56.
  std::vector<std::uint16_t> incoming_qos2_;
  std::uint16_t last_packet_id_ = 0;
  std::size_t queued_bytes_ = 0;
};

}  // namespace brokerha::session
