// SPDX-License-Identifier: Apache-2.0
// The protocol core's formulas, checked against memberlist's own tables (state_test.go
// Dogpile cases, util.go), and white-box precedence and refutation cases.

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include "membership/core.hpp"
#include "membership/wire.hpp"

namespace mb = brokerha::membership;
using namespace std::chrono_literals;

namespace {

struct Capture : mb::CoreOutput {
  std::vector<std::pair<mb::Address, std::string>> packets;
  std::vector<mb::MemberEvent> events;
  void send_packet(const mb::Address& to, std::string bytes) override {
    packets.emplace_back(to, std::move(bytes));
  }
  void send_stream(std::uint64_t, const mb::Address&, std::string, bool) override {}
  void member_event(const mb::MemberEvent& e) override { events.push_back(e); }
};

mb::Address addr(int i) { return {std::string{10, 0, 0, static_cast<char>(i)}, 7946}; }

mb::CoreConfig config_me() {
  mb::CoreConfig c;
  c.name = "me";
  c.advertise = addr(1);
  return c;
}

std::string vsn() { return std::string("\1\5\2\0\0\0", 6); }

}  // namespace

TEST_CASE("membership core suspicion timeouts match memberlist") {
  using mb::Core;
  // broker-ha knobs: probe 500 ms, mult 3.
  CHECK(Core::suspicion_timeout(3, 3, 500ms) == 1500ms);
  CHECK(Core::suspicion_timeout(3, 10, 500ms) == 1500ms);
  CHECK(Core::suspicion_timeout(3, 100, 500ms) == 3000ms);
  CHECK(Core::suspicion_timeout(3, 32, 500ms) == mb::Duration(2257500));  // 1505 * 3 * 500 / 1000
  // Dogpile table: interval 100 ms, mult 5, max mult 2; min 500 ms, max 1000 ms, k 3.
  const mb::Duration min = 500ms;
  const mb::Duration max = 1000ms;
  CHECK(Core::remaining_suspicion_time(0, 3, 0ms, min, max) == 1000ms);
  CHECK(Core::remaining_suspicion_time(1, 3, 0ms, min, max) == 750ms);
  CHECK(Core::remaining_suspicion_time(2, 3, 0ms, min, max) == 603ms);
  CHECK(Core::remaining_suspicion_time(3, 3, 0ms, min, max) == 500ms);
  CHECK(Core::remaining_suspicion_time(4, 3, 0ms, min, max) == 500ms);
  CHECK(Core::remaining_suspicion_time(1, 3, 200ms, min, max) == 550ms);
  CHECK(Core::retransmit_limit(2, 3) == 2);
  CHECK(Core::retransmit_limit(2, 9) == 2);
  CHECK(Core::retransmit_limit(2, 10) == 4);
  CHECK(Core::retransmit_limit(4, 100) == 12);
  CHECK(Core::push_pull_scale(15s, 32) == 15s);
  CHECK(Core::push_pull_scale(15s, 33) == 30s);
  CHECK(Core::push_pull_scale(15s, 64) == 30s);
  CHECK(Core::push_pull_scale(15s, 1000) == 90s);
}

TEST_CASE("membership core precedence refutation and left versus dead") {
  Capture out;
  mb::Core core(config_me(), out);
  core.start(0us);
  REQUIRE(core.find("me") != nullptr);
  CHECK(core.self().incarnation == 1);

  auto feed = [&](const std::string& msg) {
    core.on_packet(1ms, addr(9), mb::encode_packet(core.config().codec, msg, false));
  };
  feed(mb::encode(mb::Alive{3, "b", addr(2).ip, 7946, "", vsn()}));
  REQUIRE(core.find("b") != nullptr);
  CHECK(core.find("b")->state == mb::NodeState::alive);
  CHECK(out.events.back().kind == mb::MemberEvent::Kind::join);
  // Same incarnation: ignored. Lower suspect: ignored.
  feed(mb::encode(mb::Alive{3, "b", addr(2).ip, 7946, "changed", vsn()}));
  CHECK(core.find("b")->meta.empty());
  feed(mb::encode_suspect({2, "b", "x"}));
  CHECK(core.find("b")->state == mb::NodeState::alive);
  // Suspect at the same incarnation applies; a higher alive clears it.
  feed(mb::encode_suspect({3, "b", "x"}));
  CHECK(core.find("b")->state == mb::NodeState::suspect);
  feed(mb::encode(mb::Alive{4, "b", addr(2).ip, 7946, "m", vsn()}));
  CHECK(core.find("b")->state == mb::NodeState::alive);
  CHECK(out.events.back().kind == mb::MemberEvent::Kind::update);
  // Conflicting address for a live name is refused.
  feed(mb::encode(mb::Alive{9, "b", addr(3).ip, 7946, "m", vsn()}));
  CHECK(core.find("b")->addr == addr(2));
  CHECK(core.stats().conflicts == 1);
  // Dead from another node: Dead; the same name may not move address until reclaimable.
  feed(mb::encode_dead({4, "b", "x"}));
  CHECK(core.find("b")->state == mb::NodeState::dead);
  CHECK(out.events.back().kind == mb::MemberEvent::Kind::leave);
  // A node that left may come back at a new address.
  feed(mb::encode(mb::Alive{1, "c", addr(4).ip, 7946, "", vsn()}));
  feed(mb::encode_dead({1, "c", "c"}));
  CHECK(core.find("c")->state == mb::NodeState::left);
  feed(mb::encode(mb::Alive{2, "c", addr(5).ip, 7946, "", vsn()}));
  CHECK(core.find("c")->state == mb::NodeState::alive);
  CHECK(core.find("c")->addr == addr(5));

  // Accusations about ourselves are refuted with a higher incarnation and cost health.
  feed(mb::encode_suspect({1, "me", "b"}));
  CHECK(core.self().state == mb::NodeState::alive);
  CHECK(core.self().incarnation == 2);
  CHECK(core.health_score() == 1);
  feed(mb::encode_dead({7, "me", "b"}));
  CHECK(core.self().state == mb::NodeState::alive);
  CHECK(core.self().incarnation == 8);
  CHECK(core.stats().refutes == 2);
}

