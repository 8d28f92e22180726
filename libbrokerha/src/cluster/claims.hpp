// SPDX-License-Identifier: Apache-2.0
#pragma once
// Cluster-wide client ids (docs/cluster.md): a client id is held by one node at a
// time, and a client that connects to node B with an id held on node A takes it over (A
// closes the old connection with v5 DISCONNECT 0x8E and, when the client resumes, hands its
// session over to B before B answers CONNACK).
//
// Protocol (frame kinds 10..14, docs/cluster-protocol.md):
//  1. B asks the id's arbiter — the alive member with the highest rendezvous hash of (member,
//     id), B included — to stamp the claim (claim_request); the arbiter answers with a reading
//     of its hybrid logical clock (claim_grant). The claim's version is (that reading, B).
//     Claims stamped by one arbiter are ordered as they reached it; every node orders claims
//     by version, so concurrent claims end with exactly one winner: the newest.
//  2. B sends take_request to every connected peer, and to every other alive member when
//     its link comes up (within the bound below). A peer that holds or is making a newer
//     claim answers newer_here (B's connect loses: CONNACK 0x89); otherwise it closes the
//     connection, moves (resume) or ends (clean start) the session and answers take_reply.
//  3. After every reply (or the bound: twice the route ack timeout of silence, renewed by each
//     slice of a session on its way, 20 timeouts at most), B's home shard installs
//     the moved session and attaches the connection.
//  When the arbiter is unreachable B stamps the claim itself after the bound, so during a
//  partition each side arbitrates for itself. When a link comes (back) up each side sends
//  claims_held (the ids it holds with their versions) and the older holder of an id yields:
//  the newer claim wins when the partition heals.
//
// Threads: everything here runs on the cluster's control thread; session work is posted to
// the id's home shard (registry::SessionRegistry::take and friends) and its answer posted back.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/protocol.hpp"
#include "io/asio.hpp"
#include "registry/broker_port.hpp"
#include "retained/store.hpp"
#include "router/cluster_port.hpp"

namespace brokerha::cluster {

struct ClaimStats {
  std::uint64_t claims = 0;             // local connects that claimed an id
  std::uint64_t claims_lost = 0;        // ... and lost to a newer claim
  std::uint64_t arbiter_timeouts = 0;   // stamped locally: the arbiter did not answer in time
  std::uint64_t take_timeouts = 0;      // went ahead without every peer's answer
  std::uint64_t sessions_moved_in = 0;  // sessions received from peers
  std::uint64_t sessions_moved_out = 0;
  std::uint64_t taken_over = 0;          // local sessions ended or moved for a claim elsewhere
  std::uint64_t moves_refused = 0;       // moved sessions the link could not carry (kept here)
  std::uint64_t moves_restored = 0;      // moved sessions given back to this node's shard
  std::uint64_t clock_skew_refused = 0;  // claim versions too far ahead of the wall clock
  std::uint64_t unsolicited = 0;         // take replies to no request of this node: dropped
};

class Claims {
 public:
  /// A peer as the claims see it.
  struct PeerView {
    std::string name;
    bool member = false;     // alive or suspect
    bool up = false;         // link connected
    std::uint8_t proto = 1;  // cluster protocol version spoken with it
    /// Its link is down but expected: it (re)joined (a restart, a healed partition) and its
    /// link has not come up since. A member whose link went down is not: it may be dying.
    bool coming = false;
  };
  /// Queues a frame for `peer` (ordered, flow-controlled); false when it cannot be sent at all.
  using Send = std::function<bool(const std::string& peer, Kind kind, std::string body)>;
  using Peers = std::function<std::vector<PeerView>()>;

  /// `timeout` bounds the wait for the arbiter; the wait for the peers' answers is twice that.
  Claims(registry::BrokerPort& core, asio::io_context& ctx, std::string self,
         std::chrono::milliseconds timeout, Send send, Peers peers);
  Claims(const Claims&) = delete;
  Claims& operator=(const Claims&) = delete;

