// SPDX-License-Identifier: Apache-2.0
// Decoding byte sequences written out by hand from the MQTT 3.1, 3.1.1 and 5.0 specifications
// (fixed header, variable header and payload layouts of each packet), and re-encoding them.

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "codec_test_util.hpp"
#include "mqtt/codec.hpp"

using namespace brokerha::mqtt;
using namespace std::string_view_literals;
using brokerha::ReasonCode;
using brokerha::test::hex;
using brokerha::test::show;
using brokerha::test::split_wire;
using brokerha::test::to_hex;

namespace {

constexpr auto v31 = ProtocolVersion::v31;
constexpr auto v311 = ProtocolVersion::v311;
constexpr auto v5 = ProtocolVersion::v5;

// Decodes one packet written in hex, which the test keeps alive (the packet points into it).
// The Framer must deliver exactly that packet, and decoding must succeed.
template <class T>
const T& decode_as(const std::string& wire, ProtocolVersion version, Packet& out) {
  int frames = 0;
  Framer framer;
  const Status fs = framer.feed(wire, [&](std::uint8_t, std::string_view) {
    ++frames;
    return Status::success();
  });
  REQUIRE(fs.ok());
  REQUIRE(frames == 1);
  const Status s = brokerha::test::decode_wire(wire, version, out);
  INFO("decode: " << show(s.code) << " " << std::string(s.detail));
  REQUIRE(s.ok());
  REQUIRE(std::holds_alternative<T>(out));
  return std::get<T>(out);
}

// Encoding the decoded packet again gives the same bytes.
void check_reencodes(const Packet& p, ProtocolVersion version, const std::string& wire) {
  std::string again;
  REQUIRE(encode(p, version, again));
  CHECK(to_hex(again) == to_hex(wire));
}

}  // namespace

// ---- CONNECT ------------------------------------------------------------------------------

TEST_CASE("spec bytes MQTT 3.1 CONNECT with protocol name MQIsdp level 3") {
  // MQTT V3.1 section 3.1: protocol name "MQIsdp", version 3, clean session, keep alive 60.
  const std::string wire =
      hex("10 15"                         // CONNECT, remaining length 21
          "00 06 4D 51 49 73 64 70"       // "MQIsdp"
          "03"                            // protocol version 3
          "02"                            // flags: clean session
          "00 3C"                         // keep alive 60 s
          "00 07 6D 6F 73 71 70 75 62");  // client id "mosqpub"
  Packet out;
  const Connect& c = decode_as<Connect>(wire, v5, out);  // CONNECT ignores the version given
  CHECK(c.version == v31);
  CHECK(c.clean_start);
  CHECK(c.keep_alive == 60);
  CHECK(c.client_id == "mosqpub");
  CHECK_FALSE(c.will.has_value());
  CHECK_FALSE(c.username.has_value());
  CHECK_FALSE(c.password.has_value());
  check_reencodes(out, v31, wire);
}

TEST_CASE("spec bytes MQTT 3.1.1 CONNECT with will user name and password") {
  // MQTT 3.1.1 section 3.1.2.10 example: protocol name, level 4, flags 0xCE (user name,
  // password, will QoS 1, will flag, clean session), keep alive 10.
  const std::string wire =
      hex("10 23"
          "00 04 4D 51 54 54"  // "MQTT"
          "04"                 // level 4
          "CE"                 // 1100 1110
          "00 0A"              // keep alive 10
          "00 02 63 31"        // client id "c1"
          "00 03 77 2F 74"     // will topic "w/t"
          "00 03 62 79 65"     // will message "bye"
          "00 04 75 73 65 72"  // user name "user"
          "00 03 01 02 FF");   // password, binary
  Packet out;
  const Connect& c = decode_as<Connect>(wire, v311, out);
  CHECK(c.version == v311);
  CHECK(c.clean_start);
  CHECK(c.keep_alive == 10);
  CHECK(c.client_id == "c1");
  REQUIRE(c.will.has_value());
  CHECK(c.will->topic == "w/t");
  CHECK(c.will->payload == "bye");
  CHECK(c.will->qos == 1);
  CHECK_FALSE(c.will->retain);
  REQUIRE(c.username.has_value());
  CHECK(*c.username == "user");
  REQUIRE(c.password.has_value());
  CHECK(*c.password == "\x01\x02\xFF"sv);
  check_reencodes(out, v311, wire);
}

