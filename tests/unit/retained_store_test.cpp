// SPDX-License-Identifier: Apache-2.0
// The versioned retained store (broker/retained.hpp): local writes, replacement and deletion,
// live counting, matching with wildcards and '$' topics, replicated writes ordered by hybrid
// logical clock and node name, tombstones that stop an older write from resurrecting a
// deleted message until they are pruned, and the hybrid clock itself.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "message/message.hpp"
#include "retained/store.hpp"

namespace {

namespace message = brokerha::message;
namespace hlc = brokerha::hlc;
namespace retained = brokerha::retained;
using hlc::Version;
using message::MessagePtr;
using retained::Store;
using std::chrono::milliseconds;

MessagePtr msg(const std::string& topic, const std::string& payload) {
  auto m = std::make_shared<message::Message>();
  m->topic = topic;
  m->payload = payload;
  m->retain = true;
  return m;
}

std::set<std::string> topics(const std::vector<MessagePtr>& list) {
  std::set<std::string> out;
  for (const MessagePtr& m : list) out.insert(m->topic);
  return out;
}

std::string payload_of(const Store& store, const std::string& topic) {
  const auto found = store.matching(topic);
  if (found.size() != 1) return "<" + std::to_string(found.size()) + " entries>";
  return found[0]->payload;
}

struct Seen {
  std::string topic;
  bool live;
  Version version;
};

std::vector<Seen> entries(const Store& store) {
  std::vector<Seen> out;
  store.for_each([&](const std::string& topic, const Store::Entry& e) {
    out.push_back({topic, e.message != nullptr, e.version});
  });
  return out;
}

std::uint64_t wall_ms() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

}  // namespace

TEST_CASE("retained store: write, replace and delete with an empty payload") {
  Store store;
  CHECK(store.size() == 0);
  CHECK(store.matching("a/b").empty());

  const Version v1 = store.write(msg("a/b", "one"), "");
  CHECK(store.size() == 1);
  CHECK(payload_of(store, "a/b") == "one");

  const Version v2 = store.write(msg("a/b", "two"), "");
  CHECK(v2.newer_than(v1));
  CHECK(store.size() == 1);  // replaced, not added
  CHECK(payload_of(store, "a/b") == "two");

  store.write(msg("a/c", "three"), "");
  CHECK(store.size() == 2);

  store.write(msg("a/b", ""), "");  // empty payload: delete
  CHECK(store.size() == 1);
  CHECK(store.matching("a/b").empty());
  CHECK(payload_of(store, "a/c") == "three");
  CHECK(entries(store).size() == 1);  // TTL 0: no tombstone is kept

  // Deleting what does not exist changes nothing (and does not underflow the count).
  store.write(msg("never/there", ""), "");
  store.write(msg("a/b", ""), "");
  CHECK(store.size() == 1);
  store.write(msg("a/c", ""), "");
  CHECK(store.size() == 0);
  CHECK(store.matching("#").empty());
  CHECK(entries(store).empty());
}

TEST_CASE("retained store: size() counts live entries only, tombstones excluded") {
  Store store(std::chrono::minutes(1));
  for (int i = 0; i < 10; ++i) store.write(msg("t/" + std::to_string(i), "x"), "n");
  CHECK(store.size() == 10);
  for (int i = 0; i < 4; ++i) store.write(msg("t/" + std::to_string(i), ""), "n");
  CHECK(store.size() == 6);
  CHECK(entries(store).size() == 10);  // 4 tombstones kept
  CHECK(topics(store.matching("t/+")).size() == 6);
  // Deleting a tombstone again, or a topic never written, keeps the count right.
  store.write(msg("t/0", ""), "n");
  store.write(msg("nothing/here", ""), "n");
  CHECK(store.size() == 6);
  // Writing a tombstoned topic makes it live again.
  store.write(msg("t/1", "back"), "n");
  CHECK(store.size() == 7);
  CHECK(payload_of(store, "t/1") == "back");
  // apply() with a null message deletes too (a version newer than the local write's, within
  // the max clock skew).
  CHECK(store.apply("t/5", nullptr, {(wall_ms() + 1000) << 16, "n"}));
  CHECK(store.size() == 6);
  CHECK(store.matching("t/5").empty());
}

