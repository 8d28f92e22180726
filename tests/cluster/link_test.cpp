// SPDX-License-Identifier: Apache-2.0
// brokerha::cluster::LinkManager on real sockets on 127.0.0.1: each node runs its manager on
// its own io_context and thread; the accepting node receives its streams from a real
// brokerha::Membership (port 0) whose stream handler calls LinkManager::accept (the port
// sharing of docs/cluster.md), or from a plain TCP acceptor. Raw sockets speak the wire format
// of docs/cluster-protocol.md by hand for the malformed-input and re-send cases.
// Waits are bounded polls; no fixed ports, no sleeps as synchronisation.

#include "cluster/link.hpp"

#include <brokerha/membership.hpp>

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "membership/stream_seam.hpp"
#include "support/broker_fixture.hpp"

using namespace std::chrono_literals;
using brokerha::cluster::kPlainMagic;
using brokerha::cluster::LinkManager;
using brokerha::cluster::LinkOptions;
using brokerha::cluster::LinkStats;
using brokerha::test::wait_until;

namespace {

const std::string kKey16 = "0123456789abcdef";
const std::string kKey32 = "0123456789abcdef0123456789ABCDEF";

// ---- frame bodies: an 8-byte index, then filler of a size and value fixed by the index ----

std::size_t filler_size(std::uint64_t i) {
  if (i % 997 == 0) return 70000 + i % 1000;
  if (i % 10 == 0) return 4000;
  return static_cast<std::size_t>(i % 300);
}
std::uint8_t kind_of(std::uint64_t i) { return static_cast<std::uint8_t>(1 + i % 3); }

std::shared_ptr<const std::string> make_body(std::uint64_t i) {
  std::string b(8, '\0');
  for (int k = 7; k >= 0; --k) b[static_cast<std::size_t>(7 - k)] = static_cast<char>(i >> (8 * k));
  b.append(filler_size(i), static_cast<char>(i & 0xFF));
  return std::make_shared<const std::string>(std::move(b));
}

// The index of a body, or -1 when the body is not what make_body made for its index.
std::int64_t check_body(std::uint8_t kind, std::string_view b) {
  if (b.size() < 8) return -1;
  std::uint64_t i = 0;
  for (int k = 0; k < 8; ++k)
    i = (i << 8) | static_cast<std::uint8_t>(b[static_cast<std::size_t>(k)]);
  if (b.size() != 8 + filler_size(i) || kind != kind_of(i)) return -1;
  if (b.size() > 8 && (static_cast<std::uint8_t>(b[8]) != (i & 0xFF) ||
                       static_cast<std::uint8_t>(b.back()) != (i & 0xFF))) {
    return -1;
  }
  return static_cast<std::int64_t>(i);
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (std::uint64_t i = from; i < to; ++i) v.push_back(i);
  return v;
}

LinkOptions test_options(const std::string& key = {}) {
  LinkOptions o;
  o.secret_key = key;
  o.connect_timeout = 2000ms;
  o.reconnect_min = 20ms;
  o.reconnect_max = 200ms;
  o.ping_interval = 100ms;
  return o;
}

// ---- a node: a LinkManager on its own io_context and thread -------------------------------

class Node {
 public:
  // membership: the accepting side is a real brokerha::Membership on port 0.
  Node(const std::string& name, LinkOptions o, bool membership = false) : name_(name) {
    o.node_name = name;
    LinkManager::Handlers h;
    h.on_frame = [this](const std::string& peer, std::uint8_t kind, std::string_view body) {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) ++after_stop_;
      const std::int64_t i = check_body(kind, body);
      if (i < 0) {
        ++bad_;
      } else {
        rx_[peer].push_back(static_cast<std::uint64_t>(i));
      }
      if (frame_hook_) frame_hook_(*lm_, peer, rx_[peer].size());  // under mu_: no Node calls
    };
    h.on_up = [this](const std::string& peer, std::uint64_t epoch) {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) ++after_stop_;
      ups_.emplace_back(peer, epoch);
    };
    h.on_down = [this](const std::string& peer) {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) ++after_stop_;
      ++downs_[peer];
    };
    lm_ = std::make_unique<LinkManager>(io_, o, std::move(h));
    if (membership) {
      brokerha::MembershipOptions mo;
      mo.name = name;
      mo.bind_address = "127.0.0.1";
      mo.port = 0;
      member_ = std::make_unique<brokerha::Membership>(mo);
      brokerha::membership::set_stream_handler(
          *member_, [this](int fd, std::string_view first) { lm_->accept(fd, first); });
      member_->start();
      port_ = member_->bound_port();
    }
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Node() { shutdown(); }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Stops the listener, the manager (on its thread) and the thread.
  void shutdown() {
    if (!thread_.joinable()) return;
    if (member_) member_->stop();
    if (acceptor_fd_ >= 0) {
      ::shutdown(acceptor_fd_, SHUT_RDWR);
      ::close(acceptor_fd_);
      acceptor_fd_ = -1;
    }
    if (acceptor_.joinable()) acceptor_.join();
    stop_links();
    work_.reset();
    io_.stop();
    thread_.join();
  }

  // LinkManager::stop() on the manager's thread; afterwards no handler may run.
  void stop_links() {
    if (!thread_.joinable()) return;
    run([this] {
      lm_->stop();
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    });
  }

  // A plain TCP listener (on `port`, 0: any) that reads the first bytes and hands the socket
  // over.
  void listen_plain(std::uint16_t port = 0) {
    acceptor_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(acceptor_fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    REQUIRE(::bind(acceptor_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(acceptor_fd_, 16) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(acceptor_fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this, fd = acceptor_fd_] {
      while (true) {
        const int s = ::accept(fd, nullptr, nullptr);
        if (s < 0) return;
        char buf[512];
        pollfd p{s, POLLIN, 0};
        ssize_t n = 0;
        if (::poll(&p, 1, 5000) == 1) n = ::recv(s, buf, sizeof buf, 0);
        if (n <= 0) {
          ::close(s);
          continue;
        }
        lm_->accept(s, std::string_view(buf, static_cast<std::size_t>(n)));
      }
    });
  }

  template <class F>
  auto run(F&& f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::forward<F>(f));
    auto fut = task.get_future();
    asio::post(io_, [&task] { task(); });
    REQUIRE(fut.wait_for(30s) == std::future_status::ready);
    return fut.get();
  }

  // Sends frames [from, to) to `peer` on the manager's thread; returns how many were queued.
  std::size_t send_range(const std::string& peer, std::uint64_t from, std::uint64_t to) {
    return run([&] {
      std::size_t ok = 0;
      for (std::uint64_t i = from; i < to; ++i) ok += lm_->send(peer, kind_of(i), make_body(i));
      return ok;
    });
  }

  void add_peer(const Node& other) {
    run([&] { lm_->add_peer(other.name_, "127.0.0.1", other.port_); });
  }
  void add_peer(const std::string& peer, std::uint16_t port) {
    run([&] { lm_->add_peer(peer, "127.0.0.1", port); });
  }
  bool connected(const std::string& peer) {
    return run([&] { return lm_->connected(peer); });
  }
  void set_blocked(const std::string& peer, bool b) {
    run([&] { lm_->set_blocked(peer, b); });
  }

  LinkStats stats_of(const std::string& peer) const {
    for (auto& s : lm_->stats()) {
      if (s.peer == peer) return s;
    }
    return LinkStats{};
  }
  std::uint64_t refused() const { return lm_->refused_streams(); }

  std::vector<std::uint64_t> received(const std::string& peer) {
    std::lock_guard<std::mutex> lock(mu_);
    return rx_[peer];
  }
  std::size_t received_count(const std::string& peer) {
    std::lock_guard<std::mutex> lock(mu_);
    return rx_[peer].size();
  }
  int bad() {
    std::lock_guard<std::mutex> lock(mu_);
    return bad_;
  }
  int after_stop() {
    std::lock_guard<std::mutex> lock(mu_);
    return after_stop_;
  }
  std::vector<std::pair<std::string, std::uint64_t>> ups() {
    std::lock_guard<std::mutex> lock(mu_);
    return ups_;
  }
  int downs(const std::string& peer) {
    std::lock_guard<std::mutex> lock(mu_);
    return downs_[peer];
  }
  bool up_with(const std::string& peer, std::uint64_t epoch) {
    for (auto& [p, e] : ups()) {
      if (p == peer && e == epoch) return true;
    }
    return false;
  }

  // Runs inside on_frame (on the manager's thread) with the number received from `peer`.
  using FrameHook = std::function<void(LinkManager&, const std::string& peer, std::size_t n)>;
  void set_frame_hook(FrameHook h) {
    run([&] { frame_hook_ = std::move(h); });
  }

  const std::string& name() const { return name_; }
  std::uint16_t port() const { return port_; }
  LinkManager& links() { return *lm_; }
  brokerha::Membership* membership() { return member_.get(); }

 private:
  std::string name_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::unique_ptr<LinkManager> lm_;
  std::unique_ptr<brokerha::Membership> member_;
  int acceptor_fd_ = -1;
  std::thread acceptor_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::uint64_t>> rx_;
  std::vector<std::pair<std::string, std::uint64_t>> ups_;
  std::map<std::string, int> downs_;
  int bad_ = 0;
  int after_stop_ = 0;
  bool stopped_ = false;
  FrameHook frame_hook_;  // manager's thread only
};

