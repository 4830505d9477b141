// Tick lateness histograms: a fixed log-linear bucket array of atomic
// counters (HdrHistogram's layout, not its code), values in microseconds.
//
// Contract: LatencyHistogram::record and record_expanded are called by ONE
// thread (the watch's loop thread, from its tick); they never allocate, lock
// or make a system call: a few relaxed loads and stores on memory allocated
// with the watch. Any thread may read (snapshot) concurrently: it sees each
// counter whole but not all counters at one instant, which is enough for
// statistics (a snapshot taken during a tick is off by that tick at most).
//
// Precision: values 0..255 us have their own bucket; above that each power
// of two is split into 128 buckets, so a bucket's width is at most 1/128
// (0.78%) of its values, from 1 us to 2^32 us (71 minutes, above 1 hour);
// larger values are counted in the last bucket. Reported values are bucket
// midpoints: at most 0.4% from the true value.
//
// Everything but the two recorders is a pure function, unit-tested.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace uvstall::internal {

constexpr int kHistSubBits = 7;
constexpr uint64_t kHistSubCount = uint64_t(1) << kHistSubBits;  // 128 per octave
constexpr uint64_t kHistMaxUs = (uint64_t(1) << 32) - 1;
constexpr int kHistBuckets = int(2 * kHistSubCount + (32 - kHistSubBits - 1) * kHistSubCount);

// Bucket of a value (values above kHistMaxUs go to the last bucket).
int hist_index(uint64_t us);
// Lowest value of a bucket, and its width (1 for the exact buckets).
uint64_t hist_lowest(int index);
uint64_t hist_width(int index);
// The value a bucket stands for: its midpoint.
double hist_value(int index);

// Coordinated omission: a tick `late_us` late at an expected interval of
// `interval_us` means the ticks that should have run during the delay were
// late by late - interval, late - 2 x interval, ... down to (not below) one
// interval (HdrHistogram's recordValueWithExpectedInterval). Calls
// add(index, n) once per bucket those values fall in (at most one call per
// bucket, never one per value) and returns how many values there are and,
// in *sum_us, their sum. Nothing when late_us < 2 x interval_us.
template <typename Add>
uint64_t hist_expand(uint64_t late_us, uint64_t interval_us, uint64_t *sum_us, Add add) {
  *sum_us = 0;
  if (late_us > kHistMaxUs) late_us = kHistMaxUs;
  if (interval_us == 0 || late_us < 2 * interval_us) return 0;
  const uint64_t k = late_us / interval_us - 1;  // values late - i x interval, i = 1..k
  *sum_us = k * late_us - interval_us * (k * (k + 1) / 2);
  uint64_t top = late_us - interval_us;  // the largest value not yet counted
  uint64_t left = k;
  while (left > 0) {
    const int b = hist_index(top);
    const uint64_t lo = hist_lowest(b);
    uint64_t n = (top - lo) / interval_us + 1;
    if (n > left) n = left;
    add(b, n);
    left -= n;
    top -= n * interval_us;  // never below interval_us while left > 0
  }
  return k;
}

// Statistics of a set of counts (a snapshot or a difference of two).
struct HistSummary {
  uint64_t count = 0;
  double sum_ms = 0;
  double min_ms = 0, max_ms = 0, mean_ms = 0;
  double p50_ms = 0, p90_ms = 0, p95_ms = 0, p99_ms = 0, p999_ms = 0;
};
// The value at quantile q (0..1) in microseconds: the midpoint of the
// bucket holding the ceil(q x count)-th value. 0 when counts are empty.
double hist_quantile_us(const std::vector<uint64_t> &counts, uint64_t total, double q);
HistSummary hist_summarize(const std::vector<uint64_t> &counts, uint64_t sum_us);

// A snapshot: bucket counts and the sum of the recorded values.
struct HistSnapshot {
  // kHistBuckets counts once read; empty (all zeros) until then, so a zero
  // baseline costs no memory.
  std::vector<uint64_t> counts;
  uint64_t sum_us = 0;
  uint64_t total() const;
  // this - base, bucket by bucket (counts never go down, so never negative).
  // A base without counts (an empty vector) stands for all zeros.
  HistSnapshot minus(const HistSnapshot &base) const;
};

class LatencyHistogram {
 public:
  // The counts live in pages of their own, mapped zeroed and only made
  // resident when a bucket on them is first counted: a loop's histograms
  // cost the pages its lateness actually reaches (typically one or two of
  // seven), not 26 KiB each.
  LatencyHistogram();
  ~LatencyHistogram();
  LatencyHistogram(const LatencyHistogram &) = delete;
  LatencyHistogram &operator=(const LatencyHistogram &) = delete;

  // One value (the loop thread only).
  void record(uint64_t us) {
    if (us > kHistMaxUs) us = kHistMaxUs;
    bump(hist_index(us), 1);
    sum_us_.store(sum_us_.load(std::memory_order_relaxed) + us, std::memory_order_relaxed);
  }
  // The value and the values coordinated omission hid (see hist_expand).
  void record_expanded(uint64_t us, uint64_t interval_us) {
    record(us);
    uint64_t sum = 0;
    hist_expand(us, interval_us, &sum, [this](int b, uint64_t n) { bump(b, n); });
    if (sum != 0)
      sum_us_.store(sum_us_.load(std::memory_order_relaxed) + sum, std::memory_order_relaxed);
  }
  // Any thread.
  void snapshot(HistSnapshot *out) const;

 private:
  void bump(int b, uint64_t n) {
    counts_[b].store(counts_[b].load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // Written by the loop thread only (load + store, no read-modify-write
  // needed with one writer); read by any thread.
  std::atomic<uint64_t> *counts_;  // kHistBuckets
  bool mapped_;                      // counts_ from mmap (else new[])
  std::atomic<uint64_t> sum_us_{0};
};

// Prometheus' fixed bucket bounds (seconds) for the exposition: about 20,
// with the alert thresholds (0.1, 0.2) among them.
extern const double kPromBoundsSeconds[];
extern const int kPromBoundsCount;
// Cumulative counts at each bound (a value is at or below a bound when its
// bucket's lowest value is), then the total for +Inf: kPromBoundsCount + 1.
std::vector<uint64_t> prom_cumulative(const HistSnapshot &s);

}  // namespace uvstall::internal
