// SPDX-License-Identifier: Apache-2.0
// The /api routes of broker-ha (docs/api.md): /api/discovery/members and /api/mqtt/...
// (clients, client stop, client inflight, topic messages, topic subscribers). Each also
// answers its part of /proxy<path> (routes_proxy.cpp), so a handler's reply must be the whole
// answer: JSON with status 200, or an error reply.
//
// Threads: cpp-httplib's request pool threads, concurrently; the Broker is read through its
// thread-safe snapshot API (which waits on the shards, at most 5 s).

#include <rapidjson/document.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <variant>

#include "http/api_impl.hpp"
#include "topic/topic.hpp"
#include "util/base64.hpp"

namespace brokerha {

namespace {

using http::error_reply;
using http::JsonWriter;
using http::Reply;
using http::write_string;

// The one string field of a {"<field>": "..."} body (required, non-empty), or an error reply.
// `valid`, when given, checks the value (`invalid` is then the error).
std::variant<std::string, Reply> required_string(const httplib::Request& req, const char* field,
                                                 bool (*valid)(std::string_view) noexcept = nullptr,
                                                 const char* invalid = nullptr) {
  rapidjson::Document doc;
  const std::string error = http::parse_body(req.get_header_value("Content-Type"), req.body, doc,
                                             {{field, http::FieldType::string}});
  if (!error.empty()) return error_reply(400, error);
  std::string value = http::string_field(doc, field);
  if (value.empty()) return error_reply(400, std::string(field) + " is required");
  if (valid != nullptr && !valid(value)) return error_reply(400, invalid);
  return value;
}

}  // namespace

Reply ApiServer::Impl::members_route(const httplib::Request&) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartArray();
  for (const ApiMember& m : member_list()) {
    w.StartObject();
    w.Key("Name");
    write_string(w, m.name);
    w.Key("Addr");
    write_string(w, m.address);
    w.Key("Port");
    w.Uint(m.port);
    w.Key("Meta");
    write_string(w, util::base64_encode(m.meta));
    w.Key("State");
    w.Int(m.state);
    w.Key("PMin");
    w.Int(m.pmin);
    w.Key("PMax");
    w.Int(m.pmax);
    w.Key("PCur");
    w.Int(m.pcur);
    w.Key("DMin");
    w.Int(m.dmin);
    w.Key("DMax");
    w.Int(m.dmax);
    w.Key("DCur");
    w.Int(m.dcur);
    w.EndObject();
  }
  w.EndArray();
  return Reply{200, buf.GetString()};
}

Reply ApiServer::Impl::clients(const httplib::Request&) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartArray();
  for (const ClientInfo& c : broker.clients()) {
    w.StartObject();
    w.Key("ID");
    write_string(w, c.id);
    w.Key("ProtocolVersion");
    w.Int(c.protocol_version);
    w.Key("Username");
    write_string(w, c.username.value_or(""));
    w.Key("CleanSession");
    w.Bool(c.clean_session);
    w.Key("Done");
    w.Bool(!c.connected);
    w.Key("Subscriptions");
    http::write_subscription_map(w, c.subscriptions);
    w.EndObject();
  }
  w.EndArray();
  return Reply{200, buf.GetString()};
}

Reply ApiServer::Impl::client_stop(const httplib::Request& req) {
  auto id = required_string(req, "client_id");
  if (auto* r = std::get_if<Reply>(&id)) return *r;
  if (!broker.stop_client(std::get<std::string>(id))) return error_reply(500, "unknown client");
  return Reply{200, ""};
}

Reply ApiServer::Impl::client_inflight(const httplib::Request& req) {
  auto id = required_string(req, "client_id");
  if (auto* r = std::get_if<Reply>(&id)) return *r;
  const std::string& client_id = std::get<std::string>(id);
  const auto all = broker.clients();
  if (std::none_of(all.begin(), all.end(),
                   [&](const ClientInfo& c) { return c.id == client_id; })) {
    return error_reply(500, "unknown client");
  }
  return Reply{200, http::messages_json(broker.inflight(client_id))};
}

Reply ApiServer::Impl::topic_messages(const httplib::Request& req) {
  auto t = required_string(req, "topic", &topic::is_valid_filter, "invalid topic filter");
  if (auto* r = std::get_if<Reply>(&t)) return *r;
  return Reply{200, http::messages_json(broker.retained(std::get<std::string>(t)))};
}

Reply ApiServer::Impl::topic_subscribers(const httplib::Request& req) {
  auto t = required_string(req, "topic", &topic::is_valid_name, "invalid topic name");
  if (auto* r = std::get_if<Reply>(&t)) return *r;
  const TopicSubscribers subs = broker.subscribers(std::get<std::string>(t));
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("Shared");
  w.StartObject();
  for (const auto& [group, members] : subs.shared) {
    write_string(w, group);
    http::write_subscription_map(w, members);
  }
  w.EndObject();
  w.Key("SharedSelected");
  w.StartObject();
  w.EndObject();
  w.Key("Subscriptions");
  http::write_subscription_map(w, subs.subscriptions);
  w.Key("InlineSubscriptions");
  w.StartObject();
  w.EndObject();
  w.EndObject();
  return Reply{200, buf.GetString()};
}

}  // namespace brokerha
