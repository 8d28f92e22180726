// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the cluster link's protocol (cluster/link_protocol.hpp): the frame
// parser, the hello decoder, InboundHello and LinkSession reading untrusted bytes (any TCP
// client may open a plaintext link on the membership port). One thread, the fuzzer's.
//
// Input: one configuration byte, then the stream.
//   bit 0     node-b's side: an accepted stream read by InboundHello, then accept(); else
//             node-a's side: a dialled stream (the acceptor's answer comes first).
//   bit 1     a valid hello of the peer (after the magic byte on node-b's side) is put before
//             the data, so the session is up and the data reaches the frame handling.
//   bits 2-7  the size of the pieces the stream is fed in: 1 + value * 7 bytes.
//
// Oracles on every input (a violation calls __builtin_trap()):
//  - every frame parse_link_frame() cuts is 4 + its length field long, with a body of
//    length - 9 bytes, and its header re-encodes to the same 13 bytes; a hello that decodes
//    re-encodes to the same frame.
//  - a session delivers the same frames, counts the same duplicates, ends with the same fault
//    and reaches the same state whether the stream comes whole or in pieces; frames_received
//    counts deliveries; nothing is delivered after the session ended the connection.
//  - a round's pieces add up to its bytes; the queue never holds more than max_queue_bytes.
// A third run feeds the pieces while sending frames and letting time pass (acknowledgements,
// pings, silence), for the invariants alone. Everything is local to one call.
//
// Seeds: tests/fuzz/corpus/link/, written by this binary when LINK_FUZZ_WRITE_SEEDS names a
// directory (see LLVMFuzzerInitialize).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cluster/link_protocol.hpp"

namespace {

namespace cl = brokerha::cluster;
using namespace std::chrono_literals;
using TimePoint = cl::LinkSession::TimePoint;

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "link_fuzz: check failed at line %d: %s\n", __LINE__, #cond); \
      __builtin_trap();                                                                  \
    }                                                                                    \
  } while (false)

constexpr std::uint8_t kCfgAcceptor = 1;
constexpr std::uint8_t kCfgHello = 2;
constexpr std::uint64_t kPeerEpoch = 7;
constexpr cl::LinkSession::RoundLimits kLimits{1u << 16, 64, 512};

cl::LinkSessionOptions options(bool acceptor) {
  cl::LinkSessionOptions o;
  o.node_name = acceptor ? "node-b" : "node-a";
  o.boot_epoch = acceptor ? 1000 : 5000;
  o.max_queue_bytes = 1u << 16;
  o.max_frame_bytes = 1u << 16;
  o.ping_interval = 100ms;
  return o;
}

std::string hello_of(const std::string& name, std::uint64_t ack_epoch, std::uint64_t ack_seq) {
  std::string out;
  cl::append_link_hello(out, cl::LinkHello{kPeerEpoch, ack_epoch, ack_seq, name});
  return out;
}

// The frame parser and the hello decoder on their own.
void check_frames(std::string_view stream) {
  if (!stream.empty() && static_cast<std::uint8_t>(stream[0]) == cl::kPlainMagic) {
    stream.remove_prefix(1);
  }
  while (true) {
    cl::LinkFrame f;
    std::size_t size = 0;
    if (cl::parse_link_frame(stream, 1u << 20, f, size) != cl::LinkParse::frame) return;
    FUZZ_CHECK(size >= cl::kLinkFrameHeader && size <= stream.size());
    FUZZ_CHECK(f.body.size() == size - cl::kLinkFrameHeader);
    FUZZ_CHECK(f.body.data() == stream.data() + cl::kLinkFrameHeader);
    char head[cl::kLinkFrameHeader];
    cl::put_link_header(head, f.body.size(), f.kind, f.seq);
    FUZZ_CHECK(std::string_view(head, sizeof head) == stream.substr(0, cl::kLinkFrameHeader));
    cl::LinkHello h;
    cl::LinkFault fault = cl::LinkFault::none;
    if (f.kind == 0 && cl::decode_link_hello(f.body, h, fault)) {
      std::string again;
      cl::append_link_hello(again, h);
      FUZZ_CHECK(f.seq != 0 || again == stream.substr(0, size));
    }
    stream.remove_prefix(size);
  }
}

// One side of a link reading the stream.
struct Run final : cl::LinkSession::Events {
  explicit Run(bool acceptor_side)
      : acceptor(acceptor_side),
        session(options(acceptor_side), acceptor_side ? "node-a" : "node-b") {
    if (!acceptor) session.dial(now);
  }

  void link_up(std::uint64_t epoch) override {
    FUZZ_CHECK(!ended);
    ups.push_back(epoch);
  }
  void link_frame(std::uint8_t kind, std::string_view body) override {
    FUZZ_CHECK(!ended);
    FUZZ_CHECK(kind != 0);
    FUZZ_CHECK(session.up());
    got.emplace_back(kind, std::string(body));
  }