// node-a (lower name) dials node-b, which accepts through its Membership.
struct Pair {
  explicit Pair(const std::string& key, LinkOptions o = test_options())
      : Pair(key, key, std::move(o)) {}
  Pair(const std::string& key_a, const std::string& key_b, LinkOptions o = test_options()) {
    o.secret_key = key_b;
    b = std::make_unique<Node>("node-b", o, true);
    o.secret_key = key_a;
    a = std::make_unique<Node>("node-a", o);
    b->add_peer("node-a", 1);  // never dialled: node-a sorts lower and dials us
    a->add_peer(*b);
  }
  void wait_up() {
    REQUIRE(wait_until([&] { return a->connected("node-b") && b->connected("node-a"); }, 10s));
  }
  std::unique_ptr<Node> b;  // destroyed last
  std::unique_ptr<Node> a;
};

void both_ways(Pair& p, std::uint64_t n, const char* label) {
  p.wait_up();
  const auto start = std::chrono::steady_clock::now();
  std::size_t sent_b = 0;
  std::thread t([&] { sent_b = p.b->send_range("node-a", 0, n); });
  CHECK(p.a->send_range("node-b", 0, n) == n);
  t.join();
  CHECK(sent_b == n);
  REQUIRE(wait_until(
      [&] { return p.b->received_count("node-a") >= n && p.a->received_count("node-b") >= n; },
      60s));
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(p.b->received("node-a") == range(0, n));
  CHECK(p.a->received("node-b") == range(0, n));
  CHECK(p.a->bad() == 0);
  CHECK(p.b->bad() == 0);
  // Everything is acknowledged in the end.
  CHECK(wait_until([&] { return p.a->stats_of("node-b").queue_frames == 0; }, 10s));
  CHECK(wait_until([&] { return p.b->stats_of("node-a").queue_frames == 0; }, 10s));
  const LinkStats sa = p.a->stats_of("node-b");
  CHECK(sa.frames_received == n);
  CHECK(sa.frames_acked == n);
  CHECK(sa.duplicates == 0);
  CHECK(sa.dropped == 0);
  CHECK(sa.connected);
  MESSAGE(std::string(label) << ": " << n << " frames each way in " << secs << " s ("
                             << static_cast<double>(2 * n) / secs << " frames/s, "
                             << static_cast<double>(sa.bytes_sent + sa.bytes_received) / secs / 1e6
                             << " MB/s on the wire)");
}

