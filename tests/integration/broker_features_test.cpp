// SPDX-License-Identifier: Apache-2.0
// Broker features beyond the protocol basics, on an in-process brokerha::Broker (loopback,
// port 0): moving a session between brokers with export_session()/import_session(),
// outgoing MQTT 5.0 topic aliases, the global memory bound (back-pressure on publishers
// instead of unbounded queues), event hooks, $SYS statistics, and stop() with v5 clients
// and clients that never read.

#include <brokerha/broker.hpp>
#include <brokerha/error.hpp>
#include <brokerha/hooks.hpp>
#include <brokerha/options.hpp>

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/raw_client.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define BROKERHA_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BROKERHA_TEST_ASAN 1
#endif
#endif

namespace {

using namespace std::chrono_literals;
using brokerha::BrokerOptions;
using brokerha::errc;
using brokerha::ReasonCode;
using brokerha::test::find_client;
using brokerha::test::make_connect;
using brokerha::test::make_publish;
using brokerha::test::MqttClient;
using brokerha::test::publishes;
using brokerha::test::Received;
using brokerha::test::TestBroker;
using brokerha::test::wait_until;
namespace mqtt = brokerha::mqtt;
namespace raw = brokerha::test::raw;
using mqtt::ProtocolVersion;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 5000ms;

BrokerOptions options(const std::function<void(BrokerOptions&)>& change = nullptr) {
  BrokerOptions o;
  o.listeners.push_back({"127.0.0.1", 0});
  o.io_threads = 2;
  if (change) change(o);
  return o;
}

// A v5 CONNECT that keeps its session for `expiry` seconds (clean start 0).
mqtt::Connect persistent_v5(std::string_view id, std::uint32_t expiry = 300) {
  mqtt::Connect c = make_connect(ProtocolVersion::v5, id, false);
  c.properties.session_expiry_interval = expiry;
  return c;
}

int connack_code(const std::optional<Received>& ack) {
  return ack && ack->as<mqtt::Connack>() ? ack->as<mqtt::Connack>()->code : -1;
}
bool session_present(const std::optional<Received>& ack) {
  return ack && ack->as<mqtt::Connack>() && ack->as<mqtt::Connack>()->session_present;
}

bool offline(const brokerha::Broker& b, const std::string& id) {
  const auto c = find_client(b, id);
  return c && !c->connected;
}

std::string sv(std::string_view v) { return std::string(v); }

}  // namespace

// ---- export / import ------------------------------------------------------------------------

TEST_CASE("features: a persistent session moves to another broker with export/import") {
  TestBroker a(options());
  TestBroker b(options());
  const std::string id = "mover";

  MqttClient c(ProtocolVersion::v5);
  REQUIRE(c.open(a.port));
  const auto first = c.connect(persistent_v5(id));
  REQUIRE(connack_code(first) == 0);
  REQUIRE(c.subscribe("move/#", 1));
  c.disconnect();
  REQUIRE(wait_until([&] { return offline(a.broker, id); }, kWait));

  MqttClient pub(ProtocolVersion::v311);
  REQUIRE(pub.open_and_connect(a.port, make_connect(ProtocolVersion::v311, "mover-pub")) == 0);
  for (int i = 1; i <= 3; ++i) {
    const std::string payload = "m" + std::to_string(i);
    REQUIRE(pub.publish(make_publish("move/" + std::to_string(i), payload, 1)));
  }
  REQUIRE(wait_until([&] { return brokerha::test::pending_deliveries(a.broker, id) == 3; }, kWait));

  const std::optional<std::string> exported = a.broker.export_session(id);
  REQUIRE(exported.has_value());
  CHECK(exported->substr(0, 3) == "BHS");

  CHECK(b.broker.import_session(*exported) == std::error_code());
  const auto installed = find_client(b.broker, id);
  REQUIRE(installed.has_value());
  CHECK_FALSE(installed->connected);
  CHECK(installed->protocol_version == 5);
  CHECK(installed->subscriptions.count("move/#") == 1);
  CHECK(installed->subscriptions.at("move/#").qos == 1);
  CHECK(installed->inflight + installed->queued == 3);

  // The client resumes on B: session present, and the 3 messages in order.
  REQUIRE(c.open(b.port));
  const auto ack = c.connect(persistent_v5(id));
  REQUIRE(connack_code(ack) == 0);
  CHECK(session_present(ack));
  for (int i = 1; i <= 3; ++i) {
    CAPTURE(i);
    const auto got = c.await<mqtt::Publish>(kWait);
    REQUIRE(got);
    const auto* p = got->as<mqtt::Publish>();
    CHECK(sv(p->topic) == "move/" + std::to_string(i));
    CHECK(sv(p->payload) == "m" + std::to_string(i));
    CHECK(p->qos == 1);
    REQUIRE(c.acknowledge(*p));
  }
  // Nothing more, and everything acknowledged.
  const auto rest = c.ping();
  REQUIRE(rest);
  CHECK(publishes(*rest).empty());
  CHECK(wait_until([&] { return brokerha::test::pending_deliveries(b.broker, id) == 0; }, kWait));

  // The imported subscription is live on B.
  MqttClient pub_b(ProtocolVersion::v311);
  REQUIRE(pub_b.open_and_connect(b.port, make_connect(ProtocolVersion::v311, "mover-pub-b")) == 0);
  REQUIRE(pub_b.publish(make_publish("move/4", "m4", 1)));
  const auto fourth = c.await<mqtt::Publish>(kWait);
  REQUIRE(fourth);
  CHECK(sv(fourth->as<mqtt::Publish>()->payload) == "m4");
  REQUIRE(c.acknowledge(*fourth->as<mqtt::Publish>()));

  // While the client is connected on B, the session is not replaced.
  CHECK(b.broker.import_session(*exported) == make_error_code(errc::session_in_use));
  CHECK(brokerha::test::is_connected(b.broker, id));
  REQUIRE(c.ping());
  CHECK_FALSE(c.eof());

  // Garbage and truncated exports are refused, and change nothing.
  CHECK(b.broker.import_session("garbage") == make_error_code(errc::malformed_input));
  CHECK(b.broker.import_session("") == make_error_code(errc::malformed_input));
  CHECK(b.broker.import_session(exported->substr(0, exported->size() - 1)) ==
        make_error_code(errc::malformed_input));
  CHECK(b.broker.import_session(*exported + "x") == make_error_code(errc::malformed_input));
  CHECK(brokerha::test::is_connected(b.broker, id));

  // Unknown client id: nothing to export.
  CHECK_FALSE(a.broker.export_session("no-such-client").has_value());
  CHECK_FALSE(b.broker.export_session("no-such-client").has_value());

  // Once the client is offline again, an import replaces its session on B.
  c.disconnect();
  REQUIRE(wait_until([&] { return offline(b.broker, id); }, kWait));
  CHECK(b.broker.import_session(*exported) == std::error_code());
  const auto replaced = find_client(b.broker, id);
  REQUIRE(replaced.has_value());
  CHECK(replaced->inflight + replaced->queued == 3);
}

