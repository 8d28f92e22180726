// SPDX-License-Identifier: Apache-2.0
#pragma once
// cluster::Node: what makes a broker a member of a cluster (docs/cluster.md). It owns
// the membership (its own thread), discovery and the data-plane links (both on the node's
// control thread), and plugs into the broker through router::ClusterPort (what the broker asks of
// the cluster) and registry::BrokerPort (what it reaches of the broker):
//
//  - Routes: the node announces the filters its local sessions subscribe to (a full set when
//    a link comes up, numbered deltas as they change; "$share/g/f" for shared groups) and
//    keeps each peer's filters in the router's remote tree, so a message goes only to nodes
//    with a matching subscriber, and a shared group's message to the one node chosen for it.
//  - Messages: a shard's flush hands over the messages it routed for peers; the control
//    thread encodes each once and queues the same bytes on every link it goes to. A message
//    received from a peer is routed on one shard per peer (so one publisher's order holds),
//    delivered locally and never forwarded again.
//  - Retained messages: every write goes to every peer with its version (HLC + node); a
//    joining node asks one peer for a snapshot; digests of 256 buckets are exchanged when a
//    link comes up and every repair_interval, and differing buckets are swapped both ways, so
//    every node converges to the newest write and deletes (tombstones) stay deleted.
//
// Threads: the control thread runs the links, discovery, the route bookkeeping and every
// handler here; membership events arrive on the membership thread and are posted over;
// forward() and routes_changed() are called on shard threads and post; joins run on a
// joiner thread (Membership::join waits for the network). info() is callable from any thread.

#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/membership.hpp>
#include <brokerha/options.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/claims.hpp"
#include "cluster/link.hpp"
#include "cluster/protocol.hpp"
#include "discovery/engine.hpp"
#include "io/asio.hpp"
#include "registry/broker_port.hpp"
#include "router/cluster_port.hpp"

namespace brokerha::cluster {

class Node final : public router::ClusterPort {
 public:
  /// `broker` must outlive the node. `bus` may be null.
  Node(registry::BrokerPort& broker, ClusterOptions options, std::shared_ptr<Bus> bus);
  ~Node() override;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  /// Binds the membership port and starts the control thread, links and discovery. Throws
  /// std::system_error (bind failure, bad options).
  void start();
  /// Leaves the cluster (when `leave`, bounded by leave_timeout), closes the links and joins
  /// the threads. Idempotent.
  void stop(bool leave) noexcept;

  /// Broker::set_cluster_keys: the links' keyring on the control thread, then the
  /// membership's on its thread. Any thread but those two; waits for both.
  void set_keys(const std::vector<std::string>& keys);
  /// The keyring in use (the first encrypts); empty in a cluster without a key. Any thread.
  std::vector<std::string> keys() const;

  /// Graceful drain (Broker::drain; any thread but the control thread): waits until every
  /// link has its frames acknowledged, `deadline` passes or `cancel` turns true. True when
  /// the links were idle.
  bool flush_links(std::chrono::steady_clock::time_point deadline,
                   const std::atomic<bool>& cancel) noexcept;
  /// Graceful drain (any thread but the control thread): hands every session without a
  /// client to the peer that should own it next and waits until each was acknowledged,
  /// `deadline` passes or `cancel` turns true. True when every one was answered.
  bool hand_off_sessions(std::chrono::steady_clock::time_point deadline,
                         const std::atomic<bool>& cancel) noexcept;
  /// Graceful drain: announces the leave and waits until it was gossiped (or `timeout`); a
  /// later stop(true) does not leave again. Any thread but the membership's.
  void leave(std::chrono::milliseconds timeout) noexcept;

  /// The bound membership (and data-plane) port.
  std::uint16_t port() const noexcept;
  ClusterInfo info() const;
  /// testing::set_cluster_partition (both), set_cluster_link_blocked (`link` only) and
  /// set_cluster_membership_blocked (`membership` only) (any thread).
  void set_partition(const std::string& address, bool blocked, bool membership = true,
                     bool link = true);
  /// testing::inject_cluster_frame (any thread): `body` handled as a frame from `peer`.
  void inject_frame(const std::string& peer, std::uint8_t kind, const std::string& body);

  // router::ClusterPort (shard threads).
  void forward(std::vector<router::RemoteSend>&& batch) override;
  void routes_changed(std::vector<std::string> filters, std::function<void()> done) override;
  void claim(const std::string& client_id, bool resume, unsigned shard,
             std::function<void(router::ClaimResult)> done) override;