TEST_CASE("spec bytes MQTT 3.1.1 CONNECT with will retain QoS 2 and a zero-length client id") {
  const std::string wire =
      hex("10 11"
          "00 04 4D 51 54 54 04"
          "34"        // 0011 0100: will retain, will QoS 2, will flag, clean session 0
          "FF FF"     // keep alive 65535
          "00 00"     // zero-length client id
          "00 01 74"  // will topic "t"
          "00 00");   // empty will message
  Packet out;
  const Connect& c = decode_as<Connect>(wire, v311, out);
  CHECK_FALSE(c.clean_start);
  CHECK(c.keep_alive == 65535);
  CHECK(c.client_id.empty());
  REQUIRE(c.will.has_value());
  CHECK(c.will->qos == 2);
  CHECK(c.will->retain);
  CHECK(c.will->topic == "t");
  CHECK(c.will->payload.empty());
  check_reencodes(out, v311, wire);
}

TEST_CASE("spec bytes MQTT 5 CONNECT with properties") {
  // MQTT 5.0 section 3.1.2.11 layout: properties follow the keep alive.
  const std::string wire =
      hex("10 23"
          "00 04 4D 51 54 54"     // "MQTT"
          "05"                    // level 5
          "C2"                    // user name, password, clean start
          "00 0A"                 // keep alive 10
          "0F"                    // property length 15
          "11 00 00 00 0A"        // session expiry interval 10
          "21 00 14"              // receive maximum 20
          "26 00 01 6B 00 01 76"  // user property k=v
          "00 01 63"              // client id "c"
          "00 01 75"              // user name "u"
          "00 01 70");            // password "p"
  Packet out;
  const Connect& c = decode_as<Connect>(wire, v311, out);
  CHECK(c.version == v5);
  CHECK(c.clean_start);
  CHECK(c.keep_alive == 10);
  CHECK(c.properties.session_expiry_interval == 10u);
  CHECK(c.properties.receive_maximum == std::uint16_t{20});
  REQUIRE(c.properties.user_properties.size() == 1);
  CHECK(c.properties.user_properties[0].name == "k");
  CHECK(c.properties.user_properties[0].value == "v");
  CHECK_FALSE(c.properties.maximum_packet_size.has_value());
  CHECK(c.client_id == "c");
  CHECK(c.username == std::optional<std::string_view>("u"));
  CHECK(c.password == std::optional<std::string_view>("p"));
  CHECK_FALSE(c.will.has_value());
  check_reencodes(out, v5, wire);
}

TEST_CASE("spec bytes MQTT 5 CONNECT with will properties") {
  // MQTT 5.0 section 3.1.3.2: will properties precede the will topic.
  const std::string wire =
      hex("10 1D"
          "00 04 4D 51 54 54 05"
          "0E"              // will QoS 1, will flag, clean start
          "00 00"           // keep alive 0
          "00"              // no CONNECT properties
          "00 01 63"        // client id "c"
          "07"              // will property length 7
          "01 01"           // payload format indicator: UTF-8
          "18 00 00 00 05"  // will delay interval 5
          "00 01 74"        // will topic "t"
          "00 02 68 69");   // will payload "hi"
  Packet out;
  const Connect& c = decode_as<Connect>(wire, v5, out);
  REQUIRE(c.will.has_value());
  CHECK(c.will->qos == 1);
  CHECK(c.will->properties.will_delay_interval == 5u);
  CHECK(c.will->properties.payload_format_indicator == std::uint8_t{1});
  CHECK(c.will->topic == "t");
  CHECK(c.will->payload == "hi");
  CHECK_FALSE(c.properties.will_delay_interval.has_value());  // not a CONNECT property
  check_reencodes(out, v5, wire);
}

TEST_CASE("spec bytes MQTT 5 CONNECT with a password and no user name") {
  // MQTT 5.0 section 3.1.2.9 allows a password without a user name (3.1.1 does not).
  const std::string wire = hex("10 11 00 04 4D 51 54 54 05 42 00 00 00 00 00 00 02 70 77");
  Packet out;
  const Connect& c = decode_as<Connect>(wire, v5, out);
  CHECK_FALSE(c.username.has_value());
  CHECK(c.password == std::optional<std::string_view>("pw"));
  check_reencodes(out, v5, wire);
}

// ---- CONNACK ------------------------------------------------------------------------------

