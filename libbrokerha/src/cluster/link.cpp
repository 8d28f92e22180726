// SPDX-License-Identifier: Apache-2.0
// The cluster data plane's links: the Asio driver of the link protocol (cluster/link.hpp; the
// protocol: cluster/link_protocol.hpp; wire format: docs/cluster-protocol.md, "Link layer").
//
// Layout: the manager (Impl) owns one Peer per known node: its LinkSession (send queue and
// numbering, receive state, the protocol state of the current connection), its dial timer and
// backoff, and its counters. A Peer has at most one Conn (a socket, an io::TlsEngine with a
// key, its timers). Inbound Conns stay in `pending` until their hello (read by an
// InboundHello) names a known peer. Everything runs on the control io_context's one thread;
// the counters (LinkStats, the peer map's shape) are also read by stats() from any thread, so
// every write to them takes `mu`.
//
// Lifetimes: handlers capture shared_ptr<Conn>; a Conn holds shared_ptr<Impl> and its Peer.
// The cycles (Impl -> Peer -> Conn -> Impl) are broken when a Conn closes, and stop() closes
// every Conn. A plaintext gathered write points into the frames the session keeps queued: it
// frees none of them until round_written(), or lost() once the socket is closed.

#include "cluster/link.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <utility>

#include "cluster/link_tls.hpp"
#include "io/tls_engine.hpp"

namespace brokerha::cluster {

namespace {

using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using TlsStatus = io::TlsEngine::Status;

constexpr std::size_t kReadChunk = 64 * 1024;
// One gathered write: at most 4096 frames and 4 MiB of them; plaintext copies headers,
// control frames and bodies up to 512 bytes and references larger bodies; TLS stages
// (copies) at most 256 KiB of plaintext per round.
constexpr LinkSession::RoundLimits kPlainRound{4u << 20, 4096, 512};
constexpr LinkSession::RoundLimits kTlsRound{256u << 10, 4096,
                                             std::numeric_limits<std::size_t>::max()};

std::string endpoint_string(const tcp::endpoint& ep) {
  const auto a = ep.address();
  if (a.is_v6()) return "[" + a.to_string() + "]:" + std::to_string(ep.port());
  return a.to_string() + ":" + std::to_string(ep.port());
}

}  // namespace

struct LinkManager::Impl : std::enable_shared_from_this<LinkManager::Impl> {
  struct Conn;

  struct Peer {
    Peer(asio::io_context& ctx, const LinkSessionOptions& o, const std::string& peer)
        : name(peer), session(o, peer), dial_timer(ctx) {}
    std::string name;
    LinkSession session;
    std::string address;
    std::uint16_t port = 0;
    bool dialer = false;  // our name sorts lower: we dial
    bool blocked = false;
    bool removed = false;
    std::shared_ptr<Conn> conn;  // connecting, handshaking or up
    asio::steady_timer dial_timer;
    bool dial_pending = false;
    std::chrono::milliseconds backoff{0};
    LinkStats st;  // written under Impl::mu
  };

  struct Conn {
    enum class State { connecting, tls, hello, up, closed };

    Conn(asio::io_context& ctx, std::shared_ptr<Impl> m, bool out)
        : mgr(std::move(m)),
          sock(ctx),
          outbound(out),
          deadline(ctx),
          timer(ctx),
          rbuf(new char[kReadChunk]) {}

    std::shared_ptr<Impl> mgr;
    tcp::socket sock;
    bool outbound;
    State state = State::connecting;
    std::shared_ptr<Peer> peer;  // outbound: from the start; inbound: once the hello names it
    std::string remote;          // "ip:port"
    io::TlsEngine tls;           // started with a key
    std::unique_ptr<InboundHello> start;  // inbound: until the hello names the peer
    bool first_checked = false;           // inbound: the stream's first byte was checked
    asio::steady_timer deadline;          // connect_timeout, until up
    asio::steady_timer timer;             // the session's next deadline, once up
    bool timer_armed = false;
    Clock::time_point timer_due{};
    std::uint64_t timer_gen = 0;  // a re-armed timer's cancelled wait does nothing
    bool flush_posted = false;
    std::uint64_t unattributed_in = 0;  // bytes read before the peer was known
    // Reading.
    std::unique_ptr<char[]> rbuf;
    bool reading = false;
    std::string held;  // bytes read while the peer was blocked
    // Writing: one gathered write in flight.
    bool writing = false;
    std::size_t round_frames = 0;
    std::string tls_w;  // ciphertext being written
    std::vector<asio::const_buffer> bufs;
  };

