// SPDX-License-Identifier: Apache-2.0
// Bytes from a real memberlist peer: Debian's `serf agent` (memberlist 0.2.2 inside) on loopback.
// The test announces itself to serf with an alive packet of our own encoding, then captures and
// decodes what serf sends back over UDP (pings, gossip compounds), and runs a TCP push-pull join
// against it (serf compresses streams with Go's LZW). Both plaintext and with an AES-GCM key.
// Skipped (with a message) when `serf` is not installed: scripts/install-deps.sh installs it.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "membership/codec.hpp"
#include "membership/wire.hpp"
#include "support/child_process.hpp"
#include "support/required_tool.hpp"
#include "support/serf_agent.hpp"

namespace mb = brokerha::membership;

namespace {

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

sockaddr_in loopback(const char* ip, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

std::uint16_t bound_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

std::string hexs(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string o;
  for (char c : s) {
    o += d[static_cast<std::uint8_t>(c) >> 4];
    o += d[static_cast<std::uint8_t>(c) & 15];
  }
  return o;
}

// Unwraps compound and compress messages into plain messages.
void flatten(std::string_view msg, std::vector<std::string>& out, int depth = 0) {
  if (msg.empty() || depth > 4) return;
  const auto type = static_cast<mb::MsgType>(static_cast<std::uint8_t>(msg[0]));
  if (type == mb::MsgType::compound) {
    std::vector<std::string_view> parts;
    std::size_t truncated = 0;
    REQUIRE(mb::split_compound(msg.substr(1), parts, truncated));
    CHECK(truncated == 0);
    for (auto p : parts) flatten(p, out, depth + 1);
  } else if (type == mb::MsgType::compress) {
    std::string inner;
    REQUIRE(mb::decompress_message(msg.substr(1), inner) == mb::DecodeStatus::ok);
    flatten(inner, out, depth + 1);
  } else {
    out.emplace_back(msg);
  }
}

void capture(const std::string& serf, const std::string& key_b64, const std::string& key) {
  const char* serf_ip = "127.0.0.60";
  const char* our_ip = "127.0.0.61";
  const std::uint16_t serf_port = brokerha::test::free_udp_tcp_port(serf_ip);
  const std::uint16_t rpc_port = brokerha::test::free_udp_tcp_port(serf_ip);
  REQUIRE(serf_port != 0);
  std::vector<std::string> args = {
      "agent", "-node=serf1", "-bind=" + std::string(serf_ip) + ":" + std::to_string(serf_port),
      "-rpc-addr=" + std::string(serf_ip) + ":" + std::to_string(rpc_port), "-log-level=err"};
  if (!key_b64.empty()) args.push_back("-encrypt=" + key_b64);
  brokerha::test::SerfAgent proc(serf, args);
  REQUIRE(proc.started());

  mb::CodecConfig codec;
  codec.enable_compression = false;
  if (!key.empty()) REQUIRE(codec.keyring.add_key(key));

  Fd udp(::socket(AF_INET, SOCK_DGRAM, 0));
  sockaddr_in ours = loopback(our_ip, 0);
  REQUIRE(::bind(udp.fd, reinterpret_cast<sockaddr*>(&ours), sizeof ours) == 0);
  const std::uint16_t our_port = bound_port(udp.fd);
  const sockaddr_in serf_addr = loopback(serf_ip, serf_port);
  const std::string our_ip_raw("\x7f\x00\x00\x3d", 4);

  mb::Alive me{1, "capture", our_ip_raw, our_port, "", std::string("\1\5\2\2\5\5", 6)};
  const std::string hello = mb::encode_packet(codec, mb::encode(me), false);

  bool got_ping = false;
  bool got_serf_alive = false;
  std::vector<std::string> captured;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto last_hello = std::chrono::steady_clock::time_point{};
  while ((!got_ping || !got_serf_alive) && std::chrono::steady_clock::now() < deadline) {
    if (std::chrono::steady_clock::now() - last_hello > std::chrono::milliseconds(300)) {
      ::sendto(udp.fd, hello.data(), hello.size(), 0, reinterpret_cast<const sockaddr*>(&serf_addr),
               sizeof serf_addr);
      last_hello = std::chrono::steady_clock::now();
    }
    pollfd p{udp.fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[65536];
    sockaddr_in from{};
    socklen_t flen = sizeof from;
    const ssize_t n =
        ::recvfrom(udp.fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
    if (n <= 0) continue;
    const std::string wire(buf, static_cast<std::size_t>(n));
    captured.push_back(wire);
    std::string msg;
    REQUIRE_MESSAGE(mb::decode_packet(codec, wire, msg) == mb::DecodeStatus::ok,
                    "packet from serf did not decode");
    std::vector<std::string> msgs;
    flatten(msg, msgs);
    for (const auto& m : msgs) {
      const std::string_view body = std::string_view(m).substr(1);
      switch (static_cast<mb::MsgType>(static_cast<std::uint8_t>(m[0]))) {
        case mb::MsgType::ping: {
          mb::Ping ping;
          REQUIRE(mb::decode(body, ping));
          CHECK(ping.node == "capture");
          // Re-encoding what we decoded gives Go's bytes back: same fields, same forms.
          CHECK_MESSAGE(mb::encode(ping) == m, hexs(m) << " vs " << hexs(mb::encode(ping)));
          got_ping = true;
          const std::string ack =
              mb::encode_packet(codec, mb::encode(mb::Ack{ping.seq_no, ""}), false);
          ::sendto(udp.fd, ack.data(), ack.size(), 0, reinterpret_cast<const sockaddr*>(&from),
                   flen);
          break;
        }
        case mb::MsgType::alive: {
          mb::Alive a;
          REQUIRE(mb::decode(body, a));
          if (a.node == "serf1") {
            CHECK(a.addr == std::string("\x7f\x00\x00\x3c", 4));
            CHECK(a.port == serf_port);
            REQUIRE(a.vsn.size() == 6);
            CHECK(a.vsn[1] == 5);
            CHECK_MESSAGE(mb::encode(a) == m, hexs(m) << " vs " << hexs(mb::encode(a)));
            got_serf_alive = true;
          }
          break;
        }
        default:
          break;
      }
    }
  }
  MESSAGE("captured " << captured.size() << " packets from serf");
  CHECK(got_ping);
  CHECK(got_serf_alive);

  // TCP push-pull join: serf answers with its state, LZW-compressed by Go's compress/lzw.
  Fd tcp(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in tcp_addr = loopback(serf_ip, serf_port);
  REQUIRE(::connect(tcp.fd, reinterpret_cast<sockaddr*>(&tcp_addr), sizeof tcp_addr) == 0);
  mb::PushPull pp;
  pp.header.join = true;
  pp.nodes.push_back({"capture", our_ip_raw, our_port, "", 1, mb::NodeState::alive,
                      std::string("\1\5\2\2\5\5", 6)});
  mb::CodecConfig stream_codec = codec;
  stream_codec.enable_compression = true;
  const std::string req = mb::encode_stream(stream_codec, mb::encode(pp));
  REQUIRE(::send(tcp.fd, req.data(), req.size(), 0) == static_cast<ssize_t>(req.size()));
  std::string in;
  std::string msg;
  std::size_t used = 0;
  mb::DecodeStatus st = mb::DecodeStatus::need_more;
  while (st == mb::DecodeStatus::need_more) {
    pollfd p{tcp.fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);
    char buf[4096];
    const ssize_t n = ::recv(tcp.fd, buf, sizeof buf, 0);
    REQUIRE(n > 0);
    in.append(buf, static_cast<std::size_t>(n));
    st = mb::decode_stream(codec, in, msg, used);
  }
  REQUIRE(st == mb::DecodeStatus::ok);
  REQUIRE(static_cast<mb::MsgType>(msg[0]) == mb::MsgType::push_pull);
  mb::PushPull reply;
  bool truncated = false;
  REQUIRE(mb::decode_push_pull(std::string_view(msg).substr(1), reply, truncated) != 0);
  bool serf_listed = false;
  for (const auto& n : reply.nodes) {
    if (n.name == "serf1" && n.state == mb::NodeState::alive) serf_listed = true;
  }
  CHECK(serf_listed);
  CHECK_FALSE(reply.user_state.empty());  // serf's own push-pull state
}

}  // namespace

TEST_CASE("membership serf capture decodes what a real memberlist peer sends") {
  const std::string serf = brokerha::test::find_program("serf");
  if (serf.empty()) {
    brokerha::test::tool_missing("serf (Debian serf)");
    return;
  }
  SUBCASE("plaintext") { capture(serf, "", ""); }
  SUBCASE("encrypted with a 16 byte key") {
    capture(serf, "MDEyMzQ1Njc4OWFiY2RlZg==", "0123456789abcdef");
  }
}
