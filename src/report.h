// JSON Lines records (docs/report.schema.json is the schema). Built on the
// sentinel (and, for "start", on the starting thread); never in the handler.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.h"
#include "modules.h"

namespace uvstall::internal {

constexpr int kReportVersion = 1;

// Who a per-loop record is about.
struct LoopIdentity {
  std::string loop;
  pid_t tid = 0;
};

// Fields of every record: type, version, time, run_id, pid (and tid, loop
// when `who` is given).
nlohmann::ordered_json record_base(const char *type, uint64_t wall_ns, const LoopIdentity *who);

// "2026-11-25T12:40:01.123Z"
std::string rfc3339_ms(uint64_t wall_ns);

// Milliseconds with microsecond precision, as a JSON number.
double ms_from_ns(uint64_t ns);

// The process's random run id (16 hex digits), made on first use.
const std::string &run_id();

nlohmann::ordered_json start_record(const LoopIdentity &who, const Config &cfg, int signal);

// What a frames provider (LangFrames, src/watch.h) read of the stalled
// thread's interpreter: "lang_frames", "lang_reader", "lang_reason".
struct LangSample {
  // {"lang","function","file","line"} innermost first; null: none read.
  nlohmann::ordered_json frames;
  // Which reader took them (or refused to), e.g. "cpython-nofault 3.12.1
  // (table 3.12)"; empty: no provider.
  std::string reader;
  // Why there are no frames, or fewer than the thread has; empty: complete.
  std::string reason;
};

// One stall sample.
struct StallSample {
  uint64_t stall_id = 0;
  uint32_t threshold_ms = 0;
  uint64_t blocked_ns = 0;
  const char *capture = "ok";  // ok | timeout | failed | late
  std::string capture_error;
  double handler_us = -1;      // < 0: no signal handler ran
  // How the stack was taken: "signal" (the handler on the thread),
  // "snapshot" (copied by the sentinel while the thread slept in a system
  // call: no signal), or null (no capture).
  const char *capture_via = nullptr;
  double snapshot_us = -1;     // the snapshot's copy and unwind; < 0: none
  // Frames from this index on were found through an rbp recovered from the
  // stack copy (checked, not proven by the unwind tables); -1: none.
  int first_guessed_frame = -1;
  // The capture signal cut a system call short (it returned EINTR).
  bool interrupted_syscall = false;
  bool truncated = false;      // more frames than max_frames, or the window
  std::vector<ResolvedFrame> frames;
  // Interpreter frames of the stalled thread; empty when the thread runs
  // no interpreter uvstall knows.
  LangSample lang;
  uint32_t sample = 0;             // 0 for the first record of a stall
  const char *cause = nullptr;     // cpu | syscall | runqueue | paused | unknown
  nlohmann::ordered_json thread;   // thread state object, or null
  std::string fingerprint;         // empty: not known yet
  nlohmann::ordered_json context;  // application context, or null
  bool abort = false;              // the last record before SIGABRT
};
nlohmann::ordered_json stall_record(const LoopIdentity &who, uint64_t wall_ns, const StallSample &s);

// `start_ns` and `end_ns`: the stall's bounds on CLOCK_MONOTONIC.
nlohmann::ordered_json stall_end_record(const LoopIdentity &who, uint64_t wall_ns,
                                        uint64_t stall_id, uint64_t start_ns, uint64_t end_ns,
                                        const char *ended_by);

// The loop's thread ended without uvstall_stop; `detected_by` is
// "exit_hook" (the thread's own exit) or "sentinel" (found later, gone).
nlohmann::ordered_json thread_exit_record(const LoopIdentity &who, uint64_t wall_ns,
                                          const char *detected_by);

// Adds "dropped": n when n > 0 (records of this watch lost since the last).
void note_drops(nlohmann::ordered_json &record, uint64_t n);

}  // namespace uvstall::internal
