// SPDX-License-Identifier: Apache-2.0
// cluster::Claims as the peers' frames reach it, with a broker port that records what it is
// asked to do on its shards and a send function that records frames: the bounds on what a
// peer can make this node believe (claim versions too far ahead of the wall clock).

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "cluster/claims.hpp"

namespace {

namespace cluster = brokerha::cluster;
namespace registry = brokerha::registry;
namespace router = brokerha::router;
using cluster::Kind;
using namespace std::chrono_literals;

std::uint64_t wall_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

bool near_wall(std::uint64_t hlc) {
  const std::uint64_t ms = hlc >> 16;
  return ms + 5000 >= wall_ms() && ms <= wall_ms() + 5000;
}

struct Port : registry::BrokerPort {
  router::Router r{router::Router::Options{}};
  int shard_calls = 0;
  unsigned shard_count() const noexcept override { return 1; }
  unsigned home_shard(std::string_view) const noexcept override { return 0; }
  void on_shard(unsigned, std::function<void(registry::ShardAccess&)>) override { ++shard_calls; }
  router::Router& router() noexcept override { return r; }
  std::uint32_t max_packet_size() const noexcept override { return 1u << 20; }
};

struct Frame {
  std::string peer;
  Kind kind;
  std::string body;
};

struct Harness {
  Port port;
  asio::io_context ctx;
  std::vector<Frame> sent;
  cluster::Claims claims{port,
                         ctx,
                         "self",
                         50ms,
                         [this](const std::string& peer, Kind kind, std::string body) {
                           sent.push_back({peer, kind, std::move(body)});
                           return true;
                         },
                         [] {
                           return std::vector<cluster::Claims::PeerView>{{"arb", true, true, 3}};
                         }};

  std::vector<Frame> take(Kind kind) {
    std::vector<Frame> out;
    for (const Frame& f : sent) {
      if (f.kind == kind) out.push_back(f);
    }
    return out;
  }

  /// What this node's claims clock grants when asked to arbitrate now.
  std::uint64_t grant_now() {
    sent.clear();
    REQUIRE(claims.on_frame("arb", Kind::claim_request, cluster::encode_claim_request(900, "z")));
    const auto grants = take(Kind::claim_grant);
    REQUIRE(grants.size() == 1);
    std::uint64_t request = 0, hlc = 0;
    REQUIRE(cluster::decode_claim_grant(grants[0].body, request, hlc));
    return hlc;
  }
};

/// A client id that peer "arb" arbitrates (between "self" and "arb").
std::string id_arbitrated_by_arb() {
  const std::vector<std::string> members{"self", "arb"};
  for (int i = 0;; ++i) {
    std::string id = "c" + std::to_string(i);
    if (cluster::Claims::arbiter_of(id, members) == "arb") return id;
  }
}

}  // namespace

TEST_CASE("claims: a grant from far in the future is ignored and does not poison the clock") {
  Harness h;
  const std::string id = id_arbitrated_by_arb();
  h.claims.claim(id, false, 0, [](router::ClaimResult) {});
  const auto asked = h.take(Kind::claim_request);
  REQUIRE(asked.size() == 1);
  cluster::ClaimRequest req;
  REQUIRE(cluster::decode_claim_request(asked[0].body, req));
  h.sent.clear();

  // The arbiter answers with the largest reading. Before the bound the claim took it as its
  // version and the clock wrapped: every later grant of this node was 0.
  CHECK(h.claims.on_frame("arb", Kind::claim_grant,
                          cluster::encode_claim_grant(req.request, UINT64_MAX)));
  CHECK(h.take(Kind::take_request).empty());
  CHECK(h.claims.stats().clock_skew_refused == 1);

  // The claim is stamped here once the arbiter's bound passes, with a sane version.
  h.ctx.run_for(300ms);
  const auto takes = h.take(Kind::take_request);
  REQUIRE(takes.size() == 1);
  cluster::TakeRequest t;
  REQUIRE(cluster::decode_take_request(takes[0].body, t));
  CHECK(near_wall(t.version.hlc));
  CHECK(h.claims.stats().arbiter_timeouts == 1);
  CHECK(near_wall(h.grant_now()));
}

TEST_CASE("claims: a take_request from far in the future loses and takes nothing") {
  Harness h;
  cluster::TakeRequest t;
  t.request = 7;
  t.client_id = "victim";
  t.version = {(wall_ms() + 3'600'000) << 16, "arb"};
  t.resume = true;
  REQUIRE(h.claims.on_frame("arb", Kind::take_request, cluster::encode_take_request(t)));
  const auto replies = h.take(Kind::take_reply);
  REQUIRE(replies.size() == 1);
  cluster::TakeReply r;
  REQUIRE(cluster::decode_take_reply(replies[0].body, r));
  CHECK(r.request == 7);
  CHECK(r.outcome == cluster::TakeOutcome::newer_here);
  CHECK(h.port.shard_calls == 0);  // the session here was not touched
  CHECK(h.claims.stats().clock_skew_refused == 1);
  CHECK(near_wall(h.grant_now()));

  // Within the bound (and the bound is configurable) it is taken as before.
  h.claims.set_max_clock_skew(std::chrono::hours(2));
  h.sent.clear();
  REQUIRE(h.claims.on_frame("arb", Kind::take_request, cluster::encode_take_request(t)));
  CHECK(h.port.shard_calls == 1);
  CHECK(h.claims.stats().clock_skew_refused == 1);
}

