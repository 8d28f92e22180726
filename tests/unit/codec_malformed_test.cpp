// SPDX-License-Identifier: Apache-2.0
// Malformed and invalid packets: one row per rule the Framer and decode() enforce, with the
// reason code the MQTT specification names for the violation. Each row is fed to a Framer
// followed by a valid PINGREQ: the error must stop the feed (the PINGREQ is never delivered).

#include <doctest/doctest.h>

#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <set>
#include <string>
#include <string_view>

#include "codec_test_util.hpp"
#include "mqtt/codec.hpp"

using namespace brokerha::mqtt;
using brokerha::ReasonCode;
using brokerha::test::hex;
using brokerha::test::show;
using brokerha::test::split_wire;
using brokerha::test::to_hex;

namespace {

constexpr auto v31 = ProtocolVersion::v31;
constexpr auto v311 = ProtocolVersion::v311;
constexpr auto v5 = ProtocolVersion::v5;

constexpr auto k81 = ReasonCode::malformed_packet;
constexpr auto k82 = ReasonCode::protocol_error;
constexpr auto k84 = ReasonCode::unsupported_protocol_version;
constexpr auto k8F = ReasonCode::topic_filter_invalid;
constexpr auto k90 = ReasonCode::topic_name_invalid;
constexpr auto k94 = ReasonCode::topic_alias_invalid;
constexpr auto k99 = ReasonCode::payload_format_invalid;

enum class Stage { decode, framer };

struct Row {
  const char* name;
  ProtocolVersion version;
  const char* wire;  // hex; text between single quotes is literal
  ReasonCode expected;
  Stage stage = Stage::decode;
};

// CONNECT prefixes (protocol name, level, flags, keep alive 60) used below:
//   "00 04 'MQTT' 04 <flags> 00 3C"  10 bytes
//   "00 06 'MQIsdp' 03 <flags> 00 3C"  12 bytes
const Row kRows[] = {
    // ---- Fixed header and Framer ----------------------------------------------------------
    {"reserved packet type 0", v311, "00 00", k81},
    {"reserved packet type 0 in v5", v5, "00 02 00 01", k81},
    {"AUTH in v3.1.1 is reserved type 15", v311, "F0 00", k81},
    {"AUTH in v3.1 is reserved type 15", v31, "F0 02 18 00", k81},
    {"remaining length of five bytes", v311, "30 80 80 80 80 01", k81, Stage::framer},
    {"remaining length of five bytes all FF", v5, "30 FF FF FF FF 7F", k81, Stage::framer},
    {"remaining length 80 00 not minimal", v311, "30 80 00", k81, Stage::framer},
    {"remaining length FF 80 00 not minimal", v311, "30 FF 80 00", k81, Stage::framer},
    {"remaining length 80 80 80 00 not minimal", v5, "C0 80 80 80 00", k81, Stage::framer},

    // ---- Fixed header flags ---------------------------------------------------------------
    {"CONNECT flags 0001", v311, "11 00", k81},
    {"CONNECT flags 1000", v5, "18 00", k81},
    {"CONNACK flags 0001", v311, "21 02 00 00", k81},
    {"PUBLISH QoS 3", v311, "36 07 00 03 'a/b' 00 01", k81},
    {"PUBLISH QoS 3 with DUP and RETAIN", v5, "3F 08 00 03 'a/b' 00 01 00", k81},
    {"PUBLISH DUP on QoS 0", v311, "38 05 00 03 'a/b'", k81},
    {"PUBLISH DUP on QoS 0 v5", v5, "39 06 00 03 'a/b' 00", k81},
    {"PUBACK flags 0010", v311, "42 02 00 01", k81},
    {"PUBREC flags 0001", v5, "51 02 00 01", k81},
    {"PUBREL flags 0000", v311, "60 02 00 01", k81},
    {"PUBREL flags 0011", v5, "63 02 00 01", k81},
    // MQTT 3.1 allowed DUP on PUBREL, SUBSCRIBE and UNSUBSCRIBE (a resend); 3.1.1 and 5.0 do not
    {"PUBREL flags 1010 v3.1.1", v311, "6A 02 00 01", k81},
    {"PUBREL flags 1010 v5", v5, "6A 02 00 01", k81},
    {"PUBREL flags 1000 v3.1", v31, "68 02 00 01", k81},
    {"SUBSCRIBE flags 1010 v3.1.1", v311, "8A 06 00 01 00 01 'a' 00", k81},
    {"UNSUBSCRIBE flags 1010 v5", v5, "AA 06 00 01 00 00 01 'a'", k81},
    {"PUBCOMP flags 1000", v311, "78 02 00 01", k81},
    {"SUBSCRIBE flags 0000", v311, "80 06 00 01 00 01 'a' 00", k81},
    {"SUBSCRIBE flags 0011", v5, "83 07 00 01 00 00 01 'a' 00", k81},
    {"SUBACK flags 0010", v311, "92 03 00 01 00", k81},
    {"UNSUBSCRIBE flags 0000", v311, "A0 05 00 01 00 01 'a'", k81},
    {"UNSUBSCRIBE flags 0110", v5, "A6 06 00 01 00 00 01 'a'", k81},
    {"UNSUBACK flags 0001", v311, "B1 02 00 01", k81},
    {"PINGREQ flags 0001", v311, "C1 00", k81},
    {"PINGRESP flags 0100", v5, "D4 00", k81},
    {"DISCONNECT flags 0010", v311, "E2 00", k81},
    {"DISCONNECT flags 0001 v5", v5, "E1 00", k81},
    {"AUTH flags 0001", v5, "F1 00", k81},

    // ---- CONNECT: protocol name, level and flags -----------------------------------------
    {"CONNECT empty body", v311, "10 00", k81},
    {"CONNECT protocol name length truncated", v311, "10 01 00", k81},
    {"CONNECT protocol name truncated", v311, "10 03 00 04 'M'", k81},
    {"CONNECT protocol level missing", v311, "10 06 00 04 'MQTT'", k81},
    {"CONNECT unknown protocol name MQTX", v311, "10 0C 00 04 'MQTX' 04 02 00 3C 00 00", k82},
    {"CONNECT lowercase protocol name mqtt", v5, "10 0C 00 04 'mqtt' 04 02 00 3C 00 00", k82},
    {"CONNECT empty protocol name", v311, "10 08 00 00 04 02 00 3C 00 00", k82},
    {"CONNECT MQTT level 6", v311, "10 0C 00 04 'MQTT' 06 02 00 3C 00 00", k84},
    {"CONNECT MQTT level 3", v311, "10 0C 00 04 'MQTT' 03 02 00 3C 00 00", k84},
    {"CONNECT MQTT level 0", v5, "10 0C 00 04 'MQTT' 00 02 00 3C 00 00", k84},
    {"CONNECT MQIsdp level 4", v311, "10 0E 00 06 'MQIsdp' 04 02 00 3C 00 00", k84},
    {"CONNECT MQIsdp level 5", v5, "10 0E 00 06 'MQIsdp' 05 02 00 3C 00 00", k84},
    {"CONNECT connect flags missing", v311, "10 07 00 04 'MQTT' 04", k81},
    {"CONNECT reserved connect flag", v311, "10 0C 00 04 'MQTT' 04 03 00 3C 00 00", k81},
    {"CONNECT reserved connect flag v5", v5, "10 0D 00 04 'MQTT' 05 03 00 3C 00 00 00", k81},
    {"CONNECT reserved connect flag v3.1", v31, "10 0E 00 06 'MQIsdp' 03 01 00 3C 00 00", k81},
    {"CONNECT will QoS 3", v311, "10 0C 00 04 'MQTT' 04 1E 00 3C 00 00", k81},
    {"CONNECT will QoS 3 v5", v5, "10 0D 00 04 'MQTT' 05 1E 00 3C 00 00 00", k81},
    {"CONNECT will QoS 1 without will flag", v311, "10 0C 00 04 'MQTT' 04 0A 00 3C 00 00", k81},
    {"CONNECT will QoS 2 without will flag v5", v5, "10 0D 00 04 'MQTT' 05 12 00 3C 00 00 00", k81},
    {"CONNECT will retain without will flag", v311, "10 0C 00 04 'MQTT' 04 22 00 3C 00 00", k81},
    {"CONNECT password without user name v3.1.1", v311,
     "10 0F 00 04 'MQTT' 04 42 00 3C 00 00 00 01 'p'", k82},
    {"CONNECT password without user name v3.1", v31,
     "10 11 00 06 'MQIsdp' 03 42 00 3C 00 00 00 01 'p'", k82},
    {"CONNECT keep alive missing", v311, "10 08 00 04 'MQTT' 04 02", k81},
    {"CONNECT keep alive truncated", v311, "10 09 00 04 'MQTT' 04 02 00", k81},

    // ---- CONNECT: payload ----------------------------------------------------------------
    {"CONNECT client id missing", v311, "10 0A 00 04 'MQTT' 04 02 00 3C", k81},
    {"CONNECT client id length truncated", v311, "10 0B 00 04 'MQTT' 04 02 00 3C 00", k81},
    {"CONNECT client id truncated", v311, "10 0D 00 04 'MQTT' 04 02 00 3C 00 05 'a'", k81},
    {"CONNECT client id overlong C0 80", v311, "10 0E 00 04 'MQTT' 04 02 00 3C 00 02 C0 80", k81},
    {"CONNECT client id surrogate ED A0 80", v5, "10 10 00 04 'MQTT' 05 02 00 3C 00 00 03 ED A0 80",
     k81},
    {"CONNECT client id F5 lead byte", v31, "10 0F 00 06 'MQIsdp' 03 02 00 3C 00 01 F5", k81},
    {"CONNECT client id truncated UTF-8 sequence", v311,
     "10 0E 00 04 'MQTT' 04 02 00 3C 00 02 'a' E2", k81},
    {"CONNECT client id U+0000", v311, "10 0D 00 04 'MQTT' 04 02 00 3C 00 01 00", k81},
    {"CONNECT will topic missing", v311, "10 0C 00 04 'MQTT' 04 0E 00 3C 00 00", k81},
    {"CONNECT will topic truncated", v311, "10 0F 00 04 'MQTT' 04 0E 00 3C 00 00 00 05 'a'", k81},
    {"CONNECT will topic F5 lead byte", v311, "10 11 00 04 'MQTT' 04 0E 00 3C 00 00 00 01 F5 00 00",
     k81},
    {"CONNECT will topic surrogate", v311,
     "10 13 00 04 'MQTT' 04 0E 00 3C 00 00 00 03 ED A0 80 00 00", k81},
    {"CONNECT will topic U+0000", v311, "10 11 00 04 'MQTT' 04 0E 00 3C 00 00 00 01 00 00 00", k81},
    {"CONNECT will topic truncated UTF-8 sequence", v311,
     "10 12 00 04 'MQTT' 04 0E 00 3C 00 00 00 02 'a' C3 00 00", k81},
    {"CONNECT will topic overlong", v5,
     "10 14 00 04 'MQTT' 05 0E 00 3C 00 00 00 00 00 02 C1 BF 00 00", k81},
    {"CONNECT will topic with plus", v311, "10 13 00 04 'MQTT' 04 0E 00 3C 00 00 00 03 'a/+' 00 00",
     k90},
    {"CONNECT will topic with hash", v311, "10 11 00 04 'MQTT' 04 0E 00 3C 00 00 00 01 '#' 00 00",
     k90},
    {"CONNECT will topic empty", v311, "10 10 00 04 'MQTT' 04 0E 00 3C 00 00 00 00 00 00", k90},
    {"CONNECT will payload missing", v311, "10 0F 00 04 'MQTT' 04 0E 00 3C 00 00 00 01 't'", k81},
    {"CONNECT will payload truncated", v311,
     "10 12 00 04 'MQTT' 04 0E 00 3C 00 00 00 01 't' 00 04 'a'", k81},
    {"CONNECT user name missing", v311, "10 0C 00 04 'MQTT' 04 82 00 3C 00 00", k81},
    {"CONNECT user name truncated", v311, "10 0F 00 04 'MQTT' 04 82 00 3C 00 00 00 02 'u'", k81},
    {"CONNECT user name lone continuation byte", v311,
     "10 0F 00 04 'MQTT' 04 82 00 3C 00 00 00 01 80", k81},
    {"CONNECT user name U+0000", v5, "10 10 00 04 'MQTT' 05 82 00 3C 00 00 00 00 01 00", k81},
    {"CONNECT user name overlong C0 80", v311, "10 10 00 04 'MQTT' 04 82 00 3C 00 00 00 02 C0 80",
     k81},
    {"CONNECT user name surrogate", v31, "10 13 00 06 'MQIsdp' 03 82 00 3C 00 00 00 03 ED A0 80",
     k81},
    {"CONNECT user name F5 lead byte", v311, "10 0F 00 04 'MQTT' 04 82 00 3C 00 00 00 01 F5", k81},
    {"CONNECT password missing", v311, "10 0F 00 04 'MQTT' 04 C2 00 3C 00 00 00 01 'u'", k81},
    {"CONNECT password truncated", v311, "10 12 00 04 'MQTT' 04 C2 00 3C 00 00 00 01 'u' 00 02 'p'",
     k81},
    {"CONNECT trailing byte", v311, "10 0D 00 04 'MQTT' 04 02 00 3C 00 00 00", k81},
    {"CONNECT trailing byte v3.1", v31, "10 0F 00 06 'MQIsdp' 03 02 00 3C 00 00 FF", k81},
    {"CONNECT trailing byte after password v5", v5,
     "10 14 00 04 'MQTT' 05 C2 00 3C 00 00 00 00 01 'u' 00 01 'p' 00", k81},

    // ---- CONNECT: MQTT 5 properties ------------------------------------------------------
    {"CONNECT v5 property length missing", v5, "10 0A 00 04 'MQTT' 05 02 00 3C", k81},
    {"CONNECT v5 topic alias not allowed", v5, "10 10 00 04 'MQTT' 05 02 00 3C 03 23 00 01 00 00",
     k81},
    {"CONNECT v5 will delay interval not allowed outside the will", v5,
     "10 12 00 04 'MQTT' 05 02 00 3C 05 18 00 00 00 01 00 00", k81},
    {"CONNECT v5 two session expiry intervals", v5,
     "10 17 00 04 'MQTT' 05 02 00 3C 0A 11 00 00 00 01 11 00 00 00 02 00 00", k82},
    {"CONNECT v5 session expiry interval truncated", v5,
     "10 10 00 04 'MQTT' 05 02 00 3C 03 11 00 00 00 00", k81},
    {"CONNECT v5 receive maximum 0", v5, "10 10 00 04 'MQTT' 05 02 00 3C 03 21 00 00 00 00", k82},
    {"CONNECT v5 receive maximum truncated", v5, "10 0F 00 04 'MQTT' 05 02 00 3C 02 21 00 00 00",
     k81},
    {"CONNECT v5 two receive maximums", v5,
     "10 13 00 04 'MQTT' 05 02 00 3C 06 21 00 01 21 00 02 00 00", k82},
    {"CONNECT v5 maximum packet size 0", v5,
     "10 12 00 04 'MQTT' 05 02 00 3C 05 27 00 00 00 00 00 00", k82},
    {"CONNECT v5 request problem information 2", v5,
     "10 0F 00 04 'MQTT' 05 02 00 3C 02 17 02 00 00", k82},
    {"CONNECT v5 request problem information truncated", v5,
     "10 0E 00 04 'MQTT' 05 02 00 3C 01 17 00 00", k81},
    {"CONNECT v5 request response information 2", v5,
     "10 0F 00 04 'MQTT' 05 02 00 3C 02 19 02 00 00", k82},
    {"CONNECT v5 two topic alias maximums", v5,
     "10 13 00 04 'MQTT' 05 02 00 3C 06 22 00 01 22 00 01 00 00", k82},
    {"CONNECT v5 two request problem informations", v5,
     "10 11 00 04 'MQTT' 05 02 00 3C 04 17 00 17 00 00 00", k82},
    {"CONNECT v5 two request response informations", v5,
     "10 11 00 04 'MQTT' 05 02 00 3C 04 19 00 19 01 00 00", k82},
    {"CONNECT v5 two maximum packet sizes", v5,
     "10 17 00 04 'MQTT' 05 02 00 3C 0A 27 00 00 00 01 27 00 00 00 02 00 00", k82},
    {"CONNECT v5 authentication data truncated", v5,
     "10 10 00 04 'MQTT' 05 02 00 3C 03 16 00 05 00 00", k81},
    {"CONNECT v5 two authentication methods", v5,
     "10 15 00 04 'MQTT' 05 02 00 3C 08 15 00 01 'a' 15 00 01 'b' 00 00", k82},
    {"CONNECT v5 authentication method surrogate", v5,
     "10 13 00 04 'MQTT' 05 02 00 3C 06 15 00 03 ED A0 80 00 00", k81},
    {"CONNECT v5 user property name invalid UTF-8", v5,
     "10 13 00 04 'MQTT' 05 02 00 3C 06 26 00 01 FF 00 00 00 00", k81},
    {"CONNECT v5 user property value invalid UTF-8", v5,
     "10 13 00 04 'MQTT' 05 02 00 3C 06 26 00 00 00 01 FF 00 00", k81},
    {"CONNECT v5 user property name truncated", v5,
     "10 11 00 04 'MQTT' 05 02 00 3C 04 26 00 05 'a' 00 00", k81},
    {"CONNECT v5 user property value missing", v5,
     "10 11 00 04 'MQTT' 05 02 00 3C 04 26 00 01 'a' 00 00", k81},
    {"CONNECT v5 user property value truncated", v5,
     "10 14 00 04 'MQTT' 05 02 00 3C 07 26 00 01 'a' 00 03 'b' 00 00", k81},
    {"CONNECT v5 will topic alias not allowed", v5,
     "10 16 00 04 'MQTT' 05 06 00 3C 00 00 00 03 23 00 01 00 01 't' 00 00", k81},
    {"CONNECT v5 will session expiry not allowed", v5,
     "10 18 00 04 'MQTT' 05 06 00 3C 00 00 00 05 11 00 00 00 01 00 01 't' 00 00", k81},
    {"CONNECT v5 will property length missing", v5, "10 0D 00 04 'MQTT' 05 06 00 3C 00 00 00", k81},
    {"CONNECT v5 will payload format 1 with invalid UTF-8 payload", v5,
     "10 16 00 04 'MQTT' 05 06 00 3C 00 00 00 02 01 01 00 01 't' 00 01 FF", k99},
    {"CONNECT v5 will payload format 1 with surrogate payload", v5,
     "10 18 00 04 'MQTT' 05 06 00 3C 00 00 00 02 01 01 00 01 't' 00 03 ED B0 80", k99},
    {"CONNECT v5 will two will delay intervals", v5,
     "10 1D 00 04 'MQTT' 05 06 00 3C 00 00 00 0A 18 00 00 00 01 18 00 00 00 02 00 01 't' 00 00",
     k82},
    {"CONNECT v5 will payload format indicator 2", v5,
     "10 15 00 04 'MQTT' 05 06 00 3C 00 00 00 02 01 02 00 01 't' 00 00", k82},
    {"CONNECT v5 will two payload format indicators", v5,
     "10 17 00 04 'MQTT' 05 06 00 3C 00 00 00 04 01 00 01 00 00 01 't' 00 00", k82},
    {"CONNECT v5 will response topic with wildcard", v5,
     "10 19 00 04 'MQTT' 05 06 00 3C 00 00 00 06 08 00 03 'a/#' 00 01 't' 00 00", k90},
    {"CONNECT v5 will correlation data truncated", v5,
     "10 16 00 04 'MQTT' 05 06 00 3C 00 00 00 03 09 00 09 00 01 't' 00 00", k81},
    {"CONNECT v5 will content type invalid UTF-8", v5,
     "10 18 00 04 'MQTT' 05 06 00 3C 00 00 00 05 03 00 02 C0 80 00 01 't' 00 00", k81},
    {"CONNECT v5 will message expiry truncated", v5,
     "10 16 00 04 'MQTT' 05 06 00 3C 00 00 00 03 02 00 00 00 01 't' 00 00", k81},
    {"CONNECT v5 will with a wildcard topic", v5,
     "10 15 00 04 'MQTT' 05 06 00 3C 00 00 00 00 00 03 'a/+' 00 00", k90},

    // ---- CONNACK -------------------------------------------------------------------------
    {"CONNACK empty body", v311, "20 00", k81},
    {"CONNACK one byte", v311, "20 01 00", k81},
    {"CONNACK reserved flag bits v3.1.1", v311, "20 02 02 00", k81},
    {"CONNACK reserved flag bit 7 v5", v5, "20 03 80 00 00", k81},
    {"CONNACK return code 6 v3.1.1", v311, "20 02 00 06", k81},
    {"CONNACK return code 6 v3.1", v31, "20 02 00 06", k81},
    {"CONNACK return code 0x80 v3.1.1", v311, "20 02 00 80", k81},
    {"CONNACK session present with return code 5", v311, "20 02 01 05", k82},
    {"CONNACK session present with reason code 0x87 v5", v5, "20 03 01 87 00", k82},
    {"CONNACK v5 reason code 0x01", v5, "20 03 00 01 00", k81},
    {"CONNACK v5 reason code 0x8B", v5, "20 03 00 8B 00", k81},
    {"CONNACK v5 reason code 0x9E", v5, "20 03 00 9E 00", k81},
    {"CONNACK v5 property length missing", v5, "20 02 00 00", k81},
    {"CONNACK trailing byte v3.1.1", v311, "20 03 00 00 00", k81},
    {"CONNACK v5 trailing byte after properties", v5, "20 04 00 00 00 00", k81},
    {"CONNACK v5 maximum QoS 2", v5, "20 05 00 00 02 24 02", k82},
    {"CONNACK v5 retain available 2", v5, "20 05 00 00 02 25 02", k82},
    {"CONNACK v5 wildcard subscription available 2", v5, "20 05 00 00 02 28 02", k82},
    {"CONNACK v5 subscription identifier available 2", v5, "20 05 00 00 02 29 02", k82},
    {"CONNACK v5 shared subscription available 2", v5, "20 05 00 00 02 2A 02", k82},
    {"CONNACK v5 server keep alive truncated", v5, "20 05 00 00 02 13 00", k81},
    {"CONNACK v5 maximum packet size truncated", v5, "20 06 00 00 03 27 00 00", k81},
    {"CONNACK v5 two assigned client identifiers", v5, "20 0B 00 00 08 12 00 01 'a' 12 00 01 'b'",
     k82},
    {"CONNACK v5 two server keep alives", v5, "20 09 00 00 06 13 00 01 13 00 02", k82},
    {"CONNACK v5 two response informations", v5, "20 0B 00 00 08 1A 00 01 'a' 1A 00 01 'b'", k82},
    {"CONNACK v5 two server references", v5, "20 0B 00 00 08 1C 00 01 'a' 1C 00 01 'b'", k82},
    {"CONNACK v5 two reason strings", v5, "20 0B 00 00 08 1F 00 01 'a' 1F 00 01 'b'", k82},
    {"CONNACK v5 two maximum QoS", v5, "20 07 00 00 04 24 00 24 01", k82},
    {"CONNACK v5 two authentication data", v5, "20 0B 00 00 08 16 00 01 'a' 16 00 01 'b'", k82},
    {"CONNACK v5 receive maximum 0", v5, "20 06 00 00 03 21 00 00", k82},
    {"CONNACK v5 maximum packet size 0", v5, "20 08 00 00 05 27 00 00 00 00", k82},
    {"CONNACK v5 two retain available", v5, "20 07 00 00 04 25 01 25 01", k82},
    {"CONNACK v5 two maximum packet sizes", v5, "20 0D 00 00 0A 27 00 00 00 01 27 00 00 00 02",
     k82},
    {"CONNACK v5 two shared subscription available", v5, "20 07 00 00 04 2A 00 2A 00", k82},
    {"CONNACK v5 will delay interval not allowed", v5, "20 08 00 00 05 18 00 00 00 01", k81},
    {"CONNACK v5 request problem information not allowed", v5, "20 05 00 00 02 17 01", k81},

    // ---- PUBLISH -------------------------------------------------------------------------
    {"PUBLISH empty body", v311, "30 00", k81},
    {"PUBLISH topic length truncated", v311, "30 01 00", k81},
    {"PUBLISH topic truncated", v311, "30 03 00 05 'a'", k81},
    {"PUBLISH topic overlong C0 80", v311, "30 04 00 02 C0 80", k81},
    {"PUBLISH topic overlong E0 80 80", v5, "30 06 00 03 E0 80 80 00", k81},
    {"PUBLISH topic surrogate ED A0 80", v311, "30 05 00 03 ED A0 80", k81},
    {"PUBLISH topic F5 lead byte", v311, "30 03 00 01 F5", k81},
    {"PUBLISH topic above U+10FFFF", v311, "30 06 00 04 F4 90 80 80", k81},
    {"PUBLISH topic truncated UTF-8 sequence", v311, "30 04 00 02 'a' C3", k81},
    {"PUBLISH topic U+0000", v31, "30 04 00 02 'a' 00", k81},
    {"PUBLISH topic lone continuation byte", v311, "30 03 00 01 80", k81},
    {"PUBLISH topic with plus", v311, "30 05 00 03 'a/+'", k90},
    {"PUBLISH topic with hash", v311, "30 05 00 03 'a/#'", k90},
    {"PUBLISH topic with plus inside a level", v5, "30 06 00 03 'a+b' 00", k90},
    {"PUBLISH topic with hash v3.1", v31, "32 05 00 01 '#' 00 01", k90},
    {"PUBLISH empty topic v3.1.1", v311, "30 02 00 00", k90},
    {"PUBLISH empty topic v3.1", v31, "30 03 00 00 'x'", k90},
    {"PUBLISH empty topic v5 without topic alias", v5, "30 03 00 00 00", k82},
    {"PUBLISH QoS 1 packet id missing", v311, "32 05 00 03 'a/b'", k81},
    {"PUBLISH QoS 1 packet id truncated", v311, "32 06 00 03 'a/b' 00", k81},
    {"PUBLISH QoS 1 packet id 0", v311, "32 07 00 03 'a/b' 00 00", k82},
    {"PUBLISH QoS 2 packet id 0 v5", v5, "34 08 00 03 'a/b' 00 00 00", k82},
    {"PUBLISH QoS 2 packet id 0 v3.1", v31, "34 07 00 03 'a/b' 00 00", k82},
    {"PUBLISH v5 property length missing", v5, "30 05 00 03 'a/b'", k81},
    {"PUBLISH v5 property length beyond packet", v5, "30 07 00 03 'a/b' 05 01", k81},
    {"PUBLISH v5 property length 80 00 not minimal", v5, "30 07 00 03 'a/b' 80 00", k81},
    {"PUBLISH v5 property length truncated varint", v5, "30 06 00 03 'a/b' 80", k81},
    {"PUBLISH v5 property length of five bytes", v5, "30 0A 00 03 'a/b' 80 80 80 80 00", k81},
    {"PUBLISH v5 topic alias 0", v5, "30 09 00 03 'a/b' 03 23 00 00", k94},
    {"PUBLISH v5 empty topic with topic alias 0", v5, "30 06 00 00 03 23 00 00", k94},
    {"PUBLISH v5 topic alias truncated", v5, "30 08 00 03 'a/b' 02 23 00", k81},
    {"PUBLISH v5 two topic aliases", v5, "30 0C 00 03 'a/b' 06 23 00 01 23 00 02", k82},
    {"PUBLISH v5 payload format indicator 2", v5, "30 08 00 03 'a/b' 02 01 02", k82},
    {"PUBLISH v5 payload format indicator 255", v5, "30 08 00 03 'a/b' 02 01 FF", k82},
    {"PUBLISH v5 payload format 1 with invalid UTF-8 payload", v5, "30 09 00 03 'a/b' 02 01 01 FF",
     k99},
    {"PUBLISH v5 payload format 1 with overlong payload", v5,
     "30 0B 00 03 'a/b' 02 01 01 'x' C0 80", k99},
    {"PUBLISH v5 payload format 1 with truncated payload", v5, "30 0B 00 03 'a/b' 02 01 01 'xy' E2",
     k99},
    {"PUBLISH v5 subscription identifier 0", v5, "30 08 00 03 'a/b' 02 0B 00", k82},
    {"PUBLISH v5 subscription identifier not minimal", v5, "30 09 00 03 'a/b' 03 0B 80 00", k81},
    {"PUBLISH v5 subscription identifier truncated", v5, "30 08 00 03 'a/b' 02 0B 80", k81},
    {"PUBLISH v5 session expiry interval not allowed", v5, "30 0B 00 03 'a/b' 05 11 00 00 00 01",
     k81},
    {"PUBLISH v5 will delay interval not allowed", v5, "30 0B 00 03 'a/b' 05 18 00 00 00 01", k81},
    {"PUBLISH v5 unknown property 0x7F", v5, "30 07 00 03 'a/b' 01 7F", k81},
    {"PUBLISH v5 unknown property 0x00", v5, "30 08 00 03 'a/b' 02 00 00", k81},
    {"PUBLISH v5 unknown property 0x04", v5, "30 08 00 03 'a/b' 02 04 00", k81},
    {"PUBLISH v5 unknown property 0x2B", v5, "30 08 00 03 'a/b' 02 2B 00", k81},
    {"PUBLISH v5 two-byte property identifier", v5, "30 09 00 03 'a/b' 03 81 01 00", k81},
    {"PUBLISH v5 property identifier not minimal", v5, "30 09 00 03 'a/b' 03 81 00 01", k81},
    {"PUBLISH v5 property identifier truncated", v5, "30 07 00 03 'a/b' 01 80", k81},
    {"PUBLISH v5 content type invalid UTF-8", v5, "30 0B 00 03 'a/b' 05 03 00 02 C0 AF", k81},
    {"PUBLISH v5 content type truncated", v5, "30 09 00 03 'a/b' 03 03 00 02", k81},
    {"PUBLISH v5 two content types", v5, "30 0E 00 03 'a/b' 08 03 00 01 'a' 03 00 01 'b'", k82},
    {"PUBLISH v5 response topic with plus", v5, "30 0B 00 03 'a/b' 05 08 00 02 'a+'", k90},
    {"PUBLISH v5 empty response topic", v5, "30 09 00 03 'a/b' 03 08 00 00", k90},
    {"PUBLISH v5 response topic invalid UTF-8", v5, "30 0A 00 03 'a/b' 04 08 00 01 FE", k81},
    {"PUBLISH v5 two response topics", v5, "30 0E 00 03 'a/b' 08 08 00 01 'a' 08 00 01 'b'", k82},
    {"PUBLISH v5 correlation data truncated", v5, "30 0A 00 03 'a/b' 04 09 00 05 'a'", k81},
    {"PUBLISH v5 two correlation data", v5, "30 0D 00 03 'a/b' 07 09 00 00 09 00 01 00", k82},
    {"PUBLISH v5 message expiry interval truncated", v5, "30 0A 00 03 'a/b' 04 02 00 00 00", k81},
    {"PUBLISH v5 two message expiry intervals", v5,
     "30 10 00 03 'a/b' 0A 02 00 00 00 01 02 00 00 00 02", k82},
    {"PUBLISH v5 user property name U+0000", v5, "30 0E 00 03 'a/b' 08 26 00 02 'a' 00 00 01 'b'",
     k81},
    {"PUBLISH v5 user property value surrogate", v5,
     "30 0F 00 03 'a/b' 09 26 00 01 'a' 00 03 ED BF BF", k81},

    // ---- PUBACK PUBREC PUBREL PUBCOMP ------------------------------------------------------
    {"PUBLISH v5 user property name overlong", v5, "30 0E 00 03 'a/b' 08 26 00 02 C0 80 00 01 'b'",
     k81},
    {"PUBLISH v5 user property value F5 lead byte", v5,
     "30 0D 00 03 'a/b' 07 26 00 01 'a' 00 01 F5", k81},
    {"PUBLISH v5 user property name truncated UTF-8", v5,
     "30 0D 00 03 'a/b' 07 26 00 01 E2 00 01 'b'", k81},
    {"PUBACK empty body", v311, "40 00", k81},
    {"PUBACK packet id truncated", v311, "40 01 00", k81},
    {"PUBREC packet id truncated v5", v5, "50 01 00", k81},
    {"PUBREL empty body", v311, "62 00", k81},
    {"PUBCOMP packet id truncated", v31, "70 01 01", k81},
    {"PUBACK packet id 0", v311, "40 02 00 00", k82},
    {"PUBACK packet id 0 v5", v5, "40 02 00 00", k82},
    {"PUBREC packet id 0", v311, "50 02 00 00", k82},
    {"PUBREL packet id 0", v31, "62 02 00 00", k82},
    {"PUBCOMP packet id 0 v5", v5, "70 03 00 00 00", k82},
    {"PUBACK trailing byte v3.1.1", v311, "40 03 00 01 00", k81},
    {"PUBREC trailing byte v3.1", v31, "50 03 00 01 00", k81},
    {"PUBREL trailing bytes v3.1.1", v311, "62 04 00 01 00 00", k81},
    {"PUBCOMP trailing byte v3.1.1", v311, "70 03 00 01 00", k81},
    {"PUBACK v5 reason code 0x01", v5, "40 03 00 01 01", k81},
    {"PUBACK v5 reason code 0x92", v5, "40 03 00 01 92", k81},
    {"PUBREC v5 reason code 0x11", v5, "50 03 00 01 11", k81},
    {"PUBREL v5 reason code 0x10", v5, "62 03 00 01 10", k81},
    {"PUBREL v5 reason code 0x80", v5, "62 03 00 01 80", k81},
    {"PUBCOMP v5 reason code 0x87", v5, "70 03 00 01 87", k81},
    {"PUBACK v5 bytes after the properties", v5, "40 05 00 01 00 00 00", k81},
    {"PUBREC v5 bytes after the properties", v5, "50 09 00 01 10 03 1F 00 00 'xy'", k81},
    {"PUBACK v5 property length beyond packet", v5, "40 04 00 01 00 01", k81},
    {"PUBACK v5 property length truncated varint", v5, "40 04 00 01 00 80", k81},
    {"PUBACK v5 topic alias not allowed", v5, "40 07 00 01 00 03 23 00 01", k81},
    {"PUBCOMP v5 session expiry not allowed", v5, "70 09 00 01 00 05 11 00 00 00 01", k81},
    {"PUBACK v5 two reason strings", v5, "40 0C 00 01 80 08 1F 00 01 'a' 1F 00 01 'b'", k82},
    {"PUBREL v5 reason string invalid UTF-8", v5, "62 08 00 01 92 04 1F 00 01 FF", k81},
    {"PUBREL v5 reason string truncated", v5, "62 07 00 01 92 03 1F 00 02", k81},

    // ---- SUBSCRIBE -------------------------------------------------------------------------
    {"SUBSCRIBE empty body", v311, "82 00", k81},
    {"SUBSCRIBE packet id truncated", v311, "82 01 00", k81},
    {"SUBSCRIBE packet id 0", v311, "82 06 00 00 00 01 'a' 00", k82},
    {"SUBSCRIBE packet id 0 v5", v5, "82 07 00 00 00 00 01 'a' 00", k82},
    {"SUBSCRIBE no topic filter v3.1.1", v311, "82 02 00 01", k82},
    {"SUBSCRIBE no topic filter v3.1", v31, "82 02 00 01", k82},
    {"SUBSCRIBE no topic filter v5", v5, "82 03 00 01 00", k82},
    {"SUBSCRIBE v5 property length missing", v5, "82 02 00 01", k81},
    {"SUBSCRIBE filter length truncated", v311, "82 03 00 01 00", k81},
    {"SUBSCRIBE filter truncated", v311, "82 05 00 01 00 02 'a'", k81},
    {"SUBSCRIBE filter invalid UTF-8", v311, "82 06 00 01 00 01 FF 00", k81},
    {"SUBSCRIBE filter U+0000", v5, "82 08 00 01 00 00 02 'a' 00 00", k81},
    {"SUBSCRIBE filter overlong slash", v311, "82 07 00 01 00 02 C0 AF 00", k81},
    {"SUBSCRIBE filter surrogate", v5, "82 09 00 01 00 00 03 ED A0 80 00", k81},
    {"SUBSCRIBE filter truncated UTF-8 sequence", v311, "82 07 00 01 00 02 'a' E2 00", k81},
    {"SUBSCRIBE filter a/b#", v311, "82 09 00 01 00 04 'a/b#' 00", k8F},
    {"SUBSCRIBE filter a/#/b", v311, "82 0A 00 01 00 05 'a/#/b' 00", k8F},
    {"SUBSCRIBE filter a+", v311, "82 07 00 01 00 02 'a+' 00", k8F},
    {"SUBSCRIBE filter +a/b", v5, "82 0A 00 01 00 00 04 '+a/b' 00", k8F},
    {"SUBSCRIBE filter #/a", v31, "82 08 00 01 00 03 '#/a' 00", k8F},
    {"SUBSCRIBE filter empty", v311, "82 05 00 01 00 00 00", k8F},
    {"SUBSCRIBE filter empty v5", v5, "82 06 00 01 00 00 00 00", k8F},
    {"SUBSCRIBE filter $share/g", v5, "82 0E 00 01 00 00 08 '$share/g' 00", k8F},
    {"SUBSCRIBE filter $share/g/", v5, "82 0F 00 01 00 00 09 '$share/g/' 00", k8F},
    {"SUBSCRIBE filter $share//a", v5, "82 0F 00 01 00 00 09 '$share//a' 00", k8F},
    {"SUBSCRIBE filter $share/g+/a", v5, "82 11 00 01 00 00 0B '$share/g+/a' 00", k8F},
    {"SUBSCRIBE filter $share/#/a", v5, "82 10 00 01 00 00 0A '$share/#/a' 00", k8F},
    {"SUBSCRIBE filter $share/g/a#", v311, "82 10 00 01 00 0B '$share/g/a#' 00", k8F},
    {"SUBSCRIBE second filter invalid", v311, "82 0B 00 01 00 01 'a' 00 00 02 'b+' 00", k8F},
    {"SUBSCRIBE options missing", v311, "82 05 00 01 00 01 'a'", k81},
    {"SUBSCRIBE second options missing", v311, "82 09 00 01 00 01 'a' 00 00 01 'b'", k81},
    // The structure is checked before the meaning: a truncated packet is malformed even when
    // a filter in it is invalid too.
    {"SUBSCRIBE empty filter, options missing v5", v5, "82 05 00 01 00 00 00", k81},
    {"SUBSCRIBE empty filter, options missing", v311, "82 04 00 01 00 00", k81},
    {"SUBSCRIBE invalid filter, then a truncated one", v311, "82 09 00 01 00 02 'a+' 00 00 05",
     k81},
    {"SUBSCRIBE retain handling 3, then truncated", v5, "82 08 00 01 00 00 01 'a' 30 00", k81},
    {"SUBSCRIBE QoS 3", v311, "82 06 00 01 00 01 'a' 03", k81},
    {"SUBSCRIBE QoS 3 v5", v5, "82 07 00 01 00 00 01 'a' 03", k81},
    {"SUBSCRIBE v3.1.1 reserved option bit 2", v311, "82 06 00 01 00 01 'a' 04", k81},
    {"SUBSCRIBE v3.1.1 reserved option bit 3", v311, "82 06 00 01 00 01 'a' 08", k81},
    {"SUBSCRIBE v3.1.1 reserved option bits 4 and 5", v311, "82 06 00 01 00 01 'a' 31", k81},
    {"SUBSCRIBE v3.1.1 reserved option bit 7", v311, "82 06 00 01 00 01 'a' 80", k81},
    {"SUBSCRIBE v3.1 reserved option bit 4", v31, "82 06 00 01 00 01 'a' 10", k81},
    {"SUBSCRIBE v5 reserved option bit 6", v5, "82 07 00 01 00 00 01 'a' 40", k81},
    {"SUBSCRIBE v5 reserved option bit 7", v5, "82 07 00 01 00 00 01 'a' 81", k81},
    {"SUBSCRIBE v5 retain handling 3", v5, "82 07 00 01 00 00 01 'a' 30", k82},
    {"SUBSCRIBE v5 retain handling 3 with QoS 2", v5, "82 07 00 01 00 00 01 'a' 3E", k82},
    {"SUBSCRIBE v5 no local on a shared subscription", v5, "82 10 00 01 00 00 0A '$share/g/a' 04",
     k82},
    {"SUBSCRIBE v5 no local on a second shared subscription", v5,
     "82 14 00 01 00 00 01 'a' 04 00 0A '$share/g/#' 05", k82},
    {"SUBSCRIBE v5 two subscription identifiers", v5, "82 0B 00 01 04 0B 01 0B 02 00 01 'a' 00",
     k82},
    {"SUBSCRIBE v5 subscription identifier 0", v5, "82 09 00 01 02 0B 00 00 01 'a' 00", k82},
    {"SUBSCRIBE v5 subscription identifier truncated", v5, "82 09 00 01 02 0B FF 00 01 'a' 00",
     k81},
    {"SUBSCRIBE v5 topic alias not allowed", v5, "82 0A 00 01 03 23 00 01 00 01 'a' 00", k81},
    {"SUBSCRIBE v5 reason string not allowed", v5, "82 0B 00 01 04 1F 00 01 'r' 00 01 'a' 00", k81},
    {"SUBSCRIBE v5 user property truncated", v5, "82 0A 00 01 03 26 00 01 00 01 'a' 00", k81},

    // ---- SUBACK --------------------------------------------------------------------------
    {"SUBACK empty body", v311, "90 00", k81},
    {"SUBACK packet id truncated", v311, "90 01 00", k81},
    {"SUBACK packet id 0", v311, "90 03 00 00 00", k82},
    {"SUBACK packet id 0 v5", v5, "90 04 00 00 00 00", k82},
    {"SUBACK no return code v3.1.1", v311, "90 02 00 01", k82},
    {"SUBACK no reason code v5", v5, "90 03 00 01 00", k82},
    {"SUBACK v5 property length missing", v5, "90 02 00 01", k81},
    {"SUBACK return code 3 v3.1.1", v311, "90 03 00 01 03", k81},
    {"SUBACK return code 0x87 v3.1.1", v311, "90 03 00 01 87", k81},
    {"SUBACK return code 0x81 v3.1", v31, "90 04 00 01 00 81", k81},
    {"SUBACK v5 reason code 0x03", v5, "90 04 00 01 00 03", k81},
    {"SUBACK v5 reason code 0x92", v5, "90 05 00 01 00 01 92", k81},
    {"SUBACK v5 subscription identifier not allowed", v5, "90 06 00 01 02 0B 01 00", k81},
    {"SUBACK v5 two reason strings", v5, "90 0C 00 01 08 1F 00 01 'a' 1F 00 01 'b' 00", k82},

    // ---- UNSUBSCRIBE ---------------------------------------------------------------------
    {"UNSUBSCRIBE empty body", v311, "A2 00", k81},
    {"UNSUBSCRIBE packet id truncated", v311, "A2 01 00", k81},
    {"UNSUBSCRIBE packet id 0", v311, "A2 05 00 00 00 01 'a'", k82},
    {"UNSUBSCRIBE packet id 0 v5", v5, "A2 06 00 00 00 00 01 'a'", k82},
    {"UNSUBSCRIBE no topic filter v3.1.1", v311, "A2 02 00 01", k82},
    {"UNSUBSCRIBE no topic filter v5", v5, "A2 03 00 01 00", k82},
    {"UNSUBSCRIBE v5 property length missing", v5, "A2 02 00 01", k81},
    {"UNSUBSCRIBE filter length truncated", v311, "A2 03 00 01 00", k81},
    {"UNSUBSCRIBE filter truncated", v311, "A2 05 00 01 00 02 'a'", k81},
    {"UNSUBSCRIBE filter invalid UTF-8", v311, "A2 05 00 01 00 01 C2", k81},
    {"UNSUBSCRIBE filter F5 lead byte", v5, "A2 06 00 01 00 00 01 F5", k81},
    {"UNSUBSCRIBE filter a/#/b", v311, "A2 09 00 01 00 05 'a/#/b'", k8F},
    {"UNSUBSCRIBE filter empty", v5, "A2 05 00 01 00 00 00", k8F},
    {"UNSUBSCRIBE filter $share//a", v5, "A2 0E 00 01 00 00 09 '$share//a'", k8F},
    {"UNSUBSCRIBE second filter truncated", v311, "A2 07 00 01 00 01 'a' 00 02", k81},
    {"UNSUBSCRIBE empty filter, then a truncated one v5", v5, "A2 07 00 01 00 00 00 00 05", k81},
    {"UNSUBSCRIBE invalid filter, then a truncated one", v311, "A2 07 00 01 00 02 'a+' 00", k81},
    {"UNSUBSCRIBE v5 subscription identifier not allowed", v5, "A2 08 00 01 02 0B 01 00 01 'a'",
     k81},

    // ---- UNSUBACK ------------------------------------------------------------------------
    {"UNSUBACK empty body", v311, "B0 00", k81},
    {"UNSUBACK packet id truncated", v311, "B0 01 00", k81},
    {"UNSUBACK packet id 0", v311, "B0 02 00 00", k82},
    {"UNSUBACK packet id 0 v5", v5, "B0 04 00 00 00 00", k82},
    {"UNSUBACK trailing byte v3.1.1", v311, "B0 03 00 01 00", k81},
    {"UNSUBACK trailing byte v3.1", v31, "B0 03 00 01 11", k81},
    {"UNSUBACK v5 no reason code", v5, "B0 03 00 01 00", k82},
    {"UNSUBACK v5 property length missing", v5, "B0 02 00 01", k81},
    {"UNSUBACK v5 reason code 0x01", v5, "B0 04 00 01 00 01", k81},
    {"UNSUBACK v5 reason code 0x9E", v5, "B0 05 00 01 00 00 9E", k81},
    {"UNSUBACK v5 topic alias not allowed", v5, "B0 07 00 01 03 23 00 01 00", k81},

    // ---- PINGREQ PINGRESP ----------------------------------------------------------------
    {"PINGREQ with a body", v311, "C0 01 00", k81},
    {"PINGREQ with a body v5", v5, "C0 02 00 00", k81},
    {"PINGRESP with a body", v31, "D0 01 00", k81},

    // ---- DISCONNECT ----------------------------------------------------------------------
    {"DISCONNECT with a body v3.1.1", v311, "E0 01 00", k81},
    {"DISCONNECT with a body v3.1", v31, "E0 02 00 00", k81},
    {"DISCONNECT v5 reason code 0x01", v5, "E0 01 01", k81},
    {"DISCONNECT v5 reason code 0x8C", v5, "E0 01 8C", k81},
    {"DISCONNECT v5 reason code 0x91", v5, "E0 01 91", k81},
    {"DISCONNECT v5 reason code 0xA3", v5, "E0 02 A3 00", k81},
    {"DISCONNECT v5 bytes after the properties", v5, "E0 03 00 00 00", k81},
    {"DISCONNECT v5 property length beyond packet", v5, "E0 02 00 05", k81},
    {"DISCONNECT v5 property length 80 00 not minimal", v5, "E0 03 00 80 00", k81},
    {"DISCONNECT v5 property length truncated varint", v5, "E0 02 00 80", k81},
    {"DISCONNECT v5 property identifier truncated", v5, "E0 03 00 01 80", k81},
    {"DISCONNECT v5 unknown property 0x7F", v5, "E0 03 00 01 7F", k81},
    {"DISCONNECT v5 unknown property 0x2B", v5, "E0 04 00 02 2B 00", k81},
    {"DISCONNECT v5 session expiry interval truncated", v5, "E0 03 00 01 11", k81},
    {"DISCONNECT v5 two session expiry intervals", v5, "E0 0C 00 0A 11 00 00 00 01 11 00 00 00 02",
     k82},
    {"DISCONNECT v5 topic alias not allowed", v5, "E0 05 00 03 23 00 01", k81},
    {"DISCONNECT v5 authentication method not allowed", v5, "E0 06 00 04 15 00 01 'm'", k81},
    {"DISCONNECT v5 server reference truncated", v5, "E0 05 9C 03 1C 00 05", k81},
    {"DISCONNECT v5 reason string surrogate", v5, "E0 08 00 06 1F 00 03 ED BF BF", k81},

    // ---- AUTH ----------------------------------------------------------------------------
    {"AUTH v5 reason code 0x01", v5, "F0 01 01", k81},
    {"AUTH v5 reason code 0x87", v5, "F0 02 87 00", k81},
    {"AUTH v5 bytes after the properties", v5, "F0 03 18 00 00", k81},
    {"AUTH v5 property length beyond packet", v5, "F0 02 18 01", k81},
    {"AUTH v5 authentication data truncated", v5, "F0 05 18 03 16 00 02", k81},
    {"AUTH v5 authentication method invalid UTF-8", v5, "F0 07 18 05 15 00 02 'a' FF", k81},
    {"AUTH v5 two authentication methods", v5, "F0 0A 18 08 15 00 01 'a' 15 00 01 'b'", k82},
    {"AUTH v5 session expiry not allowed", v5, "F0 07 18 05 11 00 00 00 01", k81},
    {"AUTH v5 server reference not allowed", v5, "F0 06 18 04 1C 00 01 'a'", k81},
};

struct Outcome {
  Status status;
  int frames = 0;            // packets the Framer delivered
  std::size_t consumed = 0;  // fixed header + body of the first packet delivered
};

// Feeds `stream` to a fresh Framer, whole or one byte at a time, decoding the first packet
// delivered; the decode status is what the callback returns.
Outcome run(std::string_view stream, ProtocolVersion version, bool bytewise) {
  Outcome o;
  Framer framer;
  auto on_packet = [&](std::uint8_t first, std::string_view body) {
    ++o.frames;
    if (o.frames > 1) return Status::success();
    o.consumed = body.size() + 1 + varint_size(static_cast<std::uint32_t>(body.size()));
    Packet p;
    return decode(first, body, version, p);
  };
  if (!bytewise) {
    o.status = framer.feed(stream, on_packet);
  } else {
    for (char c : stream) {
      o.status = framer.feed(std::string_view(&c, 1), on_packet);
      if (!o.status.ok()) break;
    }
  }
  return o;
}

}  // namespace

