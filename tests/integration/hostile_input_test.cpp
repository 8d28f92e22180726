// SPDX-License-Identifier: Apache-2.0
// Hostile input over raw sockets (docs/mqtt.md, "Bad input"): malformed packets, invalid
// UTF-8, wildcards in topic names, oversized packets, protocol violations, clients that never
// read, half-sent packets, connection floods and garbage.
//
// Every attack runs on its own connection and checks the answer the specification names
// (v5: DISCONNECT or CONNACK with the reason code; v3: a plain close or the v3 CONNACK return
// code), that the broker counted it, and that a well-behaved control client subscribed before
// the attack still gets a message published after it, and nothing the attacker published.
// Attacks that need the same broker options share one broker (a table of attacks per test
// case, each attack named in the failure message).

#include <brokerha/broker.hpp>

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "support/process_resources.hpp"
#include "support/raw_client.hpp"

namespace {

using namespace std::chrono_literals;
namespace mqtt = brokerha::mqtt;
namespace raw = brokerha::test::raw;
using brokerha::ReasonCode;
using mqtt::PacketType;
using mqtt::ProtocolVersion;
using raw::Millis;

constexpr auto kV5 = ProtocolVersion::v5;
constexpr auto kV311 = ProtocolVersion::v311;

// "0x8D": reason codes compare as text so that a failure prints them in hex.
std::string hex_code(int code) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  return std::string("0x") + kDigits[(code >> 4) & 0xF] + kDigits[code & 0xF];
}
std::string hex_code(ReasonCode code) { return hex_code(static_cast<int>(code)); }

brokerha::BrokerOptions base_options() {
  brokerha::BrokerOptions o;
  o.listeners.push_back({"127.0.0.1", 0});
  o.io_threads = 2;  // connections migrate between shards after CONNECT
  o.sys_interval = 0ms;
  o.connect_timeout = 3000ms;
  return o;
}

// A broker on loopback with a control client (v5, "control") subscribed to "control/#" at
// QoS 1 before any attack.
class Harness {
 public:
  explicit Harness(brokerha::BrokerOptions options = base_options())
      : keep_alive_(std::min<std::uint16_t>(30, options.max_keepalive)), broker_(options) {
    broker_.start();
    port_ = broker_.listen_endpoints().at(0).port;
    control_ = connect_client(kV5, "control");
    const auto ack = control_->subscribe("control/#", 1);
    INFO("control SUBACK: " << raw::describe(ack));
    REQUIRE(ack);
    const auto* suback = ack->get<mqtt::Suback>();
    REQUIRE(suback != nullptr);
    REQUIRE(suback->reason_codes.size() == 1);
    REQUIRE(hex_code(suback->reason_codes[0]) == hex_code(ReasonCode::granted_qos_1));
  }
  ~Harness() { broker_.stop(); }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  std::uint16_t port() const noexcept { return port_; }
  brokerha::Broker& broker() noexcept { return broker_; }
  std::uint16_t keep_alive() const noexcept { return keep_alive_; }

  /// A TCP connection to the broker, nothing sent yet.
  std::unique_ptr<raw::Client> open(ProtocolVersion version) {
    auto c = std::make_unique<raw::Client>(version);
    const bool opened = c->open(port_);
    INFO("open: " << c->error());
    REQUIRE(opened);
    return c;
  }

  /// A connected client (CONNACK success checked).
  std::unique_ptr<raw::Client> connect_client(ProtocolVersion version, const std::string& id) {
    auto c = open(version);
    const auto ack = c->handshake(c->connect_packet(id, keep_alive_));
    INFO("CONNACK for " << id << ": " << raw::describe(ack));
    REQUIRE(ack);
    const auto* connack = ack->get<mqtt::Connack>();
    REQUIRE(connack != nullptr);
    REQUIRE(hex_code(connack->code) == hex_code(0));
    return c;
  }

  /// A client id not used before in this harness.
  std::string fresh_id(const char* prefix) { return prefix + std::to_string(++ids_); }

  /// Sends a PINGREQ on the control connection so that it stays within its keep alive during
  /// long waits (control_still_works() skips the PINGRESPs).
  void ping_control() { REQUIRE(control_->send(mqtt::Packet(mqtt::Pingreq{}))); }

  /// The next packet on `c`, pinging the control client every 250 ms meanwhile.
  std::optional<raw::Incoming> receive_pinging(raw::Client& c, Millis timeout) {
    const auto deadline = raw::Clock::now() + timeout;
    while (raw::Clock::now() < deadline) {
      if (auto in = c.receive(250ms)) return in;
      if (c.closed() || c.broken()) return std::nullopt;
      ping_control();
    }
    return std::nullopt;
  }

  /// A fresh client publishes a QoS 1 probe to "control/probe"; the control client must get
  /// it, and it must be the first message it gets since the previous probe: nothing an
  /// attacker published may have been routed.
  void control_still_works() {
    ++probes_;
    const std::string payload = "probe payload " + std::to_string(probes_);
    auto pub = connect_client(kV311, "probe-" + std::to_string(probes_));
    REQUIRE(pub->publish("control/probe", payload, 1, 7));
    const auto ack = pub->receive_type(PacketType::puback);
    INFO("probe PUBACK: " << raw::describe(ack));
    REQUIRE(ack);
    REQUIRE(ack->get<mqtt::Puback>() != nullptr);
    CHECK(ack->get<mqtt::Puback>()->packet_id == 7);

    const auto got = control_->receive_type(PacketType::publish);
    INFO("control client got: " << raw::describe(got));
    REQUIRE(got);
    const auto* p = got->get<mqtt::Publish>();
    REQUIRE(p != nullptr);
    CHECK(p->topic == "control/probe");
    CHECK(p->payload == payload);
    if (p->qos == 1) {
      mqtt::Puback back;
      back.packet_id = p->packet_id;
      REQUIRE(control_->send(mqtt::Packet(back)));
    }
    REQUIRE(pub->send(mqtt::Packet(mqtt::Disconnect{})));
  }

  /// True once stats().protocol_errors exceeds `before` (within a bounded wait).
  bool protocol_errors_above(std::uint64_t before) {
    return raw::wait_until([&] { return broker_.stats().protocol_errors > before; }, 3s);
  }

 private:
  std::uint16_t keep_alive_;
  brokerha::Broker broker_;
  std::uint16_t port_ = 0;
  std::unique_ptr<raw::Client> control_;
  int probes_ = 0;
  int ids_ = 0;
};

// ---- attacks ---------------------------------------------------------------------------------

// What the broker must answer an attack with.
enum class Answer {
  disconnect,                // DISCONNECT `code` (v5), then close
  connack,                   // CONNACK `code` (decoded as the attack's version), then close
  close,                     // close without sending anything
  close_or_refuse,           // close, after at most a CONNACK that refuses
  accepted_then_disconnect,  // CONNACK success (a pipelined CONNECT), DISCONNECT `code`, close
};

struct Attack {
  std::string name;
  ProtocolVersion version = kV5;  // the attacker's version (answers are decoded with it)
  bool connect_first = true;      // a valid CONNECT, accepted, before `bytes`
  std::string bytes;
  Answer answer = Answer::disconnect;
  int code = 0;
  bool counted = true;  // counted in stats().protocol_errors
  Millis within{3000};  // the answer and the close come within this long
};

