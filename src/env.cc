// UVSTALL_* environment variables (see env.h). Only the public C API and the
// limits in config.h are used, so the preload shim can compile this file
// next to libuvstall.so without a second copy of the library's internals.
#include "env.h"

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <unistd.h>

#include "config.h"

namespace uvstall::internal {
namespace {

// One numeric variable: its range, its default and where it goes.
struct NumericVar {
  const char *name;
  uint32_t min;
  uint32_t max;
  uint32_t min_nonzero;      // values 1..min_nonzero-1 are refused too (0 means off)
  const char *accepted;      // the range as users read it
  const char *default_text;  // the default as users read it
  uint32_t uvstall_options_t::*field;            // per-loop field, or
  uint32_t uvstall_process_options_t::*pfield;   // process-wide field
};

const NumericVar kNumericVars[] = {
    {"UVSTALL_INTERVAL_MS", 1, kMaxIntervalMs, 0, "1..3600000 (milliseconds)", "20",
     &uvstall_options_t::interval_ms, nullptr},
    {"UVSTALL_THRESHOLD_MS", 0, kMaxThresholdMs, 0,
     "0 (automatic) or 2 x interval..3600000 (milliseconds)", "0 (automatic: max(100, 2 x interval))",
     &uvstall_options_t::threshold_ms, nullptr},
    {"UVSTALL_MAX_FRAMES", 1, kMaxFrames, 0, "1..256", "64", &uvstall_options_t::max_frames, nullptr},
    {"UVSTALL_CAPTURE_TIMEOUT_MS", 1, kMaxCaptureTimeoutMs, 0, "1..10000 (milliseconds)", "50",
     &uvstall_options_t::capture_timeout_ms, nullptr},
    {"UVSTALL_MAX_QUEUED_REPORTS", 1, kMaxQueuedReports, 0, "1..1000000", "1024", nullptr,
     &uvstall_process_options_t::max_queued_reports},
    {"UVSTALL_MAX_SAMPLES_PER_STALL", 1, kMaxSamples, 0, "1..64", "8",
     &uvstall_options_t::max_samples_per_stall, nullptr},
    {"UVSTALL_ABORT_AFTER_MS", 0, kMaxAbortAfterMs, 0,
     "0 (off) or threshold..3600000 (milliseconds)", "0 (off)",
     &uvstall_options_t::abort_after_ms, nullptr},
    {"UVSTALL_MAX_STALLS_PER_MINUTE", 0, kMaxStallsPerMinute, 0, "0 (unlimited)..1000000", "60",
     nullptr, &uvstall_process_options_t::max_stalls_per_minute},
    {"UVSTALL_SUMMARY_INTERVAL_MS", 0, kMaxSummaryIntervalMs, kMinSummaryIntervalMs,
     "0 (at stop and exit only) or 100..86400000 (milliseconds)", "60000", nullptr,
     &uvstall_process_options_t::summary_interval_ms},
    {"UVSTALL_METRICS_INTERVAL_MS", 0, kMaxMetricsIntervalMs, kMinMetricsIntervalMs,
     "0 (off) or 100..86400000 (milliseconds)", "0 (off)", &uvstall_options_t::metrics_interval_ms,
     nullptr},
    {"UVSTALL_STACK_WINDOW_KB", kMinStackWindowKb, kMaxStackWindowKb, 0, "4..1024 (KiB)", "64",
     &uvstall_options_t::stack_window_kb, nullptr},
};

// Decimal digits only: no sign, no spaces, no suffix.
bool parse_u32(const char *text, uint32_t *out) {
  if (text == nullptr || *text == '\0') return false;
  uint64_t v = 0;
  for (const char *p = text; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9') return false;
    v = v * 10 + uint64_t(*p - '0');
    if (v > UINT32_MAX) return false;
  }
  *out = uint32_t(v);
  return true;
}

std::string warning(const char *name, const char *value, const std::string &accepted,
                    const char *default_text) {
  return std::string("uvstall: ignoring ") + name + "=\"" + quote_env_value(value) +
         "\": accepted " + accepted + "; using the default " + default_text;
}

}  // namespace

std::string quote_env_value(const char *value) {
  static const char kHex[] = "0123456789abcdef";
  const size_t len = std::strlen(value);
  std::string out;
  size_t i = 0;
  for (; i < len && out.size() < kMaxQuotedValueBytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (i < len) out += "... (" + std::to_string(len) + " bytes)";
  return out;
}

bool parse_signal(const char *text, int *out) {
  if (text == nullptr) return false;
  std::string s(text);
  if (s.compare(0, 3, "SIG") == 0) s.erase(0, 3);
  int sig = -1;
  uint32_t n = 0;
  if (s == "USR1") {
    sig = SIGUSR1;
  } else if (s == "USR2") {
    sig = SIGUSR2;
  } else if (s.compare(0, 5, "RTMIN") == 0 || s.compare(0, 5, "RTMAX") == 0) {
    const bool min = s[4] == 'N';
    const std::string rest = s.substr(5);
    if (rest.empty()) {
      sig = min ? SIGRTMIN : SIGRTMAX;
    } else if (rest[0] == (min ? '+' : '-') && parse_u32(rest.c_str() + 1, &n) &&
               n <= uint32_t(SIGRTMAX - SIGRTMIN)) {
      sig = min ? SIGRTMIN + int(n) : SIGRTMAX - int(n);
    }
  } else if (parse_u32(s.c_str(), &n) && n < 1024 && s == text) {
    sig = int(n);
  }
  if (!usable_signal(sig)) return false;
  *out = sig;
  return true;
}

std::string expand_output_path(const std::string &path, pid_t pid) {
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '%' && i + 1 < path.size() && path[i + 1] == 'p') {
      out += std::to_string(pid);
      ++i;
    } else if (path[i] == '%' && i + 1 < path.size() && path[i + 1] == '%') {
      out += '%';
      ++i;
    } else {
      out += path[i];
    }
  }
  return out;
}