TEST_CASE("retained store: matching with exact and wildcard filters and '$' topics") {
  Store store;
  for (const char* t : {"a", "a/b", "a/c", "a/b/c", "b/a", "a//c", "/lead", "$SYS/broker/load",
                        "$SYS/x", "$other/y", "A/b"}) {
    store.write(msg(t, std::string("p:") + t), "");
  }
  REQUIRE(store.size() == 8);  // '$' topics ($SYS) are held but not counted

  using S = std::set<std::string>;
  CHECK(topics(store.matching("a/b")) == S{"a/b"});
  CHECK(topics(store.matching("A/b")) == S{"A/b"});  // case-sensitive
  CHECK(topics(store.matching("a/x")).empty());
  CHECK(topics(store.matching("a/+")) == S{"a/b", "a/c"});
  CHECK(topics(store.matching("a/#")) == S{"a", "a/b", "a/c", "a/b/c", "a//c"});
  CHECK(topics(store.matching("a/+/c")) == S{"a/b/c", "a//c"});
  CHECK(topics(store.matching("+/a")) == S{"b/a"});
  CHECK(topics(store.matching("+/+")) == S{"a/b", "a/c", "b/a", "/lead", "A/b"});
  CHECK(topics(store.matching("+")) == S{"a"});
  // '$' topics are not matched by a filter starting with a wildcard...
  CHECK(topics(store.matching("#")) ==
        S{"a", "a/b", "a/c", "a/b/c", "b/a", "a//c", "/lead", "A/b"});
  CHECK(topics(store.matching("+/x")).empty());
  CHECK(topics(store.matching("+/broker/+")).empty());
  // ...but are by filters that name their first level.
  CHECK(topics(store.matching("$SYS/#")) == S{"$SYS/broker/load", "$SYS/x"});
  CHECK(topics(store.matching("$SYS/+")) == S{"$SYS/x"});
  CHECK(topics(store.matching("$SYS/broker/load")) == S{"$SYS/broker/load"});
  CHECK(topics(store.matching("$other/+")) == S{"$other/y"});

  // The message returned is the stored one.
  const auto found = store.matching("$SYS/x");
  REQUIRE(found.size() == 1);
  CHECK(found[0]->payload == "p:$SYS/x");
}

TEST_CASE("retained store: apply() keeps the newest version, node name breaks ties") {
  Store store(std::chrono::minutes(1));
  const std::uint64_t base = std::uint64_t{1} << 40;

  CHECK(store.apply("t", msg("t", "first"), {base + 10, "node-b"}));
  CHECK(payload_of(store, "t") == "first");

  // Older clock: refused, whatever the node.
  CHECK_FALSE(store.apply("t", msg("t", "older"), {base + 9, "node-z"}));
  CHECK(payload_of(store, "t") == "first");

  // Same clock, same node: not newer.
  CHECK_FALSE(store.apply("t", msg("t", "same"), {base + 10, "node-b"}));
  CHECK(payload_of(store, "t") == "first");

  // Same clock, smaller node name: loses the tie.
  CHECK_FALSE(store.apply("t", msg("t", "tie-a"), {base + 10, "node-a"}));
  CHECK(payload_of(store, "t") == "first");

  // Same clock, greater node name: wins the tie.
  CHECK(store.apply("t", msg("t", "tie-c"), {base + 10, "node-c"}));
  CHECK(payload_of(store, "t") == "tie-c");

  // Newer clock wins even with a smaller node name.
  CHECK(store.apply("t", msg("t", "newer"), {base + 11, "a"}));
  CHECK(payload_of(store, "t") == "newer");
  CHECK(store.size() == 1);

  const auto e = entries(store);
  REQUIRE(e.size() == 1);
  CHECK(e[0].version.hlc == base + 11);
  CHECK(e[0].version.node == "a");

  // The order itself.
  CHECK(Version{5, "a"}.newer_than({4, "z"}));
  CHECK_FALSE(Version{4, "z"}.newer_than({5, "a"}));
  CHECK(Version{5, "b"}.newer_than({5, "a"}));
  CHECK_FALSE(Version{5, "a"}.newer_than({5, "a"}));
  CHECK(Version{5, "a"}.newer_than({5, ""}));
}

TEST_CASE("retained store: replicas converge whatever order the writes arrive in") {
  struct Write {
    std::string payload;
    Version version;
  };
  const std::uint64_t base = std::uint64_t{1} << 40;
  const std::vector<Write> writes = {{"w1", {base + 1, "n1"}},
                                     {"", {base + 2, "n2"}},  // a delete
                                     {"w3", {base + 2, "n3"}},
                                     {"w4", {base + 2, "n0"}}};
  // Every permutation of the four writes ends with w3 (hlc base+2, greatest node).
  std::vector<std::size_t> order = {0, 1, 2, 3};
  int permutations = 0;
  do {
    Store store(std::chrono::minutes(1));
    for (std::size_t i : order) {
      store.apply("k", writes[i].payload.empty() ? nullptr : msg("k", writes[i].payload),
                  writes[i].version);
    }
    INFO("order " << order[0] << order[1] << order[2] << order[3]);
    CHECK(payload_of(store, "k") == "w3");
    ++permutations;
  } while (std::next_permutation(order.begin(), order.end()));
  CHECK(permutations == 24);
}

