// Hostile hosts, each in a process of its own (run by test/hostile_tests.cc):
// a host whose profiler and alarm timers fire all the time, stalls inside
// the dynamic loader (dlopen, dl_iterate_phdr) on the loop thread and on
// another thread, and a host that forks while uvstall is busy.
// Usage: uvstall-test-hostile SCENARIO [ARGS]. Findings go to stdout as
// "key=value" lines; a failed precondition prints "error=..." and exits 3.
#include <dirent.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "harness.h"

// As in test/child.cc: these hosts exit without cleaning up.
extern "C" void __lsan_disable() __attribute__((weak));

namespace {
pid_t g_original_pid = getpid();
}  // namespace

// Sanitizer hooks (unused in a plain build). A forked child cannot account
// for memory its parent's other threads were using (their stacks are not
// scanned there), so LeakSanitizer checks the parent only; ThreadSanitizer
// must let a child of a threaded parent start threads (uvstall_start in a
// forked child does).
extern "C" int __lsan_is_turned_off() { return getpid() != g_original_pid; }
extern "C" const char *__tsan_default_options() { return "die_after_fork=0"; }

namespace {

[[noreturn]] void fail(const std::string &why) {
  std::printf("error=%s\n", why.c_str());
  std::fflush(stdout);
  std::exit(3);
}

template <typename T>
void say(const char *key, T value) {
  std::printf("%s=%s\n", key, std::to_string(value).c_str());
}
void say(const char *key, const std::string &value) {
  std::printf("%s=%s\n", key, value.c_str());
}

double ms_since(uint64_t t0) { return double(uvt::now_ns() - t0) / 1e6; }

// The records of one stall (one stall_id) of a collector.
struct StallSummary {
  std::vector<nlohmann::json> samples;
  std::vector<uint64_t> arrived_ns;
  std::vector<nlohmann::json> ends;
};
std::map<int64_t, StallSummary> stalls_of(const uvt::Collector &col) {
  std::map<int64_t, StallSummary> out;
  for (const auto &r : col.all()) {
    const std::string type = r.j.value("type", "");
    if (type == "stall") {
      auto &s = out[r.j["stall_id"].get<int64_t>()];
      s.samples.push_back(r.j);
      s.arrived_ns.push_back(r.arrived_ns);
    } else if (type == "stall_end") {
      out[r.j["stall_id"].get<int64_t>()].ends.push_back(r.j);
    }
  }
  return out;
}

bool any_names(const StallSummary &s, const std::string &sym) {
  for (const auto &j : s.samples)
    if (uvt::frames_name(j, sym)) return true;
  return false;
}

// ---- timers: SIGPROF at 1 kHz of CPU time, SIGALRM at 100 Hz ----

std::atomic<uint64_t> g_prof{0}, g_alrm{0};

// A profiler's handler: counts and takes a backtrace (glibc's unwinder, as
// gperftools and others do).
void on_prof(int, siginfo_t *, void *) {
  const int saved = errno;
  g_prof.fetch_add(1, std::memory_order_relaxed);
  void *pcs[32];
  backtrace(pcs, 32);
  errno = saved;
}
void on_alrm(int) { g_alrm.fetch_add(1, std::memory_order_relaxed); }

double cpu_ms() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

std::atomic<int> g_eintr{0};

}  // namespace

// Culprits of this host (exported, never inlined: named in the frames).
UVSTALL_TEST_CULPRIT void hostile_busy(int ms) {
  const uint64_t until = uvt::now_ns() + uint64_t(ms) * 1000000u;
  volatile uint64_t spins = 0;
  while (uvt::now_ns() < until) spins = spins + 1;
}

// Burns `ms` of this thread's CPU time (however long that takes on a
// loaded machine): the profiler's ticks follow CPU time.
UVSTALL_TEST_CULPRIT void hostile_burn(int ms) {
  auto cpu_ns = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
  };
  const uint64_t until = cpu_ns() + uint64_t(ms) * 1000000u;
  volatile uint64_t spins = 0;
  while (cpu_ns() < until) spins = spins + 1;
}

