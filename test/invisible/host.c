/* A libuv host whose callbacks block in the calls a capture signal would
 * disturb, and which says what each call returned and how long it took:
 * the tests of invisible capture (test_invisible.py) compare that with the
 * same calls unwatched. Linked against Debian's libuv; built three times:
 * plain -O2 (watched by preloading uvstall), -O2 with uvstall embedded
 * (-DUVSTALL_EMBED: uvstall_start on the loop, stats printed at the end),
 * and -O0 -fno-omit-frame-pointer (preloaded: frame-pointer code).
 *
 * usage: uvstall-test-invisible-host MODE [ARG...]
 *   calls         six timer callbacks, 150 ms apart, each blocking in one
 *                 call: usleep(450000), sleep(1), poll(NULL, 0, 450),
 *                 select() with a 450 ms timeout, recv() from a peer that
 *                 sends after 450 ms, a mutex another thread holds 450 ms
 *   fsync PATH MB writes MB MiB of dirty pages to PATH before the loop
 *                 runs, then one callback fsync()s them
 *   sleeps MS US  one callback sleeping in usleep(US) calls for MS ms
 *   mixed N MS BUSY_US
 *                 N callbacks, 3 ms apart, each alternating BUSY_US us of
 *                 busy work and usleep(300) for MS ms (the race of a thread
 *                 entering a sleep as the signal comes: bench/run); prints
 *                 {"mixed":N,"sleeps":S,"eintr":E} at the end
 *   idle MS       the loop, idle, for MS ms (the unwatched baseline)
 * (450 ms, not 400: a sample is due 400 ms after the stall's start bound,
 * and a sample at the very end of a call finds the thread waking up.)
 * Each blocking call prints one JSON line on stdout:
 *   {"call":NAME,"rc":R,"errno":E,"start_ms":T0,"end_ms":T1,"eintr":N}
 * (CLOCK_MONOTONIC milliseconds; eintr: calls that returned EINTR, for
 * the loop of sleeps). An embedded build then prints
 *   {"stats":{"signals_sent":..,"snapshots":..,...}}
 * The loop then idles 1300 ms (a metrics file is written every second),
 * and the host exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#ifdef UVSTALL_EMBED
#include <uvstall/uvstall.h>
#endif

#define CULPRIT __attribute__((noinline, visibility("default")))

static double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void say(const char *call, long rc, int err, double t0, double t1, long eintr) {
  printf("{\"call\":\"%s\",\"rc\":%ld,\"errno\":%d,\"start_ms\":%.3f,\"end_ms\":%.3f,"
         "\"eintr\":%ld}\n", call, rc, err, t0, t1, eintr);
  fflush(stdout);
}

/* Each culprit times its own call (so the call is never a tail call: the
 * culprit's frame is on the stack while it blocks). */
CULPRIT void host_usleep(void) {
  const double t0 = mono_ms();
  errno = 0;
  const int rc = usleep(450000);
  say("usleep", rc, rc ? errno : 0, t0, mono_ms(), 0);
}

CULPRIT void host_sleep(void) {
  const double t0 = mono_ms();
  errno = 0;
  const unsigned rc = sleep(1);
  say("sleep", (long)rc, 0, t0, mono_ms(), 0);
}

CULPRIT void host_poll(void) {
  const double t0 = mono_ms();
  errno = 0;
  const int rc = poll(NULL, 0, 450);
  say("poll", rc, rc < 0 ? errno : 0, t0, mono_ms(), 0);
}

CULPRIT void host_select(void) {
  struct timeval tv = {0, 450000};
  const double t0 = mono_ms();
  errno = 0;
  const int rc = select(0, NULL, NULL, NULL, &tv);
  say("select", rc, rc < 0 ? errno : 0, t0, mono_ms(), 0);
}

static int g_pair[2] = {-1, -1};
static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static volatile int g_held = 0;

static void *slow_peer(void *arg) {
  (void)arg;
  usleep(450000);
  if (write(g_pair[1], "x", 1) != 1) abort();
  return NULL;
}

CULPRIT void host_recv(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, slow_peer, NULL) != 0) abort();
  char c;
  const double t0 = mono_ms();
  errno = 0;
  const ssize_t rc = recv(g_pair[0], &c, 1, 0);
  say("recv", (long)rc, rc < 0 ? errno : 0, t0, mono_ms(), 0);
  pthread_join(t, NULL);
}

static void *holder(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_mutex);
  __atomic_store_n(&g_held, 1, __ATOMIC_SEQ_CST);
  usleep(450000);
  pthread_mutex_unlock(&g_mutex);
  return NULL;
}

CULPRIT void host_mutex(void) {
  pthread_t t;
  __atomic_store_n(&g_held, 0, __ATOMIC_SEQ_CST);
  if (pthread_create(&t, NULL, holder, NULL) != 0) abort();
  while (!__atomic_load_n(&g_held, __ATOMIC_SEQ_CST)) sched_yield();
  const double t0 = mono_ms();
  const int rc = pthread_mutex_lock(&g_mutex);
  const double t1 = mono_ms();
  pthread_mutex_unlock(&g_mutex);
  say("mutex", rc, rc, t0, t1, 0);
  pthread_join(t, NULL);
}

static int g_fsync_fd = -1;
CULPRIT void host_fsync(void) {
  const double t0 = mono_ms();
  errno = 0;
  const int rc = fsync(g_fsync_fd);
  say("fsync", rc, rc ? errno : 0, t0, mono_ms(), 0);
}

