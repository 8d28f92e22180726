// SPDX-License-Identifier: Apache-2.0
// Broker::drain() on a single node (docs/cluster.md): the listeners close, v5 clients
// get DISCONNECT 0x8B and v3.1.1 clients are closed, /ready answers 503, and drain() composes
// with stop() and the destructor. The cluster steps (sessions, links, leave) are tested with
// real processes in tests/processes/cluster_failure_test.cpp.

#include <brokerha/api.hpp>
#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>

#include <doctest/doctest.h>
#include <httplib.h>

#include <chrono>
#include <memory>
#include <thread>

#include "support/broker_fixture.hpp"
#include "support/broker_mqtt_client.hpp"

namespace {

using namespace std::chrono_literals;
using brokerha::test::make_connect;
using brokerha::test::MqttClient;
namespace mqtt = brokerha::mqtt;
using mqtt::ProtocolVersion;

}  // namespace

TEST_CASE("drain: a single node disconnects its clients and stops accepting") {
  auto bus = std::make_shared<brokerha::Bus>();
  brokerha::test::TestBroker tb({}, [&](brokerha::Broker& b) { b.set_bus(bus); });
  brokerha::ApiOptions ao;
  ao.bind = "127.0.0.1";
  ao.port = 0;
  ao.node_name = "single";
  brokerha::ApiServer api(ao, tb.broker, *bus);
  api.start();
  httplib::Client http("127.0.0.1", api.port());
  http.set_connection_timeout(5);
  http.set_read_timeout(10);
  REQUIRE(http.Get("/ready"));
  CHECK(http.Get("/ready")->status == 200);

  MqttClient v5(ProtocolVersion::v5), v3(ProtocolVersion::v311), kept(ProtocolVersion::v5);
  REQUIRE(v5.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "d5")) == 0);
  REQUIRE(v3.open_and_connect(tb.port, make_connect(ProtocolVersion::v311, "d3")) == 0);
  mqtt::Connect persistent = make_connect(ProtocolVersion::v5, "kept", false);
  persistent.properties.session_expiry_interval = 600;
  REQUIRE(kept.open_and_connect(tb.port, persistent) == 0);
  CHECK_FALSE(tb.broker.draining());

  // Single node: no peer can take the persistent session, so nothing is waited for.
  tb.broker.drain(10s);
  CHECK(tb.broker.draining());

  for (MqttClient* c : {&v5, &kept}) {
    const auto seen = c->wait_closed(5s);
    REQUIRE(seen);
    REQUIRE(seen->size() == 1);
    const auto* d = seen->front().as<mqtt::Disconnect>();
    REQUIRE(d != nullptr);
    CHECK(d->reason_code == brokerha::ReasonCode::server_shutting_down);
  }
  const auto seen3 = v3.wait_closed(5s);
  REQUIRE(seen3);
  CHECK(seen3->empty());  // MQTT 3.1.1 has no DISCONNECT from the server

  // Nobody is accepted any more, and the probe says so.
  MqttClient late(ProtocolVersion::v5);
  CHECK(late.open_and_connect(tb.port, make_connect(ProtocolVersion::v5, "late")) == -1);
  auto ready = http.Get("/ready");
  REQUIRE(ready);
  CHECK(ready->status == 503);
  CHECK(ready->body.find("draining") != std::string::npos);
  auto live = http.Get("/healthz");
  REQUIRE(live);
  CHECK(live->status == 200);
  auto metrics = http.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("\nbroker_draining 1\n") != std::string::npos);

  api.stop();
  // stop() after drain() is a no-op; so is a second drain().
  tb.broker.stop();
  tb.broker.drain(1s);
  tb.broker.stop();
}

TEST_CASE("drain: before start it does nothing and stop from another thread is safe") {
  brokerha::BrokerOptions o;
  o.listeners.push_back({"127.0.0.1", 0});
  o.io_threads = 2;
  {
    brokerha::Broker idle(o);
    idle.drain(1s);  // never started: nothing to do
    CHECK_FALSE(idle.draining());
  }
  brokerha::Broker b(o);
  b.start();
  MqttClient c(ProtocolVersion::v5);
  REQUIRE(c.open_and_connect(b.listen_endpoints().at(0).port,
                             make_connect(ProtocolVersion::v5, "racer")) == 0);
  std::thread stopper([&] { b.stop(); });
  b.drain(5s);
  stopper.join();
  CHECK(c.wait_closed(5s).has_value());
  // The destructor stops again: idempotent.
}
