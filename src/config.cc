// Options: defaults, limits and validation (see config.h).
#include "config.h"

#include <algorithm>
#include <csignal>
#include <cstring>

namespace uvstall::internal {

namespace {

// The options prefix every caller has, whatever header it was built with.
constexpr size_t kOptionsV1Size =
    offsetof(uvstall_options_t, report_arg) + sizeof(void *);
constexpr size_t kProcessOptionsV1Size =
    offsetof(uvstall_process_options_t, max_queued_reports) + sizeof(uint32_t);

// Copies what the caller's struct has (struct_size bytes) over a defaulted
// struct, so fields added later keep their defaults for old binaries.
template <typename T>
bool copy_versioned(const T *in, size_t min_size, T *out) {
  if (in->struct_size < min_size) return false;
  std::memcpy(out, in, std::min(in->struct_size, sizeof(T)));
  out->struct_size = sizeof(T);
  return true;
}

}  // namespace

int resolve_options(const uvstall_options_t *opts, Config *out) {
  uvstall_options_t o;
  uvstall_options_init(&o);
  if (opts != nullptr && !copy_versioned(opts, kOptionsV1Size, &o))
    return UVSTALL_ESTRUCT;
  if (o.interval_ms < 1 || o.interval_ms > kMaxIntervalMs) return UVSTALL_EINTERVAL;
  uint32_t threshold = o.threshold_ms;
  if (threshold == 0) {
    threshold = auto_threshold_ms(o.interval_ms);
  } else if (uint64_t(threshold) < 2 * uint64_t(o.interval_ms) ||
             threshold > kMaxThresholdMs) {
    return UVSTALL_ETHRESHOLD;
  }
  if (o.max_frames < 1 || o.max_frames > kMaxFrames) return UVSTALL_EMAXFRAMES;
  if (o.capture_timeout_ms < 1 || o.capture_timeout_ms > kMaxCaptureTimeoutMs)
    return UVSTALL_ECAPTURETIMEOUT;
  if (o.loop_name != nullptr && std::strlen(o.loop_name) > kMaxLoopNameBytes)
    return UVSTALL_ELOOPNAME;
  if (o.output_path != nullptr && o.output_path[0] == '\0') return UVSTALL_EOUTPUT;
  if (o.max_samples_per_stall < 1 || o.max_samples_per_stall > kMaxSamples)
    return UVSTALL_EMAXSAMPLES;
  if (o.abort_after_ms != 0 &&
      (o.abort_after_ms < threshold || o.abort_after_ms > kMaxAbortAfterMs))
    return UVSTALL_EABORTAFTER;
  if (o.metrics_interval_ms != 0 && (o.metrics_interval_ms < kMinMetricsIntervalMs ||
                                     o.metrics_interval_ms > kMaxMetricsIntervalMs))
    return UVSTALL_EMETRICSINTERVAL;
  if (o.stack_window_kb < kMinStackWindowKb || o.stack_window_kb > kMaxStackWindowKb)
    return UVSTALL_ESTACKWINDOW;

  Config c;
  c.interval_ms = o.interval_ms;
  c.threshold_ms = threshold;
  c.max_frames = o.max_frames;
  c.capture_timeout_ms = o.capture_timeout_ms;
  if (o.loop_name != nullptr) c.loop_name = o.loop_name;
  if (o.output_path != nullptr) {
    c.output_path = o.output_path;
    c.has_output_path = true;
  }
  c.on_report = o.on_report;
  c.report_arg = o.report_arg;
  c.max_samples_per_stall = o.max_samples_per_stall;
  c.stack_window_kb = o.stack_window_kb;
  c.abort_after_ms = o.abort_after_ms;
  c.metrics_interval_ms = o.metrics_interval_ms;
  *out = std::move(c);
  return 0;
}

int default_signal() { return SIGRTMAX - 3; }

int resolve_process_options(const uvstall_process_options_t *popts,
                            ProcessConfig *out) {
  uvstall_process_options_t p;
  uvstall_process_options_init(&p);
  if (popts != nullptr && !copy_versioned(popts, kProcessOptionsV1Size, &p))
    return UVSTALL_ESTRUCT;
  int sig = p.signal == 0 ? default_signal() : p.signal;
  if (!usable_signal(sig)) return UVSTALL_ESIGNAL;
  if (p.max_queued_reports < 1 || p.max_queued_reports > kMaxQueuedReports)
    return UVSTALL_EQUEUE;
  if (p.max_stalls_per_minute > kMaxStallsPerMinute) return UVSTALL_ERATELIMIT;
  if (p.summary_interval_ms != 0 && (p.summary_interval_ms < kMinSummaryIntervalMs ||
                                     p.summary_interval_ms > kMaxSummaryIntervalMs))
    return UVSTALL_ESUMMARY;
  std::string host;
  uint16_t port = 0;
  if (p.metrics_addr != nullptr && !parse_metrics_addr(p.metrics_addr, &host, &port))
    return UVSTALL_EMETRICSADDR;
  if (p.metrics_file != nullptr && !metrics_file_usable(p.metrics_file))
    return UVSTALL_EMETRICSFILE;
  out->metrics_host = host;
  out->metrics_port = port;
  out->metrics_file = p.metrics_file != nullptr ? p.metrics_file : "";
  out->signal = sig;
  out->max_queued_reports = p.max_queued_reports;
  out->max_stalls_per_minute = p.max_stalls_per_minute;
  out->summary_interval_ms = p.summary_interval_ms;
  return 0;
}

}  // namespace uvstall::internal

extern "C" {

void uvstall_options_init(uvstall_options_t *opts) {
  if (opts == nullptr) return;
  std::memset(opts, 0, sizeof(*opts));
  opts->struct_size = sizeof(*opts);
  opts->interval_ms = uvstall::internal::kDefaultIntervalMs;
  opts->threshold_ms = 0;
  opts->max_frames = uvstall::internal::kDefaultMaxFrames;
  opts->capture_timeout_ms = uvstall::internal::kDefaultCaptureTimeoutMs;
  opts->max_samples_per_stall = uvstall::internal::kDefaultMaxSamples;
  opts->abort_after_ms = 0;
  opts->metrics_interval_ms = 0;
  opts->stack_window_kb = uvstall::internal::kDefaultStackWindowKb;
}

void uvstall_process_options_init(uvstall_process_options_t *popts) {
  if (popts == nullptr) return;
  std::memset(popts, 0, sizeof(*popts));
  popts->struct_size = sizeof(*popts);
  popts->signal = 0;
  popts->max_queued_reports = uvstall::internal::kDefaultMaxQueuedReports;
  popts->max_stalls_per_minute = uvstall::internal::kDefaultStallsPerMinute;
  popts->summary_interval_ms = uvstall::internal::kDefaultSummaryIntervalMs;
  popts->metrics_addr = nullptr;
  popts->metrics_file = nullptr;
}

const char *uvstall_strerror(int err) {
  switch (err) {
    case 0:
      return "success";
#define UVSTALL_STRERROR_CASE_(name, value, msg) \
  case UVSTALL_##name:                         \
    return msg;
    UVSTALL_ERRNO_MAP(UVSTALL_STRERROR_CASE_)
#undef UVSTALL_STRERROR_CASE_
    default:
      return "unknown uvstall error";
  }
}

const char *uvstall_version(void) { return UVSTALL_VERSION_STRING; }

}  // extern "C"
