// Snapshot unwinder: the stack of another thread of this process, taken
// while that thread sleeps in a system call, without a signal, and unwound
// later from the copy; the same unwinder unwinds the copy the capture
// signal's handler makes of a thread running user code (src/capture.h).
// Called by the sentinel (or a test) on its own thread; it never stops,
// signals or writes to the target thread, never calls dl_iterate_phdr
// during a snapshot or an unwind (the unwind tables are read at
// snapshot_unwinder_init/refresh, outside any stall; an object loaded since
// is found in /proc/self/maps), and reads memory only with
// process_vm_readv, which fails instead of faulting.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace uvstall::internal {

// The default stack window (the stack_window_kb option): holds the frames
// of common host code (libuv, glibc, a few dozen callers); a longer stack
// is cut where the window ends.
constexpr size_t kSnapshotWindowBytes = 64 * 1024;

// One thread's registers as /proc/self/task/TID/syscall shows them.
struct SyscallRegs {
  bool running = false;  // "running": no registers to give
  long nr = -1;          // -1: blocked, but not in a system call
  uintptr_t sp = 0;
  uintptr_t pc = 0;
};

// One snapshot, and the buffers and open files reused by the next one
// (take_snapshot allocates only when the window grows).
struct Snapshot {
  Snapshot() = default;
  ~Snapshot();
  Snapshot(const Snapshot &) = delete;
  Snapshot &operator=(const Snapshot &) = delete;

  // What the last accepted take_snapshot saw.
  pid_t tid = 0;
  char state = '?';            // S or D: sleeping, disk wait
  long syscall_nr = -1;
  uintptr_t sp = 0;            // user stack pointer at syscall entry
  uintptr_t pc = 0;            // user instruction pointer after the syscall
  uint64_t voluntary_switches = 0;
  // The thread's voluntary context switches as of the last read of its
  // status, also one that found it running; switches_read: there was one.
  uint64_t last_switches = 0;
  bool switches_read = false;
  size_t stack_bytes = 0;      // bytes copied from sp (less at a mapping's end)
  uintptr_t stack_lo = 0;      // the mapping holding sp; 0, 0: not known
  uintptr_t stack_hi = 0;
  // Static text saying why the last take_snapshot returned false.
  const char *refusal = "";

  const unsigned char *stack() const { return buffer.data(); }

  // Reused between snapshots: not part of the result.
  std::vector<unsigned char> buffer;
  pid_t files_tid = 0;
  int syscall_fd = -1;
  int status_fd = -1;
  char text[4096];
};

// Takes the thread's stack if it sleeps in a system call: reads its
// syscall registers and voluntary context switches, copies
// [sp, sp + window_bytes) (clipped at the end of the stack mapping) with one
// process_vm_readv, and reads both again. True only when the syscall
// number, sp, pc and switch count are unchanged: the thread did not run in
// between, so the copy is one consistent stack. False with out->refusal
// set otherwise ("thread running", "not in a system call", "thread moved",
// ...). `tid` must be a thread of this process. With status_when_running
// false, a thread found running is refused without reading its status (a
// last look right before a signal: every microsecond after /proc said
// "running" is one in which the thread may enter a system call).
bool take_snapshot(pid_t tid, Snapshot *out, size_t window_bytes = kSnapshotWindowBytes,
                   bool status_when_running = true);

// What one unwind did.
struct UnwindStats {
  int frames = 0;
  int fallback_reads = 0;  // process_vm_readv calls for memory outside the window
  int cached_reads = 0;    // reads served by the page cache of module memory
  int refused_reads = 0;   // reads outside the window and every module: refused
  // Frames [first_guessed_frame, frames) were found through an rbp
  // recovered from the stack copy (a frame whose rule needs rbp, which /proc
  // does not give; see snapshot.cc): checked, but not proven by the
  // tables alone. -1: none.
  int first_guessed_frame = -1;
  int rbp_guesses = 0;     // recoveries tried (each either found the caller or ended the stack)
  const char *stop = "";   // why the unwind ended: "end of stack", "no unwind info"...
  // It ended at code outside every object whose tables were read (loaded
  // since, or JIT code): the stack goes on, but this unwinder cannot say where.
  bool unknown_code = false;
  // The stack went on past what was kept: max frames, or the copied window.
  bool cut = false;
  // Objects found in /proc/self/maps during this unwind (loaded after the
  // tables were read) whose tables were added; the unwind was then retried.
  int discovered = 0;
};

// A copy of a thread's stack and the registers to unwind it from: a
// snapshot's (sp and pc from /proc, rbp unknown) or a signal's (the
// interrupted registers, rbp included). pc is the interrupted or resumed
// instruction, never a return address.
struct StackCopy {
  uintptr_t sp = 0;
  uintptr_t pc = 0;
  uintptr_t rbp = 0;
  bool rbp_known = false;
  const unsigned char *bytes = nullptr;  // [sp, sp + len)
  size_t len = 0;
  // The top of the stack mapping holding sp; 0: not known (the copy's end
  // bounds the stack then).
  uintptr_t stack_hi = 0;
};

// Loads libunwind-x86_64.so.8 (dlopen RTLD_LOCAL, never linked) and reads
// the unwind tables of every loaded object. Takes the loader lock: call it
// at start, never during a stall. False, with snapshot_unwinder_problem()
// saying why, when the remote unwinder is not available.
bool snapshot_unwinder_init();
// Re-reads the unwind tables (objects loaded or unloaded since) and drops
// every cache. Takes the loader lock, like init. Until it runs, a pc in an
// object loaded since ends the stack ("no unwind info for a pc"); an
// object unloaded since, with another mapped at its address, would be
// unwound with stale tables: call it after the host loads or unloads code.
void snapshot_unwinder_refresh();
// Drops libunwind's and our caches: the next unwind is a cold one
// (benchmarks measure it).
void snapshot_unwinder_flush_caches();
const std::string &snapshot_unwinder_problem();

// Unwinds a stack copy into pcs: pcs[0] is the copy's pc, the others
// return addresses (look them up at pc - 1). Only what the copy and the
// unwind tables prove, with one checked exception: for a frame whose rule
// needs rbp when the copy does not know it (a snapshot: /proc does not give
// it) rbp is recovered from the copy and the frames it leads to are marked
// (stats->first_guessed_frame); a recovery that fails its checks, or memory
// past the window, ends the stack. A pc or return address in no object
// whose tables were read is looked up in /proc/self/maps (no loader lock):
// an ELF object mapped there has its tables added and the unwind is
// retried once; anonymous code (JIT) ends the stack. Returns the number of
// frames (0 when the unwinder is not initialized). Serialized: one unwind
// at a time in the process.
int unwind_stack(const StackCopy &copy, uintptr_t *pcs, int max,
                 UnwindStats *stats = nullptr);
// unwind_stack for an accepted snapshot (rbp unknown).
int unwind_snapshot(const Snapshot &snap, uintptr_t *pcs, int max,
                    UnwindStats *stats = nullptr);

// The mapping of /proc/self/maps holding addr (no allocation, no loader
// lock). False when none holds it.
bool find_stack_mapping(uintptr_t addr, uintptr_t *lo, uintptr_t *hi);

// Parsers, exposed for tests.
bool parse_syscall_regs(const char *text, size_t len, SyscallRegs *out);
bool parse_status_switches(const char *text, size_t len, char *state,
                           uint64_t *voluntary_switches);

}  // namespace uvstall::internal