TEST_CASE("features: an unacknowledged in-flight message moves too and is resent with DUP") {
  TestBroker a(options());
  TestBroker b(options());
  const std::string id = "mover-inflight";

  MqttClient c(ProtocolVersion::v5);
  REQUIRE(c.open(a.port));
  REQUIRE(connack_code(c.connect(persistent_v5(id))) == 0);
  REQUIRE(c.subscribe("fly/#", 2));
  MqttClient pub(ProtocolVersion::v311);
  REQUIRE(pub.open_and_connect(a.port, make_connect(ProtocolVersion::v311, "fly-pub")) == 0);
  REQUIRE(pub.publish(make_publish("fly/q1", "one", 1)));
  REQUIRE(pub.publish(make_publish("fly/q2", "two", 2)));
  const auto q1 = c.await<mqtt::Publish>(kWait);
  const auto q2 = c.await<mqtt::Publish>(kWait);
  REQUIRE(q1);
  REQUIRE(q2);
  const std::uint16_t id1 = q1->as<mqtt::Publish>()->packet_id;
  const std::uint16_t id2 = q2->as<mqtt::Publish>()->packet_id;
  // QoS 2: PUBREC, so the broker holds it as released (PUBREL to resend).
  mqtt::Pubrec rec;
  rec.packet_id = id2;
  REQUIRE(c.send(rec));
  REQUIRE(c.await_ack<mqtt::Pubrel>(id2, kWait));
  c.close();  // no DISCONNECT, nothing more acknowledged
  REQUIRE(wait_until([&] { return offline(a.broker, id); }, kWait));

  const auto exported = a.broker.export_session(id);
  REQUIRE(exported.has_value());
  REQUIRE(b.broker.import_session(*exported) == std::error_code());

  REQUIRE(c.open(b.port));
  const auto ack = c.connect(persistent_v5(id));
  REQUIRE(connack_code(ack) == 0);
  CHECK(session_present(ack));
  const auto resent = c.await<mqtt::Publish>(kWait);
  REQUIRE(resent);
  const auto* p = resent->as<mqtt::Publish>();
  CHECK(p->dup);
  CHECK(p->packet_id == id1);
  CHECK(sv(p->payload) == "one");
  const auto rel = c.await_ack<mqtt::Pubrel>(id2, kWait);
  CHECK(rel);
  mqtt::Puback puback;
  puback.packet_id = id1;
  REQUIRE(c.send(puback));
  mqtt::Pubcomp comp;
  comp.packet_id = id2;
  REQUIRE(c.send(comp));
  CHECK(wait_until([&] { return brokerha::test::pending_deliveries(b.broker, id) == 0; }, kWait));
}

TEST_CASE("features: import_session on a broker that is not started") {
  brokerha::Broker idle(options());
  CHECK(idle.import_session("BHS\x01") == make_error_code(errc::not_started));
  CHECK_FALSE(idle.export_session("x").has_value());
}

// ---- outgoing topic aliases -------------------------------------------------------------------

