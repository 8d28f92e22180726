// SPDX-License-Identifier: Apache-2.0
// message::Message: from_publish() copies, the message expiry (cap, countdown), to_publish(),
// and the per-variant encoding cache of encoded().

#include "message/message.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "support/packet_dump.hpp"

namespace {

using namespace std::chrono_literals;
namespace mqtt = brokerha::mqtt;
using brokerha::message::Message;
using brokerha::test::dump;
using Clock = std::chrono::steady_clock;
using mqtt::ProtocolVersion;

// Splits one encoded packet and decodes it; the packet's views point into `storage`.
mqtt::Status decode_bytes(const std::string& bytes, ProtocolVersion version, std::string& storage,
                          mqtt::Packet& out) {
  mqtt::Framer framer;
  int packets = 0;
  std::uint8_t first = 0;
  mqtt::Status s = framer.feed(bytes, [&](std::uint8_t f, std::string_view body) {
    ++packets;
    first = f;
    storage.assign(body);
    return mqtt::Status::success();
  });
  REQUIRE(s.ok());
  REQUIRE(packets == 1);
  REQUIRE(framer.idle());
  return mqtt::decode(first, storage, version, out);
}

// A message with every forwarded property set.
std::shared_ptr<Message> full_message(std::optional<std::uint32_t> expiry, std::uint32_t max_expiry,
                                      Clock::time_point now) {
  const std::string topic = "sensors/t1";
  const std::string payload = "21.5";
  mqtt::Publish p;
  p.topic = "ignored/alias-form";
  p.payload = payload;
  p.qos = 2;
  p.retain = true;
  p.packet_id = 9;
  p.properties.payload_format_indicator = 1;
  p.properties.content_type = "text/plain";
  p.properties.response_topic = "reply/here";
  p.properties.correlation_data = std::string_view("\x00\x01\xFF", 3);
  p.properties.message_expiry_interval = expiry;
  p.properties.user_properties = {{"b", "1"}, {"a", "2"}, {"b", "3"}};
  return Message::from_publish(p, topic, "client-7", max_expiry, now);
}

}  // namespace

TEST_CASE("message: from_publish copies the fields and the forwarded properties") {
  std::string topic = "resolved/topic";
  std::string payload = "payload bytes";
  std::string origin = "publisher";
  std::string content_type = "application/json";
  std::string name1 = "zeta";
  std::string value1 = "1";
  mqtt::Publish p;
  p.topic = "";  // an alias-only PUBLISH: the topic comes separately
  p.payload = payload;
  p.qos = 1;
  p.retain = true;
  p.properties.content_type = content_type;
  p.properties.user_properties = {{name1, value1}, {"alpha", "2"}, {"zeta", "3"}};
  p.properties.topic_alias = 4;                    // per connection: not kept
  p.properties.subscription_identifiers = {1, 2};  // per delivery: not kept
  const auto now = Clock::now();
  auto m = Message::from_publish(p, topic, origin, 0, now);

  // Deep copies: the source buffers may go away.
  topic.assign("XXXXXXXXXXXXXX");
  payload.assign("XXXXXXXXXXXXX");
  origin.assign("XXXXXXXXX");
  content_type.assign("XXXXXXXXXXXXXXXX");
  name1.assign("XXXX");
  value1.assign("X");

  CHECK(m->topic == "resolved/topic");
  CHECK(m->payload == "payload bytes");
  CHECK(m->qos == 1);
  CHECK(m->retain);
  CHECK(m->origin == "publisher");
  CHECK(m->properties.content_type == std::optional<std::string>("application/json"));
  CHECK_FALSE(m->properties.payload_format_indicator);
  CHECK_FALSE(m->properties.response_topic);
  CHECK_FALSE(m->properties.correlation_data);
  const std::vector<std::pair<std::string, std::string>> expected_user = {
      {"zeta", "1"}, {"alpha", "2"}, {"zeta", "3"}};
  CHECK(m->properties.user_properties == expected_user);  // order and duplicates kept
  CHECK_FALSE(m->expires_at);
  CHECK_FALSE(m->expired(now + 10000h));
}

