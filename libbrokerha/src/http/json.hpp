// SPDX-License-Identifier: Apache-2.0
#pragma once
// The JSON of the HTTP API (docs/api.md): RapidJSON writer helpers, the error body, request
// body checking, and broker-ha's shapes of messages and subscriptions.
//
// Plain functions of their arguments, no state: they run on whichever of cpp-httplib's request
// pool threads calls them, concurrently.

#include <brokerha/broker.hpp>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace brokerha::http {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void write_string(JsonWriter& w, std::string_view s);

/// The body of an error reply: {"status":"Invalid request." (4xx) or "Unable to perform
/// request." (5xx),"error":"<error>"}.
std::string error_json(int status, std::string_view error);

// ---- request bodies ----------------------------------------------------------------------------

enum class FieldType { string, string_array, unsigned_int };

struct BodyField {
  const char* name;
  FieldType type;
};

/// Parses a JSON object body with only `fields` (each optional, of its type) into `doc`.
/// `content_type` is the request's Content-Type header ("" when absent). Returns an error
/// message, or "" when `doc` holds a valid body.
std::string parse_body(std::string_view content_type, std::string_view body,
                       rapidjson::Document& doc, std::initializer_list<BodyField> fields);

/// A string field of a body parse_body() accepted; "" when absent.
std::string string_field(const rapidjson::Document& doc, const char* name);

// ---- broker-ha's shapes ------------------------------------------------------------------------

/// A JSON array of messages (bus/message_json.hpp's shape).
std::string messages_json(const std::vector<MessageInfo>& messages);

/// {"<id>": <subscription>, ...}, a subscription as broker-ha (mochi-mqtt) renders it.
void write_subscription_map(JsonWriter& w, const std::map<std::string, SubscriptionInfo>& m);

}  // namespace brokerha::http