TEST_CASE("spec bytes MQTT 3 CONNACK") {
  SUBCASE("accepted") {
    const std::string wire = hex("20 02 00 00");
    Packet out;
    const Connack& c = decode_as<Connack>(wire, v311, out);
    CHECK_FALSE(c.session_present);
    CHECK(c.code == 0);
    check_reencodes(out, v311, wire);
  }
  SUBCASE("session present") {
    const std::string wire = hex("20 02 01 00");
    Packet out;
    const Connack& c = decode_as<Connack>(wire, v311, out);
    CHECK(c.session_present);
    CHECK(c.code == 0);
    check_reencodes(out, v311, wire);
  }
  SUBCASE("not authorized") {
    const std::string wire = hex("20 02 00 05");
    Packet out;
    const Connack& c = decode_as<Connack>(wire, v311, out);
    CHECK(c.code == static_cast<std::uint8_t>(ConnackReturnCode::not_authorized));
    check_reencodes(out, v311, wire);
  }
  SUBCASE("MQTT 3.1 ignores the reserved first byte") {
    const std::string wire = hex("20 02 FF 01");
    Packet out;
    const Connack& c = decode_as<Connack>(wire, v31, out);
    CHECK_FALSE(c.session_present);
    CHECK(c.code == static_cast<std::uint8_t>(ConnackReturnCode::unacceptable_protocol_version));
  }
}

TEST_CASE("spec bytes MQTT 5 CONNACK") {
  SUBCASE("minimal") {
    const std::string wire = hex("20 03 00 00 00");
    Packet out;
    const Connack& c = decode_as<Connack>(wire, v5, out);
    CHECK_FALSE(c.session_present);
    CHECK(c.code == 0);
    check_reencodes(out, v5, wire);
  }
  SUBCASE("session present with properties") {
    const std::string wire =
        hex("20 0F 01 00"
            "0C"              // property length 12
            "24 01"           // maximum QoS 1
            "25 00"           // retain available 0
            "13 00 3C"        // server keep alive 60
            "12 00 02 61 62"  // assigned client identifier "ab"
        );
    Packet out;
    const Connack& c = decode_as<Connack>(wire, v5, out);
    CHECK(c.session_present);
    CHECK(c.properties.maximum_qos == std::uint8_t{1});
    CHECK(c.properties.retain_available == std::uint8_t{0});
    CHECK(c.properties.server_keep_alive == std::uint16_t{60});
    CHECK(c.properties.assigned_client_identifier == std::optional<std::string_view>("ab"));
    // The encoder writes properties in its own (identifier) order; decode that too.
    std::string again;
    REQUIRE(encode(out, v5, again));
    CHECK(to_hex(again) == "20 0F 01 00 0C 12 00 02 61 62 13 00 3C 24 01 25 00");
  }
  SUBCASE("not authorized") {
    const std::string wire = hex("20 03 00 87 00");
    Packet out;
    const Connack& c = decode_as<Connack>(wire, v5, out);
    CHECK(c.code == 0x87);
    check_reencodes(out, v5, wire);
  }
  SUBCASE("every reason code MQTT 5 allows in CONNACK") {
    // MQTT 5.0 section 3.2.2.2.
    for (int code : {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
                     0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}) {
      CAPTURE(code);
      std::string wire = hex("20 03 00 00 00");
      wire[3] = static_cast<char>(code);
      Packet out;
      CHECK(decode_as<Connack>(wire, v5, out).code == code);
    }
  }
}

// ---- PUBLISH ------------------------------------------------------------------------------

