// SPDX-License-Identifier: Apache-2.0
// The Eclipse Paho C client (libpaho-mqtt-dev, synchronous MQTTClient API, -lpaho-mqtt3c)
// against an in-process broker: connect, subscribe QoS 2, publish QoS 2, receive it,
// disconnect; for MQTT 3.1, 3.1.1 and 5.0.
//
// Compiled only when the build links paho-mqtt3c and says so with BROKERHA_HAVE_PAHO_C
// (and the header is there); otherwise this file is empty.

#if defined(BROKERHA_HAVE_PAHO_C) && __has_include(<MQTTClient.h>)

#include <MQTTClient.h>
#include <doctest/doctest.h>

#include <string>

#include "support/broker_fixture.hpp"

TEST_CASE("paho C MQTTClient: subscribe QoS 2, publish QoS 2, receive it") {
  brokerha::test::TestBroker tb;
  const std::string uri = "tcp://127.0.0.1:" + tb.port_string();
  struct Version {
    int paho;
    const char* name;
  };
  for (const Version v : {Version{MQTTVERSION_3_1, "3.1"}, Version{MQTTVERSION_3_1_1, "3.1.1"},
                          Version{MQTTVERSION_5, "5.0"}}) {
    CAPTURE(std::string(v.name));
    const bool v5 = v.paho == MQTTVERSION_5;
    const std::string id = std::string("paho-c-") + v.name;
    const std::string topic = std::string("pahoc/") + v.name;
    const std::string payload = std::string("hello from paho C ") + v.name;

    MQTTClient client = nullptr;
    MQTTClient_createOptions create = MQTTClient_createOptions_initializer;
    create.MQTTVersion = v.paho;
    REQUIRE(MQTTClient_createWithOptions(&client, uri.c_str(), id.c_str(),
                                         MQTTCLIENT_PERSISTENCE_NONE, nullptr,
                                         &create) == MQTTCLIENT_SUCCESS);
    MQTTClient_connectOptions opts = MQTTClient_connectOptions_initializer;
    MQTTClient_connectOptions opts5 = MQTTClient_connectOptions_initializer5;
    MQTTClient_connectOptions& o = v5 ? opts5 : opts;
    o.keepAliveInterval = 20;
    o.MQTTVersion = v.paho;
    if (!v5) o.cleansession = 1;
    if (v5) {
      MQTTResponse r = MQTTClient_connect5(client, &o, nullptr, nullptr);
      CHECK(r.reasonCode == MQTTREASONCODE_SUCCESS);
      MQTTResponse_free(r);
    } else {
      CHECK(MQTTClient_connect(client, &o) == MQTTCLIENT_SUCCESS);
    }
    REQUIRE(MQTTClient_isConnected(client));

    if (v5) {
      MQTTResponse r = MQTTClient_subscribe5(client, topic.c_str(), 2, nullptr, nullptr);
      CHECK(static_cast<int>(r.reasonCode) == 2);  // granted QoS 2
      MQTTResponse_free(r);
    } else {
      char* topics[] = {const_cast<char*>(topic.c_str())};
      int granted = 2;  // in: requested; out: granted
      CHECK(MQTTClient_subscribeMany(client, 1, topics, &granted) == MQTTCLIENT_SUCCESS);
      CHECK(granted == 2);
    }
    CHECK(brokerha::test::has_subscription(tb.broker, id, topic));

    MQTTClient_message msg = MQTTClient_message_initializer;
    msg.payload = const_cast<char*>(payload.data());
    msg.payloadlen = static_cast<int>(payload.size());
    msg.qos = 2;
    msg.retained = 0;
    MQTTClient_deliveryToken token = 0;
    if (v5) {
      MQTTResponse r = MQTTClient_publishMessage5(client, topic.c_str(), &msg, &token);
      CHECK(r.reasonCode == MQTTREASONCODE_SUCCESS);
      MQTTResponse_free(r);
    } else {
      CHECK(MQTTClient_publishMessage(client, topic.c_str(), &msg, &token) == MQTTCLIENT_SUCCESS);
    }
    CHECK(MQTTClient_waitForCompletion(client, token, 5000) == MQTTCLIENT_SUCCESS);

    char* got_topic = nullptr;
    int got_topic_len = 0;
    MQTTClient_message* got = nullptr;
    const int rc = MQTTClient_receive(client, &got_topic, &got_topic_len, &got, 5000);
    CHECK(rc == MQTTCLIENT_SUCCESS);
    REQUIRE(got != nullptr);
    const std::string received_topic =
        got_topic_len > 0 ? std::string(got_topic, static_cast<std::size_t>(got_topic_len))
                          : std::string(got_topic);
    CHECK(received_topic == topic);
    CHECK(std::string(static_cast<const char*>(got->payload),
                      static_cast<std::size_t>(got->payloadlen)) == payload);
    CHECK(got->qos == 2);
    CHECK(got->retained == 0);
    CHECK(got->dup == 0);
    MQTTClient_freeMessage(&got);
    MQTTClient_free(got_topic);

    if (v5) {
      CHECK(MQTTClient_disconnect5(client, 1000, MQTTREASONCODE_SUCCESS, nullptr) ==
            MQTTCLIENT_SUCCESS);
    } else {
      CHECK(MQTTClient_disconnect(client, 1000) == MQTTCLIENT_SUCCESS);
    }
    MQTTClient_destroy(&client);
    CHECK(brokerha::test::wait_until([&] { return !brokerha::test::find_client(tb.broker, id); },
                                     std::chrono::seconds(5)));
  }
}

#endif  // BROKERHA_HAVE_PAHO_C && __has_include(<MQTTClient.h>)
