// SPDX-License-Identifier: Apache-2.0
// Topic names, topic filters, shared subscriptions and matching (MQTT 5.0 section 4.7 and 4.8.2,
// MQTT 3.1.1 section 4.7), with the specification's examples.

#include "topic/topic.hpp"

#include <doctest/doctest.h>

#include <string>
#include <string_view>

namespace topic = brokerha::topic;

namespace {

struct MatchRow {
  const char* filter;
  const char* topic;
  bool matches;
};

// Spec examples first (MQTT 5.0 sections 4.7.1.2, 4.7.1.3 and 4.7.2), then edge cases.
const MatchRow kMatchRows[] = {
    // Multi-level wildcard.
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/tennis/player1/#", "sport/tennis/player2", false},
    {"sport/tennis/player1/#", "sport/tennis", false},
    {"sport/#", "sport", true},  // "#" also matches the parent level
    {"sport/tennis/#", "sport/tennis", true},
    {"#", "sport/tennis/player1", true},
    {"#", "sport", true},
    {"#", "/", true},
    {"a/#", "a", true},
    {"a/#", "a/", true},
    {"a/#", "ab", false},
    {"a/b/#", "a", false},
    {"+/#", "a", true},
    {"a/+/#", "a/b", true},
    // Single-level wildcard.
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},  // "+" matches an empty level
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    {"+/tennis/#", "sport/tennis/player1", true},
    {"sport/+/player1", "sport/tennis/player1", true},
    {"sport/+/player1", "sport/tennis/player2", false},
    {"+", "sport", true},
    {"+", "/", false},
    {"+/+", "/", true},
    {"a/+/b", "a//b", true},
    {"+/b", "/b", true},
    {"a/+/+", "a/b", false},
    // Topics beginning with '$'.
    {"#", "$SYS/x", false},
    {"#", "$SYS", false},
    {"+/monitor/Clients", "$SYS/monitor/Clients", false},
    {"+/#", "$SYS/x", false},
    {"+", "$SYS", false},
    {"$SYS/#", "$SYS/monitor/Clients", true},
    {"$SYS/#", "$SYS/x", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    {"$SYS/x", "$SYS/x", true},
    {"+/$SYS", "a/$SYS", true},  // only the first character of the topic counts
    {"#", "a/$b", true},
    {"$foo", "$foo", true},
    // Exact levels.
    {"a/b", "a/b", true},
    {"a/b", "a/c", false},
    {"a/b", "a/b/", false},
    {"a/b/", "a/b/", true},
    {"a/b", "a", false},
    {"a", "a/b", false},
    {"a", "ab", false},
    {"ab", "a", false},
    {"a/b/c", "a/b/c/d", false},
    {"/", "/", true},
    {"//", "//", true},
    {"a//b", "a//b", true},
    {"a//b", "a/b", false},
    {"ACCOUNTS", "Accounts", false},  // case sensitive
    {"Sport", "sport", false},
    {"caf\xC3\xA9/+", "caf\xC3\xA9/menu", true},
    {"caf\xC3\xA9/+", "cafe/menu", false},
    {" /+", " /x", true},  // a space is an ordinary character
};

struct ValidRow {
  const char* text;
  bool valid;
};

}  // namespace

TEST_CASE("topic matches follows the specification examples") {
  int rows = 0;
  for (const MatchRow& row : kMatchRows) {
    INFO("filter " << std::string(row.filter) << " topic " << std::string(row.topic));
    ++rows;
    REQUIRE(topic::is_valid_filter(row.filter));
    REQUIRE(topic::is_valid_name(row.topic));
    CHECK(topic::matches(row.filter, row.topic) == row.matches);
  }
  CHECK(rows >= 40);
}

TEST_CASE("topic matches a filter without wildcards only by equality") {
  const char* const names[] = {"a", "a/b", "/", "a/", "/a", "a//b", "$SYS/x", "x y/z"};
  for (const char* filter : names) {
    for (const char* name : names) {
      INFO("filter " << std::string(filter) << " topic " << std::string(name));
      CHECK(topic::matches(filter, name) == (std::string_view(filter) == name));
    }
  }
}

