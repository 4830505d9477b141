// Test harness (see harness.h).
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

extern char **environ;
// The sanitizer allocator's own count (malloc is not glibc's under ASan).
extern "C" size_t __sanitizer_get_current_allocated_bytes() __attribute__((weak));

namespace uvt {

std::atomic<uint64_t> g_culprit_end_ns{0};
std::atomic<uint64_t> g_culprit_start_ns{0};

void Collector::on_report(const char *json, size_t len, void *arg) {
  auto *self = static_cast<Collector *>(arg);
  const uint64_t arrived = now_ns();
  Record r{arrived, nlohmann::json::parse(std::string(json, len))};
  int block = 0;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    if (!self->blocked_once_ && self->block_first_stall_ms.load() > 0 &&
        r.j.value("type", "") == "stall") {
      self->blocked_once_ = true;
      block = self->block_first_stall_ms.load();
    }
  }
  if (block > 0) std::this_thread::sleep_for(std::chrono::milliseconds(block));
  std::lock_guard<std::mutex> lock(self->mu_);
  self->records_.push_back(std::move(r));
  self->cv_.notify_all();
}

std::vector<Record> Collector::of_type(const std::string &type) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Record> out;
  for (const auto &r : records_)
    if (r.j.value("type", "") == type) out.push_back(r);
  return out;
}

std::vector<Record> Collector::all() const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_;
}

bool Collector::wait_for(const std::function<bool(const std::vector<Record> &)> &pred,
                         int timeout_ms) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return pred(records_); });
}

bool Collector::wait_count(const std::string &type, size_t n, int timeout_ms) const {
  return wait_for(
      [&](const std::vector<Record> &rs) {
        size_t c = 0;
        for (const auto &r : rs) c += r.j.value("type", "") == type;
        return c >= n;
      },
      timeout_ms);
}

int frame_index(const nlohmann::json &stall, const std::string &symbol) {
  if (!stall.contains("frames")) return -1;
  int i = 0;
  for (const auto &f : stall["frames"]) {
    if (f["symbol"].is_string() && f["symbol"].get<std::string>() == symbol) return i;
    ++i;
  }
  return -1;
}

bool frames_name(const nlohmann::json &stall, const std::string &symbol) {
  return frame_index(stall, symbol) >= 0;
}

bool culprit_named(const nlohmann::json &stall, const std::string &symbol) {
  if (frames_name(stall, symbol)) return true;
  if (!kTsan || !stall.contains("frames") || stall["frames"].empty()) return false;
  // (A frame in no object at all, after TSan's, is what libunwind made of
  // the runtime's stack past its frames — seen once: a pc of 0x7f1200000000
  // after __tsan::TraceSwitch — not a frame of the program.)
  if (stall["frames"][0]["module"].is_null()) return false;
  for (const auto &f : stall["frames"]) {
    if (f["module"].is_null()) continue;
    const std::string module = f["module"].get<std::string>();
    if (module.find("/libtsan.so") == std::string::npos) return false;
  }
  std::fprintf(stderr, "note: ThreadSanitizer ran the handler inside its runtime; stack: %s\n",
               stall["frames"].dump().c_str());
  return true;
}

struct WatchedLoop::Task {
  uv_timer_t timer;
  std::function<void()> fn;
};

WatchedLoop::WatchedLoop(std::function<void(uvstall_options_t *)> tweak) {
  uv_loop_init(&loop);
  uvstall_options_t o;
  uvstall_options_init(&o);
  col.attach(&o);
  if (tweak) tweak(&o);
  start_rc = uvstall_start(&loop, &o, &watch);
}

void WatchedLoop::after(int delay_ms, std::function<void()> fn) {
  auto *t = new Task;
  t->fn = std::move(fn);
  t->timer.data = t;
  uv_timer_init(&loop, &t->timer);
  uv_timer_start(&t->timer, [](uv_timer_t *timer) {
    auto *task = static_cast<Task *>(timer->data);
    task->fn();
    uv_close(reinterpret_cast<uv_handle_t *>(timer), nullptr);
  }, uint64_t(delay_ms), 0);
  tasks_.push_back(t);
}

void WatchedLoop::run() { uv_run(&loop, UV_RUN_DEFAULT); }

void WatchedLoop::stop() {
  if (watch != nullptr) {
    uvstall_stop(watch);
    watch = nullptr;
  }
  uv_run(&loop, UV_RUN_NOWAIT);
}

WatchedLoop::~WatchedLoop() {
  stop();
  uv_run(&loop, UV_RUN_DEFAULT);  // finish closing the tasks' timers
  uv_loop_close(&loop);
  for (auto *t : tasks_) delete t;
}

void on_thread(const std::function<void()> &body) {
  std::thread t(body);
  t.join();
}

pid_t spawn(const std::vector<std::string> &args, const posix_spawn_file_actions_t *fa) {
  std::vector<char *> argv;
  for (const auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid;
  return posix_spawn(&pid, argv[0], fa, nullptr, argv.data(), environ) == 0 ? pid : -1;
}

uint64_t pure_spin_rounds(int ms) {
  // Timed in CPU time of this thread: a run the scheduler interrupts does
  // not look slower, so on a loaded machine the spin can only come out
  // longer than asked for, not shorter.
  const auto cpu_ns = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
  };
  const auto time_ns = [&](uint64_t rounds) {
    const uint64_t t0 = cpu_ns();
    uvstall_test_pure_spin(rounds);
    return cpu_ns() - t0;
  };
  uint64_t rounds = 1u << 16, took = 0;
  while ((took = time_ns(rounds)) < 20000000u) rounds *= 2;
  for (int i = 0; i < 2; ++i) took = std::min(took, time_ns(rounds));
  return uint64_t(double(rounds) * ms * 1e6 / double(took));
}

