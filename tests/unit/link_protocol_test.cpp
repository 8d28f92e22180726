// SPDX-License-Identifier: Apache-2.0
// cluster::LinkSession and InboundHello without sockets or clocks: two sessions back to back,
// node-a dialling and node-b accepting, through a test pipe that carries each direction's
// bytes and can cut the connection (losing what is in flight), hold bytes back, deliver them
// in pieces of any size, and drop, duplicate or reorder whole frames. Time is a value the
// test advances. Wire bytes are checked against docs/cluster-protocol.md. Everything runs on
// the test's thread.

#include "cluster/link_protocol.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using namespace std::chrono_literals;
using brokerha::cluster::InboundHello;
using brokerha::cluster::kLinkMaxHello;
using brokerha::cluster::LinkFault;
using brokerha::cluster::LinkFrame;
using brokerha::cluster::LinkHello;
using brokerha::cluster::LinkParse;
using brokerha::cluster::LinkSession;
using brokerha::cluster::LinkSessionOptions;
using brokerha::cluster::LinkStats;
using TimePoint = LinkSession::TimePoint;

namespace {

constexpr LinkSession::RoundLimits kPlain{4u << 20, 4096, 512};
constexpr LinkSession::RoundLimits kCopyAll{256u << 10, 4096, ~std::size_t{0}};
constexpr std::uint64_t kEpochA = 5000;
constexpr std::uint64_t kEpochB = 1000;

LinkSessionOptions options(const std::string& name, std::uint64_t epoch) {
  LinkSessionOptions o;
  o.node_name = name;
  o.boot_epoch = epoch;
  o.ping_interval = 100ms;
  o.ack_delay = 5ms;
  return o;
}

// ---- frame bodies: an 8-byte index, then filler of a size fixed by the index ----------------

std::size_t filler_size(std::uint64_t i) { return i % 7 == 0 ? 600 + i % 100 : i % 50; }
std::uint8_t kind_of(std::uint64_t i) { return static_cast<std::uint8_t>(1 + i % 255); }

std::shared_ptr<const std::string> body_of(std::uint64_t i) {
  std::string b(8, '\0');
  for (std::size_t k = 0; k < 8; ++k) b[k] = static_cast<char>(i >> (8 * (7 - k)));
  b.append(filler_size(i), static_cast<char>('a' + i % 26));
  return std::make_shared<const std::string>(std::move(b));
}

std::uint64_t index_of(std::string_view b) {
  std::uint64_t i = 0;
  for (std::size_t k = 0; k < 8 && k < b.size(); ++k)
    i = (i << 8) | static_cast<std::uint8_t>(b[k]);
  return i;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (std::uint64_t i = from; i < to; ++i) v.push_back(i);
  return v;
}

// The frames of a stream (after the magic byte when `magic`), each as its wire bytes.
std::vector<std::string> frames_of(std::string_view stream, bool magic = false) {
  if (magic && !stream.empty()) stream.remove_prefix(1);
  std::vector<std::string> out;
  LinkFrame f;
  std::size_t size = 0;
  while (parse_link_frame(stream, ~std::size_t{0} >> 8, f, size) == LinkParse::frame) {
    out.emplace_back(stream.substr(0, size));
    stream.remove_prefix(size);
  }
  REQUIRE(stream.empty());
  return out;
}

LinkFrame decode(const std::string& frame) {
  LinkFrame f;
  std::size_t size = 0;
  REQUIRE(parse_link_frame(frame, ~std::size_t{0} >> 8, f, size) == LinkParse::frame);
  return f;
}

// Control frames (kind 0) of `subtype` in a stream, as their sequence fields.
std::vector<std::uint64_t> controls(std::string_view stream, std::uint8_t subtype) {
  std::vector<std::uint64_t> out;
  for (const std::string& fr : frames_of(stream)) {
    const LinkFrame f = decode(fr);
    if (f.kind == 0 && f.body.size() == 1 && static_cast<std::uint8_t>(f.body[0]) == subtype) {
      out.push_back(f.seq);
    }
  }
  return out;
}

// Data frames (kinds 1..255) in a stream, as their sequence numbers.
std::vector<std::uint64_t> data_seqs(std::string_view stream) {
  std::vector<std::uint64_t> out;
  for (const std::string& fr : frames_of(stream)) {
    const LinkFrame f = decode(fr);
    if (f.kind != 0) out.push_back(f.seq);
  }
  return out;
}

std::string frame(std::uint8_t kind, std::uint64_t seq, std::string_view body) {
  std::string f(brokerha::cluster::kLinkFrameHeader, '\0');
  brokerha::cluster::put_link_header(f.data(), body.size(), kind, seq);
  f.append(body);
  return f;
}

std::string hello_frame(const LinkHello& h) {
  std::string out;
  append_link_hello(out, h);
  return out;
}

// ---- one side: a session and what it delivered ------------------------------------------------

struct Side final : LinkSession::Events {
  Side(const std::string& name, std::uint64_t epoch, const std::string& peer_name)
      : session(options(name, epoch), peer_name) {}
  Side(const LinkSessionOptions& o, const std::string& peer_name) : session(o, peer_name) {}

  void link_up(std::uint64_t epoch) override { ups.push_back(epoch); }
  void link_frame(std::uint8_t kind, std::string_view body) override {
    if (bodies_of_index) {
      CHECK(kind == kind_of(index_of(body)));
      CHECK(body == *body_of(index_of(body)));
    }
    got.push_back(index_of(body));
    if (hook) hook();
  }

  // Sends frames [from, to); the number queued.
  std::size_t send(std::uint64_t from, std::uint64_t to) {
    std::size_t n = 0;
    for (std::uint64_t i = from; i < to; ++i) n += session.send(kind_of(i), body_of(i)) ? 1 : 0;
    return n;
  }
  LinkStats stats() const {
    LinkStats s;
    session.fill(s);
    return s;
  }

