// Helpers shared by the benchmark executables (bench/*.cc): the clock they
// all measure with, and starting uvstall with a one-line reason on failure.
#pragma once

#include <uvstall/uvstall.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

namespace bench {

// CLOCK_MONOTONIC in ns: the clock uvstall measures with too.
inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// An on_report that drops the records (output costs are not under test).
inline void discard_report(const char *, size_t, void *) {}

// Process-wide options for benchmarks: no rate limit (every stall of a
// schedule is reported), no periodic summaries.
inline void configure_for_bench() {
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.max_stalls_per_minute = 0;
  p.summary_interval_ms = 0;
  uvstall_configure(&p);
}

// uvstall_start (or uvstall_start_external when loop is null), or exit(1)
// with the reason.
inline uvstall_t *start_or_exit(uv_loop_t *loop, const uvstall_options_t &o) {
  uvstall_t *w = nullptr;
  const int rc = loop != nullptr ? uvstall_start(loop, &o, &w) : uvstall_start_external(&o, &w);
  if (rc != 0) {
    std::fprintf(stderr, "uvstall_start: %s\n", uvstall_strerror(rc));
    std::exit(1);
  }
  return w;
}

// "30,100,300" -> {30, 100, 300}.
inline std::vector<double> parse_list(const char *s) {
  std::vector<double> out;
  for (char *p = const_cast<char *>(s); *p != '\0';) {
    out.push_back(std::strtod(p, &p));
    if (*p == ',') ++p;
    else if (*p != '\0') break;
  }
  return out;
}

}  // namespace bench