EnvSettings read_env(const EnvLookup &get) {
  EnvSettings e;
  uvstall_options_init(&e.opts);
  uvstall_process_options_init(&e.popts);

  for (const NumericVar &v : kNumericVars) {
    const char *text = get(v.name);
    if (text == nullptr) continue;
    uint32_t n = 0;
    if (!parse_u32(text, &n) || n < v.min || n > v.max || (n != 0 && n < v.min_nonzero)) {
      e.warnings.push_back(warning(v.name, text, v.accepted, v.default_text));
      continue;
    }
    if (v.field != nullptr) {
      e.opts.*v.field = n;
    } else {
      e.popts.*v.pfield = n;
      e.process_set = true;
    }
  }
  // The threshold's range depends on the interval (validated above or default).
  if (e.opts.threshold_ms != 0 &&
      uint64_t(e.opts.threshold_ms) < 2 * uint64_t(e.opts.interval_ms)) {
    e.warnings.push_back(warning(
        "UVSTALL_THRESHOLD_MS", get("UVSTALL_THRESHOLD_MS"),
        "0 (automatic) or " + std::to_string(2 * uint64_t(e.opts.interval_ms)) +
            "..3600000 (at least 2 x UVSTALL_INTERVAL_MS)",
        "0 (automatic: max(100, 2 x interval))"));
    e.opts.threshold_ms = 0;
  }

  // And the abort's on the threshold in force (given or automatic).
  const uint32_t threshold =
      e.opts.threshold_ms != 0 ? e.opts.threshold_ms : auto_threshold_ms(e.opts.interval_ms);
  if (e.opts.abort_after_ms != 0 && e.opts.abort_after_ms < threshold) {
    e.warnings.push_back(warning(
        "UVSTALL_ABORT_AFTER_MS", get("UVSTALL_ABORT_AFTER_MS"),
        "0 (off) or " + std::to_string(threshold) + "..3600000 (at least the threshold)",
        "0 (off)"));
    e.opts.abort_after_ms = 0;
  }

  if (const char *text = get("UVSTALL_METRICS_ADDR")) {
    std::string host;
    uint16_t port = 0;
    if (parse_metrics_addr(text, &host, &port)) {
      e.metrics_addr = text;
      e.process_set = true;
    } else if (text[0] != '\0') {
      e.warnings.push_back(warning("UVSTALL_METRICS_ADDR", text,
                                   "PORT, HOST:PORT or [IPV6]:PORT with a numeric address "
                                   "(PORT alone listens on 127.0.0.1)",
                                   "off"));
    }
  }
  if (const char *text = get("UVSTALL_METRICS_FILE")) {
    if (metrics_file_usable(expand_output_path(text, getpid()))) {
      e.metrics_file = text;
      e.process_set = true;
    } else if (text[0] != '\0') {
      e.warnings.push_back(warning("UVSTALL_METRICS_FILE", text,
                                   "a path in a writable directory, not a device or pipe "
                                   "(%p is the pid)",
                                   "off"));
    }
  }

  if (const char *text = get("UVSTALL_SIGNAL")) {
    int sig = 0;
    if (parse_signal(text, &sig)) {
      e.popts.signal = sig;
      e.process_set = true;
    } else {
      e.warnings.push_back(warning(
          "UVSTALL_SIGNAL", text,
          "SIGUSR1, SIGUSR2, SIGRTMIN..SIGRTMAX (" + std::to_string(SIGRTMIN) + ".." +
              std::to_string(SIGRTMAX) + "), by name or number",
          ("SIGRTMAX-3 (" + std::to_string(SIGRTMAX - 3) + ")").c_str()));
    }
  }

  if (const char *text = get("UVSTALL_OUTPUT_PATH")) e.output_path = text;

  if (const char *text = get("UVSTALL_NO_CHILDREN")) {
    if (std::strcmp(text, "1") == 0) {
      e.no_children = true;
    } else if (std::strcmp(text, "0") != 0 && text[0] != '\0') {
      e.warnings.push_back(warning("UVSTALL_NO_CHILDREN", text, "0 or 1", "0"));
    }
  }
  return e;
}

}  // namespace uvstall::internal
