// SPDX-License-Identifier: Apache-2.0
#pragma once
// An in-process brokerha::Broker for integration tests, plus bounded waiting and the
// snapshot queries the tests poll. Header-only.
//
//   brokerha::test::TestBroker tb;                  // 127.0.0.1, port 0, two I/O threads
//   brokerha::test::TestBroker tb(options, [](brokerha::Broker& b) { b.add_acl_hook(h); });
//   wait_until([&] { return has_subscription(tb.broker, "id", "a/#"); }, 3s);
//
// Two I/O threads by default, so that connections migrate between shards (a client id
// usually hashes to a shard other than the one that accepted the socket).
//
// Thread safety: a TestBroker is used by the test's thread; Broker's own API is thread-safe.

#include <brokerha/broker.hpp>
#include <brokerha/options.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "mqtt/packet.hpp"

namespace brokerha::test {

/// Polls `pred` every `step` until it is true or `timeout` has passed; returns its last value.
template <class Pred>
bool wait_until(Pred&& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(step);
  }
}

/// Stops brokers on background threads, so that a test does not wait for a broker's stop()
/// (which takes its full shutdown grace period, about 2 s, even when no client is left).
/// The threads are joined when the program exits, or by join_all().
class BackgroundStopper {
 public:
  static BackgroundStopper& instance() {
    static BackgroundStopper stopper;
    return stopper;
  }
  void stop(std::unique_ptr<Broker> broker) {
    std::lock_guard<std::mutex> lock(mutex_);
    threads_.emplace_back([b = std::move(broker)]() mutable {
      b->stop();
      b.reset();
    });
  }
  void join_all() {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      threads.swap(threads_);
    }
    for (std::thread& t : threads) t.join();
  }
  ~BackgroundStopper() { join_all(); }

 private:
  BackgroundStopper() = default;
  std::mutex mutex_;
  std::vector<std::thread> threads_;
};

/// A started broker on 127.0.0.1 (port 0). The destructor stops it in the background
/// (BackgroundStopper) unless stop() stopped it already. Every client of the test must be
/// gone before (declare the TestBroker first), and hooks must own what they use.
struct TestBroker {
  explicit TestBroker(BrokerOptions options = {},
                      const std::function<void(Broker&)>& setup = nullptr)
      : owned_(std::make_unique<Broker>(prepare(std::move(options)))), broker(*owned_) {
    if (setup) setup(broker);
    broker.start();
    port = broker.listen_endpoints().at(0).port;
  }
  ~TestBroker() {
    if (owned_) BackgroundStopper::instance().stop(std::move(owned_));
  }
  TestBroker(const TestBroker&) = delete;
  TestBroker& operator=(const TestBroker&) = delete;

  /// Stops the broker now (synchronously).
  void stop() { broker.stop(); }

  std::string port_string() const { return std::to_string(port); }

 private:
  std::unique_ptr<Broker> owned_;

 public:
  Broker& broker;
  std::uint16_t port = 0;

 private:
  static BrokerOptions prepare(BrokerOptions o) {
    o.listeners.clear();
    o.listeners.push_back({"127.0.0.1", 0});
    if (o.io_threads == 0) o.io_threads = 2;
    return o;
  }
};

/// The session of `id`, if the broker has one.
inline std::optional<ClientInfo> find_client(const Broker& b, std::string_view id) {
  for (ClientInfo& c : b.clients()) {
    if (c.id == id) return std::move(c);
  }
  return std::nullopt;
}

/// True when `id` is connected.
inline bool is_connected(const Broker& b, std::string_view id) {
  const auto c = find_client(b, id);
  return c && c->connected;
}

/// True when `id` has a subscription to `full_filter` (as subscribed, "$share/..." included).
inline bool has_subscription(const Broker& b, std::string_view id, const std::string& full_filter) {
  const auto c = find_client(b, id);
  return c && c->subscriptions.count(full_filter) != 0;
}

/// Deliveries of `id` in flight plus queued (0 when there is no such session).
inline std::size_t pending_deliveries(const Broker& b, std::string_view id) {
  const auto c = find_client(b, id);
  return c ? c->inflight + c->queued : 0;
}

/// "mqttv31" / "mqttv311" / "mqttv5": the -V argument of mosquitto_pub / mosquitto_sub.
inline const char* mosquitto_version(mqtt::ProtocolVersion v) {
  switch (v) {
    case mqtt::ProtocolVersion::v31:
      return "mqttv31";
    case mqtt::ProtocolVersion::v311:
      return "mqttv311";
    case mqtt::ProtocolVersion::v5:
      return "mqttv5";
  }
  return "mqttv311";
}

/// "3.1" / "3.1.1" / "5.0" for messages.
inline std::string version_name(mqtt::ProtocolVersion v) {
  switch (v) {
    case mqtt::ProtocolVersion::v31:
      return "3.1";
    case mqtt::ProtocolVersion::v311:
      return "3.1.1";
    case mqtt::ProtocolVersion::v5:
      return "5.0";
  }
  return "?";
}

inline constexpr mqtt::ProtocolVersion kAllVersions[] = {
    mqtt::ProtocolVersion::v31, mqtt::ProtocolVersion::v311, mqtt::ProtocolVersion::v5};

/// The lines of `text` (without their '\n'); a last line without '\n' counts too.
inline std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    lines.emplace_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

/// True when `text` has a line equal to `line`.
inline bool has_line(std::string_view text, std::string_view line) {
  for (const std::string& l : split_lines(text)) {
    if (l == line) return true;
  }
  return false;
}

/// The value of the first line "key=value" of `text`, or nullopt.
inline std::optional<std::string> line_value(std::string_view text, std::string_view key) {
  for (const std::string& l : split_lines(text)) {
    if (l.size() > key.size() && l.compare(0, key.size(), key) == 0 && l[key.size()] == '=') {
      return l.substr(key.size() + 1);
    }
  }
  return std::nullopt;
}

}  // namespace brokerha::test
