// SPDX-License-Identifier: Apache-2.0
// The cluster data plane's links (cluster/link.hpp; wire format: docs/cluster-protocol.md,
// "Link layer").
//
// Layout: the manager (Impl) owns one Peer per known node: its send queue (frames numbered
// per our boot epoch, kept until acknowledged), its receive state (last sequence delivered
// per peer epoch) and its counters. A Peer has at most one Conn (a socket, with a key an
// io::TlsEngine on the contexts of cluster/link_tls.hpp, its timers). Inbound Conns stay in
// `pending` until their hello names a known peer. Everything runs on the control io_context's one
// thread; the counters (LinkStats, the peer map's shape) are also read by stats() from any thread,
// so every write to them takes `mu`.
//
// Lifetimes: handlers capture shared_ptr<Conn>; a Conn holds shared_ptr<Impl> and its Peer.
// The cycles (Impl -> Peer -> Conn -> Impl) are broken when a Conn closes, and stop() closes
// every Conn. The send queue is only trimmed when no write is in flight on the peer's
// current Conn, because a plaintext gathered write points into the queued frames.

#include "cluster/link.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <utility>

#include "cluster/link_tls.hpp"
#include "io/tls_engine.hpp"
#include "util/bytes.hpp"

namespace brokerha::cluster {

namespace {

using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kHeader = 13;      // u32 length | u8 kind | u64 sequence
constexpr std::size_t kMinLength = 9;    // kind + sequence
constexpr std::size_t kMaxHello = 4096;  // length limit of a frame before the hello is done
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kMaxRoundFrames = 4096;          // frames per gathered write
constexpr std::size_t kMaxRoundBytes = 4u << 20;       // bytes per gathered write (plaintext)
constexpr std::size_t kMaxTlsRoundBytes = 256u << 10;  // plaintext staged per TLS round
constexpr std::size_t kCopyBelow = 512;  // plaintext: smaller bodies are copied, not referenced
constexpr int kDeadPings = 5;            // ping intervals of silence = dead link

// Subtypes of kind 0 (the first body byte).
constexpr std::uint8_t kHello = 0;
constexpr std::uint8_t kAck = 1;
constexpr std::uint8_t kPing = 2;
constexpr std::uint8_t kPong = 3;

constexpr std::uint8_t kTlsHandshakeRecord = 0x16;

using TlsStatus = io::TlsEngine::Status;
using util::load_be16;
using util::load_be32;
using util::load_be64;
using util::put_be16;
using util::put_be64;
using util::store_be32;
using util::store_be64;

void put_header(char* p, std::size_t body, std::uint8_t kind, std::uint64_t seq) {
  store_be32(p, static_cast<std::uint32_t>(kMinLength + body));
  p[4] = static_cast<char>(kind);
  store_be64(p + 5, seq);
}

// A kind-0 frame with a one-byte body (ack, ping, pong).
void append_control(std::string& out, std::uint8_t subtype, std::uint64_t value) {
  char f[kHeader + 1];
  put_header(f, 1, 0, value);
  f[kHeader] = static_cast<char>(subtype);
  out.append(f, sizeof f);
}

std::string endpoint_string(const tcp::endpoint& ep) {
  const auto a = ep.address();
  if (a.is_v6()) return "[" + a.to_string() + "]:" + std::to_string(ep.port());
  return a.to_string() + ":" + std::to_string(ep.port());
}

// A queued frame: its header (fixed once numbered, so a re-send is the same bytes) and the
// body shared with every other link it goes to.
struct OutFrame {
  std::uint64_t seq = 0;
  std::array<char, kHeader> head{};
  std::shared_ptr<const std::string> body;
  std::size_t size() const { return kHeader + body->size(); }
};

}  // namespace

struct LinkManager::Impl : std::enable_shared_from_this<LinkManager::Impl> {
  struct Conn;

  struct Peer {
    explicit Peer(asio::io_context& ctx) : dial_timer(ctx) {}
    std::string name;
    std::string address;
    std::uint16_t port = 0;
    bool dialer = false;  // our name sorts lower: we dial
    bool blocked = false;
    bool removed = false;
    std::shared_ptr<Conn> conn;  // connecting, handshaking or up
    asio::steady_timer dial_timer;
    bool dial_pending = false;
    std::chrono::milliseconds backoff{0};
    // Sending (our epoch).
    std::deque<OutFrame> queue;  // seqs contiguous; frames <= acked are trimmed lazily
    std::uint64_t next_seq = 1;
    std::uint64_t acked = 0;
    std::size_t queue_bytes = 0;
    // Receiving.
    std::uint64_t known_epoch = 0;  // the peer's epoch at the last handshake (0: never)
    std::uint64_t rx_epoch = 0;
    std::uint64_t rx_seq = 0;  // last delivered for rx_epoch
    LinkStats st;              // written under Impl::mu
  };

