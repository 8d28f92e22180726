// SPDX-License-Identifier: Apache-2.0
// brokerha::Membership: the Asio driver of the protocol core (README.md here).
//
// One io_context on one thread (the membership thread) owns the Core, a UDP socket and a TCP
// acceptor bound to the same port, and a steady_timer armed at Core::next_deadline(). Public
// calls post onto that thread and wait on a future; members()/local_health()/stats() read a
// snapshot republished by the thread. Core callbacks (events, user messages) are queued while
// the Core runs and delivered after it returns, so a user callback may call send().
//
// Bounds: UDP datagrams read into one 64 KiB buffer; at most max_concurrent_streams TCP streams
// each way, each with a tcp_timeout deadline for the whole exchange and a max_stream size cap.

#include <brokerha/membership.hpp>
#include <brokerha/testing.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

#include "io/asio.hpp"
#include "membership/core.hpp"
#include "membership/stream_seam.hpp"
#include "util/lifecycle.hpp"

namespace brokerha {

namespace mb = membership;
using asio::ip::tcp;
using asio::ip::udp;

namespace {

using Clock = std::chrono::steady_clock;

std::string raw_ip(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    const auto b = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_bytes();
    return std::string(b.begin(), b.end());
  }
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    return std::string(b.begin(), b.end());
  }
  const auto b = a.to_v6().to_bytes();
  return std::string(b.begin(), b.end());
}

std::optional<asio::ip::address> from_raw(const std::string& ip) {
  if (ip.size() == 4) {
    asio::ip::address_v4::bytes_type b{};
    std::copy(ip.begin(), ip.end(), b.begin());
    return asio::ip::address(asio::ip::address_v4(b));
  }
  if (ip.size() == 16) {
    asio::ip::address_v6::bytes_type b{};
    std::copy(ip.begin(), ip.end(), b.begin());
    return asio::ip::address(asio::ip::address_v6(b));
  }
  return std::nullopt;
}

Member to_public(const mb::Member& m) {
  Member r;
  r.name = m.name;
  if (auto a = from_raw(m.addr.ip)) r.address = a->to_string();
  r.port = m.addr.port;
  r.meta = m.meta;
  r.state = static_cast<MemberState>(m.state);
  r.incarnation = m.incarnation;
  r.protocol_min = m.vsn[0];
  r.protocol_max = m.vsn[1];
  r.protocol_cur = m.vsn[2];
  r.delegate_min = m.vsn[3];
  r.delegate_max = m.vsn[4];
  r.delegate_cur = m.vsn[5];
  return r;
}

