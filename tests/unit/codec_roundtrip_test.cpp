// SPDX-License-Identifier: Apache-2.0
// Round trips through the MQTT codec: every packet type in every protocol version it exists in,
// with non-default fields and (MQTT 5.0) properties, decodes to the packet that was encoded and
// encodes back to the same bytes. Also the encoder's edge cases: short forms, size limits,
// remaining-length boundaries and publish_packet_id_offset().

#include <doctest/doctest.h>

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "codec_test_util.hpp"
#include "mqtt/codec.hpp"

using namespace brokerha::mqtt;
using namespace std::string_view_literals;
using brokerha::ReasonCode;
using brokerha::test::check_equal;
using brokerha::test::hex;
using brokerha::test::kAllVersions;
using brokerha::test::Roundtrip;
using brokerha::test::split_wire;
using brokerha::test::to_hex;
using brokerha::test::version_name;

namespace {

// ---- Packets with every field set ----------------------------------------------------------

Connect full_connect(ProtocolVersion v) {
  Connect c;
  c.version = v;
  c.clean_start = false;
  c.keep_alive = 0xABCD;
  c.client_id = "client-\xC3\xA9\xE2\x82\xAC";  // "client-é€"
  Will& w = c.will.emplace();
  w.topic = "will/topic";
  w.payload = "\x00\xFFpayload"sv;
  w.qos = 2;
  w.retain = true;
  c.username = "user\xF0\x9F\x98\x80";
  c.password = "p\x00ss\xFF"sv;
  if (v == ProtocolVersion::v5) {
    w.properties.payload_format_indicator = 0;
    w.properties.message_expiry_interval = 3600;
    w.properties.content_type = "application/octet-stream";
    w.properties.response_topic = "reply/to";
    w.properties.correlation_data = "\x01\x00\x02"sv;
    w.properties.will_delay_interval = 0xFFFFFFFF;
    w.properties.user_properties = {{"wk", "wv"}, {"wk", "wv2"}};

    c.properties.session_expiry_interval = 0xFFFFFFFF;
    c.properties.authentication_method = "SCRAM-SHA-256";
    c.properties.authentication_data = "\x00\x01\x02"sv;
    c.properties.request_problem_information = 0;
    c.properties.request_response_information = 1;
    c.properties.receive_maximum = 100;
    c.properties.topic_alias_maximum = 10;
    c.properties.maximum_packet_size = 1u << 20;
    // Order and duplicates are kept; empty name and value are allowed.
    c.properties.user_properties = {{"a", "1"}, {"a", "2"}, {"", ""}, {"k", "\xC3\xA9"}};
  }
  return c;
}

Connack full_connack(ProtocolVersion v) {
  Connack c;
  c.session_present = v != ProtocolVersion::v31;  // MQTT 3.1 has no session present flag
  c.code = 0;
  if (v == ProtocolVersion::v5) {
    Properties& p = c.properties;
    p.session_expiry_interval = 7200;
    p.assigned_client_identifier = "auto-1234";
    p.server_keep_alive = 30;
    p.authentication_method = "SCRAM-SHA-256";
    p.authentication_data = "server-first"sv;
    p.response_information = "resp/prefix";
    p.server_reference = "other.example:1883";
    p.reason_string = "welcome";
    p.receive_maximum = 0xFFFF;
    p.topic_alias_maximum = 0;
    p.maximum_qos = 1;
    p.retain_available = 0;
    p.user_properties = {{"node", "n1"}};
    p.maximum_packet_size = 268435460;
    p.wildcard_subscription_available = 0;
    p.subscription_identifier_available = 1;
    p.shared_subscription_available = 0;
  }
  return c;
}

Publish full_publish(ProtocolVersion v, std::uint8_t qos, bool dup, bool retain) {
  Publish p;
  p.qos = qos;
  p.dup = dup;
  p.retain = retain;
  p.topic = "sensors/room-1/temp\xC2\xB0";
  p.packet_id = qos > 0 ? 0xFFFF : 0;
  p.payload = "\x00\x01\x02\x03 binary \xFF"sv;
  if (v == ProtocolVersion::v5) {
    p.properties.payload_format_indicator = 0;
    p.properties.message_expiry_interval = 60;
    p.properties.content_type = "application/cbor";
    p.properties.response_topic = "reply/room-1";
    p.properties.correlation_data = "\xDE\xAD\xBE\xEF"sv;
    p.properties.subscription_identifiers = {1, 127, 128, 16384, 268435455};
    p.properties.topic_alias = 7;
    p.properties.user_properties = {{"trace", "abc"}, {"trace", "def"}};
  }
  return p;
}

template <class Ack>
Ack full_ack(ProtocolVersion v, ReasonCode code) {
  Ack a;
  a.packet_id = 0x0102;
  if (v == ProtocolVersion::v5) {
    a.reason_code = code;
    a.properties.reason_string = "because";
    a.properties.user_properties = {{"x", "y"}};
  }
  return a;
}

Subscribe full_subscribe(ProtocolVersion v) {
  const bool v5 = v == ProtocolVersion::v5;
  Subscribe s;
  s.packet_id = 42;
  Subscription a;
  a.filter = "sport/tennis/player1/#";
  a.qos = 2;
  Subscription b;
  b.filter = "+/+";
  b.qos = 1;
  Subscription c;
  c.filter = "$share/group/sensors/+";
  c.qos = 0;
  Subscription d;
  d.filter = "#";
  d.qos = 1;
  if (v5) {
    a.no_local = true;
    a.retain_as_published = true;
    a.retain_handling = 2;
    b.retain_handling = 1;
    c.retain_as_published = true;  // no local is a protocol error on a shared subscription
    d.no_local = true;
    s.properties.subscription_identifiers = {268435455};
    s.properties.user_properties = {{"client", "c1"}};
  }
  s.subscriptions = {a, b, c, d};
  return s;
}

Suback full_suback(ProtocolVersion v) {
  Suback s;
  s.packet_id = 42;
  s.reason_codes = {ReasonCode::success, ReasonCode::granted_qos_1, ReasonCode::granted_qos_2,
                    ReasonCode::unspecified_error};
  if (v == ProtocolVersion::v5) {
    s.reason_codes.push_back(ReasonCode::topic_filter_invalid);
    s.reason_codes.push_back(ReasonCode::shared_subscriptions_not_supported);
    s.reason_codes.push_back(ReasonCode::wildcard_subscriptions_not_supported);
    s.properties.reason_string = "partly granted";
    s.properties.user_properties = {{"a", "b"}};
  }
  return s;
}

Unsubscribe full_unsubscribe(ProtocolVersion v) {
  Unsubscribe u;
  u.packet_id = 7;
  u.filters = {"a/b", "$share/g/a/#", "+", "/"};
  if (v == ProtocolVersion::v5) u.properties.user_properties = {{"why", "done"}};
  return u;
}

Unsuback full_unsuback(ProtocolVersion v) {
  Unsuback u;
  u.packet_id = 7;
  if (v == ProtocolVersion::v5) {
    u.reason_codes = {ReasonCode::success, ReasonCode::no_subscription_existed,
                      ReasonCode::not_authorized, ReasonCode::topic_filter_invalid};
    u.properties.reason_string = "mixed";
    u.properties.user_properties = {{"u", "v"}};
  }
  return u;
}

Disconnect full_disconnect(ProtocolVersion v) {
  Disconnect d;
  if (v == ProtocolVersion::v5) {
    d.reason_code = ReasonCode::use_another_server;
    d.properties.session_expiry_interval = 0;
    d.properties.server_reference = "backup.example";
    d.properties.reason_string = "maintenance";
    d.properties.user_properties = {{"k", "v"}};
  }
  return d;
}

Auth full_auth() {
  Auth a;
  a.reason_code = ReasonCode::continue_authentication;
  a.properties.authentication_method = "SCRAM-SHA-256";
  a.properties.authentication_data = "\x00client-final\xFF"sv;
  a.properties.reason_string = "step 2";
  a.properties.user_properties = {{"step", "2"}};
  return a;
}

// Encodes, decodes and compares with what was encoded.
void check_roundtrip(const Packet& packet, ProtocolVersion v) {
  CAPTURE(version_name(v));
  Roundtrip rt(packet, v);
  CAPTURE(to_hex(rt.wire().substr(0, 64)));
  check_equal(rt.decoded(), packet);
}

std::string encoded(const Packet& packet, ProtocolVersion v) {
  std::string out;
  REQUIRE(encode(packet, v, out));
  return out;
}

}  // namespace

