// Host programs for the stress tests that need a process of their own:
// process-wide options (a storm under a rate limit), process exit while a
// loop thread is stuck for good, and loop threads that end without
// uvstall_stop (some with their TID reused by another thread at once).
// Usage: uvstall-test-stress-child SCENARIO. Records go to stderr
// (uvstall's default) unless a collector is named; the scenario's own
// findings go to stdout as "key=value" lines.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

// Threads here end without cleaning up on purpose (a stuck loop thread, a
// thread that never stops its watch): LeakSanitizer would report their
// loops. Leaks of the library are checked by the in-process suites.
extern "C" void __lsan_disable() __attribute__((weak));

namespace {

void lsan_off() {
  if (__lsan_disable != nullptr) __lsan_disable();
}

// Records on stderr: the records of a process that exits are still there.
void to_stderr(uvstall_options_t *o) {
  o->on_report = nullptr;
  o->report_arg = nullptr;
}

// ---- storm: 10,000 short stalls on 20 loops under a limit of 10 a minute ----

constexpr int kStormLoops = 20;
constexpr int kStormRunsPerLoop = 500;
constexpr int kStormSleepMs = 10;

struct StormLoop {
  uvt::WatchedLoop *wl = nullptr;
  uv_timer_t culprit;
  int runs = 0;
  uvstall_stats_t st{};
};

int storm() {
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.max_stalls_per_minute = 10;
  p.summary_interval_ms = 1000;
  if (uvstall_configure(&p) != 0) return 91;
  // One collector for all loops: one output, so each summary is written
  // once and counts the stalls of every loop.
  static uvt::Collector col;
  std::vector<StormLoop> loops(kStormLoops);
  std::vector<std::thread> threads;
  const uint64_t t0 = uvt::now_ns();
  for (auto &s : loops) {
    threads.emplace_back([&s] {
      uvt::WatchedLoop wl([](uvstall_options_t *o) {
        col.attach(o);
        o->interval_ms = 1;
        o->threshold_ms = 2;
      });
      if (wl.start_rc != 0) std::abort();
      s.wl = &wl;
      uv_timer_init(&wl.loop, &s.culprit);
      s.culprit.data = &s;
      // A 10 ms sleep every millisecond or so: each one is a stall (over
      // interval + threshold = 3 ms, with 7 ms for the sentinel to see it),
      // with a tick of the loop in between.
      uv_timer_start(&s.culprit, [](uv_timer_t *t) {
        auto *self = static_cast<StormLoop *>(t->data);
        uvstall_test_sleep(kStormSleepMs);
        if (++self->runs < kStormRunsPerLoop) return;
        uv_timer_stop(t);
        uv_close(reinterpret_cast<uv_handle_t *>(t), nullptr);
        // Stop on the loop, while it runs: once uv_run returns, time away
        // from the loop would be a stall of its own. A stall may still
        // begin between these two calls (one at most per loop).
        self->st.struct_size = sizeof self->st;
        uvstall_get_stats(self->wl->watch, &self->st);
        uvstall_stop(self->wl->watch);
        self->wl->watch = nullptr;
      }, 20, 1);
      wl.run();
    });
  }
  for (auto &t : threads) t.join();
  const double seconds = double(uvt::now_ns() - t0) / 1e9;
  int runs = 0;
  unsigned long long stalls = 0;
  for (const auto &s : loops) {
    runs += s.runs;
    stalls += s.st.stalls;
  }
  std::set<std::pair<std::string, int64_t>> stalls_written, ends_written;
  size_t end_records = 0, records = 0;
  uint64_t summary_total = 0, summary_culprit = 0, summary_suppressed = 0, announced = 0;
  for (const auto &r : col.all()) {
    ++records;
    announced += r.j.value("suppressed", 0);
    const std::string type = r.j["type"];
    if (type == "stall") stalls_written.insert({r.j["loop"], r.j["stall_id"].get<int64_t>()});
    if (type == "stall_end") {
      ++end_records;
      ends_written.insert({r.j["loop"], r.j["stall_id"].get<int64_t>()});
    }
    if (type != "summary") continue;
    summary_suppressed += r.j["stalls_suppressed"].get<uint64_t>();
    for (const auto &f : r.j["fingerprints"]) {
      summary_total += f["count"].get<uint64_t>();
      if (f["culprit"] == "uvstall_test_sleep") summary_culprit += f["count"].get<uint64_t>();
    }
  }
  std::printf("loops=%d runs=%d stalls=%llu seconds=%.1f records=%zu\n", kStormLoops, runs,
              stalls, seconds, records);
  std::printf("written=%zu ends=%zu end_records=%zu same_ids=%d\n", stalls_written.size(),
              ends_written.size(), end_records, int(stalls_written == ends_written));
  std::printf("summary_total=%llu summary_culprit=%llu summary_suppressed=%llu announced=%llu\n",
              (unsigned long long)summary_total, (unsigned long long)summary_culprit,
              (unsigned long long)summary_suppressed, (unsigned long long)announced);
  return 0;
}

// ---- A loop thread stuck for good; the process exits from another thread ----

// The stuck loop thread blocks in read() on a pipe nobody writes to.
int g_never[2];
std::atomic<uvstall_t *> g_stuck_watch{nullptr};

void print_time(const char *key) {
  std::printf("%s=%llu\n", key, (unsigned long long)uvt::now_ns());
  std::fflush(stdout);
}

// stuck-exit: another thread tries uvstall_stop (refused: wrong thread,
// at once), then exits the process. The stall ends "ended_by":"exit".
// stop-then-stuck-exit: the stalled callback stops the watch (on the loop
// thread: "ended_by":"stop"), then blocks for good; then the process exits.
int stuck(bool stop_in_callback) {
  if (pipe(g_never) != 0) return 92;
  static bool stop_first;
  stop_first = stop_in_callback;
  std::thread([] {
    lsan_off();
    // Never destroyed: exit's static destructors run while this thread is
    // still stuck in its callback.
    static uvt::WatchedLoop &wl = *new uvt::WatchedLoop(to_stderr);
    g_stuck_watch = wl.watch;
    wl.after(50, [] {
      if (stop_first) {
        uvstall_test_busy(300);
        const uint64_t t0 = uvt::now_ns();
        const int rc = uvstall_stop(wl.watch);
        std::printf("stop_rc=%d stop_ms=%.3f\n", rc, double(uvt::now_ns() - t0) / 1e6);
        std::fflush(stdout);
      }
      uvstall_test_pipe_read(g_never[0]);  // never returns
    });
    wl.run();
  }).detach();
  // The stall (if still watched) has been reported by now.
  usleep(600 * 1000);
  if (!stop_first) {
    while (g_stuck_watch.load() == nullptr) usleep(1000);
    const uint64_t t0 = uvt::now_ns();
    const int rc = uvstall_stop(g_stuck_watch.load());
    std::printf("stop_rc=%d stop_ms=%.3f\n", rc, double(uvt::now_ns() - t0) / 1e6);
  }
  print_time("exit_at_ns");
  std::exit(0);
}

// ---- Loop threads that end without uvstall_stop ----

// Descriptors of ours: a watch's /proc/self/task/TID files, an output file.
int our_fds(const std::string &output) {
  int n = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    char link[64], target[512];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    const ssize_t len = readlink(link, target, sizeof target - 1);
    if (len <= 0) continue;
    const std::string t(target, size_t(len));
    n += t.find("/task/") != std::string::npos || t == output;
  }
  return n;
}

