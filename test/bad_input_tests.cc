// Bad inputs through the C API on real loops (issue 11): every option field
// and process option fed out-of-range, huge and garbage values, and
// uvstall_set_context fed hostile keys and values. What a caller sees: the
// error code of the field, a message naming it, nothing left on the loop, a
// watch with the defaults still possible; and a stall record that is valid
// JSON whatever the context held.
#include <doctest/doctest.h>
#include <signal.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "harness.h"

namespace {

int handles_on(uv_loop_t *loop) {
  int n = 0;
  uv_walk(loop, [](uv_handle_t *, void *arg) { ++*static_cast<int *>(arg); }, &n);
  return n;
}

// Records as the library delivers them: raw text, parsed by the test.
struct RawLines {
  std::mutex mu;
  std::vector<std::string> lines;
  static void on_report(const char *json, size_t len, void *arg) {
    auto *self = static_cast<RawLines *>(arg);
    std::lock_guard<std::mutex> lock(self->mu);
    self->lines.emplace_back(json, len);
  }
};

}  // namespace

TEST_SUITE("bad inputs") {
  TEST_CASE("every option field fuzzed: the field's error, nothing left behind, defaults work") {
    struct Case {
      const char *field;  // also what the message must name
      int rc;
      std::vector<std::function<void(uvstall_options_t *)>> bad;
    };
    static const std::string long_name(64, 'n'), huge(100000, 'h');
    static const std::string long_path = "/tmp/" + std::string(100000, 'p');
    const Case cases[] = {
        {"interval_ms", UVSTALL_EINTERVAL,
         {[](auto *o) { o->interval_ms = 0; }, [](auto *o) { o->interval_ms = 3600001; },
          [](auto *o) { o->interval_ms = UINT32_MAX; },
          [](auto *o) { o->interval_ms = uint32_t(-1) / 2 + 1; }}},
        {"threshold_ms", UVSTALL_ETHRESHOLD,
         {[](auto *o) { o->threshold_ms = 1; }, [](auto *o) { o->threshold_ms = 39; },
          [](auto *o) { o->threshold_ms = 3600001; },
          [](auto *o) { o->threshold_ms = UINT32_MAX; },
          [](auto *o) {
            o->interval_ms = 3600000;
            o->threshold_ms = 3600000;  // below 2 x interval
          }}},
        {"stack_window_kb", UVSTALL_ESTACKWINDOW,
         {[](auto *o) { o->stack_window_kb = 0; }, [](auto *o) { o->stack_window_kb = 3; },
          [](auto *o) { o->stack_window_kb = 1025; },
          [](auto *o) { o->stack_window_kb = UINT32_MAX; }}},
        {"max_frames", UVSTALL_EMAXFRAMES,
         {[](auto *o) { o->max_frames = 0; }, [](auto *o) { o->max_frames = 257; },
          [](auto *o) { o->max_frames = UINT32_MAX; }}},
        {"capture_timeout_ms", UVSTALL_ECAPTURETIMEOUT,
         {[](auto *o) { o->capture_timeout_ms = 0; },
          [](auto *o) { o->capture_timeout_ms = 10001; },
          [](auto *o) { o->capture_timeout_ms = UINT32_MAX; }}},
        {"loop_name", UVSTALL_ELOOPNAME,
         {[](auto *o) { o->loop_name = long_name.c_str(); },
          [](auto *o) { o->loop_name = huge.c_str(); }}},
        {"output_path", UVSTALL_EOUTPUT,
         {[](auto *o) { o->output_path = ""; },
          [](auto *o) { o->output_path = long_path.c_str(); },
          [](auto *o) { o->output_path = "/tmp"; },  // a directory
          [](auto *o) { o->output_path = "/nonexistent-dir/\n\"x\xff.jsonl"; }}},
        {"max_samples_per_stall", UVSTALL_EMAXSAMPLES,
         {[](auto *o) { o->max_samples_per_stall = 0; },
          [](auto *o) { o->max_samples_per_stall = 65; },
          [](auto *o) { o->max_samples_per_stall = UINT32_MAX; }}},
        {"abort_after_ms", UVSTALL_EABORTAFTER,
         {[](auto *o) { o->abort_after_ms = 1; },
          [](auto *o) { o->abort_after_ms = 99; },  // before the automatic 100 ms
          [](auto *o) { o->abort_after_ms = 3600001; },
          [](auto *o) { o->abort_after_ms = UINT32_MAX; }}},
        {"metrics_interval_ms", UVSTALL_EMETRICSINTERVAL,
         {[](auto *o) { o->metrics_interval_ms = 1; },
          [](auto *o) { o->metrics_interval_ms = 99; },
          [](auto *o) { o->metrics_interval_ms = 86400001; },
          [](auto *o) { o->metrics_interval_ms = UINT32_MAX; }}},
        {"struct_size", UVSTALL_ESTRUCT,
         {[](auto *o) { o->struct_size = 0; }, [](auto *o) { o->struct_size = 8; }}},
    };
    uv_loop_t loop;
    uv_loop_init(&loop);
    for (const Case &c : cases) {
      for (size_t i = 0; i < c.bad.size(); ++i) {
        CAPTURE(c.field);
        CAPTURE(i);
        uvstall_options_t o;
        uvstall_options_init(&o);
        c.bad[i](&o);
        uvstall_t *w = reinterpret_cast<uvstall_t *>(&loop);  // must be cleared
        CHECK(uvstall_start(&loop, &o, &w) == c.rc);
        CHECK(w == nullptr);
        const std::string msg = uvstall_strerror(c.rc);
        CHECK(msg.find(c.field) != std::string::npos);
        CHECK(msg.find('\n') == std::string::npos);
        CHECK(handles_on(&loop) == 0);
      }
    }
    // A larger struct_size than this header's (a newer caller) is fine.
    uvstall_options_t bigger;
    uvstall_options_init(&bigger);
    bigger.struct_size = sizeof(bigger) + 64;
    uvstall_t *w = nullptr;
    REQUIRE(uvstall_start(&loop, &bigger, &w) == 0);
    CHECK(uvstall_stop(w) == 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    // And after all that, the defaults watch the loop.
    REQUIRE(uvstall_start(&loop, nullptr, &w) == 0);
    CHECK(uvstall_stop(w) == 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
  }

  TEST_CASE("process options fuzzed: uvstall_configure names the field") {
    struct Case {
      const char *field;
      int rc;
      std::vector<std::function<void(uvstall_process_options_t *)>> bad;
    };
    static const std::string huge(100000, '9');
    static const std::string long_file = "/tmp/" + std::string(100000, 'f') + "/m.prom";
    const Case cases[] = {
        {"signal", UVSTALL_ESIGNAL,
         {[](auto *p) { p->signal = -1; }, [](auto *p) { p->signal = INT_MAX; },
          [](auto *p) { p->signal = INT_MIN; }, [](auto *p) { p->signal = SIGKILL; },
          [](auto *p) { p->signal = SIGSEGV; }, [](auto *p) { p->signal = SIGRTMIN - 1; },
          [](auto *p) { p->signal = SIGRTMAX + 1; }, [](auto *p) { p->signal = 1024; }}},
        {"max_queued_reports", UVSTALL_EQUEUE,
         {[](auto *p) { p->max_queued_reports = 0; },
          [](auto *p) { p->max_queued_reports = 1000001; },
          [](auto *p) { p->max_queued_reports = UINT32_MAX; }}},
        {"max_stalls_per_minute", UVSTALL_ERATELIMIT,
         {[](auto *p) { p->max_stalls_per_minute = 1000001; },
          [](auto *p) { p->max_stalls_per_minute = UINT32_MAX; }}},
        {"summary_interval_ms", UVSTALL_ESUMMARY,
         {[](auto *p) { p->summary_interval_ms = 1; },
          [](auto *p) { p->summary_interval_ms = 99; },
          [](auto *p) { p->summary_interval_ms = 86400001; },
          [](auto *p) { p->summary_interval_ms = UINT32_MAX; }}},
        {"metrics_addr", UVSTALL_EMETRICSADDR,
         {[](auto *p) { p->metrics_addr = ""; }, [](auto *p) { p->metrics_addr = "0"; },
          [](auto *p) { p->metrics_addr = "65536"; }, [](auto *p) { p->metrics_addr = "-1"; },
          [](auto *p) { p->metrics_addr = huge.c_str(); },
          [](auto *p) { p->metrics_addr = "localhost:9464"; },
          [](auto *p) { p->metrics_addr = ":9464"; }, [](auto *p) { p->metrics_addr = "[::1]"; },
          [](auto *p) { p->metrics_addr = "[::1]:"; }, [](auto *p) { p->metrics_addr = "["; },
          [](auto *p) { p->metrics_addr = "::1:9464"; },
          [](auto *p) { p->metrics_addr = "127.0.0.1:9464\r\nHost: x"; },
          [](auto *p) { p->metrics_addr = "1.2.3.4:0x50"; },
          [](auto *p) { p->metrics_addr = "\xff\xfe:80"; }}},
        {"metrics_file", UVSTALL_EMETRICSFILE,
         {[](auto *p) { p->metrics_file = ""; }, [](auto *p) { p->metrics_file = "/tmp/"; },
          [](auto *p) { p->metrics_file = "/nonexistent-dir/m.prom"; },
          [](auto *p) { p->metrics_file = long_file.c_str(); }}},
        {"struct_size", UVSTALL_ESTRUCT, {[](auto *p) { p->struct_size = 0; }}},
    };
    for (const Case &c : cases) {
      for (size_t i = 0; i < c.bad.size(); ++i) {
        CAPTURE(c.field);
        CAPTURE(i);
        uvstall_process_options_t p;
        uvstall_process_options_init(&p);
        c.bad[i](&p);
        // Checked before "configured already" (other tests have started
        // watches): a bad value is always named.
        CHECK(uvstall_configure(&p) == c.rc);
        const std::string msg = uvstall_strerror(c.rc);
        CHECK(msg.find(c.field) != std::string::npos);
      }
    }
    CHECK(uvstall_configure(nullptr) == UVSTALL_EINVAL);
  }

  TEST_CASE("hostile context keys and values: refused or kept, the record stays valid JSON") {
    RawLines raw;
    uvt::WatchedLoop wl([&](uvstall_options_t *o) {
      o->on_report = &RawLines::on_report;
      o->report_arg = &raw;
      o->loop_name = "loop \"with\"\nquotes\x01\xff";  // 20 bytes: allowed, any bytes
    });
    REQUIRE(wl.start_rc == 0);
    // A UTF-8 character (3 bytes) that straddles the 127-byte cut.
    const std::string straddle = std::string(126, 'v') + "\xe2\x82\xac";
    wl.after(30, [&] {
      uvstall_t *w = wl.watch;
      CHECK(uvstall_set_context(w, nullptr, "v") == UVSTALL_EINVAL);
      CHECK(uvstall_set_context(nullptr, "k", "v") == UVSTALL_EINVAL);
      CHECK(uvstall_set_context(w, "", "v") == UVSTALL_ECONTEXT);
      CHECK(uvstall_set_context(w, std::string(32, 'k').c_str(), "v") == UVSTALL_ECONTEXT);
      CHECK(uvstall_set_context(w, std::string(100000, 'k').c_str(), "v") == UVSTALL_ECONTEXT);
      CHECK(uvstall_set_context(w, "never-set", nullptr) == 0);  // removing nothing
      CHECK(uvstall_set_context(w, std::string(31, 'k').c_str(), "max key") == 0);
      CHECK(uvstall_set_context(w, "quote\"key", "a \"quoted\" \\ value\n\r\t\x01") == 0);
      CHECK(uvstall_set_context(w, "bad\xff\xfeutf8", "\xc3\x28\xa0\xa1\xf0\x28\x8c\x28") == 0);
      CHECK(uvstall_set_context(w, "huge", std::string(100000, 'x').c_str()) == 0);
      CHECK(uvstall_set_context(w, "straddle", straddle.c_str()) == 0);
      CHECK(uvstall_set_context(w, "empty", "") == 0);
      CHECK(uvstall_set_context(w, "gone", "soon") == 0);
      CHECK(uvstall_set_context(w, "eighth", "8") == 0);
      CHECK(uvstall_set_context(w, "ninth", "9") == UVSTALL_ECONTEXT);  // at most 8 keys
      CHECK(uvstall_set_context(w, "gone", nullptr) == 0);
      uvstall_test_busy(250);
    });
    wl.run();
    // Wait for the stall's end; every line must parse as strict JSON.
    const uint64_t deadline = uvt::now_ns() + 5000000000ull;
    nlohmann::json stall;
    bool ended = false;
    while (uvt::now_ns() < deadline && !ended) {
      {
        std::lock_guard<std::mutex> lock(raw.mu);
        for (const std::string &line : raw.lines) {
          CAPTURE(line);
          const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);  // strict UTF-8
          REQUIRE_FALSE(j.is_discarded());
          if (j["type"] == "stall" && stall.is_null()) stall = j;
          if (j["type"] == "stall_end") ended = true;
        }
      }
      if (!ended) usleep(20000);
    }
    REQUIRE(ended);
    REQUIRE(stall.is_object());
    CHECK(stall["loop"] == "loop \"with\"\nquotes\x01\xef\xbf\xbd");  // \xff shown as U+FFFD
    const nlohmann::json &ctx = stall["context"];
    REQUIRE(ctx.is_object());
    CHECK(ctx.size() == 7);
    CHECK(ctx.value(std::string(31, 'k'), nlohmann::json()) == "max key");
    CHECK(ctx.value("quote\"key", nlohmann::json()) == "a \"quoted\" \\ value\n\r\t\x01");
    int replaced = 0;  // the invalid bytes of the key show as U+FFFD
    for (const auto &[k, v] : ctx.items())
      replaced += k.rfind("bad\xef\xbf\xbd", 0) == 0 && v.is_string();
    CHECK(replaced == 1);
    CHECK(ctx.value("huge", nlohmann::json()) == std::string(127, 'x'));
    // Cut at 127 bytes: the euro sign's first byte, shown as U+FFFD.
    CHECK(ctx.value("straddle", nlohmann::json()) == std::string(126, 'v') + "\xef\xbf\xbd");
    CHECK(ctx.value("empty", nlohmann::json()) == "");
    CHECK(ctx.value("eighth", nlohmann::json()) == "8");
    CHECK_FALSE(ctx.contains("gone"));
    CHECK_FALSE(ctx.contains("ninth"));
  }
}
