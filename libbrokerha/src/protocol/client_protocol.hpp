// SPDX-License-Identifier: Apache-2.0
#pragma once
// The MQTT protocol of one client connection, as the server runs it, without I/O: bytes and
// clock ticks in; packets to send (its OutputQueue), messages to route, hook questions, the
// session to attach, and "close" out. It owns the connection's protocol state: CONNECT and
// authentication, the session it is attached to, QoS 1/2 in both directions, topic aliases
// both ways, receive maximum, keep alive, takeover, resending after a reconnect, and the
// client's maximum packet size.
//
// It talks to the rest of the broker through two things. The ShardContext: the router, the
// session registry, access control and counters of the shard it runs on (pure code, called
// directly). And its Host: the connection driver (net::Connection) that owns the socket,
// writes what is queued, moves the connection to its session's shard and reaches the cluster.
// Tests drive it with a Host of their own (tests/support/protocol_harness.hpp).
//
// Thread: one thread at a time, the connection's shard; the Host calls back on it.

#include <brokerha/hooks.hpp>
#include <brokerha/options.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "access/control.hpp"
#include "mqtt/codec.hpp"
#include "protocol/output_queue.hpp"
#include "registry/session_registry.hpp"
#include "router/cluster_port.hpp"
#include "router/counters.hpp"
#include "router/router.hpp"
#include "session/client_session.hpp"
#include "util/ring.hpp"
#include "util/token_bucket.hpp"

namespace brokerha::protocol {

using Clock = std::chrono::steady_clock;
using message::Message;
using message::MessagePtr;
using session::ClientSessionPtr;

/// The shard a protocol runs on: its services. Pure code, called directly.
/// The overload limits in force (BrokerOptions' max_connections, max_connection_rate,
/// max_subscriptions, max_publish_rate, max_session_queued_bytes), replaced by Broker::set_limits()
/// while connections read them: any thread, relaxed loads.
struct Limits {
  Limits() = default;
  explicit Limits(const BrokerOptions& o) noexcept { set(o); }
  void set(const BrokerOptions& o) noexcept {
    max_connections.store(o.max_connections, std::memory_order_relaxed);
    max_connection_rate.store(o.max_connection_rate, std::memory_order_relaxed);
    max_subscriptions.store(o.max_subscriptions, std::memory_order_relaxed);
    max_publish_rate.store(o.max_publish_rate, std::memory_order_relaxed);
    max_session_queued_bytes.store(o.max_session_queued_bytes, std::memory_order_relaxed);
  }
  std::atomic<std::uint32_t> max_connections{0};
  std::atomic<std::uint32_t> max_connection_rate{0};
  std::atomic<std::uint32_t> max_subscriptions{0};
  std::atomic<std::uint32_t> max_publish_rate{0};
  std::atomic<std::uint64_t> max_session_queued_bytes{0};
};

struct ShardContext {
  unsigned index = 0;
  unsigned shard_count = 1;
  const BrokerOptions& options;
  router::Router& router;
  registry::SessionRegistry& sessions;
  const access::Control& access;
  router::Counters& counters;
  router::Outbox& outbox;
  const Limits& limits;

  /// The wall-clock time at steady time `now`, read once per distinct `now`: the messages of
  /// one read share their arrival time, so a burst of them costs one clock read, not one each
  /// (a clock read is not cheap on every machine, virtual ones above all).
  std::chrono::system_clock::time_point wall_at(Clock::time_point now) {
    if (now != wall_for_) {
      wall_for_ = now;
      wall_ = std::chrono::system_clock::now();
    }
    return wall_;
  }

