// SPDX-License-Identifier: Apache-2.0
#pragma once
// Drives protocol::ClientProtocol without sockets or threads: a one-shard broker made of the
// real protocol-layer parts (router, session registry, access control), and test clients
// whose Host is this harness. A client sends packets (encoded and fed as bytes), the harness
// delivers what routing produced when flush() runs, and a client's received() decodes what the
// protocol queued for it. Time is whatever the test passes to tick().
//
// Cluster mode (clustered = true) answers claims and route waits only when the test says so
// (answer_claims(), answer_routes()), so a test can look at the state in between.

#include <doctest/doctest.h>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "access/control.hpp"
#include "mqtt/codec.hpp"
#include "protocol/client_protocol.hpp"
#include "registry/session_registry.hpp"
#include "router/router.hpp"

namespace brokerha::test {

using Clock = std::chrono::steady_clock;

class ProtocolBroker {
 public:
  explicit ProtocolBroker(BrokerOptions o = {}, bool clustered = false)
      : options(std::move(o)),
        router(router_options(clustered)),
        access(access::Rules::compile(options.access)),
        outbox(1),
        limits(options),
        sessions(registry::SessionRegistry::Context{
            0, router, access, counters, outbox, options.max_queued_messages,
            [this] { flush_wanted = true; }, &limits.max_session_queued_bytes}),
        context{0, 1, options, router, sessions, access, counters, outbox, limits} {}

  /// Delivers what routing queued (the runtime's flush on one shard).
  void flush() {
    flush_wanted = false;
    std::vector<router::Target> batch;
    batch.swap(outbox.deliveries[0]);
    for (router::Target& t : batch) sessions.deliver(t);
    routes_announced.insert(routes_announced.end(), outbox.route_changes.begin(),
                            outbox.route_changes.end());
    outbox.route_changes.clear();
    forwarded.insert(forwarded.end(), outbox.remote.begin(), outbox.remote.end());
    outbox.remote.clear();
  }

  BrokerOptions options;
  router::Router router;
  access::Control access;
  router::Counters counters;
  router::Outbox outbox;
  protocol::Limits limits;  // the live limits (set from `options`; a test may change them)
  registry::SessionRegistry sessions;
  protocol::ShardContext context;
  bool flush_wanted = false;
  std::vector<std::string> routes_announced;  // cluster mode: route changes flushed
  std::vector<router::RemoteSend> forwarded;  // cluster mode: messages for other nodes

  // Cluster mode: what the protocols asked of the cluster, answered by the test.
  std::vector<std::pair<std::string, std::function<void(router::ClaimResult)>>> claims;
  std::vector<std::function<void()>> route_waits;

 private:
  static router::Router::Options router_options(bool clustered) {
    router::Router::Options r;
    r.clustered = clustered;
    r.node_name = clustered ? "n1" : "";
    return r;
  }
};

class ProtocolClient final : public protocol::Host {
 public:
  ProtocolClient(ProtocolBroker& broker, mqtt::ProtocolVersion version,
                 Clock::time_point now = Clock::now())
      : broker_(broker),
        version_(version),
        keep_(std::make_shared<int>(0)),
        protocol_(*this, broker.options.max_packet_size, now) {
    protocol_.set_peer("127.0.0.1", 40000);
  }

  protocol::ClientProtocol& protocol() { return protocol_; }

  /// Encodes `p` as this client's version and feeds it; then runs the broker's flush.
  bool send(const mqtt::Packet& p, Clock::time_point now = Clock::now()) {
    std::string bytes;
    REQUIRE(mqtt::encode(p, version_, bytes));
    return send_bytes(bytes, now);
  }
  bool send_bytes(std::string_view bytes, Clock::time_point now = Clock::now()) {
    const bool more = protocol_.on_bytes(bytes, now);
    run();
    return more;
  }
  /// Runs what was posted, then the broker's flush, until nothing is left.
  void run() {
    for (int i = 0; i < 100 && (!posted_.empty() || broker_.flush_wanted ||
                                !broker_.outbox.deliveries[0].empty());
         ++i) {
      std::deque<std::function<void()>> now;
      now.swap(posted_);
      for (auto& f : now) f();
      broker_.flush();
    }
  }