  LinkSession session;
  std::vector<std::uint64_t> ups;
  std::vector<std::uint64_t> got;  // indices of the bodies delivered
  std::function<void()> hook;      // runs after each delivery
  bool bodies_of_index = true;     // the frames received are body_of() bodies
};

// One connection at a time between a dialler `a` and an acceptor `b`.
class Pipe {
 public:
  Pipe(Side& a, Side& b) : a_(&a), b_(&b) {}

  TimePoint now = TimePoint{} + 1h;
  std::string a2b, b2a;  // bytes in flight
  std::string a_wrote;   // everything a wrote on this connection
  LinkFault a_fault = LinkFault::none;
  LinkFault b_fault = LinkFault::none;
  LinkSession::RoundLimits limits = kPlain;

  // A restarted node in place of one side.
  void replace(Side& a, Side& b) {
    a_ = &a;
    b_ = &b;
  }

  // a dials: its magic byte and hello are queued.
  void connect() {
    a2b.clear();
    b2a.clear();
    a_wrote.clear();
    inbound_ = InboundHello();
    accepted_ = false;
    a_fault = b_fault = LinkFault::none;
    a_->session.dial(now);
  }
  // The connection is lost: what was in flight is gone.
  void cut() {
    a2b.clear();
    b2a.clear();
    a_->session.lost();
    b_->session.lost();
  }
  // What each session has to write goes into the pipe (each round written at once).
  void flush() {
    const std::size_t before = a2b.size();
    write(*a_, a2b);
    a_wrote.append(a2b, before, std::string::npos);
    write(*b_, b2a);
  }
  // Delivers the first `n` bytes in flight from a to b, `piece` bytes per receive(). False
  // when b's session ended the connection.
  bool to_b(std::size_t n = std::string::npos, std::size_t piece = std::string::npos) {
    return deliver(a2b, n, piece, [this](std::string_view s) { return feed_b(s); });
  }
  bool to_a(std::size_t n = std::string::npos, std::size_t piece = std::string::npos) {
    return deliver(b2a, n, piece, [this](std::string_view s) {
      if (a_->session.receive(s, now, *a_)) return true;
      a_fault = a_->session.fault();
      return false;
    });
  }
  // Both ways until nothing moves; false when a session ended the connection.
  bool settle(std::size_t piece = std::string::npos) {
    for (int rounds = 0; rounds < 10000; ++rounds) {
      flush();
      if (a2b.empty() && b2a.empty()) return true;
      if (!to_b(std::string::npos, piece) || !to_a(std::string::npos, piece)) return false;
    }
    FAIL("the pipe never settled");
    return false;
  }
  // Time passes; false when a session finds its link silent.
  bool advance(std::chrono::milliseconds d) {
    now += d;
    const bool a_ok = a_->session.advance(now);
    const bool b_ok = b_->session.advance(now);
    if (!a_ok) a_fault = a_->session.fault();
    if (!b_ok) b_fault = b_->session.fault();
    return a_ok && b_ok;
  }
  // Connects and settles: both up.
  void establish() {
    connect();
    REQUIRE(settle());
    REQUIRE(a_->session.up());
    REQUIRE(b_->session.up());
  }
  // Connected, sent, everything delivered and acknowledged both ways.
  void quiesce() {
    REQUIRE(settle());
    REQUIRE(advance(5ms));
    REQUIRE(settle());
  }

 private:
  void write(Side& s, std::string& out) {
    while (const LinkSession::Round* r = s.session.take_round(limits)) {
      std::size_t bytes = 0;
      for (const std::string_view p : r->pieces) {
        out.append(p);
        bytes += p.size();
      }
      CHECK(bytes == r->bytes);
      s.session.round_written();
    }
  }
  template <class Feed>
  bool deliver(std::string& from, std::size_t n, std::size_t piece, Feed&& feed) {
    const std::string bytes = from.substr(0, n);
    from.erase(0, bytes.size());
    if (piece == 0) piece = 1;
    for (std::size_t at = 0; at < bytes.size(); at += piece) {
      if (!feed(std::string_view(bytes).substr(at, piece))) return false;
    }
    return true;
  }
  bool feed_b(std::string_view s) {
    if (!accepted_) {
      switch (inbound_.feed(s)) {
        case InboundHello::Status::more:
          return true;
        case InboundHello::Status::refused:
          b_fault = inbound_.fault();
          return false;
        case InboundHello::Status::hello:
          break;
      }
      accepted_ = true;
      CHECK(inbound_.hello().name == b_->session.peer());  // the driver finds the session so
      if (!b_->session.accept(inbound_.hello(), now, *b_) ||
          !b_->session.receive(inbound_.rest(), now, *b_)) {
        b_fault = b_->session.fault();
        return false;
      }
      return true;
    }
    if (b_->session.receive(s, now, *b_)) return true;
    b_fault = b_->session.fault();
    return false;
  }

  Side* a_;
  Side* b_;
  InboundHello inbound_;
  bool accepted_ = false;
};

// node-a (kEpochA) dialling node-b (kEpochB) through a pipe, not connected yet.
struct Pair {
  Side a{"node-a", kEpochA, "node-b"};
  Side b{"node-b", kEpochB, "node-a"};
  Pipe p{a, b};
};

// The same, connected: both sessions up.
struct Linked : Pair {
  Linked() { p.establish(); }
};

}  // namespace

// ---- the handshake ------------------------------------------------------------------------------

