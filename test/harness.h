// Test harness for real stalls on real libuv loops: culprit functions that
// block in the classic ways, a collector of the records uvstall delivers
// (with their arrival time), and a loop runner. Culprits are exported and
// never inlined so their names show up in the captured frames.
#pragma once

#include <spawn.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>
#include <uvstall/uvstall.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#define UVSTALL_TEST_CULPRIT extern "C" __attribute__((noinline, visibility("default")))

// ThreadSanitizer and the capture signal. TSan puts its own handler in front
// of every handler the program installs, and runs ours either at once, when
// the signal finds the thread inside a call TSan marks as blocking (sleep,
// usleep, nanosleep, pause, epoll_wait, ...), or else later, with the context
// saved at arrival, when the thread next passes one of TSan's interceptors
// or atomic operations. So under TSan a loop thread that, while it stalls,
// neither passes one nor sits in a "blocking" call runs our handler only
// after the stall: every capture requested during the stall times out (the
// stack TSan delivers afterwards answers the first request, which the next
// sample has superseded, so it is ignored). That is the case for a wait in
// a call GCC 12's libtsan does not intercept (clock_nanosleep) or intercepts
// without the blocking mark (read, pthread_mutex_lock), and for a loop of
// pure arithmetic. A busy loop that calls the clock (uvstall_test_busy) is
// captured within microseconds. A thread blocked in a system call needs no
// handler at all: the sentinel snapshots its stack (src/snapshot.h), under
// TSan too. Under TSan only, tests of pure arithmetic expect a clean
// "timeout" (no stack, no crash, the stall and its stall_end still reported
// on time) instead of a stack.
#if defined(__SANITIZE_THREAD__)
#define UVT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UVT_TSAN 1
#endif
#endif
#ifndef UVT_TSAN
#define UVT_TSAN 0
#endif

namespace uvt {

// Built with ThreadSanitizer (see above).
constexpr bool kTsan = UVT_TSAN != 0;

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

inline pid_t tid() { return pid_t(syscall(SYS_gettid)); }

// Set by each culprit when it returns: a record that arrived before this
// was delivered while the loop was still blocked.
extern std::atomic<uint64_t> g_culprit_end_ns;
// Set by each culprit when it is entered: with the end, how long the loop
// was really blocked.
extern std::atomic<uint64_t> g_culprit_start_ns;

// One delivered record.
struct Record {
  uint64_t arrived_ns;
  nlohmann::json j;
};

// Collects records through on_report (called on uvstall's writer thread).
class Collector {
 public:
  static void on_report(const char *json, size_t len, void *arg);
  void attach(uvstall_options_t *o) {
    o->on_report = &Collector::on_report;
    o->report_arg = this;
  }
  std::vector<Record> of_type(const std::string &type) const;
  std::vector<Record> all() const;
  // Waits until `pred(records)` holds, up to timeout_ms. Returns pred's value.
  bool wait_for(const std::function<bool(const std::vector<Record> &)> &pred,
                int timeout_ms) const;
  bool wait_count(const std::string &type, size_t n, int timeout_ms) const;

  // When set, the callback blocks this long on the first "stall" record.
  std::atomic<int> block_first_stall_ms{0};

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Record> records_;
  bool blocked_once_ = false;
};

// True if any frame of the stall record names `symbol`.
bool frames_name(const nlohmann::json &stall, const std::string &symbol);
// frames_name, except that under ThreadSanitizer a stack that lies wholly
// inside libtsan's own runtime also passes (with a note on stderr): TSan
// may run our handler while the thread is inside its runtime (seen:
// __tsan::TraceSwitch), whose frames the unwinder cannot step out of. A
// stack with any frame in an object other than libtsan must still name
// `symbol`.
bool culprit_named(const nlohmann::json &stall, const std::string &symbol);
// Index of the first frame naming `symbol`, or -1.
int frame_index(const nlohmann::json &stall, const std::string &symbol);

// A libuv loop on the calling thread, watched by uvstall with a collector.
class WatchedLoop {
 public:
  explicit WatchedLoop(std::function<void(uvstall_options_t *)> tweak = {});
  ~WatchedLoop();
  // Runs fn on the loop (in a timer callback) after `delay_ms`.
  void after(int delay_ms, std::function<void()> fn);
  // Runs the loop until every scheduled callback has run.
  void run();
  // Stops the watch now (idempotent) and lets libuv close its handles.
  void stop();

  uv_loop_t loop;
  uvstall_t *watch = nullptr;
  Collector col;
  int start_rc = 0;

 private:
  struct Task;
  std::vector<Task *> tasks_;
};

// Runs `body` on a new thread and joins it.
void on_thread(const std::function<void()> &body);

// Starts the program args[0] with these arguments, the file actions and our
// environment. Returns its pid, or -1.
pid_t spawn(const std::vector<std::string> &args, const posix_spawn_file_actions_t *fa);

// About how many rounds of uvstall_test_pure_spin take `ms` of CPU time
// (the fastest of three runs of at least 20 ms): on a loaded machine the
// spin takes longer than `ms`, not shorter.
uint64_t pure_spin_rounds(int ms);

// A program run to its end with its standard output and error captured.
struct Spawned {
  bool ran = false;   // false: it could not be started
  int status = -1;    // exit status, or 128 + signal
  std::string out, err;
};
Spawned spawn_and_wait(const std::string &exe, const std::vector<std::string> &args);

// This process's resources, for "flat before and after" checks.
size_t open_fds();     // entries of /proc/self/fd
size_t heap_in_use();  // bytes malloc handed out and did not get back
                       // (the sanitizer allocator's count under ASan)
size_t rss_bytes();    // resident set size (/proc/self/statm)

// A host program run in a process of its own, its stdout and stderr kept.
struct ChildResult {
  int status = -1;  // exit status, or 128 + signal; -1: could not run it
  std::string out;
  std::vector<nlohmann::json> records;  // JSON lines of stderr
  std::vector<std::string> other_err;   // non-JSON stderr lines
};
ChildResult run_child(const char *exe, const std::vector<std::string> &args);
// The records of one type, in order.
std::vector<nlohmann::json> of_type(const std::vector<nlohmann::json> &records,
                                    const std::string &type);
std::string slurp(const std::string &path);

}  // namespace uvt

// Culprits: each blocks its thread for real.
UVSTALL_TEST_CULPRIT void uvstall_test_busy(int ms);
// Recurses `depth` frames of about 1 KiB of stack each, then runs
// uvstall_test_busy(ms) at the bottom: a deep busy stack.
UVSTALL_TEST_CULPRIT void uvstall_test_deep_busy(int depth, int ms);
UVSTALL_TEST_CULPRIT void uvstall_test_sleep(int ms);
UVSTALL_TEST_CULPRIT void uvstall_test_pipe_read(int fd);
UVSTALL_TEST_CULPRIT void uvstall_test_mutex_lock(std::mutex *m);
UVSTALL_TEST_CULPRIT void uvstall_test_masked_busy(int sig, int masked_ms, int then_ms);
// Spins `iterations` rounds of register-only arithmetic: no call, no memory
// access, nothing a sanitizer instruments. Returns the result so the loop is
// kept.
UVSTALL_TEST_CULPRIT uint64_t uvstall_test_pure_spin(uint64_t iterations);