TEST_CASE("message: from_publish takes the creation time it is given") {
  mqtt::Publish p;
  p.topic = "t";
  p.payload = "x";
  const auto wall = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  auto m = Message::from_publish(p, "t", "c", 0, Clock::now(), wall);
  CHECK(m->created == wall);
  // Without one it is now.
  const auto before = std::chrono::system_clock::now();
  auto n = Message::from_publish(p, "t", "c", 0, Clock::now());
  CHECK(n->created >= before);
  CHECK(n->created <= std::chrono::system_clock::now());
}

TEST_CASE("message: from_publish copies every forwarded property") {
  const auto now = Clock::now();
  const auto m = full_message(std::nullopt, 0, now);
  CHECK(m->topic == "sensors/t1");
  CHECK(m->payload == "21.5");
  CHECK(m->qos == 2);
  CHECK(m->retain);
  CHECK(m->origin == "client-7");
  CHECK(m->properties.payload_format_indicator == std::optional<std::uint8_t>(1));
  CHECK(m->properties.content_type == std::optional<std::string>("text/plain"));
  CHECK(m->properties.response_topic == std::optional<std::string>("reply/here"));
  CHECK(m->properties.correlation_data ==
        std::optional<std::string>(std::string("\x00\x01\xFF", 3)));
  const std::vector<std::pair<std::string, std::string>> expected_user = {
      {"b", "1"}, {"a", "2"}, {"b", "3"}};
  CHECK(m->properties.user_properties == expected_user);
}

TEST_CASE("message: max_expiry caps the message expiry") {
  const auto now = Clock::now();
  struct Case {
    std::optional<std::uint32_t> requested;
    std::uint32_t max;
    std::optional<std::chrono::seconds> expected;
  };
  const std::vector<Case> cases = {
      {std::nullopt, 0, std::nullopt},               // none, no cap
      {100, 0, std::chrono::seconds(100)},           // no cap
      {100, 10, std::chrono::seconds(10)},           // capped
      {5, 10, std::chrono::seconds(5)},              // below the cap
      {10, 10, std::chrono::seconds(10)},            // at the cap
      {std::nullopt, 30, std::chrono::seconds(30)},  // no expiry: the cap applies
      {0xFFFFFFFFu, 60, std::chrono::seconds(60)},   // the largest interval, capped
      {0, 0, std::chrono::seconds(0)},               // 0: expires at once
  };
  for (const Case& c : cases) {
    CAPTURE(c.requested.value_or(12345678));
    CAPTURE(c.max);
    const auto m = full_message(c.requested, c.max, now);
    if (!c.expected) {
      CHECK_FALSE(m->expires_at);
      CHECK_FALSE(m->remaining_expiry(now));
    } else {
      REQUIRE(m->expires_at);
      CHECK(*m->expires_at == now + *c.expected);
    }
  }
}

TEST_CASE("message: remaining_expiry counts down and never reaches 0 before expiry") {
  const auto now = Clock::now();
  const auto m = full_message(10, 0, now);
  CHECK(m->remaining_expiry(now) == std::optional<std::uint32_t>(10));
  CHECK(m->remaining_expiry(now + 1ms) == std::optional<std::uint32_t>(10));  // rounds up
  CHECK(m->remaining_expiry(now + 1s) == std::optional<std::uint32_t>(9));
  CHECK(m->remaining_expiry(now + 9s) == std::optional<std::uint32_t>(1));
  CHECK(m->remaining_expiry(now + 9999ms) == std::optional<std::uint32_t>(1));
  CHECK_FALSE(m->expired(now + 9999ms));
  CHECK(m->expired(now + 10s));
  CHECK(m->expired(now + 11s));

  std::uint32_t previous = 10;
  for (auto t = now; t < now + 10s; t += 37ms) {
    const auto left = m->remaining_expiry(t);
    REQUIRE(left);
    CHECK(*left >= 1);
    CHECK(*left <= previous);
    previous = *left;
    CHECK_FALSE(m->expired(t));
  }
  CHECK(previous == 1);
}

