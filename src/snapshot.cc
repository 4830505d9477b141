// Snapshot unwinder (see snapshot.h). Runs on the sentinel's thread (or a
// test's), never inside the target thread: it reads /proc and copies memory
// with process_vm_readv on our own pid, which returns an error instead of
// faulting on unmapped memory. It never calls dl_iterate_phdr or dlopen
// during take_snapshot or an unwind, and malloc only to add the tables of an
// object loaded after the last refresh (libunwind's own memory pool aside):
// the tables are built at init/refresh, and such an object is found in
// /proc/self/maps, its headers read from memory (discover_locked).
//
// libunwind-x86_64.so.8 (the remote interface) is loaded with
// dlopen(RTLD_NOW | RTLD_LOCAL), for the reason given in capture.cc: the
// libunwind.so.8 it needs exports _Unwind_* and must stay out of the global
// scope. _Ux86_64_dwarf_search_unwind_table is declared in no installed
// header: its type is written here.
#include "snapshot.h"

#include "fork.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include <libunwind.h>

namespace uvstall::internal {

// ---- Reading the thread: /proc and one process_vm_readv. ----

Snapshot::~Snapshot() {
  if (syscall_fd >= 0) close(syscall_fd);
  if (status_fd >= 0) close(status_fd);
}

bool parse_syscall_regs(const char *text, size_t len, SyscallRegs *out) {
  *out = SyscallRegs{};
  if (len >= 7 && std::memcmp(text, "running", 7) == 0) {
    out->running = true;
    return true;
  }
  // "NR a0 a1 a2 a3 a4 a5 SP PC" in a syscall, "-1 SP PC" blocked outside
  // one; numbers after the first are 0x-prefixed hex.
  unsigned long long v[9];
  int n = 0;
  const char *p = text;
  const char *end = text + len;
  while (n < 9 && p < end) {
    while (p < end && (*p == ' ' || *p == '\n')) ++p;
    if (p == end) break;
    char *next = nullptr;
    if (n == 0) {
      v[n] = static_cast<unsigned long long>(std::strtoll(p, &next, 10));
    } else {
      v[n] = std::strtoull(p, &next, 16);
    }
    if (next == p) return false;
    p = next;
    ++n;
  }
  const long nr = static_cast<long>(static_cast<long long>(v[0]));
  if (n == 9 && nr >= 0) {
    out->nr = nr;
    out->sp = uintptr_t(v[7]);
    out->pc = uintptr_t(v[8]);
    return true;
  }
  if (n == 3 && nr == -1) {
    out->nr = -1;
    out->sp = uintptr_t(v[1]);
    out->pc = uintptr_t(v[2]);
    return true;
  }
  return false;
}

namespace {

// The value after "\nKEY" in a /proc status text, or nullptr.
const char *status_field(const char *text, size_t len, const char *key) {
  const size_t klen = std::strlen(key);
  for (const char *p = text; p + klen + 1 < text + len; ++p) {
    p = static_cast<const char *>(std::memchr(p, '\n', size_t(text + len - p)));
    if (p == nullptr || p + 1 + klen >= text + len) return nullptr;
    if (std::memcmp(p + 1, key, klen) == 0) {
      const char *v = p + 1 + klen;
      while (v < text + len && (*v == ' ' || *v == '\t')) ++v;
      return v;
    }
  }
  return nullptr;
}

}  // namespace

bool parse_status_switches(const char *text, size_t len, char *state,
                           uint64_t *voluntary_switches) {
  // The first line is "Name:", so every key we want follows a newline;
  // "\nvoluntary_ctxt_switches:" does not match "nonvoluntary_...".
  const char *s = status_field(text, len, "State:");
  const char *v = status_field(text, len, "voluntary_ctxt_switches:");
  if (s == nullptr || v == nullptr || s >= text + len) return false;
  char *next = nullptr;
  const unsigned long long n = std::strtoull(v, &next, 10);
  if (next == v) return false;
  *state = *s;
  *voluntary_switches = n;
  return true;
}

namespace {

int open_task_file(pid_t tid, const char *name) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/%s", int(tid), name);
  return open(path, O_RDONLY | O_CLOEXEC);
}

// Reads a whole small /proc file into out->text, NUL-terminated.
ssize_t read_text(Snapshot *out, int fd) {
  const ssize_t n = pread(fd, out->text, sizeof out->text - 1, 0);
  if (n >= 0) out->text[n] = '\0';
  return n;
}

// The syscall file, then (unless the thread runs and status_when_running
// is false) the status file; the switch count is kept in out.
bool read_state(Snapshot *out, SyscallRegs *regs, char *state, uint64_t *switches,
                bool status_when_running = true) {
  ssize_t n = read_text(out, out->syscall_fd);
  if (n <= 0 || !parse_syscall_regs(out->text, size_t(n), regs)) return false;
  if (regs->running && !status_when_running) return true;
  n = read_text(out, out->status_fd);
  if (n <= 0 || !parse_status_switches(out->text, size_t(n), state, switches)) return false;
  out->last_switches = *switches;
  out->switches_read = true;
  return true;
}

void close_files(Snapshot *out) {
  if (out->syscall_fd >= 0) close(out->syscall_fd);
  if (out->status_fd >= 0) close(out->status_fd);
  out->syscall_fd = out->status_fd = -1;
  out->files_tid = 0;
}

bool open_files(pid_t tid, Snapshot *out) {
  if (out->files_tid == tid && out->syscall_fd >= 0 && out->status_fd >= 0) return true;
  close_files(out);
  out->syscall_fd = open_task_file(tid, "syscall");
  out->status_fd = open_task_file(tid, "status");
  out->files_tid = tid;
  out->stack_lo = out->stack_hi = 0;
  return out->syscall_fd >= 0 && out->status_fd >= 0;
}

// Calls fn(line) for each line of /proc/self/maps (NUL-terminated, without
// its newline), read through buf (no allocation), until fn returns true.
// A line longer than the buffer is skipped. True when fn returned true.
template <typename Fn>
bool scan_maps(char *buf, size_t cap, Fn fn) {
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t have = 0;
  bool found = false;
  for (;;) {
    const ssize_t n = read(fd, buf + have, cap - have);
    if (n <= 0) break;
    have += size_t(n);
    char *line = buf;
    for (char *nl; (nl = static_cast<char *>(std::memchr(line, '\n', size_t(buf + have - line))));
         line = nl + 1) {
      *nl = '\0';
      if (fn(line)) {
        found = true;
        break;
      }
    }
    if (found) break;
    // Keep the partial last line for the next read.
    have = size_t(buf + have - line);
    std::memmove(buf, line, have);
    if (have == cap) have = 0;  // a line longer than the buffer: skip it
  }
  close(fd);
  return found;
}

// One line of /proc/self/maps: "lo-hi perms offset dev inode [path]".
struct MapsLine {
  uintptr_t lo = 0, hi = 0, offset = 0;
  const char *path = "";  // points into the line
};

bool parse_maps_line(const char *line, MapsLine *out) {
  char *p = nullptr;
  out->lo = uintptr_t(std::strtoull(line, &p, 16));
  if (p == line || *p != '-') return false;
  const char *q = p + 1;
  out->hi = uintptr_t(std::strtoull(q, &p, 16));
  if (p == q || *p != ' ') return false;
  if (std::strlen(p) < 6) return false;
  q = p + 5;  // past " perm": strtoull skips the space before the offset
  out->offset = uintptr_t(std::strtoull(q, &p, 16));
  // dev and inode, then spaces before the path (if any).
  for (int field = 0; field < 2; ++field) {
    while (*p == ' ') ++p;
    while (*p != ' ' && *p != '\0') ++p;
  }
  while (*p == ' ') ++p;
  out->path = p;
  return true;
}

// Finds the mapping that holds addr, read through the given buffer.
bool find_mapping_in(char *buf, size_t cap, uintptr_t addr, uintptr_t *lo, uintptr_t *hi) {
  return scan_maps(buf, cap, [&](const char *line) {
    MapsLine m;
    if (!parse_maps_line(line, &m) || addr < m.lo || addr >= m.hi) return false;
    *lo = m.lo;
    *hi = m.hi;
    return true;
  });
}

// Done once per thread and stack, through the snapshot's fixed buffer.
bool find_mapping(Snapshot *out, uintptr_t addr, uintptr_t *lo, uintptr_t *hi) {
  return find_mapping_in(out->text, sizeof out->text - 1, addr, lo, hi);
}

}  // namespace

