// SPDX-License-Identifier: Apache-2.0
#pragma once
// Statistics of brokerha-bench, header-only and free of I/O so the unit tests compile them
// directly (tests/unit/bench_stats_test.cpp includes this file by its relative path).
//
//  - LatencyHistogram: log-linear buckets over 64-bit values (nanoseconds here), relative
//    error at most 1/128 (values below 256 are exact), constant memory (~58 KiB), O(1) record.
//    Percentiles are "the smallest bucket whose cumulative count reaches ceil(q * count)",
//    reported as that bucket's highest value, clamped to the largest value recorded (so
//    percentile(1.0) == max()).
//  - SequenceTracker: the sequence numbers of one publisher -> subscriber stream (the
//    publisher numbers its messages 0, 1, 2, ...). Classifies each arrival as in order,
//    reordered (lower than one already received, first time) or duplicate (received before),
//    and with the number the publisher sent gives the loss.
//  - StreamCounters: the sum of those counters over streams.
//
// Thread safety: none; brokerha-bench runs on one thread.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

namespace brokerha::bench {

// ---- LatencyHistogram -------------------------------------------------------------------------

class LatencyHistogram {
 public:
  /// Values below 2 * kSubBuckets have a bucket of their own; above, each power of two is cut
  /// into kSubBuckets buckets of equal width.
  static constexpr unsigned kSubBits = 7;
  static constexpr std::uint64_t kSubBuckets = std::uint64_t{1} << kSubBits;  // 128
  /// Bucket of UINT64_MAX + 1.
  static constexpr std::size_t kBucketCount =
      static_cast<std::size_t>(((63 - kSubBits) << kSubBits) + 2 * kSubBuckets);

  LatencyHistogram() : buckets_(kBucketCount, 0) {}

  /// The bucket index of `v`.
  static std::size_t bucket_of(std::uint64_t v) noexcept {
    if (v < kSubBuckets) return static_cast<std::size_t>(v);
    const unsigned msb = highest_bit(v);  // >= kSubBits
    const unsigned shift = msb - kSubBits;
    const std::uint64_t mantissa = v >> shift;  // in [kSubBuckets, 2 * kSubBuckets)
    return static_cast<std::size_t>((std::uint64_t{shift} << kSubBits) + mantissa);
  }
  /// Smallest value that falls into bucket `index`.
  static std::uint64_t bucket_low(std::size_t index) noexcept {
    if (index < 2 * kSubBuckets) return index;
    const std::uint64_t shift = (index >> kSubBits) - 1;
    const std::uint64_t mantissa = index - (shift << kSubBits);
    return mantissa << shift;
  }
  /// Largest value that falls into bucket `index`.
  static std::uint64_t bucket_high(std::size_t index) noexcept {
    if (index < 2 * kSubBuckets) return index;
    const std::uint64_t shift = (index >> kSubBits) - 1;
    return bucket_low(index) + ((std::uint64_t{1} << shift) - 1);
  }

  void record(std::uint64_t v) noexcept {
    ++buckets_[bucket_of(v)];
    ++count_;
    sum_ += static_cast<long double>(v);
    if (count_ == 1 || v < min_) min_ = v;
    if (v > max_) max_ = v;
  }

  void merge(const LatencyHistogram& other) noexcept {
    if (other.count_ == 0) return;
    for (std::size_t i = 0; i < kBucketCount; ++i) buckets_[i] += other.buckets_[i];
    min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
    count_ += other.count_;
    sum_ += other.sum_;
  }

  void reset() noexcept {
    std::fill(buckets_.begin(), buckets_.end(), 0);
    count_ = 0;
    sum_ = 0;
    min_ = 0;
    max_ = 0;
  }

  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t min() const noexcept { return min_; }  // 0 when empty
  std::uint64_t max() const noexcept { return max_; }  // 0 when empty
  double mean() const noexcept {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_ / static_cast<long double>(count_));
  }

  /// The value at quantile `q` (0..1): see the file comment. 0 when empty.
  std::uint64_t percentile(double q) const noexcept {
    if (count_ == 0) return 0;
    const std::uint64_t rank = rank_of(q, count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBucketCount; ++i) {
      seen += buckets_[i];
      if (seen >= rank) return std::min(std::max(bucket_high(i), min_), max_);
    }
    return max_;
  }

  /// The 1-based rank that quantile `q` selects among `n` sorted values: ceil(q * n), at
  /// least 1 and at most n. Shared with the unit test's sorted-array reference.
  static std::uint64_t rank_of(double q, std::uint64_t n) noexcept {
    if (n == 0) return 0;
    if (!(q > 0.0)) return 1;
    if (q >= 1.0) return n;
    const double r = std::ceil(q * static_cast<double>(n));
    if (r < 1.0) return 1;
    if (r >= static_cast<double>(n)) return n;
    return static_cast<std::uint64_t>(r);
  }

 private:
  static unsigned highest_bit(std::uint64_t v) noexcept {  // v != 0
#if defined(__GNUC__) || defined(__clang__)
    return 63u - static_cast<unsigned>(__builtin_clzll(v));
#else
    unsigned b = 0;
    while (v >>= 1) ++b;
    return b;
#endif
  }

  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  long double sum_ = 0;
  std::uint64_t min_ = 0;
  std::uint64_t max_ = 0;
};

