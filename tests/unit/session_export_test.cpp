// SPDX-License-Identifier: Apache-2.0
// Session export/import (session/export.hpp, docs/session-format.md): a rich session survives
// the round trip field by field, the bytes follow the documented layout (checked against an
// independent encoder written from the document), and malformed input of every kind is
// refused with an error message instead of crashing or installing half a session.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "message/message.hpp"
#include "session/export.hpp"
#include "session/session.hpp"

namespace {

namespace session = brokerha::session;
namespace msg = brokerha::message;
using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// ---- an independent encoder of docs/session-format.md ------------------------------------------

struct SpecDelivery {
  std::uint8_t qos = 1;
  std::uint8_t retain = 0;
  std::vector<std::uint32_t> subscription_ids;
  std::string topic = "t/x";
  std::string payload = "p";
  std::uint8_t message_qos = 1;
  std::uint8_t message_retain = 0;
  std::string origin = "pub";
  std::uint8_t has_expiry = 0;
  std::uint32_t expiry = 0;
  std::uint64_t created_ms = 1'700'000'000'000ull;
  std::uint8_t has_pfi = 0;
  std::uint8_t pfi = 0;
  std::optional<std::string> content_type;
  std::optional<std::string> response_topic;
  std::optional<std::string> correlation_data;
  std::vector<std::pair<std::string, std::string>> user_properties;
};

struct SpecSubscription {
  std::string filter;
  std::uint8_t qos = 0;
  std::uint8_t flags = 0;
  std::uint8_t retain_handling = 0;
  std::uint32_t identifier = 0;
};

struct SpecInflight {
  std::uint16_t packet_id = 1;
  std::uint8_t released = 0;
  SpecDelivery delivery;
};

struct SpecSession {
  std::string magic = "BHS";
  std::uint8_t format_version = 1;
  std::string client_id = "client";
  std::uint8_t protocol = 5;
  std::uint8_t clean = 0;
  std::optional<std::string> username;
  std::uint32_t expiry_interval = 0;
  std::vector<SpecSubscription> subscriptions;
  std::uint16_t last_packet_id = 0;
  std::vector<SpecInflight> inflight;
  std::vector<SpecDelivery> queued;
  std::vector<std::uint16_t> incoming_qos2;
};

class SpecWriter {
 public:
  std::string out;
  void u8(std::uint8_t v) { out.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) {
    u8(static_cast<std::uint8_t>(v >> 8));
    u8(static_cast<std::uint8_t>(v & 0xFF));
  }
  void u32(std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) u8(static_cast<std::uint8_t>((v >> shift) & 0xFF));
  }
  void u64(std::uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) u8(static_cast<std::uint8_t>((v >> shift) & 0xFF));
  }
  void str(const std::string& s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out += s;
  }
  void opt(const std::optional<std::string>& s) {
    u8(s ? 1 : 0);
    if (s) str(*s);
  }
  void delivery(const SpecDelivery& d) {
    u8(d.qos);
    u8(d.retain);
    u32(static_cast<std::uint32_t>(d.subscription_ids.size()));
    for (std::uint32_t id : d.subscription_ids) u32(id);
    str(d.topic);
    str(d.payload);
    u8(d.message_qos);
    u8(d.message_retain);
    str(d.origin);
    u8(d.has_expiry);
    if (d.has_expiry == 1) u32(d.expiry);
    u64(d.created_ms);
    u8(d.has_pfi);
    if (d.has_pfi == 1) u8(d.pfi);
    opt(d.content_type);
    opt(d.response_topic);
    opt(d.correlation_data);
    u32(static_cast<std::uint32_t>(d.user_properties.size()));
    for (const auto& [k, v] : d.user_properties) {
      str(k);
      str(v);
    }
  }
};

