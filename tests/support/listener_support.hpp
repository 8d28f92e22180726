// SPDX-License-Identifier: Apache-2.0
#pragma once
// Helpers for the listener tests (TLS, WebSocket, PROXY protocol). Header-only.
//
//  - ListenerBroker: an in-process Broker with the listeners a test lists (port 0 each).
//  - TestCa: a CA, a server certificate for 127.0.0.1 and client certificates, made with the
//    `openssl` command in a temporary directory.
//  - Wire: a blocking client stream to 127.0.0.1:port, plain or TLS (OpenSSL), every wait
//    bounded.
//  - WsClient: a raw RFC 6455 client on a Wire (handshake, masked or unmasked frames, frame
//    reading) that also speaks MQTT in binary frames.
//
// Thread safety: each object is used by one thread.

#include <brokerha/broker.hpp>
#include <brokerha/options.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "support/broker_fixture.hpp"
#include "support/child_process.hpp"

namespace brokerha::test::listeners {

using Millis = std::chrono::milliseconds;
inline constexpr Millis kWait{3000};

/// A temporary directory, removed with its files by the destructor.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/brokerha-listeners-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() { run_process({"/bin/rm", "-rf", path_}, std::chrono::seconds(10)); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

/// Runs the openssl command; throws with its output when it fails.
inline void openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv[0] = find_program("openssl");
  const ProcessResult r = run_process(argv, std::chrono::seconds(20));
  if (r.exit_code != 0) throw std::runtime_error("openssl failed: " + r.describe());
}

/// A test CA in its own directory: ca.pem/ca.key, server.pem/server.key (CN localhost, SAN
/// 127.0.0.1), and client certificates made on demand.
class TestCa {
 public:
  explicit TestCa(const TempDir& dir, std::string name = "ca") : dir_(dir), name_(std::move(name)) {
    openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key(), "-out", cert(), "-days", "30", "-subj",
             "/CN=brokerha test " + name_});
  }
  std::string cert() const { return dir_.file(name_ + ".pem"); }
  std::string key() const { return dir_.file(name_ + ".key"); }

  /// Issues `<base>.pem`/`<base>.key` with `cn`; `days` < 0 makes it expired. `server` adds the
  /// 127.0.0.1 / localhost names.
  std::pair<std::string, std::string> issue(const std::string& base, const std::string& cn,
                                            int days = 30, bool server = false) const {
    const std::string k = dir_.file(base + ".key");
    const std::string c = dir_.file(base + ".pem");
    const std::string csr = dir_.file(base + ".csr");
    const std::string ext = dir_.file(base + ".ext");
    openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", k, "-out", csr, "-subj", "/CN=" + cn});
    {
      std::ofstream e(ext);
      e << (server ? "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                   : "extendedKeyUsage=clientAuth\n");
    }
    openssl({"x509", "-req", "-in", csr, "-CA", cert(), "-CAkey", key(), "-CAcreateserial", "-out",
             c, "-days", std::to_string(days), "-extfile", ext});
    return {c, k};
  }

 private:
  const TempDir& dir_;
  std::string name_;
};

/// A started broker with the given listeners (ports set to 0 and binds to 127.0.0.1).
struct ListenerBroker {
  explicit ListenerBroker(std::vector<ListenerOptions> listeners, BrokerOptions options = {},
                          const std::function<void(Broker&)>& setup = nullptr) {
    for (ListenerOptions& l : listeners) {
      l.bind = "127.0.0.1";
      l.port = 0;
    }
    options.listeners = std::move(listeners);
    if (options.io_threads == 0) options.io_threads = 2;
    owned_ = std::make_unique<Broker>(options);
    if (setup) setup(*owned_);
    owned_->start();
    for (const Endpoint& e : owned_->listen_endpoints()) ports.push_back(e.port);
  }
  ~ListenerBroker() { BackgroundStopper::instance().stop(std::move(owned_)); }
  ListenerBroker(const ListenerBroker&) = delete;
  ListenerBroker& operator=(const ListenerBroker&) = delete;
  Broker& broker() { return *owned_; }
  std::vector<std::uint16_t> ports;

 private:
  std::unique_ptr<Broker> owned_;
};

inline ListenerOptions listener(ListenerType type, bool proxy = false) {
  ListenerOptions l;
  l.type = type;
  l.proxy_protocol = proxy;
  return l;
}

