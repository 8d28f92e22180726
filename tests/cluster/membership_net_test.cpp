// SPDX-License-Identifier: Apache-2.0
// brokerha::Membership on real sockets: in-process instances on loopback with free ports form a
// cluster (with and without a secret key), detect a crash (stop() without leave()), see a
// graceful leave, refuse a node with the wrong key, and take back a node restarted on a new
// port. Waits are bounded and generous (sanitizer builds); no timing assertions.

#include <brokerha/membership.hpp>

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "membership/stream_seam.hpp"
#include "support/broker_fixture.hpp"
#include "support/process_resources.hpp"

using namespace std::chrono_literals;

namespace {

const std::string kKey = "0123456789abcdef";  // 16 bytes: AES-128

struct Node {
  std::mutex mu;
  std::vector<brokerha::MemberEvent> events;
  std::vector<std::string> messages;
  // Last: destroyed first, so its thread (which runs the callbacks) ends before the members
  // the callbacks write to.
  std::unique_ptr<brokerha::Membership> m;

  // Caller must hold no lock; returns how many events of `kind` name `who`.
  int count(brokerha::MemberEvent::Kind kind, const std::string& who) {
    std::lock_guard<std::mutex> lock(mu);
    return static_cast<int>(std::count_if(events.begin(), events.end(), [&](const auto& e) {
      return e.kind == kind && e.member.name == who;
    }));
  }
};

brokerha::MembershipOptions options(const std::string& name, const std::string& key,
                                    const std::string& ip = "127.0.0.1") {
  brokerha::MembershipOptions o;
  o.name = name;
  o.bind_address = ip;
  o.port = 0;
  o.secret_key = key;
  o.dead_node_reclaim_time = 1ms;  // a restarted node may take its name back at once
  return o;
}

std::unique_ptr<Node> make_node(const std::string& name, const std::string& key = {},
                                const std::string& ip = "127.0.0.1") {
  auto n = std::make_unique<Node>();
  n->m = std::make_unique<brokerha::Membership>(options(name, key, ip));
  Node* raw = n.get();
  n->m->set_event_callback([raw](const brokerha::MemberEvent& e) {
    std::lock_guard<std::mutex> lock(raw->mu);
    raw->events.push_back(e);
  });
  n->m->set_message_callback([raw](std::string_view p) {
    std::lock_guard<std::mutex> lock(raw->mu);
    raw->messages.emplace_back(p);
  });
  n->m->start();
  REQUIRE(n->m->bound_port() != 0);
  return n;
}

std::string seed_of(const Node& n, const std::string& ip = "127.0.0.1") {
  return ip + ":" + std::to_string(n.m->bound_port());
}

using brokerha::test::wait_until;

int alive_count(const Node& n) {
  const auto v = n.m->members();
  return static_cast<int>(std::count_if(v.begin(), v.end(), [](const brokerha::Member& m) {
    return m.state == brokerha::MemberState::alive;
  }));
}

bool has_member(const Node& n, const std::string& name, std::uint16_t port = 0) {
  const auto v = n.m->members();
  return std::any_of(v.begin(), v.end(), [&](const brokerha::Member& m) {
    return m.name == name && m.state == brokerha::MemberState::alive &&
           (port == 0 || m.port == port);
  });
}

// Three nodes, b and c joined through a; waits until everyone sees 3 alive.
std::vector<std::unique_ptr<Node>> form_three(const std::string& key) {
  std::vector<std::unique_ptr<Node>> nodes;
  nodes.push_back(make_node("a", key));
  nodes.push_back(make_node("b", key));
  nodes.push_back(make_node("c", key));
  CHECK(nodes[1]->m->join({seed_of(*nodes[0])}) == 1);
  CHECK(nodes[2]->m->join({seed_of(*nodes[0])}) == 1);
  const bool formed = wait_until(
      [&] {
        return std::all_of(nodes.begin(), nodes.end(),
                           [](const auto& n) { return alive_count(*n) == 3; });
      },
      20s);
  REQUIRE(formed);
  return nodes;
}

}  // namespace