// Runs one attack on a fresh connection: the answer, the close, the count, and the control
// client.
void run(Harness& h, const Attack& a) {
  CAPTURE(a.name);
  INFO("sent: " << raw::to_hex(a.bytes, 48));
  const auto errors_before = h.broker().stats().protocol_errors;
  auto c =
      a.connect_first ? h.connect_client(a.version, h.fresh_id("attacker-")) : h.open(a.version);
  const auto start = raw::Clock::now();
  const bool sent = c->send_raw(a.bytes);
  INFO("send: " << c->error());
  CHECK(sent);
  std::vector<raw::Incoming> seen;
  CHECK(c->wait_closed(a.within, &seen));
  CHECK(raw::Clock::now() - start <= a.within);
  std::string received;
  for (const auto& in : seen) received += in.describe() + "; ";
  INFO("received: " << received);
  switch (a.answer) {
    case Answer::disconnect: {
      REQUIRE(seen.size() == 1);
      const auto* d = seen[0].get<mqtt::Disconnect>();
      REQUIRE(d != nullptr);
      CHECK(hex_code(d->reason_code) == hex_code(a.code));
      break;
    }
    case Answer::connack: {
      REQUIRE(seen.size() == 1);
      const auto* ack = seen[0].get<mqtt::Connack>();
      REQUIRE(ack != nullptr);
      CHECK(hex_code(ack->code) == hex_code(a.code));
      CHECK_FALSE(ack->session_present);
      break;
    }
    case Answer::accepted_then_disconnect: {
      REQUIRE(seen.size() == 2);
      const auto* ack = seen[0].get<mqtt::Connack>();
      REQUIRE(ack != nullptr);
      CHECK(hex_code(ack->code) == hex_code(0));
      const auto* d = seen[1].get<mqtt::Disconnect>();
      REQUIRE(d != nullptr);
      CHECK(hex_code(d->reason_code) == hex_code(a.code));
      break;
    }
    case Answer::close:
      CHECK(seen.empty());
      break;
    case Answer::close_or_refuse:
      CHECK(seen.size() <= 1);
      for (const auto& in : seen) {
        const auto* ack = in.get<mqtt::Connack>();
        REQUIRE(ack != nullptr);
        CHECK(ack->code != 0);
      }
      break;
  }
  if (a.counted) CHECK(h.protocol_errors_above(errors_before));
  h.control_still_works();
}

// ---- packet bytes -----------------------------------------------------------------------------

// A CONNECT: protocol name, level, flags, keep alive 30, (v5) `properties`, client id, then
// `rest` (the will, user name and password fields the flags announce).
std::string connect_bytes(std::string_view name, std::uint8_t level, std::uint8_t flags, bool v5,
                          std::string_view client_id, std::string_view rest = {},
                          std::string_view properties = {}) {
  std::string body = raw::str(name);
  body += static_cast<char>(level);
  body += static_cast<char>(flags);
  body += raw::u16(30);
  if (v5) body += raw::props(properties);
  body += raw::str(client_id);
  body += rest;
  return raw::frame(0x10, body);
}

// A v5 PUBLISH with raw properties.
std::string v5_publish(std::string_view topic, std::string_view properties,
                       std::string_view payload, std::uint8_t qos = 0,
                       std::uint16_t packet_id = 0) {
  std::string body = raw::str(topic);
  if (qos > 0) body += raw::u16(packet_id);
  body += raw::props(properties);
  body += payload;
  return raw::frame(static_cast<std::uint8_t>(0x30 | (qos << 1)), body);
}

// A v3.1.1 PUBLISH.
std::string v311_publish(std::string_view topic, std::string_view payload, std::uint8_t qos = 0,
                         std::uint16_t packet_id = 0) {
  std::string body = raw::str(topic);
  if (qos > 0) body += raw::u16(packet_id);
  body += payload;
  return raw::frame(static_cast<std::uint8_t>(0x30 | (qos << 1)), body);
}

// A v5 SUBSCRIBE of one filter at QoS 0.
std::string v5_subscribe(std::string_view filter, std::uint16_t packet_id = 1,
                         std::string_view properties = {}) {
  return raw::frame(0x82, raw::u16(packet_id) + raw::props(properties) + raw::str(filter) + '\0');
}

// Waits until every client in `clients` sees the server close its connection, polling them
// together; returns how many did before `deadline`. `seen` collects what they received.
std::size_t wait_all_closed(const std::vector<raw::Client*>& clients,
                            raw::Clock::time_point deadline, std::vector<raw::Incoming>& seen) {
  std::vector<raw::Client*> open = clients;
  std::size_t closed = 0;
  while (!open.empty() && raw::Clock::now() < deadline) {
    std::vector<pollfd> fds;
    fds.reserve(open.size());
    for (raw::Client* c : open) fds.push_back(pollfd{c->fd(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
    std::vector<raw::Client*> still;
    for (std::size_t i = 0; i < open.size(); ++i) {
      if (fds[i].revents != 0 && open[i]->wait_closed(0ms, &seen)) {
        ++closed;
      } else {
        still.push_back(open[i]);
      }
    }
    open.swap(still);
  }
  return closed;
}

}  // namespace

// ==== CONNECT ==================================================================================

TEST_CASE("hostile: malformed CONNECT is refused and closed") {
  Harness h;
  const std::vector<Attack> attacks = {
      // MQTT 5.0 / 3.1.1 3.1.2.1: the server may close at once; it must not accept.
      {"unknown protocol name", kV5, false, connect_bytes("MQTX", 5, 0x02, true, "x"),
       Answer::close_or_refuse},
      {"lower-case protocol name", kV311, false, connect_bytes("mqtt", 4, 0x02, false, "x"),
       Answer::close_or_refuse},
      // MQTT 3.1.1 3.1.2.2: return code 1 (unacceptable protocol level) for v3 clients.
      {"MQIsdp level 4", kV311, false, connect_bytes("MQIsdp", 4, 0x02, false, "x"),
       Answer::connack, 1},
      {"MQTT level 3", kV311, false, connect_bytes("MQTT", 3, 0x02, false, "x"), Answer::connack,
       1},
      {"MQTT level 0", kV311, false, connect_bytes("MQTT", 0, 0x02, false, "x"), Answer::connack,
       1},
      // MQTT 5.0 3.1.2.3: the reserved flag must be 0: Malformed Packet.
      {"v5 reserved flag", kV5, false, connect_bytes("MQTT", 5, 0x03, true, "x"), Answer::connack,
       0x81},
      {"v3.1.1 reserved flag", kV311, false, connect_bytes("MQTT", 4, 0x03, false, "x"),
       Answer::close},
      {"v5 will QoS 3", kV5, false,
       connect_bytes("MQTT", 5, 0x1E, true, "x", raw::props() + raw::str("w") + raw::str("p")),
       Answer::connack, 0x81},
      {"v5 will retain without will flag", kV5, false, connect_bytes("MQTT", 5, 0x22, true, "x"),
       Answer::connack, 0x81},
      {"v5 will topic with a wildcard", kV5, false,
       connect_bytes("MQTT", 5, 0x06, true, "x", raw::props() + raw::str("w/#") + raw::str("p")),
       Answer::connack, 0x90},
      {"v5 client id runs past the end", kV5, false,
       raw::frame(0x10, raw::str("MQTT") + "\x05\x02" + raw::u16(30) + raw::props() + raw::u16(10) +
                            "abc"),
       Answer::connack, 0x81},
      {"v5 user name flag without a user name", kV5, false,
       connect_bytes("MQTT", 5, 0x82, true, "x"), Answer::connack, 0x81},
      {"v5 properties run past the end", kV5, false,
       raw::frame(0x10, raw::str("MQTT") + "\x05\x02" + raw::u16(30) + "\x09\x11"), Answer::connack,
       0x81},
      {"v5 bytes after the end", kV5, false, connect_bytes("MQTT", 5, 0x02, true, "x", "zz"),
       Answer::connack, 0x81},
      {"v5 property twice", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "x", {}, raw::hex("11 00 00 00 0A 11 00 00 00 0B")),
       Answer::connack, 0x82},
      {"v5 receive maximum 0", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "x", {}, raw::hex("21 00 00")), Answer::connack, 0x82},
      {"v5 property not allowed in CONNECT", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "x", {}, raw::hex("23 00 01")), Answer::connack, 0x81},
      {"v5 maximum packet size 0", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "x", {}, raw::hex("27 00 00 00 00")), Answer::connack,
       0x82},
      {"v5 request problem information 2", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "x", {}, raw::hex("17 02")), Answer::connack, 0x82},
      {"v5 will property not allowed in a will", kV5, false,
       connect_bytes("MQTT", 5, 0x06, true, "x",
                     raw::props(raw::hex("23 00 01")) + raw::str("w") + raw::str("p")),
       Answer::connack, 0x81},
      {"v5 unknown property", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "x", {}, raw::hex("7F 00")), Answer::connack, 0x81},
      {"v5 enhanced authentication", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "x", {}, raw::hex("15 00 05 'SCRAM'")), Answer::connack,
       0x8C, /*counted=*/false},
      {"v3.1.1 client id runs past the end", kV311, false,
       raw::frame(0x10, raw::str("MQTT") + "\x04\x02" + raw::u16(30) + raw::u16(10) + "abc"),
       Answer::close},
      {"v3.1.1 password without user name", kV311, false,
       connect_bytes("MQTT", 4, 0x42, false, "x", raw::str("pw")), Answer::close},
      // Strings: invalid UTF-8 (MQTT 5.0 1.5.4: Malformed Packet).
      {"v5 invalid UTF-8 client id", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, raw::hex("'id' FF FE")), Answer::connack, 0x81},
      {"v5 U+0000 in the client id", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, std::string("i\0d", 3)), Answer::connack, 0x81},
      {"v5 invalid UTF-8 user name", kV5, false,
       connect_bytes("MQTT", 5, 0x82, true, "x", raw::str(raw::hex("'bob' ED B0 80"))),
       Answer::connack, 0x81},
      {"v5 invalid UTF-8 will topic", kV5, false,
       connect_bytes("MQTT", 5, 0x06, true, "x",
                     raw::props() + raw::str(raw::hex("'w/' C3 28")) + raw::str("p")),
       Answer::connack, 0x81},
      {"v3.1.1 invalid UTF-8 client id", kV311, false,
       connect_bytes("MQTT", 4, 0x02, false, raw::hex("'id' C0 80")), Answer::close},
  };
  for (const Attack& a : attacks) run(h, a);
}