inline ListenerOptions tls_listener(ListenerType type, const std::string& cert,
                                    const std::string& key, const std::string& ca = {},
                                    bool require = false) {
  ListenerOptions l = listener(type);
  l.tls_cert = cert;
  l.tls_key = key;
  l.tls_ca = ca;
  l.require_client_cert = require;
  return l;
}

/// A paho (Python) round trip: connect, subscribe to "r/t", publish a 70000-byte message and
/// "hello-paho" at QoS 1, print "got=<payload>" ("got=big<size>" for the large one), exit 0
/// once "hello-paho" came back. Arguments (run_python): port, transport ("tcp" or
/// "websockets"), WebSocket path, CA file, client certificate, key ("-" = none).
inline constexpr const char* kPahoRoundTrip = R"(
import sys, ssl, threading
import paho.mqtt.client as mqtt
port, transport, path, ca, cert, key = int(sys.argv[1]), *[None if a == "-" else a for a in sys.argv[2:7]]
got = threading.Event()
def on_connect(c, u, f, rc):
    c.subscribe("r/t", 1)
def on_subscribe(c, u, mid, q):
    c.publish("r/t", "x" * 70000, 1)
    c.publish("r/t", "hello-paho", 1)
def on_message(c, u, m):
    print("got=" + (m.payload.decode() if len(m.payload) < 100 else "big%d" % len(m.payload)))
    if m.payload == b"hello-paho":
        got.set()
c = mqtt.Client("paho-" + transport, transport=transport)
if transport == "websockets":
    c.ws_set_options(path=path)
if ca:
    c.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port, 30)
c.loop_start()
ok = got.wait(8)
c.disconnect()
c.loop_stop()
sys.exit(0 if ok else 1)
)";

/// TLS settings of a Wire.
struct TlsSettings {
  std::string ca;    // verify the server with it
  std::string cert;  // client certificate (optional)
  std::string key;
};

/// A blocking client stream (plain or TLS) to 127.0.0.1:port. The socket is non-blocking;
/// every operation waits with poll() at most its timeout.
class Wire {
 public:
  Wire() = default;
  ~Wire() { close(); }
  Wire(const Wire&) = delete;
  Wire& operator=(const Wire&) = delete;

