/* consumer.c — uvstall used the way a user outside this repository uses it:
 * plain C11, only <uvstall/uvstall.h> (which brings <uv.h>) and libc, built
 * with nothing but `pkg-config --cflags --libs uvstall` against an installed
 * copy (see run.sh).
 *
 * On its loop thread, each in a uv_timer callback, it blocks for 250 ms twice:
 * consumer_busy_culprit spins on the CPU, consumer_sleep_culprit sleeps.
 * Every record uvstall hands to on_report is printed on one line as
 *
 *     <when>\t<json>
 *
 * where <when> is the culprit that was running when the record arrived
 * ("during:consumer_busy_culprit") or "after" when none was: each culprit sets
 * an atomic flag on entry and clears it on return. Lines starting with "#"
 * are notes (how long each culprit ran by its own clock). check.py judges
 * the output.
 */
/* <uv.h> needs POSIX types (pthread_rwlock_t) that strict C11 hides. */
#define _POSIX_C_SOURCE 200809L

#include <uvstall/uvstall.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* noinline keeps each culprit a frame of its own; noclone (GCC) keeps its
 * symbol from becoming "consumer_busy_culprit.constprop.0". */
#if defined(__clang__)
#define CONSUMER_NOINLINE __attribute__((noinline))
#else
#define CONSUMER_NOINLINE __attribute__((noinline, noclone))
#endif

enum { kStallMs = 250, kFirstMs = 200, kGapMs = 400 };

/* Which culprit is running: 0 none, 1 busy, 2 sleep. Written by the culprits
 * on the loop thread, read by on_report on uvstall's writer thread. */
static atomic_int g_running;

static const char *const kCulpritNames[] = {
    "after", "during:consumer_busy_culprit", "during:consumer_sleep_culprit"};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Keeps the busy loop's work from being optimized away. */
static volatile uint64_t g_sink;

/* Spins for `ms` milliseconds of wall time. */
CONSUMER_NOINLINE uint64_t consumer_busy_culprit(int ms) {
  atomic_store(&g_running, 1);
  const uint64_t until = now_ns() + (uint64_t)ms * 1000000u;
  uint64_t x = 1;
  while (now_ns() < until) {
    for (int i = 0; i < 1000; ++i) x = x * 6364136223846793005u + 1442695040888963407u;
    g_sink = x;
  }
  atomic_store(&g_running, 0);
  return x;
}

/* Sleeps for `ms` milliseconds. Sleeps to an absolute deadline because a
 * plain nanosleep returns early with EINTR when uvstall's capture signal
 * arrives. */
CONSUMER_NOINLINE int consumer_sleep_culprit(int ms) {
  atomic_store(&g_running, 2);
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += ms / 1000;
  deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  int wakeups = 0;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL) == EINTR) ++wakeups;
  atomic_store(&g_running, 0);
  return wakeups;
}

/* uvstall's writer thread. One printf per record, flushed, so the lines come
 * out whole and in order. */
static void on_report(const char *json, size_t len, void *arg) {
  (void)arg;
  int running = atomic_load(&g_running);
  if (running < 0 || running > 2) running = 0;
  printf("%s\t%.*s\n", kCulpritNames[running], (int)len, json);
  fflush(stdout);
}

struct consumer {
  uv_loop_t loop;
  uv_timer_t step;
  uvstall_t *watch;
  int next;
};

static void on_closed(uv_handle_t *h) { (void)h; }

static void on_step(uv_timer_t *t) {
  struct consumer *c = t->data;
  const int step = c->next++;
  const uint64_t t0 = now_ns();
  if (step == 0) {
    consumer_busy_culprit(kStallMs);
    printf("# consumer_busy_culprit ran %.3f ms\n", (double)(now_ns() - t0) / 1e6);
  } else if (step == 1) {
    consumer_sleep_culprit(kStallMs);
    printf("# consumer_sleep_culprit ran %.3f ms\n", (double)(now_ns() - t0) / 1e6);
  } else {
    int rc = uvstall_stop(c->watch);
    if (rc != 0) fprintf(stderr, "consumer: uvstall_stop: %s\n", uvstall_strerror(rc));
    uv_close((uv_handle_t *)&c->step, on_closed);
    return;
  }
  fflush(stdout);
  /* The loop's clock still reads "before the culprit". */
  uv_update_time(&c->loop);
  uv_timer_start(&c->step, on_step, kGapMs, 0);
}

int main(void) {
  static struct consumer c;
  printf("# uvstall %s\n", uvstall_version());
  if (uv_loop_init(&c.loop) != 0) return 1;
  uvstall_options_t opts;
  uvstall_options_init(&opts);
  opts.on_report = on_report;
  int rc = uvstall_start(&c.loop, &opts, &c.watch);
  if (rc != 0) {
    fprintf(stderr, "consumer: uvstall_start: %s\n", uvstall_strerror(rc));
    return 1;
  }
  uv_timer_init(&c.loop, &c.step);
  c.step.data = &c;
  uv_timer_start(&c.step, on_step, kFirstMs, 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  uv_run(&c.loop, UV_RUN_NOWAIT);
  rc = uv_loop_close(&c.loop);
  if (rc != 0) {
    fprintf(stderr, "consumer: uv_loop_close: %s\n", uv_strerror(rc));
    return 1;
  }
  /* Records still queued are written by uvstall's exit handler. */
  return 0;
}
