// A host program for the metrics endpoint tests: a process of its own,
// because metrics_addr and metrics_file are process-wide (uvstall_configure).
//
// Usage: uvstall-test-metrics-host ADDR FILE INTERVAL_MS RUN_MS [AT_MS:STALL_MS ...]
// Configures metrics_addr=ADDR and metrics_file=FILE ("-" for none), watches
// one loop named "main" (UV_METRICS_IDLE_TIME on) ticking every INTERVAL_MS,
// injects the busy stalls, and runs RUN_MS. Prints "ready" once the watch
// runs and "stalls=N" at the end; records go to stderr.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"

namespace {

void stall_cb(uv_timer_t *t) {
  uvstall_test_busy(int(reinterpret_cast<intptr_t>(t->data)));
  uv_close(reinterpret_cast<uv_handle_t *>(t), [](uv_handle_t *h) { delete reinterpret_cast<uv_timer_t *>(h); });
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 5) return 2;
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.max_stalls_per_minute = 0;
  if (std::strcmp(argv[1], "-") != 0) p.metrics_addr = argv[1];
  if (std::strcmp(argv[2], "-") != 0) p.metrics_file = argv[2];
  int rc = uvstall_configure(&p);
  if (rc != 0) {
    std::printf("configure_error=%s\n", uvstall_strerror(rc));
    return 3;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_loop_configure(&loop, UV_METRICS_IDLE_TIME);
  uvstall_options_t o;
  uvstall_options_init(&o);
  o.interval_ms = uint32_t(std::atoi(argv[3]));
  o.loop_name = "main";
  uvstall_t *w = nullptr;
  rc = uvstall_start(&loop, &o, &w);
  if (rc != 0) {
    std::printf("start_error=%s\n", uvstall_strerror(rc));
    return 4;
  }
  for (int i = 5; i < argc; ++i) {
    int at = 0, ms = 0;
    if (std::sscanf(argv[i], "%d:%d", &at, &ms) != 2) return 2;
    auto *t = new uv_timer_t;
    uv_timer_init(&loop, t);
    t->data = reinterpret_cast<void *>(intptr_t(ms));
    uv_timer_start(t, stall_cb, uint64_t(at), 0);
  }
  uv_timer_t end;
  uv_timer_init(&loop, &end);
  uv_timer_start(&end, [](uv_timer_t *) {}, uint64_t(std::atoi(argv[4])), 0);
  std::printf("ready\n");
  std::fflush(stdout);
  uv_run(&loop, UV_RUN_DEFAULT);
  uvstall_stats_t st;
  std::memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  uvstall_get_stats(w, &st);
  std::printf("stalls=%llu\n", static_cast<unsigned long long>(st.stalls));
  std::fflush(stdout);
  uvstall_stop(w);
  uv_close(reinterpret_cast<uv_handle_t *>(&end), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return 0;
}
