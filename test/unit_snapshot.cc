// Snapshot unwinder (src/snapshot.h) on real threads of this process,
// blocked for real: each is stopped inside a known chain of functions, its
// stack is taken from here without a signal and unwound from the copy, and
// the blocked call must still take its full time and return its normal
// value. No mock of libunwind or of the kernel.
#include <dlfcn.h>
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/mman.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "clock.h"
#include "modules.h"
#include "snapshot.h"
#include "thread_state.h"

using namespace uvstall::internal;

namespace {

using BlockFn = long (*)(void *);

// Keeps the call in each link of the chain from becoming a tail call (a
// tail call leaves no frame, and the chain would have holes).
inline long keep_frame(long r) {
  asm volatile("" : "+r"(r) : : "memory");
  return r;
}

}  // namespace

// The known chain, outermost first: outer -> middle -> inner -> blocker.
// extern "C" for plain names in the symbol table.
extern "C" {
__attribute__((noinline)) long uvstall_snap_inner(BlockFn fn, void *arg) {
  return keep_frame(fn(arg));
}
__attribute__((noinline)) long uvstall_snap_middle(BlockFn fn, void *arg) {
  return keep_frame(uvstall_snap_inner(fn, arg));
}
__attribute__((noinline)) long uvstall_snap_outer(BlockFn fn, void *arg) {
  return keep_frame(uvstall_snap_middle(fn, arg));
}
// The same chain with a middle link built -O0 with frame pointers
// (test/unit_snapshot_fp.c).
long uvstall_snapfp_middle(BlockFn fn, void *arg);
__attribute__((noinline)) long uvstall_snapfp_outer(BlockFn fn, void *arg) {
  return keep_frame(uvstall_snapfp_middle(fn, arg));
}
long uvstall_snapfp_alloca_middle(BlockFn fn, void *arg);
__attribute__((noinline)) long uvstall_snapfp_alloca_outer(BlockFn fn, void *arg) {
  return keep_frame(uvstall_snapfp_alloca_middle(fn, arg));
}
}

namespace {

constexpr uint64_t kSleepMs = 300;  // each timed call; they run one after another
constexpr const char *kChain[] = {"uvstall_snap_inner", "uvstall_snap_middle",
                                  "uvstall_snap_outer"};

pid_t gettid_() { return pid_t(syscall(SYS_gettid)); }

// One thread running fn inside the chain once, with what the call returned.
// A failed REQUIRE leaves the scope with the thread still blocked: the
// destructor runs `release` (write to the pipe, unlock the mutex, ...)
// before it joins, so a failing test never hangs the binary. Timed calls
// need none: they end by themselves.
struct Blocked {
  using EntryFn = long (*)(BlockFn, void *);
  BlockFn fn;
  void *arg;
  EntryFn entry;
  std::atomic<pid_t> tid{0};
  long ret = 0;
  int err = 0;
  uint64_t start_ns = 0, end_ns = 0;
  std::thread th;
  std::function<void()> release;

