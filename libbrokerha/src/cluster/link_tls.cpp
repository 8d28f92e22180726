// SPDX-License-Identifier: Apache-2.0
// The cluster links' TLS 1.3 PSK contexts (cluster/link_tls.hpp). Made on the thread that
// makes the link manager; OpenSSL calls the PSK callbacks on the control thread.

#include "cluster/link_tls.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <stdexcept>
#include <string_view>

namespace brokerha::cluster {

namespace {

// The TLS 1.3 external PSK: HKDF-SHA256(secret_key, salt, info) -> 32 bytes, one identity.
constexpr std::string_view kPskSalt = "brokerha cluster link psk salt v1";
constexpr std::string_view kPskInfo = "brokerha cluster link tls13 external psk";
constexpr std::string_view kPskIdentity = "brokerha-link-v1";
constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};

// The PSK of a context lives in its app data (a std::string owned by LinkTlsContexts).
SSL_SESSION* psk_session(SSL* ssl) {
  const auto* key = static_cast<const std::string*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  if (key == nullptr || cipher == nullptr) return nullptr;
  SSL_SESSION* s = SSL_SESSION_new();
  if (s == nullptr ||
      SSL_SESSION_set1_master_key(s, reinterpret_cast<const unsigned char*>(key->data()),
                                  key->size()) != 1 ||
      SSL_SESSION_set_cipher(s, cipher) != 1 ||
      SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) != 1) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

int use_psk(SSL* ssl, const EVP_MD* md, const unsigned char** id, std::size_t* idlen,
            SSL_SESSION** sess) {
  *id = nullptr;
  *idlen = 0;
  *sess = nullptr;
  SSL_SESSION* s = psk_session(ssl);
  if (s == nullptr) return 0;
  if (md != nullptr && SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s)) != md) {
    SSL_SESSION_free(s);  // the server chose another hash: this PSK is unusable
    return 1;
  }
  *sess = s;
  *id = reinterpret_cast<const unsigned char*>(kPskIdentity.data());
  *idlen = kPskIdentity.size();
  return 1;
}

int find_psk(SSL* ssl, const unsigned char* identity, std::size_t len, SSL_SESSION** sess) {
  *sess = nullptr;
  if (std::string_view(reinterpret_cast<const char*>(identity), len) != kPskIdentity) return 1;
  *sess = psk_session(ssl);
  return *sess != nullptr ? 1 : 0;
}

}  // namespace

std::string derive_link_psk(const std::string& secret) {
  std::string out(32, '\0');
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX* kctx = kdf != nullptr ? EVP_KDF_CTX_new(kdf) : nullptr;
  bool ok = kctx != nullptr;
  if (ok) {
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<char*>(secret.data()),
                                          secret.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(kPskSalt.data()),
                                          kPskSalt.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(kPskInfo.data()),
                                          kPskInfo.size()),
        OSSL_PARAM_construct_end()};
    ok =
        EVP_KDF_derive(kctx, reinterpret_cast<unsigned char*>(out.data()), out.size(), params) == 1;
  }
  EVP_KDF_CTX_free(kctx);
  EVP_KDF_free(kdf);
  if (!ok) {
    ERR_clear_error();
    throw std::runtime_error("cluster link: HKDF-SHA256 failed");
  }
  return out;
}

LinkTlsContexts::LinkTlsContexts(const std::string& secret_key)
    : psk_(derive_link_psk(secret_key)), client_(make(false, &psk_)), server_(make(true, &psk_)) {}

LinkTlsContexts::CtxPtr LinkTlsContexts::make(bool server, const std::string* psk) {
  CtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()), SSL_CTX_free);
  if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(ctx.get(), "TLS_AES_128_GCM_SHA256") != 1) {
    ERR_clear_error();
    throw std::runtime_error("cluster link: TLS context");
  }
  SSL_CTX_set_app_data(ctx.get(), const_cast<std::string*>(psk));
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  if (server) {
    SSL_CTX_set_num_tickets(ctx.get(), 0);
    SSL_CTX_set_psk_find_session_callback(ctx.get(), find_psk);
  } else {
    SSL_CTX_set_psk_use_session_callback(ctx.get(), use_psk);
  }
  return ctx;
}

}  // namespace brokerha::cluster
