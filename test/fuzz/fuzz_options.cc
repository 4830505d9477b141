// libFuzzer target for everything uvstall parses from a user: the UVSTALL_*
// environment (src/env.cc), the C options structs (resolve_options and
// resolve_process_options in src/config.cc), the metrics address and the
// application context (src/context.cc). Built and run by test/fuzz/run
// with clang's -fsanitize=fuzzer,address,undefined; a crash, a sanitizer
// report or a broken promise below aborts the run.
//
// The promises checked, whatever the input:
//   - each warning is one printable ASCII line, shorter than 400 bytes, and
//     no variable gets more than one;
//   - the settings read_env returns are accepted by the library
//     (resolve_options/resolve_process_options return 0): a bad value never
//     leaves a loop unwatched;
//   - options the resolver accepts are within their documented ranges;
//   - context records are valid JSON, keys 1..31 bytes, values <= 127.
//
// Input: the first byte picks the part; the rest is split at NUL bytes
// (an environment value cannot hold one).
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.h"
#include "env.h"
#include "watch.h"

using namespace uvstall::internal;

namespace {

// Every variable read_env knows, and one it does not.
const char *const kVars[] = {
    "UVSTALL_INTERVAL_MS",          "UVSTALL_THRESHOLD_MS",        "UVSTALL_MAX_FRAMES",
    "UVSTALL_CAPTURE_TIMEOUT_MS",   "UVSTALL_MAX_QUEUED_REPORTS",  "UVSTALL_MAX_SAMPLES_PER_STALL",
    "UVSTALL_ABORT_AFTER_MS",       "UVSTALL_MAX_STALLS_PER_MINUTE", "UVSTALL_SUMMARY_INTERVAL_MS",
    "UVSTALL_METRICS_INTERVAL_MS",  "UVSTALL_METRICS_ADDR",        "UVSTALL_METRICS_FILE",
    "UVSTALL_SIGNAL",               "UVSTALL_NO_CHILDREN",         "UVSTALL_OUTPUT_PATH",
    "UVSTALL_STACK_WINDOW_KB",      "UVSTALL_UNKNOWN"};
constexpr size_t kNumVars = sizeof(kVars) / sizeof(kVars[0]);

void require(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_options: broken promise: %s\n", what);
    abort();
  }
}

std::vector<std::string> split(const uint8_t *data, size_t size) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      parts.emplace_back();
    } else {
      parts.back() += char(data[i]);
    }
  }
  return parts;
}

