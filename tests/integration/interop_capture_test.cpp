// SPDX-License-Identifier: Apache-2.0
// Interoperability of the MQTT codec with real clients.
//
// Packets are captured in the test itself: a CaptureServer (tests/support/capture_server.hpp)
// listens on 127.0.0.1 port 0, records every byte a real client sends, decodes it with
// brokerha::mqtt::decode and answers with brokerha::mqtt::encode like a minimal broker. The
// clients are mosquitto_pub / mosquitto_sub (Debian mosquitto-clients, -V mqttv31|mqttv311|
// mqttv5) and python3-paho-mqtt 1.6.1 run with /usr/bin/python3 (MQTT 3.1, 3.1.1 and 5.0).
// Each case checks the decoded fields; the subscriber cases also check, through the client's
// output, that the client decoded the PUBLISH (and SUBACK/UNSUBACK) that our encoder made.
//
// A case is skipped (with a MESSAGE) only when its client is not installed.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "support/capture_server.hpp"
#include "support/child_process.hpp"
#include "support/packet_dump.hpp"
#include "support/required_tool.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::ReasonCode;
using brokerha::test::CapturedPacket;
using brokerha::test::CapturedSession;
using brokerha::test::CaptureOptions;
using brokerha::test::CaptureServer;
using brokerha::test::OutgoingPublish;
using brokerha::test::ProcessResult;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;

// Each client run is bounded; a normal run takes tens of milliseconds (python: ~200 ms).
constexpr auto kClientTimeout = 5000ms;
constexpr auto kCloseTimeout = 2000ms;
const char* const kPython = "/usr/bin/python3";  // where Debian's python3-paho-mqtt is

// ---- formatting for readable checks ---------------------------------------------------------

std::string show(std::string_view v) { return std::string(v); }
std::string show(const std::optional<std::string_view>& v) {
  return v ? std::string(*v) : std::string("<absent>");
}
template <class T>
std::string show(const std::optional<T>& v) {
  return v ? std::to_string(*v) : std::string("<absent>");
}
std::string show(const std::vector<mqtt::UserProperty>& v) {
  std::string s;
  for (const mqtt::UserProperty& u : v) {
    if (!s.empty()) s += ',';
    s += std::string(u.name) + '=' + std::string(u.value);
  }
  return s;
}
std::string show(const std::vector<std::uint32_t>& v) {
  std::string s;
  for (std::uint32_t x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);
  }
  return s;
}

const char* version_flag(ProtocolVersion v) {
  switch (v) {
    case ProtocolVersion::v31:
      return "mqttv31";
    case ProtocolVersion::v311:
      return "mqttv311";
    case ProtocolVersion::v5:
      return "mqttv5";
  }
  return "?";
}
const char* version_tag(ProtocolVersion v) {
  switch (v) {
    case ProtocolVersion::v31:
      return "31";
    case ProtocolVersion::v311:
      return "311";
    case ProtocolVersion::v5:
      return "5";
  }
  return "?";
}

// True when `p` holds no property at all (as it must for every MQTT 3.x packet): a v5
// DISCONNECT with a non-zero reason code and no properties is 3 bytes (header, reason code).
bool no_properties(const mqtt::Properties& p) {
  mqtt::Disconnect d;
  d.reason_code = ReasonCode::unspecified_error;
  d.properties = p;
  return mqtt::encoded_size(d, ProtocolVersion::v5) == 3;
}

// The property sets of a packet (CONNECT: its own and its will's).
std::vector<const mqtt::Properties*> properties_of(const mqtt::Packet& packet) {
  return std::visit(
      [](const auto& pk) -> std::vector<const mqtt::Properties*> {
        using T = std::decay_t<decltype(pk)>;
        if constexpr (std::is_same_v<T, mqtt::Pingreq> || std::is_same_v<T, mqtt::Pingresp>) {
          return {};
        } else if constexpr (std::is_same_v<T, mqtt::Connect>) {
          std::vector<const mqtt::Properties*> v{&pk.properties};
          if (pk.will) v.push_back(&pk.will->properties);
          return v;
        } else {
          return {&pk.properties};
        }
      },
      packet);
}

// ---- running clients -----------------------------------------------------------------------

// Appends command-line arguments.
template <class... Args>
void append(std::vector<std::string>& argv, const Args&... args) {
  (argv.emplace_back(args), ...);
}

struct ClientRun {
  ProcessResult proc;
  std::shared_ptr<const CapturedSession> session;  // null when no connection closed in time
};

// Runs one client against `server` and returns the one session it made.
ClientRun run_client(CaptureServer& server, const std::vector<std::string>& argv) {
  ClientRun run;
  run.proc = brokerha::test::run_process(argv, kClientTimeout);
  const auto sessions = server.wait_closed(1, kCloseTimeout);
  if (!sessions.empty()) run.session = sessions.front();
  return run;
}

std::string mosquitto_program(const char* name) {
  const std::string path = brokerha::test::find_program(name);
  if (path.empty()) {
    brokerha::test::tool_missing(std::string(name) + " (Debian mosquitto-clients)");
  }
  return path;
}

