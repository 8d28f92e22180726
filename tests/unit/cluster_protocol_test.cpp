// SPDX-License-Identifier: Apache-2.0
// The cluster's frame bodies (cluster/protocol.hpp): round trips of every kind, every
// truncation and garbage refused without a crash, and the digest's sensitivity to versions.

#include <doctest/doctest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cluster/protocol.hpp"
#include "topic/topic.hpp"

namespace {

using namespace brokerha;
using cluster::WireMessage;

std::shared_ptr<message::Message> full_message() {
  auto m = std::make_shared<message::Message>();
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
  m->expires_at = message::Message::Clock::now() + std::chrono::seconds(90);
  return m;
}

}  // namespace

TEST_CASE("cluster protocol: a message with every property survives the round trip") {
  auto m = full_message();
  const auto now = message::Message::Clock::now();
  hlc::Version v{0x123456789ABCull, "node-2"};
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
  message::Message m;
  m.topic = "a";
  const std::string body = cluster::encode_message(m, nullptr, message::Message::Clock::now());
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
  hlc::Version v{7, "n"};
  const std::string body = cluster::encode_message(*m, &v, message::Message::Clock::now());
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
  const auto now = message::Message::Clock::now();
  retained::Store::Entry live;
  auto m = full_message();
  live.message = m;
  live.version = {100, "a"};
  retained::Store::Entry dead;
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
  const hlc::Version v1{10, "a"}, v2{11, "a"}, v3{10, "b"};
  const auto h = cluster::entry_hash("t", v1, false);
  CHECK(h != cluster::entry_hash("t", v2, false));
  CHECK(h != cluster::entry_hash("t", v3, false));
  CHECK(h != cluster::entry_hash("t", v1, true));
  CHECK(h != cluster::entry_hash("u", v1, false));
  CHECK(cluster::bucket_of("t") < cluster::kDigestBuckets);
}

