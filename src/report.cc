// JSON Lines records (see report.h).
#include "report.h"

#include <limits.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <mutex>

#include "clock.h"
#include "fork.h"

namespace uvstall::internal {

std::string rfc3339_ms(uint64_t wall_ns) {
  const time_t secs = time_t(wall_ns / 1000000000u);
  const unsigned ms = unsigned((wall_ns / 1000000u) % 1000u);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

double ms_from_ns(uint64_t ns) {
  // Round to whole microseconds so the JSON stays short and exact enough.
  return double((ns + 500) / 1000) / 1000.0;
}

namespace {

std::once_flag g_run_id_once;
std::string *g_run_id = nullptr;  // never destroyed: used during exit

std::string *new_run_id() {
  unsigned char bytes[8] = {};
  if (getrandom(bytes, sizeof bytes, 0) != ssize_t(sizeof bytes)) {
    uint64_t t = mono_ns() ^ (uint64_t(getpid()) << 32);
    for (auto &b : bytes) {
      b = static_cast<unsigned char>(t);
      t >>= 8;
    }
  }
  return new std::string(to_hex(bytes, sizeof bytes));
}

}  // namespace

const std::string &run_id() {
  std::call_once(g_run_id_once, [] { g_run_id = new_run_id(); });
  return *g_run_id;
}

// fork (src/fork.cc): a forked child is another process, with a run_id of
// its own (the parent's string is left alone: a record may be using it).
void run_id_fork_child() {
  if (g_run_id != nullptr) g_run_id = new_run_id();
}

nlohmann::ordered_json record_base(const char *type, uint64_t wall_ns, const LoopIdentity *who) {
  nlohmann::ordered_json r;
  r["type"] = type;
  r["version"] = kReportVersion;
  r["time"] = rfc3339_ms(wall_ns);
  r["run_id"] = run_id();
  r["pid"] = getpid();
  if (who != nullptr) {
    r["tid"] = who->tid;
    r["loop"] = who->loop;
  }
  return r;
}

namespace {

std::string executable_path() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = 0;
  return buf;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return {};
  return buf;
}

std::string hex_addr(uintptr_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

nlohmann::ordered_json start_record(const LoopIdentity &who, const Config &cfg, int signal) {
  nlohmann::ordered_json r = record_base("start", wall_ns(), &who);
  r["host"] = host_name();
  r["executable"] = executable_path();
  r["uvstall_version"] = UVSTALL_VERSION_STRING;
  nlohmann::ordered_json o;
  o["interval_ms"] = cfg.interval_ms;
  o["threshold_ms"] = cfg.threshold_ms;
  o["max_frames"] = cfg.max_frames;
  o["capture_timeout_ms"] = cfg.capture_timeout_ms;
  o["loop_name"] = who.loop;
  o["output_path"] = cfg.has_output_path ? nlohmann::ordered_json(cfg.output_path) : nlohmann::ordered_json();
  o["on_report"] = cfg.on_report != nullptr;
  o["signal"] = signal;
  o["max_samples_per_stall"] = cfg.max_samples_per_stall;
  o["abort_after_ms"] = cfg.abort_after_ms;
  o["metrics_interval_ms"] = cfg.metrics_interval_ms;
  o["stack_window_kb"] = cfg.stack_window_kb;
  r["options"] = std::move(o);
  return r;
}

nlohmann::ordered_json stall_record(const LoopIdentity &who, uint64_t wall_ns, const StallSample &s) {
  nlohmann::ordered_json r = record_base("stall", wall_ns, &who);
  r["stall_id"] = s.stall_id;
  r["sample"] = s.sample;
  r["threshold_ms"] = s.threshold_ms;
  r["blocked_ms"] = ms_from_ns(s.blocked_ns);
  r["capture"] = s.capture;
  if (!s.capture_error.empty()) r["capture_error"] = s.capture_error;
  if (s.capture_via != nullptr) r["capture_via"] = s.capture_via;
  if (s.handler_us >= 0) r["handler_us"] = double(int64_t(s.handler_us * 10 + 0.5)) / 10;
  if (s.snapshot_us >= 0) r["snapshot_us"] = double(int64_t(s.snapshot_us * 10 + 0.5)) / 10;
  if (s.interrupted_syscall) r["interrupted_syscall"] = true;
  if (s.truncated) r["truncated"] = true;
  if (s.cause != nullptr) r["cause"] = s.cause;
  if (!s.thread.is_null()) r["thread"] = s.thread;
  if (!s.fingerprint.empty()) r["fingerprint"] = s.fingerprint;
  if (!s.context.is_null()) r["context"] = s.context;
  if (s.abort) r["abort"] = true;
  nlohmann::ordered_json frames = nlohmann::ordered_json::array();
  for (size_t i = 0; i < s.frames.size(); ++i) {
    const ResolvedFrame &f = s.frames[i];
    nlohmann::ordered_json fr;
    fr["pc"] = hex_addr(f.pc);
    if (f.module != nullptr) {
      fr["module"] = f.module->path;
      fr["offset"] = hex_addr(f.offset);
      fr["build_id"] = f.module->build_id.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(f.module->build_id);
    } else {
      fr["module"] = nullptr;
      fr["offset"] = nullptr;
      fr["build_id"] = nullptr;
    }
    if (!f.symbol.empty()) {
      fr["symbol"] = f.symbol;
      fr["symbol_offset"] = f.symbol_offset;
    } else {
      fr["symbol"] = nullptr;
      fr["symbol_offset"] = nullptr;
    }
    if (s.first_guessed_frame >= 0 && i >= size_t(s.first_guessed_frame)) fr["guessed"] = true;
    frames.push_back(std::move(fr));
  }
  r["frames"] = std::move(frames);
  if (!s.lang.frames.is_null()) r["lang_frames"] = s.lang.frames;
  if (!s.lang.reader.empty()) r["lang_reader"] = s.lang.reader;
  if (!s.lang.reason.empty()) r["lang_reason"] = s.lang.reason;
  return r;
}

nlohmann::ordered_json stall_end_record(const LoopIdentity &who, uint64_t wall_ns,
                                        uint64_t stall_id, uint64_t start_ns, uint64_t end_ns,
                                        const char *ended_by) {
  nlohmann::ordered_json r = record_base("stall_end", wall_ns, &who);
  r["stall_id"] = stall_id;
  r["duration_ms"] = ms_from_ns(end_ns - std::min(end_ns, start_ns));
  r["ended_by"] = ended_by;
  // The bounds themselves, on the clock of time.monotonic() and uv_hrtime(),
  // so an application can compare them with its own timestamps.
  r["start_mono_ms"] = ms_from_ns(start_ns);
  r["end_mono_ms"] = ms_from_ns(end_ns);
  return r;
}

nlohmann::ordered_json thread_exit_record(const LoopIdentity &who, uint64_t wall_ns,
                                          const char *detected_by) {
  nlohmann::ordered_json r = record_base("thread_exit", wall_ns, &who);
  r["detected_by"] = detected_by;
  return r;
}

void note_drops(nlohmann::ordered_json &record, uint64_t n) {
  if (n > 0) record["dropped"] = n;
}

}  // namespace uvstall::internal
