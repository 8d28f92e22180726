// SPDX-License-Identifier: Apache-2.0
#pragma once
// A shard's sessions: which sessions exist (by client id), which client is attached to each,
// what happens when a client connects with an id that has a session (resume, clean start,
// takeover), when one goes away (its will, its expiry), when a delivery arrives for one, and
// the cluster-wide claims on the ids this shard is home to. Pure code over the router: no
// sockets, no timers of its own (the shard calls sweep() once a second).
//
// Thread: one registry per shard; only that shard's thread calls it. Routing a will or a
// session's subscriptions goes through the shared Router, which is thread-safe.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "access/control.hpp"
#include "router/cluster_port.hpp"
#include "router/counters.hpp"
#include "router/router.hpp"
#include "session/client_session.hpp"
#include "session/export.hpp"

namespace brokerha::registry {

using router::ClaimVersion;
using session::Attachment;
using session::ClientSession;
using session::ClientSessionPtr;
using session::Clock;

/// What a connecting client asks of its session (from its CONNECT).
struct AttachRequest {
  std::string client_id;
  bool clean_start = true;
  mqtt::ProtocolVersion version = mqtt::ProtocolVersion::v311;
  std::optional<std::string> username;
  std::uint32_t session_expiry = 0;  // seconds; v3 persistent sessions: 0xFFFFFFFF
};

struct Attached {
  ClientSessionPtr session;
  bool present = false;  // an existing session was resumed (CONNACK session present)
};

/// The newest claim a shard knows for a client id: the one of the session held here, or one
/// that took the id away (kept a while, so that an older claim arriving late cannot win).
struct ClaimRecord {
  ClaimVersion version;
  Clock::time_point at;
};

class SessionRegistry {
 public:
  struct Context {
    unsigned shard = 0;
    router::Router& router;
    const access::Control& access;
    router::Counters& counters;  // this shard's
    router::Outbox& outbox;      // this shard's: wills routed, route changes
    std::size_t max_queued_messages = 1000;
    /// Makes sure the shard flushes its outbox after the current handler.
    std::function<void()> schedule_flush;
    /// Per session (BrokerOptions::max_session_queued_bytes, reloaded while running); null
    /// or 0: unlimited.
    const std::atomic<std::uint64_t>* max_queued_bytes = nullptr;
  };
  explicit SessionRegistry(Context context) : cx_(std::move(context)) {}

  session::SessionTable& table() noexcept { return table_; }
  const session::SessionTable& table() const noexcept { return table_; }

  /// A client (`who`) connects: a session registered for the id with a client attached is
  /// taken over (that client is kicked with 0x8E); then a clean start discards it (its
  /// pending will is published), a resume continues it (no will: the client came back in
  /// time). The session returned has `who` attached.
  Attached attach(const AttachRequest& request, Attachment* who);
  /// The attached client `who` went away. Its will (null: none, or a clean DISCONNECT) is
  /// published now, or kept for `will_delay` seconds while the session lives; a session with
  /// expiry 0 ends now, others go offline (QoS 0 dropped) until they expire.
  void detach(const ClientSessionPtr& session, Attachment* who, message::MessagePtr will,
              std::uint32_t will_delay, Clock::time_point now);
  /// Removes a session: its subscriptions, its registration, its delayed will (published).
  void discard(const ClientSessionPtr& session);
  /// Installs an imported session (offline). errc::session_in_use when the id has a session
  /// with a client attached.
  std::error_code install(session::ImportedSession imported, Clock::time_point now);

  /// Delivers one routed message (the read check happens here): queued on the session and,
  /// when a client is attached, pumped to it. An offline session takes QoS 1/2 only.
  void deliver(router::Target& target);

  /// Once a second: due delayed wills, expired offline sessions, stale claim records, and
  /// the in-flight gauge. `sweeps` counts the calls (claim records are pruned every 16th).
  void sweep(Clock::time_point now, std::uint32_t sweeps);

