// SPDX-License-Identifier: Apache-2.0
// session::Session: the outgoing queue and its limits, the in-flight window, packet ids,
// acknowledgements (QoS 1 and both QoS 2 phases), and incoming QoS 2 duplicate detection.

#include "session/session.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "message/message.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::message::Message;
using brokerha::session::Delivery;
using brokerha::session::Inflight;
using brokerha::session::QueueLimits;
using brokerha::session::Session;
using Clock = std::chrono::steady_clock;

// A delivery of a message whose payload names it.
Delivery delivery(const std::string& name, std::uint8_t qos,
                  std::optional<Clock::time_point> expires_at = std::nullopt) {
  auto m = std::make_shared<Message>();
  m->topic = "t/" + name;
  m->payload = name;
  m->qos = qos;
  m->expires_at = expires_at;
  Delivery d;
  d.message = std::move(m);
  d.qos = qos;
  return d;
}

std::vector<std::string> queued_names(const Session& s) {
  std::vector<std::string> out;
  for (const Delivery& d : s.queue()) out.push_back(d.message->payload);
  return out;
}

std::vector<std::uint16_t> inflight_ids(const Session& s) {
  std::vector<std::uint16_t> out;
  for (const Inflight& f : s.inflight()) out.push_back(f.packet_id);
  return out;
}

// What next() gave: a QoS 0 delivery or an in-flight entry.
struct Next {
  bool any = false;
  std::string name;  // the payload
  std::uint8_t qos = 0;
  std::uint16_t packet_id = 0;  // 0 for QoS 0
  bool sent = false;
};

Next take(Session& s, std::uint16_t window, std::size_t& expired, Clock::time_point now) {
  Delivery qos0;
  Inflight* inflight = nullptr;
  Next n;
  n.any = s.next(window, now, qos0, inflight, expired);
  if (!n.any) return n;
  if (inflight != nullptr) {
    n.name = inflight->delivery.message->payload;
    n.qos = inflight->delivery.qos;
    n.packet_id = inflight->packet_id;
    n.sent = inflight->sent;
  } else {
    REQUIRE(static_cast<bool>(qos0.message));
    n.name = qos0.message->payload;
    n.qos = qos0.qos;
  }
  return n;
}

Next take(Session& s, std::uint16_t window = 100) {
  std::size_t expired = 0;
  return take(s, window, expired, Clock::now());
}

}  // namespace

TEST_CASE("session: enqueue below the limit keeps everything in order") {
  Session s("c");
  const QueueLimits limits{3};
  CHECK(s.enqueue(delivery("a", 0), limits) == 0);
  CHECK(s.enqueue(delivery("b", 1), limits) == 0);
  CHECK(s.enqueue(delivery("c", 2), limits) == 0);
  CHECK(s.queued() == 3);
  CHECK(queued_names(s) == std::vector<std::string>{"a", "b", "c"});
  CHECK(s.client_id() == "c");
}

TEST_CASE("session: a full queue drops the oldest QoS 0 delivery first") {
  Session s("c");
  const QueueLimits limits{4};
  s.enqueue(delivery("q1-a", 1), limits);
  s.enqueue(delivery("q0-old", 0), limits);
  s.enqueue(delivery("q2-b", 2), limits);
  s.enqueue(delivery("q0-new", 0), limits);
  REQUIRE(s.queued() == 4);

  SUBCASE("a QoS 1 delivery replaces the oldest QoS 0") {
    CHECK(s.enqueue(delivery("q1-c", 1), limits) == 1);
    CHECK(queued_names(s) == std::vector<std::string>{"q1-a", "q2-b", "q0-new", "q1-c"});
  }
  SUBCASE("a QoS 0 delivery replaces the oldest QoS 0") {
    CHECK(s.enqueue(delivery("q0-newest", 0), limits) == 1);
    CHECK(queued_names(s) == std::vector<std::string>{"q1-a", "q2-b", "q0-new", "q0-newest"});
  }
  SUBCASE("repeatedly: every QoS 0 goes before any QoS 1/2") {
    CHECK(s.enqueue(delivery("x", 1), limits) == 1);
    CHECK(s.enqueue(delivery("y", 2), limits) == 1);
    CHECK(queued_names(s) == std::vector<std::string>{"q1-a", "q2-b", "x", "y"});
    // Now all QoS 1/2: the newest is dropped.
    CHECK(s.enqueue(delivery("z", 1), limits) == 1);
    CHECK(queued_names(s) == std::vector<std::string>{"q1-a", "q2-b", "x", "y"});
  }
  CHECK(s.queued() == 4);
}

