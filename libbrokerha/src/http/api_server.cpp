// SPDX-License-Identifier: Apache-2.0
// brokerha::ApiServer: cpp-httplib on its own listener thread and a fixed request pool.
//
// Routing is ours, not httplib's: every method and path reaches dispatch(), which finds the
// route, checks basic auth (protected routes), then the method (405), then hands the request
// to the route's handler, which returns a Reply. /proxy/<route> calls the same handler
// in-process for this node and the member's HTTP API for the others, in parallel.
//
// Capacity (docs/threading.md): the pool has `threads` + `max_sse_clients` + `max_proxy_calls`
// threads; SSE streams and /proxy calls take a slot each and get 503 when their cap is
// reached, so `threads` workers stay free for probes and /metrics. SSE loops wait on the bus
// in slices of at most 200 ms and check `stopping_`, so stop() is bounded.

#include <brokerha/api.hpp>
#include <brokerha/broker.hpp>
#include <brokerha/bus.hpp>
#include <brokerha/error.hpp>

#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <future>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>

#include "http/json.hpp"
#include "http/process_stats.hpp"
#include "topic/topic.hpp"
#include "util/base64.hpp"
#include "util/lifecycle.hpp"

namespace brokerha {

namespace {

using http::FieldType;
using http::JsonWriter;
using http::messages_json;
using http::write_string;
using http::write_subscription_map;

using Clock = std::chrono::steady_clock;

constexpr std::size_t kSseMinBuffer = 100;
constexpr std::size_t kSseMaxBuffer = 100'000;
constexpr auto kSseSlice = std::chrono::milliseconds(200);

/// A handler's answer.
struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

Reply error_reply(int status, std::string_view error) {
  return Reply{status, http::error_json(status, error)};
}

// Constant time in the contents (not the lengths) of the strings.
bool constant_time_equal(std::string_view a, std::string_view b) {
  const std::size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (std::size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

std::string rfc3339_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
  const auto nanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() %
      1'000'000'000;
  char out[64];
  std::snprintf(out, sizeof out, "%s.%09lldZ", date, static_cast<long long>(nanos));
  return out;
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 || c == '-' || c == '_' || c == '.' || c == '~' || c == ':' ||
        c == ',' || c == '/') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0xF]);
    }
  }
  return out;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// Prometheus label values: backslash, double quote and newline escaped.