std::string build(const SpecSession& s) {
  SpecWriter w;
  w.out = s.magic;
  w.u8(s.format_version);
  w.str(s.client_id);
  w.u8(s.protocol);
  w.u8(s.clean);
  w.opt(s.username);
  w.u32(s.expiry_interval);
  w.u32(static_cast<std::uint32_t>(s.subscriptions.size()));
  for (const SpecSubscription& sub : s.subscriptions) {
    w.str(sub.filter);
    w.u8(sub.qos);
    w.u8(sub.flags);
    w.u8(sub.retain_handling);
    w.u32(sub.identifier);
  }
  w.u16(s.last_packet_id);
  w.u32(static_cast<std::uint32_t>(s.inflight.size()));
  for (const SpecInflight& f : s.inflight) {
    w.u16(f.packet_id);
    w.u8(f.released);
    w.delivery(f.delivery);
  }
  w.u32(static_cast<std::uint32_t>(s.queued.size()));
  for (const SpecDelivery& d : s.queued) w.delivery(d);
  w.u32(static_cast<std::uint32_t>(s.incoming_qos2.size()));
  for (std::uint16_t id : s.incoming_qos2) w.u16(id);
  return std::move(w.out);
}

// ---- the rich session ---------------------------------------------------------------------------

const SystemClock::time_point kCreated1{milliseconds(1'700'000'000'123)};
const SystemClock::time_point kCreated2{milliseconds(1'700'000'001'456)};
const SystemClock::time_point kCreated3{milliseconds(1'700'000'002'789)};

std::shared_ptr<msg::Message> message(std::string topic, std::string payload, std::uint8_t qos,
                                      bool retain, SystemClock::time_point created) {
  auto m = std::make_shared<msg::Message>();
  m->topic = std::move(topic);
  m->payload = std::move(payload);
  m->qos = qos;
  m->retain = retain;
  m->origin = "publisher-1";
  m->created = created;
  return m;
}

session::Delivery delivery(msg::MessagePtr m, std::uint8_t qos, bool retain,
                           std::vector<std::uint32_t> ids = {}) {
  session::Delivery d;
  d.message = std::move(m);
  d.qos = qos;
  d.retain = retain;
  d.subscription_ids = std::move(ids);
  return d;
}

// A session with every kind of state the format carries. Incoming QoS 2 ids are given by the
// caller (their order in an export is not the point of every test).
std::unique_ptr<session::Session> rich_session(SteadyClock::time_point now,
                                               const std::vector<std::uint16_t>& qos2_ids) {
  auto s = std::make_unique<session::Session>("rich-client-\xC3\xA9");
  auto& subs = s->subscriptions();
  subs["plain/topic"] = session::SubscriptionOptions{};  // QoS 0, no options
  subs["sensors/+/temp"] = {1, true, false, 0, 7};
  subs["$share/group-a/jobs/#"] = {2, false, true, 1, 268'435'455};
  subs["#"] = {1, true, true, 2, 1};
  subs["$SYS/broker/+"] = {0, false, false, 2, 0};

  // In flight, oldest first: QoS 1, QoS 2 not released, QoS 2 released.
  session::Inflight f1;
  f1.packet_id = 41;
  f1.delivery = delivery(message("in/q1", "one", 1, false, kCreated1), 1, false, {7});
  s->restore_inflight(std::move(f1));
  session::Inflight f2;
  f2.packet_id = 42;
  f2.delivery = delivery(message("in/q2", std::string("t\0wo", 4), 2, true, kCreated2), 2, true);
  s->restore_inflight(std::move(f2));
  session::Inflight f3;
  f3.packet_id = 65535;
  f3.delivery = delivery(message("in/q2/released", "", 2, false, kCreated3), 2, false, {1, 7});
  f3.released = true;
  s->restore_inflight(std::move(f3));
  s->set_last_packet_id(65535);

  // Queued: every forwarded property, subscription ids and an expiry; then a bare QoS 0 one.
  auto full = message("queued/full", std::string("\x00\x01\xFF payload", 11), 2, true, kCreated1);
  full->properties.payload_format_indicator = 1;
  full->properties.content_type = "application/json";
  full->properties.response_topic = "reply/to/me";
  full->properties.correlation_data = std::string("\x00\xFE corr", 7);
  full->properties.user_properties = {{"k", "v"}, {"k", "v2"}, {"empty", ""}, {"", "x"}};
  full->expires_at = now + seconds(90);
  s->restore_queued(delivery(full, 1, true, {7, 268'435'455, 1}));
  auto bare = message("queued/bare", "b", 0, false, kCreated2);
  bare->origin = "";
  bare->properties.payload_format_indicator = 0;
  s->restore_queued(delivery(bare, 0, false));
  auto expiring = message("queued/expiring", "e", 1, false, kCreated3);
  expiring->expires_at = now + seconds(1);
  s->restore_queued(delivery(expiring, 1, false, {42}));

  for (std::uint16_t id : qos2_ids) s->receive_qos2(id);
  return s;
}

