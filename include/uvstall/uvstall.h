/* uvstall — find libuv event-loop stalls while they happen and name the code.
 *
 * This header is the contract for C and C++ users. A watch puts a uv_timer on
 * your loop; a sentinel thread notices when that timer is overdue and takes
 * the native stack of whatever is blocking: a thread asleep in a system call
 * is copied from outside; one running user code gets a signal whose handler
 * copies its registers and stack window, and the sentinel unwinds the copy. Reports are JSON Lines (docs/report.schema.json) written by a
 * writer thread, so output never blocks the loop or the sentinel.
 *
 * Usage (on the loop's thread):
 *
 *     #include <uvstall/uvstall.h>
 *
 *     uvstall_options_t opts;
 *     uvstall_options_init(&opts);
 *     opts.threshold_ms = 100;                 // report stalls of >= 100 ms
 *     opts.output_path = "/var/log/app/stalls.jsonl";
 *     uvstall_t *watch;
 *     int rc = uvstall_start(loop, &opts, &watch);
 *     if (rc != 0) fprintf(stderr, "uvstall: %s\n", uvstall_strerror(rc));
 *     uv_run(loop, UV_RUN_DEFAULT);
 *     ...
 *     uvstall_stop(watch);                     // closes our handles;
 *     uv_run(loop, UV_RUN_NOWAIT);             // lets libuv finish closing them
 *     uv_loop_close(loop);
 *
 * Build with `pkg-config --cflags --libs uvstall`. Like <uv.h>, which it
 * includes, this header needs POSIX types: with a strict -std=c11, define
 * _POSIX_C_SOURCE 200809L (or use -std=gnu11) before including it.
 *
 * Rules that hold for every function here:
 *   - Errors are negative `int` codes; uvstall_strerror() names the field and
 *     the allowed range. After an error nothing is half-started.
 *   - Fields are added only at the end of the structs; the init functions set
 *     `struct_size`, so binaries built against an older header keep working.
 *   - A watched thread blocked in a system call is never signalled: its
 *     stack is copied from another thread (a snapshot), so its calls take
 *     their full time and return what they would. The capture signal goes
 *     only to a thread running user code; one that enters a sleeping call
 *     that the kernel never restarts (nanosleep, sleep, poll, select) just
 *     before the signal lands sees EINTR from it: each such capture is
 *     counted (uvstall_stats_t.syscalls_interrupted).
 *   - fork(): the child has no sentinel until it calls uvstall_start (or
 *     uvstall_start_external), which starts one for the child: its stalls
 *     are reported with the child's pid and run_id. Watches that existed at
 *     the fork are inherited: never signalled or reported in the child;
 *     uvstall_get_stats (utilization -1) and uvstall_stop work on them,
 *     uvstall_stop from any thread of the child. The capture signal and
 *     process options stay the parent's (uvstall_configure returns
 *     UVSTALL_ECONFIGURED in the child of a started parent), and so do the
 *     metrics endpoint and file: the child serves none.
 */
#ifndef UVSTALL_UVSTALL_H
#define UVSTALL_UVSTALL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define UVSTALL_EXTERN __attribute__((visibility("default")))
#else
#define UVSTALL_EXTERN
#endif

#define UVSTALL_VERSION_MAJOR 0
#define UVSTALL_VERSION_MINOR 1
#define UVSTALL_VERSION_PATCH 0
#define UVSTALL_VERSION_STRING "0.1.0"

