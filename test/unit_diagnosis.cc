// Unit tests of the diagnosis parts: the cause rule (table-driven), the
// /proc parsers, the skip-list glob, fingerprints and context slots.
#include <doctest/doctest.h>
#include <sys/syscall.h>

#include <cstring>

#include "fingerprint.h"
#include "thread_state.h"
#include "watch.h"

using namespace uvstall::internal;

namespace {
constexpr uint64_t kMs = 1000000;
}

TEST_SUITE("cause") {
  TEST_CASE("the rule, case by case") {
    struct Row {
      const char *what;
      CauseInput in;
      Cause want;
    };
    // stall, window, cpu, wait, state, syscall, sentinel late
    const Row rows[] = {
        {"busy loop", {120 * kMs, 10 * kMs, 10 * kMs, 0, 'R', -1, 0}, Cause::kCpu},
        {"busy in the kernel", {120 * kMs, 10 * kMs, 9 * kMs, 0, 'R', -1, 0}, Cause::kCpu},
        {"half on CPU is cpu", {120 * kMs, 10 * kMs, 5 * kMs, 0, 'R', -1, 0}, Cause::kCpu},
        {"busy, slowed by some contention", {120 * kMs, 10 * kMs, 4 * kMs, 4 * kMs, 'R', -1, 0},
         Cause::kCpu},
        {"mostly off the CPU and not waiting for one", {120 * kMs, 10 * kMs, 2 * kMs, 1 * kMs, 'R', -1, 0},
         Cause::kUnknown},
        {"sleeping in nanosleep", {120 * kMs, 10 * kMs, 0, 0, 'S', SYS_clock_nanosleep, kMs},
         Cause::kSyscall},
        {"disk wait in read", {120 * kMs, 10 * kMs, 0, 0, 'D', SYS_read, 0}, Cause::kSyscall},
        {"disk wait, syscall unknown", {120 * kMs, 10 * kMs, 0, 0, 'D', -2, 0}, Cause::kSyscall},
        {"overloaded machine", {120 * kMs, 10 * kMs, 3 * kMs, 7 * kMs, 'R', -1, 0},
         Cause::kRunqueue},
        {"waiting exactly half", {120 * kMs, 10 * kMs, 5 * kMs, 5 * kMs, 'R', -1, 0},
         Cause::kRunqueue},
        {"process stopped", {600 * kMs, 10 * kMs, 10 * kMs, 0, 'R', -1, 500 * kMs},
         Cause::kPaused},
        {"sentinel a little late is not a pause",
         {600 * kMs, 10 * kMs, 10 * kMs, 0, 'R', -1, 20 * kMs}, Cause::kCpu},
        {"nothing measured", {120 * kMs, 0, 0, 0, '?', -2, 0}, Cause::kUnknown},
        {"sleeping outside any syscall", {120 * kMs, 10 * kMs, 0, 0, 'S', -1, 0},
         Cause::kUnknown},
    };
    for (const auto &r : rows) {
      INFO(r.what);
      CHECK(std::string(cause_name(classify(r.in))) == cause_name(r.want));
    }
  }

  TEST_CASE("/proc parsers") {
    ThreadSample s;
    // comm may hold spaces and parentheses.
    REQUIRE(parse_stat("1234 (we(ird) name) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0", &s));
    CHECK(s.state == 'S');
    CHECK(s.utime_ticks == 111);
    CHECK(s.stime_ticks == 222);
    CHECK_FALSE(parse_stat("garbage", &s));
    REQUIRE(parse_schedstat("5000000 2500000 17\n", &s));
    CHECK(s.run_ns == 5000000);
    CHECK(s.wait_ns == 2500000);
    REQUIRE(parse_syscall("running\n", &s));
    CHECK(s.syscall_nr == -1);
    REQUIRE(parse_syscall("0 0x3 0x7ffd 0x1 0x0 0x0 0x0 0x7ffd0 0x7f00\n", &s));
    CHECK(s.syscall_nr == 0);
    CHECK(s.syscall_arg0 == 3);
    CHECK(std::string(syscall_name(SYS_read)) == "read");
    CHECK(std::string(syscall_name(SYS_clock_nanosleep)) == "clock_nanosleep");
    CHECK(std::string(syscall_name(100000)).empty());
    CHECK(syscall_takes_fd(SYS_read));
    CHECK_FALSE(syscall_takes_fd(SYS_clock_nanosleep));
    CHECK(std::string(state_name('D')) == "disk wait");
  }
}