// ---- raw sockets speaking the link protocol --------------------------------------------------

std::string u64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int k = 7; k >= 0; --k, v >>= 8)
    s[static_cast<std::size_t>(k)] = static_cast<char>(v & 0xFF);
  return s;
}
std::string frame(std::uint8_t kind, std::uint64_t seq, std::string_view body) {
  const auto len = static_cast<std::uint32_t>(9 + body.size());
  std::string f;
  f.push_back(static_cast<char>(len >> 24));
  f.push_back(static_cast<char>(len >> 16));
  f.push_back(static_cast<char>(len >> 8));
  f.push_back(static_cast<char>(len));
  f.push_back(static_cast<char>(kind));
  f += u64(seq);
  f.append(body);
  return f;
}
std::string hello(const std::string& name, std::uint64_t epoch, std::uint64_t ack_epoch = 0,
                  std::uint64_t ack_seq = 0) {
  std::string b;
  b.push_back('\0');  // subtype: hello
  b.push_back(static_cast<char>(brokerha::cluster::kLinkProtocolVersion));
  b += u64(epoch) + u64(ack_epoch) + u64(ack_seq);
  b.push_back(static_cast<char>(name.size() >> 8));
  b.push_back(static_cast<char>(name.size() & 0xFF));
  b += name;
  return frame(0, 0, b);
}