TEST_CASE("topic is_valid_name") {
  const ValidRow rows[] = {
      {"a", true},
      {"/", true},
      {"//", true},
      {"a/b", true},
      {"/finance", true},
      {"sport/tennis/player1", true},
      {"$SYS/monitor/Clients", true},
      {"$share/g/a", true},  // a name, not a subscription
      {" ", true},
      {"a b", true},
      {"caf\xC3\xA9", true},
      {"", false},
      {"+", false},
      {"#", false},
      {"a/+", false},
      {"a/#", false},
      {"a#", false},
      {"sport+", false},
      {"a/#/b", false},
      {"+/a", false},
  };
  for (const ValidRow& row : rows) {
    INFO("name " << std::string(row.text));
    CHECK(topic::is_valid_name(row.text) == row.valid);
  }
}

TEST_CASE("topic is_valid_filter") {
  const ValidRow rows[] = {
      {"#", true},
      {"+", true},
      {"sport/#", true},
      {"sport/tennis/#", true},
      {"sport/tennis/player1/#", true},
      {"+/tennis/#", true},
      {"sport/+/player1", true},
      {"sport/+", true},
      {"/+", true},
      {"+/+", true},
      {"/#", true},
      {"+/#", true},
      {"a//b", true},
      {"/", true},
      {"a/b", true},
      {"$SYS/#", true},
      {"$share", true},       // no '/' after it: an ordinary filter
      {"$sharex/g/a", true},  // not the "$share/" prefix
      {"$SHARE/g/a", true},   // case sensitive: not shared either
      {"$share/g/a", true},
      {"$share/g/#", true},
      {"$share/g/+/b", true},
      {"$share/consumer1/sport/tennis/+", true},
      {"$share/g//", true},
      {"", false},
      {"sport/tennis#", false},
      {"sport/tennis/#/ranking", false},
      {"sport+", false},
      {"a/b#", false},
      {"a/#/b", false},
      {"a+", false},
      {"+a", false},
      {"++", false},
      {"##", false},
      {"+#", false},
      {"#/", false},
      {"#/a", false},
      {"a/+b/c", false},
      {"$share/", false},
      {"$share/g", false},
      {"$share/g/", false},
      {"$share//a", false},
      {"$share/g+/a", false},
      {"$share/g#/a", false},
      {"$share/#/a", false},
      {"$share/+/a", false},
      {"$share/g/a#", false},
      {"$share/g/a/#/b", false},
  };
  for (const ValidRow& row : rows) {
    INFO("filter " << std::string(row.text));
    CHECK(topic::is_valid_filter(row.text) == row.valid);
  }
}

TEST_CASE("topic has_wildcard") {
  const ValidRow rows[] = {
      {"#", true},   {"+", true},          {"a/+", true},         {"a/#", true},
      {"+/b", true}, {"$share/g/#", true}, {"a/b", false},        {"a", false},
      {"/", false},  {"$SYS/x", false},    {"$share/g/a", false},
  };
  for (const ValidRow& row : rows) {
    INFO("filter " << std::string(row.text));
    CHECK(topic::has_wildcard(row.text) == row.valid);
  }
}

TEST_CASE("topic parse_shared splits group and filter") {
  struct Row {
    const char* text;
    bool shared;
    const char* group;
    const char* filter;
  };
  const Row rows[] = {
      {"$share/g/a/b", true, "g", "a/b"},
      {"$share/consumer1/sport/tennis/+", true, "consumer1", "sport/tennis/+"},
      {"$share/grp/#", true, "grp", "#"},
      {"$share/g", true, "g", ""},
      {"$share/g/", true, "g", ""},
      {"$share//a", true, "", "a"},
      {"$share/", true, "", ""},
      {"$share", false, "", ""},
      {"$SHARE/g/a", false, "", ""},
      {"$sharex/g/a", false, "", ""},
      {"a/$share/g/b", false, "", ""},
      {"", false, "", ""},
  };
  for (const Row& row : rows) {
    INFO("filter " << std::string(row.text));
    topic::SharedFilter out;
    const bool shared = topic::parse_shared(row.text, out);
    CHECK(shared == row.shared);
    if (shared) {
      CHECK(out.group == row.group);
      CHECK(out.filter == row.filter);
    }
  }
  // The parts are views into the input.
  const std::string text = "$share/g/x/y";
  topic::SharedFilter out;
  REQUIRE(topic::parse_shared(text, out));
  CHECK(out.group.data() == text.data() + 7);
  CHECK(out.filter.data() == text.data() + 9);
}
