// Tick lateness histograms (see histogram.h).
#include "histogram.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <new>

namespace uvstall::internal {

int hist_index(uint64_t us) {
  if (us > kHistMaxUs) us = kHistMaxUs;
  if (us < 2 * kHistSubCount) return int(us);
  const int e = 63 - __builtin_clzll(us);  // 8..31
  const int shift = e - kHistSubBits;
  return int(2 * kHistSubCount + uint64_t(e - kHistSubBits - 1) * kHistSubCount +
             ((us >> shift) - kHistSubCount));
}

uint64_t hist_lowest(int index) {
  if (index < int(2 * kHistSubCount)) return uint64_t(index);
  const uint64_t k = uint64_t(index) - 2 * kHistSubCount;
  const int shift = int(k / kHistSubCount) + 1;
  return (kHistSubCount + k % kHistSubCount) << shift;
}

uint64_t hist_width(int index) {
  if (index < int(2 * kHistSubCount)) return 1;
  return uint64_t(1) << ((uint64_t(index) - 2 * kHistSubCount) / kHistSubCount + 1);
}

double hist_value(int index) {
  return double(hist_lowest(index)) + double(hist_width(index) - 1) / 2;
}

double hist_quantile_us(const std::vector<uint64_t> &counts, uint64_t total, double q) {
  if (total == 0) return 0;
  q = std::min(1.0, std::max(0.0, q));
  uint64_t rank = uint64_t(std::ceil(q * double(total)));
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t b = 0; b < counts.size(); ++b) {
    seen += counts[b];
    if (seen >= rank) return hist_value(int(b));
  }
  return hist_value(int(counts.size()) - 1);
}

HistSummary hist_summarize(const std::vector<uint64_t> &counts, uint64_t sum_us) {
  HistSummary s;
  int lo = -1, hi = -1;
  for (size_t b = 0; b < counts.size(); ++b) {
    if (counts[b] == 0) continue;
    s.count += counts[b];
    if (lo < 0) lo = int(b);
    hi = int(b);
  }
  if (s.count == 0) return s;
  s.sum_ms = double(sum_us) / 1000;
  s.min_ms = hist_value(lo) / 1000;
  s.max_ms = hist_value(hi) / 1000;
  s.mean_ms = s.sum_ms / double(s.count);
  s.p50_ms = hist_quantile_us(counts, s.count, 0.50) / 1000;
  s.p90_ms = hist_quantile_us(counts, s.count, 0.90) / 1000;
  s.p95_ms = hist_quantile_us(counts, s.count, 0.95) / 1000;
  s.p99_ms = hist_quantile_us(counts, s.count, 0.99) / 1000;
  s.p999_ms = hist_quantile_us(counts, s.count, 0.999) / 1000;
  return s;
}

uint64_t HistSnapshot::total() const {
  uint64_t n = 0;
  for (uint64_t c : counts) n += c;
  return n;
}

HistSnapshot HistSnapshot::minus(const HistSnapshot &base) const {
  HistSnapshot d;
  d.counts.resize(counts.size());
  for (size_t b = 0; b < counts.size(); ++b)
    d.counts[b] = counts[b] - std::min(counts[b], b < base.counts.size() ? base.counts[b] : 0);
  d.sum_us = sum_us - std::min(sum_us, base.sum_us);
  return d;
}

namespace {
constexpr size_t kCountsBytes = sizeof(std::atomic<uint64_t>) * size_t(kHistBuckets);
}

LatencyHistogram::LatencyHistogram() {
  void *p = mmap(nullptr, kCountsBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  mapped_ = p != MAP_FAILED;
  // Anonymous pages read as zero; std::atomic<uint64_t>'s default
  // constructor is trivial (C++17), so default-initializing them in place
  // writes nothing and keeps the pages untouched. Without a mapping: zeroed
  // heap memory.
  if (mapped_) {
    counts_ = static_cast<std::atomic<uint64_t> *>(p);
    for (int b = 0; b < kHistBuckets; ++b) new (&counts_[b]) std::atomic<uint64_t>;
  } else {
    counts_ = new std::atomic<uint64_t>[kHistBuckets]();
  }
}

LatencyHistogram::~LatencyHistogram() {
  if (mapped_)
    munmap(static_cast<void *>(counts_), kCountsBytes);
  else
    delete[] counts_;
}

void LatencyHistogram::snapshot(HistSnapshot *out) const {
  out->counts.resize(kHistBuckets);
  for (int b = 0; b < kHistBuckets; ++b) out->counts[b] = counts_[b].load(std::memory_order_relaxed);
  out->sum_us = sum_us_.load(std::memory_order_relaxed);
}

const double kPromBoundsSeconds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,  0.025, 0.05,
                                     0.075,  0.1,   0.15,   0.2,   0.25,  0.5,   0.75,
                                     1,      2.5,   5,      10,    30,    60};
const int kPromBoundsCount = int(sizeof kPromBoundsSeconds / sizeof kPromBoundsSeconds[0]);

std::vector<uint64_t> prom_cumulative(const HistSnapshot &s) {
  std::vector<uint64_t> out(size_t(kPromBoundsCount) + 1, 0);
  int bound = 0;
  uint64_t seen = 0;
  auto bound_us = [](int i) { return uint64_t(std::llround(kPromBoundsSeconds[i] * 1e6)); };
  for (int b = 0; b < kHistBuckets; ++b) {
    const uint64_t lowest = hist_lowest(b);
    while (bound < kPromBoundsCount && lowest > bound_us(bound)) out[size_t(bound++)] = seen;
    if (size_t(b) < s.counts.size()) seen += s.counts[size_t(b)];
  }
  while (bound < kPromBoundsCount) out[size_t(bound++)] = seen;
  out[size_t(kPromBoundsCount)] = seen;
  return out;
}

}  // namespace uvstall::internal