  // ---- cluster-wide client ids (this shard is the ids' home) ----
  /// Records a local connect's claim; false if a newer claim for the id is known here (the
  /// connect lost the race).
  bool accept_claim(const std::string& client_id, const ClaimVersion& version,
                    Clock::time_point now);
  /// Another node claims `client_id` with `version`: unless a newer claim is known here, the
  /// client is kicked (v5 DISCONNECT 0x8E) and the session moved into `exported`,
  /// discarded, or yielded as `mode` says. With `trail` a moved session leaves a trail here:
  /// its plain subscriptions stay, still announced, and queue what arrives for it until
  /// end_trail() (or until the session comes back here: install() takes the trail in).
  router::TakeResult take(const std::string& client_id, const ClaimVersion& version,
                          router::TakeMode mode, std::string& exported, Clock::time_point now,
                          bool trail = false);

  // ---- a moved session's trail (cluster protocol 3, docs/cluster.md "Session moves") ----
  /// Stops announcing the trail's filters (those no other local subscriber keeps are appended
  /// to `changes`); the trail still queues what arrives. False when `client_id` has no trail.
  bool unroute_trail(const std::string& client_id, std::vector<std::string>& changes);
  /// Ends the trail of `client_id`: the exported session holding what it queued, or empty
  /// when it queued nothing (or there is none).
  std::string end_trail(const std::string& client_id, Clock::time_point now);
  /// The claimant's side: the trail `bytes` from the session's old node go into the session
  /// after the first `at` queued deliveries (those that came with it), before what was
  /// queued here since (marked DUP). False when the session is gone or the bytes do not
  /// parse; empty bytes are a trail with nothing in it.
  bool splice_trail(const std::string& client_id, std::string_view bytes, std::size_t at,
                    Clock::time_point now);
  std::size_t trails() const noexcept { return trails_.size(); }
  /// A moved session (export bytes) whose claim is `version`: when that claim is still the
  /// newest here, installed as an offline session, or merged into the session that holds the
  /// id (a late answer: the claim went ahead with a fresh one). False otherwise, or when the
  /// bytes do not parse.
  bool adopt(const ClaimVersion& version, std::string_view bytes, Clock::time_point now);
  /// The claims of the sessions this shard holds.
  void held_claims(std::vector<std::pair<std::string, ClaimVersion>>& out) const;

  /// A session a draining node hands to the node that should own it next.
  struct HandOff {
    std::string client_id;
    ClaimVersion version;  // the claim it is held under
    std::string bytes;     // session::export_session()
  };
  /// Drain: every session without a client attached is exported into `out` and removed here
  /// (a will waiting for its delay is published now: this node is going).
  void hand_off_all(std::vector<HandOff>& out, Clock::time_point now);
  /// A session another node gives up (a drain, or the older side after a partition): merged
  /// into the session that holds the id here, or else installed as an offline session under
  /// its claim unless this shard knows a newer claim for the id.
  bool receive_hand_off(const ClaimVersion& version, std::string_view bytes, Clock::time_point now);

  /// The identity the rules see for a session: its attached client's address, or while
  /// offline the address it last had.
  static access::Identity identity(const ClientSession& s);

 private:
  std::vector<std::string>* route_changes() {
    return cx_.router.clustered() ? &cx_.outbox.route_changes : nullptr;
  }
  void publish_will(const message::MessagePtr& will);
  static std::string export_of(const ClientSession& s, Clock::time_point now);
  /// Another node's session of the same client joins `s` (Session::merge_from), with routes.
  void merge(const ClientSessionPtr& s, session::ImportedSession& imported);
  /// A session resumed by a client that may not be the one that left it (another username, another
  /// address): what was queued or is in flight is checked again, for the new identity.
  void recheck(ClientSession& s);

  Context cx_;
  session::SessionTable table_;
  // Cluster mode: the newest claim known per client id of this shard; records of ids no
  // longer held here are dropped by the sweep after a while.
  std::unordered_map<std::string, ClaimRecord> claims_;
  // Moved sessions' trails by client id: a session object outside the table whose plain
  // subscriptions stay in the router (SessionRegistry::take with `trail`).
  struct Trail {
    ClientSessionPtr session;
    Clock::time_point since;
  };
  std::unordered_map<std::string, Trail> trails_;
  /// The trail of `id`, if any, leaves the router and the map (its queue's bytes uncounted).
  ClientSessionPtr drop_trail(const std::string& id);
};

}  // namespace brokerha::registry