class Raw {
 public:
  explicit Raw(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~Raw() {
    if (fd_ >= 0) ::close(fd_);
  }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  void send(const std::string& bytes) {
    REQUIRE(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
  }
  // Reads one whole frame (kind, seq, body) within 10 s.
  bool read_frame(std::uint8_t& kind, std::uint64_t& seq, std::string& body) {
    std::string head;
    if (!read_exact(13, head)) return false;
    std::uint32_t len = 0;
    for (int k = 0; k < 4; ++k)
      len = (len << 8) | static_cast<std::uint8_t>(head[static_cast<std::size_t>(k)]);
    kind = static_cast<std::uint8_t>(head[4]);
    seq = 0;
    for (int k = 5; k < 13; ++k)
      seq = (seq << 8) | static_cast<std::uint8_t>(head[static_cast<std::size_t>(k)]);
    return read_exact(len - 9, body);
  }
  // True when the other side closes the stream within 10 s (whatever it sends before).
  bool closed_by_peer() {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) != 1) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
    }
    return false;
  }
  void close() {
    ::close(fd_);
    fd_ = -1;
  }

 private:
  bool read_exact(std::size_t n, std::string& out) {
    out.clear();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    char buf[4096];
    while (out.size() < n) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) != 1) continue;
      const ssize_t r = ::recv(fd_, buf, std::min(sizeof buf, n - out.size()), 0);
      if (r <= 0) return false;
      out.append(buf, static_cast<std::size_t>(r));
    }
    return true;
  }
  int fd_ = -1;
};

// A raw peer named `name` (sorting lower than node-b) completes the plaintext handshake.
void raw_handshake(Raw& r, const std::string& name, std::uint64_t epoch) {
  r.send(std::string(1, static_cast<char>(kPlainMagic)) + hello(name, epoch));
  std::uint8_t kind = 9;
  std::uint64_t seq = 9;
  std::string body;
  REQUIRE(r.read_frame(kind, seq, body));  // node-b's hello
  CHECK(kind == 0);
  CHECK(seq == 0);
  REQUIRE(body.size() > 2);
  CHECK(body[0] == '\0');
  CHECK(body.substr(body.size() - 6) == "node-b");
}

}  // namespace

// ---- delivery ---------------------------------------------------------------------------------

TEST_CASE("link: plaintext 10000 frames each way once and in order") {
  Pair p("");
  both_ways(p, 10000, "plaintext");
  // The link came through membership (whose counters snapshot lags a tick).
  CHECK(wait_until([&] { return p.b->membership()->stats().streams_routed >= 1; }, 10s));
}

TEST_CASE("link: TLS with a 16-byte key 10000 frames each way once and in order") {
  Pair p(kKey16);
  both_ways(p, 10000, "TLS 16-byte key");
}

TEST_CASE("link: TLS with a 32-byte key 10000 frames each way once and in order") {
  Pair p(kKey32);
  both_ways(p, 10000, "TLS 32-byte key");
}

TEST_CASE("link: a plain TCP acceptor can hand streams over too") {
  for (const std::string& key : {std::string(), kKey16}) {
    CAPTURE(key.size());
    Node b("node-b", test_options(key));
    b.listen_plain();
    Node a("node-a", test_options(key));
    b.add_peer("node-a", 1);
    a.add_peer(b);
    CHECK(a.send_range("node-b", 0, 1000) == 1000);
    REQUIRE(wait_until([&] { return b.received_count("node-a") >= 1000; }, 20s));
    CHECK(b.received("node-a") == range(0, 1000));
    a.shutdown();
    b.shutdown();
  }
}

