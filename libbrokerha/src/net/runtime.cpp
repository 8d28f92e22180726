// SPDX-License-Identifier: Apache-2.0
#include "net/runtime.hpp"

#include <brokerha/version.hpp>

#include <algorithm>

#include "net/connection.hpp"

namespace brokerha::net {

namespace {

constexpr auto kSweepInterval = std::chrono::seconds(1);

router::Router::Options router_options(const BrokerOptions& o) {
  router::Router::Options r;
  if (o.cluster) {
    const ClusterOptions& c = *o.cluster;
    r.clustered = true;
    r.node_name = c.membership.name;
    // A delete must outlive every way an older copy can come back: gossip of the dead node
    // and two rounds of discovery (docs/cluster.md, "Retained messages").
    r.tombstone_ttl = c.membership.gossip_to_the_dead_time + 2 * c.discovery.refresh_interval;
    r.max_tombstones = c.max_tombstones;
    r.max_clock_skew = c.max_clock_skew;
  }
  return r;
}

}  // namespace

Shard::Shard(unsigned i, unsigned count, Runtime& runtime)
    : index(i),
      sweep_timer(ctx),
      sys_timer(ctx),
      outbox(count),
      sessions(
          registry::SessionRegistry::Context{i, runtime.router(), runtime.access(), counters,
                                             outbox, runtime.options().max_queued_messages,
                                             [this, &runtime] { runtime.schedule_flush(*this); },
                                             &runtime.limits.max_session_queued_bytes}),
      context{i,        count,  runtime.options(), runtime.router(), sessions, runtime.access(),
              counters, outbox, runtime.limits} {}

Runtime::Runtime(BrokerOptions options)
    : options_(std::move(options)),
      router_(router_options(options_)),
      access_(access::Rules::compile(options_.access)) {
  limits.set(options_);
  unsigned n = options_.io_threads;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  shards_.reserve(n);
  for (unsigned i = 0; i < n; ++i) shards_.push_back(std::make_unique<Shard>(i, n, *this));
}

Runtime::~Runtime() = default;

void Runtime::on_shard(unsigned index, std::function<void(registry::ShardAccess&)> f) {
  Shard& s = *shards_[index];
  asio::post(s.ctx, [this, &s, f = std::move(f)] {
    registry::ShardAccess access{s.index, s.sessions, router_, s.outbox};
    f(access);
    flush(s);
  });
}

router::RouteResult Runtime::route(const message::MessagePtr& m, Shard& shard) {
  const router::RouteResult r = router_.route(m, shard.outbox);
  if (r.targets != 0 || r.remote != 0) schedule_flush(shard);
  return r;
}

void Runtime::schedule_flush(Shard& shard) {
  if (shard.flush_scheduled) return;
  shard.flush_scheduled = true;
  asio::post(shard.ctx, [this, &shard] {
    shard.flush_scheduled = false;
    flush(shard);
  });
}

void Runtime::flush(Shard& from) {
  router::Outbox& out = from.outbox;
  if (cluster != nullptr) {
    if (!out.remote.empty()) {
      std::vector<router::RemoteSend> batch;
      batch.swap(out.remote);
      cluster->forward(std::move(batch));
    }
    if (!out.route_changes.empty()) {
      std::vector<std::string> changes;
      changes.swap(out.route_changes);
      cluster->routes_changed(std::move(changes), {});
    }
  }
  for (unsigned i = 0; i < out.deliveries.size(); ++i) {
    std::vector<router::Target>& batch = out.deliveries[i];
    if (batch.empty()) continue;
    if (i == from.index) {
      std::vector<router::Target> local;
      local.swap(batch);
      for (router::Target& t : local) from.sessions.deliver(t);
      local.clear();
      if (batch.empty()) batch.swap(local);  // keep the capacity
      continue;
    }
    Shard& target = *shards_[i];
    asio::post(target.ctx, [this, &target, b = std::move(batch)]() mutable {
      for (router::Target& t : b) target.sessions.deliver(t);
      flush(target);
    });
    batch = std::vector<router::Target>();
  }
  std::vector<std::shared_ptr<Connection>> dirty;
  dirty.swap(from.dirty);
  for (const auto& c : dirty) c->flush();
  dirty.clear();
  if (from.dirty.empty()) from.dirty.swap(dirty);  // keep the capacity
}

bool Runtime::memory_over() const noexcept {
  std::int64_t total = 0;
  for (const auto& s : shards_) total += s->counters.queued_bytes.load(std::memory_order_relaxed);
  return total > static_cast<std::int64_t>(options_.max_queued_bytes);
}

void Runtime::resume_paused(Shard& shard) {
  if (shard.memory_paused.empty()) return;
  std::vector<std::shared_ptr<Connection>> paused;
  paused.swap(shard.memory_paused);
  for (const auto& c : paused) c->resume_reading();
}

// ---- the sweep: timeouts, expiries, delayed wills; $SYS ----------------------------------------

void Runtime::start_sweeps() {
  for (auto& s : shards_) {
    Shard* shard = s.get();
    asio::post(shard->ctx, [this, shard] { sweep(*shard); });
  }
  if (options_.sys_interval.count() > 0) {
    Shard* shard = shards_[0].get();
    asio::post(shard->ctx, [this, shard] { publish_sys(*shard); });
  }
}

void Runtime::sweep(Shard& shard) {
  if (stopping.load()) return;
  const auto now = Clock::now();
  ++shard.sweeps;
  auto& conns = shard.connections;
  for (auto it = conns.begin(); it != conns.end();) {
    auto c = it->lock();
    if (!c || c->closed()) {
      if (c) c->unlinked();
      it = conns.erase(it);
      continue;
    }
    ++it;
    c->check_timeouts(now);  // may close it: unlinked at the next sweep
  }
  shard.sessions.sweep(now, shard.sweeps);
  resume_paused(shard);  // over the bound, publishers still get one read per sweep
  if (shard.index == 0) router_.prune_retained(now);
  flush(shard);
  shard.sweep_timer.expires_after(kSweepInterval);
  shard.sweep_timer.async_wait([this, &shard](const std::error_code& ec) {
    if (!ec) sweep(shard);
  });
}

BrokerStats Runtime::stats() const {
  BrokerStats st;
  auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  for (const auto& shard : shards_) {
    const router::Counters& c = shard->counters;
    st.clients_connected += get(c.clients_connected);
    st.sessions += get(c.sessions);
    st.inflight_messages += get(c.inflight);
    st.messages_received += get(c.messages_received);
    st.messages_sent += get(c.messages_sent);
    st.messages_dropped += get(c.messages_dropped);
    st.bytes_received += get(c.bytes_received);
    st.bytes_sent += get(c.bytes_sent);
    st.connections_total += get(c.connections_total);
    st.auth_failures += get(c.auth_failures);
    st.acl_denials += get(c.acl_denials);
    st.protocol_errors += get(c.protocol_errors);
    st.keepalive_timeouts += get(c.keepalive_timeouts);
    st.stuck_consumers_closed += get(c.stuck_consumers_closed);
    st.accept_errors += get(c.accept_errors);
    st.connections_refused += get(c.connections_refused);
    st.connection_rate_refused += get(c.connection_rate_refused);
    st.subscriptions_refused += get(c.subscriptions_refused);
    st.publish_rate_limited += get(c.publish_rate_limited);
    st.session_bytes_dropped += get(c.session_bytes_dropped);
  }
  st.subscriptions = router_.routes().size();
  st.retained_messages = router_.retained_count();
  st.uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_at);
  return st;
}