/* Error codes: negative, stable, each with a message from uvstall_strerror(). */
#define UVSTALL_ERRNO_MAP(XX)                                                  \
  XX(EINVAL, -1, "invalid argument: a NULL handle, loop, options or output pointer") \
  XX(ESTRUCT, -2, "options.struct_size is too small: fill the options with uvstall_options_init() first") \
  XX(EINTERVAL, -3, "interval_ms must be between 1 and 3600000") \
  XX(ETHRESHOLD, -4, "threshold_ms must be 0 (automatic: max(100, 2 x interval_ms)) or between 2 x interval_ms and 3600000") \
  XX(EMAXFRAMES, -5, "max_frames must be between 1 and 256") \
  XX(ECAPTURETIMEOUT, -6, "capture_timeout_ms must be between 1 and 10000") \
  XX(ELOOPNAME, -7, "loop_name must be at most 63 bytes") \
  XX(EOUTPUT, -8, "output_path could not be opened for appending (a FIFO needs a reader)") \
  XX(EALREADY, -9, "this loop is already watched by uvstall") \
  XX(ESIGNAL, -10, "signal must be 0 (default), SIGUSR1, SIGUSR2 or a real-time signal between SIGRTMIN and SIGRTMAX") \
  XX(ECONFIGURED, -11, "uvstall_configure must be called once, before the first uvstall_start") \
  XX(EQUEUE, -12, "max_queued_reports must be between 1 and 1000000") \
  XX(ETHREAD, -13, "could not start the sentinel or writer thread") \
  XX(EUV, -14, "a libuv call failed while attaching to the loop") \
  XX(ENOMEM, -15, "out of memory") \
  XX(ELIMIT, -16, "too many loops watched at once (at most 4096)") \
  XX(EWRONGTHREAD, -17, "uvstall_stop must be called on the thread that called uvstall_start") \
  XX(ESIGACTION, -18, "could not install the capture signal handler") \
  XX(EMAXSAMPLES, -19, "max_samples_per_stall must be between 1 and 64") \
  XX(EABORTAFTER, -20, "abort_after_ms must be 0 (off) or between threshold_ms and 3600000") \
  XX(ERATELIMIT, -21, "max_stalls_per_minute must be between 0 (unlimited) and 1000000") \
  XX(ESUMMARY, -22, "summary_interval_ms must be 0 (off) or between 100 and 86400000") \
  XX(ECONTEXT, -23, "context key must be 1 to 31 bytes, and at most 8 keys are kept") \
  XX(EMETRICSINTERVAL, -24, "metrics_interval_ms must be 0 (off) or between 100 and 86400000") \
  XX(EMETRICSADDR, -25, "metrics_addr must be PORT, HOST:PORT or [IPV6]:PORT with a numeric address and a port between 1 and 65535") \
  XX(EMETRICSBIND, -26, "could not listen on metrics_addr (port in use, or not an address of this host)") \
  XX(EMETRICSFILE, -27, "metrics_file must be a path in a writable directory (written by rename, so its directory needs write access), not a device, pipe or directory") \
  XX(EWAKEFD, -28, "could not create the external watch's wake descriptor (eventfd): too many open files?") \
  XX(ESTACKWINDOW, -29, "stack_window_kb must be between 4 and 1024")

typedef enum {
#define UVSTALL_ERRNO_ENUM_(name, value, msg) UVSTALL_##name = (value),
  UVSTALL_ERRNO_MAP(UVSTALL_ERRNO_ENUM_)
#undef UVSTALL_ERRNO_ENUM_
  UVSTALL_ERRNO_END_ = -30
} uvstall_errno_t;

/* One watch of one loop. Opaque; freed by uvstall_stop (memory is released
 * once the loop has run its close callbacks). */
typedef struct uvstall_s uvstall_t;

/* Called on uvstall's writer thread (never the loop or the sentinel) with one
 * JSON record, without a trailing newline; `json` is NUL-terminated and
 * `len` excludes the NUL. Do not call uvstall_* from it. A slow callback only
 * delays later reports; those that do not fit in the queue are dropped and
 * counted. */
typedef void (*uvstall_report_cb)(const char *json, size_t len, void *arg);

