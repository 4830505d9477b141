// Unit tests of the loop-lag metrics' pure parts: the histogram's bucket
// layout and precision, quantiles, the coordinated-omission expansion, the
// Prometheus buckets and text, and the new options.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <map>
#include <random>

#include "config.h"
#include "histogram.h"
#include "metrics.h"

using namespace uvstall::internal;

namespace {

// A snapshot holding these values (microseconds).
HistSnapshot snap_of(const std::vector<uint64_t> &values) {
  HistSnapshot s;
  s.counts.resize(kHistBuckets);
  for (uint64_t v : values) {
    s.counts[size_t(hist_index(v))]++;
    s.sum_us += v;
  }
  return s;
}

}  // namespace

TEST_SUITE("histogram") {
  TEST_CASE("buckets are contiguous, ordered, and within 1% from 1 us to 1 hour") {
    CHECK(hist_index(0) == 0);
    CHECK(hist_index(255) == 255);
    CHECK(hist_index(256) == 256);
    CHECK(hist_index(kHistMaxUs) == kHistBuckets - 1);
    CHECK(hist_index(kHistMaxUs * 4) == kHistBuckets - 1);
    for (int b = 0; b + 1 < kHistBuckets; ++b) {
      REQUIRE(hist_lowest(b) + hist_width(b) == hist_lowest(b + 1));
      REQUIRE(hist_index(hist_lowest(b)) == b);
      REQUIRE(hist_index(hist_lowest(b + 1) - 1) == b);
    }
    std::mt19937_64 rng(7);
    for (int i = 0; i < 200000; ++i) {
      // Log-uniform over 1 us .. 1 hour.
      const double e = std::uniform_real_distribution<double>(0, std::log(3.6e9))(rng);
      const uint64_t v = std::max<uint64_t>(1, uint64_t(std::exp(e)));
      const double got = hist_value(hist_index(v));
      REQUIRE(std::fabs(got - double(v)) <= 0.01 * double(v) + 0.5);
    }
    // The worst case is the bottom of an octave: still under 1%.
    for (uint64_t v : {256ull, 257ull, 1000ull, 65536ull, 3600000000ull})
      CHECK(std::fabs(hist_value(hist_index(v)) - double(v)) / double(v) < 0.01);
  }

  TEST_CASE("quantiles of a known distribution") {
    std::vector<uint64_t> values;
    for (uint64_t v = 1; v <= 10000; ++v) values.push_back(v * 100);  // 100 us .. 1 s
    const HistSnapshot s = snap_of(values);
    const HistSummary h = hist_summarize(s.counts, s.sum_us);
    CHECK(h.count == 10000);
    CHECK(h.p50_ms == doctest::Approx(500).epsilon(0.01));
    CHECK(h.p90_ms == doctest::Approx(900).epsilon(0.01));
    CHECK(h.p99_ms == doctest::Approx(990).epsilon(0.01));
    CHECK(h.p999_ms == doctest::Approx(999).epsilon(0.01));
    CHECK(h.min_ms == doctest::Approx(0.1).epsilon(0.01));
    CHECK(h.max_ms == doctest::Approx(1000).epsilon(0.01));
    CHECK(h.mean_ms == doctest::Approx(500.05).epsilon(0.0001));  // exact: from the sum
    const HistSummary empty = hist_summarize(std::vector<uint64_t>(kHistBuckets, 0), 0);
    CHECK(empty.count == 0);
    CHECK(empty.p99_ms == 0);
  }

  TEST_CASE("coordinated omission: the hidden ticks, per bucket, as HdrHistogram counts them") {
    // HdrHistogram's rule, written the slow way: L - I, L - 2I, ... while >= I.
    for (auto [L, I] : std::vector<std::pair<uint64_t, uint64_t>>{
             {1000000, 10000}, {1234567, 7000}, {19999, 10000}, {20000, 10000},
             {3600000000ull, 1000}}) {
      CAPTURE(L);
      CAPTURE(I);
      std::map<int, uint64_t> naive;
      uint64_t naive_sum = 0, naive_n = 0;
      for (uint64_t m = L - I; L >= 2 * I && m >= I; m -= I) {
        naive[hist_index(m)]++;
        naive_sum += m;
        naive_n++;
      }
      std::map<int, uint64_t> fast;
      int calls = 0;
      uint64_t sum = 0;
      const uint64_t n = hist_expand(L, I, &sum, [&](int b, uint64_t c) {
        fast[b] += c;
        calls++;
      });
      CHECK(n == naive_n);
      CHECK(sum == naive_sum);
      CHECK(fast == naive);
      CHECK(calls == int(fast.size()));  // one call per bucket, not per value
    }
    uint64_t sum = 0;
    CHECK(hist_expand(1000000, 10000, &sum, [](int, uint64_t) {}) == 99);  // 990 .. 10 ms
    CHECK(hist_expand(5000, 0, &sum, [](int, uint64_t) {}) == 0);
  }

  TEST_CASE("raw and corrected views of a 1 s stall among 10 ms ticks") {
    LatencyHistogram raw, corrected;
    for (int i = 0; i < 1000; ++i) {  // 10 s of punctual ticks, 0.2 ms late
      raw.record(200);
      corrected.record_expanded(200, 10000);
    }
    raw.record(1000000);
    corrected.record_expanded(1000000, 10000);
    HistSnapshot r, c;
    raw.snapshot(&r);
    corrected.snapshot(&c);
    const HistSummary rs = hist_summarize(r.counts, r.sum_us);
    const HistSummary cs = hist_summarize(c.counts, c.sum_us);
    CHECK(rs.count == 1001);
    CHECK(cs.count == 1001 + 99);
    CHECK(rs.p99_ms == doctest::Approx(0.2).epsilon(0.01));  // one sample: invisible
    CHECK(rs.max_ms == doctest::Approx(1000).epsilon(0.01));
    // 100 of 1100 values are 10..1000 ms: p95 ~ 450 ms, p99 ~ 890 ms.
    CHECK(cs.p90_ms == doctest::Approx(0.2).epsilon(0.01));
    CHECK(cs.p95_ms == doctest::Approx(450).epsilon(0.03));
    CHECK(cs.p99_ms == doctest::Approx(890).epsilon(0.02));
    CHECK(cs.sum_ms == doctest::Approx(0.2 * 1000 + 1000 + 99 * 500).epsilon(1e-9));
  }

  TEST_CASE("Prometheus buckets: cumulative counts at about 20 fixed bounds") {
    CHECK(kPromBoundsCount >= 18);
    CHECK(kPromBoundsCount <= 24);
    const HistSnapshot s = snap_of({100, 1000, 5000, 150000, 200000, 250000, 2000000000});
    const std::vector<uint64_t> cum = prom_cumulative(s);
    REQUIRE(cum.size() == size_t(kPromBoundsCount) + 1);
    std::map<double, uint64_t> at;
    for (int i = 0; i < kPromBoundsCount; ++i) at[kPromBoundsSeconds[i]] = cum[size_t(i)];
    CHECK(at[0.0005] == 1);
    CHECK(at[0.001] == 2);  // a value at a bound is at or below it
    CHECK(at[0.005] == 3);
    CHECK(at[0.1] == 3);
    CHECK(at[0.15] == 4);
    CHECK(at[0.2] == 5);
    CHECK(at[60] == 6);
    CHECK(cum.back() == 7);
    for (size_t i = 1; i < cum.size(); ++i) CHECK(cum[i] >= cum[i - 1]);
  }
}