TEST_CASE("link: a partition mid-stream then reconnect keeps once and in order") {
  for (const std::string& key : {std::string(), kKey16}) {
    CAPTURE(key.size());
    LinkOptions o = test_options();
    o.ping_interval = 50ms;  // dead after 250 ms of silence
    Pair p(key, o);
    p.wait_up();
    std::size_t sent_b = 0;
    std::thread t([&] { sent_b = p.b->send_range("node-a", 0, 3000); });
    CHECK(p.a->send_range("node-b", 0, 3000) == 3000);
    t.join();
    CHECK(sent_b == 3000);
    REQUIRE(wait_until([&] { return p.b->received_count("node-a") >= 100; }, 20s));
    // The partition: node-a neither reads nor writes; both sides find the link dead by ping
    // silence, node-a does not re-dial and node-b would refuse node-a meanwhile.
    p.a->set_blocked("node-b", true);
    std::thread t2([&] { sent_b = p.b->send_range("node-a", 3000, 6000); });
    CHECK(p.a->send_range("node-b", 3000, 6000) == 3000);
    t2.join();
    CHECK(sent_b == 3000);
    REQUIRE(
        wait_until([&] { return !p.a->connected("node-b") && !p.b->connected("node-a"); }, 20s));
    CHECK(p.a->downs("node-b") >= 1);
    CHECK(p.b->downs("node-a") >= 1);
    p.a->set_blocked("node-b", false);
    REQUIRE(wait_until(
        [&] {
          return p.b->received_count("node-a") >= 6000 && p.a->received_count("node-b") >= 6000;
        },
        60s));
    CHECK(p.b->received("node-a") == range(0, 6000));
    CHECK(p.a->received("node-b") == range(0, 6000));
    const LinkStats sa = p.a->stats_of("node-b");
    const LinkStats sb = p.b->stats_of("node-a");
    CHECK(sa.failures >= 1);
    CHECK(sb.failures >= 1);
    CHECK(sa.frames_received == 6000);
    CHECK(sb.frames_received == 6000);
    // The hellos carry what was received, so nothing delivered is re-sent here.
    CHECK(sa.duplicates == 0);
    CHECK(sb.duplicates == 0);
    CHECK(sa.frames_sent >= 6000);
    CHECK(p.a->ups().size() >= 2);
    CHECK(wait_until([&] { return p.a->stats_of("node-b").queue_frames == 0; }, 10s));
  }
}

TEST_CASE("link: redial skips the backoff when the peer is known to be back") {
  // A dialler whose dials failed waits out a growing backoff; membership seeing the peer
  // rejoin (a restart, a healed partition) makes it dial at once. Dials at about 0, 0.4, 1.2
  // and 2.8 s (+-25 %) fail; the next one would come at 4.5 s or later.
  LinkOptions o = test_options();
  o.reconnect_min = 400ms;
  o.reconnect_max = 20s;
  std::uint16_t port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    socklen_t len = sizeof sa;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
    port = ntohs(sa.sin_port);
    ::close(fd);  // nothing listens there now: dials are refused
  }
  const auto start = std::chrono::steady_clock::now();
  Node a("node-a", o);
  a.add_peer("node-b", port);
  std::this_thread::sleep_until(start + 3600ms);
  CHECK(a.stats_of("node-b").failures >= 3);
  Node b("node-b", o);
  b.listen_plain(port);
  b.add_peer("node-a", 1);
  CHECK_FALSE(a.connected("node-b"));
  a.run([&] { a.links().redial("node-b"); });
  CHECK(wait_until([&] { return a.connected("node-b") && b.connected("node-a"); }, 700ms));
}

TEST_CASE("link: re-sent frames are delivered once and counted as duplicates") {
  Node b("node-b", test_options(), true);
  b.add_peer("a-raw", 1);
  {
    Raw r(b.port());
    raw_handshake(r, "a-raw", 77);
    r.send(frame(kind_of(0), 1, *make_body(0)) + frame(kind_of(1), 2, *make_body(1)) +
           frame(kind_of(2), 3, *make_body(2)));
    REQUIRE(wait_until([&] { return b.received_count("a-raw") == 3; }, 10s));
  }
  REQUIRE(wait_until([&] { return !b.connected("a-raw"); }, 10s));
  {
    // A sender that ignores the acknowledgement in node-b's hello re-sends 2 and 3.
    Raw r(b.port());
    raw_handshake(r, "a-raw", 77);
    r.send(frame(kind_of(1), 2, *make_body(1)) + frame(kind_of(2), 3, *make_body(2)) +
           frame(kind_of(3), 4, *make_body(3)));
    REQUIRE(wait_until([&] { return b.received_count("a-raw") == 4; }, 10s));
    CHECK(wait_until([&] { return b.stats_of("a-raw").duplicates == 2; }, 10s));
  }
  CHECK(b.received("a-raw") == range(0, 4));
  CHECK(b.stats_of("a-raw").frames_received == 4);
  CHECK(b.bad() == 0);
}