TEST_CASE("hostile: CONNECT level 6 laid out as v5 gets CONNACK 0x84") {
  // MQTT 5.0 3.1.2.2: a server that does not accept the protocol version MAY send CONNACK
  // 0x84 (Unsupported Protocol Version) and MUST close. A level above 5 comes from a client
  // that reads v5 CONNACKs; levels below 5 get the v3 return code 1 (see above).
  Harness h;
  run(h, {"MQTT level 6", kV5, false, connect_bytes("MQTT", 6, 0x02, true, "level6"),
          Answer::connack, 0x84});
}

TEST_CASE("hostile: packets before CONNECT are closed and not acted on") {
  Harness h;
  const std::vector<Attack> attacks = {
      // Would reach the control client if it were routed.
      {"PUBLISH", kV311, false, v311_publish("control/leak", "before CONNECT"), Answer::close},
      {"SUBSCRIBE", kV311, false, raw::frame(0x82, raw::u16(1) + raw::str("#") + '\0'),
       Answer::close},
      {"PINGREQ", kV311, false, raw::hex("C0 00"), Answer::close},
      {"DISCONNECT", kV311, false, raw::hex("E0 00"), Answer::close},
      {"PUBACK", kV311, false, raw::hex("40 02 00 01"), Answer::close},
      {"reserved type 0", kV311, false, raw::hex("00 00"), Answer::close},
      // Framing errors close before any body arrives, long before connect_timeout (3 s).
      {"CONNECT announcing 256 MiB", kV5, false, raw::hex("10 FF FF FF 7F"), Answer::close, 0, true,
       2000ms},
      {"five remaining length bytes", kV5, false, raw::hex("10 FF FF FF FF 01"), Answer::close, 0,
       true, 2000ms},
  };
  for (const Attack& a : attacks) run(h, a);
}

// ==== after CONNECT ============================================================================