bool find_stack_mapping(uintptr_t addr, uintptr_t *lo, uintptr_t *hi) {
  char buf[4096];
  return find_mapping_in(buf, sizeof buf - 1, addr, lo, hi);
}

bool take_snapshot(pid_t tid, Snapshot *out, size_t window_bytes, bool status_when_running) {
  out->refusal = "";
  out->stack_bytes = 0;
  out->switches_read = false;
  if (tid == pid_t(syscall(SYS_gettid))) {
    out->refusal = "own thread";  // it is running: reading /proc right now
    return false;
  }
  if (!open_files(tid, out)) {
    out->refusal = "cannot open /proc/self/task/TID";
    return false;
  }
  SyscallRegs before, after;
  char state_before = '?', state_after = '?';
  uint64_t sw_before = 0, sw_after = 0;
  if (!read_state(out, &before, &state_before, &sw_before, status_when_running)) {
    // Files opened for an ended thread stay bound to it: the next call
    // opens them again, for a thread that may have reused the TID.
    close_files(out);
    out->refusal = "cannot read /proc/self/task/TID (thread gone?)";
    return false;
  }
  if (before.running) {
    out->refusal = "thread running";
    return false;
  }
  if (before.nr < 0) {
    out->refusal = "not in a system call";
    return false;
  }
  if (state_before == 'R') {
    out->refusal = "thread moved";  // woke up since the syscall file was read
    return false;
  }
  if (state_before != 'S' && state_before != 'D') {
    out->refusal = "thread not sleeping (stopped or traced)";
    return false;
  }
  if (!(before.sp >= out->stack_lo && before.sp < out->stack_hi) &&
      !find_mapping(out, before.sp, &out->stack_lo, &out->stack_hi)) {
    out->stack_lo = out->stack_hi = 0;
  }
  size_t want = window_bytes;
  if (out->stack_hi != 0) want = std::min(want, size_t(out->stack_hi - before.sp));
  if (out->buffer.size() < window_bytes) out->buffer.resize(window_bytes);
  // One read; past the end of the mapping it stops short, which is fine.
  iovec local{out->buffer.data(), want};
  iovec remote{reinterpret_cast<void *>(before.sp), want};
  const ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  if (got <= 0) {
    out->refusal = "stack not readable";
    return false;
  }
  if (!read_state(out, &after, &state_after, &sw_after)) {
    out->refusal = "cannot read /proc/self/task/TID (thread gone?)";
    return false;
  }
  // Asleep when read again, with no new voluntary switch since the first
  // status read: that sleep began before the copy and lasted past it, so
  // the copy is one consistent stack (every sleep counts a voluntary
  // switch, D as well as S). sp and pc alone are not enough: a loop of
  // sleeps repeats them.
  if (after.running || after.nr != before.nr || after.sp != before.sp ||
      after.pc != before.pc || sw_after != sw_before ||
      (state_after != 'S' && state_after != 'D')) {
    out->refusal = "thread moved";
    return false;
  }
  out->tid = tid;
  out->state = state_before;
  out->syscall_nr = before.nr;
  out->sp = before.sp;
  out->pc = before.pc;
  out->voluntary_switches = sw_before;
  out->stack_bytes = size_t(got);
  return true;
}

// ---- Unwinding the copy: libunwind's remote interface. ----