 private:
  enum class Produced { frame, done, later };
  /// A control frame (anything but a publish) waiting for room on its link, or a producer
  /// that encodes the next frame of a large transfer (a snapshot, a repair) only when there is
  /// room: `next` sets kind and body (frame), or says it is finished (done) or cannot tell yet
  /// (later: asked again on the next pump).
  struct Outgoing {
    using Next =
        std::function<Produced(std::uint8_t& kind, std::shared_ptr<const std::string>& body)>;
    std::uint8_t kind = 0;
    std::shared_ptr<const std::string> body;
    Next next;
  };
  struct Peer {
    std::string name;
    std::uint32_t id = 0;
    std::string address;
    std::uint16_t port = 0;
    bool member = false;    // alive or suspect in the membership
    bool up = false;        // link handshake done
    bool retained = false;  // failed, its link and plain routes kept for link_retain
    std::shared_ptr<asio::steady_timer> retain_timer;
    std::uint64_t epoch = 0;
    std::uint8_t proto = 1;                 // cluster protocol version both speak (capabilities)
    bool proto_known = false;               // its capabilities arrived (this incarnation)
    std::uint64_t acked_routes = 0;         // highest routes_delta number acknowledged
    std::set<std::string> routes;           // its filters, mirrored in the router's remote tree
    std::deque<Outgoing> backlog;           // control frames waiting for room on the link, in order
    std::set<std::string> routes_incoming;  // routes_part frames received until the last
    bool routes_known = false;              // its full route set arrived (this incarnation)
    bool link_expected = false;             // (re)joined, its link not up since
    /// Retained entries from it are accepted until then: this node asked it for them (a
    /// snapshot_request, a digest or a bucket_request), renewed by each frame that comes.
    std::chrono::steady_clock::time_point entries_until{};
  };
  struct RouteWaiter {
    std::uint64_t number = 0;
    std::set<std::string> pending;  // peers yet to acknowledge
    std::function<void()> done;
    std::unique_ptr<asio::steady_timer> timer;
  };

  // Control thread.
  void on_member_event(const MemberEvent& e);
  void on_frame(const std::string& peer, std::uint8_t kind, std::string_view body);
  /// True when retained entries from `p` answer a request of this node; else counted.
  bool entries_wanted(Peer& p);
  void on_up(const std::string& peer, std::uint64_t epoch);
  void on_down(const std::string& peer);
  void on_discovery(const DiscoveryResult& r);
  Peer& peer_named(const std::string& name);
  Peer* find_peer(const std::string& name);
  void forget_peer(Peer& p);
  /// A peer the membership declares failed: its link and plain routes are kept (messages keep
  /// queueing for it) for link_retain, its shared-group memberships are not picked; forgotten
  /// when the time runs out.
  void retain_peer(Peer& p);
  /// Waiting for a route acknowledgement from `p` ends (it failed or left).
  void release_waiters(Peer& p);
  /// What each side sends when a link to `p` comes (back) up: capabilities, the full route
  /// set, the claims held, and a snapshot request or a digest.
  void resync(Peer& p);
  void set_protocol(Peer& p, std::uint8_t version);
  /// routes_full, or its parts when the set is larger than one frame.
  void send_routes_full(Peer& p);
  // The control lane (cluster/node_lane.cpp). Every frame but a publish goes through it: it
  // is queued on the link while the link holds less than half of link_queue_bytes, and waits
  // here, in order, otherwise, so that a large transfer neither fills the link (live
  // publishes keep the other half) nor is refused in part. False only for a peer that is not
  // known or a frame larger than the link can ever carry (counted in oversized_).
  bool send_control(const std::string& peer, Kind kind, std::shared_ptr<const std::string> body);
  bool send_control(Peer& p, Kind kind, std::shared_ptr<const std::string> body);
  /// A large transfer: `next` is called for each frame as room allows.
  void send_stream(Peer& p, Outgoing::Next next);
  void pump(Peer& p);
  void arm_pump();
  void set_routes(Peer& p, std::set<std::string> routes);
  void send_batch(std::vector<router::RemoteSend>& batch);
  /// With `barrier`, a delta goes out even when nothing changed (an empty one), so that
  /// `done` means every peer processed everything this node sent it before the call.
  void apply_route_changes(std::vector<std::string>& filters, std::function<void()> done,
                           bool barrier = false);
  void ack_routes(Peer& p, std::uint64_t number);
  void finish_waiter(std::uint64_t key, bool timed_out);
  void deliver_incoming();
  void send_entries(const std::string& peer, const std::vector<std::uint16_t>* buckets,
                    bool snapshot_end);
  Digest digest() const;
  void on_digest(Peer& p, const Digest& theirs);
  void apply_entries(std::string_view body);
  void schedule_repair();
  void request_snapshot();
  void update_peer_count();
  void emit_message_from(const std::string& peer, const message::Message& m);
  void joiner_loop();

