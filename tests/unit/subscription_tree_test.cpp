// SPDX-License-Identifier: Apache-2.0
// topic::SubscriptionTree: insert/replace/erase (with pruning), matching compared with
// topic::matches() over a randomized cross product, shared-subscription groups, and the
// rule that '$' topics are not matched by a wildcard at the first level.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "topic/topic.hpp"
#include "topic/tree.hpp"

namespace {

using brokerha::topic::matches;

struct Sub {
  int key = 0;
  int value = 0;  // tells a replacement apart
};
using Tree = brokerha::topic::SubscriptionTree<Sub>;

// The keys of the non-shared subscriptions matching `topic`, sorted, and the shared groups
// as sorted member key lists (sorted by first member).
struct Matched {
  std::vector<int> keys;
  std::vector<int> values;
  std::vector<std::vector<int>> groups;
};

Matched match(const Tree& tree, std::string_view topic) {
  Matched m;
  tree.match(
      topic,
      [&](const Sub& s) {
        m.keys.push_back(s.key);
        m.values.push_back(s.value);
      },
      [&](const Tree::Group& g) {
        std::vector<int> members;
        for (const Sub& s : g.members) members.push_back(s.key);
        std::sort(members.begin(), members.end());
        m.groups.push_back(members);
      });
  std::sort(m.keys.begin(), m.keys.end());
  std::sort(m.groups.begin(), m.groups.end());
  return m;
}

std::vector<int> keys(const Tree& tree, std::string_view topic) { return match(tree, topic).keys; }

using Keys = std::vector<int>;

// Random topics and filters over a small alphabet of levels, empty levels included.
std::string random_topic(std::mt19937& rng) {
  static const std::vector<std::string> kLevels = {"a", "b", "c", "", "$SYS", "$x", "ab"};
  for (;;) {
    const std::size_t n = 1 + rng() % 4;
    std::string t;
    for (std::size_t i = 0; i < n; ++i) {
      if (i != 0) t += '/';
      t += kLevels[rng() % kLevels.size()];
    }
    if (!t.empty()) return t;  // a topic name is not empty
  }
}

std::string random_filter(std::mt19937& rng) {
  static const std::vector<std::string> kLevels = {"a",  "b",  "c", "",  "$SYS",
                                                   "$x", "ab", "+", "+", "#"};
  for (;;) {
    const std::size_t n = 1 + rng() % 4;
    std::string f;
    bool valid = true;
    for (std::size_t i = 0; i < n; ++i) {
      const std::string& level = kLevels[rng() % kLevels.size()];
      if (level == "#" && i + 1 != n) valid = false;  // '#' only as the last level
      if (i != 0) f += '/';
      f += level;
    }
    if (valid && !f.empty()) return f;
  }
}

}  // namespace

TEST_CASE("subscription tree: insert and replace and erase") {
  Tree tree;
  CHECK(tree.size() == 0);
  CHECK_FALSE(tree.insert("a/b", "", Sub{1, 10}));
  CHECK_FALSE(tree.insert("a/b", "", Sub{2, 20}));
  CHECK_FALSE(tree.insert("a/+", "", Sub{1, 11}));
  CHECK(tree.size() == 3);
  CHECK(keys(tree, "a/b") == Keys{1, 1, 2});

  // The same key and filter replaces (one subscription per subscriber and filter).
  CHECK(tree.insert("a/b", "", Sub{1, 12}));
  CHECK(tree.size() == 3);
  const Matched m = match(tree, "a/b");
  CHECK(m.keys == Keys{1, 1, 2});
  std::vector<int> values = m.values;
  std::sort(values.begin(), values.end());
  CHECK(values == std::vector<int>{11, 12, 20});

  CHECK(tree.erase("a/b", "", 1));
  CHECK(tree.size() == 2);
  CHECK(keys(tree, "a/b") == Keys{1, 2});  // key 1 still has "a/+"
  CHECK_FALSE(tree.erase("a/b", "", 1));   // already gone
  CHECK_FALSE(tree.erase("a/b", "", 3));   // never there
  CHECK_FALSE(tree.erase("a/c", "", 2));   // no such filter
  CHECK_FALSE(tree.erase("a/b/c", "", 2));
  CHECK_FALSE(tree.erase("a/b", "g", 2));  // no such group
  CHECK(tree.size() == 2);

  CHECK(tree.erase("a/+", "", 1));
  CHECK(tree.erase("a/b", "", 2));
  CHECK(tree.size() == 0);
  CHECK(keys(tree, "a/b").empty());
  CHECK(keys(tree, "a").empty());

  // Pruned branches grow back.
  CHECK_FALSE(tree.insert("a/b", "", Sub{5, 50}));
  CHECK(keys(tree, "a/b") == Keys{5});
  CHECK(tree.size() == 1);
}

