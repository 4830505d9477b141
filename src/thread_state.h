// What a stalled thread is doing, read by the sentinel from
// /proc/self/task/TID without stopping the thread, and the pure rule that
// turns it into a cause: cpu, syscall, runqueue, paused or unknown.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace uvstall::internal {

// One reading of the thread.
struct ThreadSample {
  bool ok = false;          // false: the files could not be read
  // The thread has ended: its files, opened while it ran, say ESRCH (they
  // stay bound to that thread, never to a later one that reuses its TID),
  // or it is a zombie (an ended main thread).
  bool gone = false;
  uint64_t at_ns = 0;       // CLOCK_MONOTONIC when read
  char state = '?';         // R running, S sleeping, D disk wait, T stopped...
  long syscall_nr = -2;     // -1: not in a syscall (running), -2: unknown
  uint64_t syscall_arg0 = 0;
  uint64_t utime_ticks = 0;  // user CPU, clock ticks
  uint64_t stime_ticks = 0;  // system CPU, clock ticks
  uint64_t run_ns = 0;       // schedstat: time on a CPU
  uint64_t wait_ns = 0;      // schedstat: time runnable, waiting for a CPU
};

// Keeps the thread's /proc files open: a reading is three preads.
class ThreadProbe {
 public:
  explicit ThreadProbe(pid_t tid);
  ~ThreadProbe();
  ThreadProbe(const ThreadProbe &) = delete;
  ThreadProbe &operator=(const ThreadProbe &) = delete;
  ThreadSample read() const;
  pid_t tid() const { return tid_; }

 private:
  pid_t tid_;
  int stat_fd_ = -1, schedstat_fd_ = -1, syscall_fd_ = -1;
};

// Parsers of the three files, exposed for tests.
bool parse_stat(const std::string &text, ThreadSample *s);
bool parse_schedstat(const std::string &text, ThreadSample *s);
bool parse_syscall(const std::string &text, ThreadSample *s);

enum class Cause { kCpu, kSyscall, kRunqueue, kPaused, kUnknown };
const char *cause_name(Cause c);

// Everything the rule looks at for one stall.
struct CauseInput {
  uint64_t stall_ns = 0;        // how long the loop has been blocked so far
  uint64_t window_ns = 0;       // time between the two thread samples
  uint64_t cpu_ns = 0;          // CPU time used in that window (schedstat)
  uint64_t wait_ns = 0;         // time runnable but not running in it
  char state = '?';             // thread state at detection
  long syscall_nr = -2;         // syscall at detection (-1 running, -2 unknown)
  uint64_t sentinel_late_ns = 0;  // how late the sentinel itself woke up
};

// The rule (a pure function):
//   paused   — the sentinel woke late by at least half the stall: the whole
//              process was stopped or suspended (SIGSTOP, debugger, VM);
//   runqueue — runnable but waiting for a CPU at least half the window;
//   cpu      — runnable at least half the window (on a CPU, user or kernel
//              time, or waiting for one less than half the time);
//   syscall  — blocked in a system call (sleeping or disk wait);
//   unknown  — none of these could be told.
Cause classify(const CauseInput &in);

// "read", "clock_nanosleep"... or "" when not known.
const char *syscall_name(long nr);
// True for syscalls whose first argument is a file descriptor.
bool syscall_takes_fd(long nr);

// Readable state: "running", "sleeping", "disk wait", "stopped"...
const char *state_name(char state);

}  // namespace uvstall::internal
