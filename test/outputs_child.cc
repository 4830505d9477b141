// A host program whose uvstall output is faulty, for test/outputs_tests.cc.
// The watched loop stalls for real while its records cannot be written; the
// program measures what the host would notice (its own timer's punctuality,
// stall detection, CPU of our threads, the time uvstall_stop and exit take)
// and reads the three places drops are counted (uvstall_get_stats, the
// metrics file, and, for the test, the records that get through).
//
// Usage: uvstall-test-outputs-child CASE MODE METRICS_FILE [COPY_TO]
//   CASE  devfull-path  output_path = /dev/full
//         stderr        default output: whatever fd 2 is (the test gives
//                       /dev/full, a pipe without reader, a stuck pipe)
//         stderr-nonblock  the same after the host set O_NONBLOCK on fd 2
//         enospc        output_path on a tiny tmpfs (private mount namespace)
//                       that the host fills, then empties at 1.5 s
//         callback      on_report blocks for seconds (max_queued_reports 1)
//         fifo          output_path is a FIFO: first without a reader (start
//                       must fail at once), then with a reader that never
//                       reads (a one-page pipe)
//         metrics-fifo  (MODE stop) metrics_file is a FIFO, at configure,
//                       or made one while the metrics thread runs: it must
//                       never be replaced by the textfile's rename
//   MODE  stop          stalls at 0.3 s and 0.9 s while the output fails, the
//                       output recovers (where it can) at 1.5-2.4 s, a stall
//                       at 2.6 s, then uvstall_stop, timed
//         stop-stuck    the same until 2 s, nothing recovers, then
//                       uvstall_stop while the output still fails
//         exit          a stall at 0.3 s, then exit(0) in the middle of a
//                       second one, while the output still fails
//   METRICS_FILE  process option metrics_file (on a healthy filesystem)
//   COPY_TO       enospc: where the tmpfs file is copied after stop
// Findings: "key=value" lines on stdout. Every stall is a busy loop under a
// 48-deep recursion, so a stall record is ~12 KB: larger than a pipe page
// and than what is left on the full filesystem, so writes are cut.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

extern "C" void __lsan_disable() __attribute__((weak));

