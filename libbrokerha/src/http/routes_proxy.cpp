// SPDX-License-Identifier: Apache-2.0
// /proxy/<route> (docs/api.md): the route's answer from every cluster member, as one JSON
// object {"<member name>": <its answer> or {"error": "..."}}. This node answers in-process (a
// request it rejects with 400 is rejected as a whole); the other members are asked over HTTP,
// in parallel, each within ApiOptions::proxy_timeout. The caller's Authorization header is
// never forwarded: each request is signed with the cluster's key (http/proxy_auth.hpp), and
// in cluster mode only members whose data-plane link is up (they proved the key in its TLS
// PSK handshake) are asked. Without a key, only this node answers.
//
// Threads: the request runs on one of cpp-httplib's request pool threads, holding a /proxy
// Slot (at most max_proxy_calls at once, 503 beyond) while it waits; each remote member is
// asked on a std::async thread of its own, joined before the reply.

#include <rapidjson/document.h>

#include <cctype>
#include <ctime>
#include <exception>
#include <future>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "http/api_impl.hpp"

namespace brokerha {

namespace {

using http::Reply;

// One member's part of the answer.
struct Part {
  std::string name;
  std::string json;   // the member's JSON when ok
  std::string error;  // otherwise
};

// Asks member `m` for `path` with the request's query and body, signed with `key` (never
// with the caller's credentials). `own_port` stands in for a member that does not say its API
// port.
Part call_member(const ApiMember& m, const httplib::Request& req, std::string_view path,
                 const std::string& key, std::uint16_t own_port,
                 std::chrono::milliseconds timeout) {
  Part part{m.name, {}, {}};
  const std::string query = http::proxy_query(req);
  const std::string target = std::string(path) + query;
  const std::string method = req.method == "POST" ? "POST" : "GET";
  const int port = m.api_port != 0 ? m.api_port : own_port;
  httplib::Client cli(m.address, port);
  const auto sec = static_cast<time_t>(timeout.count() / 1000);
  const auto usec = static_cast<time_t>((timeout.count() % 1000) * 1000);
  cli.set_connection_timeout(sec, usec);
  cli.set_read_timeout(sec, usec);
  cli.set_write_timeout(sec, usec);
  const httplib::Headers headers = http::sign_proxy_request(key, method, std::string(path), query,
                                                            method == "POST" ? req.body : "");
  httplib::Result r = method == "POST" ? cli.Post(target.c_str(), headers, req.body,
                                                  req.get_header_value("Content-Type").c_str())
                                       : cli.Get(target.c_str(), headers);
  if (!r) {
    part.error = "request to " + m.address + ":" + std::to_string(port) +
                 " failed: " + httplib::to_string(r.error());
    return part;
  }
  rapidjson::Document doc;
  doc.Parse(r->body.data(), r->body.size());
  if (r->status != 200 || doc.HasParseError()) {
    part.error = "HTTP " + std::to_string(r->status) + ": " + r->body;
    return part;
  }
  part.json = r->body;
  return part;
}

}  // namespace

Reply ApiServer::Impl::proxy_call(const httplib::Request& req, const Route& route) {
  const http::Slot slot(proxy_calls, options.max_proxy_calls);
  if (!slot) return http::error_reply(503, "too many /proxy calls in progress");
  const std::vector<ApiMember> members = member_list();
  // This node first, in-process: a request it rejects (400) is rejected as a whole.
  std::vector<Part> parts;
  bool self_seen = false;
  for (const ApiMember& m : members) {
    if (!m.self || self_seen) continue;
    self_seen = true;
    Reply own = (this->*route.handler)(req);
    if (own.status == 400) return own;
    Part p{m.name, {}, {}};
    if (own.status == 200) {
      p.json = std::move(own.body);
    } else {
      p.error = "HTTP " + std::to_string(own.status) + ": " + own.body;
    }
    parts.push_back(std::move(p));
  }
  const std::uint16_t own_port = bound_port.load();
  const std::chrono::milliseconds timeout = options.proxy_timeout;
  const std::vector<std::string> keys = proxy_key_list();
  // In cluster mode (members from the cluster), only members with a link up have proved the
  // key; an embedder's own member list is taken as it is.
  std::set<std::string> linked;
  const bool check_links = !options.members;
  if (check_links) {
    for (const ClusterLinkInfo& l : broker.cluster().links) {
      if (l.connected) linked.insert(l.peer);
    }
  }
  std::vector<std::future<Part>> pending;
  for (const ApiMember& m : members) {
    if (m.self) continue;
    if (keys.empty()) {
      parts.push_back(Part{m.name,
                           {},
                           "not asked: the cluster runs without a key (cluster.insecure), so "
                           "/proxy answers for this node only"});
      continue;
    }
    if (check_links && linked.count(m.name) == 0) {
      parts.push_back(Part{m.name,
                           {},
                           "not asked: no authenticated cluster link to this member (it has not "
                           "proved the cluster key)"});
      continue;
    }
    pending.push_back(
        std::async(std::launch::async, [m, &req, &route, key = keys.front(), own_port, timeout] {
          try {
            return call_member(m, req, route.path, key, own_port, timeout);
          } catch (const std::exception& e) {
            return Part{m.name, {}, e.what()};
          }
        }));
  }
  for (auto& f : pending) parts.push_back(f.get());  // each bounded by the client timeouts
  rapidjson::StringBuffer buf;
  http::JsonWriter w(buf);
  w.StartObject();
  for (const Part& p : parts) {
    http::write_string(w, p.name);
    if (p.error.empty()) {
      w.RawValue(p.json.data(), p.json.size(), rapidjson::kObjectType);
    } else {
      w.StartObject();
      w.Key("error");
      http::write_string(w, p.error);
      w.EndObject();
    }
  }
  w.EndObject();
  return Reply{200, buf.GetString()};
}

}  // namespace brokerha