namespace {

struct AliasSeen {
  std::string topic;  // as sent (empty when only the alias was sent)
  std::optional<std::uint16_t> alias;
  std::string payload;
  std::uint8_t qos = 0;
  std::uint16_t packet_id = 0;
};

// Publishes t/1, t/2, t/3, t/1, t/2, t/3 (payload "<topic>#<round>") and returns the six
// PUBLISH packets `sub` receives.
std::vector<AliasSeen> six_messages(MqttClient& pub, MqttClient& sub, std::uint8_t qos = 0) {
  for (int round = 1; round <= 2; ++round) {
    for (int t = 1; t <= 3; ++t) {
      const std::string topic = "t/" + std::to_string(t);
      const std::string payload = topic + "#" + std::to_string(round);
      if (qos == 0) {
        pub.publish(make_publish(topic, payload, 0));
      } else {
        REQUIRE(pub.publish(make_publish(topic, payload, qos)));
      }
    }
  }
  std::vector<AliasSeen> seen;
  for (int i = 0; i < 6; ++i) {
    const auto got = sub.await<mqtt::Publish>(kWait);
    if (!got) break;
    const auto* p = got->as<mqtt::Publish>();
    seen.push_back({sv(p->topic), p->properties.topic_alias, sv(p->payload), p->qos, p->packet_id});
    if (p->qos > 0) REQUIRE(sub.acknowledge(*p));
  }
  return seen;
}

std::string describe(const std::vector<AliasSeen>& seen) {
  std::ostringstream out;
  for (const AliasSeen& s : seen) {
    out << "topic='" << s.topic
        << "' alias=" << (s.alias ? std::to_string(*s.alias) : std::string("none")) << " payload='"
        << s.payload << "'\n";
  }
  return out.str();
}

void check_aliased(const std::vector<AliasSeen>& seen) {
  INFO(describe(seen));
  REQUIRE(seen.size() == 6);
  // Publication order is kept.
  const char* payloads[] = {"t/1#1", "t/2#1", "t/3#1", "t/1#2", "t/2#2", "t/3#2"};
  for (std::size_t i = 0; i < 6; ++i) CHECK(seen[i].payload == payloads[i]);
  // First message on t/1 and t/2: the topic and a new alias (1 and 2).
  CHECK(seen[0].topic == "t/1");
  CHECK(seen[0].alias == std::optional<std::uint16_t>(1));
  CHECK(seen[1].topic == "t/2");
  CHECK(seen[1].alias == std::optional<std::uint16_t>(2));
  // t/3 is beyond the client's maximum: always the topic, never an alias.
  CHECK(seen[2].topic == "t/3");
  CHECK_FALSE(seen[2].alias.has_value());
  // Second message on t/1 and t/2: empty topic and the alias only.
  CHECK(seen[3].topic.empty());
  CHECK(seen[3].alias == std::optional<std::uint16_t>(1));
  CHECK(seen[4].topic.empty());
  CHECK(seen[4].alias == std::optional<std::uint16_t>(2));
  CHECK(seen[5].topic == "t/3");
  CHECK_FALSE(seen[5].alias.has_value());
  // Every alias is within 1..maximum.
  for (const AliasSeen& s : seen) {
    if (s.alias) CHECK((*s.alias >= 1 && *s.alias <= 2));
  }
}

void check_no_alias(const std::vector<AliasSeen>& seen) {
  INFO(describe(seen));
  REQUIRE(seen.size() == 6);
  const char* topics[] = {"t/1", "t/2", "t/3", "t/1", "t/2", "t/3"};
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(seen[i].topic == topics[i]);
    CHECK_FALSE(seen[i].alias.has_value());
  }
}

mqtt::Connect alias_connect(std::string_view id, std::optional<std::uint16_t> maximum) {
  mqtt::Connect c = make_connect(ProtocolVersion::v5, id);
  c.properties.topic_alias_maximum = maximum;
  return c;
}

}  // namespace

TEST_CASE("features: outgoing topic aliases up to the client's Topic Alias Maximum") {
  TestBroker tb(options());
  MqttClient pub(ProtocolVersion::v5);
  REQUIRE(pub.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "alias-pub")) == 0);

  SUBCASE("QoS 0") {
    MqttClient sub(ProtocolVersion::v5);
    REQUIRE(sub.open_and_connect(tb.port, alias_connect("alias-sub", 2)) == 0);
    REQUIRE(sub.subscribe("t/#", 0));
    check_aliased(six_messages(pub, sub));
  }
  SUBCASE("QoS 1 (per-subscriber encoding keeps the packet ids right)") {
    MqttClient sub(ProtocolVersion::v5);
    REQUIRE(sub.open_and_connect(tb.port, alias_connect("alias-sub-q1", 2)) == 0);
    REQUIRE(sub.subscribe("t/#", 1));
    const auto seen = six_messages(pub, sub, 1);
    check_aliased(seen);
    for (const AliasSeen& s : seen) {
      CHECK(s.qos == 1);
      CHECK(s.packet_id != 0);
    }
    CHECK(wait_until(
        [&] { return brokerha::test::pending_deliveries(tb.broker, "alias-sub-q1") == 0; }, kWait));
  }
  SUBCASE("Topic Alias Maximum 0 or absent: no alias") {
    MqttClient zero(ProtocolVersion::v5);
    REQUIRE(zero.open_and_connect(tb.port, alias_connect("alias-zero", 0)) == 0);
    REQUIRE(zero.subscribe("t/#", 0));
    check_no_alias(six_messages(pub, zero));
    MqttClient none(ProtocolVersion::v5);
    REQUIRE(none.open_and_connect(tb.port, alias_connect("alias-none", std::nullopt)) == 0);
    REQUIRE(none.subscribe("t/#", 0));
    check_no_alias(six_messages(pub, none));
  }
  SUBCASE("a new connection starts without aliases") {
    // Aliases belong to a network connection (MQTT 5.0 3.3.2.3.4): after a reconnect the
    // first message on a topic carries the topic again.
    const std::string id = "alias-reconnect";
    MqttClient sub(ProtocolVersion::v5);
    mqtt::Connect c = persistent_v5(id);
    c.properties.topic_alias_maximum = 2;
    REQUIRE(sub.open_and_connect(tb.port, c) == 0);
    REQUIRE(sub.subscribe("t/#", 1));
    check_aliased(six_messages(pub, sub, 1));
    sub.disconnect();
    REQUIRE(wait_until([&] { return offline(tb.broker, id); }, kWait));
    c.clean_start = false;
    REQUIRE(sub.open(tb.port));
    REQUIRE(session_present(sub.connect(c)));
    check_aliased(six_messages(pub, sub, 1));
  }
}

