// Tick cost microbenchmark: uvstall_beat on an external watch runs
// watch_beat, the very function the libuv timer's callback runs (plus the
// same clock read), so timing millions of calls gives the cost of uvstall's
// own work per tick without the timer machinery of libuv around it.
//
// Allocations are counted by interposing malloc/calloc/realloc in this
// executable (they take precedence over libc's for the library too), on the
// calling thread only. System calls are counted outside: with --marker, the
// timed loop is bracketed by two getppid() calls, so `strace -f` output can be
// cut to exactly the loop thread's calls between them (bench/run does that).
//
// Usage: uvstall-bench-tick [--calls N] [--reps R] [--marker]
// Prints one JSON object: ns per beat (median, min, max over the reps), ns
// per bare clock read (measured just before each rep's beats), the median
// of the per-rep difference, allocations during the beats.
#include <uvstall/uvstall.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "bench.h"

extern "C" void *__libc_malloc(size_t);
extern "C" void *__libc_calloc(size_t, size_t);
extern "C" void *__libc_realloc(void *, size_t);

namespace {
thread_local bool counting = false;
thread_local unsigned long allocations = 0;
}  // namespace

extern "C" void *malloc(size_t n) {
  if (counting) ++allocations;
  return __libc_malloc(n);
}
extern "C" void *calloc(size_t n, size_t m) {
  if (counting) ++allocations;
  return __libc_calloc(n, m);
}
extern "C" void *realloc(void *p, size_t n) {
  if (counting) ++allocations;
  return __libc_realloc(p, n);
}

namespace {

using bench::now_ns;

}  // namespace

int main(int argc, char **argv) {
  long calls = 5000000;
  int reps = 5;
  bool marker = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--calls") == 0 && i + 1 < argc) calls = std::atol(argv[++i]);
    else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--marker") == 0) marker = true;
    else {
      std::fprintf(stderr, "usage: uvstall-bench-tick [--calls N] [--reps R] [--marker]\n");
      return 2;
    }
  }
  uvstall_options_t o;
  uvstall_options_init(&o);
  o.interval_ms = 20;
  o.threshold_ms = 100;
  o.on_report = bench::discard_report;
  uvstall_t *w = bench::start_or_exit(nullptr, o);
  std::vector<double> beat, clock, own;
  unsigned long allocs = 0;
  for (int r = 0; r < reps; ++r) {
    // A bare clock read: the part of a tick that is not uvstall's own.
    uint64_t t0 = now_ns();
    uint64_t sink = 0;
    for (long i = 0; i < calls; ++i) sink += now_ns();
    uint64_t t1 = now_ns();
    clock.push_back(double(t1 - t0) / double(calls));
    if (sink == 1) std::puts("");

    if (marker && r == 0) syscall(SYS_getppid);
    counting = true;
    t0 = now_ns();
    for (long i = 0; i < calls; ++i) uvstall_beat(w);
    t1 = now_ns();
    counting = false;
    if (marker && r == 0) syscall(SYS_getppid);
    allocs += allocations;
    allocations = 0;
    beat.push_back(double(t1 - t0) / double(calls));
    own.push_back(beat.back() - clock.back());
  }
  uvstall_stop(w);
  std::sort(beat.begin(), beat.end());
  std::sort(clock.begin(), clock.end());
  std::sort(own.begin(), own.end());
  std::printf("{\"calls\":%ld,\"reps\":%d,\"beat_ns_median\":%.2f,\"beat_ns_min\":%.2f,"
              "\"beat_ns_max\":%.2f,\"clock_ns_median\":%.2f,\"own_ns_median\":%.2f,"
              "\"allocations\":%lu}\n",
              calls, reps, beat[beat.size() / 2], beat.front(), beat.back(),
              clock[clock.size() / 2], own[own.size() / 2], allocs);
  return 0;
}