// ---- SequenceTracker --------------------------------------------------------------------------

/// How one arrival was classified.
enum class Arrival : std::uint8_t {
  in_order,   // higher than every sequence number received before
  reordered,  // first arrival of a number lower than one already received
  duplicate,  // this number was received before
};

/// Counters of one stream (or, summed, of many).
struct StreamCounters {
  std::uint64_t received = 0;  // arrivals, duplicates included
  std::uint64_t unique = 0;    // distinct sequence numbers received
  std::uint64_t duplicates = 0;
  std::uint64_t reordered = 0;
  std::uint64_t lost = 0;  // filled by SequenceTracker::finish / StreamCounters::add

  void add(const StreamCounters& o) noexcept {
    received += o.received;
    unique += o.unique;
    duplicates += o.duplicates;
    reordered += o.reordered;
    lost += o.lost;
  }
};

class SequenceTracker {
 public:
  /// Numbers more than this far above the lowest missing one make the tracker give that one
  /// up (count it lost) to bound memory (kWindow bits, 2 MiB). A given-up number that arrives
  /// later is then indistinguishable from a duplicate and counted as one. A stream needs 16
  /// million messages outstanding behind one gap for this to matter.
  static constexpr std::uint64_t kWindow = std::uint64_t{1} << 24;

  explicit SequenceTracker(std::uint64_t window = kWindow) noexcept
      : window_(std::max<std::uint64_t>(window, 64)) {}

  Arrival record(std::uint64_t seq) {
    ++c_.received;
    if (seq < low_) {
      ++c_.duplicates;
      return Arrival::duplicate;
    }
    if (seq == low_ && words_.empty()) {  // the common case: next in order, no gaps behind
      ++low_;
      high_ = low_;
      ++c_.unique;
      return Arrival::in_order;
    }
    if (seq - low_ >= window_) give_up_below(seq - window_ + 1);
    if (words_.empty()) base_ = low_ & ~std::uint64_t{63};
    const std::uint64_t off = seq - base_;
    const auto word = static_cast<std::size_t>(off / 64);
    const std::uint64_t mask = std::uint64_t{1} << (off % 64);
    if (word >= words_.size()) words_.resize(word + 1, 0);
    if ((words_[word] & mask) != 0) {
      ++c_.duplicates;
      return Arrival::duplicate;
    }
    words_[word] |= mask;
    ++c_.unique;
    const bool in_order = seq >= high_;
    if (in_order) {
      high_ = seq + 1;
    } else {
      ++c_.reordered;
    }
    advance();
    return in_order ? Arrival::in_order : Arrival::reordered;
  }

  /// The counters, with `lost` = numbers below `sent` that never arrived (those given up
  /// included), where `sent` is how many numbers (0 .. sent-1) the publisher sent on this
  /// stream. Arrivals of numbers >= `sent` must have been rejected before record().
  StreamCounters finish(std::uint64_t sent) const noexcept {
    StreamCounters r = c_;
    const std::uint64_t accounted = c_.unique + given_up_;
    r.lost = given_up_ + (sent > accounted ? sent - accounted : 0);
    return r;
  }

  const StreamCounters& counters() const noexcept { return c_; }
  /// One more than the highest number received (0 when none).
  std::uint64_t high() const noexcept { return high_; }
  /// Every number below this one has been received (or given up).
  std::uint64_t contiguous() const noexcept { return low_; }
  /// Numbers given up (see kWindow).
  std::uint64_t given_up() const noexcept { return given_up_; }

 private:
  bool received_bit(std::uint64_t seq) const noexcept {
    const std::uint64_t off = seq - base_;
    const auto word = static_cast<std::size_t>(off / 64);
    return word < words_.size() && (words_[word] >> (off % 64) & 1u) != 0;
  }
  // Moves low_ one up, dropping the bitmap's first word once low_ has left it.
  void step() {
    ++low_;
    if (low_ - base_ >= 64) {
      words_.pop_front();
      base_ += 64;
    }
  }
  // Moves low_ over the numbers received without a gap; empties the bitmap when none are
  // held above low_ any more.
  void advance() {
    while (!words_.empty() && received_bit(low_)) step();
    if (low_ >= high_) words_.clear();
  }
  void give_up_below(std::uint64_t new_low) {
    while (low_ < new_low && !words_.empty()) {
      if (!received_bit(low_)) ++given_up_;
      step();
    }
    if (low_ < new_low) {  // nothing held between: give up the whole range at once
      given_up_ += new_low - low_;
      low_ = new_low;
    }
    advance();
  }

  std::uint64_t window_;
  std::uint64_t low_ = 0;   // lowest number neither received nor given up
  std::uint64_t high_ = 0;  // one more than the highest received
  std::uint64_t given_up_ = 0;
  std::uint64_t base_ = 0;           // number of bit 0 of words_[0] (a multiple of 64)
  std::deque<std::uint64_t> words_;  // bit i: base_ + i received
  StreamCounters c_;
};

}  // namespace brokerha::bench
