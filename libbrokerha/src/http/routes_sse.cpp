// SPDX-License-Identifier: Apache-2.0
// /api/sse (docs/api.md): the Bus's channels as Server-Sent Events. GET takes
// ?filters=<channel>,...&channel_size=N, POST a JSON body {"filters": [...], "channel_size": N};
// no filters = every channel. The stream opens with ": connected", then one event per bus
// event ("event: <channel>", one "data:" line per line of data), and ": keepalive" after
// ApiOptions::sse_keepalive of silence.
//
// Threads: a stream holds one of cpp-httplib's request pool threads for its life, and an SSE
// Slot (at most max_sse_clients at once, 503 beyond). It waits on its bus subscription in
// slices of at most 200 ms and checks `stopping` between them, so ApiServer::stop() is bounded.

#include <rapidjson/document.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http/api_impl.hpp"

namespace brokerha {

namespace {

using http::Clock;
using http::error_reply;
using http::send;

constexpr std::size_t kSseMinBuffer = 100;
constexpr std::size_t kSseMaxBuffer = 100'000;
constexpr auto kSseSlice = std::chrono::milliseconds(200);

// One open stream, shared by httplib's content provider until the connection ends.
struct SseStream {
  SseStream(std::atomic<unsigned>& clients, unsigned cap) : slot(clients, cap) {}
  ~SseStream() {
    if (sub) sub->close();  // before the slot is given back
  }

  http::Slot slot;
  std::unique_ptr<BusSubscription> sub;
  Clock::time_point last_write = Clock::now();
  bool greeted = false;
};

void frame(std::string& out, const BusEvent& e) {
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

}  // namespace

void ApiServer::Impl::sse(const httplib::Request& req, httplib::Response& res) {
  std::vector<std::string> filters;
  std::uint64_t size = kSseMinBuffer;
  if (req.method == "POST") {
    rapidjson::Document doc;
    const std::string error = http::parse_body(req.get_header_value("Content-Type"), req.body, doc,
                                               {{"filters", http::FieldType::string_array},
                                                {"channel_size", http::FieldType::unsigned_int}});
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
  auto stream = std::make_shared<SseStream>(sse_clients, options.max_sse_clients);
  if (!stream->slot) return send(res, error_reply(503, "too many SSE clients"));
  stream->sub =
      bus.subscribe(filters, static_cast<std::size_t>(size), options.max_sse_buffer_bytes);
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

}  // namespace brokerha
