// SPDX-License-Identifier: Apache-2.0
// brokerha::Broker: where the library's parts are put together (the shard runtime, the cluster,
// the listeners) and the thread-safe snapshot and command API over them. The only file that
// knows both net/ and cluster/: neither of those includes the other.

#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/testing.hpp>

#include <condition_variable>
#include <cstdio>
#include <future>
#include <optional>
#include <stdexcept>
#include <thread>

#include "broker/cluster_keys.hpp"
#include "cluster/node.hpp"
#include "net/connection.hpp"
#include "net/runtime.hpp"
#include "net/transport.hpp"
#include "topic/topic.hpp"
#include "util/lifecycle.hpp"
#include "util/token_bucket.hpp"

namespace brokerha {

void BrokerOptions::validate() const {
  auto fail = [](const char* field, const char* why) {
    throw std::invalid_argument(std::string(field) + ": " + why);
  };
  if (max_packet_size < 64 || max_packet_size > mqtt::kMaxPacketSize) {
    fail("max_packet_size", "must be between 64 and 268435460 bytes");
  }
  if (receive_maximum == 0) fail("receive_maximum", "must be at least 1");
  if (max_inflight == 0) fail("max_inflight", "must be at least 1");
  if (connect_timeout.count() <= 0) fail("connect_timeout", "must be positive");
  if (io_threads > 1024) fail("io_threads", "must be at most 1024");
  for (const ListenerOptions& l : listeners) {
    const bool tls = l.type == ListenerType::tls || l.type == ListenerType::wss;
    if (tls && (l.tls_cert.empty() || l.tls_key.empty())) {
      fail("listeners.tls_cert", "a tls/wss listener needs a certificate and a key");
    }
    if (l.require_client_cert && l.tls_ca.empty()) {
      fail("listeners.require_client_cert", "needs tls_ca (the CA of client certificates)");
    }
    if (l.use_identity_as_username && l.tls_ca.empty()) {
      fail("listeners.use_identity_as_username", "needs tls_ca (the CA of client certificates)");
    }
    if ((l.type == ListenerType::ws || l.type == ListenerType::wss) &&
        (l.path.empty() || l.path[0] != '/')) {
      fail("listeners.path", "must start with '/'");
    }
    std::error_code ec;
    asio::ip::make_address(l.bind, ec);
    if (ec) fail("listeners.bind", "not an IP address");
  }
  // A cluster authenticates its members unless the embedder says otherwise (docs/security.md).
  if (cluster && !cluster->insecure) {
    const MembershipOptions& m = cluster->membership;
    if (m.keyring().empty()) {
      fail("cluster.membership.secret_key",
           "required in cluster mode: 16, 24 or 32 bytes shared by every member (or set "
           "cluster.insecure to run a cluster that anyone reaching its port can join)");
    }
    if (!m.gossip_verify_incoming) {
      fail("cluster.membership.secret_key",
           "gossip_verify_incoming is false, so members are not authenticated (set "
           "cluster.insecure to run so)");
    }
  }
}

namespace {

// Runs `f` on the shard's thread and returns its result, waiting at most a few seconds
// (nullopt then). Inline when the broker's threads are not running, or on the shard's own
// thread. `f` must own what it uses: after a timeout it may still run.
template <class F>
auto run_on(net::Shard& shard, bool running, F f) -> std::optional<decltype(f())> {
  using R = decltype(f());
  if (!running || shard.ctx.get_executor().running_in_this_thread()) return f();
  auto promise = std::make_shared<std::promise<R>>();
  auto future = promise->get_future();
  asio::post(shard.ctx, [promise, f = std::move(f)]() mutable { promise->set_value(f()); });
  if (future.wait_for(std::chrono::seconds(5)) != std::future_status::ready) return std::nullopt;
  return future.get();
}

MessageInfo message_info(const message::Message& m, net::Clock::time_point now) {
  MessageInfo info;
  info.topic = m.topic;
  info.payload = m.payload;
  info.qos = m.qos;
  info.retain = m.retain;
  info.created = m.created;
  if (auto left = m.remaining_expiry(now)) info.expiry = std::chrono::seconds(*left);
  info.origin = m.origin;
  info.user_properties = m.properties.user_properties;
  info.content_type = m.properties.content_type;
  info.response_topic = m.properties.response_topic;
  info.correlation_data = m.properties.correlation_data;
  if (m.properties.payload_format_indicator) {
    info.payload_format = *m.properties.payload_format_indicator;
  }
  return info;
}

}  // namespace

// Stops a shard's io_context once none of its connections is open, or after 2 s.
struct Drain : std::enable_shared_from_this<Drain> {
  explicit Drain(net::Shard* shard)
      : s(shard), timer(shard->ctx), deadline(net::Clock::now() + std::chrono::seconds(2)) {}