  /// `prefix` is sent in clear before the TLS handshake (a PROXY header).
  bool open(std::uint16_t port, const std::optional<TlsSettings>& tls = std::nullopt,
            Millis timeout = kWait, const std::string& prefix = {}) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return fail("connect");
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    if (!prefix.empty() && !send(prefix)) return false;
    if (!tls) return true;
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!tls->ca.empty()) {
      SSL_CTX_load_verify_locations(ctx_, tls->ca.c_str(), nullptr);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    }
    if (!tls->cert.empty()) {
      SSL_CTX_use_certificate_chain_file(ctx_, tls->cert.c_str());
      SSL_CTX_use_PrivateKey_file(ctx_, tls->key.c_str(), SSL_FILETYPE_PEM);
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      const int r = SSL_connect(ssl_);
      if (r == 1) break;
      const int e = SSL_get_error(ssl_, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return fail("TLS handshake");
      if (!wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
        return fail("TLS handshake timeout");
      }
    }
    // TLS 1.3: a server may refuse the client certificate after the handshake; that shows
    // at the first read.
    return true;
  }

  bool send(std::string_view bytes, Millis timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!bytes.empty()) {
      long n;
      short want = POLLOUT;
      if (ssl_ != nullptr) {
        n = SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()));
        if (n <= 0) {
          const int e = SSL_get_error(ssl_, static_cast<int>(n));
          if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return fail("write");
          want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        }
      } else {
        n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return fail("send");
      }
      if (n > 0) {
        bytes.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (!wait(want, deadline)) return fail("send timeout");
    }
    return true;
  }

  /// Some bytes; empty on timeout; sets closed() on EOF or error.
  std::string receive_some(Millis timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[16384];
    while (true) {
      long n;
      short want = POLLIN;
      if (ssl_ != nullptr) {
        n = SSL_read(ssl_, buf, sizeof buf);
        if (n <= 0) {
          const int e = SSL_get_error(ssl_, static_cast<int>(n));
          if (e == SSL_ERROR_WANT_WRITE) {
            want = POLLOUT;
          } else if (e != SSL_ERROR_WANT_READ) {
            closed_ = true;
            return {};
          }
        }
      } else {
        n = ::recv(fd_, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
          closed_ = true;
          return {};
        }
      }
      if (n > 0) return std::string(buf, static_cast<std::size_t>(n));
      if (!wait(want, deadline)) return {};
    }
  }

  /// Exactly `n` bytes (buffered), or nullopt on timeout / close.
  std::optional<std::string> receive_exact(std::size_t n, Millis timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (buffer_.size() < n) {
      const auto left =
          std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || closed_) return std::nullopt;
      buffer_ += receive_some(left);
    }
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
  }

  /// Bytes up to and including `delim`, or nullopt.
  std::optional<std::string> receive_until(std::string_view delim, Millis timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (buffer_.find(delim) == std::string::npos) {
      const auto left =
          std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || closed_) return std::nullopt;
      buffer_ += receive_some(left);
    }
    const std::size_t end = buffer_.find(delim) + delim.size();
    std::string out = buffer_.substr(0, end);
    buffer_.erase(0, end);
    return out;
  }

  /// True once the server closed the connection within `timeout` (data before it is dropped).
  bool wait_closed(Millis timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!closed_) {
      const auto left =
          std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      buffer_ += receive_some(left);
    }
    return true;
  }

  /// One MQTT packet (fixed header + body) from the stream, or nullopt.
  std::optional<std::string> receive_mqtt(Millis timeout = kWait) {
    auto first = receive_exact(1, timeout);
    if (!first) return std::nullopt;
    std::string packet = *first;
    std::size_t len = 0;
    for (int shift = 0; shift < 28; shift += 7) {
      auto b = receive_exact(1, timeout);
      if (!b) return std::nullopt;
      packet += *b;
      len |= static_cast<std::size_t>(static_cast<std::uint8_t>((*b)[0]) & 0x7F) << shift;
      if ((static_cast<std::uint8_t>((*b)[0]) & 0x80) == 0) break;
    }
    auto body = receive_exact(len, timeout);
    if (!body) return std::nullopt;
    return packet + *body;
  }

  bool closed() const noexcept { return closed_; }
  const std::string& error() const noexcept { return error_; }
  int fd() const noexcept { return fd_; }

  void close() noexcept {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    ssl_ = nullptr;
    ctx_ = nullptr;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  bool fail(const std::string& what) {
    char buf[256] = {};
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    ERR_clear_error();
    error_ = what + ": " + buf;
    return false;
  }
  bool wait(short events, std::chrono::steady_clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, events, 0};
    return ::poll(&p, 1, static_cast<int>(left)) > 0;
  }

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buffer_;
  std::string error_;
  bool closed_ = false;
};

/// An MQTT 3.1.1 CONNECT for `client_id` (keep alive 60), with a username unless null.
inline std::string connect_packet(const std::string& client_id, const char* username = nullptr) {
  mqtt::Connect c;
  c.version = mqtt::ProtocolVersion::v311;
  c.client_id = client_id;
  c.keep_alive = 60;
  c.clean_start = true;
  if (username != nullptr) c.username = std::string_view(username);
  std::string out;
  mqtt::encode(mqtt::Packet(c), mqtt::ProtocolVersion::v311, out);
  return out;
}

inline std::string encode311(const mqtt::Packet& p) {
  std::string out;
  mqtt::encode(p, mqtt::ProtocolVersion::v311, out);
  return out;
}

/// CONNACK 3.1.1 accepted: 20 02 00 00.
inline bool is_connack_ok(const std::optional<std::string>& p) {
  return p && p->size() == 4 && static_cast<std::uint8_t>((*p)[0]) == 0x20 && (*p)[3] == 0;
}

/// A WebSocket frame as a client sends it (masked unless `masked` is false).
inline std::string ws_frame(std::uint8_t opcode, std::string_view payload, bool fin = true,
                            bool masked = true, std::uint8_t rsv = 0) {
  std::string f;
  f.push_back(static_cast<char>((fin ? 0x80 : 0) | rsv | opcode));
  const std::uint8_t m = masked ? 0x80 : 0;
  const std::size_t len = payload.size();
  if (len < 126) {
    f.push_back(static_cast<char>(m | len));
  } else if (len <= 0xFFFF) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(len >> 8));
    f.push_back(static_cast<char>(len & 0xFF));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int s = 56; s >= 0; s -= 8)
      f.push_back(static_cast<char>((std::uint64_t{len} >> s) & 0xFF));
  }
  if (!masked) return f + std::string(payload);
  static thread_local std::mt19937 rng{12345};
  const std::uint8_t key[4] = {static_cast<std::uint8_t>(rng()), static_cast<std::uint8_t>(rng()),
                               static_cast<std::uint8_t>(rng()), static_cast<std::uint8_t>(rng())};
  f.append(reinterpret_cast<const char*>(key), 4);
  for (std::size_t i = 0; i < len; ++i)
    f.push_back(static_cast<char>(payload[i] ^ static_cast<char>(key[i % 4])));
  return f;
}

