// Snapshot unwinder cost (src/snapshot.h): a thread of this process sleeps
// in nanosleep under a chain of DEPTH noinline frames; from the main thread
// the benchmark times take_snapshot, a cold unwind (libunwind's cache and
// our page cache dropped before each) and a warm one, and counts the
// process_vm_readv calls each unwind needed outside the stack window. The
// process's first unwind (libunwind setting itself up) is reported apart.
//
// Usage: uvstall-bench-snapshot [--depth N] [--window BYTES] [--reps R]
// Prints one JSON object: medians in microseconds, frames, fallback reads.
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "bench.h"
#include "snapshot.h"
#include "thread_state.h"

using namespace uvstall::internal;

namespace {

std::atomic<pid_t> g_tid{0};

// Keeps each call from becoming a tail call: every level leaves a frame.
inline long keep_frame(long r) {
  asm volatile("" : "+r"(r) : : "memory");
  return r;
}

__attribute__((noinline)) long sleep_under(int depth, long ms) {
  if (depth <= 0) {
    timespec ts{time_t(ms / 1000), (ms % 1000) * 1000000L};
    return keep_frame(nanosleep(&ts, nullptr));
  }
  return keep_frame(sleep_under(depth - 1, ms));
}

double median_us(std::vector<uint64_t> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : double(v[v.size() / 2]) / 1000.0;
}

}  // namespace

int main(int argc, char **argv) {
  int depth = 16;
  size_t window = kSnapshotWindowBytes;
  int reps = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--depth") == 0) depth = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--window") == 0) window = size_t(std::atol(argv[i + 1]));
    else if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "uvstall-bench-snapshot: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (!snapshot_unwinder_init()) {
    std::fprintf(stderr, "uvstall-bench-snapshot: %s\n", snapshot_unwinder_problem().c_str());
    return 1;
  }
  const long sleep_ms = 3000;
  std::thread t([&] {
    g_tid = pid_t(syscall(SYS_gettid));
    sleep_under(depth, sleep_ms);
  });
  while (g_tid.load() == 0) usleep(100);
  ThreadProbe probe(g_tid.load());
  for (int i = 0; i < 10000; ++i) {
    ThreadSample s = probe.read();
    if (s.state == 'S' && s.syscall_nr == SYS_clock_nanosleep) break;
    usleep(100);
  }
  Snapshot snap;
  std::vector<uintptr_t> pcs(1024);
  std::vector<uint64_t> snap_ns, cold_ns, warm_ns;
  int frames = 0, cold_fallbacks = 0, warm_fallbacks = 0, refused = 0;
  uint64_t first_ns = 0;  // the process's first unwind: libunwind's own set-up too
  const char *stop = "";
  const uint64_t deadline = bench::now_ns() + uint64_t(sleep_ms - 500) * 1000000u;
  for (int r = 0; r < reps && bench::now_ns() < deadline; ++r) {
    uint64_t t0 = bench::now_ns();
    if (!take_snapshot(g_tid.load(), &snap, window)) {
      ++refused;
      continue;
    }
    snap_ns.push_back(bench::now_ns() - t0);
    const bool cold = r % 10 == 0;  // one cold unwind in ten
    if (cold) snapshot_unwinder_flush_caches();
    UnwindStats st;
    t0 = bench::now_ns();
    frames = unwind_snapshot(snap, pcs.data(), int(pcs.size()), &st);
    const uint64_t dt = bench::now_ns() - t0;
    stop = st.stop;
    if (first_ns == 0) {
      first_ns = dt;
    } else if (cold) {
      cold_ns.push_back(dt);
      cold_fallbacks = st.fallback_reads;
    } else {
      warm_ns.push_back(dt);
      warm_fallbacks = st.fallback_reads;
    }
  }
  std::printf(
      "{\"depth\": %d, \"window_bytes\": %zu, \"frames\": %d, \"stop\": \"%s\", "
      "\"snapshot_us\": %.1f, \"first_unwind_us\": %.1f, \"cold_unwind_us\": %.1f, \"warm_unwind_us\": %.1f, "
      "\"cold_fallback_reads\": %d, \"warm_fallback_reads\": %d, \"cold_n\": %zu, "
      "\"warm_n\": %zu, \"refused\": %d}\n",
      depth, window, frames, stop, median_us(snap_ns), double(first_ns) / 1000.0, median_us(cold_ns), median_us(warm_ns),
      cold_fallbacks, warm_fallbacks, cold_ns.size(), warm_ns.size(), refused);
  t.join();
  return 0;
}
