// Unit tests of the pure parts: option resolution, record formatting, and
// the module table resolving real addresses of this very process.
#include <doctest/doctest.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "config.h"
#include "modules.h"
#include "report.h"

using namespace uvstall::internal;

extern "C" __attribute__((noinline, visibility("default"))) int uvstall_unit_marker(int x) {
  return x * 3 + 1;
}

TEST_SUITE("config") {
  TEST_CASE("defaults are the documented ones") {
    Config c;
    REQUIRE(resolve_options(nullptr, &c) == 0);
    CHECK(c.interval_ms == 20);
    CHECK(c.threshold_ms == 100);
    CHECK(c.max_frames == 64);
    CHECK(c.capture_timeout_ms == 50);
    CHECK_FALSE(c.has_output_path);
    CHECK(reinterpret_cast<void *>(c.on_report) == nullptr);
    ProcessConfig p;
    REQUIRE(resolve_process_options(nullptr, &p) == 0);
    CHECK(p.signal == SIGRTMAX - 3);
    CHECK(p.max_queued_reports == 1024);
  }

  TEST_CASE("automatic threshold is max(100, 2 x interval)") {
    CHECK(auto_threshold_ms(1) == 100);
    CHECK(auto_threshold_ms(50) == 100);
    CHECK(auto_threshold_ms(51) == 102);
    CHECK(auto_threshold_ms(1000) == 2000);
    CHECK(auto_threshold_ms(3600000) == 3600000);  // capped at the maximum
    uvstall_options_t o;
    uvstall_options_init(&o);
    o.interval_ms = 200;
    Config c;
    REQUIRE(resolve_options(&o, &c) == 0);
    CHECK(c.threshold_ms == 400);
  }

  TEST_CASE("limits are inclusive at both ends") {
    uvstall_options_t o;
    uvstall_options_init(&o);
    Config c;
    o.interval_ms = 50;
    o.threshold_ms = 100;  // exactly 2 x interval
    CHECK(resolve_options(&o, &c) == 0);
    o.threshold_ms = 99;
    CHECK(resolve_options(&o, &c) == UVSTALL_ETHRESHOLD);
    uvstall_options_init(&o);
    o.max_frames = 256;
    CHECK(resolve_options(&o, &c) == 0);
    o.max_frames = 1;
    CHECK(resolve_options(&o, &c) == 0);
    uvstall_options_init(&o);
    o.capture_timeout_ms = 10000;
    CHECK(resolve_options(&o, &c) == 0);
    o.capture_timeout_ms = 10001;
    CHECK(resolve_options(&o, &c) == UVSTALL_ECAPTURETIMEOUT);
    uvstall_options_init(&o);
    o.loop_name = "012345678901234567890123456789012345678901234567890123456789012";  // 63
    CHECK(resolve_options(&o, &c) == 0);
    CHECK(c.loop_name.size() == 63);
  }

  TEST_CASE("signals: SIGUSR1, SIGUSR2 and the real-time range only") {
    CHECK(usable_signal(SIGUSR1));
    CHECK(usable_signal(SIGUSR2));
    CHECK(usable_signal(SIGRTMIN));
    CHECK(usable_signal(SIGRTMAX));
    CHECK_FALSE(usable_signal(SIGKILL));
    CHECK_FALSE(usable_signal(SIGSEGV));
    CHECK_FALSE(usable_signal(SIGPROF));
    CHECK_FALSE(usable_signal(SIGRTMIN - 1));  // glibc's own
    CHECK_FALSE(usable_signal(-5));
    CHECK_FALSE(usable_signal(SIGRTMAX + 1));
  }

  TEST_CASE("every error code has a message naming what is wrong") {
#define CHECK_MSG_(name, value, msg) CHECK(std::strcmp(uvstall_strerror(value), msg) == 0);
    UVSTALL_ERRNO_MAP(CHECK_MSG_)
#undef CHECK_MSG_
    CHECK(std::string(uvstall_strerror(UVSTALL_EINTERVAL)).find("interval_ms") != std::string::npos);
    CHECK(std::string(uvstall_strerror(12345)) == "unknown uvstall error");
    CHECK(std::string(uvstall_strerror(0)) == "success");
  }
}

