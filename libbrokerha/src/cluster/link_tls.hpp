// SPDX-License-Identifier: Apache-2.0
#pragma once
// The cluster links' TLS contexts (docs/cluster-protocol.md, "TLS 1.3 with an external PSK"):
// TLS 1.3 only, TLS_AES_128_GCM_SHA256 only, no certificates, tickets or resumption, and one
// external pre-shared key derived from the cluster's secret key by HKDF-SHA256, offered under
// one identity. The connections themselves run on io::TlsEngine (io/tls_engine.hpp).
//
// Thread: made once by the link manager (cluster/link.cpp); the contexts are then used by the
// cluster's control thread, and OpenSSL reads them from the connections it runs there.

#include <openssl/ssl.h>

#include <memory>
#include <string>

namespace brokerha::cluster {

/// HKDF-SHA256(secret_key, salt, info) -> the 32-byte PSK. Throws std::runtime_error when
/// OpenSSL cannot derive it.
std::string derive_link_psk(const std::string& secret_key);

/// A client and a server context sharing one PSK. Not copied or moved: the contexts point at
/// the key this object holds.
class LinkTlsContexts {
 public:
  /// `secret_key`: the raw 16, 24 or 32 bytes. Throws std::runtime_error when OpenSSL cannot
  /// make a context.
  explicit LinkTlsContexts(const std::string& secret_key);
  LinkTlsContexts(const LinkTlsContexts&) = delete;
  LinkTlsContexts& operator=(const LinkTlsContexts&) = delete;

  SSL_CTX* client() const noexcept { return client_.get(); }
  SSL_CTX* server() const noexcept { return server_.get(); }

 private:
  using CtxPtr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;
  static CtxPtr make(bool server, const std::string* psk);

  std::string psk_;
  CtxPtr client_;
  CtxPtr server_;
};

}  // namespace brokerha::cluster