TEST_CASE("retained store: an older write neither overwrites nor resurrects (tombstone TTL > 0)") {
  Store store(std::chrono::minutes(10));
  const std::uint64_t base = std::uint64_t{1} << 40;

  REQUIRE(store.apply("x", msg("x", "v200"), {base + 200, "n"}));
  // Deleted by a newer replicated write (empty payload).
  CHECK(store.apply("x", msg("x", ""), {base + 300, "n"}));
  CHECK(store.size() == 0);
  CHECK(store.matching("x").empty());

  // A late write older than the delete is refused: no resurrection.
  CHECK_FALSE(store.apply("x", msg("x", "v250"), {base + 250, "n"}));
  CHECK_FALSE(store.apply("x", msg("x", "v300-a"), {base + 300, "a"}));
  CHECK(store.size() == 0);
  CHECK(store.matching("x").empty());
  CHECK(store.matching("#").empty());

  // The tombstone is visible to for_each with the delete's version.
  auto e = entries(store);
  REQUIRE(e.size() == 1);
  CHECK(e[0].topic == "x");
  CHECK_FALSE(e[0].live);
  CHECK(e[0].version.hlc == base + 300);

  // A newer write does bring it back.
  CHECK(store.apply("x", msg("x", "v301"), {base + 301, "n"}));
  CHECK(store.size() == 1);
  CHECK(payload_of(store, "x") == "v301");

  // A tombstone for a topic never seen also blocks older writes.
  CHECK(store.apply("y", nullptr, {base + 500, "n"}));
  CHECK(store.size() == 1);
  CHECK_FALSE(store.apply("y", msg("y", "late"), {base + 499, "z"}));
  CHECK(store.matching("y").empty());
}