TEST_CASE("link session: the hello exchange is the documented bytes") {
  Side a("node-a", 0x1122334455667788, "node-b");
  Side b("node-b", 0x0102030405060708, "node-a");
  Pipe p(a, b);
  p.connect();
  p.flush();
  // Magic, then u32 length 43 | kind 0 | seq 0 | subtype 0, version 1, epoch, ack_epoch 0,
  // ack_seq 0, u16 name length 6, "node-a".
  const std::string a_hello = std::string("\xB7\x00\x00\x00\x2B\x00", 6) + std::string(8, '\0') +
                              std::string("\x00\x01\x11\x22\x33\x44\x55\x66\x77\x88", 10) +
                              std::string(16, '\0') + std::string("\x00\x06node-a", 8);
  CHECK(p.a2b == a_hello);
  CHECK(p.b2a.empty());  // the acceptor speaks only after the dialler's hello
  CHECK_FALSE(a.session.up());
  REQUIRE(p.to_b());
  CHECK(b.session.up());
  CHECK(b.ups == std::vector<std::uint64_t>{0x1122334455667788});
  p.flush();
  // node-b's hello names node-a's epoch with nothing delivered from it yet, then its ping 1:
  // u32 length 10 | kind 0 | seq 1 | subtype 2.
  const std::string b_answer = std::string("\x00\x00\x00\x2B\x00", 5) + std::string(8, '\0') +
                               std::string("\x00\x01\x01\x02\x03\x04\x05\x06\x07\x08", 10) +
                               std::string("\x11\x22\x33\x44\x55\x66\x77\x88", 8) +
                               std::string(8, '\0') + std::string("\x00\x06node-b", 8) +
                               std::string("\x00\x00\x00\x0A\x00", 5) + std::string(7, '\0') +
                               std::string("\x01\x02", 2);
  CHECK(p.b2a == b_answer);
  REQUIRE(p.to_a());
  CHECK(a.session.up());
  CHECK(a.ups == std::vector<std::uint64_t>{0x0102030405060708});
  p.flush();
  // node-a answers the ping (pong 1: subtype 3) and sends its own ping 1.
  CHECK(controls(p.a2b, 3) == std::vector<std::uint64_t>{1});
  CHECK(controls(p.a2b, 2) == std::vector<std::uint64_t>{1});
  CHECK(a.session.next_deadline() == p.now + 100ms);
}

TEST_CASE_FIXTURE(Linked,
                  "link session: data, ack, ping and pong frames are the documented bytes") {
  p.a_wrote.clear();
  b.bodies_of_index = false;
  REQUIRE(a.session.send(7, std::make_shared<const std::string>("xyz")));
  REQUIRE(p.settle());
  // u32 length 12 | kind 7 | seq 1 | "xyz"
  CHECK(p.a_wrote == std::string("\x00\x00\x00\x0C\x07", 5) + std::string(7, '\0') + "\x01xyz");
  REQUIRE(p.advance(5ms));
  p.flush();
  // The acknowledgement of sequence 1: u32 length 10 | kind 0 | seq 1 | subtype 1.
  CHECK(p.b2a == std::string("\x00\x00\x00\x0A\x00", 5) + std::string(7, '\0') + "\x01\x01");
  // Plaintext rounds (large bodies referenced) and TLS rounds (all copied) are the same bytes.
  for (const auto& limits : {kPlain, kCopyAll}) {
    Side a2("node-a", kEpochA, "node-b");
    Side b2("node-b", kEpochB, "node-a");
    Pipe q(a2, b2);
    q.limits = limits;
    q.establish();
    q.a_wrote.clear();
    CHECK(a2.send(0, 300) == 300);
    REQUIRE(q.settle());
    std::string expect;
    for (std::uint64_t i = 0; i < 300; ++i) expect += frame(kind_of(i), i + 1, *body_of(i));
    CHECK(q.a_wrote == expect);
    CHECK(b2.got == range(0, 300));
  }
}

TEST_CASE("link session: an accepted stream is read up to the hello in any pieces") {
  const std::string hello = hello_frame(LinkHello{9, 0, 0, "node-a"});
  const std::string after = frame(1, 1, "after");
  const std::string stream = "\xB7" + hello + after;
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    CAPTURE(cut);
    InboundHello in;
    const auto first = in.feed(std::string_view(stream).substr(0, cut));
    if (cut < 1 + hello.size()) {
      CHECK(first == InboundHello::Status::more);
      REQUIRE(in.feed(std::string_view(stream).substr(cut)) == InboundHello::Status::hello);
    } else {
      REQUIRE(first == InboundHello::Status::hello);
    }
    CHECK(in.hello().name == "node-a");
    CHECK(in.hello().epoch == 9);
    CHECK(in.rest() == std::string_view(after).substr(0, in.rest().size()));
  }
  InboundHello one;
  InboundHello::Status s = InboundHello::Status::more;
  for (char c : stream.substr(0, 1 + hello.size())) s = one.feed(std::string_view(&c, 1));
  CHECK(s == InboundHello::Status::hello);
  CHECK(one.rest().empty());
}

// ---- delivery -----------------------------------------------------------------------------------

TEST_CASE_FIXTURE(Linked,
                  "link session: frames are delivered once, in order, and acknowledged once") {
  CHECK(a.send(0, 200) == 200);
  CHECK(b.send(1000, 1100) == 100);
  REQUIRE(p.settle(7));  // in 7-byte pieces
  CHECK(b.got == range(0, 200));
  CHECK(a.got == range(1000, 1100));
  // Nothing is acknowledged before the ack delay.
  CHECK(a.stats().frames_acked == 0);
  CHECK(a.stats().queue_frames == 200);
  CHECK_FALSE(a.session.idle());
  CHECK(b.session.next_deadline() == p.now + 5ms);
  REQUIRE(p.advance(5ms));
  p.flush();
  CHECK(controls(p.b2a, 1) == std::vector<std::uint64_t>{200});  // one cumulative ack
  CHECK(controls(p.a2b, 1) == std::vector<std::uint64_t>{100});
  REQUIRE(p.settle());
  const LinkStats sa = a.stats();
  CHECK(sa.frames_acked == 200);
  CHECK(sa.frames_received == 100);
  CHECK(sa.queue_frames == 0);
  CHECK(sa.queue_bytes == 0);
  CHECK(sa.duplicates == 0);
  CHECK(a.session.idle());
  CHECK(b.stats().frames_acked == 100);
  // No second acknowledgement of the same frames.
  REQUIRE(p.advance(5ms));
  p.flush();
  CHECK(controls(p.b2a, 1).empty());
  CHECK(a.stats().frames_acked == 200);
}