TEST_CASE("subscription tree: pruning keeps what other filters still need") {
  Tree tree;
  tree.insert("a/b/c/d", "", Sub{1});
  tree.insert("a/b", "", Sub{2});
  tree.insert("a/+/c/#", "", Sub{3});
  tree.insert("a/#", "", Sub{4});
  tree.insert("a/b/c/d", "g", Sub{5});

  // Erasing the deep filter prunes nothing the others use.
  CHECK(tree.erase("a/b/c/d", "", 1));
  CHECK(keys(tree, "a/b/c/d") == Keys{3, 4});
  CHECK(match(tree, "a/b/c/d").groups == std::vector<std::vector<int>>{{5}});
  CHECK(keys(tree, "a/b") == Keys{2, 4});

  // Erasing the parent's subscription keeps its children.
  CHECK(tree.erase("a/b", "", 2));
  CHECK(keys(tree, "a/b") == Keys{4});
  CHECK(match(tree, "a/b/c/d").groups == std::vector<std::vector<int>>{{5}});

  // The '+' branch goes; '#' at the same level stays.
  CHECK(tree.erase("a/+/c/#", "", 3));
  CHECK(keys(tree, "a/x/c") == Keys{4});
  CHECK(keys(tree, "a/b/c/d") == Keys{4});

  CHECK(tree.erase("a/b/c/d", "g", 5));
  CHECK(match(tree, "a/b/c/d").groups.empty());
  CHECK(tree.erase("a/#", "", 4));
  CHECK(tree.size() == 0);
  CHECK(keys(tree, "a/b/c/d").empty());

  // Everything re-inserts cleanly after full pruning.
  tree.insert("a/+/c/#", "", Sub{3});
  CHECK(keys(tree, "a/b/c") == Keys{3});
  CHECK(keys(tree, "a/b/c/d/e") == Keys{3});
  CHECK(keys(tree, "a/b").empty());
}

TEST_CASE("subscription tree: wildcard matching details") {
  Tree tree;
  tree.insert("#", "", Sub{1});
  tree.insert("a/#", "", Sub{2});
  tree.insert("a/+", "", Sub{3});
  tree.insert("+/+", "", Sub{4});
  tree.insert("a/+/c", "", Sub{5});
  tree.insert("/", "", Sub{6});
  tree.insert("+", "", Sub{7});
  tree.insert("a//c", "", Sub{8});

  CHECK(keys(tree, "a") == Keys{1, 2, 7});  // "a/#" matches its parent level
  CHECK(keys(tree, "a/b") == Keys{1, 2, 3, 4});
  CHECK(keys(tree, "a/") == Keys{1, 2, 3, 4});  // '+' matches an empty level
  CHECK(keys(tree, "a/b/c") == Keys{1, 2, 5});
  CHECK(keys(tree, "a//c") == Keys{1, 2, 5, 8});
  CHECK(keys(tree, "/") == Keys{1, 4, 6});
  CHECK(keys(tree, "b") == Keys{1, 7});
  CHECK(keys(tree, "b/a/c") == Keys{1});
}

