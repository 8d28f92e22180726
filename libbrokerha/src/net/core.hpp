// SPDX-License-Identifier: Apache-2.0
#pragma once
// The broker's running state: shards (one I/O thread and io_context each), the session
// registry, the subscription tree, the retained store and the router between them.
//
// Threads and ownership (docs/threading.md has the picture):
//  - Shard k owns: its io_context and thread, the sessions whose client id hashes to k, the
//    connections attached to those sessions, and its outbox (deliveries it routed, per target
//    shard, posted in one batch per shard at the end of each handler).
//  - A connection is accepted on any shard (round robin) and moves to its session's shard
//    once CONNECT names the client id, so a session and its connection are only ever touched
//    by one thread and takeover needs no locks.
//  - The subscription tree is shared: read under a shared lock per PUBLISH, written under an
//    exclusive lock per SUBSCRIBE/UNSUBSCRIBE/session end. The retained store has a mutex.
//    Lock order: tree_mutex_ before retained_mutex_ (never both today).
//  - Counters are per shard (one writer each, relaxed atomics), summed by stats().

#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/hooks.hpp>
#include <brokerha/options.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "access/rules.hpp"
#include "broker/message.hpp"
#include "broker/retained.hpp"
#include "mqtt/packet.hpp"
#include "net/asio.hpp"
#include "session/export.hpp"
#include "session/session.hpp"
#include "topic/tree.hpp"

namespace brokerha::net {

class Connection;
class Core;
using broker::Message;
using broker::MessagePtr;
using Clock = std::chrono::steady_clock;

/// A will waiting to be published (MQTT 5.0 will delay, or until the session ends).
struct PendingWill {
  MessagePtr message;
  Clock::time_point due;
};

/// A session as the broker keeps it: the pure session state plus who is connected to it.
/// Owned by its shard (shared_ptr so deliveries in flight between shards keep it alive).
struct ClientSession {
  explicit ClientSession(std::string id, unsigned shard_index)
      : state(std::move(id)), shard(shard_index) {}

  // (Ordered largest first: one of these exists per session, idle memory counts.)
  session::Session state;
  Connection* connection = nullptr;  // the attached connection (same shard), or null
  std::optional<std::string> username;
  std::optional<Clock::time_point> expires_at;  // set while offline
  std::unique_ptr<PendingWill> will;            // a delayed will waiting for its time
  const unsigned shard;
  std::uint32_t expiry_interval = 0;  // seconds after disconnect (v5; v3: 0 or inf)
  mqtt::ProtocolVersion version = mqtt::ProtocolVersion::v311;
  bool clean = true;
  bool removed = false;  // discarded: no longer registered
};
using ClientSessionPtr = std::shared_ptr<ClientSession>;

/// The sessions of a shard by client id: open addressing with linear probing over one array
/// of pointers. The key is the session's own client id (never changed while registered), so
/// an entry costs 16 bytes over a load of at most 3/4 (~21 bytes a session) where an
/// unordered_map node with its bucket costs 72 and a second copy of the id: it counts in the
/// memory of an idle connection. Deletion shifts entries back (no tombstones).
///
/// Thread safety: none; the shard's thread.
class SessionTable {
 public:
  /// The session registered for `id`, or null.
  const ClientSessionPtr* find(std::string_view id) const noexcept;
  ClientSessionPtr* find(std::string_view id) noexcept {
    return const_cast<ClientSessionPtr*>(std::as_const(*this).find(id));
  }
  bool contains(std::string_view id) const noexcept { return find(id) != nullptr; }
  /// Registers `s`; its client id must not be registered yet.
  void insert(ClientSessionPtr s);
  /// Removes `s` if it is the session registered for its client id.
  bool erase(const ClientSession* s) noexcept;
  std::size_t size() const noexcept { return size_; }
  template <typename F>
  void for_each(F&& f) const {
    for (const ClientSessionPtr& s : slots_) {
      if (s) f(s);
    }
  }

 private:
  std::size_t home(std::string_view id) const noexcept {
    return std::hash<std::string_view>{}(id) & (slots_.size() - 1);
  }
  void grow();

