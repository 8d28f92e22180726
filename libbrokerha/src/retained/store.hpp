// SPDX-License-Identifier: Apache-2.0
#pragma once
// The retained-message store: topic -> the newest retained message, with a version on every
// entry so that replicas can agree on the newest write (the cluster replicates it; a single
// node uses the same rules).
//
// Versions are hybrid logical clock readings (milliseconds << 16 | logical counter) plus the
// origin node's name: a write replaces an entry only if its version is newer, ties broken by
// node name. A delete leaves a tombstone (an entry without a message) for `tombstone_ttl`,
// so an older write arriving late cannot bring the message back.
//
// Not thread-safe: the owner locks it.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "message/message.hpp"
#include "util/hlc.hpp"

namespace brokerha::retained {

using message::Message;
using message::MessagePtr;

class Store {
 public:
  using Clock = std::chrono::steady_clock;

  struct Entry {
    MessagePtr message;  // null: a tombstone
    hlc::Version version;
    Clock::time_point deleted_at{};
  };

  explicit Store(std::chrono::milliseconds tombstone_ttl = std::chrono::milliseconds(0))
      : tombstone_ttl_(tombstone_ttl) {}

  /// A local write: stores `message` (empty payload: deletes) with a new version from the
  /// clock. Returns that version.
  hlc::Version write(const MessagePtr& message, std::string_view node);

  /// A replicated write: applies it only if `version` is newer than what is held. Returns
  /// true when applied. `message` null or with an empty payload deletes. A version further
  /// ahead of the wall clock than the clock's max skew is refused (not stored, counted in
  /// refused_skew()) and does not move the clock.
  bool apply(const std::string& topic, const MessagePtr& message, const hlc::Version& version);

  /// cluster.max_clock_skew: how far ahead of the wall clock a replicated version may be.
  void set_max_clock_skew(std::chrono::milliseconds skew) noexcept { clock_.set_max_skew(skew); }
  /// Replicated writes refused for a version too far in the future.
  std::uint64_t refused_skew() const noexcept { return refused_skew_; }

  /// The live messages whose topic matches `filter`.
  std::vector<MessagePtr> matching(std::string_view filter) const;

  /// Calls `f(topic, entry)` for every entry, tombstones included (for snapshots/digests).
  void for_each(const std::function<void(const std::string&, const Entry&)>& f) const;

  /// Live messages (tombstones and `$` topics such as $SYS not counted).
  std::size_t size() const noexcept { return live_ - live_dollar_; }

  /// Drops tombstones older than the TTL and messages whose expiry has passed; beyond
  /// `max_tombstones` the oldest tombstones go too.
  void prune(Clock::time_point now);

  void set_tombstone_ttl(std::chrono::milliseconds ttl) noexcept { tombstone_ttl_ = ttl; }
  void set_max_tombstones(std::size_t n) noexcept { max_tombstones_ = n; }
  std::size_t tombstones() const noexcept { return entries_.size() - live_; }

 private:
  void set(const std::string& topic, const MessagePtr& message, const hlc::Version& version);

  std::map<std::string, Entry, std::less<>> entries_;
  std::size_t live_ = 0;
  std::size_t live_dollar_ = 0;  // of live_, topics starting with '$'
  std::chrono::milliseconds tombstone_ttl_;
  std::size_t max_tombstones_ = 100000;
  hlc::Clock clock_;
  std::uint64_t refused_skew_ = 0;
};

}  // namespace brokerha::retained