/// A frame as the server sent it.
struct WsFrame {
  bool fin = false;
  std::uint8_t opcode = 0;
  std::string payload;
  bool masked = false;
};

/// A raw WebSocket client over a Wire.
class WsClient {
 public:
  Wire wire;

  /// Connects and upgrades; returns the HTTP response head (empty when none came).
  std::string open(std::uint16_t port, const std::string& path = "/mqtt",
                   const std::string& protocol = "mqtt",
                   const std::optional<TlsSettings>& tls = std::nullopt,
                   const std::string& prefix = {}) {
    if (!wire.open(port, tls)) return {};
    std::string req = prefix + "GET " + path +
                      " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: keep-alive, Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n"
                      "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0\r\n";
    if (!protocol.empty()) req += "Sec-WebSocket-Protocol: " + protocol + "\r\n";
    req += "\r\n";
    if (!wire.send(req)) return {};
    return wire.receive_until("\r\n\r\n").value_or("");
  }

  bool send_frame(std::uint8_t opcode, std::string_view payload, bool fin = true,
                  bool masked = true) {
    return wire.send(ws_frame(opcode, payload, fin, masked));
  }

  std::optional<WsFrame> read_frame(Millis timeout = kWait) {
    auto h = wire.receive_exact(2, timeout);
    if (!h) return std::nullopt;
    WsFrame f;
    const auto b0 = static_cast<std::uint8_t>((*h)[0]);
    const auto b1 = static_cast<std::uint8_t>((*h)[1]);
    f.fin = (b0 & 0x80) != 0;
    f.opcode = b0 & 0x0F;
    f.masked = (b1 & 0x80) != 0;
    std::uint64_t len = b1 & 0x7F;
    if (len >= 126) {
      auto ext = wire.receive_exact(len == 126 ? 2 : 8, timeout);
      if (!ext) return std::nullopt;
      len = 0;
      for (char c : *ext) len = (len << 8) | static_cast<std::uint8_t>(c);
    }
    auto body = wire.receive_exact(static_cast<std::size_t>(len), timeout);
    if (!body) return std::nullopt;
    f.payload = *body;
    return f;
  }

  /// The next MQTT packet carried in binary frames (packets may span frames), or nullopt.
  std::optional<std::string> receive_mqtt(Millis timeout = kWait) {
    while (true) {
      if (auto p = take_packet()) return p;
      auto f = read_frame(timeout);
      if (!f) return std::nullopt;
      if (f->opcode == 0x2 || f->opcode == 0x0) mqtt_ += f->payload;
      if (f->opcode == 0x8) {
        last_close_ = f;
        return std::nullopt;
      }
    }
  }

  /// The close frame the server sent (after a read saw it), if any.
  std::optional<WsFrame> last_close_;

  /// The status code of the next close frame (skipping data frames), or nullopt.
  std::optional<std::uint16_t> read_close_code(Millis timeout = kWait) {
    while (true) {
      auto f = last_close_ ? last_close_ : read_frame(timeout);
      last_close_.reset();
      if (!f) return std::nullopt;
      if (f->opcode != 0x8) continue;
      if (f->payload.size() < 2) return std::uint16_t{0};
      return static_cast<std::uint16_t>((static_cast<std::uint8_t>(f->payload[0]) << 8) |
                                        static_cast<std::uint8_t>(f->payload[1]));
    }
  }

 private:
  std::optional<std::string> take_packet() {
    if (mqtt_.size() < 2) return std::nullopt;
    std::size_t len = 0;
    std::size_t i = 1;
    for (int shift = 0; i < mqtt_.size() && shift < 28; shift += 7, ++i) {
      const auto b = static_cast<std::uint8_t>(mqtt_[i]);
      len |= static_cast<std::size_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        ++i;
        if (mqtt_.size() < i + len) return std::nullopt;
        std::string p = mqtt_.substr(0, i + len);
        mqtt_.erase(0, i + len);
        return p;
      }
    }
    return std::nullopt;
  }
  std::string mqtt_;
};

}  // namespace brokerha::test::listeners