TEST_CASE("features: send_topic_aliases = false sends no alias") {
  TestBroker tb(options([](BrokerOptions& o) { o.send_topic_aliases = false; }));
  MqttClient pub(ProtocolVersion::v5);
  REQUIRE(pub.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "noalias-pub")) == 0);
  MqttClient sub(ProtocolVersion::v5);
  REQUIRE(sub.open_and_connect(tb.port, alias_connect("noalias-sub", 10)) == 0);
  REQUIRE(sub.subscribe("t/#", 1));
  SUBCASE("QoS 0") { check_no_alias(six_messages(pub, sub, 0)); }
  SUBCASE("QoS 1") { check_no_alias(six_messages(pub, sub, 1)); }
}

// ---- memory back-pressure ---------------------------------------------------------------------

namespace {

// Resident set size of this process in KiB (0 if unknown).
std::size_t rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return static_cast<std::size_t>(std::atol(line.c_str() + 6));
  }
  return 0;
}

// Writes PUBLISH packets on a raw socket as fast as the socket takes them, keeping packets
// whole across partial writes, and counts the packets written completely.
class Flooder {
 public:
  explicit Flooder(int fd) : fd_(fd) {}

  // Writes for `duration` (or until `stop`); a packet cut short stays pending for later.
  void flood(std::chrono::milliseconds duration, const std::atomic<bool>& stop) {
    const auto deadline = Clock::now() + duration;
    while (Clock::now() < deadline && !stop.load()) {
      if (pending_.empty()) {
        mqtt::Publish p;
        topic_ = "big/" + std::to_string(next_ % 16);
        p.topic = topic_;
        payload_.assign(2048, static_cast<char>('a' + next_ % 26));
        p.payload = payload_;
        pending_ = raw::encode(p, ProtocolVersion::v311);
        ++next_;
      }
      if (!write_some(10ms)) return;
    }
  }

  // Finishes a packet cut short and writes `bytes` completely (bounded by `timeout`).
  bool send_whole(const std::string& bytes, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!pending_.empty()) {
      if (Clock::now() >= deadline || !write_some(50ms)) return false;
    }
    pending_ = bytes;
    while (!pending_.empty()) {
      if (Clock::now() >= deadline || !write_some(50ms)) return false;
    }
    return true;
  }

  std::uint64_t completed() const noexcept { return completed_; }
  std::uint64_t would_block() const noexcept { return would_block_; }
  bool failed() const noexcept { return failed_; }
  const std::string& error() const noexcept { return error_; }

 private:
  // One write attempt, waiting up to `wait` for room. False on a socket error.
  bool write_some(std::chrono::milliseconds wait) {
    const ssize_t n = ::send(fd_, pending_.data(), pending_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      pending_.erase(0, static_cast<std::size_t>(n));
      if (pending_.empty()) ++completed_;
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      ++would_block_;
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(wait.count()));
      return true;
    }
    failed_ = true;
    error_ = n == 0 ? std::string("send returned 0") : std::string(std::strerror(errno));
    return false;
  }

  int fd_;
  std::string pending_;
  std::string topic_;
  std::string payload_;
  std::uint64_t next_ = 0;
  std::uint64_t completed_ = 0;
  std::uint64_t would_block_ = 0;
  bool failed_ = false;
  std::string error_;
};

}  // namespace