static int g_sleeps_ms = 0, g_sleeps_us = 0;
CULPRIT void host_sleeps(void) {
  const double t0 = mono_ms();
  long calls = 0, eintr = 0, other = 0;
  while (mono_ms() - t0 < g_sleeps_ms) {
    errno = 0;
    const int rc = usleep((useconds_t)g_sleeps_us);
    ++calls;
    if (rc != 0 && errno == EINTR) ++eintr;
    else if (rc != 0) ++other;
  }
  say("sleeps", other ? -1 : 0, 0, t0, mono_ms(), eintr);
  printf("{\"sleep_calls\":%ld}\n", calls);
}

static int g_mixed_ms = 0;
static double g_mixed_busy_ms = 0.2;
static long g_mixed_sleeps = 0, g_mixed_eintr = 0;
CULPRIT void host_mixed(void) {
  const double t0 = mono_ms();
  while (mono_ms() - t0 < g_mixed_ms) {
    const double b = mono_ms();
    while (mono_ms() - b < g_mixed_busy_ms) {
    }
    errno = 0;
    if (usleep(300) != 0 && errno == EINTR) ++g_mixed_eintr;
    ++g_mixed_sleeps;
  }
}

typedef void (*culprit_fn)(void);
static culprit_fn g_steps[8];
static int g_nsteps = 0, g_next = 0;
static long g_repeat = 0;  /* mixed: run g_steps[0] this many times */
static uint64_t g_gap_ms = 150;
static uv_timer_t g_timer;
static int g_idle_ms = 1300;

static void on_done(uv_timer_t *t) { uv_close((uv_handle_t *)t, NULL); }

/* The callback every culprit runs in (the known caller chain: culprit,
 * on_step, libuv, uv_run, main). */
CULPRIT void on_step(uv_timer_t *t) {
  culprit_fn fn = NULL;
  if (g_repeat > 0) {
    --g_repeat;
    fn = g_steps[0];
  } else if (g_next < g_nsteps) {
    fn = g_steps[g_next++];
  }
  if (fn != NULL) fn();
  /* After a call that blocked, libuv's cached clock is stale: without this
   * the next timer would be due at once, in the same timers phase. */
  uv_update_time(t->loop);
  if (fn != NULL)
    uv_timer_start(t, on_step, g_gap_ms, 0);
  else
    uv_timer_start(t, on_done, (uint64_t)g_idle_ms, 0);
}

static int fill_dirty(const char *path, long mb) {
  g_fsync_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (g_fsync_fd < 0) return -1;
  static char block[1 << 20];
  memset(block, 'u', sizeof block);
  for (long i = 0; i < mb; ++i)
    if (write(g_fsync_fd, block, sizeof block) != (ssize_t)sizeof block) return -1;
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "calls";
  if (strcmp(mode, "calls") == 0) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, g_pair) != 0) return 2;
    culprit_fn all[] = {host_usleep, host_sleep, host_poll, host_select, host_recv, host_mutex};
    for (int i = 0; i < 6; ++i) g_steps[g_nsteps++] = all[i];
  } else if (strcmp(mode, "fsync") == 0 && argc > 3) {
    if (fill_dirty(argv[2], atol(argv[3])) != 0) {
      perror("fill");
      return 2;
    }
    g_steps[g_nsteps++] = host_fsync;
  } else if (strcmp(mode, "sleeps") == 0 && argc > 3) {
    g_sleeps_ms = atoi(argv[2]);
    g_sleeps_us = atoi(argv[3]);
    g_steps[g_nsteps++] = host_sleeps;
  } else if (strcmp(mode, "mixed") == 0 && argc > 3) {
    g_repeat = atol(argv[2]);
    g_mixed_ms = atoi(argv[3]);
    if (argc > 4) g_mixed_busy_ms = atof(argv[4]) / 1000.0;
    g_gap_ms = 3;
    g_steps[0] = host_mixed;
  } else if (strcmp(mode, "idle") == 0 && argc > 2) {
    g_idle_ms = atoi(argv[2]);
  } else {
    fprintf(stderr, "usage: %s calls | fsync PATH MB | sleeps MS US | mixed N MS | idle MS\n",
            argv[0]);
    return 2;
  }
  uv_loop_t *loop = uv_default_loop();
#ifdef UVSTALL_EMBED
  uvstall_t *w = NULL;
  const int src = uvstall_start(loop, NULL, &w);
  if (src != 0) {
    fprintf(stderr, "uvstall_start: %s\n", uvstall_strerror(src));
    return 3;
  }
#endif
  uv_timer_init(loop, &g_timer);
  uv_timer_start(&g_timer, on_step, 150, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  if (g_mixed_ms > 0)
    printf("{\"mixed\":%ld,\"sleeps\":%ld,\"eintr\":%ld}\n", atol(argv[2]), g_mixed_sleeps,
           g_mixed_eintr);
#ifdef UVSTALL_EMBED
  uvstall_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  uvstall_get_stats(w, &st);
  printf("{\"stats\":{\"stalls\":%llu,\"signals_sent\":%llu,\"snapshots\":%llu,"
         "\"snapshots_discarded\":%llu,\"syscalls_interrupted\":%llu}}\n",
         (unsigned long long)st.stalls, (unsigned long long)st.signals_sent,
         (unsigned long long)st.snapshots, (unsigned long long)st.snapshots_discarded,
         (unsigned long long)st.syscalls_interrupted);
  uvstall_stop(w);
  uv_run(loop, UV_RUN_NOWAIT);
#endif
  if (g_fsync_fd >= 0) close(g_fsync_fd);
  uv_loop_close(loop);
  return 0;
}