// "ip", "ip:port", "[ip6]:port".
bool parse_seed(const std::string& s, mb::Address& out) {
  std::string host = s;
  std::uint16_t port = 7946;
  std::string port_text;
  if (!s.empty() && s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string::npos) return false;
    host = s.substr(1, close - 1);
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':') return false;
      port_text = s.substr(close + 2);
    }
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    const auto colon = s.find(':');
    host = s.substr(0, colon);
    port_text = s.substr(colon + 1);
  }
  if (!port_text.empty()) {
    if (port_text.size() > 5 || !std::all_of(port_text.begin(), port_text.end(),
                                             [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    const unsigned long p = std::stoul(port_text);
    if (p == 0 || p > 65535) return false;
    port = static_cast<std::uint16_t>(p);
  }
  std::error_code ec;
  const auto a = asio::ip::make_address(host, ec);
  if (ec) return false;
  out = mb::Address{raw_ip(a), port};
  return true;
}

}  // namespace

struct Membership::Impl final : mb::CoreOutput {
  struct OutStream {
    explicit OutStream(asio::io_context& io) : sock(io), deadline(io) {}
    tcp::socket sock;
    asio::steady_timer deadline;
    std::uint64_t id = 0;
    bool expect_reply = false;
    bool done = false;
    std::string out;
    std::string in;
    std::array<char, 4096> chunk{};
  };
  struct InStream {
    explicit InStream(tcp::socket s, asio::io_context& io) : sock(std::move(s)), deadline(io) {}
    tcp::socket sock;
    asio::steady_timer deadline;
    mb::Address from;
    bool done = false;
    std::string in;
    std::string reply;
    std::array<char, 4096> chunk{};
  };

  explicit Impl(MembershipOptions o) : opt(std::move(o)) {}

  MembershipOptions opt;
  EventCallback on_event;
  MessageCallback on_message;
  LocalStateCallback on_local_state;
  MergeStateCallback on_merge_state;
  membership::StreamHandler on_foreign_stream;

  asio::io_context io;
  udp::socket usock{io};
  tcp::acceptor acceptor{io};
  asio::steady_timer timer{io};
  // The acceptor's back-off after an accept error (membership thread only).
  static constexpr std::chrono::milliseconds kAcceptBackoffMin{10};
  static constexpr std::chrono::milliseconds kAcceptBackoffMax{1000};
  asio::steady_timer accept_timer{io};
  std::chrono::milliseconds accept_backoff{0};
  mb::TimePoint armed_at = mb::TimePoint::max();
  std::unique_ptr<mb::Core> core;
  std::thread thread;
  std::atomic<std::thread::id> thread_id{};
  Clock::time_point epoch{};
  std::atomic<bool> started{false};
  std::atomic<bool> stopped{false};
  std::mutex stop_mu;
  std::atomic<std::uint16_t> port{0};
  std::atomic<int> health{0};

  mutable std::mutex snap_mu;
  std::shared_ptr<const std::vector<Member>> snap = std::make_shared<std::vector<Member>>();
  MembershipStats snap_stats;
  Clock::time_point snap_at{};

  // Membership thread only.
  std::array<char, 65536> rbuf{};
  udp::endpoint rfrom;
  std::size_t out_active = 0;
  std::size_t in_active = 0;
  MembershipStats counters;  // stream fields only
  std::vector<MemberEvent> pending_events;
  std::vector<std::string> pending_messages;
  std::vector<std::shared_ptr<std::promise<void>>> leave_waiters;
  bool delivering = false;

  bool on_thread() const noexcept { return std::this_thread::get_id() == thread_id.load(); }
  mb::TimePoint now() const {
    return std::chrono::duration_cast<mb::TimePoint>(Clock::now() - epoch);
  }
  const mb::CodecConfig& codec() const { return core->config().codec; }

  // --- CoreOutput (called inside Core calls, on the membership thread) --------------------------
  // Test fault switch (testing::set_membership_blocked): addresses we neither send to nor
  // hear.
  std::atomic<bool> any_blocked{false};
  mutable std::mutex blocked_mu;
  std::set<std::string> blocked;
  bool is_blocked(const asio::ip::address& a) const {
    if (!any_blocked.load(std::memory_order_relaxed)) return false;
    std::lock_guard<std::mutex> lock(blocked_mu);
    return blocked.count(a.to_string()) != 0;
  }

  void send_packet(const mb::Address& to, std::string bytes) override {
    const auto a = from_raw(to.ip);
    if (!a || !usock.is_open() || is_blocked(*a)) return;
    std::error_code ec;
    // Non-blocking: a full send buffer drops the datagram (best effort, as UDP).
    usock.send_to(asio::buffer(bytes), udp::endpoint(*a, to.port), 0, ec);
  }

  void send_stream(std::uint64_t id, const mb::Address& to, std::string bytes,
                   bool expect_reply) override {
    const auto a = from_raw(to.ip);
    if (!a || out_active >= opt.max_concurrent_streams || is_blocked(*a)) {
      ++counters.streams_refused;
      if (expect_reply) {
        asio::post(io, [this, id] {
          core->on_stream_reply(now(), id, std::nullopt);
          after();
        });
      }
      return;
    }
    ++out_active;
    ++counters.streams_out;
    auto c = std::make_shared<OutStream>(io);
    c->id = id;
    c->expect_reply = expect_reply;
    c->out = std::move(bytes);
    c->deadline.expires_after(opt.tcp_timeout);
    c->deadline.async_wait([c](const std::error_code& ec) {
      if (!ec) {
        std::error_code ignore;
        c->sock.close(ignore);
      }
    });
    c->sock.async_connect(tcp::endpoint(*a, to.port), [this, c](const std::error_code& ec) {
      if (ec) return finish_out(c, false);
      asio::async_write(c->sock, asio::buffer(c->out),
                        [this, c](const std::error_code& wec, std::size_t) {
                          if (wec) return finish_out(c, false);
                          if (!c->expect_reply) return finish_out(c, true);
                          read_out(c);
                        });
    });
  }

  void member_event(const mb::MemberEvent& e) override {
    MemberEvent p;
    p.member = to_public(e.member);
    switch (e.kind) {
      case mb::MemberEvent::Kind::join:
        p.kind = MemberEvent::Kind::join;
        break;
      case mb::MemberEvent::Kind::update:
        p.kind = MemberEvent::Kind::update;
        break;
      case mb::MemberEvent::Kind::leave:
        p.kind = e.member.state == mb::NodeState::left ? MemberEvent::Kind::leave
                                                       : MemberEvent::Kind::failed;
        break;
    }
    if (pending_events.size() < 65536) pending_events.push_back(std::move(p));
  }

  void user_message(std::string_view payload) override {
    if (on_message && pending_messages.size() < 1024) pending_messages.emplace_back(payload);
  }

  std::string local_state(bool join) override {
    return on_local_state ? on_local_state(join) : std::string();
  }

  void merge_remote_state(std::string_view state, bool join) override {
    if (on_merge_state && !state.empty()) on_merge_state(state, join);
  }

  // Runs `f(core)` on the membership thread and returns whether it succeeded (send and
  // send_reliable): inline on that thread, else posted and waited for (at most 5 s).
  template <class F>
  std::error_code run_send(F f) {
    if (!started.load() || stopped.load()) return make_error_code(errc::not_started);
    if (on_thread()) {
      const bool ok = f(*core);
      after();
      return ok ? std::error_code() : make_error_code(errc::invalid_argument);
    }
    auto result = std::make_shared<std::promise<bool>>();
    auto fut = result->get_future();
    asio::post(io, [this, result, f = std::move(f)] {
      result->set_value(f(*core));
      after();
    });
    if (fut.wait_for(std::chrono::seconds(5)) != std::future_status::ready)
      return make_error_code(errc::timed_out);
    try {
      return fut.get() ? std::error_code() : make_error_code(errc::invalid_argument);
    } catch (const std::future_error&) {
      return make_error_code(errc::stopped);
    }
  }

  // --- streams ----------------------------------------------------------------------------------
  void read_out(const std::shared_ptr<OutStream>& c) {
    c->sock.async_read_some(
        asio::buffer(c->chunk), [this, c](const std::error_code& ec, std::size_t n) {
          if (ec) return finish_out(c, false);
          c->in.append(c->chunk.data(), n);
          std::string msg;
          std::size_t used = 0;
          const auto st = mb::decode_stream(codec(), c->in, msg, used);
          if (st == mb::DecodeStatus::need_more && c->in.size() < codec().max_stream)
            return read_out(c);
          finish_out(c, st == mb::DecodeStatus::ok);
        });
  }

  void finish_out(const std::shared_ptr<OutStream>& c, bool ok) {
    if (c->done) return;
    c->done = true;
    --out_active;
    c->deadline.cancel();
    std::error_code ignore;
    c->sock.close(ignore);
    if (!ok) ++counters.streams_failed;
    if (!c->expect_reply) return;
    std::optional<std::string> reply;
    if (ok) reply = std::move(c->in);
    core->on_stream_reply(now(), c->id, std::move(reply));
    after();
  }

  void accept() {
    acceptor.async_accept([this](const std::error_code& ec, tcp::socket s) {
      if (!acceptor.is_open()) return;
      if (ec && ec != asio::error::connection_aborted && ec != asio::error::operation_aborted) {
        // Out of descriptors or buffers (EMFILE, ENFILE, ENOBUFS): the connection stays in
        // the backlog and the acceptor stays readable, so accepting again at once would spin
        // this thread, the one that must answer the SWIM probes. Wait, doubling the wait.
        ++counters.accept_errors;
        accept_backoff =
            std::min(std::max(accept_backoff * 2, kAcceptBackoffMin), kAcceptBackoffMax);
        accept_timer.expires_after(accept_backoff);
        accept_timer.async_wait([this](const std::error_code& tec) {
          if (!tec) accept();
        });
        return;
      }
      accept_backoff = std::chrono::milliseconds(0);
      if (!ec) {
        std::error_code rec;
        const auto remote = s.remote_endpoint(rec);
        if (in_active >= opt.max_concurrent_streams || rec || is_blocked(remote.address())) {
          ++counters.streams_refused;
          std::error_code ignore;
          s.close(ignore);
        } else {
          serve(std::move(s));
        }
      }
      accept();
    });
  }

  void serve(tcp::socket s) {
    std::error_code ec;
    const auto remote = s.remote_endpoint(ec);
    if (ec) return;
    ++in_active;
    ++counters.streams_in;
    auto c = std::make_shared<InStream>(std::move(s), io);
    c->from = mb::Address{raw_ip(remote.address()), remote.port()};
    c->deadline.expires_after(opt.tcp_timeout);
    c->deadline.async_wait([c](const std::error_code& tec) {
      if (!tec) {
        std::error_code ignore;
        c->sock.close(ignore);
      }
    });
    read_in(c);
  }

  void read_in(const std::shared_ptr<InStream>& c) {
    c->sock.async_read_some(asio::buffer(c->chunk), [this, c](const std::error_code& ec,
                                                              std::size_t n) {
      if (ec) return finish_in(c, false);
      c->in.append(c->chunk.data(), n);
      if (on_foreign_stream && !is_memberlist_type(static_cast<std::uint8_t>(c->in[0])))
        return route(c);
      std::string msg;
      std::size_t used = 0;
      const auto st = mb::decode_stream(codec(), c->in, msg, used);
      if (st == mb::DecodeStatus::need_more && c->in.size() < codec().max_stream) return read_in(c);
      // Malformed or hostile input goes to the Core too: it counts the drop by kind.
      std::optional<std::string> reply = core->on_stream(now(), c->from, c->in);
      after();
      if (st != mb::DecodeStatus::ok || !reply) return finish_in(c, st == mb::DecodeStatus::ok);
      c->reply = std::move(*reply);
      asio::async_write(c->sock, asio::buffer(c->reply),
                        [this, c](const std::error_code& wec, std::size_t) { finish_in(c, !wec); });
    });
  }

  static bool is_memberlist_type(std::uint8_t b) {
    return b <= static_cast<std::uint8_t>(mb::MsgType::err) ||
           b == static_cast<std::uint8_t>(mb::MsgType::has_label);
  }

  // The stream-routing seam: the handler adopts the descriptor.
  void route(const std::shared_ptr<InStream>& c) {
    c->done = true;
    --in_active;
    c->deadline.cancel();
    std::error_code ec;
    const int fd = c->sock.release(ec);
    if (ec) {
      ++counters.streams_failed;
      return;
    }
    ++counters.streams_routed;
    on_foreign_stream(fd, c->in);
  }

  void finish_in(const std::shared_ptr<InStream>& c, bool ok) {
    if (c->done) return;
    c->done = true;
    --in_active;
    if (!ok) ++counters.streams_failed;
    c->deadline.cancel();
    std::error_code ignore;
    c->sock.shutdown(tcp::socket::shutdown_both, ignore);
    c->sock.close(ignore);
  }

  // --- UDP and timer ----------------------------------------------------------------------------
  void read_udp() {
    usock.async_receive_from(
        asio::buffer(rbuf), rfrom, [this](const std::error_code& ec, std::size_t n) {
          if (!usock.is_open() || ec == asio::error::operation_aborted) return;
          if (!ec && !is_blocked(rfrom.address())) {
            core->on_packet(now(), mb::Address{raw_ip(rfrom.address()), rfrom.port()},
                            std::string_view(rbuf.data(), n));
            after();
          }
          read_udp();
        });
  }

  void arm() {
    const mb::TimePoint d = core->next_deadline();
    if (d == armed_at) return;
    armed_at = d;
    if (d == mb::TimePoint::max()) {
      timer.cancel();
      return;
    }
    timer.expires_at(epoch + d);
    timer.async_wait([this](const std::error_code& ec) {
      if (ec) return;
      armed_at = mb::TimePoint::max();
      core->advance(now());
      after();
    });
  }

  // After every Core call: rearm, republish the snapshot, deliver queued callbacks.
  void after() {
    arm();
    const auto t = Clock::now();
    if (!pending_events.empty() || t - snap_at >= std::chrono::milliseconds(50)) publish(t);
    if (core->leave_done() && !leave_waiters.empty()) {
      for (auto& w : leave_waiters) w->set_value();
      leave_waiters.clear();
    }
    if (delivering) return;  // a callback's send() must not re-deliver
    delivering = true;
    auto events = std::move(pending_events);
    pending_events.clear();
    auto msgs = std::move(pending_messages);
    pending_messages.clear();
    for (const auto& e : events) {
      if (on_event) on_event(e);
    }
    for (const auto& m : msgs) on_message(m);
    delivering = false;
  }

  void publish(Clock::time_point t) {
    auto v = std::make_shared<std::vector<Member>>();
    for (const auto& m : core->members()) v->push_back(to_public(m));
    MembershipStats s = counters;
    const auto& cs = core->stats();
    s.packets_in = cs.packets_in;
    s.packets_out = cs.packets_out;
    s.bytes_in = cs.bytes_in;
    s.bytes_out = cs.bytes_out;
    s.dropped = cs.dropped_malformed + cs.dropped_auth + cs.dropped_label + cs.dropped_crc +
                cs.dropped_wrong_node;
    s.probe_failures = cs.probe_failures;
    s.suspicions = cs.suspicions;
    health.store(core->health_score());
    std::lock_guard<std::mutex> lock(snap_mu);
    snap = std::move(v);
    snap_stats = s;
    snap_at = t;
  }

  // --- lifecycle --------------------------------------------------------------------------------
  std::error_code bind_sockets(const asio::ip::address& addr) {
    std::error_code ec;
    for (int attempt = 0; attempt < 20; ++attempt) {
      std::error_code ignore;
      acceptor.close(ignore);
      usock.close(ignore);
      ec.clear();
      const tcp::endpoint tep(addr, opt.port);
      acceptor.open(tep.protocol(), ec);
      if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) acceptor.bind(tep, ec);
      if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
      if (ec) return ec;
      const std::uint16_t p = acceptor.local_endpoint().port();
      const udp::endpoint uep(addr, p);
      usock.open(uep.protocol(), ec);
      if (!ec) usock.bind(uep, ec);
      if (!ec) {
        usock.set_option(asio::socket_base::receive_buffer_size(2 << 20), ignore);
        usock.non_blocking(true, ec);
      }
      if (!ec) {
        port.store(p);
        return {};
      }
      if (opt.port != 0) return ec;  // a fixed port: no retry
    }
    return ec;
  }

  static bool valid_keys(const std::vector<std::string>& keys, bool allow_none) {
    if (keys.empty()) return allow_none;
    return std::all_of(keys.begin(), keys.end(),
                       [](const std::string& k) { return mb::Keyring::valid_key_size(k.size()); });
  }

  // Membership::start(); throws std::system_error.
  void start() {
    if (started.exchange(true)) throw std::system_error(make_error_code(errc::already_started));
    std::error_code aec;
    const auto bind_addr = asio::ip::make_address(opt.bind_address, aec);
    std::string adv = opt.advertise_address.empty() ? opt.bind_address : opt.advertise_address;
    const auto adv_addr = asio::ip::make_address(adv, aec);
    if (opt.name.empty() || aec || adv_addr.is_unspecified() || !valid_keys(opt.keyring(), true) ||
        opt.meta.size() > 512 || opt.max_concurrent_streams == 0 || opt.udp_buffer_size < 512) {
      throw std::system_error(make_error_code(errc::invalid_argument),
                              "brokerha::Membership::start: invalid options");
    }
    std::error_code ec = bind_sockets(bind_addr);
    if (ec) {
      if (ec == std::errc::address_in_use) ec = make_error_code(errc::address_in_use);
      std::error_code ignore;
      acceptor.close(ignore);
      usock.close(ignore);
      throw std::system_error(ec, "brokerha::Membership::start: bind " + opt.bind_address);
    }
    mb::CoreConfig c;
    static_cast<MembershipProtocolOptions&>(c) = opt;
    c.advertise =
        mb::Address{raw_ip(adv_addr), opt.advertise_port ? opt.advertise_port : port.load()};
    for (const std::string& k : opt.keyring()) c.codec.keyring.add_key(k);
    c.codec.label = opt.label;
    c.codec.enable_compression = opt.enable_compression;
    c.codec.skip_inbound_label_check = opt.skip_inbound_label_check;
    c.codec.verify_incoming = opt.gossip_verify_incoming;
    std::random_device rd;
    c.seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    core = std::make_unique<mb::Core>(std::move(c), *this);
    epoch = Clock::now();
    core->start(now());
    publish(Clock::now());
    arm();
    read_udp();
    accept();
    thread = util::start_guarded_thread("the membership thread", [this] {
      thread_id.store(std::this_thread::get_id());
      io.run();
    });
    // on_thread() must be right for calls made as soon as start() returns.
    while (thread_id.load() == std::thread::id()) std::this_thread::yield();
  }

  void stop() noexcept {
    std::lock_guard<std::mutex> lock(stop_mu);
    if (!started.load() || stopped.exchange(true)) return;
    io.stop();
    if (thread.joinable() && !on_thread()) thread.join();
    // The thread has ended (or this is it): nothing else touches the sockets.
    std::error_code ignore;
    acceptor.close(ignore);
    usock.close(ignore);
    for (auto& w : leave_waiters) w->set_value();
    leave_waiters.clear();
  }
};