TEST_CASE("link: a peer restarted with a new epoch") {
  LinkOptions o = test_options();
  o.boot_epoch = 1000;
  auto b = std::make_unique<Node>("node-b", o, true);
  o.boot_epoch = 5000;
  Node a("node-a", o);
  b->add_peer("node-a", 1);
  a.add_peer(*b);
  REQUIRE(wait_until([&] { return a.up_with("node-b", 1000) && b->up_with("node-a", 5000); }, 10s));
  CHECK(a.send_range("node-b", 0, 100) == 100);
  CHECK(b->send_range("node-a", 0, 100) == 100);
  REQUIRE(wait_until(
      [&] { return b->received_count("node-a") == 100 && a.received_count("node-b") == 100; },
      10s));
  CHECK(wait_until([&] { return a.stats_of("node-b").queue_frames == 0; }, 10s));

  b->shutdown();
  b.reset();
  REQUIRE(wait_until([&] { return !a.connected("node-b"); }, 10s));
  CHECK(a.downs("node-b") == 1);
  // Queued for the old incarnation: dropped when the new one answers.
  CHECK(a.send_range("node-b", 100, 110) == 10);

  o.boot_epoch = 2000;
  b = std::make_unique<Node>("node-b", o, true);  // same name, new port, new epoch
  b->add_peer("node-a", 1);
  a.add_peer(*b);  // a known peer at a new address: re-dialled there
  REQUIRE(wait_until([&] { return a.up_with("node-b", 2000) && b->up_with("node-a", 5000); }, 10s));
  CHECK(a.stats_of("node-b").peer_epoch == 2000);
  CHECK(a.send_range("node-b", 1000, 1100) == 100);
  CHECK(b->send_range("node-a", 1000, 1100) == 100);
  REQUIRE(wait_until(
      [&] { return b->received_count("node-a") == 100 && a.received_count("node-b") == 200; },
      10s));
  CHECK(b->received("node-a") == range(1000, 1100));
  auto expect = range(0, 100);
  for (std::uint64_t i = 1000; i < 1100; ++i) expect.push_back(i);
  CHECK(a.received("node-b") == expect);
  CHECK(a.stats_of("node-b").duplicates == 0);
  b->shutdown();
  a.shutdown();
}

TEST_CASE("link: a peer removed and added again goes on where it stopped") {
  Pair p("");
  p.wait_up();
  CHECK(p.a->send_range("node-b", 0, 100) == 100);
  REQUIRE(wait_until([&] { return p.b->received_count("node-a") == 100; }, 10s));
  p.a->run([&] { p.a->links().remove_peer("node-b"); });
  CHECK(p.a->stats_of("node-b").peer.empty());  // no row any more
  CHECK_FALSE(p.a->run([&] { return p.a->links().send("node-b", 1, make_body(1)); }));
  REQUIRE(wait_until([&] { return !p.b->connected("node-a"); }, 10s));
  p.a->add_peer(*p.b);
  CHECK(p.a->send_range("node-b", 100, 200) == 100);
  CHECK(p.b->send_range("node-a", 0, 100) == 100);
  REQUIRE(wait_until(
      [&] { return p.b->received_count("node-a") == 200 && p.a->received_count("node-b") == 100; },
      10s));
  CHECK(p.b->received("node-a") == range(0, 200));
  CHECK(p.a->received("node-b") == range(0, 100));
  CHECK(p.b->stats_of("node-a").duplicates == 0);
}

// ---- bounds and faults -----------------------------------------------------------------------

TEST_CASE("link: the queue bound refuses frames and counts them as dropped") {
  LinkOptions o = test_options();
  o.max_queue_bytes = 100000;
  Node b("node-b", test_options(), true);
  Node a("node-a", o);
  b.add_peer("node-a", 1);
  a.set_blocked("node-b", true);  // before add_peer: no link, everything stays queued
  a.add_peer(b);
  const auto body = std::make_shared<const std::string>(987, 'x');  // 1000 bytes queued each
  const std::size_t ok = a.run([&] {
    std::size_t n = 0;
    for (int i = 0; i < 200; ++i) n += a.links().send("node-b", 1, body);
    return n;
  });
  CHECK(ok == 100);
  CHECK(a.run([&] { return a.links().queued_bytes("node-b"); }) == 100000);
  CHECK(a.stats_of("node-b").dropped == 100);
  CHECK(a.stats_of("node-b").queue_frames == 100);
  CHECK_FALSE(a.run([&] { return a.links().send("nobody", 1, body); }));
  CHECK_FALSE(a.connected("node-b"));
  // Lifting the block delivers what was queued.
  a.run([&] { a.links().set_blocked("node-b", false); });
  CHECK(wait_until([&] { return b.stats_of("node-a").frames_received == 100; }, 10s));
  CHECK(wait_until([&] { return a.run([&] { return a.links().queued_bytes("node-b"); }) == 0; },
                   10s));
}

