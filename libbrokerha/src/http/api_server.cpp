// SPDX-License-Identifier: Apache-2.0
// brokerha::ApiServer's core: cpp-httplib on its own listener thread and a fixed request pool;
// the route table, dispatch and Basic auth. The handlers are in the route family files
// (http/api_impl.hpp lists them).
//
// Routing is ours, not httplib's: every method and path reaches dispatch(), which finds the
// route, checks basic auth (protected routes), then the method (405), then hands the request
// to the route's handler, which returns a Reply. /proxy/<route> calls the same handler
// in-process for this node and the member's HTTP API for the others, in parallel.
//
// Threads: start() and stop() on the caller's thread (under lifecycle_mutex); listen on the
// server's listener thread; dispatch() and member_list() on the request pool threads.
//
// Capacity (docs/threading.md): the pool has `threads` + `max_sse_clients` + `max_proxy_calls`
// threads; SSE streams and /proxy calls take a Slot each and get 503 when their cap is
// reached, so `threads` workers stay free for probes and /metrics. SSE loops wait on the bus
// in slices of at most 200 ms and check `stopping`, so stop() is bounded.

#include <brokerha/error.hpp>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <system_error>

#include "broker/cluster_keys.hpp"
#include "http/api_impl.hpp"
#include "util/base64.hpp"
#include "util/lifecycle.hpp"

namespace brokerha {

namespace {

using http::Clock;
using http::error_reply;
using http::send;

#ifndef CPPHTTPLIB_HEADER_MAX_COUNT
// cpp-httplib before the header count limit (0.11, Debian 12's) reads a request line of any
// length and any number of header lines into memory: one peer streaming headers grows the
// process by what it sends. BoundedServer serves each connection as httplib does (keep-alive,
// read and write timeouts) over a BoundedStream that gives the parser at most kMaxRequestHead
// bytes for a request line and its headers, within kRequestHeadTime, and then the body limit;
// past either the read fails and httplib closes the connection. Newer cpp-httplib bounds the
// header count and line length itself.
constexpr std::size_t kMaxRequestHead = 64 * 1024;
constexpr auto kRequestHeadTime = std::chrono::seconds(10);
constexpr std::size_t kChunkFraming = 64 * 1024;  // chunk sizes and trailers around a body

class BoundedStream final : public httplib::Stream {
 public:
  BoundedStream(socket_t sock, std::chrono::microseconds read_timeout,
                std::chrono::microseconds write_timeout)
      : sock_(sock), read_timeout_(read_timeout), write_timeout_(write_timeout) {}

  // A request starts: the head budget and deadline.
  void start_request() {
    budget_ = kMaxRequestHead;
    head_deadline_ = Clock::now() + kRequestHeadTime;
    in_head_ = true;
  }
  // The head was parsed: the body may take `bytes` more.
  void head_done(std::size_t bytes) {
    budget_ = bytes;
    in_head_ = false;
  }
  // Waits at most `timeout` for the next request's first byte, in slices, while `running`.
  bool wait_request(std::chrono::milliseconds timeout, const std::atomic<socket_t>& listener) {
    const auto deadline = Clock::now() + timeout;
    while (pos_ == end_) {
      if (listener == INVALID_SOCKET) return false;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      const int r = wait(POLLIN, std::min(left, std::chrono::milliseconds(100)));
      if (r < 0) return false;
      if (r > 0) return true;
    }
    return true;
  }