  void check() {
    const bool open = std::any_of(s->connections.begin(), s->connections.end(),
                                  [](const std::weak_ptr<net::Connection>& w) {
                                    auto c = w.lock();
                                    return c && !c->closed();
                                  });
    if (!open || net::Clock::now() >= deadline) {
      s->ctx.stop();
      return;
    }
    timer.expires_after(std::chrono::milliseconds(10));
    timer.async_wait([self = shared_from_this()](const std::error_code&) { self->check(); });
  }

  net::Shard* s;
  asio::steady_timer timer;
  net::Clock::time_point deadline;
};

struct Broker::Impl {
  explicit Impl(BrokerOptions o) : options(std::move(o)) {}

  BrokerOptions options;
  std::vector<std::shared_ptr<AuthHook>> auth_hooks;
  std::vector<std::shared_ptr<AclHook>> acl_hooks;
  std::vector<std::shared_ptr<EventHook>> event_hooks;
  std::shared_ptr<Bus> bus;

  std::mutex lifecycle_mutex;  // start/stop
  std::unique_ptr<net::Runtime> core;
  std::unique_ptr<cluster::Node> node;  // cluster mode; outlives the shards that call it
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors;
  // Per acceptor: the back-off after a failed accept (shard 0's thread only).
  std::vector<std::unique_ptr<asio::steady_timer>> accept_timers;
  std::vector<std::chrono::milliseconds> accept_backoff;
  std::vector<util::TokenBucket> accept_rate;  // max_connection_rate, per acceptor
  // One per BrokerOptions::listeners entry, with its TLS context (made by prepare_listeners()).
  std::vector<std::shared_ptr<net::ListenerState>> listeners;
  std::vector<Endpoint> endpoints;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::atomic<bool> running{false};
  bool stopped = false;
  bool left = false;                    // drain() left the cluster (lifecycle_mutex)
  std::atomic<bool> draining{false};    // drain() began: listeners closed, not ready
  std::atomic<bool> stop_begun{false};  // stop() began: drain()'s waits end
  unsigned next_shard = 0;              // round robin for accepted sockets (shard 0's thread only)

  std::mutex wait_mutex;
  std::condition_variable wait_cv;
  bool finished = false;  // guarded by wait_mutex: stop() completed

  // Broker::start(): binds the listeners and starts the cluster and the I/O threads; throws.
  void start();

  // Makes the listener states and reads the TLS files (throws std::runtime_error).
  void prepare_listeners() {
    std::vector<std::shared_ptr<net::ListenerState>> states;
    for (const ListenerOptions& l : options.listeners) {
      auto state = std::make_shared<net::ListenerState>(l);
      if (l.type == ListenerType::tls || l.type == ListenerType::wss) {
        state->set_tls(net::make_tls_context(l));
      }
      states.push_back(std::move(state));
    }
    listeners = std::move(states);
  }