// ---- Every packet type in every version ----------------------------------------------------

TEST_CASE("codec roundtrip CONNECT with will and credentials in every version") {
  for (ProtocolVersion v : kAllVersions) check_roundtrip(full_connect(v), v);
}

TEST_CASE("codec roundtrip CONNECT variants of flags and optional fields") {
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    Connect minimal;  // clean start, no will, no credentials, zero-length client id
    minimal.version = v;
    minimal.clean_start = true;
    minimal.keep_alive = 0;
    minimal.client_id = "";
    check_roundtrip(minimal, v);

    Connect will_qos1 = full_connect(v);
    will_qos1.will->qos = 1;
    will_qos1.will->retain = false;
    will_qos1.will->payload = "";  // empty will payload
    will_qos1.username.reset();
    will_qos1.password.reset();
    check_roundtrip(will_qos1, v);

    Connect will_qos0 = full_connect(v);
    will_qos0.will->qos = 0;
    will_qos0.password.reset();  // user name alone
    check_roundtrip(will_qos0, v);

    Connect empty_credentials = full_connect(v);
    empty_credentials.will.reset();
    empty_credentials.username = "";
    empty_credentials.password = "";
    check_roundtrip(empty_credentials, v);
  }
  // MQTT 5.0 allows a password without a user name (MQTT 3.x does not).
  Connect password_only = full_connect(ProtocolVersion::v5);
  password_only.username.reset();
  check_roundtrip(password_only, ProtocolVersion::v5);
}