TEST_CASE("spec bytes PUBLISH QoS 0 1 and 2") {
  SUBCASE("QoS 0") {
    const std::string wire = hex("30 0A 00 03 61 2F 62 68 65 6C 6C 6F");
    Packet out;
    const Publish& p = decode_as<Publish>(wire, v311, out);
    CHECK(p.qos == 0);
    CHECK_FALSE(p.dup);
    CHECK_FALSE(p.retain);
    CHECK(p.topic == "a/b");
    CHECK(p.packet_id == 0);
    CHECK(p.payload == "hello");
    check_reencodes(out, v311, wire);
  }
  SUBCASE("QoS 1") {
    const std::string wire = hex("32 0C 00 03 61 2F 62 00 0A 68 65 6C 6C 6F");
    Packet out;
    const Publish& p = decode_as<Publish>(wire, v31, out);
    CHECK(p.qos == 1);
    CHECK(p.packet_id == 10);
    CHECK(p.payload == "hello");
    check_reencodes(out, v31, wire);
  }
  SUBCASE("QoS 2 with DUP and RETAIN") {
    const std::string wire = hex("3D 0C 00 03 61 2F 62 12 34 68 65 6C 6C 6F");
    Packet out;
    const Publish& p = decode_as<Publish>(wire, v311, out);
    CHECK(p.qos == 2);
    CHECK(p.dup);
    CHECK(p.retain);
    CHECK(p.packet_id == 0x1234);
    check_reencodes(out, v311, wire);
  }
  SUBCASE("MQTT 5 QoS 1 with properties") {
    const std::string wire =
        hex("32 1B 00 03 61 2F 62 00 0A"
            "11"                    // property length 17
            "01 01"                 // payload format indicator 1
            "02 00 00 00 3C"        // message expiry interval 60
            "23 00 05"              // topic alias 5
            "03 00 04 74 65 78 74"  // content type "text"
            "68 69");               // payload "hi"
    Packet out;
    const Publish& p = decode_as<Publish>(wire, v5, out);
    CHECK(p.qos == 1);
    CHECK(p.packet_id == 10);
    CHECK(p.properties.payload_format_indicator == std::uint8_t{1});
    CHECK(p.properties.message_expiry_interval == 60u);
    CHECK(p.properties.topic_alias == std::uint16_t{5});
    CHECK(p.properties.content_type == std::optional<std::string_view>("text"));
    CHECK(p.payload == "hi");
  }
  SUBCASE("MQTT 5 empty topic with a topic alias") {
    const std::string wire = hex("30 07 00 00 03 23 00 05 68");
    Packet out;
    const Publish& p = decode_as<Publish>(wire, v5, out);
    CHECK(p.topic.empty());
    CHECK(p.properties.topic_alias == std::uint16_t{5});
    CHECK(p.payload == "h");
    check_reencodes(out, v5, wire);
  }
  SUBCASE("MQTT 5 subscription identifiers as variable byte integers") {
    const std::string wire = hex("30 0E 00 01 74 0A 0B 80 01 0B FF FF FF 7F 0B 01");
    Packet out;
    const Publish& p = decode_as<Publish>(wire, v5, out);
    CHECK(p.properties.subscription_identifiers == std::vector<std::uint32_t>{128, 268435455, 1});
    CHECK(p.payload.empty());
    check_reencodes(out, v5, wire);
  }
  SUBCASE("MQTT 5 UTF-8 payload with U+0000 is valid") {
    // The payload format indicator allows any well-formed UTF-8, NUL included.
    const std::string wire = hex("30 09 00 01 74 02 01 01 00 C3 A9");
    Packet out;
    const Publish& p = decode_as<Publish>(wire, v5, out);
    CHECK(p.payload == "\x00\xC3\xA9"sv);
  }
}

// ---- Publish acknowledgements -------------------------------------------------------------

