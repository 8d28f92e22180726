// SPDX-License-Identifier: Apache-2.0
// router::Router as pure code: a message in, deliveries (per target shard) and remote sends
// out. Matching, the merge of a session's overlapping subscriptions, shared-group picks on
// one node and across nodes, remote targets, retained writes going to every peer, $SYS staying
// local, and what a node does with a message another node chose it for.

#include "router/router.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace router = brokerha::router;
namespace session = brokerha::session;
namespace message = brokerha::message;
using router::Outbox;
using router::Router;
using session::ClientSession;
using session::ClientSessionPtr;

message::MessagePtr msg(std::string topic, std::uint8_t qos = 1, bool retain = false,
                        std::string origin = "publisher", std::string payload = "p") {
  auto m = std::make_shared<message::Message>();
  m->topic = std::move(topic);
  m->payload = std::move(payload);
  m->qos = qos;
  m->retain = retain;
  m->origin = std::move(origin);
  return m;
}

session::SubscriptionOptions opts(std::uint8_t qos, std::uint32_t id = 0, bool no_local = false,
                                  bool rap = false) {
  session::SubscriptionOptions o;
  o.qos = qos;
  o.identifier = id;
  o.no_local = no_local;
  o.retain_as_published = rap;
  return o;
}

Router::Options clustered() {
  Router::Options o;
  o.clustered = true;
  o.node_name = "n1";
  return o;
}

// The deliveries in `out`, by client id, taken out of the outbox.
std::map<std::string, session::Delivery> taken(Outbox& out) {
  std::map<std::string, session::Delivery> by_id;
  for (auto& per_shard : out.deliveries) {
    for (auto& t : per_shard) {
      CHECK(by_id.count(t.session->state.client_id()) == 0);  // one delivery per session
      by_id[t.session->state.client_id()] = std::move(t.delivery);
    }
    per_shard.clear();
  }
  return by_id;
}

}  // namespace

TEST_CASE("router: a message reaches the sessions whose filters match, on their shards") {
  Router r({});
  Outbox out(2);
  auto a = std::make_shared<ClientSession>("a", 0);
  auto b = std::make_shared<ClientSession>("b", 1);
  auto c = std::make_shared<ClientSession>("c", 1);
  r.routes().subscribe(a, "x/+", opts(1), nullptr);
  r.routes().subscribe(b, "x/#", opts(0), nullptr);
  r.routes().subscribe(c, "y", opts(1), nullptr);
  const auto result = r.route(msg("x/1"), out);
  CHECK(result.targets == 2);
  CHECK(result.remote == 0);
  CHECK(out.deliveries[0].size() == 1);
  CHECK(out.deliveries[1].size() == 1);
  const auto d = taken(out);
  CHECK(d.at("a").qos == 1);
  CHECK(d.at("b").qos == 0);  // granted QoS is the lower of message and subscription
  CHECK(d.count("c") == 0);
  CHECK(out.remote.empty());  // a single node has no remote targets
}

TEST_CASE("router: overlapping subscriptions of one session make one delivery, merged") {
  Router r({});
  Outbox out(1);
  auto s = std::make_shared<ClientSession>("s", 0);
  r.routes().subscribe(s, "a/+", opts(0, 7), nullptr);
  r.routes().subscribe(s, "a/#", opts(2, 9, false, true), nullptr);
  r.routes().subscribe(s, "#", opts(1), nullptr);
  const auto result = r.route(msg("a/b", 2, true), out);
  CHECK(result.targets == 1);
  const auto d = taken(out);
  const auto& got = d.at("s");
  CHECK(got.qos == 2);  // the highest granted
  CHECK(got.retain);    // one of them is retain-as-published
  auto ids = got.subscription_ids;
  std::sort(ids.begin(), ids.end());
  CHECK(ids == std::vector<std::uint32_t>{7, 9});  // every identifier (MQTT 5.0 3.3.4)
}

TEST_CASE("router: no-local keeps a client's own messages from it") {
  Router r({});
  Outbox out(1);
  auto self = std::make_shared<ClientSession>("me", 0);
  auto other = std::make_shared<ClientSession>("other", 0);
  r.routes().subscribe(self, "t", opts(1, 0, true), nullptr);
  r.routes().subscribe(other, "t", opts(1, 0, true), nullptr);
  CHECK(r.route(msg("t", 1, false, "me"), out).targets == 1);
  CHECK(taken(out).count("other") == 1);
}

