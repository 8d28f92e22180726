// SPDX-License-Identifier: Apache-2.0
// brokerha-bench's run (engine.hpp): setting up, then the phases (connect window, probes,
// publishing, drain, close), the keep-alive and progress timers, the clock readings and CPU
// and RSS samples at each phase change, and failure. Runs on the bench's one thread.

#include "engine.hpp"

#include <sys/resource.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <utility>

#include "clock.hpp"
#include "proc_sampler.hpp"
#include "report.hpp"
#include "shapes.hpp"
#include "transports.hpp"

namespace brokerha::bench {

Engine::Engine(Options options)
    : opt(with_topic_prefix(std::move(options))),
      read_buffer(kReadBuffer),
      phase_timer_(io),
      poll_timer_(io),
      progress_timer_(io),
      keepalive_timer_(io),
      signals_(io, SIGINT, SIGTERM) {}

int Engine::run() {
  const tcp::endpoint pub_ep = resolve(io, opt.pub_host, opt.pub_port);
  const tcp::endpoint sub_ep = resolve(io, opt.sub_host, opt.sub_port);
  if (opt.tls) {
    tls_context = make_tls_context(opt);
    if (!tls_context) return 2;
  }

  // Enough file descriptors for every connection.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  const std::size_t wanted = opt.mode == Mode::idle ? static_cast<std::size_t>(opt.idle)
                                                    : static_cast<std::size_t>(opt.pubs + opt.subs);
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      wanted + 32 > rl.rlim_cur) {
    std::fprintf(stderr,
                 "brokerha-bench: %zu connections need more open files than the limit %llu\n",
                 wanted, static_cast<unsigned long long>(rl.rlim_cur));
    return 2;
  }

  if (opt.mode == Mode::idle) {
    add_idle_connections(*this, sub_ep);
    if (opt.broker_pid > 0) {
      record_.rss_before = process_rss_kib(opt.broker_pid);
      if (!record_.rss_before) {
        std::fprintf(stderr, "brokerha-bench: cannot read /proc/%ld/status\n", opt.broker_pid);
        return 2;
      }
    }
  } else {
    add_traffic_connections(*this, pub_ep, sub_ep);
    if (opt.broker_pid > 0 && !process_cpu_seconds(opt.broker_pid)) {
      std::fprintf(stderr, "brokerha-bench: cannot read /proc/%ld/stat\n", opt.broker_pid);
      return 2;
    }
  }

  signals_.async_wait([this](const std::error_code& ec, int) {
    if (!ec) fail("interrupted");
  });

  phase = Phase::connecting;
  record_.connect_start_ns = now_ns();
  phase_timer_.expires_after(seconds_to_duration(opt.connect_timeout));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (ec || phase != Phase::connecting) return;
    fail("timed out connecting: " + std::to_string(ready_) + " of " +
         std::to_string(total_conns()) + " connections ready after " +
         std::to_string(opt.connect_timeout) + " s");
  });
  progress_.ns = now_ns();
  if (opt.progress) {
    progress_timer_.expires_after(std::chrono::seconds(1));
    progress_timer_.async_wait([this](const std::error_code& ec) {
      if (!ec) progress_tick();
    });
  }
  start_next_connects();
  io.run();

  int status = 0;
  if (opt.mode == Mode::idle) {
    print_idle_result(*this);
  } else {
    status = print_traffic_result(*this);  // 1 when an integrity check failed
  }
  std::fflush(stdout);
  if (!record_.error.empty()) return 3;
  return status;
}

void Engine::start_next_connects() {
  const std::size_t total = total_conns();
  while (phase == Phase::connecting && next_connect_ < total &&
         connecting_ < static_cast<std::size_t>(opt.connect_window)) {
    ++connecting_;
    conn_at(next_connect_++).start();
  }
}

void Engine::on_conn_ready(Conn&) {
  if (phase != Phase::connecting) return;
  --connecting_;
  ++ready_;
  if (ready_ < total_conns()) {
    start_next_connects();
    return;
  }
  record_.connect_end_ns = now_ns();
  phase_timer_.cancel();
  if (any_keepalive) {
    keepalive_timer_.expires_after(std::chrono::seconds(1));
    keepalive_timer_.async_wait([this](const std::error_code& ec) {
      if (!ec) keepalive_tick();
    });
  }
  if (opt.mode == Mode::idle) {
    phase = Phase::running;
    phase_timer_.expires_after(seconds_to_duration(opt.settle));
    phase_timer_.async_wait([this](const std::error_code& ec) {
      if (ec || phase != Phase::running) return;
      if (opt.broker_pid > 0) record_.rss_after = process_rss_kib(opt.broker_pid);
      phase = Phase::draining;
      phase_timer_.expires_after(seconds_to_duration(opt.hold));
      phase_timer_.async_wait([this](const std::error_code& ec2) {
        if (ec2 || phase != Phase::draining) return;
        close_all();
      });
    });
    return;
  }
  start_probing();
}

void Engine::start_probing() {
  phase = Phase::probing;
  phase_timer_.expires_after(seconds_to_duration(opt.probe_timeout));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (ec || phase != Phase::probing) return;
    std::size_t missing = 0;
    for (const auto& s : subs) missing += s->got_probe ? 0 : 1;
    fail("timed out waiting for subscriptions to route: " + std::to_string(missing) + " of " +
         std::to_string(subs.size()) + " subscribers received no probe after " +
         std::to_string(opt.probe_timeout) + " s");
  });
  probe_round();
}