TEST_CASE("cluster protocol: claims round trip and refuse truncation and bad values") {
  cluster::ClaimRequest cr;
  const std::string req = cluster::encode_claim_request(77, "client-a");
  REQUIRE(cluster::decode_claim_request(req, cr));
  CHECK(cr.request == 77);
  CHECK(cr.client_id == "client-a");

  std::uint64_t request = 0, hlc = 0;
  const std::string grant = cluster::encode_claim_grant(78, 0xABCDEF0123ull);
  REQUIRE(cluster::decode_claim_grant(grant, request, hlc));
  CHECK(request == 78);
  CHECK(hlc == 0xABCDEF0123ull);

  cluster::TakeRequest t;
  t.request = 9;
  t.client_id = "c";
  t.version = hlc::Version{42, "n3"};
  t.resume = true;
  const std::string take = cluster::encode_take_request(t);
  cluster::TakeRequest t2;
  REQUIRE(cluster::decode_take_request(take, t2));
  CHECK(t2.request == 9);
  CHECK(t2.client_id == "c");
  CHECK(t2.version.hlc == 42);
  CHECK(t2.version.node == "n3");
  CHECK(t2.resume);

  cluster::TakeReply moved;
  moved.request = 9;
  moved.client_id = "c";
  moved.version = t.version;
  moved.outcome = cluster::TakeOutcome::moved;
  moved.session = std::string_view("BHS\x01session", 11);
  const std::string reply = cluster::encode_take_reply(moved);
  cluster::TakeReply back;
  REQUIRE(cluster::decode_take_reply(reply, back));
  CHECK(back.outcome == cluster::TakeOutcome::moved);
  CHECK(back.session == moved.session);
  CHECK(back.version.node == "n3");
  cluster::TakeReply none = moved;
  none.outcome = cluster::TakeOutcome::newer_here;
  const std::string reply_none = cluster::encode_take_reply(none);
  REQUIRE(cluster::decode_take_reply(reply_none, back));
  CHECK(back.outcome == cluster::TakeOutcome::newer_here);
  CHECK(back.session.empty());

  std::vector<cluster::HeldClaim> held{{"a", {1, "n1"}}, {"b", {2, "n2"}}};
  const std::string list = cluster::encode_claims_held(held);
  std::vector<cluster::HeldClaim> held2;
  REQUIRE(cluster::decode_claims_held(list, held2));
  REQUIRE(held2.size() == 2);
  CHECK(held2[1].client_id == "b");
  CHECK(held2[1].version.hlc == 2);

  // Every strict prefix and a trailing byte are refused by the body's own decoder.
  const std::vector<std::pair<std::string, std::function<bool(const std::string&)>>> cases{
      {req, [&](const std::string& b) { return cluster::decode_claim_request(b, cr); }},
      {grant, [&](const std::string& b) { return cluster::decode_claim_grant(b, request, hlc); }},
      {take, [&](const std::string& b) { return cluster::decode_take_request(b, t2); }},
      {reply, [&](const std::string& b) { return cluster::decode_take_reply(b, back); }},
      {reply_none, [&](const std::string& b) { return cluster::decode_take_reply(b, back); }},
      {list, [&](const std::string& b) { return cluster::decode_claims_held(b, held2); }},
  };
  for (const auto& [body, decode] : cases) {
    CHECK(decode(body));
    for (std::size_t n = 0; n < body.size(); ++n) CHECK_FALSE(decode(body.substr(0, n)));
    CHECK_FALSE(decode(body + "x"));
  }
  // An unknown outcome and a resume flag other than 0/1 are refused.
  std::string bad_outcome = reply_none;
  bad_outcome.back() = 5;  // 4 is moved_in_parts (version 2)
  CHECK_FALSE(cluster::decode_take_reply(bad_outcome, back));
  std::string bad_resume = take;
  bad_resume.back() = 2;
  CHECK_FALSE(cluster::decode_take_request(bad_resume, t2));
  // A count larger than the body can hold is refused without reserving for it.
  CHECK_FALSE(cluster::decode_claims_held(std::string("\xFF\xFF\xFF\xFF\x0F", 5), held2));
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
    cluster::ClaimRequest cr;
    (void)cluster::decode_claim_request(s, cr);
    cluster::TakeRequest tq;
    (void)cluster::decode_take_request(s, tq);
    cluster::TakeReply tr;
    (void)cluster::decode_take_reply(s, tr);
    std::vector<cluster::HeldClaim> held;
    (void)cluster::decode_claims_held(s, held);
    std::vector<std::string_view> shares;
    (void)cluster::decode_publish_shared(s, shares, w);
  }
  CHECK(true);
}

TEST_CASE("cluster protocol: $SYS stays on its node") {
  CHECK(brokerha::topic::is_node_local("$SYS"));
  CHECK(brokerha::topic::is_node_local("$SYS/broker/uptime"));
  CHECK_FALSE(brokerha::topic::is_node_local("$SYSTEM/x"));
  CHECK_FALSE(brokerha::topic::is_node_local("sys/x"));
  CHECK_FALSE(brokerha::topic::is_node_local("$share/g/x"));
}