TEST_CASE("codec roundtrip CONNECT encodes the version of the packet") {
  // The protocol name and level come from Connect::version, not from the argument.
  Connect c;
  c.version = ProtocolVersion::v31;
  c.client_id = "c";
  CHECK(to_hex(encoded(c, ProtocolVersion::v5)) ==
        to_hex(hex("10 0F 00 06 'MQIsdp' 03 02 00 00 00 01 'c'")));
  c.version = ProtocolVersion::v311;
  CHECK(to_hex(encoded(c, ProtocolVersion::v31)) ==
        to_hex(hex("10 0D 00 04 'MQTT' 04 02 00 00 00 01 'c'")));
  c.version = ProtocolVersion::v5;
  CHECK(to_hex(encoded(c, ProtocolVersion::v311)) ==
        to_hex(hex("10 0E 00 04 'MQTT' 05 02 00 00 00 00 01 'c'")));
}

TEST_CASE("codec roundtrip CONNACK in every version") {
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    check_roundtrip(full_connack(v), v);

    Connack refused;
    refused.code = v == ProtocolVersion::v5 ? 0x87 : 5;  // not authorized
    if (v == ProtocolVersion::v5) refused.properties.reason_string = "no";
    check_roundtrip(refused, v);
  }
  // Every MQTT 3.x return code.
  for (std::uint8_t code = 0; code <= 5; ++code) {
    CAPTURE(code);
    Connack c;
    c.code = code;
    check_roundtrip(c, ProtocolVersion::v311);
    check_roundtrip(c, ProtocolVersion::v31);
  }
}

TEST_CASE("codec CONNACK in MQTT 3.1 drops the session present flag") {
  Connack c;
  c.session_present = true;
  const std::string wire = encoded(c, ProtocolVersion::v31);
  CHECK(to_hex(wire) == "20 02 00 00");
  Packet out;
  REQUIRE(brokerha::test::decode_wire(wire, ProtocolVersion::v31, out).ok());
  CHECK_FALSE(std::get<Connack>(out).session_present);
  // MQTT 3.1.1 keeps it.
  CHECK(to_hex(encoded(c, ProtocolVersion::v311)) == "20 02 01 00");
}

TEST_CASE("codec roundtrip PUBLISH with every QoS DUP and RETAIN combination") {
  for (ProtocolVersion v : kAllVersions) {
    for (std::uint8_t qos = 0; qos <= 2; ++qos) {
      for (int flags = 0; flags < 4; ++flags) {
        const bool dup = (flags & 1) != 0;
        const bool retain = (flags & 2) != 0;
        if (dup && qos == 0) continue;  // DUP must be 0 on QoS 0
        CAPTURE(qos);
        CAPTURE(dup);
        CAPTURE(retain);
        const Publish p = full_publish(v, qos, dup, retain);
        check_roundtrip(p, v);
        Roundtrip rt(p, v);
        const auto expected_first =
            static_cast<std::uint8_t>(0x30 | (dup ? 8 : 0) | (qos << 1) | (retain ? 1 : 0));
        CHECK(rt.frame().first_byte == expected_first);
      }
    }
  }
}

TEST_CASE("codec roundtrip PUBLISH with QoS 0 carries no packet identifier") {
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    Publish p;
    p.qos = 0;
    p.topic = "a/b";
    p.packet_id = 0x1234;  // ignored for QoS 0
    p.payload = "xy";
    const std::string wire = encoded(p, v);
    if (v == ProtocolVersion::v5) {
      CHECK(to_hex(wire) == "30 08 00 03 61 2F 62 00 78 79");
    } else {
      CHECK(to_hex(wire) == "30 07 00 03 61 2F 62 78 79");
    }
    Packet out;
    REQUIRE(brokerha::test::decode_wire(wire, v, out).ok());
    CHECK(std::get<Publish>(out).packet_id == 0);
    CHECK(std::get<Publish>(out).payload == "xy");
  }
}

TEST_CASE("codec roundtrip PUBLISH with an empty payload") {
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    for (std::uint8_t qos = 0; qos <= 2; ++qos) {
      Publish p = full_publish(v, qos, false, true);
      p.payload = "";
      Roundtrip rt(p, v);
      check_equal(rt.decoded(), Packet(p));
      CHECK(rt.get<Publish>().payload.empty());
    }
    // The smallest PUBLISH: one-byte topic, QoS 0, no payload.
    Publish tiny;
    tiny.topic = "t";
    const std::string wire = encoded(tiny, v);
    CHECK(to_hex(wire) == (v == ProtocolVersion::v5 ? "30 04 00 01 74 00" : "30 03 00 01 74"));
  }
}

TEST_CASE("codec roundtrip PUBLISH in MQTT 5.0 with an empty topic and a topic alias") {
  Publish p;
  p.qos = 1;
  p.packet_id = 9;
  p.topic = "";
  p.properties.topic_alias = 0xFFFF;
  p.payload = "{\"t\":21.5}";
  p.properties.payload_format_indicator = 1;  // the payload is UTF-8
  check_roundtrip(p, ProtocolVersion::v5);
}