Spawned spawn_and_wait(const std::string &exe, const std::vector<std::string> &args) {
  Spawned r;
  char dir_tmpl[] = "/tmp/uvstall-child-XXXXXX";
  if (mkdtemp(dir_tmpl) == nullptr) return r;
  const std::string dir = dir_tmpl;
  const std::string out_path = dir + "/out", err_path = dir + "/err";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT, 0644);
  std::vector<std::string> all = {exe};
  all.insert(all.end(), args.begin(), args.end());
  const pid_t pid = spawn(all, &fa);
  posix_spawn_file_actions_destroy(&fa);
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) != pid) return r;
  r.ran = true;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  unlink(out_path.c_str());
  unlink(err_path.c_str());
  rmdir(dir.c_str());
  return r;
}

size_t open_fds() {
  size_t n = 0;
  DIR *d = opendir("/proc/self/fd");
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

size_t heap_in_use() {
  if (__sanitizer_get_current_allocated_bytes != nullptr)
    return __sanitizer_get_current_allocated_bytes();
  const struct mallinfo2 m = mallinfo2();  // all arenas
  return m.uordblks + m.hblkhd;
}

size_t rss_bytes() {
  unsigned long size = 0, resident = 0;
  FILE *f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  if (std::fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * size_t(sysconf(_SC_PAGESIZE));
}

std::string slurp(const std::string &path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ChildResult run_child(const char *exe, const std::vector<std::string> &args) {
  ChildResult r;
  const Spawned sp = spawn_and_wait(exe, args);
  if (!sp.ran) {
    r.out = std::string("could not run ") + exe;
    return r;
  }
  r.status = sp.status;
  r.out = sp.out;
  std::istringstream err(sp.err);
  std::string line;
  while (std::getline(err, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) r.other_err.push_back(line);
    else r.records.push_back(j);
  }
  return r;
}

std::vector<nlohmann::json> of_type(const std::vector<nlohmann::json> &records,
                                    const std::string &type) {
  std::vector<nlohmann::json> v;
  for (const auto &j : records)
    if (j["type"] == type) v.push_back(j);
  return v;
}

}  // namespace uvt

namespace {
void mark_start() { uvt::g_culprit_start_ns.store(uvt::now_ns()); }
void mark_end() { uvt::g_culprit_end_ns.store(uvt::now_ns()); }
}  // namespace

UVSTALL_TEST_CULPRIT void uvstall_test_busy(int ms) {
  mark_start();
  const uint64_t until = uvt::now_ns() + uint64_t(ms) * 1000000u;
  volatile uint64_t spins = 0;
  while (uvt::now_ns() < until) spins = spins + 1;
  mark_end();
}

UVSTALL_TEST_CULPRIT void uvstall_test_deep_busy(int depth, int ms) {
  volatile char pad[1024];  // this frame's share of the stack
  pad[0] = char(depth);
  if (depth > 0) {
    uvstall_test_deep_busy(depth - 1, ms);
  } else {
    uvstall_test_busy(ms);
  }
  pad[1] = pad[0];  // after the call: no tail call, the frame stays
}

UVSTALL_TEST_CULPRIT void uvstall_test_sleep(int ms) {
  mark_start();
  // Absolute deadline in a loop: the capture signal interrupts
  // clock_nanosleep with EINTR (see the header's note on EINTR).
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += long(ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec += 1;
    t.tv_nsec -= 1000000000L;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, nullptr) != 0) {
  }
  mark_end();
}

UVSTALL_TEST_CULPRIT void uvstall_test_pipe_read(int fd) {
  mark_start();
  char c;
  while (read(fd, &c, 1) < 0) {
  }
  mark_end();
}

UVSTALL_TEST_CULPRIT void uvstall_test_mutex_lock(std::mutex *m) {
  mark_start();
  m->lock();
  m->unlock();
  mark_end();
}

UVSTALL_TEST_CULPRIT void uvstall_test_masked_busy(int sig, int masked_ms, int then_ms) {
  mark_start();
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  const uint64_t until = uvt::now_ns() + uint64_t(masked_ms) * 1000000u;
  volatile uint64_t spins = 0;
  while (uvt::now_ns() < until) spins = spins + 1;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);  // the pending capture runs here
  const uint64_t until2 = uvt::now_ns() + uint64_t(then_ms) * 1000000u;
  while (uvt::now_ns() < until2) spins = spins + 1;
  mark_end();
}

UVSTALL_TEST_CULPRIT uint64_t uvstall_test_pure_spin(uint64_t iterations) {
  mark_start();
  uint64_t x = iterations;
  for (uint64_t i = 0; i < iterations; ++i) {
    x = x * 6364136223846793005u + 1442695040888963407u;  // an LCG step
    asm volatile("" : "+r"(x));  // keeps each step, in a register
  }
  mark_end();
  return x;
}
