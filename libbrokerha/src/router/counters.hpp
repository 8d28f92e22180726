// SPDX-License-Identifier: Apache-2.0
#pragma once
// The broker's statistics, counted per shard: each counter has one writer (its shard's
// thread, relaxed atomics), and readers on any thread sum the shards (Broker::stats()).

#include <atomic>
#include <cstdint>

namespace brokerha::router {

struct Counters {
  std::atomic<std::uint64_t> messages_received{0};
  std::atomic<std::uint64_t> messages_sent{0};
  std::atomic<std::uint64_t> messages_dropped{0};
  std::atomic<std::uint64_t> bytes_received{0};
  std::atomic<std::uint64_t> bytes_sent{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> auth_failures{0};
  std::atomic<std::uint64_t> acl_denials{0};
  std::atomic<std::uint64_t> protocol_errors{0};
  std::atomic<std::uint64_t> keepalive_timeouts{0};
  std::atomic<std::uint64_t> stuck_consumers_closed{0};
  std::atomic<std::uint64_t> accept_errors{0};  // failed accepts (EMFILE...), each then a back-off
  std::atomic<std::uint64_t> connections_refused{0};      // over max_connections
  std::atomic<std::uint64_t> connection_rate_refused{0};  // over max_connection_rate
  std::atomic<std::uint64_t> subscriptions_refused{0};    // over max_subscriptions
  std::atomic<std::uint64_t> publish_rate_limited{0};     // over max_publish_rate
  std::atomic<std::uint64_t> session_bytes_dropped{0};    // over max_session_queued_bytes
  std::atomic<std::uint64_t> clients_connected{0};        // gauge
  std::atomic<std::uint64_t> sessions{0};                 // gauge
  std::atomic<std::uint64_t> inflight{0};                 // gauge, refreshed by the sweep
  std::atomic<std::int64_t> queued_bytes{0};              // session queues + write backlogs

  /// Adds `n` to a counter (its one writer only).
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  /// Subtracts `n` from a gauge (its one writer only).
  static void sub(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
  }
  /// Adds `delta` bytes to this shard's share of the queued-memory account.
  void account(std::int64_t delta) noexcept {
    if (delta != 0) {
      queued_bytes.store(queued_bytes.load(std::memory_order_relaxed) + delta,
                         std::memory_order_relaxed);
    }
  }
};

}  // namespace brokerha::router