std::string label_value(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

// ---- Impl --------------------------------------------------------------------------------------

struct ApiServer::Impl {
  using Handler = Reply (Impl::*)(const httplib::Request&);

  struct Route {
    const char* method;
    const char* path;
    Handler handler;
    bool protected_;  // behind basic auth when users are configured
    bool proxied;     // also served as /proxy<path>
  };

  Impl(ApiOptions o, Broker& b, Bus& bs)
      : options(std::move(o)), broker(b), bus(bs), started_at(Clock::now()) {
    if (options.node_name.empty()) options.node_name = host_name();
  }

  ApiOptions options;
  Broker& broker;
  Bus& bus;
  const Clock::time_point started_at;

  std::mutex lifecycle_mutex;
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  std::atomic<bool> listen_returned{false};
  std::atomic<std::uint16_t> bound_port{0};
  bool started = false;
  bool stopped = false;
  std::atomic<bool> stopping{false};

  std::atomic<unsigned> sse_clients{0};
  std::atomic<unsigned> proxy_calls{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> auth_failures{0};
  std::atomic<std::uint64_t> sse_events{0};

  static const std::vector<Route>& routes() {
    static const std::vector<Route> table = {
        {"GET", "/metrics", &Impl::metrics, false, false},
        {"GET", "/ready", &Impl::ready, false, false},
        {"GET", "/healthz", &Impl::healthz, false, false},
        {"GET", "/api/discovery/members", &Impl::members_route, true, true},
        {"GET", "/api/mqtt/clients", &Impl::clients, true, true},
        {"POST", "/api/mqtt/client/stop", &Impl::client_stop, true, false},
        {"POST", "/api/mqtt/client/inflight", &Impl::client_inflight, true, true},
        {"POST", "/api/mqtt/topic/messages", &Impl::topic_messages, true, true},
        {"POST", "/api/mqtt/topic/subscribers", &Impl::topic_subscribers, true, true},
        {"GET", "/api/sse", nullptr, true, false},  // streamed: see sse()
        {"POST", "/api/sse", nullptr, true, false},
        {"GET", "/debug", &Impl::debug_index, true, false},
        {"GET", "/debug/stats", &Impl::debug_stats, true, false},
        {"GET", "/debug/threads", &Impl::debug_threads, true, false},
        {"GET", "/debug/memory", &Impl::debug_memory, true, false},
    };
    return table;
  }

  std::vector<ApiMember> member_list() {
    if (options.members) return options.members();
    if (const ClusterInfo ci = broker.cluster(); ci.enabled) return cluster_members(ci);
    ApiMember self;
    self.name = options.node_name;
    self.address = options.bind == "0.0.0.0" || options.bind == "::" ? "127.0.0.1" : options.bind;
    self.api_port = bound_port.load();
    self.self = true;
    return {self};
  }

  // ---- dispatch --------------------------------------------------------------------------------

  bool authorized(const httplib::Request& req) {
    if (options.users.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kBasic = "Basic ";
    if (header.size() <= kBasic.size() || header.compare(0, kBasic.size(), kBasic) != 0) {
      return false;
    }
    const auto decoded = util::base64_decode(std::string_view(header).substr(kBasic.size()));
    if (!decoded) return false;
    const std::size_t colon = decoded->find(':');
    if (colon == std::string::npos) return false;
    const std::string_view user = std::string_view(*decoded).substr(0, colon);
    const std::string_view pass = std::string_view(*decoded).substr(colon + 1);
    bool ok = false;
    for (const auto& [u, p] : options.users) {
      // Every entry is compared, in constant time, whichever matches.
      // Both compared before combining: no early exit on a wrong user name.
      const bool user_ok = constant_time_equal(user, u);
      const bool pass_ok = constant_time_equal(pass, p);
      ok = (user_ok && pass_ok) || ok;
    }
    return ok;
  }

  static void send(httplib::Response& res, Reply reply) {
    res.status = reply.status;
    res.set_content(reply.body, reply.content_type.c_str());
  }

  void start();  // ApiServer::start(); throws

  void dispatch(const httplib::Request& req, httplib::Response& res) {
    requests.fetch_add(1, std::memory_order_relaxed);
    std::string_view path = req.path;
    const bool proxy = path.rfind("/proxy/", 0) == 0;
    if (proxy) path.remove_prefix(6);
    std::vector<const Route*> matching;
    for (const Route& r : routes()) {
      if (path == r.path && (!proxy || r.proxied)) matching.push_back(&r);
    }
    if (matching.empty()) return send(res, error_reply(404, "no such endpoint"));
    if (matching.front()->protected_ && !authorized(req)) {
      auth_failures.fetch_add(1, std::memory_order_relaxed);
      res.set_header("WWW-Authenticate", "Basic realm=\"api\"");
      return send(res, error_reply(401, "unauthorized"));
    }
    const Route* route = nullptr;
    std::string allow;
    for (const Route* r : matching) {
      if (req.method == r->method || (req.method == "HEAD" && std::string_view(r->method) == "GET"))
        route = r;
      allow += allow.empty() ? r->method : std::string(", ") + r->method;
    }
    if (route == nullptr) {
      res.set_header("Allow", allow);
      return send(res, error_reply(405, "method not allowed"));
    }
    try {
      if (route->handler == nullptr) return sse(req, res);
      if (proxy) return send(res, proxy_call(req, *route));
      send(res, (this->*route->handler)(req));
    } catch (const std::exception& e) {
      send(res, error_reply(500, e.what()));
    }
  }

  // ---- /api -------------------------------------------------------------------------------------

  Reply members_route(const httplib::Request&) {
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

  Reply clients(const httplib::Request&) {
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
      write_subscription_map(w, c.subscriptions);
      w.EndObject();
    }
    w.EndArray();
    return Reply{200, buf.GetString()};
  }

  // The one string field of a {"<field>": "..."} body (required, non-empty), or an error reply.
  // `valid`, when given, checks the value (`invalid` is then the error).
  static std::variant<std::string, Reply> required_string(
      const httplib::Request& req, const char* field,
      bool (*valid)(std::string_view) noexcept = nullptr, const char* invalid = nullptr) {
    rapidjson::Document doc;
    const std::string error = http::parse_body(req.get_header_value("Content-Type"), req.body, doc,
                                               {{field, FieldType::string}});
    if (!error.empty()) return error_reply(400, error);
    std::string value = http::string_field(doc, field);
    if (value.empty()) return error_reply(400, std::string(field) + " is required");
    if (valid != nullptr && !valid(value)) return error_reply(400, invalid);
    return value;
  }

  Reply client_stop(const httplib::Request& req) {
    auto id = required_string(req, "client_id");
    if (auto* r = std::get_if<Reply>(&id)) return *r;
    if (!broker.stop_client(std::get<std::string>(id))) return error_reply(500, "unknown client");
    return Reply{200, ""};
  }

  Reply client_inflight(const httplib::Request& req) {
    auto id = required_string(req, "client_id");
    if (auto* r = std::get_if<Reply>(&id)) return *r;
    const std::string& client_id = std::get<std::string>(id);
    const auto all = broker.clients();
    if (std::none_of(all.begin(), all.end(),
                     [&](const ClientInfo& c) { return c.id == client_id; })) {
      return error_reply(500, "unknown client");
    }
    return Reply{200, messages_json(broker.inflight(client_id))};
  }

  Reply topic_messages(const httplib::Request& req) {
    auto t = required_string(req, "topic", &topic::is_valid_filter, "invalid topic filter");
    if (auto* r = std::get_if<Reply>(&t)) return *r;
    return Reply{200, messages_json(broker.retained(std::get<std::string>(t)))};
  }

  Reply topic_subscribers(const httplib::Request& req) {
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
      write_subscription_map(w, members);
    }
    w.EndObject();
    w.Key("SharedSelected");
    w.StartObject();
    w.EndObject();
    w.Key("Subscriptions");
    write_subscription_map(w, subs.subscriptions);
    w.Key("InlineSubscriptions");
    w.StartObject();
    w.EndObject();
    w.EndObject();
    return Reply{200, buf.GetString()};
  }

  // ---- /proxy -----------------------------------------------------------------------------------

  struct Part {
    std::string name;
    std::string json;   // the member's JSON when ok
    std::string error;  // otherwise
  };

  Part call_member(const ApiMember& m, const httplib::Request& req, std::string_view path) {
    Part part{m.name, {}, {}};
    std::string target(path);
    char sep = '?';
    for (const auto& [k, v] : req.params) {
      target += sep + percent_encode(k) + "=" + percent_encode(v);
      sep = '&';
    }
    const int port = m.api_port != 0 ? m.api_port : bound_port.load();
    httplib::Client cli(m.address, port);
    const auto t = options.proxy_timeout;
    const auto sec = static_cast<time_t>(t.count() / 1000);
    const auto usec = static_cast<time_t>((t.count() % 1000) * 1000);
    cli.set_connection_timeout(sec, usec);
    cli.set_read_timeout(sec, usec);
    cli.set_write_timeout(sec, usec);
    httplib::Headers headers;
    if (req.has_header("Authorization")) {
      headers.emplace("Authorization", req.get_header_value("Authorization"));
    }
    httplib::Result r = req.method == "POST"
                            ? cli.Post(target.c_str(), headers, req.body,
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

  Reply proxy_call(const httplib::Request& req, const Route& route) {
    struct Slot {
      std::atomic<unsigned>& n;
      ~Slot() { n.fetch_sub(1); }
    };
    if (proxy_calls.fetch_add(1) >= std::max(1u, options.max_proxy_calls)) {
      proxy_calls.fetch_sub(1);
      return error_reply(503, "too many /proxy calls in progress");
    }
    Slot slot{proxy_calls};
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
    std::vector<std::future<Part>> pending;
    for (const ApiMember& m : members) {
      if (m.self) continue;
      pending.push_back(std::async(std::launch::async, [this, m, &req, &route] {
        try {
          return call_member(m, req, route.path);
        } catch (const std::exception& e) {
          return Part{m.name, {}, e.what()};
        }
      }));
    }
    for (auto& f : pending) parts.push_back(f.get());  // each bounded by the client timeouts
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    for (const Part& p : parts) {
      write_string(w, p.name);
      if (p.error.empty()) {
        w.RawValue(p.json.data(), p.json.size(), rapidjson::kObjectType);
      } else {
        w.StartObject();
        w.Key("error");
        write_string(w, p.error);
        w.EndObject();
      }
    }
    w.EndObject();
    return Reply{200, buf.GetString()};
  }

  // ---- SSE --------------------------------------------------------------------------------------

  struct SseStream {
    Impl* impl;
    std::unique_ptr<BusSubscription> sub;
    Clock::time_point last_write = Clock::now();
    bool greeted = false;
    ~SseStream() {
      sub->close();
      impl->sse_clients.fetch_sub(1);
    }
  };

  static void frame(std::string& out, const BusEvent& e) {
    out += "event: ";
    out += e.channel;
    out.push_back('\n');
    std::string_view data = e.data;
    // One "data:" line per line of data (SSE), so a newline in the data cannot end the event.
    for (;;) {
      const std::size_t nl = data.find('\n');
      out += "data: ";
      out += data.substr(0, nl);
      out.push_back('\n');
      if (nl == std::string_view::npos) break;
      data.remove_prefix(nl + 1);
    }
    out.push_back('\n');
  }

  void sse(const httplib::Request& req, httplib::Response& res) {
    std::vector<std::string> filters;
    std::uint64_t size = kSseMinBuffer;
    if (req.method == "POST") {
      rapidjson::Document doc;
      const std::string error = http::parse_body(
          req.get_header_value("Content-Type"), req.body, doc,
          {{"filters", FieldType::string_array}, {"channel_size", FieldType::unsigned_int}});
      if (!error.empty()) return send(res, error_reply(400, error));
      if (auto it = doc.FindMember("filters"); it != doc.MemberEnd()) {
        for (const auto& f : it->value.GetArray()) filters.emplace_back(f.GetString());
      }
      if (auto it = doc.FindMember("channel_size"); it != doc.MemberEnd()) {
        size = it->value.GetUint64();
      }
    } else {
      if (req.has_param("filters")) {
        const std::string value = req.get_param_value("filters");
        std::string_view list = value;
        while (!list.empty()) {
          const std::size_t comma = list.find(',');
          if (comma != 0) filters.emplace_back(list.substr(0, comma));
          if (comma == std::string_view::npos) break;
          list.remove_prefix(comma + 1);
        }
      }
      if (req.has_param("channel_size")) {
        const std::string v = req.get_param_value("channel_size");
        if (v.empty() || v.size() > 18 ||
            !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          return send(res, error_reply(400, "channel_size must be a non-negative integer"));
        }
        size = std::stoull(v);
      }
    }
    const std::vector<std::string> known = bus.channel_names();
    for (const std::string& f : filters) {
      if (std::find(known.begin(), known.end(), f) == known.end()) {
        return send(res, error_reply(400, "unknown filter \"" + f + "\""));
      }
    }
    if (filters.empty()) filters = known;
    size = std::clamp<std::uint64_t>(size, kSseMinBuffer, kSseMaxBuffer);
    if (sse_clients.fetch_add(1) >= std::max(1u, options.max_sse_clients)) {
      sse_clients.fetch_sub(1);
      return send(res, error_reply(503, "too many SSE clients"));
    }
    auto stream = std::make_shared<SseStream>();
    stream->impl = this;
    stream->sub = bus.subscribe(filters, static_cast<std::size_t>(size));
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider("text/event-stream", [this, stream](std::size_t,
                                                                         httplib::DataSink& sink) {
      if (stopping.load()) return false;
      std::string out;
      if (!stream->greeted) {
        stream->greeted = true;
        out = ": connected\n\n";
      } else {
        const auto keepalive = std::max(options.sse_keepalive, std::chrono::milliseconds(1));
        const auto since = Clock::now() - stream->last_write;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(keepalive - since);
        const auto wait =
            std::clamp(left, std::chrono::milliseconds(0), std::chrono::milliseconds(kSseSlice));
        if (auto e = stream->sub->pop(wait)) {
          std::size_t n = 1;
          frame(out, *e);
          while (out.size() < 64 * 1024) {
            auto more = stream->sub->try_pop();
            if (!more) break;
            frame(out, *more);
            ++n;
          }
          sse_events.fetch_add(n, std::memory_order_relaxed);
        } else if (Clock::now() - stream->last_write >= keepalive) {
          out = ": keepalive\n\n";
        }
      }
      if (out.empty()) return !stopping.load();
      stream->last_write = Clock::now();
      return sink.write(out.data(), out.size());
    });
  }

  // ---- probes -----------------------------------------------------------------------------------

  // The members of a cluster-mode broker. Each advertises its API port in its metadata as
  // "api=<port>" (brokerha-server does; another embedder's nodes are assumed to use ours).
  static std::vector<ApiMember> cluster_members(const ClusterInfo& ci) {
    std::vector<ApiMember> out;
    for (const Member& m : ci.members) {
      ApiMember a;
      a.name = m.name;
      a.address = m.address;
      a.port = m.port;
      a.meta = m.meta;
      a.state = m.state == MemberState::suspect ? 1 : 0;
      a.pmin = m.protocol_min;
      a.pmax = m.protocol_max;
      a.pcur = m.protocol_cur;
      a.dmin = m.delegate_min;
      a.dmax = m.delegate_max;
      a.dcur = m.delegate_cur;
      if (m.meta.rfind("api=", 0) == 0) {
        const long port = std::strtol(m.meta.c_str() + 4, nullptr, 10);
        if (port > 0 && port <= 65535) a.api_port = static_cast<std::uint16_t>(port);
      }
      a.self = m.name == ci.node_name;
      out.push_back(std::move(a));
    }
    return out;
  }

  // docs/cluster.md, "Health": ready when joined to at least one peer, or provably alone (discovery
  // named nobody else for expected_members x refresh_interval). One dead peer changes
  // neither: the survivors still have each other.
  static ClusterHealth cluster_health(const ClusterInfo& ci) {
    ClusterHealth h;
    h.discovery = ci.discovery_configured;
    h.discovered_members = ci.members.size();
    if (!ci.discovery_configured) return h;
    const bool joined = ci.members.size() > 1;
    if (!joined && !ci.provably_alone) {
      std::string why = "not joined to a cluster yet";
      if (!ci.discovery_error.empty()) why += " (discovery: " + ci.discovery_error + ")";
      h.cluster_error = why;
    }
    if (ci.port == 0) h.member_error = "the cluster port is not bound";
    return h;
  }

  Reply health(bool liveness) {
    ClusterHealth h = options.cluster_health ? options.cluster_health() : [&] {
      const ClusterInfo ci = broker.cluster();
      return ci.enabled ? cluster_health(ci) : ClusterHealth{};
    }();
    if (!h.discovery) h = ClusterHealth{};  // single node: the cluster checks pass
    // A draining node (Broker::drain, SIGTERM) takes no new clients: not ready, still live.
    if (!liveness && broker.draining()) {
      h.cluster_error = "draining: this node is shutting down";
    }
    std::vector<std::pair<const char*, std::optional<std::string>>> checks;
    if (liveness) {
      checks.emplace_back("liveness_cluster_health", h.cluster_error);
      std::optional<std::string> alone;
      if (h.discovery && options.expected_members > 1 && h.discovered_members < 2) {
        alone = "only this node was discovered, " + std::to_string(options.expected_members) +
                " members are expected";
      }
      checks.emplace_back("liveness_cluster_discovered_members", alone);
      checks.emplace_back("liveness_member_in_cluster", h.member_error);
    } else {
      checks.emplace_back("readiness_cluster_health", h.cluster_error);
    }
    const std::string now = rfc3339_now();
    bool up = true;
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("status");
    for (const auto& c : checks) up = up && !c.second;
    w.String(up ? "up" : "down");
    w.Key("details");
    w.StartObject();
    for (const auto& [name, error] : checks) {
      w.Key(name);
      w.StartObject();
      w.Key("status");
      w.String(error ? "down" : "up");
      w.Key("timestamp");
      write_string(w, now);
      if (error) {
        w.Key("error");
        write_string(w, *error);
      }
      w.EndObject();
    }
    w.EndObject();
    w.EndObject();
    return Reply{up ? 200 : 503, buf.GetString()};
  }

  Reply ready(const httplib::Request&) { return health(false); }
  Reply healthz(const httplib::Request&) { return health(true); }

  // ---- /metrics ---------------------------------------------------------------------------------

  Reply metrics(const httplib::Request&) {
    const BrokerStats s = broker.stats();
    const std::vector<ApiMember> members = member_list();
    const http::ProcessStats p = http::read_process_stats();
    std::size_t suspect = 0;
    for (const ApiMember& m : members) suspect += m.state != 0 ? 1 : 0;
    auto n = [](auto v) { return std::to_string(v); };
    struct Metric {
      const char* name;
      const char* type;
      const char* help;
      std::string value;
    };
    const Metric table[] = {
        // broker-ha's gauges, same names and meaning.
        {"broker_clients_connected", "gauge", "Connected MQTT clients.", n(s.clients_connected)},
        {"broker_cluster_members", "gauge", "Members of the cluster, this node included.",
         n(members.size())},
        {"broker_cluster_member_health", "gauge",
         "Health score of this member (0 = healthy; suspect members seen).", n(suspect)},
        {"broker_retained_messages", "gauge", "Retained messages stored.", n(s.retained_messages)},
        {"broker_subscriptions", "gauge", "Subscriptions of all sessions.", n(s.subscriptions)},
        {"broker_uptime", "gauge", "Seconds since the broker started.", n(s.uptime.count())},
        {"broker_messages_recv", "gauge", "PUBLISH packets received from clients.",
         n(s.messages_received)},
        {"broker_messages_sent", "gauge", "PUBLISH packets sent to clients.", n(s.messages_sent)},
        {"broker_messages_dropped", "gauge", "Deliveries dropped (queue full, expired).",
         n(s.messages_dropped)},
        {"broker_inflight_messages", "gauge", "Unacknowledged QoS 1/2 deliveries.",
         n(s.inflight_messages)},
        // Improved.
        {"broker_sessions", "gauge", "Sessions, connected or not.", n(s.sessions)},
        {"broker_received_bytes_total", "counter", "Bytes received from MQTT clients.",
         n(s.bytes_received)},
        {"broker_sent_bytes_total", "counter", "Bytes sent to MQTT clients.", n(s.bytes_sent)},
        {"broker_connections_total", "counter", "MQTT connections accepted.",
         n(s.connections_total)},
        {"broker_auth_failures_total", "counter", "MQTT connections refused by authentication.",
         n(s.auth_failures)},
        {"broker_acl_denials_total", "counter", "Publishes and deliveries denied by the ACL.",
         n(s.acl_denials)},
        {"broker_protocol_errors_total", "counter",
         "Connections closed for malformed or invalid input.", n(s.protocol_errors)},
        {"broker_draining", "gauge", "1 while the broker drains before stopping (SIGTERM).",
         n(broker.draining() ? 1 : 0)},
        {"broker_api_sse_clients", "gauge", "Open SSE streams.", n(sse_clients.load())},
        {"broker_api_sse_events_total", "counter", "Events written to SSE streams.",
         n(sse_events.load())},
        {"broker_api_requests_total", "counter", "HTTP API requests.", n(requests.load())},
        {"broker_api_auth_failures_total", "counter", "HTTP API requests refused (401).",
         n(auth_failures.load())},
        // Process (the names of the Prometheus client libraries).
        {"process_cpu_seconds_total", "counter", "User and system CPU time in seconds.",
         n(p.cpu_seconds)},
        {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
         n(p.resident_bytes)},
        {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
         n(p.virtual_bytes)},
        {"process_open_fds", "gauge", "Open file descriptors.", n(p.open_fds)},
        {"process_max_fds", "gauge", "Maximum number of open file descriptors.", n(p.max_fds)},
        {"process_threads", "gauge", "Threads of the process.", n(p.threads)},
        {"process_start_time_seconds", "gauge", "Start time of the process (unix seconds).",
         n(p.start_time_seconds)},
    };
    std::string out;
    for (const Metric& m : table) {
      out += std::string("# HELP ") + m.name + ' ' + m.help + "\n# TYPE " + m.name + ' ' + m.type +
             '\n' + m.name + ' ' + m.value + '\n';
    }
    out +=
        "# HELP broker_bus_dropped_total Bus events dropped because a subscriber's buffer was "
        "full.\n# TYPE broker_bus_dropped_total counter\n";
    for (const auto& [channel, dropped] : bus.dropped_by_channel()) {
      out +=
          "broker_bus_dropped_total{channel=\"" + label_value(channel) + "\"} " + n(dropped) + "\n";
    }
    append_cluster_metrics(out, broker.cluster());
    return Reply{200, std::move(out), "text/plain; version=0.0.4; charset=utf-8"};
  }

  // Cluster counters and one series per data-plane link (cluster mode only).
  static void append_cluster_metrics(std::string& out, const ClusterInfo& ci) {
    if (!ci.enabled) return;
    auto n = [](auto v) { return std::to_string(v); };
    auto one = [&](const char* name, const char* type, const char* help, const std::string& v) {
      out += std::string("# HELP ") + name + ' ' + help + "\n# TYPE " + name + ' ' + type + '\n' +
             name + ' ' + v + '\n';
    };
    one("broker_cluster_messages_forwarded_total", "counter",
        "Message copies queued to peers (one per peer).", n(ci.messages_forwarded));
    one("broker_cluster_messages_received_total", "counter", "Messages received from peers.",
        n(ci.messages_received));
    one("broker_cluster_forward_dropped_total", "counter",
        "Message copies refused because a peer's link queue was full.", n(ci.forward_dropped));
    one("broker_cluster_malformed_frames_total", "counter",
        "Data-plane frames from peers that did not decode.", n(ci.malformed_frames));
    one("broker_cluster_route_ack_timeouts_total", "counter",
        "SUBACKs sent before every peer acknowledged the route.", n(ci.route_ack_timeouts));
    one("broker_cluster_retained_applied_total", "counter",
        "Replicated retained entries that were newer than the local copy.", n(ci.retained_applied));
    one("broker_cluster_claims_total", "counter",
        "Connects on this node that claimed their client id cluster-wide.", n(ci.claims));
    one("broker_cluster_claims_lost_total", "counter",
        "Claims that lost to a newer claim on the same client id.", n(ci.claims_lost));
    one("broker_cluster_claim_timeouts_total", "counter",
        "Claims that went ahead without the arbiter's or a peer's answer.", n(ci.claim_timeouts));
    one("broker_cluster_sessions_moved_in_total", "counter",
        "Sessions received from other nodes when their clients resumed here.",
        n(ci.sessions_moved_in));
    one("broker_cluster_sessions_moved_out_total", "counter", "Sessions handed to other nodes.",
        n(ci.sessions_moved_out));
    one("broker_cluster_sessions_taken_over_total", "counter",
        "Local sessions ended or moved because their client id was claimed elsewhere.",
        n(ci.sessions_taken_over));
    one("broker_cluster_shared_dropped_total", "counter",
        "Messages for a shared group this node was chosen for after its last member left.",
        n(ci.shared_dropped));
    one("broker_cluster_membership_dropped_total", "counter",
        "Membership packets dropped (malformed, wrong key or label).", n(ci.membership.dropped));
    one("broker_cluster_probe_failures_total", "counter", "Failed membership probes.",
        n(ci.membership.probe_failures));
    one("broker_cluster_local_health", "gauge", "Lifeguard's local health score (0 = healthy).",
        n(ci.health));
    out +=
        "# HELP broker_cluster_member_events_total Membership events about peers: joined, left "
        "(gracefully), failed.\n# TYPE broker_cluster_member_events_total counter\n"
        "broker_cluster_member_events_total{event=\"join\"} " +
        n(ci.members_joined) + "\nbroker_cluster_member_events_total{event=\"leave\"} " +
        n(ci.members_left) + "\nbroker_cluster_member_events_total{event=\"failed\"} " +
        n(ci.members_failed) + "\n";
    struct Series {
      const char* name;
      const char* type;
      const char* help;
      std::function<std::string(const ClusterLinkInfo&)> value;
    };
    const Series series[] = {
        {"broker_cluster_link_up", "gauge", "1 while the link to the peer is connected.",
         [&](const ClusterLinkInfo& l) { return n(l.connected ? 1 : 0); }},
        {"broker_cluster_link_sent_total", "counter", "Frames written to the peer.",
         [&](const ClusterLinkInfo& l) { return n(l.frames_sent); }},
        {"broker_cluster_link_acked_total", "counter", "Frames the peer acknowledged.",
         [&](const ClusterLinkInfo& l) { return n(l.frames_acked); }},
        {"broker_cluster_link_received_total", "counter", "Frames received from the peer.",
         [&](const ClusterLinkInfo& l) { return n(l.frames_received); }},
        {"broker_cluster_link_failed_total", "counter",
         "Failed connects, lost links and refused handshakes.",
         [&](const ClusterLinkInfo& l) { return n(l.failures); }},
        {"broker_cluster_link_dropped_total", "counter", "Frames refused: the queue was full.",
         [&](const ClusterLinkInfo& l) { return n(l.dropped); }},
        {"broker_cluster_link_queue_frames", "gauge", "Frames queued or unacknowledged.",
         [&](const ClusterLinkInfo& l) { return n(l.queue_frames); }},
        {"broker_cluster_link_queue_bytes", "gauge", "Bytes queued or unacknowledged.",
         [&](const ClusterLinkInfo& l) { return n(l.queue_bytes); }},
    };
    for (const Series& m : series) {
      out += std::string("# HELP ") + m.name + ' ' + m.help + "\n# TYPE " + m.name + ' ' + m.type +
             '\n';
      for (const ClusterLinkInfo& l : ci.links) {
        out += std::string(m.name) + "{peer=\"" + label_value(l.peer) + "\"} " + m.value(l) + '\n';
      }
    }
    const char* rtt = "broker_cluster_link_rtt_seconds";
    out +=
        std::string("# HELP ") + rtt + " Round trip of link pings.\n# TYPE " + rtt + " histogram\n";
    for (const ClusterLinkInfo& l : ci.links) {
      const std::string peer = "peer=\"" + label_value(l.peer) + "\"";
      for (const auto& [bound, count] : l.rtt_buckets) {
        char le[32];
        std::snprintf(le, sizeof le, "%g", bound);
        out += std::string(rtt) + "_bucket{" + peer + ",le=\"" + le + "\"} " + n(count) + '\n';
      }
      out += std::string(rtt) + "_bucket{" + peer + ",le=\"+Inf\"} " + n(l.rtt_count) + '\n';
      char sum[64];
      std::snprintf(sum, sizeof sum, "%.9g", l.rtt_sum);
      out += std::string(rtt) + "_sum{" + peer + "} " + sum + '\n';
      out += std::string(rtt) + "_count{" + peer + "} " + n(l.rtt_count) + '\n';
    }
  }

  // ---- /debug -----------------------------------------------------------------------------------

  Reply debug_index(const httplib::Request&) {
    return Reply{200, R"({"endpoints":["/debug/stats","/debug/threads","/debug/memory"]})"};
  }

  Reply debug_stats(const httplib::Request&) {
    const BrokerStats s = broker.stats();
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("node");
    write_string(w, options.node_name);
    w.Key("broker");
    w.StartObject();
    const std::pair<const char*, std::uint64_t> fields[] = {
        {"clients_connected", s.clients_connected},
        {"sessions", s.sessions},
        {"subscriptions", s.subscriptions},
        {"retained_messages", s.retained_messages},
        {"inflight_messages", s.inflight_messages},
        {"messages_received", s.messages_received},
        {"messages_sent", s.messages_sent},
        {"messages_dropped", s.messages_dropped},
        {"bytes_received", s.bytes_received},
        {"bytes_sent", s.bytes_sent},
        {"connections_total", s.connections_total},
        {"auth_failures", s.auth_failures},
        {"acl_denials", s.acl_denials},
        {"protocol_errors", s.protocol_errors},
        {"uptime_seconds", static_cast<std::uint64_t>(s.uptime.count())},
    };
    for (const auto& [k, v] : fields) {
      w.Key(k);
      w.Uint64(v);
    }
    w.EndObject();
    w.Key("bus");
    w.StartObject();
    for (const auto& [channel, dropped] : bus.dropped_by_channel()) {
      write_string(w, channel);
      w.StartObject();
      w.Key("subscribed");
      w.Bool(bus.has_subscribers(channel));
      w.Key("dropped");
      w.Uint64(dropped);
      w.EndObject();
    }
    w.EndObject();
    w.Key("api");
    w.StartObject();
    w.Key("port");
    w.Uint(bound_port.load());
    w.Key("sse_clients");
    w.Uint(sse_clients.load());
    w.Key("proxy_calls");
    w.Uint(proxy_calls.load());
    w.Key("requests");
    w.Uint64(requests.load());
    w.Key("auth_failures");
    w.Uint64(auth_failures.load());
    w.Key("uptime_seconds");
    w.Int64(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_at).count());
    w.EndObject();
    w.EndObject();
    return Reply{200, buf.GetString()};
  }

  Reply debug_threads(const httplib::Request&) {
    const auto threads = http::read_thread_stats();
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("count");
    w.Uint64(threads.size());
    w.Key("threads");
    w.StartArray();
    for (const http::ThreadStats& t : threads) {
      w.StartObject();
      w.Key("tid");
      w.Int(t.tid);
      w.Key("name");
      write_string(w, t.name);
      w.Key("cpu_seconds");
      w.Double(t.cpu_seconds);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    return Reply{200, buf.GetString()};
  }

  Reply debug_memory(const httplib::Request&) {
    const http::ProcessStats p = http::read_process_stats();
    rapidjson::StringBuffer buf;
    JsonWriter w(buf);
    w.StartObject();
    w.Key("resident_bytes");
    w.Uint64(p.resident_bytes);
    w.Key("virtual_bytes");
    w.Uint64(p.virtual_bytes);
    w.Key("open_fds");
    w.Uint64(p.open_fds);
    w.Key("max_fds");
    w.Uint64(p.max_fds);
    w.Key("threads");
    w.Uint64(p.threads);
    w.Key("cpu_seconds");
    w.Double(p.cpu_seconds);
    w.EndObject();
    return Reply{200, buf.GetString()};
  }
};

// ---- ApiServer ---------------------------------------------------------------------------------

ApiServer::ApiServer(ApiOptions options, Broker& broker, Bus& bus)
    : impl_(std::make_unique<Impl>(std::move(options), broker, bus)) {}

ApiServer::~ApiServer() { stop(); }

void ApiServer::start() { impl_->start(); }

void ApiServer::start(std::error_code& ec) noexcept {
  util::capture_errors(ec, [this] { impl_->start(); });
}

void ApiServer::Impl::start() {
  std::lock_guard<std::mutex> lock(lifecycle_mutex);
  if (started) throw std::system_error(make_error_code(errc::already_started));
  auto http = std::make_unique<httplib::Server>();
  const ApiOptions& o = options;
  const std::size_t pool =
      std::max(1u, o.threads) + std::max(1u, o.max_sse_clients) + std::max(1u, o.max_proxy_calls);
  http->new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
  http->set_payload_max_length(o.max_body_bytes);
  // httplib's default also sets SO_REUSEPORT, which lets a second server bind a port in use
  // (and share its connections) instead of failing: SO_REUSEADDR only.
  http->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  // Idle keep-alive connections hold a pool thread: keep them short.
  http->set_keep_alive_timeout(2);
  http->set_read_timeout(5);
  http->set_write_timeout(5);
  const httplib::Server::Handler handler = [this](const httplib::Request& req,
                                                  httplib::Response& res) { dispatch(req, res); };
  http->Get(".*", handler);
  http->Post(".*", handler);
  http->Put(".*", handler);
  http->Patch(".*", handler);
  http->Delete(".*", handler);
  http->Options(".*", handler);
  errno = 0;
  int port = o.port;
  if (o.port == 0) {
    port = http->bind_to_any_port(o.bind);
  } else if (!http->bind_to_port(o.bind, o.port)) {
    port = -1;
  }
  if (port <= 0) {
    throw std::system_error(
        std::error_code(errno != 0 ? errno : EADDRINUSE, std::system_category()),
        "brokerha::ApiServer::start: bind " + o.bind);
  }
  bound_port = static_cast<std::uint16_t>(port);
  server = std::move(http);
  started = true;
  thread = std::thread([this] {
    server->listen_after_bind();
    listen_returned = true;
  });
}

void ApiServer::stop() noexcept {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.lifecycle_mutex);
  if (!d.started || d.stopped) return;
  d.stopped = true;
  d.stopping = true;
  // httplib's stop() does nothing until listen_after_bind() has marked the server running.
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!d.server->is_running() && !d.listen_returned && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  d.server->stop();
  if (d.thread.joinable()) d.thread.join();
}

std::uint16_t ApiServer::port() const noexcept { return impl_->bound_port.load(); }

const std::string& ApiServer::node_name() const noexcept { return impl_->options.node_name; }

}  // namespace brokerha
