// SPDX-License-Identifier: Apache-2.0
// MQTT over TLS: mosquitto_pub/mosquitto_sub and paho with a CA the test makes, client
// certificates (required, optional, wrong CA, expired), the certificate CN as username, TLS
// 1.2+ only, certificate reload without dropping connections, and hostile TLS input.

#include <doctest/doctest.h>

#include <thread>

#include "support/broker_process.hpp"
#include "support/listener_support.hpp"

using namespace brokerha;
using namespace brokerha::test;
using namespace brokerha::test::listeners;

namespace {

struct TlsSetup {
  TempDir dir;
  TestCa ca{dir, "ca"};
  std::pair<std::string, std::string> server = ca.issue("server", "localhost", 30, true);
  std::pair<std::string, std::string> alice = ca.issue("alice", "alice");
};

ProcessResult mosquitto(const std::string& program, std::uint16_t port, const TlsSetup& s,
                        std::vector<std::string> extra) {
  std::vector<std::string> argv{
      program,    "-h",        "127.0.0.1", "-p",      std::to_string(port),
      "--cafile", s.ca.cert(), "-V",        "mqttv311"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return run_process(argv, std::chrono::seconds(10));
}

// A TLS client that sends CONNECT and gets CONNACK accepted.
bool tls_connects(std::uint16_t port, const TlsSettings& tls, const std::string& id) {
  Wire w;
  if (!w.open(port, tls)) return false;
  if (!w.send(connect_packet(id))) return false;
  return is_connack_ok(w.receive_mqtt());
}

}  // namespace

TEST_CASE("tls: mosquitto_pub and mosquitto_sub over TLS with a test CA") {
  if (mosquitto_pub_path().empty()) return;
  TlsSetup s;
  ListenerBroker b({tls_listener(ListenerType::tls, s.server.first, s.server.second)});
  const ProcessResult pub = mosquitto(mosquitto_pub_path(), b.ports[0], s,
                                      {"-t", "tls/a", "-m", "over-tls", "-r", "-q", "1"});
  INFO(pub.describe());
  REQUIRE(pub.ok());
  const ProcessResult sub =
      mosquitto(mosquitto_sub_path(), b.ports[0], s, {"-t", "tls/#", "-C", "1", "-W", "5"});
  INFO(sub.describe());
  CHECK(sub.ok());
  CHECK(has_line(sub.out, "over-tls"));
}

TEST_CASE("tls: paho publishes and receives over TLS with a client certificate") {
  TlsSetup s;
  ListenerBroker b(
      {tls_listener(ListenerType::tls, s.server.first, s.server.second, s.ca.cert(), true)});
  const ProcessResult r = run_python(kPahoRoundTrip, {std::to_string(b.ports[0]), "tcp", "-",
                                                      s.ca.cert(), s.alice.first, s.alice.second});
  INFO(r.describe());
  CHECK(r.ok());
  CHECK(has_line(r.out, "got=big70000"));
  CHECK(has_line(r.out, "got=hello-paho"));
}

TEST_CASE("tls: client certificates required optional wrong CA and expired") {
  TlsSetup s;
  TestCa other(s.dir, "other");
  const auto foreign = other.issue("mallory", "mallory");
  const auto expired = s.ca.issue("old", "old", -1);
  ListenerBroker b(
      {tls_listener(ListenerType::tls, s.server.first, s.server.second, s.ca.cert(), true),
       tls_listener(ListenerType::tls, s.server.first, s.server.second, s.ca.cert(), false)});
  const std::vector<Endpoint> endpoints = b.broker().listen_endpoints();
  REQUIRE(endpoints.size() == 2);
  CHECK(endpoints[0].type == ListenerType::tls);
  CHECK(endpoints[1].type == ListenerType::tls);
  CHECK(endpoints[0].port != endpoints[1].port);
  const std::uint16_t required = b.ports[0];
  const std::uint16_t optional = b.ports[1];
  CHECK(tls_connects(required, {s.ca.cert(), s.alice.first, s.alice.second}, "c1"));
  CHECK_FALSE(tls_connects(required, {s.ca.cert(), {}, {}}, "c2"));
  CHECK_FALSE(tls_connects(required, {s.ca.cert(), foreign.first, foreign.second}, "c3"));
  CHECK_FALSE(tls_connects(required, {s.ca.cert(), expired.first, expired.second}, "c4"));
  // Optional: no certificate is fine, a bad one is still refused.
  CHECK(tls_connects(optional, {s.ca.cert(), {}, {}}, "c5"));
  CHECK(tls_connects(optional, {s.ca.cert(), s.alice.first, s.alice.second}, "c6"));
  CHECK_FALSE(tls_connects(optional, {s.ca.cert(), foreign.first, foreign.second}, "c7"));
  // The client refuses a server its CA did not sign.
  CHECK_FALSE(tls_connects(optional, {other.cert(), {}, {}}, "c8"));
  if (!mosquitto_pub_path().empty()) {
    const ProcessResult no_cert =
        mosquitto(mosquitto_pub_path(), required, s, {"-t", "x", "-m", "y", "-q", "1"});
    CHECK_FALSE(no_cert.ok());
    const ProcessResult with_cert =
        mosquitto(mosquitto_pub_path(), required, s,
                  {"--cert", s.alice.first, "--key", s.alice.second, "-t", "x", "-m", "y"});
    INFO(with_cert.describe());
    CHECK(with_cert.ok());
  }
}

TEST_CASE("tls: the certificate CN becomes the username") {
  TlsSetup s;
  ListenerOptions l =
      tls_listener(ListenerType::tls, s.server.first, s.server.second, s.ca.cert(), false);
  l.use_identity_as_username = true;
  BrokerOptions o;
  AuthRule alice;
  alice.username = "alice";
  alice.allow = true;
  o.access.auth.push_back(alice);
  ListenerBroker b({l}, o);
  Wire w;
  REQUIRE(w.open(b.ports[0], TlsSettings{s.ca.cert(), s.alice.first, s.alice.second}));
  REQUIRE(w.send(connect_packet("cn-client", "someone-else")));
  CHECK(is_connack_ok(w.receive_mqtt()));
  const auto c = find_client(b.broker(), "cn-client");
  REQUIRE(c);
  CHECK(c->username == std::optional<std::string>("alice"));
  // Without a certificate: refused (CONNACK 5 not authorized).
  Wire anon;
  REQUIRE(anon.open(b.ports[0], TlsSettings{s.ca.cert(), {}, {}}));
  REQUIRE(anon.send(connect_packet("anon", "alice")));
  const auto refused = anon.receive_mqtt();
  REQUIRE(refused);
  CHECK(static_cast<std::uint8_t>((*refused)[3]) == 5);
}

TEST_CASE("tls: TLS 1.1 is refused") {
  TlsSetup s;
  ListenerBroker b({tls_listener(ListenerType::tls, s.server.first, s.server.second)});
  const ProcessResult r =
      run_process({find_program("openssl"), "s_client", "-connect",
                   "127.0.0.1:" + std::to_string(b.ports[0]), "-tls1_1", "-CAfile", s.ca.cert()},
                  std::chrono::seconds(10));
  CHECK_FALSE(r.ok());
  CHECK(tls_connects(b.ports[0], {s.ca.cert(), {}, {}}, "modern"));
}

TEST_CASE("tls: reload_tls serves new certificates and keeps open connections") {
  TlsSetup s;
  ListenerBroker b({tls_listener(ListenerType::tls, s.server.first, s.server.second)});
  Wire old;
  REQUIRE(old.open(b.ports[0], TlsSettings{s.ca.cert(), {}, {}}));
  REQUIRE(old.send(connect_packet("before-reload")));
  REQUIRE(is_connack_ok(old.receive_mqtt()));
  // A new CA signs the server certificate now, at the same paths.
  TestCa next(s.dir, "next");
  const auto fresh = next.issue("fresh", "localhost", 30, true);
  REQUIRE(std::rename(fresh.first.c_str(), s.server.first.c_str()) == 0);
  REQUIRE(std::rename(fresh.second.c_str(), s.server.second.c_str()) == 0);
  CHECK(tls_connects(b.ports[0], {s.ca.cert(), {}, {}}, "still-old"));
  b.broker().reload_tls();
  CHECK(tls_connects(b.ports[0], {next.cert(), {}, {}}, "new-ca"));
  CHECK_FALSE(tls_connects(b.ports[0], {s.ca.cert(), {}, {}}, "old-ca"));
  // The connection made before the reload still works.
  REQUIRE(old.send(encode311(mqtt::Pingreq{})));
  const auto pong = old.receive_mqtt();
  REQUIRE(pong);
  CHECK(static_cast<std::uint8_t>((*pong)[0]) == 0xD0);
  // A missing file: an error, and the current material stays.
  const std::string saved = s.server.first + ".saved";
  REQUIRE(std::rename(s.server.first.c_str(), saved.c_str()) == 0);
  CHECK_THROWS(b.broker().reload_tls());
  CHECK(tls_connects(b.ports[0], {next.cert(), {}, {}}, "after-failed-reload"));
}

TEST_CASE("tls: hostile TLS input does not block other listeners") {
  TlsSetup s;
  ListenerBroker b({tls_listener(ListenerType::tls, s.server.first, s.server.second),
                    listener(ListenerType::tcp)},
                   [] {
                     BrokerOptions o;
                     o.io_threads = 1;  // everything on one thread: a block would show
                     return o;
                   }());
  // Garbage instead of a ClientHello; half a ClientHello that never completes; a TLS client
  // that stops after the handshake.
  Wire garbage;
  REQUIRE(garbage.open(b.ports[0]));
  REQUIRE(garbage.send(std::string(4096, '\x16')));
  Wire half;
  REQUIRE(half.open(b.ports[0]));
  REQUIRE(half.send(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)));
  Wire silent;
  REQUIRE(silent.open(b.ports[0], TlsSettings{s.ca.cert(), {}, {}}));
  CHECK(garbage.wait_closed());
  // Plain TCP and TLS clients are served meanwhile.
  Wire plain;
  REQUIRE(plain.open(b.ports[1]));
  REQUIRE(plain.send(connect_packet("plain")));
  CHECK(is_connack_ok(plain.receive_mqtt()));
  CHECK(tls_connects(b.ports[0], {s.ca.cert(), {}, {}}, "tls-ok"));
  // Plain MQTT sent to the TLS port is refused.
  Wire wrong;
  REQUIRE(wrong.open(b.ports[0]));
  REQUIRE(wrong.send(connect_packet("wrong")));
  CHECK(wrong.wait_closed());
}

