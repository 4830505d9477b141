// A host program for the tests that need a process of their own: output to
// the real stderr, process exit during a stall, process-wide settings and
// signal handlers of the host. Usage: uvstall-test-child SCENARIO.
// Records go to stderr (uvstall's default); the scenario's own findings go
// to stdout as "key=value" lines.
#include <signal.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "harness.h"

// The scenarios are hosts that exit without cleaning up (that is what they
// test), so LeakSanitizer would only report their own loops and timers.
// Leaks of the library are checked by the in-process suites instead.
extern "C" void __lsan_disable() __attribute__((weak));

namespace {

std::atomic<int> g_host_handler_calls{0};
void host_handler(int) { g_host_handler_calls.fetch_add(1); }

void install_host_handler(int sig) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = host_handler;
  sigaction(sig, &sa, nullptr);
}

// A loop with default options (stderr output) plus a tweak.
struct Host {
  uv_loop_t loop;
  uvstall_t *w = nullptr;
  explicit Host(const std::function<void(uvstall_options_t *)> &tweak = {}) {
    uv_loop_init(&loop);
    uvstall_options_t o;
    uvstall_options_init(&o);
    if (tweak) tweak(&o);
    int rc = uvstall_start(&loop, &o, &w);
    if (rc != 0) {
      std::printf("start_error=%s\n", uvstall_strerror(rc));
      std::exit(90);
    }
  }
  void after(int ms, void (*fn)(uv_timer_t *)) {
    auto *t = new uv_timer_t;
    uv_timer_init(&loop, t);
    t->data = this;
    uv_timer_start(t, fn, uint64_t(ms), 0);
  }
  void finish() {
    uv_run(&loop, UV_RUN_DEFAULT);
    uvstall_stop(w);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
};

Host *g_host = nullptr;

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  if (__lsan_disable != nullptr) __lsan_disable();
  const std::string scenario = argv[1];
  const int sig = SIGRTMAX - 3;