// Each part: its first byte picks the variable, the rest is the value.
void fuzz_env(const std::vector<std::string> &parts) {
  std::map<std::string, std::string> vars;
  for (const std::string &p : parts) {
    if (p.empty()) continue;
    vars[kVars[uint8_t(p[0]) % kNumVars]] = p.substr(1);
  }
  const EnvSettings e = read_env([&](const char *name) -> const char * {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
  require(e.warnings.size() <= vars.size(), "at most one warning per variable");
  for (const std::string &w : e.warnings) {
    require(w.size() < 400, "a warning is short");
    for (unsigned char c : w) require(c >= 0x20 && c < 0x7f, "a warning is printable ASCII");
    size_t named = 0;
    for (const auto &[name, value] : vars)
      named += w.rfind("uvstall: ignoring " + name + "=\"", 0) == 0;
    require(named == 1, "a warning names its variable");
  }
  for (const auto &[name, value] : vars) {
    size_t n = 0;
    for (const std::string &w : e.warnings) n += w.rfind("uvstall: ignoring " + name + "=\"", 0) == 0;
    require(n <= 1, "one warning per variable");
  }

  // What preload mode hands the library must be accepted by it.
  Config c;
  require(resolve_options(&e.opts, &c) == 0, "the parsed options are accepted");
  uvstall_process_options_t p = e.popts;
  const std::string file = expand_output_path(e.metrics_file, getpid());
  if (!e.metrics_addr.empty()) p.metrics_addr = e.metrics_addr.c_str();
  if (!e.metrics_file.empty()) p.metrics_file = file.c_str();
  ProcessConfig pc;
  require(resolve_process_options(&p, &pc) == 0, "the parsed process options are accepted");

  for (const auto &[name, value] : vars) {
    int sig = 0;
    if (parse_signal(value.c_str(), &sig)) require(usable_signal(sig), "a parsed signal is usable");
    std::string host;
    uint16_t port = 0;
    if (parse_metrics_addr(value.c_str(), &host, &port)) require(port >= 1, "a port is 1..65535");
    require(expand_output_path(value, 42).size() <= value.size() * 2 + 2, "%p expands sanely");
  }
}

uint32_t take_u32(const std::string &s, size_t i) {
  uint32_t v = 0;
  for (size_t k = 0; k < 4; ++k) v = v << 8 | (i + k < s.size() ? uint8_t(s[i + k]) : 0);
  return v;
}

// Raw field values (and strings) through the resolvers.
void fuzz_structs(const std::vector<std::string> &parts) {
  const std::string &n = parts[0];
  const std::string name = parts.size() > 1 ? parts[1] : "";
  const std::string path = parts.size() > 2 ? parts[2] : "";
  const std::string addr = parts.size() > 3 ? parts[3] : "";
  uvstall_options_t o;
  uvstall_options_init(&o);
  o.struct_size = take_u32(n, 0) % (sizeof(o) + 16);
  o.interval_ms = take_u32(n, 4);
  o.threshold_ms = take_u32(n, 8);
  o.max_frames = take_u32(n, 12);
  o.capture_timeout_ms = take_u32(n, 16);
  o.max_samples_per_stall = take_u32(n, 20);
  o.abort_after_ms = take_u32(n, 24);
  o.metrics_interval_ms = take_u32(n, 28);
  // Its default when the input is too short to set it (the success path
  // stays reachable from the existing corpus).
  if (n.size() >= 60) o.stack_window_kb = take_u32(n, 56);
  const uint32_t which = take_u32(n, 32);
  o.loop_name = which & 1 ? name.c_str() : nullptr;
  o.output_path = which & 2 ? path.c_str() : nullptr;
  if (n.size() < 32) uvstall_options_init(&o);  // also the defaults, often
  Config c;
  if (resolve_options(&o, &c) == 0) {
    require(c.interval_ms >= 1 && c.interval_ms <= kMaxIntervalMs, "interval in range");
    require(c.threshold_ms >= 2 * uint64_t(c.interval_ms) || c.threshold_ms == kMinAutoThresholdMs ||
                c.threshold_ms == kMaxThresholdMs,
            "threshold at least twice the interval");
    require(c.threshold_ms >= 1 && c.threshold_ms <= kMaxThresholdMs, "threshold in range");
    require(c.max_frames >= 1 && c.max_frames <= kMaxFrames, "frames in range");
    require(c.capture_timeout_ms >= 1 && c.capture_timeout_ms <= kMaxCaptureTimeoutMs,
            "capture timeout in range");
    require(c.loop_name.size() <= kMaxLoopNameBytes, "loop name short");
    require(c.max_samples_per_stall >= 1 && c.max_samples_per_stall <= kMaxSamples,
            "samples in range");
    require(c.abort_after_ms == 0 || c.abort_after_ms >= c.threshold_ms, "abort after threshold");
    require(c.stack_window_kb >= kMinStackWindowKb && c.stack_window_kb <= kMaxStackWindowKb,
            "stack window in range");
  }

  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  p.struct_size = take_u32(n, 36) % (sizeof(p) + 16);
  p.signal = int(take_u32(n, 40));
  p.max_queued_reports = take_u32(n, 44);
  p.max_stalls_per_minute = take_u32(n, 48);
  p.summary_interval_ms = take_u32(n, 52);
  p.metrics_addr = which & 4 ? addr.c_str() : nullptr;
  p.metrics_file = which & 8 ? path.c_str() : nullptr;
  ProcessConfig pc;
  if (resolve_process_options(&p, &pc) == 0) {
    require(usable_signal(pc.signal), "signal usable");
    require(pc.max_queued_reports >= 1 && pc.max_queued_reports <= kMaxQueuedReports,
            "queue in range");
    require(pc.summary_interval_ms == 0 || pc.summary_interval_ms >= kMinSummaryIntervalMs,
            "summary interval in range");
    require(pc.metrics_host.empty() == (pc.metrics_port == 0), "address and port together");
  }
}

// uvstall_set_context's slots: keys and values of any bytes, then the
// record's "context" as the sentinel writes it.
void fuzz_context(const std::vector<std::string> &parts) {
  ContextSlot slot;
  for (size_t i = 0; i + 1 < parts.size(); i += 2) {
    const bool remove = !parts[i + 1].empty() && parts[i + 1][0] == '\x7f';
    const int rc = context_set(&slot, parts[i].c_str(), remove ? nullptr : parts[i + 1].c_str());
    require(rc == 0 || rc == UVSTALL_ECONTEXT, "set_context: 0 or ECONTEXT");
    require(rc == 0 || parts[i].empty() || parts[i].size() >= size_t(kContextKeyBytes) || !remove,
            "a removal never fails");
  }
  const nlohmann::ordered_json ctx = context_read(&slot);
  const std::string line =
      ctx.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  const nlohmann::json back = nlohmann::json::parse(line, nullptr, false);
  require(!back.is_discarded(), "the context is valid JSON");
  require(back.is_null() || back.is_object(), "the context is an object");
  if (back.is_object()) {
    require(back.size() <= size_t(kContextKeys), "at most 8 keys");
    for (const auto &[k, v] : back.items()) {
      require(!k.empty() && k.size() < size_t(kContextKeyBytes) * 3, "key 1..31 bytes");
      require(v.is_string() && v.get<std::string>().size() < size_t(kContextValueBytes) * 3,
              "value at most 127 bytes");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const std::vector<std::string> parts = split(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      fuzz_env(parts);
      break;
    case 1:
      fuzz_structs(parts);
      break;
    default:
      fuzz_context(parts);
      break;
  }
  return 0;
}
