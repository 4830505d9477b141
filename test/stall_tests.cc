// Real stalls on real libuv loops: busy loop, pure arithmetic, sleep,
// blocking pipe read and contended mutex each produce a stall record while
// the loop is still blocked, naming the culprit, then a stall_end with the
// right duration. (Under ThreadSanitizer the capture of some of them times
// out instead: see harness.h.)
//
// Timing tolerance (noisy 2-core machine): a stall of D ms must be reported
// with D - 2 <= duration_ms <= D + 30. The lower bound is tight because the
// measured start is a lower bound of the true start; the upper bound leaves
// room for scheduling delays of the loop thread after the culprit returns.
// (Precision itself is measured by bench/, not asserted here.)
#include <doctest/doctest.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <dirent.h>
#include <poll.h>
#include <cerrno>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>

#include "harness.h"

using uvt::Record;

namespace {

constexpr double kEarlyMs = 2;
constexpr double kLateMs = 30;

// The stall ids of a run's stall records, in order, without repeats.
std::vector<int64_t> stall_ids(const std::vector<Record> &stalls) {
  std::vector<int64_t> ids;
  for (const auto &r : stalls) {
    const int64_t id = r.j["stall_id"].get<int64_t>();
    if (ids.empty() || ids.back() != id) ids.push_back(id);
  }
  return ids;
}

// What ThreadSanitizer lets the capture of a culprit do (harness.h): a spin
// on the clock is captured by the signal, a wait inside read,
// clock_nanosleep or a mutex by a snapshot (no signal); pure arithmetic
// times out. Outside TSan every culprit is captured.
enum class UnderTsan { kCaptured, kTimesOut };

// The stack of a sample: the culprit named, or under TSan, for a culprit
// that TSan keeps from running our handler, a clean timeout.
void check_capture(const nlohmann::json &stall, const std::string &culprit, UnderTsan tsan) {
  if (uvt::kTsan && tsan == UnderTsan::kTimesOut) {
    CHECK(stall["capture"] == "timeout");
    CHECK(stall["frames"].empty());
    return;
  }
  CHECK(stall["capture"] == "ok");
  CHECK(uvt::culprit_named(stall, culprit));
}

// Checks the one stall of a run: reported during the stall, culprit named,
// further samples of the same stall with growing blocked_ms, stall_end
// within tolerance.
void check_single_stall(const uvt::WatchedLoop &wl, const std::string &culprit,
                        double expected_ms, UnderTsan tsan) {
  REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
  auto stalls = wl.col.of_type("stall");
  auto ends = wl.col.of_type("stall_end");
  REQUIRE(stall_ids(stalls).size() == 1);
  REQUIRE(ends.size() == 1);
  const auto &s = stalls[0].j;
  INFO("stall record: " << s.dump());
  CHECK(s["sample"] == 0);
  check_capture(s, culprit, tsan);
  // Delivered while the culprit was still blocking the loop.
  CHECK(stalls[0].arrived_ns < uvt::g_culprit_end_ns.load());
  CHECK(s["blocked_ms"].get<double>() >= 100.0);
  CHECK(s["blocked_ms"].get<double>() < expected_ms);
  CHECK(s["tid"] == uvt::tid());
  for (size_t i = 1; i < stalls.size(); ++i) {
    CHECK(stalls[i].j["sample"] == i);
    CHECK(stalls[i].j["blocked_ms"].get<double>() > stalls[i - 1].j["blocked_ms"].get<double>());
    check_capture(stalls[i].j, culprit, tsan);
  }
  CHECK(ends[0].j["stall_id"] == s["stall_id"]);
  CHECK(ends[0].j["ended_by"] == "loop");
  // Against how long the culprit really blocked (a pipe or mutex culprit
  // waits for another thread, so it is only about expected_ms).
  const double truth =
      double(uvt::g_culprit_end_ns.load() - uvt::g_culprit_start_ns.load()) / 1e6;
  CHECK(truth == doctest::Approx(expected_ms).epsilon(0.1));
  const double d = ends[0].j["duration_ms"].get<double>();
  CHECK(d >= truth - kEarlyMs);
  CHECK(d <= truth + kLateMs);
}

// The loop's callback blocks in read() on a pipe until another thread
// writes to it, about 300 ms later.
void run_pipe_read_stall(uvt::WatchedLoop &wl) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(350));
    CHECK(write(fds[1], "x", 1) == 1);
  });
  wl.after(50, [&] { uvstall_test_pipe_read(fds[0]); });
  wl.run();
  writer.join();
  close(fds[0]);
  close(fds[1]);
}

std::string temp_dir() {
  char tmpl[] = "/tmp/uvstall-test-XXXXXX";
  return mkdtemp(tmpl);
}