  struct Conn : std::enable_shared_from_this<Conn> {
    enum class State { connecting, tls, hello, up, closed };

    Conn(asio::io_context& ctx, std::shared_ptr<Impl> m, bool out)
        : mgr(std::move(m)),
          sock(ctx),
          outbound(out),
          deadline(ctx),
          ping_timer(ctx),
          ack_timer(ctx),
          rbuf(new char[kReadChunk]) {}

    std::shared_ptr<Impl> mgr;
    tcp::socket sock;
    bool outbound;
    State state = State::connecting;
    std::shared_ptr<Peer> peer;  // outbound: from the start; inbound: once the hello names it
    std::string remote;          // "ip:port"
    io::TlsEngine tls;           // started with a key
    bool first_checked = false;  // inbound: the stream's first byte was checked
    bool magic_seen = false;     // inbound: kPlainMagic seen (inside TLS when there is TLS)
    asio::steady_timer deadline, ping_timer, ack_timer;
    bool ack_pending = false;
    bool flush_posted = false;
    std::uint64_t ack_sent = 0;
    std::uint64_t ping_id = 0;
    bool ping_outstanding = false;
    Clock::time_point ping_sent;
    Clock::time_point last_rx = Clock::now();
    std::uint64_t write_seq = 1;        // next queued frame to write on this connection
    std::uint64_t unattributed_in = 0;  // bytes read before the peer was known
    // Reading.
    std::unique_ptr<char[]> rbuf;
    bool reading = false;
    std::string in;    // an incomplete frame
    std::string held;  // bytes read while the peer was blocked
    // Writing: one gathered write in flight.
    bool writing = false;
    std::string ctrl;    // control frames (and magic/hello) waiting
    std::string ctrl_w;  // control frames being written (plaintext)
    std::string tls_w;   // ciphertext being written
    std::string stage;   // plaintext staged for SSL_write
    std::vector<asio::const_buffer> bufs;
    struct Seg {
      const char* data;  // a shared body, or nullptr: `offset` into ctrl_w
      std::size_t offset, size;
    };
    std::vector<Seg> segs;
    std::size_t round_frames = 0;
  };

  Impl(asio::io_context& c, LinkOptions o, Handlers h)
      : ctx(c), opt(std::move(o)), handlers(std::move(h)) {
    if (opt.node_name.empty()) throw std::invalid_argument("cluster link: node_name is empty");
    if (opt.node_name.size() > 0xFFFF) throw std::invalid_argument("cluster link: node_name");
    const std::size_t k = opt.secret_key.size();
    if (k != 0 && k != 16 && k != 24 && k != 32) {
      throw std::invalid_argument("cluster link: secret_key must be 16, 24 or 32 bytes");
    }
    if (opt.boot_epoch == 0) {  // unset: microseconds since 1970, new at every start
      opt.boot_epoch =
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
    }
    if (opt.reconnect_min.count() <= 0) opt.reconnect_min = std::chrono::milliseconds(1);
    if (opt.reconnect_max < opt.reconnect_min) opt.reconnect_max = opt.reconnect_min;
    if (opt.ping_interval.count() <= 0) opt.ping_interval = std::chrono::milliseconds(1000);
    if (opt.max_frame_bytes < kMaxHello) opt.max_frame_bytes = kMaxHello;
    if (k != 0) tls_contexts = std::make_unique<LinkTlsContexts>(opt.secret_key);
  }

  asio::io_context& ctx;
  LinkOptions opt;
  Handlers handlers;
  std::unique_ptr<LinkTlsContexts> tls_contexts;  // null: plaintext
  bool stopped = false;
  // Jitter for reconnect delays, so that the links of a restarted node are not all re-dialled
  // by every peer at the same instant.
  std::minstd_rand jitter{std::random_device{}()};
  std::map<std::string, std::shared_ptr<Peer>> peers;  // shape written under mu
  std::set<std::shared_ptr<Conn>> pending;             // inbound, peer not known yet
  mutable std::mutex mu;
  std::uint64_t refused = 0;            // under mu
  std::set<std::string> blocked_names;  // set_blocked() also applies to peers added later
  // Sequence state of removed peers, so that adding one again in our epoch goes on where it
  // stopped (bounded: beyond kMaxRetired names, one is forgotten).
  struct Retired {
    std::uint64_t next_seq, known_epoch, rx_epoch, rx_seq;
  };
  static constexpr std::size_t kMaxRetired = 1024;
  std::map<std::string, Retired> retired;

  bool tls() const { return tls_contexts != nullptr; }