TEST_SUITE("fingerprint") {
  TEST_CASE("skip-list globs") {
    CHECK(skip_glob_match("libc.so*", "libc.so.6"));
    CHECK(skip_glob_match("[vdso]", "[vdso]"));  // brackets are literal
    CHECK_FALSE(skip_glob_match("[vdso]", "v"));
    CHECK(skip_glob_match("ld-linux*", "ld-linux-x86-64.so.2"));
    CHECK(skip_glob_match("lib?.so", "libm.so"));
    CHECK_FALSE(skip_glob_match("libuv.so*", "libuvstall.so.1"));
    CHECK(module_is_skipped("/lib/x86_64-linux-gnu/libc.so.6"));
    CHECK(module_is_skipped("/usr/lib/x86_64-linux-gnu/libuv.so.1"));
    CHECK(module_is_skipped("/build/libuvstall.so.1"));
    CHECK_FALSE(module_is_skipped("/srv/app/server"));
  }

  TEST_CASE("the same functions give the same fingerprint, wherever the pc is inside them") {
    auto app = std::make_shared<Module>();
    app->path = "/srv/app/server";
    auto libc = std::make_shared<Module>();
    libc->path = "/lib/x86_64-linux-gnu/libc.so.6";
    auto frame = [](std::shared_ptr<Module> m, uintptr_t off, const char *sym, uint64_t symoff) {
      ResolvedFrame f;
      f.module = m;
      f.offset = off;
      f.symbol = sym;
      f.symbol_offset = symoff;
      return f;
    };
    // Two samples inside one busy loop: other pcs, same functions; libc differs.
    std::vector<ResolvedFrame> a = {frame(libc, 0x1000, "clock_gettime", 0x10),
                                    frame(app, 0x2040, "spin", 0x40),
                                    frame(app, 0x3010, "handler", 0x10)};
    std::vector<ResolvedFrame> b = {frame(libc, 0x5000, "memcpy", 0x20),
                                    frame(app, 0x2088, "spin", 0x88),
                                    frame(app, 0x3010, "handler", 0x10)};
    const auto none = nlohmann::ordered_json();
    CHECK(stall_fingerprint(a, none).size() == 16);
    CHECK(stall_fingerprint(a, none) == stall_fingerprint(b, none));
    // Another culprit: another fingerprint.
    std::vector<ResolvedFrame> c = {frame(app, 0x4010, "parse", 0x10),
                                    frame(app, 0x3010, "handler", 0x10)};
    CHECK(stall_fingerprint(c, none) != stall_fingerprint(a, none));
    // Python frames take part.
    nlohmann::ordered_json py = nlohmann::ordered_json::array(
        {{{"lang", "python"}, {"function", "handler"}, {"file", "app.py"}, {"line", 3}}});
    CHECK(stall_fingerprint(a, py) != stall_fingerprint(a, none));
    // Only skipped modules: nothing to hash.
    std::vector<ResolvedFrame> only_libc = {frame(libc, 0x1000, "read", 0x10)};
    CHECK(stall_fingerprint(only_libc, none).empty());
  }
}

TEST_SUITE("context") {
  TEST_CASE("set, replace, remove, truncate, and at most 8 keys") {
    auto slot = std::make_unique<ContextSlot>();
    CHECK(context_read(slot.get()).is_null());
    REQUIRE(context_set(slot.get(), "route", "/api/users") == 0);
    REQUIRE(context_set(slot.get(), "job", "42") == 0);
    auto c = context_read(slot.get());
    CHECK(c["route"] == "/api/users");
    CHECK(c["job"] == "42");
    REQUIRE(context_set(slot.get(), "route", "/api/orders") == 0);
    CHECK(context_read(slot.get())["route"] == "/api/orders");
    REQUIRE(context_set(slot.get(), "job", nullptr) == 0);
    CHECK_FALSE(context_read(slot.get()).contains("job"));
    std::string long_value(300, 'x');
    REQUIRE(context_set(slot.get(), "big", long_value.c_str()) == 0);
    CHECK(context_read(slot.get())["big"].get<std::string>().size() == 127);
    CHECK(context_set(slot.get(), "", "v") == UVSTALL_ECONTEXT);
    CHECK(context_set(slot.get(), std::string(32, 'k').c_str(), "v") == UVSTALL_ECONTEXT);
    for (int i = 0; i < 6; ++i)
      CHECK(context_set(slot.get(), ("k" + std::to_string(i)).c_str(), "v") == 0);
    CHECK(context_set(slot.get(), "ninth", "v") == UVSTALL_ECONTEXT);
    CHECK(context_read(slot.get()).size() == 8);
  }
}