  // Control thread.
  void claim(std::string client_id, bool resume, unsigned shard,
             std::function<void(router::ClaimResult)> done);
  /// Frames of kinds claim_request..claims_held; false when the body is malformed.
  bool on_frame(const std::string& peer, Kind kind, std::string_view body);
  void on_up(const std::string& peer);
  void on_down(const std::string& peer);
  /// `peer` restarted or was forgotten: sessions moving to it that it did not acknowledge
  /// are given back to their shards here, and its partial transfers dropped.
  void on_gone(const std::string& peer);
  /// Drops pending claims (their connections are being closed by the broker's stop).
  void stop();

  /// Drain: every session without a client is handed to the peer (of version 2) that would
  /// arbitrate its id once this node is gone; hand_offs_pending() counts those not yet
  /// acknowledged. A session no peer takes stays here.
  void hand_off_all();
  /// Any thread: true once hand_off_all() has gathered and sent every session and each was
  /// answered (or its peer is gone).
  bool hand_offs_done() const { return hand_offs_sent_.load() && hand_offs_pending_.load() == 0; }

  /// cluster.max_clock_skew: a claim version further ahead of this node's wall clock is
  /// refused (counted in ClaimStats::clock_skew_refused) and never moves the claims' clock.
  void set_max_clock_skew(std::chrono::milliseconds skew) { clock_.set_max_skew(skew); }

  /// The size moved sessions and claim lists are cut at (below the link's largest frame).
  void set_part_bytes(std::size_t bytes) { part_bytes_ = bytes; }
  /// Announces route changes (an empty announcement when there are none) and runs `done`
  /// (control thread) once every peer acknowledged it, so processed everything this node
  /// sent it before, or the bound passed (Node::apply_route_changes). Without it no trail is
  /// kept for moved sessions.
  using Routes = std::function<void(std::vector<std::string> filters, std::function<void()> done)>;
  void set_routes(Routes routes) { routes_ = std::move(routes); }

  /// Any thread.
  ClaimStats stats() const;

  /// The member that arbitrates `client_id` among `members` (rendezvous hashing). Exposed for
  /// tests; `members` must not be empty.
  static const std::string& arbiter_of(std::string_view client_id,
                                       const std::vector<std::string>& members);

 private:
  struct Pending {
    std::string client_id;
    bool resume = false;
    unsigned shard = 0;
    std::function<void(router::ClaimResult)> done;
    std::string arbiter;                  // asked for a stamp (empty once stamped)
    std::optional<ClaimVersion> version;  // set once stamped
    std::set<std::string> waiting;        // peers yet to answer take_request
    std::set<std::string> unasked;        // ... of which not asked yet: their link is down
    std::chrono::steady_clock::time_point take_cap;  // the wait for answers ends by then
    std::string session;                             // moved here
    std::string move_peer;           // ... by this peer (version 3: it keeps a trail)
    std::uint64_t move_request = 0;  // ... answering this request
    bool superseded = false;         // a newer claim exists
    std::unique_ptr<asio::steady_timer> timer;
  };

  void stamp(std::uint64_t request, std::uint64_t hlc);
  /// (Re)arms the wait for take_reply answers: 2 x timeout from now, never past take_cap.
  /// Each session_part of a moving session renews it: a large session is not cut off by the
  /// bound while it arrives.
  void arm_take_wait(std::uint64_t request);
  /// The wait for answers never exceeds this many timeouts (20 s with the default 1 s).
  static constexpr int kTakeWaitCap = 20;
  void finish(std::uint64_t request);
  void on_take_request(const std::string& peer, const TakeRequest& t);
  void on_take_reply(const std::string& peer, const TakeReply& r);
  void send_held(const std::string& peer);
  /// Answers a take_request whose session moved: in the reply (version 1) or in parts with
  /// a copy kept until take_ack (version 2).
  void send_moved(const std::string& peer, TakeReply& answer, const std::string& bytes, bool trail);
  /// Installs a session that did not move after all as an offline session on its shard.
  void restore(std::string_view client_id, const ClaimVersion& version, const std::string& bytes);