  template <class F>
  void update(Peer& p, F&& f) {
    std::lock_guard<std::mutex> lock(mu);
    f(p.st);
  }
  void update_queue(Peer& p) {
    update(p, [&](LinkStats& s) {
      s.queue_frames = p.queue.size();
      s.queue_bytes = p.queue_bytes;
    });
  }
  void count_refused() {
    std::lock_guard<std::mutex> lock(mu);
    ++refused;
  }

  std::shared_ptr<Peer> find(const std::string& name) const {
    auto it = peers.find(name);
    return it == peers.end() ? nullptr : it->second;
  }

  // ---- peers ------------------------------------------------------------------------------------

  void add_peer(const std::string& name, const std::string& address, std::uint16_t port) {
    if (stopped || name.empty() || name == opt.node_name) return;
    if (auto p = find(name)) {
      if (p->address == address && p->port == port) return;
      p->address = address;
      p->port = port;
      if (!p->dialer) return;
      update(*p, [&](LinkStats& s) { s.address = address + ":" + std::to_string(port); });
      p->backoff = opt.reconnect_min;
      p->dial_timer.cancel();
      p->dial_pending = false;
      if (p->conn) {
        close(p->conn, false, true);  // re-dialled below (or by close, which schedules it)
        return;
      }
      dial(p);
      return;
    }
    auto p = std::make_shared<Peer>(ctx);
    p->name = name;
    p->address = address;
    p->port = port;
    p->dialer = opt.node_name < name;
    p->backoff = opt.reconnect_min;
    p->st.peer = name;
    if (p->dialer) p->st.address = address + ":" + std::to_string(port);
    p->blocked = blocked_names.count(name) != 0;
    if (auto it = retired.find(name); it != retired.end()) {
      // Added again within our epoch: continue our numbering (the peer may remember what it
      // received from us) and its receive state (so nothing is delivered twice).
      p->next_seq = it->second.next_seq;
      p->acked = p->next_seq - 1;
      p->known_epoch = it->second.known_epoch;
      p->rx_epoch = it->second.rx_epoch;
      p->rx_seq = it->second.rx_seq;
      retired.erase(it);
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      peers.emplace(name, p);
    }
    if (p->dialer) dial(p);
  }

  void remove_peer(const std::string& name) {
    auto p = find(name);
    if (!p) return;
    p->removed = true;
    p->dial_timer.cancel();
    if (p->conn) close(p->conn, false, false);
    p->queue.clear();
    if (retired.size() >= kMaxRetired) retired.erase(retired.begin());
    retired[name] = Retired{p->next_seq, p->known_epoch, p->rx_epoch, p->rx_seq};
    std::lock_guard<std::mutex> lock(mu);
    peers.erase(name);
  }

  void set_blocked(const std::string& name, bool blocked) {
    if (blocked) {
      blocked_names.insert(name);
    } else {
      blocked_names.erase(name);
    }
    auto p = find(name);
    if (!p || p->blocked == blocked) return;
    p->blocked = blocked;
    if (blocked) return;  // the connection stops by itself: reads and writes check the flag
    if (auto c = p->conn) {
      if (!c->held.empty()) {
        std::string held;
        held.swap(c->held);
        on_bytes(c, held.data(), held.size());
      }
      if (c->state != Conn::State::closed) {
        if (!c->reading) read(c);
        pump(c);
      }
    } else if (p->dialer) {
      p->dial_timer.cancel();
      p->dial_pending = false;
      p->backoff = opt.reconnect_min;
      dial(p);
    }
  }

  // ---- dialling ---------------------------------------------------------------------------------

  void schedule_dial(const std::shared_ptr<Peer>& p) {
    if (stopped || p->removed || !p->dialer || p->conn || p->dial_pending) return;
    p->dial_pending = true;
    // The backoff +-25%.
    const auto b = p->backoff.count();
    std::uniform_int_distribution<decltype(p->backoff)::rep> spread(b - b / 4, b + b / 4);
    const auto delay = decltype(p->backoff)(spread(jitter));
    p->backoff = std::min(p->backoff * 2, opt.reconnect_max);
    p->dial_timer.expires_after(delay);
    p->dial_timer.async_wait([self = shared_from_this(), p](const std::error_code& ec) {
      if (ec || !p->dial_pending) return;
      p->dial_pending = false;
      self->dial(p);
    });
  }