TEST_CASE("hostile: v5 protocol violations get DISCONNECT with the reason code") {
  Harness h;
  constexpr int k81 = 0x81;  // Malformed Packet
  constexpr int k82 = 0x82;  // Protocol Error
  auto publish_with_topic = [](std::string_view topic) { return v5_publish(topic, "", "x"); };
  std::string qos3 = v5_publish("control/q3", "", "x", 1, 5);
  qos3[0] = static_cast<char>(0x36);
  std::string dup0 = v5_publish("control/dup", "", "x");
  dup0[0] = static_cast<char>(0x38);
  const std::vector<Attack> attacks = {
      {"second CONNECT", kV5, true, connect_bytes("MQTT", 5, 0x02, true, "again"),
       Answer::disconnect, k82},
      // Strings in PUBLISH and SUBSCRIBE.
      {"topic: bad continuation byte", kV5, true, publish_with_topic(raw::hex("'control/' C3 28")),
       Answer::disconnect, k81},
      {"topic: overlong '/'", kV5, true, publish_with_topic(raw::hex("'control' C0 AF 'x'")),
       Answer::disconnect, k81},
      {"topic: surrogate", kV5, true, publish_with_topic(raw::hex("'control/' ED A0 80")),
       Answer::disconnect, k81},
      {"topic: above U+10FFFF", kV5, true, publish_with_topic(raw::hex("'control/' F4 90 80 80")),
       Answer::disconnect, k81},
      {"topic: truncated sequence", kV5, true, publish_with_topic(raw::hex("'control/' E2 82")),
       Answer::disconnect, k81},
      {"topic: U+0000", kV5, true, publish_with_topic(std::string("control/a\0b", 11)),
       Answer::disconnect, k81},
      {"filter: U+0000", kV5, true, v5_subscribe(std::string("control/\0", 9)), Answer::disconnect,
       k81},
      {"filter: invalid UTF-8", kV5, true, v5_subscribe(raw::hex("'control/' FF")),
       Answer::disconnect, k81},
      {"user property: invalid UTF-8", kV5, true,
       v5_publish("control/up", raw::hex("26 00 01 'k' 00 02 C3 28"), "x"), Answer::disconnect,
       k81},
      {"payload format 1 with invalid UTF-8 payload", kV5, true,
       v5_publish("control/pf", raw::hex("01 01"), raw::hex("C3 28")), Answer::disconnect, 0x99},
      // Topic names (MQTT 5.0 4.7: no wildcards, not empty without an alias).
      {"topic: '+' level", kV5, true, publish_with_topic("control/+"), Answer::disconnect, 0x90},
      {"topic: '#' level", kV5, true, publish_with_topic("control/#"), Answer::disconnect, 0x90},
      {"topic: '+' inside a level", kV5, true, publish_with_topic("control/a+b"),
       Answer::disconnect, 0x90},
      {"topic: only '#'", kV5, true, publish_with_topic("#"), Answer::disconnect, 0x90},
      {"topic: empty without alias", kV5, true, publish_with_topic(""), Answer::disconnect, k82},
      {"topic alias never established", kV5, true, v5_publish("", raw::hex("23 00 03"), "x"),
       Answer::disconnect, k82},
      {"topic alias 0", kV5, true, v5_publish("control/alias", raw::hex("23 00 00"), "x"),
       Answer::disconnect, 0x94},
      // Framing.
      {"five remaining length bytes", kV5, true, raw::hex("30 FF FF FF FF 01 00"),
       Answer::disconnect, k81},
      {"remaining length not minimal", kV5, true, raw::hex("C0 80 00"), Answer::disconnect, k81},
      {"PUBLISH body shorter than its topic", kV5, true, raw::hex("30 03 00 09 'a'"),
       Answer::disconnect, k81},
      // Packet identifiers.
      {"packet id 0: QoS 1 PUBLISH", kV5, true, v5_publish("control/zero", "", "x", 1, 0),
       Answer::disconnect, k82},
      {"packet id 0: QoS 2 PUBLISH", kV5, true, v5_publish("control/zero", "", "x", 2, 0),
       Answer::disconnect, k82},
      {"packet id 0: SUBSCRIBE", kV5, true, v5_subscribe("a/b", 0), Answer::disconnect, k82},
      {"packet id 0: UNSUBSCRIBE", kV5, true,
       raw::frame(0xA2, raw::u16(0) + raw::props() + raw::str("a/b")), Answer::disconnect, k82},
      {"packet id 0: PUBACK", kV5, true, raw::hex("40 02 00 00"), Answer::disconnect, k82},
      // SUBSCRIBE contents.
      {"SUBSCRIBE without a filter", kV5, true, raw::frame(0x82, raw::u16(1) + raw::props()),
       Answer::disconnect, k82},
      {"UNSUBSCRIBE without a filter", kV5, true, raw::frame(0xA2, raw::u16(1) + raw::props()),
       Answer::disconnect, k82},
      {"filter: '#' not last", kV5, true, v5_subscribe("a/#/b"), Answer::disconnect, 0x8F},
      {"filter: '+' inside a level", kV5, true, v5_subscribe("a+/b"), Answer::disconnect, 0x8F},
      {"filter: '#' inside a level", kV5, true, v5_subscribe("a/b#"), Answer::disconnect, 0x8F},
      {"filter: empty", kV5, true, v5_subscribe(""), Answer::disconnect, 0x8F},
      {"filter: shared without a filter", kV5, true, v5_subscribe("$share/g"), Answer::disconnect,
       0x8F},
      {"filter: shared with an empty group", kV5, true, v5_subscribe("$share//a"),
       Answer::disconnect, 0x8F},
      {"filter: shared group with a wildcard", kV5, true, v5_subscribe("$share/g+/a"),
       Answer::disconnect, 0x8F},
      {"subscription options: reserved bits", kV5, true,
       raw::frame(0x82, raw::u16(1) + raw::props() + raw::str("a") + '\xC0'), Answer::disconnect,
       k81},
      {"subscription options: QoS 3", kV5, true,
       raw::frame(0x82, raw::u16(1) + raw::props() + raw::str("a") + '\x03'), Answer::disconnect,
       k81},
      {"subscription options: retain handling 3", kV5, true,
       raw::frame(0x82, raw::u16(1) + raw::props() + raw::str("a") + '\x30'), Answer::disconnect,
       k82},
      {"no local on a shared subscription", kV5, true,
       raw::frame(0x82, raw::u16(1) + raw::props() + raw::str("$share/g/a") + '\x04'),
       Answer::disconnect, k82},
      {"subscription identifier 0", kV5, true, v5_subscribe("a", 1, raw::hex("0B 00")),
       Answer::disconnect, k82},
      // QoS and fixed header flags.
      {"PUBLISH QoS 3", kV5, true, qos3, Answer::disconnect, k81},
      {"DUP on QoS 0", kV5, true, dup0, Answer::disconnect, k81},
      {"SUBSCRIBE flags 0000", kV5, true,
       raw::frame(0x80, raw::u16(1) + raw::props() + raw::str("a") + '\0'), Answer::disconnect,
       k81},
      {"PUBREL flags 0000", kV5, true, raw::hex("60 02 00 01"), Answer::disconnect, k81},
      {"PINGREQ flags 0001", kV5, true, raw::hex("C1 00"), Answer::disconnect, k81},
      {"PINGREQ with a body", kV5, true, raw::hex("C0 01 00"), Answer::disconnect, k81},
      {"reserved packet type 0", kV5, true, raw::hex("00 00"), Answer::disconnect, k81},
      // Properties.
      {"unknown property", kV5, true, v5_publish("control/p", raw::hex("7F 00"), "x"),
       Answer::disconnect, k81},
      {"property not allowed in PUBLISH", kV5, true,
       v5_publish("control/p", raw::hex("11 00 00 00 05"), "x"), Answer::disconnect, k81},
      {"property twice in PUBLISH", kV5, true,
       v5_publish("control/p", raw::hex("01 00 01 00"), "x"), Answer::disconnect, k82},
      {"subscription identifier in a client PUBLISH", kV5, true,
       v5_publish("control/subid", raw::hex("0B 01"), "x"), Answer::disconnect, k82},
      // Packets a client must not send.
      {"AUTH", kV5, true, raw::hex("F0 00"), Answer::disconnect, k82},
      {"AUTH continue authentication", kV5, true, raw::hex("F0 08 18 06 15 00 03 'abc'"),
       Answer::disconnect, k82},
      {"CONNACK from a client", kV5, true, raw::hex("20 03 00 00 00"), Answer::disconnect, k82},
      {"SUBACK from a client", kV5, true, raw::hex("90 04 00 01 00 00"), Answer::disconnect, k82},
      {"UNSUBACK from a client", kV5, true, raw::hex("B0 04 00 01 00 00"), Answer::disconnect, k82},
      {"PINGRESP from a client", kV5, true, raw::hex("D0 00"), Answer::disconnect, k82},
      {"UNSUBSCRIBE: invalid filter", kV5, true,
       raw::frame(0xA2, raw::u16(1) + raw::props() + raw::str("a/#/b")), Answer::disconnect, 0x8F},
      {"UNSUBSCRIBE: invalid UTF-8", kV5, true,
       raw::frame(0xA2, raw::u16(1) + raw::props() + raw::str(raw::hex("'a/' C3 28"))),
       Answer::disconnect, k81},
      // Violations pipelined in the same write as CONNECT: parked while the session is
      // attached (possibly on another I/O thread), then handled in order.
      {"pipelined: CONNECT, CONNECT", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "pipe-a") +
           connect_bytes("MQTT", 5, 0x02, true, "pipe-a2"),
       Answer::accepted_then_disconnect, k82},
      {"pipelined: CONNECT, wildcard PUBLISH", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "pipe-b") + publish_with_topic("control/#"),
       Answer::accepted_then_disconnect, 0x90},
      {"pipelined: CONNECT, AUTH", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "pipe-c") + raw::hex("F0 00"),
       Answer::accepted_then_disconnect, k82},
      {"pipelined: CONNECT, packet type 0", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "pipe-d") + raw::hex("00 00"),
       Answer::accepted_then_disconnect, k81},
      {"pipelined: CONNECT, valid PUBLISH, invalid PUBLISH", kV5, false,
       connect_bytes("MQTT", 5, 0x02, true, "pipe-e") + v5_publish("victim/ok", "", "x") +
           publish_with_topic("control/+"),
       Answer::accepted_then_disconnect, 0x90},
      // MQTT 5.0 3.14.2.2.2: Session Expiry was 0 at CONNECT, so it cannot be set now.
      {"session expiry on DISCONNECT after 0", kV5, true, raw::hex("E0 07 00 05 11 00 00 00 0A"),
       Answer::disconnect, k82},
  };
  for (const Attack& a : attacks) run(h, a);
}

TEST_CASE("hostile: v3.1.1 protocol violations close the connection silently") {
  Harness h;
  const std::vector<Attack> attacks = {
      {"second CONNECT", kV311, true, connect_bytes("MQTT", 4, 0x02, false, "again"),
       Answer::close},
      {"wildcard topic", kV311, true, v311_publish("control/#", "x"), Answer::close},
      {"empty topic", kV311, true, v311_publish("", "x"), Answer::close},
      {"invalid UTF-8 topic", kV311, true, v311_publish(raw::hex("'control/' C3 28"), "x"),
       Answer::close},
      {"U+0000 in a topic", kV311, true, v311_publish(std::string("control/\0", 9), "x"),
       Answer::close},
      {"packet id 0", kV311, true, v311_publish("control/a", "x", 1, 0), Answer::close},
      {"QoS 3", kV311, true, raw::frame(0x36, raw::str("control/a") + raw::u16(1)), Answer::close},
      {"packet type 15 (AUTH)", kV311, true, raw::hex("F0 00"), Answer::close},
      {"packet type 0", kV311, true, raw::hex("00 00"), Answer::close},
      {"invalid filter", kV311, true, raw::frame(0x82, raw::u16(1) + raw::str("a/#/b") + '\0'),
       Answer::close},
      {"SUBSCRIBE without a filter", kV311, true, raw::frame(0x82, raw::u16(1)), Answer::close},
      {"subscription options above QoS 2", kV311, true,
       raw::frame(0x82, raw::u16(1) + raw::str("a/b") + '\x04'), Answer::close},
      {"CONNACK from a client", kV311, true, raw::hex("20 02 00 00"), Answer::close},
      {"DISCONNECT with a body", kV311, true, raw::hex("E0 01 00"), Answer::close},
      {"five remaining length bytes", kV311, true, raw::hex("30 FF FF FF FF 01"), Answer::close},
  };
  for (const Attack& a : attacks) run(h, a);
}