TEST_CASE("link session: every two-piece cut of the stream delivers the same frames") {
  Side a("node-a", kEpochA, "node-b");
  Side b0("node-b", kEpochB, "node-a");
  Pipe p(a, b0);
  p.connect();
  CHECK(a.send(0, 12) == 12);  // queued before the link is up: written after the hello
  REQUIRE(p.settle());
  const std::string stream = p.a_wrote;  // magic, hello, pong and ping, 12 frames
  REQUIRE(b0.got == range(0, 12));
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    CAPTURE(cut);
    Side a2("node-a", kEpochA, "node-b");
    Side b("node-b", kEpochB, "node-a");
    Pipe q(a2, b);
    q.connect();
    q.a2b = stream;
    REQUIRE(q.to_b(cut));
    REQUIRE(q.to_b());
    CHECK(b.got == range(0, 12));
    CHECK(b.stats().duplicates == 0);
  }
}

TEST_CASE_FIXTURE(Linked,
                  "link session: frames in flight at a cut are re-sent after the reconnect, once") {
  p.a_wrote.clear();
  CHECK(a.send(0, 10) == 10);
  p.flush();
  const std::vector<std::string> sent = frames_of(p.a2b);
  REQUIRE(sent.size() == 10);
  // Five frames and half of the sixth arrive; the rest, and any acknowledgement, is lost.
  std::size_t five = 0;
  for (std::size_t i = 0; i < 5; ++i) five += sent[i].size();
  REQUIRE(p.to_b(five + sent[5].size() / 2));
  CHECK(b.got == range(0, 5));
  p.cut();
  CHECK(a.stats().queue_frames == 10);
  CHECK_FALSE(a.session.up());
  CHECK(a.session.next_deadline() == TimePoint::max());

  p.connect();
  REQUIRE(p.settle());
  // node-b's hello acknowledged 1..5; only 6..10 are written again.
  CHECK(data_seqs(std::string_view(p.a_wrote).substr(1)) ==
        std::vector<std::uint64_t>{6, 7, 8, 9, 10});
  CHECK(a.stats().frames_acked == 5);
  CHECK(b.got == range(0, 10));
  CHECK(b.stats().duplicates == 0);
  CHECK(a.ups == std::vector<std::uint64_t>{kEpochB, kEpochB});
  CHECK(b.ups == std::vector<std::uint64_t>{kEpochA, kEpochA});
  p.quiesce();
  CHECK(a.stats().frames_acked == 10);
  CHECK(a.session.idle());
}

TEST_CASE_FIXTURE(Linked,
                  "link session: delivered frames whose acknowledgement was lost are not re-sent") {
  CHECK(a.send(0, 10) == 10);
  REQUIRE(p.settle());
  CHECK(b.got == range(0, 10));
  p.cut();  // before the coalesced ack was due
  CHECK(a.stats().frames_acked == 0);
  p.connect();
  REQUIRE(p.settle());
  CHECK(data_seqs(std::string_view(p.a_wrote).substr(1)).empty());
  CHECK(a.stats().frames_acked == 10);
  CHECK(a.stats().queue_frames == 0);
  CHECK(b.got == range(0, 10));
  // Numbering goes on.
  p.a_wrote.clear();
  CHECK(a.send(10, 11) == 1);
  REQUIRE(p.settle());
  CHECK(data_seqs(p.a_wrote) == std::vector<std::uint64_t>{11});
}

TEST_CASE_FIXTURE(Linked, "link session: duplicated frames are delivered once and counted") {
  CHECK(a.send(0, 3) == 3);
  p.flush();
  const std::vector<std::string> f = frames_of(p.a2b);
  REQUIRE(f.size() == 3);
  p.a2b = f[0] + f[1] + f[1] + f[2] + f[0] + f[2];
  REQUIRE(p.to_b());
  CHECK(b.got == range(0, 3));
  CHECK(b.stats().duplicates == 3);
  CHECK(b.stats().frames_received == 3);

  // After a reconnect, a sender that ignores the acknowledgement in node-b's hello re-sends
  // 2 and 3 before 4.
  p.cut();
  p.connect();
  REQUIRE(p.settle());
  CHECK(a.send(3, 4) == 1);
  p.flush();
  const std::vector<std::string> g = frames_of(p.a2b);
  REQUIRE(g.size() == 1);
  p.a2b = f[1] + f[2] + g[0];
  REQUIRE(p.to_b());
  CHECK(b.got == range(0, 4));
  CHECK(b.stats().duplicates == 5);
}

TEST_CASE_FIXTURE(Linked,
                  "link session: frames reordered inside a connection are never delivered twice") {
  CHECK(a.send(0, 6) == 6);
  p.flush();
  const std::vector<std::string> f = frames_of(p.a2b);
  REQUIRE(f.size() == 6);
  p.a2b = f[0] + f[2] + f[1] + f[4] + f[3] + f[5];
  REQUIRE(p.to_b());
  // TCP never reorders; the receive check alone keeps each frame at most once and in order.
  for (std::size_t i = 1; i < b.got.size(); ++i) CHECK(b.got[i] > b.got[i - 1]);
  CHECK(b.got.size() + b.stats().duplicates == 6);
  CHECK(b.got.front() == 0);
  CHECK(b.got.back() == 5);
}