TEST_CASE("membership net: three nodes form a cluster in plaintext") {
  auto nodes = form_three("");
  for (const auto& n : nodes) CHECK(n->m->local_health() >= 0);
  CHECK(nodes[0]->count(brokerha::MemberEvent::Kind::join, "b") == 1);
  const auto v = nodes[2]->m->members();
  const auto a = std::find_if(v.begin(), v.end(), [](const auto& m) { return m.name == "a"; });
  REQUIRE(a != v.end());
  CHECK(a->address == "127.0.0.1");
  CHECK(a->port == nodes[0]->m->bound_port());
  CHECK(a->protocol_max == 5);
}

TEST_CASE("membership net: three nodes form a cluster with a secret key") {
  auto nodes = form_three(kKey);
  CHECK(nodes[0]->m->stats().dropped == 0);
}

TEST_CASE("membership net: user messages over UDP") {
  auto nodes = form_three(kKey);
  CHECK(!nodes[0]->m->send("b", "hello"));
  CHECK(nodes[0]->m->send("nobody", "x") == brokerha::errc::invalid_argument);
  CHECK(nodes[0]->m->send("b", std::string(4000, 'x')) == brokerha::errc::invalid_argument);
  CHECK(wait_until(
      [&] {
        std::lock_guard<std::mutex> lock(nodes[1]->mu);
        return !nodes[1]->messages.empty();
      },
      5s));
  std::lock_guard<std::mutex> lock(nodes[1]->mu);
  CHECK(nodes[1]->messages.front() == "hello");
}

TEST_CASE("membership net: reliable user messages over TCP") {
  auto nodes = form_three(kKey);
  // Larger than a UDP packet may be: send() refuses it, send_reliable() carries it.
  const std::string big(20000, 'r');
  CHECK(nodes[0]->m->send("c", big) == brokerha::errc::invalid_argument);
  CHECK(!nodes[0]->m->send_reliable("c", big));
  CHECK(nodes[0]->m->send_reliable("nobody", "x") == brokerha::errc::invalid_argument);
  CHECK(wait_until(
      [&] {
        std::lock_guard<std::mutex> lock(nodes[2]->mu);
        return !nodes[2]->messages.empty();
      },
      5s));
  std::lock_guard<std::mutex> lock(nodes[2]->mu);
  REQUIRE(nodes[2]->messages.size() == 1);
  CHECK(nodes[2]->messages.front() == big);
}

TEST_CASE("membership net: push-pull carries the user state both ways") {
  struct Seen {
    std::mutex mu;
    std::vector<std::pair<std::string, bool>> states;
  };
  auto seen_a = std::make_shared<Seen>();
  auto seen_b = std::make_shared<Seen>();
  auto make = [](const std::string& name, const std::shared_ptr<Seen>& seen) {
    auto m = std::make_unique<brokerha::Membership>(options(name, kKey));
    m->set_state_callbacks(
        [name](bool join) { return "state of " + name + (join ? " (join)" : ""); },
        [seen](std::string_view state, bool join) {
          std::lock_guard<std::mutex> lock(seen->mu);
          seen->states.emplace_back(std::string(state), join);
        });
    m->start();
    return m;
  };
  auto a = make("a", seen_a);
  auto b = make("b", seen_b);
  REQUIRE(b->join({"127.0.0.1:" + std::to_string(a->bound_port())}) == 1);
  auto got = [](Seen& s, const std::string& want) {
    std::lock_guard<std::mutex> lock(s.mu);
    return std::any_of(s.states.begin(), s.states.end(),
                       [&](const auto& st) { return st.first == want && st.second; });
  };
  // The join's push-pull: b sent its state to a, and a answered with its own.
  CHECK(wait_until([&] { return got(*seen_a, "state of b (join)"); }, 5s));
  CHECK(wait_until([&] { return got(*seen_b, "state of a (join)"); }, 5s));
  b->stop();
  a->stop();
}