TEST_CASE("hostile: limits on topic aliases, packet size and receive maximum") {
  auto o = base_options();
  o.topic_alias_maximum = 5;
  o.max_packet_size = 1024;
  o.receive_maximum = 2;
  Harness h(o);

  SUBCASE("CONNACK announces the limits") {
    raw::Client c(kV5);
    REQUIRE(c.open(h.port()));
    const auto ack = c.handshake(c.connect_packet("limits"));
    INFO("CONNACK: " << raw::describe(ack));
    REQUIRE(ack);
    const auto* connack = ack->get<mqtt::Connack>();
    REQUIRE(connack != nullptr);
    CHECK(connack->properties.topic_alias_maximum == std::optional<std::uint16_t>(5));
    CHECK(connack->properties.maximum_packet_size == std::optional<std::uint32_t>(1024));
    CHECK(connack->properties.receive_maximum == std::optional<std::uint16_t>(2));
  }

  SUBCASE("topic alias above the maximum: DISCONNECT 0x94") {
    run(h, {"alias 6 of 5", kV5, true, v5_publish("control/alias", raw::hex("23 00 06"), "x"),
            Answer::disconnect, 0x94});
    run(h, {"alias 65535 of 5", kV5, true, v5_publish("control/alias", raw::hex("23 FF FF"), "x"),
            Answer::disconnect, 0x94});
  }

  SUBCASE("packets above max_packet_size: DISCONNECT 0x95, the limit itself is fine") {
    // A PUBLISH of exactly 1024 bytes is accepted; one byte more is not.
    auto sized = [](std::size_t total) {
      std::string payload;
      std::string p = v5_publish("victim/size", "", payload, 1, 1);
      while (p.size() < total) {
        payload.push_back('s');
        p = v5_publish("victim/size", "", payload, 1, 1);
      }
      return p;
    };
    const std::string at_limit = sized(1024);
    REQUIRE(at_limit.size() == 1024);
    auto c = h.connect_client(kV5, "sizer");
    REQUIRE(c->send_raw(at_limit));
    const auto ack = c->receive();
    INFO("answer to 1024 bytes: " << raw::describe(ack));
    REQUIRE(ack);
    CHECK(ack->get<mqtt::Puback>() != nullptr);

    const std::string above = sized(1025);
    REQUIRE(above.size() == 1025);
    run(h, {"1025-byte PUBLISH", kV5, true, above, Answer::disconnect, 0x95});
    run(h, {"4 KiB PUBLISH", kV5, true, v5_publish("control/big", "", std::string(4096, 'b')),
            Answer::disconnect, 0x95});
    // The size is checked when the remaining length arrives, before any of the body: the
    // answer comes at once, not after a keep-alive or read timeout.
    run(h, {"2 MiB announced, no body", kV5, true, raw::hex("30 80 80 80 01"), Answer::disconnect,
            0x95, true, 2000ms});
    run(h, {"1022 announced, no body", kV5, true, raw::hex("30 FE 07"), Answer::disconnect, 0x95,
            true, 2000ms});
  }

  SUBCASE("QoS 2 beyond receive_maximum: DISCONNECT 0x93") {
    auto c = h.connect_client(kV5, "greedy");
    // Two QoS 2 messages get PUBREC; without PUBREL both stay unacknowledged, and the third
    // exceeds the receive maximum (MQTT 5.0 3.3.4).
    for (std::uint16_t id = 1; id <= 2; ++id) {
      REQUIRE(c->send_raw(v5_publish("victim/q2", "", "x", 2, id)));
      const auto rec = c->receive();
      INFO("expected PUBREC " << id << ": " << raw::describe(rec));
      REQUIRE(rec);
      REQUIRE(rec->get<mqtt::Pubrec>() != nullptr);
      CHECK(rec->get<mqtt::Pubrec>()->packet_id == id);
    }
    REQUIRE(c->send_raw(v5_publish("control/q2", "", "third", 2, 3)));
    const auto in = c->receive();
    INFO("received: " << raw::describe(in));
    REQUIRE(in);
    REQUIRE(in->get<mqtt::Disconnect>() != nullptr);
    CHECK(hex_code(in->get<mqtt::Disconnect>()->reason_code) == hex_code(0x93));
    CHECK(c->wait_closed());
    h.control_still_works();  // "third" was not routed to the control client
  }
}

// MQTT 3.1 allowed the DUP flag on a resent PUBREL (fixed header 0x6A); a 3.1 client that
// resends it after a reconnect must get its PUBCOMP, not a close for a malformed packet.
TEST_CASE("hostile: an MQTT 3.1 client's PUBREL with DUP completes its QoS 2 flow") {
  Harness h;
  constexpr auto kV31 = ProtocolVersion::v31;
  auto c = h.connect_client(kV31, "mqtt31-dup");
  REQUIRE(c->send_raw(v311_publish("victim/v31", "qos2 from 3.1", 2, 9)));
  const auto rec = c->receive();
  INFO("answer to PUBLISH: " << raw::describe(rec));
  REQUIRE(rec);
  REQUIRE(rec->get<mqtt::Pubrec>() != nullptr);
  REQUIRE(c->send_raw(raw::hex("6A 02 00 09")));  // PUBREL, DUP set
  const auto comp = c->receive();
  INFO("answer to PUBREL with DUP: " << raw::describe(comp));
  REQUIRE(comp);
  REQUIRE(comp->get<mqtt::Pubcomp>() != nullptr);
  CHECK(comp->get<mqtt::Pubcomp>()->packet_id == 9);
  CHECK_FALSE(c->closed());
}

// ==== closing =================================================================================

