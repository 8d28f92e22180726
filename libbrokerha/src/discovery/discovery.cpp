// SPDX-License-Identifier: Apache-2.0
// brokerha::Discovery: a discovery::Engine on an io_context of its own, run by one thread.
//
// stop() stops the context and joins the thread first, then stops the engine from the
// stopping thread (allowed once the context is stopped): no engine handler, so no callback,
// can run after the join. The last result is kept after stop().

#include <brokerha/discovery.hpp>
#include <brokerha/error.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "discovery/engine.hpp"
#include "util/lifecycle.hpp"

namespace brokerha {

struct Discovery::Impl {
  explicit Impl(DiscoveryOptions o) : options(std::move(o)) {}

  const DiscoveryOptions options;
  Callback callback;

  std::mutex mu;  // guards the members below (not held while joining a callback)
  bool started = false;
  bool stopped = false;
  DiscoveryResult final_result;

  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::unique_ptr<discovery::Engine> engine;  // destroyed before `io`
  std::thread thread;
  std::atomic<std::thread::id> thread_id{};

  bool on_thread() const noexcept { return std::this_thread::get_id() == thread_id.load(); }
  void start();  // Discovery::start(); throws
};

Discovery::Discovery(DiscoveryOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

Discovery::~Discovery() {
  stop();
  if (impl_->thread.joinable()) impl_->thread.detach();  // stop() called from the callback
}

void Discovery::set_callback(Callback cb) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->started) impl_->callback = std::move(cb);
}

void Discovery::start() { impl_->start(); }

void Discovery::start(std::error_code& ec) noexcept {
  util::capture_errors(ec, [this] { impl_->start(); });
}

void Discovery::Impl::start() {
  std::lock_guard<std::mutex> lock(mu);
  if (started) throw std::system_error(make_error_code(errc::already_started));
  try {
    engine = std::make_unique<discovery::Engine>(io, options, callback);
    work.emplace(io.get_executor());
    engine->start();
    thread = util::start_guarded_thread("the discovery thread", [this] {
      thread_id.store(std::this_thread::get_id());
      io.run();
    });
    started = true;
  } catch (...) {
    engine.reset();
    work.reset();
    throw;
  }
}

void Discovery::stop() noexcept {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> lock(d.mu);
  if (!d.started || d.stopped) return;
  d.stopped = true;
  d.work.reset();
  d.io.stop();
  if (d.thread.joinable() && !d.on_thread()) {
    lock.unlock();  // the callback may be calling last()
    d.thread.join();
    lock.lock();
  }
  // The context is stopped (and its thread gone, unless this is it): stop the engine here.
  d.final_result = d.engine->last();
  d.engine->stop();
  if (!d.on_thread()) d.engine.reset();
}

void Discovery::refresh() noexcept {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  if (!d.started || d.stopped || !d.engine) return;
  try {
    d.engine->refresh();
  } catch (...) {
    // Posting can only fail on allocation; a refresh is a hint.
  }
}

DiscoveryResult Discovery::last() const {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  return d.engine ? d.engine->last() : d.final_result;
}

}  // namespace brokerha
