// The cluster's frame bodies (cluster/protocol.hpp): round trips of every kind, every
// truncation and garbage refused without a crash, and the digest's sensitivity to versions.

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "cluster/protocol.hpp"

namespace {

using namespace brokerha;
using cluster::WireMessage;

std::shared_ptr<broker::Message> full_message() {
  auto m = std::make_shared<broker::Message>();
  m->topic = "sensors/1/temp";
  m->payload = std::string("21.5\0bin", 8);
  m->qos = 2;
  m->retain = true;
  m->origin = "client-7";
  m->properties.payload_format_indicator = 1;
  m->properties.content_type = "text/plain";
  m->properties.response_topic = "reply/here";
  m->properties.correlation_data = std::string("\x01\x02", 2);
  m->properties.user_properties = {{"k", "v"}, {"k", "v2"}, {"", ""}};
  m->expires_at = broker::Message::Clock::now() + std::chrono::seconds(90);
  return m;
}

}  // namespace

TEST_CASE("cluster protocol: a message with every property survives the round trip") {
  auto m = full_message();
  const auto now = broker::Message::Clock::now();
  broker::RetainedVersion v{0x123456789ABCull, "node-2"};
  const std::string body = cluster::encode_message(*m, &v, now);
  WireMessage w;
  REQUIRE(cluster::decode_message(body, w));
  CHECK(w.topic == m->topic);
  CHECK(w.payload == m->payload);
  CHECK(w.qos == 2);
  CHECK(w.retain);
  CHECK(w.origin == "client-7");
  REQUIRE(w.expiry);
  CHECK(*w.expiry >= 89);
  CHECK(*w.expiry <= 90);
  REQUIRE(w.version);
  CHECK(w.version->hlc == v.hlc);
  CHECK(w.version->node == "node-2");
  CHECK(w.payload_format == std::optional<std::uint8_t>(1));
  CHECK(w.content_type == std::optional<std::string_view>("text/plain"));
  CHECK(w.response_topic == std::optional<std::string_view>("reply/here"));
  CHECK(w.correlation_data == std::optional<std::string_view>(std::string_view("\x01\x02", 2)));
  REQUIRE(w.user_properties.size() == 3);
  CHECK(w.user_properties[1].second == "v2");
  auto back = cluster::to_message(w, now);
  CHECK(back->properties.user_properties == m->properties.user_properties);
  CHECK(back->remaining_expiry(now) == m->remaining_expiry(now));
  CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(back->created - m->created).count() ==
        0);
}

TEST_CASE("cluster protocol: a plain QoS 0 message has no optional parts") {
  broker::Message m;
  m.topic = "a";
  const std::string body = cluster::encode_message(m, nullptr, broker::Message::Clock::now());
  WireMessage w;
  REQUIRE(cluster::decode_message(body, w));
  CHECK(w.topic == "a");
  CHECK(w.payload.empty());
  CHECK_FALSE(w.expiry);
  CHECK_FALSE(w.version);
  CHECK_FALSE(w.content_type);
  CHECK(w.user_properties.empty());
}

TEST_CASE("cluster protocol: every truncation and a trailing byte are refused") {
  auto m = full_message();
  broker::RetainedVersion v{7, "n"};
  const std::string body = cluster::encode_message(*m, &v, broker::Message::Clock::now());
  for (std::size_t n = 0; n < body.size(); ++n) {
    WireMessage w;
    CHECK_FALSE(cluster::decode_message(std::string_view(body).substr(0, n), w));
  }
  WireMessage w;
  CHECK_FALSE(cluster::decode_message(body + "x", w));
  std::string bad_flags = body;
  bad_flags[0] = static_cast<char>(0xC0);
  CHECK_FALSE(cluster::decode_message(bad_flags, w));
}

TEST_CASE("cluster protocol: routes full and delta round trip and refuse garbage") {
  const std::vector<std::string> filters{"a/#", "+/b", "c"};
  std::vector<std::string> out;
  std::uint64_t number = 0;
  REQUIRE(cluster::decode_routes_full(cluster::encode_routes_full(9, filters), number, out));
  CHECK(out == filters);
  CHECK(number == 9);
  REQUIRE(cluster::decode_routes_full(cluster::encode_routes_full(0, {}), number, out));
  CHECK(out.empty());

  const std::vector<cluster::RouteChange> changes{{true, "x/y"}, {false, "z/#"}};
  const std::string delta = cluster::encode_routes_delta(42, changes);
  std::uint64_t n = 0;
  std::vector<cluster::RouteChange> got;
  REQUIRE(cluster::decode_routes_delta(delta, n, got));
  CHECK(n == 42);
  REQUIRE(got.size() == 2);
  CHECK(got[0].add);
  CHECK(got[1].filter == "z/#");
  for (std::size_t i = 0; i < delta.size(); ++i) {
    CHECK_FALSE(cluster::decode_routes_delta(std::string_view(delta).substr(0, i), n, got));
  }
  // A count far beyond the bytes that follow.
  const std::string zero(8, '\0');
  CHECK_FALSE(cluster::decode_routes_full(zero + std::string("\xff\xff\xff\x0f", 4), number, out));
  // An empty filter.
  CHECK_FALSE(cluster::decode_routes_full(zero + std::string("\x01\x00", 2), number, out));
}

