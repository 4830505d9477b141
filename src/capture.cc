// Stack capture: the signal handler and the slots it writes.
//
// CONTRACT of the handler (on_signal and everything it calls, marked
// "[handler]" below). It runs on a stalled loop thread, interrupting
// arbitrary code, so it:
//   - saves errno on entry and restores it on every exit path;
//   - writes only the preallocated CaptureSlot of its own thread, found
//     through a fixed table, after checking the request generation and tid;
//   - calls only: getpid/gettid (syscalls), clock_gettime (vDSO),
//     sem_post, sigprocmask (only when chaining), sigaction and tgkill
//     (only when chaining to a default action), process_vm_readv on our
//     own pid (two bytes of code, which it reads instead of dereferencing:
//     it fails where a load would fault), and libunwind's
//     unw_init_local2 / unw_get_reg / unw_step for the local address space;
//   - never calls malloc, stdio, dladdr, unw_get_proc_name, C++ exceptions,
//     JSON code or any lock of ours, and never blocks;
//   - assumes libunwind's local unwinder is async-signal-safe with the
//     per-thread cache (UNW_CACHE_PER_THREAD, set here): it takes no locks,
//     but on a cache miss it calls dl_iterate_phdr, which takes glibc's
//     recursive loader lock. The thread is warmed at start
//     (capture_warm_thread) so its cache and thread-local storage exist;
//     a thread stopped inside dlopen re-enters that lock recursively, which
//     does not deadlock; while another thread holds it, the handler waits
//     for that thread (the sentinel reports a timeout and goes on);
//   - runs with every asynchronous signal blocked (sa_mask; faults stay
//     unblocked), so no host handler runs inside it: a profiler's SIGPROF
//     handler never re-enters libunwind mid-unwind, and an alarm handler
//     that siglongjmps cannot leave it half-way (libunwind itself blocks
//     every signal around its dl_iterate_phdr call); those signals run
//     when it returns;
//   - hands any signal the sentinel did not send (wrong si_code, pid or
//     cookie) to the handler installed before ours, with the mask that
//     handler would have had without us; a stale one of ours
//     (its watch has gone) is ignored, never chained, because the previous
//     action for a real-time signal is usually "terminate".
//
// libunwind is loaded with dlopen(RTLD_LOCAL) rather than linked: Debian's
// libunwind.so.8 also exports _Unwind_RaiseException & co., and if it came
// before libgcc_s in the global lookup order it would take over C++
// exception unwinding for the whole host.
#include "capture.h"

#include <dlfcn.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "clock.h"
#include "fork.h"

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

// libunwind entry points, resolved by name at capture_init.
using InitLocal2Fn = int (*)(unw_cursor_t *, unw_context_t *, int);
using StepFn = int (*)(unw_cursor_t *);
using GetRegFn = int (*)(unw_cursor_t *, unw_regnum_t, unw_word_t *);
InitLocal2Fn g_init_local2 = nullptr;
StepFn g_step = nullptr;
GetRegFn g_get_reg = nullptr;
std::string *g_unwinder_problem = new std::string;  // never destroyed

std::atomic<uint64_t> g_stale{0};
std::atomic<uint64_t> g_next_gen{0};

#define UVSTALL_STR2_(x) #x
#define UVSTALL_STR_(x) UVSTALL_STR2_(x)

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

// [handler] Unwinds from the interrupted context into the slot.
void unwind_into(CaptureSlot *slot, void *uc) {
  slot->nframes = 0;
  slot->truncated = false;
  if (g_init_local2 == nullptr) {
    slot->error = kCaptureNoUnwinder;
    return;
  }
  unw_cursor_t cursor;
  if (g_init_local2(&cursor, static_cast<unw_context_t *>(uc),
                    UNW_INIT_SIGNAL_FRAME) != 0) {
    slot->error = kCaptureInitFailed;
    return;
  }
  slot->error = kCaptureOk;
  const uint32_t max = slot->max_frames;
  uint32_t n = 0;
  for (;;) {
    unw_word_t ip = 0;
    if (g_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
    if (n == max) {
      slot->truncated = true;
      break;
    }
    slot->frames[n++] = uintptr_t(ip);
    if (g_step(&cursor) <= 0) break;
  }
  slot->nframes = n;
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
  struct iovec local = {code, sizeof code};
  struct iovec remote = {reinterpret_cast<void *>(rip - 2), sizeof code};
  if (syscall(SYS_process_vm_readv, getpid(), &local, 1UL, &remote, 1UL, 0UL) != 2) return false;
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
  unwind_into(slot, uc);
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
};
Pool *g_pool = new Pool;

void load_unwinder() {
  // RTLD_LOCAL keeps libunwind's _Unwind_* out of the global scope (see top).
  void *lib = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char *e = dlerror();
    *g_unwinder_problem = std::string("cannot load libunwind.so.8: ") + (e ? e : "?");
    return;
  }
  auto init = reinterpret_cast<InitLocal2Fn>(dlsym(lib, UVSTALL_STR_(unw_init_local2)));
  auto step = reinterpret_cast<StepFn>(dlsym(lib, UVSTALL_STR_(unw_step)));
  auto get_reg = reinterpret_cast<GetRegFn>(dlsym(lib, UVSTALL_STR_(unw_get_reg)));
  using PolicyFn = int (*)(unw_addr_space_t, unw_caching_policy_t);
  auto policy = reinterpret_cast<PolicyFn>(
      dlsym(lib, UVSTALL_STR_(unw_set_caching_policy)));
  auto as = static_cast<unw_addr_space_t *>(
      dlsym(lib, UVSTALL_STR_(unw_local_addr_space)));
  if (!init || !step || !get_reg || !policy || !as) {
    *g_unwinder_problem = "libunwind.so.8 lacks unw_init_local2 (need libunwind >= 1.3)";
    return;
  }
  // Per-thread caches: no lock inside the handler (see the contract).
  policy(*as, UNW_CACHE_PER_THREAD);
  g_init_local2 = init;
  g_step = step;
  g_get_reg = get_reg;
}

}  // namespace

const char *capture_error_text(int32_t err) {
  switch (err) {
    case kCaptureOk:
      return "";
    case kCaptureNoUnwinder:
      return g_unwinder_problem->c_str();
    case kCaptureInitFailed:
      return "libunwind could not start from the signal context";
    default:
      return "unknown capture error";
  }
}

const std::string &capture_unwinder_problem() { return *g_unwinder_problem; }

int capture_init(int sig, sem_t *wake) {
  load_unwinder();
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

int capture_acquire(uint32_t max_frames) {
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
  slot->tid = pid_t(syscall(SYS_gettid));
  slot->max_frames = max_frames;
  slot->request_gen.store(0, std::memory_order_relaxed);
  slot->done_gen.store(0, std::memory_order_relaxed);
  slot->interrupted_total.store(0, std::memory_order_relaxed);
  slot->in_handler.store(0, std::memory_order_relaxed);
  slot->nframes = 0;
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

void capture_warm_thread() {
  if (g_init_local2 == nullptr) return;
  ucontext_t uc;
  if (getcontext(&uc) != 0) return;
  unw_cursor_t cursor;
  if (g_init_local2(&cursor, reinterpret_cast<unw_context_t *>(&uc), 0) != 0) return;
  for (int i = 0; i < int(kMaxFrames) && g_step(&cursor) > 0; ++i) {
  }
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
