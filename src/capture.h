// Stack capture on the stalled thread: the slots the signal handler writes,
// and the calls the sentinel and the loop thread use around them.
// Everything declared here is called off the handler; the handler itself is
// private to capture.cc, whose first comment is its contract.
#pragma once

#include <sys/types.h>
#include <semaphore.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "config.h"

namespace uvstall::internal {

// Why a capture produced no stack (CaptureSlot::error).
enum CaptureError : int32_t {
  kCaptureOk = 0,
  kCaptureNoUnwinder = 1,   // libunwind.so.8 could not be loaded
  kCaptureInitFailed = 2,   // unw_init_local2 refused the signal context
};
const char *capture_error_text(int32_t err);

// One per watched thread; recycled, never freed, so a signal that arrives
// after its watch is gone still finds valid memory (and ignores it because
// the generation no longer matches).
struct CaptureSlot {
  // Owner fields: written by the owning watch at acquire time, before the
  // slot is published in the table (release); the handler reads them after
  // an acquire load of the table entry, so it sees them complete.
  pid_t tid = 0;
  uint32_t max_frames = kDefaultMaxFrames;

  // Request: the sentinel stores the generation it is about to signal for
  // (release); the handler acts only if its signal carries that generation.
  std::atomic<uint64_t> request_gen{0};

  // Result: written by the handler, then published by storing done_gen
  // (release); the sentinel reads the fields after an acquire load of
  // done_gen equal to its request.
  uint64_t t_enter_ns = 0;      // CLOCK_MONOTONIC at handler entry
  uint64_t t_exit_ns = 0;       // ... and when the stack was complete
  uint32_t nframes = 0;
  int32_t error = kCaptureOk;
  bool truncated = false;       // more frames than max_frames
  // The signal cut a system call short: the interrupted code returns from
  // its syscall instruction with -EINTR (a restarted call is not counted:
  // the kernel re-runs it, its result unchanged).
  bool interrupted_syscall = false;
  uintptr_t frames[kMaxFrames] = {};
  // Captures of this owner that cut a system call short, stale ones
  // included (the handler counts every signal it acts on or ignores for
  // this slot's thread). Reset at acquire.
  std::atomic<uint64_t> interrupted_total{0};
  // 1 while the handler unwinds for this slot: the thread's stack then
  // holds the handler's own frames (a snapshot is not taken then).
  std::atomic<uint32_t> in_handler{0};
  std::atomic<uint64_t> done_gen{0};
};

// Process-wide set-up, once: loads libunwind privately, installs the handler
// for `sig` (chaining to the previous one) and remembers `wake`, which the
// handler posts when a stack is ready. Returns 0 or UVSTALL_ESIGACTION.
int capture_init(int sig, sem_t *wake);
// Why libunwind is unusable, or "" when it loaded.
const std::string &capture_unwinder_problem();

// Takes a slot for the calling thread (its tid) and publishes it. Returns its
// index, or -1 when every slot is in use.
int capture_acquire(uint32_t max_frames);
CaptureSlot *capture_slot(int index);
// Gives a slot back; a request still in flight for it is ignored on arrival.
void capture_release(int index);

// Unwinds the calling thread once, outside any signal, so libunwind's
// per-thread state and caches exist before the first signal arrives.
void capture_warm_thread();

// The next request generation, unique per process.
uint64_t capture_next_gen();

// True if our handler is still the one installed for the capture signal.
bool capture_handler_installed();

// Asks the thread owning slot `index` for its stack, tagged with `gen`.
// Returns 0 or -errno (ESRCH: the thread has exited).
int capture_request(int index, uint64_t gen);

// Signals our handler saw but ignored: stale generations (a capture that
// landed after its watch stopped) and foreign-looking ones.
uint64_t capture_stale_signals();

}  // namespace uvstall::internal
