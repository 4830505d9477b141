// Detection benchmark: real stalls of known length on a real libuv loop at
// threshold 100 ms / interval 20 ms. For each: when the stack was captured
// and when the record reached on_report (both from the true start of the
// stall), the duration error of stall_end, and the signal handler's time
// (cold = first capture of the thread, warm = later ones).
//
// Usage: uvstall-bench-detect [REPETITIONS] [--frames N]
// Prints a table (median and min..max over the repetitions) in Markdown.
#include <uvstall/uvstall.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<uint64_t, nlohmann::json>> records;
};

void on_report(const char *json, size_t len, void *arg) {
  auto *seen = static_cast<Seen *>(arg);
  const uint64_t t = now_ns();
  auto j = nlohmann::json::parse(std::string(json, len));
  std::lock_guard<std::mutex> lock(seen->mu);
  seen->records.emplace_back(t, std::move(j));
  seen->cv.notify_all();
}

extern "C" __attribute__((noinline)) void bench_busy(uint64_t until) {
  volatile uint64_t n = 0;
  while (now_ns() < until) n = n + 1;
}

// Recursion to a given depth, then a busy wait: stacks of known depth.
extern "C" __attribute__((noinline)) void bench_deep(int depth, uint64_t until) {
  if (depth > 0) {
    bench_deep(depth - 1, until);
    __asm__ volatile("" ::: "memory");  // not a tail call
    return;
  }
  bench_busy(until);
}

struct Run {
  double stall_ms;
  uint64_t start_ns, end_ns;
};

struct Ctx {
  uv_loop_t *loop;
  std::vector<Run> *runs;
  std::vector<double> lengths;
  size_t next = 0;
  int depth = 0;
};

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string stat(const std::vector<double> &v, const char *fmt = "%.1f") {
  if (v.empty()) return "—";
  char a[32], b[32], c[32];
  std::snprintf(a, sizeof a, fmt, median(v));
  std::snprintf(b, sizeof b, fmt, *std::min_element(v.begin(), v.end()));
  std::snprintf(c, sizeof c, fmt, *std::max_element(v.begin(), v.end()));
  return std::string(a) + " (" + b + "…" + c + ")";
}

}  // namespace

int main(int argc, char **argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 5;
  int depth = 0;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--frames") == 0) depth = std::atoi(argv[i + 1]);
  if (reps < 1) reps = 1;
  const std::vector<double> lengths = {30, 100, 300, 1000};

  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.max_stalls_per_minute = 0;
  uvstall_configure(&p);

  uv_loop_t loop;
  uv_loop_init(&loop);
  Seen seen;
  uvstall_options_t o;
  uvstall_options_init(&o);
  o.interval_ms = 20;
  o.threshold_ms = 100;
  o.max_frames = depth > 0 ? 256 : 64;
  o.on_report = on_report;
  o.report_arg = &seen;
  uvstall_t *w;
  if (int rc = uvstall_start(&loop, &o, &w)) {
    std::fprintf(stderr, "uvstall_start: %s\n", uvstall_strerror(rc));
    return 1;
  }
  std::vector<Run> runs;
  Ctx ctx{&loop, &runs, {}, 0, depth};
  for (int r = 0; r < reps; ++r)
    for (double l : lengths) ctx.lengths.push_back(l);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &ctx;
  // One stall every 1.5 s (or stall + 500 ms), on the loop thread.
  uv_timer_start(&t, [](uv_timer_t *timer) {
    auto *c = static_cast<Ctx *>(timer->data);
    if (c->next == c->lengths.size()) {
      uv_timer_stop(timer);
      uv_close(reinterpret_cast<uv_handle_t *>(timer), nullptr);
      return;
    }
    const double ms = c->lengths[c->next++];
    Run run{ms, now_ns(), 0};
    const uint64_t until = run.start_ns + uint64_t(ms * 1e6);
    if (c->depth > 0) bench_deep(c->depth, until); else bench_busy(until);
    run.end_ns = now_ns();
    c->runs->push_back(run);
    uv_timer_set_repeat(timer, uint64_t(ms) + 500);
  }, 300, 1500);
  uv_run(&loop, UV_RUN_DEFAULT);
  uvstall_stop(w);
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);

  // Match records to runs by time.
  std::vector<std::pair<uint64_t, nlohmann::json>> recs;
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    recs = seen.records;
  }
  std::printf("| stall | reported | stack captured after start (ms) | record delivered after start (ms) | duration error (ms) | handler µs |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  std::vector<double> cold, warm;
  bool first_capture = true;
  for (double l : lengths) {
    std::vector<double> capture, delivered, error;
    int reported = 0, total = 0;
    for (const auto &run : runs) {
      if (run.stall_ms != l) continue;
      ++total;
      // The first sample of a stall that began in this run.
      for (size_t i = 0; i < recs.size(); ++i) {
        const auto &[t, j] = recs[i];
        if (j["type"] != "stall" || j["sample"] != 0 || t < run.start_ns || t > run.end_ns + 200000000)
          continue;
        ++reported;
        capture.push_back(j["blocked_ms"].get<double>());
        delivered.push_back(double(t - run.start_ns) / 1e6);
        if (j.contains("handler_us")) (first_capture ? cold : warm).push_back(j["handler_us"]);
        first_capture = false;
        for (size_t k = i + 1; k < recs.size(); ++k) {
          if (recs[k].second["type"] == "stall_end" &&
              recs[k].second["stall_id"] == j["stall_id"]) {
            error.push_back(recs[k].second["duration_ms"].get<double>() -
                            double(run.end_ns - run.start_ns) / 1e6);
            break;
          }
        }
        break;
      }
    }
    std::printf("| %.0f ms | %d of %d | %s | %s | %s | |\n", l, reported, total,
                stat(capture).c_str(), stat(delivered).c_str(), stat(error, "%.2f").c_str());
  }
  std::printf("| handler (%d-deep stack) | | | | | cold %s, warm %s |\n", depth > 0 ? depth : 0,
              stat(cold).c_str(), stat(warm).c_str());
  return 0;
}
