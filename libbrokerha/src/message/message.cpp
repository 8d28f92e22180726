// SPDX-License-Identifier: Apache-2.0
#include "message/message.hpp"

#include "mqtt/codec.hpp"

namespace brokerha::message {

Message::~Message() {
  for (auto& slot : cache_) delete slot.load(std::memory_order_relaxed);
}

std::shared_ptr<Message> Message::from_publish(const mqtt::Publish& p, std::string_view topic,
                                               std::string_view origin, std::uint32_t max_expiry,
                                               Clock::time_point now,
                                               std::chrono::system_clock::time_point created) {
  auto m = std::make_shared<Message>(created);
  m->topic.assign(topic);
  m->payload.assign(p.payload);
  m->qos = p.qos;
  m->retain = p.retain;
  m->origin.assign(origin);
  const mqtt::Properties& in = p.properties;
  ForwardedProperties& out = m->properties;
  out.payload_format_indicator = in.payload_format_indicator;
  if (in.content_type) out.content_type.emplace(*in.content_type);
  if (in.response_topic) out.response_topic.emplace(*in.response_topic);
  if (in.correlation_data) out.correlation_data.emplace(*in.correlation_data);
  out.user_properties.reserve(in.user_properties.size());
  for (const auto& u : in.user_properties) {
    out.user_properties.emplace_back(std::string(u.name), std::string(u.value));
  }
  std::optional<std::uint32_t> expiry = in.message_expiry_interval;
  if (max_expiry != 0 && (!expiry || *expiry > max_expiry)) expiry = max_expiry;
  if (expiry) m->expires_at = now + std::chrono::seconds(*expiry);
  return m;
}

std::optional<std::uint32_t> Message::remaining_expiry(Clock::time_point now) const noexcept {
  if (!expires_at) return std::nullopt;
  if (now >= *expires_at) return 1;
  const auto left = std::chrono::ceil<std::chrono::seconds>(*expires_at - now).count();
  return static_cast<std::uint32_t>(left < 1 ? 1 : left);
}

mqtt::Publish Message::to_publish(std::uint8_t delivery_qos, bool delivery_retain,
                                  std::uint16_t packet_id, Clock::time_point now) const {
  mqtt::Publish p;
  p.qos = delivery_qos;
  p.retain = delivery_retain;
  p.packet_id = delivery_qos > 0 ? packet_id : 0;
  p.topic = topic;
  p.payload = payload;
  mqtt::Properties& out = p.properties;
  out.payload_format_indicator = properties.payload_format_indicator;
  if (properties.content_type) out.content_type = *properties.content_type;
  if (properties.response_topic) out.response_topic = *properties.response_topic;
  if (properties.correlation_data) out.correlation_data = *properties.correlation_data;
  if (!properties.user_properties.empty()) {
    out.user_properties.reserve(properties.user_properties.size());
    for (const auto& u : properties.user_properties)
      out.user_properties.push_back({u.first, u.second});
  }
  out.message_expiry_interval = remaining_expiry(now);
  return p;
}

const std::string* Message::encoded(mqtt::ProtocolVersion version, std::uint8_t delivery_qos,
                                    bool delivery_retain) const {
  if (expires_at || delivery_qos > 2) return nullptr;
  const bool v5 = version == mqtt::ProtocolVersion::v5;
  const std::size_t slot = (v5 ? 6u : 0u) + delivery_qos * 2u + (delivery_retain ? 1u : 0u);
  const std::string* cached = cache_[slot].load(std::memory_order_acquire);
  if (cached != nullptr) return cached;
  auto bytes = std::make_unique<std::string>();
  // No expiry here, so the time is not read.
  const mqtt::Publish p = to_publish(delivery_qos, delivery_retain, 0, Clock::time_point{});
  if (!mqtt::encode(mqtt::Packet(p), version, *bytes)) return nullptr;
  const std::string* expected = nullptr;
  if (cache_[slot].compare_exchange_strong(expected, bytes.get(), std::memory_order_acq_rel)) {
    return bytes.release();
  }
  return expected;  // another thread cached it first; ours is freed
}

}  // namespace brokerha::message