TEST_SUITE("metrics") {
  TEST_CASE("stats of a window, and utilization from idle time") {
    LoopCounters base, now;
    base.at_ns = 1000000000;
    base.idle_ns = 500000000;
    base.ticks = 10;
    base.stalls = 1;
    base.lag = snap_of({100, 200});
    now = base;
    now.at_ns += 2000000000;       // 2 s later
    now.idle_ns += 500000000;      // idle 0.5 s of them: 75% busy
    now.ticks += 3;
    now.stalls += 2;
    now.stalled_ns = 300000000;
    now.lag = snap_of({100, 200, 5000, 6000, 7000});
    uvstall_stats_t st;
    st.struct_size = sizeof st;
    fill_stats(now, base, &st);
    CHECK(st.ticks == 3);
    CHECK(st.stalls == 2);
    CHECK(st.stalled_ms_total == doctest::Approx(300));
    CHECK(st.lateness_count == 3);
    CHECK(st.lateness_min_ms == doctest::Approx(5).epsilon(0.01));
    CHECK(st.lateness_max_ms == doctest::Approx(7).epsilon(0.01));
    CHECK(st.lateness_mean_ms == doctest::Approx(6));
    CHECK(st.utilization == doctest::Approx(0.75));
    now.idle_ns = 0;  // the loop tracks no idle time
    fill_stats(now, base, &st);
    CHECK(st.utilization == -1);
    // An old caller's smaller struct gets only what it has room for.
    uvstall_stats_t old;
    std::memset(&old, 0xab, sizeof old);
    old.struct_size = offsetof(uvstall_stats_t, lateness_count);
    fill_stats(now, base, &old);
    CHECK(old.struct_size == offsetof(uvstall_stats_t, lateness_count));
    CHECK(old.stalls == 2);
    CHECK(old.lateness_count == 0xababababababababull);
  }

  TEST_CASE("the exposition: families once, _count equals the +Inf bucket, labels escaped") {
    LoopExposition a, b;
    a.loop = "api";
    a.c.lag = snap_of({100, 150000});
    a.c.delay = snap_of({100, 150000, 140000});
    a.c.stalls = 2;
    a.c.idle_ns = 1500000000;
    b.loop = "we\"ird\\name";
    const std::string t = prometheus_text({a, b});
    INFO(t);
    CHECK(t.find("# TYPE uvstall_loop_lag_seconds histogram\n") != std::string::npos);
    CHECK(t.find("uvstall_loop_lag_seconds_bucket{loop=\"api\",le=\"0.1\"} 1\n") != std::string::npos);
    CHECK(t.find("uvstall_loop_lag_seconds_bucket{loop=\"api\",le=\"+Inf\"} 2\n") != std::string::npos);
    CHECK(t.find("uvstall_loop_lag_seconds_count{loop=\"api\"} 2\n") != std::string::npos);
    CHECK(t.find("uvstall_loop_delay_seconds_count{loop=\"api\"} 3\n") != std::string::npos);
    CHECK(t.find("uvstall_stalls_total{loop=\"api\"} 2\n") != std::string::npos);
    CHECK(t.find("uvstall_loop_idle_seconds_total{loop=\"api\"} 1.5\n") != std::string::npos);
    CHECK(t.find("loop=\"we\\\"ird\\\\name\"") != std::string::npos);
    // The loop without idle time has no idle series; each TYPE appears once.
    CHECK(t.find("uvstall_loop_idle_seconds_total{loop=\"we") == std::string::npos);
    size_t types = 0;
    for (size_t p = t.find("# TYPE"); p != std::string::npos; p = t.find("# TYPE", p + 1)) ++types;
    // Two histograms, the current lag, stalls, stalled seconds, written,
    // dropped, the four capture counters, idle.
    CHECK(types == 12);
    CHECK(t.find("# TYPE uvstall_capture_signals_total counter\n") != std::string::npos);
    CHECK(t.find("# TYPE uvstall_syscalls_interrupted_total counter\n") != std::string::npos);
  }
}

