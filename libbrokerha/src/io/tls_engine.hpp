// SPDX-License-Identifier: Apache-2.0
#pragma once
// One TLS connection run by OpenSSL over two memory BIOs, for code that keeps its own socket:
// the ciphertext read from the socket goes in (feed), the handshake, plaintext reads and writes
// and close_notify run here, and the ciphertext to write comes out (drain). The SSL_CTX is its
// user's: the MQTT listeners' certificates (net/transport.cpp) and the cluster links' TLS 1.3
// pre-shared key (cluster/link_tls.cpp). Nothing here waits or touches a socket, so the state
// is tied to no thread or io_context: a client connection that moves to another shard after
// CONNECT takes its engine along.
//
// OpenSSL's error queue is cleared before each operation and after each failure, so the
// result of one connection never leaks into another's on the same thread.
//
// Thread: the owner's (a shard for a client connection, the cluster control thread for a
// link); one thread at a time.

#include <openssl/ssl.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace brokerha::io {

/// OpenSSL's oldest queued error as text ("unknown OpenSSL error" when none), and the
/// thread's error queue cleared.
std::string openssl_error();

class TlsEngine {
 public:
  enum class Role { client, server };
  /// Outcome of handshake() and read().
  enum class Status {
    ok,      // handshake complete / `n` plaintext bytes read
    want,    // more ciphertext from the peer is needed
    closed,  // the peer sent close_notify (read() only)
    failed,  // a fatal error; an alert for the peer may be waiting in the output
  };

  TlsEngine() = default;
  ~TlsEngine();
  TlsEngine(const TlsEngine&) = delete;
  TlsEngine& operator=(const TlsEngine&) = delete;

  /// Starts a connection on `ctx` as client or server. False (and still inactive) when
  /// OpenSSL cannot make its objects.
  bool start(SSL_CTX* ctx, Role role);
  /// True once start() succeeded.
  bool active() const noexcept { return ssl_ != nullptr; }
  bool handshake_done() const noexcept;

  /// Ciphertext from the peer; false when the memory BIO refuses it.
  bool feed(const char* data, std::size_t n);
  /// Advances the handshake with what was fed (ok: complete, also when it already was).
  Status handshake();
  /// Decrypts into buf[0, capacity): ok with n > 0 bytes, or want, closed, failed.
  Status read(char* buf, std::size_t capacity, std::size_t& n);
  /// Encrypts `bytes` (empty: nothing). False on a fatal error.
  bool write(std::string_view bytes);
  /// Queues close_notify, once the handshake is complete (before it, nothing).
  void close_notify();
  /// Appends the ciphertext waiting to be written to `out`.
  void drain(std::string& out);

  /// The common name of the peer's certificate when the peer sent one and it was verified;
  /// empty otherwise.
  std::string verified_peer_common_name() const;

 private:
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // ciphertext in (owned by ssl_)
  BIO* wbio_ = nullptr;  // ciphertext out (owned by ssl_)
};

}  // namespace brokerha::io