/* Per-loop options. Fill with uvstall_options_init(), then change fields. */
typedef struct uvstall_options_s {
  /* Set by uvstall_options_init to sizeof(uvstall_options_t); do not change. */
  size_t struct_size;
  /* How often the watch's timer ticks on the loop. Default 20. */
  uint32_t interval_ms;
  /* Report when the tick is this late. 0 = automatic: max(100, 2 x interval). */
  uint32_t threshold_ms;
  /* Most stack frames captured per stall (1..256). Default 64. */
  uint32_t max_frames;
  /* How long the sentinel waits for the stack before reporting
   * "capture":"timeout" (1..10000). Default 50. */
  uint32_t capture_timeout_ms;
  /* Name used in reports. NULL = "loop-N" (N counts watches from 1). Copied. */
  const char *loop_name;
  /* JSON Lines output: NULL = standard error (duplicated at start), else a
   * file opened for append and reopened when rotated away. Copied. */
  const char *output_path;
  /* When set, each record is passed here; file/stderr output is then off
   * unless output_path is also set. Default NULL. */
  uvstall_report_cb on_report;
  /* Passed to on_report. Default NULL. */
  void *report_arg;
  /* A stall that lasts gets further samples (stack and thread state) at
   * 2x, 4x, 8x... the threshold, up to this many records in all (1..64).
   * Default 8. */
  uint32_t max_samples_per_stall;
  /* Off by default (0). When one stall lasts this long, write its report,
   * then raise SIGABRT on the loop thread to get a core dump. */
  uint32_t abort_after_ms;
  /* Every this many ms, a "metrics" record (the window's lateness
   * percentiles, stalls and utilization) goes to the output.
   * 0 = off (default), else 100..86400000. */
  uint32_t metrics_interval_ms;
  /* KiB of the stalled thread's stack copied per capture, from its stack
   * pointer up (4..1024); frames beyond it are cut ("truncated"). Default 64. */
  uint32_t stack_window_kb;
} uvstall_options_t;

/* Process-wide settings: apply with uvstall_configure() before the first
 * uvstall_start() (afterwards it returns UVSTALL_ECONFIGURED). */
typedef struct uvstall_process_options_s {
  /* Set by uvstall_process_options_init; do not change. */
  size_t struct_size;
  /* Signal used to capture stacks. 0 = the default, SIGRTMAX - 3. */
  int signal;
  /* Records waiting for the writer beyond this are dropped and counted.
   * Default 1024. */
  uint32_t max_queued_reports;
  /* Stalls reported per minute, over all loops; further stalls write
   * nothing but are counted (next record's "suppressed", and "summary"
   * records). 0 = unlimited. Default 60. */
  uint32_t max_stalls_per_minute;
  /* How often a "summary" record (stalls per fingerprint) is written when
   * there were stalls. 0 = only at exit. Default 60000. */
  uint32_t summary_interval_ms;
  /* Serve Prometheus metrics over HTTP (GET /metrics) on this address:
   * "9464" (127.0.0.1), "127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464".
   * NULL = off (default). Served by a thread of uvstall's own with its own
   * libuv loop, never the watched loops. Copied. */
  const char *metrics_addr;
  /* Write the same metrics to this file every second, atomically (a
   * temporary file renamed over it), for node_exporter's textfile
   * collector. NULL = off (default). Copied. */
  const char *metrics_file;
} uvstall_process_options_t;

/* Counters of one watch, readable from any thread. Counts and quantiles are
 * since the watch started or since the last uvstall_stats_reset().
 *
 * Lateness is how late each tick of the heartbeat ran ("raw": one value per
 * tick). Delay is the same corrected for coordinated omission: a tick D ms
 * late also counts the ticks that should have run during those D ms, late
 * by D - interval, D - 2 x interval, ... down to one interval (HdrHistogram's
 * expected-interval correction): what a request arriving at a random moment
 * waited. Quantiles are within 1% (log-linear buckets, see README). */