std::vector<nlohmann::json> read_jsonl(const std::string &path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST_SUITE("culprits") {
  TEST_CASE("a busy loop is reported while it runs, with its stack") {
    uvt::WatchedLoop wl;
    REQUIRE(wl.start_rc == 0);
    wl.after(50, [] { uvstall_test_busy(300); });
    wl.run();
    check_single_stall(wl, "uvstall_test_busy", 300, UnderTsan::kCaptured);
    // The culprit is the innermost frame of ours: nothing between it and the
    // interrupted instruction but the clock call it spins on (libc and the
    // vDSO, however many frames they take — kvm-clock's vDSO takes two here
    // — and a sanitizer's interceptor of clock_gettime under ASan or TSan).
    const nlohmann::json stall = wl.col.of_type("stall")[0].j;  // a copy: of_type returns by value
    INFO(stall["frames"].dump());
    const int busy = uvt::frame_index(stall, "uvstall_test_busy");
    REQUIRE(busy >= 0);
    for (int i = 0; i < busy; ++i) {
      const auto &f = stall["frames"][i];
      const std::string module = f["module"].is_string() ? f["module"].get<std::string>() : "";
      const std::string symbol = f["symbol"].is_string() ? f["symbol"].get<std::string>() : "";
      CHECK((module == "[vdso]" || module.find("/libc.so") != std::string::npos ||
             module.find("/libasan.so") != std::string::npos ||
             module.find("/libtsan.so") != std::string::npos ||
             symbol.find("now_ns") != std::string::npos));
    }
  }

  TEST_CASE("the stack window cuts a deep busy stack: correct frames, marked truncated") {
    // 40 frames of ~1 KiB each under a busy loop. With a 4 KiB window the
    // copy holds the innermost few: the record is truncated and every frame
    // it has is the spin, the clock it calls or the recursion; with the
    // default 64 KiB the unwind has the whole recursion and reaches the
    // loop (uv_run). (What lies beyond uv_run may still be cut: under ASan
    // the test runner's frames are large enough to end past the window.)
    for (const uint32_t kb : {4u, 64u}) {
      CAPTURE(kb);
      uvt::WatchedLoop wl([kb](uvstall_options_t *o) { o->stack_window_kb = kb; });
      REQUIRE(wl.start_rc == 0);
      wl.after(50, [] { uvstall_test_deep_busy(40, 250); });
      wl.run();
      REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
      const nlohmann::json s = wl.col.of_type("stall")[0].j;
      INFO(s.dump());
      CHECK(wl.col.of_type("start")[0].j["options"]["stack_window_kb"] == kb);
      check_capture(s, "uvstall_test_busy", UnderTsan::kCaptured);
      if (s["capture"] != "ok") continue;
      const int busy = uvt::frame_index(s, "uvstall_test_busy");
      REQUIRE(busy >= 0);
      int deep = 0;
      for (size_t i = size_t(busy) + 1; i < s["frames"].size(); ++i) {
        const auto &f = s["frames"][i];
        const std::string symbol = f["symbol"].is_string() ? f["symbol"].get<std::string>() : "";
        // GCC may name the recursive calls' target by its local alias
        // (uvstall_test_deep_busy.localalias, seen under ASan).
        if (symbol.rfind("uvstall_test_deep_busy", 0) != 0) break;
        ++deep;
      }
      if (kb == 4) {
        CHECK(s["truncated"] == true);
        CHECK(deep >= 1);
        CHECK(deep < 40);
        // Nothing but the recursion after the spin: no wrong frame.
        CHECK(size_t(busy) + 1 + size_t(deep) == s["frames"].size());
      } else {
        CHECK(deep == 41);
        CHECK(uvt::frame_index(s, "uv_run") > busy + deep);
      }
    }
  }

  TEST_CASE("pure arithmetic, no call at all, is the innermost frame") {
    const uint64_t rounds = uvt::pure_spin_rounds(300);
    uvt::WatchedLoop wl;
    wl.after(50, [&] { uvstall_test_pure_spin(rounds); });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
    auto stalls = wl.col.of_type("stall");
    REQUIRE(stall_ids(stalls).size() == 1);
    const double truth =
        double(uvt::g_culprit_end_ns.load() - uvt::g_culprit_start_ns.load()) / 1e6;
    INFO("stall record: " << stalls[0].j.dump() << ", spun " << truth << " ms");
    // At least two samples (at 100 and 200 ms): under TSan the first
    // request's signal is then stale by the time the spin ends and TSan
    // runs our handler, so no sample can end up "late".
    REQUIRE(truth >= 250);
    CHECK(stalls[0].arrived_ns < uvt::g_culprit_end_ns.load());
    // The samples delivered while it spun (on a loaded machine the spin
    // takes longer, and a sample asked for as it ends shows what came next).
    for (const auto &r : stalls) {
      if (r.arrived_ns >= uvt::g_culprit_end_ns.load()) continue;
      check_capture(r.j, "uvstall_test_pure_spin", UnderTsan::kTimesOut);
      if (!uvt::kTsan) CHECK(uvt::frame_index(r.j, "uvstall_test_pure_spin") == 0);
    }
    const auto end = wl.col.of_type("stall_end")[0].j;
    CHECK(end["ended_by"] == "loop");
    CHECK(end["duration_ms"].get<double>() >= truth - kEarlyMs);
    CHECK(end["duration_ms"].get<double>() <= truth + kLateMs);
  }

  TEST_CASE("a sleep is reported while it sleeps") {
    uvt::WatchedLoop wl;
    wl.after(50, [] { uvstall_test_sleep(300); });
    wl.run();
    check_single_stall(wl, "uvstall_test_sleep", 300, UnderTsan::kCaptured);
    auto s = wl.col.of_type("stall")[0].j;
    // The innermost frame is the system call's wrapper in libc, the stack
    // a snapshot's (no signal was sent), under ThreadSanitizer too.
    CHECK(s["frames"][0]["module"].get<std::string>().find("libc.so") != std::string::npos);
    CHECK(s["capture_via"] == "snapshot");
  }

  TEST_CASE("a blocking read on a pipe is reported while it waits") {
    uvt::WatchedLoop wl;
    run_pipe_read_stall(wl);
    check_single_stall(wl, "uvstall_test_pipe_read", 300, UnderTsan::kCaptured);
  }

  TEST_CASE("a contended mutex is reported while the loop waits for it") {
    std::mutex m;
    std::atomic<bool> held{false};
    std::thread holder([&] {
      std::lock_guard<std::mutex> lock(m);
      held = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(350));
    });
    while (!held) std::this_thread::yield();
    uvt::WatchedLoop wl;
    wl.after(50, [&] { uvstall_test_mutex_lock(&m); });
    wl.run();
    holder.join();
    check_single_stall(wl, "uvstall_test_mutex_lock", 300, UnderTsan::kCaptured);
  }
}