session::SessionMeta rich_meta() {
  session::SessionMeta meta;
  meta.protocol_version = 5;
  meta.clean = false;
  meta.username = std::string("alice\0bob", 9);
  meta.expiry_interval = 300;
  return meta;
}

// ---- comparison ---------------------------------------------------------------------------------

void check_same_message(const msg::Message& a, const msg::Message& b, SteadyClock::time_point now) {
  CHECK(a.topic == b.topic);
  CHECK(a.payload == b.payload);
  CHECK(a.qos == b.qos);
  CHECK(a.retain == b.retain);
  CHECK(a.origin == b.origin);
  CHECK(a.created == b.created);
  CHECK(a.expires_at.has_value() == b.expires_at.has_value());
  CHECK(a.remaining_expiry(now) == b.remaining_expiry(now));
  if (a.expires_at && b.expires_at) CHECK(*a.expires_at == *b.expires_at);
  CHECK(a.properties.payload_format_indicator == b.properties.payload_format_indicator);
  CHECK(a.properties.content_type == b.properties.content_type);
  CHECK(a.properties.response_topic == b.properties.response_topic);
  CHECK(a.properties.correlation_data == b.properties.correlation_data);
  CHECK(a.properties.user_properties == b.properties.user_properties);
}

void check_same_delivery(const session::Delivery& a, const session::Delivery& b,
                         SteadyClock::time_point now) {
  CHECK(a.qos == b.qos);
  CHECK(a.retain == b.retain);
  CHECK(a.subscription_ids == b.subscription_ids);
  REQUIRE(a.message.get() != nullptr);
  REQUIRE(b.message.get() != nullptr);
  check_same_message(*a.message, *b.message, now);
}

void check_same_session(const session::Session& a, const session::Session& b,
                        SteadyClock::time_point now) {
  CHECK(a.client_id() == b.client_id());
  REQUIRE(a.subscriptions().size() == b.subscriptions().size());
  for (const auto& entry : a.subscriptions()) {
    const std::string& filter = entry.first;
    const session::SubscriptionOptions& o = entry.second;
    CAPTURE(filter);
    const auto it = b.subscriptions().find(filter);
    REQUIRE(it != b.subscriptions().end());
    CHECK(it->second.qos == o.qos);
    CHECK(it->second.no_local == o.no_local);
    CHECK(it->second.retain_as_published == o.retain_as_published);
    CHECK(it->second.retain_handling == o.retain_handling);
    CHECK(it->second.identifier == o.identifier);
  }
  CHECK(a.last_packet_id() == b.last_packet_id());
  REQUIRE(a.inflight().size() == b.inflight().size());
  for (std::size_t i = 0; i < a.inflight().size(); ++i) {
    CAPTURE(i);
    CHECK(a.inflight()[i].packet_id == b.inflight()[i].packet_id);
    CHECK(a.inflight()[i].released == b.inflight()[i].released);
    check_same_delivery(a.inflight()[i].delivery, b.inflight()[i].delivery, now);
  }
  REQUIRE(a.queue().size() == b.queue().size());
  for (std::size_t i = 0; i < a.queue().size(); ++i) {
    CAPTURE(i);
    check_same_delivery(a.queue()[i], b.queue()[i], now);
  }
  CHECK(a.queued() == b.queued());
  CHECK(a.queued_bytes() == b.queued_bytes());
  CHECK(a.incoming_qos2_ids() == b.incoming_qos2_ids());
}

