// SPDX-License-Identifier: Apache-2.0
#pragma once
// The Asio driver of one client connection: it reads the socket (through the optional
// Transport: TLS, WebSocket, PROXY header), feeds the bytes to the connection's MQTT protocol
// (protocol::ClientProtocol, which holds every protocol rule), writes what the protocol queued
// with one gathered write per batch, moves the connection to its session's shard, and applies
// back-pressure. It is the protocol's Host.
//
// Thread: everything runs on the connection's shard thread. A connection starts on the shard
// that accepted it and moves once, after CONNECT, to the shard of its client id's session
// (the socket's descriptor is released and re-assigned there; no operation is pending then).
//
// Reading: no buffer while idle: wait for readability, read into the shard's buffer, keep
// only an incomplete packet (in the protocol's framer). While a decision is pending the
// protocol parks further complete packets and the driver stops reading.
//
// Writing: one write in flight at a time; the protocol's queue is taken whole for each.

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/asio.hpp"
#include "net/runtime.hpp"
#include "net/transport.hpp"
#include "protocol/client_protocol.hpp"

namespace brokerha::net {

/// A client socket bound to its shard's io_context. The concrete executor type (instead of
/// the type-erased any_io_executor of asio::ip::tcp::socket) makes the socket and every
/// pending operation smaller: it matters per idle connection.
using Socket = asio::basic_stream_socket<asio::ip::tcp, asio::io_context::executor_type>;

class Connection final : public std::enable_shared_from_this<Connection>, public protocol::Host {
 public:
  /// `transport`: null for plain TCP.
  Connection(Runtime& runtime, Shard& shard, Socket socket,
             std::unique_ptr<Transport> transport = nullptr);
  ~Connection();

  /// Starts reading; on the shard thread.
  void start();
  /// Writes any queued output now (one gathered write).
  void flush();
  /// Reads again after a pause for the global memory bound.
  void resume_reading();
  /// Close grace, stuck consumers, idle buffers, then the protocol's timeouts (the shard's
  /// sweep, once a second).
  void check_timeouts(Clock::time_point now);

  protocol::ClientProtocol& protocol() noexcept { return protocol_; }
  Shard& current_shard() const noexcept { return *shard_; }
  /// The shard's sweep dropped this (closed) connection from its list.
  void unlinked() noexcept { linked_ = false; }
  bool closed() const noexcept { return protocol_.closed(); }
  bool closing() const noexcept { return protocol_.closing(); }

  // ---- protocol::Host ----
  protocol::ShardContext& shard() override { return shard_->context; }
  void output_ready() override;
  void close_socket() override;
  void close_when_written(int ws_close_code) override;
  void post(std::function<void()> f) override;
  void resumed() override;
  void place(std::shared_ptr<protocol::ConnectInfo> info) override;
  bool claim(const std::string& client_id, bool resume,
             std::function<void(router::ClaimResult)> done) override;
  bool await_routes(std::vector<std::string> filters, std::function<void()> done) override;
  router::RouteResult publish(const message::MessagePtr& message, std::uint16_t packet_id) override;
  std::optional<std::string> certificate_username() override;
  std::shared_ptr<void> hold() override { return shared_from_this(); }

 private:
  // ---- reading ----
  void start_read();
  void on_readable(const std::error_code& ec);
  // Feeds `n` bytes of the shard's buffer through the transport; false ends this read round.
  bool transport_input(std::vector<char>& buffer, std::size_t n);
  void take_transport_peer();

  // ---- moving to the session's shard ----
  void migrate_and_place(std::shared_ptr<protocol::ConnectInfo> info);

  // ---- ending ----
  // The server ended the connection (DISCONNECT, refused CONNACK, WebSocket close) and its
  // last bytes are written: close with a lingering close (close_socket()).
  void finish_closing();
  // A lingering close: the write side is shut down, and what the client still sends is read
  // and discarded for at most kLingerTime or kLingerBytes before the socket closes, so that
  // its unread bytes do not make the kernel send a reset that can destroy our last packet.
  void linger_read();
  void end_linger();

  // ---- writing ----
  void on_written(const std::error_code& ec, std::size_t bytes);
  // What the client has not read yet: the protocol's output and what the transport holds
  // (handshake answers, a pong, ciphertext). Reading stops at kMaxBacklogBytes.
  std::size_t backlog() const noexcept {
    return protocol_.backlog() + (transport_ ? transport_->queued_bytes() : 0);
  }
  // Pending MQTT output, or bytes of the transport (handshakes, close frames).
  bool has_output() const noexcept {
    return protocol_.has_output() || (transport_ && transport_->has_output());
  }

  // The write in flight, allocated on the first write and handed back while nothing is being
  // written (see on_written() and check_timeouts()): idle connections hold none.
  struct Writing {
    std::vector<protocol::Chunk> chunks;
    std::string own;
    std::vector<asio::const_buffer> buffers;
    std::string wire;  // bytes the transport made for the active write
    std::vector<asio::const_buffer> wire_buffers;
  };

  // Members grouped by size, largest first: one Connection exists per client, and its size is
  // a good part of the memory of an idle connection (docs/benchmarks.md).
  Runtime& rt_;
  Shard* shard_;
  std::list<std::weak_ptr<Connection>>::iterator link_;  // in shard_->connections
  Socket socket_;
  protocol::ClientProtocol protocol_;
  std::unique_ptr<Writing> writing_;
  std::unique_ptr<Transport> transport_;  // null: plain TCP
  // Only while closing with a lingering close (its timer bounds it).
  struct Linger;
  std::unique_ptr<Linger> linger_;
  // shard_->sweeps (a 1 s clock) when the backlog last shrank or began, and at the last write.
  std::uint32_t output_moved_ = 0;
  std::uint32_t last_write_sweep_ = ~std::uint32_t{0};
  bool linked_ = false;
  bool reading_ = false;
  bool in_handler_ = false;
  bool memory_paused_ = false;  // not read while the broker is over its memory bound
  bool write_active_ = false;
  bool dirty_ = false;
  bool linger_on_close_ = false;  // close_socket() lingers (a server-initiated end)
};

}  // namespace brokerha::net