TEST_CASE("link: a wrong key or the wrong mode makes no link and delivers nothing") {
  struct Case {
    const char* what;
    std::string key_a, key_b;
  };
  for (const Case& c :
       {Case{"wrong key", kKey16, "fedcba9876543210"}, Case{"32 vs 16 byte key", kKey32, kKey16},
        Case{"plaintext to TLS", "", kKey16}, Case{"TLS to plaintext", kKey32, ""}}) {
    CAPTURE(c.what);
    Pair p(c.key_a, c.key_b);
    CHECK(p.a->send_range("node-b", 0, 10) == 10);
    CHECK(p.b->send_range("node-a", 0, 10) == 10);
    REQUIRE(wait_until([&] { return p.a->stats_of("node-b").failures >= 3 && p.b->refused() >= 3; },
                       20s));
    CHECK_FALSE(p.a->connected("node-b"));
    CHECK_FALSE(p.b->connected("node-a"));
    CHECK(p.a->ups().empty());
    CHECK(p.b->ups().empty());
    CHECK(p.a->received_count("node-b") == 0);
    CHECK(p.b->received_count("node-a") == 0);
    CHECK(p.b->stats_of("node-a").frames_received == 0);
    CHECK(p.a->bad() == 0);
    CHECK(p.b->bad() == 0);
  }
}

TEST_CASE("link: garbage after the magic byte closes only that stream") {
  Pair p("");
  p.wait_up();
  const auto before = p.b->refused();
  for (const std::string& garbage :
       {std::string("\xff\xff\xff\xff garbage"), std::string("\x00\x00\x00\x02xy", 6),
        frame(1, 1, "data before the hello"), frame(0, 0, std::string("\x07", 1)),
        frame(0, 0, std::string("\x00\x09", 2))}) {
    Raw r(p.b->port());
    r.send(std::string(1, static_cast<char>(kPlainMagic)) + garbage);
    CHECK(r.closed_by_peer());
  }
  CHECK(wait_until([&] { return p.b->refused() >= before + 5; }, 10s));
  {
    // Unknown peer, and a peer that should wait to be dialled (it sorts higher).
    Raw r1(p.b->port());
    r1.send(std::string(1, static_cast<char>(kPlainMagic)) + hello("a-stranger", 1));
    CHECK(r1.closed_by_peer());
    p.b->add_peer("z-higher", 1);
    Raw r2(p.b->port());
    r2.send(std::string(1, static_cast<char>(kPlainMagic)) + hello("z-higher", 1));
    CHECK(r2.closed_by_peer());
  }
  CHECK(p.a->connected("node-b"));
  CHECK(p.a->stats_of("node-b").failures == 0);
  CHECK(p.a->send_range("node-b", 0, 100) == 100);
  CHECK(wait_until([&] { return p.b->received_count("node-a") == 100; }, 10s));
  CHECK(p.b->received("node-a") == range(0, 100));
}