TEST_CASE("codec roundtrip PUBACK PUBREC PUBREL and PUBCOMP in every version") {
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    check_roundtrip(full_ack<Puback>(v, ReasonCode::no_matching_subscribers), v);
    check_roundtrip(full_ack<Pubrec>(v, ReasonCode::quota_exceeded), v);
    check_roundtrip(full_ack<Pubrel>(v, ReasonCode::packet_identifier_not_found), v);
    check_roundtrip(full_ack<Pubcomp>(v, ReasonCode::packet_identifier_not_found), v);
    // Success with properties, and plain success.
    check_roundtrip(full_ack<Puback>(v, ReasonCode::success), v);
    Pubrel plain;
    plain.packet_id = 0xFFFF;
    check_roundtrip(plain, v);
  }
}

TEST_CASE("codec v5 publish acknowledgements use the short forms") {
  constexpr auto v5 = ProtocolVersion::v5;
  Puback a;
  a.packet_id = 5;
  CHECK(to_hex(encoded(a, v5)) == "40 02 00 05");  // rc 0, no properties
  a.reason_code = ReasonCode::no_matching_subscribers;
  CHECK(to_hex(encoded(a, v5)) == "40 03 00 05 10");  // rc only
  a.reason_code = ReasonCode::success;
  a.properties.reason_string = "x";
  CHECK(to_hex(encoded(a, v5)) == "40 08 00 05 00 04 1F 00 01 78");  // rc 0 with properties

  Pubrec rec;
  rec.packet_id = 0x0102;
  CHECK(to_hex(encoded(rec, v5)) == "50 02 01 02");
  rec.reason_code = ReasonCode::unspecified_error;
  CHECK(to_hex(encoded(rec, v5)) == "50 03 01 02 80");
  Pubrel rel;
  rel.packet_id = 0x0102;
  CHECK(to_hex(encoded(rel, v5)) == "62 02 01 02");
  rel.reason_code = ReasonCode::packet_identifier_not_found;
  CHECK(to_hex(encoded(rel, v5)) == "62 03 01 02 92");
  Pubcomp comp;
  comp.packet_id = 0x0102;
  CHECK(to_hex(encoded(comp, v5)) == "70 02 01 02");
  comp.reason_code = ReasonCode::packet_identifier_not_found;
  CHECK(to_hex(encoded(comp, v5)) == "70 03 01 02 92");

  // Each short form decodes to the packet that produced it.
  check_roundtrip(a, v5);
  check_roundtrip(rec, v5);
  check_roundtrip(rel, v5);
  check_roundtrip(comp, v5);
  rec.reason_code = ReasonCode::success;
  check_roundtrip(rec, v5);

  // MQTT 3.x has only the packet identifier, whatever the reason code and properties.
  CHECK(to_hex(encoded(a, ProtocolVersion::v311)) == "40 02 00 05");
  CHECK(to_hex(encoded(rel, ProtocolVersion::v31)) == "62 02 01 02");
}

TEST_CASE("codec roundtrip SUBSCRIBE in every version") {
  for (ProtocolVersion v : kAllVersions) check_roundtrip(full_subscribe(v), v);
  // Each retain handling value and each option bit on its own, MQTT 5.0.
  for (std::uint8_t rh = 0; rh <= 2; ++rh) {
    for (int bits = 0; bits < 4; ++bits) {
      Subscribe s;
      s.packet_id = 1;
      Subscription sub;
      sub.filter = "x/y";
      sub.qos = static_cast<std::uint8_t>(bits % 3);
      sub.no_local = (bits & 1) != 0;
      sub.retain_as_published = (bits & 2) != 0;
      sub.retain_handling = rh;
      s.subscriptions = {sub};
      CAPTURE(rh);
      CAPTURE(bits);
      Roundtrip rt(s, ProtocolVersion::v5);
      check_equal(rt.decoded(), Packet(s));
      const auto options = static_cast<std::uint8_t>(rt.wire().back());
      CHECK(options == ((rh << 4) | ((bits & 2) ? 8 : 0) | ((bits & 1) ? 4 : 0) | bits % 3));
    }
  }
}

TEST_CASE("codec roundtrip SUBACK in every version") {
  for (ProtocolVersion v : kAllVersions) check_roundtrip(full_suback(v), v);
}

TEST_CASE("codec roundtrip UNSUBSCRIBE in every version") {
  for (ProtocolVersion v : kAllVersions) check_roundtrip(full_unsubscribe(v), v);
}

TEST_CASE("codec roundtrip UNSUBACK in every version") {
  for (ProtocolVersion v : kAllVersions) check_roundtrip(full_unsuback(v), v);
  // MQTT 3.x UNSUBACK is the packet identifier alone: reason codes are not sent.
  Unsuback u = full_unsuback(ProtocolVersion::v5);
  CHECK(to_hex(encoded(u, ProtocolVersion::v311)) == "B0 02 00 07");
  CHECK(to_hex(encoded(u, ProtocolVersion::v31)) == "B0 02 00 07");
}

TEST_CASE("codec roundtrip PINGREQ and PINGRESP in every version") {
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    check_roundtrip(Pingreq{}, v);
    check_roundtrip(Pingresp{}, v);
    CHECK(to_hex(encoded(Pingreq{}, v)) == "C0 00");
    CHECK(to_hex(encoded(Pingresp{}, v)) == "D0 00");
  }
}

