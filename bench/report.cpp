// SPDX-License-Identifier: Apache-2.0
// What a brokerha-bench run prints (report.hpp): the progress line, the human summary and the
// RESULT line, whose keys and number formats bench/compare, bench/smoke.sh and the tests
// parse. Runs on the bench's one thread: the progress line from a timer, the rest after the
// io_context has stopped.

#include "report.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <optional>

#include "engine.hpp"

namespace brokerha::bench {
namespace {

// Thousands separators for the human summary.
std::string group(std::uint64_t v) {
  std::string s = std::to_string(v);
  for (std::size_t i = s.size(); i > 3; i -= 3) s.insert(i - 3, ",");
  return s;
}

std::string format_ns(std::uint64_t ns) {
  char buf[64];
  if (ns < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%.0f us", static_cast<double>(ns) / 1e3);
  } else if (ns < 1'000'000'000) {
    std::snprintf(buf, sizeof buf, "%.2f ms", static_cast<double>(ns) / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f s", static_cast<double>(ns) / 1e9);
  }
  return buf;
}

std::string error_token(const std::string& e) {
  if (e.empty()) return "-";
  std::string t = e;
  for (char& c : t) {
    if (c == ' ' || c == '\t' || c == '\n') c = '_';
  }
  return t;
}

}  // namespace

void print_progress(const Engine& e, std::uint64_t now, ProgressMarks& last) {
  const Options& opt = e.opt;
  const Phase phase = e.phase;
  const double dt = static_cast<double>(now - last.ns) / 1e9;
  if (phase == Phase::connecting) {
    std::fprintf(stderr, "[connecting] %zu of %zu connections ready\n", e.ready(), e.total_conns());
  } else if (opt.mode == Mode::idle) {
    std::fprintf(stderr, "[idle] %zu connections held\n", e.ready());
  } else if (phase == Phase::probing) {
    std::fprintf(stderr, "[probing] waiting for every subscription to route\n");
  } else if (phase == Phase::running || phase == Phase::draining) {
    std::uint64_t sent = 0, delivered = 0, outstanding = 0;
    for (const auto& p : e.pubs) sent += p->seq;
    for (const auto& s : e.subs) delivered += s->received;
    for (const Topic& t : e.topics) outstanding = std::max(outstanding, t.max_outstanding());
    const double elapsed = static_cast<double>(now - e.record().start_ns) / 1e9;
    std::fprintf(stderr,
                 "[%5.1f s%s] sent %s (%.0f/s)  delivered %s (%.0f/s)  max outstanding %" PRIu64
                 "  p99 %s\n",
                 elapsed, phase == Phase::draining ? " drain" : "", group(sent).c_str(),
                 dt > 0 ? static_cast<double>(sent - last.sent) / dt : 0.0,
                 group(delivered).c_str(),
                 dt > 0 ? static_cast<double>(delivered - last.delivered) / dt : 0.0, outstanding,
                 format_ns(e.latency.percentile(0.99)).c_str());
    last.sent = sent;
    last.delivered = delivered;
  }
  last.ns = now;
}

int print_traffic_result(const Engine& e) {
  const Options& opt = e.opt;
  const RunRecord& r = e.record();
  const LatencyHistogram& latency = e.latency;
  const std::uint64_t invalid = e.invalid;
  const std::uint64_t rejected = e.rejected;
  StreamCounters total;
  std::uint64_t expected = 0;
  for (const auto& s : e.subs) {
    expected += s->topic->sent;
    for (const Conn* p : s->topic->pubs) {
      const auto& tr = s->trackers[p->index()];
      if (tr) {
        total.add(tr->finish(p->seq));
      } else {
        total.lost += p->seq;
      }
    }
  }
  std::uint64_t sent = 0;
  for (const auto& p : e.pubs) sent += p->seq;
  const bool ran = r.start_ns != 0;
  const std::uint64_t pub_end = r.publish_end_ns != 0 ? r.publish_end_ns : r.end_ns;
  const double publish_s = ran ? static_cast<double>(pub_end - r.start_ns) / 1e9 : 0.0;
  const double deliver_s = ran && e.last_delivery_ns > r.start_ns
                               ? static_cast<double>(e.last_delivery_ns - r.start_ns) / 1e9
                               : 0.0;
  const double throughput = deliver_s > 0 ? static_cast<double>(total.unique) / deliver_s : 0.0;
  const double publish_rate = publish_s > 0 ? static_cast<double>(sent) / publish_s : 0.0;
  std::optional<double> broker_cpu;
  if (r.broker_cpu_start && r.broker_cpu_end) broker_cpu = *r.broker_cpu_end - *r.broker_cpu_start;
  const double bench_cpu = ran ? r.bench_cpu_end - r.bench_cpu_start : 0.0;
  const bool clean = total.lost == 0 && total.duplicates == 0 && total.reordered == 0 &&
                     invalid == 0 && rejected == 0;
  const bool ok = r.error.empty() && clean;

  const char* version = opt.version == ProtocolVersion::v5 ? "5" : "3.1.1";
  const auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e3; };
  std::printf(
      "brokerha-bench: %s, QoS %u, MQTT %s over %s, %ld publishers -> %ld subscribers, "
      "%zu-byte payloads, ",
      shape_name(opt.shape), opt.qos, version, transport_name(opt), opt.pubs, opt.subs,
      opt.payload);
  if (opt.rate > 0) {
    std::printf("%g msg/s per publisher", opt.rate);
  } else {
    std::printf("max rate (backlog %" PRIu64 "%s)", opt.backlog,
                opt.qos > 0 ? (", inflight " + std::to_string(opt.inflight)).c_str() : "");
  }
  std::printf(", %.1f s\n", opt.duration);
  if (opt.pub_host != opt.sub_host || opt.pub_port != opt.sub_port) {
    std::printf("  cross-host  publishers on %s:%u, subscribers on %s:%u\n", opt.pub_host.c_str(),
                static_cast<unsigned>(opt.pub_port), opt.sub_host.c_str(),
                static_cast<unsigned>(opt.sub_port));
  }
  std::printf("  published   %s messages (%.0f/s)\n", group(sent).c_str(), publish_rate);
  std::printf("  delivered   %s of %s expected (%.0f/s)\n", group(total.unique).c_str(),
              group(expected).c_str(), throughput);
  std::printf("  latency     p50 %s  p99 %s  p99.9 %s  max %s  mean %s\n",
              format_ns(latency.percentile(0.5)).c_str(),
              format_ns(latency.percentile(0.99)).c_str(),
              format_ns(latency.percentile(0.999)).c_str(), format_ns(latency.max()).c_str(),
              format_ns(static_cast<std::uint64_t>(latency.mean())).c_str());
  std::printf("  integrity   lost %s  duplicates %s  reordered %s  invalid %s%s\n",
              group(total.lost).c_str(), group(total.duplicates).c_str(),
              group(total.reordered).c_str(), group(invalid).c_str(),
              rejected > 0 ? ("  rejected " + group(rejected)).c_str() : "");
  if (broker_cpu) {
    std::printf("  broker      pid %ld: %.2f s CPU (%.2f cores), %.2f s per million deliveries\n",
                opt.broker_pid, *broker_cpu,
                r.end_ns > r.start_ns && ran
                    ? *broker_cpu / (static_cast<double>(r.end_ns - r.start_ns) / 1e9)
                    : 0.0,
                total.unique > 0 ? *broker_cpu * 1e6 / static_cast<double>(total.unique) : 0.0);
  }
  std::printf("  bench       %.2f s CPU (%.2f cores)%s\n", bench_cpu,
              r.end_ns > r.start_ns && ran
                  ? bench_cpu / (static_cast<double>(r.end_ns - r.start_ns) / 1e9)
                  : 0.0,
              r.drained || !ran ? "" : "  (not drained)");
  if (!r.error.empty()) std::printf("  error       %s\n", r.error.c_str());