TEST_CASE("malformed packets are rejected with the reason code of the rule they break") {
  std::set<std::string_view> names;
  int rows = 0;
  for (const Row& row : kRows) {
    INFO("row: " << std::string(row.name) << " [" << brokerha::test::version_name(row.version)
                 << "] " << std::string(row.wire));
    ++rows;
    CHECK(names.insert(row.name).second);  // names are unique
    const std::string bytes = hex(row.wire);
    const std::string stream = bytes + hex("C0 00");  // a valid PINGREQ after the bad packet
    for (bool bytewise : {false, true}) {
      CAPTURE(bytewise);
      const Outcome o = run(stream, row.version, bytewise);
      INFO("status: " << show(o.status.code) << " " << std::string(o.status.detail));
      CHECK(o.status.code == row.expected);
      CHECK_FALSE(std::string_view(o.status.detail).empty());
      if (row.stage == Stage::framer) {
        CHECK(o.frames == 0);
      } else {
        // Exactly the row's bytes made the packet, and the error stopped the feed before
        // the PINGREQ that follows.
        CHECK(o.frames == 1);
        CHECK(o.consumed == bytes.size());
      }
    }
  }
  CHECK(rows >= 60);
}

TEST_CASE("malformed rows are valid once the offending bytes are fixed") {
  // Spot checks that the table's packets are otherwise well formed: the same layouts with
  // the violation removed decode successfully.
  struct Fixed {
    ProtocolVersion version;
    const char* wire;
  };
  const Fixed ok[] = {
      {v311, "10 0C 00 04 'MQTT' 04 02 00 3C 00 00"},
      {v5, "10 0D 00 04 'MQTT' 05 02 00 3C 00 00 00"},
      {v31, "10 0E 00 06 'MQIsdp' 03 02 00 3C 00 00"},
      {v311, "10 11 00 04 'MQTT' 04 0E 00 3C 00 00 00 01 't' 00 00"},
      {v5, "10 16 00 04 'MQTT' 05 06 00 3C 00 00 00 02 01 01 00 01 't' 00 01 'x'"},
      {v5, "10 10 00 04 'MQTT' 05 42 00 3C 00 00 00 00 01 'p'"},  // password only in v5
      {v311, "20 02 00 05"},
      {v5, "20 03 00 9F 00"},
      {v311, "30 05 00 03 'a/b'"},
      {v5, "30 09 00 03 'a/b' 02 01 01 'x'"},
      {v5, "30 09 00 03 'a/b' 03 23 00 01"},
      {v5, "30 08 00 03 'a/b' 02 0B 01"},
      {v311, "32 07 00 03 'a/b' 00 01"},
      {v5, "40 03 00 01 10"},
      {v5, "62 03 00 01 92"},
      {v31, "6A 02 00 01"},               // PUBREL with DUP: MQTT 3.1 allowed it
      {v31, "8A 06 00 01 00 01 'a' 00"},  // SUBSCRIBE with DUP (3.1)
      {v31, "AA 05 00 01 00 01 'a'"},     // UNSUBSCRIBE with DUP (3.1)
      {v311, "82 06 00 01 00 01 'a' 02"},
      {v5, "82 07 00 01 00 00 01 'a' 2E"},
      {v5, "82 10 00 01 00 00 0A '$share/g/a' 2A"},
      {v5, "82 09 00 01 02 0B 01 00 01 'a' 00"},
      {v311, "90 03 00 01 80"},
      {v5, "90 04 00 01 00 9E"},
      {v311, "A2 05 00 01 00 01 'a'"},
      {v5, "B0 04 00 01 00 11"},
      {v5, "E0 01 8B"},
      {v5, "E0 02 A2 00"},
      {v5, "F0 02 19 00"},
  };
  for (const Fixed& f : ok) {
    INFO("wire: " << std::string(f.wire));
    const std::string bytes = hex(f.wire);
    const Outcome o = run(bytes + hex("C0 00"), f.version, false);
    INFO("status: " << show(o.status.code) << " " << std::string(o.status.detail));
    CHECK(o.status.ok());
    CHECK(o.frames == 2);
    CHECK(o.consumed == bytes.size());
  }
}

