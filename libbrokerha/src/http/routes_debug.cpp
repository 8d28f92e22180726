// SPDX-License-Identifier: Apache-2.0
// /debug introspection (docs/api.md, behind auth): /debug lists the endpoints, /debug/stats
// the broker's counters, the bus channels and the API's own state, /debug/threads every
// thread of the process (tid, name, CPU seconds), /debug/memory the process's resources.
//
// Threads: cpp-httplib's request pool threads, concurrently; /proc is read on each request
// (process_stats.hpp).

#include <chrono>
#include <cstdint>
#include <utility>

#include "http/api_impl.hpp"
#include "http/process_stats.hpp"

namespace brokerha {

namespace {

using http::JsonWriter;
using http::Reply;

}  // namespace

Reply ApiServer::Impl::debug_index(const httplib::Request&) {
  return Reply{200, R"({"endpoints":["/debug/stats","/debug/threads","/debug/memory"]})"};
}

Reply ApiServer::Impl::debug_stats(const httplib::Request&) {
  const BrokerStats s = broker.stats();
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("node");
  http::write_string(w, options.node_name);
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
    http::write_string(w, channel);
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
  w.Int64(
      std::chrono::duration_cast<std::chrono::seconds>(http::Clock::now() - started_at).count());
  w.EndObject();
  w.EndObject();
  return Reply{200, buf.GetString()};
}

Reply ApiServer::Impl::debug_threads(const httplib::Request&) {
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
    http::write_string(w, t.name);
    w.Key("cpu_seconds");
    w.Double(t.cpu_seconds);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return Reply{200, buf.GetString()};
}

Reply ApiServer::Impl::debug_memory(const httplib::Request&) {
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

}  // namespace brokerha
