// SPDX-License-Identifier: Apache-2.0
#pragma once
// One MQTT client connection over TCP: reading and framing, the protocol state machine of
// one client, and a batched write queue. TLS, WebSocket and PROXY headers sit in an optional
// Transport between the socket and the framer (net/transport.hpp); plain TCP has none.
//
// Thread: everything runs on the connection's shard thread. A connection starts on the shard
// that accepted it and moves once, after CONNECT, to the shard of its client id's session
// (the socket's descriptor is released and re-assigned there; no operation is pending then).
//
// Reading: no buffer while idle: wait for readability, read into the shard's buffer, keep
// only an incomplete packet (in the Framer). While a hook decision is pending the connection
// stops reading and parks any further complete packets, so packet order is kept.
//
// Writing: packets are appended to a pending list (own bytes in one growing string; shared
// encodings of QoS 0 messages by reference) and written with one gathered async_write per
// batch, at the end of the handler that produced them; one write in flight at a time.

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mqtt/codec.hpp"
#include "net/asio.hpp"
#include "net/core.hpp"
#include "net/transport.hpp"
#include "util/ring.hpp"

namespace brokerha::net {

/// A client socket bound to its shard's io_context. The concrete executor type (instead of
/// the type-erased any_io_executor of asio::ip::tcp::socket) makes the socket and every
/// pending operation smaller: it matters per idle connection.
using Socket = asio::basic_stream_socket<asio::ip::tcp, asio::io_context::executor_type>;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  /// `transport`: null for plain TCP.
  Connection(Core& core, Shard& shard, Socket socket,
             std::unique_ptr<Transport> transport = nullptr);
  ~Connection();

  /// Starts reading; on the shard thread.
  void start();

  /// Sends what the session's queue allows (deliveries were queued by the router).
  void pump();
  /// Sends any queued output now (one gathered write).
  void flush();
  /// Closes because another connection took the session over, or an operator asked.
  void kick(ReasonCode reason);
  /// Closes for broker shutdown: v5 clients get DISCONNECT 0x8B.
  void shutdown();
  /// Reads again after a pause for the global memory bound.
  void resume_reading();
  /// Keep-alive and connect timeouts (called by the shard's sweep).
  void check_timeouts(Clock::time_point now);

  Shard& shard() const noexcept { return *shard_; }
  /// The shard's sweep dropped this (closed) connection from its list.
  void unlinked() noexcept { linked_ = false; }
  bool closed() const noexcept { return state_ == State::closed; }
  /// Closed, or closing once its last bytes are written (kicked, failed).
  bool closing() const noexcept { return state_ == State::closed || close_when_written_; }
  const std::string& remote_address() const noexcept { return remote_address_; }
  std::uint16_t remote_port() const noexcept { return remote_port_; }

 private:
  enum class State { awaiting_connect, connecting, connected, closed };

  struct Chunk {
    MessagePtr keep;                      // keeps `shared` alive
    const std::string* shared = nullptr;  // a message's cached encoding, or null
    std::size_t begin = 0;                // own bytes [begin, end) when `shared` is null
    std::size_t end = 0;
  };

  // A complete packet parked while a decision is pending.
  struct Frame {
    std::uint8_t first;
    std::string body;
  };

  // CONNECT fields copied out of the read buffer (hooks may answer later).
  struct ConnectInfo {
    mqtt::ProtocolVersion version;
    std::string client_id;
    bool assigned_id = false;
    bool clean_start = true;
    std::uint16_t keep_alive = 0;
    bool keep_alive_lowered = false;
    bool session_expiry_lowered = false;
    std::optional<std::string> username;
    std::optional<std::string> password;
    std::uint32_t session_expiry = 0;
    std::optional<PendingWill> will;  // message built, `due` relative offset in will_delay
    std::uint32_t will_delay = 0;
    bool claimed = false;  // cluster mode: the claim on the client id has been settled
  };

  // ---- reading ----
  void start_read();
  void on_readable(const std::error_code& ec);
  // False (and the connection closed) when the first byte of the first packet is not CONNECT.
  bool first_bytes_ok(std::string_view bytes);
  // Feeds `n` bytes of the shard's buffer through the transport; false ends this read round.
  bool transport_input(std::vector<char>& buffer, std::size_t n);
  mqtt::Status on_frame(std::uint8_t first, std::string_view body);
  mqtt::Status handle(std::uint8_t first, std::string_view body);
  void resume();

  // ---- packets ----
  mqtt::Status on_connect(mqtt::Connect& c);
  void finish_connect(std::shared_ptr<ConnectInfo> info, Decision decision);
  void proceed_connect(std::shared_ptr<ConnectInfo> info);
  void migrate_and_attach(std::shared_ptr<ConnectInfo> info);
  void attach(std::shared_ptr<ConnectInfo> info);
  // Cluster mode: the claim on the client id is settled (on the home shard).
  void finish_claim(std::shared_ptr<ConnectInfo> info, ClaimResult result);
  mqtt::Status on_publish(mqtt::Publish& p);
  void finish_publish(const MessagePtr& message, std::uint16_t packet_id, Decision decision);
  // The built-in rules' ACL decision once every hook deferred.
  bool rules_allow(std::string_view topic, Access access, bool is_filter) const;
  mqtt::Status on_subscribe(mqtt::Subscribe& s);
  mqtt::Status on_unsubscribe(const mqtt::Unsubscribe& u);
  void complete_subscribe(const mqtt::Suback& ack, std::vector<session::Delivery>& retained);
  mqtt::Status on_disconnect(const mqtt::Disconnect& d);