bool have_paho() {
  static const bool found = [] {
    if (brokerha::test::find_program(kPython).empty()) return false;
    return brokerha::test::run_process({kPython, "-c", "import paho.mqtt"}, kClientTimeout).ok();
  }();
  if (!found)
    brokerha::test::tool_missing("paho.mqtt for " + std::string(kPython) +
                                 " (Debian python3-paho-mqtt)");
  return found;
}

// Checks that apply to every captured session: the whole stream framed and decoded without
// an error, nothing was left over, our replies encoded, and every packet survives our own
// encoder: encode(decode(wire)) decodes to the same fields (compared as dumps) and
// re-encodes to the same bytes; for MQTT 3.x (no properties, so one canonical encoding) it
// equals the client's bytes exactly, for MQTT 5.0 it has the same size.
void check_session(const ProcessResult& proc, const CapturedSession* s, ProtocolVersion version) {
  INFO(proc.describe());
  REQUIRE(proc.ok());
  REQUIRE(s != nullptr);
  INFO(s->describe());
  CHECK_FALSE(s->error_seen);
  CHECK_FALSE(s->incomplete_tail);
  CHECK(s->encode_failures.empty());
  REQUIRE(s->version.has_value());
  CHECK(*s->version == version);
  REQUIRE_FALSE(s->packets.empty());
  CHECK(s->packets.front()->type() == mqtt::PacketType::connect);
  CHECK(s->got_disconnect);

  std::string concatenated;
  for (const auto& p : s->packets) {
    concatenated += p->wire;
    INFO("packet " << std::string(mqtt::packet_type_name(p->type())) << ": "
                   << std::string(p->status.detail));
    REQUIRE(p->status.ok());
    std::string canon;
    REQUIRE(mqtt::encode(p->packet, version, canon));
    CHECK(mqtt::encoded_size(p->packet, version) == canon.size());
    mqtt::Framer framer;
    mqtt::Packet again;
    mqtt::Status decoded = mqtt::Status::success();
    std::size_t frames = 0;
    const mqtt::Status fs = framer.feed(canon, [&](std::uint8_t first, std::string_view body) {
      ++frames;
      decoded = mqtt::decode(first, body, version, again);
      return decoded;
    });
    REQUIRE(fs.ok());
    REQUIRE(frames == 1);
    REQUIRE(decoded.ok());
    CHECK(brokerha::test::dump(again) == brokerha::test::dump(p->packet));  // nothing lost
    std::string canon2;
    REQUIRE(mqtt::encode(again, version, canon2));
    CHECK(canon2 == canon);
    if (version != ProtocolVersion::v5) {
      CHECK(canon == p->wire);
      for (const mqtt::Properties* props : properties_of(p->packet)) {
        CHECK(no_properties(*props));
      }
    } else {
      // Property order is the client's choice, so compare sizes; the only other freedom is
      // an explicit Success reason code with no properties in an acknowledgement or
      // DISCONNECT, which the client may send or omit (MQTT 5.0 3.4.2.1, 3.14.2.1).
      const mqtt::PacketType t = p->type();
      const bool ack_or_disconnect =
          t == mqtt::PacketType::puback || t == mqtt::PacketType::pubrec ||
          t == mqtt::PacketType::pubrel || t == mqtt::PacketType::pubcomp ||
          t == mqtt::PacketType::disconnect;
      const bool explicit_success = ack_or_disconnect && p->wire.size() == canon.size() + 1 &&
                                    static_cast<std::uint8_t>(p->wire.back()) == 0;
      CHECK((canon.size() == p->wire.size() || explicit_success));
    }
  }
  CHECK(concatenated == s->bytes);  // every byte the client sent is in a decoded packet

  // The same stream fed one byte at a time (the Framer's slow path) gives the same packets.
  mqtt::Framer framer;
  std::size_t index = 0;
  for (const char& ch : s->bytes) {
    const mqtt::Status st =
        framer.feed(std::string_view(&ch, 1), [&](std::uint8_t first, std::string_view body) {
          std::string wire(1, static_cast<char>(first));
          mqtt::append_varint(wire, static_cast<std::uint32_t>(body.size()));
          wire += body;
          CHECK(index < s->packets.size());
          if (index < s->packets.size()) CHECK(wire == s->packets[index]->wire);
          ++index;
          return mqtt::Status::success();
        });
    REQUIRE(st.ok());
  }
  CHECK(index == s->packets.size());
  CHECK(framer.idle());
}

// ---- mosquitto_pub -------------------------------------------------------------------------