std::optional<session::ImportedSession> import(std::string_view bytes, SteadyClock::time_point now,
                                               std::string& error) {
  error.clear();
  return session::import_session(bytes, now, error);
}

// Where two byte strings first differ (for failure messages).
std::string first_difference(const std::string& a, const std::string& b) {
  std::size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  if (i == a.size() && i == b.size()) return "identical";
  auto hex_at = [i](const std::string& s) {
    std::string out;
    static constexpr char kDigits[] = "0123456789ABCDEF";
    for (std::size_t j = i; j < s.size() && j < i + 16; ++j) {
      const auto c = static_cast<unsigned char>(s[j]);
      out += kDigits[c >> 4];
      out += kDigits[c & 0xF];
      out += ' ';
    }
    return out;
  };
  return "sizes " + std::to_string(a.size()) + "/" + std::to_string(b.size()) +
         ", first difference at byte " + std::to_string(i) + ": [" + hex_at(a) + "] vs [" +
         hex_at(b) + "]";
}

// Import must refuse `bytes` with a non-empty error.
void check_refused(std::string_view bytes, SteadyClock::time_point now) {
  std::string error;
  const auto imported = import(bytes, now, error);
  CHECK_FALSE(imported.has_value());
  CHECK_FALSE(error.empty());
}

// A small valid session for the malformed-input cases: one subscription, one in-flight QoS 1
// delivery, one queued delivery, one incoming QoS 2 id.
SpecSession small_spec() {
  SpecSession s;
  s.client_id = "small";
  s.username = "u";
  s.expiry_interval = 60;
  s.subscriptions.push_back({"a/+/c", 1, 3, 1, 9});
  s.last_packet_id = 5;
  SpecInflight f;
  f.packet_id = 5;
  f.delivery.subscription_ids = {9};
  f.delivery.has_expiry = 1;
  f.delivery.expiry = 30;
  f.delivery.has_pfi = 1;
  f.delivery.pfi = 1;
  f.delivery.content_type = "text/plain";
  f.delivery.user_properties = {{"a", "b"}};
  s.inflight.push_back(f);
  SpecDelivery q;
  q.topic = "a/b/c";
  q.response_topic = "r";
  q.correlation_data = "c";
  s.queued.push_back(q);
  s.incoming_qos2 = {17};
  return s;
}

}  // namespace

TEST_CASE("session export: a rich session survives export and import field by field") {
  const auto now = SteadyClock::now();
  const std::vector<std::uint16_t> qos2_ids = {1, 300, 77, 65535, 4096};
  const auto original = rich_session(now, qos2_ids);
  const session::SessionMeta meta = rich_meta();

  const std::string bytes = session::export_session(*original, meta, now);
  REQUIRE(bytes.size() > 4);
  CHECK(bytes.substr(0, 3) == "BHS");
  CHECK(static_cast<std::uint8_t>(bytes[3]) == 1);

  std::string error;
  auto imported = import(bytes, now, error);
  INFO("import error: " << error);
  REQUIRE(imported.has_value());
  REQUIRE(imported->session.get() != nullptr);

  CHECK(imported->meta.protocol_version == 5);
  CHECK(imported->meta.clean == false);
  CHECK(imported->meta.username == meta.username);
  CHECK(imported->meta.expiry_interval == 300);
  check_same_session(*original, *imported->session, now);

  // Nothing is "sent" on the importing broker yet: every in-flight delivery is resent.
  for (const session::Inflight& f : imported->session->inflight()) CHECK_FALSE(f.sent);
  // Spot checks against literal values, so that a field lost on both sides is noticed.
  const auto& q = imported->session->queue();
  REQUIRE(q.size() == 3);
  CHECK(q[0].message->properties.content_type == std::optional<std::string>("application/json"));
  CHECK(q[0].message->remaining_expiry(now) == std::optional<std::uint32_t>(90));
  CHECK(q[0].subscription_ids == std::vector<std::uint32_t>{7, 268'435'455, 1});
  CHECK(q[1].message->properties.payload_format_indicator == std::optional<std::uint8_t>(0));
  CHECK(q[2].message->remaining_expiry(now) == std::optional<std::uint32_t>(1));
  CHECK(imported->session->inflight().back().released);
  CHECK(imported->session->inflight().back().packet_id == 65535);
  CHECK(imported->session->incoming_qos2_ids().size() == qos2_ids.size());
  CHECK(imported->session->subscriptions().at("$share/group-a/jobs/#").identifier == 268'435'455);
}