TEST_CASE("router: $-topics are not matched by wildcards at the first level") {
  Router r({});
  Outbox out(1);
  auto s = std::make_shared<ClientSession>("s", 0);
  r.routes().subscribe(s, "#", opts(0), nullptr);
  CHECK(r.route(msg("$SYS/broker/uptime", 0), out).targets == 0);
  r.routes().subscribe(s, "$SYS/#", opts(0), nullptr);
  CHECK(r.route(msg("$SYS/broker/uptime", 0), out).targets == 1);
}

TEST_CASE("router: a shared group's messages go to its members in turn, one each") {
  Router r({});
  Outbox out(1);
  std::vector<ClientSessionPtr> members;
  for (const char* id : {"m1", "m2", "m3"}) {
    members.push_back(std::make_shared<ClientSession>(id, 0));
    r.routes().subscribe(members.back(), "$share/g/jobs/+", opts(1), nullptr);
  }
  std::map<std::string, int> got;
  for (int i = 0; i < 9; ++i) {
    CHECK(r.route(msg("jobs/x"), out).targets == 1);
    for (const auto& [id, d] : taken(out)) ++got[id];
  }
  CHECK(got == std::map<std::string, int>{{"m1", 3}, {"m2", 3}, {"m3", 3}});
}

TEST_CASE("router: remote targets are the peers that announced a matching filter") {
  Router r(clustered());
  Outbox out(1);
  r.peer_count = 3;
  r.routes().remote_add(1, "a/#");
  r.routes().remote_add(2, "a/b");
  r.routes().remote_add(2, "+/b");  // two matching filters, one peer
  r.routes().remote_add(3, "z");
  const auto result = r.route(msg("a/b"), out);
  CHECK(result.remote == 2);
  REQUIRE(out.remote.size() == 1);
  CHECK(out.remote[0].peers == std::vector<std::uint32_t>{1, 2});
  CHECK_FALSE(out.remote[0].all);
  CHECK_FALSE(out.remote[0].version);
  out.remote.clear();
  // Nobody else subscribes: nothing leaves the node.
  CHECK(r.route(msg("q"), out).remote == 0);
  CHECK(out.remote.empty());
  // A withdrawn route is gone.
  r.routes().remote_remove(3, "z");
  CHECK(r.route(msg("z"), out).remote == 0);
}

TEST_CASE("router: a retained write goes to every peer with its version, $SYS stays here") {
  Router r(clustered());
  Outbox out(1);
  r.peer_count = 2;
  const auto result = r.route(msg("cfg/x", 1, true), out);
  CHECK(result.remote == 2);
  REQUIRE(out.remote.size() == 1);
  CHECK(out.remote[0].all);
  REQUIRE(out.remote[0].version);
  CHECK(out.remote[0].version->node == "n1");
  CHECK(r.retained_count() == 1);
  out.remote.clear();
  r.routes().remote_add(1, "#");
  r.routes().remote_add(1, "$SYS/#");
  CHECK(r.route(msg("$SYS/broker/uptime", 0, true), out).remote == 0);
  CHECK(out.remote.empty());
}

TEST_CASE("router: a group with members here and on other nodes picks one slot per message") {
  Router r(clustered());
  Outbox out(1);
  r.peer_count = 2;
  auto local = std::make_shared<ClientSession>("local", 0);
  r.routes().subscribe(local, "$share/g/w", opts(1), nullptr);
  r.routes().remote_add(7, "$share/g/w");
  r.routes().remote_add(9, "$share/g/w");
  int here = 0;
  std::map<std::uint32_t, int> there;
  for (int i = 0; i < 30; ++i) {
    const auto result = r.route(msg("w"), out);
    here += static_cast<int>(result.targets);
    CHECK(result.targets + out.remote.size() == 1);  // exactly one slot
    for (const auto& send : out.remote) {
      REQUIRE(send.shared.size() == 1);
      CHECK(send.shared[0].filter == "$share/g/w");
      CHECK(send.peers == std::vector<std::uint32_t>{send.shared[0].peer});
      ++there[send.shared[0].peer];
    }
    out.remote.clear();
    taken(out);
  }
  CHECK(here == 10);
  CHECK(there == std::map<std::uint32_t, int>{{7, 10}, {9, 10}});
}