// thread-exit: (a) a thread runs its loop and returns, its watch still
// started; (b) a thread leaves its loop, blocks 300 ms away from it (a
// stall) and returns; (c) a new thread then starts a watch on a loop at the
// same address (glibc reuses the stack). Prints the fd count and heap before
// and after, and what each start returned.
int thread_exit() {
  uvt::on_thread([] {
    // The process-wide set-up (stderr duplicate, threads) and the symbol
    // tables a stall's frames on a thread are resolved with, before counting.
    uvt::WatchedLoop warm(to_stderr);
    warm.after(20, [] { uvstall_test_busy(150); });
    warm.run();
  });
  usleep(50 * 1000);
  char path_tmpl[] = "/tmp/uvstall-stress-XXXXXX";
  const std::string path = std::string(mkdtemp(path_tmpl)) + "/thread-a.jsonl";
  const size_t fds_before = uvt::open_fds();
  const size_t heap_before = uvt::heap_in_use();
  static std::string out_path;
  out_path = path;
  static uintptr_t loop_at[3];
  static int start_rc[3];
  static int ours_running;
  for (int i = 0; i < 3; ++i) {
    std::thread([i] {
      lsan_off();
      const std::string name = "thread-" + std::string(1, char('a' + i));
      // On this thread's stack: gone when the thread ends.
      uv_loop_t loop;
      uv_loop_init(&loop);
      uvstall_options_t o;
      uvstall_options_init(&o);
      o.loop_name = name.c_str();
      if (i == 0) o.output_path = out_path.c_str();  // a file of its own: closed at the end
      uvstall_t *w = nullptr;
      loop_at[i] = reinterpret_cast<uintptr_t>(&loop);
      start_rc[i] = uvstall_start(&loop, &o, &w);
      uv_timer_t t;
      uv_timer_init(&loop, &t);
      uv_timer_start(&t, [](uv_timer_t *) {}, 50, 0);
      uv_run(&loop, UV_RUN_DEFAULT);
      if (i == 0) ours_running = our_fds(out_path);
      if (i == 1) uvstall_test_busy(300);  // away from the loop: a stall
      if (i == 2) {
        // Well behaved: stops, closes.
        uvstall_stop(w);
        uv_close(reinterpret_cast<uv_handle_t *>(&t), nullptr);
        uv_run(&loop, UV_RUN_DEFAULT);
        std::printf("close_rc=%d\n", uv_loop_close(&loop));
      }
      // a and b: return with the watch started and the loop left as it is.
    }).join();
  }
  // The sentinel finishes the watches in its next pass (the exit hook
  // waited for it already).
  usleep(100 * 1000);
  const size_t fds_after = uvt::open_fds();
  const size_t heap_after = uvt::heap_in_use();
  std::printf("start_rc=%d,%d,%d same_loop_address=%d\n", start_rc[0], start_rc[1], start_rc[2],
              int(loop_at[0] == loop_at[1] && loop_at[1] == loop_at[2]));
  std::printf("fds_before=%zu fds_after=%zu ours_running=%d ours_after=%d heap_growth=%lld\n",
              fds_before, fds_after, ours_running, our_fds(path),
              (long long)heap_after - (long long)heap_before);
  // Thread a's records went to its own file.
  std::printf("file=%s\n", path.c_str());
  std::fflush(stdout);
  return 0;
}

