// SPDX-License-Identifier: Apache-2.0
#pragma once
// The cluster data plane's transport: one persistent, framed, batched TCP link per peer on
// the membership port (docs/cluster.md). Owns no routing: the layer above
// (cluster/node.hpp) gives it opaque frame bodies tagged with a `kind` byte and gets them
// back on the other side, once and in order.
//
// Wire (docs/cluster-protocol.md has the full format):
//  - A stream starts with one byte memberlist never sends first (not 0..13, 244), so the
//    membership listener can hand it over (membership::set_stream_handler): kPlainMagic for a
//    plaintext link; with a secret key the stream is TLS 1.3 from its first byte (a record
//    header, 0x16) with an external PSK derived from the key by HKDF-SHA256, and the magic
//    byte follows inside TLS. A plaintext stream to a node with a key (or the reverse) fails
//    the handshake and is counted, never parsed.
//  - Then a hello each way: protocol version, node name, boot epoch, and the highest
//    sequence received from the other side's current epoch (so the sender drops what was
//    acknowledged and re-sends the rest after a reconnect).
//  - Then frames: u32 length (of what follows), u8 kind, u64 sequence, body. Kind 0 is the
//    link's own (acks, pings for the round trip); kinds 1..255 belong to the layer above.
//    Acknowledgements are cumulative and coalesced.
//
// Direction: the peer whose name sorts lower dials; the other accepts (one link per pair).
// A newer inbound link from a peer replaces the old one. Reconnects back off exponentially
// between reconnect_min and reconnect_max while the peer is known (add_peer).
//
// Delivery: each sender numbers its frames per (link, boot epoch); the receiver delivers a
// frame only if its sequence is above the last one delivered for that (peer, epoch), so a
// re-sent frame is delivered once. A peer that restarts gets a new epoch; on_up reports it,
// the frames still queued for its previous incarnation are dropped (they were addressed to
// state that is gone: the layer above resynchronises on that on_up) and our numbering towards
// it restarts at 1. Frames queued before the first handshake with a peer are kept.
// Frames wait in a bounded queue (max_queue_bytes, unacknowledged included) while the link is
// down; beyond it send() refuses the frame and counts it as dropped.
//
// Layout: the protocol (framing, hello, numbering, acknowledgements, dedupe, the re-send queue,
// pings) is cluster/link_protocol.hpp, without I/O; cluster/link.cpp drives it over sockets:
// dialling and accepting, reconnect backoff with jitter, TLS (io/tls_engine.hpp with the
// contexts of cluster/link_tls.hpp), reads, gathered writes, timers and the counters.
//
// Threads: everything runs on the io_context given to the constructor (the cluster's control
// thread, one thread); every member function must be called on that thread, except stats()
// (any thread) and accept() (any thread: it posts). Handlers run on that thread too. Destroy
// the manager on that thread, or once no thread runs the io_context.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/link_protocol.hpp"  // kPlainMagic, kLinkProtocolVersion, LinkStats
#include "io/asio.hpp"

namespace brokerha::cluster {

/// The protocol's options (LinkSessionOptions: node_name, boot_epoch, max_queue_bytes,
/// max_frame_bytes, ping_interval, ack_delay) and the driver's.
struct LinkOptions : LinkSessionOptions {
  std::string secret_key;  // 16/24/32 raw bytes: TLS 1.3 PSK; empty: plaintext
  /// More keys (rotation), after secret_key: the first key of the two is offered, every key
  /// is accepted. Both empty: plaintext.
  std::vector<std::string> secret_keys;
  std::chrono::milliseconds connect_timeout{1000};  // TCP connect + TLS + hello
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5000};
  /// Inbound streams that have not named a known peer yet (TLS handshake, hello), at once;
  /// one beyond it is closed at once and counted (inbound_over_limit()). 0 = unlimited.
  std::size_t max_pending_inbound = 256;
};

class LinkManager {
 public:
  struct Handlers {
    /// A frame of the layer above from `peer`: each exactly once per peer epoch, in the
    /// order the peer sent them. `body` is valid during the call only.
    std::function<void(const std::string& peer, std::uint8_t kind, std::string_view body)> on_frame;
    /// The link to `peer` completed its handshake; `epoch` is the peer's boot epoch (a new
    /// value means the peer restarted: whatever state it had from us is gone).
    std::function<void(const std::string& peer, std::uint64_t epoch)> on_up;
    /// The link to `peer` was lost (frames stay queued for the reconnect). Not called by
    /// remove_peer() or stop().
    std::function<void(const std::string& peer)> on_down;
  };

  LinkManager(asio::io_context& ctx, LinkOptions options, Handlers handlers);
  ~LinkManager();  // stop()
  LinkManager(const LinkManager&) = delete;
  LinkManager& operator=(const LinkManager&) = delete;

  /// Keeps a link to `peer` at `address`:`port` (its membership port). Known peer with a new
  /// address: the link is re-dialled there. Idempotent.
  void add_peer(const std::string& peer, const std::string& address, std::uint16_t port);
  /// Forgets a peer: closes its link and drops its queue. Its sequence numbers are kept
  /// (bounded), so adding it again within our epoch continues them.
  void remove_peer(const std::string& peer);
  /// The peer is known to be reachable again (membership saw it rejoin): when this side dials
  /// and the link is down, it dials now instead of after its backoff, which starts over.
  void redial(const std::string& peer);

  /// Queues a frame for `peer` (reliable, ordered). False when the peer is unknown or its
  /// queue is full (counted in `dropped`). `body` is shared, not copied, by every link it is
  /// sent on. kind must be 1..255.
  bool send(const std::string& peer, std::uint8_t kind, std::shared_ptr<const std::string> body);

  /// True when the link to `peer` has completed its handshake and is up.
  bool connected(const std::string& peer) const;
  /// Bytes queued for `peer` (unacknowledged included); 0 for an unknown peer.
  std::size_t queued_bytes(const std::string& peer) const;
  /// Frames queued for `peer` (unacknowledged included); 0 for an unknown peer.
  std::size_t queued_frames(const std::string& peer) const;
  /// True when every frame queued for any peer has been acknowledged (nothing waits to be
  /// written or acknowledged): what a graceful drain waits for before leaving.
  bool idle() const;

  /// An inbound stream handed over by the membership listener (membership::StreamHandler):
  /// takes ownership of `fd`; `first_bytes` were already read from it. Any thread: posts to
  /// the control context.
  void accept(int fd, std::string_view first_bytes);

  /// Test fault switch: while set, nothing is written to or read from `peer` and no link to
  /// it is established (a partition that TCP does not notice by itself: the open link dies
  /// by ping silence). Also applies to a peer added later.
  void set_blocked(const std::string& peer, bool blocked);

  /// Snapshot of every link (any thread).
  std::vector<LinkStats> stats() const;
  /// Inbound streams closed before their hello named a known peer: failed TLS handshakes
  /// (wrong key, plaintext to a node with a key or the reverse), garbage, an unknown or
  /// blocked peer, a peer that should have waited for us to dial (any thread).
  std::uint64_t refused_streams() const;
  /// Inbound streams closed at once because max_pending_inbound were pending (any thread).
  std::uint64_t inbound_over_limit() const;

  /// Replaces the keyring of a manager started with a key (rotation): links opened later
  /// offer keys[0] and accept any of `keys`; open links stay. Throws std::invalid_argument
  /// (a bad key, no key, or a plaintext manager).
  void set_keys(const std::vector<std::string>& keys);

  /// Closes every link and stops reconnecting. Idempotent.
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace brokerha::cluster
