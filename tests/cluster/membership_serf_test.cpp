// SPDX-License-Identifier: Apache-2.0
// Interop of brokerha::Membership with a real memberlist peer: Debian's `serf agent` on
// 127.0.0.62, our node on 127.0.0.63 with serf's delegate versions (2/5/5). Our node joins
// serf (or serf joins us with `serf join`), each sees the other alive (`serf members`), and
// after our node stops without leaving serf marks it failed. Plaintext and with a 16-byte key.
// Skipped with a message when serf is missing.

#include <brokerha/membership.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "support/broker_fixture.hpp"
#include "support/child_process.hpp"
#include "support/required_tool.hpp"
#include "support/serf_agent.hpp"

using namespace std::chrono_literals;

namespace {

using brokerha::test::wait_until;

// The line of `serf members` for `node` ("" when absent).
std::string serf_line(const std::string& serf, const std::string& rpc, const std::string& node) {
  const auto r = brokerha::test::run_process({serf, "members", "-rpc-addr=" + rpc}, 5s);
  if (!r.ok()) return {};
  std::size_t pos = 0;
  while (pos < r.out.size()) {
    const auto end = r.out.find('\n', pos);
    const std::string line = r.out.substr(pos, end == std::string::npos ? end : end - pos);
    if (line.rfind(node + " ", 0) == 0) return line;
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return {};
}

// serf_joins: `serf join` contacts us (serf initiates the push-pull); else we join serf.
void interop(const std::string& serf, const std::string& key_b64, const std::string& key,
             bool serf_joins) {
  const char* serf_ip = "127.0.0.62";
  const std::uint16_t serf_port = brokerha::test::free_udp_tcp_port(serf_ip);
  const std::uint16_t rpc_port = brokerha::test::free_udp_tcp_port(serf_ip);
  REQUIRE(serf_port != 0);
  REQUIRE(rpc_port != 0);
  const std::string rpc = std::string(serf_ip) + ":" + std::to_string(rpc_port);
  std::vector<std::string> args = {
      "agent", "-node=serf1", "-bind=" + std::string(serf_ip) + ":" + std::to_string(serf_port),
      "-rpc-addr=" + rpc, "-log-level=err"};
  if (!key_b64.empty()) args.push_back("-encrypt=" + key_b64);
  brokerha::test::SerfAgent agent(serf, args);
  REQUIRE(agent.started());

  brokerha::MembershipOptions o;
  o.name = "brokerha1";
  o.bind_address = "127.0.0.63";
  o.port = 0;
  o.secret_key = key;
  o.delegate_protocol_min = 2;
  o.delegate_protocol_max = 5;
  o.delegate_protocol_version = 5;
  brokerha::Membership m(o);
  m.start();

  // serf needs a moment to bind (and its RPC to listen); retry the join.
  const std::string seed = std::string(serf_ip) + ":" + std::to_string(serf_port);
  const std::string ours = "127.0.0.63:" + std::to_string(m.bound_port());
  const bool joined = wait_until(
      [&] {
        if (serf_joins) {
          return brokerha::test::run_process({serf, "join", "-rpc-addr=" + rpc, ours}, 5s).ok();
        }
        std::error_code ec;
        return m.join({seed}, ec) == 1;
      },
      15s, 200ms);
  REQUIRE(joined);
  CHECK(wait_until(
      [&] {
        const auto v = m.members();
        return std::any_of(v.begin(), v.end(), [](const brokerha::Member& x) {
          return x.name == "serf1" && x.state == brokerha::MemberState::alive;
        });
      },
      10s, 200ms));
  std::string line;
  CHECK(wait_until(
      [&] {
        line = serf_line(serf, rpc, "brokerha1");
        return line.find("alive") != std::string::npos;
      },
      15s, 200ms));
  INFO("serf members: " << line);
  CHECK(line.find("127.0.0.63:" + std::to_string(m.bound_port())) != std::string::npos);

  m.stop();  // no leave: serf must detect the failure
  CHECK(wait_until(
      [&] {
        line = serf_line(serf, rpc, "brokerha1");
        return line.find("failed") != std::string::npos;
      },
      60s, 200ms));
}

}  // namespace

TEST_CASE("membership serf interop: joins in both directions then a crash") {
  const std::string serf = brokerha::test::find_program("serf");
  if (serf.empty()) {
    brokerha::test::tool_missing("serf (Debian serf)");
    return;
  }
  const std::string key_b64 = "MDEyMzQ1Njc4OWFiY2RlZg==";
  const std::string key = "0123456789abcdef";
  SUBCASE("we join serf in plaintext") { interop(serf, "", "", false); }
  SUBCASE("we join serf with a 16 byte key") { interop(serf, key_b64, key, false); }
  SUBCASE("serf joins us in plaintext") { interop(serf, "", "", true); }
  SUBCASE("serf joins us with a 16 byte key") { interop(serf, key_b64, key, true); }
}
