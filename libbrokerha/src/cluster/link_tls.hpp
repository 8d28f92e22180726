// SPDX-License-Identifier: Apache-2.0
#pragma once
// The cluster links' TLS contexts (docs/cluster-protocol.md, "TLS 1.3 with an external PSK"):
// TLS 1.3 only, TLS_AES_128_GCM_SHA256 only, no certificates, tickets or resumption, and an
// external pre-shared key derived from each of the cluster's secret keys by HKDF-SHA256, each
// under its own identity (key rotation). The connections run on io::TlsEngine
// (io/tls_engine.hpp).
//
// Thread: made once by the link manager (cluster/link.cpp); the contexts are then used by the
// cluster's control thread, and OpenSSL reads them from the connections it runs there.

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

namespace brokerha::cluster {

/// HKDF-SHA256(secret_key, salt, info) -> the 32-byte PSK. Throws std::runtime_error when
/// OpenSSL cannot derive it.
std::string derive_link_psk(const std::string& secret_key);

/// The PSKs of a keyring: each key's PSK and the identity it is offered under.
struct LinkPsks {
  struct Entry {
    std::string identity;  // what a client offers with this key (first entry only)
    std::string tag;       // the key's own identity, "brokerha-link-v2:<hex>", always accepted
    std::string psk;
  };
  std::vector<Entry> entries;  // entries[0]: the first key's, offered by the client
};

/// The PSKs of `keys` (each 16, 24 or 32 bytes; at least one). Each key has its own identity
/// (`tag`), "brokerha-link-v2:" and 16 hex digits of SHA-256 over its PSK, so that a server
/// picks the matching key (OpenSSL offers a single external PSK per ClientHello). A client
/// with one key offers "brokerha-link-v1" instead, as nodes without rotation do; a server
/// takes that identity as its first key's, and every key's tag whatever its ring's size.
LinkPsks derive_link_psks(const std::vector<std::string>& keys);

/// A client and a server context sharing one keyring: the client offers the first key's PSK,
/// the server accepts any key's (and "brokerha-link-v1" with the first key's). Not copied or
/// moved: the contexts point at the keyring this object holds.
class LinkTlsContexts {
 public:
  /// `keys`: raw 16, 24 or 32 bytes each, at least one. Throws std::invalid_argument for a
  /// bad key, std::runtime_error when OpenSSL cannot make a context.
  explicit LinkTlsContexts(const std::vector<std::string>& keys);
  LinkTlsContexts(const LinkTlsContexts&) = delete;
  LinkTlsContexts& operator=(const LinkTlsContexts&) = delete;

  SSL_CTX* client() const noexcept { return client_.get(); }
  SSL_CTX* server() const noexcept { return server_.get(); }

  /// Replaces the keyring (rotation). On the thread that runs the handshakes: OpenSSL reads
  /// the keyring from its callbacks there. Throws std::invalid_argument for a bad key.
  void set_keys(const std::vector<std::string>& keys);

 private:
  using CtxPtr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;
  static CtxPtr make(bool server, const LinkPsks* psks);

  LinkPsks psks_;
  CtxPtr client_;
  CtxPtr server_;
};

}  // namespace brokerha::cluster