  // wall_at()'s cache (left out of the initializer list: this stays an aggregate).
  Clock::time_point wall_for_{};
  std::chrono::system_clock::time_point wall_{};
};

/// The shard whose sessions hold `client_id`.
inline unsigned home_shard(std::string_view client_id, unsigned shard_count) noexcept {
  return static_cast<unsigned>(std::hash<std::string_view>{}(client_id) % shard_count);
}

/// CONNECT's fields as the protocol keeps them while hooks, the cluster and the move to the
/// session's shard decide (copied out of the read buffer).
struct ConnectInfo {
  mqtt::ProtocolVersion version = mqtt::ProtocolVersion::v311;
  std::string client_id;
  bool assigned_id = false;
  bool clean_start = true;
  std::uint16_t keep_alive = 0;
  bool keep_alive_lowered = false;
  bool session_expiry_lowered = false;
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::uint32_t session_expiry = 0;
  MessagePtr will;
  std::uint32_t will_delay = 0;
  bool claimed = false;  // cluster mode: the claim on the client id has been settled
};

class ClientProtocol;

/// What the protocol needs from the connection that carries it. Every call is made on the
/// connection's thread; every callback it is given must run there too.
class Host {
 public:
  /// The shard the connection runs on now.
  virtual ShardContext& shard() = 0;
  /// Output was queued: write it once the current handler is done.
  virtual void output_ready() = 0;
  /// The connection ends now: close the socket (what is queued is dropped).
  virtual void close_socket() = 0;
  /// The connection ends once its queued output is written (a transport says goodbye with
  /// `ws_close_code`, RFC 6455). The Host calls ClientProtocol::close() when that is done,
  /// or after a grace period.
  virtual void close_when_written(int ws_close_code) = 0;
  /// Runs `f` later on the connection's thread (a hook answered from another thread).
  virtual void post(std::function<void()> f) = 0;
  /// A decision the protocol waited for is made (paused() may be false again): write what is
  /// queued and read the client again.
  virtual void resumed() = 0;
  /// CONNECT is accepted: put the connection on the shard of `info->client_id`'s session,
  /// then call ClientProtocol::placed(info) there (inline when it is already there).
  virtual void place(std::shared_ptr<ConnectInfo> info) = 0;
  /// Cluster mode: settle the claim on a client id (`done` on this thread). False on a
  /// single node: there is nothing to claim.
  virtual bool claim(const std::string& client_id, bool resume,
                     std::function<void(router::ClaimResult)> done) = 0;
  /// The client is told about `filters` (its SUBACK, or the CONNACK of a session that moved
  /// here) only once every peer knows this node routes them: hands them to the cluster with
  /// the shard's pending route changes and runs `done` on this thread once the peers
  /// acknowledged everything announced so far (bounded). False on a single node, or with no
  /// filters: nothing to wait for.
  virtual bool await_routes(std::vector<std::string> filters, std::function<void()> done) = 0;
  /// A client's message: route it (and tell the bus tap), schedule the shard's flush.
  virtual router::RouteResult publish(const MessagePtr& message, std::uint16_t packet_id) = 0;
  /// The listener takes usernames from client certificates: the verified certificate's name
  /// (empty: none verified). nullopt when the listener does not.
  virtual std::optional<std::string> certificate_username() = 0;
  /// Keeps the connection, and so this protocol, alive while held: continuations that may run
  /// after the current call (hook answers, the cluster's) hold one.
  virtual std::shared_ptr<void> hold() = 0;

 protected:
  ~Host() = default;
};

class ClientProtocol final : public session::Attachment {
 public:
  ClientProtocol(Host& host, std::uint32_t max_packet_size, Clock::time_point now);
  ~ClientProtocol();

  ClientProtocol(const ClientProtocol&) = delete;
  ClientProtocol& operator=(const ClientProtocol&) = delete;

  // ---- input ----
  /// Bytes from the client (after the transport). False when reading should stop for now:
  /// the connection closed or is closing, or a decision is pending (packets that follow are
  /// parked and handled once it is made).
  bool on_bytes(std::string_view bytes, Clock::time_point now);
  /// Once a second: connect timeout and keep alive. `not_read`: the driver does not read the
  /// client on purpose (memory back-pressure, a full backlog): its silence is not idleness.
  void on_tick(Clock::time_point now, bool not_read);
  /// The peer's address (the socket's, or a PROXY header's).
  void set_peer(std::string address, std::uint16_t port);
  /// Bytes arrived (any: a TLS record, a WebSocket ping): the client is not idle.
  void on_activity(Clock::time_point now) noexcept { last_activity_ = now; }

  // ---- the Host's answers ----
  /// The connection is on the session's shard (Host::place).
  void placed(std::shared_ptr<ConnectInfo> info);