TEST_SUITE("detection") {
  TEST_CASE("an idle loop is never a stall") {
    uvt::WatchedLoop wl;
    wl.after(3000, [] {});
    wl.run();
    uvstall_stats_t st{};
    st.struct_size = sizeof st;
    REQUIRE(uvstall_get_stats(wl.watch, &st) == 0);
    CHECK(st.stalls == 0);
    // 3 s at 20 ms is 150 ticks; the loop may run a little late, never idle.
    CHECK(st.ticks >= 100);
    CHECK(wl.col.of_type("stall").empty());
  }

  TEST_CASE("a stall shorter than the threshold is not reported") {
    uvt::WatchedLoop wl;
    wl.after(50, [] { uvstall_test_busy(60); });
    wl.after(200, [] { uvstall_test_busy(60); });
    wl.after(500, [] {});
    wl.run();
    CHECK(wl.col.of_type("stall").empty());
  }

  TEST_CASE("four loops on four threads: only the stalled one is reported") {
    std::vector<std::thread> threads;
    std::vector<std::unique_ptr<uvt::Collector>> cols;
    std::atomic<pid_t> stalled_tid{0};
    std::vector<std::string> names = {"quiet-1", "quiet-2", "stalls", "quiet-3"};
    std::vector<std::vector<Record>> results(4);
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        uvt::WatchedLoop wl([&](uvstall_options_t *o) { o->loop_name = names[i].c_str(); });
        REQUIRE(wl.start_rc == 0);
        if (i == 2) {
          wl.after(100, [&] {
            stalled_tid = uvt::tid();
            uvstall_test_busy(300);
          });
        }
        wl.after(900, [] {});
        wl.run();
        wl.stop();
        wl.col.wait_count("start", 1, 1000);
        if (i == 2) wl.col.wait_count("stall_end", 1, 2000);
        results[i] = wl.col.all();
      });
    }
    for (auto &t : threads) t.join();
    for (int i = 0; i < 4; ++i) {
      std::vector<Record> stalls;
      for (const auto &r : results[i]) {
        if (r.j["type"] != "stall") continue;
        stalls.push_back(r);
        INFO("stall record: " << r.j.dump());
        CHECK(r.j["loop"] == "stalls");
        CHECK(r.j["tid"] == stalled_tid.load());
        CHECK(uvt::culprit_named(r.j, "uvstall_test_busy"));
      }
      CHECK(stall_ids(stalls).size() == (i == 2 ? 1u : 0u));
    }
  }

  TEST_CASE("a capture that lands late is reported as late, with the stack") {
    const int sig = SIGRTMAX - 3;  // the default capture signal
    // One sample per stall: later samples would ask again while the signal
    // is still blocked, and this test is about the first request.
    uvt::WatchedLoop wl([](uvstall_options_t *o) { o->max_samples_per_stall = 1; });
    wl.after(50, [&] { uvstall_test_masked_busy(sig, 400, 150); });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
    auto stalls = wl.col.of_type("stall");
    REQUIRE(stalls.size() == 2);
    CHECK(stalls[0].j["capture"] == "timeout");
    CHECK(stalls[0].j["frames"].empty());
    CHECK(stalls[0].arrived_ns < uvt::g_culprit_end_ns.load());
    CHECK(stalls[1].j["capture"] == "late");
    CHECK(stalls[1].j["stall_id"] == stalls[0].j["stall_id"]);
    CHECK(uvt::frames_name(stalls[1].j, "uvstall_test_masked_busy"));
    // Taken when the mask was lifted, ~400 ms into the stall.
    CHECK(stalls[1].j["blocked_ms"].get<double>() >= 380);
    const double d = wl.col.of_type("stall_end")[0].j["duration_ms"].get<double>();
    CHECK(d >= 550 - kEarlyMs);
    CHECK(d <= 550 + kLateMs);
  }

  TEST_CASE("several stalls in a row each get their own id and end") {
    uvt::WatchedLoop wl;
    for (int i = 0; i < 3; ++i)
      wl.after(50 + i * 400, [] { uvstall_test_busy(200); });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 3, 3000));
    auto ids = stall_ids(wl.col.of_type("stall"));
    auto ends = wl.col.of_type("stall_end");
    REQUIRE(ids.size() == 3);
    REQUIRE(ends.size() == 3);
    for (int i = 0; i < 3; ++i) {
      CHECK(ends[i].j["stall_id"] == ids[i]);
      if (i > 0) CHECK(ids[i] != ids[i - 1]);
    }
  }
}

