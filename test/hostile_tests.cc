// Hostile hosts: each scenario of uvstall-test-hostile (test/hostile_child.cc)
// runs in a process of its own and prints what it saw as key=value lines;
// these tests hold them to what a user of uvstall must be able to rely on.
// Timing tolerances are stated where they are asserted (a noisy 2-core box).
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <uvstall/uvstall.h>

#include "harness.h"

namespace {

struct Run {
  int status = -1;  // exit status, or 128 + signal
  std::string out, err;
  std::map<std::string, std::string> kv;  // the key=value lines of stdout

  bool has(const std::string &k) const { return kv.count(k) != 0; }
  std::string str(const std::string &k) const {
    auto it = kv.find(k);
    return it == kv.end() ? std::string("<missing " + k + ">") : it->second;
  }
  double num(const std::string &k) const {
    auto it = kv.find(k);
    REQUIRE_MESSAGE(it != kv.end(), "missing key " << k);
    return std::stod(it->second);
  }
};

std::string env_or_fail(const char *name) {
  const char *v = std::getenv(name);
  REQUIRE_MESSAGE(v != nullptr, name << " must be set (test/meson.build sets it)");
  return v;
}

Run run_hostile(const std::vector<std::string> &args) {
  const std::string exe = env_or_fail("UVSTALL_TEST_HOSTILE");
  const uvt::Spawned sp = uvt::spawn_and_wait(exe, args);
  REQUIRE_MESSAGE(sp.ran, "could not run " << exe);
  Run r;
  r.status = sp.status;
  r.out = sp.out;
  r.err = sp.err;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) r.kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return r;
}

// A TCP port on 127.0.0.1 that nothing listens on now.
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

// 0 when a connection to 127.0.0.1:port is accepted, else the errno.
int connect_errno(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(uint16_t(port));
  const int rc = connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

}  // namespace