TEST_CASE("session export: exporting the imported session gives the same bytes") {
  const auto now = SteadyClock::now();
  const session::SessionMeta meta = rich_meta();

  SUBCASE("without incoming QoS 2 ids") {
    const std::string bytes = session::export_session(*rich_session(now, {}), meta, now);
    std::string error;
    auto imported = import(bytes, now, error);
    REQUIRE(imported.has_value());
    CHECK(session::export_session(*imported->session, imported->meta, now) == bytes);
  }
  SUBCASE("with one incoming QoS 2 id") {
    const std::string bytes = session::export_session(*rich_session(now, {513}), meta, now);
    std::string error;
    auto imported = import(bytes, now, error);
    REQUIRE(imported.has_value());
    CHECK(session::export_session(*imported->session, imported->meta, now) == bytes);
  }
  SUBCASE("with several incoming QoS 2 ids") {
    // The export must be a function of the session's state, not of the order the ids
    // happened to be inserted in a hash set.
    const std::string bytes =
        session::export_session(*rich_session(now, {1, 300, 77, 65535, 4096}), meta, now);
    std::string error;
    auto imported = import(bytes, now, error);
    REQUIRE(imported.has_value());
    const std::string again = session::export_session(*imported->session, imported->meta, now);
    INFO(first_difference(bytes, again));
    CHECK(again.size() == bytes.size());
    CHECK(again == bytes);
  }
  SUBCASE("a v3.1.1 clean session without username that never expires") {
    session::SessionMeta m;
    m.protocol_version = 4;
    m.clean = true;
    m.expiry_interval = 0xFFFFFFFFu;
    session::Session empty("v311");
    const std::string bytes = session::export_session(empty, m, now);
    std::string error;
    auto imported = import(bytes, now, error);
    REQUIRE(imported.has_value());
    CHECK(imported->meta.protocol_version == 4);
    CHECK(imported->meta.clean);
    CHECK_FALSE(imported->meta.username.has_value());
    CHECK(imported->meta.expiry_interval == 0xFFFFFFFFu);
    CHECK(imported->session->subscriptions().empty());
    CHECK(imported->session->inflight().empty());
    CHECK(imported->session->queued() == 0);
    CHECK(session::export_session(*imported->session, imported->meta, now) == bytes);
  }
}