  if (scenario == "stderr") {
    Host h;
    h.after(50, [](uv_timer_t *) { uvstall_test_busy(200); });
    h.finish();
    usleep(200000);
    return 0;
  }
  if (scenario == "metrics") {
    // "metrics" records on stderr: one loop tracking idle time, one not.
    Host h([](uvstall_options_t *o) { o->metrics_interval_ms = 100; });
    uv_loop_configure(&h.loop, UV_METRICS_IDLE_TIME);
    h.after(50, [](uv_timer_t *) { uvstall_test_busy(200); });
    h.after(450, [](uv_timer_t *) {});
    uvt::on_thread([] {
      Host plain([](uvstall_options_t *o) { o->metrics_interval_ms = 100; });
      plain.after(250, [](uv_timer_t *) {});
      plain.finish();
    });
    h.finish();
    usleep(200000);
    return 0;
  }
  if (scenario == "stderr-reused") {
    // The host reuses fd 2 after uvstall started: JSON must still go to the
    // original standard error, never into the host's new file.
    Host h;
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
    const char msg[] = "host's own line\n";
    (void)!write(2, msg, sizeof msg - 1);
    h.after(50, [](uv_timer_t *) { uvstall_test_busy(200); });
    h.finish();
    usleep(200000);
    return 0;
  }
  if (scenario == "exit-mid-stall") {
    Host h;
    h.after(50, [](uv_timer_t *) {
      uvstall_test_busy(300);
      std::exit(7);  // still inside the stalled callback
    });
    h.finish();
    return 1;
  }
  if (scenario == "exit-after-stall") {
    static Host h;
    h.after(50, [](uv_timer_t *) { uvstall_test_busy(250); });
    h.after(51, [](uv_timer_t *) { std::exit(0); });
    h.finish();
    return 1;
  }
  if (scenario == "stop-after-stall") {
    // uvstall_stop in the same callback, right after the blocking code: the
    // loop never ticks in between, so stop must end the stall, once.
    static Host h;
    h.after(50, [](uv_timer_t *) {
      uvstall_test_busy(250);
      uvstall_stop(h.w);
      h.w = nullptr;
    });
    uv_run(&h.loop, UV_RUN_DEFAULT);
    return 0;
  }
  if (scenario == "drops") {
    uvstall_process_options_t p;
    uvstall_process_options_init(&p);
    p.max_queued_reports = 2;
    if (uvstall_configure(&p) != 0) return 91;
    static uvt::Collector col;
    col.block_first_stall_ms = 1500;
    // One sample per stall: a 150 ms stall that a loaded machine stretches
    // past 2 x threshold would otherwise add a second record (seen: 12).
    static Host h([](uvstall_options_t *o) {
      col.attach(o);
      o->max_samples_per_stall = 1;
    });
    g_host = &h;
    for (int i = 0; i < 4; ++i)
      h.after(50 + i * 300, [](uv_timer_t *) { uvstall_test_busy(150); });
    h.after(1300, [](uv_timer_t *) {
      uvstall_stats_t st{};
      st.struct_size = sizeof st;
      uvstall_get_stats(g_host->w, &st);
      std::printf("stalls_while_blocked=%llu\n", (unsigned long long)st.stalls);
    });
    // One more stall once the callback is free again: it must get through,
    // and announce what was lost.
    h.after(2000, [](uv_timer_t *) { uvstall_test_busy(150); });
    h.after(2600, [](uv_timer_t *) {
      uvstall_stats_t st{};
      st.struct_size = sizeof st;
      uvstall_get_stats(g_host->w, &st);
      std::printf("stalls=%llu dropped=%llu written=%llu\n", (unsigned long long)st.stalls,
                  (unsigned long long)st.reports_dropped,
                  (unsigned long long)st.reports_written);
      uint64_t announced = 0;
      for (const auto &r : col.all()) announced += r.j.value("dropped", 0);
      std::printf("announced_drops=%llu\n", (unsigned long long)announced);
    });
    h.finish();
    std::fflush(stdout);
    return 0;
  }
  if (scenario == "handler-replaced") {
    Host h;
    install_host_handler(sig);  // the host takes our signal after we started
    h.after(50, [](uv_timer_t *) { uvstall_test_busy(200); });
    h.finish();
    usleep(200000);
    std::printf("host_handler_calls=%d\n", g_host_handler_calls.load());
    return 0;
  }
  if (scenario == "chain") {
    install_host_handler(sig);  // the host had the signal before us
    Host h;
    h.after(50, [](uv_timer_t *) { uvstall_test_busy(200); });
    h.after(400, [](uv_timer_t *) { raise(SIGRTMAX - 3); });  // the host's own use
    h.finish();
    usleep(200000);
    std::printf("host_handler_calls=%d\n", g_host_handler_calls.load());
    return 0;
  }
  if (scenario == "sigusr2") {
    uvstall_process_options_t p;
    uvstall_process_options_init(&p);
    p.signal = SIGUSR2;
    if (uvstall_configure(&p) != 0) return 91;
    Host h;
    h.after(50, [](uv_timer_t *) { uvstall_test_busy(200); });
    h.finish();
    usleep(200000);
    return 0;
  }
  if (scenario == "abort") {
    // abort_after_ms: the report, then SIGABRT on the loop thread.
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    Host h([](uvstall_options_t *o) { o->abort_after_ms = 400; });
    h.after(50, [](uv_timer_t *) { uvstall_test_busy(3000); });
    h.finish();
    return 0;  // not reached
  }
  if (scenario == "bad-signal") {
    uvstall_process_options_t p;
    uvstall_process_options_init(&p);
    int rcs[4];
    p.signal = SIGKILL;
    rcs[0] = uvstall_configure(&p);
    p.signal = SIGSEGV;
    rcs[1] = uvstall_configure(&p);
    p.signal = 1000;
    rcs[2] = uvstall_configure(&p);
    p.signal = 0;
    p.max_queued_reports = 0;
    rcs[3] = uvstall_configure(&p);
    std::printf("rc=%d,%d,%d,%d\n", rcs[0], rcs[1], rcs[2], rcs[3]);
    return 0;
  }
  return 2;
}