  void accept(std::size_t i) {
    asio::ip::tcp::acceptor& acceptor = *acceptors[i];
    net::Shard& target = core->shard(next_shard);
    next_shard = (next_shard + 1) % core->shard_count();
    acceptor.async_accept(target.ctx, [this, i, &target](const std::error_code& ec,
                                                         net::Socket socket) {
      const net::ListenerState& listener = *listeners[i];
      if (ec == asio::error::operation_aborted || core->stopping.load() || draining.load()) {
        return;
      }
      if (ec && ec != asio::error::connection_aborted) {
        // Out of descriptors or buffers (EMFILE, ENFILE, ENOBUFS): the connection stays in
        // the backlog and the listener stays readable, so accepting again at once would spin
        // shard 0. Count it and wait, doubling the wait up to 1 s.
        router::Counters::add(core->shard(0).counters.accept_errors);
        auto& backoff = accept_backoff[i];
        backoff = std::min(std::max(backoff * 2, std::chrono::milliseconds(10)),
                           std::chrono::milliseconds(1000));
        accept_timers[i]->expires_after(backoff);
        accept_timers[i]->async_wait([this, i](const std::error_code& tec) {
          if (!tec && !core->stopping.load() && !draining.load() && acceptors[i]->is_open()) {
            accept(i);
          }
        });
        return;
      }
      accept_backoff[i] = std::chrono::milliseconds(0);
      if (!ec) {
        const auto count = core->connection_count.fetch_add(1, std::memory_order_relaxed) + 1;
        const protocol::Limits& limits = core->limits;
        const std::uint32_t max = limits.max_connections.load(std::memory_order_relaxed);
        const bool over_count = max != 0 && count > max;
        const bool over_rate =
            !over_count &&
            !accept_rate[i].take(
                limits.max_connection_rate.load(std::memory_order_relaxed),
                static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               net::Clock::now().time_since_epoch())
                                               .count()));
        if (over_count || over_rate) {
          router::Counters& counters = core->shard(0).counters;  // this thread's
          router::Counters::add(over_count ? counters.connections_refused
                                           : counters.connection_rate_refused);
          core->connection_count.fetch_sub(1, std::memory_order_relaxed);
          std::error_code ignored;
          socket.close(ignored);
        } else {
          std::unique_ptr<net::Transport> transport;
          if (listener.needs_transport()) {
            transport = std::make_unique<net::Transport>(listener, options.max_packet_size);
          }
          asio::post(target.ctx, [this, &target, s = std::move(socket),
                                  t = std::move(transport)]() mutable {
            if (draining.load()) {  // the socket closes; drain() kicked the others
              core->connection_count.fetch_sub(1, std::memory_order_relaxed);
              return;
            }
            std::make_shared<net::Connection>(*core, target, std::move(s), std::move(t))->start();
          });
        }
      }
      accept(i);
    });
  }
};