// ---- epochs -------------------------------------------------------------------------------------

TEST_CASE("link session: a peer restarted with a new epoch") {
  Side a("node-a", kEpochA, "node-b");
  auto b = std::make_unique<Side>("node-b", kEpochB, "node-a");
  Pipe p(a, *b);
  p.establish();
  CHECK(a.send(0, 100) == 100);
  CHECK(b->send(0, 100) == 100);
  p.quiesce();
  CHECK(a.got == range(0, 100));
  CHECK(a.stats().queue_frames == 0);

  p.cut();
  // Queued for the old incarnation: dropped when the new one answers.
  CHECK(a.send(100, 110) == 10);
  b = std::make_unique<Side>("node-b", 2000, "node-a");
  p.replace(a, *b);
  p.establish();
  CHECK(a.ups == std::vector<std::uint64_t>{kEpochB, 2000});
  CHECK(b->ups == std::vector<std::uint64_t>{kEpochA});
  CHECK(a.stats().queue_frames == 0);
  CHECK(b->got.empty());
  // Our numbering towards it restarts at 1; its frames, numbered from 1, are delivered.
  p.a_wrote.clear();
  CHECK(a.send(1000, 1100) == 100);
  CHECK(b->send(1000, 1100) == 100);
  REQUIRE(p.settle());
  CHECK(data_seqs(p.a_wrote).front() == 1);
  CHECK(b->got == range(1000, 1100));
  auto expect = range(0, 100);
  for (std::uint64_t i = 1000; i < 1100; ++i) expect.push_back(i);
  CHECK(a.got == expect);
  CHECK(a.stats().duplicates == 0);
}

TEST_CASE_FIXTURE(Pair, "link session: frames queued before the first handshake are kept") {
  CHECK(a.send(0, 3) == 3);
  CHECK(b.send(10, 12) == 2);
  p.establish();
  REQUIRE(p.settle());
  CHECK(b.got == range(0, 3));
  CHECK(a.got == range(10, 12));
}

TEST_CASE("link session: the same epoch seen again across reconnects, and on both nodes") {
  for (const std::uint64_t epoch_b : {kEpochB, kEpochA}) {  // the second run: equal epochs
    CAPTURE(epoch_b);
    Side a("node-a", kEpochA, "node-b");
    Side b("node-b", epoch_b, "node-a");
    Pipe p(a, b);
    std::uint64_t next = 0;
    for (int round = 0; round < 5; ++round) {
      p.connect();
      p.flush();
      REQUIRE(p.to_b());
      p.flush();
      REQUIRE(p.to_a());  // both up
      CHECK(a.send(next, next + 20) == 20);
      CHECK(b.send(next, next + 20) == 20);
      next += 20;
      p.flush();
      REQUIRE(p.to_b(p.a2b.size() / 2));  // half arrives, then the link breaks
      REQUIRE(p.to_a(p.b2a.size() / 3));
      p.cut();
    }
    p.connect();
    p.quiesce();
    CHECK(a.ups == std::vector<std::uint64_t>(a.ups.size(), epoch_b));
    CHECK(b.ups == std::vector<std::uint64_t>(b.ups.size(), kEpochA));
    CHECK(b.got == range(0, next));
    CHECK(a.got == range(0, next));
    CHECK(a.stats().duplicates == 0);
    CHECK(b.stats().duplicates == 0);
    CHECK(a.stats().frames_acked == next);
    CHECK(b.stats().frames_acked == next);
  }
}

TEST_CASE("link session: a peer removed and added again goes on where it stopped") {
  Side b("node-b", kEpochB, "node-a");
  auto a = std::make_unique<Side>("node-a", kEpochA, "node-b");
  Pipe p(*a, b);
  p.establish();
  CHECK(a->send(0, 5) == 5);
  CHECK(b.send(0, 5) == 5);
  p.quiesce();
  const LinkSession::Numbering kept = a->session.numbering();
  CHECK(kept.next_seq == 6);
  CHECK(kept.rx_epoch == kEpochB);
  CHECK(kept.rx_seq == 5);
  p.cut();
  a->session.drop_queue();
  a = std::make_unique<Side>("node-a", kEpochA, "node-b");
  a->session.resume(kept);
  CHECK(a->session.idle());
  p.replace(*a, b);
  p.establish();
  p.a_wrote.clear();
  CHECK(a->send(5, 10) == 5);
  CHECK(b.send(5, 10) == 5);
  p.quiesce();
  CHECK(data_seqs(p.a_wrote) == std::vector<std::uint64_t>{6, 7, 8, 9, 10});
  CHECK(b.got == range(0, 10));
  CHECK(a->got == range(5, 10));  // nothing delivered twice
  CHECK(b.stats().duplicates == 0);
  CHECK(a->stats().duplicates == 0);
}

// ---- bounds -------------------------------------------------------------------------------------