TEST_SUITE("config") {
  TEST_CASE("metrics options: defaults off, ranges, addresses") {
    uvstall_options_t o;
    uvstall_options_init(&o);
    CHECK(o.metrics_interval_ms == 0);
    Config c;
    for (uint32_t ok : {0u, 100u, 86400000u}) {
      o.metrics_interval_ms = ok;
      CHECK(resolve_options(&o, &c) == 0);
      CHECK(c.metrics_interval_ms == ok);
    }
    for (uint32_t bad : {1u, 99u, 86400001u}) {
      o.metrics_interval_ms = bad;
      CHECK(resolve_options(&o, &c) == UVSTALL_EMETRICSINTERVAL);
    }
    uvstall_process_options_t p;
    uvstall_process_options_init(&p);
    CHECK(p.metrics_addr == nullptr);
    CHECK(p.metrics_file == nullptr);
    ProcessConfig pc;
    REQUIRE(resolve_process_options(&p, &pc) == 0);
    CHECK(pc.metrics_host.empty());
    std::string host;
    uint16_t port = 0;
    CHECK(parse_metrics_addr("9464", &host, &port));
    CHECK(host == "127.0.0.1");  // loopback unless told otherwise
    CHECK(port == 9464);
    CHECK(parse_metrics_addr("0.0.0.0:80", &host, &port));
    CHECK(host == "0.0.0.0");
    CHECK(parse_metrics_addr("[::1]:9464", &host, &port));
    CHECK(host == "::1");
    for (const char *bad : {"", ":", "0", "65536", "localhost:9464", "::1:9464", "1.2.3.4:",
                            "1.2.3.4:x", "[::1]9464", "1.2.3.4:123456"})
      CHECK_MESSAGE(!parse_metrics_addr(bad, &host, &port), bad);
    p.metrics_addr = "nope:1";
    CHECK(resolve_process_options(&p, &pc) == UVSTALL_EMETRICSADDR);
    p.metrics_addr = nullptr;
    p.metrics_file = "/nonexistent-dir/x.prom";
    CHECK(resolve_process_options(&p, &pc) == UVSTALL_EMETRICSFILE);
    // Never renamed over a device (as root that would replace it) or a directory.
    for (const char *special : {"/dev/null", "/dev/full", "/tmp"}) {
      p.metrics_file = special;
      CHECK_MESSAGE(resolve_process_options(&p, &pc) == UVSTALL_EMETRICSFILE, special);
    }
    p.metrics_file = "/tmp/uvstall.prom";
    CHECK(resolve_process_options(&p, &pc) == 0);
    CHECK(pc.metrics_file == "/tmp/uvstall.prom");
    CHECK(std::string(uvstall_strerror(UVSTALL_EMETRICSADDR)).find("metrics_addr") != std::string::npos);
  }
}