Broker::Broker(BrokerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Broker::~Broker() { stop(); }

void Broker::add_auth_hook(std::shared_ptr<AuthHook> hook) {
  if (hook) impl_->auth_hooks.push_back(std::move(hook));
}

void Broker::add_acl_hook(std::shared_ptr<AclHook> hook) {
  if (hook) impl_->acl_hooks.push_back(std::move(hook));
}

void Broker::add_event_hook(std::shared_ptr<EventHook> hook) {
  if (hook) impl_->event_hooks.push_back(std::move(hook));
}

void Broker::set_bus(std::shared_ptr<Bus> bus) {
  std::lock_guard<std::mutex> lock(impl_->lifecycle_mutex);
  impl_->bus = std::move(bus);
}

std::shared_ptr<Bus> Broker::bus() const {
  std::lock_guard<std::mutex> lock(impl_->lifecycle_mutex);
  return impl_->bus;
}

void Broker::start() { impl_->start(); }

void Broker::start(std::error_code& ec) noexcept {
  util::capture_errors(ec, [this] { impl_->start(); });
}

void Broker::Impl::start() {
  // Validate first so a bad option or password file comes back with its message.
  options.validate();
  access::Rules::compile(options.access);
  std::lock_guard<std::mutex> lock(lifecycle_mutex);
  if (core) throw std::system_error(make_error_code(errc::already_started));
  // TLS files are read here so that an error names the file.
  if (listeners.size() != options.listeners.size()) prepare_listeners();
  // Undone on any failure below: the broker can be started again.
  struct Rollback {
    Impl& d;
    bool armed = true;
    ~Rollback() {
      if (!armed) return;
      d.node.reset();
      d.accept_timers.clear();
      d.accept_backoff.clear();
      d.accept_rate.clear();
      d.acceptors.clear();
      d.endpoints.clear();
      d.core.reset();
    }
  } rollback{*this};
  core = std::make_unique<net::Runtime>(options);
  core->access().auth_hooks = auth_hooks;
  core->access().acl_hooks = acl_hooks;
  core->access().event_hooks = event_hooks;
  if (bus) {
    core->bus = bus;
    core->message_to = bus->channel(bus_channels::kMessageTo);
  }
  for (const ListenerOptions& l : options.listeners) {
    const asio::ip::tcp::endpoint ep(asio::ip::make_address(l.bind), l.port);
    auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(core->shard(0).ctx);
    std::error_code ec;
    acceptor->open(ep.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::system_error(ec, "brokerha::Broker::start: listen on " + l.bind);
    const auto local = acceptor->local_endpoint();
    endpoints.push_back(Endpoint{local.address().to_string(), local.port(), l.type});
    acceptors.push_back(std::move(acceptor));
    accept_timers.push_back(std::make_unique<asio::steady_timer>(core->shard(0).ctx));
    accept_backoff.push_back(std::chrono::milliseconds(0));
    accept_rate.emplace_back();
  }
  if (options.cluster) {
    // Before the shards run, so that no routing happens without the cluster.
    node = std::make_unique<cluster::Node>(*core, *options.cluster, bus);
    core->cluster = node.get();
    node->start();
  }
  rollback.armed = false;
  for (std::size_t i = 0; i < acceptors.size(); ++i) accept(i);
  for (auto& shard : core->shards()) guards.push_back(asio::make_work_guard(shard->ctx));
  core->start_sweeps();
  running = true;
  for (auto& shard : core->shards()) {
    net::Shard* s = shard.get();
    s->thread =
        util::start_guarded_thread("I/O thread " + std::to_string(s->index), [s] { s->ctx.run(); });
  }
}

void Broker::reload_tls() {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  // All or nothing: every context is built before any is installed.
  std::vector<net::SslContextPtr> fresh(d.listeners.size());
  for (std::size_t i = 0; i < d.listeners.size(); ++i) {
    const ListenerOptions& l = d.listeners[i]->options;
    if (l.type == ListenerType::tls || l.type == ListenerType::wss) {
      fresh[i] = net::make_tls_context(l);
    }
  }
  for (std::size_t i = 0; i < d.listeners.size(); ++i) {
    if (fresh[i]) d.listeners[i]->set_tls(std::move(fresh[i]));
  }
}

void Broker::stop() noexcept {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  if (!d.core || d.stopped) return;
  d.stopped = true;
  d.stop_begun = true;
  net::Runtime& core = *d.core;
  // Leave the cluster first, while clients are still served: peers stop routing to us
  // (unless drain() left already).
  if (d.node) d.node->stop(!d.left);
  core.stopping = true;
  // Close listeners and connections on their own threads, then let the threads finish the
  // last writes; a peer that does not read cannot hold the stop up beyond the grace timer.
  asio::post(core.shard(0).ctx, [&d] {
    for (auto& a : d.acceptors) {
      std::error_code ec;
      a->close(ec);
    }
  });
  for (auto& shard : core.shards()) {
    net::Shard* s = shard.get();
    asio::post(s->ctx, [s, &core] {
      s->sweep_timer.cancel();
      s->sys_timer.cancel();
      for (auto& w : s->connections) {
        if (auto c = w.lock(); c && !c->closing()) c->protocol().shutdown();
      }
      core.flush(*s);
      // Let the last writes (DISCONNECT 0x8B) go out, but no longer than the grace period:
      // the thread ends as soon as no connection is left open.
      std::make_shared<Drain>(s)->check();
    });
  }
  d.guards.clear();
  for (auto& shard : core.shards()) {
    if (shard->thread.joinable()) shard->thread.join();
  }
  d.running = false;
  d.accept_timers.clear();
  d.accept_backoff.clear();
  d.accept_rate.clear();
  d.acceptors.clear();
  {
    std::lock_guard<std::mutex> wl(d.wait_mutex);
    d.finished = true;
  }
  d.wait_cv.notify_all();
}

void Broker::drain(std::chrono::milliseconds budget) noexcept {
  DrainOptions o;
  o.budget = budget;
  drain(o);
}

bool Broker::draining() const noexcept { return impl_->draining.load(); }

// The steps are documented on the declaration. No lock is held while waiting (the HTTP API
// reads the broker meanwhile); a stop() from another thread sets stop_begun and the waits
// end. core and node live until the Broker is destroyed, so they stay valid even when a
// concurrent stop() has run.
void Broker::drain(const DrainOptions& options) noexcept {
  using Clock = std::chrono::steady_clock;
  using std::chrono::milliseconds;
  Impl& d = *impl_;
  const auto start = Clock::now();
  const milliseconds budget = std::max(options.budget, milliseconds(0));
  const auto deadline = start + budget;
  net::Runtime* core = nullptr;
  cluster::Node* node = nullptr;
  {
    std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
    if (!d.core || d.stopped || d.draining.exchange(true)) return;
    core = d.core.get();
    node = d.node.get();
    // 1. No new clients. Acceptors belong to shard 0's thread.
    asio::post(core->shard(0).ctx, [&d] {
      for (auto& a : d.acceptors) {
        std::error_code ec;
        a->close(ec);
      }
    });
  }
  // 2. Every client goes, v5 with DISCONNECT 0x8B; a connection already closing is left
  // alone. Repeated while waiting: a socket accepted just before the listeners closed, or a
  // connection moving to its session's shard, may miss the first round.
  auto kick_all = [core] {
    for (auto& shard : core->shards()) {
      net::Shard* s = shard.get();
      asio::post(s->ctx, [s, core] {
        for (auto& w : s->connections) {
          if (auto c = w.lock(); c && !c->closing()) c->protocol().shutdown();
        }
        core->flush(*s);
      });
    }
  };
  kick_all();
  auto sessions = [core] {
    std::uint64_t n = 0;
    for (const auto& shard : core->shards()) {
      n += shard->counters.sessions.load(std::memory_order_relaxed);
    }
    return n;
  };
  constexpr milliseconds kStep{20};
  constexpr milliseconds kStopReserve{2000};  // stop(): the shards' last writes, the joins
  if (node != nullptr) {
    // 3. Sessions still here (every client is gone, so each is a persistent one) can be
    // taken over by the node their client resumes on, while there is such a node.
    milliseconds session_wait = budget / 2;
    if (options.session_wait.count() >= 0) {
      session_wait = std::min(session_wait, options.session_wait);
    }
    const auto until = start + session_wait;
    for (unsigned i = 1; !d.stop_begun.load() && Clock::now() < until; ++i) {
      if (sessions() == 0 || core->router().peer_count.load(std::memory_order_relaxed) == 0) break;
      if (i % 5 == 0) kick_all();
      std::this_thread::sleep_for(kStep);
    }
    // 3b. The persistent sessions whose clients did not come back in time go to the node
    // that arbitrates their ids once this one is gone (with their queues), where a client
    // resuming on any node finds them. Bounded by a quarter of what is left.
    if (!d.stop_begun.load() && core->router().peer_count.load(std::memory_order_relaxed) != 0) {
      const auto left = deadline - kStopReserve - Clock::now();
      if (left > Clock::duration::zero())
        node->hand_off_sessions(Clock::now() + left / 4, d.stop_begun);
    }
    // 4. What this node forwarded reaches its peers (a peer closes its link to a node that
    // left, so this comes first), then the leave.
    const milliseconds leave_timeout = d.options.cluster->leave_timeout;
    auto left_until = [&](Clock::time_point t) {
      return t > Clock::now() ? std::chrono::duration_cast<milliseconds>(t - Clock::now())
                              : milliseconds(0);
    };
    const milliseconds leave_for = std::min(leave_timeout, left_until(deadline - kStopReserve));
    const auto flush_until =
        std::min(Clock::now() + std::chrono::seconds(5), deadline - kStopReserve - leave_for);
    // A barrier through every shard after the last kick: whatever a client published before
    // it went has been handed to the cluster's thread, so the flush below sees it queued.
    kick_all();
    std::vector<std::future<void>> barrier;
    for (auto& shard : core->shards()) {
      auto reached = std::make_shared<std::promise<void>>();
      barrier.push_back(reached->get_future());
      asio::post(shard->ctx, [reached] { reached->set_value(); });
    }
    for (auto& f : barrier) {
      while (f.wait_for(kStep) != std::future_status::ready && !d.stop_begun.load() &&
             Clock::now() < flush_until) {
      }
    }
    node->flush_links(flush_until, d.stop_begun);
    bool leave = false;
    {
      std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
      if (!d.stopped && leave_for.count() > 0) leave = d.left = true;
    }
    if (leave) node->leave(leave_for);
  }
  // 5.
  stop();
}

void Broker::wait() noexcept {
  Impl& d = *impl_;
  if (!d.running.load()) return;  // never started
  std::unique_lock<std::mutex> lock(d.wait_mutex);
  d.wait_cv.wait(lock, [&] { return d.finished; });
}

void Broker::set_cluster_keys(const std::vector<std::string>& keys) {
  // Under the lifecycle lock, so that the node is not stopped meanwhile; the control and
  // membership threads never take it.
  std::lock_guard<std::mutex> lock(impl_->lifecycle_mutex);
  if (!impl_->node) {
    throw std::system_error(make_error_code(errc::not_started), "brokerha::Broker: no cluster");
  }
  impl_->node->set_keys(keys);
}

ClusterInfo Broker::cluster() const {
  std::lock_guard<std::mutex> lock(impl_->lifecycle_mutex);
  if (!impl_->node) return {};
  return impl_->node->info();
}

struct detail::BrokerAccess {
  static Broker::Impl& impl(Broker& b) noexcept { return *b.impl_; }
};

std::vector<std::string> detail::cluster_keys(const Broker& broker) {
  auto& d = detail::BrokerAccess::impl(const_cast<Broker&>(broker));
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  return d.node ? d.node->keys() : std::vector<std::string>{};
}

void testing::set_cluster_partition(Broker& broker, const std::string& address, bool blocked) {
  auto& d = detail::BrokerAccess::impl(broker);
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  if (d.node) d.node->set_partition(address, blocked);
}

void testing::set_cluster_link_blocked(Broker& broker, const std::string& address, bool blocked) {
  auto& d = detail::BrokerAccess::impl(broker);
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  if (d.node) d.node->set_partition(address, blocked, false, true);
}

void testing::set_cluster_membership_blocked(Broker& broker, const std::string& address,
                                             bool blocked) {
  auto& d = detail::BrokerAccess::impl(broker);
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  if (d.node) d.node->set_partition(address, blocked, true, false);
}

void testing::inject_cluster_frame(Broker& broker, const std::string& peer, std::uint8_t kind,
                                   const std::string& body) {
  auto& d = detail::BrokerAccess::impl(broker);
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  if (d.node) d.node->inject_frame(peer, kind, body);
}

std::vector<Endpoint> Broker::listen_endpoints() const {
  std::lock_guard<std::mutex> lock(impl_->lifecycle_mutex);
  return impl_->endpoints;
}

void Broker::publish(const MessageInfo& info) {
  Impl& d = *impl_;
  if (!d.core || !d.running) return;
  auto m = std::make_shared<message::Message>();
  m->topic = info.topic;
  m->payload = info.payload;
  m->qos = static_cast<std::uint8_t>(std::clamp(info.qos, 0, 2));
  m->retain = info.retain;
  m->origin = info.origin;
  m->properties.user_properties = info.user_properties;
  m->properties.content_type = info.content_type;
  m->properties.response_topic = info.response_topic;
  m->properties.correlation_data = info.correlation_data;
  if (info.payload_format) {
    m->properties.payload_format_indicator = static_cast<std::uint8_t>(*info.payload_format);
  }
  if (info.expiry) m->expires_at = net::Clock::now() + *info.expiry;
  if (!topic::is_valid_name(m->topic)) return;
  net::Runtime* core = d.core.get();
  asio::post(core->shard(0).ctx, [core, m = message::MessagePtr(std::move(m))] {
    core->route(m, core->shard(0));
    core->flush(core->shard(0));
  });
}

std::vector<ClientInfo> Broker::clients() const {
  Impl& d = *impl_;
  std::vector<ClientInfo> out;
  if (!d.core) return out;
  for (auto& shard : d.core->shards()) {
    net::Shard* s = shard.get();
    auto part = run_on(*s, d.running, [s] {
      std::vector<ClientInfo> list;
      s->sessions.table().for_each([&list](const session::ClientSessionPtr& cs) {
        ClientInfo c;
        c.id = cs->state.client_id();
        c.protocol_version = static_cast<int>(cs->version);
        c.username = cs->username;
        c.clean_session = cs->clean;
        c.connected = cs->attached != nullptr;
        if (cs->attached) c.remote_address = cs->attached->remote_address();
        for (const auto& [filter, o] : cs->state.subscriptions()) {
          SubscriptionInfo si;
          topic::SharedFilter shared;
          if (topic::parse_shared(filter, shared)) {
            si.filter = std::string(shared.filter);
            si.share_name = std::string(shared.group);
          } else {
            si.filter = filter;
          }
          si.qos = o.qos;
          si.no_local = o.no_local;
          si.retain_as_published = o.retain_as_published;
          si.retain_handling = o.retain_handling;
          si.identifier = o.identifier;
          c.subscriptions.emplace(filter, std::move(si));
        }
        c.inflight = cs->state.inflight().size();
        c.queued = cs->state.queued();
        list.push_back(std::move(c));
      });
      return list;
    });
    if (part) {
      for (auto& c : *part) out.push_back(std::move(c));
    }
  }
  return out;
}

std::vector<MessageInfo> Broker::retained(const std::string& filter) const {
  Impl& d = *impl_;
  std::vector<MessageInfo> out;
  if (!d.core || !topic::is_valid_filter(filter)) return out;
  const auto now = net::Clock::now();
  for (const auto& m : d.core->router().retained_matching(filter))
    out.push_back(message_info(*m, now));
  return out;
}

std::vector<MessageInfo> Broker::inflight(const std::string& client_id) const {
  Impl& d = *impl_;
  if (!d.core) return {};
  net::Shard* s = &d.core->shard(d.core->home_shard(client_id));
  auto result = run_on(*s, d.running, [s, client_id] {
    std::vector<MessageInfo> out;
    const auto now = net::Clock::now();
    const session::ClientSessionPtr* found = s->sessions.table().find(client_id);
    if (found == nullptr) return out;
    for (const auto& f : (*found)->state.inflight()) {
      MessageInfo m = message_info(*f.delivery.message, now);
      m.qos = f.delivery.qos;
      m.retain = f.delivery.retain;
      m.packet_id = f.packet_id;
      m.dup = !f.sent;
      out.push_back(std::move(m));
    }
    for (const auto& q : (*found)->state.queue()) {
      MessageInfo m = message_info(*q.message, now);
      m.qos = q.qos;
      m.retain = q.retain;
      out.push_back(std::move(m));
    }
    return out;
  });
  return result ? std::move(*result) : std::vector<MessageInfo>{};
}

BrokerStats Broker::stats() const {
  const Impl& d = *impl_;
  return d.core ? d.core->stats() : BrokerStats{};
}

TopicSubscribers Broker::subscribers(const std::string& topic_name) const {
  TopicSubscribers out;
  if (!topic::is_valid_name(topic_name)) return out;
  auto keep = [](std::map<std::string, SubscriptionInfo>& m, const std::string& id,
                 const SubscriptionInfo& s) {
    auto [it, added] = m.emplace(id, s);
    if (!added && s.qos > it->second.qos) it->second = s;
  };
  for (const ClientInfo& c : clients()) {
    for (const auto& entry : c.subscriptions) {
      const SubscriptionInfo& s = entry.second;
      if (!topic::matches(s.filter, topic_name)) continue;
      keep(s.share_name.empty() ? out.subscriptions : out.shared[s.share_name], c.id, s);
    }
  }
  return out;
}

void Broker::set_access_rules(const AccessRules& rules) {
  auto compiled = access::Rules::compile(rules);  // throws: the old rules stay
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  d.options.access = rules;
  if (d.core) d.core->access().set_rules(std::move(compiled));
}

void Broker::set_limits(const BrokerOptions& options) {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  d.options.max_connections = options.max_connections;
  d.options.max_connection_rate = options.max_connection_rate;
  d.options.max_subscriptions = options.max_subscriptions;
  d.options.max_publish_rate = options.max_publish_rate;
  d.options.max_session_queued_bytes = options.max_session_queued_bytes;
  if (d.core) d.core->limits.set(d.options);
}

std::optional<std::string> Broker::export_session(const std::string& client_id) const {
  const Impl& d = *impl_;
  if (!d.core) return std::nullopt;
  net::Shard* s = &d.core->shard(d.core->home_shard(client_id));
  auto result = run_on(*s, d.running.load(), [s, client_id]() -> std::optional<std::string> {
    const session::ClientSessionPtr* found = s->sessions.table().find(client_id);
    if (found == nullptr) return std::nullopt;
    const session::ClientSession& cs = **found;
    session::SessionMeta meta;
    meta.protocol_version = static_cast<std::uint8_t>(cs.version);
    meta.clean = cs.clean;
    meta.username = cs.username;
    meta.expiry_interval = cs.expiry_interval;
    return session::export_session(cs.state, meta, net::Clock::now());
  });
  return result ? std::move(*result) : std::nullopt;
}

std::error_code Broker::import_session(std::string_view bytes) {
  Impl& d = *impl_;
  if (!d.core || !d.running) return make_error_code(errc::not_started);
  std::string error;
  auto imported = session::import_session(bytes, net::Clock::now(), error);
  if (!imported) return make_error_code(errc::malformed_input);
  net::Runtime* core = d.core.get();
  net::Shard* s = &core->shard(core->home_shard(imported->session->client_id()));
  auto shared = std::make_shared<session::ImportedSession>(std::move(*imported));
  auto result = run_on(*s, true, [core, s, shared] {
    std::error_code ec = s->sessions.install(std::move(*shared), net::Clock::now());
    core->flush(*s);
    return ec;
  });
  return result ? *result : make_error_code(errc::timed_out);
}

bool Broker::stop_client(const std::string& client_id) {
  Impl& d = *impl_;
  if (!d.core) return false;
  net::Runtime* core = d.core.get();
  net::Shard* s = &core->shard(core->home_shard(client_id));
  auto found = run_on(*s, d.running, [core, s, client_id] {
    const session::ClientSessionPtr* session = s->sessions.table().find(client_id);
    if (session == nullptr || (*session)->attached == nullptr) return false;
    (*session)->attached->kick(ReasonCode::administrative_action);
    core->flush(*s);
    return true;
  });
  return found.value_or(false);
}

}  // namespace brokerha