TEST_CASE("session export: the bytes follow docs/session-format.md") {
  // The same session built with Session/Message and with an encoder written from the
  // document: the export must be exactly the documented bytes, and those bytes must import.
  const auto now = SteadyClock::now();
  SpecSession spec;
  spec.client_id = "doc-client";
  spec.protocol = 5;
  spec.clean = 0;
  spec.username = "carol";
  spec.expiry_interval = 0x01020304;
  spec.subscriptions = {{"$share/g/x/+", 2, 2, 1, 5}, {"a/#", 1, 1, 2, 0}};  // std::map order
  spec.last_packet_id = 0x0203;
  SpecInflight inflight;
  inflight.packet_id = 0x0203;
  inflight.released = 1;
  inflight.delivery.qos = 2;
  inflight.delivery.retain = 1;
  inflight.delivery.subscription_ids = {5};
  inflight.delivery.topic = "x/y";
  inflight.delivery.payload = "hello";
  inflight.delivery.message_qos = 2;
  inflight.delivery.message_retain = 1;
  inflight.delivery.origin = "o";
  inflight.delivery.has_expiry = 1;
  inflight.delivery.expiry = 120;
  inflight.delivery.created_ms = 1'600'000'000'001ull;
  inflight.delivery.has_pfi = 1;
  inflight.delivery.pfi = 1;
  inflight.delivery.content_type = "ct";
  inflight.delivery.response_topic = "rt";
  inflight.delivery.correlation_data = "cd";
  inflight.delivery.user_properties = {{"n", "v"}};
  spec.inflight.push_back(inflight);
  SpecDelivery queued;
  queued.qos = 0;
  queued.topic = "a/q";
  queued.payload = "";
  queued.message_qos = 0;
  queued.origin = "";
  queued.created_ms = 1'600'000'000'002ull;
  spec.queued.push_back(queued);
  spec.incoming_qos2 = {0x0102};

  session::Session s("doc-client");
  s.subscriptions()["$share/g/x/+"] = {2, false, true, 1, 5};
  s.subscriptions()["a/#"] = {1, true, false, 2, 0};
  s.set_last_packet_id(0x0203);
  auto m =
      message("x/y", "hello", 2, true, SystemClock::time_point(milliseconds(1'600'000'000'001)));
  m->origin = "o";
  m->expires_at = now + seconds(120);
  m->properties.payload_format_indicator = 1;
  m->properties.content_type = "ct";
  m->properties.response_topic = "rt";
  m->properties.correlation_data = "cd";
  m->properties.user_properties = {{"n", "v"}};
  session::Inflight f;
  f.packet_id = 0x0203;
  f.released = true;
  f.delivery = delivery(m, 2, true, {5});
  s.restore_inflight(std::move(f));
  auto q = message("a/q", "", 0, false, SystemClock::time_point(milliseconds(1'600'000'000'002)));
  q->origin = "";
  s.restore_queued(delivery(q, 0, false));
  s.receive_qos2(0x0102);
  session::SessionMeta meta;
  meta.protocol_version = 5;
  meta.username = "carol";
  meta.expiry_interval = 0x01020304;

  const std::string expected = build(spec);
  const std::string exported = session::export_session(s, meta, now);
  INFO(first_difference(expected, exported));
  CHECK(exported == expected);

  std::string error;
  auto imported = import(expected, now, error);
  INFO("import error: " << error);
  REQUIRE(imported.has_value());
  check_same_session(s, *imported->session, now);
  CHECK(imported->meta.expiry_interval == 0x01020304u);
  CHECK(imported->meta.username == std::optional<std::string>("carol"));
}

TEST_CASE("session import: refuses a wrong magic and unknown format versions") {
  const auto now = SteadyClock::now();
  const std::string valid = build(small_spec());
  {
    std::string error;
    REQUIRE(import(valid, now, error).has_value());  // the base case imports
  }
  SUBCASE("bad magic") {
    for (const char* magic : {"BHX", "bhs", "XHS", "\0\0\0"}) {
      CAPTURE(magic);
      std::string bytes = valid;
      bytes.replace(0, 3, std::string(magic, 3));
      check_refused(bytes, now);
    }
  }
  SUBCASE("too short for the magic") {
    check_refused("", now);
    check_refused("B", now);
    check_refused("BH", now);
    check_refused("BHS", now);
  }
  SUBCASE("unknown format version") {
    for (int v : {0, 2, 3, 127, 255}) {
      CAPTURE(v);
      SpecSession s = small_spec();
      s.format_version = static_cast<std::uint8_t>(v);
      check_refused(build(s), now);
    }
  }
}

TEST_CASE("session import: every truncation of a valid export is refused") {
  const auto now = SteadyClock::now();
  const std::string bytes = session::export_session(*rich_session(now, {9}), rich_meta(), now);
  {
    std::string error;
    REQUIRE(import(bytes, now, error).has_value());
  }
  std::size_t refused = 0;
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    std::string error;
    const auto imported = import(std::string_view(bytes).substr(0, n), now, error);
    if (imported.has_value() || error.empty()) {
      FAIL_CHECK("prefix of " << n << " of " << bytes.size() << " bytes: imported="
                              << imported.has_value() << " error='" << error << "'");
    } else {
      ++refused;
    }
  }
  CHECK(refused == bytes.size());
}