TEST_CASE("spec bytes PUBACK PUBREC PUBREL and PUBCOMP in both forms") {
  struct Row {
    const char* name;
    ProtocolVersion version;
    const char* wire;
    PacketType type;
    std::uint16_t packet_id;
    ReasonCode code;
    const char* reencoded;  // encode(decode(wire)): the shortest form
  };
  const Row rows[] = {
      {"PUBACK v3", v311, "40 02 00 01", PacketType::puback, 1, ReasonCode::success, "40 02 00 01"},
      {"PUBREC v3", v311, "50 02 12 34", PacketType::pubrec, 0x1234, ReasonCode::success,
       "50 02 12 34"},
      {"PUBREL v3", v311, "62 02 00 07", PacketType::pubrel, 7, ReasonCode::success, "62 02 00 07"},
      {"PUBCOMP v3", v31, "70 02 FF FF", PacketType::pubcomp, 0xFFFF, ReasonCode::success,
       "70 02 FF FF"},
      {"PUBACK v5 short", v5, "40 02 00 01", PacketType::puback, 1, ReasonCode::success,
       "40 02 00 01"},
      {"PUBACK v5 rc only", v5, "40 03 00 01 10", PacketType::puback, 1,
       ReasonCode::no_matching_subscribers, "40 03 00 01 10"},
      {"PUBREC v5 rc only", v5, "50 03 12 34 97", PacketType::pubrec, 0x1234,
       ReasonCode::quota_exceeded, "50 03 12 34 97"},
      {"PUBREL v5 rc only", v5, "62 03 00 07 92", PacketType::pubrel, 7,
       ReasonCode::packet_identifier_not_found, "62 03 00 07 92"},
      {"PUBCOMP v5 rc and empty properties", v5, "70 04 00 07 92 00", PacketType::pubcomp, 7,
       ReasonCode::packet_identifier_not_found, "70 03 00 07 92"},
      {"PUBACK v5 rc 0 and empty properties", v5, "40 04 00 01 00 00", PacketType::puback, 1,
       ReasonCode::success, "40 02 00 01"},
      {"PUBREC v5 rc 0 only", v5, "50 03 00 01 00", PacketType::pubrec, 1, ReasonCode::success,
       "50 02 00 01"},
  };
  for (const Row& row : rows) {
    INFO("row: " << std::string(row.name));
    const std::string wire = hex(row.wire);
    Packet out;
    const Status s = brokerha::test::decode_wire(wire, row.version, out);
    REQUIRE(s.ok());
    REQUIRE(packet_type(out) == row.type);
    std::visit(
        [&](const auto& p) {
          using T = std::decay_t<decltype(p)>;
          if constexpr (std::is_same_v<T, Puback> || std::is_same_v<T, Pubrec> ||
                        std::is_same_v<T, Pubrel> || std::is_same_v<T, Pubcomp>) {
            CHECK(p.packet_id == row.packet_id);
            CHECK(p.reason_code == row.code);
            CHECK(p.properties.user_properties.empty());
            CHECK_FALSE(p.properties.reason_string.has_value());
          }
        },
        out);
    std::string again;
    REQUIRE(encode(out, row.version, again));
    CHECK(to_hex(again) == row.reencoded);
  }
  SUBCASE("PUBACK v5 with a reason string") {
    const std::string wire = hex("40 0A 00 01 80 06 1F 00 03 62 61 64");
    Packet out;
    const Puback& a = decode_as<Puback>(wire, v5, out);
    CHECK(a.reason_code == ReasonCode::unspecified_error);
    CHECK(a.properties.reason_string == std::optional<std::string_view>("bad"));
    check_reencodes(out, v5, wire);
  }
}

// ---- SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK -----------------------------------------

TEST_CASE("spec bytes SUBSCRIBE with subscription options") {
  SUBCASE("MQTT 3.1.1 requested QoS") {
    const std::string wire = hex("82 0E 00 01 00 03 61 2F 62 01 00 03 63 2F 23 02");
    Packet out;
    const Subscribe& s = decode_as<Subscribe>(wire, v311, out);
    CHECK(s.packet_id == 1);
    REQUIRE(s.subscriptions.size() == 2);
    CHECK(s.subscriptions[0].filter == "a/b");
    CHECK(s.subscriptions[0].qos == 1);
    CHECK(s.subscriptions[1].filter == "c/#");
    CHECK(s.subscriptions[1].qos == 2);
    CHECK_FALSE(s.subscriptions[1].no_local);
    check_reencodes(out, v311, wire);
  }
  SUBCASE("MQTT 5 no local retain as published retain handling") {
    const std::string wire =
        hex("82 21 00 02"
            "09"                    // property length 9
            "0B 05"                 // subscription identifier 5
            "26 00 01 6B 00 01 76"  // user property k=v
            "00 01 61 2D"           // "a": RH 2, RAP, no local, QoS 1 (0010 1101)
            "00 01 62 1A"           // "b": RH 1, RAP, QoS 2 (0001 1010)
            "00 0A 24 73 68 61 72 65 2F 67 2F 63 00");  // "$share/g/c": QoS 0
    Packet out;
    const Subscribe& s = decode_as<Subscribe>(wire, v5, out);
    CHECK(s.packet_id == 2);
    CHECK(s.properties.subscription_identifiers == std::vector<std::uint32_t>{5});
    REQUIRE(s.subscriptions.size() == 3);
    const Subscription& a = s.subscriptions[0];
    CHECK(a.filter == "a");
    CHECK(a.qos == 1);
    CHECK(a.no_local);
    CHECK(a.retain_as_published);
    CHECK(a.retain_handling == 2);
    const Subscription& b = s.subscriptions[1];
    CHECK(b.qos == 2);
    CHECK_FALSE(b.no_local);
    CHECK(b.retain_as_published);
    CHECK(b.retain_handling == 1);
    const Subscription& c = s.subscriptions[2];
    CHECK(c.filter == "$share/g/c");
    CHECK(c.qos == 0);
    CHECK_FALSE(c.no_local);
    CHECK_FALSE(c.retain_as_published);
    CHECK(c.retain_handling == 0);
    check_reencodes(out, v5, wire);
  }
}