void mosquitto_pub_case(ProtocolVersion version, int qos) {
  const std::string program = mosquitto_program("mosquitto_pub");
  if (program.empty()) return;
  const bool v5 = version == ProtocolVersion::v5;
  const bool v311 = version == ProtocolVersion::v311;
  INFO("version " << std::string(version_flag(version)));
  CAPTURE(qos);

  CaptureServer server;
  const std::string tag = std::string("v") + version_tag(version) + "-q" + std::to_string(qos);
  const std::string client_id = "pub-" + tag;  // <= 23 characters for MQTT 3.1
  const std::string topic = "interop/pub/" + tag;
  const std::string payload = "hello " + tag;
  std::vector<std::string> argv{program};
  append(argv, "-h", "127.0.0.1", "-p", server.port_string(), "-V", version_flag(version));
  append(argv, "-i", client_id, "-k", "17", "-u", "alice", "-P", "s3cret");
  append(argv, "-t", topic, "-m", payload, "-q", std::to_string(qos), "-r");
  append(argv, "--will-topic", "will/" + tag, "--will-payload", "gone " + tag);
  append(argv, "--will-qos", "2", "--will-retain");
  if (v311) append(argv, "-c");  // clean session off (MQTT 3.1 and 5.0 runs keep it on)
  if (v5) {
    append(argv, "-D", "connect", "session-expiry-interval", "60");
    append(argv, "-D", "connect", "receive-maximum", "5");
    append(argv, "-D", "connect", "maximum-packet-size", "100000");
    append(argv, "-D", "connect", "user-property", "ck", "cv");
    append(argv, "-D", "will", "will-delay-interval", "5");
    append(argv, "-D", "will", "content-type", "text/will");
    append(argv, "-D", "will", "user-property", "wk", "wv");
    append(argv, "-D", "publish", "user-property", "k", "v");
    append(argv, "-D", "publish", "user-property", "k2", "v2");
    append(argv, "-D", "publish", "message-expiry-interval", "30");
    append(argv, "-D", "publish", "content-type", "text/plain");
    append(argv, "-D", "publish", "response-topic", "r/t");
    append(argv, "-D", "publish", "correlation-data", "xyz");
    append(argv, "-D", "publish", "payload-format-indicator", "1");
    append(argv, "-D", "disconnect", "user-property", "dk", "dv");
  }

  const ClientRun run = run_client(server, argv);
  check_session(run.proc, run.session.get(), version);
  const CapturedSession& s = *run.session;
  INFO(s.describe());
  CHECK(run.proc.out.empty());
  CHECK(s.sequence() ==
        (qos == 2 ? "CONNECT PUBLISH PUBREL DISCONNECT" : "CONNECT PUBLISH DISCONNECT"));

  const auto* c = s.first<mqtt::Connect>();
  REQUIRE(c != nullptr);
  CHECK(c->version == version);
  CHECK(show(c->client_id) == client_id);
  CHECK(c->clean_start == !v311);
  CHECK(c->keep_alive == 17);
  CHECK(show(c->username) == "alice");
  CHECK(show(c->password) == "s3cret");
  REQUIRE(c->will.has_value());
  CHECK(show(c->will->topic) == "will/" + tag);
  CHECK(show(c->will->payload) == "gone " + tag);
  CHECK(c->will->qos == 2);
  CHECK(c->will->retain);
  if (v5) {
    CHECK(show(c->properties.session_expiry_interval) == "60");
    CHECK(show(c->properties.receive_maximum) == "5");
    CHECK(show(c->properties.maximum_packet_size) == "100000");
    CHECK(show(c->properties.user_properties) == "ck=cv");
    CHECK(show(c->will->properties.will_delay_interval) == "5");
    CHECK(show(c->will->properties.content_type) == "text/will");
    CHECK(show(c->will->properties.user_properties) == "wk=wv");
  }

  const auto* p = s.first<mqtt::Publish>();
  REQUIRE(p != nullptr);
  CHECK(show(p->topic) == topic);
  CHECK(show(p->payload) == payload);
  CHECK(p->qos == qos);
  CHECK(p->retain);
  CHECK_FALSE(p->dup);
  CHECK((qos == 0 ? p->packet_id == 0 : p->packet_id != 0));
  if (v5) {
    CHECK(show(p->properties.user_properties) == "k=v,k2=v2");
    CHECK(show(p->properties.message_expiry_interval) == "30");
    CHECK(show(p->properties.content_type) == "text/plain");
    CHECK(show(p->properties.response_topic) == "r/t");
    CHECK(show(p->properties.correlation_data) == "xyz");
    CHECK(show(p->properties.payload_format_indicator) == "1");
    CHECK_FALSE(p->properties.topic_alias.has_value());
  }
  if (qos == 2) {
    const auto* rel = s.first<mqtt::Pubrel>();
    REQUIRE(rel != nullptr);
    CHECK(rel->packet_id == p->packet_id);
    CHECK(rel->reason_code == ReasonCode::success);
  }
  const auto* d = s.first<mqtt::Disconnect>();
  REQUIRE(d != nullptr);
  CHECK(d->reason_code == ReasonCode::success);
  if (v5) CHECK(show(d->properties.user_properties) == "dk=dv");
}

TEST_CASE("interop: mosquitto_pub MQTT 3.1 CONNECT/PUBLISH decode") {
  SUBCASE("QoS 0") { mosquitto_pub_case(ProtocolVersion::v31, 0); }
  SUBCASE("QoS 1") { mosquitto_pub_case(ProtocolVersion::v31, 1); }
  SUBCASE("QoS 2") { mosquitto_pub_case(ProtocolVersion::v31, 2); }
}