// Sleeps `ms` in nanosleep, counting the EINTRs it sees (every signal
// handled on this thread interrupts it; it is never restarted).
UVSTALL_TEST_CULPRIT void hostile_sleep(int ms) {
  const uint64_t until = uvt::now_ns() + uint64_t(ms) * 1000000u;
  for (;;) {
    const uint64_t now = uvt::now_ns();
    if (now >= until) break;
    const uint64_t left = until - now;
    timespec t{time_t(left / 1000000000u), long(left % 1000000000u)};
    if (nanosleep(&t, nullptr) != 0 && errno == EINTR) g_eintr.fetch_add(1);
  }
}

UVSTALL_TEST_CULPRIT int hostile_phdr_sleep(struct dl_phdr_info *, size_t, void *arg) {
  hostile_sleep(*static_cast<int *>(arg));
  return 1;  // one object is enough: the lock was held meanwhile
}

namespace {

// Baseline without uvstall, then the same with a watch that captures every
// stall: the host's handlers must keep their rate, our captures must work.
int scenario_timers() {
  void *warm[4];
  backtrace(warm, 4);  // loads libgcc_s before the first signal
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_prof;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGPROF, &sa, nullptr);
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alrm;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, nullptr);
  itimerval prof{{0, 1000}, {0, 1000}};   // 1 kHz of process CPU time
  itimerval real{{0, 10000}, {0, 10000}}; // 100 Hz of wall time
  if (setitimer(ITIMER_PROF, &prof, nullptr) != 0 || setitimer(ITIMER_REAL, &real, nullptr) != 0)
    fail("setitimer");

  // Without uvstall.
  uint64_t p0 = g_prof, a0 = g_alrm;
  double c0 = cpu_ms();
  hostile_burn(300);
  say("base_prof", g_prof - p0);
  say("base_cpu_ms", cpu_ms() - c0);
  a0 = g_alrm;
  g_eintr = 0;
  uint64_t t0 = uvt::now_ns();
  hostile_sleep(300);
  say("base_alrm", g_alrm - a0);
  say("base_sleep_ms", ms_since(t0));
  say("base_eintr", g_eintr.load());

  // With a watch capturing both stalls (several samples each).
  uvt::WatchedLoop wl([](uvstall_options_t *o) {
    o->interval_ms = 10;
    o->threshold_ms = 50;
  });
  if (wl.start_rc != 0) fail(uvstall_strerror(wl.start_rc));
  wl.after(20, [] {
    const uint64_t p = g_prof;
    const double c = cpu_ms();
    hostile_burn(300);
    say("prof", g_prof - p);
    say("cpu_ms", cpu_ms() - c);
  });
  wl.after(400, [] {
    const uint64_t a = g_alrm, p = g_prof;
    g_eintr = 0;
    const uint64_t t = uvt::now_ns();
    hostile_sleep(300);
    say("alrm", g_alrm - a);
    say("sleep_prof", g_prof - p);  // our threads' CPU time ticks too
    say("sleep_ms", ms_since(t));
    say("eintr", g_eintr.load());
  });
  wl.run();
  wl.stop();
  const itimerval off{};
  setitimer(ITIMER_PROF, &off, nullptr);
  setitimer(ITIMER_REAL, &off, nullptr);
  if (!wl.col.wait_count("stall_end", 2, 3000)) fail("no two stall_end records");
  int i = 0;
  for (const auto &[id, s] : stalls_of(wl.col)) {
    const std::string k = "stall" + std::to_string(i++);
    int ok = 0;
    for (const auto &j : s.samples) ok += j["capture"] == "ok";
    say((k + "_samples").c_str(), s.samples.size());
    say((k + "_ok").c_str(), ok);
    say((k + "_busy").c_str(), int(any_names(s, "hostile_burn")));
    say((k + "_sleep").c_str(), int(any_names(s, "hostile_sleep")));
    say((k + "_ends").c_str(), s.ends.size());
    double max_handler_us = 0;
    for (const auto &j : s.samples)
      if (j.contains("handler_us")) max_handler_us = std::max(max_handler_us, j["handler_us"].get<double>());
    say((k + "_max_handler_us").c_str(), max_handler_us);
  }
  say("stalls", i);
  return 0;
}

