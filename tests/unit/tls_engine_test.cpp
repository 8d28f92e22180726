// SPDX-License-Identifier: Apache-2.0
// io::TlsEngine without sockets: a client and a server engine handshake through memory, with
// the cluster links' TLS 1.3 PSK contexts (cluster/link_tls.hpp) and with certificates made
// here in memory as the listeners use them; then application data both ways, close_notify,
// and the failures (a wrong key, an untrusted certificate). Everything runs on the test's
// thread.

#include "io/tls_engine.hpp"

#include <doctest/doctest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "cluster/link_tls.hpp"

using brokerha::cluster::LinkTlsContexts;
using brokerha::io::TlsEngine;
using Status = TlsEngine::Status;
using Role = TlsEngine::Role;

namespace {

using CtxPtr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;

// Moves what `from` has to send into `to`; true when there was something.
bool carry(TlsEngine& from, TlsEngine& to) {
  std::string bytes;
  from.drain(bytes);
  if (bytes.empty()) return false;
  REQUIRE(to.feed(bytes.data(), bytes.size()));
  return true;
}

// A client and a server engine on the given contexts, their handshakes run through memory
// until nothing moves; `c` and `s` are their outcomes.
struct Duo {
  Duo(SSL_CTX* client_ctx, SSL_CTX* server_ctx) {
    REQUIRE(client.start(client_ctx, Role::client));
    REQUIRE(server.start(server_ctx, Role::server));
    c = client.handshake();
    for (int round = 0; round < 10; ++round) {
      const bool to_server = carry(client, server);
      if (to_server) s = server.handshake();
      const bool to_client = carry(server, client);
      if (to_client) c = client.handshake();
      if (!to_server && !to_client) break;
    }
  }
  TlsEngine client, server;
  Status c = Status::want;
  Status s = Status::want;
};

// All the plaintext `to` can read after `from`'s output reached it.
std::string pass(TlsEngine& from, TlsEngine& to, Status& last) {
  carry(from, to);
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((last = to.read(buf, sizeof buf, n)) == Status::ok) out.append(buf, n);
  return out;
}

void exchange_data(TlsEngine& client, TlsEngine& server) {
  Status last = Status::ok;
  REQUIRE(client.write("hello from the client"));
  CHECK(pass(client, server, last) == "hello from the client");
  CHECK(last == Status::want);
  const std::string big(100000, 'b');  // several records
  REQUIRE(server.write(big));
  CHECK(pass(server, client, last) == big);
  CHECK(last == Status::want);
  // close_notify: the other side reads `closed`.
  client.close_notify();
  CHECK(pass(client, server, last).empty());
  CHECK(last == Status::closed);
}

// A self-signed certificate and its key (EC P-256), made in memory.
struct Identity {
  explicit Identity(const char* cn) {
    key = EVP_EC_gen("P-256");
    REQUIRE(key != nullptr);
    cert = X509_new();
    REQUIRE(cert != nullptr);
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                               -1, -1, 0);
    X509_set_issuer_name(cert, name);
    REQUIRE(X509_sign(cert, key, EVP_sha256()) > 0);
  }
  ~Identity() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  Identity(const Identity&) = delete;
  Identity& operator=(const Identity&) = delete;
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
};

// A context presenting `self` and trusting `trusted` (nullptr: verifying nothing).
CtxPtr context(bool server, const Identity* self, const Identity* trusted) {
  CtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()), SSL_CTX_free);
  REQUIRE(ctx);
  if (self != nullptr) {
    REQUIRE(SSL_CTX_use_certificate(ctx.get(), self->cert) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), self->key) == 1);
  }
  if (trusted != nullptr) {
    REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), trusted->cert) == 1);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return ctx;
}

}  // namespace

TEST_CASE("tls engine: TLS 1.3 with the links' pre-shared key") {
  const LinkTlsContexts contexts(std::vector<std::string>{"0123456789abcdef"});
  Duo d(contexts.client(), contexts.server());
  CHECK(d.c == Status::ok);
  CHECK(d.s == Status::ok);
  CHECK(d.client.handshake_done());
  CHECK(d.server.handshake_done());
  CHECK(d.server.verified_peer_common_name().empty());  // no certificates
  exchange_data(d.client, d.server);
}

TEST_CASE("tls engine: a wrong pre-shared key fails the handshake on both sides") {
  const LinkTlsContexts ours(std::vector<std::string>{"0123456789abcdef"});
  const LinkTlsContexts theirs(std::vector<std::string>{"fedcba9876543210"});
  Duo d(ours.client(), theirs.server());
  CHECK(d.s == Status::failed);
  CHECK(d.c == Status::failed);  // the server's alert reached it
  CHECK_FALSE(d.client.handshake_done());
  CHECK_FALSE(d.server.handshake_done());
  std::size_t n = 1;
  char buf[16];
  CHECK(d.server.read(buf, sizeof buf, n) == Status::failed);
  CHECK(n == 0);
}