TEST_CASE("session: a queue full of QoS 1/2 drops the new delivery") {
  Session s("c");
  const QueueLimits limits{2};
  s.enqueue(delivery("a", 1), limits);
  s.enqueue(delivery("b", 2), limits);
  CHECK(s.enqueue(delivery("c", 1), limits) == 1);
  CHECK(s.enqueue(delivery("d", 0), limits) == 1);
  CHECK(queued_names(s) == std::vector<std::string>{"a", "b"});
}

TEST_CASE("session: a zero queue limit keeps nothing") {
  Session s("c");
  const QueueLimits limits{0};
  CHECK(s.enqueue(delivery("a", 0), limits) == 1);
  CHECK(s.enqueue(delivery("b", 1), limits) == 1);
  CHECK(s.queued() == 0);
}

TEST_CASE("session: max_bytes drops the oldest QoS 0 deliveries first, then the new one") {
  Session s("c");
  // Each delivery "xN" costs 6 bytes ("t/xN" + "xN"); room for 4 of them.
  const QueueLimits limits{1000, 24};
  std::size_t over = 0;
  CHECK(s.enqueue(delivery("a1", 1), limits, &over) == 0);
  CHECK(s.enqueue(delivery("b0", 0), limits, &over) == 0);
  CHECK(s.enqueue(delivery("c0", 0), limits, &over) == 0);
  CHECK(s.enqueue(delivery("d1", 1), limits, &over) == 0);
  CHECK(s.queued_bytes() == 24);
  CHECK(over == 0);
  // Full: a QoS 1 delivery takes the place of the oldest QoS 0.
  CHECK(s.enqueue(delivery("e1", 1), limits, &over) == 1);
  CHECK(queued_names(s) == std::vector<std::string>{"a1", "c0", "d1", "e1"});
  CHECK(over == 1);
  // A larger delivery (10 bytes) needs more room than the one QoS 0 left can make: dropped.
  auto big = delivery("ffff", 1);
  CHECK(s.enqueue(std::move(big), limits, &over) == 1);
  CHECK(queued_names(s) == std::vector<std::string>{"a1", "c0", "d1", "e1"});
  CHECK(over == 2);
  CHECK(s.enqueue(delivery("g0", 0), limits, &over) == 1);  // replaces c0
  CHECK(queued_names(s) == std::vector<std::string>{"a1", "d1", "e1", "g0"});
  CHECK(over == 3);
  // All QoS 1/2 but the newest: a QoS 1 goes in place of g0, then nothing fits.
  CHECK(s.enqueue(delivery("h1", 1), limits, &over) == 1);
  CHECK(s.enqueue(delivery("i1", 1), limits, &over) == 1);
  CHECK(queued_names(s) == std::vector<std::string>{"a1", "d1", "e1", "h1"});
  CHECK(over == 5);
  CHECK(s.queued_bytes() <= 24);
  // A delivery larger than the limit alone is dropped whatever the queue holds.
  Session empty("e");
  CHECK(empty.enqueue(delivery(std::string(30, 'z'), 1), limits, &over) == 1);
  CHECK(empty.queued() == 0);
  CHECK(over == 6);
}

TEST_CASE("session: max_bytes 0 is unlimited and the message limit still counts apart") {
  Session s("c");
  const QueueLimits limits{2, 0};
  std::size_t over = 0;
  CHECK(s.enqueue(delivery(std::string(100000, 'a'), 1), limits, &over) == 0);
  CHECK(s.enqueue(delivery(std::string(100000, 'b'), 1), limits, &over) == 0);
  CHECK(s.enqueue(delivery("c", 1), limits, &over) == 1);  // max_queued, not bytes
  CHECK(over == 0);
}

