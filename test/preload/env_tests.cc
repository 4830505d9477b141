// Preload mode's pure parts: the UVSTALL_* environment parser (src/env.cc)
// and the parser of CPython's traceback dumper output (src/lang_python.cc).
#include <doctest/doctest.h>
#include <signal.h>

#include <map>
#include <string>
#include <vector>

#include "env.h"
#include "lang_python.h"

using uvstall::internal::EnvSettings;
using uvstall::internal::expand_output_path;
using uvstall::internal::parse_python_traceback;
using uvstall::internal::parse_signal;
using uvstall::internal::python_unescape;
using uvstall::internal::quote_env_value;
using uvstall::internal::read_env;

namespace {

EnvSettings env(std::map<std::string, std::string> vars) {
  return read_env([vars](const char *name) -> const char * {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

}  // namespace

TEST_SUITE("env") {
  TEST_CASE("no variables: the C API's defaults and no warning") {
    EnvSettings e = env({});
    uvstall_options_t d;
    uvstall_options_init(&d);
    CHECK(e.warnings.empty());
    CHECK(e.opts.interval_ms == d.interval_ms);
    CHECK(e.opts.threshold_ms == 0);
    CHECK(e.opts.max_frames == d.max_frames);
    CHECK(e.opts.capture_timeout_ms == d.capture_timeout_ms);
    CHECK(e.opts.output_path == nullptr);
    CHECK_FALSE(e.process_set);
    CHECK(e.output_path.empty());
    CHECK_FALSE(e.no_children);
  }

  TEST_CASE("good values are taken") {
    EnvSettings e = env({{"UVSTALL_INTERVAL_MS", "10"},
                         {"UVSTALL_THRESHOLD_MS", "50"},
                         {"UVSTALL_MAX_FRAMES", "256"},
                         {"UVSTALL_CAPTURE_TIMEOUT_MS", "1"},
                         {"UVSTALL_MAX_QUEUED_REPORTS", "7"},
                         {"UVSTALL_SIGNAL", "SIGUSR2"},
                         {"UVSTALL_OUTPUT_PATH", "/tmp/s-%p.jsonl"},
                         {"UVSTALL_NO_CHILDREN", "1"}});
    CHECK(e.warnings.empty());
    CHECK(e.opts.interval_ms == 10);
    CHECK(e.opts.threshold_ms == 50);
    CHECK(e.opts.max_frames == 256);
    CHECK(e.opts.capture_timeout_ms == 1);
    CHECK(e.popts.max_queued_reports == 7);
    CHECK(e.popts.signal == SIGUSR2);
    CHECK(e.process_set);
    CHECK(e.output_path == "/tmp/s-%p.jsonl");
    CHECK(e.no_children);
  }

  TEST_CASE("each bad value: one warning naming the variable and the range, then the default") {
    const std::map<std::string, std::string> bad = {
        {"UVSTALL_INTERVAL_MS", "0"},         {"UVSTALL_INTERVAL_MS", "3600001"},
        {"UVSTALL_THRESHOLD_MS", "abc"},      {"UVSTALL_THRESHOLD_MS", "-5"},
        {"UVSTALL_MAX_FRAMES", "257"},        {"UVSTALL_MAX_FRAMES", " 64"},
        {"UVSTALL_CAPTURE_TIMEOUT_MS", ""},   {"UVSTALL_MAX_QUEUED_REPORTS", "99999999999"},
        {"UVSTALL_SIGNAL", "SIGKILL"},        {"UVSTALL_NO_CHILDREN", "yes"}};
    for (const auto &[name, value] : bad) {
      CAPTURE(name);
      CAPTURE(value);
      EnvSettings e = env({{name, value}});
      REQUIRE(e.warnings.size() == 1);
      const std::string &w = e.warnings[0];
      CHECK(w.find(name + "=\"" + value + "\"") != std::string::npos);
      CHECK(w.find("accepted ") != std::string::npos);
      CHECK(w.find("using the default") != std::string::npos);
      CHECK(w.find('\n') == std::string::npos);
      EnvSettings d = env({});
      CHECK(e.opts.interval_ms == d.opts.interval_ms);
      CHECK(e.opts.threshold_ms == d.opts.threshold_ms);
      CHECK(e.opts.max_frames == d.opts.max_frames);
      CHECK(e.popts.signal == d.popts.signal);
      CHECK(e.popts.max_queued_reports == d.popts.max_queued_reports);
      CHECK_FALSE(e.process_set);
    }
  }

  TEST_CASE("the threshold must be at least twice the interval") {
    EnvSettings e = env({{"UVSTALL_INTERVAL_MS", "100"}, {"UVSTALL_THRESHOLD_MS", "150"}});
    REQUIRE(e.warnings.size() == 1);
    CHECK(e.warnings[0].find("UVSTALL_THRESHOLD_MS=\"150\"") != std::string::npos);
    CHECK(e.warnings[0].find("200..3600000") != std::string::npos);
    CHECK(e.opts.interval_ms == 100);
    CHECK(e.opts.threshold_ms == 0);  // automatic
    CHECK(env({{"UVSTALL_INTERVAL_MS", "100"}, {"UVSTALL_THRESHOLD_MS", "200"}}).warnings.empty());
  }

  TEST_CASE("several bad values: one line each") {
    EnvSettings e = env({{"UVSTALL_INTERVAL_MS", "x"}, {"UVSTALL_MAX_FRAMES", "0"},
                         {"UVSTALL_SIGNAL", "99"}});
    CHECK(e.warnings.size() == 3);
  }

  TEST_CASE("signals by name or number") {
    int s = 0;
    CHECK((parse_signal("SIGUSR1", &s) && s == SIGUSR1));
    CHECK((parse_signal("USR2", &s) && s == SIGUSR2));
    CHECK((parse_signal("SIGRTMIN", &s) && s == SIGRTMIN));
    CHECK((parse_signal("SIGRTMIN+2", &s) && s == SIGRTMIN + 2));
    CHECK((parse_signal("RTMAX-3", &s) && s == SIGRTMAX - 3));
    CHECK((parse_signal(std::to_string(SIGRTMAX).c_str(), &s) && s == SIGRTMAX));
    CHECK_FALSE(parse_signal("SIGINT", &s));
    CHECK_FALSE(parse_signal("9", &s));
    CHECK_FALSE(parse_signal("SIGRTMAX+1", &s));
    CHECK_FALSE(parse_signal("SIGRTMIN+100", &s));
    CHECK_FALSE(parse_signal("SIG40", &s));
    CHECK_FALSE(parse_signal("", &s));
  }

  TEST_CASE("%p in the output path is the pid") {
    CHECK(expand_output_path("/tmp/s-%p.jsonl", 42) == "/tmp/s-42.jsonl");
    CHECK(expand_output_path("/tmp/%p/%p", 7) == "/tmp/7/7");
    CHECK(expand_output_path("/tmp/100%%-%p", 7) == "/tmp/100%-7");
    CHECK(expand_output_path("/tmp/a%b%", 7) == "/tmp/a%b%");
  }
}

TEST_SUITE("lang_python") {
  TEST_CASE("the dumper's text becomes frames, innermost first") {
    const std::string text =
        "Stack (most recent call first):\n"
        "  File \"/srv/app.py\", line 50 in handle_sleep\n"
        "  File \"/srv/with \\\", line \\\" in it.py\", line 7 in <module>\n"
        "  File ???, line ??? in ???\n"
        "  ...\n";
    auto f = parse_python_traceback(text);
    REQUIRE(f.size() == 3);
    CHECK(f[0]["lang"] == "python");
    CHECK(f[0]["function"] == "handle_sleep");
    CHECK(f[0]["file"] == "/srv/app.py");
    CHECK(f[0]["line"] == 50);
    CHECK(f[1]["file"] == "/srv/with \\\", line \\\" in it.py");
    CHECK(f[1]["line"] == 7);
    CHECK(f[2]["function"].is_null());
    CHECK(f[2]["file"].is_null());
    CHECK(f[2]["line"].is_null());
  }

  TEST_CASE("no Python frame, a cut last line, garbage: no frames") {
    CHECK(parse_python_traceback("Stack (most recent call first):\n  <no Python frame>\n").empty());
    CHECK(parse_python_traceback("  File \"/a.py\", line 3 in f").empty());
    CHECK(parse_python_traceback("\x01\x02 File line in\n").empty());
  }

  TEST_CASE("non-ASCII escapes are decoded to UTF-8") {
    CHECK(python_unescape("caf\\xe9") == "caf\xc3\xa9");
    CHECK(python_unescape("\\u20ac") == "\xe2\x82\xac");
    CHECK(python_unescape("\\U0001f600") == "\xf0\x9f\x98\x80");
    CHECK(python_unescape("C:\\path\\xz") == "C:\\path\\xz");
    CHECK(python_unescape("end\\") == "end\\");
  }
}

TEST_SUITE("env") {
  TEST_CASE("metrics variables: interval per loop, address and file per process") {
    EnvSettings e = env({{"UVSTALL_METRICS_INTERVAL_MS", "1000"},
                         {"UVSTALL_METRICS_ADDR", "9464"},
                         {"UVSTALL_METRICS_FILE", "/tmp/uvstall-%p.prom"}});
    CHECK(e.warnings.empty());
    CHECK(e.opts.metrics_interval_ms == 1000);
    CHECK(e.metrics_addr == "9464");
    CHECK(e.metrics_file == "/tmp/uvstall-%p.prom");
    CHECK(e.process_set);
    for (const char *bad : {"50", "86400001", "x"}) {
      EnvSettings b = env({{"UVSTALL_METRICS_INTERVAL_MS", bad}});
      REQUIRE(b.warnings.size() == 1);
      CHECK(b.warnings[0].find("UVSTALL_METRICS_INTERVAL_MS") != std::string::npos);
      CHECK(b.opts.metrics_interval_ms == 0);
    }
    EnvSettings b = env({{"UVSTALL_METRICS_ADDR", "localhost:9464"},
                         {"UVSTALL_METRICS_FILE", "/nonexistent-dir/m.prom"}});
    CHECK(b.warnings.size() == 2);
    CHECK(b.metrics_addr.empty());
    CHECK(b.metrics_file.empty());
    CHECK_FALSE(b.process_set);
  }
}

// Bad inputs (issue 11): every variable fed values a shell, a typo or an
// attacker could put there. Whatever the value, the user sees one printable
// line naming the variable and what it accepts, and the default is in force.
namespace {

// The settings that matter to a user, for comparison with the defaults.
std::string effective(const EnvSettings &e) {
  const uvstall_options_t &o = e.opts;
  const uvstall_process_options_t &p = e.popts;
  return "interval=" + std::to_string(o.interval_ms) + " threshold=" +
         std::to_string(o.threshold_ms) + " frames=" + std::to_string(o.max_frames) +
         " capture=" + std::to_string(o.capture_timeout_ms) + " samples=" +
         std::to_string(o.max_samples_per_stall) + " abort=" + std::to_string(o.abort_after_ms) +
         " metrics_interval=" + std::to_string(o.metrics_interval_ms) + " signal=" +
         std::to_string(p.signal) + " queue=" + std::to_string(p.max_queued_reports) +
         " rate=" + std::to_string(p.max_stalls_per_minute) + " summary=" +
         std::to_string(p.summary_interval_ms) + " addr=" + e.metrics_addr + " file=" +
         e.metrics_file + " no_children=" + std::to_string(e.no_children) +
         " process_set=" + std::to_string(e.process_set);
}

// Values that no numeric variable accepts.
const std::vector<std::string> kNotANumber = {
    "", "-1", "-0", "+5", "99999999999999999999", "4294967296", "18446744073709551621",
    "1e3", "0x10", " 5", "5 ", "5ms", "5\n", "\t5", "5.0", "1,000", "NaN", "inf",
    "\xef\xbc\x95" /* fullwidth 5 */, "\xff\xfe\x80", "\"5\"", "a\nb\rc\x1b[31m",
    std::string(100000, 'x'), std::string(100000, '9'), std::string(5000, '0') + "x",
    std::string(100000, '\xff')};

void check_one_warning(const EnvSettings &e, const std::string &name,
                       const std::string &range) {
  REQUIRE(e.warnings.size() == 1);
  const std::string &w = e.warnings[0];
  CAPTURE(w);
  CHECK(w.rfind("uvstall: ignoring " + name + "=\"", 0) == 0);
  CHECK(w.find("accepted " + range) != std::string::npos);
  CHECK(w.find("; using the default ") != std::string::npos);
  CHECK(w.size() < 400);  // the value is cut, the line stays readable
  for (unsigned char c : w) CHECK((c >= 0x20 && c < 0x7f));  // one printable line
}

}  // namespace

TEST_SUITE("env") {
  TEST_CASE("every numeric variable fuzzed: one line naming it and its range, the default") {
    struct Var {
      const char *name;
      const char *range;  // as the warning says it
      std::vector<std::string> out_of_range;
    };
    const Var vars[] = {
        {"UVSTALL_INTERVAL_MS", "1..3600000", {"0", "3600001", "4294967295"}},
        {"UVSTALL_THRESHOLD_MS", "0 (automatic) or ", {"3600001", "1", "39"}},
        {"UVSTALL_MAX_FRAMES", "1..256", {"0", "257"}},
        {"UVSTALL_CAPTURE_TIMEOUT_MS", "1..10000", {"0", "10001"}},
        {"UVSTALL_MAX_QUEUED_REPORTS", "1..1000000", {"0", "1000001"}},
        {"UVSTALL_MAX_SAMPLES_PER_STALL", "1..64", {"0", "65"}},
        {"UVSTALL_ABORT_AFTER_MS", "0 (off) or ", {"3600001", "1", "99"}},
        {"UVSTALL_MAX_STALLS_PER_MINUTE", "0 (unlimited)..1000000", {"1000001"}},
        {"UVSTALL_SUMMARY_INTERVAL_MS", "0 (at stop and exit only) or 100..86400000",
         {"1", "99", "86400001"}},
        {"UVSTALL_METRICS_INTERVAL_MS", "0 (off) or 100..86400000", {"1", "99", "86400001"}},
    };
    const std::string defaults = effective(env({}));
    for (const Var &v : vars) {
      std::vector<std::string> values = kNotANumber;
      values.insert(values.end(), v.out_of_range.begin(), v.out_of_range.end());
      for (const std::string &value : values) {
        CAPTURE(v.name);
        CAPTURE(value.substr(0, 40));
        const EnvSettings e = env({{v.name, value}});
        check_one_warning(e, v.name, v.range);
        CHECK(effective(e) == defaults);
      }
    }
  }

  TEST_CASE("the abort must not come before the threshold in force") {
    // The automatic threshold is 100 ms: 99 would be refused by uvstall_start,
    // which would leave the loop unwatched.
    const EnvSettings e = env({{"UVSTALL_ABORT_AFTER_MS", "99"}});
    check_one_warning(e, "UVSTALL_ABORT_AFTER_MS", "0 (off) or 100..3600000");
    CHECK(e.opts.abort_after_ms == 0);
    const EnvSettings t = env({{"UVSTALL_THRESHOLD_MS", "500"}, {"UVSTALL_ABORT_AFTER_MS", "400"}});
    check_one_warning(t, "UVSTALL_ABORT_AFTER_MS", "0 (off) or 500..3600000");
    CHECK(t.opts.threshold_ms == 500);
    CHECK(env({{"UVSTALL_ABORT_AFTER_MS", "100"}}).opts.abort_after_ms == 100);
  }

  TEST_CASE("the text variables fuzzed: one line naming each, the default") {
    struct Var {
      const char *name;
      const char *range;
      std::vector<std::string> bad;
    };
    const std::string huge(100000, 'a');
    const Var vars[] = {
        {"UVSTALL_SIGNAL", "SIGUSR1, SIGUSR2, SIGRTMIN..SIGRTMAX",
         {"", "0", "-1", "-0", "9", "SIGKILL", "SIG", "sigusr1", "SIGRTMIN+", "SIGRTMIN-1",
          "RTMAX+1", "SIGRTMAX-99999999999999999999", "SIGRTMIN+4294967296", " 10", "10 ", "0x0a",
          "1e1", "99999999999999999999", "SIGUSR1\n", "\xff", huge}},
        {"UVSTALL_METRICS_ADDR", "PORT, HOST:PORT or [IPV6]:PORT",
         {"0", "65536", "99999999999999999999", "-1", "localhost:9464", ":9464", "1.2.3.4:",
          "[::1]", "[::1]:", "[]:80", "[", "]:80", "::1:9464", " 9464", "9464 ", "0x2000", "1e3",
          "1.2.3.4:9464\n", "\xff:80", "127.0.0.1:" + huge, huge + ":80"}},
        {"UVSTALL_METRICS_FILE", "a path in a writable directory",
         {"/nonexistent-dir/m.prom", "/", "/tmp/", "/proc/1/no/such/x", "\xff/x",
          "/tmp/" + huge + "/m.prom", "/nonexistent-dir/a\nb"}},
        {"UVSTALL_NO_CHILDREN", "0 or 1", {"yes", "2", " 1", "1 ", "true", "-1", "01", huge}},
    };
    const std::string defaults = effective(env({}));
    for (const Var &v : vars) {
      for (const std::string &value : v.bad) {
        CAPTURE(v.name);
        CAPTURE(value.substr(0, 40));
        const EnvSettings e = env({{v.name, value}});
        check_one_warning(e, v.name, v.range);
        CHECK(effective(e) == defaults);
      }
    }
    // Empty means "off" for these three: the default, quietly.
    for (const char *name : {"UVSTALL_METRICS_ADDR", "UVSTALL_METRICS_FILE", "UVSTALL_NO_CHILDREN"}) {
      const EnvSettings e = env({{name, ""}});
      CHECK(e.warnings.empty());
      CHECK(effective(e) == defaults);
    }
  }

  TEST_CASE("a value is quoted on one printable line, cut when long") {
    CHECK(quote_env_value("abc 5") == "abc 5");
    CHECK(quote_env_value("a\"b\\c") == "a\\\"b\\\\c");
    CHECK(quote_env_value("a\nb\x1b") == "a\\x0ab\\x1b");
    CHECK(quote_env_value("caf\xc3\xa9") == "caf\\xc3\\xa9");
    const std::string q = quote_env_value(std::string(100000, 'x').c_str());
    CHECK(q == std::string(80, 'x') + "... (100000 bytes)");
    // The cut counts what is shown (found by test/fuzz: 80 bytes of \xff
    // made a 320-character quote).
    const std::string e = quote_env_value(std::string(1000, '\xff').c_str());
    CHECK(e.size() < 110);
    CHECK(e.rfind("\\xff\\xff", 0) == 0);
    CHECK(e.find("... (1000 bytes)") != std::string::npos);
  }

  TEST_CASE("all variables bad at once: one line each, every default") {
    std::map<std::string, std::string> all;
    for (const char *name :
         {"UVSTALL_INTERVAL_MS", "UVSTALL_THRESHOLD_MS", "UVSTALL_MAX_FRAMES",
          "UVSTALL_CAPTURE_TIMEOUT_MS", "UVSTALL_MAX_QUEUED_REPORTS",
          "UVSTALL_MAX_SAMPLES_PER_STALL", "UVSTALL_ABORT_AFTER_MS",
          "UVSTALL_MAX_STALLS_PER_MINUTE", "UVSTALL_SUMMARY_INTERVAL_MS",
          "UVSTALL_METRICS_INTERVAL_MS", "UVSTALL_METRICS_ADDR", "UVSTALL_METRICS_FILE",
          "UVSTALL_SIGNAL", "UVSTALL_NO_CHILDREN"})
      all[name] = "-1\n";
    all["UVSTALL_METRICS_FILE"] = "/nonexistent-dir/-1\n";  // "-1\n" alone is a fine file name
    const EnvSettings e = env(all);
    CHECK(e.warnings.size() == all.size());
    for (const auto &[name, value] : all) {
      int n = 0;
      const std::string quoted = name + "=\"" + quote_env_value(value.c_str()) + "\"";
      for (const auto &w : e.warnings) n += w.find(quoted) != std::string::npos;
      CHECK(quoted.find("-1\\x0a\"") != std::string::npos);
      CHECK_MESSAGE(n == 1, name);
    }
    CHECK(effective(e) == effective(env({})));
  }
}