TEST_CASE("cluster protocol: retained entries with tombstones round trip") {
  const auto now = broker::Message::Clock::now();
  broker::RetainedStore::Entry live;
  auto m = full_message();
  live.message = m;
  live.version = {100, "a"};
  broker::RetainedStore::Entry dead;
  dead.version = {200, "b"};
  std::string body;
  cluster::begin_retained(body);
  cluster::append_retained(body, m->topic, live, now);
  cluster::append_retained(body, "gone/topic", dead, now);
  cluster::finish_retained(body, 2);
  std::vector<cluster::WireRetained> out;
  REQUIRE(cluster::decode_retained(body, out));
  REQUIRE(out.size() == 2);
  CHECK(out[0].topic == m->topic);
  REQUIRE(out[0].message);
  CHECK(out[0].message->payload == m->payload);
  CHECK(out[0].version.hlc == 100);
  CHECK(out[1].topic == "gone/topic");
  CHECK_FALSE(out[1].message);
  CHECK(out[1].version.node == "b");
  for (std::size_t i = 0; i < body.size(); ++i) {
    CHECK_FALSE(cluster::decode_retained(std::string_view(body).substr(0, i), out));
  }
}

TEST_CASE("cluster protocol: digests and bucket lists") {
  cluster::Digest d{};
  d[3] = 99;
  d[255] = 1;
  cluster::Digest back{};
  REQUIRE(cluster::decode_digest(cluster::encode_digest(d), back));
  CHECK(back == d);
  CHECK_FALSE(cluster::decode_digest(cluster::encode_digest(d).substr(1), back));
  std::vector<std::uint16_t> buckets{0, 17, 255};
  std::vector<std::uint16_t> got;
  REQUIRE(cluster::decode_buckets(cluster::encode_buckets(buckets), got));
  CHECK(got == buckets);
  CHECK_FALSE(cluster::decode_buckets(std::string("\x01\x00\x01", 3), got));  // bucket 256

  // The hash changes with the version, the node and liveness: a newer write or a delete is
  // seen as a difference.
  const broker::RetainedVersion v1{10, "a"}, v2{11, "a"}, v3{10, "b"};
  const auto h = cluster::entry_hash("t", v1, false);
  CHECK(h != cluster::entry_hash("t", v2, false));
  CHECK(h != cluster::entry_hash("t", v3, false));
  CHECK(h != cluster::entry_hash("t", v1, true));
  CHECK(h != cluster::entry_hash("u", v1, false));
  CHECK(cluster::bucket_of("t") < cluster::kDigestBuckets);
}

TEST_CASE("cluster protocol: random bytes never crash a decoder") {
  std::mt19937 rng(12345);
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    WireMessage w;
    (void)cluster::decode_message(s, w);
    std::vector<std::string> f;
    std::uint64_t n;
    (void)cluster::decode_routes_full(s, n, f);
    std::vector<cluster::RouteChange> ch;
    (void)cluster::decode_routes_delta(s, n, ch);
    std::vector<cluster::WireRetained> r;
    (void)cluster::decode_retained(s, r);
    std::vector<std::uint16_t> b;
    (void)cluster::decode_buckets(s, b);
    std::vector<std::string_view> shares;
    (void)cluster::decode_publish_shared(s, shares, w);
  }
  CHECK(true);
}

TEST_CASE("cluster protocol: $SYS stays on its node") {
  CHECK(cluster::node_local_topic("$SYS"));
  CHECK(cluster::node_local_topic("$SYS/broker/uptime"));
  CHECK_FALSE(cluster::node_local_topic("$SYSTEM/x"));
  CHECK_FALSE(cluster::node_local_topic("sys/x"));
  CHECK_FALSE(cluster::node_local_topic("$share/g/x"));
}

TEST_CASE("cluster protocol: publish_shared carries its groups ahead of the message bytes") {
  auto m = full_message();
  broker::RetainedVersion v{42, "n1"};
  const std::string message = cluster::encode_message(*m, &v, broker::Message::Clock::now());
  const std::vector<std::string_view> groups{"$share/g/sensors/+/temp", "$share/h/#"};
  const std::string body = cluster::encode_publish_shared(groups, message);
  // The message part is the publish frame's body, byte for byte.
  CHECK(body.substr(body.size() - message.size()) == message);

  std::vector<std::string_view> shares;
  WireMessage w;
  REQUIRE(cluster::decode_publish_shared(body, shares, w));
  CHECK(shares == groups);
  CHECK(w.topic == m->topic);
  CHECK(w.payload == m->payload);
  CHECK(w.qos == 2);
  REQUIRE(w.version);
  CHECK(w.version->node == "n1");
  REQUIRE(w.user_properties.size() == 3);

  // Every truncation, a trailing byte, no group at all, an empty group: refused.
  for (std::size_t n = 0; n < body.size(); ++n) {
    CHECK_FALSE(cluster::decode_publish_shared(std::string_view(body).substr(0, n), shares, w));
  }
  CHECK_FALSE(cluster::decode_publish_shared(body + "x", shares, w));
  CHECK_FALSE(
      cluster::decode_publish_shared(cluster::encode_publish_shared({}, message), shares, w));
  CHECK_FALSE(
      cluster::decode_publish_shared(cluster::encode_publish_shared({""}, message), shares, w));
  // A count beyond the bytes that follow.
  CHECK_FALSE(cluster::decode_publish_shared(std::string("\xff\xff\x03", 3) + message, shares, w));
}