TEST_CASE("interop: mosquitto_pub MQTT 3.1.1 CONNECT/PUBLISH decode") {
  SUBCASE("QoS 0") { mosquitto_pub_case(ProtocolVersion::v311, 0); }
  SUBCASE("QoS 1") { mosquitto_pub_case(ProtocolVersion::v311, 1); }
  SUBCASE("QoS 2") { mosquitto_pub_case(ProtocolVersion::v311, 2); }
}

TEST_CASE("interop: mosquitto_pub MQTT 5.0 CONNECT/PUBLISH with properties decode") {
  SUBCASE("QoS 0") { mosquitto_pub_case(ProtocolVersion::v5, 0); }
  SUBCASE("QoS 1") { mosquitto_pub_case(ProtocolVersion::v5, 1); }
  SUBCASE("QoS 2") { mosquitto_pub_case(ProtocolVersion::v5, 2); }
}

TEST_CASE("interop: mosquitto_pub MQTT 5.0 topic alias (second PUBLISH has an empty topic)") {
  const std::string program = mosquitto_program("mosquitto_pub");
  if (program.empty()) return;
  CaptureServer server;
  std::vector<std::string> argv{program};
  append(argv, "-h", "127.0.0.1", "-p", server.port_string(), "-V", "mqttv5", "-i", "pub-alias");
  append(argv, "-t", "interop/alias/topic", "-m", "aliased", "-q", "1", "--repeat", "2");
  append(argv, "-D", "connect", "topic-alias-maximum", "4");
  append(argv, "-D", "publish", "topic-alias", "3");
  const ClientRun run = run_client(server, argv);
  check_session(run.proc, run.session.get(), ProtocolVersion::v5);
  const CapturedSession& s = *run.session;
  INFO(s.describe());
  CHECK(s.sequence() == "CONNECT PUBLISH PUBLISH DISCONNECT");
  const auto* c = s.first<mqtt::Connect>();
  REQUIRE(c != nullptr);
  CHECK(show(c->properties.topic_alias_maximum) == "4");
  CHECK_FALSE(c->will.has_value());
  CHECK_FALSE(c->username.has_value());
  CHECK_FALSE(c->password.has_value());
  const auto pubs = s.all<mqtt::Publish>();
  REQUIRE(pubs.size() == 2);
  CHECK(show(pubs[0]->topic) == "interop/alias/topic");
  CHECK(show(pubs[0]->properties.topic_alias) == "3");
  CHECK(show(pubs[1]->topic).empty());
  CHECK(show(pubs[1]->properties.topic_alias) == "3");
  for (const auto* p : pubs) {
    CHECK(show(p->payload) == "aliased");
    CHECK(p->qos == 1);
    CHECK_FALSE(p->retain);
    CHECK(p->packet_id != 0);
  }
  CHECK(pubs[0]->packet_id != pubs[1]->packet_id);
}

// ---- mosquitto_sub -------------------------------------------------------------------------

// What the capture server publishes to subscribers, with every MQTT 5.0 property that
// mosquitto_sub -F can print.
OutgoingPublish server_publish(const std::string& topic, const std::string& payload,
                               std::uint8_t qos) {
  OutgoingPublish o;
  o.topic = topic;
  o.payload = payload;
  o.qos = qos;
  o.retain = true;
  o.payload_format_indicator = 1;
  o.message_expiry_interval = 99;
  o.content_type = "text/plain";
  o.response_topic = "reply/here";
  o.correlation_data = "corr-7";
  o.user_properties = {{"sk", "sv"}};
  return o;
}