// A capture signal the host's timers use is refused at configuration.
int scenario_signal_choice() {
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  for (int sig : {SIGPROF, SIGALRM, SIGVTALRM}) {
    p.signal = sig;
    std::printf("rc_%s=%d\n", sigabbrev_np(sig), uvstall_configure(&p));
  }
  std::printf("message=%s\n", uvstall_strerror(UVSTALL_ESIGNAL));
  return 0;
}

// ---- the loader lock held by the stalled thread itself ----

int scenario_loader_own(const char *busy_plugin, const char *sleep_plugin) {
  setenv("UVSTALL_TEST_SLOW_MS", "500", 1);
  static const char *paths[2];
  paths[0] = busy_plugin;
  paths[1] = sleep_plugin;
  uvt::WatchedLoop wl;
  if (wl.start_rc != 0) fail(uvstall_strerror(wl.start_rc));
  static bool loaded[2];
  static void *sleeper = nullptr;
  wl.after(20, [] { loaded[0] = dlopen(paths[0], RTLD_NOW | RTLD_LOCAL) != nullptr; });
  wl.after(800, [] {
    sleeper = dlopen(paths[1], RTLD_NOW | RTLD_LOCAL);
    loaded[1] = sleeper != nullptr;
  });
  wl.after(1600, [] {
    int ms = 500;
    dl_iterate_phdr(hostile_phdr_sleep, &ms);
  });
  wl.run();
  // The sleeping constructor's code was loaded since the tables were read:
  // the snapshot unwinder finds it in /proc/self/maps, so its stack is
  // copied without a signal, and its sleeps are never cut short; any cut
  // the plugin saw must be one uvstall counted.
  uvstall_stats_t st{};
  st.struct_size = sizeof st;
  if (uvstall_get_stats(wl.watch, &st) != 0) fail("uvstall_get_stats");
  wl.stop();
  if (!loaded[0] || !loaded[1]) fail(std::string("dlopen: ") + dlerror());
  const int *eintr = static_cast<const int *>(dlsym(sleeper, "uvstall_test_slow_eintr"));
  if (eintr == nullptr) fail("no uvstall_test_slow_eintr in the plugin");
  say("interrupted", st.syscalls_interrupted);
  say("plugin_eintr", *eintr);
  if (!wl.col.wait_count("stall_end", 3, 3000)) fail("no three stall_end records");
  int i = 0;
  for (const auto &[id, s] : stalls_of(wl.col)) {
    const std::string k = "stall" + std::to_string(i++);
    say((k + "_capture").c_str(), s.samples[0]["capture"].get<std::string>());
    say((k + "_via").c_str(), s.samples[0].value("capture_via", std::string()));
    say((k + "_ctor").c_str(), int(any_names(s, "uvstall_test_slow_ctor_body")));
    say((k + "_phdr").c_str(), int(any_names(s, "hostile_phdr_sleep")));
    say((k + "_dlopen").c_str(), int(any_names(s, "dlopen") || any_names(s, "dlopen@@GLIBC_2.34") ||
                                      any_names(s, "___dlopen")));
    say((k + "_ends").c_str(), s.ends.size());
    if (!s.ends.empty()) say((k + "_ms").c_str(), s.ends[0]["duration_ms"].get<double>());
  }
  say("stalls", i);
  return 0;
}

// ---- the loader lock held by another thread for 1 s ----

std::atomic<uint64_t> g_lock_from{0}, g_lock_until{0};

// libuvstall's code, to tell whether a host handler runs inside ours.
uintptr_t g_lib_lo = 0, g_lib_hi = 0;
int find_lib(struct dl_phdr_info *info, size_t, void *) {
  if (info->dlpi_name == nullptr || std::strstr(info->dlpi_name, "libuvstall.so") == nullptr)
    return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    if (info->dlpi_phdr[i].p_type != PT_LOAD) continue;
    const uintptr_t lo = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
    const uintptr_t hi = lo + info->dlpi_phdr[i].p_memsz;
    if (g_lib_lo == 0 || lo < g_lib_lo) g_lib_lo = lo;
    if (hi > g_lib_hi) g_lib_hi = hi;
  }
  return 1;
}