TEST_CASE("codec roundtrip DISCONNECT in every version") {
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    check_roundtrip(full_disconnect(v), v);
    check_roundtrip(Disconnect{}, v);
    CHECK(to_hex(encoded(Disconnect{}, v)) == "E0 00");
  }
  // MQTT 3.x DISCONNECT has no body whatever the reason code.
  CHECK(to_hex(encoded(full_disconnect(ProtocolVersion::v5), ProtocolVersion::v311)) == "E0 00");
  // MQTT 5.0: reason code alone.
  Disconnect d;
  d.reason_code = ReasonCode::session_taken_over;
  CHECK(to_hex(encoded(d, ProtocolVersion::v5)) == "E0 01 8E");
  check_roundtrip(d, ProtocolVersion::v5);
}

TEST_CASE("codec roundtrip AUTH in MQTT 5.0") {
  check_roundtrip(full_auth(), ProtocolVersion::v5);
  check_roundtrip(Auth{}, ProtocolVersion::v5);
  CHECK(to_hex(encoded(Auth{}, ProtocolVersion::v5)) == "F0 00");
  Auth reauth;
  reauth.reason_code = ReasonCode::reauthenticate;
  CHECK(to_hex(encoded(reauth, ProtocolVersion::v5)) == "F0 01 19");
  check_roundtrip(reauth, ProtocolVersion::v5);
}

TEST_CASE("codec encode refuses AUTH in MQTT 3") {
  for (ProtocolVersion v : {ProtocolVersion::v31, ProtocolVersion::v311}) {
    std::string out = "keep";
    CHECK_FALSE(encode(full_auth(), v, out));
    CHECK_FALSE(encode(Auth{}, v, out));
    CHECK(out == "keep");
    CHECK(encoded_size(Auth{}, v) == 0);
  }
}

// ---- Every property on its own -------------------------------------------------------------

namespace {

template <class F>
Properties props(F set) {
  Properties p;
  set(p);
  return p;
}

Packet publish_with(Properties p) {
  Publish pub;
  pub.topic = "t";
  pub.properties = std::move(p);
  return pub;
}
Packet connect_with(Properties p) {
  Connect c;
  c.version = ProtocolVersion::v5;
  c.properties = std::move(p);
  return c;
}
Packet will_with(Properties p) {
  Connect c;
  c.version = ProtocolVersion::v5;
  Will& w = c.will.emplace();
  w.topic = "t";
  w.properties = std::move(p);
  return c;
}
Packet connack_with(Properties p) {
  Connack c;
  c.properties = std::move(p);
  return c;
}

struct PropertyRow {
  const char* name;
  PropertyId id;
  Packet packet;
  const char* body;  // expected remaining-length bytes, in hex
};

}  // namespace

