// SPDX-License-Identifier: Apache-2.0
#pragma once
// The broker's running state on Asio: the shards (one I/O thread and io_context each) and
// what carries work between them. The protocol-layer pieces it runs are the router (shared),
// access control (shared) and, per shard, a session registry and an outbox.
//
// Threads and ownership (docs/threading.md has the picture):
//  - Shard k owns its io_context and thread, the session registry of the client ids whose
//    home it is, the connections attached to those sessions, and its outbox: the deliveries
//    it routed, per target shard, carried in one post per target shard when it flushes.
//  - A connection is accepted on any shard (round robin) and moves to its session's shard
//    once CONNECT names the client id, so a session and its connection are only ever touched
//    by one thread and takeover needs no locks.
//  - The router's tables are shared (the route table's shared mutex, the retained store's
//    mutex); counters are per shard (one writer each), summed by stats().
//  - The cluster reaches the shards only through registry::BrokerPort (on_shard()).

#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/options.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "access/control.hpp"
#include "io/asio.hpp"
#include "protocol/client_protocol.hpp"
#include "registry/broker_port.hpp"
#include "registry/session_registry.hpp"
#include "router/cluster_port.hpp"
#include "router/counters.hpp"
#include "router/router.hpp"

namespace brokerha::net {

class Connection;
class Runtime;
using Clock = std::chrono::steady_clock;

struct Shard {
  Shard(unsigned i, unsigned count, Runtime& runtime);

  const unsigned index;
  asio::io_context ctx{1};
  std::thread thread;
  asio::steady_timer sweep_timer;
  asio::steady_timer sys_timer;  // shard 0 only: $SYS statistics

  router::Counters counters;
  router::Outbox outbox;
  registry::SessionRegistry sessions;
  protocol::ShardContext context;  // what the protocols of this shard's connections use

  // The connections living on this shard (for the sweep and stop). A connection that moves
  // to its session's shard unlinks itself here and links itself there, on each thread.
  std::list<std::weak_ptr<Connection>> connections;
  std::vector<std::shared_ptr<Connection>> dirty;  // have unflushed output
  // Publishers not read while over the memory bound. Owning: a paused connection has no
  // operation pending, so this list is what keeps it alive until it is resumed.
  std::vector<std::shared_ptr<Connection>> memory_paused;
  // Sweeps run so far: a coarse clock (1 s) for "has this connection's output moved".
  std::uint32_t sweeps = 0;  // wraps after 136 years; compared by unsigned difference
  std::vector<char> read_buffer = std::vector<char>(64 * 1024);  // shared by all reads
  bool flush_scheduled = false;
};

class Runtime final : public registry::BrokerPort {
 public:
  explicit Runtime(BrokerOptions options);
  ~Runtime() override;

  const BrokerOptions& options() const noexcept { return options_; }
  std::vector<std::unique_ptr<Shard>>& shards() noexcept { return shards_; }
  Shard& shard(unsigned i) noexcept { return *shards_[i]; }
  unsigned shard_count() const noexcept override { return static_cast<unsigned>(shards_.size()); }
  unsigned home_shard(std::string_view client_id) const noexcept override {
    return protocol::home_shard(client_id, shard_count());
  }
  router::Router& router() noexcept override { return router_; }
  access::Control& access() noexcept { return access_; }
  std::uint32_t max_packet_size() const noexcept override { return options_.max_packet_size; }
  void on_shard(unsigned index, std::function<void(registry::ShardAccess&)> f) override;

  /// The cluster (set before start; null on a single node).
  router::ClusterPort* cluster = nullptr;

  /// The bus (set before start, may stay null) and its `cluster:message_to` channel, whose
  /// active() is the one load a publish costs while nobody subscribes.
  std::shared_ptr<Bus> bus;
  BusChannel message_to;
  /// Publishes a client's message on `cluster:message_to` (net/bus_tap.cpp): rendered here on
  /// a single node; in cluster mode handed to the cluster with the message's remote send, so
  /// the event can name the nodes it went to. Call right after routing, on the same shard.
  void emit_message_to(const message::MessagePtr& m, mqtt::ProtocolVersion version,
                       std::uint16_t packet_id, Shard& shard);

  /// Routes a message published on `shard` (a client's, the API's, a will, $SYS) and makes
  /// sure the shard flushes.
  router::RouteResult route(const message::MessagePtr& m, Shard& shard);
  /// Carries out what `shard` queued: the deliveries to each shard (this one's delivered
  /// inline, the others posted as one batch each), the messages and route changes for the
  /// cluster, and the output of every connection with some. Every handler that may have
  /// produced output ends with it, or relies on schedule_flush().
  void flush(Shard& shard);
  /// Makes sure flush() runs on the shard after the current handler (idempotent).
  void schedule_flush(Shard& shard);

  // ---- lifecycle ----
  void start_sweeps();
  /// True while the bytes queued in the whole broker exceed BrokerOptions::max_queued_bytes
  /// (publishers are then read at most once per sweep: TCP back-pressure, not drops).
  bool memory_over() const noexcept;

  /// The overload limits in force (Broker::set_limits() replaces them; any thread).
  protocol::Limits limits;
  std::atomic<std::uint64_t> connection_count{0};
  std::atomic<bool> stopping{false};
  const Clock::time_point started_at = Clock::now();

  /// Counters summed over the shards plus the shared gauges (any thread).
  BrokerStats stats() const;

 private:
  void sweep(Shard& shard);
  void publish_sys(Shard& shard);
  /// Resumes reading from the publishers this shard paused for memory.
  void resume_paused(Shard& shard);

  BrokerOptions options_;
  router::Router router_;
  access::Control access_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace brokerha::net
