// SPDX-License-Identifier: Apache-2.0
// An outside program using an installed (or add_subdirectory'd) brokerha: it must compile against
// the public headers, link and run against the library. It uses every public component the way
// docs/embedding.md shows, on loopback only:
//   - the version check (headers vs library);
//   - Broker with an AuthHook, an AclHook, an EventHook and a Bus: a tiny MQTT
//     3.1.1 client connects (the auth hook admits it), publishes (the ACL hook is asked, the
//     bus carries a copy on cluster:message_to), and a second client is refused by the hook;
//   - Membership: two members on free loopback ports join each other and leave;
//   - Discovery: a static member list is reported to the callback.
// Prints "brokerha <version>" on success (scripts/test-install.sh checks it); any failure
// exits 1 naming the step.
#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/discovery.hpp>
#include <brokerha/hooks.hpp>
#include <brokerha/membership.hpp>
#include <brokerha/options.hpp>
#include <brokerha/version.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "consumer: FAIL: %s\n", what.c_str());
  std::exit(1);
}

// Admits one client id; runs on the client's I/O thread and answers inline.
class OneClientAuth : public brokerha::AuthHook {
 public:
  std::atomic<int> calls{0};
  void authenticate(const brokerha::AuthRequest& request,
                    std::function<void(brokerha::Decision)> done) override {
    ++calls;
    done(request.client_id == "consumer-client" ? brokerha::Decision::allow
                                                : brokerha::Decision::deny);
  }
};

// Records the write checks and otherwise defers to the built-in rules (anonymous: allow).
class RecordingAcl : public brokerha::AclHook {
 public:
  std::atomic<int> writes{0};
  void check(const brokerha::AclRequest& request,
             std::function<void(brokerha::Decision)> done) override {
    if (request.access == brokerha::Access::write && request.topic == "consumer/topic") ++writes;
    done(brokerha::Decision::defer);
  }
  brokerha::Decision check_delivery(const brokerha::AclRequest&) noexcept override {
    return brokerha::Decision::defer;
  }
};

class CountingEvents : public brokerha::EventHook {
 public:
  std::atomic<int> connects{0};
  void on_connect(const brokerha::ClientEvent&) override { ++connects; }
};

// MQTT 3.1.1 over a blocking loopback socket: just enough to CONNECT and PUBLISH at QoS 0.
std::string mqtt_string(const std::string& s) {
  std::string out;
  out += static_cast<char>((s.size() >> 8) & 0xFF);
  out += static_cast<char>(s.size() & 0xFF);
  return out + s;
}

std::string mqtt_packet(unsigned char type, const std::string& body) {
  std::string out(1, static_cast<char>(type));
  std::size_t n = body.size();
  do {
    unsigned char byte = static_cast<unsigned char>(n % 128);
    n /= 128;
    if (n > 0) byte = static_cast<unsigned char>(byte | 0x80);
    out += static_cast<char>(byte);
  } while (n > 0);
  return out + body;
}

// Connects as `client_id`; returns the socket and the CONNACK return code.
std::pair<int, int> mqtt_connect(std::uint16_t port, const std::string& client_id) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("socket()");
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    fail("connect to the broker");
  }
  const std::string connect = mqtt_packet(
      0x10, mqtt_string("MQTT") + std::string("\x04\x02\x00\x3c", 4) + mqtt_string(client_id));
  if (::send(fd, connect.data(), connect.size(), 0) != static_cast<ssize_t>(connect.size())) {
    fail("send CONNECT");
  }
  unsigned char connack[4] = {};
  std::size_t got = 0;
  while (got < sizeof connack) {
    const ssize_t n = ::recv(fd, connack + got, sizeof connack - got, 0);
    if (n <= 0) fail("no CONNACK for " + client_id);
    got += static_cast<std::size_t>(n);
  }
  if (connack[0] != 0x20 || connack[1] != 2) fail("not a CONNACK");
  return {fd, connack[3]};
}

template <typename Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