  // What the session finds while reading a connection.
  struct Deliver final : LinkSession::Events {
    Deliver(Impl& manager, const std::shared_ptr<Conn>& conn) : m(manager), c(conn) {}
    void link_up(std::uint64_t epoch) override { m.on_up(c, epoch); }
    void link_frame(std::uint8_t kind, std::string_view body) override {
      Peer& p = *c->peer;
      m.update(p, [&](LinkStats& s) { s.frames_received = p.session.frames_received(); });
      if (m.handlers.on_frame) m.handlers.on_frame(p.name, kind, body);
    }
    Impl& m;
    const std::shared_ptr<Conn>& c;
  };

  Impl(asio::io_context& c, LinkOptions o, Handlers h)
      : ctx(c), opt(std::move(o)), handlers(std::move(h)) {
    if (opt.node_name.empty()) throw std::invalid_argument("cluster link: node_name is empty");
    if (opt.node_name.size() > 0xFFFF) throw std::invalid_argument("cluster link: node_name");
    std::vector<std::string> keys;
    if (!opt.secret_key.empty()) keys.push_back(opt.secret_key);
    for (const std::string& key : opt.secret_keys) {
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
    for (const std::string& key : keys) {
      const std::size_t k = key.size();
      if (k != 16 && k != 24 && k != 32) {
        throw std::invalid_argument("cluster link: secret_key must be 16, 24 or 32 bytes");
      }
    }
    if (opt.boot_epoch == 0) {  // unset: microseconds since 1970, new at every start
      opt.boot_epoch =
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
    }
    if (opt.reconnect_min.count() <= 0) opt.reconnect_min = std::chrono::milliseconds(1);
    if (opt.reconnect_max < opt.reconnect_min) opt.reconnect_max = opt.reconnect_min;
    if (!keys.empty()) tls = std::make_unique<LinkTlsContexts>(keys);
  }

  asio::io_context& ctx;
  LinkOptions opt;
  Handlers handlers;
  std::unique_ptr<LinkTlsContexts> tls;  // null: plaintext
  bool stopped = false;
  // Jitter for reconnect delays, so that the links of a restarted node are not all re-dialled
  // by every peer at the same instant.
  std::minstd_rand jitter{std::random_device{}()};
  std::map<std::string, std::shared_ptr<Peer>> peers;  // shape written under mu
  std::set<std::shared_ptr<Conn>> pending;             // inbound, peer not known yet
  mutable std::mutex mu;
  std::uint64_t refused = 0;            // under mu
  std::uint64_t over_limit = 0;         // under mu: closed at accept, max_pending_inbound pending
  std::set<std::string> blocked_names;  // set_blocked() also applies to peers added later
  // Numbering of removed peers, so that adding one again in our epoch goes on where it
  // stopped (bounded: beyond kMaxRetired names, one is forgotten).
  static constexpr std::size_t kMaxRetired = 1024;
  std::map<std::string, LinkSession::Numbering> retired;

  template <class F>
  void update(Peer& p, F&& f) {
    std::lock_guard<std::mutex> lock(mu);
    f(p.st);
  }
  // The session's counters into the peer's LinkStats.
  void publish(Peer& p) {
    std::lock_guard<std::mutex> lock(mu);
    p.session.fill(p.st);
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
    auto p = std::make_shared<Peer>(ctx, opt, name);
    p->address = address;
    p->port = port;
    p->dialer = opt.node_name < name;
    p->backoff = opt.reconnect_min;
    p->st.peer = name;
    if (p->dialer) p->st.address = address + ":" + std::to_string(port);
    p->blocked = blocked_names.count(name) != 0;
    p->session.set_quiet(p->blocked);
    if (auto it = retired.find(name); it != retired.end()) {
      // Added again within our epoch: continue our numbering (the peer may remember what it
      // received from us) and its receive state (so nothing is delivered twice).
      p->session.resume(it->second);
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
    p->session.drop_queue();
    if (retired.size() >= kMaxRetired) retired.erase(retired.begin());
    retired[name] = p->session.numbering();
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
    p->session.set_quiet(blocked);
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

  void redial(const std::string& name) {
    auto p = find(name);
    if (!p || stopped || p->removed || p->blocked || !p->dialer || p->conn) return;
    p->dial_timer.cancel();
    p->dial_pending = false;
    p->backoff = opt.reconnect_min;
    dial(p);
  }

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
    if (tls) {
      if (!c->tls.start(tls->client(), io::TlsEngine::Role::client)) return close(c, true, true);
      c->state = Conn::State::tls;
      if (c->tls.handshake() == TlsStatus::failed) return close(c, true, true);
    } else {
      c->state = Conn::State::hello;
      c->peer->session.dial(Clock::now());
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
    if (opt.max_pending_inbound != 0 && pending.size() >= opt.max_pending_inbound) {
      // Each pending stream holds a read buffer before it proves the key: a flood of them is
      // closed at once, and the ones pending end at their connect timeout.
      ::close(fd);
      std::lock_guard<std::mutex> lock(mu);
      ++over_limit;
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
    if (tls) {
      if (!c->tls.start(tls->server(), io::TlsEngine::Role::server)) {
        count_refused();
        return;  // the socket closes with c
      }
      c->state = Conn::State::tls;
    } else {
      c->state = Conn::State::hello;
    }
    c->start = std::make_unique<InboundHello>();
    pending.insert(c);
    arm_deadline(c);
    if (!first.empty()) on_bytes(c, first.data(), first.size());
    if (c->state != Conn::State::closed && !c->reading) read(c);
  }

  // The hello of an accepted stream names its peer: the stream becomes that peer's link.
  void on_inbound_hello(const std::shared_ptr<Conn>& c, Clock::time_point now) {
    const std::unique_ptr<InboundHello> start = std::move(c->start);
    auto p = find(start->hello().name);
    // Unknown peers, peers that should dial us not... (direction), and blocked peers.
    if (!p || p->dialer || p->blocked) return close(c, true, true);
    pending.erase(c);
    if (auto old = p->conn) close(old, false, true);  // a newer link replaces it
    if (stopped || p->removed || c->state == Conn::State::closed) return close(c, true, true);
    c->peer = p;
    p->conn = c;
    update(*p, [&](LinkStats& s) {
      s.address = c->remote;
      s.bytes_received += c->unattributed_in;
    });
    Deliver d(*this, c);
    bool ok = p->session.accept(start->hello(), now, d);
    if (ok && c->state != Conn::State::closed) ok = p->session.receive(start->rest(), now, d);
    after_session(c, ok);
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
    const Clock::time_point now = Clock::now();
    if (c->peer) {
      c->peer->session.heard(now);
      update(*c->peer, [&](LinkStats& s) { s.bytes_received += n; });
    } else {
      c->unattributed_in += n;
    }
    if (!c->outbound && !c->first_checked) {
      c->first_checked = true;
      // With a key the stream is TLS from its first byte; without one it is the magic byte.
      if (!link_stream_start_ok(static_cast<std::uint8_t>(data[0]), tls != nullptr)) {
        return close(c, true, true);
      }
    }
    if (!c->tls.active()) {
      feed_plain(c, std::string_view(data, n), now);
    } else {
      if (!c->tls.feed(data, n)) return close(c, true, true);
      if (c->state == Conn::State::tls) {
        const TlsStatus h = c->tls.handshake();
        if (h == TlsStatus::want) return pump(c);
        if (h != TlsStatus::ok) return close(c, true, true);  // wrong key, wrong mode
        c->state = Conn::State::hello;
        if (c->outbound) c->peer->session.dial(now);
      }
      char plain[16 * 1024];  // not a member: a handler may feed another connection meanwhile
      while (c->state != Conn::State::closed) {
        std::size_t got = 0;
        const TlsStatus r = c->tls.read(plain, sizeof plain, got);
        if (r == TlsStatus::want) break;
        if (r != TlsStatus::ok) return close(c, r != TlsStatus::closed, true);
        feed_plain(c, std::string_view(plain, got), now);
      }
    }
    if (c->state != Conn::State::closed) pump(c);  // pongs, acks, the acceptor's hello
  }

  void feed_plain(const std::shared_ptr<Conn>& c, std::string_view bytes, Clock::time_point now) {
    if (bytes.empty()) return;
    if (!c->peer) {  // accepted, before its hello
      switch (c->start->feed(bytes)) {
        case InboundHello::Status::more:
          return;
        case InboundHello::Status::refused:
          return close(c, true, true);
        case InboundHello::Status::hello:
          return on_inbound_hello(c, now);
      }
      return;
    }
    Deliver d(*this, c);
    after_session(c, c->peer->session.receive(bytes, now, d));
  }

  // After the session read: a protocol fault closes the connection; else the counters and the
  // timer follow the session.
  void after_session(const std::shared_ptr<Conn>& c, bool ok) {
    if (c->state == Conn::State::closed) return;
    if (!ok) return close(c, true, true);
    publish(*c->peer);
    arm_timer(c);
  }

  void on_up(const std::shared_ptr<Conn>& c, std::uint64_t epoch) {
    Peer& p = *c->peer;
    c->state = Conn::State::up;
    c->deadline.cancel();
    p.backoff = opt.reconnect_min;
    update(p, [&](LinkStats& s) {
      s.connected = true;
      s.peer_epoch = epoch;
      p.session.fill(s);
    });
    arm_timer(c);
    pump(c);
    if (handlers.on_up) handlers.on_up(p.name, epoch);
  }

  // ---- the session's timers (acknowledgements, pings, silence) ----------------------------------

  void arm_timer(const std::shared_ptr<Conn>& c) {
    if (c->state != Conn::State::up) return;
    const Clock::time_point due = c->peer->session.next_deadline();
    if (due == Clock::time_point::max() || (c->timer_armed && c->timer_due <= due)) return;
    c->timer_armed = true;
    c->timer_due = due;
    const std::uint64_t gen = ++c->timer_gen;
    c->timer.expires_at(due);
    c->timer.async_wait([c, gen](const std::error_code& ec) {
      if (gen != c->timer_gen) return;  // re-armed meanwhile
      c->timer_armed = false;
      if (ec || c->state != Conn::State::up) return;
      Impl& m = *c->mgr;
      if (!c->peer->session.advance(Clock::now())) return m.close(c, true, true);
      m.pump(c);
      m.arm_timer(c);
    });
  }

  // ---- writing ----------------------------------------------------------------------------------

  bool send(const std::string& name, std::uint8_t kind, std::shared_ptr<const std::string> body) {
    if (stopped || kind == 0) return false;
    auto p = find(name);
    if (!p) return false;
    const bool queued = p->session.send(kind, std::move(body));
    update(*p, [&](LinkStats& s) {
      s.dropped = p->session.dropped();
      s.queue_frames = p->session.queue_frames();
      s.queue_bytes = p->session.queue_bytes();
    });
    if (queued && p->conn && p->conn->state == Conn::State::up) kick(p->conn);
    return queued;
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

  void pump(const std::shared_ptr<Conn>& c) {
    if (c->state == Conn::State::closed || c->state == Conn::State::connecting || c->writing) {
      return;
    }
    if (c->peer && c->peer->blocked) return;
    c->bufs.clear();
    c->round_frames = 0;
    const LinkSession::Round* round = nullptr;
    if (c->peer && (c->state == Conn::State::hello || c->state == Conn::State::up)) {
      round = c->peer->session.take_round(c->tls.active() ? kTlsRound : kPlainRound);
    }
    if (round != nullptr) c->round_frames = round->frames;
    if (!c->tls.active()) {
      if (round != nullptr) {
        for (const std::string_view piece : round->pieces) {
          c->bufs.push_back(asio::buffer(piece.data(), piece.size()));
        }
      }
    } else {
      if (round != nullptr) {
        for (const std::string_view piece : round->pieces) {
          if (!c->tls.write(piece)) return close(c, true, true);
        }
      }
      c->tls_w.clear();
      c->tls.drain(c->tls_w);
      if (!c->tls_w.empty()) c->bufs.push_back(asio::buffer(c->tls_w));
    }
    if (c->bufs.empty()) {
      if (round != nullptr) c->peer->session.round_written();
      return;
    }
    c->writing = true;
    asio::async_write(c->sock, c->bufs, [c](const std::error_code& ec, std::size_t n) {
      c->writing = false;
      c->mgr->on_written(c, ec, n);
    });
  }

  void on_written(const std::shared_ptr<Conn>& c, const std::error_code& ec, std::size_t n) {
    if (c->state == Conn::State::closed) return;  // lost() released the round
    if (ec) return close(c, true, true);
    if (c->peer) {
      Peer& p = *c->peer;
      p.session.round_written();
      update(p, [&](LinkStats& s) {
        s.bytes_sent += n;
        s.frames_sent += c->round_frames;
        p.session.fill(s);
      });
    }
    c->round_frames = 0;
    pump(c);
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
    c->timer.cancel();
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
    p->session.lost();  // the socket is closed: nothing of the session is referenced any more
    update(*p, [&](LinkStats& s) {
      s.connected = false;
      if (failure) ++s.failures;
      p->session.fill(s);
    });
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

void LinkManager::redial(const std::string& peer) { impl_->redial(peer); }

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
  return p ? p->session.queue_bytes() : 0;
}

std::size_t LinkManager::queued_frames(const std::string& peer) const {
  auto p = impl_->find(peer);
  return p ? p->session.queue_frames() : 0;
}

bool LinkManager::idle() const {
  for (const auto& [name, p] : impl_->peers) {
    if (!p->session.idle()) return false;
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

std::uint64_t LinkManager::inbound_over_limit() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->over_limit;
}

void LinkManager::set_keys(const std::vector<std::string>& keys) {
  if (!impl_->tls) throw std::invalid_argument("cluster link: started without a key");
  impl_->tls->set_keys(keys);
}

void LinkManager::stop() {
  if (impl_) impl_->stop();
}

}  // namespace brokerha::cluster