  std::vector<ClientSessionPtr> slots_;  // size 0 or a power of two
  std::size_t size_ = 0;
};

/// One subscription in the tree.
struct SubEntry {
  ClientSession* key;  // identity; `session` keeps it alive
  ClientSessionPtr session;
  session::SubscriptionOptions options;
};

/// A delivery routed to a session on some shard.
struct Target {
  ClientSessionPtr session;
  session::Delivery delivery;
};

/// A shared subscription group this node chose another node for: that node delivers the
/// message to one of its members of `filter` ("$share/{group}/{filter}").
struct SharedPick {
  std::uint32_t peer;  // peer id
  std::string filter;
};

/// A message this node's clients published, on its way to other nodes (cluster mode).
struct RemoteSend {
  MessagePtr message;
  std::optional<broker::RetainedVersion> version;  // retained writes: the version stored here
  std::vector<std::uint32_t> peers;                // peer ids with a matching subscription
  bool all = false;                                // retained: every peer
  /// The groups chosen for a peer (sorted by peer; each peer also in `peers` unless `all`).
  /// Empty unless a shared subscription on another node matched: the common case costs
  /// nothing.
  std::vector<SharedPick> shared;
  /// Set when `cluster:message_to` has a subscriber: the cluster publishes the event with the
  /// names of the nodes the message went to (the publisher's protocol version and packet id).
  struct Tap {
    mqtt::ProtocolVersion version;
    std::uint16_t packet_id;
  };
  std::optional<Tap> tap;
};

/// A remote node's subscription in the router's tree of remote routes: a plain filter, or
/// membership of a shared group (the node has at least one local member of "$share/g/f").
struct RemoteSub {
  std::uint32_t key;  // peer id (cluster::Node numbers its peers)
};

/// A claim on a client id (cluster mode): its version orders concurrent claims cluster-wide
/// (the arbiter's HLC reading and the claiming node; cluster/claims.hpp).
using ClaimVersion = broker::RetainedVersion;

/// What the cluster answers a local connect's claim (ClusterPort::claim).
struct ClaimResult {
  bool won = true;       // false: a newer claim for the id exists elsewhere
  ClaimVersion version;  // this claim's version
  std::string session;   // a session moved here from another node (export bytes), or empty
};

/// What a claim from another node did to the id here (Core::take_session).
enum class TakeMode : std::uint8_t {
  move,     // the client resumes elsewhere: export the session, then end it here
  discard,  // the client starts clean elsewhere: end the session here (a delayed will is due)
  yield,    // a newer claim won after a partition: end it without its will
};
enum class TakeResult : std::uint8_t { none, moved, discarded, newer_here };

/// The newest claim a shard knows for a client id: the one of the session held here, or one
/// that took the id away (kept a while, so that an older claim arriving late cannot win).
struct ClaimRecord {
  ClaimVersion version;
  Clock::time_point at;
};

/// A group of the remote tree that matched a publish (route()'s scratch).
struct RemoteGroupMatch {
  const topic::SubscriptionTree<RemoteSub>::Group* group;
  bool paired;  // a local group with the same name and filter made the choice
};

/// The cluster as the router sees it (implemented by cluster::Node). Called on shard threads.
class ClusterPort {
 public:
  virtual ~ClusterPort() = default;
  /// A client connects here with `client_id` (on its home shard `shard`; `resume` = clean
  /// start 0). The cluster has the claim stamped by the id's arbiter and asks every peer to
  /// give the id up (moving its session here when `resume`); `done` then runs on `shard`.
  virtual void claim(const std::string& client_id, bool resume, unsigned shard,
                     std::function<void(ClaimResult)> done) = 0;
  /// Messages routed by this node for other nodes: one call per flush of a shard.
  virtual void forward(std::vector<RemoteSend>&& batch) = 0;
  /// The local subscriber count of these filters went to or from zero. The cluster announces
  /// what Core::local_filter_present() says when it gets to them, so calls from different
  /// shards may arrive in any order. `done` (may be empty) runs on a cluster thread once
  /// every connected peer acknowledged the change, or the wait bound passed.
  virtual void routes_changed(std::vector<std::string> filters, std::function<void()> done) = 0;
};

/// Per-shard counters: one writer (the shard's thread), read by stats().
struct ShardCounters {
  std::atomic<std::uint64_t> messages_received{0};
  std::atomic<std::uint64_t> messages_sent{0};
  std::atomic<std::uint64_t> messages_dropped{0};
  std::atomic<std::uint64_t> bytes_received{0};
  std::atomic<std::uint64_t> bytes_sent{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> auth_failures{0};
  std::atomic<std::uint64_t> acl_denials{0};
  std::atomic<std::uint64_t> protocol_errors{0};
  std::atomic<std::uint64_t> keepalive_timeouts{0};
  std::atomic<std::uint64_t> stuck_consumers_closed{0};
  std::atomic<std::uint64_t> clients_connected{0};  // gauge
  std::atomic<std::uint64_t> sessions{0};           // gauge
  std::atomic<std::uint64_t> inflight{0};           // gauge, refreshed by the sweep
  std::atomic<std::int64_t> queued_bytes{0};        // session queues + write backlogs of the shard

  void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

struct Shard {
  explicit Shard(unsigned i) : index(i), sweep_timer(ctx), sys_timer(ctx) {}

  const unsigned index;
  asio::io_context ctx{1};
  std::thread thread;
  asio::steady_timer sweep_timer;
  asio::steady_timer sys_timer;  // shard 0 only: $SYS statistics

  SessionTable sessions;  // by client id
  // The connections living on this shard (for the sweep and stop). A connection that moves
  // to its session's shard unlinks itself here and links itself there, on each thread.
  std::list<std::weak_ptr<Connection>> connections;
  std::vector<std::vector<Target>> outbox;         // per target shard
  std::vector<std::shared_ptr<Connection>> dirty;  // have unflushed output
  // Publishers not read while over the memory bound. Owning: a paused connection has no
  // operation pending, so this list is what keeps it alive until it is resumed.
  std::vector<std::shared_ptr<Connection>> memory_paused;
  // Sweeps run so far: a coarse clock (1 s) for "has this connection's output moved".
  std::uint32_t sweeps = 0;  // wraps after 136 years; compared by unsigned difference
  std::vector<const SubEntry*> match_scratch;
  std::vector<RemoteSend> remote_outbox;   // for ClusterPort::forward() at the next flush
  std::vector<std::string> route_changes;  // filters whose local presence changed
  std::vector<std::uint32_t> peer_scratch;
  std::vector<RemoteGroupMatch> remote_groups;  // route()'s scratch (guarded by the tree lock)
  std::vector<char> read_buffer = std::vector<char>(64 * 1024);  // shared by all reads
  // Cluster mode: the newest claim known per client id of this shard (Core::accept_claim,
  // take_session); records of ids no longer held here are dropped by the sweep after a while.
  std::unordered_map<std::string, ClaimRecord> claims;
  bool flush_scheduled = false;

  /// Adds `delta` bytes to this shard's share of the queued-memory account (own thread only).
  void account(std::int64_t delta) noexcept {
    if (delta != 0)
      counters.queued_bytes.store(counters.queued_bytes.load(std::memory_order_relaxed) + delta,
                                  std::memory_order_relaxed);
  }
  ShardCounters counters;
};

/// The result of routing one message.
struct RouteResult {
  std::size_t targets = 0;  // local sessions
  std::size_t remote = 0;   // other nodes it is forwarded to
  /// route_from_cluster(): shared groups the sending node chose this node for that have no
  /// local member (any more): the message is lost for that group.
  std::size_t shared_missed = 0;
};

/// The JSON of a `cluster:message_to` event: the message and the nodes it went to.
std::string render_message_to(const Message& m, mqtt::ProtocolVersion version,
                              std::uint16_t packet_id, const std::vector<std::string>& nodes);

class Core {
 public:
  explicit Core(BrokerOptions options);
  ~Core();

  const BrokerOptions& options() const noexcept { return options_; }
  std::vector<std::unique_ptr<Shard>>& shards() noexcept { return shards_; }
  Shard& shard(unsigned i) noexcept { return *shards_[i]; }
  unsigned shard_count() const noexcept { return static_cast<unsigned>(shards_.size()); }
  unsigned home_shard(std::string_view client_id) const noexcept;

  std::vector<std::shared_ptr<AuthHook>> auth_hooks;
  std::vector<std::shared_ptr<AclHook>> acl_hooks;
  std::vector<std::shared_ptr<EventHook>> event_hooks;

  /// The bus (set before start, may stay null) and its `cluster:message_to` channel, whose
  /// active() is the one load a publish costs while nobody subscribes.
  std::shared_ptr<Bus> bus;
  BusChannel message_to;
  /// Publishes a client's message on `cluster:message_to` (net/bus_tap.cpp): rendered here on
  /// a single node; in cluster mode handed to the cluster with the message's remote send, so
  /// the event can name the nodes it went to. Call right after route() on the same shard.
  void emit_message_to(const MessagePtr& m, mqtt::ProtocolVersion version, std::uint16_t packet_id,
                       Shard& shard);

  /// Calls `f(hook)` on every event hook.
  template <class F>
  void notify(F&& f) const {
    for (const auto& h : event_hooks) f(*h);
  }

  // ---- routing (any shard thread; `from` is the calling thread's shard) ----
  /// Stores/deletes the retained copy and queues a delivery to every matching session in
  /// `from`'s outbox; flush_outbox() sends the batches. In cluster mode it also picks, for
  /// each matching shared group, one slot among this node's members and the other nodes
  /// with members (docs/cluster.md, "Shared subscriptions"), and queues the remote sends.
  RouteResult route(const MessagePtr& message, Shard& from);
  /// A message received from another node: stored if retained and newer than what is held
  /// (`version`), delivered to local subscribers only, never forwarded again. Shared groups
  /// get it only when listed in `shares` ("$share/g/f" the sender chose this node for), and
  /// then one member each.
  RouteResult route_from_cluster(const MessagePtr& message,
                                 const std::optional<broker::RetainedVersion>& version,
                                 const std::vector<std::string>& shares, Shard& from);
  /// Posts the outbox batches to their shards (the local batch is delivered inline) and
  /// writes the output every connection of the shard queued. Every handler that may have
  /// produced output ends with it, or relies on schedule_flush().
  void flush(Shard& shard);
  /// Makes sure flush() runs on the shard after the current handler (idempotent).
  void schedule_flush(Shard& shard);
  /// Delivers one routed message on the session's shard (the read ACL check happens here).
  void deliver(Shard& shard, Target& target);

  // ---- sessions (on their home shard) ----
  /// Removes a session: its subscriptions, its registration, its delayed will (published).
  void discard_session(Shard& shard, const ClientSessionPtr& session);
  /// Installs an imported session on its home shard (the calling thread's).
  std::error_code install_session(Shard& shard, session::ImportedSession imported);
  // Cluster-wide client ids (cluster mode; the id's home shard).
  /// Records a local connect's claim; false if a newer claim for the id is known here (the
  /// connect lost the race).
  bool accept_claim(Shard& shard, const std::string& client_id, const ClaimVersion& version);
  /// Another node claims `client_id` with `version`: unless a newer claim is known here, the
  /// connection is closed (v5 DISCONNECT 0x8E) and the session moved into `exported`,
  /// discarded, or yielded as `mode` says.
  TakeResult take_session(Shard& shard, const std::string& client_id, const ClaimVersion& version,
                          TakeMode mode, std::string& exported);
  /// A moved session (export bytes) whose claim is `version`: installed as an offline session
  /// when that claim is still the newest here and no session holds the id. False otherwise,
  /// or when the bytes do not parse.
  bool adopt_session(Shard& shard, const ClaimVersion& version, std::string_view bytes);
  /// The claims of the sessions this shard holds.
  void held_claims(const Shard& shard,
                   std::vector<std::pair<std::string, ClaimVersion>>& out) const;

  /// Subscribes and unsubscribes in the shared tree.
  bool subscribe(const ClientSessionPtr& session, const std::string& full_filter,
                 const session::SubscriptionOptions& options);
  bool unsubscribe(const ClientSessionPtr& session, const std::string& full_filter);
  /// True while some local session subscribes to `filter`: a plain filter counts its
  /// non-shared subscriptions, a "$share/g/f" the members of that group. Any thread.
  bool local_filter_present(const std::string& filter) const;
  /// Every filter with a local subscriber (what this node announces): plain filters of
  /// non-shared subscriptions and the full "$share/g/f" of every group with a local member.
  /// Any thread.
  std::vector<std::string> local_filters() const;

  // ---- cluster (the cluster's control thread) ----
  /// Set before start(); null in single-node mode.
  ClusterPort* cluster = nullptr;
  /// Peers the cluster has (retained messages go to all of them); set by the cluster.
  std::atomic<std::uint32_t> peer_count{0};
  /// This node's name, part of every retained version written here ("" single node).
  std::string node_name;
  /// Changes a peer's routes in the remote tree ("$share/g/f": the peer joins group g at f).
  void remote_routes_add(std::uint32_t peer, const std::string& filter);
  void remote_routes_remove(std::uint32_t peer, const std::string& filter);
  /// Retained store access for replication (snapshots, digests, repair).
  bool retained_apply(const std::string& topic, const MessagePtr& message,
                      const broker::RetainedVersion& version);
  void retained_for_each(
      const std::function<void(const std::string&, const broker::RetainedStore::Entry&)>& f) const;

  /// Retained messages matching `filter` (for a new subscription).
  std::vector<MessagePtr> retained_matching(std::string_view filter) const;

  /// The read check for a delivery (hooks, then the built-in rules); true = allowed. Runs
  /// on the subscriber's shard.
  bool delivery_allowed(const ClientSession& session, std::string_view topic) const;

  /// The built-in rules in force (any thread). A reload swaps them; old versions are kept
  /// until the broker is destroyed, so a reference stays valid during any check.
  const access::Rules& rules() const noexcept { return *rules_.load(std::memory_order_acquire); }
  void set_rules(std::unique_ptr<access::Rules> rules);

  // ---- lifecycle ----
  void start_sweeps();
  void sweep(Shard& shard);
  void publish_will(Shard& shard, const MessagePtr& will);
  /// Drops expired retained messages (shard 0's sweep).
  void prune_retained();

  std::atomic<std::uint64_t> connection_count{0};
  std::atomic<bool> stopping{false};
  const Clock::time_point started_at = Clock::now();

  /// True while the bytes queued in the whole broker exceed BrokerOptions::max_queued_bytes
  /// (publishers are then read at most once per sweep: TCP back-pressure, not drops).
  bool memory_over() const noexcept;
  /// Resumes reading from the publishers this shard paused for memory.
  void resume_paused(Shard& shard);

  std::size_t retained_count() const;
  std::size_t subscription_count() const;
  /// Counters summed over the shards plus the shared gauges (any thread).
  BrokerStats stats() const;
  /// Publishes the `$SYS/broker/...` statistics topics (retained) from shard 0.
  void publish_sys(Shard& shard);

 private:
  BrokerOptions options_;
  std::vector<std::unique_ptr<Shard>> shards_;

  void note_filter(ClientSession& session, std::string_view filter, int delta);
  /// The local part of routing, with tree_mutex_ held: matches the tree and fills the
  /// outboxes; returns the number of sessions. `pick(group)` returns the member of a matching
  /// shared group to deliver to, or null for none on this node.
  template <class Pick>
  std::size_t match_local(const MessagePtr& message, Shard& from, Pick&& pick);

  mutable std::shared_mutex tree_mutex_;
  topic::SubscriptionTree<SubEntry> tree_;
  // Guarded by tree_mutex_: routes of other nodes, and how many local subscriptions use each
  // filter (the cluster announces a filter while its count is above zero): plain filters for
  // non-shared subscriptions, "$share/g/f" for group members.
  topic::SubscriptionTree<RemoteSub> remote_tree_;
  std::map<std::string, std::uint32_t, std::less<>> local_filter_refs_;

  std::atomic<const access::Rules*> rules_{nullptr};
  std::mutex rules_mutex_;  // guards rules_history_
  std::vector<std::unique_ptr<access::Rules>> rules_history_;

  mutable std::mutex retained_mutex_;
  broker::RetainedStore retained_;
};

}  // namespace brokerha::net