TEST_CASE("features: memory back-pressure throttles a publisher, others keep going") {
  constexpr std::uint64_t kBound = 64 * 1024;
  TestBroker tb(options([](BrokerOptions& o) { o.max_queued_bytes = kBound; }));
  const std::size_t rss_before = rss_kib();

  // A subscriber that never reads, with a small receive buffer.
  raw::Client slow(ProtocolVersion::v311);
  REQUIRE(slow.open(tb.port, raw::kDefaultTimeout, 4096));
  mqtt::Connect sc = slow.connect_packet("slow-sub", 600);
  const auto slow_ack = slow.handshake(sc);
  REQUIRE(slow_ack);
  REQUIRE(slow_ack->is(mqtt::PacketType::connack));
  const auto slow_suback = slow.subscribe("big/#", 1);
  REQUIRE(slow_suback);
  REQUIRE(slow_suback->is(mqtt::PacketType::suback));

  // Control clients: a subscriber on another topic and a separate publisher.
  MqttClient ctl_sub(ProtocolVersion::v311);
  REQUIRE(ctl_sub.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "ctl-sub")) == 0);
  REQUIRE(ctl_sub.subscribe("ctl/#", 1));
  MqttClient ctl_pub(ProtocolVersion::v311);
  REQUIRE(ctl_pub.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "ctl-pub")) == 0);
  // A normal subscriber for what the flooding publisher sends after the slow one is gone.
  MqttClient after_sub(ProtocolVersion::v311);
  REQUIRE(after_sub.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "after-sub")) ==
          0);
  REQUIRE(after_sub.subscribe("big/after", 0));

  // The flooding publisher.
  raw::Client flood_conn(ProtocolVersion::v311);
  REQUIRE(flood_conn.open(tb.port));
  const auto flood_ack = flood_conn.handshake(flood_conn.connect_packet("flooder", 600));
  REQUIRE(flood_ack);
  REQUIRE(flood_ack->is(mqtt::PacketType::connack));
  const std::uint64_t received_before = tb.broker.stats().messages_received;

  Flooder flooder(flood_conn.fd());
  std::atomic<bool> stop{false};
  std::thread flood_thread([&] { flooder.flood(2000ms, stop); });

  // Meanwhile the control publisher's messages reach the control subscriber in bounded time.
  int control_sent = 0;
  std::vector<std::chrono::milliseconds> latencies;
  const auto flood_end = Clock::now() + 2000ms;
  while (Clock::now() < flood_end) {
    std::this_thread::sleep_for(150ms);
    const std::string payload = "ctl-" + std::to_string(control_sent);
    const auto t0 = Clock::now();
    if (!ctl_pub.publish(make_publish("ctl/x", payload, 1), 4000ms)) {
      FAIL_CHECK("control publish " << control_sent << " not acknowledged");
      break;
    }
    ++control_sent;
    const auto got = ctl_sub.await<mqtt::Publish>(4000ms);
    if (!got) {
      FAIL_CHECK("control message " << payload << " not received");
      break;
    }
    CHECK(sv(got->as<mqtt::Publish>()->payload) == payload);
    ctl_sub.acknowledge(*got->as<mqtt::Publish>());
    latencies.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0));
  }
  flood_thread.join();
  std::this_thread::sleep_for(300ms);  // let the broker take what it is going to take

  const brokerha::BrokerStats mid = tb.broker.stats();
  const std::uint64_t sent = flooder.completed();
  const std::uint64_t read_by_broker =
      mid.messages_received - received_before - static_cast<std::uint64_t>(control_sent);
  const auto slow_info = find_client(tb.broker, "slow-sub");
  std::string lat;
  for (auto l : latencies) lat += std::to_string(l.count()) + "ms ";
  INFO("flood: written " << sent << " (would-block " << flooder.would_block()
                         << "), read by broker " << read_by_broker << ", dropped "
                         << mid.messages_dropped << ", slow queued "
                         << (slow_info ? slow_info->queued : 0) << ", control latencies " << lat
                         << ", RSS " << rss_before << " -> " << rss_kib() << " KiB");
  MESSAGE("flood: written " << sent << ", read by broker " << read_by_broker << ", slow queued "
                            << (slow_info ? slow_info->queued : 0) << ", dropped "
                            << mid.messages_dropped << ", control latencies " << lat);

  // The publisher's connection stays open while it is throttled.
  INFO("flooder socket error: " << flooder.error());
  CHECK_FALSE(flooder.failed());
  CHECK(brokerha::test::is_connected(tb.broker, "flooder"));
  CHECK(brokerha::test::is_connected(tb.broker, "ctl-pub"));
  CHECK(control_sent >= 2);
  for (auto l : latencies) CHECK(l <= 2500ms);
  // The publisher was throttled: the broker stopped reading it, so what it wrote is stuck in
  // TCP buffers instead of in the broker's memory.
  CHECK(flooder.would_block() > 0);
  CHECK(read_by_broker < sent);
  // What the broker did read is bounded: a few MiB of socket buffers plus one read round per
  // sweep, not the publisher's full rate (~2 s of loopback bandwidth).
  CHECK(read_by_broker * 2048 < 64ull * 1024 * 1024);
  // The slow subscriber's session queue stays within max_queued_messages.
  REQUIRE(slow_info.has_value());
  CHECK(slow_info->queued <= 1000);
#ifndef BROKERHA_TEST_ASAN
  CHECK(rss_kib() < rss_before + 128 * 1024);