TEST_CASE("message: to_publish builds a PUBLISH that encodes and decodes to the same fields") {
  const auto now = Clock::now();
  const auto m = full_message(60, 0, now);
  for (const ProtocolVersion version :
       {ProtocolVersion::v5, ProtocolVersion::v311, ProtocolVersion::v31}) {
    for (std::uint8_t qos = 0; qos <= 2; ++qos) {
      for (const bool retain : {false, true}) {
        CAPTURE(static_cast<int>(version));
        CAPTURE(static_cast<int>(qos));
        CAPTURE(retain);
        const mqtt::Publish p = m->to_publish(qos, retain, 4242, now + 15s);
        CHECK(p.qos == qos);
        CHECK(p.retain == retain);
        CHECK_FALSE(p.dup);
        CHECK(p.packet_id == (qos > 0 ? 4242 : 0));
        CHECK(p.topic == "sensors/t1");
        CHECK(p.payload == "21.5");
        CHECK(p.properties.message_expiry_interval == std::optional<std::uint32_t>(45));
        REQUIRE(p.properties.user_properties.size() == 3);
        CHECK(p.properties.user_properties[0].name == "b");
        CHECK(p.properties.user_properties[0].value == "1");
        CHECK(p.properties.user_properties[1].name == "a");
        CHECK(p.properties.user_properties[2].value == "3");
        CHECK(p.properties.subscription_identifiers.empty());
        CHECK_FALSE(p.properties.topic_alias);

        std::string bytes;
        REQUIRE(mqtt::encode(mqtt::Packet(p), version, bytes));
        std::string storage;
        mqtt::Packet decoded;
        const mqtt::Status s = decode_bytes(bytes, version, storage, decoded);
        INFO("decode: " << s.detail);
        REQUIRE(s.ok());
        if (version == ProtocolVersion::v5) {
          CHECK(dump(decoded) == dump(mqtt::Packet(p)));
        } else {
          // v3 has no properties: everything else survives.
          mqtt::Publish bare = p;
          bare.properties = mqtt::Properties{};
          CHECK(dump(decoded) == dump(mqtt::Packet(bare)));
        }
      }
    }
  }
}

TEST_CASE("message: to_publish of a message without expiry has no expiry interval") {
  const auto now = Clock::now();
  const auto m = full_message(std::nullopt, 0, now);
  CHECK_FALSE(m->to_publish(1, false, 1, now + 1000h).properties.message_expiry_interval);
}

TEST_CASE("message: encoded() caches one encoding per variant") {
  const auto m = full_message(std::nullopt, 0, Clock::now());
  std::set<const std::string*> distinct;
  for (const ProtocolVersion version : {ProtocolVersion::v311, ProtocolVersion::v5}) {
    for (std::uint8_t qos = 0; qos <= 2; ++qos) {
      for (const bool retain : {false, true}) {
        CAPTURE(static_cast<int>(version));
        CAPTURE(static_cast<int>(qos));
        CAPTURE(retain);
        const std::string* first = m->encoded(version, qos, retain);
        REQUIRE(first != nullptr);
        CHECK(m->encoded(version, qos, retain) == first);  // cached: the same bytes
        distinct.insert(first);

        // The cached bytes are the PUBLISH to_publish() makes, with packet id 0, DUP clear.
        std::string expected;
        REQUIRE(mqtt::encode(mqtt::Packet(m->to_publish(qos, retain, 0, Clock::now())), version,
                             expected));
        CHECK(*first == expected);
        CHECK((static_cast<std::uint8_t>((*first)[0]) & 0x08) == 0);
        CHECK(((static_cast<std::uint8_t>((*first)[0]) >> 1) & 0x03) == qos);
        CHECK(((static_cast<std::uint8_t>((*first)[0]) & 0x01) != 0) == retain);
      }
    }
  }
  CHECK(distinct.size() == 12);  // {v3, v5} x QoS x retain
  // MQTT 3.1 and 3.1.1 encode PUBLISH alike and share the v3 encodings.
  CHECK(m->encoded(ProtocolVersion::v31, 1, false) == m->encoded(ProtocolVersion::v311, 1, false));
}