// A host timer aimed at the loop thread (SIGALRM every 5 ms): counts its
// calls, and those that run inside uvstall's handler (a frame in
// libuvstall's code on its stack).
std::atomic<uint64_t> g_nested{0};
void on_alrm_nested(int, siginfo_t *, void *) {
  const int saved = errno;
  g_alrm.fetch_add(1, std::memory_order_relaxed);
  void *pcs[64];
  const int n = backtrace(pcs, 64);
  for (int i = 1; i < n; ++i) {
    const uintptr_t pc = uintptr_t(pcs[i]);
    if (pc >= g_lib_lo && pc < g_lib_hi) {
      g_nested.fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  errno = saved;
}

int phdr_hold(struct dl_phdr_info *, size_t, void *arg) {
  g_lock_from = uvt::now_ns();
  hostile_sleep(*static_cast<int *>(arg));
  g_lock_until = uvt::now_ns();
  return 1;
}

int scenario_loader_other(const char *plugin) {
  static const char *plugin_path = plugin;
  static void (*plugin_busy)(int) = nullptr;
  static std::atomic<bool> c_started{false};

  // Thread C: a second watched loop that sleeps 300 ms twice, the second
  // time while thread B holds the loader lock.
  static uvt::Collector *c_col = nullptr;
  std::thread c([] {
    static uvt::WatchedLoop wl;
    c_col = &wl.col;
    c_started = true;
    wl.after(20, [] { hostile_sleep(300); });
    wl.after(600, [] { hostile_sleep(300); });
    wl.run();
    wl.stop();
  });
  // Thread B: holds the loader lock (inside dl_iterate_phdr) from 450 ms
  // to 1450 ms.
  std::thread b([] {
    usleep(450000);
    int ms = 1000;
    dl_iterate_phdr(phdr_hold, &ms);
  });
  // This thread: stalls 1500 ms in the cold plugin code from 550 ms on,
  // with the host's 5 ms timer aimed at it.
  uvt::WatchedLoop wl;
  if (wl.start_rc != 0) fail(uvstall_strerror(wl.start_rc));
  while (!c_started) usleep(1000);
  // Loaded after every watch started, so after the unwinder last read the
  // tables (uvstall_start): its code is in no table until a capture inside
  // it finds it in /proc/self/maps, while thread B holds the loader lock.
  wl.after(300, [] {
    void *lib = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) fail(std::string("dlopen: ") + dlerror());
    plugin_busy = reinterpret_cast<void (*)(int)>(dlsym(lib, "uvstall_test_plugin_busy"));
    if (plugin_busy == nullptr) fail("dlsym uvstall_test_plugin_busy");
  });
  dl_iterate_phdr(find_lib, nullptr);
  if (g_lib_hi == 0) fail("libuvstall.so not found among the loaded objects");
  void *warm[4];
  backtrace(warm, 4);  // loads libgcc_s now, not under thread B's lock
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_alrm_nested;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGALRM, &sa, nullptr);
  static timer_t host_timer;
  sigevent sev{};
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = SIGALRM;
  sev._sigev_un._tid = uvt::tid();
  if (timer_create(CLOCK_MONOTONIC, &sev, &host_timer) != 0) fail("timer_create");
  static uint64_t stall_from = 0;
  wl.after(550, [] {
    stall_from = uvt::now_ns();
    const itimerspec every5{{0, 5000000}, {0, 5000000}}, off{};
    timer_settime(host_timer, 0, &every5, nullptr);
    plugin_busy(1500);
    timer_settime(host_timer, 0, &off, nullptr);
  });
  wl.run();
  say("alrm_in_stall", g_alrm.load());
  say("alrm_nested", g_nested.load());
  wl.stop();
  b.join();
  c.join();
  if (!wl.col.wait_count("stall_end", 1, 3000)) fail("no stall_end for the cold stall");
  if (!c_col->wait_count("stall_end", 2, 3000)) fail("no two stall_end records on thread C");
  const uint64_t lf = g_lock_from, lu = g_lock_until;
  if (lf == 0 || lf > stall_from) fail("thread B did not hold the loader lock before the stall");
  say("lock_ms", double(lu - lf) / 1e6);
  auto s = stalls_of(wl.col);
  if (s.size() != 1) fail("expected one stall on the cold loop, got " + std::to_string(s.size()));
  const StallSummary &st = s.begin()->second;
  say("cold_samples", st.samples.size());
  say("cold_first_capture", st.samples[0]["capture"].get<std::string>());
  say("cold_first_via", st.samples[0].value("capture_via", std::string()));
  say("cold_first_named", int(uvt::frames_name(st.samples[0], "uvstall_test_plugin_busy")));
  say("cold_first_handler_us", st.samples[0].value("handler_us", -1.0));
  say("cold_first_arrived_before_unlock", int(st.arrived_ns[0] < lu));
  say("cold_first_after_stall_ms", double(st.arrived_ns[0] - stall_from) / 1e6);
  int timeouts_in_lock = 0, named_after_unlock = 0, named_in_lock = 0;
  std::string captures;
  for (size_t i = 0; i < st.samples.size(); ++i) {
    const std::string cap = st.samples[i]["capture"];
    captures += (i ? "," : "") + cap;
    if (cap == "timeout" && st.arrived_ns[i] < lu) ++timeouts_in_lock;
    if ((cap == "ok" || cap == "late") && uvt::frames_name(st.samples[i], "uvstall_test_plugin_busy") &&
        st.arrived_ns[i] >= lu)
      ++named_after_unlock;
    if (cap == "ok" && uvt::frames_name(st.samples[i], "uvstall_test_plugin_busy") &&
        st.arrived_ns[i] < lu)
      ++named_in_lock;
  }
  say("cold_captures", captures);
  say("cold_timeouts_in_lock", timeouts_in_lock);
  say("cold_named_after_unlock", named_after_unlock);
  say("cold_named_in_lock", named_in_lock);
  say("cold_ends", st.ends.size());
  if (!st.ends.empty()) {
    say("cold_ended_by", st.ends[0]["ended_by"].get<std::string>());
    say("cold_ms", st.ends[0]["duration_ms"].get<double>());
  }
  // Thread C's second stall, taken while B held the lock.
  auto cs = stalls_of(*c_col);
  if (cs.size() != 2) fail("expected two stalls on thread C, got " + std::to_string(cs.size()));
  const StallSummary &c2 = std::next(cs.begin())->second;
  say("c2_first_capture", c2.samples[0]["capture"].get<std::string>());
  say("c2_first_arrived_in_lock", int(c2.arrived_ns[0] >= lf && c2.arrived_ns[0] < lu));
  say("c2_named", int(any_names(c2, "hostile_sleep")));
  say("c2_ends", c2.ends.size());
  return 0;
}