TEST_CASE("malformed CONNECT still reports the protocol version it read") {
  // So the caller can answer in the right CONNACK format (MQTT 5.0 section 3.1.2.2).
  struct Row {
    const char* name;
    const char* wire;
    ReasonCode code;
    ProtocolVersion version;
  };
  const Row rows[] = {
      // A level above 5 is answered in the newest format we know (CONNACK 0x84, MQTT 5.0);
      // a lower one in the MQTT 3.1.1 format (return code 1).
      {"MQTT level 6", "10 0C 00 04 'MQTT' 06 02 00 3C 00 00", k84, v5},
      {"MQTT level 3", "10 0C 00 04 'MQTT' 03 02 00 3C 00 00", k84, v311},
      {"MQIsdp level 4", "10 0E 00 06 'MQIsdp' 04 02 00 3C 00 00", k84, v31},
      {"MQIsdp level 5", "10 0E 00 06 'MQIsdp' 05 02 00 3C 00 00", k84, v31},
      {"v5 reserved flag", "10 0D 00 04 'MQTT' 05 03 00 3C 00 00 00", k81, v5},
      {"v5 receive maximum 0", "10 10 00 04 'MQTT' 05 02 00 3C 03 21 00 00 00 00", k82, v5},
      {"v3.1 password only", "10 11 00 06 'MQIsdp' 03 42 00 3C 00 00 00 01 'p'", k82, v31},
      {"v3.1.1 trailing byte", "10 0D 00 04 'MQTT' 04 02 00 3C 00 00 00", k81, v311},
  };
  for (const Row& row : rows) {
    INFO("row: " << std::string(row.name));
    const std::string wire = hex(row.wire);
    for (ProtocolVersion given : {v31, v311, v5}) {  // the connection's version is ignored
      Packet out;
      const Status s = brokerha::test::decode_wire(wire, given, out);
      CHECK(s.code == row.code);
      REQUIRE(std::holds_alternative<Connect>(out));
      CHECK(std::get<Connect>(out).version == row.version);
    }
  }
}

