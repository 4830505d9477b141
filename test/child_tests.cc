// Tests that run a host program (uvstall-test-child) in a process of its
// own: the real stderr, exit during a stall, process-wide options, and the
// host's own handlers for our signal.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "harness.h"

namespace {

using uvt::ChildResult;
using uvt::slurp;

ChildResult run_child(const std::vector<std::string> &args) {
  const char *exe = std::getenv("UVSTALL_TEST_CHILD");
  REQUIRE_MESSAGE(exe != nullptr, "UVSTALL_TEST_CHILD must name uvstall-test-child");
  ChildResult r = uvt::run_child(exe, args);
  REQUIRE_MESSAGE(r.status >= 0, r.out);
  return r;
}

std::vector<nlohmann::json> of_type(const ChildResult &r, const std::string &type) {
  return uvt::of_type(r.records, type);
}

bool names(const nlohmann::json &stall, const std::string &sym) {
  return uvt::frames_name(stall, sym);
}

}  // namespace

TEST_SUITE("child") {
  TEST_CASE("default output is standard error, one JSON record per line") {
    auto r = run_child({"stderr"});
    CHECK(r.status == 0);
    CHECK(r.out.empty());
    CHECK(r.other_err.empty());
    // start, the stall's samples (a 200 ms stall: one or two), its end, and
    // the summary written when the watch stops.
    REQUIRE(r.records.size() >= 4);
    CHECK(r.records.front()["type"] == "start");
    CHECK(r.records[1]["type"] == "stall");
    CHECK(names(r.records[1], "uvstall_test_busy"));
    CHECK(of_type(r, "stall_end").size() == 1);
    CHECK(r.records.back()["type"] == "summary");
    // The main executable is named by its real path, not "".
    bool exe_named = false;
    for (const auto &f : r.records[1]["frames"])
      exe_named |= f["module"] == r.records[0]["executable"];
    CHECK(exe_named);
  }

  TEST_CASE("a host that reuses fd 2 never receives JSON") {
    char tmpl[] = "/tmp/uvstall-fd2-XXXXXX";
    const std::string host_file = std::string(mkdtemp(tmpl)) + "/host-stderr";
    auto r = run_child({"stderr-reused", host_file});
    CHECK(r.status == 0);
    CHECK(slurp(host_file) == "host's own line\n");
    CHECK(of_type(r, "stall").size() >= 1);
  }

  TEST_CASE("a host that exits mid-stall: exit status kept, stall ended by exit") {
    auto r = run_child({"exit-mid-stall"});
    CHECK(r.status == 7);
    auto stalls = of_type(r, "stall");
    auto ends = of_type(r, "stall_end");
    REQUIRE(stalls.size() >= 1);
    CHECK(names(stalls[0], "uvstall_test_busy"));
    REQUIRE(ends.size() == 1);
    CHECK(ends[0]["ended_by"] == "exit");
    CHECK(of_type(r, "summary").size() == 1);  // the last one, at exit
    CHECK(ends[0]["duration_ms"].get<double>() >= 298);
  }

  TEST_CASE("uvstall_stop right after a stall, before any tick: one stall_end, by stop") {
    for (int i = 0; i < 3; ++i) {
      auto r = run_child({"stop-after-stall"});
      CHECK(r.status == 0);
      auto stalls = of_type(r, "stall");
      auto ends = of_type(r, "stall_end");
      REQUIRE(stalls.size() >= 1);
      CHECK(names(stalls[0], "uvstall_test_busy"));
      REQUIRE(ends.size() == 1);
      CHECK(ends[0]["ended_by"] == "stop");
      // The stall ended when stop ran, right after the 250 ms busy loop.
      CHECK(ends[0]["duration_ms"].get<double>() >= 248);
      CHECK(ends[0]["duration_ms"].get<double>() <= 320);
    }
  }

  TEST_CASE("a host that exits right after a stall: exactly one stall_end") {
    for (int i = 0; i < 3; ++i) {
      auto r = run_child({"exit-after-stall"});
      CHECK(r.status == 0);
      CHECK(of_type(r, "stall").size() >= 1);
      CHECK(of_type(r, "stall_end").size() == 1);
    }
  }

  TEST_CASE("a full queue drops records, counts them and says so later") {
    auto r = run_child({"drops"});
    CHECK(r.status == 0);
    INFO(r.out);
    CHECK(r.out.find("stalls_while_blocked=4\n") != std::string::npos);
    unsigned long long stalls = 0, dropped = 0, written = 0, announced = 0;
    auto at = r.out.find("stalls=");
    REQUIRE(at != std::string::npos);
    REQUIRE(std::sscanf(r.out.c_str() + at, "stalls=%llu dropped=%llu written=%llu\nannounced_drops=%llu",
                        &stalls, &dropped, &written, &announced) == 4);
    CHECK(stalls == 5);
    // 1 start + 5 stalls x 2 records; the queue holds 2 while the callback
    // blocks on the first stall record, so most of the next three stalls'
    // records drop.
    CHECK(dropped >= 4);
    CHECK(written + dropped == 11);
    CHECK(announced == dropped);
  }

  TEST_CASE("the host replacing our handler is reported, not crashed into") {
    auto r = run_child({"handler-replaced"});
    CHECK(r.status == 0);
    auto stalls = of_type(r, "stall");
    REQUIRE(stalls.size() == 1);
    CHECK(stalls[0]["capture"] == "failed");
    CHECK(stalls[0]["capture_error"].get<std::string>().find("replaced") != std::string::npos);
    CHECK(r.out == "host_handler_calls=0\n");
  }

  TEST_CASE("signals the host sends itself still reach the host's handler") {
    auto r = run_child({"chain"});
    CHECK(r.status == 0);
    auto stalls = of_type(r, "stall");
    REQUIRE(stalls.size() >= 1);
    CHECK(stalls[0]["capture"] == "ok");
    CHECK(r.out == "host_handler_calls=1\n");
  }

  TEST_CASE("a configured signal (SIGUSR2) is used") {
    auto r = run_child({"sigusr2"});
    CHECK(r.status == 0);
    REQUIRE(of_type(r, "start").size() == 1);
    CHECK(of_type(r, "start")[0]["options"]["signal"] == SIGUSR2);
    REQUIRE(of_type(r, "stall").size() >= 1);
    CHECK(of_type(r, "stall")[0]["capture"] == "ok");
  }

  TEST_CASE("abort_after_ms writes the report, then the loop thread gets SIGABRT") {
    auto r = run_child({"abort"});
    CHECK(r.status == 128 + SIGABRT);
    auto stalls = of_type(r, "stall");
    REQUIRE(!stalls.empty());
    CHECK(stalls.back()["abort"] == true);
    CHECK(stalls.back()["blocked_ms"].get<double>() >= 390);
    // The culprit is named (by the abort sample, or by an earlier one when
    // a loaded machine made that last capture time out).
    bool named = false;
    for (const auto &s : stalls) named |= names(s, "uvstall_test_busy");
    CHECK(named);
  }

  TEST_CASE("unusable signals and queue sizes are refused") {
    auto r = run_child({"bad-signal"});
    CHECK(r.status == 0);
    const std::string want = "rc=" + std::to_string(UVSTALL_ESIGNAL) + "," +
                             std::to_string(UVSTALL_ESIGNAL) + "," +
                             std::to_string(UVSTALL_ESIGNAL) + "," +
                             std::to_string(UVSTALL_EQUEUE) + "\n";
    CHECK(r.out == want);
  }
}