TEST_CASE("link session: a frame larger than the bound is refused") {
  LinkSessionOptions o = options("node-a", kEpochA);
  o.max_frame_bytes = 10000;
  Side a(o, "node-b");
  CHECK(a.session.send(1, std::make_shared<const std::string>(9991, 'x')));  // length 10000
  CHECK_FALSE(a.session.send(1, std::make_shared<const std::string>(9992, 'x')));
  CHECK_FALSE(a.session.send(0, std::make_shared<const std::string>("kind 0 is the link's")));
  CHECK(a.stats().dropped == 1);
  CHECK(a.stats().queue_frames == 1);

  // Received: the length field alone decides.
  o.node_name = "node-b";
  o.boot_epoch = kEpochB;
  for (const std::uint32_t length : {10000u, 10001u}) {
    CAPTURE(length);
    Side a2("node-a", kEpochA, "node-b");
    Side b(o, "node-a");
    Pipe p(a2, b);
    p.establish();
    std::string head = frame(1, 1, "");
    head[0] = static_cast<char>(length >> 24);
    head[1] = static_cast<char>(length >> 16);
    head[2] = static_cast<char>(length >> 8);
    head[3] = static_cast<char>(length);
    p.a2b = head;
    if (length == 10000) {
      CHECK(p.to_b());  // waits for the body
      CHECK(b.session.up());
    } else {
      CHECK_FALSE(p.to_b());
      CHECK(p.b_fault == LinkFault::bad_length);
    }
  }
}

TEST_CASE("link session: before the hello the frame limit is 4096 bytes") {
  // The hello's length field: 9 + 28 fixed body bytes + the name.
  for (const std::size_t name_size : {kLinkMaxHello - 37, kLinkMaxHello - 36}) {
    CAPTURE(name_size);
    const std::string name(name_size, 'n');
    const std::string stream = "\xB7" + hello_frame(LinkHello{1, 0, 0, name});
    InboundHello in;
    const bool fits = 37 + name_size <= kLinkMaxHello;
    CHECK(in.feed(stream) == (fits ? InboundHello::Status::hello : InboundHello::Status::refused));
    if (!fits) CHECK(in.fault() == LinkFault::bad_length);
    // The same limit on the dialler's side, for the acceptor's answer.
    Side a("node-a", kEpochA, name);
    a.session.dial(TimePoint{});
    CHECK(a.session.receive(hello_frame(LinkHello{1, 0, 0, name}), TimePoint{}, a) == fits);
    CHECK(a.session.up() == fits);
  }
}

TEST_CASE("link session: the queue bound refuses frames and counts them as dropped") {
  LinkSessionOptions o = options("node-a", kEpochA);
  o.max_queue_bytes = 10000;
  Side a(o, "node-b");
  Side b("node-b", kEpochB, "node-a");
  b.bodies_of_index = false;
  Pipe p(a, b);
  p.establish();
  const auto body = std::make_shared<const std::string>(987, 'x');  // 1000 bytes queued each
  int queued = 0;
  for (int i = 0; i < 20; ++i) queued += a.session.send(1, body) ? 1 : 0;
  CHECK(queued == 10);
  CHECK(a.stats().dropped == 10);
  CHECK(a.session.queue_bytes() == 10000);
  // Acknowledged frames still count while a round that references them is being written.
  const LinkSession::Round* r = a.session.take_round(kPlain);
  REQUIRE(r != nullptr);
  CHECK(r->frames == 10);
  for (const std::string_view piece : r->pieces) p.a2b.append(piece);
  REQUIRE(p.to_b());
  REQUIRE(p.advance(5ms));
  p.flush();
  REQUIRE(p.to_a());
  CHECK(a.stats().frames_acked == 10);
  CHECK(a.session.queue_bytes() == 10000);
  CHECK_FALSE(a.session.send(1, body));
  CHECK(a.stats().dropped == 11);
  a.session.round_written();
  CHECK(a.session.queue_bytes() == 0);
  CHECK(a.session.send(1, body));
}

// ---- pings and acknowledgements -----------------------------------------------------------------

TEST_CASE_FIXTURE(Pair, "link session: pings measure the round trip and silence ends the link") {
  p.connect();
  p.flush();
  REQUIRE(p.to_b());  // node-b is up: its ping 1 goes with its hello
  const TimePoint b_up = p.now;
  p.flush();
  p.now += 3ms;
  REQUIRE(p.to_a());  // node-a is up 3 ms later
  p.flush();
  p.now += 3ms;
  REQUIRE(p.to_b());  // node-b gets its pong 6 ms after its ping
  LinkStats s = b.stats();
  CHECK(s.rtt_count == 1);
  CHECK(s.rtt_sum == doctest::Approx(0.006));
  CHECK(s.rtt_buckets == std::array<std::uint64_t, 8>{0, 0, 0, 0, 1, 1, 1, 1});
  // A pong with another id is ignored.
  p.a2b = frame(0, 77, "\x03");
  REQUIRE(p.to_b());
  CHECK(b.stats().rtt_count == 1);

  // A ping every interval.
  CHECK(b.session.next_deadline() == b_up + 100ms);
  p.now = b_up + 100ms;
  REQUIRE(b.session.advance(p.now));
  p.flush();
  CHECK(controls(p.b2a, 2) == std::vector<std::uint64_t>{2});
  CHECK(b.session.next_deadline() == b_up + 200ms);
  // Quiet (a partition the driver holds): no ping.
  p.b2a.clear();
  b.session.set_quiet(true);
  p.now = b_up + 200ms;
  REQUIRE(b.session.advance(p.now));
  p.flush();
  CHECK(p.b2a.empty());
  b.session.set_quiet(false);
  // node-a last heard node-b when it came up (b_up + 3 ms): its ticks come 100 ms apart from
  // then, and the one 5 intervals later finds the link dead.
  CHECK(a.session.advance(b_up + 403ms));
  CHECK_FALSE(a.session.advance(b_up + 503ms));
  CHECK(a.session.fault() == LinkFault::silent);
  // Bytes that carry no link bytes (TLS records) count as heard too.
  b.session.heard(b_up + 200ms);
  for (int tick = 3; tick <= 6; ++tick) CHECK(b.session.advance(b_up + tick * 100ms));
  CHECK(b.session.fault() == LinkFault::none);
  CHECK_FALSE(b.session.advance(b_up + 700ms));  // exactly 5 intervals of silence
  CHECK(b.session.fault() == LinkFault::silent);
}