TEST_CASE("tls: a handshake message beyond OpenSSL's bound is refused at its header") {
  // A ClientHello that announces 16 MiB: the handshake's memory is bounded by OpenSSL's
  // largest handshake message (a ClientHello: about 128 KiB), so the server refuses it when
  // the header arrives, without waiting for (or buffering) the body. Its records come 16 KiB
  // at a time, as TLS allows; the server must have closed before they are all sent.
  TlsSetup s;
  ListenerBroker b({tls_listener(ListenerType::tls, s.server.first, s.server.second)});
  Wire big;
  REQUIRE(big.open(b.ports[0]));
  // Record: handshake (0x16), TLS 1.0 record version, 16384 bytes; message: ClientHello (1),
  // length 0xFFFFFF, then the start of a body.
  std::string record("\x16\x03\x01\x40\x00\x01\xff\xff\xff\x03\x03", 11);
  record.resize(5 + 16384, '\x00');
  const bool sent = big.send(record);
  CHECK(sent);
  CHECK(big.wait_closed(std::chrono::milliseconds(3000)));
  int more = 0;  // 16 MiB more would follow; the server is gone long before
  while (more < 1024 && big.send(std::string(16384 + 5, '\x16'), std::chrono::milliseconds(500))) {
    ++more;
  }
  INFO("records accepted after the first: " << more);
  CHECK(more < 1024);
  CHECK(tls_connects(b.ports[0], {s.ca.cert(), {}, {}}, "tls-after"));
}