  // ---- Attachment ----
  void pump() override;
  void kick(ReasonCode reason) override;
  const std::string& remote_address() const noexcept override { return remote_address_; }
  std::uint16_t remote_port() const noexcept override { return remote_port_; }

  /// Broker shutdown: v5 clients get DISCONNECT 0x8B.
  void shutdown() { kick(ReasonCode::server_shutting_down); }
  /// The connection ends now (socket error, EOF, the close grace ran out): the session is
  /// detached (the will published unless the client said goodbye) and the Host closes the
  /// socket.
  void close();
  /// The same, saying why (event hooks see it): a stuck consumer is closed with quota_exceeded.
  void close(ReasonCode reason);
  /// The connection ends once its queued output is written (the transport refused the
  /// client's bytes and queued its own goodbye, or the protocol gave up on the client).
  void close_after_write();

  // ---- state the driver reads ----
  bool closed() const noexcept { return state_ == State::closed; }
  /// Closed, or closing once the queued output is written.
  bool closing() const noexcept { return state_ == State::closed || closing_; }
  /// A decision is pending (hooks, the cluster, the move): reading waits.
  bool paused() const noexcept { return paused_; }
  bool connected() const noexcept { return state_ == State::connected; }
  /// When closing began (meaningful once closing()).
  Clock::time_point closing_since() const noexcept { return since_; }
  mqtt::ProtocolVersion version() const noexcept { return version_; }
  /// Output queued and not yet taken by the driver (null or empty: none).
  OutputQueue* output() noexcept { return out_.get(); }
  bool has_output() const noexcept { return out_ && !out_->empty(); }
  /// Bytes queued or being written: what the client has not read yet.
  std::size_t backlog() const noexcept { return backlog_; }
  /// The driver finished writing `bytes` it took from the queue (or dropped them): they
  /// leave the backlog and the shard's memory account.
  void written(std::size_t bytes) noexcept;
  /// True once since the last call when a PUBLISH arrived (the driver's memory back-pressure).
  bool take_published() noexcept {
    const bool p = published_;
    published_ = false;
    return p;
  }
  /// The partial packet buffer and an empty output queue go back to the allocator (idle
  /// connections hold neither).
  void shrink_idle();

  /// Output queued beyond this stops taking deliveries off the session queue and stops
  /// reading from the client, so a client that does not read cannot grow it without bound.
  static constexpr std::size_t kMaxBacklogBytes = 1 << 20;

 private:
  enum class State : std::uint8_t { awaiting_connect, connecting, connected, closed };

  // A complete packet parked while a decision is pending.
  struct Frame {
    std::uint8_t first;
    std::string body;
  };

  // ---- reading ----
  bool first_bytes_ok(std::string_view bytes);
  mqtt::Status on_frame(std::uint8_t first, std::string_view body);
  mqtt::Status handle(std::uint8_t first, std::string_view body);
  void resume();

  // ---- CONNECT and the session ----
  mqtt::Status on_connect(mqtt::Connect& c);
  void authenticated(std::shared_ptr<ConnectInfo> info, Decision decision);
  void claim_settled(std::shared_ptr<ConnectInfo> info, router::ClaimResult result);
  /// A moved session is installed and its routes acknowledged: with a trail to wait for
  /// (ClaimResult::moved), attach once it came and went in after the `came` deliveries that
  /// came with the session; without, attach now.
  void settle_move(std::shared_ptr<ConnectInfo> info,
                   const std::function<void(bool, std::function<void(std::string)>)>& moved,
                   std::size_t came);
  void attach(std::shared_ptr<ConnectInfo> info);
  void detach_session(bool publish_will);

  // ---- packets ----
  mqtt::Status on_publish(mqtt::Publish& p);
  void finish_publish(const MessagePtr& message, std::uint16_t packet_id, Decision decision);
  mqtt::Status on_subscribe(mqtt::Subscribe& s);
  struct PendingSubscribe;
  bool finish_subscribe(PendingSubscribe& p);
  void complete_subscribe(const mqtt::Suback& ack, std::vector<session::Delivery>& retained);
  mqtt::Status on_unsubscribe(const mqtt::Unsubscribe& u);
  mqtt::Status on_disconnect(const mqtt::Disconnect& d);
  // The rules' ACL decision once every hook deferred.
  bool rules_allow(std::string_view topic, Access access, bool is_filter) const;
  access::Identity identity() const;