TEST_CASE("codec roundtrip every MQTT 5 property alone with its exact encoding") {
  using P = PropertyId;
  // Body prefixes: PUBLISH "00 01 74" (topic "t", QoS 0); CONNECT "00 04 'MQTT' 05 02 00 00"
  // (flags: clean start; keep alive 0) then properties then client id "00 00"; CONNACK "00 00".
  const PropertyRow rows[] = {
      {"payload format indicator", P::payload_format_indicator,
       publish_with(props([](Properties& p) { p.payload_format_indicator = 1; })),
       "00 01 74 02 01 01"},
      {"message expiry interval", P::message_expiry_interval,
       publish_with(props([](Properties& p) { p.message_expiry_interval = 0x01020304; })),
       "00 01 74 05 02 01 02 03 04"},
      {"content type", P::content_type,
       publish_with(props([](Properties& p) { p.content_type = "a/b"; })),
       "00 01 74 06 03 00 03 61 2F 62"},
      {"response topic", P::response_topic,
       publish_with(props([](Properties& p) { p.response_topic = "r/t"; })),
       "00 01 74 06 08 00 03 72 2F 74"},
      {"correlation data", P::correlation_data,
       publish_with(props([](Properties& p) { p.correlation_data = "\x00\xFF"sv; })),
       "00 01 74 05 09 00 02 00 FF"},
      {"subscription identifier", P::subscription_identifier,
       publish_with(props([](Properties& p) { p.subscription_identifiers = {268435455}; })),
       "00 01 74 05 0B FF FF FF 7F"},
      {"session expiry interval", P::session_expiry_interval,
       connect_with(props([](Properties& p) { p.session_expiry_interval = 0xFFFFFFFF; })),
       "00 04 'MQTT' 05 02 00 00 05 11 FF FF FF FF 00 00"},
      {"assigned client identifier", P::assigned_client_identifier,
       connack_with(props([](Properties& p) { p.assigned_client_identifier = "id"; })),
       "00 00 05 12 00 02 69 64"},
      {"server keep alive", P::server_keep_alive,
       connack_with(props([](Properties& p) { p.server_keep_alive = 0xFFFF; })),
       "00 00 03 13 FF FF"},
      {"authentication method", P::authentication_method,
       [] {
         Auth a;
         a.reason_code = ReasonCode::continue_authentication;
         a.properties.authentication_method = "m";
         return Packet(a);
       }(),
       "18 04 15 00 01 6D"},
      {"authentication data", P::authentication_data,
       connect_with(props([](Properties& p) { p.authentication_data = "\x01\x02"sv; })),
       "00 04 'MQTT' 05 02 00 00 05 16 00 02 01 02 00 00"},
      {"request problem information", P::request_problem_information,
       connect_with(props([](Properties& p) { p.request_problem_information = 0; })),
       "00 04 'MQTT' 05 02 00 00 02 17 00 00 00"},
      {"will delay interval", P::will_delay_interval,
       will_with(props([](Properties& p) { p.will_delay_interval = 10; })),
       "00 04 'MQTT' 05 06 00 00 00 00 00 05 18 00 00 00 0A 00 01 74 00 00"},
      {"request response information", P::request_response_information,
       connect_with(props([](Properties& p) { p.request_response_information = 1; })),
       "00 04 'MQTT' 05 02 00 00 02 19 01 00 00"},
      {"response information", P::response_information,
       connack_with(props([](Properties& p) { p.response_information = "ri"; })),
       "00 00 05 1A 00 02 72 69"},
      {"server reference", P::server_reference,
       [] {
         Disconnect d;
         d.reason_code = ReasonCode::use_another_server;
         d.properties.server_reference = "other:1883";
         return Packet(d);
       }(),
       "9C 0D 1C 00 0A 'other:1883'"},
      {"reason string", P::reason_string,
       [] {
         Puback a;
         a.packet_id = 1;
         a.reason_code = ReasonCode::not_authorized;
         a.properties.reason_string = "nope";
         return Packet(a);
       }(),
       "00 01 87 07 1F 00 04 'nope'"},
      {"receive maximum", P::receive_maximum,
       connect_with(props([](Properties& p) { p.receive_maximum = 0xFFFF; })),
       "00 04 'MQTT' 05 02 00 00 03 21 FF FF 00 00"},
      {"topic alias maximum", P::topic_alias_maximum,
       connack_with(props([](Properties& p) { p.topic_alias_maximum = 0; })), "00 00 03 22 00 00"},
      {"topic alias", P::topic_alias,
       publish_with(props([](Properties& p) { p.topic_alias = 0x0102; })), "00 01 74 03 23 01 02"},
      {"maximum QoS", P::maximum_qos, connack_with(props([](Properties& p) { p.maximum_qos = 0; })),
       "00 00 02 24 00"},
      {"retain available", P::retain_available,
       connack_with(props([](Properties& p) { p.retain_available = 1; })), "00 00 02 25 01"},
      {"user property", P::user_property,
       [] {
         Subscribe s;
         s.packet_id = 1;
         s.properties.user_properties = {{"", ""}};
         Subscription sub;
         sub.filter = "a";
         s.subscriptions = {sub};
         return Packet(s);
       }(),
       "00 01 05 26 00 00 00 00 00 01 61 00"},
      {"maximum packet size", P::maximum_packet_size,
       connect_with(props([](Properties& p) { p.maximum_packet_size = 0x10000; })),
       "00 04 'MQTT' 05 02 00 00 05 27 00 01 00 00 00 00"},
      {"wildcard subscription available", P::wildcard_subscription_available,
       connack_with(props([](Properties& p) { p.wildcard_subscription_available = 0; })),
       "00 00 02 28 00"},
      {"subscription identifier available", P::subscription_identifier_available,
       connack_with(props([](Properties& p) { p.subscription_identifier_available = 1; })),
       "00 00 02 29 01"},
      {"shared subscription available", P::shared_subscription_available,
       connack_with(props([](Properties& p) { p.shared_subscription_available = 0; })),
       "00 00 02 2A 00"},
      // Several subscription identifiers in one PUBLISH (server to client), 1/2/3-byte values.
      {"three subscription identifiers", P::subscription_identifier,
       publish_with(props([](Properties& p) {
         p.subscription_identifiers = {1, 128, 16384};
       })),
       "00 01 74 09 0B 01 0B 80 01 0B 80 80 01"},
      {"reason string in SUBACK", P::reason_string,
       [] {
         Suback s;
         s.packet_id = 2;
         s.reason_codes = {ReasonCode::granted_qos_1};
         s.properties.reason_string = "ok";
         return Packet(s);
       }(),
       "00 02 05 1F 00 02 'ok' 01"},
      {"user property in UNSUBACK", P::user_property,
       [] {
         Unsuback u;
         u.packet_id = 3;
         u.reason_codes = {ReasonCode::no_subscription_existed};
         u.properties.user_properties = {{"a", "b"}};
         return Packet(u);
       }(),
       "00 03 07 26 00 01 'a' 00 01 'b' 11"},
  };
  std::set<PropertyId> seen;
  for (const PropertyRow& row : rows) {
    INFO("row: " << std::string(row.name));
    seen.insert(row.id);
    Roundtrip rt(row.packet, ProtocolVersion::v5);
    CHECK(to_hex(rt.frame().body) == to_hex(hex(row.body)));
    check_equal(rt.decoded(), row.packet);
  }
  CHECK(seen.size() == 27);  // every property identifier MQTT 5.0 defines
}

