/* A program that stalls in an inlined function and writes a uvstall stall
 * report about itself, so the symbolizer's tests have a real report of a
 * real binary without needing the library.
 *
 * It spins in spin(), which is always inlined into culprit(). A SIGALRM
 * handler records the interrupted pc from the signal context and the stack
 * from backtrace(), then stops the spin; main() turns the addresses into
 * report frames (module, offset from the load bias, build-id, dladdr symbol)
 * and prints a `start`, a `stall` and a `stall_end` record on stdout.
 *
 * Lines the test checks carry markers (@spin-line, @culprit-call,
 * @main-call); the test finds their numbers by searching this file.
 * Built with -DVARIANT=N it computes something else and so gets another
 * build-id, for the mismatch test. Linux, x86-64 or aarch64.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef VARIANT
#define VARIANT 0
#endif

enum { kMaxFrames = 64, kStallTimerUs = 50 * 1000 };

static volatile sig_atomic_t stop;
static volatile unsigned long sink;
static void *stack[kMaxFrames];
static int stack_depth;
static void *interrupted_pc;

/* The whole loop is on one line, so wherever the signal lands in it, the
 * line is the same. */
static inline __attribute__((always_inline)) void spin(void) {
  while (!stop) sink = sink * 31 + 7 + VARIANT; /* @spin-line */
}

__attribute__((noinline)) void culprit(void) {
  spin(); /* @culprit-call */
  sink ^= 1;
}

static void on_alarm(int sig, siginfo_t *info, void *context) {
  (void)sig;
  (void)info;
  ucontext_t *uc = context;
#if defined(__x86_64__)
  interrupted_pc = (void *)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
  interrupted_pc = (void *)uc->uc_mcontext.pc;
#else
#error "stall_app.c knows the pc register of x86-64 and aarch64 only"
#endif
  stack_depth = backtrace(stack, kMaxFrames);
  stop = 1;
}

struct module {
  uintptr_t address;
  const char *name;
  uintptr_t bias;
  char build_id[2 * 64 + 1];
};

static void read_build_id(struct dl_phdr_info *info, const ElfW(Phdr) *ph, struct module *m) {
  const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
  const unsigned char *end = p + ph->p_filesz;
  while (p + sizeof(ElfW(Nhdr)) <= end) {
    const ElfW(Nhdr) *note = (const ElfW(Nhdr) *)p;
    const unsigned char *name = p + sizeof(*note);
    const unsigned char *desc = name + ((note->n_namesz + 3) & ~3u);
    if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
        note->n_descsz <= 64) {
      for (unsigned i = 0; i < note->n_descsz; i++) sprintf(m->build_id + 2 * i, "%02x", desc[i]);
      return;
    }
    p = desc + ((note->n_descsz + 3) & ~3u);
  }
}

static int find_module(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  struct module *m = data;
  int found = 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t start = info->dlpi_addr + ph->p_vaddr;
    if (ph->p_type == PT_LOAD && m->address >= start && m->address < start + ph->p_memsz) found = 1;
  }
  if (!found) return 0;
  m->name = info->dlpi_name;
  m->bias = info->dlpi_addr;
  for (int i = 0; i < info->dlpi_phnum; i++)
    if (info->dlpi_phdr[i].p_type == PT_NOTE && !m->build_id[0]) read_build_id(info, &info->dlpi_phdr[i], m);
  return 1;
}

static void print_frame(int index, void *pc) {
  struct module m = {.address = (uintptr_t)pc};
  char exe[4096];
  printf("%s{\"pc\":\"%p\"", index ? "," : "", pc);
  if (!dl_iterate_phdr(find_module, &m)) {
    printf(",\"module\":null,\"offset\":null,\"build_id\":null,\"symbol\":null,\"symbol_offset\":null}");
    return;
  }
  const char *name = m.name;
  if (name[0] == '\0') { /* the main program */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    name = exe;
  } else if (strstr(name, "linux-vdso") || strstr(name, "linux-gate")) {
    name = "[vdso]";
  }
  printf(",\"module\":\"%s\",\"offset\":\"0x%lx\"", name, (unsigned long)(m.address - m.bias));
  printf(m.build_id[0] ? ",\"build_id\":\"%s\"" : ",\"build_id\":null%.0s", m.build_id);
  Dl_info dl;
  if (dladdr(pc, &dl) && dl.dli_sname)
    printf(",\"symbol\":\"%s\",\"symbol_offset\":%lu}", dl.dli_sname,
           (unsigned long)((uintptr_t)pc - (uintptr_t)dl.dli_saddr));
  else
    printf(",\"symbol\":null,\"symbol_offset\":null}");
}

int main(void) {
  void *warm_up[1];
  backtrace(warm_up, 1); /* loads the unwinder now, not in the handler */

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_alarm;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval timer = {.it_value = {.tv_usec = kStallTimerUs}};
  setitimer(ITIMER_REAL, &timer, NULL);

  culprit(); /* @main-call */

  /* Frames above the interrupted pc belong to the handler and the signal
   * trampoline; a report starts at the pc. */
  int first = 0;
  while (first < stack_depth && stack[first] != interrupted_pc) first++;
  if (first == stack_depth) {
    fprintf(stderr, "stall_app: the interrupted pc %p is not in the backtrace\n", interrupted_pc);
    return 1;
  }
  const char *common = "\"version\":1,\"run_id\":\"r1\",\"pid\":4242";
  printf("{\"type\":\"start\",%s,\"time\":\"2026-11-25T12:40:00.000Z\"}\n", common);
  printf("{\"type\":\"stall\",%s,\"time\":\"2026-11-25T12:40:01.123Z\",\"tid\":4242,"
         "\"loop\":\"main\",\"stall_id\":1,\"threshold_ms\":40,\"blocked_ms\":50.5,"
         "\"capture\":\"ok\",\"frames\":[",
         common);
  for (int i = first; i < stack_depth; i++) print_frame(i - first, stack[i]);
  printf("]}\n");
  printf("{\"type\":\"stall_end\",%s,\"time\":\"2026-11-25T12:40:01.500Z\",\"tid\":4242,"
         "\"loop\":\"main\",\"stall_id\":1,\"duration_ms\":377.25}\n",
         common);
  return 0;
}