TEST_CASE("malformed packet larger than the maximum packet size is refused before its body") {
  // A PUBLISH announcing 128 bytes of body: 131 bytes with its 3-byte fixed header.
  const std::string header = hex("30 80 01");
  for (bool bytewise : {false, true}) {
    CAPTURE(bytewise);
    Framer framer(130);
    int frames = 0;
    auto on_packet = [&](std::uint8_t, std::string_view) {
      ++frames;
      return Status::success();
    };
    Status s;
    if (bytewise) {
      for (char c : header) {
        s = framer.feed(std::string_view(&c, 1), on_packet);
        if (!s.ok()) break;
      }
    } else {
      s = framer.feed(header, on_packet);
    }
    CHECK(s.code == ReasonCode::packet_too_large);
    CHECK_FALSE(std::string_view(s.detail).empty());
    CHECK(frames == 0);
  }
  // One byte more of allowance and the header is accepted; the body is awaited.
  Framer framer(131);
  int frames = 0;
  const Status s = framer.feed(header, [&](std::uint8_t, std::string_view) {
    ++frames;
    return Status::success();
  });
  CHECK(s.ok());
  CHECK(frames == 0);
  CHECK(framer.buffered() == 3);
  CHECK_FALSE(framer.idle());
}

TEST_CASE("malformed reason codes outside the set of each packet are rejected") {
  // MQTT 5.0 sections 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1 and
  // 3.15.2.1; MQTT 3.1.1 sections 3.2.2.3 and 3.9.3.
  struct Row {
    const char* name;
    ProtocolVersion version;
    const char* prefix;  // the packet up to the reason code (remaining length patched below)
    const char* suffix;
    std::initializer_list<int> allowed;
  };
  const Row rows[] = {
      {"CONNACK v5", v5, "20 00 00", "00", {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                            0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                            0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}},
      {"CONNACK v3.1.1", v311, "20 00 00", "", {0, 1, 2, 3, 4, 5}},
      {"PUBACK v5", v5, "40 00 00 01", "", {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}},
      {"PUBREC v5", v5, "50 00 00 01", "", {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}},
      {"PUBREL v5", v5, "62 00 00 01", "", {0x00, 0x92}},
      {"PUBCOMP v5", v5, "70 00 00 01", "", {0x00, 0x92}},
      {"SUBACK v5",
       v5,
       "90 00 00 01 00",
       "",
       {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}},
      {"SUBACK v3.1.1", v311, "90 00 00 01", "", {0x00, 0x01, 0x02, 0x80}},
      {"UNSUBACK v5", v5, "B0 00 00 01 00", "", {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}},
      {"DISCONNECT v5", v5, "E0 00", "", {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89,
                                          0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
                                          0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
                                          0x9E, 0x9F, 0xA0, 0xA1, 0xA2}},
      {"AUTH v5", v5, "F0 00", "", {0x00, 0x18, 0x19}},
  };
  for (const Row& row : rows) {
    INFO("row: " << std::string(row.name));
    const std::set<int> allowed(row.allowed);
    int accepted = 0;
    for (int code = 0; code <= 0xFF; ++code) {
      std::string wire =
          hex(row.prefix) + std::string(1, static_cast<char>(code)) + hex(row.suffix);
      wire[1] = static_cast<char>(wire.size() - 2);
      Packet out;
      const Status s = brokerha::test::decode_wire(wire, row.version, out);
      const bool expected_ok = allowed.count(code) != 0;
      if (s.ok() != expected_ok) {
        INFO("code 0x" << to_hex(wire.substr(wire.size() - 1 - hex(row.suffix).size(), 1)));
        CHECK(s.ok() == expected_ok);
      }
      if (!s.ok()) CHECK(s.code == k81);
      accepted += s.ok() ? 1 : 0;
    }
    CHECK(accepted == static_cast<int>(allowed.size()));
  }
}