// A stall's start is bounded by the later of the loop's last beat and the
// clock the loop published when it last ran a callback of ours (the
// uv_prepare before its poll, the uv_check after it: src/uv_source.cc). At
// 200 ms beats a callback that blocks 100 ms after a beat shows which one.
TEST_SUITE("stall start") {
  // The timer phase: the stall starts where the poll before it returned,
  // not at the beat 100 ms earlier.
  TEST_CASE("a timer callback that blocks long after the last beat is timed from its own start") {
    uvt::WatchedLoop wl([](uvstall_options_t *o) {
      o->interval_ms = 200;
      o->threshold_ms = 400;
    });
    REQUIRE(wl.start_rc == 0);
    // Beats at about 200 ms, 400 ms, ...: the culprit starts about 100 ms
    // after the first and is detected about 600 ms after it.
    wl.after(300, [] { uvstall_test_busy(700); });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
    auto stalls = wl.col.of_type("stall");
    REQUIRE(stall_ids(stalls).size() == 1);
    const auto end = wl.col.of_type("stall_end")[0].j;
    INFO("stall: " << stalls[0].j.dump() << "\nend: " << end.dump());
    CHECK(end["ended_by"] == "loop");
    const double start_ms = uvt::g_culprit_start_ns.load() / 1e6;
    const double truth = (uvt::g_culprit_end_ns.load() - uvt::g_culprit_start_ns.load()) / 1e6;
    // Never after the culprit's start (1 us of the records' rounding), and
    // not the beat's: within the tolerance, not 100 ms early.
    CHECK(end["start_mono_ms"].get<double>() <= start_ms + 0.001);
    CHECK(end["start_mono_ms"].get<double>() >= start_ms - kLateMs);
    const double d = end["duration_ms"].get<double>();
    CHECK(d >= truth - kEarlyMs);
    CHECK(d <= truth + kLateMs);
    // The first sample, taken during the stall, is as old as the culprit.
    const double since_start = (stalls[0].arrived_ns - uvt::g_culprit_start_ns.load()) / 1e6;
    CHECK(stalls[0].j["blocked_ms"].get<double>() <= since_start + kLateMs);
  }

  // The I/O phase: nothing of ours runs between the poll's return and its
  // callbacks, so the stall starts where the loop entered the poll — never
  // after the callback, at most about one interval before it.
  TEST_CASE("an I/O callback that blocks is timed from at most one interval before it") {
    uvt::WatchedLoop wl([](uvstall_options_t *o) {
      o->interval_ms = 200;
      o->threshold_ms = 400;
    });
    REQUIRE(wl.start_rc == 0);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    uv_poll_t readable;
    REQUIRE(uv_poll_init(&wl.loop, &readable, fds[0]) == 0);
    uv_poll_start(&readable, UV_READABLE, [](uv_poll_t *p, int, int) {
      uvstall_test_busy(700);
      uv_close(reinterpret_cast<uv_handle_t *>(p), nullptr);
    });
    // Keeps the loop running after the culprit, so that it ends the stall.
    wl.after(1500, [] {});
    std::thread writer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      CHECK(write(fds[1], "x", 1) == 1);
    });
    wl.run();
    writer.join();
    close(fds[0]);
    close(fds[1]);
    REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
    const auto end = wl.col.of_type("stall_end")[0].j;
    INFO("end: " << end.dump());
    CHECK(end["ended_by"] == "loop");
    const double start_ms = uvt::g_culprit_start_ns.load() / 1e6;
    const double truth = (uvt::g_culprit_end_ns.load() - uvt::g_culprit_start_ns.load()) / 1e6;
    CHECK(end["start_mono_ms"].get<double>() <= start_ms + 0.001);
    const double d = end["duration_ms"].get<double>();
    CHECK(d >= truth - kEarlyMs);
    CHECK(d <= truth + 200 + kLateMs);
  }
}