typedef struct uvstall_stats_s {
  /* Set by the caller to sizeof(uvstall_stats_t) before uvstall_get_stats. */
  size_t struct_size;
  /* Ticks of the watch's timer so far. */
  uint64_t ticks;
  /* Stalls detected so far. */
  uint64_t stalls;
  /* Sum of the durations of the stalls that have ended, in milliseconds. */
  double stalled_ms_total;
  /* Records of this watch handed to the output (file, stderr or callback). */
  uint64_t reports_written;
  /* Records of this watch dropped because the queue was full or the output
   * failed. */
  uint64_t reports_dropped;
  /* Raw tick lateness: number of ticks and their lateness in milliseconds. */
  uint64_t lateness_count;
  double lateness_min_ms;
  double lateness_max_ms;
  double lateness_mean_ms;
  double lateness_p50_ms;
  double lateness_p90_ms;
  double lateness_p95_ms;
  double lateness_p99_ms;
  double lateness_p999_ms;
  /* Corrected request-delay view: values (ticks plus the ticks a delay
   * hid) and their quantiles in milliseconds. */
  uint64_t delay_count;
  double delay_mean_ms;
  double delay_p50_ms;
  double delay_p90_ms;
  double delay_p95_ms;
  double delay_p99_ms;
  double delay_p999_ms;
  /* Busy fraction of the loop (0..1) over the same window, from
   * uv_metrics_idle_time(): the host must have called
   * uv_loop_configure(loop, UV_METRICS_IDLE_TIME) before uv_run. -1 when
   * the loop reports no idle time (not configured, or not a libuv loop). */
  double utilization;
  /* How the samples' stacks were taken (counts in the same window; appended
   * last, so a caller whose struct_size predates them never sees them): capture signals sent to the loop thread; snapshots taken
   * instead, without a signal, while the thread slept in a system call;
   * snapshots thrown away because the thread ran while it was copied; and
   * captures whose signal cut a system call of the host short (it returned
   * EINTR). */
  uint64_t signals_sent;
  uint64_t snapshots;
  uint64_t snapshots_discarded;
  uint64_t syscalls_interrupted;
} uvstall_stats_t;

UVSTALL_EXTERN void uvstall_options_init(uvstall_options_t *opts);
UVSTALL_EXTERN void uvstall_process_options_init(uvstall_process_options_t *popts);

/* Applies process-wide settings; once, before the first uvstall_start. */
UVSTALL_EXTERN int uvstall_configure(const uvstall_process_options_t *popts);

/* Starts watching `loop`. Call on the thread that runs the loop, and keep
 * running the loop on that thread: the capture signal is sent to it. Our
 * handles are unref'd, so they never keep the loop alive. `opts` may be NULL
 * for all defaults. On success *out is the watch; on failure it is set to
 * NULL (when `out` itself is not NULL). */
UVSTALL_EXTERN int uvstall_start(uv_loop_t *loop, const uvstall_options_t *opts,
                                 uvstall_t **out);

/* Stops the watch: a stall in progress gets its stall_end, our handles are
 * closed (memory is freed in their close callbacks). Call on the loop's
 * thread; once the loop has run again (uv_run with UV_RUN_NOWAIT is enough),
 * uv_loop_close succeeds. The handle is invalid after this returns 0.
 * Waits at most 1 s for the sentinel and 1 s for the writer. A thread that
 * ends without calling this has its watch stopped as it ends ("thread_exit"
 * record); the handles stay in the loop, and this returns
 * UVSTALL_EWRONGTHREAD for that watch. */
UVSTALL_EXTERN int uvstall_stop(uvstall_t *h);

/* Starts watching a loop that is not a libuv loop (asyncio, a private copy
 * of libuv...): call on the loop's thread, then call uvstall_beat() from that
 * loop every interval_ms. Everything else (sentinel, capture, reports,
 * stats, uvstall_stop) is the same. A thread is watched at most once: this
 * returns UVSTALL_EALREADY if the thread already has a watch (of either
 * kind).
 *
 * With beats alone, a stall starts at the last beat before it and ends at
 * the first beat after it: its duration may be overstated by up to two
 * intervals. Two optional helpers make the bounds as exact as the loop lets
 * them be: the wake descriptor (the end) and the poll clock (the start). */
UVSTALL_EXTERN int uvstall_start_external(const uvstall_options_t *opts, uvstall_t **out);

/* One heartbeat of an external watch, from its loop's thread. Cheap: a
 * clock read and atomic stores; no lock, no system call. */
