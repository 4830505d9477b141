// Preload mode's pure part: the UVSTALL_* environment parser (src/env.cc).
#include <doctest/doctest.h>
#include <signal.h>

#include <map>
#include <string>
#include <vector>

#include "env.h"

using uvstall::internal::EnvSettings;
using uvstall::internal::expand_output_path;
using uvstall::internal::parse_signal;
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
    CHECK(e.opts.stack_window_kb == 64);
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
                         {"UVSTALL_STACK_WINDOW_KB", "1024"},
                         {"UVSTALL_MAX_QUEUED_REPORTS", "7"},
                         {"UVSTALL_SIGNAL", "SIGUSR2"},
                         {"UVSTALL_OUTPUT_PATH", "/tmp/s-%p.jsonl"},
                         {"UVSTALL_NO_CHILDREN", "1"}});
    CHECK(e.warnings.empty());
    CHECK(e.opts.interval_ms == 10);
    CHECK(e.opts.threshold_ms == 50);
    CHECK(e.opts.max_frames == 256);
    CHECK(e.opts.capture_timeout_ms == 1);
    CHECK(e.opts.stack_window_kb == 1024);
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
        {"UVSTALL_SIGNAL", "SIGKILL"},        {"UVSTALL_NO_CHILDREN", "yes"},
        {"UVSTALL_STACK_WINDOW_KB", "3"}};
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
      CHECK(e.opts.stack_window_kb == d.opts.stack_window_kb);
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