  void dial(const std::shared_ptr<Peer>& p) {
    if (stopped || p->removed || p->blocked || p->conn) return;
    std::error_code ec;
    const auto addr = asio::ip::make_address(p->address, ec);
    if (ec) {
      update(*p, [](LinkStats& s) { ++s.failures; });
      return;  // not retried until add_peer names a usable address
    }
    auto c = std::make_shared<Conn>(ctx, shared_from_this(), true);
    c->peer = p;
    p->conn = c;
    const tcp::endpoint ep(addr, p->port);
    c->remote = endpoint_string(ep);
    arm_deadline(c);
    c->sock.async_connect(ep, [c](const std::error_code& cec) { c->mgr->on_connected(c, cec); });
  }

  void on_connected(const std::shared_ptr<Conn>& c, const std::error_code& ec) {
    if (c->state == Conn::State::closed) return;
    if (ec) return close(c, true, true);
    std::error_code ignore;
    c->sock.set_option(tcp::no_delay(true), ignore);
    if (tls()) {
      if (!c->tls.start(tls_contexts->client(), io::TlsEngine::Role::client)) {
        return close(c, true, true);
      }
      c->state = Conn::State::tls;
      if (c->tls.handshake() == TlsStatus::failed) return close(c, true, true);
    } else {
      c->state = Conn::State::hello;
      c->ctrl.push_back(static_cast<char>(kPlainMagic));
      append_hello(c->ctrl, *c->peer);
    }
    pump(c);
    read(c);
  }

  void arm_deadline(const std::shared_ptr<Conn>& c) {
    c->deadline.expires_after(opt.connect_timeout);
    c->deadline.async_wait([c](const std::error_code& ec) {
      if (!ec && c->state != Conn::State::up) c->mgr->close(c, true, true);
    });
  }

  // ---- accepting --------------------------------------------------------------------------------