TEST_CASE("membership net: a crashed node is marked failed") {
  auto nodes = form_three(kKey);
  nodes[2]->m->stop();  // no leave message: as a kill -9
  // SWIM/Lifeguard bound at these knobs is ~12 s (simulator); allow slack for sanitizers.
  const bool failed = wait_until(
      [&] {
        return nodes[0]->count(brokerha::MemberEvent::Kind::failed, "c") == 1 &&
               nodes[1]->count(brokerha::MemberEvent::Kind::failed, "c") == 1;
      },
      40s);
  CHECK(failed);
  CHECK(nodes[0]->count(brokerha::MemberEvent::Kind::leave, "c") == 0);
  CHECK(alive_count(*nodes[0]) == 2);
  CHECK(alive_count(*nodes[1]) == 2);
}

TEST_CASE("membership net: a graceful leave is seen as left") {
  auto nodes = form_three("");
  CHECK(!nodes[2]->m->leave(5s));
  nodes[2]->m->stop();
  const bool left = wait_until(
      [&] {
        return nodes[0]->count(brokerha::MemberEvent::Kind::leave, "c") == 1 &&
               nodes[1]->count(brokerha::MemberEvent::Kind::leave, "c") == 1;
      },
      20s);
  CHECK(left);
  CHECK(nodes[0]->count(brokerha::MemberEvent::Kind::failed, "c") == 0);
  CHECK(nodes[1]->count(brokerha::MemberEvent::Kind::failed, "c") == 0);
}

TEST_CASE("membership net: a node with the wrong key cannot join") {
  auto nodes = form_three(kKey);
  auto intruder = make_node("x", "fedcba9876543210");
  std::error_code ec;
  CHECK(intruder->m->join({seed_of(*nodes[0])}, ec) == 0);
  CHECK(ec);
  auto plain = make_node("y", "");
  CHECK(plain->m->join({seed_of(*nodes[1])}, ec) == 0);
  CHECK(ec);
  std::this_thread::sleep_for(1s);
  for (const auto& n : nodes) {
    CHECK(alive_count(*n) == 3);
    CHECK(!has_member(*n, "x"));
    CHECK(!has_member(*n, "y"));
  }
  CHECK(alive_count(*intruder) == 1);
  CHECK(nodes[0]->m->stats().dropped + nodes[1]->m->stats().dropped > 0);
}

TEST_CASE("membership net: a restarted node rejoins on a new port") {
  auto nodes = form_three("");
  const std::uint16_t old_port = nodes[2]->m->bound_port();
  nodes[2]->m->stop();
  CHECK(wait_until([&] { return nodes[0]->count(brokerha::MemberEvent::Kind::failed, "c") == 1; },
                   40s));
  nodes[2] = make_node("c", "");
  const std::uint16_t new_port = nodes[2]->m->bound_port();
  CHECK(new_port != old_port);
  CHECK(nodes[2]->m->join({seed_of(*nodes[1])}) == 1);
  const bool back = wait_until(
      [&] {
        return has_member(*nodes[0], "c", new_port) && has_member(*nodes[1], "c", new_port) &&
               alive_count(*nodes[2]) == 3;
      },
      20s);
  CHECK(back);
}