namespace {

// The entry point libunwind exports but declares in no installed header.
using SearchTableFn = int (*)(unw_addr_space_t, unw_word_t, unw_dyn_info_t *,
                              unw_proc_info_t *, int, void *);
using CreateFn = unw_addr_space_t (*)(unw_accessors_t *, int);
using DestroyFn = void (*)(unw_addr_space_t);
using InitRemoteFn = int (*)(unw_cursor_t *, unw_addr_space_t, void *);
using StepFn = int (*)(unw_cursor_t *);
using GetRegFn = int (*)(unw_cursor_t *, unw_regnum_t, unw_word_t *);
using ProcInfoFn = int (*)(unw_cursor_t *, unw_proc_info_t *);
using PolicyFn = int (*)(unw_addr_space_t, unw_caching_policy_t);
using FlushFn = void (*)(unw_addr_space_t, unw_word_t, unw_word_t);

// DWARF pointer encodings of .eh_frame_hdr (LSB, "Exception Frame Header").
constexpr uint8_t kEncOmit = 0xff;
constexpr uint8_t kEncDatarelSdata4 = 0x3b;  // DW_EH_PE_datarel | DW_EH_PE_sdata4

// One loaded object's binary search table of FDEs.
struct UnwindTable {
  uintptr_t lo = 0, hi = 0;  // span of its executable segments
  uintptr_t hdr = 0;         // .eh_frame_hdr: the base of datarel entries
  uintptr_t table = 0;       // first entry: {int32 start, int32 fde}
  uint64_t fde_count = 0;
};

// One loaded segment: memory an unwind may read outside the stack window.
struct Segment {
  uintptr_t lo = 0, hi = 0;
  bool writable = false;  // never cached: its contents change
  bool exec = false;
};

constexpr size_t kPageBytes = 4096;
constexpr size_t kCachePages = 64;  // 256 KiB of read-only module memory

struct CachedPage {
  uintptr_t page = ~uintptr_t(0);  // address / kPageBytes; ~0: empty
  unsigned char bytes[kPageBytes];
};

struct Unwinder {
  std::mutex mu;  // one unwind or refresh at a time
  bool ready = false;
  std::string problem = "snapshot unwinder not initialized";
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  InitRemoteFn init_remote = nullptr;
  StepFn step = nullptr;
  GetRegFn get_reg = nullptr;
  ProcInfoFn proc_info = nullptr;
  PolicyFn policy = nullptr;
  FlushFn flush = nullptr;
  SearchTableFn search = nullptr;
  unw_accessors_t accessors{};
  unw_addr_space_t as = nullptr;
  std::vector<UnwindTable> tables;  // sorted by lo
  std::vector<Segment> segments;    // sorted by lo
  std::unique_ptr<CachedPage[]> cache;
  // Pages that discovery found in no ELF object (JIT code, anonymous
  // memory): not looked up again until the next refresh. Bounded.
  std::vector<uintptr_t> no_object_pages;
  char maps_text[4096];  // discovery's buffer for /proc/self/maps
};

// A heap object never destroyed: exit-safe like the other tables.
Unwinder *g_unwinder = new Unwinder;

// What the accessors see during one unwind (libunwind's `arg`).
struct UnwindCall {
  Unwinder *u;
  const StackCopy *copy;
  UnwindStats *stats;
  pid_t pid;        // ours, read once per unwind (getpid is a system call)
  const char *why;  // set by an accessor that refused
  // The registers of the frame the cursor was last started from: the
  // snapshot's, or a frame's whose rbp was recovered (see recover_rbp).
  uintptr_t sp = 0, pc = 0, rbp = 0;
  bool rbp_known = false;
  bool needed_rbp = false;  // an accessor was asked for rbp and had none
  uintptr_t unknown_addr = 0;  // code in no known object (see UnwindStats)
};

// Size of an encoded .eh_frame_hdr value; 0 when not supported.
size_t encoded_size(uint8_t enc, const unsigned char *p, const unsigned char *end) {
  switch (enc & 0x0f) {
    case 0x00: return 8;               // absptr
    case 0x02: case 0x0a: return 2;    // udata2, sdata2
    case 0x03: case 0x0b: return 4;    // udata4, sdata4
    case 0x04: case 0x0c: return 8;    // udata8, sdata8
    case 0x01: case 0x09: {            // uleb128, sleb128
      size_t n = 0;
      while (p + n < end && (p[n] & 0x80)) ++n;
      return p + n < end ? n + 1 : 0;
    }
    default: return 0;
  }
}

// The FDE count: an unsigned fixed-size or uleb128 value, no application.
bool decode_count(uint8_t enc, const unsigned char *p, size_t size, uint64_t *out) {
  if ((enc & 0x70) != 0) return false;
  uint64_t v = 0;
  switch (enc & 0x0f) {
    case 0x01: {
      for (size_t i = 0, shift = 0; i < size && shift < 64; ++i, shift += 7)
        v |= uint64_t(p[i] & 0x7f) << shift;
      break;
    }
    case 0x02: case 0x03: case 0x04: case 0x0a: case 0x0b: case 0x0c:
      std::memcpy(&v, p, size);  // little-endian
      break;
    default:
      return false;
  }
  *out = v;
  return true;
}

// Parses the start of an object's .eh_frame_hdr (at address hdr, len
// bytes long), whose first `have` bytes are at p.
bool parse_eh_frame_hdr(const unsigned char *p, size_t have, uintptr_t hdr, size_t len,
                        UnwindTable *t) {
  const unsigned char *end = p + std::min(have, len);
  if (std::min(have, len) < 4 || p[0] != 1 || p[3] != kEncDatarelSdata4 || p[1] == kEncOmit ||
      p[2] == kEncOmit)
    return false;
  size_t off = 4;
  const size_t ptr_size = encoded_size(p[1], p + off, end);
  if (ptr_size == 0 || off + ptr_size > std::min(have, len)) return false;
  off += ptr_size;
  const size_t count_size = encoded_size(p[2], p + off, end);
  if (count_size == 0 || off + count_size > len) return false;
  uint64_t count = 0;
  if (off + count_size > have) return false;
  if (!decode_count(p[2], p + off, count_size, &count)) return false;
  off += count_size;
  if (count == 0 || count > (len - off) / 8) return false;
  t->hdr = hdr;
  t->table = hdr + off;
  t->fde_count = count;
  return true;
}

struct Collected {
  std::vector<UnwindTable> tables;
  std::vector<Segment> segments;
};

// Adds one object's PT_LOAD segments and its .eh_frame_hdr table (the
// first bytes of which read_hdr(addr, dst, len) copies) to out.
template <typename ReadHdr>
void collect_object(const ElfW(Phdr) *phdrs, int phnum, uintptr_t bias, Collected *out,
                    ReadHdr read_hdr) {
  UnwindTable t;
  uintptr_t hdr = 0;
  size_t hdr_len = 0;
  for (int i = 0; i < phnum; ++i) {
    const ElfW(Phdr) &ph = phdrs[i];
    if (ph.p_type == PT_LOAD) {
      Segment s;
      s.lo = bias + ph.p_vaddr;
      s.hi = s.lo + ph.p_memsz;
      s.writable = (ph.p_flags & PF_W) != 0;
      s.exec = (ph.p_flags & PF_X) != 0;
      out->segments.push_back(s);
      if (s.exec) {
        t.lo = t.hi == 0 ? s.lo : std::min(t.lo, s.lo);
        t.hi = std::max(t.hi, s.hi);
      }
    } else if (ph.p_type == PT_GNU_EH_FRAME) {
      hdr = bias + ph.p_vaddr;
      hdr_len = ph.p_memsz;
    }
  }
  unsigned char start[32];
  const size_t have = std::min(sizeof start, hdr_len);
  if (hdr != 0 && t.hi != 0 && read_hdr(hdr, start, have) &&
      parse_eh_frame_hdr(start, have, hdr, hdr_len, &t))
    out->tables.push_back(t);
}

int collect_tables(struct dl_phdr_info *info, size_t, void *arg) {
  // Mapped and safe to read here: the loader lock is held while
  // dl_iterate_phdr runs its callback.
  collect_object(info->dlpi_phdr, info->dlpi_phnum, uintptr_t(info->dlpi_addr),
                 static_cast<Collected *>(arg), [](uintptr_t hdr, unsigned char *dst, size_t n) {
                   std::memcpy(dst, reinterpret_cast<const void *>(hdr), n);
                   return true;
                 });
  return 0;
}

const UnwindTable *find_table(const Unwinder &u, uintptr_t ip) {
  auto it = std::upper_bound(u.tables.begin(), u.tables.end(), ip,
                             [](uintptr_t a, const UnwindTable &t) { return a < t.lo; });
  if (it == u.tables.begin()) return nullptr;
  --it;
  return ip < it->hi ? &*it : nullptr;
}

const Segment *find_segment(const Unwinder &u, uintptr_t addr) {
  auto it = std::upper_bound(u.segments.begin(), u.segments.end(), addr,
                             [](uintptr_t a, const Segment &s) { return a < s.lo; });
  if (it == u.segments.begin()) return nullptr;
  --it;
  return addr < it->hi ? &*it : nullptr;
}

bool read_own(pid_t pid, uintptr_t addr, void *dst, size_t len) {
  iovec local{dst, len};
  iovec remote{reinterpret_cast<void *>(addr), len};
  return process_vm_readv(pid, &local, 1, &remote, 1, 0) == ssize_t(len);
}

// Why a read outside the window was refused (unwind_snapshot tells a stack
// cut by the window from this pointer).
const char *const kRefusedRead = "memory outside the stack window and every module";

int access_mem(unw_addr_space_t, unw_word_t addr, unw_word_t *val, int write, void *arg) {
  auto *call = static_cast<UnwindCall *>(arg);
  if (write) return -UNW_EINVAL;
  const StackCopy &s = *call->copy;
  const size_t n = sizeof *val;
  if (addr >= s.sp && addr - s.sp + n <= s.len) {
    std::memcpy(val, s.bytes + (addr - s.sp), n);
    return 0;
  }
  // Outside the window: only memory of a loaded object (code, unwind
  // tables, data). The rest of the stack is not the snapshot's: refused.
  Unwinder &u = *call->u;
  const Segment *seg = find_segment(u, addr);
  if (seg == nullptr || addr + n > seg->hi) {
    ++call->stats->refused_reads;
    call->why = kRefusedRead;
    return -UNW_EINVAL;
  }
  const uintptr_t page = addr / kPageBytes;
  const size_t in_page = addr % kPageBytes;
  if (!seg->writable && in_page + n <= kPageBytes) {
    CachedPage &c = u.cache[page % kCachePages];
    if (c.page == page) {
      ++call->stats->cached_reads;
      std::memcpy(val, c.bytes + in_page, n);
      return 0;
    }
    ++call->stats->fallback_reads;
    if (read_own(call->pid, page * kPageBytes, c.bytes, kPageBytes)) {
      c.page = page;
      std::memcpy(val, c.bytes + in_page, n);
      return 0;
    }
    c.page = ~uintptr_t(0);
  }
  ++call->stats->fallback_reads;
  if (read_own(call->pid, addr, val, n)) return 0;
  call->why = "module memory not readable";
  return -UNW_EINVAL;
}

int access_reg(unw_addr_space_t, unw_regnum_t reg, unw_word_t *val, int write, void *arg) {
  auto *call = static_cast<UnwindCall *>(arg);
  if (write) return -UNW_EINVAL;
  if (reg == UNW_X86_64_RIP) {
    *val = call->pc;
    return 0;
  }
  if (reg == UNW_X86_64_RSP) {
    *val = call->sp;
    return 0;
  }
  if (reg == UNW_X86_64_RBP) {
    if (call->rbp_known) {
      *val = call->rbp;
      return 0;
    }
    call->needed_rbp = true;
  }
  call->why = "a frame needs a register /proc does not give";
  return -UNW_EBADREG;
}

int access_fpreg(unw_addr_space_t, unw_regnum_t, unw_fpreg_t *, int, void *arg) {
  static_cast<UnwindCall *>(arg)->why = "a frame needs a register /proc does not give";
  return -UNW_EBADREG;
}

int find_proc_info(unw_addr_space_t as, unw_word_t ip, unw_proc_info_t *pi,
                   int need_unwind_info, void *arg) {
  auto *call = static_cast<UnwindCall *>(arg);
  const UnwindTable *t = find_table(*call->u, uintptr_t(ip));
  int ret = -UNW_ENOINFO;
  if (t != nullptr) {
    unw_dyn_info_t di;
    std::memset(&di, 0, sizeof di);
    di.start_ip = t->lo;
    di.end_ip = t->hi;
    di.format = UNW_INFO_FORMAT_REMOTE_TABLE;
    di.u.rti.segbase = t->hdr;
    di.u.rti.table_data = t->table;
    // In words, as libunwind wants it: each entry is two int32s.
    di.u.rti.table_len = t->fde_count * 8 / sizeof(unw_word_t);
    ret = call->u->search(as, ip, &di, pi, need_unwind_info, arg);
  }
  if (ret == -UNW_ENOINFO) {
    // Not -UNW_ENOINFO: on that code libunwind follows rbp as a frame
    // chain, and a guessed rbp gives wrong frames. Any other error ends
    // the stack where the tables end.
    call->why = "no unwind info for a pc";
    if (find_segment(*call->u, uintptr_t(ip)) == nullptr) {
      call->stats->unknown_code = true;
      call->unknown_addr = uintptr_t(ip);
    }
    return -UNW_EINVAL;
  }
  return ret;
}

void put_unwind_info(unw_addr_space_t, unw_proc_info_t *, void *) {}

int get_dyn_info_list_addr(unw_addr_space_t, unw_word_t *, void *) {
  return -UNW_ENOINFO;  // no JIT-registered unwind info
}

int resume(unw_addr_space_t, unw_cursor_t *, void *) { return -UNW_EINVAL; }

void clear_page_cache(Unwinder &u) {
  for (size_t i = 0; i < kCachePages; ++i) u.cache[i].page = ~uintptr_t(0);
}

void refresh_locked(Unwinder &u) {
  Collected c;
  dl_iterate_phdr(collect_tables, &c);
  auto by_lo = [](const auto &a, const auto &b) { return a.lo < b.lo; };
  std::sort(c.tables.begin(), c.tables.end(), by_lo);
  std::sort(c.segments.begin(), c.segments.end(), by_lo);
  u.tables = std::move(c.tables);
  u.segments = std::move(c.segments);
  u.no_object_pages.clear();
  clear_page_cache(u);
  if (u.as != nullptr) u.flush(u.as, 0, 0);
}

// The ELF object whose file maps addr, found in /proc/self/maps: its
// lowest mapping of file offset 0 holds the ELF and program headers.
// Reads no file and takes no loader lock; the headers are copied with
// process_vm_readv. False when addr is in no file mapping.
bool find_object_base(Unwinder &u, uintptr_t addr, uintptr_t *base) {
  char path[512] = "";
  const bool in_file = scan_maps(u.maps_text, sizeof u.maps_text - 1, [&](const char *line) {
    MapsLine m;
    if (!parse_maps_line(line, &m) || addr < m.lo || addr >= m.hi) return false;
    if (m.path[0] != '/' || std::strlen(m.path) >= sizeof path) return true;
    std::strcpy(path, m.path);
    return true;
  }) && path[0] == '/';
  if (!in_file) return false;
  *base = 0;
  scan_maps(u.maps_text, sizeof u.maps_text - 1, [&](const char *line) {
    MapsLine m;
    if (!parse_maps_line(line, &m) || m.offset != 0 || std::strcmp(m.path, path) != 0)
      return false;
    if (m.lo <= addr && (*base == 0 || m.lo < *base)) *base = m.lo;
    return false;
  });
  return *base != 0;
}

// Adds the tables of the object mapped at addr (loaded after the last
// refresh) to the unwinder, kept sorted. False when there is none to add.
bool discover_locked(Unwinder &u, uintptr_t addr) {
  constexpr size_t kMaxNoObjectPages = 1024;
  const uintptr_t page = addr / kPageBytes;
  if (std::find(u.no_object_pages.begin(), u.no_object_pages.end(), page) !=
      u.no_object_pages.end())
    return false;
  const pid_t pid = getpid();
  uintptr_t base = 0;
  ElfW(Ehdr) eh;
  ElfW(Phdr) ph[64];
  bool ok = find_object_base(u, addr, &base) && read_own(pid, base, &eh, sizeof eh) &&
            std::memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_phentsize == sizeof ph[0] &&
            eh.e_phnum > 0 && eh.e_phnum <= 64 &&
            read_own(pid, base + eh.e_phoff, ph, eh.e_phnum * sizeof ph[0]);
  // The load bias: the first PT_LOAD (file offset 0) is mapped at base.
  uintptr_t bias = 0;
  if (ok) {
    ok = false;
    for (int i = 0; i < eh.e_phnum && !ok; ++i) {
      if (ph[i].p_type != PT_LOAD) continue;
      bias = base - (ph[i].p_vaddr & ~uintptr_t(kPageBytes - 1));
      ok = true;
    }
  }
  Collected c;
  if (ok) {
    collect_object(ph, eh.e_phnum, bias, &c, [pid](uintptr_t hdr, unsigned char *dst, size_t n) {
      return read_own(pid, hdr, dst, n);
    });
    // Never twice: an object some of whose segments are known already.
    for (const Segment &seg : c.segments)
      if (find_segment(u, seg.lo) != nullptr || find_segment(u, seg.hi - 1) != nullptr) ok = false;
    ok = ok && find_table(u, addr) == nullptr && !c.tables.empty();
  }
  if (!ok) {
    if (u.no_object_pages.size() >= kMaxNoObjectPages) u.no_object_pages.clear();
    u.no_object_pages.push_back(page);
    return false;
  }
  auto by_lo = [](const auto &a, const auto &b) { return a.lo < b.lo; };
  u.tables.insert(u.tables.end(), c.tables.begin(), c.tables.end());
  u.segments.insert(u.segments.end(), c.segments.begin(), c.segments.end());
  std::sort(u.tables.begin(), u.tables.end(), by_lo);
  std::sort(u.segments.begin(), u.segments.end(), by_lo);
  return true;
}

template <typename Fn>
bool resolve(void *lib, const char *name, Fn *out) {
  *out = reinterpret_cast<Fn>(dlsym(lib, name));
  return *out != nullptr;
}

}  // namespace