TEST_CASE("subscription tree: '$' topics are not matched by a wildcard first level") {
  Tree tree;
  tree.insert("#", "", Sub{1});
  tree.insert("+/x", "", Sub{2});
  tree.insert("$SYS/#", "", Sub{3});
  tree.insert("$SYS/+", "", Sub{4});
  tree.insert("+/+", "", Sub{5});
  tree.insert("#", "g", Sub{6});
  tree.insert("$SYS/x", "g", Sub{7});
  tree.insert("a/$SYS/#", "", Sub{8});

  const Matched sys = match(tree, "$SYS/x");
  CHECK(sys.keys == Keys{3, 4});
  CHECK(sys.groups == std::vector<std::vector<int>>{{7}});  // not the "#" group
  CHECK(keys(tree, "$SYS") == Keys{3});
  CHECK(keys(tree, "$other/x").empty());
  CHECK(match(tree, "$other/x").groups.empty());

  // '$' only matters as the first character of the topic.
  CHECK(keys(tree, "a/x") == Keys{1, 2, 5});
  CHECK(keys(tree, "a/$SYS") == Keys{1, 5, 8});
  CHECK(match(tree, "a/x").groups == std::vector<std::vector<int>>{{6}});
}

TEST_CASE("subscription tree: shared groups are reported with their members") {
  Tree tree;
  CHECK_FALSE(tree.insert("a/+", "g1", Sub{1}));
  CHECK_FALSE(tree.insert("a/+", "g1", Sub{2}));
  CHECK_FALSE(tree.insert("a/+", "g2", Sub{1}));  // same subscriber, another group
  CHECK_FALSE(tree.insert("a/#", "g1", Sub{3}));  // same group name, another filter
  CHECK_FALSE(tree.insert("a/+", "", Sub{1}));    // and a non-shared one
  CHECK(tree.size() == 5);

  Matched m = match(tree, "a/b");
  CHECK(m.keys == Keys{1});
  CHECK(m.groups == std::vector<std::vector<int>>{{1}, {1, 2}, {3}});

  // Replacing a member keeps the group's size.
  CHECK(tree.insert("a/+", "g1", Sub{2, 99}));
  CHECK(tree.size() == 5);
  int replaced_value = 0;
  tree.match(
      "a/b", [](const Sub&) {},
      [&](const Tree::Group& g) {
        for (const Sub& s : g.members) {
          if (s.key == 2) replaced_value = s.value;
        }
      });
  CHECK(replaced_value == 99);

  // Erasing a member leaves the rest of its group.
  CHECK(tree.erase("a/+", "g1", 1));
  CHECK(tree.size() == 4);
  m = match(tree, "a/b");
  CHECK(m.keys == Keys{1});
  CHECK(m.groups == std::vector<std::vector<int>>{{1}, {2}, {3}});
  CHECK_FALSE(tree.erase("a/+", "g1", 1));
  CHECK_FALSE(tree.erase("a/+", "g3", 2));

  // Erasing the last member removes the group.
  CHECK(tree.erase("a/+", "g1", 2));
  CHECK(tree.erase("a/+", "g2", 1));
  m = match(tree, "a/b");
  CHECK(m.groups == std::vector<std::vector<int>>{{3}});
  CHECK(m.keys == Keys{1});
  CHECK(tree.size() == 2);

  // A group with no members is never reported, and the group's round-robin cursor starts
  // at 0 for a new group.
  CHECK(tree.erase("a/#", "g1", 3));
  CHECK(match(tree, "a/b").groups.empty());
  tree.insert("a/#", "g1", Sub{4});
  std::uint32_t cursor = 1;
  std::string share;
  tree.match(
      "a", [](const Sub&) {},
      [&](const Tree::Group& g) {
        cursor = g.next.load();
        share = g.share;
      });
  CHECK(cursor == 0);
  // A group knows its full name (the cluster pairs groups of two trees by it).
  CHECK(share == "$share/g1/a/#");
}