void Runtime::publish_sys(Shard& shard) {
  if (stopping.load()) return;
  const BrokerStats st = stats();
  auto put = [&](const char* name, std::string value) {
    auto m = std::make_shared<message::Message>();
    m->topic = std::string("$SYS/broker/") + name;
    m->payload = std::move(value);
    m->retain = true;
    route(m, shard);
  };
  put("version", std::string("brokerha ") + library_version());
  put("uptime", std::to_string(st.uptime.count()) + " seconds");
  put("clients/connected", std::to_string(st.clients_connected));
  put("clients/total", std::to_string(st.sessions));
  put("clients/disconnected",
      std::to_string(st.sessions >= st.clients_connected ? st.sessions - st.clients_connected : 0));
  put("messages/received", std::to_string(st.messages_received));
  put("messages/sent", std::to_string(st.messages_sent));
  put("messages/dropped", std::to_string(st.messages_dropped));
  put("messages/inflight", std::to_string(st.inflight_messages));
  put("load/bytes/received", std::to_string(st.bytes_received));
  put("load/bytes/sent", std::to_string(st.bytes_sent));
  put("subscriptions/count", std::to_string(st.subscriptions));
  put("retained messages/count", std::to_string(st.retained_messages));
  flush(shard);
  shard.sys_timer.expires_after(options_.sys_interval);
  shard.sys_timer.async_wait([this, &shard](const std::error_code& ec) {
    if (!ec) publish_sys(shard);
  });
}

}  // namespace brokerha::net