  std::printf("RESULT");
  if (!opt.label.empty()) std::printf(" scenario=%s", opt.label.c_str());
  std::printf(" mode=traffic transport=%s", transport_name(opt));
  std::printf(" shape=%s qos=%u mqtt=%s pubs=%ld subs=%ld payload=%zu rate=%g backlog=%" PRIu64
              " inflight=%u duration_s=%.3f sent=%" PRIu64 " expected=%" PRIu64
              " delivered=%" PRIu64 " received=%" PRIu64
              " throughput=%.0f publish_rate=%.0f p50_us=%.1f p99_us=%.1f"
              " p999_us=%.1f max_us=%.1f mean_us=%.1f lost=%" PRIu64 " duplicates=%" PRIu64
              " reordered=%" PRIu64 " invalid=%" PRIu64 " rejected=%" PRIu64,
              shape_name(opt.shape), opt.qos, version, opt.pubs, opt.subs, opt.payload, opt.rate,
              opt.backlog, opt.inflight, publish_s, sent, expected, total.unique, total.received,
              throughput, publish_rate, us(latency.percentile(0.5)), us(latency.percentile(0.99)),
              us(latency.percentile(0.999)), us(latency.max()), latency.mean() / 1e3, total.lost,
              total.duplicates, total.reordered, invalid, rejected);
  if (broker_cpu) {
    std::printf(" broker_cpu_s=%.3f broker_cpu_s_per_m=%.4f", *broker_cpu,
                total.unique > 0 ? *broker_cpu * 1e6 / static_cast<double>(total.unique) : 0.0);
  } else {
    std::printf(" broker_cpu_s=- broker_cpu_s_per_m=-");
  }
  std::printf(" bench_cpu_s=%.3f ok=%d error=%s\n", bench_cpu, ok ? 1 : 0,
              error_token(r.error).c_str());
  return r.error.empty() && !clean ? 1 : 0;
}

void print_idle_result(const Engine& e) {
  const Options& opt = e.opt;
  const RunRecord& r = e.record();
  const double connect_s = r.connect_end_ns > r.connect_start_ns
                               ? static_cast<double>(r.connect_end_ns - r.connect_start_ns) / 1e9
                               : 0.0;
  std::printf("brokerha-bench: %ld idle connections (MQTT %s, %s) to %s:%u\n", opt.idle,
              opt.version == ProtocolVersion::v5 ? "5" : "3.1.1", transport_name(opt),
              opt.sub_host.c_str(), static_cast<unsigned>(opt.sub_port));
  std::printf("  connected   %zu in %.2f s\n", e.ready(), connect_s);
  std::optional<std::int64_t> delta;
  if (r.rss_before && r.rss_after) {
    delta = static_cast<std::int64_t>(*r.rss_after) - static_cast<std::int64_t>(*r.rss_before);
    std::printf("  broker RSS  pid %ld: %" PRIu64 " KiB -> %" PRIu64 " KiB, +%" PRId64
                " KiB, %.3f KiB per connection\n",
                opt.broker_pid, *r.rss_before, *r.rss_after, *delta,
                static_cast<double>(*delta) / static_cast<double>(opt.idle));
  }
  if (!r.error.empty()) std::printf("  error       %s\n", r.error.c_str());
  std::printf("RESULT");
  if (!opt.label.empty()) std::printf(" scenario=%s", opt.label.c_str());
  std::printf(" mode=idle transport=%s mqtt=%s connections=%ld connected=%zu connect_s=%.3f",
              transport_name(opt), opt.version == ProtocolVersion::v5 ? "5" : "3.1.1", opt.idle,
              e.ready(), connect_s);
  if (delta) {
    std::printf(" rss_before_kib=%" PRIu64 " rss_after_kib=%" PRIu64 " rss_delta_kib=%" PRId64
                " kib_per_conn=%.3f",
                *r.rss_before, *r.rss_after, *delta,
                static_cast<double>(*delta) / static_cast<double>(opt.idle));
  } else {
    std::printf(" rss_before_kib=- rss_after_kib=- rss_delta_kib=- kib_per_conn=-");
  }
  std::printf(" ok=%d error=%s\n", r.error.empty() ? 1 : 0, error_token(r.error).c_str());
}

}  // namespace brokerha::bench