TEST_CASE("subscription tree: matching equals topic::matches() on random filters and topics") {
  std::mt19937 rng(424242);  // fixed seed
  constexpr int kFilters = 200;
  constexpr int kTopics = 200;
  std::vector<std::string> filters;
  for (int i = 0; i < kFilters; ++i) {
    filters.push_back(random_filter(rng));
    REQUIRE(brokerha::topic::is_valid_filter(filters.back()));
  }
  std::vector<std::string> topics;
  for (int i = 0; i < kTopics; ++i) {
    topics.push_back(random_topic(rng));
    REQUIRE(brokerha::topic::is_valid_name(topics.back()));
  }
  // Some fixed ones that the alphabet makes likely but not certain.
  for (const char* f : {"#", "+", "+/+", "$SYS/#", "/#", "+/#", "a/#", "//"}) filters.push_back(f);
  for (const char* t : {"$SYS", "$SYS/a", "/", "//", "a", "a/", "$x/b/c/d"}) topics.push_back(t);

  Tree tree;
  std::vector<bool> present(filters.size(), false);
  for (std::size_t i = 0; i < filters.size(); ++i) {
    CHECK_FALSE(tree.insert(filters[i], "", Sub{static_cast<int>(i)}));
    present[i] = true;
  }
  CHECK(tree.size() == filters.size());

  auto compare_all = [&](const char* phase) {
    CAPTURE(phase);
    std::size_t matched_pairs = 0;
    for (const std::string& t : topics) {
      Keys expected;
      for (std::size_t i = 0; i < filters.size(); ++i) {
        if (present[i] && matches(filters[i], t)) expected.push_back(static_cast<int>(i));
      }
      matched_pairs += expected.size();
      const Keys got = keys(tree, t);
      if (got != expected) {
        std::string detail;
        for (int k : got) {
          if (!std::binary_search(expected.begin(), expected.end(), k)) {
            detail += " extra:" + filters[static_cast<std::size_t>(k)];
          }
        }
        for (int k : expected) {
          if (!std::binary_search(got.begin(), got.end(), k)) {
            detail += " missing:" + filters[static_cast<std::size_t>(k)];
          }
        }
        INFO("topic '" << t << "':" << detail);
        CHECK(got == expected);
      }
    }
    // The cross product is not trivially empty or full.
    CHECK(matched_pairs > topics.size());
    CHECK(matched_pairs < topics.size() * filters.size() / 2);
  };
  compare_all("all inserted");

  // Erase a random half (pruning as it goes) and compare again.
  for (std::size_t i = 0; i < filters.size(); ++i) {
    if (rng() % 2 == 0) {
      CHECK(tree.erase(filters[i], "", static_cast<int>(i)));
      present[i] = false;
    }
  }
  CHECK(tree.size() == static_cast<std::size_t>(std::count(present.begin(), present.end(), true)));
  compare_all("half erased");

  // Erase the rest: nothing matches and nothing is counted.
  for (std::size_t i = 0; i < filters.size(); ++i) {
    if (present[i]) CHECK(tree.erase(filters[i], "", static_cast<int>(i)));
    present[i] = false;
  }
  CHECK(tree.size() == 0);
  for (const std::string& t : topics) CHECK(keys(tree, t).empty());
}

TEST_CASE("subscription tree: random shared groups match like topic::matches()") {
  std::mt19937 rng(777);
  Tree tree;
  // filter -> group -> member keys
  std::map<std::pair<std::string, std::string>, std::set<int>> model;
  for (int i = 0; i < 300; ++i) {
    const std::string filter = random_filter(rng);
    const std::string group = "g" + std::to_string(rng() % 3);
    const int key = static_cast<int>(rng() % 10);
    const bool existed = model[{filter, group}].count(key) != 0;
    CHECK(tree.insert(filter, group, Sub{key}) == existed);
    model[{filter, group}].insert(key);
  }
  for (int i = 0; i < 100; ++i) {
    auto it = model.begin();
    std::advance(it, static_cast<long>(rng() % model.size()));
    if (it->second.empty()) continue;
    const int key = *it->second.begin();
    CHECK(tree.erase(it->first.first, it->first.second, key));
    it->second.erase(key);
  }
  std::size_t total = 0;
  for (const auto& entry : model) total += entry.second.size();
  CHECK(tree.size() == total);

  for (int i = 0; i < 200; ++i) {
    const std::string topic = random_topic(rng);
    std::vector<std::vector<int>> expected;
    for (const auto& [where, members] : model) {
      if (members.empty() || !matches(where.first, topic)) continue;
      expected.emplace_back(members.begin(), members.end());
    }
    std::sort(expected.begin(), expected.end());
    const Matched m = match(tree, topic);
    INFO("topic '" << topic << "'");
    CHECK(m.keys.empty());
    CHECK(m.groups == expected);
  }
}
