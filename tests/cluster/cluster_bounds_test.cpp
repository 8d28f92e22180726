// SPDX-License-Identifier: Apache-2.0
// What a member can make another believe (docs/security.md, "Between members"): answers to no
// open request (route acknowledgements, retained entries) are dropped and counted, and
// retained versions far in the future are refused. In-process brokers on loopback; the
// misbehaving member's frames are handed to a node with brokerha::testing::inject_cluster_frame.

#include <brokerha/broker.hpp>
#include <brokerha/options.hpp>
#include <brokerha/testing.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "cluster/protocol.hpp"
#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"
#include "support/cluster_fixture.hpp"

namespace {

using namespace std::chrono_literals;
using namespace brokerha::test::cluster;
using brokerha::test::wait_until;
namespace cl = brokerha::cluster;

std::uint8_t kind(cl::Kind k) { return static_cast<std::uint8_t>(k); }

/// A retained_entries body of one live entry.
std::string entries_body(const std::string& topic, const std::string& payload, std::uint64_t hlc,
                         const std::string& node) {
  auto m = std::make_shared<brokerha::message::Message>();
  m->topic = topic;
  m->payload = payload;
  m->retain = true;
  brokerha::retained::Store::Entry e;
  e.message = m;
  e.version = {hlc, node};
  std::string body;
  cl::begin_retained(body);
  cl::append_retained(body, topic, e, brokerha::message::Message::Clock::now());
  cl::finish_retained(body, 1);
  return body;
}

std::uint64_t wall_hlc(std::chrono::milliseconds ahead) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch() + ahead)
                      .count();
  return static_cast<std::uint64_t>(ms) << 16;
}

}  // namespace

TEST_CASE("cluster bounds: a route acknowledgement for a number never sent is dropped") {
  // Before, n1 took n2's acknowledgement of route number 1,000,000 as is: no later SUBACK
  // waited for n2 (its acknowledged number was already past every announcement), so a publish
  // on n2 right after a SUBACK on n1 could miss the subscriber.
  TestCluster c(2, {}, true);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  brokerha::testing::inject_cluster_frame(c[0], "n2", kind(cl::Kind::routes_ack),
                                          cl::encode_u64(1'000'000));
  REQUIRE(wait_until([&] { return c[0].cluster().unsolicited_refused == 1; }, 5s));

  // n2's acknowledgements held back (a partition): the SUBACK waits for n2 up to the bound.
  auto sub = publisher(c.port(0), "sub");
  const auto timeouts = c[0].cluster().route_ack_timeouts;
  brokerha::testing::set_cluster_partition(c[0], c.address(1), true);
  brokerha::testing::set_cluster_partition(c[1], c.address(0), true);
  REQUIRE(sub->subscribe("bounds/#", 1));
  brokerha::testing::set_cluster_partition(c[0], c.address(1), false);
  brokerha::testing::set_cluster_partition(c[1], c.address(0), false);
  CHECK(c[0].cluster().route_ack_timeouts == timeouts + 1);
}

TEST_CASE("cluster bounds: retained entries no request asked for are dropped") {
  TestCluster c(2);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  REQUIRE(wait_until([&] { return c[0].cluster().retained_synced; }, 10s));
  // From a peer this node asked nothing of: not stored, counted.
  brokerha::testing::inject_cluster_frame(c[0], "ghost", kind(cl::Kind::retained_entries),
                                          entries_body("bounds/r", "x", wall_hlc(0ms), "ghost"));
  REQUIRE(wait_until([&] { return c[0].cluster().unsolicited_refused == 1; }, 5s));
  CHECK(c[0].retained().empty());
  // From the peer it exchanges digests with (a repair answer): stored, as before.
  brokerha::testing::inject_cluster_frame(c[0], "n2", kind(cl::Kind::retained_entries),
                                          entries_body("bounds/r", "y", wall_hlc(0ms), "n2"));
  CHECK(wait_until([&] { return c[0].cluster().retained_applied >= 1; }, 5s));
  CHECK(c[0].cluster().unsolicited_refused == 1);
}

TEST_CASE("cluster bounds: a retained entry far in the future is refused and counted") {
  TestCluster c(2);
  REQUIRE_MESSAGE(wait_until([&] { return c.formed(); }, kFormTimeout), describe(c));
  REQUIRE(wait_until([&] { return c[0].cluster().retained_synced; }, 10s));
  brokerha::testing::inject_cluster_frame(c[0], "n2", kind(cl::Kind::retained_entries),
                                          entries_body("bounds/f", "x", UINT64_MAX, "n2"));
  REQUIRE(wait_until([&] { return c[0].cluster().clock_skew_refused == 1; }, 5s));
  CHECK(c[0].cluster().retained_applied == 0);
  // The topic is still writable, on n1 and (replicated) on n2.
  auto pub = publisher(c.port(0), "pub");
  REQUIRE(pub->publish(brokerha::test::make_publish("bounds/f", "now", 1, true)));
  auto holds_now = [&](std::size_t i) {
    const auto r = c[i].retained("bounds/f");
    return r.size() == 1 && r[0].payload == "now";
  };
  CHECK(wait_until([&] { return holds_now(0) && holds_now(1); }, 5s));
}
