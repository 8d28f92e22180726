// SPDX-License-Identifier: Apache-2.0
// The Framer: splitting a byte stream into packets under every chunking, the partial-packet
// buffer, the maximum packet size, and errors returned by the callback.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "codec_test_util.hpp"
#include "mqtt/codec.hpp"

using namespace brokerha::mqtt;
using brokerha::ReasonCode;
using brokerha::test::hex;
using brokerha::test::split_wire;
using brokerha::test::to_hex;

namespace {

struct Frame {
  std::uint8_t first_byte;
  std::string body;
};

// A stream of mixed packets (every type, MQTT 3.1.1 and 5.0, bodies from 0 bytes to 100 KB and
// remaining lengths of 1, 2 and 3 bytes) and the frames it must produce.
struct Stream {
  std::string bytes;
  std::vector<Frame> frames;
  std::vector<std::size_t> ends;  // offset just past each packet
};

const Stream& mixed_stream() {
  static const Stream stream = [] {
    static const std::string big_payload = [] {
      std::string s(100 * 1024, '\0');
      for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(i * 31 + 7);
      return s;
    }();
    static const std::string payload_125(125, 'm');      // PUBLISH "t" QoS 0: remaining 128
    static const std::string payload_16381(16381, 'n');  // remaining 16384

    std::vector<std::pair<Packet, ProtocolVersion>> packets;
    const auto v5 = ProtocolVersion::v5;
    const auto v311 = ProtocolVersion::v311;

    Connect connect;
    connect.version = v5;
    connect.client_id = "framer-client";
    connect.properties.session_expiry_interval = 60;
    connect.username = "u";
    packets.emplace_back(connect, v5);
    Connack connack;
    connack.properties.assigned_client_identifier = "id";
    packets.emplace_back(connack, v5);
    Publish tiny;
    tiny.topic = "t";
    packets.emplace_back(tiny, v5);
    Publish big;
    big.qos = 1;
    big.packet_id = 1;
    big.topic = "big/payload";
    big.payload = big_payload;
    packets.emplace_back(big, v5);
    Puback puback;
    puback.packet_id = 1;
    packets.emplace_back(puback, v5);
    Publish rl128;
    rl128.topic = "t";
    rl128.payload = payload_125;
    packets.emplace_back(rl128, v311);
    Publish qos2;
    qos2.qos = 2;
    qos2.packet_id = 2;
    qos2.topic = "q/2";
    qos2.payload = "two";
    packets.emplace_back(qos2, v311);
    Pubrec pubrec;
    pubrec.packet_id = 2;
    packets.emplace_back(pubrec, v311);
    Pubrel pubrel;
    pubrel.packet_id = 2;
    pubrel.reason_code = ReasonCode::packet_identifier_not_found;
    packets.emplace_back(pubrel, v5);
    Pubcomp pubcomp;
    pubcomp.packet_id = 2;
    packets.emplace_back(pubcomp, v311);
    Subscribe subscribe;
    subscribe.packet_id = 3;
    subscribe.subscriptions = {Subscription{"a/+", 1, false, false, 0},
                               Subscription{"b/#", 2, true, true, 2}};
    packets.emplace_back(subscribe, v5);
    Suback suback;
    suback.packet_id = 3;
    suback.reason_codes = {ReasonCode::granted_qos_1, ReasonCode::granted_qos_2};
    packets.emplace_back(suback, v5);
    Pingreq pingreq;
    packets.emplace_back(pingreq, v311);
    Pingresp pingresp;
    packets.emplace_back(pingresp, v311);
    Publish rl16384;
    rl16384.topic = "t";
    rl16384.payload = payload_16381;
    packets.emplace_back(rl16384, v311);
    Unsubscribe unsubscribe;
    unsubscribe.packet_id = 4;
    unsubscribe.filters = {"a/+", "b/#"};
    packets.emplace_back(unsubscribe, v311);
    Unsuback unsuback;
    unsuback.packet_id = 4;
    unsuback.reason_codes = {ReasonCode::success, ReasonCode::no_subscription_existed};
    packets.emplace_back(unsuback, v5);
    Auth auth;
    auth.reason_code = ReasonCode::continue_authentication;
    auth.properties.authentication_method = "SCRAM-SHA-1";
    packets.emplace_back(auth, v5);
    packets.emplace_back(pingreq, v5);
    Publish empty_payload;
    empty_payload.qos = 1;
    empty_payload.packet_id = 5;
    empty_payload.topic = "empty";
    packets.emplace_back(empty_payload, v311);
    Connect connect311;
    connect311.version = v311;
    connect311.client_id = "";
    packets.emplace_back(connect311, v311);
    Disconnect disconnect;
    disconnect.reason_code = ReasonCode::server_shutting_down;
    disconnect.properties.reason_string = "bye";
    packets.emplace_back(disconnect, v5);
    packets.emplace_back(Disconnect{}, v311);

    Stream s;
    for (const auto& [packet, version] : packets) {
      std::string wire;
      REQUIRE(encode(packet, version, wire));
      const auto f = split_wire(wire);
      s.frames.push_back({f.first_byte, std::string(f.body)});
      s.bytes += wire;
      s.ends.push_back(s.bytes.size());
    }
    return s;
  }();
  return stream;
}

// Feeds `stream` in chunks of the sizes `next_chunk()` returns, checking every delivered frame
// and, after each feed() call, buffered() and idle() against the partial packet's size.
template <class NextChunk>
void feed_in_chunks(const Stream& stream, NextChunk next_chunk) {
  Framer framer;
  std::size_t delivered = 0;
  int frame_mismatches = 0;
  auto on_packet = [&](std::uint8_t first, std::string_view body) {
    if (delivered >= stream.frames.size() || stream.frames[delivered].first_byte != first ||
        stream.frames[delivered].body != body) {
      ++frame_mismatches;
    }
    ++delivered;
    return Status::success();
  };
  std::size_t fed = 0;
  std::size_t boundary = 0;  // index of the first packet not complete yet
  int buffer_mismatches = 0;
  std::size_t first_bad_offset = 0;
  while (fed < stream.bytes.size()) {
    const std::size_t n = std::min(next_chunk(), stream.bytes.size() - fed);
    const Status s = framer.feed(std::string_view(stream.bytes).substr(fed, n), on_packet);
    REQUIRE(s.ok());
    fed += n;
    while (boundary < stream.ends.size() && stream.ends[boundary] <= fed) ++boundary;
    const std::size_t packet_start = boundary == 0 ? 0 : stream.ends[boundary - 1];
    const std::size_t partial = fed - packet_start;
    if (framer.buffered() != partial || framer.idle() != (partial == 0) || delivered != boundary) {
      if (buffer_mismatches++ == 0) first_bad_offset = fed;
    }
  }
  CAPTURE(first_bad_offset);
  CHECK(buffer_mismatches == 0);
  CHECK(frame_mismatches == 0);
  CHECK(delivered == stream.frames.size());
  CHECK(framer.idle());
  CHECK(framer.buffered() == 0);
}

int count_frames(Framer& framer, std::string_view data, Status& status) {
  int frames = 0;
  status = framer.feed(data, [&](std::uint8_t, std::string_view) {
    ++frames;
    return Status::success();
  });
  return frames;
}

}  // namespace