TEST_CASE("membership core answers pings addressed to it only") {
  Capture out;
  mb::Core core(config_me(), out);
  core.start(0us);
  out.packets.clear();
  core.on_packet(1ms, addr(2), mb::encode(mb::Ping{5, "other", "", 0, ""}));
  CHECK(out.packets.empty());
  CHECK(core.stats().dropped_wrong_node == 1);
  core.on_packet(1ms, addr(2), mb::encode(mb::Ping{6, "me", addr(3).ip, 7000, "src"}));
  REQUIRE(out.packets.size() == 1);
  CHECK(out.packets[0].first == mb::Address{addr(3).ip, 7000});
  std::string msg;
  REQUIRE(mb::decode_packet(core.config().codec, out.packets[0].second, msg) ==
          mb::DecodeStatus::ok);
  // The ack may carry our own alive piggybacked in a compound.
  CHECK((static_cast<mb::MsgType>(msg[0]) == mb::MsgType::ack ||
         static_cast<mb::MsgType>(msg[0]) == mb::MsgType::compound));
  // Garbage is counted, never fatal.
  core.on_packet(2ms, addr(2), std::string("\x07\x09", 2));
  core.on_packet(2ms, addr(2), std::string("\xff\x01\x02", 3));
  CHECK(core.stats().dropped_malformed >= 2);
}

TEST_CASE("membership core takes a compressed stream message as it decompresses") {
  // Found by tests/fuzz/membership_fuzz.cpp (an oracle that assumed otherwise, no crash): what
  // a compressed stream message decompresses to is handed on as it is, as memberlist does: it
  // may be no stream message at all, or carry bytes after the message. The core drops the
  // first (counted) and answers the second, ignoring the tail.
  Capture out;
  mb::Core core(config_me(), out);
  core.start(0us);
  const mb::CodecConfig& c = core.config().codec;

  const std::string dead = mb::encode_dead({1, "b", "c"});
  const std::string z1 = mb::compress_message(dead);
  std::string msg;
  std::size_t used = 0;
  REQUIRE(mb::decode_stream(c, z1, msg, used) == mb::DecodeStatus::ok);
  CHECK(msg == dead);
  CHECK(used == z1.size());
  bool more = false;
  CHECK(mb::stream_message_length(msg, more, c.max_stream) == 0);  // not a stream message
  const auto malformed = core.stats().dropped_malformed;
  CHECK_FALSE(core.on_stream(1ms, addr(2), z1).has_value());
  CHECK(core.stats().dropped_malformed == malformed + 1);

  const std::string ping = mb::encode(mb::Ping{7, "me", "", 0, ""});
  const std::string z2 = mb::compress_message(ping + "trailing bytes");
  REQUIRE(mb::decode_stream(c, z2, msg, used) == mb::DecodeStatus::ok);
  CHECK(msg == ping + "trailing bytes");
  CHECK(mb::stream_message_length(msg, more, c.max_stream) == ping.size());
  const auto reply = core.on_stream(2ms, addr(2), z2);
  REQUIRE(reply.has_value());
  REQUIRE(mb::decode_stream(c, *reply, msg, used) == mb::DecodeStatus::ok);
  REQUIRE(static_cast<mb::MsgType>(msg[0]) == mb::MsgType::ack);
  mb::Ack ack;
  REQUIRE(mb::decode(std::string_view(msg).substr(1), ack));
  CHECK(ack.seq_no == 7);
  CHECK(core.stats().dropped_malformed == malformed + 1);
}