  Blocked(BlockFn f, void *a, EntryFn e = uvstall_snap_outer) : fn(f), arg(a), entry(e) {
    th = std::thread([this] {
      tid.store(gettid_());
      start_ns = mono_ns();
      errno = 0;
      ret = entry(fn, arg);
      err = errno;
      end_ns = mono_ns();
    });
  }
  ~Blocked() {
    if (!th.joinable()) return;
    if (release) release();
    th.join();
  }
};

// Waits until the thread sleeps ('S') in one of the given syscalls.
bool wait_blocked(const Blocked &b, std::initializer_list<long> nrs) {
  while (b.tid.load() == 0) usleep(100);
  ThreadProbe probe(b.tid.load());
  const uint64_t deadline = mono_ns() + 2000 * kNsPerMs;
  while (mono_ns() < deadline) {
    ThreadSample s = probe.read();
    for (long nr : nrs)
      if (s.state == 'S' && s.syscall_nr == nr) return true;
    usleep(200);
  }
  return false;
}

// The unwound frames, resolved with the module table.
struct Stack {
  std::vector<uintptr_t> pcs;
  std::vector<ResolvedFrame> frames;
  UnwindStats stats;
};

Stack unwind(const Snapshot &snap) {
  Stack s;
  s.pcs.resize(64);
  const int n = unwind_snapshot(snap, s.pcs.data(), int(s.pcs.size()), &s.stats);
  s.pcs.resize(size_t(n));
  for (int i = 0; i < n; ++i) s.frames.push_back(modules().resolve(s.pcs[size_t(i)], i > 0));
  return s;
}

int index_of(const Stack &s, const std::string &name) {
  for (size_t i = 0; i < s.frames.size(); ++i)
    if (s.frames[i].symbol == name) return int(i);
  return -1;
}

std::string describe(const Stack &s) {
  std::string out;
  for (const auto &f : s.frames) {
    out += f.module ? f.module->path : std::string("?");
    out += " ";
    out += f.symbol.empty() ? std::string("?") : f.symbol;
    out += "\n";
  }
  out += std::string("stop: ") + s.stats.stop;
  return out;
}

// A sanitizer's runtime: its interceptors legitimately sit between the
// host's call and libc (libasan's read, libtsan's nanosleep...).
bool sanitizer_frame(const ResolvedFrame &f) {
  if (f.module == nullptr) return false;
  const std::string &p = f.module->path;
  return p.find("libasan") != std::string::npos || p.find("libtsan") != std::string::npos ||
         p.find("libubsan") != std::string::npos;
}

// True when the frames from `from` on start with the names given, in
// order, with nothing between two of them but sanitizer frames.
bool links_ok(const Stack &s, int from, std::initializer_list<const char *> names) {
  size_t i = size_t(from);
  for (const char *name : names) {
    while (i < s.frames.size() && s.frames[i].symbol != name && sanitizer_frame(s.frames[i])) ++i;
    if (i == s.frames.size() || s.frames[i].symbol != name) return false;
    ++i;
  }
  return true;
}

// True when the stack is the chain under `blocker`, innermost first, with
// every frame in a loaded module, and before the blocker only libc, the
// vDSO or a sanitizer (the syscall's wrappers).
bool chain_ok(const Stack &s, const char *blocker) {
  const int first = index_of(s, blocker);
  if (first < 0) return false;
  if (!links_ok(s, first, {blocker, kChain[0], kChain[1], kChain[2]})) return false;
  for (int i = 0; i < first; ++i) {
    const auto &f = s.frames[size_t(i)];
    if (f.module == nullptr) return false;
    const std::string &p = f.module->path;
    if (!sanitizer_frame(f) && p.find("libc.so") == std::string::npos &&
        p.find("vdso") == std::string::npos)
      return false;
  }
  for (const auto &f : s.frames)
    if (f.module == nullptr) return false;
  return true;
}

// For a chain through an -O0 link: the index of `outer` when the stack is
// nanosleep's blocker, the inner link, `middle` and `outer` in order (only
// sanitizer frames between) with every frame in a module; -1 otherwise.
int fp_chain_outer(const Stack &s, const char *middle, const char *outer) {
  const int first = index_of(s, "uvstall_snap_nanosleep");
  if (first < 0 || !links_ok(s, first, {"uvstall_snap_nanosleep", "uvstall_snap_inner",
                                        middle, outer}))
    return -1;
  for (const auto &f : s.frames)
    if (f.module == nullptr) return -1;
  return index_of(s, outer);
}

// Snapshot, unwind and check one blocked thread.
void check_snapshot(const Blocked &b, const char *blocker) {
  Snapshot snap;
  REQUIRE(take_snapshot(b.tid.load(), &snap));
  CHECK(std::string(snap.refusal).empty());
  CHECK(snap.stack_bytes > 0);
  CHECK(snap.state == 'S');
  const Stack s = unwind(snap);
  INFO(describe(s));
  REQUIRE(s.pcs.size() >= 4);
  CHECK(s.pcs[0] == snap.pc);
  CHECK(s.frames[0].module.get() != nullptr);  // libc or the vDSO
  CHECK(chain_ok(s, blocker));
  CHECK(std::string(s.stats.stop) == "end of stack");
}

struct Timed {
  uint64_t ms;
};

extern "C" __attribute__((noinline)) long uvstall_snap_nanosleep(void *arg) {
  const uint64_t ms = static_cast<Timed *>(arg)->ms;
  timespec ts{time_t(ms / 1000), long(ms % 1000) * 1000000L};
  return keep_frame(nanosleep(&ts, nullptr));
}
extern "C" __attribute__((noinline)) long uvstall_snap_usleep(void *arg) {
  return keep_frame(usleep(useconds_t(static_cast<Timed *>(arg)->ms * 1000)));
}
extern "C" __attribute__((noinline)) long uvstall_snap_poll(void *arg) {
  return keep_frame(poll(nullptr, 0, int(static_cast<Timed *>(arg)->ms)));
}
extern "C" __attribute__((noinline)) long uvstall_snap_read(void *arg) {
  char c;
  return keep_frame(read(*static_cast<int *>(arg), &c, 1));
}
extern "C" __attribute__((noinline)) long uvstall_snap_lock(void *arg) {
  auto *m = static_cast<pthread_mutex_t *>(arg);
  const long r = keep_frame(pthread_mutex_lock(m));
  if (r == 0) pthread_mutex_unlock(m);
  return r;
}
extern "C" __attribute__((noinline)) long uvstall_snap_recv(void *arg) {
  char buf[16];
  return keep_frame(recv(*static_cast<int *>(arg), buf, sizeof buf, 0));
}

struct Loop {
  uint64_t ms;
  std::atomic<bool> *stop;
};
extern "C" __attribute__((noinline)) long uvstall_snap_sleep_loop(void *arg) {
  auto *l = static_cast<Loop *>(arg);
  long n = 0;
  while (!l->stop->load(std::memory_order_relaxed)) {
    timespec ts{0, long(l->ms) * 1000000L};
    nanosleep(&ts, nullptr);
    ++n;
  }
  return keep_frame(n);
}
extern "C" __attribute__((noinline)) long uvstall_snap_busy(void *arg) {
  auto *stop = static_cast<std::atomic<bool> *>(arg);
  long n = 0;
  while (!stop->load(std::memory_order_relaxed)) ++n;
  return keep_frame(n);
}

void check_timed(BlockFn fn, const char *name, std::initializer_list<long> nrs) {
  INFO(name);
  Timed t{kSleepMs};
  Blocked b(fn, &t);
  REQUIRE(wait_blocked(b, nrs));
  check_snapshot(b, name);
  b.th.join();
  // The point of the snapshot: the call was not cut short.
  CHECK(b.ret == 0);
  CHECK(b.err != EINTR);
  CHECK(b.end_ns - b.start_ns >= kSleepMs * kNsPerMs);
}

struct Init {
  Init() {
    if (!snapshot_unwinder_init()) MESSAGE(snapshot_unwinder_problem());
  }
};

}  // namespace

