// Options: defaults, limits and validation. Pure functions, no global state:
// validate once at start and hand the resolved Config to everything else.
#pragma once

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uvstall/uvstall.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <string>

namespace uvstall::internal {

// Limits, named once; the header's error messages quote the same numbers.
constexpr uint32_t kDefaultIntervalMs = 20;
constexpr uint32_t kMaxIntervalMs = 3600000;
constexpr uint32_t kMinAutoThresholdMs = 100;
constexpr uint32_t kMaxThresholdMs = 3600000;
constexpr uint32_t kDefaultMaxFrames = 64;
constexpr uint32_t kMaxFrames = 256;
constexpr uint32_t kDefaultStackWindowKb = 64;
constexpr uint32_t kMinStackWindowKb = 4;
constexpr uint32_t kMaxStackWindowKb = 1024;
constexpr uint32_t kDefaultCaptureTimeoutMs = 50;
constexpr uint32_t kMaxCaptureTimeoutMs = 10000;
constexpr size_t kMaxLoopNameBytes = 63;
constexpr uint32_t kDefaultMaxQueuedReports = 1024;
constexpr uint32_t kMaxQueuedReports = 1000000;
constexpr uint32_t kDefaultMaxSamples = 8;
constexpr uint32_t kMaxSamples = 64;
constexpr uint32_t kMaxAbortAfterMs = 3600000;
constexpr uint32_t kDefaultStallsPerMinute = 60;
constexpr uint32_t kMaxStallsPerMinute = 1000000;
constexpr uint32_t kDefaultSummaryIntervalMs = 60000;
constexpr uint32_t kMinSummaryIntervalMs = 100;
constexpr uint32_t kMaxSummaryIntervalMs = 86400000;
constexpr uint32_t kMinMetricsIntervalMs = 100;
constexpr uint32_t kMaxMetricsIntervalMs = 86400000;
constexpr uint16_t kDefaultMetricsPort = 9464;

// Options of one watch, resolved (threshold computed, strings copied).
struct Config {
  uint32_t interval_ms = kDefaultIntervalMs;
  uint32_t threshold_ms = 0;  // resolved: never 0 after resolve_options
  uint32_t max_frames = kDefaultMaxFrames;
  uint32_t capture_timeout_ms = kDefaultCaptureTimeoutMs;
  std::string loop_name;        // empty = assign "loop-N" at start
  std::string output_path;      // empty with has_output_path false = stderr
  bool has_output_path = false;
  uvstall_report_cb on_report = nullptr;
  void *report_arg = nullptr;
  uint32_t max_samples_per_stall = kDefaultMaxSamples;
  uint32_t abort_after_ms = 0;  // 0: off
  uint32_t metrics_interval_ms = 0;  // 0: no "metrics" records
  uint32_t stack_window_kb = kDefaultStackWindowKb;  // stack copied per capture
};

// Process-wide settings, resolved.
struct ProcessConfig {
  int signal = 0;  // resolved: never 0 after resolve_process_options
  uint32_t max_queued_reports = kDefaultMaxQueuedReports;
  uint32_t max_stalls_per_minute = kDefaultStallsPerMinute;  // 0: unlimited
  uint32_t summary_interval_ms = kDefaultSummaryIntervalMs;  // 0: at exit only
  std::string metrics_host;   // numeric address; empty: no endpoint
  uint16_t metrics_port = 0;
  std::string metrics_file;   // empty: no textfile
};

// "9464", "HOST:9464", "[V6]:9464" into a numeric host and a port (a bare
// port listens on 127.0.0.1). False when malformed. Inline, like the next
// one, so that src/env.cc (built into the preload shim too) checks the
// UVSTALL_* values with the same rules.
inline bool parse_metrics_addr(const char *text, std::string *host, uint16_t *port) {
  if (text == nullptr) return false;
  const std::string s(text);
  std::string h = "127.0.0.1", p = s;
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find("]:");
    if (close == std::string::npos) return false;
    h = s.substr(1, close - 1);
    p = s.substr(close + 2);
  } else if (s.find(':') != std::string::npos) {
    const size_t colon = s.rfind(':');
    h = s.substr(0, colon);
    p = s.substr(colon + 1);
    if (h.find(':') != std::string::npos) return false;  // IPv6 needs brackets
  }
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos)
    return false;
  const unsigned long n = std::stoul(p);
  if (n < 1 || n > 65535) return false;
  unsigned char buf[16];
  if (inet_pton(AF_INET, h.c_str(), buf) != 1 && inet_pton(AF_INET6, h.c_str(), buf) != 1)
    return false;
  *host = h;
  *port = uint16_t(n);
  return true;
}

// The textfile is replaced by rename: its directory must take new files,
// and what is there now must be a regular file (or nothing). A rename over
// /dev/full or /dev/null, as root, would replace the device for the whole
// machine; over a pipe, it would cut off its reader.
inline bool metrics_file_usable(const std::string &path) {
  if (path.empty() || path.back() == '/') return false;
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return false;
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  return access(dir.c_str(), W_OK | X_OK) == 0;
}

// max(100, 2 x interval): the automatic threshold. (Inline: src/env.cc
// checks UVSTALL_ABORT_AFTER_MS against it.)
inline uint32_t auto_threshold_ms(uint32_t interval_ms) {
  const uint64_t twice = uint64_t(interval_ms) * 2;
  return uint32_t(std::min<uint64_t>(std::max<uint64_t>(kMinAutoThresholdMs, twice),
                                     kMaxThresholdMs));
}

// Copies the caller's options (any struct_size from an older header) over
// the defaults and checks every field. Returns 0 or a UVSTALL_E* code.
int resolve_options(const uvstall_options_t *opts, Config *out);
int resolve_process_options(const uvstall_process_options_t *popts,
                            ProcessConfig *out);

// The default capture signal: SIGRTMAX - 3 (rarely used by hosts; glibc
// keeps the first two real-time signals for itself).
int default_signal();
// True for signals uvstall can use: SIGUSR1, SIGUSR2, SIGRTMIN..SIGRTMAX.
// (Inline: src/env.cc, compiled into the preload shim too, uses it.)
inline bool usable_signal(int sig) {
  return sig == SIGUSR1 || sig == SIGUSR2 || (sig >= SIGRTMIN && sig <= SIGRTMAX);
}

}  // namespace uvstall::internal
