// SPDX-License-Identifier: Apache-2.0
#pragma once
// The layers between a client socket and the MQTT framer on listeners other than plain TCP:
//
//   socket bytes -> [PROXY v1/v2 header] -> [TLS] -> [WebSocket frames] -> MQTT bytes
//   MQTT bytes   ->                         [WebSocket frame] -> [TLS] -> socket bytes
//
// A plain TCP connection has no Transport at all (Connection::transport_ is null), so the hot
// path and the idle memory of plain TCP are unchanged; a plain TCP listener with PROXY enabled
// drops its Transport once the header is read.
//
// TLS is OpenSSL over memory BIOs (io::TlsEngine, shared with the cluster links), not
// asio::ssl::stream: the connection keeps its "wait for readable, read into the shard's scratch
// buffer" model, and the SSL object is not tied to an io_context, so a TLS connection moves
// between shards after CONNECT exactly as a plain one does (the descriptor is released and
// re-assigned; the SSL state travels with the Connection object). This file keeps only the
// listener's context setup (certificates, client CA) and what the listener does with TLS.
//
// WebSocket (RFC 6455, server side): the HTTP upgrade (path, `mqtt` subprotocol), masked
// binary frames, fragmentation, ping/pong (a pong for the latest ping only), the close
// handshake. Frame payload is unmasked in
// place in the scratch buffer and streamed to the framer, so an MQTT packet may span frames
// and a frame may carry several packets; no frame is buffered whole. Each flush of the
// connection's output becomes one binary frame: a header of own bytes followed by the shared,
// encode-once chunks.
//
// Thread: the owning connection's shard thread only.

#include <brokerha/options.hpp>

#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/asio.hpp"
#include "io/tls_engine.hpp"

namespace brokerha::net {

/// An SSL_CTX with its reference released by SSL_CTX_free.
using SslContextPtr = std::shared_ptr<SSL_CTX>;

/// Builds the server context of a TLS listener: TLS 1.2+, its certificate chain and key, and
/// the CA for client certificates (required or optional). Throws std::runtime_error naming
/// the file and OpenSSL's reason.
SslContextPtr make_tls_context(const ListenerOptions& listener);

/// One listener as connections see it: its options and its current TLS context (replaced by
/// Broker::reload_tls(); connections keep the context they started with).
class ListenerState {
 public:
  explicit ListenerState(ListenerOptions o) : options(std::move(o)) {}
  const ListenerOptions options;
  bool needs_transport() const noexcept {
    return options.type != ListenerType::tcp || options.proxy_protocol;
  }
  SslContextPtr tls() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return tls_;
  }
  void set_tls(SslContextPtr ctx) {
    std::lock_guard<std::mutex> lock(mutex_);
    tls_ = std::move(ctx);
  }

 private:
  mutable std::mutex mutex_;
  SslContextPtr tls_;
};

class Transport {
 public:
  /// What the connection does after input().
  enum class Result {
    ok,       // go on reading
    stop,     // the MQTT side refused the bytes (it has already decided how to end)
    closing,  // write output() (an alert, an HTTP error, a close frame), then close
    error,    // close now
  };
  /// Receives MQTT bytes; false stops the input.
  using Deliver = std::function<bool(std::string_view)>;

  Transport(const ListenerState& listener, std::uint32_t max_frame);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  /// Feeds `n` bytes read from the socket into scratch[0, n); the scratch buffer (of
  /// `capacity` bytes) is reused for plaintext.
  Result input(char* scratch, std::size_t capacity, std::size_t n, const Deliver& deliver);

  /// True when there are bytes to write even without MQTT output.
  bool has_output() const noexcept { return !out_.empty() || pong_pending_ || close_pending_; }
  /// Bytes this layer holds for the client beyond the MQTT output (handshake answers, the
  /// pending pong, ciphertext): part of the connection's backlog.
  std::size_t queued_bytes() const noexcept { return out_.size() + pong_.size(); }
  /// The wire form of `plain` (the MQTT bytes of one flush) in `wire`: views into `own` (bytes
  /// made here: handshake answers, frame headers, ciphertext) and into `plain`'s memory.
  void wrap(const std::vector<asio::const_buffer>& plain, std::string& own,
            std::vector<asio::const_buffer>& wire);
  /// The MQTT side is closing: end the WebSocket (close frame with `ws_code`, RFC 6455 7.4.1:
  /// 1000 normal closure, 1001 going away when the broker shuts down) and TLS (close_notify)
  /// cleanly after the output that is queued. A code chosen earlier by the WebSocket layer
  /// itself (1002, 1003, 1007, 1009) is kept.
  void closing(std::uint16_t ws_code = 1000);

  /// The client's address from a PROXY header, once read (taken once).
  std::optional<std::pair<std::string, std::uint16_t>> take_peer() {
    auto p = std::move(peer_);
    peer_.reset();
    return p;
  }
  /// Nothing left to do (PROXY header read, no TLS, no WebSocket): the connection may drop it.
  bool passthrough() const noexcept { return !proxy_pending_ && !tls_.active() && !ws_; }
  /// The verified client certificate's CN (empty: none).
  const std::string& identity() const noexcept { return identity_; }
  bool use_identity_as_username() const noexcept { return use_identity_; }

  /// Run by the connection once its active write completes (a move to another shard that
  /// waited for the handshake answer to be written).
  std::function<void()> after_write;

 private:
  Result after_proxy(char* scratch, std::size_t capacity, char* data, std::size_t n,
                     const Deliver& deliver);
  Result after_tls(char* data, std::size_t n, const Deliver& deliver);
  Result proxy_input(char*& data, std::size_t& n);
  Result ws_handshake(char*& data, std::size_t& n);
  Result ws_frames(char* data, std::size_t n, const Deliver& deliver);
  Result ws_control();
  Result ws_fail(std::uint16_t code);
  // Queues bytes of the layer above TLS (WebSocket handshake and control frames).
  void emit(std::string_view bytes);
  Result tls_error();

  // PROXY
  bool proxy_pending_ = false;
  std::string proxy_buf_;
  std::optional<std::pair<std::string, std::uint16_t>> peer_;
  // TLS (io/tls_engine.hpp: handshake, records and close_notify over memory BIOs)
  io::TlsEngine tls_;
  bool use_identity_ = false;
  bool broken_ = false;  // a TLS listener that could not make its SSL object
  std::string identity_;
  // WebSocket
  bool ws_ = false;
  bool ws_open_ = false;  // handshake answered
  std::string ws_path_;
  std::string request_;  // the HTTP request until its end
  std::uint8_t header_[14] = {};
  std::uint8_t header_len_ = 0;
  std::uint8_t mask_[4] = {};
  std::uint8_t mask_pos_ = 0;
  std::uint8_t opcode_ = 0;
  bool in_frame_ = false;
  bool in_message_ = false;  // a fragmented binary message continues
  std::uint64_t remaining_ = 0;
  std::uint64_t max_frame_ = 0;
  std::string control_;  // payload of the current control frame
  // The answer to the latest ping, written with the next flush. Only the latest ping needs
  // an answer (RFC 6455 5.5.3): a client that streams pings and never reads costs one pong,
  // not one per ping.
  std::string pong_;
  bool pong_pending_ = false;
  std::uint16_t close_code_ = 0;
  bool close_pending_ = false;  // a close frame / close_notify goes after the queued output
  bool close_sent_ = false;
  // Wire bytes waiting to be written (before any MQTT output of the next flush).
  std::string out_;
};

}  // namespace brokerha::net