TEST_CASE("message: the cached QoS 1/2 encoding has packet id 0 at publish_packet_id_offset") {
  const auto m = full_message(std::nullopt, 0, Clock::now());
  for (const ProtocolVersion version : {ProtocolVersion::v311, ProtocolVersion::v5}) {
    for (std::uint8_t qos = 1; qos <= 2; ++qos) {
      CAPTURE(static_cast<int>(version));
      CAPTURE(static_cast<int>(qos));
      const std::string* enc = m->encoded(version, qos, false);
      REQUIRE(enc != nullptr);
      const std::size_t at = mqtt::publish_packet_id_offset(*enc);
      REQUIRE(at + 1 < enc->size());
      CHECK((*enc)[at] == 0);
      CHECK((*enc)[at + 1] == 0);

      // Patched as a connection does: the packet decodes with that id and DUP set.
      std::string patched = *enc;
      patched[at] = static_cast<char>(0xAB);
      patched[at + 1] = static_cast<char>(0xCD);
      patched[0] = static_cast<char>(patched[0] | 0x08);
      std::string storage;
      mqtt::Packet decoded;
      REQUIRE(decode_bytes(patched, version, storage, decoded).ok());
      const auto* p = std::get_if<mqtt::Publish>(&decoded);
      REQUIRE(p != nullptr);
      CHECK(p->packet_id == 0xABCD);
      CHECK(p->dup);
      CHECK(p->qos == qos);
      CHECK(p->topic == "sensors/t1");
      CHECK(p->payload == "21.5");
    }
  }
}

TEST_CASE("message: encoded() is null for a message with an expiry or an invalid QoS") {
  const auto now = Clock::now();
  const auto expiring = full_message(60, 0, now);
  for (std::uint8_t qos = 0; qos <= 2; ++qos) {
    CHECK(expiring->encoded(ProtocolVersion::v5, qos, false) == nullptr);
    CHECK(expiring->encoded(ProtocolVersion::v311, qos, true) == nullptr);
  }
  const auto capped = full_message(std::nullopt, 30, now);  // the broker's cap sets an expiry
  CHECK(capped->encoded(ProtocolVersion::v5, 0, false) == nullptr);

  const auto plain = full_message(std::nullopt, 0, now);
  CHECK(plain->encoded(ProtocolVersion::v5, 3, false) == nullptr);
}

TEST_CASE("message: encoded() is null when the message cannot be encoded") {
  auto m = std::make_shared<Message>();
  m->topic = std::string(70000, 't');  // longer than an MQTT string can be
  m->payload = "x";
  CHECK(m->encoded(ProtocolVersion::v5, 0, false) == nullptr);
  CHECK(m->encoded(ProtocolVersion::v311, 1, false) == nullptr);
}

TEST_CASE("message: concurrent encoded() calls agree on one cached encoding") {
  const auto m = full_message(std::nullopt, 0, Clock::now());
  constexpr int kThreads = 8;
  std::vector<const std::string*> got(kThreads, nullptr);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }
      got[static_cast<std::size_t>(i)] = m->encoded(ProtocolVersion::v5, 1, true);
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(got[0] != nullptr);
  for (const std::string* p : got) CHECK(p == got[0]);
  CHECK(m->encoded(ProtocolVersion::v5, 1, true) == got[0]);
}