Membership::Membership(MembershipOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

Membership::~Membership() {
  stop();
  if (impl_->thread.joinable()) {
    if (impl_->on_thread()) {
      impl_->thread.detach();
    } else {
      impl_->thread.join();
    }
  }
}

void Membership::set_event_callback(EventCallback cb) {
  if (!impl_->started.load()) impl_->on_event = std::move(cb);
}
void Membership::set_message_callback(MessageCallback cb) {
  if (!impl_->started.load()) impl_->on_message = std::move(cb);
}
struct detail::MembershipAccess {
  static Membership::Impl& impl(Membership& m) noexcept { return *m.impl_; }
};

void membership::set_stream_handler(Membership& m, StreamHandler handler) {
  auto& d = detail::MembershipAccess::impl(m);
  if (!d.started.load()) d.on_foreign_stream = std::move(handler);
}

void testing::set_membership_blocked(Membership& m, const std::string& address, bool blocked) {
  auto& d = detail::MembershipAccess::impl(m);
  std::error_code ec;
  const auto a = asio::ip::make_address(address, ec);
  if (ec) return;
  std::lock_guard<std::mutex> lock(d.blocked_mu);
  if (blocked) {
    d.blocked.insert(a.to_string());
  } else {
    d.blocked.erase(a.to_string());
  }
  d.any_blocked.store(!d.blocked.empty());
}

void Membership::start() { impl_->start(); }

void Membership::start(std::error_code& ec) noexcept {
  util::capture_errors(ec, [this] { impl_->start(); });
}

void Membership::stop() noexcept { impl_->stop(); }

int Membership::join(const std::vector<std::string>& seeds, std::error_code& ec) {
  ec.clear();
  std::vector<mb::Address> addrs;
  for (const auto& s : seeds) {
    mb::Address a;
    if (!parse_seed(s, a)) {
      ec = make_error_code(errc::invalid_argument);
      return 0;
    }
    addrs.push_back(std::move(a));
  }
  if (!impl_->started.load() || impl_->stopped.load()) {
    ec = make_error_code(errc::not_started);
    return 0;
  }
  if (impl_->on_thread()) {
    ec = make_error_code(errc::invalid_argument);
    return 0;
  }
  auto result = std::make_shared<std::promise<int>>();
  auto fut = result->get_future();
  Impl* im = impl_.get();
  asio::post(im->io, [im, addrs, result] {
    im->core->join(im->now(), addrs, [result](int ok, int) { result->set_value(ok); });
    im->after();
  });
  // Every exchange ends within tcp_timeout (the driver's deadline); allow scheduling slack.
  if (fut.wait_for(im->opt.tcp_timeout + std::chrono::seconds(5)) != std::future_status::ready) {
    ec = make_error_code(errc::timed_out);
    return 0;
  }
  int ok = 0;
  try {
    ok = fut.get();
  } catch (const std::future_error&) {
    ec = make_error_code(errc::stopped);
    return 0;
  }
  if (ok == 0 && !seeds.empty()) ec = make_error_code(errc::timed_out);
  return ok;
}

int Membership::join(const std::vector<std::string>& seeds) {
  std::error_code ec;
  const int n = join(seeds, ec);
  if (ec) throw std::system_error(ec, "brokerha::Membership::join");
  return n;
}

std::error_code Membership::leave(std::chrono::milliseconds timeout) {
  if (!impl_->started.load() || impl_->stopped.load()) return make_error_code(errc::not_started);
  if (impl_->on_thread()) return make_error_code(errc::invalid_argument);
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  Impl* im = impl_.get();
  asio::post(im->io, [im, done] {
    im->leave_waiters.push_back(done);
    im->core->leave(im->now());
    im->after();
  });
  if (fut.wait_for(timeout) != std::future_status::ready) return make_error_code(errc::timed_out);
  try {
    fut.get();
  } catch (const std::future_error&) {
    return make_error_code(errc::stopped);
  }
  return {};
}

std::vector<Member> Membership::members() const {
  std::lock_guard<std::mutex> lock(impl_->snap_mu);
  return *impl_->snap;
}

int Membership::local_health() const noexcept { return impl_->health.load(); }

std::uint16_t Membership::bound_port() const noexcept { return impl_->port.load(); }

MembershipStats Membership::stats() const {
  std::lock_guard<std::mutex> lock(impl_->snap_mu);
  return impl_->snap_stats;
}

std::error_code Membership::send(const std::string& node, std::string_view payload) {
  return impl_->run_send([node, copy = std::string(payload)](mb::Core& core) {
    return core.send_user_packet(node, copy);
  });
}

std::error_code Membership::send_reliable(const std::string& node, std::string_view payload) {
  return impl_->run_send([node, copy = std::string(payload)](mb::Core& core) {
    return core.send_user_stream(node, copy);
  });
}

std::error_code Membership::set_keys(const std::vector<std::string>& keys) {
  if (!Impl::valid_keys(keys, false)) return make_error_code(errc::invalid_argument);
  mb::Keyring ring;
  for (const std::string& k : keys) ring.add_key(k);
  return impl_->run_send([ring = std::move(ring)](mb::Core& core) {
    if (!core.config().codec.keyring.enabled()) return false;  // encryption on: a restart
    core.set_keyring(ring);
    return true;
  });
}

void Membership::set_state_callbacks(LocalStateCallback local, MergeStateCallback merge) {
  if (impl_->started.load()) return;
  impl_->on_local_state = std::move(local);
  impl_->on_merge_state = std::move(merge);
}

}  // namespace brokerha
