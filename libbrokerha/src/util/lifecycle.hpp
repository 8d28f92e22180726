// SPDX-License-Identifier: Apache-2.0
#pragma once
// What every public component's lifecycle shares (Broker, ApiServer, Membership, Discovery).
//
// A component writes one start that throws; its public pair is then
//   void X::start() { impl_->start(); }
//   void X::start(std::error_code& ec) noexcept { util::capture_errors(ec, [&] { impl_->start();
//   }); }
// and the threads it runs come from start_guarded_thread().

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

namespace brokerha::util {

// The error code for the exception being handled; call it only inside a catch block.
// std::system_error gives its code, std::bad_alloc std::errc::not_enough_memory, and any other
// exception (a bad option, an unreadable file) errc::invalid_argument.
std::error_code current_exception_code() noexcept;

// Runs `body`; `ec` is cleared, or set to the code of what it threw.
template <class Body>
void capture_errors(std::error_code& ec, Body&& body) noexcept {
  ec.clear();
  try {
    std::forward<Body>(body)();
  } catch (...) {
    ec = current_exception_code();
  }
}

// A thread running `run`. Handlers do not throw; if one ever did, a silently dead thread would
// strand everything it owns (sessions, the membership, discovery), so the process says which
// thread and aborts.
template <class Run>
std::thread start_guarded_thread(std::string what, Run&& run) {
  return std::thread([what = std::move(what), run = std::forward<Run>(run)]() mutable {
    try {
      run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "brokerha: fatal error on %s: %s\n", what.c_str(), e.what());
      std::abort();
    }
  });
}

}  // namespace brokerha::util