#endif

  // Its output did not move, but only for 2 s: well under stuck_consumer_timeout (10 s).
  CHECK(brokerha::test::is_connected(tb.broker, "slow-sub"));
  CHECK(tb.broker.stats().stuck_consumers_closed == 0);

  // The slow subscriber goes away: the flooding publisher is read again.
  slow.close();
  REQUIRE(wait_until([&] { return !find_client(tb.broker, "slow-sub").has_value(); }, kWait));
  mqtt::Publish last;
  last.topic = "big/after";
  last.payload = "after the flood";
  REQUIRE(flooder.send_whole(raw::encode(last, ProtocolVersion::v311), 10000ms));
  const auto after = after_sub.await<mqtt::Publish>(10000ms);
  REQUIRE(after);
  CHECK(sv(after->as<mqtt::Publish>()->payload) == "after the flood");
  // Everything the publisher wrote was read in the end (nothing lost on the way in).
  CHECK(wait_until(
      [&] {
        return tb.broker.stats().messages_received - received_before ==
               flooder.completed() + static_cast<std::uint64_t>(control_sent);
      },
      kWait));
  // And the control publisher is read again without waiting for a sweep: its first message
  // may still find it paused from the flood (one sweep, <= 1 s), the next one may not.
  for (const char* payload : {"final-1", "final-2"}) {
    CAPTURE(payload);
    const auto t0 = Clock::now();
    REQUIRE(ctl_pub.publish(make_publish("ctl/x", payload, 1), 3000ms));
    const auto got = ctl_sub.await<mqtt::Publish>(3000ms);
    REQUIRE(got);
    CHECK(sv(got->as<mqtt::Publish>()->payload) == payload);
    ctl_sub.acknowledge(*got->as<mqtt::Publish>());
    CHECK(Clock::now() - t0 < (std::string(payload) == "final-1" ? 2000ms : 500ms));
  }
}

TEST_CASE(
    "features: a subscriber that never reads is closed when it holds the broker over its bound") {
  constexpr std::uint64_t kBound = 64 * 1024;
  TestBroker tb(options([](BrokerOptions& o) {
    o.max_queued_bytes = kBound;
    o.stuck_consumer_timeout = 1000ms;
  }));

  raw::Client stuck(ProtocolVersion::v5);
  REQUIRE(stuck.open(tb.port, raw::kDefaultTimeout, 4096));
  mqtt::Connect sc = stuck.connect_packet("stuck-sub", 600);
  sc.clean_start = false;
  sc.properties.session_expiry_interval = 600;
  const auto stuck_ack = stuck.handshake(sc);
  REQUIRE(stuck_ack);
  REQUIRE(stuck_ack->is(mqtt::PacketType::connack));
  const auto stuck_suback = stuck.subscribe("big/#", 1);
  REQUIRE(stuck_suback);
  REQUIRE(stuck_suback->is(mqtt::PacketType::suback));

  // A subscriber that does read: it keeps receiving once the stuck one is gone.
  MqttClient reader(ProtocolVersion::v311);
  REQUIRE(reader.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "reader")) == 0);
  REQUIRE(reader.subscribe("big/after", 0));

  raw::Client flood_conn(ProtocolVersion::v311);
  REQUIRE(flood_conn.open(tb.port));
  const auto flood_ack = flood_conn.handshake(flood_conn.connect_packet("flooder2", 600));
  REQUIRE(flood_ack);
  REQUIRE(flood_ack->is(mqtt::PacketType::connack));
  const std::uint64_t received_before = tb.broker.stats().messages_received;

  Flooder flooder(flood_conn.fd());
  std::atomic<bool> stop{false};
  std::thread flood_thread([&] { flooder.flood(6000ms, stop); });
  // The stuck subscriber is closed within a few sweeps of the broker going over its bound.
  const bool closed =
      wait_until([&] { return !brokerha::test::is_connected(tb.broker, "stuck-sub"); }, 8000ms);
  stop = true;
  flood_thread.join();
  REQUIRE(closed);
  CHECK(tb.broker.stats().stuck_consumers_closed >= 1);
  INFO("flooder socket error: " << flooder.error());
  CHECK_FALSE(flooder.failed());
  CHECK(brokerha::test::is_connected(tb.broker, "flooder2"));
  // Its session stays (it asked for one), bounded by max_queued_messages.
  const auto info = find_client(tb.broker, "stuck-sub");
  REQUIRE(info.has_value());
  CHECK(info->queued <= 1000);

  // The publisher is read again: everything it wrote arrives, then a message to the reader.
  CHECK(wait_until(
      [&] { return tb.broker.stats().messages_received - received_before == flooder.completed(); },
      kWait));
  mqtt::Publish last;
  last.topic = "big/after";
  last.payload = "after the stuck one";
  REQUIRE(flooder.send_whole(raw::encode(last, ProtocolVersion::v311), 10000ms));
  const auto after = reader.await<mqtt::Publish>(10000ms);
  REQUIRE(after);
  CHECK(sv(after->as<mqtt::Publish>()->payload) == "after the stuck one");
}

// ---- event hooks ------------------------------------------------------------------------------