bool snapshot_unwinder_init() {
  Unwinder &u = *g_unwinder;
  std::lock_guard<std::mutex> lock(u.mu);
  if (u.ready) return true;
  // RTLD_LOCAL: see the top of this file.
  void *lib = dlopen("libunwind-x86_64.so.8", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char *e = dlerror();
    u.problem = std::string("cannot load libunwind-x86_64.so.8: ") + (e ? e : "?");
    return false;
  }
  if (!resolve(lib, "_Ux86_64_create_addr_space", &u.create) ||
      !resolve(lib, "_Ux86_64_destroy_addr_space", &u.destroy) ||
      !resolve(lib, "_Ux86_64_init_remote", &u.init_remote) ||
      !resolve(lib, "_Ux86_64_step", &u.step) ||
      !resolve(lib, "_Ux86_64_get_reg", &u.get_reg) ||
      !resolve(lib, "_Ux86_64_get_proc_info", &u.proc_info) ||
      !resolve(lib, "_Ux86_64_set_caching_policy", &u.policy) ||
      !resolve(lib, "_Ux86_64_flush_cache", &u.flush) ||
      !resolve(lib, "_Ux86_64_dwarf_search_unwind_table", &u.search)) {
    u.problem = "libunwind-x86_64.so.8 lacks a remote-unwinding entry point";
    return false;
  }
  u.accessors.find_proc_info = find_proc_info;
  u.accessors.put_unwind_info = put_unwind_info;
  u.accessors.get_dyn_info_list_addr = get_dyn_info_list_addr;
  u.accessors.access_mem = access_mem;
  u.accessors.access_reg = access_reg;
  u.accessors.access_fpreg = access_fpreg;
  u.accessors.resume = resume;
  u.accessors.get_proc_name = nullptr;
  u.as = u.create(&u.accessors, 0);
  if (u.as == nullptr) {
    u.problem = "libunwind could not create an address space";
    return false;
  }
  // Unwind rules per pc, kept between unwinds: the warm path. They depend
  // on code only, never on the stack copy.
  // (Measured: either cache policy costs two rt_sigprocmask calls per step,
  // libunwind's lock around its cache; without a cache a step costs more.)
  u.policy(u.as, UNW_CACHE_GLOBAL);
  u.cache.reset(new CachedPage[kCachePages]);
  refresh_locked(u);
  u.problem.clear();
  u.ready = true;
  return true;
}

