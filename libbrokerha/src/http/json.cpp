// SPDX-License-Identifier: Apache-2.0
// The JSON of the HTTP API: writer helpers, the error body, request bodies and broker-ha's
// message and subscription shapes (json.hpp). Stateless; runs on cpp-httplib's request pool
// threads.

#include "http/json.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>

#include "bus/message_json.hpp"

namespace brokerha::http {

void write_string(JsonWriter& w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

std::string error_json(int status, std::string_view error) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("status");
  w.String(status < 500 ? "Invalid request." : "Unable to perform request.");
  w.Key("error");
  write_string(w, error);
  w.EndObject();
  return buf.GetString();
}

// ---- request bodies ----------------------------------------------------------------------------

namespace {

bool has_type(const rapidjson::Value& v, FieldType t) {
  switch (t) {
    case FieldType::string:
      return v.IsString();
    case FieldType::unsigned_int:
      return v.IsUint64();
    case FieldType::string_array:
      if (!v.IsArray()) return false;
      for (const auto& e : v.GetArray()) {
        if (!e.IsString()) return false;
      }
      return true;
  }
  return false;
}

const char* type_name(FieldType t) {
  switch (t) {
    case FieldType::string:
      return "a string";
    case FieldType::unsigned_int:
      return "a non-negative integer";
    case FieldType::string_array:
      return "an array of strings";
  }
  return "?";
}

// The media type, without parameters, is application/json (in any case).
bool is_json_content_type(std::string_view content_type) {
  std::string ct(content_type);
  std::transform(ct.begin(), ct.end(), ct.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::string_view v(ct);
  const std::string_view media = v.substr(0, v.find(';'));
  return media.substr(0, media.find_last_not_of(" \t") + 1) == "application/json";
}

}  // namespace

std::string parse_body(std::string_view content_type, std::string_view body,
                       rapidjson::Document& doc, std::initializer_list<BodyField> fields) {
  if (!is_json_content_type(content_type)) return "Content-Type must be application/json";
  doc.Parse(body.data(), body.size());
  if (doc.HasParseError()) return "malformed JSON body";
  if (!doc.IsObject()) return "the body must be a JSON object";
  for (const auto& m : doc.GetObject()) {
    const std::string_view name(m.name.GetString(), m.name.GetStringLength());
    const BodyField* f = nullptr;
    for (const BodyField& candidate : fields) {
      if (name == candidate.name) f = &candidate;
    }
    if (f == nullptr) return "unknown field \"" + std::string(name) + "\"";
    if (!has_type(m.value, f->type)) {
      return std::string(f->name) + " must be " + type_name(f->type);
    }
  }
  return {};
}

std::string string_field(const rapidjson::Document& doc, const char* name) {
  auto it = doc.FindMember(name);
  if (it == doc.MemberEnd()) return {};
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

// ---- broker-ha's shapes ------------------------------------------------------------------------

namespace {

void write_subscription(JsonWriter& w, const SubscriptionInfo& s) {
  w.StartObject();
  w.Key("Filter");
  write_string(w, s.filter);
  w.Key("Qos");
  w.Int(s.qos);
  w.Key("NoLocal");
  w.Bool(s.no_local);
  w.Key("RetainAsPublished");
  w.Bool(s.retain_as_published);
  w.Key("RetainHandling");
  w.Int(s.retain_handling);
  w.Key("Identifier");
  w.Uint(s.identifier);
  w.Key("ShareName");  // a list in broker-ha (mochi-mqtt's []string)
  w.StartArray();
  if (!s.share_name.empty()) write_string(w, s.share_name);
  w.EndArray();
  w.EndObject();
}

}  // namespace

std::string messages_json(const std::vector<MessageInfo>& messages) {
  const auto now = std::chrono::system_clock::now();
  std::string out = "[";
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i != 0) out.push_back(',');
    bus::append_message_json(out, bus::view_of(messages[i], now));
  }
  out.push_back(']');
  return out;
}

void write_subscription_map(JsonWriter& w, const std::map<std::string, SubscriptionInfo>& m) {
  w.StartObject();
  for (const auto& [id, s] : m) {
    write_string(w, id);
    write_subscription(w, s);
  }
  w.EndObject();
}

}  // namespace brokerha::http