// ---- fork while uvstall is busy ----

// The child's checks, as bits of its exit status (0: all passed).
enum ChildFailure {
  kInheritedStats = 1,    // get_stats of the forking thread's inherited watch
  kOtherStats = 2,        // get_stats of another thread's inherited watch
  kChildStart = 4,        // uvstall_start of a new watch in the child
  kChildStall = 8,        // the child's stall, with its pid, tid and run_id, culprit named
  kChildEnd = 16,         // ... and its stall_end
  kInheritedStop = 32,    // uvstall_stop of the inherited watch
  kLoopClose = 64,        // uv_loop_close of the inherited loop after one run
  kConfigure = 128,       // uvstall_configure: UVSTALL_ECONFIGURED (the parent's options stand)
};

struct ForkHost {
  std::string dir;
  uvt::WatchedLoop *main = nullptr;   // this thread's loop, forks from a timer
  uvt::WatchedLoop *other = nullptr;  // thread S: a loop that stalls all the time
  uv_timer_t fork_timer;
  int forks = 0, forks_wanted = 0, full_every = 0;
  bool in_child = false;
  int child_failures = 0;
  std::vector<pid_t> full_children;
  std::map<int, int> status_count;  // child exit status -> count
  int hung = 0;
  int sanitizer_stuck = 0;  // children stuck on a lock libasan's fork left held
  double max_quick_ms = 0, sum_quick_ms = 0;
  double max_fork_ms = 0, sum_fork_ms = 0;  // fork() itself, in the parent
  int quick = 0;
};
ForkHost g_fh;