TEST_CASE("tls engine: link keyrings link at every step of a key rotation, and only then") {
  const std::string o(32, 'o'), n(32, 'n'), x(32, 'x');
  using Ring = std::vector<std::string>;
  // Every ring a node holds during the three steps, from before to after.
  const std::vector<Ring> rings{{o}, {o, n}, {n, o}, {n}};
  // Neighbouring steps meet while the nodes move one by one: they must link both ways.
  for (std::size_t i = 0; i < rings.size(); ++i) {
    for (std::size_t j = i; j < rings.size() && j <= i + 1; ++j) {
      CAPTURE(i);
      CAPTURE(j);
      const LinkTlsContexts a(rings[i]);
      const LinkTlsContexts b(rings[j]);
      Duo ab(a.client(), b.server());
      CHECK(ab.c == Status::ok);
      CHECK(ab.s == Status::ok);
      Duo ba(b.client(), a.server());
      CHECK(ba.c == Status::ok);
      CHECK(ba.s == Status::ok);
    }
  }
  // Only the old key against only the new one, or an unrelated key: no link.
  for (const auto& [p, q] :
       std::vector<std::pair<Ring, Ring>>{{{o}, {n}}, {{x}, {o, n}}, {{x}, {n, o}}}) {
    const LinkTlsContexts a(p);
    const LinkTlsContexts b(q);
    Duo ab(a.client(), b.server());
    CHECK(ab.s == Status::failed);
    Duo ba(b.client(), a.server());
    CHECK(ba.s == Status::failed);
  }
  // A replaced keyring applies to the next handshake.
  LinkTlsContexts c(Ring{o});
  const LinkTlsContexts s(Ring{n});
  Duo before(c.client(), s.server());
  CHECK(before.s == Status::failed);
  c.set_keys({n, o});
  Duo after(c.client(), s.server());
  CHECK(after.s == Status::ok);
}

TEST_CASE("tls engine: certificates, a verified client's name, an untrusted server") {
  const Identity server_id("test-server");
  const Identity client_id("test-client");
  SUBCASE("both verified") {
    const CtxPtr server_ctx = context(true, &server_id, &client_id);
    const CtxPtr client_ctx = context(false, &client_id, &server_id);
    Duo d(client_ctx.get(), server_ctx.get());
    CHECK(d.c == Status::ok);
    CHECK(d.s == Status::ok);
    CHECK(d.server.verified_peer_common_name() == "test-client");
    CHECK(d.client.verified_peer_common_name() == "test-server");
    exchange_data(d.client, d.server);
  }
  SUBCASE("a client that trusts another certificate refuses the server") {
    const Identity other("someone else");
    const CtxPtr server_ctx = context(true, &server_id, nullptr);
    const CtxPtr client_ctx = context(false, nullptr, &other);
    Duo d(client_ctx.get(), server_ctx.get());
    CHECK(d.c == Status::failed);
    CHECK(d.s == Status::failed);  // the client's alert reached it
    CHECK(d.client.verified_peer_common_name().empty());
  }
  SUBCASE("an engine without a context does nothing") {
    TlsEngine none;
    CHECK_FALSE(none.start(nullptr, Role::server));
    CHECK_FALSE(none.active());
    CHECK(none.handshake() == Status::failed);
    CHECK_FALSE(none.write("x"));
    std::string out;
    none.drain(out);
    none.close_notify();
    CHECK(out.empty());
  }
}

// TLS 1.2 renegotiation (a client's new ClientHello on an established connection) costs the
// server a handshake per request and has had its own attacks: a server engine refuses it even
// when its context would allow it (SSL_OP_ALLOW_CLIENT_RENEGOTIATION, or an OpenSSL before 3.0
// where it was allowed by default). The client here is plain OpenSSL, the only way to ask.
TEST_CASE("tls engine: a server refuses TLS 1.2 renegotiation whatever its context allows") {
  const Identity server_id("test-server");
  const CtxPtr server_ctx = context(true, &server_id, nullptr);
  SSL_CTX_set_options(server_ctx.get(), SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
  const CtxPtr client_ctx = context(false, nullptr, nullptr);
  REQUIRE(SSL_CTX_set_max_proto_version(client_ctx.get(), TLS1_2_VERSION) == 1);

  TlsEngine server;
  REQUIRE(server.start(server_ctx.get(), Role::server));
  std::unique_ptr<SSL, decltype(&SSL_free)> client(SSL_new(client_ctx.get()), SSL_free);
  REQUIRE(client);
  BIO* client_in = BIO_new(BIO_s_mem());
  BIO* client_out = BIO_new(BIO_s_mem());
  SSL_set_bio(client.get(), client_in, client_out);  // owned by the SSL now
  SSL_set_connect_state(client.get());

  // One round: the client's bytes to the server, the server's back.
  auto to_server = [&] {
    char buf[16384];
    int n = 0;
    while ((n = BIO_read(client_out, buf, sizeof buf)) > 0) {
      REQUIRE(server.feed(buf, static_cast<std::size_t>(n)));
    }
  };
  auto to_client = [&] {
    std::string bytes;
    server.drain(bytes);
    if (!bytes.empty()) BIO_write(client_in, bytes.data(), static_cast<int>(bytes.size()));
  };
  for (int round = 0;
       round < 10 && !(server.handshake_done() && SSL_is_init_finished(client.get())); ++round) {
    SSL_do_handshake(client.get());
    to_server();
    server.handshake();
    to_client();
  }
  REQUIRE(server.handshake_done());
  REQUIRE(SSL_do_handshake(client.get()) == 1);
  CHECK(SSL_version(client.get()) == TLS1_2_VERSION);

  // The client asks for a new handshake; the server reads it with its next read.
  REQUIRE(SSL_renegotiate(client.get()) == 1);
  SSL_do_handshake(client.get());  // writes the ClientHello, then wants the answer
  int client_result = 0;
  char buf[256];
  std::size_t n = 0;
  for (int round = 0; round < 10; ++round) {
    to_server();
    server.read(buf, sizeof buf, n);  // processes the ClientHello (and finds no data)
    to_client();
    client_result = SSL_do_handshake(client.get());
    if (client_result == 1 || SSL_get_error(client.get(), client_result) != SSL_ERROR_WANT_READ) {
      break;
    }
  }
  ERR_clear_error();
  INFO("client handshake result " << client_result << ", renegotiations completed "
                                  << SSL_num_renegotiations(client.get()));
  // Refused: the client's new handshake does not complete.
  CHECK(client_result != 1);
}