// mosquitto_sub subscribing to two filters and receiving one PUBLISH made by our encoder.
// With `unsubscribe`, it also unsubscribes (-U) from two other filters.
void mosquitto_sub_case(ProtocolVersion version, int qos, bool unsubscribe) {
  const std::string program = mosquitto_program("mosquitto_sub");
  if (program.empty()) return;
  const bool v5 = version == ProtocolVersion::v5;
  INFO("version " << std::string(version_flag(version)));
  CAPTURE(qos);
  CAPTURE(unsubscribe);

  const std::string tag = std::string("v") + version_tag(version) + "-q" + std::to_string(qos) +
                          (unsubscribe ? "u" : "");
  const std::string payload = "from brokerha " + tag;
  CaptureOptions options;
  options.publish_to_subscriber =
      server_publish("interop/sub/x/b", payload, static_cast<std::uint8_t>(qos));
  // mosquitto_sub does not wait for UNSUBACKs: publish after them (see CaptureOptions).
  if (unsubscribe) options.publish_after_unsubacks = 2;
  CaptureServer server(options);

  // -F prints what the client decoded from our PUBLISH: topic, payload, QoS, retain and, for
  // MQTT 5.0, content type, response topic, correlation data, message expiry, payload format,
  // user property and subscription identifier.
  const std::string format = v5 ? "%t|%p|%q|%r|%C|%R|%D|%E|%F|%P|%S" : "%t|%p|%q|%r";
  std::vector<std::string> argv{program};
  append(argv, "-h", "127.0.0.1", "-p", server.port_string(), "-V", version_flag(version));
  append(argv, "-i", "sub-" + tag, "-k", "23", "-t", "interop/sub/a", "-t", "interop/sub/+/b");
  append(argv, "-q", std::to_string(qos), "-C", "1", "-F", format);
  if (unsubscribe) append(argv, "-U", "interop/old/a", "-U", "interop/old/#");
  if (v5) {
    append(argv, "-D", "subscribe", "subscription-identifier", "7");
    append(argv, "-D", "subscribe", "user-property", "sub-k", "sub-v");
    append(argv, "-D", "unsubscribe", "user-property", "unsub-k", "unsub-v");
  }

  const ClientRun run = run_client(server, argv);
  check_session(run.proc, run.session.get(), version);
  const CapturedSession& s = *run.session;
  INFO(s.describe());

  // The client decoded our PUBLISH: topic, payload, QoS, retain and the v5 properties.
  const std::string expected =
      v5 ? "interop/sub/x/b|" + payload + "|" + std::to_string(qos) +
               "|1|text/plain|reply/here|corr-7|99|1|sk:sv|7\n"
         : "interop/sub/x/b|" + payload + "|" + std::to_string(qos) + "|1\n";
  CHECK(run.proc.out == expected);

  const std::string acks = qos == 1 ? "PUBACK" : "PUBREC PUBCOMP";
  CHECK(s.sequence() == std::string("CONNECT SUBSCRIBE ") +
                            (unsubscribe ? "UNSUBSCRIBE UNSUBSCRIBE " : "") + acks + " DISCONNECT");

  const auto* c = s.first<mqtt::Connect>();
  REQUIRE(c != nullptr);
  CHECK(show(c->client_id) == "sub-" + tag);
  CHECK(c->clean_start);
  CHECK(c->keep_alive == 23);
  CHECK_FALSE(c->will.has_value());
  CHECK_FALSE(c->username.has_value());

  const auto* sub = s.first<mqtt::Subscribe>();
  REQUIRE(sub != nullptr);
  CHECK(sub->packet_id != 0);
  REQUIRE(sub->subscriptions.size() == 2);
  CHECK(show(sub->subscriptions[0].filter) == "interop/sub/a");
  CHECK(show(sub->subscriptions[1].filter) == "interop/sub/+/b");
  for (const mqtt::Subscription& e : sub->subscriptions) {
    CHECK(e.qos == qos);
    CHECK_FALSE(e.no_local);
    CHECK_FALSE(e.retain_as_published);
    CHECK(e.retain_handling == 0);
  }
  if (v5) {
    CHECK(show(sub->properties.subscription_identifiers) == "7");
    CHECK(show(sub->properties.user_properties) == "sub-k=sub-v");
  }

  if (unsubscribe) {
    // mosquitto_sub sends one UNSUBSCRIBE per -U filter.
    const auto unsubs = s.all<mqtt::Unsubscribe>();
    REQUIRE(unsubs.size() == 2);
    const char* filters[] = {"interop/old/a", "interop/old/#"};
    for (std::size_t i = 0; i < 2; ++i) {
      CHECK(unsubs[i]->packet_id != 0);
      CHECK(unsubs[i]->packet_id != sub->packet_id);
      REQUIRE(unsubs[i]->filters.size() == 1);
      CHECK(show(unsubs[i]->filters[0]) == filters[i]);
      if (v5) CHECK(show(unsubs[i]->properties.user_properties) == "unsub-k=unsub-v");
    }
    CHECK(unsubs[0]->packet_id != unsubs[1]->packet_id);
  }

  // The acknowledgements of our PUBLISH carry its packet identifier (1).
  if (qos == 1) {
    const auto* ack = s.first<mqtt::Puback>();
    REQUIRE(ack != nullptr);
    CHECK(ack->packet_id == 1);
    CHECK(ack->reason_code == ReasonCode::success);
  } else {
    const auto* rec = s.first<mqtt::Pubrec>();
    const auto* comp = s.first<mqtt::Pubcomp>();
    REQUIRE(rec != nullptr);
    REQUIRE(comp != nullptr);
    CHECK(rec->packet_id == 1);
    CHECK(comp->packet_id == 1);
    CHECK(rec->reason_code == ReasonCode::success);
    CHECK(comp->reason_code == ReasonCode::success);
  }
  const auto* d = s.first<mqtt::Disconnect>();
  REQUIRE(d != nullptr);
  CHECK(d->reason_code == ReasonCode::success);
}

TEST_CASE("interop: mosquitto_sub MQTT 3.1 SUBSCRIBE decode and PUBLISH encode") {
  SUBCASE("QoS 1") { mosquitto_sub_case(ProtocolVersion::v31, 1, false); }
  SUBCASE("QoS 2") { mosquitto_sub_case(ProtocolVersion::v31, 2, false); }
}

TEST_CASE("interop: mosquitto_sub MQTT 3.1.1 SUBSCRIBE decode and PUBLISH encode") {
  SUBCASE("QoS 1") { mosquitto_sub_case(ProtocolVersion::v311, 1, false); }
  SUBCASE("QoS 2") { mosquitto_sub_case(ProtocolVersion::v311, 2, false); }
}