  void on_accept(int fd, const std::string& first) {
    if (stopped) {
      ::close(fd);
      return;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const bool v6 =
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 && ss.ss_family == AF_INET6;
    auto c = std::make_shared<Conn>(ctx, shared_from_this(), false);
    std::error_code ec;
    c->sock.assign(v6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) {
      ::close(fd);
      count_refused();
      return;
    }
    const auto ep = c->sock.remote_endpoint(ec);
    if (!ec) c->remote = endpoint_string(ep);
    c->sock.set_option(tcp::no_delay(true), ec);
    if (tls()) {
      if (!c->tls.start(tls_contexts->server(), io::TlsEngine::Role::server)) {
        count_refused();
        return;  // the socket closes with c
      }
      c->state = Conn::State::tls;
    } else {
      c->state = Conn::State::hello;
    }
    pending.insert(c);
    arm_deadline(c);
    if (!first.empty()) on_bytes(c, first.data(), first.size());
    if (c->state != Conn::State::closed && !c->reading) read(c);
  }

  // ---- reading ----------------------------------------------------------------------------------

  void read(const std::shared_ptr<Conn>& c) {
    if (c->state == Conn::State::closed || c->reading) return;
    c->reading = true;
    c->sock.async_read_some(asio::buffer(c->rbuf.get(), kReadChunk),
                            [c](const std::error_code& ec, std::size_t n) {
                              c->reading = false;
                              if (c->state == Conn::State::closed) return;
                              c->mgr->on_read(c, ec, n);
                            });
  }

  void on_read(const std::shared_ptr<Conn>& c, const std::error_code& ec, std::size_t n) {
    if (ec) return close(c, true, true);
    if (c->peer && c->peer->blocked) {
      c->held.append(c->rbuf.get(), n);  // the partition holds it; no further read
      return;
    }
    on_bytes(c, c->rbuf.get(), n);
    if (c->state != Conn::State::closed && !(c->peer && c->peer->blocked)) read(c);
  }

  void on_bytes(const std::shared_ptr<Conn>& c, const char* data, std::size_t n) {
    if (n == 0) return;
    c->last_rx = Clock::now();
    if (c->peer) {
      update(*c->peer, [&](LinkStats& s) { s.bytes_received += n; });
    } else {
      c->unattributed_in += n;
    }
    if (!c->outbound && !c->first_checked) {
      c->first_checked = true;
      // With a key the stream is TLS from its first byte; without one it is the magic byte.
      const auto b = static_cast<std::uint8_t>(data[0]);
      if (tls() ? b != kTlsHandshakeRecord : b != kPlainMagic) return close(c, true, true);
    }
    if (!c->tls.active()) {
      feed_plain(c, data, n);
      if (c->state != Conn::State::closed) pump(c);  // pongs, the server's hello
      return;
    }

    if (!c->tls.feed(data, n)) return close(c, true, true);
    if (c->state == Conn::State::tls) {
      const TlsStatus h = c->tls.handshake();
      if (h == TlsStatus::want) return pump(c);
      if (h != TlsStatus::ok) return close(c, true, true);  // wrong key, wrong mode
      c->state = Conn::State::hello;
      if (c->outbound) {
        c->ctrl.push_back(static_cast<char>(kPlainMagic));
        append_hello(c->ctrl, *c->peer);
      }
    }
    char plain[16 * 1024];  // not a member: a handler may feed another connection meanwhile
    while (c->state != Conn::State::closed) {
      std::size_t got = 0;
      const TlsStatus r = c->tls.read(plain, sizeof plain, got);
      if (r == TlsStatus::want) break;
      if (r != TlsStatus::ok) return close(c, r != TlsStatus::closed, true);
      feed_plain(c, plain, got);
    }
    if (c->state != Conn::State::closed) pump(c);
  }

  void feed_plain(const std::shared_ptr<Conn>& c, const char* data, std::size_t n) {
    if (!c->outbound && !c->magic_seen && n != 0) {
      if (static_cast<std::uint8_t>(data[0]) != kPlainMagic) return close(c, true, true);
      c->magic_seen = true;
      ++data;
      --n;
    }
    if (n == 0) return;
    if (c->in.empty()) {
      const std::size_t used = parse(c, data, n);
      if (c->state != Conn::State::closed && used < n) c->in.assign(data + used, n - used);
    } else {
      c->in.append(data, n);
      const std::size_t used = parse(c, c->in.data(), c->in.size());
      if (c->state != Conn::State::closed) c->in.erase(0, used);
    }
    if (c->state == Conn::State::up) schedule_ack(c);
  }

  // Parses whole frames; returns the bytes used. A malformed frame closes the connection.
  std::size_t parse(const std::shared_ptr<Conn>& c, const char* data, std::size_t n) {
    std::size_t off = 0;
    while (c->state != Conn::State::closed && n - off >= 4) {
      const std::size_t len = load_be32(data + off);
      const std::size_t limit = c->state == Conn::State::up ? opt.max_frame_bytes : kMaxHello;
      if (len < kMinLength || len > limit) {
        close(c, true, true);
        break;
      }
      if (n - off < 4 + len) break;
      const auto kind = static_cast<std::uint8_t>(data[off + 4]);
      const std::uint64_t seq = load_be64(data + off + 5);
      const std::string_view body(data + off + kHeader, len - kMinLength);
      off += 4 + len;
      on_frame(c, kind, seq, body);
    }
    return off;
  }

  void on_frame(const std::shared_ptr<Conn>& c, std::uint8_t kind, std::uint64_t seq,
                std::string_view body) {
    if (c->state != Conn::State::up) {
      if (kind != 0 || body.empty() || static_cast<std::uint8_t>(body[0]) != kHello) {
        return close(c, true, true);
      }
      return on_hello(c, body);
    }
    Peer& p = *c->peer;
    if (kind == 0) {
      if (body.size() != 1) return close(c, true, true);
      switch (static_cast<std::uint8_t>(body[0])) {
        case kAck:
          return on_ack(c, seq);
        case kPing:
          append_control(c->ctrl, kPong, seq);
          return;  // written by the pump after this read
        case kPong:
          if (c->ping_outstanding && seq == c->ping_id) {
            c->ping_outstanding = false;
            rtt_sample(p, std::chrono::duration<double>(Clock::now() - c->ping_sent).count());
          }
          return;
        default:
          return close(c, true, true);
      }
    }
    if (seq == 0) return close(c, true, true);
    if (seq <= p.rx_seq) {
      update(p, [](LinkStats& s) { ++s.duplicates; });
      return;
    }
    p.rx_seq = seq;
    update(p, [](LinkStats& s) { ++s.frames_received; });
    if (handlers.on_frame) handlers.on_frame(p.name, kind, body);
  }

  void rtt_sample(Peer& p, double secs) {
    update(p, [&](LinkStats& s) {
      ++s.rtt_count;
      s.rtt_sum += secs;
      for (std::size_t i = 0; i < LinkStats::kRttBounds.size(); ++i) {
        if (secs <= LinkStats::kRttBounds[i]) ++s.rtt_buckets[i];
      }
    });
  }

  void on_ack(const std::shared_ptr<Conn>& c, std::uint64_t seq) {
    Peer& p = *c->peer;
    if (seq >= p.next_seq) return close(c, true, true);  // acknowledges what was never sent
    if (seq <= p.acked) return;
    update(p, [&](LinkStats& s) { s.frames_acked += seq - p.acked; });
    p.acked = seq;
    trim(p);
  }

  // ---- hello ------------------------------------------------------------------------------------

  // u8 subtype 0 | u8 version | u64 epoch | u64 ack_epoch | u64 ack_seq | u16 name length | name
  void append_hello(std::string& out, const Peer& p) const {
    std::string body;
    body.push_back(static_cast<char>(kHello));
    body.push_back(static_cast<char>(kLinkProtocolVersion));
    put_be64(body, opt.boot_epoch);
    put_be64(body, p.rx_epoch);
    put_be64(body, p.rx_seq);
    put_be16(body, static_cast<std::uint16_t>(opt.node_name.size()));
    body += opt.node_name;
    char h[kHeader];
    put_header(h, body.size(), 0, 0);
    out.append(h, kHeader);
    out += body;
  }

  void on_hello(const std::shared_ptr<Conn>& c, std::string_view body) {
    constexpr std::size_t kFixed = 2 + 8 + 8 + 8 + 2;
    if (body.size() < kFixed || static_cast<std::uint8_t>(body[1]) != kLinkProtocolVersion) {
      return close(c, true, true);
    }
    const std::uint64_t epoch = load_be64(body.data() + 2);
    const std::uint64_t ack_epoch = load_be64(body.data() + 10);
    const std::uint64_t ack_seq = load_be64(body.data() + 18);
    const std::size_t name_len = load_be16(body.data() + 26);
    if (body.size() != kFixed + name_len || name_len == 0) return close(c, true, true);
    const std::string name(body.substr(kFixed));

    std::shared_ptr<Peer> p;
    if (c->outbound) {
      p = c->peer;
      if (name != p->name) return close(c, true, true);  // someone else answers there now
    } else {
      p = find(name);
      // Unknown peers, peers that should dial us not... (direction), and blocked peers.
      if (!p || p->dialer || p->blocked) return close(c, true, true);
      pending.erase(c);
      if (auto old = p->conn) close(old, false, true);  // a newer link replaces it
      if (stopped || p->removed || c->state == Conn::State::closed) {
        return close(c, true, true);
      }
      c->peer = p;
      p->conn = c;
      update(*p, [&](LinkStats& s) {
        s.address = c->remote;
        s.bytes_received += c->unattributed_in;
      });
    }

    // A restarted peer: what we queued for its previous incarnation is dropped and our
    // numbering restarts; its frames are numbered from 1 again.
    if (p->known_epoch != 0 && epoch != p->known_epoch) {
      p->queue.clear();
      p->queue_bytes = 0;
      p->next_seq = 1;
      p->acked = 0;
    }
    if (epoch != p->rx_epoch) {
      p->rx_epoch = epoch;
      p->rx_seq = 0;
    }
    p->known_epoch = epoch;
    if (ack_epoch == opt.boot_epoch && ack_seq != 0) {
      if (ack_seq >= p->next_seq) return close(c, true, true);
      if (ack_seq > p->acked) {
        update(*p, [&](LinkStats& s) { s.frames_acked += ack_seq - p->acked; });
        p->acked = ack_seq;
      }
    }
    trim(*p);
    c->write_seq = p->acked + 1;
    if (!p->queue.empty()) c->write_seq = std::max(c->write_seq, p->queue.front().seq);
    c->ack_sent = p->rx_seq;
    if (!c->outbound) append_hello(c->ctrl, *p);

    c->state = Conn::State::up;
    c->deadline.cancel();
    p->backoff = opt.reconnect_min;
    update(*p, [&](LinkStats& s) {
      s.connected = true;
      s.peer_epoch = epoch;
      s.queue_frames = p->queue.size();
      s.queue_bytes = p->queue_bytes;
    });
    send_ping(c);
    arm_ping(c);
    pump(c);
    if (handlers.on_up) handlers.on_up(p->name, epoch);
  }

  // ---- acks and pings ---------------------------------------------------------------------------

  void schedule_ack(const std::shared_ptr<Conn>& c) {
    if (c->ack_pending || c->peer->rx_seq <= c->ack_sent) return;
    if (opt.ack_delay.count() <= 0) return send_ack(c);
    c->ack_pending = true;
    c->ack_timer.expires_after(opt.ack_delay);
    c->ack_timer.async_wait([c](const std::error_code& ec) {
      c->ack_pending = false;
      if (!ec && c->state == Conn::State::up) c->mgr->send_ack(c);
    });
  }

  void send_ack(const std::shared_ptr<Conn>& c) {
    if (c->peer->rx_seq <= c->ack_sent) return;
    c->ack_sent = c->peer->rx_seq;
    append_control(c->ctrl, kAck, c->ack_sent);
    pump(c);
  }

  void send_ping(const std::shared_ptr<Conn>& c) {
    c->ping_outstanding = true;
    c->ping_sent = Clock::now();
    append_control(c->ctrl, kPing, ++c->ping_id);
  }

  void arm_ping(const std::shared_ptr<Conn>& c) {
    c->ping_timer.expires_after(opt.ping_interval);
    c->ping_timer.async_wait([c](const std::error_code& ec) {
      if (ec || c->state != Conn::State::up) return;
      Impl& m = *c->mgr;
      if (Clock::now() - c->last_rx >= kDeadPings * m.opt.ping_interval) {
        return m.close(c, true, true);  // silence: a dead link (or a partition)
      }
      if (!c->peer->blocked) {
        m.send_ping(c);
        m.pump(c);
      }
      m.arm_ping(c);
    });
  }

  // ---- writing ----------------------------------------------------------------------------------

  bool send(const std::string& name, std::uint8_t kind, std::shared_ptr<const std::string> body) {
    if (stopped || kind == 0) return false;
    auto p = find(name);
    if (!p) return false;
    if (!body) body = std::make_shared<const std::string>();
    const std::size_t size = kHeader + body->size();
    if (p->queue_bytes + size > opt.max_queue_bytes ||
        kMinLength + body->size() > opt.max_frame_bytes) {
      update(*p, [](LinkStats& s) { ++s.dropped; });
      return false;
    }
    OutFrame f;
    f.seq = p->next_seq++;
    put_header(f.head.data(), body->size(), kind, f.seq);
    f.body = std::move(body);
    p->queue.push_back(std::move(f));
    p->queue_bytes += size;
    update_queue(*p);
    if (p->conn && p->conn->state == Conn::State::up) kick(p->conn);
    return true;
  }

  // Writes soon: every send() of the current handler goes into the same round.
  void kick(const std::shared_ptr<Conn>& c) {
    if (c->writing || c->flush_posted) return;
    c->flush_posted = true;
    asio::post(ctx, [c] {
      c->flush_posted = false;
      c->mgr->pump(c);
    });
  }

  // Frames from c->write_seq on, within the round's limits; calls add(frame) for each.
  template <class Add>
  void take_frames(const std::shared_ptr<Conn>& c, std::size_t max_bytes, Add&& add) {
    Peer& p = *c->peer;
    if (p.queue.empty()) return;
    std::size_t bytes = 0;
    std::size_t i = static_cast<std::size_t>(c->write_seq - p.queue.front().seq);
    for (; i < p.queue.size() && c->round_frames < kMaxRoundFrames && bytes < max_bytes; ++i) {
      const OutFrame& f = p.queue[i];
      add(f);
      bytes += f.size();
      ++c->round_frames;
      ++c->write_seq;
    }
  }

  void pump(const std::shared_ptr<Conn>& c) {
    if (c->state == Conn::State::closed || c->state == Conn::State::connecting || c->writing) {
      return;
    }
    if (c->peer && c->peer->blocked) return;
    c->bufs.clear();
    c->round_frames = 0;
    const bool up = c->state == Conn::State::up;
    if (!c->tls.active()) {
      // Control frames, headers and small bodies are copied into ctrl_w, in runs; a larger
      // body is its own buffer, shared with every other link that sends it. Runs are kept as
      // offsets until ctrl_w stops growing.
      c->ctrl_w.swap(c->ctrl);
      c->ctrl.clear();
      c->segs.clear();
      std::size_t run = 0;  // start of the current run in ctrl_w
      if (up) {
        take_frames(c, kMaxRoundBytes, [&](const OutFrame& f) {
          c->ctrl_w.append(f.head.data(), kHeader);
          if (f.body->size() <= kCopyBelow) {
            c->ctrl_w.append(*f.body);
            return;
          }
          c->segs.push_back({nullptr, run, c->ctrl_w.size() - run});
          c->segs.push_back({f.body->data(), 0, f.body->size()});
          run = c->ctrl_w.size();
        });
      }
      if (c->ctrl_w.size() > run) c->segs.push_back({nullptr, run, c->ctrl_w.size() - run});
      for (const Conn::Seg& g : c->segs) {
        c->bufs.push_back(
            asio::buffer(g.data != nullptr ? g.data : c->ctrl_w.data() + g.offset, g.size));
      }
    } else {
      if (c->state == Conn::State::hello || up) {
        c->stage.swap(c->ctrl);
        c->ctrl.clear();
        if (up) {
          take_frames(c, kMaxTlsRoundBytes, [&](const OutFrame& f) {
            c->stage.append(f.head.data(), kHeader);
            c->stage.append(*f.body);
          });
        }
        const bool written = c->tls.write(c->stage);
        c->stage.clear();
        if (!written) return close(c, true, true);
      }
      c->tls_w.clear();
      c->tls.drain(c->tls_w);
      if (!c->tls_w.empty()) c->bufs.push_back(asio::buffer(c->tls_w));
    }
    if (c->bufs.empty()) return;
    c->writing = true;
    asio::async_write(c->sock, c->bufs, [c](const std::error_code& ec, std::size_t n) {
      c->writing = false;
      c->mgr->on_written(c, ec, n);
    });
  }

  void on_written(const std::shared_ptr<Conn>& c, const std::error_code& ec, std::size_t n) {
    if (c->peer) trim(*c->peer);
    if (c->state == Conn::State::closed) return;
    if (ec) return close(c, true, true);
    if (c->peer) {
      update(*c->peer, [&](LinkStats& s) {
        s.bytes_sent += n;
        s.frames_sent += c->round_frames;
      });
    }
    c->round_frames = 0;
    pump(c);
  }

  // Drops acknowledged frames, unless a write (which may point into them) is in flight.
  void trim(Peer& p) {
    if (p.conn && p.conn->writing) return;
    bool changed = false;
    while (!p.queue.empty() && p.queue.front().seq <= p.acked) {
      p.queue_bytes -= p.queue.front().size();
      p.queue.pop_front();
      changed = true;
    }
    if (changed) update_queue(p);
  }

  // ---- closing ----------------------------------------------------------------------------------

  // Closes `c`. failure: counted (on its peer, or as a refused inbound stream); notify: an up
  // link reports on_down. A dialled peer is re-dialled after its backoff.
  void close(const std::shared_ptr<Conn>& c, bool failure, bool notify) {
    if (c->state == Conn::State::closed) return;
    const bool was_up = c->state == Conn::State::up;
    c->state = Conn::State::closed;
    std::error_code ignore;
    c->deadline.cancel();
    c->ping_timer.cancel();
    c->ack_timer.cancel();
    c->sock.close(ignore);
    std::string().swap(c->held);
    auto p = c->peer;
    if (!p || p->conn != c) {
      if (!p) {
        pending.erase(c);
        if (failure) count_refused();
      }
      return;
    }
    p->conn.reset();
    update(*p, [&](LinkStats& s) {
      s.connected = false;
      if (failure) ++s.failures;
    });
    trim(*p);
    schedule_dial(p);
    if (was_up && notify && !stopped && handlers.on_down) handlers.on_down(p->name);
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    for (auto& [name, p] : peers) {
      p->dial_timer.cancel();
      p->dial_pending = false;
      if (p->conn) close(p->conn, false, false);
    }
    const auto in = pending;
    for (const auto& c : in) close(c, false, false);
    std::lock_guard<std::mutex> lock(mu);
    peers.clear();
    pending.clear();
  }
};

// ---- LinkManager --------------------------------------------------------------------------------

LinkManager::LinkManager(asio::io_context& ctx, LinkOptions options, Handlers handlers)
    : impl_(std::make_shared<Impl>(ctx, std::move(options), std::move(handlers))) {}

LinkManager::~LinkManager() { stop(); }

void LinkManager::add_peer(const std::string& peer, const std::string& address,
                           std::uint16_t port) {
  impl_->add_peer(peer, address, port);
}

void LinkManager::remove_peer(const std::string& peer) { impl_->remove_peer(peer); }

bool LinkManager::send(const std::string& peer, std::uint8_t kind,
                       std::shared_ptr<const std::string> body) {
  return impl_->send(peer, kind, std::move(body));
}

bool LinkManager::connected(const std::string& peer) const {
  auto p = impl_->find(peer);
  return p && p->conn && p->conn->state == Impl::Conn::State::up;
}

std::size_t LinkManager::queued_bytes(const std::string& peer) const {
  auto p = impl_->find(peer);
  return p ? p->queue_bytes : 0;
}

bool LinkManager::idle() const {
  for (const auto& [name, p] : impl_->peers) {
    if (p->acked + 1 < p->next_seq) return false;
  }
  return true;
}

void LinkManager::accept(int fd, std::string_view first_bytes) {
  // The descriptor is closed if the handler is destroyed without running (context gone).
  struct Fd {
    int fd;
    explicit Fd(int f) : fd(f) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  };
  auto owned = std::make_shared<Fd>(fd);
  asio::post(impl_->ctx, [impl = impl_, owned, first = std::string(first_bytes)] {
    const int f = owned->fd;
    owned->fd = -1;
    impl->on_accept(f, first);
  });
}

void LinkManager::set_blocked(const std::string& peer, bool blocked) {
  impl_->set_blocked(peer, blocked);
}

std::vector<LinkStats> LinkManager::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<LinkStats> out;
  out.reserve(impl_->peers.size());
  for (const auto& [name, p] : impl_->peers) out.push_back(p->st);
  return out;
}

std::uint64_t LinkManager::refused_streams() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->refused;
}

void LinkManager::stop() {
  if (impl_) impl_->stop();
}

}  // namespace brokerha::cluster