namespace {

constexpr int kProbeMs = 5;
constexpr int kStallMs = 150;
constexpr int kDepth = 48;

uint64_t ms_since(uint64_t t0) { return (uvt::now_ns() - t0) / 1000000u; }

// ---- The host's own punctuality: a 5 ms repeating timer ----

std::vector<uint64_t> g_probe_fires;
// Intervals the host itself blocked its loop (injected stalls, setup work):
// probe gaps that overlap one are not the output's doing.
std::vector<std::pair<uint64_t, uint64_t>> g_own_blocks;

void probe_cb(uv_timer_t *) {
  if (g_probe_fires.size() < g_probe_fires.capacity()) g_probe_fires.push_back(uvt::now_ns());
}

// The longest gap between two probe fires that no own block explains.
double probe_max_gap_ms() {
  uint64_t worst = 0;
  for (size_t i = 1; i < g_probe_fires.size(); ++i) {
    const uint64_t a = g_probe_fires[i - 1], b = g_probe_fires[i];
    bool own = false;
    for (const auto &blk : g_own_blocks) own |= a <= blk.second && blk.first <= b;
    if (!own) worst = std::max(worst, b - a);
  }
  return double(worst) / 1e6;
}

// A deep stack, so stall records are large.
extern "C" __attribute__((noinline, visibility("default"))) int outputs_deep(int depth, int ms) {
  if (depth > 0) {
    volatile int r = outputs_deep(depth - 1, ms);
    return r + 1;
  }
  uvstall_test_busy(ms);
  return 0;
}

void own_stall(int ms) {
  const uint64_t t0 = uvt::now_ns();
  outputs_deep(kDepth, ms);
  g_own_blocks.emplace_back(t0, uvt::now_ns());
}

// ---- The cases' outputs ----

std::string g_case, g_mode;
std::string g_output_path;  // output_path, when the case has one

// enospc: a tiny tmpfs, mounted in a mount namespace of our own so that an
// unprivileged test can do it (and a root one leaves nothing behind).
std::string g_tmpfs_dir, g_tmpfs_file, g_filler;

bool write_file(const char *path, const std::string &text) {
  const int fd = open(path, O_WRONLY);
  if (fd < 0) return false;
  const bool ok = write(fd, text.data(), text.size()) == ssize_t(text.size());
  close(fd);
  return ok;
}

// Before any thread exists (a user namespace needs a single thread).
bool mount_tiny_tmpfs(std::string *why) {
  char tmpl[] = "/tmp/uvstall-tmpfs-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    *why = std::string("mkdtemp: ") + std::strerror(errno);
    return false;
  }
  g_tmpfs_dir = tmpl;
  const uid_t uid = geteuid();
  const gid_t gid = getegid();
  std::string how;
  if (unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0) {
    how = "user+mount";
    write_file("/proc/self/setgroups", "deny");
    if (!write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
        !write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) {
      *why = std::string("writing uid_map/gid_map: ") + std::strerror(errno);
      return false;
    }
  } else {
    const int user_errno = errno;
    if (uid != 0 || unshare(CLONE_NEWNS) != 0) {
      *why = std::string("unshare(CLONE_NEWUSER|CLONE_NEWNS): ") + std::strerror(user_errno) +
             (uid == 0 ? std::string("; unshare(CLONE_NEWNS) as root: ") + std::strerror(errno)
                       : std::string("; not root either"));
      return false;
    }
    how = "mount(root)";
  }
  // Our mounts must not propagate out of this namespace: make the tree that
  // holds the mount point private here. "/" is not a mount point in a
  // chroot (EINVAL): then the nearest ancestor of the directory that is.
  std::string tree = "/";
  int private_errno = 0;
  while (mount(nullptr, tree.c_str(), nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    if (private_errno == 0) private_errno = errno;
    const std::string from = tree == "/" ? g_tmpfs_dir : tree;
    const size_t cut = from.find_last_of('/');
    if (errno != EINVAL || cut == std::string::npos || cut == 0) {
      *why = std::string("making / (or the tree holding ") + g_tmpfs_dir +
             ") private: " + std::strerror(private_errno);
      return false;
    }
    tree = from.substr(0, cut);
  }
  if (mount("uvstall-test", g_tmpfs_dir.c_str(), "tmpfs", 0, "size=64k,mode=0755") != 0) {
    *why = std::string("mount tmpfs size=64k: ") + std::strerror(errno);
    return false;
  }
  // The mount point stays behind in /tmp, empty: the test removes it.
  std::printf("tmpfs=%s tmpfs_dir=%s\n", how.c_str(), g_tmpfs_dir.c_str());
  g_tmpfs_file = g_output_path = g_tmpfs_dir + "/stalls.jsonl";
  g_filler = g_tmpfs_dir + "/filler";
  return true;
}

// Fills the filesystem so that only `slack` bytes remain, at the end of the
// output file's last page: the next record is cut there. The start record
// is in the file already; a padding line of the host's own (valid JSON,
// type "host_padding") sets where the page ends.
void fill_tmpfs(size_t slack) {
  struct stat st;
  if (stat(g_tmpfs_file.c_str(), &st) != 0) {
    std::printf("error=the start record was not written\n");
    return;
  }
  const size_t page = 4096;
  size_t pad = (2 * page - slack - size_t(st.st_size) % page) % page;
  if (pad < 64) pad += page;
  std::string line = "{\"type\":\"host_padding\",\"pad\":\"";
  line += std::string(pad - line.size() - 3, 'x');
  line += "\"}\n";
  const int fd = open(g_tmpfs_file.c_str(), O_WRONLY | O_APPEND);
  if (write(fd, line.data(), line.size()) != ssize_t(line.size()))
    std::printf("error=padding: %s\n", std::strerror(errno));
  close(fd);
  const int ffd = open(g_filler.c_str(), O_WRONLY | O_CREAT, 0644);
  std::string chunk(page, 'f');
  while (write(ffd, chunk.data(), chunk.size()) > 0) {
  }
  const int fill_errno = errno;
  close(ffd);
  struct statvfs vfs;
  statvfs(g_tmpfs_dir.c_str(), &vfs);
  std::printf("fill_enospc=%d free_blocks=%llu\n", int(fill_errno == ENOSPC),
              (unsigned long long)vfs.f_bavail);
}

// callback: blocks on the first stall record.
std::atomic<int> g_block_ms{0};
std::atomic<uint64_t> g_stop_returned_ns{0};
std::atomic<int> g_calls{0}, g_calls_after_stop{0};
std::atomic<uint64_t> g_announced{0}, g_stall_records{0};
void blocking_cb(const char *json, size_t len, void *) {
  g_calls.fetch_add(1);
  const auto j = nlohmann::json::parse(std::string(json, len));
  g_announced.fetch_add(j.value("dropped", uint64_t(0)));
  if (j.value("type", "") == "stall") g_stall_records.fetch_add(1);
  const uint64_t stopped = g_stop_returned_ns.load();
  if (stopped != 0 && uvt::now_ns() > stopped) g_calls_after_stop.fetch_add(1);
  if (const int ms = g_block_ms.exchange(0); ms > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// ---- What the host reads back ----

uvstall_stats_t stats_of(uvstall_t *w) {
  uvstall_stats_t st;
  std::memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  uvstall_get_stats(w, &st);
  return st;
}

// A counter of loop "outputs" in the metrics file; -1 if absent.
long long metric(const std::string &path, const std::string &name) {
  std::ifstream in(path);
  std::string line;
  const std::string key = name + "{loop=\"outputs\"} ";
  while (std::getline(in, line))
    if (line.compare(0, key.size(), key) == 0) return std::atoll(line.c_str() + key.size());
  return -1;
}

double thread_cpu_ms(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) / 1e6;
}

const char *sigpipe_disposition() {
  struct sigaction sa;
  sigaction(SIGPIPE, nullptr, &sa);
  if (sa.sa_handler == SIG_DFL) return "default";
  if (sa.sa_handler == SIG_IGN) return "ignore";
  return "handler";
}

struct Run {
  uv_loop_t loop;
  uvstall_t *w = nullptr;
  uv_timer_t probe;
  uv_async_t done;
  std::string metrics_file;
  uint64_t t0 = 0;
  std::thread checker;
};
Run g;

void at(int ms, void (*fn)()) {
  auto *t = new uv_timer_t;
  uv_timer_init(&g.loop, t);
  t->data = reinterpret_cast<void *>(fn);
  uv_timer_start(t, [](uv_timer_t *timer) {
    reinterpret_cast<void (*)()>(timer->data)();
    uv_close(reinterpret_cast<uv_handle_t *>(timer),
             [](uv_handle_t *h) { delete reinterpret_cast<uv_timer_t *>(h); });
  }, uint64_t(ms), 0);
}

// Off the loop thread: waits until the metrics file shows what
// uvstall_get_stats says (it is rewritten every second), then ends the run.
void check_metrics() {
  const uint64_t start = uvt::now_ns();
  uvstall_stats_t st{};
  long long m_dropped = -1, m_stalls = -1, m_written = -1;
  bool agree = false;
  while (ms_since(start) < 4000) {
    st = stats_of(g.w);
    m_dropped = metric(g.metrics_file, "uvstall_reports_dropped_total");
    m_stalls = metric(g.metrics_file, "uvstall_stalls_total");
    m_written = metric(g.metrics_file, "uvstall_reports_written_total");
    agree = m_dropped == (long long)st.reports_dropped && m_stalls == (long long)st.stalls &&
            m_written == (long long)st.reports_written;
    if (agree) break;
    usleep(50000);
  }
  std::printf("stalls=%llu ticks=%llu written=%llu dropped=%llu\n",
              (unsigned long long)st.stalls, (unsigned long long)st.ticks,
              (unsigned long long)st.reports_written, (unsigned long long)st.reports_dropped);
  std::printf("lateness_p50_ms=%.3f lateness_p95_ms=%.3f lateness_p99_ms=%.3f "
              "lateness_max_ms=%.3f\n",
              st.lateness_p50_ms, st.lateness_p95_ms, st.lateness_p99_ms, st.lateness_max_ms);
  std::printf("metrics_dropped=%lld metrics_stalls=%lld metrics_written=%lld metrics_agree=%d\n",
              m_dropped, m_stalls, m_written, int(agree));
  uv_async_send(&g.done);
}

void exit_mid_stall() {
  // Exit inside the stalled callback: the stall is in progress, its records
  // cannot be written, and the exit handler must not wait long for them.
  const uint64_t t0 = uvt::now_ns();
  outputs_deep(kDepth, 300);
  g_own_blocks.emplace_back(t0, uvt::now_ns());
  std::printf("exit_at_ns=%llu\n", (unsigned long long)uvt::now_ns());
  std::fflush(stdout);
  std::exit(0);
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  if (__lsan_disable != nullptr) __lsan_disable();
  g_case = argv[1];
  g_mode = argv[2];
  g.metrics_file = argv[3];
  const std::string copy_to = argc > 4 ? argv[4] : "";
  const bool stop_mode = g_mode == "stop" || g_mode == "stop-stuck";
  if (!stop_mode && g_mode != "exit") return 2;
  // The host's SIGPIPE disposition is the default, unblocked.
  signal(SIGPIPE, SIG_DFL);
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigprocmask(SIG_UNBLOCK, &pipe_set, nullptr);

  if (g_case == "metrics-fifo") {
    const std::string fifo = g.metrics_file + ".fifo";
    mkfifo(fifo.c_str(), 0644);
    uvstall_process_options_t p;
    uvstall_process_options_init(&p);
    p.metrics_file = fifo.c_str();
    std::printf("configure_fifo_rc=%d\n", uvstall_configure(&p));
    p.metrics_file = g.metrics_file.c_str();
    if (uvstall_configure(&p) != 0) return 91;
    uv_loop_init(&g.loop);
    if (uvstall_start(&g.loop, nullptr, &g.w) != 0) return 90;
    // The metrics thread, started with the first watch, writes the file
    // every second, watches or not: stop the watch (time away from the
    // loop would be a stall, and its signal cuts sleeps short).
    uvstall_stop(g.w);
    uv_run(&g.loop, UV_RUN_NOWAIT);
    struct stat st;
    for (int i = 0; i < 200 && stat(g.metrics_file.c_str(), &st) != 0; ++i) usleep(10000);
    std::printf("written_first=%d\n", int(stat(g.metrics_file.c_str(), &st) == 0));
    unlink(g.metrics_file.c_str());
    mkfifo(g.metrics_file.c_str(), 0644);
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // two more rounds
    std::printf("still_fifo=%d\n",
                int(stat(g.metrics_file.c_str(), &st) == 0 && S_ISFIFO(st.st_mode)));
    return 0;
  }
  if (g_case == "enospc") {
    std::string why;
    if (!mount_tiny_tmpfs(&why)) {
      std::printf("error=cannot mount a small tmpfs for the full-filesystem test: %s\n",
                  why.c_str());
      return 93;
    }
  }
  if (g_case == "stderr-nonblock") fcntl(2, F_SETFL, fcntl(2, F_GETFL) | O_NONBLOCK);
  if (g_case == "devfull-path") g_output_path = "/dev/full";

  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.max_stalls_per_minute = 0;
  p.metrics_file = g.metrics_file.c_str();
  if (g_case == "callback") p.max_queued_reports = 1;
  if (uvstall_configure(&p) != 0) return 91;

  if (g_case == "fifo") {
    const std::string fifo = g.metrics_file + ".fifo";
    mkfifo(fifo.c_str(), 0644);
    uv_loop_t scratch;
    uv_loop_init(&scratch);
    uvstall_options_t so;
    uvstall_options_init(&so);
    so.output_path = fifo.c_str();
    uvstall_t *sw = nullptr;
    const uint64_t t0 = uvt::now_ns();
    const int src = uvstall_start(&scratch, &so, &sw);
    std::printf("fifo_noreader_rc=%d fifo_noreader_ms=%.1f\n", src, double(ms_since(t0)));
    if (src == 0) uvstall_stop(sw);
    uv_run(&scratch, UV_RUN_NOWAIT);
    uv_loop_close(&scratch);
    const int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK);  // never reads
    fcntl(reader, F_SETPIPE_SZ, 4096);
    g_output_path = fifo;
  }
  g_probe_fires.reserve(8192);
  g_own_blocks.reserve(64);
  uv_loop_init(&g.loop);
  uvstall_options_t o;
  uvstall_options_init(&o);
  o.interval_ms = kProbeMs;
  o.loop_name = "outputs";
  if (!g_output_path.empty()) o.output_path = g_output_path.c_str();
  if (g_case == "callback") {
    o.on_report = blocking_cb;
    g_block_ms = g_mode == "stop" ? 2000 : 4000;
  }
  const int rc = uvstall_start(&g.loop, &o, &g.w);
  if (rc != 0) {
    std::printf("start_error=%s\n", uvstall_strerror(rc));
    return 90;
  }
  g.t0 = uvt::now_ns();
  uv_timer_init(&g.loop, &g.probe);
  uv_timer_start(&g.probe, probe_cb, kProbeMs, kProbeMs);
  uv_async_init(&g.loop, &g.done, [](uv_async_t *) {
    uv_close(reinterpret_cast<uv_handle_t *>(&g.probe), nullptr);
    uv_close(reinterpret_cast<uv_handle_t *>(&g.done), nullptr);
  });

  if (g_case == "enospc")
    at(50, [] {
      const uint64_t t0 = uvt::now_ns();
      fill_tmpfs(120);
      g_own_blocks.emplace_back(t0, uvt::now_ns());
    });
  at(300, [] { own_stall(kStallMs); });
  if (g_mode == "exit") {
    at(900, exit_mid_stall);
  } else {
    at(900, [] { own_stall(kStallMs); });
    if (g_mode == "stop") {
      if (g_case == "enospc") at(1500, [] { unlink(g_filler.c_str()); });
      at(2600, [] { own_stall(kStallMs); });
    }
    at(g_mode == "stop" ? 3200 : 2000, [] { g.checker = std::thread(check_metrics); });
  }
  uv_run(&g.loop, UV_RUN_DEFAULT);
  if (g.checker.joinable()) g.checker.join();
  const double run_ms = double(uvt::now_ns() - g.t0) / 1e6;
  // Our threads' CPU: the process's minus this (the loop's) thread's.
  const double background_cpu_ms =
      thread_cpu_ms(CLOCK_PROCESS_CPUTIME_ID) - thread_cpu_ms(CLOCK_THREAD_CPUTIME_ID);
  std::printf("run_ms=%.0f background_cpu_ms=%.1f\n", run_ms, background_cpu_ms);
  std::printf("probe_fires=%zu probe_max_gap_ms=%.3f\n", g_probe_fires.size(),
              probe_max_gap_ms());
  const uint64_t s0 = uvt::now_ns();
  uvstall_stop(g.w);
  g_stop_returned_ns = uvt::now_ns();
  std::printf("stop_ms=%.1f\n", double(g_stop_returned_ns.load() - s0) / 1e6);
  uv_run(&g.loop, UV_RUN_DEFAULT);
  uv_loop_close(&g.loop);
  if (g_case == "callback") {
    // A callback still blocked when stop returned may finish; none starts.
    std::this_thread::sleep_for(std::chrono::milliseconds(g_mode == "stop" ? 300 : 3000));
    std::printf("callback_calls=%d callback_calls_after_stop=%d\n", g_calls.load(),
                g_calls_after_stop.load());
    std::printf("callback_announced_dropped=%llu callback_stall_records=%llu\n",
                (unsigned long long)g_announced.load(),
                (unsigned long long)g_stall_records.load());
  }
  if (g_case == "enospc" && !copy_to.empty()) {
    std::ifstream in(g_tmpfs_file, std::ios::binary);
    std::ofstream out(copy_to, std::ios::binary);
    out << in.rdbuf();
  }
  sigset_t pending;
  sigpending(&pending);
  sigset_t mask;
  sigprocmask(SIG_BLOCK, nullptr, &mask);
  std::printf("sigpipe=%s sigpipe_blocked=%d sigpipe_pending=%d\n", sigpipe_disposition(),
              sigismember(&mask, SIGPIPE), sigismember(&pending, SIGPIPE));
  std::printf("exit_at_ns=%llu\n", (unsigned long long)uvt::now_ns());
  std::fflush(stdout);
  if (argc > 4 && std::string(argv[4]) == "host-writes-stderr") {
    // The host's own write to its stderr: with the reader gone, the
    // default SIGPIPE disposition ends the process, as it would without us.
    const char msg[] = "host: bye\n";
    (void)!write(2, msg, sizeof msg - 1);
  }
  return 0;
}