TEST_CASE("session: next() sends QoS 0 at once and QoS 1/2 within the in-flight window") {
  Session s("c");
  const QueueLimits limits{100};
  s.enqueue(delivery("zero", 0), limits);
  s.enqueue(delivery("one", 1), limits);
  s.enqueue(delivery("two", 2), limits);
  s.enqueue(delivery("three", 1), limits);

  Next n = take(s, 2);
  REQUIRE(n.any);
  CHECK(n.name == "zero");
  CHECK(n.packet_id == 0);
  CHECK(s.inflight().empty());

  n = take(s, 2);
  REQUIRE(n.any);
  CHECK(n.name == "one");
  CHECK(n.qos == 1);
  CHECK(n.packet_id == 1);
  CHECK(n.sent);

  n = take(s, 2);
  REQUIRE(n.any);
  CHECK(n.name == "two");
  CHECK(n.qos == 2);
  CHECK(n.packet_id == 2);

  // The window (2) is full: "three" waits in the queue.
  CHECK_FALSE(take(s, 2).any);
  CHECK(s.queued() == 1);
  CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1, 2});

  // A larger window (the client's Receive Maximum) lets it go.
  SUBCASE("a larger window") {
    n = take(s, 3);
    REQUIRE(n.any);
    CHECK(n.name == "three");
    CHECK(n.packet_id == 3);
  }
  // Completing one frees a slot.
  SUBCASE("completing one") {
    CHECK(s.complete(1, false));
    n = take(s, 2);
    REQUIRE(n.any);
    CHECK(n.name == "three");
    CHECK(n.packet_id == 3);
    CHECK(inflight_ids(s) == std::vector<std::uint16_t>{2, 3});
  }
  CHECK_FALSE(take(s, 3).any);
  CHECK(s.queued() == 0);
}

TEST_CASE("session: a window of 0 sends only QoS 0") {
  Session s("c");
  const QueueLimits limits{10};
  s.enqueue(delivery("zero", 0), limits);
  s.enqueue(delivery("one", 1), limits);
  const Next n = take(s, 0);
  REQUIRE(n.any);
  CHECK(n.name == "zero");
  CHECK_FALSE(take(s, 0).any);
  CHECK(s.inflight().empty());
  CHECK(s.queued() == 1);
}

TEST_CASE("session: next() skips and counts expired messages") {
  Session s("c");
  const QueueLimits limits{10};
  const auto now = Clock::now();
  s.enqueue(delivery("gone-0", 0, now - 1s), limits);
  s.enqueue(delivery("gone-1", 1, now), limits);  // expires exactly now
  s.enqueue(delivery("alive", 1, now + 10s), limits);
  s.enqueue(delivery("gone-2", 2, now - 1ms), limits);
  s.enqueue(delivery("forever", 0), limits);

  std::size_t expired = 0;
  Next n = take(s, 10, expired, now);
  REQUIRE(n.any);
  CHECK(n.name == "alive");
  CHECK(n.packet_id == 1);  // no packet id was spent on the expired ones
  CHECK(expired == 2);

  n = take(s, 10, expired, now);
  REQUIRE(n.any);
  CHECK(n.name == "forever");
  CHECK(expired == 3);

  CHECK_FALSE(take(s, 10, expired, now).any);
  CHECK(expired == 3);
  CHECK(s.queued() == 0);
  CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1});
}

TEST_CASE("session: next() reads the clock only for a message with an expiry") {
  Session s("c");
  const QueueLimits limits{10};
  s.enqueue(delivery("forever", 0), limits);
  s.enqueue(delivery("forever-1", 1), limits);
  Delivery qos0;
  Inflight* inflight = nullptr;
  std::size_t expired = 0;
  brokerha::session::LazyNow lazy;
  REQUIRE(s.next(10, lazy, qos0, inflight, expired));
  REQUIRE(s.next(10, lazy, qos0, inflight, expired));
  // Neither message expires: the lazy clock was never read.
  brokerha::session::LazyNow fresh;
  const auto t0 = Clock::now();
  CHECK(lazy.get() >= t0);  // read now, on first use
  const auto first = fresh.get();
  CHECK(fresh.get() == first);  // read once
  // A message that expired is dropped through the lazy clock too.
  s.enqueue(delivery("gone", 1, Clock::now() - 1s), limits);
  brokerha::session::LazyNow later;
  CHECK_FALSE(s.next(10, later, qos0, inflight, expired));
  CHECK(expired == 1);
}

TEST_CASE("session: expired messages behind a full window are not skipped early") {
  // The window is full: next() returns false at the first QoS 1 without dropping it.
  Session s("c");
  const QueueLimits limits{10};
  const auto now = Clock::now();
  s.enqueue(delivery("first", 1), limits);
  s.enqueue(delivery("waiting", 1, now + 5s), limits);
  std::size_t expired = 0;
  REQUIRE(take(s, 1, expired, now).any);
  CHECK_FALSE(take(s, 1, expired, now).any);
  CHECK(s.queued() == 1);
  CHECK(expired == 0);
  // Later, once it has expired, it is skipped even though the window is still full.
  CHECK_FALSE(take(s, 1, expired, now + 6s).any);
  CHECK(expired == 1);
  CHECK(s.queued() == 0);
}