TEST_CASE("spec bytes SUBACK") {
  SUBCASE("MQTT 3.1.1 return codes") {
    const std::string wire = hex("90 05 00 01 00 01 80");
    Packet out;
    const Suback& s = decode_as<Suback>(wire, v311, out);
    CHECK(s.packet_id == 1);
    CHECK(s.reason_codes == std::vector<ReasonCode>{ReasonCode::success, ReasonCode::granted_qos_1,
                                                    ReasonCode::unspecified_error});
    check_reencodes(out, v311, wire);
  }
  SUBCASE("MQTT 5 reason codes") {
    const std::string wire = hex("90 07 00 02 00 01 02 8F A2");
    Packet out;
    const Suback& s = decode_as<Suback>(wire, v5, out);
    CHECK(s.packet_id == 2);
    CHECK(s.reason_codes ==
          std::vector<ReasonCode>{ReasonCode::granted_qos_1, ReasonCode::granted_qos_2,
                                  ReasonCode::topic_filter_invalid,
                                  ReasonCode::wildcard_subscriptions_not_supported});
    check_reencodes(out, v5, wire);
  }
}

TEST_CASE("spec bytes UNSUBSCRIBE and UNSUBACK") {
  SUBCASE("UNSUBSCRIBE MQTT 3.1.1") {
    const std::string wire = hex("A2 0C 00 03 00 03 61 2F 62 00 03 63 2F 23");
    Packet out;
    const Unsubscribe& u = decode_as<Unsubscribe>(wire, v311, out);
    CHECK(u.packet_id == 3);
    CHECK(u.filters == std::vector<std::string_view>{"a/b", "c/#"});
    check_reencodes(out, v311, wire);
  }
  SUBCASE("UNSUBSCRIBE MQTT 5") {
    const std::string wire = hex("A2 08 00 03 00 00 03 61 2F 62");
    Packet out;
    const Unsubscribe& u = decode_as<Unsubscribe>(wire, v5, out);
    CHECK(u.filters == std::vector<std::string_view>{"a/b"});
    check_reencodes(out, v5, wire);
  }
  SUBCASE("UNSUBACK MQTT 3 has two bytes") {
    const std::string wire = hex("B0 02 00 03");
    for (ProtocolVersion v : {v31, v311}) {
      Packet out;
      const Unsuback& u = decode_as<Unsuback>(wire, v, out);
      CHECK(u.packet_id == 3);
      CHECK(u.reason_codes.empty());
      check_reencodes(out, v, wire);
    }
  }
  SUBCASE("UNSUBACK MQTT 5") {
    const std::string wire = hex("B0 05 00 03 00 00 11");
    Packet out;
    const Unsuback& u = decode_as<Unsuback>(wire, v5, out);
    CHECK(u.packet_id == 3);
    CHECK(u.reason_codes ==
          std::vector<ReasonCode>{ReasonCode::success, ReasonCode::no_subscription_existed});
    check_reencodes(out, v5, wire);
  }
}

// ---- PINGREQ / PINGRESP / DISCONNECT / AUTH -----------------------------------------------

TEST_CASE("spec bytes PINGREQ C0 00 and PINGRESP D0 00") {
  for (ProtocolVersion v : {v31, v311, v5}) {
    Packet out;
    decode_as<Pingreq>(hex("C0 00"), v, out);
    check_reencodes(out, v, hex("C0 00"));
    decode_as<Pingresp>(hex("D0 00"), v, out);
    check_reencodes(out, v, hex("D0 00"));
  }
}