void check_broker() {
  auto auth = std::make_shared<OneClientAuth>();
  auto acl = std::make_shared<RecordingAcl>();
  auto events = std::make_shared<CountingEvents>();
  auto bus = std::make_shared<brokerha::Bus>();
  auto tap = bus->subscribe({std::string(brokerha::bus_channels::kMessageTo)}, 16);

  brokerha::BrokerOptions opts;
  opts.listeners.push_back({/*bind*/ "127.0.0.1", /*port*/ 0});
  opts.io_threads = 1;
  brokerha::Broker broker(opts);
  broker.add_auth_hook(auth);
  broker.add_acl_hook(acl);
  broker.add_event_hook(events);
  broker.set_bus(bus);
  std::error_code ec;
  broker.start(ec);
  if (ec) fail("broker start: " + ec.message());
  const std::vector<brokerha::Endpoint> eps = broker.listen_endpoints();
  if (eps.size() != 1 || eps[0].port == 0) fail("no bound port");

  const auto [refused_fd, refused_rc] = mqtt_connect(eps[0].port, "intruder");
  ::close(refused_fd);
  if (refused_rc == 0) fail("the auth hook's deny was not applied");

  const auto [fd, rc] = mqtt_connect(eps[0].port, "consumer-client");
  if (rc != 0) fail("the auth hook's allow was not applied (CONNACK " + std::to_string(rc) + ")");
  const std::string publish = mqtt_packet(0x30, mqtt_string("consumer/topic") + "hello");
  const std::string disconnect("\xe0\x00", 2);
  if (::send(fd, publish.data(), publish.size(), 0) != static_cast<ssize_t>(publish.size()) ||
      ::send(fd, disconnect.data(), disconnect.size(), 0) != 2) {
    fail("send PUBLISH");
  }
  const std::optional<brokerha::BusEvent> event = tap->pop(std::chrono::seconds(5));
  ::close(fd);
  if (!event || event->channel != brokerha::bus_channels::kMessageTo ||
      event->data.find("consumer/topic") == std::string::npos) {
    fail("no cluster:message_to event on the bus for the publish");
  }
  if (auth->calls.load() != 2) fail("the auth hook ran " + std::to_string(auth->calls) + " times");
  if (acl->writes.load() != 1) fail("the ACL hook was not asked for the publish");
  if (events->connects.load() != 1) fail("the event hook saw no connect");
  broker.stop();
  broker.stop();  // idempotent
}

void check_membership() {
  brokerha::MembershipOptions a;
  a.name = "consumer-a";
  a.bind_address = "127.0.0.1";
  a.port = 0;
  brokerha::MembershipOptions b = a;
  b.name = "consumer-b";
  std::atomic<int> joins{0};
  brokerha::Membership ma(a);
  ma.set_event_callback([&](const brokerha::MemberEvent& e) {
    if (e.kind == brokerha::MemberEvent::Kind::join && e.member.name == "consumer-b") ++joins;
  });
  brokerha::Membership mb(b);
  std::error_code ec;
  ma.start(ec);
  if (!ec) mb.start(ec);
  if (ec) fail("membership start: " + ec.message());
  const int answered = mb.join({"127.0.0.1:" + std::to_string(ma.bound_port())}, ec);
  if (ec || answered != 1) fail("membership join: " + ec.message());
  if (!wait_until([&] { return ma.members().size() == 2 && mb.members().size() == 2; },
                  std::chrono::seconds(10))) {
    fail("the two members did not see each other");
  }
  if (joins.load() != 1) fail("no join event for consumer-b");
  mb.leave(std::chrono::seconds(2));
  mb.stop();
  ma.stop();
}

void check_discovery() {
  brokerha::DiscoveryOptions o;
  o.members = {"127.0.0.1:7001"};
  brokerha::Discovery discovery(o);
  std::mutex m;
  std::condition_variable cv;
  std::optional<brokerha::DiscoveryResult> first;
  discovery.set_callback([&](const brokerha::DiscoveryResult& r) {
    std::lock_guard<std::mutex> lock(m);
    if (!first) first = r;
    cv.notify_all();
  });
  discovery.start();
  {
    std::unique_lock<std::mutex> lock(m);
    if (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return first.has_value(); })) {
      fail("discovery reported nothing");
    }
  }
  discovery.stop();
  if (!first->ok || first->peers.size() != 1 || first->peers[0].address != "127.0.0.1" ||
      first->peers[0].port != 7001) {
    fail("discovery result: " + first->error);
  }
}

}  // namespace

int main() {
  const char* linked = brokerha::library_version();
  if (std::strcmp(linked, brokerha::version_string) != 0) {
    std::fprintf(stderr, "headers are %s but the library is %s\n", brokerha::version_string,
                 linked);
    return 1;
  }
  check_broker();
  check_membership();
  check_discovery();
  std::fprintf(stderr, "consumer: broker + hooks + bus, membership, discovery: ok\n");
  std::printf("brokerha %s\n", linked);
  return 0;
}