TEST_CASE("cluster protocol: publish_shared carries its groups ahead of the message bytes") {
  auto m = full_message();
  hlc::Version v{42, "n1"};
  const std::string message = cluster::encode_message(*m, &v, message::Message::Clock::now());
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

TEST_CASE("cluster protocol: capabilities: the highest version both speak") {
  namespace cl = brokerha::cluster;
  const std::string body = cl::encode_capabilities({1, 2});
  CHECK(body == std::string("\x01\x02", 2));
  cl::Capabilities c;
  REQUIRE(cl::decode_capabilities(body, c));
  CHECK(c.min == 1);
  CHECK(c.max == 2);
  // Later versions may add fields after the range: ignored.
  REQUIRE(cl::decode_capabilities(body + "extra", c));
  CHECK(c.max == 2);
  CHECK_FALSE(cl::decode_capabilities(std::string("\x01", 1), c));
  CHECK_FALSE(cl::decode_capabilities(std::string("\x03\x02", 2), c));  // min > max
  CHECK_FALSE(cl::decode_capabilities(std::string("\x00\x02", 2), c));  // no version 0
  CHECK(cl::common_version({1, 2}, {1, 2}) == 2);
  CHECK(cl::common_version({1, 2}, {1, 1}) == 1);
  CHECK(cl::common_version({1, 3}, {2, 5}) == 3);
  CHECK(cl::common_version({1, 2}, {3, 4}) == 0);
}

TEST_CASE(
    "cluster protocol: routes_part, session_part, take_ack and trail_end round-trip and refuse "
    "junk") {
  namespace cl = brokerha::cluster;
  std::uint64_t number = 0;
  bool last = false;
  std::vector<std::string> filters;
  const std::string part = cl::encode_routes_part(7, true, {"a/#", "$share/g/b"});
  REQUIRE(cl::decode_routes_part(part, number, last, filters));
  CHECK(number == 7);
  CHECK(last);
  CHECK(filters == std::vector<std::string>{"a/#", "$share/g/b"});
  REQUIRE(cl::decode_routes_part(cl::encode_routes_part(0, false, {}), number, last, filters));
  CHECK_FALSE(last);
  CHECK(filters.empty());
  CHECK_FALSE(cl::decode_routes_part("", number, last, filters));
  CHECK_FALSE(cl::decode_routes_part(std::string("\x02") + part.substr(1), number, last, filters));
  CHECK_FALSE(cl::decode_routes_part(part + "x", number, last, filters));

  std::uint64_t request = 0;
  std::string_view slice;
  const std::string sp = cl::encode_session_part(9, std::string(1000, 's'));
  REQUIRE(cl::decode_session_part(sp, request, slice));
  CHECK(request == 9);
  CHECK(slice == std::string(1000, 's'));
  CHECK_FALSE(cl::decode_session_part(sp.substr(0, sp.size() - 1), request, slice));
  CHECK_FALSE(cl::decode_session_part(sp + "x", request, slice));

  cl::TakeAck a;
  const std::string ack = cl::encode_take_ack({11, "client", true});
  REQUIRE(cl::decode_take_ack(ack, a));
  CHECK(a.request == 11);
  CHECK(a.client_id == "client");
  CHECK(a.ok);
  std::string bad = ack;
  bad.back() = 2;
  CHECK_FALSE(cl::decode_take_ack(bad, a));
  CHECK_FALSE(cl::decode_take_ack(ack + "x", a));

  // trail_end (version 3): request and client id, nothing else.
  const std::string trail = cl::encode_trail_end(12, "mover");
  std::string_view id;
  REQUIRE(cl::decode_trail_end(trail, request, id));
  CHECK(request == 12);
  CHECK(id == "mover");
  for (std::size_t n = 0; n < trail.size(); ++n) {
    CHECK_FALSE(cl::decode_trail_end(trail.substr(0, n), request, id));
  }
  CHECK_FALSE(cl::decode_trail_end(trail + "x", request, id));

  // take_reply's version 2 outcome carries no session bytes (they came in session_parts).
  cl::TakeReply r;
  r.request = 3;
  r.client_id = "c";
  r.version = {42, "n1"};
  r.outcome = cl::TakeOutcome::moved_in_parts;
  cl::TakeReply back;
  REQUIRE(cl::decode_take_reply(cl::encode_take_reply(r), back));
  CHECK(back.outcome == cl::TakeOutcome::moved_in_parts);
  CHECK(back.session.empty());
  std::string beyond = cl::encode_take_reply(r);
  beyond.back() = 5;  // no outcome 5
  CHECK_FALSE(cl::decode_take_reply(beyond, back));
}
