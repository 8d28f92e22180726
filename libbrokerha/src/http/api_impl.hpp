// SPDX-License-Identifier: Apache-2.0
#pragma once
// ApiServer::Impl, what the files of the HTTP API share (internal). The server is split by
// route family, each file readable alone:
//
//   api_server.cpp     lifecycle, the route table, dispatch, Basic auth, the member list, the
//                      request pool's sizing
//   routes_api.cpp     /api/discovery/members, /api/mqtt/...
//   routes_proxy.cpp   /proxy/<route>: this node in-process, the other members over HTTP
//   routes_sse.cpp     /api/sse: the bus as Server-Sent Events
//   routes_health.cpp  /ready and /healthz
//   metrics.cpp        /metrics: Prometheus text from a table of metric descriptors
//   routes_debug.cpp   /debug/...
//   json.cpp           JSON helpers and broker-ha's shapes
//
// Threads: cpp-httplib accepts on the server's own listener thread and runs every handler on
// its request pool threads, concurrently. Handlers use only the thread-safe Broker snapshot
// API, the Bus, the atomics below, and `options` (read-only once started).
//
// Capacity (docs/threading.md): the pool has `threads` + `max_sse_clients` + `max_proxy_calls`
// threads (ApiServer::Impl::start()); an SSE stream and a /proxy call each hold a Slot and get
// 503 when their cap is reached, so `threads` workers stay free for probes and /metrics.

#include <brokerha/api.hpp>
#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "http/json.hpp"
#include "http/proxy_auth.hpp"

namespace brokerha::http {

using Clock = std::chrono::steady_clock;

/// A handler's answer.
struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

inline Reply error_reply(int status, std::string_view error) {
  return Reply{status, error_json(status, error)};
}

inline void send(httplib::Response& res, const Reply& reply) {
  res.status = reply.status;
  res.set_content(reply.body, reply.content_type.c_str());
}

/// One of at most `cap` (at least 1) concurrent places counted by `in_use`: an SSE stream or
/// a /proxy call. Held (true) when taken; given back when destroyed.
class Slot {
 public:
  Slot(std::atomic<unsigned>& in_use, unsigned cap)
      : in_use_(in_use), held_(in_use.fetch_add(1) < std::max(1u, cap)) {
    if (!held_) in_use_.fetch_sub(1);
  }
  ~Slot() {
    if (held_) in_use_.fetch_sub(1);
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

  explicit operator bool() const { return held_; }

 private:
  std::atomic<unsigned>& in_use_;
  const bool held_;
};

}  // namespace brokerha::http

namespace brokerha {

struct ApiServer::Impl {
  using Reply = http::Reply;
  using Handler = Reply (Impl::*)(const httplib::Request&);

  struct Route {
    const char* method;
    const char* path;
    Handler handler;  // null: the SSE stream (sse())
    bool protected_;  // behind basic auth when users are configured
    bool proxied;     // also served as /proxy<path>
  };

  Impl(ApiOptions o, Broker& b, Bus& bs);

  ApiOptions options;
  Broker& broker;
  Bus& bus;
  const http::Clock::time_point started_at;

  std::mutex lifecycle_mutex;
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  std::atomic<bool> listen_returned{false};
  std::atomic<std::uint16_t> bound_port{0};
  bool started = false;
  bool stopped = false;
  std::atomic<bool> stopping{false};

  std::atomic<unsigned> sse_clients{0};
  std::atomic<unsigned> proxy_calls{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> auth_failures{0};
  std::atomic<std::uint64_t> sse_events{0};
  mutable http::ProxyVerifier proxy_verifier;  // signed requests forwarded by other members

  // api_server.cpp
  void start();  // ApiServer::start(); throws
  static const std::vector<Route>& routes();
  void dispatch(const httplib::Request& req, httplib::Response& res);
  bool authorized(const httplib::Request& req) const;
  /// ApiOptions::proxy_keys, else the cluster's keyring (empty: none).
  std::vector<std::string> proxy_key_list() const;
  /// ApiOptions::members, else the cluster's members, else this node alone.
  std::vector<ApiMember> member_list() const;

  // routes_api.cpp
  Reply members_route(const httplib::Request& req);
  Reply clients(const httplib::Request& req);
  Reply client_stop(const httplib::Request& req);
  Reply client_inflight(const httplib::Request& req);
  Reply topic_messages(const httplib::Request& req);
  Reply topic_subscribers(const httplib::Request& req);

  // routes_proxy.cpp
  Reply proxy_call(const httplib::Request& req, const Route& route);

  // routes_sse.cpp
  void sse(const httplib::Request& req, httplib::Response& res);

  // routes_health.cpp
  Reply ready(const httplib::Request& req);
  Reply healthz(const httplib::Request& req);

  // metrics.cpp
  Reply metrics(const httplib::Request& req);

  // routes_debug.cpp
  Reply debug_index(const httplib::Request& req);
  Reply debug_stats(const httplib::Request& req);
  Reply debug_threads(const httplib::Request& req);
  Reply debug_memory(const httplib::Request& req);
};

}  // namespace brokerha