TEST_CASE("session import: bytes after the end are refused") {
  const auto now = SteadyClock::now();
  const std::string bytes = session::export_session(*rich_session(now, {9}), rich_meta(), now);
  for (const std::string& tail :
       {std::string(1, '\0'), std::string("x"), std::string(100, 'z'), std::string(bytes)}) {
    CAPTURE(tail.size());
    check_refused(bytes + tail, now);
  }
}

TEST_CASE("session import: invalid values are refused") {
  const auto now = SteadyClock::now();
  SpecSession s = small_spec();

  SUBCASE("invalid subscription filter") {
    for (const char* filter :
         {"", "a/#/b", "a+", "a/b#", "$share/g", "$share//x", "$share/g+/x", "$share/g/"}) {
      CAPTURE(filter);
      s.subscriptions[0].filter = filter;
      check_refused(build(s), now);
    }
  }
  SUBCASE("invalid topic in a queued delivery") {
    for (const char* topic : {"", "a/+", "a/#", "+", "#"}) {
      CAPTURE(topic);
      s.queued[0].topic = topic;
      check_refused(build(s), now);
    }
  }
  SUBCASE("a creation time the clock cannot hold") {
    // Found by the cluster frames fuzzer: converting it to nanoseconds overflowed.
    for (std::uint64_t ms : {2'251'799'813'685'248ull, ~0ull}) {
      CAPTURE(ms);
      s.queued[0].created_ms = ms;
      check_refused(build(s), now);
    }
  }
  SUBCASE("invalid topic in an in-flight delivery") {
    s.inflight[0].delivery.topic = "x/+/y";
    check_refused(build(s), now);
  }
  SUBCASE("QoS 3: subscription") {
    s.subscriptions[0].qos = 3;
    check_refused(build(s), now);
  }
  SUBCASE("QoS 3: granted QoS of a queued delivery") {
    s.queued[0].qos = 3;
    check_refused(build(s), now);
  }
  SUBCASE("QoS 3: message QoS of an in-flight delivery") {
    s.inflight[0].delivery.message_qos = 3;
    check_refused(build(s), now);
  }
  SUBCASE("packet id 0 in flight") {
    s.inflight[0].packet_id = 0;
    check_refused(build(s), now);
  }
  SUBCASE("in-flight delivery with QoS 0") {
    s.inflight[0].delivery.qos = 0;
    check_refused(build(s), now);
  }
  SUBCASE("incoming QoS 2 packet id 0") {
    s.incoming_qos2 = {17, 0};
    check_refused(build(s), now);
  }
  SUBCASE("empty client id") {
    s.client_id = "";
    check_refused(build(s), now);
  }
  SUBCASE("protocol level other than 3, 4, 5") {
    for (int level : {0, 2, 6, 255}) {
      CAPTURE(level);
      s.protocol = static_cast<std::uint8_t>(level);
      check_refused(build(s), now);
    }
  }
  SUBCASE("flag bytes out of range") {
    SpecSession t = s;
    t.clean = 2;
    check_refused(build(t), now);
    t = s;
    t.subscriptions[0].flags = 4;
    check_refused(build(t), now);
    t = s;
    t.subscriptions[0].retain_handling = 3;
    check_refused(build(t), now);
    t = s;
    t.inflight[0].released = 2;
    check_refused(build(t), now);
    t = s;
    t.queued[0].retain = 2;
    check_refused(build(t), now);
    t = s;
    t.queued[0].message_retain = 2;
    check_refused(build(t), now);
    t = s;
    t.queued[0].has_pfi = 1;
    t.queued[0].pfi = 2;
    check_refused(build(t), now);
  }
  SUBCASE("optional-field markers other than 0 and 1") {
    // Patched into otherwise valid bytes: the username marker is right after the header.
    std::string bytes = build(s);
    const std::size_t marker = 3 + 1 + 4 + s.client_id.size() + 1 + 1;
    REQUIRE(static_cast<std::uint8_t>(bytes[marker]) == 1);
    bytes[marker] = 2;
    check_refused(bytes, now);
    SpecSession t = s;
    t.queued[0].has_expiry = 2;
    check_refused(build(t), now);
    t = s;
    t.queued[0].has_pfi = 2;
    check_refused(build(t), now);
  }
  SUBCASE("delivery subscription identifiers out of range") {
    for (std::uint32_t id : {0u, 268'435'456u, 0xFFFFFFFFu}) {
      CAPTURE(id);
      s.queued[0].subscription_ids = {1, id};
      check_refused(build(s), now);
    }
  }
}

TEST_CASE("session import: state the format cannot mean is refused") {
  // Beyond single-field ranges: values that would make the broker send a protocol violation
  // or lose track of acknowledgements once the session is resumed.
  const auto now = SteadyClock::now();
  SpecSession s = small_spec();

  SUBCASE("a subscription identifier above 268435455") {
    s.subscriptions[0].identifier = 268'435'456;
    check_refused(build(s), now);
  }
  SUBCASE("two in-flight deliveries with the same packet id") {
    SpecInflight second = s.inflight[0];
    second.delivery.topic = "other/topic";
    s.inflight.push_back(second);
    check_refused(build(s), now);
  }
  SUBCASE("a QoS 1 in-flight delivery marked released (PUBREC exists only for QoS 2)") {
    s.inflight[0].delivery.qos = 1;
    s.inflight[0].released = 1;
    check_refused(build(s), now);
  }
}

TEST_CASE("session import: huge counts and lengths without data fail fast") {
  const auto now = SteadyClock::now();
  const std::string header = [] {
    SpecWriter w;
    w.out = "BHS";
    w.u8(1);
    w.str("id");
    w.u8(5);
    w.u8(0);
    w.u8(0);  // no username
    w.u32(0);
    return w.out;
  }();
  SUBCASE("subscription count 2^32-1") {
    SpecWriter w;
    w.out = header;
    w.u32(0xFFFFFFFFu);
    check_refused(w.out, now);
  }
  SUBCASE("client id length 2^32-1") {
    SpecWriter w;
    w.out = "BHS";
    w.u8(1);
    w.u32(0xFFFFFFFFu);
    w.out += "abc";
    check_refused(w.out, now);
  }
  SUBCASE("queued count 2^32-1") {
    SpecWriter w;
    w.out = header;
    w.u32(0);  // subscriptions
    w.u16(0);  // last packet id
    w.u32(0);  // in flight
    w.u32(0xFFFFFFFFu);
    check_refused(w.out, now);
  }
  SUBCASE("user property count 2^32-1") {
    SpecSession s = small_spec();
    s.queued[0].user_properties.clear();
    std::string bytes = build(s);
    // The queued delivery's user property count is followed by the QoS 2 list (u32 1, u16).
    const std::size_t count_at = bytes.size() - 6 - 4;
    REQUIRE(bytes.substr(count_at, 4) == std::string(4, '\0'));
    bytes.replace(count_at, 4, std::string(4, '\xFF'));
    check_refused(bytes, now);
  }
  SUBCASE("in-flight count 2^32-1") {
    SpecWriter w;
    w.out = header;
    w.u32(0);
    w.u16(0);
    w.u32(0xFFFFFFFFu);
    check_refused(w.out, now);
  }
}

TEST_CASE(
    "session import: a refused import gives no session and an ImportedSession owns its data") {
  // The imported messages must not point into the input bytes: destroy the input first.
  const auto now = SteadyClock::now();
  std::optional<session::ImportedSession> imported;
  {
    std::string bytes = session::export_session(*rich_session(now, {3}), rich_meta(), now);
    std::string error;
    imported = import(bytes, now, error);
    REQUIRE(imported.has_value());
    std::fill(bytes.begin(), bytes.end(), 'Z');
  }
  REQUIRE(imported->session->queue().size() == 3);
  CHECK(imported->session->queue()[0].message->topic == "queued/full");
  CHECK(imported->session->queue()[0].message->properties.user_properties.size() == 4);
  CHECK(imported->session->client_id() == "rich-client-\xC3\xA9");

  std::string error = "stale";
  CHECK_FALSE(session::import_session("BHS\x01", now, error).has_value());
  CHECK(error != "stale");
  CHECK_FALSE(error.empty());
}