UVSTALL_EXTERN void uvstall_beat(uvstall_t *h);

/* The wake descriptor of an external watch: an eventfd (non-blocking,
 * close-on-exec) that the sentinel makes readable when it detects a stall,
 * as it wakes a libuv loop with uv_async_send. Watch it for reading on the
 * loop (Python: loop.add_reader(fd, ...)) and call uvstall_external_woken()
 * when it is readable: the stall then ends when the loop first polls again,
 * not at the next beat. Created on the first call; later calls return the
 * same descriptor. Returns it (>= 0), UVSTALL_EINVAL for a handle that is
 * not an external watch, or UVSTALL_EWAKEFD when eventfd() fails. Call on
 * the loop's thread.
 *
 * The descriptor belongs to the watch: never read, write or close it
 * yourself. uvstall_stop closes it, so stop watching it before calling
 * uvstall_stop (Python: loop.remove_reader(fd) first). A watch stopped by
 * its thread's exit keeps it open, like the rest of its handle.
 *
 * Loops: the default asyncio loop (a selector loop) queues the read callback
 * behind the callbacks already queued when its poll returns, so the callback
 * alone ends the stall after them; with the poll clock below, the end is
 * when that poll returned. uvloop's add_reader (a uv_poll handle) runs the
 * callback in libuv's poll phase, right after the poll returns: the end is
 * exact without a poll clock (uvloop has no poll to time from Python). */
UVSTALL_EXTERN int uvstall_external_wake_fd(uvstall_t *h);

/* The read callback of the wake descriptor, on the loop's thread: drains it
 * (one non-blocking read) and marks the loop alive (not a beat: tick
 * lateness is untouched). A stall in progress ends then, or, when a poll
 * clock is set and was stored after the stall's start, when the loop last
 * returned from its poll. Cheap; no lock. */
UVSTALL_EXTERN void uvstall_external_woken(uvstall_t *h);

/* Optional: `word` is where the loop stores the CLOCK_MONOTONIC time in
 * nanoseconds each time it returns from its poll (one aligned 64-bit store,
 * on the loop's thread; Python's time.monotonic_ns() is that clock on
 * Linux). uvstall only reads it: at detection, as the stall's start when it
 * is later than the last beat and not in the future (the loop was between
 * callbacks then, so the stall began no earlier), and in
 * uvstall_external_woken, as the stall's end. The word stays the host's: it
 * must stay valid until uvstall_stop returns or this is called again with
 * NULL. Returns 0 or UVSTALL_EINVAL (not an external watch). Any cost is the
 * host's store per poll; uvstall adds none. */
UVSTALL_EXTERN int uvstall_external_poll_clock(uvstall_t *h, const uint64_t *word);

/* Attaches `key`=`value` (e.g. "route", "/api/users") to the watch, on its
 * loop's thread; reports of stalls that begin while it is set carry it in
 * "context". value NULL removes the key. Keys are 1..31 bytes, values are
 * truncated to 127 bytes, at most 8 keys are kept (UVSTALL_ECONTEXT when a
 * 9th is added). Cheap: no lock, no allocation, no system call. */
UVSTALL_EXTERN int uvstall_set_context(uvstall_t *h, const char *key, const char *value);

/* Fills *out (out->struct_size must be set). Any thread. */
UVSTALL_EXTERN int uvstall_get_stats(const uvstall_t *h, uvstall_stats_t *out);

/* Starts a new window for uvstall_get_stats: counts, stalls, reports,
 * quantiles and utilization restart from zero. Prometheus counters
 * (metrics_addr, metrics_file) are not affected: they never go down. Any
 * thread. */
UVSTALL_EXTERN int uvstall_stats_reset(uvstall_t *h);

/* A static message for an error code; never NULL. */
UVSTALL_EXTERN const char *uvstall_strerror(int err);

/* The library's version, e.g. "0.1.0". */
UVSTALL_EXTERN const char *uvstall_version(void);

#ifdef __cplusplus
}
#endif

#endif /* UVSTALL_UVSTALL_H */