  // Runs a hook chain; `k` gets the first non-defer answer (or defer) on this thread.
  template <class Hook, class Ask>
  void decide(const std::vector<std::shared_ptr<Hook>>& hooks, Ask ask,
              std::function<void(Decision)> k);

  // ---- writing ----
  void send(const mqtt::Packet& packet);
  // False when the message cannot be sent to this client (larger than its maximum packet).
  bool send_delivery(const session::Delivery& d, std::uint16_t packet_id, bool dup);
  void append_own(std::size_t begin);
  void mark_dirty();
  void add_backlog(std::size_t bytes);
  void remove_backlog(std::size_t bytes);
  void on_written(const std::error_code& ec, std::size_t bytes);

  // ---- ending ----
  /// Protocol violation: v5 gets DISCONNECT (or CONNACK before CONNECT completes) with the
  /// reason code; then the connection closes once the output is written.
  void fail(ReasonCode reason, std::string_view why = {});
  /// v5: sends DISCONNECT with the reason code and, when it fits the client's Maximum Packet
  /// Size, `why` as its Reason String.
  void send_disconnect(ReasonCode reason, std::string_view why);
  /// v5 and the client did not turn problem information off (Request Problem Information
  /// 0): reason strings may go on acknowledgements.
  bool problem_info() const noexcept {
    return version_ == mqtt::ProtocolVersion::v5 && problem_info_;
  }
  void close_after_write();
  void close();
  void detach_session(bool publish_will);

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

  // Output buffers, allocated on the first send and handed back while nothing is pending or
  // being written (see on_written() and check_timeouts()): idle connections hold none.
  struct Output {
    std::vector<Chunk> pending;  // queued since the last write started
    std::string pending_own;     // bytes encoded for this connection only
    std::vector<Chunk> writing;  // what the active write sends
    std::string writing_own;
    std::vector<asio::const_buffer> buffers;
    std::string wire;  // bytes the transport made for the active write
    std::vector<asio::const_buffer> wire_buffers;
  };
  Output& out() {
    if (!out_) out_ = std::make_unique<Output>();
    return *out_;
  }
  bool has_pending() const noexcept { return out_ && !out_->pending.empty(); }
  // Pending MQTT output, or bytes of the transport (handshakes, close frames).
  bool has_output() const noexcept {
    return has_pending() || (transport_ && transport_->has_output());
  }

  // Frames that arrived while a hook decision is pending (allocated when first needed).
  util::Ring<Frame>& parked() {
    if (!parked_) parked_ = std::make_unique<util::Ring<Frame>>();
    return *parked_;
  }
  bool has_parked() const noexcept { return parked_ && !parked_->empty(); }

  // Members grouped by size, largest first: one Connection exists per client, and its size is
  // a good part of the memory of an idle connection (docs/benchmarks.md).
  Core& core_;
  Shard* shard_;
  std::list<std::weak_ptr<Connection>>::iterator link_;  // in shard_->connections
  Socket socket_;
  std::string remote_address_;
  mqtt::Framer framer_;
  ClientSessionPtr session_;
  MessagePtr will_;  // published when the connection is lost (after will_delay_)
  std::unique_ptr<Aliases> aliases_;
  std::unique_ptr<util::Ring<Frame>> parked_;
  std::unique_ptr<Output> out_;
  std::unique_ptr<Transport> transport_;  // null: plain TCP
  Clock::time_point last_activity_ = Clock::now();
  // Until CONNECT completes: when the connection was opened (connect_timeout). Once a close is
  // requested: when it was (kCloseGrace).
  Clock::time_point since_ = Clock::now();
  std::size_t backlog_bytes_ = 0;  // pending + writing
  // shard_->sweeps (a 1 s clock) when the backlog last shrank or began, and at the last write.
  std::uint32_t output_moved_ = 0;
  std::uint32_t last_write_sweep_ = ~std::uint32_t{0};
  std::uint32_t will_delay_ = 0;
  std::uint32_t client_max_packet_ = mqtt::kMaxPacketSize;
  std::uint16_t remote_port_ = 0;
  std::uint16_t keep_alive_ = 0;
  std::uint16_t send_window_ = 0;       // min(our max_inflight, client Receive Maximum)
  std::uint16_t client_alias_max_ = 0;  // aliases we may send (client's maximum, v5)
  State state_ = State::awaiting_connect;
  mqtt::ProtocolVersion version_ = mqtt::ProtocolVersion::v311;
  // Why the connection ends (event hooks): the client's DISCONNECT reason, or ours.
  ReasonCode close_reason_ = ReasonCode::unspecified_error;
  bool linked_ = false;
  bool problem_info_ = true;  // v5 Request Problem Information (reason strings on acks)
  bool graceful_ = false;     // DISCONNECT received (no will unless v5 reason 0x04)
  // reading
  bool reading_ = false;
  bool in_handler_ = false;
  bool paused_ = false;         // a hook decision is pending
  bool memory_paused_ = false;  // not read while the broker is over its memory bound
  bool published_ = false;      // a PUBLISH arrived in the current read
  // writing
  bool write_active_ = false;
  bool dirty_ = false;
  bool close_when_written_ = false;
};

}  // namespace brokerha::net