  bool is_readable() const override { return pos_ != end_ || wait(POLLIN, read_timeout_) > 0; }
  bool is_writable() const override {
    if (wait(POLLOUT, write_timeout_) <= 0) return false;
    char c;  // a peer that closed is not writable (as httplib's is_socket_alive)
    const ssize_t n = ::recv(sock_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n != 0 && !(n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  ssize_t read(char* ptr, std::size_t size) override {
    if (budget_ == 0) return -1;
    size = std::min(size, budget_);
    if (pos_ == end_) {
      auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(read_timeout_);
      if (in_head_) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(head_deadline_ - Clock::now());
        if (left.count() <= 0) return -1;
        timeout = std::min(timeout, left);
      }
      if (wait(POLLIN, timeout) <= 0) return -1;
      ssize_t n = 0;
      do {
        n = ::recv(sock_, buf_, sizeof buf_, 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      pos_ = 0;
      end_ = static_cast<std::size_t>(n);
    }
    const std::size_t n = std::min(size, end_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    budget_ -= n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, std::size_t size) override {
    if (wait(POLLOUT, write_timeout_) <= 0) return -1;
    ssize_t n = 0;
    do {
      n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    address(true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    address(false, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  template <class Rep, class Period>
  int wait(short events, std::chrono::duration<Rep, Period> timeout) const {
    pollfd p{sock_, events, 0};
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
    int r = 0;
    do {
      r = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, ms)));
    } while (r < 0 && errno == EINTR);
    return r;
  }
  void address(bool peer, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    auto* sa = reinterpret_cast<sockaddr*>(&a);
    if ((peer ? ::getpeername(sock_, sa, &len) : ::getsockname(sock_, sa, &len)) != 0) return;
    char host[NI_MAXHOST] = {};
    char serv[NI_MAXSERV] = {};
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                      NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  socket_t sock_;
  std::chrono::microseconds read_timeout_;
  std::chrono::microseconds write_timeout_;
  std::size_t budget_ = kMaxRequestHead;
  Clock::time_point head_deadline_;
  bool in_head_ = true;
  char buf_[4096];
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
};

class BoundedServer final : public httplib::Server {
 private:
  // httplib's own loop (keep-alive count and timeout, then shutdown and close), over a
  // BoundedStream.
  bool process_and_close_socket(socket_t sock) override {
    bool ret = false;
    {
      BoundedStream stream(
          sock,
          std::chrono::seconds(read_timeout_sec_) + std::chrono::microseconds(read_timeout_usec_),
          std::chrono::seconds(write_timeout_sec_) +
              std::chrono::microseconds(write_timeout_usec_));
      const std::size_t body = payload_max_length_ > SIZE_MAX - kChunkFraming
                                   ? SIZE_MAX
                                   : payload_max_length_ + kChunkFraming;
      for (std::size_t count = keep_alive_max_count_;
           count > 0 &&
           stream.wait_request(std::chrono::seconds(keep_alive_timeout_sec_), svr_sock_);
           --count) {
        stream.start_request();
        bool closed = false;
        ret = process_request(stream, count == 1, closed,
                              [&](httplib::Request&) { stream.head_done(body); });
        if (!ret || closed) break;
      }
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ret;
  }
};
using HttpServer = BoundedServer;
#else
using HttpServer = httplib::Server;
#endif

// Constant time in the contents (not the lengths) of the strings.
bool constant_time_equal(std::string_view a, std::string_view b) {
  const std::size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (std::size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// The members of a cluster-mode broker. Each advertises its API port in its metadata as
// "api=<port>" (brokerha-server does; another embedder's nodes are assumed to use ours).
std::vector<ApiMember> cluster_members(const ClusterInfo& ci) {
  std::vector<ApiMember> out;
  for (const Member& m : ci.members) {
    ApiMember a;
    a.name = m.name;
    a.address = m.address;
    a.port = m.port;
    a.meta = m.meta;
    a.state = m.state == MemberState::suspect ? 1 : 0;
    a.pmin = m.protocol_min;
    a.pmax = m.protocol_max;
    a.pcur = m.protocol_cur;
    a.dmin = m.delegate_min;
    a.dmax = m.delegate_max;
    a.dcur = m.delegate_cur;
    if (m.meta.rfind("api=", 0) == 0) {
      const long port = std::strtol(m.meta.c_str() + 4, nullptr, 10);
      if (port > 0 && port <= 65535) a.api_port = static_cast<std::uint16_t>(port);
    }
    a.self = m.name == ci.node_name;
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace

ApiServer::Impl::Impl(ApiOptions o, Broker& b, Bus& bs)
    : options(std::move(o)), broker(b), bus(bs), started_at(Clock::now()) {
  if (options.node_name.empty()) options.node_name = host_name();
}

const std::vector<ApiServer::Impl::Route>& ApiServer::Impl::routes() {
  static const std::vector<Route> table = {
      {"GET", "/metrics", &Impl::metrics, false, false},
      {"GET", "/ready", &Impl::ready, false, false},
      {"GET", "/healthz", &Impl::healthz, false, false},
      {"GET", "/api/discovery/members", &Impl::members_route, true, true},
      {"GET", "/api/mqtt/clients", &Impl::clients, true, true},
      {"POST", "/api/mqtt/client/stop", &Impl::client_stop, true, false},
      {"POST", "/api/mqtt/client/inflight", &Impl::client_inflight, true, true},
      {"POST", "/api/mqtt/topic/messages", &Impl::topic_messages, true, true},
      {"POST", "/api/mqtt/topic/subscribers", &Impl::topic_subscribers, true, true},
      {"GET", "/api/sse", nullptr, true, false},  // streamed: see sse()
      {"POST", "/api/sse", nullptr, true, false},
      {"GET", "/debug", &Impl::debug_index, true, false},
      {"GET", "/debug/stats", &Impl::debug_stats, true, false},
      {"GET", "/debug/threads", &Impl::debug_threads, true, false},
      {"GET", "/debug/memory", &Impl::debug_memory, true, false},
  };
  return table;
}

std::vector<ApiMember> ApiServer::Impl::member_list() const {
  if (options.members) return options.members();
  if (const ClusterInfo ci = broker.cluster(); ci.enabled) return cluster_members(ci);
  ApiMember self;
  self.name = options.node_name;
  self.address = options.bind == "0.0.0.0" || options.bind == "::" ? "127.0.0.1" : options.bind;
  self.api_port = bound_port.load();
  self.self = true;
  return {self};
}

// ---- dispatch ----------------------------------------------------------------------------------

std::vector<std::string> ApiServer::Impl::proxy_key_list() const {
  if (options.proxy_keys) return options.proxy_keys();
  return detail::cluster_keys(broker);
}

bool ApiServer::Impl::authorized(const httplib::Request& req) const {
  if (options.users.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kBasic = "Basic ";
  if (header.size() <= kBasic.size() || header.compare(0, kBasic.size(), kBasic) != 0) {
    return false;
  }
  const auto decoded = util::base64_decode(std::string_view(header).substr(kBasic.size()));
  if (!decoded) return false;
  const std::size_t colon = decoded->find(':');
  if (colon == std::string::npos) return false;
  const std::string_view user = std::string_view(*decoded).substr(0, colon);
  const std::string_view pass = std::string_view(*decoded).substr(colon + 1);
  bool ok = false;
  for (const auto& [u, p] : options.users) {
    // Every entry is compared, in constant time, whichever matches.
    // Both compared before combining: no early exit on a wrong user name.
    const bool user_ok = constant_time_equal(user, u);
    const bool pass_ok = constant_time_equal(pass, p);
    ok = (user_ok && pass_ok) || ok;
  }
  return ok;
}

void ApiServer::Impl::dispatch(const httplib::Request& req, httplib::Response& res) {
  requests.fetch_add(1, std::memory_order_relaxed);
  std::string_view path = req.path;
  const bool proxy = path.rfind("/proxy/", 0) == 0;
  if (proxy) path.remove_prefix(6);
  std::vector<const Route*> matching;
  for (const Route& r : routes()) {
    if (path == r.path && (!proxy || r.proxied)) matching.push_back(&r);
  }
  if (matching.empty()) return send(res, error_reply(404, "no such endpoint"));
  // A request another member forwarded for its /proxy: signed with the cluster's key, in
  // place of the caller's credentials, which are never forwarded. Never fanned out again.
  if (http::ProxyVerifier::signed_request(req)) {
    std::string why;
    if (proxy || !proxy_verifier.verify(req, proxy_key_list(), why)) {
      auth_failures.fetch_add(1, std::memory_order_relaxed);
      return send(
          res,
          error_reply(401, "unauthorized: " +
                               (proxy ? std::string("a signed request cannot be proxied") : why)));
    }
  } else if (matching.front()->protected_ && !authorized(req)) {
    auth_failures.fetch_add(1, std::memory_order_relaxed);
    res.set_header("WWW-Authenticate", "Basic realm=\"api\"");
    return send(res, error_reply(401, "unauthorized"));
  }
  const Route* route = nullptr;
  std::string allow;
  for (const Route* r : matching) {
    if (req.method == r->method || (req.method == "HEAD" && std::string_view(r->method) == "GET"))
      route = r;
    allow += allow.empty() ? r->method : std::string(", ") + r->method;
  }
  if (route == nullptr) {
    res.set_header("Allow", allow);
    return send(res, error_reply(405, "method not allowed"));
  }
  try {
    if (route->handler == nullptr) return sse(req, res);
    if (proxy) return send(res, proxy_call(req, *route));
    send(res, (this->*route->handler)(req));
  } catch (const std::exception& e) {
    send(res, error_reply(500, e.what()));
  }
}

// ---- lifecycle ---------------------------------------------------------------------------------

ApiServer::ApiServer(ApiOptions options, Broker& broker, Bus& bus)
    : impl_(std::make_unique<Impl>(std::move(options), broker, bus)) {}

ApiServer::~ApiServer() { stop(); }

void ApiServer::start() { impl_->start(); }

void ApiServer::start(std::error_code& ec) noexcept {
  util::capture_errors(ec, [this] { impl_->start(); });
}

void ApiServer::Impl::start() {
  std::lock_guard<std::mutex> lock(lifecycle_mutex);
  if (started) throw std::system_error(make_error_code(errc::already_started));
  std::unique_ptr<httplib::Server> http = std::make_unique<HttpServer>();
  const ApiOptions& o = options;
  // Room for every SSE stream and /proxy call at their caps, and `threads` more (Slot).
  const std::size_t pool =
      std::max(1u, o.threads) + std::max(1u, o.max_sse_clients) + std::max(1u, o.max_proxy_calls);
  http->new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
  http->set_payload_max_length(o.max_body_bytes);
  // httplib's default also sets SO_REUSEPORT, which lets a second server bind a port in use
  // (and share its connections) instead of failing: SO_REUSEADDR only.
  http->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  // Idle keep-alive connections hold a pool thread: keep them short.
  http->set_keep_alive_timeout(2);
  http->set_read_timeout(5);
  http->set_write_timeout(5);
  const httplib::Server::Handler handler = [this](const httplib::Request& req,
                                                  httplib::Response& res) { dispatch(req, res); };
  http->Get(".*", handler);
  http->Post(".*", handler);
  http->Put(".*", handler);
  http->Patch(".*", handler);
  http->Delete(".*", handler);
  http->Options(".*", handler);
  errno = 0;
  int port = o.port;
  if (o.port == 0) {
    port = http->bind_to_any_port(o.bind);
  } else if (!http->bind_to_port(o.bind, o.port)) {
    port = -1;
  }
  if (port <= 0) {
    throw std::system_error(
        std::error_code(errno != 0 ? errno : EADDRINUSE, std::system_category()),
        "brokerha::ApiServer::start: bind " + o.bind);
  }
  bound_port = static_cast<std::uint16_t>(port);
  server = std::move(http);
  started = true;
  thread = std::thread([this] {
    server->listen_after_bind();
    listen_returned = true;
  });
}

void ApiServer::stop() noexcept {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  if (!d.started || d.stopped) return;
  d.stopped = true;
  d.stopping = true;
  // httplib's stop() does nothing until listen_after_bind() has marked the server running.
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!d.server->is_running() && !d.listen_returned && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  d.server->stop();
  if (d.thread.joinable()) d.thread.join();
}

std::uint16_t ApiServer::port() const noexcept { return impl_->bound_port.load(); }

const std::string& ApiServer::node_name() const noexcept { return impl_->options.node_name; }

}  // namespace brokerha
