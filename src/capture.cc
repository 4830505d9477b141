// Stack capture: the signal handler and the slots it writes.
//
// CONTRACT of the handler (on_signal and everything it calls, marked
// "[handler]" below). It runs on a stalled loop thread, interrupting
// arbitrary code, so it:
//   - saves errno on entry and restores it on every exit path;
//   - writes only the preallocated CaptureSlot of its own thread, found
//     through a fixed table, after checking the request generation and tid:
//     the interrupted registers (the ucontext's gregs) and a copy of the
//     interrupted stack, [rsp, rsp + window), into the buffer allocated at
//     capture_acquire. It does not unwind: the sentinel unwinds the copy
//     later, off the thread, with the snapshot unwinder (src/snapshot.h);
//   - calls only: getpid/gettid (syscalls), clock_gettime (vDSO),
//     sem_post, sigprocmask (only when chaining), sigaction and tgkill
//     (only when chaining to a default action), and process_vm_readv on
//     our own pid, as a raw syscall (two bytes of code before rip, and the
//     stack window: one call each). It reads memory that way instead of
//     dereferencing it: the call stops short at an unmapped page where a
//     load would fault, and AddressSanitizer does not instrument it (a
//     memcpy of the stack would touch its redzones);
//   - never calls malloc, stdio, dladdr, dl_iterate_phdr, libunwind, C++
//     exceptions, JSON code or any lock (ours or glibc's loader lock), and
//     never blocks: a thread stopped inside dlopen, or one whose loader
//     lock another thread holds, is copied like any other;
//   - runs with every asynchronous signal blocked (sa_mask; faults stay
//     unblocked), so no host handler runs inside it: a profiler's SIGPROF
//     handler or an alarm handler that siglongjmps cannot cut it half-way;
//     those signals run when it returns;
//   - hands any signal the sentinel did not send (wrong si_code, pid or
//     cookie) to the handler installed before ours, with the mask that
//     handler would have had without us; a stale one of ours
//     (its watch has gone) is ignored, never chained, because the previous
//     action for a real-time signal is usually "terminate".
#include "capture.h"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "clock.h"
#include "fork.h"
#include "snapshot.h"
#include <uvstall/uvstall.h>

