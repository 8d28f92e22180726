// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha-bench's client transports: plain TCP, TLS (asio::ssl::stream over the socket),
// WebSocket (RFC 6455: the upgrade with the `mqtt` subprotocol, MQTT in masked binary frames)
// and WebSocket in TLS. A plain TCP connection has no wrapper at all (Conn::wrap_ is null) and
// keeps client.cpp's readiness + non-blocking read path into the shared buffer; a wrapped one
// reads with async_read_some into its own buffer, and each flush becomes one write (one binary
// frame). transports.cpp defines these and Conn's connect, handshake, wrapped read and wrapped
// write members. Everything runs on the bench's one thread.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "asio_include.hpp"
#include "options.hpp"

namespace brokerha::bench {

// The layers of a TLS / WebSocket connection (null for plain TCP).
struct Wrapped {
  std::optional<asio::ssl::stream<tcp::socket&>> tls;
  bool ws = false;
  bool reading = false;    // an async_read_some is running
  std::vector<char> buf;   // its buffer
  std::string ws_in;       // received WebSocket bytes not yet parsed
  std::string ws_key;      // Sec-WebSocket-Key of the upgrade
  std::string ws_control;  // pong frames to write before the next data frame
  std::string handshake;   // the upgrade request while it is written
};

/// The address of host:port (the first the resolver gives); exits with status 3 when there
/// is none.
tcp::endpoint resolve(asio::io_context& io, const std::string& host, std::uint16_t port);

// The client TLS context: TLS 1.2+, the server verified against --cafile (or the system's CA
// paths) unless --insecure, an optional client certificate. nullptr with a message on error.
std::unique_ptr<asio::ssl::context> make_tls_context(const Options& o);

}  // namespace brokerha::bench