TEST_SUITE("lifecycle") {
  TEST_CASE("stop during a stall ends it with ended_by stop") {
    uvt::WatchedLoop wl;
    wl.after(50, [&] {
      uvstall_test_busy(300);
      REQUIRE(uvstall_stop(wl.watch) == 0);
      wl.watch = nullptr;
      uvstall_test_busy(100);  // no longer watched: not part of the stall
    });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
    auto s = wl.col.of_type("stall");
    auto e = wl.col.of_type("stall_end");
    REQUIRE(stall_ids(s).size() == 1);
    REQUIRE(e.size() == 1);
    CHECK(e[0].j["ended_by"] == "stop");
    CHECK(e[0].j["duration_ms"].get<double>() >= 300 - kEarlyMs);
    CHECK(e[0].j["duration_ms"].get<double>() <= 300 + kLateMs);
  }

  TEST_CASE("a second start on the same loop is refused, the first keeps working") {
    uvt::WatchedLoop wl;
    uvstall_t *second = nullptr;
    CHECK(uvstall_start(&wl.loop, nullptr, &second) == UVSTALL_EALREADY);
    wl.after(50, [] { uvstall_test_busy(200); });
    wl.run();
    CHECK(wl.col.wait_count("stall_end", 1, 3000));
  }

  TEST_CASE("uv_loop_close with a watch still started is UV_EBUSY, not a crash") {
    uv_loop_t loop;
    uv_loop_init(&loop);
    uvt::Collector col;
    uvstall_options_t o;
    uvstall_options_init(&o);
    col.attach(&o);
    uvstall_t *w = nullptr;
    REQUIRE(uvstall_start(&loop, &o, &w) == 0);
    CHECK(uv_loop_close(&loop) == UV_EBUSY);
    CHECK(uvstall_stop(w) == 0);
    CHECK(uv_loop_close(&loop) == UV_EBUSY);  // closing needs one more loop run
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
  }

  TEST_CASE("stop from another thread is refused") {
    uvt::WatchedLoop wl;
    int rc = 0;
    uvt::on_thread([&] { rc = uvstall_stop(wl.watch); });
    CHECK(rc == UVSTALL_EWRONGTHREAD);
  }

  TEST_CASE("every invalid option gets its error and leaves nothing behind") {
    struct Case {
      const char *what;
      std::function<void(uvstall_options_t *)> set;
      int rc;
    };
    const Case cases[] = {
        {"interval 0", [](auto *o) { o->interval_ms = 0; }, UVSTALL_EINTERVAL},
        {"interval huge", [](auto *o) { o->interval_ms = 3600001; }, UVSTALL_EINTERVAL},
        {"threshold < 2x interval",
         [](auto *o) {
           o->interval_ms = 100;
           o->threshold_ms = 150;
         },
         UVSTALL_ETHRESHOLD},
        {"threshold huge", [](auto *o) { o->threshold_ms = 3600001; }, UVSTALL_ETHRESHOLD},
        {"max_frames 0", [](auto *o) { o->max_frames = 0; }, UVSTALL_EMAXFRAMES},
        {"max_frames 257", [](auto *o) { o->max_frames = 257; }, UVSTALL_EMAXFRAMES},
        {"capture timeout 0", [](auto *o) { o->capture_timeout_ms = 0; },
         UVSTALL_ECAPTURETIMEOUT},
        {"loop name too long",
         [](auto *o) { o->loop_name = "0123456789012345678901234567890123456789012345678901234567890123"; },
         UVSTALL_ELOOPNAME},
        {"unwritable output", [](auto *o) { o->output_path = "/nonexistent-dir/x.jsonl"; },
         UVSTALL_EOUTPUT},
        {"empty output path", [](auto *o) { o->output_path = ""; }, UVSTALL_EOUTPUT},
        {"struct_size 0", [](auto *o) { o->struct_size = 0; }, UVSTALL_ESTRUCT},
    };
    uv_loop_t loop;
    uv_loop_init(&loop);
    for (const auto &c : cases) {
      INFO(c.what);
      uvstall_options_t o;
      uvstall_options_init(&o);
      c.set(&o);
      uvstall_t *w = nullptr;
      CHECK(uvstall_start(&loop, &o, &w) == c.rc);
      CHECK(w == nullptr);
      CHECK(std::string(uvstall_strerror(c.rc)).size() > 10);
    }
    CHECK(uvstall_start(nullptr, nullptr, nullptr) == UVSTALL_EINVAL);
    CHECK(uvstall_stop(nullptr) == UVSTALL_EINVAL);
    // Nothing half-started: no handle of ours on the loop, and a valid start
    // still works.
    int handles = 0;
    uv_walk(&loop, [](uv_handle_t *, void *arg) { ++*static_cast<int *>(arg); }, &handles);
    CHECK(handles == 0);
    uvstall_t *w = nullptr;
    CHECK(uvstall_start(&loop, nullptr, &w) == 0);
    uvstall_process_options_t p;
    uvstall_process_options_init(&p);
    CHECK(uvstall_configure(&p) == UVSTALL_ECONFIGURED);
    CHECK(uvstall_stop(w) == 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
  }

  TEST_CASE("an older caller's smaller options struct gets defaults for the rest") {
    uvt::WatchedLoop wl([](uvstall_options_t *o) {
      // A caller built before report_arg existed would pass this size; the
      // library must ignore (and default) what lies beyond it.
      o->struct_size = offsetof(uvstall_options_t, report_arg) + sizeof(void *);
    });
    CHECK(wl.start_rc == 0);
    REQUIRE(wl.col.wait_count("start", 1, 2000));
    CHECK(wl.col.of_type("start")[0].j["options"]["threshold_ms"] == 100);
  }
}

TEST_SUITE("outputs") {
  TEST_CASE("output to a file, reopened when rotated away") {
    const std::string dir = temp_dir();
    const std::string path = dir + "/stalls.jsonl";
    {
      uvt::WatchedLoop wl([&](uvstall_options_t *o) {
        o->on_report = nullptr;
        o->output_path = path.c_str();
      });
      REQUIRE(wl.start_rc == 0);
      wl.after(50, [] { uvstall_test_busy(200); });
      wl.after(600, [&] {
        // logrotate moves the file away; the next records go to a new one.
        REQUIRE(rename(path.c_str(), (path + ".1").c_str()) == 0);
      });
      wl.after(650, [] { uvstall_test_busy(200); });
      wl.after(1200, [] {});
      wl.run();
    }
    usleep(300000);
    auto types = [](const std::vector<nlohmann::json> &rs) {
      std::vector<std::string> t;
      for (const auto &r : rs)
        if (r["type"] != "stall" || r["sample"] == 0) t.push_back(r["type"]);
      return t;
    };
    auto first = read_jsonl(path + ".1");
    auto second = read_jsonl(path);
    // Before the rename: start, the first stall (its first sample), its end.
    CHECK(types(first) == std::vector<std::string>{"start", "stall", "stall_end"});
    // After: the second stall, its end, and the summary written at stop.
    CHECK(types(second) == std::vector<std::string>{"stall", "stall_end", "summary"});
    REQUIRE(!second.empty());
    CHECK(uvt::culprit_named(second[0], "uvstall_test_busy"));
  }

  TEST_CASE("callback and file together both receive every record") {
    const std::string path = temp_dir() + "/both.jsonl";
    uvt::WatchedLoop wl([&](uvstall_options_t *o) { o->output_path = path.c_str(); });
    wl.after(50, [] { uvstall_test_busy(200); });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
    usleep(100000);
    CHECK(read_jsonl(path).size() == wl.col.all().size());
  }

  TEST_CASE("a callback that blocks for seconds does not delay detection") {
    // A generous capture timeout: this test is about detection while the
    // callback blocks. Under ASan in CI one sample once timed out at the
    // default 50 ms (not reproduced in 9 full runs since, nor in 6 runs of
    // this case alone); the capture's own timing has its own tests.
    uvt::WatchedLoop wl([](uvstall_options_t *o) { o->capture_timeout_ms = 500; });
    // The start record is already delivered; the callback then blocks for
    // 2 s on the first stall record.
    wl.col.block_first_stall_ms = 2000;
    for (int i = 0; i < 3; ++i) wl.after(50 + i * 350, [] { uvstall_test_busy(200); });
    wl.after(1200, [] {});
    wl.run();
    uvstall_stats_t st{};
    st.struct_size = sizeof st;
    uvstall_get_stats(wl.watch, &st);
    // All three detected while the callback was still blocked.
    CHECK(st.stalls == 3);
    CHECK(st.reports_written == 1);  // only the start record got through
    REQUIRE(wl.col.wait_count("stall_end", 3, 6000));
    // Each stall's first stack is taken while it runs; a later sample sent
    // just as the 200 ms loop returns may find the stall over, and says so.
    for (const auto &r : wl.col.of_type("stall")) {
      INFO(r.j.dump());
      if (r.j["sample"] == 0 || r.j["capture"] == "ok")
        CHECK(r.j["capture"] == "ok");
      else
        CHECK(r.j["capture_error"] == "the stall ended before the signal was handled");
    }
  }
}

TEST_SUITE("host") {
  TEST_CASE("C++ exceptions still work, unwound by libgcc, with uvstall loaded") {
    uvt::WatchedLoop wl;
    int caught = 0;
    wl.after(50, [&] {
      uvstall_test_busy(200);  // a capture has run on this thread
      try {
        throw std::runtime_error("host exception");
      } catch (const std::runtime_error &e) {
        caught += std::string(e.what()) == "host exception";
      }
    });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 1, 3000));
    CHECK(caught == 1);
    uvt::on_thread([&] {
      try {
        throw 42;
      } catch (int v) {
        caught += v == 42;
      }
    });
    CHECK(caught == 2);
    // The host's unwinder is still libgcc's: libunwind was loaded privately.
    Dl_info info{};
    void *raise = dlsym(RTLD_DEFAULT, "_Unwind_RaiseException");
    REQUIRE(raise != nullptr);
    REQUIRE(dladdr(raise, &info) != 0);
    // (libgcc_s normally; libasan interposes it in sanitizer builds.)
    INFO("_Unwind_RaiseException comes from " << info.dli_fname);
    CHECK(std::string(info.dli_fname).find("libunwind") == std::string::npos);
    CHECK(dlsym(RTLD_DEFAULT, "_ULx86_64_step") == nullptr);
  }
}