namespace {

class Recorder : public brokerha::EventHook {
 public:
  void on_connect(const brokerha::ClientEvent& e) override {
    add(e.client_id, "connect sp=" + std::to_string(e.session_present ? 1 : 0) +
                         " v=" + std::to_string(e.protocol_version));
  }
  void on_disconnect(const brokerha::ClientEvent& e) override {
    add(e.client_id, "disconnect reason=" + std::to_string(static_cast<int>(e.reason)));
  }
  void on_subscribe(const brokerha::SubscriptionEvent& e) override {
    add(e.client_id, "subscribe " + sv(e.filter) + " qos=" + std::to_string(e.qos));
  }
  void on_unsubscribe(const brokerha::SubscriptionEvent& e) override {
    add(e.client_id, "unsubscribe " + sv(e.filter));
  }
  void on_publish(const brokerha::MessageEvent& e) override {
    add(e.client_id, "publish " + sv(e.topic) + " " + sv(e.payload) +
                         " qos=" + std::to_string(e.qos) + " retain=" + std::to_string(e.retain));
  }
  void on_deliver(const brokerha::MessageEvent& e) override {
    add(e.client_id,
        "deliver " + sv(e.topic) + " " + sv(e.payload) + " qos=" + std::to_string(e.qos));
  }

  std::vector<std::string> of(const std::string& client) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [id, what] : events_) {
      if (id == client) out.push_back(what);
    }
    return out;
  }
  std::size_t count(const std::string& client) const { return of(client).size(); }

 private:
  void add(std::string_view client, std::string what) {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.emplace_back(std::string(client), std::move(what));
  }
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, std::string>> events_;
};

std::string joined(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& s : list) out += "  " + s + "\n";
  return out;
}

}  // namespace

TEST_CASE(
    "features: event hooks see connect, subscribe, publish, deliver, unsubscribe, disconnect") {
  auto rec = std::make_shared<Recorder>();
  TestBroker tb(options(), [rec](brokerha::Broker& b) { b.add_event_hook(rec); });

  MqttClient sub(ProtocolVersion::v5);
  REQUIRE(sub.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "ev-sub")) == 0);
  REQUIRE(sub.subscribe("ev/#", 1));
  REQUIRE(sub.subscribe("ev/two", 2));

  MqttClient pub(ProtocolVersion::v311);
  REQUIRE(pub.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "ev-pub")) == 0);
  REQUIRE(pub.publish(make_publish("ev/a", "hello", 1)));
  const auto got = sub.await<mqtt::Publish>(kWait);
  REQUIRE(got);
  REQUIRE(sub.acknowledge(*got->as<mqtt::Publish>()));

  mqtt::Unsubscribe u;
  u.packet_id = 77;
  u.filters.push_back("ev/#");
  REQUIRE(sub.send(u));
  REQUIRE(sub.await_ack<mqtt::Unsuback>(77, kWait));
  pub.disconnect();
  sub.disconnect();

  // Takeover: the old v5 connection ends with 0x8E, the new one resumes the session.
  MqttClient old_conn(ProtocolVersion::v5);
  REQUIRE(old_conn.open_and_connect(tb.port, persistent_v5("ev-take")) == 0);
  MqttClient new_conn(ProtocolVersion::v5);
  REQUIRE(new_conn.open(tb.port));
  const auto take_ack = new_conn.connect(persistent_v5("ev-take"));
  REQUIRE(connack_code(take_ack) == 0);
  CHECK(session_present(take_ack));
  const auto kicked = old_conn.await<mqtt::Disconnect>(kWait);
  REQUIRE(kicked);
  CHECK(kicked->as<mqtt::Disconnect>()->reason_code == ReasonCode::session_taken_over);
  new_conn.disconnect();

  // A connection dropped without DISCONNECT is not reported as the client's DISCONNECT.
  MqttClient dropper(ProtocolVersion::v311);
  REQUIRE(dropper.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "ev-drop")) == 0);
  REQUIRE(dropper.ping());
  dropper.close();

  const std::vector<std::string> want_sub = {"connect sp=0 v=5",       "subscribe ev/# qos=1",
                                             "subscribe ev/two qos=2", "deliver ev/a hello qos=1",
                                             "unsubscribe ev/#",       "disconnect reason=0"};
  const std::vector<std::string> want_pub = {
      "connect sp=0 v=4", "publish ev/a hello qos=1 retain=0", "disconnect reason=0"};
  const std::vector<std::string> want_take = {"connect sp=0 v=5", "disconnect reason=142",
                                              "connect sp=1 v=5", "disconnect reason=0"};
  CHECK(wait_until(
      [&] {
        return rec->count("ev-sub") >= want_sub.size() && rec->count("ev-pub") >= want_pub.size() &&
               rec->count("ev-take") >= want_take.size() && rec->count("ev-drop") >= 2;
      },
      kWait));
  {
    INFO("ev-sub:\n" << joined(rec->of("ev-sub")));
    CHECK(rec->of("ev-sub") == want_sub);
  }
  {
    INFO("ev-pub:\n" << joined(rec->of("ev-pub")));
    CHECK(rec->of("ev-pub") == want_pub);
  }
  {
    INFO("ev-take:\n" << joined(rec->of("ev-take")));
    CHECK(rec->of("ev-take") == want_take);
  }
  {
    const auto drop = rec->of("ev-drop");
    INFO("ev-drop:\n" << joined(drop));
    REQUIRE(drop.size() == 2);
    CHECK(drop[0] == "connect sp=0 v=4");
    CHECK(drop[1].rfind("disconnect reason=", 0) == 0);
    CHECK(drop[1] != "disconnect reason=0");
  }
}