TEST_CASE("spec bytes DISCONNECT") {
  SUBCASE("MQTT 3 E0 00") {
    for (ProtocolVersion v : {v31, v311}) {
      Packet out;
      const Disconnect& d = decode_as<Disconnect>(hex("E0 00"), v, out);
      CHECK(d.reason_code == ReasonCode::success);
    }
  }
  SUBCASE("MQTT 5 empty body is normal disconnection") {
    Packet out;
    const Disconnect& d = decode_as<Disconnect>(hex("E0 00"), v5, out);
    CHECK(d.reason_code == ReasonCode::success);
    CHECK(d.properties.user_properties.empty());
  }
  SUBCASE("MQTT 5 reason code only") {
    const std::string wire = hex("E0 01 8E");
    Packet out;
    const Disconnect& d = decode_as<Disconnect>(wire, v5, out);
    CHECK(d.reason_code == ReasonCode::session_taken_over);
    check_reencodes(out, v5, wire);
  }
  SUBCASE("MQTT 5 reason code and properties") {
    const std::string wire =
        hex("E0 0C 04"
            "0A"                // property length 10
            "11 00 00 00 00"    // session expiry interval 0
            "1F 00 02 62 79");  // reason string "by"
    Packet out;
    const Disconnect& d = decode_as<Disconnect>(wire, v5, out);
    CHECK(d.reason_code == ReasonCode::disconnect_with_will);
    CHECK(d.properties.session_expiry_interval == 0u);
    CHECK(d.properties.reason_string == std::optional<std::string_view>("by"));
    check_reencodes(out, v5, wire);
  }
}

TEST_CASE("spec bytes AUTH") {
  SUBCASE("empty body") {
    Packet out;
    const Auth& a = decode_as<Auth>(hex("F0 00"), v5, out);
    CHECK(a.reason_code == ReasonCode::success);
  }
  SUBCASE("continue authentication with method and data") {
    const std::string wire =
        hex("F0 0F 18"
            "0D"                       // property length 13
            "15 00 05 53 43 52 41 4D"  // authentication method "SCRAM"
            "16 00 02 01 02");         // authentication data 01 02
    Packet out;
    const Auth& a = decode_as<Auth>(wire, v5, out);
    CHECK(a.reason_code == ReasonCode::continue_authentication);
    CHECK(a.properties.authentication_method == std::optional<std::string_view>("SCRAM"));
    CHECK(a.properties.authentication_data == std::optional<std::string_view>("\x01\x02"sv));
    check_reencodes(out, v5, wire);
  }
}

// ---- Variable byte integer table (MQTT 5.0 section 1.5.5, 3.1.1 section 2.2.3) -------------

TEST_CASE("spec bytes variable byte integer table through the Framer") {
  struct Row {
    std::uint32_t value;
    const char* bytes;
  };
  const Row rows[] = {
      {0, "00"},
      {127, "7F"},
      {128, "80 01"},
      {16383, "FF 7F"},
      {16384, "80 80 01"},
      {2097151, "FF FF 7F"},
      {2097152, "80 80 80 01"},
      {268435455, "FF FF FF 7F"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.value);
    const std::string header = hex("30") + hex(row.bytes);
    const auto packet_size = static_cast<std::uint64_t>(header.size()) + row.value;

    // The decoded length is exact: a maximum of header + value accepts the header, one less
    // rejects it with 0x95 before any of the body arrives.
    {
      Framer exact(static_cast<std::uint32_t>(packet_size));
      int frames = 0;
      const Status s = exact.feed(header, [&](std::uint8_t, std::string_view) {
        ++frames;
        return Status::success();
      });
      CHECK(s.ok());
      CHECK(frames == (row.value == 0 ? 1 : 0));
      CHECK(exact.buffered() == (row.value == 0 ? 0u : header.size()));
    }
    {
      Framer smaller(static_cast<std::uint32_t>(packet_size - 1));
      int frames = 0;
      const Status s = smaller.feed(header, [&](std::uint8_t, std::string_view) {
        ++frames;
        return Status::success();
      });
      CHECK(s.code == ReasonCode::packet_too_large);
      CHECK(frames == 0);
    }
    // Values up to 2 MiB are delivered as a whole packet, whole and byte by byte.
    if (row.value <= 2097152) {
      const std::string packet = header + std::string(row.value, 'x');
      for (bool bytewise : {false, true}) {
        CAPTURE(bytewise);
        Framer framer;
        std::size_t delivered = 0;
        int frames = 0;
        auto on_packet = [&](std::uint8_t first, std::string_view body) {
          ++frames;
          CHECK(first == 0x30);
          delivered = body.size();
          return Status::success();
        };
        if (bytewise && row.value <= 16384) {
          for (char c : packet) REQUIRE(framer.feed(std::string_view(&c, 1), on_packet).ok());
        } else {
          REQUIRE(framer.feed(packet, on_packet).ok());
        }
        CHECK(frames == 1);
        CHECK(delivered == row.value);
        CHECK(framer.idle());
      }
    }
  }
}
