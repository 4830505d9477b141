// Detection benchmark: real stalls of known length on a real libuv loop at
// threshold 100 ms / interval 20 ms. For each: when the stack was captured
// and when the record reached on_report (both from the true start of the
// stall), the duration error of stall_end, and the signal handler's time
// (cold = first capture of the thread, warm = later ones).
//
// Usage: uvstall-bench-detect [REPETITIONS] [--frames N] [--lengths 30,100,...]
//        uvstall-bench-detect REPETITIONS --handler N
// Prints a table (median and min..max over the repetitions) in Markdown.
// --handler N: capture cost only. Each repetition runs a fresh thread with
// its own loop and watch (max_frames N) and three 150 ms stalls at a stack
// depth of N frames; the first capture on a thread is cold (its copy buffer
// and stack pages not yet in the caches), the later ones warm. handler_us
// is the handler's copy of registers and stack window; the sentinel unwinds
// the copy afterwards, off the loop thread.
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

#include <thread>

#include <nlohmann/json.hpp>

#include "bench.h"

namespace {

using bench::now_ns;

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

// One thread, one loop, one watch with max_frames = frames, `stalls` stalls
// of 150 ms at that depth. Returns the stall records in order.
// The watch every run uses: threshold 100 ms, interval 20 ms, records to
// `seen`.
uvstall_t *start_watch(uv_loop_t *loop, Seen *seen, int max_frames) {
  uvstall_options_t o;
  uvstall_options_init(&o);
  o.interval_ms = 20;
  o.threshold_ms = 100;
  o.max_frames = uint32_t(max_frames);
  o.on_report = on_report;
  o.report_arg = seen;
  return bench::start_or_exit(loop, o);
}

std::vector<nlohmann::json> handler_thread(int frames, int stalls) {
  std::vector<nlohmann::json> out;
  std::thread([&] {
    uv_loop_t loop;
    uv_loop_init(&loop);
    Seen seen;
    uvstall_t *w = start_watch(&loop, &seen, frames);
    struct S { int left, depth; } st{stalls, frames};
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &st;
    uv_timer_start(&t, [](uv_timer_t *timer) {
      auto *s = static_cast<S *>(timer->data);
      if (s->left-- == 0) {
        uv_close(reinterpret_cast<uv_handle_t *>(timer), nullptr);
        return;
      }
      // The recursion adds its own frames to those below the timer callback.
      bench_deep(s->depth, now_ns() + 150000000u);
    }, 100, 300);
    uv_run(&loop, UV_RUN_DEFAULT);
    uvstall_stop(w);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    std::lock_guard<std::mutex> lock(seen.mu);
    for (auto &[t, j] : seen.records)
      if (j["type"] == "stall" && j["sample"] == 0) out.push_back(j);
  }).join();
  return out;
}

int handler_main(int reps, int frames) {
  bench::configure_for_bench();
  std::vector<double> first, cold, warm, captured;
  for (int r = 0; r < reps; ++r) {
    const auto recs = handler_thread(frames, 3);
    for (size_t i = 0; i < recs.size(); ++i) {
      if (!recs[i].contains("handler_us")) continue;
      const double us = recs[i]["handler_us"].get<double>();
      if (r == 0 && i == 0) first.push_back(us);
      else (i == 0 ? cold : warm).push_back(us);
      captured.push_back(double(recs[i]["frames"].size()));
    }
  }
  std::printf("| %d | %s | %s | %s | %s |\n", frames, stat(first).c_str(), stat(cold).c_str(),
              stat(warm).c_str(), stat(captured, "%.0f").c_str());
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 5;
  int depth = 0;
  std::vector<double> lengths = {30, 100, 300, 1000, 5000};
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--frames") == 0) depth = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--handler") == 0) return handler_main(reps < 1 ? 1 : reps, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--lengths") == 0) {
      lengths = bench::parse_list(argv[i + 1]);
    }
  }
  if (reps < 1) reps = 1;

  bench::configure_for_bench();

  uv_loop_t loop;
  uv_loop_init(&loop);
  Seen seen;
  uvstall_t *w = start_watch(&loop, &seen, depth > 0 ? 256 : 64);
  std::vector<Run> runs;
  Ctx ctx{&loop, &runs, {}, 0, depth};
  for (int r = 0; r < reps; ++r)
    for (double l : lengths) ctx.lengths.push_back(l);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &ctx;
  // One stall, then 500 ms of a free loop before the next (a one-shot timer
  // restarted after each stall, so a long stall never makes the next one
  // follow at once), on the loop thread.
  static uv_timer_cb step;
  step = [](uv_timer_t *timer) {
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
    uv_timer_start(timer, step, 500, 0);
  };
  uv_timer_start(&t, step, 300, 0);
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
  std::printf("| stall | reported | stack captured: `blocked_ms` (from uvstall's start bound, at or before the true start: an upper bound) | record delivered after start (ms) | sentinel woke late (ms) | duration error (ms) | within targets (capture ≤ 122 ms, error ≤ 1 ms + 1 %%) | handler µs |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  std::vector<double> cold, warm;
  bool first_capture = true;
  for (double l : lengths) {
    std::vector<double> capture, delivered, error, late;
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
        // How late the sentinel itself woke for this detection: scheduling
        // delay of a busy machine, not uvstall's.
        if (j.contains("thread") && j["thread"].contains("sentinel_late_ms"))
          late.push_back(j["thread"]["sentinel_late_ms"].get<double>());
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
    int cap_ok = 0, err_ok = 0;
    for (double c : capture) cap_ok += c <= 122.0;
    for (double e : error) err_ok += std::fabs(e) <= 1.0 + 0.01 * l;
    std::printf("| %.0f ms | %d of %d | %s | %s | %s | %s | %d/%zu, %d/%zu | |\n", l, reported, total,
                stat(capture).c_str(), stat(delivered).c_str(), stat(late, "%.2f").c_str(),
                stat(error, "%.2f").c_str(),
                cap_ok, capture.size(), err_ok, error.size());
  }
  std::printf("| handler (%d-deep stack) | | | | | | | cold %s, warm %s |\n", depth > 0 ? depth : 0,
              stat(cold).c_str(), stat(warm).c_str());
  return 0;
}
