// SPDX-License-Identifier: Apache-2.0
// The discovery engine: one c-ares channel driven by an io_context.
//
// A *round* is one lookup: the SRV query of the domain, then one ares_getaddrinfo per SRV
// target, plus one per static member that is a name (IP literals need no DNS); all of them in
// flight together. When the last answer of a round is in, the result is built, stored,
// delivered, and the next round is scheduled: after refresh_interval when every lookup
// succeeded, else after the backoff. refresh() during a round asks for one more round right
// after it. Only one round is ever in flight.
//
// c-ares calls our query callbacks from inside ares_process_fd / ares_query / ares_destroy
// (sometimes synchronously from the call that starts the query), so the callbacks only record
// what they got; finishing a round is posted, which also keeps the user's callback out of
// c-ares's stack.
//
// Sockets: ARES_OPT_SOCK_STATE_CB tells when c-ares wants to read or write a socket and, with
// (0, 0), that it is about to close it; a Watch holds the fd in a stream_descriptor for
// async_wait and release()s it at that moment (else Asio would close it again). Asio's epoll
// reactor is edge-triggered and never completes a wait speculatively, so after c-ares has
// processed a readable socket we poll() it once more and process again while data is left
// (c-ares reads a TCP answer in pieces): a wait re-armed on an already-readable socket would
// otherwise sleep until the next packet. Waits capture the Watch's serial, because c-ares
// reuses fd numbers.
//
// Lifetime: handlers hold a weak_ptr to the Impl, which the Engine alone owns; stop() (and the
// destructor) destroys the channel, releases every descriptor and cancels the timers, so no
// handler does anything afterwards and no callback is delivered after stop() returns.

#include "discovery/engine.hpp"

#include <brokerha/error.hpp>

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "discovery/plan.hpp"

namespace brokerha::discovery {

namespace {

// ares_library_init is not thread-safe in 1.18 and only counts on Linux: do it once, never
// clean up.
int ares_library_status() {
  static const int status = ares_library_init(ARES_LIB_INIT_ALL);
  return status;
}

// At most this many distinct SRV targets are resolved per round (a hostile answer over TCP
// could name thousands).
constexpr std::size_t kMaxTargets = 512;

std::string describe_status(int status) {
  switch (status) {
    case ARES_ENOTFOUND:
      return "not found (NXDOMAIN)";
    case ARES_ENODATA:
      return "no records of that type";
    case ARES_ESERVFAIL:
      return "server failure (SERVFAIL)";
    case ARES_EREFUSED:
      return "refused by the server (REFUSED)";
    case ARES_ENOTIMP:
      return "not implemented by the server (NOTIMP)";
    case ARES_EFORMERR:
      return "format error (FORMERR)";
    case ARES_ETIMEOUT:
      return "timed out (no answer)";
    case ARES_EBADRESP:
      return "malformed reply";
    case ARES_ECONNREFUSED:
      return "connection refused (no DNS server listening)";
    case ARES_EBADNAME:
      return "bad name";
    default:
      return ares_strerror(status);
  }
}

std::string ip_text(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(sa);
    if (::inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf) != nullptr) return buf;
  } else if (sa->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (::inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf) != nullptr) return buf;
  }
  return {};
}

// A name that DNS must take as is: SRV targets are fully qualified.
std::string absolute(const std::string& name) {
  if (name.empty() || name.back() == '.') return name;
  return name + ".";
}

}  // namespace

struct Engine::Impl : std::enable_shared_from_this<Impl> {
  // A name to resolve to addresses: an SRV target or a static member.
  struct Lookup {
    std::string name;
    std::vector<std::uint16_t> ports;
    std::vector<std::string> addresses;
    std::string error;  // empty: resolved
  };

  // The state of the round in flight.
  struct Round {
    std::uint64_t serial = 0;
    int outstanding = 0;
    bool srv_done = false;
    std::string srv_error;
    std::vector<Lookup> targets;  // from the SRV answer
    std::vector<Lookup> members;  // static names (and literals, resolved at once)
  };