  /// Packets the protocol queued since the last call, decoded; the queue is taken as the
  /// driver would take it (and written at once).
  std::vector<mqtt::Packet> received() {
    std::vector<mqtt::Packet> out;
    if (protocol::OutputQueue* q = protocol_.output()) {
      std::vector<protocol::Chunk> chunks;
      std::string own;
      q->take(chunks, own);
      std::string bytes;
      for (const protocol::Chunk& c : chunks) {
        bytes += c.shared != nullptr ? *c.shared : own.substr(c.begin, c.end - c.begin);
      }
      protocol_.written(bytes.size());
      mqtt::Framer framer;
      const mqtt::Status s = framer.feed(bytes, [&](std::uint8_t first, std::string_view body) {
        frames_.push_back(std::string(1, static_cast<char>(first)) + std::string(body));
        const std::string& f = frames_.back();
        mqtt::Packet p;
        const mqtt::Status d = mqtt::decode(static_cast<std::uint8_t>(f[0]),
                                            std::string_view(f).substr(1), version_, p);
        REQUIRE(d.ok());
        out.push_back(std::move(p));
        return mqtt::Status::success();
      });
      REQUIRE(s.ok());
    }
    return out;
  }
  /// Every packet received so far, as bytes (first byte, then the body): DUP and other flags.
  const std::deque<std::string>& frames() const { return frames_; }

  bool socket_closed() const { return socket_closed_; }
  bool close_requested() const { return close_requested_; }
  int ws_close_code() const { return ws_code_; }
  unsigned resumes() const { return resumes_; }
  std::optional<std::string> certificate;  // what certificate_username() answers

  // ---- protocol::Host ----
  protocol::ShardContext& shard() override { return broker_.context; }
  void output_ready() override {}
  void close_socket() override { socket_closed_ = true; }
  void close_when_written(int ws_close_code) override {
    close_requested_ = true;
    ws_code_ = ws_close_code;
    if (!protocol_.has_output()) protocol_.close();
  }
  void post(std::function<void()> f) override { posted_.push_back(std::move(f)); }
  void resumed() override { ++resumes_; }
  void place(std::shared_ptr<protocol::ConnectInfo> info) override {
    protocol_.placed(std::move(info));
  }
  bool claim(const std::string& client_id, bool,
             std::function<void(router::ClaimResult)> done) override {
    if (!broker_.router.clustered()) return false;
    broker_.claims.emplace_back(client_id, std::move(done));
    return true;
  }
  bool await_routes(std::vector<std::string> filters, std::function<void()> done) override {
    if (!broker_.router.clustered() || (filters.empty() && broker_.outbox.route_changes.empty())) {
      return false;
    }
    broker_.routes_announced.insert(broker_.routes_announced.end(),
                                    broker_.outbox.route_changes.begin(),
                                    broker_.outbox.route_changes.end());
    broker_.outbox.route_changes.clear();
    broker_.route_waits.push_back(std::move(done));
    return true;
  }
  router::RouteResult publish(const message::MessagePtr& m, std::uint16_t) override {
    const router::RouteResult r = broker_.router.route(m, broker_.outbox);
    broker_.flush_wanted = true;
    return r;
  }
  std::optional<std::string> certificate_username() override { return certificate; }
  std::shared_ptr<void> hold() override { return keep_; }

 private:
  ProtocolBroker& broker_;
  mqtt::ProtocolVersion version_;
  std::shared_ptr<int> keep_;
  std::deque<std::function<void()>> posted_;
  std::deque<std::string> frames_;
  bool socket_closed_ = false;
  bool close_requested_ = false;
  int ws_code_ = 0;
  unsigned resumes_ = 0;
  protocol::ClientProtocol protocol_;  // last: destroyed first, while the rest is alive
};

}  // namespace brokerha::test