TEST_CASE_FIXTURE(Linked, "link session: acknowledgements are cumulative and coalesced") {
  const TimePoint t = p.now;
  for (std::uint64_t i = 0; i < 3; ++i) {
    CHECK(a.send(i, i + 1) == 1);
    REQUIRE(p.settle());
    p.now += 1ms;
  }
  CHECK(b.session.next_deadline() == t + 5ms);
  p.now = t + 4ms;
  REQUIRE(b.session.advance(p.now));
  p.flush();
  CHECK(controls(p.b2a, 1).empty());
  p.now = t + 5ms;
  REQUIRE(b.session.advance(p.now));
  p.flush();
  CHECK(controls(p.b2a, 1) == std::vector<std::uint64_t>{3});
  // An old acknowledgement is ignored, one of a frame never sent ends the link.
  REQUIRE(p.settle());
  CHECK(a.stats().frames_acked == 3);
  p.b2a = frame(0, 2, "\x01");
  REQUIRE(p.to_a());
  CHECK(a.stats().frames_acked == 3);
  p.b2a = frame(0, 4, "\x01");
  CHECK_FALSE(p.to_a());
  CHECK(p.a_fault == LinkFault::bad_ack);
}

TEST_CASE_FIXTURE(Linked, "link session: an acknowledgement of a frame not written ends the link") {
  // Numbered and queued but not yet written on this connection: a peer cannot have received
  // them, and taking its word would drop them from the queue unsent.
  CHECK(a.send(0, 3) == 3);
  p.b2a = frame(0, 2, "\x01");
  CHECK_FALSE(p.to_a());
  CHECK(p.a_fault == LinkFault::bad_ack);
  CHECK(a.stats().frames_acked == 0);
}

TEST_CASE_FIXTURE(Linked, "link session: a gap in the peer's numbering is delivered and counted") {
  // The sender dropped frames it had numbered (its queue for us ran out of time or room and
  // was dropped, counted there): what follows is delivered, the gap counted here.
  p.a2b = frame(kind_of(0), 1, *body_of(0)) + frame(kind_of(3), 4, *body_of(3));
  REQUIRE(p.to_b());
  CHECK(b.got == std::vector<std::uint64_t>{0, 3});
  CHECK(b.stats().missing == 2);
  CHECK(b.stats().duplicates == 0);
}

TEST_CASE_FIXTURE(Linked, "link session: pings from a peer that never reads cost one pong") {
  // A pong waits for the next round; a peer that streams pings and never reads would grow
  // the control buffer by a pong per ping. Only the latest ping's pong is kept: the peer
  // matches the pong to the ping it has outstanding.
  std::string pings;
  for (std::uint64_t i = 1; i <= 10000; ++i) pings += frame(0, i, "\x02");
  p.a2b = pings;
  REQUIRE(p.to_b());
  p.b2a.clear();
  p.flush();
  CHECK(controls(p.b2a, 3) == std::vector<std::uint64_t>{10000});
  CHECK(p.b2a.size() < 64);
}

TEST_CASE("link session: acknowledgements are immediate with ack_delay 0") {
  Side a("node-a", kEpochA, "node-b");
  LinkSessionOptions o = options("node-b", kEpochB);
  o.ack_delay = 0ms;
  Side b(o, "node-a");
  Pipe p(a, b);
  p.establish();
  CHECK(a.send(0, 3) == 3);
  p.flush();
  const std::vector<std::string> f = frames_of(p.a2b);
  REQUIRE(f.size() == 3);
  p.a2b = f[0] + f[1];
  REQUIRE(p.to_b());
  p.flush();  // each receive's ack goes with the next round, not after a delay
  CHECK(controls(p.b2a, 1) == std::vector<std::uint64_t>{2});
  p.a2b = f[2];
  REQUIRE(p.to_b());
  p.flush();
  CHECK(controls(p.b2a, 1) == std::vector<std::uint64_t>{2, 3});
  // Acks not written yet are cumulative: two receives before a round make one ack.
  CHECK(a.send(3, 5) == 2);
  p.flush();
  const std::vector<std::string> g = frames_of(p.a2b);
  REQUIRE(g.size() == 2);
  p.a2b = g[0];
  REQUIRE(p.to_b());
  p.a2b = g[1];
  REQUIRE(p.to_b());
  p.b2a.clear();
  p.flush();
  CHECK(controls(p.b2a, 1) == std::vector<std::uint64_t>{5});
}

// ---- faults -------------------------------------------------------------------------------------

TEST_CASE("link session: protocol errors end the connection with their reason") {
  struct Case {
    const char* what;
    std::string bytes;
    LinkFault fault;
  };
  const std::vector<Case> cases = {
      {"unknown control subtype", frame(0, 0, "\x09"), LinkFault::bad_control},
      {"control body of 2 bytes", frame(0, 1, std::string("\x01\x01", 2)), LinkFault::bad_control},
      {"a second hello", hello_frame(LinkHello{kEpochA, 0, 0, "node-a"}), LinkFault::bad_control},
      {"data numbered 0", frame(1, 0, "x"), LinkFault::zero_sequence},
      {"ack of a frame never sent", frame(0, 999, "\x01"), LinkFault::bad_ack},
      {"length below 9", std::string("\x00\x00\x00\x08", 4) + std::string(8, '\0'),
       LinkFault::bad_length},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    Linked t;
    // A good frame before the bad one is delivered; nothing after it.
    t.p.a2b = frame(kind_of(0), 1, *body_of(0)) + c.bytes + frame(kind_of(1), 2, *body_of(1));
    CHECK_FALSE(t.p.to_b());
    CHECK(t.p.b_fault == c.fault);
    CHECK(t.b.session.fault() == c.fault);
    CHECK(t.b.got == range(0, 1));
  }
}