TEST_CASE("router: a message from another node reaches only the groups it was chosen for") {
  Router r(clustered());
  Outbox out(1);
  auto plain = std::make_shared<ClientSession>("plain", 0);
  auto member = std::make_shared<ClientSession>("member", 0);
  r.routes().subscribe(plain, "w", opts(1), nullptr);
  r.routes().subscribe(member, "$share/g/w", opts(1), nullptr);
  // Forwarded for the plain subscriber only: the group does not get it.
  auto result = r.route_from_cluster(msg("w"), std::nullopt, {}, out);
  CHECK(result.targets == 1);
  CHECK(taken(out).count("member") == 0);
  // Chosen for g: the member gets it too; a group named but absent here is counted as missed.
  result = r.route_from_cluster(msg("w"), std::nullopt, {"$share/g/w", "$share/gone/w"}, out);
  CHECK(result.targets == 2);
  CHECK(result.shared_missed == 1);
  CHECK(taken(out).count("member") == 1);
  // Never forwarded again.
  CHECK(out.remote.empty());
}

TEST_CASE("router: a replicated retained write is kept only when newer") {
  Router r(clustered());
  Outbox out(1);
  r.route_from_cluster(msg("r", 0, true, "x", "new"), brokerha::hlc::Version{200, "n2"}, {}, out);
  r.route_from_cluster(msg("r", 0, true, "x", "old"), brokerha::hlc::Version{100, "n3"}, {}, out);
  const auto held = r.retained_matching("r");
  REQUIRE(held.size() == 1);
  CHECK(held[0]->payload == "new");
}

TEST_CASE(
    "router: route changes: a filter is announced on its first subscriber, withdrawn on its last") {
  Router r(clustered());
  auto a = std::make_shared<ClientSession>("a", 0);
  auto b = std::make_shared<ClientSession>("b", 0);
  std::vector<std::string> changes;
  r.routes().subscribe(a, "f/#", opts(0), &changes);
  r.routes().subscribe(b, "f/#", opts(0), &changes);
  r.routes().subscribe(a, "$share/g/f/#", opts(0), &changes);
  CHECK(changes == std::vector<std::string>{"f/#", "$share/g/f/#"});
  CHECK(r.routes().local_filter_present("f/#"));
  changes.clear();
  CHECK(r.routes().unsubscribe(*a, "f/#", &changes));
  CHECK(changes.empty());  // b still subscribes
  CHECK(r.routes().unsubscribe(*b, "f/#", &changes));
  CHECK(changes == std::vector<std::string>{"f/#"});
  CHECK_FALSE(r.routes().local_filter_present("f/#"));
  CHECK(r.routes().local_filters() == std::vector<std::string>{"$share/g/f/#"});
}

TEST_CASE("router: a moved session's trail takes its place, then stops counting for the routes") {
  Router r(clustered());
  Outbox out(1);
  auto s = std::make_shared<ClientSession>("mover", 0);
  s->state.subscriptions()["a/#"] = opts(1);
  s->state.subscriptions()["$share/g/b"] = opts(1);
  std::vector<std::string> changes;
  for (const auto& [f, o] : s->state.subscriptions()) r.routes().subscribe(s, f, o, &changes);
  CHECK(changes.size() == 2);
  changes.clear();

  // The trail holds the plain filter in the session's place: one delivery, to the trail.
  auto t = std::make_shared<ClientSession>("mover", 0);
  t->state.subscriptions()["a/#"] = opts(1);
  r.routes().hand_over(*s, t);
  r.routes().unsubscribe_all(*s, &changes);  // the session leaves: its shared group only
  CHECK(changes == std::vector<std::string>{"$share/g/b"});
  changes.clear();
  CHECK(r.routes().local_filter_present("a/#"));
  r.route(msg("a/x"), out);
  auto got = taken(out);
  REQUIRE(got.size() == 1);
  REQUIRE(out.deliveries[0].empty());
  CHECK(r.routes().size() == 1);

  // Uncounted: the filter is no longer announced, yet messages still reach the trail.
  r.routes().uncount_all(*t, &changes);
  CHECK(changes == std::vector<std::string>{"a/#"});
  CHECK_FALSE(r.routes().local_filter_present("a/#"));
  r.route(msg("a/y"), out);
  CHECK(taken(out).size() == 1);
  // Removing it changes no count (another subscriber of the filter keeps its route).
  auto other = std::make_shared<ClientSession>("other", 0);
  changes.clear();
  r.routes().subscribe(other, "a/#", opts(1), &changes);
  CHECK(changes == std::vector<std::string>{"a/#"});
  changes.clear();
  r.routes().unsubscribe_all(*t, &changes);
  CHECK(changes.empty());
  CHECK(r.routes().local_filter_present("a/#"));
}