TEST_SUITE("report") {
  TEST_CASE("timestamps are RFC 3339 UTC with milliseconds") {
    // 2026-11-25T12:40:01.123Z
    CHECK(rfc3339_ms(1795610401123456789ull) == "2026-11-25T12:40:01.123Z");
    CHECK(rfc3339_ms(0) == "1970-01-01T00:00:00.000Z");
  }

  TEST_CASE("durations are milliseconds with microsecond precision") {
    CHECK(ms_from_ns(250441234) == doctest::Approx(250.441));
    CHECK(ms_from_ns(999) == doctest::Approx(0.001));
    CHECK(ms_from_ns(0) == 0.0);
  }

  TEST_CASE("a frame outside any module says so, and is not attributed") {
    StallSample s;
    s.stall_id = 7;
    s.threshold_ms = 100;
    s.blocked_ns = 123456789;
    ResolvedFrame f;
    f.pc = 0xdeadbeef;
    s.frames.push_back(f);
    LoopIdentity who{"loop-x", 42};
    auto r = stall_record(who, 0, s);
    CHECK(r["type"] == "stall");
    CHECK(r["loop"] == "loop-x");
    CHECK(r["tid"] == 42);
    CHECK(r["blocked_ms"] == doctest::Approx(123.457));
    CHECK(r["frames"][0]["pc"] == "0xdeadbeef");
    CHECK(r["frames"][0]["module"].is_null());
    CHECK(r["frames"][0]["offset"].is_null());
    CHECK(r["frames"][0]["symbol"].is_null());
    CHECK(r.begin().key() == "type");  // records read well: type first
  }

  TEST_CASE("run ids are 16 hex digits and stable within a process") {
    CHECK(run_id().size() == 16);
    CHECK(run_id() == run_id());
    CHECK(run_id().find_first_not_of("0123456789abcdef") == std::string::npos);
  }
}

TEST_SUITE("modules") {
  TEST_CASE("an address in the executable resolves to its path, offset and symbol") {
    modules().refresh_from_loader();
    const auto pc = reinterpret_cast<uintptr_t>(&uvstall_unit_marker) + 4;
    ResolvedFrame f = modules().resolve(pc, false);
    REQUIRE(f.module != nullptr);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    REQUIRE(n > 0);
    exe[n] = 0;
    CHECK(f.module->path == exe);
    CHECK(f.symbol == "uvstall_unit_marker");
    CHECK(f.symbol_offset == 4);
    // The ELF address: what addr2line -e EXE expects. Cross-check with the
    // symbol's value in the file via dladdr's base address.
    Dl_info info{};
    REQUIRE(dladdr(reinterpret_cast<void *>(&uvstall_unit_marker), &info) != 0);
    CHECK(f.offset == pc - reinterpret_cast<uintptr_t>(info.dli_fbase));
    CHECK(f.module->build_id.size() == 40);
    CHECK(f.module->build_id == ModuleTable::read_build_id_from_file(exe));
  }

  TEST_CASE("a return address is looked up one byte back") {
    modules().refresh_from_loader();
    const auto start = reinterpret_cast<uintptr_t>(&uvstall_unit_marker);
    // As a return address, the first byte of a function belongs to the
    // function before it: never to this one.
    ResolvedFrame f = modules().resolve(start, true);
    CHECK(f.symbol != "uvstall_unit_marker");
    ResolvedFrame g = modules().resolve(start, false);
    CHECK(g.symbol == "uvstall_unit_marker");
    CHECK(g.symbol_offset == 0);
  }

  TEST_CASE("libc functions resolve to libc with their name") {
    modules().refresh_from_loader();
    void *fn = dlsym(RTLD_DEFAULT, "getpid");
    REQUIRE(fn != nullptr);
    ResolvedFrame f = modules().resolve(reinterpret_cast<uintptr_t>(fn), false);
    REQUIRE(f.module != nullptr);
    CHECK(f.module->path.find("libc.so.6") != std::string::npos);
    CHECK(f.symbol.find("getpid") != std::string::npos);
  }

  TEST_CASE("heap memory is no module") {
    modules().refresh_from_loader();
    void *p = std::malloc(64);
    ResolvedFrame f = modules().resolve(reinterpret_cast<uintptr_t>(p), false);
    CHECK(f.module == nullptr);
    std::free(p);
  }

  TEST_CASE("a library loaded after the table was built is found via /proc/self/maps") {
    modules().refresh_from_loader();
    const char *plugin = std::getenv("UVSTALL_TEST_PLUGIN");
    REQUIRE(plugin != nullptr);
    void *lib = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(lib != nullptr);
    void *fn = dlsym(lib, "uvstall_test_plugin_fn");
    REQUIRE(fn != nullptr);
    ResolvedFrame f = modules().resolve(reinterpret_cast<uintptr_t>(fn) + 1, false);
    REQUIRE(f.module != nullptr);
    CHECK(f.module->path.find("plugin") != std::string::npos);
    CHECK(f.symbol == "uvstall_test_plugin_fn");
    CHECK(f.symbol_offset == 1);
    Dl_info info{};
    REQUIRE(dladdr(fn, &info) != 0);
    CHECK(f.module->bias == reinterpret_cast<uintptr_t>(info.dli_fbase));
  }
}
