// SPDX-License-Identifier: Apache-2.0
#pragma once
// The JSON of a message in broker-ha's shape (docs/api.md), written without a JSON
// library because the broker core renders it for the bus even when the HTTP API is not built:
//
//   {"TopicName":"a/b","Payload":"<base64>","FixedHeader":{"qos":1,"retain":false,"dup":false},
//    "PacketID":0,"Created":<unix s>,"Expiry":<unix s, 0 = none>,"Origin":"<client id>",
//    "ProtocolVersion":5,"Properties":{...}}
//
// Properties use the Go field names of broker-ha's packets (PayloadFormat, PayloadFormatFlag,
// ContentType, ResponseTopic, CorrelationData (base64), User [{"k","v"}]); absent ones are
// left out.

#include <brokerha/broker.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "message/message.hpp"

namespace brokerha::bus {

/// What the renderer needs of a message (views; the owner outlives the call).
struct MessageView {
  std::string_view topic;
  std::string_view payload;
  int qos = 0;
  bool retain = false;
  bool dup = false;
  std::uint16_t packet_id = 0;
  std::chrono::system_clock::time_point created{};
  std::int64_t expiry_unix = 0;  // absolute expiry time, unix seconds; 0 = none
  std::string_view origin;
  int protocol_version = 0;  // of the publisher; 0 = not known
  std::optional<int> payload_format;
  std::optional<std::string_view> content_type;
  std::optional<std::string_view> response_topic;
  std::optional<std::string_view> correlation_data;
  const std::vector<std::pair<std::string, std::string>>* user_properties = nullptr;
};

/// A view of a snapshot message; `now` turns its remaining expiry into an absolute time.
MessageView view_of(const MessageInfo& m, std::chrono::system_clock::time_point now);

/// A view of a message the broker routes (publisher's protocol version and packet id unset).
MessageView view_of(const message::Message& m);

/// Appends the message object to `out`. `extra` (may be empty) is inserted verbatim before
/// the closing brace, e.g. `,"Nodes":[]`.
void append_message_json(std::string& out, const MessageView& m, std::string_view extra = {});

/// Appends `s` as a JSON string (quoted, escaped; bytes that are not UTF-8 pass through).
void append_json_string(std::string& out, std::string_view s);

/// The JSON of a `cluster:message_to` event: the message (with its publisher's protocol
/// version and packet id) and the names of the nodes it went to.
std::string render_message_to(const message::Message& m, int protocol_version,
                              std::uint16_t packet_id, const std::vector<std::string>& nodes);

}  // namespace brokerha::bus