// tid-reuse return|vanish: thread A starts a watch and ends without
// uvstall_stop — by returning (its exit hook runs) or by a raw exit system
// call (no hook: the sentinel must find out alone). Thread B is then made
// to get A's TID at once (through /proc/sys/kernel/ns_last_pid: root only),
// blocks the capture signal and waits well past A's threshold: a signal
// the sentinel sent to A's TID would be pending on B.
int tid_reuse(bool vanish) {
  const int sig = SIGRTMAX - 3;  // the default capture signal
  for (int attempt = 0; attempt < 100; ++attempt) {
    static std::atomic<pid_t> tid_a{0};
    static bool raw_exit;
    raw_exit = vanish;
    tid_a = 0;
    std::thread a([] {
      lsan_off();
      // Left as it is, never closed (a new one per attempt).
      auto *loop = new uv_loop_t;
      uv_loop_init(loop);
      uvstall_options_t o;
      uvstall_options_init(&o);
      o.loop_name = "thread-a";
      uvstall_t *w = nullptr;
      if (uvstall_start(loop, &o, &w) != 0) std::abort();
      uv_run(loop, UV_RUN_NOWAIT);
      tid_a = uvt::tid();
      if (raw_exit) syscall(SYS_exit, 0);  // no TLS or key destructors
    });
    if (vanish) {
      // glibc never learns that A ended: left detached, its stack (and the
      // sanitizers' state in it) is never handed to B.
      a.detach();
      while (tid_a.load() == 0) usleep(1000);
      const std::string dir = "/proc/self/task/" + std::to_string(tid_a.load());
      while (access(dir.c_str(), F_OK) == 0) usleep(1000);
    } else {
      a.join();
    }
    // The TID is free once the kernel has reaped A, just after that.
    usleep(2000);
    FILE *f = std::fopen("/proc/sys/kernel/ns_last_pid", "w");
    if (f == nullptr) {
      std::printf("reuse_error=cannot open /proc/sys/kernel/ns_last_pid: %s\n",
                  std::strerror(errno));
      return 0;
    }
    std::fprintf(f, "%d", int(tid_a.load()) - 1);
    const bool wrote = std::fclose(f) == 0;
    if (!wrote) {
      std::printf("reuse_error=cannot write /proc/sys/kernel/ns_last_pid: %s\n",
                  std::strerror(errno));
      return 0;
    }
    static std::atomic<int> got{0}, pending{-1};
    got = 0;
    pending = -1;
    std::thread b([sig] {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, sig);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
      if (uvt::tid() != tid_a.load()) {
        got = -1;
        return;
      }
      got = 1;
      // A's threshold is 100 ms after its last beat: wait well past it.
      usleep(600 * 1000);
      sigset_t p;
      sigpending(&p);
      pending = sigismember(&p, sig);
    });
    b.join();
    if (got.load() == 1) {
      usleep(50 * 1000);
      std::printf("reused=1 attempts=%d signalled=%d tid=%d\n", attempt + 1, pending.load(),
                  int(tid_a.load()));
      std::fflush(stdout);
      return 0;
    }
  }
  std::printf("reused=0\n");
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  lsan_off();
  const std::string scenario = argv[1];
  if (scenario == "storm") return storm();
  if (scenario == "stuck-exit") return stuck(false);
  if (scenario == "stop-then-stuck-exit") return stuck(true);
  if (scenario == "thread-exit") return thread_exit();
  if (scenario == "tid-reuse" && argc == 3) return tid_reuse(std::string(argv[2]) == "vanish");
  return 2;
}