  registry::BrokerPort& core_;
  asio::io_context& ctx_;
  std::string self_;
  std::chrono::milliseconds timeout_;
  Send send_;
  Peers peers_;
  hlc::Clock clock_;
  std::map<std::uint64_t, Pending> pending_;
  std::multimap<std::string, std::uint64_t, std::less<>> by_client_;
  std::uint64_t next_request_ = 1;
  std::size_t part_bytes_ = 256 * 1024;
  // Sessions sent in parts and not yet acknowledged, by (claimant, its request).
  struct Moving {
    std::string client_id;
    ClaimVersion version;
    std::string bytes;
    bool hand_off = false;  // drain: counted in hand_offs_pending_
    bool trail = false;     // the shard keeps a trail for it (version 3)
  };
  /// Gives `h` to `peer` (version 2: session_parts and session_handoff, kept until take_ack;
  /// counted in hand_offs_pending_ when `drain`).
  void hand_to(const std::string& peer, registry::SessionRegistry::HandOff& h, bool drain);
  /// Sends `bytes` as session_part frames of `request`; false if one could not be queued.
  bool send_parts(const std::string& peer, std::uint64_t request, const std::string& bytes);
  using MovingMap = std::map<std::pair<std::string, std::uint64_t>, Moving>;
  /// Ends a transfer: restores the session here first when `restore_it`.
  MovingMap::iterator forget_moving(MovingMap::iterator it, bool restore_it);
  std::atomic<bool> hand_offs_sent_{false};
  std::atomic<std::size_t> hand_offs_pending_{0};
  MovingMap moving_;
  /// The old node's side of a trail: once the claimant acknowledged the session, withdraw
  /// the trail's routes, wait until every peer applied that and what they sent before it
  /// reached the shard, then send what the trail queued (session_parts and trail_end).
  void end_trail(const std::string& peer, std::uint64_t request, const std::string& client_id);
  /// Runs `then` on the control thread once every shard ran `rounds` handlers posted one
  /// after the other (what was queued on a shard before is done).
  void after_shards(int rounds, std::function<void()> then);
  std::uint8_t proto_of(const std::string& peer) const;
  /// False (counted) when `hlc` is further ahead of the wall clock than the max skew.
  bool skew_ok(std::uint64_t hlc);
  /// `peer` may still answer `request` after the claim stopped waiting for it.
  void remember_late(const std::string& peer, std::uint64_t request);
  /// The claimant's side: a moved session waiting for its old node's trail_end.
  struct TrailWait {
    std::function<void(std::string)> then;
    std::unique_ptr<asio::steady_timer> timer;
  };
  std::map<std::pair<std::string, std::uint64_t>, TrailWait> trail_waits_;
  void finish_trail_wait(const std::pair<std::string, std::uint64_t>& key, std::string bytes);
  /// (Re)arms a trail wait: 2 x timeout from now; each session_part of the trail renews it.
  void arm_trail_wait(const std::pair<std::string, std::uint64_t>& key);
  Routes routes_;
  // (peer, request) of claims that went ahead without that peer's take_reply: its late answer
  // is still taken (a session in it installed); any other reply to no open request is dropped.
  std::set<std::pair<std::string, std::uint64_t>> late_;
  // session_part slices received, by (sender, our request), until the take_reply.
  std::map<std::pair<std::string, std::uint64_t>, std::string> incoming_;
  // Written on the control thread and on shards, read by stats() on any thread.
  struct Counters {
    std::atomic<std::uint64_t> claims{0}, claims_lost{0}, arbiter_timeouts{0}, take_timeouts{0},
        sessions_moved_in{0}, sessions_moved_out{0}, taken_over{0}, moves_refused{0},
        moves_restored{0}, clock_skew_refused{0}, unsolicited{0};
  };
  Counters counters_;
};

}  // namespace brokerha::cluster
