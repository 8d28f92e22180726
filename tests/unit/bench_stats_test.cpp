// SPDX-License-Identifier: Apache-2.0
// Unit tests of brokerha-bench's own statistics (bench/stats.hpp) and payload header
// (bench/payload.hpp): histogram buckets and percentiles against a sorted-array reference on
// random data, and loss / duplicate / reorder detection on crafted and random sequences
// against a naive set-based reference.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../../bench/payload.hpp"
#include "../../bench/stats.hpp"

namespace {

using brokerha::bench::Arrival;
using brokerha::bench::LatencyHistogram;
using brokerha::bench::SequenceTracker;
using brokerha::bench::StreamCounters;

// The reference: the value of rank ceil(q * n) in the sorted data.
std::uint64_t reference_percentile(const std::vector<std::uint64_t>& sorted, double q) {
  const std::uint64_t rank = LatencyHistogram::rank_of(q, sorted.size());
  return sorted[static_cast<std::size_t>(rank - 1)];
}

void check_percentiles(const std::vector<std::uint64_t>& values) {
  LatencyHistogram h;
  for (std::uint64_t v : values) h.record(v);
  std::vector<std::uint64_t> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  REQUIRE(h.count() == values.size());
  CHECK(h.min() == sorted.front());
  CHECK(h.max() == sorted.back());
  for (double q : {0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0}) {
    CAPTURE(q);
    const std::uint64_t ref = reference_percentile(sorted, q);
    const std::uint64_t got = h.percentile(q);
    CAPTURE(ref);
    CAPTURE(got);
    // Same bucket as the reference value, so within the bucket's relative width (1/128).
    CHECK(LatencyHistogram::bucket_of(got) == LatencyHistogram::bucket_of(ref));
    CHECK(got >= ref);
    CHECK(static_cast<double>(got - ref) <= static_cast<double>(ref) / 128.0);
    CHECK(got <= h.max());
  }
  CHECK(h.percentile(1.0) == sorted.back());
}

// What a stream should count, computed the obvious way.
StreamCounters reference_counts(const std::vector<std::uint64_t>& arrivals, std::uint64_t sent) {
  StreamCounters r;
  std::set<std::uint64_t> seen;
  std::uint64_t high = 0;  // one more than the highest seen
  for (std::uint64_t s : arrivals) {
    ++r.received;
    if (seen.count(s) != 0) {
      ++r.duplicates;
      continue;
    }
    seen.insert(s);
    ++r.unique;
    if (s + 1 <= high) ++r.reordered;
    high = std::max(high, s + 1);
  }
  r.lost = sent - seen.size();
  return r;
}

void check_same(const StreamCounters& got, const StreamCounters& want) {
  CHECK(got.received == want.received);
  CHECK(got.unique == want.unique);
  CHECK(got.duplicates == want.duplicates);
  CHECK(got.reordered == want.reordered);
  CHECK(got.lost == want.lost);
}

StreamCounters track(const std::vector<std::uint64_t>& arrivals, std::uint64_t sent) {
  SequenceTracker t;
  for (std::uint64_t s : arrivals) t.record(s);
  return t.finish(sent);
}

}  // namespace

TEST_CASE("bench histogram: buckets tile the value range") {
  for (std::size_t i = 0; i + 1 < LatencyHistogram::kBucketCount; ++i) {
    CAPTURE(i);
    REQUIRE(LatencyHistogram::bucket_low(i) <= LatencyHistogram::bucket_high(i));
    REQUIRE(LatencyHistogram::bucket_high(i) + 1 == LatencyHistogram::bucket_low(i + 1));
    REQUIRE(LatencyHistogram::bucket_of(LatencyHistogram::bucket_low(i)) == i);
    REQUIRE(LatencyHistogram::bucket_of(LatencyHistogram::bucket_high(i)) == i);
  }
  const std::size_t last = LatencyHistogram::kBucketCount - 1;
  CHECK(LatencyHistogram::bucket_of(UINT64_MAX) == last);
  CHECK(LatencyHistogram::bucket_high(last) == UINT64_MAX);
  // Exact below 256, relative width at most 1/128 above.
  for (std::uint64_t v = 0; v < 256; ++v) {
    CHECK(LatencyHistogram::bucket_low(LatencyHistogram::bucket_of(v)) == v);
    CHECK(LatencyHistogram::bucket_high(LatencyHistogram::bucket_of(v)) == v);
  }
  std::mt19937_64 rng(42);
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t v = rng() >> (rng() % 64);
    const std::size_t b = LatencyHistogram::bucket_of(v);
    REQUIRE(LatencyHistogram::bucket_low(b) <= v);
    REQUIRE(v <= LatencyHistogram::bucket_high(b));
    const std::uint64_t width = LatencyHistogram::bucket_high(b) - LatencyHistogram::bucket_low(b);
    REQUIRE(static_cast<double>(width) <=
            static_cast<double>(LatencyHistogram::bucket_low(b)) / 128.0);
  }
}