TEST_CASE("framer stream of mixed packets has the expected shape") {
  const Stream& s = mixed_stream();
  CHECK(s.frames.size() >= 20);
  CHECK(s.bytes.size() > 100 * 1024 + 16384);
  std::vector<bool> seen(16, false);
  for (const Frame& f : s.frames) seen[f.first_byte >> 4] = true;
  for (int type = 1; type <= 15; ++type) {
    CAPTURE(type);
    CHECK(seen[static_cast<std::size_t>(type)]);  // every packet type is in the stream
  }
}

TEST_CASE("framer delivers the same frames for every chunking") {
  const Stream& stream = mixed_stream();
  SUBCASE("whole") {
    feed_in_chunks(stream, [&] { return stream.bytes.size(); });
  }
  SUBCASE("one byte at a time") {
    feed_in_chunks(stream, [] { return std::size_t{1}; });
  }
  SUBCASE("two bytes at a time") {
    feed_in_chunks(stream, [] { return std::size_t{2}; });
  }
  SUBCASE("three bytes at a time") {
    feed_in_chunks(stream, [] { return std::size_t{3}; });
  }
  SUBCASE("seven bytes at a time") {
    feed_in_chunks(stream, [] { return std::size_t{7}; });
  }
  SUBCASE("4096 bytes at a time") {
    feed_in_chunks(stream, [] { return std::size_t{4096}; });
  }
  SUBCASE("random chunk sizes with a fixed seed") {
    for (std::uint32_t seed : {1u, 42u, 20240601u}) {
      CAPTURE(seed);
      std::mt19937 rng(seed);
      feed_in_chunks(stream, [&rng] {
        // Mostly small chunks, sometimes large ones that hold several packets.
        const auto r = static_cast<std::uint32_t>(rng());
        return std::size_t{(r & 7u) == 0 ? 1u + r % 20000u : 1u + r % 64u};
      });
    }
  }
  SUBCASE("packet by packet") {
    std::size_t i = 0;
    std::size_t previous_end = 0;
    feed_in_chunks(stream, [&] {
      const std::size_t n = stream.ends[i] - previous_end;
      previous_end = stream.ends[i++];
      return n;
    });
  }
  SUBCASE("each packet split one byte before its end") {
    std::vector<std::size_t> cuts;
    std::size_t start = 0;
    for (std::size_t end : stream.ends) {
      const std::size_t size = end - start;
      if (size > 1) {
        cuts.push_back(size - 1);
        cuts.push_back(1);
      } else {
        cuts.push_back(size);
      }
      start = end;
    }
    std::size_t i = 0;
    feed_in_chunks(stream, [&] { return cuts[i++]; });
  }
}

