// SPDX-License-Identifier: Apache-2.0
// The cluster links' TLS 1.3 PSK contexts (cluster/link_tls.hpp). Made on the thread that
// makes the link manager; OpenSSL calls the PSK callbacks on the control thread.

#include "cluster/link_tls.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/sha.h>

#include <stdexcept>
#include <string_view>

namespace brokerha::cluster {

namespace {

// The TLS 1.3 external PSK: HKDF-SHA256(secret_key, salt, info) -> 32 bytes.
constexpr std::string_view kPskSalt = "brokerha cluster link psk salt v1";
constexpr std::string_view kPskInfo = "brokerha cluster link tls13 external psk";
// The identity of a lone key (and of the first key, accepted from nodes without rotation).
constexpr std::string_view kPskIdentity = "brokerha-link-v1";
constexpr std::string_view kPskIdentityPrefix = "brokerha-link-v2:";
constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};

// The keyring of a context lives in its app data (LinkPsks owned by LinkTlsContexts).
const LinkPsks* psks_of(SSL* ssl) {
  return static_cast<const LinkPsks*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

SSL_SESSION* psk_session(SSL* ssl, const std::string& key) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  if (cipher == nullptr) return nullptr;
  SSL_SESSION* s = SSL_SESSION_new();
  if (s == nullptr ||
      SSL_SESSION_set1_master_key(s, reinterpret_cast<const unsigned char*>(key.data()),
                                  key.size()) != 1 ||
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
  const LinkPsks* psks = psks_of(ssl);
  if (psks == nullptr || psks->entries.empty()) return 0;
  const LinkPsks::Entry& first = psks->entries.front();
  SSL_SESSION* s = psk_session(ssl, first.psk);
  if (s == nullptr) return 0;
  if (md != nullptr && SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s)) != md) {
    SSL_SESSION_free(s);  // the server chose another hash: this PSK is unusable
    return 1;
  }
  *sess = s;
  // OpenSSL copies the identity before it returns to us.
  *id = reinterpret_cast<const unsigned char*>(first.identity.data());
  *idlen = first.identity.size();
  return 1;
}

int find_psk(SSL* ssl, const unsigned char* identity, std::size_t len, SSL_SESSION** sess) {
  *sess = nullptr;
  const LinkPsks* psks = psks_of(ssl);
  if (psks == nullptr || psks->entries.empty()) return 1;
  const std::string_view id(reinterpret_cast<const char*>(identity), len);
  const std::string* key = nullptr;
  if (id == kPskIdentity) {
    key = &psks->entries.front().psk;
  } else {
    for (const LinkPsks::Entry& e : psks->entries) {
      if (e.tag == id) key = &e.psk;
    }
  }
  if (key == nullptr) return 1;  // no PSK: the handshake fails (no certificates)
  *sess = psk_session(ssl, *key);
  return *sess != nullptr ? 1 : 0;
}

std::string hex_prefix(const std::string& bytes, std::size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n && i < bytes.size(); ++i) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
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

LinkPsks derive_link_psks(const std::vector<std::string>& keys) {
  if (keys.empty()) throw std::invalid_argument("cluster link: no secret key");
  LinkPsks out;
  for (const std::string& k : keys) {
    if (k.size() != 16 && k.size() != 24 && k.size() != 32) {
      throw std::invalid_argument("cluster link: secret keys must be 16, 24 or 32 bytes");
    }
    LinkPsks::Entry e;
    e.psk = derive_link_psk(k);
    unsigned char digest[32];
    SHA256(reinterpret_cast<const unsigned char*>(e.psk.data()), e.psk.size(), digest);
    e.tag = std::string(kPskIdentityPrefix) +
            hex_prefix(std::string(reinterpret_cast<const char*>(digest), 8), 8);
    e.identity = keys.size() == 1 ? std::string(kPskIdentity) : e.tag;
    out.entries.push_back(std::move(e));
  }
  return out;
}

LinkTlsContexts::LinkTlsContexts(const std::vector<std::string>& keys)
    : psks_(derive_link_psks(keys)), client_(make(false, &psks_)), server_(make(true, &psks_)) {}

void LinkTlsContexts::set_keys(const std::vector<std::string>& keys) {
  psks_ = derive_link_psks(keys);  // the contexts keep pointing at psks_
}

LinkTlsContexts::CtxPtr LinkTlsContexts::make(bool server, const LinkPsks* psks) {
  CtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()), SSL_CTX_free);
  if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(ctx.get(), "TLS_AES_128_GCM_SHA256") != 1) {
    ERR_clear_error();
    throw std::runtime_error("cluster link: TLS context");
  }
  SSL_CTX_set_app_data(ctx.get(), const_cast<LinkPsks*>(psks));
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