void snapshot_unwinder_refresh() {
  Unwinder &u = *g_unwinder;
  std::lock_guard<std::mutex> lock(u.mu);
  if (u.ready) refresh_locked(u);
}

void snapshot_unwinder_flush_caches() {
  Unwinder &u = *g_unwinder;
  std::lock_guard<std::mutex> lock(u.mu);
  if (!u.ready) return;
  clear_page_cache(u);
  u.flush(u.as, 0, 0);
}

const std::string &snapshot_unwinder_problem() { return g_unwinder->problem; }

// fork (src/fork.cc): no unwind or refresh is half-way when the address
// space is copied; the child's unwinder is the parent's, tables and caches
// included (the same code at the same addresses).
void snapshot_fork_prepare() { g_unwinder->mu.lock(); }
void snapshot_fork_parent() { g_unwinder->mu.unlock(); }
void snapshot_fork_child() { g_unwinder->mu.unlock(); }

namespace {

// ---- Frames whose CFA rule needs rbp (frame-pointer code, sanitizer
// interceptors): the caller found from the stack copy, then checked. ----
//
// Why this works: a frame's CFI says "CFA = rbp + 16" only after its
// function did `push rbp; mov rbp, rsp`, so its rbp is the address X of the
// slot holding the caller's rbp, with the return address at X + 8, and X
// lies in the copy between the frame's sp and its CFA. X is taken from the
// code when it can be: a prologue `push rbp; mov rbp,rsp; push...; sub N`
// (decoded from the FDE's start, found by libunwind) puts it at
// sp + 8 * pushes + N at every call site of the body where sp did not
// move. The copy is also scanned from sp upward (kRbpScanSlots slots at
// most); recover_rbp says in which order the two are tried. A slot is
// taken only if
//   - [X] (the caller's rbp) is 0 or a higher address in the stack mapping;
//   - [X + 8] is in executable text of a loaded object and the bytes before
//     it decode as a call (e8 rel32, or ff /2 with any ModRM, SIB,
//     displacement and REX prefix) that reaches this frame's function:
//     directly, through a PLT stub's `jmp *GOT`, or `call *disp(%rip)`.
//     Only the prologue's slot may follow any call (through a register, or
//     to a wrapper that tail-calls this function): a scanned slot can be a stale frame that
//     an earlier call left in the locals (libasan's interceptors have 2 KiB
//     of them, and gave a wrong, self-consistent old chain when any call
//     was accepted), and only a proven target rules that out.
// Then the cursor is started again from (sp, pc, rbp = X) and stepped with
// the frame's own CFI; the step must land exactly on ([X + 8], X + 16).
// Once rbp is known the CFI tracks it (the callee's save slot), so later
// frames usually need no guess; every frame past a guess is still checked
// (return address preceded by a call, sp rising), and the first that fails
// ends the stack: fewer frames, never wrong ones. Restarting the cursor
// loses what libunwind knew of other callee-saved registers; CFA rules use
// rsp or rbp only, so that costs nothing here.
constexpr int kRbpScanSlots = 512;
constexpr int kMaxRbpGuesses = 8;  // per unwind

// Reads code or data of a loaded object (never the stack) into dst.
bool read_module(UnwindCall &call, uintptr_t addr, void *dst, size_t len) {
  unsigned char *out = static_cast<unsigned char *>(dst);
  for (size_t done = 0; done < len; done += sizeof(unw_word_t)) {
    unw_word_t w;
    const uintptr_t a = addr + done;
    const Segment *seg = find_segment(*call.u, a);
    if (seg == nullptr || a + sizeof w > seg->hi) return false;
    // Not access_mem: a stack address must not be served from the copy.
    if (access_mem(nullptr, a, &w, 0, &call) < 0) return false;
    std::memcpy(out + done, &w, std::min(sizeof w, len - done));
  }
  return true;
}

// Length of an `ff /2` (call near indirect) whose ModRM byte is m and
// which is followed by sib; 0 when m is not /2.
int indirect_call_length(uint8_t m, uint8_t sib) {
  if (((m >> 3) & 7) != 2) return 0;
  const int mod = m >> 6, rm = m & 7;
  if (mod == 3) return 2;
  int len = 2;
  if (rm == 4) {
    ++len;  // SIB
    if (mod == 0 && (sib & 7) == 5) len += 4;
  } else if (mod == 0 && rm == 5) {
    len += 4;  // rip-relative
  }
  if (mod == 1) len += 1;
  if (mod == 2) len += 4;
  return len;
}

// Follows a PLT stub ([endbr64] [bnd] jmp *disp32(%rip)) to its GOT target.
uintptr_t through_plt(UnwindCall &call, uintptr_t target) {
  unsigned char b[16];
  if (!read_module(call, target, b, sizeof b)) return target;
  size_t i = 0;
  if (b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa) i = 4;
  if (b[i] == 0xf2) ++i;
  if (b[i] != 0xff || b[i + 1] != 0x25) return target;
  int32_t disp;
  std::memcpy(&disp, b + i + 2, 4);
  uintptr_t slot = target + i + 6 + intptr_t(disp), got = 0;
  if (find_segment(*call.u, slot) == nullptr || !read_own(call.pid, slot, &got, sizeof got))
    return target;
  return got;
}

// True when ra follows a call instruction in executable text. With
// callee != 0 the call must reach callee: a direct call (itself or through
// a PLT stub) or `call *disp32(%rip)` whose slot holds callee; any other
// indirect call (through a register or memory we cannot see) only when
// allow_unresolved.
bool after_call(UnwindCall &call, uintptr_t ra, uintptr_t callee, bool allow_unresolved) {
  const Segment *seg = find_segment(*call.u, ra - 1);
  if (seg == nullptr || !seg->exec || ra < seg->lo + 8) return false;
  unsigned char b[8];  // the 8 bytes before ra
  if (!read_module(call, ra - 8, b, 8)) return false;
  if (b[3] == 0xe8) {
    int32_t rel;
    std::memcpy(&rel, b + 4, 4);
    const uintptr_t target = ra + intptr_t(rel);
    if (callee == 0 || target == callee || through_plt(call, target) == callee) return true;
  }
  if (b[2] == 0xff && b[3] == 0x15 && callee != 0) {  // call *disp32(%rip)
    int32_t disp;
    std::memcpy(&disp, b + 4, 4);
    uintptr_t target = 0;
    if (read_module(call, ra + intptr_t(disp), &target, sizeof target) && target == callee)
      return true;
  }
  if (callee != 0 && !allow_unresolved) return false;
  for (int start = 0; start <= 6; ++start) {  // the instruction is ra - (8 - start)
    int op = start;
    if (b[op] >= 0x40 && b[op] <= 0x4f) ++op;  // REX
    if (op > 6 || b[op] != 0xff) continue;
    const int len = indirect_call_length(b[op + 1], op + 2 < 8 ? b[op + 2] : 0);
    if (len != 0 && op + len == 8) return true;
  }
  return false;
}

// Bytes of a ModRM operand (ModRM, SIB, displacement) starting at p[0].
int modrm_length(const unsigned char *p) {
  const int mod = p[0] >> 6, rm = p[0] & 7;
  if (mod == 3) return 1;
  int len = 1;
  if (rm == 4) {
    ++len;
    if (mod == 0 && (p[1] & 7) == 5) len += 4;
  } else if (mod == 0 && rm == 5) {
    len += 4;
  }
  return len + (mod == 1 ? 1 : mod == 2 ? 4 : 0);
}

// For a function that starts [endbr64] push %rbp; mov %rsp,%rbp, then
// pushes registers and ends its prologue with sub $N,%rsp (moves and lea
// that leave rsp alone may be scheduled in between): rbp - sp in its body,
// 8 per push plus N. -1 for any other prologue, or one pc has not passed.
long prologue_frame_bytes(UnwindCall &call, uintptr_t start, uintptr_t pc) {
  unsigned char b[64 + 16];
  if (!read_module(call, start, b, 64)) return -1;
  std::memset(b + 64, 0, 16);
  size_t i = 0;
  if (b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa) i = 4;
  if (b[i] != 0x55) return -1;
  ++i;
  if (!(b[i] == 0x48 && ((b[i + 1] == 0x89 && b[i + 2] == 0xe5) ||
                         (b[i + 1] == 0x8b && b[i + 2] == 0xec))))
    return -1;
  i += 3;
  long bytes = 0;
  while (i < 64) {
    unsigned rex = 0;
    if (b[i] >= 0x40 && b[i] <= 0x4f) rex = b[i++];
    const unsigned char op = b[i];
    if (op >= 0x50 && op <= 0x57 && (rex == 0 || rex == 0x41)) {
      if (op == 0x54 && !(rex & 1)) return -1;  // push %rsp
      bytes += 8;
      i += 1;
    } else if ((rex & 8) && op == 0x83 && b[i + 1] == 0xec) {  // sub $imm8,%rsp
      bytes += static_cast<int8_t>(b[i + 2]);
      i += 3;
      break;
    } else if ((rex & 8) && op == 0x81 && b[i + 1] == 0xec) {  // sub $imm32,%rsp
      int32_t imm;
      std::memcpy(&imm, b + i + 2, 4);
      bytes += imm;
      i += 6;
      break;
    } else if (op == 0x89 || op == 0x8b || op == 0x8d) {
      // mov r/m,reg / mov reg,r/m / lea: rsp is the destination only as
      // r/m of 0x89 with mod 3, or as reg of 0x8b and 0x8d.
      const unsigned char m = b[i + 1];
      if (op == 0x89 && (m >> 6) == 3 && (m & 7) == 4 && !(rex & 1)) return -1;
      if (op != 0x89 && ((m >> 3) & 7) == 4 && !(rex & 4)) return -1;
      i += 1 + size_t(modrm_length(b + i + 1));
    } else {
      return -1;
    }
  }
  if (i >= 64 || start + i > pc || bytes < 0) return -1;
  return bytes;
}

// The frame (sp, pc) could not be stepped because its rule needs rbp: finds
// rbp as explained above and leaves *cursor stepped to the caller. False
// when no candidate passes: the stack ends at this frame.
bool recover_rbp(Unwinder &u, UnwindCall &call, unw_cursor_t *cursor, uintptr_t sp,
                 uintptr_t pc) {
  const StackCopy &snap = *call.copy;
  call.sp = sp;
  call.pc = pc;
  call.rbp_known = false;
  unw_cursor_t probe;
  unw_proc_info_t pi;
  if (u.init_remote(&probe, u.as, &call) < 0 || u.proc_info(&probe, &pi) < 0 ||
      pi.start_ip == 0)
    return false;
  const uintptr_t lo = snap.sp, end = snap.sp + snap.len;
  const uintptr_t stack_hi = snap.stack_hi != 0 ? snap.stack_hi : end;
  const uintptr_t callee = uintptr_t(pi.start_ip);
  // The slot the prologue puts rbp at, if it can be decoded; then the scan.
  // A slot is tried in this order, the first that passes its checks the
  // only one stepped from: (1) the prologue's slot behind a call proven to
  // reach this function; (2) the first scanned slot behind such a call;
  // (3) the prologue's slot behind any call (through a register, or to a
  // wrapper that tail-calls this function, like libasan's
  // __interceptor_read into its .part.0). A scanned slot may be a stale
  // frame left in the locals by an earlier call (libasan's interceptors
  // have 2 KiB of them), hence never (3) for it; the prologue's slot is
  // wrong only where sp moved in the body (alloca, pushed arguments), hence
  // (1) and (2) before (3).
  const long pro = prologue_frame_bytes(call, callee, pc);
  auto passes = [&](uintptr_t x, bool proven, uintptr_t *ra) {
    if (x < lo || x + 16 > end) return false;
    uintptr_t saved;
    std::memcpy(&saved, snap.bytes + (x - lo), 8);
    std::memcpy(ra, snap.bytes + (x - lo) + 8, 8);
    if (saved != 0 && (saved <= x || saved >= stack_hi)) return false;
    return proven ? after_call(call, *ra, callee, false) : after_call(call, *ra, 0, true);
  };
  uintptr_t x = 0, ra = 0;
  bool found = pro >= 0 && passes(sp + uintptr_t(pro), true, &ra);
  if (found) x = sp + uintptr_t(pro);
  for (int i = 0; !found && i < kRbpScanSlots; ++i) {
    x = sp + uintptr_t(i) * 8;
    if (x + 16 > end) break;
    found = passes(x, true, &ra);
  }
  if (!found && pro >= 0) {
    x = sp + uintptr_t(pro);
    found = passes(x, false, &ra);
  }
  if (!found) return false;
  call.rbp = x;
  call.rbp_known = true;
  call.why = nullptr;
  unw_word_t ip2 = 0, sp2 = 0;
  return u.init_remote(cursor, u.as, &call) >= 0 && u.step(cursor) > 0 &&
         u.get_reg(cursor, UNW_REG_IP, &ip2) >= 0 && u.get_reg(cursor, UNW_REG_SP, &sp2) >= 0 &&
         ip2 == ra && sp2 == x + 16;
}

}  // namespace