std::vector<nlohmann::json> read_jsonl(const std::string &path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

// The sanitizer runtime's own fork hazard, told apart from ours. GCC 12's
// libasan takes no allocator lock around fork(): a child forked while
// another thread was refilling an allocator cache inherits that size
// class's mutex held, and its first allocation of that size waits forever
// (gdb on such children: __sanitizer::FutexWait <- SizeClassAllocator64::
// GetFromAllocator <- operator new, in uvstall_get_stats' histogram copy or
// a new thread's string). True if some thread of `pid` waits in futex()
// (202) with its program counter inside libasan; a wait on any lock of ours
// or of libc has it in libc. Never true without ASan: libasan is not mapped.
bool waits_in_libasan(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::vector<std::pair<unsigned long, unsigned long>> asan;  // [lo, hi)
  {
    std::ifstream maps(proc + "/maps");
    std::string line;
    while (std::getline(maps, line)) {
      unsigned long lo = 0, hi = 0;
      if (line.find("libasan") != std::string::npos &&
          std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2)
        asan.emplace_back(lo, hi);
    }
  }
  if (asan.empty()) return false;
  DIR *d = opendir((proc + "/task").c_str());
  if (d == nullptr) return false;
  bool found = false;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(proc + "/task/" + e->d_name + "/syscall");
    long nr = -1;
    std::string arg;
    if (!(f >> nr) || nr != SYS_futex) continue;
    for (int i = 0; i < 7 && f >> arg; i++) {}  // six arguments, then sp
    unsigned long pc = 0;
    if (!(f >> std::hex >> pc)) continue;
    for (const auto &[lo, hi] : asan) found = found || (pc >= lo && pc < hi);
  }
  closedir(d);
  return found;
}

bool libasan_loaded() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("libasan") != std::string::npos) return true;
  return false;
}

std::string stuck_marker(pid_t pid) { return g_fh.dir + "/stuck-in-libasan-" + std::to_string(pid); }

// In the child, inside the parent's timer callback: the inherited watches
// answer get_stats; a new watch on a new loop reports the child's stall.
void child_checks(bool full) {
  int f = 0;
  uvstall_stats_t st{};
  st.struct_size = sizeof st;
  if (uvstall_get_stats(g_fh.main->watch, &st) != 0 || st.ticks == 0) f |= kInheritedStats;
  st = uvstall_stats_t{};
  st.struct_size = sizeof st;
  if (uvstall_get_stats(g_fh.other->watch, &st) != 0 || st.ticks == 0) f |= kOtherStats;
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  if (uvstall_configure(&p) != UVSTALL_ECONFIGURED) f |= kConfigure;
  if (full) {
    const std::string path = g_fh.dir + "/child-" + std::to_string(getpid()) + ".jsonl";
    uv_loop_t loop;
    uv_loop_init(&loop);
    uvstall_options_t o;
    uvstall_options_init(&o);
    o.interval_ms = 10;
    o.threshold_ms = 50;
    o.output_path = path.c_str();
    uvstall_t *w = nullptr;
    if (uvstall_start(&loop, &o, &w) != 0) {
      f |= kChildStart;
    } else {
      uv_timer_t t;
      uv_timer_init(&loop, &t);
      uv_timer_start(&t, [](uv_timer_t *) { uvstall_test_busy(200); }, 20, 0);
      uv_run(&loop, UV_RUN_DEFAULT);
      uvstall_stop(w);  // waits for the records to be written
      uv_close(reinterpret_cast<uv_handle_t *>(&t), nullptr);
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
      bool stall = false, end = false;
      const std::string parent_run = read_jsonl(g_fh.dir + "/parent.jsonl").at(0)["run_id"];
      for (const auto &j : read_jsonl(path)) {
        if (j["type"] == "stall" && j["pid"] == getpid() && j["tid"] == uvt::tid() &&
            j["run_id"] != parent_run &&
            ((j["capture"] == "ok" && uvt::frames_name(j, "uvstall_test_busy")) ||
             // ThreadSanitizer does not support a forked multi-threaded
             // process that starts threads (die_after_fork=0 only lets it
             // go on); there the child's capture was seen to time out.
             (uvt::kTsan && j["capture"] == "timeout")))
          stall = true;
        if (j["type"] == "stall_end" && j["pid"] == getpid()) end = true;
      }
      if (!stall) f |= kChildStall;
      if (!end) f |= kChildEnd;
    }
  }
  g_fh.child_failures = f;
}