namespace uvstall::internal {

namespace {

// The table the handler searches. Entries are written (release) by
// capture_acquire/capture_release under g_pool->mu and read (acquire) by the
// handler; the slots they point to are never freed.
constexpr int kMaxSlots = 4096;
std::atomic<CaptureSlot *> g_table[kMaxSlots];

// Generation and slot index travel in the signal's sival_ptr.
constexpr int kGenBits = 48;
constexpr uint64_t kGenMask = (uint64_t(1) << kGenBits) - 1;

// Set once by capture_init before the handler is installed, read-only after.
int g_signal = 0;
int g_cookie = 0;           // si_errno of our signals: tells them apart
sem_t *g_wake = nullptr;
struct sigaction g_prev;    // the action installed before ours

std::atomic<uint64_t> g_stale{0};
std::atomic<uint64_t> g_next_gen{0};

// [handler] Passes a signal that is not ours to whoever had it before us.
void chain(int sig, siginfo_t *info, void *uc) {
  const bool handler = (g_prev.sa_flags & SA_SIGINFO)
                           ? g_prev.sa_sigaction != nullptr
                           : g_prev.sa_handler != SIG_IGN && g_prev.sa_handler != SIG_DFL;
  if (handler && uc != nullptr) {
    // Ours blocks every asynchronous signal; theirs gets the mask it would
    // have had: the interrupted code's, its own sa_mask, and the signal
    // itself unless SA_NODEFER. (The kernel restores the interrupted
    // code's mask when our handler returns.)
    sigset_t mask = static_cast<ucontext_t *>(uc)->uc_sigmask;
    sigorset(&mask, &mask, &g_prev.sa_mask);
    if (!(g_prev.sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
    sigprocmask(SIG_SETMASK, &mask, nullptr);
  }
  if (g_prev.sa_flags & SA_SIGINFO) {
    if (g_prev.sa_sigaction != nullptr) g_prev.sa_sigaction(sig, info, uc);
    return;
  }
  if (g_prev.sa_handler == SIG_IGN) return;
  if (g_prev.sa_handler == SIG_DFL) {
    // Without us the default action (terminate) would have happened: restore
    // it and re-send; the signal is blocked until this handler returns.
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, nullptr);
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), sig);
    return;
  }
  g_prev.sa_handler(sig);
}

// [handler] Reads [addr, addr + len) of our own memory into dst; the
// bytes read (short at an unmapped page), or -1.
ssize_t read_own_memory(void *dst, uintptr_t addr, size_t len) {
  struct iovec local = {dst, len};
  struct iovec remote = {reinterpret_cast<void *>(addr), len};
  return ssize_t(syscall(SYS_process_vm_readv, getpid(), &local, 1UL, &remote, 1UL, 0UL));
}

// [handler] Copies the interrupted registers and stack window into the
// slot. The window ends at the stack mapping's top when rsp lies in the
// mapping recorded at acquire, else where the window (or the mapping the
// kernel finds) ends.
void copy_into(CaptureSlot *slot, void *uc) {
  const mcontext_t &m = static_cast<ucontext_t *>(uc)->uc_mcontext;
  for (int i = 0; i < NGREG; ++i) slot->gregs[i] = int64_t(m.gregs[i]);
  const uintptr_t sp = uintptr_t(m.gregs[REG_RSP]);
  size_t want = slot->window_bytes;
  if (sp >= slot->stack_lo && sp < slot->stack_hi)
    want = std::min(want, size_t(slot->stack_hi - sp));
  const ssize_t got = read_own_memory(slot->stack, sp, want);
  slot->stack_bytes = got > 0 ? size_t(got) : 0;
  slot->error = got > 0 ? kCaptureOk : kCaptureStackUnreadable;
}

// [handler] True when the signal interrupted a system call that now
// returns -EINTR to the host: rax holds -EINTR and the two bytes before the
// resume address are a `syscall` instruction (0f 05). The kernel set both
// up before calling us (arch/x86/kernel/signal.c: ERESTARTNOHAND and
// ERESTART_RESTARTBLOCK become EINTR when a handler runs; ERESTARTSYS too
// without SA_RESTART); a call it restarts has rip moved back onto the
// instruction instead and is not counted.
bool interrupted_a_syscall(void *uc) {
  if (uc == nullptr) return false;
  const mcontext_t &m = static_cast<ucontext_t *>(uc)->uc_mcontext;
  if (m.gregs[REG_RAX] != -EINTR) return false;
  const uintptr_t rip = uintptr_t(m.gregs[REG_RIP]);
  unsigned char code[2] = {0, 0};
  if (read_own_memory(code, rip - 2, sizeof code) != 2) return false;
  return code[0] == 0x0f && code[1] == 0x05;
}

// [handler]
void on_signal(int sig, siginfo_t *info, void *uc) {
  const int saved_errno = errno;
  const bool ours = info != nullptr && info->si_code == SI_QUEUE &&
                    info->si_pid == getpid() && info->si_errno == g_cookie;
  if (!ours) {
    chain(sig, info, uc);
    errno = saved_errno;
    return;
  }
  const uint64_t word = uint64_t(reinterpret_cast<uintptr_t>(info->si_value.sival_ptr));
  const uint64_t index = word >> kGenBits;
  const uint64_t gen = word & kGenMask;
  CaptureSlot *slot =
      index < kMaxSlots ? g_table[index].load(std::memory_order_acquire) : nullptr;
  const bool mine = slot != nullptr && slot->tid == pid_t(syscall(SYS_gettid));
  const bool interrupted = interrupted_a_syscall(uc);
  if (mine && interrupted) slot->interrupted_total.fetch_add(1, std::memory_order_relaxed);
  if (!mine || slot->request_gen.load(std::memory_order_acquire) != gen) {
    g_stale.fetch_add(1, std::memory_order_relaxed);
    errno = saved_errno;
    return;
  }
  slot->in_handler.store(1, std::memory_order_seq_cst);
  slot->t_enter_ns = mono_ns();
  slot->interrupted_syscall = interrupted;
  copy_into(slot, uc);
  slot->t_exit_ns = mono_ns();
  slot->in_handler.store(0, std::memory_order_release);
  slot->done_gen.store(gen, std::memory_order_release);
  if (g_wake != nullptr) sem_post(g_wake);
  errno = saved_errno;
}

// ---- Not signal-safe from here on: start-up, the sentinel, the pool. ----

// The slot pool. A heap object never destroyed: the sentinel may still use
// it while static destructors run at exit.
struct Pool {
  std::mutex mu;
  std::vector<CaptureSlot *> free;  // released slots, reused first
  int used = 0;                     // table entries ever handed out
  std::vector<unsigned char *> retired;  // copy buffers outgrown, kept
};
Pool *g_pool = new Pool;

}  // namespace

const char *capture_error_text(int32_t err) {
  switch (err) {
    case kCaptureOk:
      return "";
    case kCaptureStackUnreadable:
      return "the interrupted stack could not be read";
    default:
      return "unknown capture error";
  }
}

