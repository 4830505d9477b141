// Options: defaults, limits and validation. Pure functions, no global state:
// validate once at start and hand the resolved Config to everything else.
#pragma once

#include <uvstall/uvstall.h>

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
};

// Process-wide settings, resolved.
struct ProcessConfig {
  int signal = 0;  // resolved: never 0 after resolve_process_options
  uint32_t max_queued_reports = kDefaultMaxQueuedReports;
  uint32_t max_stalls_per_minute = kDefaultStallsPerMinute;  // 0: unlimited
  uint32_t summary_interval_ms = kDefaultSummaryIntervalMs;  // 0: at exit only
};

// max(100, 2 x interval): the automatic threshold.
uint32_t auto_threshold_ms(uint32_t interval_ms);

// Copies the caller's options (any struct_size from an older header) over
// the defaults and checks every field. Returns 0 or a UVSTALL_E* code.
int resolve_options(const uvstall_options_t *opts, Config *out);
int resolve_process_options(const uvstall_process_options_t *popts,
                            ProcessConfig *out);

// The default capture signal: SIGRTMAX - 3 (rarely used by hosts; glibc
// keeps the first two real-time signals for itself).
int default_signal();
// True for signals uvstall can use: SIGUSR1, SIGUSR2, SIGRTMIN..SIGRTMAX.
bool usable_signal(int sig);

}  // namespace uvstall::internal