// Waits up to timeout_ms for `pid`, then kills it (counted as hung).
// Records its exit status (128 + signal when killed by one).
// A child stuck in libasan (waits_in_libasan) is counted apart and killed;
// a quick child has only the forking thread, so once it has run 1 s and
// waits there, nothing can ever release it. False for such a child.
bool reap(pid_t pid, int timeout_ms, bool single_threaded) {
  const uint64_t t0 = uvt::now_ns();
  int st = 0;
  bool looked = false;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    const double ms = ms_since(t0);
    const bool look = ms > timeout_ms || (single_threaded && !looked && ms > 1000);
    if (look) {
      looked = true;
      const bool asan = waits_in_libasan(pid);
      if (asan || ms > timeout_ms) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        (asan ? g_fh.sanitizer_stuck : g_fh.hung)++;
        return !asan;
      }
    }
    usleep(500);
  }
  // A child whose checks failed while one of its threads was stuck the
  // same way (a full child's new sentinel or writer) left a marker.
  if (st != 0 && access(stuck_marker(pid).c_str(), F_OK) == 0) {
    g_fh.sanitizer_stuck++;
    return false;
  }
  g_fh.status_count[WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)]++;
  return true;
}

void on_fork_timer(uv_timer_t *t) {
  if (g_fh.forks == g_fh.forks_wanted) {
    uv_timer_stop(t);
    return;
  }
  const bool full = g_fh.full_every > 0 && g_fh.forks % g_fh.full_every == 0;
  g_fh.forks++;
  const uint64_t t0 = uvt::now_ns();
  const pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    g_fh.in_child = true;
    uv_loop_fork(&g_fh.main->loop);  // libuv's rule for a loop used in a child
    child_checks(full);
    uv_stop(&g_fh.main->loop);
    return;
  }
  const double fork_ms = ms_since(t0);
  g_fh.max_fork_ms = std::max(g_fh.max_fork_ms, fork_ms);
  g_fh.sum_fork_ms += fork_ms;
  if (full) {
    g_fh.full_children.push_back(pid);
    return;
  }
  // A quick child: get_stats, then stop and close its inherited loop, exit.
  if (!reap(pid, 5000, /*single_threaded=*/true)) return;  // not timed: libasan's hang
  const double ms = ms_since(t0);
  g_fh.max_quick_ms = std::max(g_fh.max_quick_ms, ms);
  g_fh.sum_quick_ms += ms;
  g_fh.quick++;
}