TEST_CASE("interop: mosquitto_sub MQTT 5.0 SUBSCRIBE with properties decode and PUBLISH encode") {
  SUBCASE("QoS 1") { mosquitto_sub_case(ProtocolVersion::v5, 1, false); }
  SUBCASE("QoS 2") { mosquitto_sub_case(ProtocolVersion::v5, 2, false); }
}

TEST_CASE("interop: mosquitto_sub -U UNSUBSCRIBE decode") {
  SUBCASE("MQTT 3.1") { mosquitto_sub_case(ProtocolVersion::v31, 1, true); }
  SUBCASE("MQTT 3.1.1") { mosquitto_sub_case(ProtocolVersion::v311, 1, true); }
  SUBCASE("MQTT 5.0") { mosquitto_sub_case(ProtocolVersion::v5, 1, true); }
}

// ---- paho-mqtt (python3-paho-mqtt 1.6.1) ---------------------------------------------------

// Run as `/usr/bin/python3 -c <script> <port> <31|311|5>`. Connects with a will and
// credentials, subscribes to two filters, waits for the capture server's PUBLISH, publishes
// at QoS 0, 1 and 2, unsubscribes and disconnects, each step bounded. It prints what it
// decoded from our CONNACK, SUBACK, PUBLISH and UNSUBACK, one line each.
constexpr const char* kPahoScript = R"PY(
import os, sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCodes
from paho.mqtt.subscribeoptions import SubscribeOptions

port, ver = int(sys.argv[1]), sys.argv[2]
v5 = ver == "5"
TIMEOUT = 4.0
lines = []
events = {k: threading.Event() for k in ("connect", "subscribe", "message", "unsubscribe", "disconnect")}

def wait(name):
    if not events[name].wait(TIMEOUT):
        sys.stderr.write("timed out waiting for %s\n" % name)
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
        os._exit(3)

def props(packet_type, **values):
    p = Properties(packet_type)
    for name, value in values.items():
        if name == "UserProperty":
            for pair in value:
                p.UserProperty = pair
        else:
            setattr(p, name, value)
    return p

def codes(values):
    return ",".join(str(getattr(v, "value", v)) for v in values)

def on_connect(client, userdata, flags, rc, properties=None):
    lines.append("connack|%s|%s" % (flags.get("session present"), getattr(rc, "value", rc)))
    events["connect"].set()

def on_subscribe(client, userdata, mid, granted, properties=None):
    lines.append("suback|" + codes(granted))
    events["subscribe"].set()

def on_message(client, userdata, msg):
    parts = ["message", msg.topic, msg.payload.decode(), str(msg.qos), str(int(msg.retain))]
    if v5:
        p = msg.properties
        parts += [str(getattr(p, "ContentType", "-")), str(getattr(p, "ResponseTopic", "-")),
                  getattr(p, "CorrelationData", b"-").decode(),
                  str(getattr(p, "MessageExpiryInterval", "-")),
                  ",".join("%s=%s" % kv for kv in getattr(p, "UserProperty", [])),
                  codes(getattr(p, "SubscriptionIdentifier", []))]
    lines.append("|".join(parts))
    events["message"].set()

def on_unsubscribe(client, userdata, mid, *rest):
    lines.append("unsuback|" + (codes(rest[1] if isinstance(rest[1], list) else [rest[1]]) if v5 else ""))
    events["unsubscribe"].set()

def on_disconnect(client, userdata, rc, properties=None):
    events["disconnect"].set()

proto = {"31": mqtt.MQTTv31, "311": mqtt.MQTTv311, "5": mqtt.MQTTv5}[ver]
if v5:
    c = mqtt.Client(client_id="paho-v5", protocol=proto)
else:
    c = mqtt.Client(client_id="paho-v" + ver, clean_session=(ver == "311"), protocol=proto)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.on_unsubscribe, c.on_disconnect = on_unsubscribe, on_disconnect
c.username_pw_set("paho-user", "paho-pass")
c.will_set("paho/will", b"paho gone", qos=1, retain=True,
           properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=9, ContentType="text/plain",
                            MessageExpiryInterval=11, ResponseTopic="paho/will/reply",
                            CorrelationData=b"will-corr", PayloadFormatIndicator=1,
                            UserProperty=[("wk", "wv")]) if v5 else None)
if v5:
    c.connect("127.0.0.1", port, keepalive=42, clean_start=True,
              properties=props(PacketTypes.CONNECT, SessionExpiryInterval=120, ReceiveMaximum=7,
                               MaximumPacketSize=65536, TopicAliasMaximum=4,
                               RequestResponseInformation=1, RequestProblemInformation=0,
                               UserProperty=[("ck", "cv"), ("ck", "cv2")]))
else:
    c.connect("127.0.0.1", port, keepalive=42)
c.loop_start()
wait("connect")

if v5:
    c.subscribe([("paho/a", SubscribeOptions(qos=1, noLocal=True,
                                             retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)),
                 ("paho/+/b", SubscribeOptions(qos=2, retainAsPublished=True,
                                               retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))],
                properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42,
                                 UserProperty=[("sk", "sv")]))