// ---- Sizes and limits ---------------------------------------------------------------------

TEST_CASE("codec roundtrip 65535-byte strings") {
  const std::string big(65535, 'x');
  std::string big_binary(65535, '\0');
  for (std::size_t i = 0; i < big_binary.size(); ++i) {
    big_binary[i] = static_cast<char>(i * 7);
  }
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    Publish p;
    p.qos = 1;
    p.packet_id = 1;
    p.topic = big;
    p.payload = big_binary;
    {
      Roundtrip rt(p, v);
      check_equal(rt.decoded(), Packet(p));
      CHECK(rt.get<Publish>().topic.size() == 65535);
    }

    Connect c = full_connect(v);
    c.client_id = big;
    c.will->topic = big;
    c.will->payload = big_binary;
    c.username = big;
    c.password = big_binary;
    if (v == ProtocolVersion::v5) {
      c.properties.user_properties = {{big, big}};
      c.properties.authentication_data = big_binary;
    }
    check_roundtrip(c, v);

    Subscribe s;
    s.packet_id = 3;
    Subscription sub;
    sub.filter = big;
    s.subscriptions = {sub};
    check_roundtrip(s, v);
  }
}

TEST_CASE("codec encode fails on a 65536-byte string and appends nothing") {
  const std::string too_long(65536, 'x');
  for (ProtocolVersion v : kAllVersions) {
    CAPTURE(version_name(v));
    Publish p;
    p.topic = too_long;
    std::string out = "prefix";
    CHECK_FALSE(encode(p, v, out));
    CHECK(out == "prefix");
    CHECK(encoded_size(p, v) == 0);

    // A payload is not a length-prefixed string: 65536 bytes are fine there.
    p.topic = "t";
    p.payload = too_long;
    CHECK(encode(p, v, out));
    CHECK(out.size() == 6 + 1 + 3 + 3 + (v == ProtocolVersion::v5 ? 1 : 0) + 65536);

    Connect c;
    c.version = v;
    c.client_id = too_long;
    out.clear();
    CHECK_FALSE(encode(c, v, out));
    CHECK(out.empty());
    c.client_id = "c";
    c.password = too_long;
    CHECK_FALSE(encode(c, v, out));
    CHECK(encoded_size(c, v) == 0);

    Unsubscribe u;
    u.packet_id = 1;
    u.filters = {"a", too_long};
    CHECK_FALSE(encode(u, v, out));
    CHECK(out.empty());
  }
  Disconnect d;
  d.properties.reason_string = too_long;
  std::string out;
  CHECK_FALSE(encode(d, ProtocolVersion::v5, out));
  d.properties.reason_string.reset();
  d.properties.user_properties = {{"k", too_long}};
  CHECK_FALSE(encode(d, ProtocolVersion::v5, out));
  CHECK(out.empty());
}

TEST_CASE("codec encode fails when the remaining length exceeds 268435455") {
  // Many user properties that point at one 65535-byte string: no huge allocation is needed
  // because encode() sizes the packet before it writes anything.
  const std::string big(65535, 'v');
  constexpr std::size_t kPerProperty = 1 + 2 + 65535 + 2 + 65535;
  Publish p;
  p.topic = "t";
  // 2048 properties: the property block alone is longer than the largest remaining length.
  p.properties.user_properties.assign(2048, UserProperty{big, big});
  CHECK(2048 * kPerProperty > kMaxRemainingLength);
  std::string out = "x";
  CHECK_FALSE(encode(p, ProtocolVersion::v5, out));
  CHECK(out == "x");
  CHECK(encoded_size(p, ProtocolVersion::v5) == 0);

  // 2047 properties plus one with an empty value: the properties fit, the packet does not.
  p.topic = big;
  p.properties.user_properties.assign(2047, UserProperty{big, big});
  p.properties.user_properties.push_back({big, ""});
  const std::size_t props_size = 2047 * kPerProperty + 1 + 2 + 65535 + 2;
  CHECK(props_size <= kMaxRemainingLength);
  CHECK(2 + 65535 + 4 + props_size > kMaxRemainingLength);
  CHECK_FALSE(encode(p, ProtocolVersion::v5, out));
  CHECK(out == "x");
  CHECK(encoded_size(p, ProtocolVersion::v5) == 0);
  // MQTT 3.x does not send properties: the same packet is small there.
  CHECK(encoded_size(p, ProtocolVersion::v311) == 1 + 3 + 2 + 65535);
}

