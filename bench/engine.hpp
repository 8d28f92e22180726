// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha-bench's run: Engine owns the io_context, every connection and the run's phases.
// Connect (at most --connect-window at once), probe every topic until each subscriber has
// received a probe (subscriptions have reached the publishing broker, which matters in
// cross-host mode), publish for --duration, drain what is outstanding, close; idle mode holds
// the connections for --settle and --hold instead. Conn (client.hpp) reads and writes the
// public members below; shapes.hpp says which connections a run opens, report.hpp what it
// prints. One thread: Engine::run() runs the io_context until every connection is closed.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "asio_include.hpp"
#include "client.hpp"
#include "options.hpp"
#include "stats.hpp"

namespace brokerha::bench {

enum class Phase : std::uint8_t { connecting, probing, running, draining, closing, done };

// What a run measured besides the connections' own counters: the clock at each phase, the
// broker's and the bench's CPU, the broker's RSS, and how the run ended. Engine fills it;
// report.cpp prints it.
struct RunRecord {
  std::string error;           // the first failure; empty when the run completed
  std::uint64_t start_ns = 0;  // first measured publish
  std::uint64_t publish_end_ns = 0;
  std::uint64_t end_ns = 0;  // drained (or gave up)
  std::uint64_t connect_start_ns = 0;
  std::uint64_t connect_end_ns = 0;
  std::optional<double> broker_cpu_start, broker_cpu_end;
  double bench_cpu_start = 0, bench_cpu_end = 0;
  std::optional<std::uint64_t> rss_before, rss_after;
  bool drained = false;
};

// The previous progress line's time and counts (report.cpp's print_progress()).
struct ProgressMarks {
  std::uint64_t ns = 0;
  std::uint64_t delivered = 0;
  std::uint64_t sent = 0;
};

class Engine {
 public:
  explicit Engine(Options options);
  /// The whole run: 0 when it completed cleanly, 1 when it completed with loss, duplicates,
  /// reordering or invalid messages, 2 when it could not start, 3 when it failed.
  int run();

  // Used by Conn.
  asio::io_context io;
  const Options opt;
  std::vector<char> read_buffer;
  Phase phase = Phase::connecting;
  std::vector<std::unique_ptr<Conn>> pubs;
  std::vector<std::unique_ptr<Conn>> subs;
  std::vector<std::unique_ptr<Conn>> idles;
  std::vector<Topic> topics;
  LatencyHistogram latency;
  std::uint64_t invalid = 0;
  std::uint64_t rejected = 0;  // QoS 1/2 publishes the broker acknowledged with an error
  std::uint64_t last_delivery_ns = 0;
  bool any_keepalive = false;
  std::unique_ptr<asio::ssl::context> tls_context;   // --tls
  std::uint64_t mask_state = 0x9E3779B97F4A7C15ull;  // WebSocket masking keys (xorshift)
  std::uint32_t next_mask() {
    mask_state ^= mask_state << 13;
    mask_state ^= mask_state >> 7;
    mask_state ^= mask_state << 17;
    return static_cast<std::uint32_t>(mask_state >> 16);
  }

  void on_conn_ready(Conn& c);
  void fail(const std::string& what);
  void on_conn_closed();
  void on_probe(Conn& sub);

  // Used by the report.
  const RunRecord& record() const noexcept { return record_; }
  std::size_t ready() const noexcept { return ready_; }
  std::size_t total_conns() const { return pubs.size() + subs.size() + idles.size(); }

 private:
  void start_next_connects();
  void start_probing();
  void probe_round();
  void start_running();
  void stop_publishing();
  void drain_check();
  void finish_run();
  void close_all();
  void progress_tick();
  void keepalive_tick();
  Conn& conn_at(std::size_t i) {
    if (i < subs.size()) return *subs[i];
    i -= subs.size();
    if (i < pubs.size()) return *pubs[i];
    return *idles[i - pubs.size()];
  }

  asio::steady_timer phase_timer_;
  asio::steady_timer poll_timer_;
  asio::steady_timer progress_timer_;
  asio::steady_timer keepalive_timer_;
  asio::signal_set signals_;
  std::size_t next_connect_ = 0;
  std::size_t connecting_ = 0;
  std::size_t ready_ = 0;
  std::size_t closed_ = 0;
  RunRecord record_;
  ProgressMarks progress_;
};

}  // namespace brokerha::bench