int scenario_fork(int forks, int full_every) {
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.max_stalls_per_minute = 0;
  if (uvstall_configure(&p) != 0) fail("uvstall_configure");
  char tmpl[] = "/tmp/uvstall-fork-XXXXXX";
  g_fh.dir = mkdtemp(tmpl);
  g_fh.forks_wanted = forks;
  g_fh.full_every = full_every;
  const std::string parent_out = g_fh.dir + "/parent.jsonl";

  // Thread S: stalls 20 ms of every 30 (threshold 10 ms), with a metrics
  // record every 100 ms: the sentinel captures and the writer writes
  // all the time.
  std::atomic<bool> done{false};
  std::atomic<bool> ready{false};
  std::thread s([&] {
    uvt::WatchedLoop wl([&](uvstall_options_t *o) {
      o->interval_ms = 5;
      o->threshold_ms = 10;
      o->metrics_interval_ms = 100;
      o->output_path = parent_out.c_str();
      o->on_report = nullptr;
    });
    if (wl.start_rc != 0) fail(uvstall_strerror(wl.start_rc));
    g_fh.other = &wl;
    uv_timer_t t;
    uv_timer_init(&wl.loop, &t);
    t.data = &done;
    uv_timer_start(&t, [](uv_timer_t *t) {
      if (static_cast<std::atomic<bool> *>(t->data)->load()) {
        uv_timer_stop(t);
        return;
      }
      uvstall_test_busy(20);
    }, 10, 30);
    ready = true;
    wl.run();
    uv_close(reinterpret_cast<uv_handle_t *>(&t), nullptr);
    wl.stop();
  });
  while (!ready) usleep(1000);
  usleep(100000);

  uvt::WatchedLoop wl([&](uvstall_options_t *o) {
    o->interval_ms = 10;
    o->threshold_ms = 50;
    o->output_path = parent_out.c_str();
    o->on_report = nullptr;
  });
  if (wl.start_rc != 0) fail(uvstall_strerror(wl.start_rc));
  g_fh.main = &wl;
  uv_timer_init(&wl.loop, &g_fh.fork_timer);
  uv_timer_start(&g_fh.fork_timer, on_fork_timer, 10, 7);
  const uint64_t t0 = uvt::now_ns();
  wl.run();

  if (g_fh.in_child) {
    // The inherited watch of this thread: stop, one run, close.
    int f = g_fh.child_failures;
    if (uvstall_stop(wl.watch) != 0) f |= kInheritedStop;
    wl.watch = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(&g_fh.fork_timer), nullptr);
    uv_run(&wl.loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&wl.loop) != 0) f |= kLoopClose;
    if (f != 0 && waits_in_libasan(getpid())) {
      const int fd = open(stuck_marker(getpid()).c_str(), O_CREAT | O_WRONLY, 0600);
      if (fd >= 0) close(fd);
    }
    std::exit(f);  // exit, not _exit: the exit handlers run in the child
  }
  const double seconds = double(uvt::now_ns() - t0) / 1e9;
  for (pid_t pid : g_fh.full_children) reap(pid, 10000, /*single_threaded=*/false);
  done = true;
  uv_close(reinterpret_cast<uv_handle_t *>(&g_fh.fork_timer), nullptr);
  wl.stop();
  s.join();

  // Every record of the parent's file is the parent's: the children never
  // reported an inherited watch.
  const pid_t me = getpid();
  int parent_stalls = 0, foreign = 0;
  for (const auto &j : read_jsonl(parent_out)) {
    if (j["pid"] != me) foreign++;
    if (j["type"] == "stall") parent_stalls++;
  }
  say("forks", g_fh.forks);
  say("seconds", seconds);
  say("full_children", g_fh.full_children.size());
  say("hung", g_fh.hung);
  say("sanitizer_stuck", g_fh.sanitizer_stuck);
  say("libasan", libasan_loaded() ? 1 : 0);
  std::string statuses;
  for (const auto &[code, n] : g_fh.status_count)
    statuses += (statuses.empty() ? "" : ",") + std::to_string(code) + ":" + std::to_string(n);
  say("statuses", statuses);
  say("quick_max_ms", g_fh.max_quick_ms);
  say("quick_mean_ms", g_fh.quick > 0 ? g_fh.sum_quick_ms / g_fh.quick : 0.0);
  say("fork_max_ms", g_fh.max_fork_ms);
  say("fork_mean_ms", g_fh.forks > 0 ? g_fh.sum_fork_ms / g_fh.forks : 0.0);
  say("parent_stalls", parent_stalls);
  say("foreign_records", foreign);
  return 0;
}

// The metrics endpoint stays the parent's: a child that outlives its
// parent must not keep the port bound with nobody answering. The parent
// serves metrics, forks a child that lives 3 s more, and exits at once.
int scenario_fork_metrics(const char *port) {
  const std::string addr = std::string("127.0.0.1:") + port;
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.metrics_addr = addr.c_str();
  if (uvstall_configure(&p) != 0) fail("uvstall_configure");
  uvt::WatchedLoop wl;
  if (wl.start_rc != 0) fail(uvstall_strerror(wl.start_rc));
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    usleep(3000000);
    _exit(0);
  }
  say("child_pid", pid);
  std::fflush(stdout);
  std::exit(0);
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  if (__lsan_disable != nullptr) __lsan_disable();
  const std::string scenario = argv[1];
  int rc = 2;
  if (scenario == "timers") rc = scenario_timers();
  if (scenario == "signal-choice") rc = scenario_signal_choice();
  if (scenario == "loader-own" && argc == 4) rc = scenario_loader_own(argv[2], argv[3]);
  if (scenario == "loader-other" && argc == 3) rc = scenario_loader_other(argv[2]);
  if (scenario == "fork" && argc == 4) rc = scenario_fork(std::atoi(argv[2]), std::atoi(argv[3]));
  if (scenario == "fork-metrics" && argc == 3) rc = scenario_fork_metrics(argv[2]);
  std::fflush(stdout);
  return rc;
}