// ---- $SYS -------------------------------------------------------------------------------------

TEST_CASE("features: $SYS statistics every sys_interval, not matched by '#'") {
  TestBroker tb(options([](BrokerOptions& o) { o.sys_interval = 200ms; }));
  MqttClient sys(ProtocolVersion::v311);
  REQUIRE(sys.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "sys-sub")) == 0);
  REQUIRE(sys.subscribe("$SYS/broker/#", 0));
  MqttClient all(ProtocolVersion::v311);
  REQUIRE(all.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "hash-sub")) == 0);
  REQUIRE(all.subscribe("#", 0));
  MqttClient pub(ProtocolVersion::v311);
  REQUIRE(pub.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "sys-pub")) == 0);

  // Reads $SYS messages until `done(topic, payload)` says so (bounded).
  auto read_until = [&](const std::function<bool(const std::string&, const std::string&)>& done,
                        std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      const auto got = sys.await<mqtt::Publish>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
      if (!got) return false;
      const auto* p = got->as<mqtt::Publish>();
      if (done(sv(p->topic), sv(p->payload))) return true;
    }
    return false;
  };

  std::optional<std::string> version;
  std::optional<std::uint64_t> received0;
  bool connected_three = false;
  CHECK(read_until(
      [&](const std::string& topic, const std::string& payload) {
        CHECK(topic.rfind("$SYS/broker/", 0) == 0);
        if (topic == "$SYS/broker/version") version = payload;
        if (topic == "$SYS/broker/messages/received" && !received0) {
          received0 = std::strtoull(payload.c_str(), nullptr, 10);
        }
        if (topic == "$SYS/broker/clients/connected" && payload == "3") connected_three = true;
        return version && received0 && connected_three;
      },
      3000ms));
  REQUIRE(version.has_value());
  CHECK(version->rfind("brokerha ", 0) == 0);
  CHECK(version->size() > 9);
  CHECK(connected_three);
  REQUIRE(received0.has_value());

  for (int i = 0; i < 5; ++i) pub.publish(make_publish("plain/" + std::to_string(i), "x", 0));
  std::uint64_t latest = *received0;
  CHECK(read_until(
      [&](const std::string& topic, const std::string& payload) {
        if (topic == "$SYS/broker/messages/received") {
          latest = std::strtoull(payload.c_str(), nullptr, 10);
        }
        return latest >= *received0 + 5;
      },
      3000ms));
  CHECK(latest >= *received0 + 5);

  // Several intervals later, the '#' subscriber has had the 5 plain messages and no $SYS one.
  std::this_thread::sleep_for(700ms);
  const auto seen = all.ping();
  REQUIRE(seen);
  int plain = 0;
  for (const mqtt::Publish* p : publishes(*seen)) {
    CHECK_MESSAGE(p->topic.substr(0, 1) != "$", "'#' received " << sv(p->topic));
    if (p->topic.substr(0, 6) == "plain/") ++plain;
  }
  CHECK(plain == 5);
}

// ---- stop() -----------------------------------------------------------------------------------

TEST_CASE("features: stop() sends v5 clients DISCONNECT 0x8B and returns in bounded time") {
  TestBroker tb(options());

  MqttClient v5(ProtocolVersion::v5);
  REQUIRE(v5.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "stop-v5")) == 0);
  MqttClient v311(ProtocolVersion::v311);
  REQUIRE(v311.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "stop-v311")) == 0);

  // A client that never reads, with a write backlog the broker cannot flush.
  raw::Client deaf(ProtocolVersion::v311);
  REQUIRE(deaf.open(tb.port, raw::kDefaultTimeout, 4096));
  const auto deaf_ack = deaf.handshake(deaf.connect_packet("stop-deaf", 600));
  REQUIRE(deaf_ack);
  const auto deaf_sub = deaf.subscribe("stop/#", 0);
  REQUIRE(deaf_sub);
  const std::string big(64 * 1024, 'z');
  for (int i = 0; i < 100; ++i) {
    brokerha::MessageInfo m;
    m.topic = "stop/big";
    m.payload = big;
    tb.broker.publish(m);
  }
  CHECK(wait_until([&] { return tb.broker.stats().bytes_sent > 64 * 1024; }, kWait));
  std::this_thread::sleep_for(200ms);

  const auto t0 = Clock::now();
  tb.stop();
  const auto took = Clock::now() - t0;
  CHECK(took < 3000ms);
  MESSAGE("stop() took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                         << " ms");

  const auto closed = v5.wait_closed(kWait);
  REQUIRE(closed);
  INFO("v5 client received:\n" << brokerha::test::describe(*closed));
  REQUIRE(closed->size() == 1);
  const auto* d = (*closed)[0].as<mqtt::Disconnect>();
  REQUIRE(d != nullptr);
  CHECK(d->reason_code == ReasonCode::server_shutting_down);

  // MQTT 3.1.1 has no server DISCONNECT: the connection just closes.
  const auto closed311 = v311.wait_closed(kWait);
  REQUIRE(closed311);
  CHECK(closed311->empty());

  // The listener is closed.
  MqttClient late(ProtocolVersion::v311);
  CHECK_FALSE(late.open(tb.port));
}