// After a DISCONNECT or a refused CONNACK the server shuts down its write side and reads and
// discards what the client still sends (at most 1 s or 64 KiB) before it closes: bytes the
// client had in flight do not make the kernel answer with a reset, so the client's writes do
// not fail with EPIPE and it reads the reason, then an orderly end.
TEST_CASE("hostile: a server-initiated close lingers: the client's late writes are not reset") {
  auto o = base_options();
  o.receive_maximum = 2;
  Harness h(o);
  // Two writes 50 ms apart after the answer was read: after a plain close the first draws a
  // reset and the second fails.
  auto late_writes_succeed = [](raw::Client& c) {
    for (int i = 0; i < 2; ++i) {
      std::this_thread::sleep_for(50ms);
      const bool sent = c.send_raw(v311_publish("late/write", std::string(512, 'l')));
      INFO("late write " << i << ": " << c.error());
      CHECK(sent);
    }
    CHECK(c.wait_closed(3000ms));
    CHECK_FALSE(c.was_reset());
  };

  SUBCASE("DISCONNECT 0x93 with the client's next packets in flight") {
    auto c = h.connect_client(kV5, "greedy");
    for (std::uint16_t id = 1; id <= 2; ++id) {
      REQUIRE(c->send_raw(v5_publish("victim/q2", "", "x", 2, id)));
      const auto rec = c->receive();
      REQUIRE(rec);
      REQUIRE(rec->get<mqtt::Pubrec>() != nullptr);
    }
    std::string burst = v5_publish("victim/q2", "", "third", 2, 3);
    for (int i = 0; i < 16; ++i) burst += v5_publish("victim/more", "", std::string(256, 'm'));
    REQUIRE(c->send_raw(burst));
    const auto in = c->receive();
    INFO("received: " << raw::describe(in));
    REQUIRE(in);
    REQUIRE(in->get<mqtt::Disconnect>() != nullptr);
    CHECK(hex_code(in->get<mqtt::Disconnect>()->reason_code) == hex_code(0x93));
    late_writes_succeed(*c);
  }

  SUBCASE("a refused CONNACK") {
    auto c = h.open(kV5);
    REQUIRE(c->send_raw(connect_bytes("MQTT", 6, 0x02, true, "level6") + raw::hex("C0 00")));
    const auto in = c->receive();
    INFO("received: " << raw::describe(in));
    REQUIRE(in);
    REQUIRE(in->get<mqtt::Connack>() != nullptr);
    CHECK(hex_code(in->get<mqtt::Connack>()->code) == hex_code(0x84));
    late_writes_succeed(*c);
  }

  SUBCASE("the linger is bounded: a client that keeps writing is closed within about 1 s") {
    auto c = h.open(kV5);
    REQUIRE(c->send_raw(connect_bytes("MQTT", 6, 0x02, true, "level6")));
    REQUIRE(c->receive());
    const auto start = raw::Clock::now();
    bool ended = false;
    while (raw::Clock::now() - start < 5s) {
      if (!c->send_raw(std::string(1024, 'g'), 200ms)) {
        ended = true;
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    CHECK(ended);
    CHECK(raw::Clock::now() - start < 3s);
  }
  h.control_still_works();
}

// ==== slow, partial and many clients ===========================================================

TEST_CASE("hostile: a subscriber that never reads is bounded by the queue limits") {
  auto o = base_options();
  o.max_queued_messages = 50;
  Harness h(o);
  raw::Client slow(kV311);
  REQUIRE(slow.open(h.port(), 3s, 4096));  // a small receive window fills quickly
  const auto ack = slow.handshake(slow.connect_packet("slow", h.keep_alive()));
  REQUIRE(ack);
  REQUIRE(ack->get<mqtt::Connack>() != nullptr);
  const auto suback = slow.subscribe("flood/#", 0);
  REQUIRE(suback);
  REQUIRE(suback->get<mqtt::Suback>() != nullptr);

  // 8000 x 2 KiB = 16 MiB for a client that reads nothing: far beyond the write backlog,
  // the socket buffers and 50 queued messages.
  constexpr std::uint64_t kMessages = 8000;
  const std::string payload(2048, 'f');
  auto pub = h.connect_client(kV311, "flooder");
  std::string batch;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    batch += v311_publish("flood/x", payload);
    if (batch.size() > 256 * 1024 || i + 1 == kMessages) {
      REQUIRE(pub->send_raw(batch, 20s));
      batch.clear();
    }
  }
  // Every PUBLISH was processed once the PINGREQ after them is answered.
  REQUIRE(pub->send(mqtt::Packet(mqtt::Pingreq{})));
  REQUIRE(pub->receive_type(PacketType::pingresp, 20s));

  // The broker dropped deliveries (and counted them) instead of buffering 16 MiB.
  CHECK(raw::wait_until([&] { return h.broker().stats().messages_dropped > 0; }, 5s));
  bool listed = false;
  for (const auto& info : h.broker().clients()) {
    if (info.id != "slow") continue;
    listed = true;
    CHECK(info.connected);
    CHECK(info.queued <= o.max_queued_messages);
  }
  CHECK(listed);
  // The broker serves the control client while the slow one is stuck.
  h.control_still_works();

  // Once the slow client reads, it gets everything that was not dropped: each message is
  // either delivered or counted in messages_dropped.
  std::uint64_t received = 0;
  std::uint64_t dropped = h.broker().stats().messages_dropped;
  const auto deadline = raw::Clock::now() + 20s;
  while (received + dropped < kMessages && raw::Clock::now() < deadline) {
    const auto in = slow.receive(2s);
    if (!in) break;
    if (in->type() == PacketType::publish) ++received;
    dropped = h.broker().stats().messages_dropped;
  }
  INFO("received " << received << ", dropped " << dropped);
  CHECK(received > 0);
  CHECK(dropped > 0);
  CHECK(received + dropped == kMessages);
  CHECK_FALSE(slow.closed());
  h.control_still_works();
}

TEST_CASE("hostile: connections that never complete CONNECT are closed by connect_timeout") {
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  // Each connection costs two descriptors in this process (client and broker side): stay
  // well under the limit.
  const std::size_t budget = limit.rlim_cur == RLIM_INFINITY
                                 ? std::size_t{2000}
                                 : static_cast<std::size_t>(limit.rlim_cur) / 4;
  const std::size_t idle_count = std::min<std::size_t>(2000, budget);
  INFO("descriptor limit " << limit.rlim_cur << ", idle connections " << idle_count);
  REQUIRE(idle_count >= 100);

  auto o = base_options();
  o.connect_timeout = 500ms;
  Harness h(o);
  const auto connections_before = h.broker().stats().connections_total;
  const auto start = raw::Clock::now();

  // One half-sent CONNECT: the start of a CONNECT announcing 32 bytes, then silence.
  raw::Client half(kV311);
  REQUIRE(half.open(h.port()));
  REQUIRE(half.send_raw(raw::hex("10 20 00 04 'MQ'")));

  // Thousands that send nothing.
  std::vector<std::unique_ptr<raw::Client>> idle;
  idle.reserve(idle_count);
  for (std::size_t i = 0; i < idle_count; ++i) {
    auto c = std::make_unique<raw::Client>(kV311);
    const bool opened = c->open(h.port(), 5s);
    INFO("idle connection " << i << ": " << c->error());
    REQUIRE(opened);
    idle.push_back(std::move(c));
  }

  // 50 that send random garbage (fixed seed: the same bytes every run).
  std::mt19937 rng(20240611);
  std::vector<std::unique_ptr<raw::Client>> garbage;
  for (int i = 0; i < 50; ++i) {
    auto c = std::make_unique<raw::Client>(kV5);
    REQUIRE(c->open(h.port()));
    std::string bytes(1 + rng() % 600, '\0');
    for (char& b : bytes) b = static_cast<char>(rng() & 0xFF);
    c->send_raw(bytes, 1s);  // may fail once the broker has closed: fine
    garbage.push_back(std::move(c));
  }

  // The broker serves the control client while they are all open.
  h.control_still_works();

  // The half-sent CONNECT is closed after connect_timeout, not before.
  std::vector<raw::Incoming> half_seen;
  CHECK(half.wait_closed(4s, &half_seen));
  CHECK(half_seen.empty());
  CHECK(raw::Clock::now() - start >= 450ms);

  std::vector<raw::Client*> idle_ptrs;
  for (auto& c : idle) idle_ptrs.push_back(c.get());
  std::vector<raw::Incoming> idle_seen;
  const std::size_t idle_closed = wait_all_closed(idle_ptrs, start + 8s, idle_seen);
  CHECK(idle_closed == idle_count);
  CHECK(idle_seen.empty());

  std::vector<raw::Client*> garbage_ptrs;
  for (auto& c : garbage) garbage_ptrs.push_back(c.get());
  std::vector<raw::Incoming> garbage_seen;
  const std::size_t garbage_closed = wait_all_closed(garbage_ptrs, start + 8s, garbage_seen);
  CHECK(garbage_closed == garbage.size());
  for (const auto& in : garbage_seen) {
    // Whatever the broker answered garbage with, it accepted no connection.
    INFO("answer to garbage: " << in.describe());
    if (const auto* a = in.get<mqtt::Connack>()) CHECK(a->code != 0);
  }

  CHECK(h.broker().stats().connections_total - connections_before >= idle_count + 51);
  CHECK(raw::wait_until([&] { return h.broker().stats().clients_connected == 1; }, 3s));
  h.control_still_works();
}

// A listener whose process is out of descriptors keeps its pending connections readable:
// accepting again at once would spin shard 0 at 100 % CPU. The loop backs off (10 ms doubling
// to 1 s), counts each failure, and accepts again once descriptors are free.
TEST_CASE("hostile: out of descriptors: the accept loop backs off, counts and recovers") {
  Harness h;
  const auto errors_before = h.broker().stats().accept_errors;
  std::uint64_t errors_during = 0;
  const auto starved = brokerha::test::starve_listener(h.port(), 4, 1000ms, [&] {
    errors_during = h.broker().stats().accept_errors - errors_before;
  });
  INFO("connected " << starved.connected << ", CPU " << starved.cpu_us
                    << " us in 1 s, accept errors " << errors_during);
  CHECK(starved.connected == 4);
  CHECK(errors_during >= 1);       // counted
  CHECK(errors_during <= 20);      // backing off: ~10 in 1 s, not thousands
  CHECK(starved.cpu_us < 300000);  // not spinning
  // Descriptors are free again: the waiting connections are served within the back-off.
  raw::Client late(kV311);
  REQUIRE(late.open(h.port()));
  const auto ack = late.handshake(late.connect_packet("after-emfile"), 3000ms);
  INFO("CONNACK: " << raw::describe(ack));
  REQUIRE(ack);
  REQUIRE(ack->get<mqtt::Connack>() != nullptr);
  h.control_still_works();
}

TEST_CASE("hostile: keep alive: half-sent packets and keep alive above max_keepalive") {
  auto o = base_options();
  o.max_keepalive = 2;
  Harness h(o);

  // Keep alive 1 s, then half a PUBLISH and silence.
  raw::Client half(kV5);
  REQUIRE(half.open(h.port()));
  const auto half_ack = half.handshake(half.connect_packet("half", 1));
  INFO("CONNACK (half): " << raw::describe(half_ack));
  REQUIRE(half_ack);
  REQUIRE(half_ack->get<mqtt::Connack>() != nullptr);
  const auto half_start = raw::Clock::now();
  REQUIRE(
      half.send_raw(std::string_view(v5_publish("control/half", "", "half-sent")).substr(0, 6)));

  // Keep alive 600 s, above the maximum of 2 s: v5 is told Server Keep Alive 2.
  raw::Client sleepy(kV5);
  REQUIRE(sleepy.open(h.port()));
  const auto sleepy_ack = sleepy.handshake(sleepy.connect_packet("sleepy", 600));
  INFO("CONNACK (sleepy): " << raw::describe(sleepy_ack));
  REQUIRE(sleepy_ack);
  const auto* connack = sleepy_ack->get<mqtt::Connack>();
  REQUIRE(connack != nullptr);
  CHECK(hex_code(connack->code) == hex_code(0));
  CHECK(connack->properties.server_keep_alive == std::optional<std::uint16_t>(2));
  const auto sleepy_start = raw::Clock::now();

  // v3.1.1 cannot be told a lower keep alive: refused with return code 2 (as Mosquitto).
  raw::Client old(kV311);
  REQUIRE(old.open(h.port()));
  REQUIRE(old.send(mqtt::Packet(old.connect_packet("sleepy-v3", 600))));
  std::vector<raw::Incoming> old_seen;
  CHECK(old.wait_closed(3s, &old_seen));
  REQUIRE(old_seen.size() == 1);
  REQUIRE(old_seen[0].get<mqtt::Connack>() != nullptr);
  CHECK(hex_code(old_seen[0].get<mqtt::Connack>()->code) == hex_code(2));

  // 1.5 x 1 s without a complete packet: DISCONNECT 0x8D Keep Alive timeout.
  const auto half_in = h.receive_pinging(half, 5s);
  INFO("half-sent client received: " << raw::describe(half_in));
  REQUIRE(half_in);
  REQUIRE(half_in->get<mqtt::Disconnect>() != nullptr);
  CHECK(hex_code(half_in->get<mqtt::Disconnect>()->reason_code) == hex_code(0x8D));
  CHECK(half.wait_closed());
  CHECK(raw::Clock::now() - half_start >= 1400ms);

  // The lowered keep alive is enforced: 1.5 x 2 s, not 1.5 x 600 s.
  const auto sleepy_in = h.receive_pinging(sleepy, 7s);
  INFO("sleepy client received: " << raw::describe(sleepy_in));
  REQUIRE(sleepy_in);
  REQUIRE(sleepy_in->get<mqtt::Disconnect>() != nullptr);
  CHECK(hex_code(sleepy_in->get<mqtt::Disconnect>()->reason_code) == hex_code(0x8D));
  CHECK(sleepy.wait_closed());
  CHECK(raw::Clock::now() - sleepy_start >= 2500ms);

  h.control_still_works();  // the half-sent PUBLISH was not routed
}

TEST_CASE("hostile: odd but valid input is served correctly") {
  Harness h;

  SUBCASE("CONNECT, SUBSCRIBE and PUBLISH sent one byte at a time") {
    raw::Client c(kV5);
    REQUIRE(c.open(h.port()));
    REQUIRE(c.send_bytewise(raw::encode(mqtt::Packet(c.connect_packet("bytewise", 30)), kV5)));
    const auto ack = c.receive();
    INFO("CONNACK: " << raw::describe(ack));
    REQUIRE(ack);
    REQUIRE(ack->get<mqtt::Connack>() != nullptr);
    CHECK(hex_code(ack->get<mqtt::Connack>()->code) == hex_code(0));

    REQUIRE(c.send_bytewise(v5_subscribe("bytewise/t", 9)));
    const auto suback = c.receive();
    INFO("SUBACK: " << raw::describe(suback));
    REQUIRE(suback);
    REQUIRE(suback->get<mqtt::Suback>() != nullptr);
    CHECK(suback->get<mqtt::Suback>()->packet_id == 9);

    REQUIRE(c.send_bytewise(v5_publish("bytewise/t", "", "one at a time")));
    const auto got = c.receive_type(PacketType::publish);
    INFO("PUBLISH: " << raw::describe(got));
    REQUIRE(got);
    REQUIRE(got->get<mqtt::Publish>() != nullptr);
    CHECK(got->get<mqtt::Publish>()->payload == "one at a time");
  }

  SUBCASE("20000 PINGREQs in one write") {
    auto c = h.connect_client(kV311, "pinger");
    constexpr int kPings = 20000;
    std::string flood;
    for (int i = 0; i < kPings; ++i) flood += raw::hex("C0 00");
    REQUIRE(c->send_raw(flood, 10s));
    h.control_still_works();  // not starved by the flood
    int pongs = 0;
    while (pongs < kPings) {
      const auto in = c->receive(5s);
      if (!in) break;
      INFO("received: " << in->describe());
      REQUIRE(in->is(PacketType::pingresp));
      ++pongs;
    }
    CHECK(pongs == kPings);
    // The pinger's session is intact.
    const auto suback = c->subscribe("pinger/t", 1, 3);
    INFO("SUBACK: " << raw::describe(suback));
    REQUIRE(suback);
    CHECK(suback->get<mqtt::Suback>() != nullptr);
  }

  SUBCASE("CONNECT, SUBSCRIBE and PUBLISH in one write, for client ids on every I/O thread") {
    for (const char* id : {"pipe-1", "pipe-2", "pipe-3", "pipe-4", "pipe-5", "pipe-6"}) {
      CAPTURE(id);
      raw::Client c(kV5);
      REQUIRE(c.open(h.port()));
      const std::string topic = std::string("pipelined/") + id;
      REQUIRE(c.send_raw(raw::encode(mqtt::Packet(c.connect_packet(id, 30)), kV5) +
                         v5_subscribe(topic, 4) + v5_publish(topic, "", "to myself", 1, 5)));
      std::vector<raw::Incoming> got;
      for (int i = 0; i < 4; ++i) {
        auto in = c.receive();
        INFO("packet " << i << ": " << raw::describe(in));
        REQUIRE(in);
        got.push_back(std::move(*in));
      }
      REQUIRE(got[0].get<mqtt::Connack>() != nullptr);
      CHECK(hex_code(got[0].get<mqtt::Connack>()->code) == hex_code(0));
      REQUIRE(got[1].get<mqtt::Suback>() != nullptr);
      CHECK(got[1].get<mqtt::Suback>()->packet_id == 4);
      // The PUBACK and the delivered PUBLISH, in either order.
      int pubacks = 0;
      int publishes = 0;
      for (std::size_t i = 2; i < 4; ++i) {
        if (const auto* a = got[i].get<mqtt::Puback>()) {
          ++pubacks;
          CHECK(a->packet_id == 5);
        } else if (const auto* p = got[i].get<mqtt::Publish>()) {
          ++publishes;
          CHECK(p->payload == "to myself");
        }
      }
      CHECK(pubacks == 1);
      CHECK(publishes == 1);
    }
  }

  SUBCASE("a QoS 2 PUBLISH sent again before PUBREL is delivered once") {
    auto sub = h.connect_client(kV5, "dup-sub");
    REQUIRE(sub->subscribe("dup/t", 2));
    auto pub = h.connect_client(kV5, "dup-pub");
    std::string resend = v5_publish("dup/t", "", "exactly once", 2, 5);
    REQUIRE(pub->send_raw(resend));
    resend[0] = static_cast<char>(resend[0] | 0x08);  // DUP
    REQUIRE(pub->send_raw(resend));
    for (int i = 0; i < 2; ++i) {
      const auto rec = pub->receive();
      INFO("PUBREC " << i << ": " << raw::describe(rec));
      REQUIRE(rec);
      REQUIRE(rec->get<mqtt::Pubrec>() != nullptr);
      CHECK(rec->get<mqtt::Pubrec>()->packet_id == 5);
    }
    REQUIRE(pub->send_raw(raw::hex("62 02 00 05")));  // PUBREL 5
    const auto comp = pub->receive();
    REQUIRE(comp);
    REQUIRE(comp->get<mqtt::Pubcomp>() != nullptr);
    CHECK(hex_code(comp->get<mqtt::Pubcomp>()->reason_code) == hex_code(0));
    // PUBREL for an id that is not (any more) known: PUBCOMP 0x92.
    REQUIRE(pub->send_raw(raw::hex("62 02 00 05")));
    const auto comp2 = pub->receive();
    INFO("second PUBCOMP: " << raw::describe(comp2));
    REQUIRE(comp2);
    REQUIRE(comp2->get<mqtt::Pubcomp>() != nullptr);
    CHECK(hex_code(comp2->get<mqtt::Pubcomp>()->reason_code) == hex_code(0x92));
    // A marker after it: the subscriber gets the message once, then the marker.
    REQUIRE(pub->publish("dup/t", "marker"));
    const auto first = sub->receive_type(PacketType::publish);
    INFO("first: " << raw::describe(first));
    REQUIRE(first);
    REQUIRE(first->get<mqtt::Publish>() != nullptr);
    CHECK(first->get<mqtt::Publish>()->payload == "exactly once");
    const auto second = sub->receive_type(PacketType::publish);
    INFO("second: " << raw::describe(second));
    REQUIRE(second);
    REQUIRE(second->get<mqtt::Publish>() != nullptr);
    CHECK(second->get<mqtt::Publish>()->payload == "marker");
  }

  SUBCASE("the client's Receive Maximum and Maximum Packet Size are respected") {
    // Receive Maximum 1, Maximum Packet Size 64.
    raw::Client c(kV5);
    REQUIRE(c.open(h.port()));
    mqtt::Connect connect = c.connect_packet("limited", 30);
    connect.properties.receive_maximum = 1;
    connect.properties.maximum_packet_size = 64;
    const auto ack = c.handshake(connect);
    REQUIRE(ack);
    REQUIRE(ack->get<mqtt::Connack>() != nullptr);
    REQUIRE(c.subscribe("limited/t", 1));
    auto pub = h.connect_client(kV311, "limited-pub");
    REQUIRE(pub->publish("limited/t", std::string(200, 'L'), 1, 1));  // too big for it
    REQUIRE(pub->publish("limited/t", "one", 1, 2));
    REQUIRE(pub->publish("limited/t", "two", 1, 3));
    for (int i = 0; i < 3; ++i) REQUIRE(pub->receive_type(PacketType::puback));

    const auto first = c.receive();
    INFO("first: " << raw::describe(first));
    REQUIRE(first);
    const auto* p1 = first->get<mqtt::Publish>();
    REQUIRE(p1 != nullptr);
    CHECK(p1->payload == "one");  // the 200-byte message was not sent
    CHECK(first->body->size() + 2 <= 64);
    // With one message unacknowledged, nothing more comes: the answer to a PINGREQ is next.
    REQUIRE(c.send(mqtt::Packet(mqtt::Pingreq{})));
    const auto next = c.receive();
    INFO("after PINGREQ: " << raw::describe(next));
    REQUIRE(next);
    CHECK(next->is(PacketType::pingresp));
    // Acknowledging it releases the next one.
    mqtt::Puback back;
    back.packet_id = p1->packet_id;
    REQUIRE(c.send(mqtt::Packet(back)));
    const auto second = c.receive();
    INFO("second: " << raw::describe(second));
    REQUIRE(second);
    REQUIRE(second->get<mqtt::Publish>() != nullptr);
    CHECK(second->get<mqtt::Publish>()->payload == "two");
  }
  h.control_still_works();
}

TEST_CASE("hostile: a high topic alias number costs no memory in proportion to it") {
  // Default options: topic_alias_maximum 65535. Each client establishes alias 65535 with a
  // 20-byte PUBLISH.
  Harness h;
  constexpr int kClients = 100;
  std::vector<std::unique_ptr<raw::Client>> clients;
  const std::size_t before = brokerha::test::resident_bytes();
  for (int i = 0; i < kClients; ++i) {
    auto c = h.connect_client(kV5, "alias-" + std::to_string(i));
    REQUIRE(c->send_raw(v5_publish("victim/alias", raw::hex("23 FF FF"), "x")));
    REQUIRE(c->send(mqtt::Packet(mqtt::Pingreq{})));
    const auto pong = c->receive();
    INFO("answer: " << raw::describe(pong));
    REQUIRE(pong);
    REQUIRE(pong->is(PacketType::pingresp));
    clients.push_back(std::move(c));
  }
  const std::size_t after = brokerha::test::resident_bytes();
  const double grown_mib = static_cast<double>(after > before ? after - before : 0) / 1048576.0;
  INFO("resident set grew by " << grown_mib << " MiB for " << kClients << " clients");
  CHECK(grown_mib < 32.0);
  h.control_still_works();
}

TEST_CASE("hostile: a client that sends PINGREQs and never reads is bounded") {
  // Every PINGREQ (2 bytes) makes a PINGRESP (2 bytes) for a client that reads nothing. The
  // broker must stop reading (or close) once its output to that client is large, rather
  // than keep every answer: 24 MiB of PINGREQs must not grow the broker by as much.
  Harness h;
  raw::Client c(kV311);
  REQUIRE(c.open(h.port(), 3s, 4096));
  const auto ack = c.handshake(c.connect_packet("pinger", 30));
  REQUIRE(ack);
  REQUIRE(ack->get<mqtt::Connack>() != nullptr);
  std::string chunk;
  for (int i = 0; i < 512 * 1024; ++i) chunk += raw::hex("C0 00");  // 1 MiB
  const std::size_t before = brokerha::test::resident_bytes();
  std::size_t sent_mib = 0;
  while (sent_mib < 24 && c.send_raw(chunk, 1s)) ++sent_mib;
  // Let the broker finish reading what it will read.
  std::uint64_t read = 0;
  raw::wait_until(
      [&] {
        const std::uint64_t now = h.broker().stats().bytes_received;
        const bool settled = now == read;
        read = now;
        return settled;
      },
      3s, 100ms);
  const std::size_t after = brokerha::test::resident_bytes();
  const double grown_mib = static_cast<double>(after > before ? after - before : 0) / 1048576.0;
  INFO("sent " << sent_mib << " MiB of PINGREQ; the broker read " << read / 1048576
               << " MiB; resident set grew by " << grown_mib << " MiB");
  CHECK(grown_mib < 12.0);
  h.control_still_works();
}
