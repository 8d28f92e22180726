// SPDX-License-Identifier: Apache-2.0
#pragma once
// A published message as the broker holds it: immutable once built, shared by every
// subscriber, queue and retained entry that refers to it (MessagePtr).
//
// Encode once: encoded() serialises the PUBLISH for a (protocol family, QoS, retain) variant
// the first time a subscriber needs it and caches the bytes on the message; every later
// subscriber of that variant shares them (QoS 0 as is; QoS 1/2 copy and patch the packet id).
// A message with an expiry is not cached: each send carries the remaining interval.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mqtt/packet.hpp"

namespace brokerha::message {

/// The MQTT 5.0 properties a broker forwards with a message (section 3.3.2.3): the rest
/// (topic alias, subscription identifiers, message expiry) are per delivery.
struct ForwardedProperties {
  std::optional<std::uint8_t> payload_format_indicator;
  std::optional<std::string> content_type;
  std::optional<std::string> response_topic;
  std::optional<std::string> correlation_data;
  std::vector<std::pair<std::string, std::string>> user_properties;
};

struct Message {
  using Clock = std::chrono::steady_clock;

  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool retain = false;
  std::string origin;  // publishing client id ("" = the host program or the broker)
  ForwardedProperties properties;
  std::optional<Clock::time_point> expires_at;
  std::chrono::system_clock::time_point created = std::chrono::system_clock::now();

  Message() = default;
  /// A message created at `created` (the default constructor reads the wall clock).
  explicit Message(std::chrono::system_clock::time_point created_at) : created(created_at) {}
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  ~Message();

  /// Copies the fields of a decoded PUBLISH (and its forwarded properties). `now` starts
  /// the message expiry clock; `max_expiry` (seconds, 0 = none) caps it; `created` is the
  /// wall-clock time of its arrival.
  static std::shared_ptr<Message> from_publish(
      const mqtt::Publish& p, std::string_view topic, std::string_view origin,
      std::uint32_t max_expiry, Clock::time_point now,
      std::chrono::system_clock::time_point created = std::chrono::system_clock::now());

  bool expired(Clock::time_point now) const noexcept { return expires_at && now >= *expires_at; }

  /// The remaining expiry interval in seconds at `now` (at least 1 while not expired).
  std::optional<std::uint32_t> remaining_expiry(Clock::time_point now) const noexcept;

  /// A PUBLISH (views into this message) for one delivery. `subscription_ids` and `alias`
  /// are per subscriber (v5); `topic` may be empty when `alias` refers to an established one.
  mqtt::Publish to_publish(std::uint8_t qos, bool retain, std::uint16_t packet_id,
                           Clock::time_point now) const;

  /// The cached encoding for (version family, qos, retain), packet id 0 and DUP clear.
  /// Null when the message is not cacheable (expiry set) or cannot be encoded.
  const std::string* encoded(mqtt::ProtocolVersion version, std::uint8_t qos, bool retain) const;

 private:
  static constexpr std::size_t kVariants = 2 * 3 * 2;  // {v3, v5} x QoS x retain
  mutable std::array<std::atomic<const std::string*>, kVariants> cache_{};
};

using MessagePtr = std::shared_ptr<const Message>;

}  // namespace brokerha::message