  void feed(std::string_view bytes) {
    if (ended || bytes.empty()) return;
    if (acceptor && !accepted) {
      switch (inbound.feed(bytes)) {
        case cl::InboundHello::Status::more:
          return;
        case cl::InboundHello::Status::refused:
          FUZZ_CHECK(inbound.fault() != cl::LinkFault::none);
          return end(inbound.fault());
        case cl::InboundHello::Status::hello:
          break;
      }
      accepted = true;
      if (inbound.hello().name != "node-a") return end(cl::LinkFault::wrong_peer);  // the driver's
      if (!session.accept(inbound.hello(), now, *this)) return end(session.fault());
      bytes = inbound.rest();
      if (bytes.empty()) return;
    }
    if (!session.receive(bytes, now, *this)) {
      FUZZ_CHECK(session.fault() != cl::LinkFault::none);
      end(session.fault());
    }
  }
  void end(cl::LinkFault f) {
    ended = true;
    fault = f;
    session.lost();
  }
  void write() {
    while (const cl::LinkSession::Round* r = session.take_round(kLimits)) {
      std::size_t bytes = 0;
      for (std::string_view p : r->pieces) bytes += p.size();
      FUZZ_CHECK(bytes == r->bytes && bytes > 0);
      FUZZ_CHECK(r->frames <= kLimits.max_frames);
      session.round_written();
    }
    FUZZ_CHECK(session.queue_bytes() <= options(acceptor).max_queue_bytes);
  }

  bool acceptor;
  cl::LinkSession session;
  cl::InboundHello inbound;
  bool accepted = false;
  bool ended = false;
  cl::LinkFault fault = cl::LinkFault::none;
  TimePoint now = TimePoint{} + 1h;
  std::vector<std::pair<std::uint8_t, std::string>> got;
  std::vector<std::uint64_t> ups;
};

void same(const Run& a, const Run& b) {
  FUZZ_CHECK(a.got == b.got);
  FUZZ_CHECK(a.ups == b.ups);
  FUZZ_CHECK(a.ended == b.ended);
  FUZZ_CHECK(a.fault == b.fault);
  FUZZ_CHECK(a.session.up() == b.session.up());
  cl::LinkStats sa, sb;
  a.session.fill(sa);
  b.session.fill(sb);
  FUZZ_CHECK(sa.frames_received == a.got.size());
  FUZZ_CHECK(sa.frames_received == sb.frames_received);
  FUZZ_CHECK(sa.duplicates == sb.duplicates);
}

std::string make_seed(std::uint8_t config, const std::string& data) {
  return std::string(1, static_cast<char>(config)) + data;
}

// Frames after the hello: data, an ack, a ping, a pong, a duplicate.
std::string seed_frames() {
  auto frame = [](std::uint8_t kind, std::uint64_t seq, std::string_view body) {
    std::string f(cl::kLinkFrameHeader, '\0');
    cl::put_link_header(f.data(), body.size(), kind, seq);
    f.append(body);
    return f;
  };
  return frame(1, 1, "first") + frame(7, 2, std::string(700, 'x')) + frame(0, 0, "\x01") +
         frame(0, 5, "\x02") + frame(0, 1, "\x03") + frame(1, 2, "again") + frame(2, 3, "");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("LINK_FUZZ_WRITE_SEEDS");
  if (dir == nullptr) return 0;
  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"accepted_up", make_seed(kCfgAcceptor | kCfgHello | (3 << 2), seed_frames())},
      {"dialled_up", make_seed(kCfgHello, seed_frames())},
      {"accepted_raw",
       make_seed(kCfgAcceptor, "\xB7" + hello_of("node-a", 1000, 0) + seed_frames())},
      {"dialled_raw", make_seed(1 << 2, hello_of("node-b", 5000, 0) + seed_frames())},
      {"accepted_garbage", make_seed(kCfgAcceptor, "\xB7\xff\xff\xff\xff garbage")},
  };
  for (const auto& [name, bytes] : seeds) {
    const std::string path = std::string(dir) + "/" + name;
    if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
      std::fwrite(bytes.data(), 1, bytes.size(), f);
      std::fclose(f);
    }
  }
  std::exit(0);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t config = data[0];
  const bool acceptor = (config & kCfgAcceptor) != 0;
  std::string stream(reinterpret_cast<const char*>(data + 1), size - 1);
  check_frames(stream);
  if ((config & kCfgHello) != 0) {
    stream = (acceptor ? "\xB7" + hello_of("node-a", 0, 0) : hello_of("node-b", 0, 0)) + stream;
  }
  const std::size_t piece = 1 + static_cast<std::size_t>(config >> 2) * 7;

  Run whole(acceptor);
  whole.feed(stream);
  Run pieces(acceptor);
  for (std::size_t at = 0; at < stream.size(); at += piece) {
    pieces.feed(std::string_view(stream).substr(at, piece));
    pieces.write();
  }
  same(whole, pieces);

  // Sending and time passing meanwhile: the invariants only.
  Run busy(acceptor);
  std::uint64_t n = 0;
  for (std::size_t at = 0; at < stream.size(); at += piece) {
    busy.feed(std::string_view(stream).substr(at, piece));
    if (busy.ended) break;
    busy.session.send(static_cast<std::uint8_t>(1 + n % 255),
                      std::make_shared<const std::string>(n % 900, 'q'));
    ++n;
    busy.write();
    busy.now += std::chrono::milliseconds(1 + (static_cast<std::uint8_t>(stream[at]) % 64) * 4);
    if (!busy.session.advance(busy.now)) {
      FUZZ_CHECK(busy.session.fault() == cl::LinkFault::silent);
      busy.end(cl::LinkFault::silent);
      break;
    }
    FUZZ_CHECK(busy.session.next_deadline() > busy.now || !busy.session.up());
  }
  busy.write();
  return 0;
}