TEST_CASE("tls: connections move between shards and keep working") {
  TlsSetup s;
  BrokerOptions o;
  o.io_threads = 4;
  ListenerBroker b({tls_listener(ListenerType::tls, s.server.first, s.server.second)}, o);
  // Many client ids: most hash to a shard other than the accepting one.
  std::vector<std::unique_ptr<Wire>> clients;
  for (int i = 0; i < 12; ++i) {
    auto w = std::make_unique<Wire>();
    REQUIRE(w->open(b.ports[0], TlsSettings{s.ca.cert(), {}, {}}));
    REQUIRE(w->send(connect_packet("mover-" + std::to_string(i))));
    REQUIRE(is_connack_ok(w->receive_mqtt()));
    clients.push_back(std::move(w));
  }
  mqtt::Subscribe sub;
  sub.packet_id = 1;
  mqtt::Subscription all;
  all.filter = "m/#";
  sub.subscriptions.push_back(all);
  REQUIRE(clients[0]->send(encode311(sub)));
  const auto suback = clients[0]->receive_mqtt();
  REQUIRE(suback);
  for (int i = 1; i < 12; ++i) {
    const std::string topic = "m/" + std::to_string(i);
    mqtt::Publish p;
    p.topic = topic;
    p.payload = "x";
    REQUIRE(clients[static_cast<std::size_t>(i)]->send(encode311(p)));
  }
  for (int i = 1; i < 12; ++i) {
    const auto msg = clients[0]->receive_mqtt();
    REQUIRE(msg);
    CHECK((static_cast<std::uint8_t>((*msg)[0]) >> 4) == 3);
  }
}
