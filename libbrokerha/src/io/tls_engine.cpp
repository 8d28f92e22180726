// SPDX-License-Identifier: Apache-2.0
// io::TlsEngine (io/tls_engine.hpp): OpenSSL over two memory BIOs. Runs on its owner's thread.

#include "io/tls_engine.hpp"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>
#include <climits>

namespace brokerha::io {

namespace {

// OpenSSL takes int lengths.
int clamp_int(std::size_t n) { return static_cast<int>(std::min<std::size_t>(n, INT_MAX)); }

}  // namespace

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

TlsEngine::~TlsEngine() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

bool TlsEngine::start(SSL_CTX* ctx, Role role) {
  if (ssl_ != nullptr || ctx == nullptr) return false;
  ERR_clear_error();
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  if (ssl == nullptr || rbio == nullptr || wbio == nullptr) {
    if (rbio != nullptr) BIO_free(rbio);
    if (wbio != nullptr) BIO_free(wbio);
    if (ssl != nullptr) SSL_free(ssl);
    ERR_clear_error();
    return false;
  }
  SSL_set_bio(ssl, rbio, wbio);  // ssl owns both now
  // No TLS 1.2 renegotiation, whatever the context allows: a client's new ClientHello on an
  // established connection is refused (a handshake's CPU per request, and its own attacks).
  SSL_clear_options(ssl, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
  SSL_set_options(ssl, SSL_OP_NO_RENEGOTIATION);
  if (role == Role::server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
  }
  ssl_ = ssl;
  rbio_ = rbio;
  wbio_ = wbio;
  return true;
}

bool TlsEngine::handshake_done() const noexcept {
  return ssl_ != nullptr && SSL_is_init_finished(ssl_) != 0;
}

bool TlsEngine::feed(const char* data, std::size_t n) {
  if (n == 0) return true;
  if (rbio_ == nullptr || n > INT_MAX) return false;
  return BIO_write(rbio_, data, static_cast<int>(n)) == static_cast<int>(n);
}

TlsEngine::Status TlsEngine::handshake() {
  if (ssl_ == nullptr) return Status::failed;
  if (SSL_is_init_finished(ssl_) != 0) return Status::ok;
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) return Status::ok;
  const int e = SSL_get_error(ssl_, r);
  ERR_clear_error();
  return e == SSL_ERROR_WANT_READ ? Status::want : Status::failed;
}

TlsEngine::Status TlsEngine::read(char* buf, std::size_t capacity, std::size_t& n) {
  n = 0;
  if (ssl_ == nullptr) return Status::failed;
  ERR_clear_error();
  const int r = SSL_read(ssl_, buf, clamp_int(capacity));
  if (r > 0) {
    n = static_cast<std::size_t>(r);
    return Status::ok;
  }
  const int e = SSL_get_error(ssl_, r);
  ERR_clear_error();
  if (e == SSL_ERROR_WANT_READ) return Status::want;
  return e == SSL_ERROR_ZERO_RETURN ? Status::closed : Status::failed;
}

bool TlsEngine::write(std::string_view bytes) {
  if (ssl_ == nullptr) return false;
  ERR_clear_error();
  while (!bytes.empty()) {
    const int n = clamp_int(bytes.size());
    if (SSL_write(ssl_, bytes.data(), n) <= 0) {
      ERR_clear_error();
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void TlsEngine::close_notify() {
  if (!handshake_done()) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);
  ERR_clear_error();
}

void TlsEngine::drain(std::string& out) {
  if (wbio_ == nullptr) return;
  while (true) {
    const std::size_t pending = BIO_ctrl_pending(wbio_);
    if (pending == 0) return;
    const std::size_t at = out.size();
    out.resize(at + pending);
    const int n = BIO_read(wbio_, out.data() + at, clamp_int(pending));
    out.resize(at + static_cast<std::size_t>(std::max(n, 0)));
    if (n <= 0) return;
  }
}

std::string TlsEngine::verified_peer_common_name() const {
  std::string name;
  if (ssl_ == nullptr) return name;
  if (X509* cert = SSL_get1_peer_certificate(ssl_)) {
    if (SSL_get_verify_result(ssl_) == X509_V_OK) {
      char cn[256] = {};
      const int len =
          X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
      if (len > 0) name.assign(cn, static_cast<std::size_t>(len));
    }
    X509_free(cert);
  }
  return name;
}

}  // namespace brokerha::io