TEST_CASE("claims: held claims and hand-offs from far in the future are refused") {
  Harness h;
  const cluster::ClaimVersion future{UINT64_MAX, "arb"};
  REQUIRE(h.claims.on_frame("arb", Kind::claims_held,
                            cluster::encode_claims_held({{"victim", future}})));
  CHECK(h.port.shard_calls == 0);  // nothing here yields to it
  REQUIRE(h.claims.on_frame("arb", Kind::session_handoff,
                            cluster::encode_session_handoff({5, "victim", future})));
  CHECK(h.port.shard_calls == 0);
  const auto acks = h.take(Kind::take_ack);
  REQUIRE(acks.size() == 1);
  cluster::TakeAck a;
  REQUIRE(cluster::decode_take_ack(acks[0].body, a));
  CHECK(a.request == 5);
  CHECK_FALSE(a.ok);  // the sender keeps the session
  CHECK(h.claims.stats().clock_skew_refused == 2);
  CHECK(near_wall(h.grant_now()));
}

namespace {

std::string moved_reply(std::uint64_t request, std::string_view id, const cluster::ClaimVersion& v,
                        cluster::TakeOutcome outcome) {
  cluster::TakeReply r;
  r.request = request;
  r.client_id = id;
  r.version = v;
  r.outcome = outcome;
  if (outcome == cluster::TakeOutcome::moved) r.session = "session bytes";
  return cluster::encode_take_reply(r);
}

}  // namespace

TEST_CASE("claims: a take_reply to no open request is dropped and counted") {
  Harness h;
  const cluster::ClaimVersion v{1, "self"};
  // Before, a session in an unsolicited reply was installed here as an offline session.
  REQUIRE(h.claims.on_frame("arb", Kind::take_reply,
                            moved_reply(42, "victim", v, cluster::TakeOutcome::moved)));
  CHECK(h.port.shard_calls == 0);
  CHECK(h.claims.stats().sessions_moved_in == 0);
  CHECK(h.claims.stats().unsolicited == 1);
  // In parts: dropped too, and the sender is told to keep its copy.
  REQUIRE(h.claims.on_frame("arb", Kind::session_part, cluster::encode_session_part(43, "abc")));
  REQUIRE(h.claims.on_frame("arb", Kind::take_reply,
                            moved_reply(43, "victim", v, cluster::TakeOutcome::moved_in_parts)));
  CHECK(h.port.shard_calls == 0);
  CHECK(h.claims.stats().unsolicited == 2);
  const auto acks = h.take(Kind::take_ack);
  REQUIRE(acks.size() == 1);
  cluster::TakeAck a;
  REQUIRE(cluster::decode_take_ack(acks[0].body, a));
  CHECK(a.request == 43);
  CHECK_FALSE(a.ok);
}

TEST_CASE("claims: a late take_reply after the claim went ahead is still taken, once") {
  Harness h;
  std::string id;
  for (int i = 0;; ++i) {
    id = "late" + std::to_string(i);
    if (cluster::Claims::arbiter_of(id, {"self", "arb"}) == "self") break;
  }
  h.claims.claim(id, true, 0, [](router::ClaimResult) {});
  const auto takes = h.take(Kind::take_request);
  REQUIRE(takes.size() == 1);
  cluster::TakeRequest t;
  REQUIRE(cluster::decode_take_request(takes[0].body, t));
  h.ctx.run_for(300ms);  // "arb" does not answer: the claim goes ahead at the bound
  REQUIRE(h.claims.stats().take_timeouts == 1);
  const int after_finish = h.port.shard_calls;
  const std::string reply = moved_reply(t.request, id, t.version, cluster::TakeOutcome::moved);
  REQUIRE(h.claims.on_frame("arb", Kind::take_reply, reply));
  CHECK(h.port.shard_calls == after_finish + 1);  // its session installed here, offline
  CHECK(h.claims.stats().unsolicited == 0);
  // The same answer again answers nothing open any more.
  REQUIRE(h.claims.on_frame("arb", Kind::take_reply, reply));
  CHECK(h.port.shard_calls == after_finish + 1);
  CHECK(h.claims.stats().unsolicited == 1);
}

TEST_CASE("claims: a session arriving in parts keeps the claim waiting while the parts come") {
  // A large session moving in parts can take longer than the claim's bound (2 x 50 ms here):
  // before, the claim went ahead at the bound with a fresh session (session present 0) while
  // the parts were still arriving. The bound now counts silence: each part renews it.
  Harness h;
  const std::string id = id_arbitrated_by_arb();
  h.claims.claim(id, true, 0, [](router::ClaimResult) {});
  const auto asked = h.take(Kind::claim_request);
  REQUIRE(asked.size() == 1);
  cluster::ClaimRequest req;
  REQUIRE(cluster::decode_claim_request(asked[0].body, req));
  const std::uint64_t stamp = wall_ms() << 16;
  REQUIRE(
      h.claims.on_frame("arb", Kind::claim_grant, cluster::encode_claim_grant(req.request, stamp)));
  const auto takes = h.take(Kind::take_request);
  REQUIRE(takes.size() == 1);
  cluster::TakeRequest t;
  REQUIRE(cluster::decode_take_request(takes[0].body, t));
  for (int i = 0; i < 6; ++i) {  // 6 x 70 ms = 420 ms, a part every 70 ms
    h.ctx.run_for(70ms);
    REQUIRE(h.claims.on_frame("arb", Kind::session_part,
                              cluster::encode_session_part(t.request, std::string(10, 'x'))));
  }
  CHECK(h.claims.stats().take_timeouts == 0);
  CHECK(h.port.shard_calls == 0);  // still waiting: nothing handed to the shard

  // Silence: the bound runs out again, and the claim goes ahead.
  h.ctx.run_for(300ms);
  CHECK(h.claims.stats().take_timeouts == 1);
  CHECK(h.port.shard_calls == 1);
}
