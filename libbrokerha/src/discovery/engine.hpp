// SPDX-License-Identifier: Apache-2.0
#pragma once
// The discovery engine: what brokerha::Discovery does, on an io_context it is given, so the
// broker's cluster runs it on its control thread (docs/threading.md) and the public class on a
// thread of its own.
//
// c-ares 1.18 has no event thread: its sockets are watched with
// asio::posix::stream_descriptor::async_wait (ARES_OPT_SOCK_STATE_CB says when they open and
// close; the descriptor is release()d before c-ares closes the fd), and its timeouts with a
// steady timer from ares_timeout calling ares_process_fd(ARES_SOCKET_BAD, ARES_SOCKET_BAD).
//
// Threads: every member function and the callback run on the io_context's thread, except
// start() and refresh(), which post.

#include <brokerha/discovery.hpp>

#include <memory>
#include <system_error>

#include "io/asio.hpp"

namespace brokerha::discovery {

class Engine {
 public:
  /// Throws std::system_error(errc::invalid_argument) for options that do not parse.
  Engine(asio::io_context& ctx, DiscoveryOptions options, Discovery::Callback callback);
  ~Engine();  // stop(); on the context's thread or after it stopped
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void start();    // first lookup now, then every refresh_interval (posts)
  void refresh();  // a lookup now (posts)
  void stop();     // cancels queries and timers (on the context's thread, or after it stopped)
  DiscoveryResult last() const;  // any thread

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace brokerha::discovery