TEST_CASE("membership net: five nodes on distinct loopback addresses detect a crash") {
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < 5; ++i) {
    nodes.push_back(make_node("n" + std::to_string(i), kKey, "127.0.0." + std::to_string(11 + i)));
  }
  for (int i = 1; i < 5; ++i) {
    CHECK(nodes[static_cast<std::size_t>(i)]->m->join({seed_of(*nodes[0], "127.0.0.11")}) == 1);
  }
  REQUIRE(wait_until(
      [&] {
        return std::all_of(nodes.begin(), nodes.end(),
                           [](const auto& n) { return alive_count(*n) == 5; });
      },
      20s));
  const auto v = nodes[0]->m->members();
  const auto n3 = std::find_if(v.begin(), v.end(), [](const auto& m) { return m.name == "n3"; });
  REQUIRE(n3 != v.end());
  CHECK(n3->address == "127.0.0.14");
  nodes[3]->m->stop();
  CHECK(wait_until(
      [&] {
        for (std::size_t i = 0; i < 5; ++i) {
          if (i != 3 && nodes[i]->count(brokerha::MemberEvent::Kind::failed, "n3") != 1)
            return false;
        }
        return true;
      },
      40s));
}

TEST_CASE("membership net: a foreign TCP stream goes to the stream handler") {
  std::mutex mu;
  std::string first;
  brokerha::Membership m(options("router", ""));
  brokerha::membership::set_stream_handler(m, [&](int fd, std::string_view bytes) {
    {
      std::lock_guard<std::mutex> lock(mu);
      first = std::string(bytes);
    }
    const char reply[] = "ok";
    CHECK(::write(fd, reply, 2) == 2);
    ::close(fd);
  });
  m.start();

  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(s >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(m.bound_port());
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  REQUIRE(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  const std::string hello = "\xF0hello";
  REQUIRE(::send(s, hello.data(), hello.size(), 0) == static_cast<ssize_t>(hello.size()));
  pollfd p{s, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  char buf[16];
  const ssize_t n = ::recv(s, buf, sizeof buf, 0);
  ::close(s);
  CHECK(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))) == "ok");
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(first.substr(0, 1) == "\xF0");
  }
  CHECK(wait_until([&] { return m.stats().streams_routed == 1; }, 5s));  // snapshot lags a tick

  // Memberlist streams on the same port still work: a peer joins through it.
  auto peer = make_node("peer");
  CHECK(peer->m->join({"127.0.0.1:" + std::to_string(m.bound_port())}) == 1);
}

TEST_CASE("membership net: options and lifecycle errors") {
  brokerha::MembershipOptions o = options("", "");
  brokerha::Membership bad(o);
  std::error_code ec;
  bad.start(ec);
  CHECK(ec == brokerha::errc::invalid_argument);
  o = options("k", "short");
  brokerha::Membership bad_key(o);
  bad_key.start(ec);
  CHECK(ec == brokerha::errc::invalid_argument);

  auto n = make_node("solo");
  n->m->start(ec);
  CHECK(ec == brokerha::errc::already_started);
  CHECK(n->m->join({"not an address"}, ec) == 0);
  CHECK(ec == brokerha::errc::invalid_argument);
  n->m->stop();
  n->m->stop();  // idempotent
  CHECK(n->m->join({"127.0.0.1:1"}, ec) == 0);
  CHECK(ec == brokerha::errc::not_started);
}

// A process out of descriptors cannot accept the TCP streams waiting on the cluster port: the
// acceptor stays readable, and accepting again at once spun the membership thread (the one
// that answers probes). It backs off (10 ms doubling to 1 s) and counts each failure.
TEST_CASE("membership net: out of descriptors, the stream acceptor backs off and counts") {
  auto a = make_node("a");
  const auto errors_before = a->m->stats().accept_errors;
  const auto starved = brokerha::test::starve_listener(a->m->bound_port(), 4, 1000ms, [] {});
  // The stats snapshot is refreshed by the membership thread's next round.
  std::uint64_t errors = 0;
  wait_until(
      [&] {
        errors = a->m->stats().accept_errors - errors_before;
        return errors >= 1;
      },
      3s);
  INFO("connected " << starved.connected << ", CPU " << starved.cpu_us
                    << " us in 1 s, accept errors " << errors);
  CHECK(starved.connected == 4);
  CHECK(errors >= 1);
  CHECK(errors <= 20);
  CHECK(starved.cpu_us < 300000);
}