namespace {

// One unwind of the copy, the unwinder's lock held.
int unwind_locked(Unwinder &u, const StackCopy &snap, uintptr_t *pcs, int max, UnwindStats &st,
                  uintptr_t *unknown_addr) {
  UnwindCall call{&u, &snap, &st, getpid(), nullptr};
  call.sp = snap.sp;
  call.pc = snap.pc;
  // A signal's copy knows rbp: the first frame needs no recovery, and the
  // CFI carries it on (a caller's rbp is the saved slot, or this value
  // where no frame saved it).
  call.rbp = snap.rbp;
  call.rbp_known = snap.rbp_known;
  unw_cursor_t cursor;
  if (u.init_remote(&cursor, u.as, &call) < 0) {
    st.stop = "libunwind could not start";
    return 0;
  }
  int n = 0;
  uintptr_t prev_sp = snap.sp;
  for (;;) {
    unw_word_t ip = 0, sp = 0;
    if (u.get_reg(&cursor, UNW_REG_IP, &ip) < 0 || ip == 0 ||
        u.get_reg(&cursor, UNW_REG_SP, &sp) < 0) {
      st.stop = "end of stack";
      break;
    }
    if (n > 0) {
      // A caller's frame lies above its callee's, and its return address
      // in code we know; anything else is not a frame we can vouch for.
      const Segment *seg = find_segment(u, uintptr_t(ip) - 1);
      if (seg == nullptr && sp > prev_sp) {
        st.stop = "a return address outside every known object";
        st.unknown_code = true;
        call.unknown_addr = uintptr_t(ip) - 1;
        break;
      }
      if (sp <= prev_sp || seg == nullptr || !seg->exec) {
        st.stop = "implausible frame";
        break;
      }
      // Past a guessed rbp, every return address must also follow a call.
      if (st.first_guessed_frame >= 0 && !after_call(call, uintptr_t(ip), 0, true)) {
        st.stop = "implausible frame after a recovered rbp";
        break;
      }
    }
    if (n == max) {
      st.stop = "max frames";
      st.cut = true;
      break;
    }
    pcs[n++] = uintptr_t(ip);
    prev_sp = uintptr_t(sp);
    call.needed_rbp = false;
    int r = u.step(&cursor);
    if (r < 0 && call.needed_rbp && st.rbp_guesses < kMaxRbpGuesses) {
      ++st.rbp_guesses;
      if (recover_rbp(u, call, &cursor, uintptr_t(sp), uintptr_t(ip))) {
        if (st.first_guessed_frame < 0) st.first_guessed_frame = n;
        r = 1;
      } else {
        st.stop = "a frame needs rbp and no saved rbp passed the checks";
        break;
      }
    }
    if (r == 0) {
      st.stop = "end of stack";
      break;
    }
    if (r < 0) {
      st.stop = call.why != nullptr ? call.why : "libunwind could not step";
      // A read past the copy that was still inside the stack's mapping:
      // the stack goes on beyond the window.
      st.cut = call.why == kRefusedRead &&
               (snap.stack_hi == 0 || snap.sp + snap.len < snap.stack_hi);
      break;
    }
  }
  st.frames = n;
  *unknown_addr = call.unknown_addr;
  return n;
}

}  // namespace