  // What a c-ares query callback needs; owned by c-ares until the callback runs (exactly once).
  struct QueryArg {
    Impl* impl;
    std::uint64_t round;
    bool member;  // else an SRV target (for getaddrinfo), ignored for the SRV query
    std::size_t index;
  };

  struct Watch {
    explicit Watch(asio::io_context& ctx) : sd(ctx) {}
    asio::posix::stream_descriptor sd;
    std::uint64_t serial = 0;
    bool want_read = false;
    bool want_write = false;
    bool read_armed = false;
    bool write_armed = false;
  };

  Impl(asio::io_context& c, Plan p, Discovery::Callback cb)
      : ctx(c), plan(std::move(p)), callback(std::move(cb)), ares_timer(c), schedule(c) {}

  ~Impl() { stop(); }

  asio::io_context& ctx;
  const Plan plan;
  const Discovery::Callback callback;
  ares_channel channel = nullptr;
  asio::steady_timer ares_timer;  // c-ares's own timeouts
  asio::steady_timer schedule;    // the next round
  std::unordered_map<ares_socket_t, std::unique_ptr<Watch>> watches;
  std::uint64_t watch_serial = 0;

  bool started = false;
  bool stopped = false;
  bool running = false;  // a round is in flight
  bool again = false;    // refresh() asked for another round during this one
  std::uint64_t round_serial = 0;
  std::uint64_t schedule_serial = 0;  // tells a stale expiry of `schedule` from the current one
  Round round;
  unsigned failures = 0;  // consecutive failed results

  mutable std::mutex last_mu;
  DiscoveryResult last_result;

  // --- channel ----------------------------------------------------------------------------

  void open_channel() {
    if (const int st = ares_library_status(); st != ARES_SUCCESS) {
      throw std::system_error(std::make_error_code(std::errc::not_enough_memory),
                              std::string("discovery: ares_library_init: ") + ares_strerror(st));
    }
    ares_options o{};
    int mask = 0;
    o.sock_state_cb = &Impl::on_sock_state;
    o.sock_state_cb_data = this;
    mask |= ARES_OPT_SOCK_STATE_CB;
    o.timeout = static_cast<int>(plan.query_timeout.count());
    mask |= ARES_OPT_TIMEOUTMS;
    o.tries = 2;  // one retransmission per server before giving up on a query
    mask |= ARES_OPT_TRIES;
    // Hand SERVFAIL / REFUSED / NOTIMP answers to us: c-ares 1.18 would otherwise skip the
    // server and end the query as "connection refused", hiding the cause. The next round
    // retries (and with several servers, rotation is lost only for such answers).
    o.flags = ARES_FLAG_NOCHECKRESP;
    mask |= ARES_OPT_FLAGS;
    if (const int st = ares_init_options(&channel, &o, mask); st != ARES_SUCCESS) {
      channel = nullptr;
      throw std::system_error(std::make_error_code(std::errc::not_enough_memory),
                              std::string("discovery: ares_init_options: ") + ares_strerror(st));
    }
    if (!plan.servers_csv.empty()) {
      if (const int st = ares_set_servers_ports_csv(channel, plan.servers_csv.c_str());
          st != ARES_SUCCESS) {
        ares_destroy(channel);
        channel = nullptr;
        throw std::system_error(
            make_error_code(errc::invalid_argument),
            "discovery: nameservers \"" + plan.servers_csv + "\": " + ares_strerror(st));
      }
    }
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    running = false;
    schedule.cancel();
    ares_timer.cancel();
    if (channel != nullptr) {
      // Every pending query callback runs now with ARES_EDESTRUCTION (and does nothing, as
      // stopped is set); every socket is reported closed (released) and then closed.
      ares_channel c = channel;
      channel = nullptr;
      ares_destroy(c);
    }
    for (auto& entry : watches) entry.second->sd.release();
    watches.clear();
  }