  registry::BrokerPort& core_;
  ClusterOptions options_;
  std::shared_ptr<Bus> bus_;
  BusChannel new_member_;
  BusChannel message_from_;
  BusChannel message_to_;

  asio::io_context ctx_{1};
  std::thread thread_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<LinkManager> links_;
  std::unique_ptr<discovery::Engine> discovery_;
  std::unique_ptr<Claims> claims_;  // cluster-wide client ids (control thread)
  asio::steady_timer repair_timer_{ctx_};
  asio::steady_timer pump_timer_{ctx_};
  /// Caught up (ClusterInfo::caught_up): latched once, after joining, every member's link is
  /// up with its route set received and a retained snapshot is in, or kCatchUpBound after the
  /// first join, or when provably alone. Until then /ready says the node is catching up, so
  /// that clients are not sent to a node that would drop what it cannot route yet.
  mutable std::atomic<bool> caught_up_{false};  // info() latches it when provably alone
  std::optional<std::chrono::steady_clock::time_point> joined_at_;
  asio::steady_timer catch_up_timer_{ctx_};
  void check_caught_up();
  bool pump_armed_ = false;
  std::size_t max_body_ = 0;      // the largest frame body a link carries
  std::size_t frame_target_ = 0;  // what route sets, snapshots and sessions are cut at
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;

  // Control thread only.
  std::map<std::string, Peer, std::less<>> peers_;
  std::map<std::uint32_t, std::string> names_by_id_;
  std::uint32_t next_peer_id_ = 1;
  std::set<std::string> announced_;  // filters peers have been told about
  std::uint64_t route_number_ = 0;
  std::map<std::uint64_t, RouteWaiter> waiters_;
  std::uint64_t next_waiter_ = 1;
  std::string snapshot_peer_;  // asked for a snapshot, answer pending
  struct Incoming {
    message::MessagePtr message;
    std::optional<hlc::Version> version;
    std::vector<std::string> shares;  // publish_shared: the groups this node serves
  };
  std::vector<std::vector<Incoming>> incoming_;  // per shard, routed after the current handler
  bool incoming_scheduled_ = false;
  std::uint64_t boot_epoch_ = 0;
  std::set<std::string> partitioned_;  // addresses cut off by set_partition (control thread)

  // Joiner thread: seeds to join (guarded by join_mutex_).
  std::thread joiner_;
  std::mutex join_mutex_;
  std::condition_variable join_cv_;
  std::vector<std::string> join_queue_;
  bool joiner_stop_ = false;

  // info() (any thread), guarded by info_mutex_.
  mutable std::mutex info_mutex_;
  std::vector<std::string> keys_;  // the keyring in use (set_keys)
  DiscoveryResult last_discovery_;
  bool discovery_seen_ = false;
  std::map<std::string, std::uint8_t, std::less<>> peer_protocols_;  // Peer::proto, for info()
  std::optional<std::chrono::steady_clock::time_point> alone_since_;
  std::atomic<bool> synced_{false};
  std::atomic<std::uint64_t> forwarded_{0}, received_{0}, forward_dropped_{0}, malformed_{0},
      ack_timeouts_{0}, retained_applied_{0};
  // Answers (routes_ack, retained entries) no request of this node asked for: dropped.
  std::atomic<std::uint64_t> unsolicited_{0};
  // Peers whose protocol versions do not meet ours (capabilities): spoken to in version 1.
  std::atomic<std::uint64_t> incompatible_peers_{0};
  // Frames still queued for a failed peer when link_retain ran out: lost.
  std::atomic<std::uint64_t> retain_dropped_{0};
  // Control frames larger than a link can carry: never sent.
  std::atomic<std::uint64_t> oversized_{0};
  // Shard threads add: messages for a shared group this node was chosen for but has no
  // member of any more.
  std::atomic<std::uint64_t> shared_dropped_{0};
  std::atomic<std::uint64_t> members_joined_{0}, members_left_{0}, members_failed_{0};
  std::atomic<bool> started_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<bool> left_{false};
};

}  // namespace brokerha::cluster
