// SPDX-License-Identifier: Apache-2.0
// brokerha::Bus: bounded buffers, per-channel drop counts, the idle-channel fast path, and
// subscribe/unsubscribe while several threads publish (run it under TSan too). Also the
// message JSON renderer the bus events use.

#include <brokerha/bus.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bus/message_json.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::Bus;
namespace channels = brokerha::bus_channels;

}  // namespace

TEST_CASE("bus: the broker-ha channels exist and are idle") {
  Bus bus;
  const auto names = bus.channel_names();
  CHECK(names == std::vector<std::string>{"cluster:message_from", "cluster:message_to",
                                          "cluster:new_member"});
  CHECK_FALSE(bus.has_subscribers(channels::kMessageTo));
  CHECK_FALSE(bus.channel(channels::kMessageTo).active());
  CHECK_FALSE(brokerha::BusChannel().active());
  brokerha::BusChannel().publish("{}");    // a default handle publishes nowhere
  bus.publish(channels::kMessageTo, "1");  // nobody listens: nothing counted
  CHECK(bus.dropped(channels::kMessageTo) == 0);
  CHECK(bus.dropped("no such channel") == 0);
}

TEST_CASE("bus: events arrive in order with their channel") {
  Bus bus;
  auto ch = bus.channel(channels::kNewMember);
  auto sub = bus.subscribe({std::string(channels::kNewMember), "custom"}, 10);
  CHECK(ch.active());
  CHECK(bus.has_subscribers("custom"));
  ch.publish("\"10.0.0.1:7946\"");
  bus.publish("custom", "2");
  auto a = sub->pop(1s);
  REQUIRE(a);
  CHECK(a->channel == "cluster:new_member");
  CHECK(a->data == "\"10.0.0.1:7946\"");
  auto b = sub->try_pop();
  REQUIRE(b);
  CHECK(b->channel == "custom");
  CHECK(b->data == "2");
  CHECK_FALSE(sub->try_pop());
  CHECK_FALSE(sub->pop(20ms));  // bounded wait, nothing there
  CHECK(sub->channels().size() == 2);
  CHECK(sub->capacity() == 10);
}

TEST_CASE("bus: a full buffer drops for that subscriber only and counts per channel") {
  Bus bus;
  auto small = bus.subscribe({std::string(channels::kMessageTo)}, 2);
  auto large = bus.subscribe({std::string(channels::kMessageTo)}, 100);
  for (int i = 0; i < 5; ++i) bus.publish(channels::kMessageTo, std::to_string(i));
  CHECK(small->dropped() == 3);
  CHECK(large->dropped() == 0);
  CHECK(bus.dropped(channels::kMessageTo) == 3);
  CHECK(bus.dropped(channels::kNewMember) == 0);
  CHECK(bus.dropped_by_channel().at("cluster:message_to") == 3);
  // The oldest events are kept; later ones are the ones dropped.
  CHECK(small->try_pop()->data == "0");
  CHECK(small->try_pop()->data == "1");
  CHECK_FALSE(small->try_pop());
  int n = 0;
  while (large->try_pop()) ++n;
  CHECK(n == 5);
  // Drops stay counted after the subscriber is gone.
  small.reset();
  CHECK(bus.dropped(channels::kMessageTo) == 3);
}

// An SSE stream's buffer is bounded in bytes as well as events: large events from a busy
// broker cannot make one slow reader hold channel_size of them.
TEST_CASE("bus: a buffer bounded in bytes drops what does not fit and frees what is taken") {
  Bus bus;
  auto sub = bus.subscribe({std::string(channels::kMessageTo)}, 1000, 1000);
  const std::string event(300, 'e');
  for (int i = 0; i < 10; ++i) bus.publish(channels::kMessageTo, event);
  CHECK(sub->dropped() == 7);  // 3 x 300 bytes fit in 1000
  CHECK(bus.dropped(channels::kMessageTo) == 7);
  REQUIRE(sub->try_pop());
  bus.publish(channels::kMessageTo, event);  // the taken event made room for one more
  CHECK(sub->dropped() == 7);
  bus.publish(channels::kMessageTo, event);
  CHECK(sub->dropped() == 8);
  int n = 0;
  while (sub->try_pop()) ++n;
  CHECK(n == 3);
  // An empty buffer takes one event of any size, and then nothing more.
  bus.publish(channels::kMessageTo, std::string(5000, 'x'));
  bus.publish(channels::kMessageTo, "y");
  CHECK(sub->dropped() == 9);
  CHECK(sub->try_pop()->data.size() == 5000);
  // 0 = bounded by events alone.
  auto events_only = bus.subscribe({std::string(channels::kNewMember)}, 3, 0);
  for (int i = 0; i < 3; ++i) bus.publish(channels::kNewMember, std::string(100000, 'z'));
  CHECK(events_only->dropped() == 0);
}