TEST_CASE("session: packet ids are sequential and never 0") {
  Session s("c");
  const QueueLimits limits{10};
  for (std::uint16_t expected = 1; expected <= 5; ++expected) {
    s.enqueue(delivery("m", 1), limits);
    const Next n = take(s);
    REQUIRE(n.any);
    CHECK(n.packet_id == expected);
  }
}

TEST_CASE("session: packet ids wrap after 65535 and skip ids still in flight") {
  Session s("c");
  const QueueLimits limits{10};
  constexpr std::uint16_t kWindow = 65535;
  // Ids 1, 2, 3 and 5 stay in flight; every other one is acknowledged at once.
  const std::set<std::uint16_t> kept = {1, 2, 3, 5};
  std::uint16_t previous = 0;
  for (std::uint32_t i = 1; i <= 65535; ++i) {
    s.enqueue(delivery("m", 1), limits);
    const Next n = take(s, kWindow);
    REQUIRE(n.any);
    REQUIRE(n.packet_id != 0);
    REQUIRE(n.packet_id == static_cast<std::uint16_t>(previous + 1));
    previous = n.packet_id;
    if (kept.count(n.packet_id) == 0) REQUIRE(s.complete(n.packet_id, false));
  }
  CHECK(previous == 65535);
  CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1, 2, 3, 5});

  // The wrap: 0 is never used, 1-3 are in flight, so 4; then 5 is in flight, so 6.
  s.enqueue(delivery("after-wrap-1", 1), limits);
  s.enqueue(delivery("after-wrap-2", 1), limits);
  Next n = take(s, kWindow);
  REQUIRE(n.any);
  CHECK(n.packet_id == 4);
  n = take(s, kWindow);
  REQUIRE(n.any);
  CHECK(n.packet_id == 6);

  // Ids freed after the wrap are used again in order.
  CHECK(s.complete(1, false));
  CHECK(s.complete(2, false));
  s.enqueue(delivery("after-wrap-3", 1), limits);
  n = take(s, kWindow);
  REQUIRE(n.any);
  CHECK(n.packet_id == 7);
}

TEST_CASE("session: a full window at the wrap-around skips every id still in flight") {
  // Window 100. Ids 1..50 stay in flight from the start; 51..65485 are acknowledged at once;
  // 65486..65535 stay in flight too, which fills the window just before the wrap.
  Session s("c");
  const QueueLimits limits{10};
  constexpr std::uint16_t kWindow = 100;
  for (std::uint32_t i = 1; i <= 65535; ++i) {
    s.enqueue(delivery("m", 1), limits);
    const Next n = take(s, kWindow);
    REQUIRE(n.any);
    REQUIRE(n.packet_id == i);
    if (i > 50 && i < 65486) REQUIRE(s.complete(n.packet_id, false));
  }
  REQUIRE(s.inflight().size() == kWindow);
  s.enqueue(delivery("waits", 1), limits);
  CHECK_FALSE(take(s, kWindow).any);  // the window is full
  CHECK(s.queued() == 1);

  CHECK(s.complete(65486, false));
  const Next n = take(s, kWindow);
  REQUIRE(n.any);
  CHECK(n.name == "waits");
  CHECK(n.packet_id == 51);  // 65535 wrapped to 1; 1..50 are in flight
  CHECK(s.inflight().size() == kWindow);

  std::set<std::uint16_t> ids;
  for (const Inflight& f : s.inflight()) ids.insert(f.packet_id);
  CHECK(ids.size() == s.inflight().size());  // all distinct
  CHECK(ids.count(0) == 0);
}

TEST_CASE("session: complete() for QoS 1 and the two QoS 2 phases") {
  Session s("c");
  const QueueLimits limits{10};
  s.enqueue(delivery("one", 1), limits);
  s.enqueue(delivery("two", 2), limits);
  REQUIRE(take(s).packet_id == 1);
  REQUIRE(take(s).packet_id == 2);

  SUBCASE("QoS 1: PUBACK completes it, PUBCOMP does not") {
    CHECK_FALSE(s.complete(1, true));
    CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1, 2});
    CHECK(s.complete(1, false));
    CHECK(inflight_ids(s) == std::vector<std::uint16_t>{2});
    CHECK_FALSE(s.complete(1, false));  // already done
  }
  SUBCASE("QoS 2: PUBACK does not complete it; PUBCOMP only after PUBREC") {
    CHECK_FALSE(s.complete(2, false));
    CHECK_FALSE(s.complete(2, true));  // PUBCOMP before PUBREC
    CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1, 2});
    CHECK_FALSE(s.inflight().back().released);
    CHECK(s.released(2));
    CHECK(s.inflight().back().released);
    CHECK(s.released(2));  // a repeated PUBREC is answered again
    CHECK_FALSE(s.complete(2, false));
    CHECK(s.complete(2, true));
    CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1});
    CHECK_FALSE(s.complete(2, true));
  }
  SUBCASE("unknown ids") {
    CHECK_FALSE(s.complete(99, false));
    CHECK_FALSE(s.complete(99, true));
    CHECK_FALSE(s.released(99));
    CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1, 2});
  }
}