  // ---- writing ----
  void send(const mqtt::Packet& packet);
  // False when the message cannot be sent to this client (larger than its maximum packet).
  bool send_delivery(const session::Delivery& d, std::uint16_t packet_id, bool dup);
  OutputQueue& out() {
    if (!out_) out_ = std::make_unique<OutputQueue>();
    return *out_;
  }
  void queued(std::size_t bytes);

  // ---- ending ----
  /// Protocol violation: v5 gets DISCONNECT (or CONNACK before CONNECT completes) with the
  /// reason code; then the connection closes once the output is written.
  void fail(ReasonCode reason, std::string_view why = {});
  void send_disconnect(ReasonCode reason, std::string_view why);
  /// v5 and the client did not turn problem information off (Request Problem Information
  /// 0): reason strings may go on acknowledgements.
  bool problem_info() const noexcept {
    return version_ == mqtt::ProtocolVersion::v5 && problem_info_;
  }
  void counter(std::atomic<std::uint64_t> router::Counters::*c, std::uint64_t n = 1) {
    router::Counters::add(host_.shard().counters.*c, n);
  }

  // Topic aliases (v5), allocated on first use: most connections never use them.
  struct Aliases {
    std::unordered_map<std::uint16_t, std::string> in;   // alias -> topic (inbound)
    std::size_t in_bytes = 0;                            // topic bytes held by `in`
    std::unordered_map<std::string, std::uint16_t> out;  // topic -> alias we sent
    std::size_t out_bytes = 0;                           // topic bytes held by `out`
  };
  Aliases& aliases() {
    if (!aliases_) aliases_ = std::make_unique<Aliases>();
    return *aliases_;
  }
  // Frames that arrived while a decision is pending (allocated when first needed).
  util::Ring<Frame>& parked() {
    if (!parked_) parked_ = std::make_unique<util::Ring<Frame>>();
    return *parked_;
  }
  bool has_parked() const noexcept { return parked_ && !parked_->empty(); }

  // Members grouped by size, largest first: one exists per client, and its size is part of the
  // memory of an idle connection.
  Host& host_;
  std::string remote_address_;
  mqtt::Framer framer_;
  ClientSessionPtr session_;
  MessagePtr will_;  // published when the connection is lost (after will_delay_)
  std::unique_ptr<Aliases> aliases_;
  std::unique_ptr<util::Ring<Frame>> parked_;
  std::unique_ptr<OutputQueue> out_;
  Clock::time_point last_activity_;
  // When the connection was opened (until CONNECT completes: the connect timeout), then when
  // closing began (the driver's close grace). One field: an idle connection's size counts.
  Clock::time_point since_;
  std::size_t backlog_ = 0;  // queued + being written
  std::uint32_t will_delay_ = 0;
  std::uint32_t client_max_packet_ = mqtt::kMaxPacketSize;
  std::uint16_t remote_port_ = 0;
  std::uint16_t keep_alive_ = 0;
  std::uint16_t send_window_ = 0;       // min(our max_inflight, client Receive Maximum)
  std::uint16_t client_alias_max_ = 0;  // aliases we may send (client's maximum, v5)
  util::TokenBucket publish_rate_;      // max_publish_rate
  State state_ = State::awaiting_connect;
  mqtt::ProtocolVersion version_ = mqtt::ProtocolVersion::v311;
  // Why the connection ends (event hooks): the client's DISCONNECT reason, or ours.
  ReasonCode close_reason_ = ReasonCode::unspecified_error;
  bool problem_info_ = true;  // v5 Request Problem Information (reason strings on acks)
  bool graceful_ = false;     // DISCONNECT received (no will unless v5 reason 0x04)
  bool paused_ = false;       // a decision is pending
  bool published_ = false;    // a PUBLISH arrived since take_published()
  bool closing_ = false;      // closes once the output is written
};

}  // namespace brokerha::protocol