int capture_init(int sig, sem_t *wake) {
  unsigned int seed = 0;
  if (getentropy(&seed, sizeof seed) != 0) seed = unsigned(mono_ns());
  g_cookie = int(seed & 0x3fffffff) | 1;
  g_signal = sig;
  g_wake = wake;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  // Asynchronous signals wait until the handler returns (see the contract);
  // faults do not, so a crash inside it still reaches the host's handler.
  sigfillset(&sa.sa_mask);
  for (int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS})
    sigdelset(&sa.sa_mask, fault);
  if (sigaction(sig, &sa, &g_prev) != 0) return UVSTALL_ESIGACTION;
  return 0;
}

int capture_acquire(size_t window_bytes) {
  // Outside the pool's lock: reads /proc/self/maps.
  uintptr_t lo = 0, hi = 0;
  int here = 0;
  if (!find_stack_mapping(uintptr_t(&here), &lo, &hi)) lo = hi = 0;
  std::lock_guard<std::mutex> lock(g_pool->mu);
  CaptureSlot *slot = nullptr;
  int index = -1;
  if (!g_pool->free.empty()) {
    slot = g_pool->free.back();
    g_pool->free.pop_back();
    for (int i = 0; i < g_pool->used; ++i) {
      if (g_table[i].load(std::memory_order_relaxed) == nullptr) {
        index = i;
        break;
      }
    }
  } else if (g_pool->used < kMaxSlots) {
    slot = new CaptureSlot;
    index = g_pool->used++;
  }
  if (slot == nullptr) return -1;
  if (slot->stack_capacity < window_bytes) {
    // The old buffer is kept, never freed: a stale handler that passed
    // its generation check before the slot was released may still write it.
    unsigned char *grown = new (std::nothrow) unsigned char[window_bytes];
    if (grown == nullptr) {
      g_pool->free.push_back(slot);  // its table entry stays empty, reused later
      return -1;
    }
    // Not touched here: a watch's memory grows only by the pages its
    // copies write (a shallow stack, a few KiB), not the whole window.
    if (slot->stack != nullptr) g_pool->retired.push_back(slot->stack);
    slot->stack = grown;
    slot->stack_capacity = window_bytes;
  }
  slot->tid = pid_t(syscall(SYS_gettid));
  slot->window_bytes = window_bytes;
  slot->stack_lo = lo;
  slot->stack_hi = hi;
  slot->stack_bytes = 0;
  slot->request_gen.store(0, std::memory_order_relaxed);
  slot->done_gen.store(0, std::memory_order_relaxed);
  slot->interrupted_total.store(0, std::memory_order_relaxed);
  slot->in_handler.store(0, std::memory_order_relaxed);
  g_table[index].store(slot, std::memory_order_release);
  return index;
}

CaptureSlot *capture_slot(int index) {
  return g_table[index].load(std::memory_order_acquire);
}

void capture_release(int index) {
  std::lock_guard<std::mutex> lock(g_pool->mu);
  CaptureSlot *slot = g_table[index].load(std::memory_order_relaxed);
  if (slot == nullptr) return;
  // A handler already running for this slot finishes writing a slot that
  // nobody will read; one that starts later sees the table entry gone.
  slot->request_gen.store(0, std::memory_order_release);
  g_table[index].store(nullptr, std::memory_order_release);
  g_pool->free.push_back(slot);
}

uint64_t capture_next_gen() {
  return (g_next_gen.fetch_add(1, std::memory_order_relaxed) + 1) & kGenMask;
}

bool capture_handler_installed() {
  struct sigaction cur;
  if (sigaction(g_signal, nullptr, &cur) != 0) return false;
  return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_signal;
}

int capture_request(int index, uint64_t gen) {
  CaptureSlot *slot = g_table[index].load(std::memory_order_acquire);
  if (slot == nullptr) return -EINVAL;
  slot->request_gen.store(gen, std::memory_order_release);
  siginfo_t si;
  std::memset(&si, 0, sizeof si);
  si.si_signo = g_signal;
  si.si_code = SI_QUEUE;
  si.si_errno = g_cookie;
  si.si_pid = getpid();
  si.si_uid = getuid();
  si.si_value.sival_ptr =
      reinterpret_cast<void *>(uintptr_t((uint64_t(index) << kGenBits) | gen));
  if (syscall(SYS_rt_tgsigqueueinfo, getpid(), slot->tid, g_signal, &si) != 0)
    return -errno;
  return 0;
}

// fork (src/fork.cc): the pool's lock is not held across fork; the table
// and slots are copied consistent, and the child's inherited watches give
// their slots back when stopped.
void capture_fork_prepare() { g_pool->mu.lock(); }
void capture_fork_parent() { g_pool->mu.unlock(); }
void capture_fork_child() { g_pool->mu.unlock(); }

uint64_t capture_stale_signals() { return g_stale.load(std::memory_order_relaxed); }

}  // namespace uvstall::internal