TEST_CASE("session: released() applies to QoS 2 only") {
  Session s("c");
  const QueueLimits limits{10};
  s.enqueue(delivery("one", 1), limits);
  REQUIRE(take(s).packet_id == 1);
  CHECK_FALSE(s.released(1));
  CHECK_FALSE(s.inflight().front().released);
  CHECK(s.complete(1, false));
}

TEST_CASE("session: abandon() forgets a delivery in any phase and frees the window") {
  Session s("c");
  const QueueLimits limits{10};
  s.enqueue(delivery("one", 1), limits);
  s.enqueue(delivery("two", 2), limits);
  s.enqueue(delivery("three", 2), limits);
  s.enqueue(delivery("four", 1), limits);
  REQUIRE(take(s, 3).packet_id == 1);
  REQUIRE(take(s, 3).packet_id == 2);
  REQUIRE(take(s, 3).packet_id == 3);
  CHECK_FALSE(take(s, 3).any);
  REQUIRE(s.released(3));

  CHECK(s.abandon(2));  // QoS 2 before PUBREC
  CHECK(s.abandon(3));  // QoS 2 after PUBREC
  CHECK_FALSE(s.abandon(3));
  CHECK_FALSE(s.abandon(42));
  CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1});
  const Next n = take(s, 3);
  REQUIRE(n.any);
  CHECK(n.name == "four");
  CHECK(n.packet_id == 4);
  CHECK(s.abandon(1));  // QoS 1
  CHECK(inflight_ids(s) == std::vector<std::uint16_t>{4});
}

TEST_CASE("session: connection_lost() marks in-flight deliveries as unsent") {
  Session s("c");
  const QueueLimits limits{10};
  s.enqueue(delivery("one", 1), limits);
  s.enqueue(delivery("two", 2), limits);
  s.enqueue(delivery("queued", 1), limits);
  REQUIRE(take(s, 2).any);
  REQUIRE(take(s, 2).any);
  REQUIRE(s.released(2));
  for (const Inflight& f : s.inflight()) CHECK(f.sent);

  s.connection_lost();
  REQUIRE(s.inflight().size() == 2);
  for (const Inflight& f : s.inflight()) CHECK_FALSE(f.sent);
  // Nothing else changes: ids, phases, the queue.
  CHECK(inflight_ids(s) == std::vector<std::uint16_t>{1, 2});
  CHECK_FALSE(s.inflight()[0].released);
  CHECK(s.inflight()[1].released);
  CHECK(queued_names(s) == std::vector<std::string>{"queued"});
}

TEST_CASE("session: drop_qos0() keeps the QoS 1/2 deliveries in order") {
  Session s("c");
  const QueueLimits limits{10};
  s.enqueue(delivery("a0", 0), limits);
  s.enqueue(delivery("b1", 1), limits);
  s.enqueue(delivery("c0", 0), limits);
  s.enqueue(delivery("d2", 2), limits);
  s.enqueue(delivery("e0", 0), limits);
  CHECK(s.drop_qos0() == 3);
  CHECK(queued_names(s) == std::vector<std::string>{"b1", "d2"});
  CHECK(s.drop_qos0() == 0);
  CHECK(s.queued() == 2);
}

TEST_CASE("session: incoming QoS 2 packet ids detect duplicates until released") {
  Session s("c");
  CHECK(s.incoming_qos2() == 0);
  CHECK(s.receive_qos2(7));
  CHECK(s.receive_qos2(8));
  CHECK_FALSE(s.receive_qos2(7));  // a resend before PUBREL: a duplicate
  CHECK(s.incoming_qos2() == 2);

  CHECK(s.release_qos2(7));
  CHECK_FALSE(s.release_qos2(7));  // PUBREL twice
  CHECK_FALSE(s.release_qos2(9));  // never received
  CHECK(s.incoming_qos2() == 1);

  CHECK(s.receive_qos2(7));  // after PUBREL the id is a new message
  CHECK(s.incoming_qos2() == 2);
  CHECK(s.release_qos2(7));
  CHECK(s.release_qos2(8));
  CHECK(s.incoming_qos2() == 0);
}