else:
    c.subscribe([("paho/a", 1), ("paho/+/b", 2)])
wait("subscribe")
wait("message")

if v5:
    infos = [
        c.publish("paho/alias", "zero", qos=0,
                  properties=props(PacketTypes.PUBLISH, TopicAlias=2, UserProperty=[("pk", "pv"), ("pk", "pv2")])),
        c.publish("", "one", qos=1, retain=True, properties=props(PacketTypes.PUBLISH, TopicAlias=2)),
        c.publish("paho/q2", "two", qos=2,
                  properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=30, ContentType="text/plain",
                                   ResponseTopic="paho/reply", CorrelationData=b"corr-42",
                                   PayloadFormatIndicator=1, UserProperty=[("a", "1")])),
    ]
else:
    infos = [c.publish("paho/q0", "zero", qos=0), c.publish("paho/q1", "one", qos=1, retain=True),
             c.publish("paho/q2", "two", qos=2)]
for i, info in enumerate(infos):
    info.wait_for_publish(TIMEOUT)
    if not info.is_published():
        sys.stderr.write("publish %d not acknowledged\n" % i)
        os._exit(4)

c.unsubscribe(["paho/a", "paho/+/b"],
              properties=props(PacketTypes.UNSUBSCRIBE, UserProperty=[("uk", "uv")]) if v5 else None)
wait("unsubscribe")

if v5:
    c.disconnect(reasoncode=ReasonCodes(PacketTypes.DISCONNECT, "Disconnect with will message"),
                 properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0, ReasonString="done",
                                  UserProperty=[("dk", "dv")]))
else:
    c.disconnect()
wait("disconnect")
c.loop_stop()
print("\n".join(lines))
)PY";