TEST_CASE("retained store: a local write after observing a newer version still wins") {
  // A node whose clock is behind receives a write from the future (within the max clock
  // skew); its next local write must get a newer version (the clock observed the remote one)
  // and replace it.
  Store store(std::chrono::minutes(1));
  const std::uint64_t future = (wall_ms() + 30'000) << 16;
  REQUIRE(store.apply("t", msg("t", "remote"), {future, "zzz"}));
  const Version local = store.write(msg("t", "local"), "aaa");
  CHECK(local.hlc > future);
  CHECK(local.newer_than({future, "zzz"}));
  CHECK(payload_of(store, "t") == "local");
}

TEST_CASE("retained store: tombstones are pruned after the TTL") {
  const auto ttl = milliseconds(200);
  Store store(ttl);
  const std::uint64_t base = std::uint64_t{1} << 40;
  REQUIRE(store.apply("gone", msg("gone", "v"), {base + 1, "n"}));
  REQUIRE(store.apply("kept", msg("kept", "v"), {base + 1, "n"}));
  const auto before_delete = Store::Clock::now();
  REQUIRE(store.apply("gone", nullptr, {base + 2, "n"}));
  const auto after_delete = Store::Clock::now();
  REQUIRE(entries(store).size() == 2);

  // Not yet expired: kept.
  store.prune(before_delete);
  CHECK(entries(store).size() == 2);
  store.prune(before_delete + ttl / 2);
  CHECK(entries(store).size() == 2);

  // Past the TTL: the tombstone goes, live entries stay.
  store.prune(after_delete + ttl + milliseconds(1));
  const auto e = entries(store);
  REQUIRE(e.size() == 1);
  CHECK(e[0].topic == "kept");
  CHECK(e[0].live);
  CHECK(store.size() == 1);
  CHECK(payload_of(store, "kept") == "v");

  // Once the tombstone is gone, nothing remembers the delete: an older write is accepted
  // (the documented limit of the TTL).
  CHECK(store.apply("gone", msg("gone", "old"), {base + 1, "n"}));
  CHECK(payload_of(store, "gone") == "old");
}

TEST_CASE("retained store: with TTL 0 a delete leaves nothing behind") {
  Store store;
  const std::uint64_t base = std::uint64_t{1} << 40;
  REQUIRE(store.apply("t", msg("t", "v"), {base + 5, "n"}));
  CHECK(store.apply("t", nullptr, {base + 6, "n"}));
  CHECK(entries(store).empty());
  CHECK(store.size() == 0);
  store.prune(Store::Clock::now());
  CHECK(entries(store).empty());
}

TEST_CASE("hybrid clock: strictly increasing, near wall time, moved forward by observe()") {
  hlc::Clock clock;
  const std::uint64_t wall_before = wall_ms();
  std::uint64_t last = clock.now();
  CHECK((last >> 16) >= wall_before);
  CHECK((last >> 16) <= wall_ms() + 1000);
  for (int i = 0; i < 1000; ++i) {
    const std::uint64_t t = clock.now();
    if (t <= last) {
      FAIL_CHECK("call " << i << ": " << t << " <= " << last);
      break;
    }
    last = t;
  }

  // Observing a reading from the future moves the clock past it.
  const std::uint64_t future = (wall_ms() + 30'000) << 16;
  clock.observe(future);
  const std::uint64_t after = clock.now();
  CHECK(after > future);
  CHECK(clock.now() > after);

  // Observing the past does not move it back.
  clock.observe(1);
  CHECK(clock.now() > after);

  // A fresh clock is monotonic too after observing a reading equal to its current value.
  hlc::Clock other;
  const std::uint64_t t1 = other.now();
  other.observe(t1);
  CHECK(other.now() > t1);
}

TEST_CASE("hybrid clock: a reading beyond the max skew neither moves nor wraps the clock") {
  hlc::Clock clock;
  CHECK(clock.max_skew() == hlc::kDefaultMaxSkew);
  // UINT64_MAX used to be taken as is: the next now() wrapped to 0.
  CHECK_FALSE(clock.observe(UINT64_MAX));
  std::uint64_t t = clock.now();
  CHECK((t >> 16) >= wall_ms() - 1000);
  CHECK((t >> 16) <= wall_ms() + 1000);
  // Just beyond the bound: refused; within it: taken.
  clock.set_max_skew(milliseconds(5000));
  CHECK_FALSE(clock.observe((wall_ms() + 10'000) << 16));
  CHECK((clock.now() >> 16) <= wall_ms() + 1000);
  const std::uint64_t near = (wall_ms() + 2000) << 16;
  CHECK(clock.acceptable(near));
  CHECK(clock.observe(near));
  CHECK(clock.now() > near);
}

TEST_CASE("retained store: a replicated version far in the future is refused and counted") {
  Store store(std::chrono::hours(1));
  // A peer's entry with the largest reading: before the bound it was stored, the store's
  // clock wrapped, and this node's next write of the topic got a version (0) every replica
  // took as older, so the topic could never be overwritten again in the cluster.
  CHECK_FALSE(store.apply("t", msg("t", "from the future"), {UINT64_MAX, "evil"}));
  CHECK(store.refused_skew() == 1);
  CHECK(store.matching("t").empty());
  const Version mine = store.write(msg("t", "local"), "n1");
  CHECK((mine.hlc >> 16) >= wall_ms() - 1000);
  CHECK((mine.hlc >> 16) <= wall_ms() + 1000);
  CHECK(payload_of(store, "t") == "local");
  // A peer's later write (within the bound) replaces it, as before.
  CHECK(store.apply("t", msg("t", "peer"), {mine.hlc + 1, "n2"}));
  CHECK(payload_of(store, "t") == "peer");
  // A delete from the future is refused too: the message stays.
  CHECK_FALSE(store.apply("t", nullptr, {(wall_ms() + 3'600'000) << 16, "evil"}));
  CHECK(store.refused_skew() == 2);
  CHECK(payload_of(store, "t") == "peer");
  // The bound is configurable.
  store.set_max_clock_skew(std::chrono::hours(2));
  CHECK(store.apply("t", nullptr, {(wall_ms() + 3'600'000) << 16, "n3"}));
  CHECK(store.matching("t").empty());
  CHECK(store.refused_skew() == 2);
}

TEST_CASE("retained store: beyond max_tombstones the oldest tombstones go first") {
  Store store(std::chrono::hours(1));
  store.set_max_tombstones(3);
  const std::uint64_t base = std::uint64_t{1} << 40;
  REQUIRE(store.apply("live", msg("live", "v"), {base, "n"}));
  for (int i = 0; i < 5; ++i) {
    const std::string t = "t" + std::to_string(i);
    REQUIRE(store.apply(t, nullptr, {base + 1 + static_cast<std::uint64_t>(i), "n"}));
    // Distinct deletion times, oldest first.
    std::this_thread::sleep_for(milliseconds(2));
  }
  CHECK(store.tombstones() == 5);
  store.prune(Store::Clock::now());
  CHECK(store.tombstones() == 3);
  std::set<std::string> kept;
  for (const Seen& s : entries(store)) kept.insert(s.topic);
  CHECK(kept == std::set<std::string>{"live", "t2", "t3", "t4"});
  CHECK(store.size() == 1);
}
