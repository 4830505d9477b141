// Idle cost and memory benchmark: N threads each run an idle libuv loop
// (blocked in epoll_wait, kept alive by an async handle). Phase 1 measures
// the process without uvstall; then every loop thread starts a watch, and
// phase 2 measures it again. Reported:
//   - wakeups/s of the whole process in each phase (voluntary context
//     switches summed over /proc/self/task/*/status: a thread that blocks
//     and is woken counts one),
//   - CPU time of uvstall's own threads (those that appeared at the first
//     uvstall_start: sentinel and writer) in phase 2, from schedstat (ns),
//     and of the whole process in each phase,
//   - VmRSS before and after the watches started.
//
// Usage: uvstall-bench-idle [--loops N] [--seconds S] [--interval-ms I]
// Prints one JSON object.
#include <uvstall/uvstall.h>

#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench.h"

namespace {

std::set<int> tasks() {
  std::set<int> out;
  if (DIR *d = opendir("/proc/self/task")) {
    while (dirent *e = readdir(d))
      if (e->d_name[0] != '.') out.insert(std::atoi(e->d_name));
    closedir(d);
  }
  return out;
}

long status_field(const std::string &path, const char *key) {
  std::ifstream f(path);
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':')
      return std::atol(line.c_str() + n + 1);
  return 0;
}

long wakeups(const std::set<int> &tids) {
  long sum = 0;
  for (int t : tids)
    sum += status_field("/proc/self/task/" + std::to_string(t) + "/status", "voluntary_ctxt_switches");
  return sum;
}

long long cpu_ns(const std::set<int> &tids) {
  long long sum = 0;
  for (int t : tids) {
    std::ifstream f("/proc/self/task/" + std::to_string(t) + "/schedstat");
    long long run = 0;
    if (f >> run) sum += run;
  }
  return sum;
}

struct Loop {
  uv_loop_t loop;
  uv_async_t async;
  uvstall_t *watch = nullptr;
  uint32_t interval_ms = 20;
  std::atomic<bool> want_watch{false};
};

std::atomic<int> started{0}, watched{0};

}  // namespace

int main(int argc, char **argv) {
  int loops = 1;
  double seconds = 20;
  uint32_t interval_ms = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--loops") == 0) loops = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
    else if (std::strcmp(argv[i], "--interval-ms") == 0) interval_ms = uint32_t(std::atoi(argv[i + 1]));
    else {
      std::fprintf(stderr, "usage: uvstall-bench-idle [--loops N] [--seconds S] [--interval-ms I]\n");
      return 2;
    }
  }
  bench::configure_for_bench();

  std::vector<Loop *> ls;
  for (int i = 0; i < loops; ++i) {
    auto *l = new Loop();
    l->interval_ms = interval_ms;
    ls.push_back(l);
    std::thread([l] {
      uv_loop_init(&l->loop);
      l->async.data = l;
      uv_async_init(&l->loop, &l->async, [](uv_async_t *a) {
        auto *l = static_cast<Loop *>(a->data);
        if (!l->want_watch.load() || l->watch != nullptr) return;
        uvstall_options_t o;
        uvstall_options_init(&o);
        o.interval_ms = l->interval_ms;
        o.on_report = bench::discard_report;
        l->watch = bench::start_or_exit(&l->loop, o);
        ++watched;
      });
      ++started;
      uv_run(&l->loop, UV_RUN_DEFAULT);
    }).detach();
  }
  while (started.load() < loops) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto period = std::chrono::duration<double>(seconds);

  // Phase 1: no uvstall.
  const std::set<int> before = tasks();
  const long rss0 = status_field("/proc/self/status", "VmRSS");
  long w0 = wakeups(before);
  long long c0 = cpu_ns(before);
  std::this_thread::sleep_for(period);
  const double base_wakeups = double(wakeups(before) - w0) / seconds;
  const double base_cpu = double(cpu_ns(before) - c0) / 1e9 / seconds;

  // Phase 2: every loop watched.
  for (Loop *l : ls) {
    l->want_watch = true;
    uv_async_send(&l->async);
  }
  while (watched.load() < loops) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::set<int> all = tasks();
  std::set<int> ours;
  for (int t : all)
    if (before.count(t) == 0) ours.insert(t);
  const long rss1 = status_field("/proc/self/status", "VmRSS");
  w0 = wakeups(all);
  c0 = cpu_ns(all);
  long long o0 = cpu_ns(ours);
  std::this_thread::sleep_for(period);
  const double watch_wakeups = double(wakeups(all) - w0) / seconds;
  const double watch_cpu = double(cpu_ns(all) - c0) / 1e9 / seconds;
  const double ours_cpu = double(cpu_ns(ours) - o0) / 1e9 / seconds;
  std::printf("{\"loops\":%d,\"seconds\":%.1f,\"interval_ms\":%u,\"uvstall_threads\":%zu,"
              "\"wakeups_per_s_base\":%.2f,\"wakeups_per_s_watched\":%.2f,"
              "\"cpu_frac_base\":%.7f,\"cpu_frac_watched\":%.7f,\"cpu_frac_uvstall_threads\":%.7f,"
              "\"rss_kib_base\":%ld,\"rss_kib_watched\":%ld}\n",
              loops, seconds, interval_ms, ours.size(), base_wakeups, watch_wakeups, base_cpu,
              watch_cpu, ours_cpu, rss0, rss1);
  std::fflush(stdout);
  _exit(0);
}