int unwind_stack(const StackCopy &copy, uintptr_t *pcs, int max, UnwindStats *stats) {
  UnwindStats local;
  UnwindStats &st = stats != nullptr ? *stats : local;
  st = UnwindStats{};
  Unwinder &u = *g_unwinder;
  std::lock_guard<std::mutex> lock(u.mu);
  if (!u.ready) {
    st.stop = "snapshot unwinder not initialized";
    return 0;
  }
  if (copy.len == 0 || max <= 0) {
    st.stop = "no stack copy";
    return 0;
  }
  uintptr_t unknown = 0;
  int n = unwind_locked(u, copy, pcs, max, st, &unknown);
  // Code loaded after the tables were read: found in /proc/self/maps, its
  // tables added, and the unwind done again, once.
  if (st.unknown_code && discover_locked(u, unknown)) {
    st = UnwindStats{};
    st.discovered = 1;
    n = unwind_locked(u, copy, pcs, max, st, &unknown);
  }
  return n;
}

int unwind_snapshot(const Snapshot &snap, uintptr_t *pcs, int max, UnwindStats *stats) {
  StackCopy copy;
  copy.sp = snap.sp;
  copy.pc = snap.pc;
  copy.bytes = snap.stack();
  copy.len = snap.stack_bytes;
  copy.stack_hi = snap.stack_hi;
  return unwind_stack(copy, pcs, max, stats);
}

}  // namespace uvstall::internal