TEST_SUITE("external heartbeat") {
  // A loop that is not libuv: it beats from its own "timer" every 20 ms.
  TEST_CASE("a non-libuv loop beating uvstall_beat gets the same reports") {
    uvt::Collector col;
    uvstall_options_t o;
    uvstall_options_init(&o);
    col.attach(&o);
    uvt::on_thread([&] {
      uvstall_t *h = nullptr;
      REQUIRE(uvstall_start_external(&o, &h) == 0);
      uvstall_t *again = nullptr;
      CHECK(uvstall_start_external(&o, &again) == UVSTALL_EALREADY);
      uv_loop_t loop;
      uv_loop_init(&loop);
      CHECK(uvstall_start(&loop, &o, &again) == UVSTALL_EALREADY);  // same thread
      uv_loop_close(&loop);
      const uint64_t until = uvt::now_ns() + 1200000000ull;
      bool stalled = false;
      while (uvt::now_ns() < until) {
        uvstall_beat(h);
        if (!stalled && uvt::now_ns() + 900000000ull > until) {
          stalled = true;
          uvstall_test_busy(300);
        }
        uvstall_test_sleep(20);
      }
      CHECK(uvstall_stop(h) == 0);
    });
    REQUIRE(col.wait_count("stall_end", 1, 3000));
    auto stalls = col.of_type("stall");
    REQUIRE(stall_ids(stalls).size() == 1);
    CHECK(stalls[0].j["capture"] == "ok");
    CHECK(uvt::culprit_named(stalls[0].j, "uvstall_test_busy"));
    // The end is the first beat after the stall: up to one interval late.
    const double d = col.of_type("stall_end")[0].j["duration_ms"].get<double>();
    CHECK(d >= 300 - kEarlyMs);
    CHECK(d <= 300 + 20 + kLateMs);
  }

  // A loop that polls the wake descriptor and stores its poll clock: the
  // stall's bounds are the loop's, not its beats'.
  TEST_CASE("the wake descriptor is readable at detection; the poll clock bounds the stall") {
    uvt::Collector col;
    uvstall_options_t o;
    uvstall_options_init(&o);
    col.attach(&o);
    uint64_t polled_before = 0, culprit_start = 0, culprit_end = 0, woken_at = 0;
    bool readable = false, drained = false;
    uvt::on_thread([&] {
      uvstall_t *h = nullptr;
      REQUIRE(uvstall_start_external(&o, &h) == 0);
      const int fd = uvstall_external_wake_fd(h);
      REQUIRE(fd >= 0);
      CHECK(uvstall_external_wake_fd(h) == fd);  // one descriptor per watch
      uint64_t poll_clock = 0;
      REQUIRE(uvstall_external_poll_clock(h, &poll_clock) == 0);
      pollfd p = {fd, POLLIN, 0};
      CHECK(poll(&p, 1, 0) == 0);  // nothing to read before a stall
      for (int i = 0; i < 10; ++i) {  // 200 ms of a healthy loop
        uvstall_beat(h);
        uvstall_test_sleep(20);
        poll_clock = uvt::now_ns();  // "returned from its poll"
      }
      // The stall begins 5 ms after the loop left its poll, 5 ms after
      // its last beat: the poll clock is the better bound.
      uvstall_beat(h);
      uvstall_test_sleep(5);
      __atomic_store_n(&poll_clock, uvt::now_ns(), __ATOMIC_RELAXED);
      polled_before = poll_clock;
      uvstall_test_sleep(5);
      culprit_start = uvt::now_ns();
      uvstall_test_busy(300);
      culprit_end = uvt::now_ns();
      readable = poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
      uvstall_test_sleep(3);  // the loop polls: its poll returns now
      __atomic_store_n(&poll_clock, uvt::now_ns(), __ATOMIC_RELAXED);
      woken_at = poll_clock;
      uvstall_test_sleep(2);  // callbacks queued ahead of the wake's run
      uvstall_external_woken(h);
      uint64_t count;
      drained = read(fd, &count, sizeof count) == -1 && errno == EAGAIN;
      CHECK(uvstall_stop(h) == 0);
      // Closed by the stop (no other thread of this test opens files).
      CHECK(fcntl(fd, F_GETFD) == -1);
    });
    CHECK(readable);
    CHECK(drained);
    REQUIRE(col.wait_count("stall_end", 1, 3000));
    const auto end = col.of_type("stall_end")[0].j;
    CHECK(end["ended_by"] == "loop");
    // The records keep microseconds: 1 us of rounding either way.
    const double start_ms = end["start_mono_ms"].get<double>();
    const double end_ms = end["end_mono_ms"].get<double>();
    CHECK(start_ms >= polled_before / 1e6 - 0.001);
    CHECK(start_ms <= culprit_start / 1e6);
    CHECK(end_ms >= culprit_end / 1e6);
    CHECK(end_ms <= woken_at / 1e6 + 0.001);  // the poll's return, not the callback's
    CHECK(std::abs(end["duration_ms"].get<double>() - (end_ms - start_ms)) <= 0.002);
  }

  TEST_CASE("wake descriptors are closed at stop: no descriptor left after 1000 watches") {
    uvstall_options_t o;
    uvstall_options_init(&o);
    o.on_report = [](const char *, size_t, void *) {};
    uvt::on_thread([&] {
      // The first watch starts the process's threads and files.
      uvstall_t *h = nullptr;
      REQUIRE(uvstall_start_external(&o, &h) == 0);
      REQUIRE(uvstall_stop(h) == 0);
      const size_t before = uvt::open_fds();
      int failures = 0;
      for (int i = 0; i < 1000; ++i) {
        if (uvstall_start_external(&o, &h) != 0) {
          ++failures;
          continue;
        }
        failures += uvstall_external_wake_fd(h) < 0;
        failures += uvstall_stop(h) != 0;
      }
      CHECK(failures == 0);
      CHECK(uvt::open_fds() == before);
    });
    // Not an external watch: refused, nothing created.
    uv_loop_t loop;
    uv_loop_init(&loop);
    uvstall_t *h = nullptr;
    REQUIRE(uvstall_start(&loop, &o, &h) == 0);
    CHECK(uvstall_external_wake_fd(h) == UVSTALL_EINVAL);
    uint64_t word = 0;
    CHECK(uvstall_external_poll_clock(h, &word) == UVSTALL_EINVAL);
    uvstall_external_woken(h);  // does nothing
    CHECK(uvstall_stop(h) == 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
    CHECK(uvstall_external_wake_fd(nullptr) == UVSTALL_EINVAL);
  }
}

TEST_SUITE("diagnosis") {
  // The first record of the run's only stall.
  nlohmann::json first_stall(const uvt::WatchedLoop &wl) {
    REQUIRE(wl.col.wait_count("stall_end", 1, 5000));
    auto stalls = wl.col.of_type("stall");
    REQUIRE(!stalls.empty());
    return stalls[0].j;
  }

  TEST_CASE("a busy loop is cause cpu") {
    uvt::WatchedLoop wl;
    wl.after(50, [] { uvstall_test_busy(300); });
    wl.run();
    auto s = first_stall(wl);
    INFO(s.dump());
    CHECK(s["cause"] == "cpu");
    CHECK(s["thread"]["state"] == "running");
    // On a CPU, or runnable and waiting for one (a loaded machine), most of
    // the window.
    CHECK(s["thread"]["cpu_ms"].get<double>() + s["thread"]["runqueue_ms"].get<double>() >=
          0.5 * s["thread"]["window_ms"].get<double>());
  }

  TEST_CASE("nanosleep is cause syscall, clock_nanosleep") {
    uvt::WatchedLoop wl;
    wl.after(50, [] { uvstall_test_sleep(300); });
    wl.run();
    auto s = first_stall(wl);
    INFO(s.dump());
    CHECK(s["cause"] == "syscall");
    CHECK(s["thread"]["syscall"] == "clock_nanosleep");
    CHECK(s["thread"]["state"] == "sleeping");
  }

  TEST_CASE("a read on a pipe is cause syscall, read, and names the pipe") {
    uvt::WatchedLoop wl;
    run_pipe_read_stall(wl);
    auto s = first_stall(wl);
    INFO(s.dump());
    CHECK(s["cause"] == "syscall");
    CHECK(s["thread"]["syscall"] == "read");
    CHECK(s["thread"]["fd"].get<std::string>().rfind("pipe:[", 0) == 0);
  }

  TEST_CASE("SIGSTOP/SIGCONT of the whole process is cause paused") {
    uvt::WatchedLoop wl;
    wl.after(50, [] {
      // The loop is busy when a child stops the whole process for 600 ms:
      // the sentinel wakes that late too, so nobody's code is to blame.
      const pid_t parent = getpid();
      const pid_t child = fork();
      if (child == 0) {
        usleep(20000);
        kill(parent, SIGSTOP);
        usleep(600000);
        kill(parent, SIGCONT);
        _exit(0);
      }
      uvstall_test_busy(800);
      waitpid(child, nullptr, 0);
    });
    wl.run();
    auto s = first_stall(wl);
    INFO(s.dump());
    CHECK(s["cause"] == "paused");
    CHECK(s["thread"]["sentinel_late_ms"].get<double>() >= 300);
  }

  // Pins the calling thread and two spinning threads to CPU 0 for its
  // lifetime: the caller gets about a third of that CPU.
  class CrowdedCpu {
   public:
    CrowdedCpu() {
      CPU_ZERO(&one_);
      CPU_SET(0, &one_);
      pthread_getaffinity_np(pthread_self(), sizeof before_, &before_);
      pinned_ = pthread_setaffinity_np(pthread_self(), sizeof one_, &one_) == 0;
      for (auto &t : spinners_) t = std::thread([this] {
        pthread_setaffinity_np(pthread_self(), sizeof one_, &one_);
        while (!stop_) {
        }
      });
    }
    ~CrowdedCpu() { release(); }
    void release() {
      stop_ = true;
      for (auto &t : spinners_)
        if (t.joinable()) t.join();
      pthread_setaffinity_np(pthread_self(), sizeof before_, &before_);
    }
    bool pinned() const { return pinned_; }

   private:
    cpu_set_t one_, before_;
    bool pinned_ = false;
    std::atomic<bool> stop_{false};
    std::thread spinners_[2];
  };

  TEST_CASE("a busy loop sharing its CPU with two busy threads is cause runqueue") {
    // The loop's work takes about three times as long, waiting for the CPU
    // two thirds of the time.
    CrowdedCpu crowd;
    REQUIRE(crowd.pinned());
    uvt::WatchedLoop wl;
    wl.after(50, [] { uvstall_test_busy(600); });  // wall time: busy with others
    wl.run();
    crowd.release();
    first_stall(wl);
    // The last sample: measured over the longest window (from detection
    // on), so CFS's time slices average out.
    auto s = wl.col.of_type("stall").back().j;
    INFO(s.dump());
    CHECK(s["sample"].get<int>() >= 2);
    CHECK(s["cause"] == "runqueue");
    CHECK(s["thread"]["runqueue_ms"].get<double>() >= 0.5 * s["thread"]["window_ms"].get<double>());
  }

  TEST_CASE("an idle loop next to busy threads on its CPU does not stall") {
    CrowdedCpu crowd;
    REQUIRE(crowd.pinned());
    uvt::WatchedLoop wl;
    wl.after(1500, [] {});
    wl.run();
    crowd.release();
    CHECK(wl.col.of_type("stall").empty());
  }

  TEST_CASE("a long stall is sampled again with growing gaps") {
    uvt::WatchedLoop wl;
    wl.after(50, [] { uvstall_test_busy(2500); });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 1, 5000));
    auto stalls = wl.col.of_type("stall");
    // At about 100, 200, 400, 800 and 1600 ms of a 2.5 s stall.
    REQUIRE(stalls.size() >= 5);
    double prev_gap = 0;
    for (size_t i = 0; i < stalls.size(); ++i) {
      CHECK(stalls[i].j["sample"] == i);
      CHECK(stalls[i].j["fingerprint"] == stalls[0].j["fingerprint"]);
      // (Under ThreadSanitizer a sample's handler may run late, with the
      // registers TSan saved at arrival: its stack may miss the culprit —
      // seen once in 2 runs here; see uvt::kTsan.)
      if (!uvt::kTsan) CHECK(uvt::frames_name(stalls[i].j, "uvstall_test_busy"));
      if (i >= 2) {
        const double gap = stalls[i].j["blocked_ms"].get<double>() -
                           stalls[i - 1].j["blocked_ms"].get<double>();
        CHECK(gap > prev_gap);
        prev_gap = gap;
      } else if (i == 1) {
        prev_gap = stalls[1].j["blocked_ms"].get<double>() - stalls[0].j["blocked_ms"].get<double>();
      }
    }
    // Every sample while the loop was still blocked.
    for (const auto &r : stalls) CHECK(r.arrived_ns < uvt::g_culprit_end_ns.load());
  }

  TEST_CASE("the application context of the stalled request is in the report") {
    uvt::WatchedLoop wl;
    wl.after(50, [&] {
      REQUIRE(uvstall_set_context(wl.watch, "route", "/api/slow") == 0);
      REQUIRE(uvstall_set_context(wl.watch, "request_id", "r-17") == 0);
      uvstall_test_busy(200);
      REQUIRE(uvstall_set_context(wl.watch, "route", nullptr) == 0);
    });
    wl.after(400, [] { uvstall_test_busy(200); });
    wl.run();
    REQUIRE(wl.col.wait_count("stall_end", 2, 5000));
    auto ids = stall_ids(wl.col.of_type("stall"));
    REQUIRE(ids.size() == 2);
    auto stalls = wl.col.of_type("stall");
    CHECK(stalls.front().j["context"]["route"] == "/api/slow");
    CHECK(stalls.front().j["context"]["request_id"] == "r-17");
    CHECK_FALSE(stalls.back().j["context"].contains("route"));
    CHECK(stalls.back().j["context"]["request_id"] == "r-17");
    int rc = 0;
    uvt::on_thread([&] { rc = uvstall_set_context(wl.watch, "k", "v"); });
    CHECK(rc == UVSTALL_EWRONGTHREAD);
  }
}