TEST_CASE("framer buffered counts the partial packet") {
  Framer framer;
  Status s;
  const std::string publish = hex("30 0A 00 03 'a/b' 'hello'");
  CHECK(framer.idle());
  CHECK(framer.buffered() == 0);
  CHECK(count_frames(framer, std::string_view(publish).substr(0, 1), s) == 0);
  CHECK(s.ok());
  CHECK_FALSE(framer.idle());
  CHECK(framer.buffered() == 1);  // the first byte alone
  CHECK(count_frames(framer, std::string_view(publish).substr(1, 1), s) == 0);
  CHECK(framer.buffered() == 2);  // the whole fixed header
  CHECK(count_frames(framer, std::string_view(publish).substr(2, 5), s) == 0);
  CHECK(framer.buffered() == 7);
  framer.shrink();  // not idle: keeps the partial packet
  CHECK(framer.buffered() == 7);
  // The rest of this packet and the first byte of the next.
  CHECK(count_frames(framer, publish.substr(7) + "\xC0", s) == 1);
  CHECK(framer.buffered() == 1);
  CHECK(count_frames(framer, hex("00"), s) == 1);
  CHECK(framer.idle());
  framer.shrink();
  CHECK(count_frames(framer, publish, s) == 1);
  CHECK(framer.idle());
}

TEST_CASE("framer header split in the middle of the remaining length") {
  // Remaining length 200 = C8 01, split between the two length bytes.
  const std::string body(200, 'b');
  const std::string packet = hex("30 C8 01") + body;
  Framer framer;
  std::string got;
  auto on_packet = [&](std::uint8_t first, std::string_view b) {
    CHECK(first == 0x30);
    got = std::string(b);
    return Status::success();
  };
  REQUIRE(framer.feed(std::string_view(packet).substr(0, 2), on_packet).ok());
  CHECK(framer.buffered() == 2);
  REQUIRE(framer.feed(std::string_view(packet).substr(2, 100), on_packet).ok());
  CHECK(framer.buffered() == 102);
  REQUIRE(framer.feed(std::string_view(packet).substr(102), on_packet).ok());
  CHECK(got == body);
  CHECK(framer.idle());
}

TEST_CASE("framer maximum packet size equal to a packet is accepted and one less is refused") {
  const Stream& stream = mixed_stream();
  // The largest packet of the stream is the 100 KB PUBLISH.
  std::size_t largest = 0;
  std::size_t start = 0;
  for (std::size_t end : stream.ends) {
    largest = std::max(largest, end - start);
    start = end;
  }
  CHECK(largest > 100 * 1024);
  const auto limit = static_cast<std::uint32_t>(largest);

  Framer exact(limit);
  CHECK(exact.max_packet_size() == limit);
  Status s;
  CHECK(count_frames(exact, stream.bytes, s) == static_cast<int>(stream.frames.size()));
  CHECK(s.ok());
  CHECK(exact.idle());

  for (bool bytewise : {false, true}) {
    CAPTURE(bytewise);
    Framer smaller(limit - 1);
    int frames = 0;
    std::size_t fed = 0;
    auto on_packet = [&](std::uint8_t, std::string_view) {
      ++frames;
      return Status::success();
    };
    if (bytewise) {
      for (; fed < stream.bytes.size(); ++fed) {
        s = smaller.feed(std::string_view(stream.bytes).substr(fed, 1), on_packet);
        if (!s.ok()) break;
      }
    } else {
      s = smaller.feed(stream.bytes, on_packet);
    }
    CHECK(s.code == ReasonCode::packet_too_large);
    CHECK_FALSE(std::string_view(s.detail).empty());
    CHECK(frames == 3);  // CONNECT, CONNACK and the small PUBLISH went through
    if (bytewise) {
      // Refused at the last byte of the big PUBLISH's fixed header (4 bytes: 1 + 3).
      CHECK(fed == stream.ends[2] + 3);
    }
  }

  // set_max_packet_size() applies to the next packet.
  Framer framer;
  framer.set_max_packet_size(4);
  CHECK(framer.max_packet_size() == 4);
  CHECK(count_frames(framer, hex("C0 00 D0 00 40 02 00 01"), s) == 3);
  CHECK(s.ok());
  CHECK(count_frames(framer, hex("30 03 00 01 't'"), s) == 0);
  CHECK(s.code == ReasonCode::packet_too_large);
}