TEST_CASE("session: subscriptions are kept by full filter") {
  Session s("c");
  brokerha::session::SubscriptionOptions o;
  o.qos = 2;
  o.identifier = 12;
  s.subscriptions()["$share/g/a/#"] = o;
  s.subscriptions()["a/+"] = {};
  const Session& cs = s;
  REQUIRE(cs.subscriptions().size() == 2);
  CHECK(cs.subscriptions().at("$share/g/a/#").qos == 2);
  CHECK(cs.subscriptions().at("$share/g/a/#").identifier == 12);
  CHECK(cs.subscriptions().at("a/+").qos == 0);
}

TEST_CASE("session: merge_from takes the other session's subscriptions, messages and QoS 2 ids") {
  const auto now = Clock::now();
  QueueLimits limits;
  Session mine("c");
  mine.subscriptions()["a/#"].qos = 1;
  mine.enqueue(delivery("mine-1", 1), limits);

  Session other("c");
  other.subscriptions()["a/#"].qos = 2;  // this session's options win
  other.subscriptions()["b/+"].qos = 1;
  other.enqueue(delivery("acked-later", 1), limits);
  other.enqueue(delivery("released", 2), limits);
  other.enqueue(delivery("queued", 1), limits);
  std::size_t expired = 0;
  const Next first = take(other, 2, expired, now);
  const Next second = take(other, 2, expired, now);
  REQUIRE(first.name == "acked-later");
  REQUIRE(second.name == "released");
  REQUIRE(other.released(second.packet_id));  // past PUBREC: the client has it
  REQUIRE(other.receive_qos2(77));

  std::vector<std::string> added;
  mine.merge_from(other, added);
  CHECK(added == std::vector<std::string>{"b/+"});
  CHECK(mine.subscriptions().at("a/#").qos == 1);
  CHECK(mine.subscriptions().at("b/+").qos == 1);
  // Its own queue first, then the other's unacknowledged in-flight and queued ones, all with
  // DUP (both sessions were subscribed meanwhile, so a peer may have sent a message to both);
  // a QoS 2 delivery past PUBREC is not sent again.
  CHECK(queued_names(mine) == std::vector<std::string>{"mine-1", "acked-later", "queued"});
  std::vector<bool> dups;
  for (const Delivery& d : mine.queue()) dups.push_back(d.dup);
  CHECK(dups == std::vector<bool>{false, true, true});
  CHECK(mine.has_qos2(77));
  CHECK(other.queued() == 0);
  CHECK(other.inflight().empty());
  CHECK(other.subscriptions().empty());
  CHECK(other.queued_bytes() == 0);
}

TEST_CASE("session: a trail goes in after what came with the session, before what came since") {
  QueueLimits limits;
  Session s("c");
  s.enqueue(delivery("came-1", 1), limits);
  s.enqueue(delivery("came-2", 1), limits);
  s.enqueue(delivery("since-1", 1), limits);  // queued here while the trail was awaited
  s.enqueue(delivery("since-2", 0), limits);
  Session trail("c");
  trail.enqueue(delivery("trail-1", 1), limits);
  trail.enqueue(delivery("trail-2", 2), limits);
  const std::size_t bytes = s.queued_bytes() + trail.queued_bytes();

  s.splice_trail(2, trail);
  CHECK(queued_names(s) ==
        std::vector<std::string>{"came-1", "came-2", "trail-1", "trail-2", "since-1", "since-2"});
  // What came since may repeat the trail: DUP, except at QoS 0 (never DUP).
  std::vector<bool> dups;
  for (const Delivery& d : s.queue()) dups.push_back(d.dup);
  CHECK(dups == std::vector<bool>{false, false, false, false, true, false});
  CHECK(s.queued_bytes() == bytes);
  CHECK(trail.queued() == 0);
  CHECK(trail.queued_bytes() == 0);

  // An empty trail changes nothing.
  Session empty("c");
  s.splice_trail(0, empty);
  CHECK(queued_names(s).front() == "came-1");
  CHECK_FALSE(s.queue().front().dup);
}