TEST_CASE("bench histogram: percentiles match a sorted array on random data") {
  std::mt19937_64 rng(7);
  SUBCASE("uniform, small values (exact range)") {
    std::uniform_int_distribution<std::uint64_t> d(0, 255);
    std::vector<std::uint64_t> v(10000);
    for (auto& x : v) x = d(rng);
    check_percentiles(v);
  }
  SUBCASE("uniform latencies 10 us .. 10 ms") {
    std::uniform_int_distribution<std::uint64_t> d(10'000, 10'000'000);
    std::vector<std::uint64_t> v(200000);
    for (auto& x : v) x = d(rng);
    check_percentiles(v);
  }
  SUBCASE("log-normal with a long tail") {
    std::lognormal_distribution<double> d(11.0, 1.5);  // median ~60 us
    std::vector<std::uint64_t> v(100000);
    for (auto& x : v) x = static_cast<std::uint64_t>(d(rng));
    check_percentiles(v);
  }
  SUBCASE("a few values, heavy duplicates, huge outliers") {
    std::vector<std::uint64_t> v;
    for (int i = 0; i < 997; ++i) v.push_back(25'000);
    v.push_back(40'000'000);
    v.push_back(UINT64_MAX / 3);
    v.push_back(1);
    check_percentiles(v);
  }
  SUBCASE("one value") { check_percentiles({123'456'789}); }
  SUBCASE("random sizes") {
    for (int round = 0; round < 50; ++round) {
      std::vector<std::uint64_t> v(1 + rng() % 3000);
      for (auto& x : v) x = rng() >> (rng() % 64);
      check_percentiles(v);
    }
  }
}

TEST_CASE("bench histogram: summary values merge and reset") {
  LatencyHistogram h;
  CHECK(h.count() == 0);
  CHECK(h.percentile(0.5) == 0);
  CHECK(h.max() == 0);
  CHECK(h.mean() == 0.0);
  for (std::uint64_t v : {100u, 200u, 300u, 400u}) h.record(v);
  CHECK(h.count() == 4);
  CHECK(h.min() == 100);
  CHECK(h.max() == 400);
  CHECK(h.mean() == doctest::Approx(250.0));
  CHECK(h.percentile(0.5) == 200);   // rank 2
  CHECK(h.percentile(0.51) == 301);  // rank 3: 300's bucket is [300, 301]

  LatencyHistogram a, b, all;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 5000; ++i) {
    const std::uint64_t v = rng() % 10'000'000;
    ((i % 3) == 0 ? a : b).record(v);
    all.record(v);
  }
  a.merge(b);
  CHECK(a.count() == all.count());
  CHECK(a.min() == all.min());
  CHECK(a.max() == all.max());
  for (double q : {0.5, 0.99, 0.999}) CHECK(a.percentile(q) == all.percentile(q));
  LatencyHistogram empty;
  empty.merge(a);
  CHECK(empty.min() == a.min());
  a.reset();
  CHECK(a.count() == 0);
  CHECK(a.percentile(0.99) == 0);
}

TEST_CASE("bench histogram: rank_of") {
  CHECK(LatencyHistogram::rank_of(0.5, 0) == 0);
  CHECK(LatencyHistogram::rank_of(0.0, 10) == 1);
  CHECK(LatencyHistogram::rank_of(0.5, 10) == 5);
  CHECK(LatencyHistogram::rank_of(0.51, 10) == 6);
  CHECK(LatencyHistogram::rank_of(0.99, 1000) == 990);
  CHECK(LatencyHistogram::rank_of(0.999, 1000) == 999);
  CHECK(LatencyHistogram::rank_of(1.0, 1000) == 1000);
  CHECK(LatencyHistogram::rank_of(2.0, 7) == 7);
}

TEST_CASE("bench sequences: crafted streams") {
  SUBCASE("in order") {
    SequenceTracker t;
    for (std::uint64_t s = 0; s < 1000; ++s) REQUIRE(t.record(s) == Arrival::in_order);
    const StreamCounters c = t.finish(1000);
    CHECK(c.unique == 1000);
    CHECK(c.lost == 0);
    CHECK(c.duplicates == 0);
    CHECK(c.reordered == 0);
    CHECK(t.contiguous() == 1000);
  }
  SUBCASE("gaps are lost, not reordered") {
    const StreamCounters c = track({0, 1, 2, 4, 5, 6, 8, 9}, 10);
    CHECK(c.lost == 2);
    CHECK(c.reordered == 0);
    CHECK(c.duplicates == 0);
  }
  SUBCASE("tail loss comes from the sent count") {
    const StreamCounters c = track({0, 1, 2, 3, 4}, 8);
    CHECK(c.lost == 3);
    CHECK(track({}, 5).lost == 5);
  }
  SUBCASE("duplicates, adjacent and after the window moved on") {
    SequenceTracker t;
    CHECK(t.record(0) == Arrival::in_order);
    CHECK(t.record(1) == Arrival::in_order);
    CHECK(t.record(1) == Arrival::duplicate);
    CHECK(t.record(2) == Arrival::in_order);
    CHECK(t.record(0) == Arrival::duplicate);
    CHECK(t.record(5) == Arrival::in_order);
    CHECK(t.record(5) == Arrival::duplicate);
    const StreamCounters c = t.finish(6);
    CHECK(c.received == 7);
    CHECK(c.unique == 4);
    CHECK(c.duplicates == 3);
    CHECK(c.lost == 2);  // 3 and 4
    CHECK(c.reordered == 0);
  }
  SUBCASE("reordering") {
    SequenceTracker t;
    CHECK(t.record(0) == Arrival::in_order);
    CHECK(t.record(2) == Arrival::in_order);
    CHECK(t.record(1) == Arrival::reordered);
    CHECK(t.record(3) == Arrival::in_order);
    CHECK(t.record(1) == Arrival::duplicate);
    CHECK(t.record(2) == Arrival::duplicate);
    const StreamCounters c = t.finish(4);
    CHECK(c.reordered == 1);
    CHECK(c.duplicates == 2);
    CHECK(c.lost == 0);
    CHECK(t.contiguous() == 4);
  }
  SUBCASE("a late block after a jump") {
    std::vector<std::uint64_t> a = {0, 1000};
    for (std::uint64_t s = 1; s < 1000; ++s) a.push_back(s);
    const StreamCounters c = track(a, 1001);
    CHECK(c.reordered == 999);
    CHECK(c.lost == 0);
    CHECK(c.duplicates == 0);
  }
  SUBCASE("a reordered stream that starts late") {
    const StreamCounters c = track({3, 2, 1, 0}, 4);
    CHECK(c.reordered == 3);
    CHECK(c.lost == 0);
  }
  SUBCASE("the window gives up old gaps") {
    SequenceTracker t(64);
    CHECK(t.record(0) == Arrival::in_order);
    CHECK(t.record(200) == Arrival::in_order);
    CHECK(t.given_up() == 136);  // 1 .. 136: 200 - 64 + 1 is the new lowest missing number
    CHECK(t.record(150) == Arrival::reordered);
    CHECK(t.record(5) == Arrival::duplicate);  // given up: cannot be told from a duplicate
    const StreamCounters c = t.finish(201);
    CHECK(c.unique == 3);
    CHECK(c.lost == 201 - 3);
  }
  SUBCASE("sums over streams") {
    StreamCounters total;
    total.add(track({0, 0, 2}, 3));
    total.add(track({1, 0}, 2));
    CHECK(total.received == 5);
    CHECK(total.unique == 4);
    CHECK(total.duplicates == 1);
    CHECK(total.reordered == 1);
    CHECK(total.lost == 1);
  }
}

TEST_CASE("bench sequences: random streams match a set-based reference") {
  std::mt19937_64 rng(2024);
  for (int round = 0; round < 200; ++round) {
    CAPTURE(round);
    const std::uint64_t sent = 1 + rng() % 5000;
    const unsigned drop_pct = static_cast<unsigned>(rng() % 4) * 3;  // 0, 3, 6, 9 %
    const unsigned dup_pct = static_cast<unsigned>(rng() % 3) * 2;   // 0, 2, 4 %
    const unsigned swap_pct = static_cast<unsigned>(rng() % 4) * 5;  // 0 .. 15 %
    std::vector<std::uint64_t> a;
    for (std::uint64_t s = 0; s < sent; ++s) {
      if (rng() % 100 < drop_pct) continue;
      a.push_back(s);
      if (rng() % 100 < dup_pct) a.push_back(s);
    }
    // Local reordering: move some arrivals a few places (up to 300) later.
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (rng() % 100 < swap_pct) {
        const std::size_t j = std::min(a.size() - 1, i + 1 + static_cast<std::size_t>(rng() % 300));
        std::swap(a[i], a[j]);
      }
    }
    // Occasionally a late duplicate of something old.
    if (!a.empty() && rng() % 2 == 0) a.push_back(a[static_cast<std::size_t>(rng() % a.size())]);
    check_same(track(a, sent), reference_counts(a, sent));
  }
}

TEST_CASE("bench payload header round trip") {
  using namespace brokerha::bench;
  std::string payload(64, 'x');
  write_payload_header(payload.data(), PayloadKind::message, 49, 0x0102030405060708ULL,
                       0xF0E0D0C0B0A09080ULL);
  PayloadHeader h = read_payload_header(payload);
  CHECK(h.kind == PayloadKind::message);
  CHECK(h.publisher == 49);
  CHECK(h.sequence == 0x0102030405060708ULL);
  CHECK(h.sent_ns == 0xF0E0D0C0B0A09080ULL);
  CHECK(payload.substr(kPayloadHeaderSize) == std::string(64 - kPayloadHeaderSize, 'x'));

  write_payload_header(payload.data(), PayloadKind::probe, 3, 0, 1);
  CHECK(read_payload_header(payload).kind == PayloadKind::probe);
  CHECK(read_payload_header(payload.substr(0, kPayloadHeaderSize - 1)).kind ==
        PayloadKind::invalid);
  payload[0] = 'Z';
  CHECK(read_payload_header(payload).kind == PayloadKind::invalid);
  CHECK(read_payload_header("").kind == PayloadKind::invalid);
}