void paho_case(ProtocolVersion version) {
  if (!have_paho()) return;
  const bool v5 = version == ProtocolVersion::v5;
  INFO("version " << std::string(version_flag(version)));

  CaptureOptions options;
  options.publish_to_subscriber = server_publish("paho/x/b", "to paho", 2);
  CaptureServer server(options);
  const ClientRun run =
      run_client(server, {kPython, "-c", kPahoScript, server.port_string(), version_tag(version)});
  check_session(run.proc, run.session.get(), version);
  const CapturedSession& s = *run.session;
  INFO(s.describe());

  // paho decoded our CONNACK, SUBACK, PUBLISH (QoS 2, retained, v5 properties) and UNSUBACK.
  const std::string expected =
      v5 ? "connack|0|0\nsuback|1,2\n"
           "message|paho/x/b|to paho|2|1|text/plain|reply/here|corr-7|99|sk=sv|42\n"
           "unsuback|0,0\n"
         : "connack|0|0\nsuback|1,2\nmessage|paho/x/b|to paho|2|1\nunsuback|\n";
  CHECK(run.proc.out == expected);

  // paho acknowledges our QoS 2 PUBLISH (PUBREC, PUBCOMP) from its network thread while the
  // script goes on, so those two may interleave with the script's own packets.
  std::string own;  // the script's packets, in order
  std::vector<const CapturedPacket*> incoming_acks;
  for (const auto& p : s.packets) {
    if (p->type() == mqtt::PacketType::pubrec || p->type() == mqtt::PacketType::pubcomp) {
      incoming_acks.push_back(p.get());
      continue;
    }
    if (!own.empty()) own += ' ';
    own += std::string(mqtt::packet_type_name(p->type()));
  }
  CHECK(own == "CONNECT SUBSCRIBE PUBLISH PUBLISH PUBLISH PUBREL UNSUBSCRIBE DISCONNECT");
  REQUIRE(incoming_acks.size() == 2);
  CHECK(incoming_acks[0]->type() == mqtt::PacketType::pubrec);
  CHECK(incoming_acks[1]->type() == mqtt::PacketType::pubcomp);
  CHECK(std::get<mqtt::Pubrec>(incoming_acks[0]->packet).packet_id == 1);
  CHECK(std::get<mqtt::Pubcomp>(incoming_acks[1]->packet).packet_id == 1);

  const auto* c = s.first<mqtt::Connect>();
  REQUIRE(c != nullptr);
  CHECK(c->version == version);
  CHECK(show(c->client_id) == std::string("paho-v") + version_tag(version));
  CHECK(c->clean_start == (version != ProtocolVersion::v31));
  CHECK(c->keep_alive == 42);
  CHECK(show(c->username) == "paho-user");
  CHECK(show(c->password) == "paho-pass");
  REQUIRE(c->will.has_value());
  CHECK(show(c->will->topic) == "paho/will");
  CHECK(show(c->will->payload) == "paho gone");
  CHECK(c->will->qos == 1);
  CHECK(c->will->retain);
  if (v5) {
    const mqtt::Properties& cp = c->properties;
    CHECK(show(cp.session_expiry_interval) == "120");
    CHECK(show(cp.receive_maximum) == "7");
    CHECK(show(cp.maximum_packet_size) == "65536");
    CHECK(show(cp.topic_alias_maximum) == "4");
    CHECK(show(cp.request_response_information) == "1");
    CHECK(show(cp.request_problem_information) == "0");
    CHECK(show(cp.user_properties) == "ck=cv,ck=cv2");
    const mqtt::Properties& wp = c->will->properties;
    CHECK(show(wp.will_delay_interval) == "9");
    CHECK(show(wp.content_type) == "text/plain");
    CHECK(show(wp.message_expiry_interval) == "11");
    CHECK(show(wp.response_topic) == "paho/will/reply");
    CHECK(show(wp.correlation_data) == "will-corr");
    CHECK(show(wp.payload_format_indicator) == "1");
    CHECK(show(wp.user_properties) == "wk=wv");
  }

  const auto* sub = s.first<mqtt::Subscribe>();
  REQUIRE(sub != nullptr);
  CHECK(sub->packet_id != 0);
  REQUIRE(sub->subscriptions.size() == 2);
  const mqtt::Subscription& a = sub->subscriptions[0];
  const mqtt::Subscription& b = sub->subscriptions[1];
  CHECK(show(a.filter) == "paho/a");
  CHECK(a.qos == 1);
  CHECK(show(b.filter) == "paho/+/b");
  CHECK(b.qos == 2);
  // Each option bit set on one filter only, so that swapped bits cannot go unnoticed.
  CHECK(a.no_local == v5);
  CHECK_FALSE(a.retain_as_published);
  CHECK(a.retain_handling == (v5 ? 1 : 0));
  CHECK_FALSE(b.no_local);
  CHECK(b.retain_as_published == v5);
  CHECK(b.retain_handling == (v5 ? 2 : 0));
  if (v5) {
    CHECK(show(sub->properties.subscription_identifiers) == "42");
    CHECK(show(sub->properties.user_properties) == "sk=sv");
  }

  const auto pubs = s.all<mqtt::Publish>();
  REQUIRE(pubs.size() == 3);
  const char* payloads[] = {"zero", "one", "two"};
  for (std::size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(show(pubs[i]->payload) == payloads[i]);
    CHECK(pubs[i]->qos == i);
    CHECK(pubs[i]->retain == (i == 1));
    CHECK_FALSE(pubs[i]->dup);
    CHECK((i == 0 ? pubs[i]->packet_id == 0 : pubs[i]->packet_id != 0));
  }
  CHECK(pubs[1]->packet_id != pubs[2]->packet_id);
  if (v5) {
    CHECK(show(pubs[0]->topic) == "paho/alias");
    CHECK(show(pubs[0]->properties.topic_alias) == "2");
    CHECK(show(pubs[0]->properties.user_properties) == "pk=pv,pk=pv2");
    CHECK(show(pubs[1]->topic).empty());  // the alias stands for the topic
    CHECK(show(pubs[1]->properties.topic_alias) == "2");
    const mqtt::Properties& pp = pubs[2]->properties;
    CHECK(show(pubs[2]->topic) == "paho/q2");
    CHECK_FALSE(pp.topic_alias.has_value());
    CHECK(show(pp.message_expiry_interval) == "30");
    CHECK(show(pp.content_type) == "text/plain");
    CHECK(show(pp.response_topic) == "paho/reply");
    CHECK(show(pp.correlation_data) == "corr-42");
    CHECK(show(pp.payload_format_indicator) == "1");
    CHECK(show(pp.user_properties) == "a=1");
  } else {
    CHECK(show(pubs[0]->topic) == "paho/q0");
    CHECK(show(pubs[1]->topic) == "paho/q1");
    CHECK(show(pubs[2]->topic) == "paho/q2");
  }
  const auto* rel = s.first<mqtt::Pubrel>();
  REQUIRE(rel != nullptr);
  CHECK(rel->packet_id == pubs[2]->packet_id);

  const auto* unsub = s.first<mqtt::Unsubscribe>();
  REQUIRE(unsub != nullptr);
  CHECK(unsub->packet_id != 0);
  REQUIRE(unsub->filters.size() == 2);
  CHECK(show(unsub->filters[0]) == "paho/a");
  CHECK(show(unsub->filters[1]) == "paho/+/b");
  if (v5) CHECK(show(unsub->properties.user_properties) == "uk=uv");

  const auto* d = s.first<mqtt::Disconnect>();
  REQUIRE(d != nullptr);
  if (v5) {
    CHECK(d->reason_code == ReasonCode::disconnect_with_will);
    CHECK(show(d->properties.session_expiry_interval) == "0");
    CHECK(show(d->properties.reason_string) == "done");
    CHECK(show(d->properties.user_properties) == "dk=dv");
  } else {
    CHECK(d->reason_code == ReasonCode::success);
  }
}

TEST_CASE("interop: paho-mqtt MQTT 3.1 and 3.1.1 session decode") {
  SUBCASE("MQTT 3.1") { paho_case(ProtocolVersion::v31); }
  SUBCASE("MQTT 3.1.1") { paho_case(ProtocolVersion::v311); }
}

TEST_CASE("interop: paho-mqtt MQTT 5.0 session with properties decode") {
  paho_case(ProtocolVersion::v5);
}

}  // namespace