TEST_CASE("link session: a bad start of a connection is refused with its reason") {
  const std::string hello = hello_frame(LinkHello{1, 0, 0, "node-a"});
  std::string v2 = hello;
  v2[14] = '\x02';  // header 13 bytes, subtype, then the version
  std::string short_name = hello;
  short_name[40] = '\x05';  // the u16 name length no longer matches the body
  struct Case {
    const char* what;
    std::string bytes;  // after the magic byte
    LinkFault fault;
  };
  const std::vector<Case> cases = {
      {"data before the hello", frame(1, 1, "x"), LinkFault::unexpected},
      {"a ping before the hello", frame(0, 1, "\x02"), LinkFault::unexpected},
      {"another version", v2, LinkFault::bad_hello},
      {"a name length that does not match", short_name, LinkFault::bad_hello},
      {"an empty name", hello_frame(LinkHello{1, 0, 0, ""}), LinkFault::bad_hello},
      {"a hello too short", frame(0, 0, std::string("\x00\x01", 2)), LinkFault::bad_hello},
      {"a length above 4096", std::string("\x00\x00\x10\x01", 4), LinkFault::bad_length},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    InboundHello in;
    CHECK(in.feed("\xB7" + c.bytes) == InboundHello::Status::refused);
    CHECK(in.fault() == c.fault);
    CHECK(in.feed(hello) == InboundHello::Status::refused);  // stays refused
    // The same answer to a dialler.
    Side a("node-a", kEpochA, "node-b");
    a.session.dial(TimePoint{});
    CHECK_FALSE(a.session.receive(c.bytes, TimePoint{}, a));
    CHECK(a.session.fault() == c.fault);
    CHECK(a.ups.empty());
  }
  InboundHello no_magic;
  CHECK(no_magic.feed(hello) == InboundHello::Status::refused);
  CHECK(no_magic.fault() == LinkFault::unexpected);
  SUBCASE("the dialler's peer answers") {
    Side a("node-a", kEpochA, "node-b");
    a.session.dial(TimePoint{});
    CHECK_FALSE(a.session.receive(hello_frame(LinkHello{2, 0, 0, "node-x"}), TimePoint{}, a));
    CHECK(a.session.fault() == LinkFault::wrong_peer);
    // A hello acknowledging frames of our epoch that were never numbered.
    a.session.dial(TimePoint{});
    CHECK(a.session.fault() == LinkFault::none);
    CHECK_FALSE(a.session.receive(hello_frame(LinkHello{2, kEpochA, 1, "node-b"}), TimePoint{}, a));
    CHECK(a.session.fault() == LinkFault::bad_ack);
    CHECK(a.ups.empty());
    // The same acknowledgement of another epoch of ours is no acknowledgement at all.
    a.session.dial(TimePoint{});
    CHECK(a.session.receive(hello_frame(LinkHello{2, kEpochA + 1, 1, "node-b"}), TimePoint{}, a));
    CHECK(a.ups == std::vector<std::uint64_t>{2});
  }
}

// ---- the driver's side --------------------------------------------------------------------------

TEST_CASE_FIXTURE(Linked, "link session: a callback that ends the connection stops the reading") {
  b.hook = [&] {
    if (b.got.size() == 2) b.session.lost();
  };
  CHECK(a.send(0, 5) == 5);
  p.flush();
  CHECK_FALSE(p.to_b());  // all five frames in one receive()
  CHECK(b.got == range(0, 2));
  CHECK(b.session.fault() == LinkFault::none);
  CHECK_FALSE(b.session.connected());
  b.hook = nullptr;
  p.cut();
  p.connect();
  p.quiesce();
  CHECK(b.got == range(0, 5));
  CHECK(b.stats().duplicates == 0);
  CHECK(a.session.idle());
}

TEST_CASE("link session: random cuts, pieces and interleavings deliver everything once") {
  for (unsigned seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
    Side a("node-a", kEpochA, "node-b");
    Side b("node-b", kEpochB, "node-a");
    Pipe p(a, b);
    std::uint64_t sent_a = 0, sent_b = 0;
    bool open = false;
    for (int step = 0; step < 300; ++step) {
      switch (pick(8)) {
        case 0:
        case 1:
          sent_a += a.send(sent_a, sent_a + 1 + pick(5));
          break;
        case 2:
          sent_b += b.send(sent_b, sent_b + 1 + pick(5));
          break;
        case 3:
        case 4: {  // part of one direction, in random pieces
          if (!open) break;
          p.flush();
          const bool to_b = pick(2) == 0;
          const std::size_t in_flight = to_b ? p.a2b.size() : p.b2a.size();
          const std::size_t n = in_flight == 0 ? 0 : pick(in_flight + 1);
          const bool ok = to_b ? p.to_b(n, 1 + pick(300)) : p.to_a(n, 1 + pick(300));
          REQUIRE(ok);
          break;
        }
        case 5:
          if (!p.advance(std::chrono::milliseconds(1 + pick(20)))) {
            p.cut();  // silence: the driver closes the link
            open = false;
          }
          break;
        case 6:
          if (open && pick(4) == 0) {
            p.cut();
            open = false;
          }
          break;
        default:
          if (!open) {
            p.connect();
            open = true;
          }
          break;
      }
      CHECK(a.session.queue_frames() <= sent_a);
    }
    if (!open) p.connect();
    p.quiesce();
    CHECK(b.got == range(0, sent_a));
    CHECK(a.got == range(0, sent_b));
    CHECK(a.stats().frames_acked == sent_a);
    CHECK(b.stats().frames_acked == sent_b);
    CHECK(a.session.idle());
    CHECK(b.session.idle());
    CHECK(a.stats().queue_bytes == 0);
  }
}