  // --- sockets and timeouts ---------------------------------------------------------------

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<Impl*>(data)->sock_state(fd, readable != 0, writable != 0);
  }

  void sock_state(ares_socket_t fd, bool readable, bool writable) {
    auto it = watches.find(fd);
    if (!readable && !writable) {
      // c-ares closes fd right after this: give it back first.
      if (it != watches.end()) {
        it->second->sd.release();
        watches.erase(it);
      }
      return;
    }
    if (stopped) return;
    if (it == watches.end()) {
      auto w = std::make_unique<Watch>(ctx);
      std::error_code ec;
      w->sd.assign(fd, ec);
      if (ec) return;  // cannot watch it: the query times out through ares_timer
      w->serial = ++watch_serial;
      it = watches.emplace(fd, std::move(w)).first;
    }
    it->second->want_read = readable;
    it->second->want_write = writable;
    arm(fd, *it->second);
  }

  void arm(ares_socket_t fd, Watch& w) {
    std::weak_ptr<Impl> weak = weak_from_this();
    if (w.want_read && !w.read_armed) {
      w.read_armed = true;
      w.sd.async_wait(asio::posix::stream_descriptor::wait_read,
                      [weak, fd, serial = w.serial](const std::error_code& ec) {
                        if (auto self = weak.lock()) self->on_ready(fd, serial, true, ec);
                      });
    }
    if (w.want_write && !w.write_armed) {
      w.write_armed = true;
      w.sd.async_wait(asio::posix::stream_descriptor::wait_write,
                      [weak, fd, serial = w.serial](const std::error_code& ec) {
                        if (auto self = weak.lock()) self->on_ready(fd, serial, false, ec);
                      });
    }
  }

  Watch* find_watch(ares_socket_t fd, std::uint64_t serial) {
    auto it = watches.find(fd);
    return it != watches.end() && it->second->serial == serial ? it->second.get() : nullptr;
  }

  void on_ready(ares_socket_t fd, std::uint64_t serial, bool read, const std::error_code& ec) {
    Watch* w = find_watch(fd, serial);
    if (w == nullptr) return;  // released (closed by c-ares); maybe the fd was reused since
    (read ? w->read_armed : w->write_armed) = false;
    if (ec == asio::error::operation_aborted || stopped || channel == nullptr) return;
    if (read ? w->want_read : w->want_write) {
      ares_process_fd(channel, read ? fd : ARES_SOCKET_BAD, read ? ARES_SOCKET_BAD : fd);
      // Edge-triggered: process what is still there before waiting for the next edge.
      for (int i = 0; read && i < 16 && channel != nullptr; ++i) {
        w = find_watch(fd, serial);
        if (w == nullptr || !w->want_read) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0 || (p.revents & (POLLIN | POLLERR | POLLHUP)) == 0) break;
        ares_process_fd(channel, fd, ARES_SOCKET_BAD);
      }
    }
    if (stopped) return;
    if (Watch* again_w = find_watch(fd, serial); again_w != nullptr && !ec) arm(fd, *again_w);
    arm_ares_timer();
  }

  void arm_ares_timer() {
    if (stopped || channel == nullptr) return;
    timeval tv{};
    if (ares_timeout(channel, nullptr, &tv) == nullptr) {
      ares_timer.cancel();
      return;
    }
    const auto d = std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
    ares_timer.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(d) +
                             std::chrono::milliseconds(1));
    std::weak_ptr<Impl> weak = weak_from_this();
    ares_timer.async_wait([weak](const std::error_code& ec) {
      auto self = weak.lock();
      if (!self || ec || self->stopped || self->channel == nullptr) return;
      ares_process_fd(self->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      self->arm_ares_timer();
    });
  }

  // --- rounds -----------------------------------------------------------------------------

  void begin() {
    if (started || stopped) return;
    started = true;
    start_round();
  }

  void refresh_now() {
    if (!started || stopped) return;
    if (running) {
      again = true;
      return;
    }
    start_round();
  }

  void start_round() {
    if (stopped || channel == nullptr) return;
    schedule.cancel();
    ++schedule_serial;
    running = true;
    again = false;
    round = Round{};
    round.serial = ++round_serial;
    round.outstanding = 1;  // held until every query of the round is started
    for (std::size_t i = 0; i < plan.members.size(); ++i) {
      const HostPort& m = plan.members[i];
      Lookup l;
      l.name = m.host;
      l.ports.push_back(m.port);
      if (m.is_ip) l.addresses.push_back(m.host);
      round.members.push_back(std::move(l));
    }
    if (!plan.domain.empty()) {
      ++round.outstanding;
      ares_query(channel, plan.domain.c_str(), ns_c_in, ns_t_srv, &Impl::on_srv,
                 new QueryArg{this, round.serial, false, 0});
    }
    for (std::size_t i = 0; i < plan.members.size(); ++i) {
      if (!plan.members[i].is_ip) resolve(plan.members[i].host, true, i);
    }
    arm_ares_timer();
    done_one(round.serial);
  }

  void resolve(const std::string& name, bool member, std::size_t index) {
    ++round.outstanding;
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = ARES_AI_NOSORT;  // sorting connect()s UDP sockets; we sort ourselves
    ares_getaddrinfo(channel, name.c_str(), nullptr, &hints, &Impl::on_addrinfo,
                     new QueryArg{this, round.serial, member, index});
  }

  // One query of round `serial` is over; the round ends (posted) with the last one.
  void done_one(std::uint64_t serial) {
    if (stopped || serial != round.serial || --round.outstanding > 0) return;
    std::weak_ptr<Impl> weak = weak_from_this();
    asio::post(ctx, [weak, serial] {
      if (auto self = weak.lock()) self->finish(serial);
    });
  }

  static void on_srv(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    std::unique_ptr<QueryArg> q(static_cast<QueryArg*>(arg));
    Impl& self = *q->impl;
    if (self.stopped || q->round != self.round.serial) return;
    self.srv_answer(status, abuf, alen);
    self.done_one(q->round);
  }

  void srv_answer(int status, unsigned char* abuf, int alen) {
    round.srv_done = true;
    if (status != ARES_SUCCESS) {
      round.srv_error = describe_status(status);
      return;
    }
    ares_srv_reply* reply = nullptr;
    if (const int st = ares_parse_srv_reply(abuf, alen, &reply); st != ARES_SUCCESS) {
      round.srv_error = st == ARES_ENODATA ? describe_status(st) : "malformed reply";
      return;
    }
    std::map<std::string, std::set<std::uint16_t>> targets;
    for (ares_srv_reply* r = reply; r != nullptr; r = r->next) {
      const std::string host = r->host != nullptr ? r->host : "";
      // "." (or empty) means the service is decidedly not available there.
      if (host.empty() || host == "." || !valid_dns_name(host)) continue;
      if (targets.size() >= kMaxTargets && targets.count(host) == 0) continue;
      targets[host].insert(r->port != 0 ? r->port : plan.default_port);
    }
    ares_free_data(reply);
    if (targets.empty()) {
      round.srv_error = "no usable SRV records";
      return;
    }
    for (auto& [host, ports] : targets) {
      Lookup l;
      l.name = host;
      l.ports.assign(ports.begin(), ports.end());
      if (auto ip = canonical_ip(host)) l.addresses.push_back(*ip);
      round.targets.push_back(std::move(l));
    }
    for (std::size_t i = 0; i < round.targets.size(); ++i) {
      if (round.targets[i].addresses.empty()) resolve(absolute(round.targets[i].name), false, i);
    }
  }

  static void on_addrinfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
    std::unique_ptr<QueryArg> q(static_cast<QueryArg*>(arg));
    std::unique_ptr<ares_addrinfo, void (*)(ares_addrinfo*)> info(res, &ares_freeaddrinfo);
    Impl& self = *q->impl;
    if (self.stopped || q->round != self.round.serial) return;
    auto& list = q->member ? self.round.members : self.round.targets;
    if (q->index < list.size()) self.addresses(list[q->index], status, res);
    self.done_one(q->round);
  }

  // IPv4 addresses when there are any, else IPv6: one family per name, so a dual-stack pod
  // is one peer, not two.
  static void addresses(Lookup& l, int status, const ares_addrinfo* res) {
    if (status != ARES_SUCCESS || res == nullptr) {
      l.error = describe_status(status != ARES_SUCCESS ? status : ARES_ENODATA);
      return;
    }
    std::vector<std::string> v4, v6;
    for (const ares_addrinfo_node* n = res->nodes; n != nullptr; n = n->ai_next) {
      if (n->ai_addr == nullptr) continue;
      std::string ip = ip_text(n->ai_addr);
      if (ip.empty()) continue;
      (n->ai_family == AF_INET ? v4 : v6).push_back(std::move(ip));
    }
    l.addresses = v4.empty() ? std::move(v6) : std::move(v4);
    if (l.addresses.empty()) l.error = describe_status(ARES_ENODATA);
  }

  void finish(std::uint64_t serial) {
    if (stopped || !running || serial != round.serial) return;
    running = false;
    DiscoveryResult r;
    r.at = std::chrono::system_clock::now();
    r.attempt = failures;
    bool ok = true;
    std::string error;
    const auto fail = [&](const std::string& what) {
      ok = false;
      if (!error.empty()) error += "; ";
      error += what;
    };
    const auto add = [&](const Lookup& l) {
      for (const std::string& a : l.addresses) {
        for (std::uint16_t port : l.ports) r.peers.push_back(DiscoveredPeer{a, port, l.name});
      }
    };
    if (!plan.domain.empty()) {
      if (!round.srv_error.empty()) fail("SRV " + plan.domain + ": " + round.srv_error);
      for (const Lookup& t : round.targets) {
        if (!t.error.empty()) fail("SRV target " + t.name + ": " + t.error);
        add(t);
      }
    }
    for (const Lookup& m : round.members) {
      if (!m.error.empty()) fail("member " + m.name + ": " + m.error);
      add(m);
    }
    r.ok = ok;
    r.error = std::move(error);
    r.self_seen = finalize_peers(r.peers, plan.self);
    failures = ok ? 0 : failures + 1;
    {
      std::lock_guard<std::mutex> lock(last_mu);
      last_result = r;
    }
    if (callback) {
      try {
        callback(r);
      } catch (...) {
        // The callback must not throw; an exception must not kill the thread either.
      }
    }
    if (stopped) return;
    if (again) {
      start_round();
      return;
    }
    const auto delay =
        ok ? plan.refresh_interval : backoff_delay(failures, plan.retry_min, plan.retry_cap);
    schedule.expires_after(delay);
    std::weak_ptr<Impl> weak = weak_from_this();
    schedule.async_wait([weak, serial = ++schedule_serial](const std::error_code& ec) {
      auto self = weak.lock();
      if (!self || ec || self->stopped || self->running || serial != self->schedule_serial) {
        return;
      }
      self->start_round();
    });
  }
};

Engine::Engine(asio::io_context& ctx, DiscoveryOptions options, Discovery::Callback callback)
    : impl_(std::make_shared<Impl>(ctx, make_plan(options), std::move(callback))) {
  impl_->open_channel();
}

Engine::~Engine() {
  if (impl_) impl_->stop();
}

void Engine::start() {
  std::weak_ptr<Impl> weak = impl_;
  asio::post(impl_->ctx, [weak] {
    if (auto self = weak.lock()) self->begin();
  });
}

void Engine::refresh() {
  std::weak_ptr<Impl> weak = impl_;
  asio::post(impl_->ctx, [weak] {
    if (auto self = weak.lock()) self->refresh_now();
  });
}

void Engine::stop() { impl_->stop(); }

DiscoveryResult Engine::last() const {
  std::lock_guard<std::mutex> lock(impl_->last_mu);
  return impl_->last_result;
}

}  // namespace brokerha::discovery
