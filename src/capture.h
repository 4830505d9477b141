// Stack capture on the stalled thread: the slots the signal handler writes,
// and the calls the sentinel and the loop thread use around them.
// Everything declared here is called off the handler; the handler itself is
// private to capture.cc, whose first comment is its contract.
#pragma once

#include <sys/types.h>
#include <semaphore.h>
#include <ucontext.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace uvstall::internal {

// Why a capture produced no stack copy (CaptureSlot::error).
enum CaptureError : int32_t {
  kCaptureOk = 0,
  kCaptureStackUnreadable = 1,  // process_vm_readv read nothing at rsp
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
  // The copy buffer, window_bytes long (allocated by capture_acquire; a
  // recycled slot keeps a buffer at least that big).
  unsigned char *stack = nullptr;
  size_t window_bytes = 0;
  size_t stack_capacity = 0;  // bytes allocated at stack
  // The thread's stack mapping at acquire time (/proc/self/maps); 0, 0:
  // not found. A copy whose rsp lies outside it (sigaltstack, a
  // coroutine's stack) is bounded by the window alone.
  uintptr_t stack_lo = 0, stack_hi = 0;

  // Request: the sentinel stores the generation it is about to signal for
  // (release); the handler acts only if its signal carries that generation.
  std::atomic<uint64_t> request_gen{0};

  // Result: written by the handler, then published by storing done_gen
  // (release); the sentinel reads the fields after an acquire load of
  // done_gen equal to its request.
  uint64_t t_enter_ns = 0;      // CLOCK_MONOTONIC at handler entry
  uint64_t t_exit_ns = 0;       // ... and when the copy was complete
  int32_t error = kCaptureOk;
  // The signal cut a system call short: the interrupted code returns from
  // its syscall instruction with -EINTR (a restarted call is not counted:
  // the kernel re-runs it, its result unchanged).
  bool interrupted_syscall = false;
  // The interrupted registers (the ucontext's gregs: REG_RIP, REG_RSP,
  // REG_RBP...) and the bytes copied from [rsp, rsp + stack_bytes).
  int64_t gregs[NGREG] = {};
  size_t stack_bytes = 0;
  // Captures of this owner that cut a system call short, stale ones
  // included (the handler counts every signal it acts on or ignores for
  // this slot's thread). Reset at acquire.
  std::atomic<uint64_t> interrupted_total{0};
  // 1 while the handler copies for this slot: the thread's stack then
  // holds the handler's own frames (a snapshot is not taken then).
  std::atomic<uint32_t> in_handler{0};
  std::atomic<uint64_t> done_gen{0};
};

// Process-wide set-up, once: installs the handler for `sig` (chaining to
// the previous one) and remembers `wake`, which the handler posts when a
// stack copy is ready. Returns 0 or UVSTALL_ESIGACTION.
int capture_init(int sig, sem_t *wake);

// Takes a slot for the calling thread (its tid), with a copy buffer of
// window_bytes and the thread's stack mapping, and publishes it. Returns
// its index, or -1 when every slot is in use (or the buffer could not be
// allocated).
int capture_acquire(size_t window_bytes);
CaptureSlot *capture_slot(int index);
// Gives a slot back; a request still in flight for it is ignored on arrival.
void capture_release(int index);

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