TEST_CASE("framer default maximum is the largest packet MQTT can express") {
  CHECK(kMaxRemainingLength == 268435455u);
  CHECK(kMaxPacketSize == 268435460u);
  Framer framer;
  CHECK(framer.max_packet_size() == kMaxPacketSize);
  Status s;
  CHECK(count_frames(framer, hex("30 FF FF FF 7F 00 01 't'"), s) == 0);
  CHECK(s.ok());
  CHECK(framer.buffered() == 8);
}

TEST_CASE("framer error from the callback stops the feed") {
  const std::string stream = hex("C0 00 D0 00 30 03 00 01 't' C0 00");
  static const char* const kDetail = "stop here";
  for (std::size_t split : {std::size_t{0}, std::size_t{5}, std::size_t{8}}) {
    CAPTURE(split);
    Framer framer;
    int calls = 0;
    auto on_packet = [&](std::uint8_t first, std::string_view) {
      ++calls;
      if (first == 0x30) return Status{ReasonCode::quota_exceeded, kDetail};
      return Status::success();
    };
    // Optionally feed a prefix first, so the PUBLISH completes in the slow path.
    Status s = framer.feed(std::string_view(stream).substr(0, split), on_packet);
    REQUIRE(s.ok());
    s = framer.feed(std::string_view(stream).substr(split), on_packet);
    CHECK(s.code == ReasonCode::quota_exceeded);
    CHECK(s.detail == kDetail);
    CHECK(calls == 3);  // the PINGREQ after the PUBLISH was not delivered
  }
}

TEST_CASE("framer does not buffer the announced size up front") {
  // A PUBLISH announcing 10 MiB (80 80 80 05) followed by only 10 bytes of body.
  const std::string header = hex("30 80 80 80 05");
  Framer framer;
  Status s;
  CHECK(count_frames(framer, header + std::string(10, 'x'), s) == 0);
  CHECK(s.ok());
  CHECK(framer.buffered() == header.size() + 10);
  CHECK_FALSE(framer.idle());
  // More bytes trickle in; the buffer holds exactly what arrived.
  for (int i = 0; i < 100; ++i) {
    CHECK(count_frames(framer, std::string(3, 'y'), s) == 0);
  }
  CHECK(framer.buffered() == header.size() + 10 + 300);
}

TEST_CASE("framer rejects a malformed remaining length in both paths") {
  struct Row {
    const char* name;
    const char* bytes;
  };
  const Row rows[] = {
      {"five length bytes", "30 80 80 80 80 01"},
      {"80 00", "30 80 00"},
      {"FF 80 00", "30 FF 80 00"},
      {"80 80 80 00", "30 80 80 80 00"},
  };
  for (const Row& row : rows) {
    INFO("row: " << std::string(row.name));
    const std::string bytes = hex(row.bytes) + hex("C0 00");
    Framer whole;
    Status s;
    CHECK(count_frames(whole, bytes, s) == 0);
    CHECK(s.code == ReasonCode::malformed_packet);
    Framer bytewise;
    int frames = 0;
    for (char c : bytes) {
      frames += count_frames(bytewise, std::string_view(&c, 1), s);
      if (!s.ok()) break;
    }
    CHECK(frames == 0);
    CHECK(s.code == ReasonCode::malformed_packet);
  }
  // A packet cut inside its remaining length is simply incomplete.
  Framer framer;
  Status s;
  CHECK(count_frames(framer, hex("30 80 80 80"), s) == 0);
  CHECK(s.ok());
  CHECK(framer.buffered() == 4);
}

TEST_CASE("framer empty input is a no-op") {
  Framer framer;
  Status s;
  CHECK(count_frames(framer, "", s) == 0);
  CHECK(s.ok());
  CHECK(framer.idle());
  CHECK(count_frames(framer, hex("C0"), s) == 0);
  CHECK(count_frames(framer, "", s) == 0);
  CHECK(framer.buffered() == 1);
}