TEST_CASE("link: an oversized frame or an unknown control subtype closes only that link") {
  LinkOptions o = test_options();
  o.max_frame_bytes = 100 * 1024;  // above every make_body()
  Pair p("", o);
  p.b->add_peer("a-raw", 1);
  p.wait_up();
  {
    Raw r(p.b->port());
    raw_handshake(r, "a-raw", 1);
    REQUIRE(wait_until([&] { return p.b->connected("a-raw"); }, 10s));
    std::string head = frame(1, 1, "");
    const std::uint32_t len = 100 * 1024 + 1;
    head[0] = static_cast<char>(len >> 24);
    head[1] = static_cast<char>(len >> 16);
    head[2] = static_cast<char>(len >> 8);
    head[3] = static_cast<char>(len);
    r.send(head);
    CHECK(r.closed_by_peer());
  }
  CHECK(wait_until([&] { return p.b->stats_of("a-raw").failures == 1; }, 10s));
  {
    Raw r(p.b->port());
    raw_handshake(r, "a-raw", 1);
    r.send(frame(1, 1, *make_body(0)) + frame(0, 0, std::string("\x09", 1)) +
           frame(1, 2, *make_body(1)));
    CHECK(r.closed_by_peer());
  }
  CHECK(wait_until([&] { return p.b->stats_of("a-raw").failures == 2; }, 10s));
  CHECK(p.b->received("a-raw") == range(0, 1));  // nothing after the bad frame
  CHECK(p.a->connected("node-b"));
  CHECK(p.b->connected("node-a"));
  CHECK(p.a->send_range("node-b", 0, 100) == 100);
  CHECK(wait_until([&] { return p.b->received_count("node-a") == 100; }, 10s));
  CHECK(p.b->received("node-a") == range(0, 100));
}

TEST_CASE("link: pings fill the round-trip histogram") {
  LinkOptions o = test_options();
  o.ping_interval = 20ms;
  Pair p(kKey16, o);
  p.wait_up();
  REQUIRE(wait_until(
      [&] {
        return p.a->stats_of("node-b").rtt_count >= 5 && p.b->stats_of("node-a").rtt_count >= 5;
      },
      10s));
  const LinkStats s = p.a->stats_of("node-b");
  CHECK(s.rtt_sum > 0);
  CHECK(s.rtt_buckets.back() <= s.rtt_count);
  for (std::size_t i = 1; i < s.rtt_buckets.size(); ++i) {
    CHECK(s.rtt_buckets[i] >= s.rtt_buckets[i - 1]);  // cumulative
  }
  CHECK(s.rtt_buckets.back() >= 1);  // loopback answers within a second
  CHECK(p.a->stats_of("node-b").failures == 0);
}

TEST_CASE("link: stop with frames in flight") {
  for (const std::string& key : {std::string(), kKey32}) {
    CAPTURE(key.size());
    Pair p(key);
    p.wait_up();
    // node-a stops right after queueing 20 MB; node-b stops while receiving from node-a's
    // successor traffic. No handler runs after stop() returns, nobody crashes.
    std::thread t([&] { p.b->send_range("node-a", 0, 3000); });
    p.a->run([&] {
      for (std::uint64_t i = 0; i < 300; ++i) {
        p.a->links().send("node-b", 1, std::make_shared<const std::string>(65536, 'y'));
      }
    });
    p.a->stop_links();
    t.join();
    CHECK_FALSE(p.a->run([&] {  // idempotent, and everything after it is refused
      p.a->links().stop();
      return p.a->links().send("node-b", 1, make_body(1));
    }));
    CHECK(wait_until([&] { return !p.b->connected("node-a"); }, 10s));
    p.b->stop_links();
    CHECK(p.a->after_stop() == 0);
    CHECK(p.b->after_stop() == 0);
  }
}

TEST_CASE("link: a handler may remove the peer or stop the manager") {
  for (const std::string& key : {std::string(), kKey16}) {
    CAPTURE(key.size());
    {
      Pair p(key);
      p.wait_up();
      p.b->set_frame_hook([](LinkManager& lm, const std::string& peer, std::size_t n) {
        if (n == 50) lm.remove_peer(peer);
      });
      CHECK(p.a->send_range("node-b", 0, 200) == 200);
      REQUIRE(wait_until([&] { return !p.a->connected("node-b"); }, 10s));
      CHECK(p.b->received("node-a") == range(0, 50));  // nothing after the removal
      CHECK(p.b->stats_of("node-a").peer.empty());
      // node-a keeps its queue and re-dials; node-b refuses it (unknown peer now).
      CHECK(wait_until([&] { return p.b->refused() >= 1; }, 10s));
      CHECK(p.b->received_count("node-a") == 50);
    }
    {
      Pair p(key);
      p.wait_up();
      p.b->set_frame_hook([](LinkManager& lm, const std::string&, std::size_t n) {
        if (n == 50) lm.stop();
      });
      CHECK(p.a->send_range("node-b", 0, 200) == 200);
      REQUIRE(wait_until([&] { return !p.a->connected("node-b"); }, 10s));
      CHECK(p.b->received("node-a") == range(0, 50));
      CHECK(p.b->bad() == 0);
    }
  }
}