void Engine::probe_round() {
  if (phase != Phase::probing) return;
  for (Topic& t : topics) {
    if (!t.probed && !t.pubs.empty()) t.pubs.front()->send_probe();
  }
  poll_timer_.expires_after(std::chrono::milliseconds(200));
  poll_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) probe_round();
  });
}

void Engine::on_probe(Conn& sub) {
  Topic& t = *sub.topic;
  if (t.probed) return;
  for (const Conn* s : t.subs) {
    if (!s->got_probe) return;
  }
  t.probed = true;
  if (phase != Phase::probing) return;
  for (const Topic& other : topics) {
    if (!other.probed) return;
  }
  // Every route works: start once the current read batch is done.
  asio::post(io, [this] {
    if (phase == Phase::probing) start_running();
  });
}

void Engine::start_running() {
  poll_timer_.cancel();
  phase_timer_.cancel();
  if (opt.broker_pid > 0) record_.broker_cpu_start = process_cpu_seconds(opt.broker_pid);
  record_.bench_cpu_start = own_cpu_seconds();
  phase = Phase::running;
  record_.start_ns = now_ns();
  progress_.ns = record_.start_ns;
  if (opt.rate > 0) spread_rate_schedules(pubs, record_.start_ns, opt.rate);
  phase_timer_.expires_after(seconds_to_duration(opt.duration));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec && phase == Phase::running) stop_publishing();
  });
  for (auto& p : pubs) p->pump();
}

void Engine::stop_publishing() {
  phase = Phase::draining;
  record_.publish_end_ns = now_ns();
  for (auto& p : pubs) {
    p->cancel_timer();
    p->waiting_backlog = false;
  }
  phase_timer_.expires_after(seconds_to_duration(opt.drain_timeout));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (ec || phase != Phase::draining) return;
    std::fprintf(stderr,
                 "brokerha-bench: drain timeout (%.1f s): counting what is missing as lost\n",
                 opt.drain_timeout);
    finish_run();
  });
  drain_check();
}

void Engine::drain_check() {
  if (phase != Phase::draining) return;
  bool done = true;
  for (const auto& s : subs) {
    if (s->received < s->topic->sent || !s->write_idle()) done = false;
  }
  for (const auto& p : pubs) {
    if (p->inflight > 0 || !p->write_idle()) done = false;
  }
  if (done) {
    record_.drained = true;
    finish_run();
    return;
  }
  poll_timer_.expires_after(std::chrono::milliseconds(2));
  poll_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) drain_check();
  });
}

void Engine::finish_run() {
  record_.end_ns = now_ns();
  if (opt.broker_pid > 0) record_.broker_cpu_end = process_cpu_seconds(opt.broker_pid);
  record_.bench_cpu_end = own_cpu_seconds();
  close_all();
}

void Engine::close_all() {
  if (phase == Phase::closing || phase == Phase::done) return;
  phase = Phase::closing;
  phase_timer_.cancel();
  poll_timer_.cancel();
  keepalive_timer_.cancel();
  for (std::size_t i = 0; i < total_conns(); ++i) conn_at(i).close_gracefully();
  if (closed_ == total_conns()) {
    on_conn_closed();
    return;
  }
  // Give the DISCONNECTs a moment to be written, then close whatever is left.
  phase_timer_.expires_after(std::chrono::seconds(2));
  phase_timer_.async_wait([this](const std::error_code& ec) {
    if (ec) return;
    for (std::size_t i = 0; i < total_conns(); ++i) conn_at(i).close_now();
  });
}

void Engine::on_conn_closed() {
  if (phase != Phase::closing) {
    if (closed_ < total_conns()) ++closed_;
    return;
  }
  if (closed_ < total_conns()) ++closed_;
  if (closed_ >= total_conns()) {
    phase = Phase::done;
    phase_timer_.cancel();
    poll_timer_.cancel();
    progress_timer_.cancel();
    keepalive_timer_.cancel();
    signals_.cancel();
    io.stop();
  }
}

void Engine::fail(const std::string& what) {
  if (phase == Phase::closing || phase == Phase::done) return;
  if (record_.error.empty()) {
    record_.error = what;
    std::fprintf(stderr, "brokerha-bench: error: %s\n", what.c_str());
  }
  if (record_.end_ns == 0) {
    record_.end_ns = now_ns();
    if (opt.broker_pid > 0) record_.broker_cpu_end = process_cpu_seconds(opt.broker_pid);
    record_.bench_cpu_end = own_cpu_seconds();
  }
  phase = Phase::closing;
  phase_timer_.cancel();
  poll_timer_.cancel();
  progress_timer_.cancel();
  keepalive_timer_.cancel();
  signals_.cancel();
  for (std::size_t i = 0; i < total_conns(); ++i) conn_at(i).close_now();
  io.stop();
}

void Engine::keepalive_tick() {
  if (phase == Phase::closing || phase == Phase::done) return;
  const std::uint64_t now = now_ns();
  for (std::size_t i = 0; i < total_conns(); ++i) conn_at(i).ping_if_due(now);
  keepalive_timer_.expires_after(std::chrono::seconds(1));
  keepalive_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) keepalive_tick();
  });
}

void Engine::progress_tick() {
  print_progress(*this, now_ns(), progress_);
  progress_timer_.expires_after(std::chrono::seconds(1));
  progress_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) progress_tick();
  });
}

}  // namespace brokerha::bench
