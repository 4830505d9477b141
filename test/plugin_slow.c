/* A plugin for the loader-lock tests (test/hostile_child.cc; built with
 * -fno-optimize-sibling-calls so each function keeps its frame). Its
 * constructor blocks for UVSTALL_TEST_SLOW_MS milliseconds (0 or unset: not
 * at all) while dlopen holds glibc's loader lock: busy, or asleep when
 * built with -DUVSTALL_SLOW_SLEEP=1. uvstall_test_plugin_busy is code that
 * no unwinder has seen before it first runs (a cold libunwind cache). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void spin(int ms) {
  const uint64_t until = now_ns() + (uint64_t)ms * 1000000u;
  volatile uint64_t spins = 0;
  while (now_ns() < until) spins = spins + 1;
}

__attribute__((visibility("default"), noinline)) void uvstall_test_plugin_busy(int ms) {
  spin(ms);
}

/* Sleeps the capture signal cut short (EINTR), counted for the test. */
__attribute__((visibility("default"))) int uvstall_test_slow_eintr = 0;

__attribute__((visibility("default"), noinline)) void uvstall_test_slow_ctor_body(int ms) {
#if UVSTALL_SLOW_SLEEP
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec += 1;
    t.tv_nsec -= 1000000000L;
  }
  int rc;
  while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL)) != 0)
    if (rc == EINTR) ++uvstall_test_slow_eintr;
#else
  spin(ms);
#endif
}

__attribute__((constructor)) static void slow_ctor(void) {
  const char *ms = getenv("UVSTALL_TEST_SLOW_MS");
  if (ms != NULL && atoi(ms) > 0) uvstall_test_slow_ctor_body(atoi(ms));
}
