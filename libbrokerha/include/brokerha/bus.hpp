// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha::Bus: an in-process observation tap with named channels (docs/embedding.md).
//
//   auto bus = std::make_shared<brokerha::Bus>();
//   options.bus = bus;                                       // the broker publishes into it
//   auto sub = bus->subscribe({"cluster:message_to"}, 1024);  // bounded buffer of 1024 events
//   while (auto e = sub->pop(std::chrono::seconds(1))) use(e->channel, e->data);
//
// Publishers never wait for subscribers: each subscriber has its own bounded buffer, and an
// event that finds it full is dropped for that subscriber only and counted per channel
// (dropped(), rendered as `broker_bus_dropped_total{channel=...}`). A channel that nobody
// subscribes to costs one atomic load per publish (BusChannel::active()).
//
// Delivery model: pull. There are no callbacks; a subscriber takes events from its buffer
// with pop(timeout) (blocking, on the caller's thread) or try_pop(). Event data is a JSON text
// rendered by the publisher (for the SSE stream: `event: <channel>\ndata: <data>\n\n`).
//
// Thread safety: every member function of Bus, BusChannel and BusSubscription may be called
// from any thread, concurrently with publishing. A BusSubscription is meant to be consumed by
// one thread; close() (or the destructor) from another thread wakes a blocked pop().

#include <brokerha/export.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace brokerha {

namespace detail {
struct BusChannelState;
struct BusSubscriberState;
}  // namespace detail

/// The channels the broker and the cluster use (broker-ha's names).
namespace bus_channels {
/// A copy of each message this node's clients publish, with the nodes it is sent to. Data:
/// the message JSON of docs/api.md plus `"Nodes":["name",...]` (empty on a single node).
inline constexpr std::string_view kMessageTo = "cluster:message_to";
/// A message received from a peer. Data: the message JSON plus `"Node":"<sender>"`.
inline constexpr std::string_view kMessageFrom = "cluster:message_from";
/// A member joined. Data: the JSON string `"ip:port"`.
inline constexpr std::string_view kNewMember = "cluster:new_member";
}  // namespace bus_channels

/// One event: the channel it was published on and its data (a JSON text).
struct BusEvent {
  std::string channel;
  std::string data;
};

/// A publisher's handle on one channel: cheap to copy, valid as long as it exists (it keeps
/// the channel alive, even beyond the Bus).
class BROKERHA_API BusChannel {
 public:
  BusChannel() = default;  // an inactive handle that publishes nowhere

  /// True when the channel has at least one subscriber: one relaxed atomic load. Check it
  /// before rendering an event's data.
  bool active() const noexcept;

  /// Offers `data` (a JSON text) to every current subscriber; full buffers drop and count.
  /// Never blocks on a subscriber (only on short internal locks).
  void publish(std::string data) const;

  /// The channel's name ("" for a default-constructed handle).
  const std::string& name() const noexcept;

 private:
  friend class Bus;
  explicit BusChannel(std::shared_ptr<detail::BusChannelState> state) noexcept;
  std::shared_ptr<detail::BusChannelState> state_;
};

/// A subscription to one or more channels with one bounded buffer. Destroying it (or
/// close()) unsubscribes.
class BROKERHA_API BusSubscription {
 public:
  ~BusSubscription();
  BusSubscription(const BusSubscription&) = delete;
  BusSubscription& operator=(const BusSubscription&) = delete;

  /// The oldest buffered event, waiting at most `timeout` for one. Nullopt on timeout or
  /// once closed (and drained). Runs on the calling thread.
  std::optional<BusEvent> pop(std::chrono::milliseconds timeout);
  /// The oldest buffered event, if any; never waits.
  std::optional<BusEvent> try_pop();

  /// Unsubscribes from every channel and wakes a pop() blocked on another thread.
  /// Idempotent. Buffered events can still be taken.
  void close() noexcept;
  bool closed() const noexcept;

  /// Events dropped for this subscriber because its buffer was full.
  std::uint64_t dropped() const noexcept;
  /// The buffer's capacity (events).
  std::size_t capacity() const noexcept;
  /// The channels subscribed to.
  const std::vector<std::string>& channels() const noexcept;

 private:
  friend class Bus;
  BusSubscription(std::shared_ptr<detail::BusSubscriberState> state,
                  std::vector<std::shared_ptr<detail::BusChannelState>> channels);
  std::shared_ptr<detail::BusSubscriberState> state_;
  std::vector<std::shared_ptr<detail::BusChannelState>> channels_;
  std::vector<std::string> names_;
};

/// Named channels. The three `bus_channels` exist from construction; channel() and
/// subscribe() create others on first use (channels are never removed).
class BROKERHA_API Bus {
 public:
  Bus();
  ~Bus();
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;

  /// The handle of channel `name` (created if new). Keep it: active() and publish() through
  /// a handle need no lookup.
  BusChannel channel(std::string_view name);

  /// Subscribes to `channels` with one buffer of `buffer_size` events (at least 1). Throws
  /// std::invalid_argument when `channels` is empty.
  std::unique_ptr<BusSubscription> subscribe(const std::vector<std::string>& channels,
                                             std::size_t buffer_size);
  /// As above, and the buffered event data may take at most `max_bytes` (0 = no bound): an
  /// event that does not fit is dropped and counted as one that finds the buffer full (an
  /// empty buffer takes one event of any size).
  std::unique_ptr<BusSubscription> subscribe(const std::vector<std::string>& channels,
                                             std::size_t buffer_size, std::size_t max_bytes);

  /// Publishes on channel `name` (a map lookup; prefer a BusChannel on hot paths).
  void publish(std::string_view name, std::string data);

  /// True when channel `name` exists and has a subscriber.
  bool has_subscribers(std::string_view name) const;
  /// Events dropped on channel `name` (summed over its subscribers, past and present).
  std::uint64_t dropped(std::string_view name) const;
  /// Every channel with its drop count, by name.
  std::map<std::string, std::uint64_t> dropped_by_channel() const;
  /// The names of every channel.
  std::vector<std::string> channel_names() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace brokerha