namespace {

// Where MQTT 5.0 allows each property (section 2.2.2.2, table 2-4).
enum Carrier : unsigned {
  kConnect = 1u << 0,
  kWill = 1u << 1,
  kConnack = 1u << 2,
  kPublish = 1u << 3,
  kPuback = 1u << 4,
  kPubrec = 1u << 5,
  kPubrel = 1u << 6,
  kPubcomp = 1u << 7,
  kSubscribe = 1u << 8,
  kSuback = 1u << 9,
  kUnsubscribe = 1u << 10,
  kUnsuback = 1u << 11,
  kDisconnect = 1u << 12,
  kAuth = 1u << 13,
};

struct CarrierPacket {
  Carrier carrier;
  const char* name;
  std::uint8_t first_byte;
  const char* before;  // body bytes before the property length
  const char* after;   // body bytes after the properties
};

const CarrierPacket kCarriers[] = {
    {kConnect, "CONNECT", 0x10, "00 04 'MQTT' 05 02 00 00", "00 00"},
    {kWill, "will", 0x10, "00 04 'MQTT' 05 06 00 00 00 00 00", "00 01 't' 00 00"},
    {kConnack, "CONNACK", 0x20, "00 00", ""},
    {kPublish, "PUBLISH", 0x30, "00 01 't'", ""},
    {kPuback, "PUBACK", 0x40, "00 01 00", ""},
    {kPubrec, "PUBREC", 0x50, "00 01 00", ""},
    {kPubrel, "PUBREL", 0x62, "00 01 00", ""},
    {kPubcomp, "PUBCOMP", 0x70, "00 01 00", ""},
    {kSubscribe, "SUBSCRIBE", 0x82, "00 01", "00 01 'a' 00"},
    {kSuback, "SUBACK", 0x90, "00 01", "00"},
    {kUnsubscribe, "UNSUBSCRIBE", 0xA2, "00 01", "00 01 'a'"},
    {kUnsuback, "UNSUBACK", 0xB0, "00 01", "00"},
    {kDisconnect, "DISCONNECT", 0xE0, "00", ""},
    {kAuth, "AUTH", 0xF0, "18", ""},
};

struct PropertySpec {
  const char* name;
  const char* bytes;  // identifier and a valid value
  unsigned carriers;
};

constexpr unsigned kEveryCarrier = 0x3FFFu;

const PropertySpec kPropertySpecs[] = {
    {"payload format indicator", "01 01", kPublish | kWill},
    {"message expiry interval", "02 00 00 00 01", kPublish | kWill},
    {"content type", "03 00 01 'a'", kPublish | kWill},
    {"response topic", "08 00 01 'a'", kPublish | kWill},
    {"correlation data", "09 00 01 00", kPublish | kWill},
    {"subscription identifier", "0B 01", kPublish | kSubscribe},
    {"session expiry interval", "11 00 00 00 01", kConnect | kConnack | kDisconnect},
    {"assigned client identifier", "12 00 01 'a'", kConnack},
    {"server keep alive", "13 00 01", kConnack},
    {"authentication method", "15 00 01 'a'", kConnect | kConnack | kAuth},
    {"authentication data", "16 00 01 00", kConnect | kConnack | kAuth},
    {"request problem information", "17 01", kConnect},
    {"will delay interval", "18 00 00 00 01", kWill},
    {"request response information", "19 01", kConnect},
    {"response information", "1A 00 01 'a'", kConnack},
    {"server reference", "1C 00 01 'a'", kConnack | kDisconnect},
    {"reason string", "1F 00 01 'a'",
     kConnack | kPuback | kPubrec | kPubrel | kPubcomp | kSuback | kUnsuback | kDisconnect | kAuth},
    {"receive maximum", "21 00 01", kConnect | kConnack},
    {"topic alias maximum", "22 00 01", kConnect | kConnack},
    {"topic alias", "23 00 01", kPublish},
    {"maximum QoS", "24 01", kConnack},
    {"retain available", "25 01", kConnack},
    {"user property", "26 00 01 'a' 00 01 'b'", kEveryCarrier},
    {"maximum packet size", "27 00 00 00 01", kConnect | kConnack},
    {"wildcard subscription available", "28 01", kConnack},
    {"subscription identifier available", "29 01", kConnack},
    {"shared subscription available", "2A 01", kConnack},
};

Status decode_with_properties(const CarrierPacket& c, const std::string& props) {
  std::string body = hex(c.before);
  append_varint(body, static_cast<std::uint32_t>(props.size()));
  body += props + hex(c.after);
  Packet out;
  return decode(c.first_byte, body, v5, out);
}

}  // namespace

TEST_CASE("malformed property in a packet that may not carry it follows the spec table") {
  CHECK(std::size(kPropertySpecs) == 27);
  for (const PropertySpec& prop : kPropertySpecs) {
    for (const CarrierPacket& c : kCarriers) {
      INFO("property " << std::string(prop.name) << " in " << std::string(c.name));
      const bool allowed = (prop.carriers & c.carrier) != 0;
      const Status once = decode_with_properties(c, hex(prop.bytes));
      INFO("status: " << show(once.code) << " " << std::string(once.detail));
      if (allowed) {
        CHECK(once.ok());
      } else {
        CHECK(once.code == k81);
      }
      // Twice: a protocol error, except the properties a packet may repeat.
      if (allowed) {
        const Status twice = decode_with_properties(c, hex(prop.bytes) + hex(prop.bytes));
        const bool repeatable = prop.bytes[0] == '2' && prop.bytes[1] == '6';  // user property
        const bool publish_sub_id = prop.bytes[1] == 'B' && c.carrier == kPublish;
        INFO("twice: " << show(twice.code) << " " << std::string(twice.detail));
        if (repeatable || publish_sub_id) {
          CHECK(twice.ok());
        } else {
          CHECK(twice.code == k82);
        }
      }
    }
  }
}