TEST_SUITE("snapshot") {
  TEST_CASE("parsers read /proc's syscall and status formats") {
    SyscallRegs r;
    const char in_call[] =
        "230 0x1 0x0 0x7f0c4d7fdd60 0x0 0x0 0x0 0x7f0c4d7fdd38 0x7f0c4f2e93ff\n";
    REQUIRE(parse_syscall_regs(in_call, sizeof in_call - 1, &r));
    CHECK_FALSE(r.running);
    CHECK(r.nr == 230);
    CHECK(r.sp == 0x7f0c4d7fdd38u);
    CHECK(r.pc == 0x7f0c4f2e93ffu);
    const char outside[] = "-1 0x7ffd1234 0x55aa00\n";
    REQUIRE(parse_syscall_regs(outside, sizeof outside - 1, &r));
    CHECK(r.nr == -1);
    CHECK(r.sp == 0x7ffd1234u);
    CHECK(r.pc == 0x55aa00u);
    REQUIRE(parse_syscall_regs("running\n", 8, &r));
    CHECK(r.running);
    CHECK_FALSE(parse_syscall_regs("garbage", 7, &r));

    const char status[] =
        "Name:\tx\nState:\tS (sleeping)\nTgid:\t1\nvoluntary_ctxt_switches:\t42\n"
        "nonvoluntary_ctxt_switches:\t7\n";
    char state = 0;
    uint64_t sw = 0;
    REQUIRE(parse_status_switches(status, sizeof status - 1, &state, &sw));
    CHECK(state == 'S');
    CHECK(sw == 42);
    const char only_non[] = "Name:\tx\nState:\tR (running)\nnonvoluntary_ctxt_switches:\t7\n";
    CHECK_FALSE(parse_status_switches(only_non, sizeof only_non - 1, &state, &sw));
  }

  TEST_CASE("a thread sleeping in a call is unwound from its copy and sleeps its full time") {
    static Init init;
    REQUIRE(snapshot_unwinder_problem().empty());
    check_timed(uvstall_snap_nanosleep, "uvstall_snap_nanosleep",
                {SYS_nanosleep, SYS_clock_nanosleep});
    check_timed(uvstall_snap_usleep, "uvstall_snap_usleep",
                {SYS_nanosleep, SYS_clock_nanosleep});
    check_timed(uvstall_snap_poll, "uvstall_snap_poll", {SYS_poll, SYS_ppoll});
  }

  TEST_CASE("a thread blocked on a pipe, a mutex or a socket gets its data after the snapshot") {
    static Init init;
    REQUIRE(snapshot_unwinder_problem().empty());
    SUBCASE("read on an empty pipe") {
      int fds[2];
      REQUIRE(pipe(fds) == 0);
      Blocked b(uvstall_snap_read, &fds[0]);
      b.release = [&fds] { (void)!write(fds[1], "x", 1); };
      REQUIRE(wait_blocked(b, {SYS_read}));
      check_snapshot(b, "uvstall_snap_read");
      const uint64_t sent_ns = mono_ns();
      REQUIRE(write(fds[1], "x", 1) == 1);
      b.th.join();
      CHECK(b.ret == 1);
      CHECK(b.end_ns >= sent_ns);
      close(fds[0]);
      close(fds[1]);
    }
    SUBCASE("pthread_mutex_lock on a mutex this thread holds") {
      static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
      REQUIRE(pthread_mutex_lock(&m) == 0);
      Blocked b(uvstall_snap_lock, &m);
      b.release = [] { pthread_mutex_unlock(&m); };
      REQUIRE(wait_blocked(b, {SYS_futex}));
      check_snapshot(b, "uvstall_snap_lock");
      const uint64_t sent_ns = mono_ns();
      pthread_mutex_unlock(&m);
      b.th.join();
      CHECK(b.ret == 0);
      CHECK(b.end_ns >= sent_ns);
    }
    SUBCASE("recv on a socketpair") {
      int sv[2];
      REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
      Blocked b(uvstall_snap_recv, &sv[0]);
      b.release = [&sv] { (void)!send(sv[1], "x", 1, 0); };
      REQUIRE(wait_blocked(b, {SYS_recvfrom}));
      check_snapshot(b, "uvstall_snap_recv");
      const uint64_t sent_ns = mono_ns();
      REQUIRE(send(sv[1], "ping", 4, 0) == 4);
      b.th.join();
      CHECK(b.ret == 4);
      CHECK(b.end_ns >= sent_ns);
      close(sv[0]);
      close(sv[1]);
    }
  }

  TEST_CASE("a libuv callback sleeping inside uv_run is unwound through libuv to uv_run") {
    static Init init;
    REQUIRE(snapshot_unwinder_problem().empty());
    struct Ctx {
      Timed t{200};
      std::atomic<pid_t> tid{0};
      long ret = -1;
      uint64_t start_ns = 0, end_ns = 0;
    } ctx;
    std::thread th([&ctx] {
      uv_loop_t loop;
      uv_loop_init(&loop);
      uv_timer_t timer;
      uv_timer_init(&loop, &timer);
      timer.data = &ctx;
      uv_timer_start(
          &timer,
          [](uv_timer_t *h) {
            auto *c = static_cast<Ctx *>(h->data);
            c->tid.store(gettid_());
            c->start_ns = mono_ns();
            c->ret = uvstall_snap_outer(uvstall_snap_nanosleep, &c->t);
            c->end_ns = mono_ns();
          },
          0, 0);
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_close(reinterpret_cast<uv_handle_t *>(&timer), nullptr);
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
    });
    // The callback's sleep ends by itself: join even after a failed REQUIRE.
    struct Join {
      std::thread &t;
      ~Join() {
        if (t.joinable()) t.join();
      }
    } join{th};
    while (ctx.tid.load() == 0) usleep(100);
    ThreadProbe probe(ctx.tid.load());
    bool asleep = false;
    for (int i = 0; i < 5000 && !asleep; ++i) {
      const ThreadSample s = probe.read();
      asleep = s.state == 'S' && s.syscall_nr == SYS_clock_nanosleep;
      if (!asleep) usleep(200);
    }
    REQUIRE(asleep);
    Snapshot snap;
    REQUIRE(take_snapshot(ctx.tid.load(), &snap));
    const Stack s = unwind(snap);
    INFO(describe(s));
    CHECK(chain_ok(s, "uvstall_snap_nanosleep"));
    const int outer = index_of(s, "uvstall_snap_outer");
    const int run = index_of(s, "uv_run");
    CHECK(outer >= 0);
    CHECK(run > outer);
    th.join();
    CHECK(ctx.ret == 0);
    CHECK(ctx.end_ns - ctx.start_ns >= 200 * kNsPerMs);
  }

  TEST_CASE("a thread in a loop of 1 ms sleeps gives valid snapshots or 'moved' refusals") {
    static Init init;
    REQUIRE(snapshot_unwinder_problem().empty());
    std::atomic<bool> stop{false};
    Loop loop{1, &stop};
    Blocked b(uvstall_snap_sleep_loop, &loop);
    b.release = [&stop] { stop = true; };
    REQUIRE(wait_blocked(b, {SYS_nanosleep, SYS_clock_nanosleep}));
    Snapshot snap;
    int accepted = 0, moved = 0, running = 0, other = 0, bad_stacks = 0;
    const uint64_t until = mono_ns() + 800 * kNsPerMs;
    while (mono_ns() < until) {
      if (take_snapshot(b.tid.load(), &snap)) {
        ++accepted;
        const Stack s = unwind(snap);
        if (!chain_ok(s, "uvstall_snap_sleep_loop")) {
          ++bad_stacks;
          INFO(describe(s));
          CHECK(chain_ok(s, "uvstall_snap_sleep_loop"));
        }
      } else if (std::strcmp(snap.refusal, "thread moved") == 0) {
        ++moved;
      } else if (std::strcmp(snap.refusal, "thread running") == 0 ||
                 std::strcmp(snap.refusal, "not in a system call") == 0) {
        ++running;
      } else {
        ++other;
        INFO(snap.refusal);
        CHECK(false);
      }
    }
    stop = true;
    b.th.join();
    MESSAGE("1 ms sleep loop: ", accepted, " accepted, ", moved, " moved, ", running,
            " running, ", other, " other, ", b.ret, " sleeps");
    CHECK(accepted > 0);
    CHECK(bad_stacks == 0);
    CHECK(other == 0);
  }

  TEST_CASE("a -O0 frame-pointer frame is unwound through its recovered rbp, and marked") {
    static Init init;
    REQUIRE(snapshot_unwinder_problem().empty());
    Timed t{300};
    Blocked b(uvstall_snap_nanosleep, &t, uvstall_snapfp_outer);
    REQUIRE(wait_blocked(b, {SYS_nanosleep, SYS_clock_nanosleep}));
    // Snapshots through the call (each one a fresh copy, cold caches for
    // half of them), every one checked against the known chain.
    int taken = 0, reached_start = 0, guessed = 0;
    uint64_t cold_ns = ~uint64_t(0), warm_ns = ~uint64_t(0);  // fastest of each
    for (int i = 0; i < 20; ++i) {
      if (i % 2 == 0) snapshot_unwinder_flush_caches();
      Snapshot snap;
      if (!take_snapshot(b.tid.load(), &snap)) continue;
      ++taken;
      const uint64_t t0 = mono_ns();
      const Stack s = unwind(snap);
      uint64_t &best = i % 2 == 0 ? cold_ns : warm_ns;
      best = std::min(best, mono_ns() - t0);
      INFO(describe(s));
      INFO("first guessed frame: ", s.stats.first_guessed_frame);
      // Through the -O0 frame (its rule needs rbp) to the outer caller.
      const int outer = fp_chain_outer(s, "uvstall_snapfp_middle", "uvstall_snapfp_outer");
      REQUIRE(outer > 0);
      // The caller of the -O0 frame, and all after it, are marked guessed
      // (under ASan an earlier, instrumented frame may already need the
      // guess). A sanitizer's interceptor below the chain may instead save
      // rbp with a CFI rule (libtsan's nanosleep does): then libunwind
      // knows rbp exactly and nothing is guessed.
      const int middle = index_of(s, "uvstall_snapfp_middle");
      bool saved_below = false;
      for (int i = 0; i < middle; ++i) saved_below = saved_below || sanitizer_frame(s.frames[size_t(i)]);
      if (!saved_below || s.stats.rbp_guesses > 0) {
        CHECK(s.stats.rbp_guesses >= 1);
        CHECK(s.stats.first_guessed_frame >= 0);
        CHECK(s.stats.first_guessed_frame <= outer);
      }
      if (s.stats.first_guessed_frame >= 0) ++guessed;
      // The thread's start: std::thread's _M_run, then libstdc++ and libc
      // to the end of the stack.
      bool run = false;
      for (const auto &f : s.frames) run = run || f.symbol.find("_M_run") != std::string::npos;
      if (run && std::string(s.stats.stop) == "end of stack") ++reached_start;
      usleep(5000);
    }
    MESSAGE("-O0 frame-pointer link: ", reached_start, " of ", taken,
            " stacks reach the thread's start, ", guessed, " through a recovered rbp; unwind and",
            " resolve, fastest: cold ", cold_ns / 1000, " us, warm ", warm_ns / 1000, " us");
    CHECK(taken > 0);
    b.th.join();
    CHECK(b.ret == 0);
    CHECK(b.end_ns - b.start_ns >= 300 * kNsPerMs);
  }

  TEST_CASE("a -O0 frame whose sp moves (alloca) is unwound through the proven scan, never the prologue's slot") {
    static Init init;
    REQUIRE(snapshot_unwinder_problem().empty());
    Timed t{100};
    Blocked b(uvstall_snap_nanosleep, &t, uvstall_snapfp_alloca_outer);
    REQUIRE(wait_blocked(b, {SYS_nanosleep, SYS_clock_nanosleep}));
    Snapshot snap;
    REQUIRE(take_snapshot(b.tid.load(), &snap));
    const Stack s = unwind(snap);
    INFO(describe(s));
    INFO("first guessed frame: ", s.stats.first_guessed_frame);
    const int outer =
        fp_chain_outer(s, "uvstall_snapfp_alloca_middle", "uvstall_snapfp_alloca_outer");
    CHECK(outer > 0);
    if (s.stats.rbp_guesses > 0) CHECK(s.stats.first_guessed_frame <= outer);
    b.th.join();
    CHECK(b.ret == 0);
    CHECK(b.end_ns - b.start_ns >= 100 * kNsPerMs);
  }

  TEST_CASE("a small window cuts the stack where it ends: fewer frames, all right") {
    static Init init;
    REQUIRE(snapshot_unwinder_problem().empty());
    Timed t{100};
    Blocked b(uvstall_snap_nanosleep, &t);
    REQUIRE(wait_blocked(b, {SYS_nanosleep, SYS_clock_nanosleep}));
    Snapshot full, cut;
    REQUIRE(take_snapshot(b.tid.load(), &full));
    REQUIRE(take_snapshot(b.tid.load(), &cut, 256));
    CHECK(cut.stack_bytes == 256);
    const Stack whole = unwind(full);
    const Stack part = unwind(cut);
    INFO(describe(part));
    CHECK(part.frames.size() >= 1);
    REQUIRE(part.frames.size() < whole.frames.size());
    for (size_t i = 0; i < part.pcs.size(); ++i) CHECK(part.pcs[i] == whole.pcs[i]);
    CHECK(std::string(part.stats.stop) == "memory outside the stack window and every module");
    CHECK(part.stats.refused_reads > 0);
    b.th.join();
    CHECK(b.ret == 0);
  }

  TEST_CASE("code loaded after the tables were read is found in /proc/self/maps; JIT code is not") {
    static Init init;
    REQUIRE(snapshot_unwinder_problem().empty());
    // A copy of the test plugin under a new name: an object surely loaded
    // after init (the modules tests may have loaded the plugin itself).
    const char *plugin = std::getenv("UVSTALL_TEST_PLUGIN");
    REQUIRE(plugin != nullptr);
    char dir[] = "/tmp/uvstall-discover-XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    const std::string copy = std::string(dir) + "/libdiscovered.so";
    {
      std::ifstream in(plugin, std::ios::binary);
      std::ofstream out(copy, std::ios::binary);
      out << in.rdbuf();
    }
    void *lib = dlopen(copy.c_str(), RTLD_NOW | RTLD_LOCAL);
    REQUIRE(lib != nullptr);
    const uintptr_t fn = uintptr_t(dlsym(lib, "uvstall_test_plugin_fn"));
    REQUIRE(fn != 0);
    // A stack at the function's first instruction whose return address is
    // 0: one frame, then the end, once the function's CFI is known.
    const uintptr_t words[4] = {0, 0, 0, 0};
    StackCopy c;
    c.sp = uintptr_t(words);
    c.pc = fn;
    c.bytes = reinterpret_cast<const unsigned char *>(words);
    c.len = sizeof words;
    uintptr_t pcs[8];
    UnwindStats st;
    CHECK(unwind_stack(c, pcs, 8, &st) == 1);
    CHECK(pcs[0] == fn);
    CHECK(st.discovered == 1);
    CHECK_FALSE(st.unknown_code);
    CHECK(std::string(st.stop) == "end of stack");
    // Known from now on: no second discovery.
    CHECK(unwind_stack(c, pcs, 8, &st) == 1);
    CHECK(st.discovered == 0);
    CHECK(std::string(st.stop) == "end of stack");
    // Anonymous executable memory has no tables: the stack ends at its pc.
    void *jit = mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(jit != MAP_FAILED);
    static_cast<unsigned char *>(jit)[0] = 0xc3;  // ret
    c.pc = uintptr_t(jit);
    CHECK(unwind_stack(c, pcs, 8, &st) == 1);
    CHECK(st.discovered == 0);
    CHECK(st.unknown_code);
    CHECK(std::string(st.stop) == "no unwind info for a pc");
    munmap(jit, 4096);
    dlclose(lib);
    // The unloaded object's tables stay until a refresh (as documented).
    snapshot_unwinder_refresh();
    std::remove(copy.c_str());
    rmdir(dir);
  }

  TEST_CASE("a busy thread is refused as running, and so is the calling thread") {
    static Init init;
    std::atomic<bool> stop{false};
    Blocked b(uvstall_snap_busy, &stop);
    b.release = [&stop] { stop = true; };
    while (b.tid.load() == 0) usleep(100);
    usleep(20000);
    Snapshot snap;
    int refused = 0;
    for (int i = 0; i < 50; ++i) {
      if (!take_snapshot(b.tid.load(), &snap)) {
        ++refused;
        CHECK(std::string(snap.refusal) == "thread running");
      }
    }
    stop = true;
    b.th.join();
    CHECK(refused == 50);
    CHECK_FALSE(take_snapshot(gettid_(), &snap));
    CHECK(std::string(snap.refusal) == "own thread");
  }
}