TEST_SUITE("hostile hosts") {
  TEST_CASE("a profiler (SIGPROF at 1 kHz) and an alarm (SIGALRM at 100 Hz) keep their rate") {
    Run r = run_hostile({"timers"});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    // ITIMER_PROF fires on CPU time, checked at the kernel's tick: on this
    // VM 13..60 signals per 300 ms of CPU, not 300, and noisy. The profiler
    // must not go blind while uvstall captures (our handler blocks signals
    // for ~50 us per capture): at least half the baseline rate, minus 3.
    REQUIRE(r.num("base_prof") >= 5);
    const double base_rate = r.num("base_prof") / r.num("base_cpu_ms");
    CHECK(r.num("prof") >= 0.5 * base_rate * r.num("cpu_ms") - 3);
    // ITIMER_REAL at 10 ms: one SIGALRM per 10 ms of the 300 ms sleep (+-30%).
    CHECK(r.num("alrm") >= 0.7 * r.num("sleep_ms") / 10);
    CHECK(r.num("alrm") <= 1.3 * r.num("sleep_ms") / 10 + 1);
    // EINTR: every alarm (and profiler tick) interrupts the host's
    // nanosleep; our captures add at most one each (the documented
    // effect), nothing else.
    CHECK(r.num("eintr") >= r.num("alrm") - 2);
    CHECK(r.num("eintr") <=
          r.num("alrm") + r.num("sleep_prof") + r.num("stall1_samples") + 2);
    CHECK(r.num("sleep_ms") < 300 + 100);  // the host's sleep is not lengthened
    // Both stalls are captured and name their culprit, then end.
    REQUIRE(r.num("stalls") == 2);
    CHECK(r.num("stall0_ok") >= 1);
    CHECK(r.num("stall0_busy") == 1);
    CHECK(r.num("stall0_ends") == 1);
    CHECK(r.num("stall1_ok") >= 1);
    CHECK(r.num("stall1_sleep") == 1);
    CHECK(r.num("stall1_ends") == 1);
  }

  TEST_CASE("SIGPROF, SIGALRM or SIGVTALRM as the capture signal is refused with a clear error") {
    // The host's timers own them: sharing would take the host's ticks for
    // ours or ours for the host's. UVSTALL_SIGNAL goes through the same check.
    Run r = run_hostile({"signal-choice"});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    const std::string esignal = std::to_string(UVSTALL_ESIGNAL);
    CHECK(r.str("rc_PROF") == esignal);
    CHECK(r.str("rc_ALRM") == esignal);
    CHECK(r.str("rc_VTALRM") == esignal);
    CHECK(r.str("message") == uvstall_strerror(UVSTALL_ESIGNAL));
  }

  TEST_CASE("a stall inside dlopen or dl_iterate_phdr on the loop thread is captured, no deadlock") {
    // The loop thread holds glibc's loader lock (recursive). Neither the
    // handler (it only copies the stack) nor the sentinel's unwinder (it
    // finds the plugin, loaded after start, in /proc/self/maps) takes it.
    // 500 ms each: a busy and a sleeping plugin constructor, a
    // dl_iterate_phdr callback that sleeps.
    Run r = run_hostile({"loader-own", env_or_fail("UVSTALL_TEST_SLOW_BUSY"),
                         env_or_fail("UVSTALL_TEST_SLOW_SLEEP")});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    REQUIRE(r.num("stalls") == 3);
    // Under ThreadSanitizer the sleeping constructor and callback may not
    // be captured while they block (uvt::kTsan says why): there they may
    // time out cleanly, and only the busy one must be named.
    for (int i = 0; i < 3; ++i) {
      const std::string k = "stall" + std::to_string(i);
      const std::string capture = r.str(k + "_capture");
      if (uvt::kTsan && i > 0)
        CHECK((capture == "ok" || capture == "timeout"));
      else
        CHECK(capture == "ok");
      CHECK(r.num(k + "_ends") == 1);
      CHECK(r.num(k + "_ms") >= 500 - 2);
      CHECK(r.num(k + "_ms") <= 500 + 60);
    }
    CHECK(r.num("stall0_ctor") == 1);
    CHECK(r.num("stall0_dlopen") == 1);
    CHECK(r.str("stall0_via") == "signal");
    // The sleeping constructor's code was loaded after the unwinder read
    // its tables: the snapshot finds the plugin in /proc/self/maps instead
    // of falling back to the signal, so its sleep is never cut short.
    CHECK(r.str("stall1_via") == "snapshot");
    CHECK(r.num("plugin_eintr") == 0);
    CHECK(r.num("interrupted") == 0);
    if (!uvt::kTsan) {
      CHECK(r.num("stall1_ctor") == 1);
      CHECK(r.num("stall1_dlopen") == 1);
      CHECK(r.num("stall2_phdr") == 1);
    }
  }

  TEST_CASE("another thread holding the loader lock for 1 s: the stack in plugin code loaded after start comes on time") {
    // The loop thread stalls 1500 ms in plugin code loaded after every
    // watch started (no unwind table of it was read); thread B sits in
    // dl_iterate_phdr for 1 s meanwhile. The handler only copies the
    // stack, and the sentinel's unwinder finds the plugin in
    // /proc/self/maps, reading its headers from memory: neither waits for
    // B. So the first record is "ok" on time (the threshold, 100 ms, + the
    // capture timeout, 50 ms, + slack), names the plugin's function while
    // B still holds the lock, and the stall ends normally. Meanwhile the
    // host's 5 ms timer fires at the loop thread.
    Run r = run_hostile({"loader-other", env_or_fail("UVSTALL_TEST_SLOW_BUSY")});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(r.num("lock_ms") >= 999);
    CHECK(r.num("cold_first_arrived_before_unlock") == 1);
    CHECK(r.num("cold_first_after_stall_ms") < 100 + 50 + 250);
    // (Under ThreadSanitizer too: the plugin's spin calls the clock, an
    // interceptor where TSan runs our handler; uvt::kTsan says why.)
    CHECK(r.str("cold_first_capture") == "ok");
    CHECK(r.str("cold_first_via") == "signal");
    CHECK(r.num("cold_first_named") == 1);
    CHECK(r.num("cold_named_in_lock") >= 1);
    CHECK(r.num("cold_timeouts_in_lock") == 0);
    CHECK(r.num("cold_ends") == 1);
    CHECK(r.str("cold_ended_by") == "loop");
    CHECK(r.num("cold_ms") >= 1500 - 2);
    CHECK(r.num("cold_ms") <= 1500 + 60);
    // The host's own timer (SIGALRM every 5 ms, aimed at the loop thread)
    // never runs inside our handler: its sa_mask blocks asynchronous
    // signals (without it, 2 of ~140 calls ran nested in one run, when
    // the handler still unwound in place). They run once the handler
    // returns (pending alarms merge: ~140 to ~300 calls in the stall; 50
    // asserted).
    CHECK(r.num("alrm_nested") == 0);
    CHECK(r.num("alrm_in_stall") >= 50);
    // Thread C, another watched loop, stalls while B holds the lock: its
    // report too comes while the lock is held, and its stall ends.
    CHECK(r.num("c2_first_arrived_in_lock") == 1);
    CHECK(r.num("c2_ends") == 1);
  }

  TEST_CASE("fork 200 times while stalls are captured and written: consistent children") {
    // Thread S stalls 20 ms of every 30 ms (threshold 10 ms, a metrics record
    // every 100 ms); the main thread forks from a timer of its own watched
    // loop every 7 ms. Each child: get_stats on both inherited watches,
    // uvstall_configure refused (ECONFIGURED); every 25th child also starts
    // a watch on a new loop, stalls it 200 ms and finds its own report (its
    // pid, tid and a run_id of its own, the culprit named) and
    // stall_end; then it stops the inherited watch, runs its loop once,
    // closes it, and exits through exit(). Exit status 0: all passed.
    Run r = run_hostile({"fork", "200", "25"});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(r.num("forks") == 200);
    CHECK(r.num("hung") == 0);
    // Under ASan only: children stuck on a lock of libasan's allocator that
    // fork() left held (GCC 12's libasan has no fork handler for it; the
    // child tells that wait from one on our locks by its program counter,
    // see waits_in_libasan). Seen in up to 3 of 200 children under load;
    // every other child must pass all its checks.
    const int stuck = int(r.num("sanitizer_stuck"));
    if (r.num("libasan") == 0) CHECK(stuck == 0);
    CHECK(stuck <= 20);
    CHECK(r.str("statuses") == "0:" + std::to_string(200 - stuck));
    CHECK(r.num("full_children") == 8);
    // Stalls were being reported all along, and never by a child: every
    // record of the parent's output has the parent's pid.
    CHECK(r.num("parent_stalls") >= 10);
    CHECK(r.num("foreign_records") == 0);
    // A child that never started a watch has no sentinel to wait for at
    // exit (the exit handler used to wait 200 ms for one in every child).
    CHECK(r.num("quick_mean_ms") < 100);
  }

  TEST_CASE("a forked child that outlives its parent does not keep the metrics port") {
    const int port = free_port();
    Run r = run_hostile({"fork-metrics", std::to_string(port)});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    const pid_t child = pid_t(r.num("child_pid"));
    // The parent has exited; its child sleeps 3 s more.
    REQUIRE_MESSAGE(kill(child, 0) == 0, "the forked child must still be running");
    // (Not under ThreadSanitizer: there the connect was accepted in 1 of 2
    // CI runs, not yet explained — TSan does not support threads in a
    // forked multi-threaded process. Checked in the normal and ASan builds.)
    if (!uvt::kTsan) CHECK(connect_errno(port) == ECONNREFUSED);
    kill(child, SIGKILL);
  }
}