TEST_CASE("codec roundtrip remaining length at the variable byte integer boundaries") {
  struct Row {
    std::uint32_t remaining_length;
    const char* header;  // the fixed header bytes
  };
  const Row rows[] = {
      {3, "30 03"},  // the smallest: topic "t", no payload
      {127, "30 7F"},         {128, "30 80 01"},        {16383, "30 FF 7F"},
      {16384, "30 80 80 01"}, {2097151, "30 FF FF 7F"}, {2097152, "30 80 80 80 01"},
  };
  std::string payload_storage(2097152, 'p');
  for (const Row& row : rows) {
    CAPTURE(row.remaining_length);
    Publish p;
    p.topic = "t";  // 3 bytes of the remaining length
    p.payload = std::string_view(payload_storage).substr(0, row.remaining_length - 3);
    const std::size_t header_size = hex(row.header).size();
    CHECK(encoded_size(p, ProtocolVersion::v311) == header_size + row.remaining_length);
    CHECK(varint_size(row.remaining_length) + 1 == header_size);
    Roundtrip rt(p, ProtocolVersion::v311);
    CHECK(to_hex(rt.wire().substr(0, header_size)) == row.header);
    CHECK(rt.frame().remaining_length == row.remaining_length);
    CHECK(rt.wire().size() == header_size + row.remaining_length);
    CHECK(rt.get<Publish>().payload.size() == row.remaining_length - 3);
    CHECK(rt.get<Publish>().payload == p.payload);
  }
}

TEST_CASE("codec append_varint and varint_size at every boundary") {
  struct Row {
    std::uint32_t value;
    const char* bytes;
  };
  const Row rows[] = {
      {0, "00"},
      {1, "01"},
      {127, "7F"},
      {128, "80 01"},
      {300, "AC 02"},
      {16383, "FF 7F"},
      {16384, "80 80 01"},
      {2097151, "FF FF 7F"},
      {2097152, "80 80 80 01"},
      {268435455, "FF FF FF 7F"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.value);
    std::string out = "a";
    append_varint(out, row.value);
    CHECK(to_hex(out.substr(1)) == row.bytes);
    CHECK(out[0] == 'a');
    CHECK(varint_size(row.value) == hex(row.bytes).size());
  }
}

TEST_CASE("codec publish_packet_id_offset points at the packet identifier") {
  std::string payload_storage(200, 'z');
  for (ProtocolVersion v : kAllVersions) {
    for (std::size_t payload_size : {std::size_t{0}, std::size_t{200}}) {
      CAPTURE(version_name(v));
      CAPTURE(payload_size);
      Publish p;
      p.qos = 1;
      p.topic = "a/b";
      p.packet_id = 0x1234;
      p.payload = std::string_view(payload_storage).substr(0, payload_size);
      if (v == ProtocolVersion::v5) p.properties.message_expiry_interval = 5;
      std::string wire = encoded(p, v);
      const std::size_t header_size = payload_size > 100 ? 3 : 2;
      const std::size_t offset = publish_packet_id_offset(wire);
      CHECK(offset == header_size + 2 + 3);
      REQUIRE(offset + 2 <= wire.size());
      CHECK(to_hex(wire.substr(offset, 2)) == "12 34");

      // Patch the identifier and set DUP, as a retransmission would.
      wire[offset] = '\xBE';
      wire[offset + 1] = '\xEF';
      wire[0] = static_cast<char>(wire[0] | 0x08);
      Packet out;
      REQUIRE(brokerha::test::decode_wire(wire, v, out).ok());
      const auto& decoded = std::get<Publish>(out);
      CHECK(decoded.packet_id == 0xBEEF);
      CHECK(decoded.dup);
      CHECK(decoded.topic == "a/b");
      CHECK(decoded.payload.size() == payload_size);
    }
  }
  // A long topic moves the identifier accordingly.
  const std::string topic(300, 't');
  Publish p;
  p.qos = 2;
  p.topic = topic;
  p.packet_id = 0x00FF;
  const std::string wire = encoded(p, ProtocolVersion::v311);
  CHECK(publish_packet_id_offset(wire) == 3 + 2 + 300);
  CHECK(to_hex(wire.substr(305, 2)) == "00 FF");
}

TEST_CASE("codec encode appends to the output and encoded_size matches") {
  std::string out = "head";
  const Packet packets[] = {full_connect(ProtocolVersion::v5), full_connack(ProtocolVersion::v5),
                            full_publish(ProtocolVersion::v5, 2, true, true),
                            full_subscribe(ProtocolVersion::v5), full_auth()};
  std::size_t expected_size = 4;
  for (const Packet& p : packets) {
    const std::size_t n = encoded_size(p, ProtocolVersion::v5);
    CHECK(n > 0);
    const std::size_t before = out.size();
    REQUIRE(encode(p, ProtocolVersion::v5, out));
    CHECK(out.size() - before == n);
    expected_size += n;
  }
  CHECK(out.size() == expected_size);
  CHECK(out.substr(0, 4) == "head");
  CHECK(static_cast<std::uint8_t>(out[4]) == 0x10);  // the CONNECT follows the old bytes
}

TEST_CASE("codec packet_type and packet_type_name") {
  CHECK(packet_type(Packet(Connect{})) == PacketType::connect);
  CHECK(packet_type(Packet(Pubrel{})) == PacketType::pubrel);
  CHECK(packet_type(Packet(Auth{})) == PacketType::auth);
  CHECK(packet_type_name(PacketType::connect) == "CONNECT");
  CHECK(packet_type_name(PacketType::unsuback) == "UNSUBACK");
  CHECK(packet_type_name(PacketType::auth) == "AUTH");
  CHECK(packet_type_name(static_cast<PacketType>(0)) == "RESERVED");
}