TEST_CASE("bus: close unsubscribes and wakes a blocked pop") {
  Bus bus;
  auto sub = bus.subscribe({"x"}, 4);
  CHECK(bus.has_subscribers("x"));
  std::atomic<bool> woke{false};
  std::thread t([&] {
    auto e = sub->pop(10s);
    CHECK_FALSE(e);
    woke = true;
  });
  std::this_thread::sleep_for(20ms);
  sub->close();
  t.join();
  CHECK(woke);
  CHECK(sub->closed());
  CHECK_FALSE(bus.has_subscribers("x"));
  bus.publish("x", "late");
  CHECK_FALSE(sub->try_pop());
  sub->close();  // idempotent
}

TEST_CASE("bus: subscribing with no channel throws") {
  Bus bus;
  CHECK_THROWS_AS(bus.subscribe({}, 10), std::invalid_argument);
}

TEST_CASE("bus: subscribe and unsubscribe while several threads publish") {
  Bus bus;
  auto ch = bus.channel(channels::kMessageTo);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> published{0};
  std::vector<std::thread> publishers;
  for (int p = 0; p < 3; ++p) {
    publishers.emplace_back([&, p] {
      std::uint64_t n = 0;
      while (!stop.load()) {
        if (ch.active()) ch.publish("{\"p\":" + std::to_string(p) + "}");
        bus.publish(channels::kNewMember, "\"x\"");
        ++n;
      }
      published += n;
    });
  }
  std::atomic<std::uint64_t> received{0};
  std::vector<std::thread> subscribers;
  for (int s = 0; s < 3; ++s) {
    subscribers.emplace_back([&] {
      const auto deadline = std::chrono::steady_clock::now() + 300ms;
      while (std::chrono::steady_clock::now() < deadline) {
        auto sub = bus.subscribe(
            {std::string(channels::kMessageTo), std::string(channels::kNewMember)}, 8);
        for (int i = 0; i < 20; ++i) {
          if (sub->pop(1ms)) ++received;
        }
        // Destroyed here: unsubscribes while the publishers keep going.
      }
    });
  }
  for (auto& t : subscribers) t.join();
  CHECK_FALSE(ch.active());
  stop = true;
  for (auto& t : publishers) t.join();
  CHECK(published.load() > 0);
  CHECK(received.load() > 0);
  CHECK(bus.dropped(channels::kMessageTo) + bus.dropped(channels::kNewMember) > 0);
}

TEST_CASE("bus: a handle outlives its bus") {
  brokerha::BusChannel ch;
  std::unique_ptr<brokerha::BusSubscription> sub;
  {
    Bus bus;
    ch = bus.channel("c");
    sub = bus.subscribe({"c"}, 1);
  }
  ch.publish("1");
  CHECK(sub->try_pop()->data == "1");
  CHECK(ch.name() == "c");
}

TEST_CASE("bus: message JSON in the broker-ha shape") {
  namespace bus = brokerha::bus;
  std::string s;
  bus::append_json_string(s, std::string("a\"\\\n\x01", 5));
  CHECK(s == "\"a\\\"\\\\\\n\\u0001\"");

  std::vector<std::pair<std::string, std::string>> user{{"k1", "v1"}};
  bus::MessageView m;
  m.topic = "a/b";
  m.payload = "hi";
  m.qos = 1;
  m.retain = true;
  m.packet_id = 7;
  m.created = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  m.origin = "c1";
  m.protocol_version = 5;
  m.content_type = "text/plain";
  m.user_properties = &user;
  std::string out;
  bus::append_message_json(out, m, ",\"Nodes\":[]");
  CHECK(out ==
        "{\"TopicName\":\"a/b\",\"Payload\":\"aGk=\",\"FixedHeader\":{\"qos\":1,\"retain\":true,"
        "\"dup\":false},\"PacketID\":7,\"Created\":1700000000,\"Expiry\":0,\"Origin\":\"c1\","
        "\"ProtocolVersion\":5,\"Properties\":{\"ContentType\":\"text/plain\",\"User\":[{\"k\":"
        "\"k1\",\"v\":\"v1\"}]},\"Nodes\":[]}");
}
