// One watch: the state shared by a heartbeat source (the libuv timer in
// uv_source.cc, uvstall_beat in external_source.cc), the sentinel and the
// writer. The sentinel, capture and reports never know which heartbeat
// source a watch has: what a source lets them ask of its loop goes through
// LoopHooks.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "clock.h"
#include "config.h"
#include "histogram.h"
#include "report.h"
#include "sink.h"
#include "snapshot.h"
#include "thread_state.h"

namespace uvstall::internal {

// Frames of an interpreter running on the watched thread (CPython today),
// read by the sentinel while the thread is stalled: one provider per
// runtime, made at watch start on the loop thread.
class LangFrames {
 public:
  virtual ~LangFrames() = default;
  // The frames read now, the reader's name, and why frames are missing
  // (LangSample, src/report.h). Called on the sentinel, never concurrently.
  virtual LangSample dump() = 0;
};
// A reader for the calling thread's interpreter, or null (src/lang_python.cc).
std::shared_ptr<LangFrames> lang_frames_for_current_thread();
// Resolves which interpreter (if any) hosts us, once; see warm_statics.
void lang_python_warm();

// Application context (uvstall_set_context): written by the loop thread,
// read by the sentinel during a stall. A sequence lock over atomic words:
// the writer makes seq odd, stores, makes it even (release); the reader
// retries while seq is odd or changed. No lock, no allocation.
constexpr int kContextKeys = 8;
constexpr int kContextKeyBytes = 32;     // including the NUL
constexpr int kContextValueBytes = 128;  // including the NUL
struct ContextSlot {
  static constexpr int kEntryBytes = kContextKeyBytes + kContextValueBytes;
  static constexpr int kWords = kContextKeys * kEntryBytes / 8;
  std::atomic<uint32_t> seq{0};
  std::atomic<uint64_t> words[kWords] = {};
  // The loop thread's own copy (only it touches this).
  char plain[kContextKeys][kEntryBytes] = {};
};
// Loop thread: sets or (value null) removes a key. 0 or UVSTALL_ECONTEXT.
int context_set(ContextSlot *c, const char *key, const char *value);
// Sentinel: the current context as an object; null when empty or torn.
nlohmann::ordered_json context_read(const ContextSlot *c);

// Sentinel-only bookkeeping of one watch (touched by no other thread).
struct SentinelState {
  enum Phase { kIdle, kCapturing, kStalled } phase = kIdle;
  uint64_t stall_id = 0;
  uint64_t gen = 0;               // capture request generation
  uint64_t start_bound_ns = 0;    // best lower bound of the stall's start
  uint64_t capture_deadline_ns = 0;
  uint64_t window_until_ns = 0;   // thread state needs this long a window
  bool awaiting_late = false;     // capture timed out; a late one may land
  bool finished = false;          // stopped and finalized: drop it
  uint32_t sample = 0;            // index of the next stall record
  uint64_t next_sample_ns = 0;    // when to take the next sample
  uint64_t sentinel_late_ns = 0;  // how late the sentinel woke at detection
  ThreadSample first;             // thread state at detection
  bool suppressed = false;        // over the rate limit: write nothing
  bool aborting = false;          // abort_after_ms reached
  std::string fingerprint;        // of the first stack captured
  std::string culprit;            // first non-skipped symbol, for summaries
  nlohmann::ordered_json context; // at detection
  // The current sample's stack when a snapshot took it (no signal sent):
  // its return addresses, when it was copied, and what the unwind said.
  bool snap_done = false;
  uint64_t snap_ns = 0;
  double snap_us = 0;             // copy and unwind, sentinel time
  std::vector<uintptr_t> snap_pcs;
  int snap_first_guessed = -1;    // UnwindStats::first_guessed_frame
  bool snap_cut = false;          // the stack went on past the window
  // A signal is out and its stack not in: the thread is looked at again at
  // this time, and snapshotted if it now sleeps in a system call (it may
  // not run the handler before that call returns: disk wait, a deferred
  // handler). 0: not looking.
  uint64_t next_look_ns = 0;
};

struct LoopCounters;  // src/metrics.h

// What a heartbeat source lets the sentinel ask of its loop, beyond the
// beat. Owned by the source (with the public handle); the sentinel calls it
// only with Watch::mu held and while Watch::hooks is set, which stop clears
// under that lock, so no hook runs after stop. Runs on the sentinel thread,
// while the loop's thread may be blocked anywhere: no hook may wait for the
// loop, take a lock the loop holds, or need an interpreter's lock (the GIL).
class LoopHooks {
 public:
  virtual ~LoopHooks() = default;
  // The latest moment (CLOCK_MONOTONIC ns) the loop is known to have been
  // between two callbacks of its own — e.g. libuv's cached clock, or when
  // the loop last returned from its poll — or 0 when unknown. Read during
  // a stall: the stall's start is not before it. May be stale or coarse;
  // the sentinel takes it only when it is later than the last beat and not
  // in the future.
  virtual uint64_t start_hint_ns() { return 0; }
  // Makes the loop show a sign of life (watch_alive) as soon as it polls
  // again, so a stall's end is seen at once, not at the next beat. Called
  // at detection. Must not block (uv_async_send, a write to an eventfd).
  virtual void wake() {}
  // The descriptor the loop's thread waits on in epoll_wait when it is
  // idle, or -1: a thread found there is not stalled, only its beat is late.
  virtual int poll_fd() { return -1; }
};

struct Watch {
  // Immutable after watch_create.
  Config cfg;
  LoopIdentity who;
  uv_loop_t *loop = nullptr;      // null for heartbeat sources without libuv
  int slot = -1;                  // capture slot index
  int signal = 0;                 // the capture signal, for the start record
  std::shared_ptr<LangFrames> lang;  // null: no interpreter frames
  std::unique_ptr<ThreadProbe> probe;  // the loop thread's /proc files
  ContextSlot context;
  std::shared_ptr<Output> out;
  std::shared_ptr<DeliveryCounters> counters = std::make_shared<DeliveryCounters>();

  // Heartbeat. The source stores last_beat_ns (seq_cst) then reads
  // pending_stall (seq_cst); the sentinel stores pending_stall then re-reads
  // last_beat_ns. With one total order, a beat racing a detection is seen
  // by at least one side, so a stall is never left without its end.
  std::atomic<uint64_t> last_beat_ns{0};
  std::atomic<uint64_t> ticks{0};  // written by the source only
  // The stall the sentinel has detected and not yet seen end (0: none).
  // The source swaps it to 0 at the loop's first sign of life, stores
  // end_ns, then publishes ended_stall (release).
  std::atomic<uint64_t> pending_stall{0};
  std::atomic<uint64_t> end_ns{0};        // the source's earliest "running again"
  std::atomic<uint64_t> end_alive_ns{0};  // when the source saw it (>= end_ns)
  std::atomic<uint64_t> ended_stall{0};
  // True while the loop's thread is away from its loop (preload mode: between
  // two uv_run calls), so time spent outside the loop is not a stall. Written
  // by the source on the loop's thread (watch_pause/watch_resume), read by
  // the sentinel before it calls a stall. The beat is stored before the flag
  // changes either way, so a sentinel that sees "not paused" sees a fresh beat.
  std::atomic<bool> paused{false};

  // Statistics (any thread reads).
  std::atomic<uint64_t> stalls{0};
  std::atomic<uint64_t> stalled_ns_total{0};
  // How the samples' stacks were taken (written by the sentinel): capture
  // signals sent, snapshots used (no signal), snapshots thrown away because
  // the thread ran while it was copied, and captures whose signal cut a
  // system call short (it returned EINTR to the host: see capture.cc).
  std::atomic<uint64_t> signals_sent{0};
  std::atomic<uint64_t> snapshots{0};
  std::atomic<uint64_t> snapshots_discarded{0};
  std::atomic<uint64_t> syscalls_interrupted{0};
  // The sentinel's snapshot buffers and open /proc files for this thread.
  std::unique_ptr<Snapshot> snap;

  // Tick lateness (src/histogram.h), written by the heartbeat source only,
  // on the loop's thread, read by any thread: the raw lateness of each tick,
  // and the same corrected for coordinated omission (the request-delay
  // view). Allocated with the watch: a tick only stores into them.
  std::unique_ptr<LatencyHistogram> lag = std::make_unique<LatencyHistogram>();
  std::unique_ptr<LatencyHistogram> delay = std::make_unique<LatencyHistogram>();
  // A sequence count around each tick's stores (odd while a tick writes),
  // so that a reader copies ticks, lag and delay of the same ticks: without
  // it a metrics window could hold a tick's lag but not yet its delay.
  std::atomic<uint64_t> beat_seq{0};
  // When the previous tick ran (the next is due one interval later), and
  // how late it was. Relaxed: readers only estimate the current lag.
  std::atomic<uint64_t> last_tick_ns{0};
  std::atomic<uint64_t> last_late_us{0};
  // uvstall_stats_reset's baseline (src/metrics.cc); never touched by a tick.
  mutable std::mutex stats_mu;
  std::shared_ptr<const LoopCounters> stats_base;
  // The sentinel's "metrics" window (sentinel only): its start, and when
  // the next record is due.
  std::shared_ptr<const LoopCounters> metrics_base;
  uint64_t metrics_due_ns = 0;

  // Lifecycle: guarded by mu. The sentinel holds mu while it signals the
  // thread, wakes the loop or reads the capture slot; stop holds it while
  // it releases them, so neither is used after stop.
  std::mutex mu;
  bool registered = false;        // sentinel_add ran
  bool stopped = false;
  uint64_t stop_ns = 0;
  // Stopped because the loop's thread ended without uvstall_stop: by its
  // exit hook (src/api.cc), or by the sentinel when the thread vanished
  // without running it. Its loop, async handle and capture slot are never
  // touched again; a "thread_exit" record says so.
  bool thread_exited = false;
  bool exit_seen_by_sentinel = false;
  LoopHooks *hooks = nullptr;     // the source's hooks; null after stop

  // Set by the sentinel once a stopped watch's last records are queued.
  std::atomic<bool> finalized{false};

  // True in a forked child for the watches of its parent (src/fork.cc):
  // written only by the child's atfork handler, before the child has any
  // other thread; no sentinel knows them there, stop does not wait for one.
  bool inherited = false;

  SentinelState s;
};

// Wakes the sentinel (async-signal-safe: a sem_post).
void sentinel_wake();

// Heartbeat source, on the loop's thread: the loop is alive now. Any sign
// of life is a beat (a stall's end must also move the heartbeat, or the
// sentinel would see the pre-stall beat and call the next instant a stall).
// `resumed_ns` (<= now_ns): when the source knows the loop ran again, if
// earlier than now — e.g. when the poll that delivered the wake returned,
// before the callbacks queued ahead of the wake's ran. The sentinel ends the
// stall there when it is after the stall's start bound, else at now_ns.
inline void watch_alive(Watch *w, uint64_t now_ns, uint64_t resumed_ns) {
  w->last_beat_ns.store(now_ns, std::memory_order_seq_cst);
  if (w->pending_stall.load(std::memory_order_seq_cst) == 0) return;
  const uint64_t id = w->pending_stall.exchange(0, std::memory_order_seq_cst);
  if (id == 0) return;
  w->end_ns.store(resumed_ns <= now_ns ? resumed_ns : now_ns, std::memory_order_relaxed);
  w->end_alive_ns.store(now_ns, std::memory_order_relaxed);
  w->ended_stall.store(id, std::memory_order_release);
  sentinel_wake();
}
inline void watch_alive(Watch *w, uint64_t now_ns) { watch_alive(w, now_ns, now_ns); }

// One tick of the heartbeat timer: its lateness goes into the histograms
// (a few relaxed stores; after a delay of two intervals or more, one store
// per bucket the hidden ticks fall in, see hist_expand).
inline void watch_beat(Watch *w, uint64_t now_ns) {
  const uint64_t seq = w->beat_seq.load(std::memory_order_relaxed);
  w->beat_seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  w->ticks.store(w->ticks.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  const uint64_t interval_ns = uint64_t(w->cfg.interval_ms) * kNsPerMs;
  const uint64_t due = w->last_tick_ns.load(std::memory_order_relaxed) + interval_ns;
  const uint64_t late_us = now_ns > due ? (now_ns - due) / 1000 : 0;
  w->last_tick_ns.store(now_ns, std::memory_order_relaxed);
  w->last_late_us.store(late_us, std::memory_order_relaxed);
  w->lag->record(late_us);
  w->delay->record_expanded(late_us, interval_ns / 1000);
  w->beat_seq.store(seq + 2, std::memory_order_release);
  watch_alive(w, now_ns);
}

// The loop's thread leaves its loop (a sign of life: a stall in progress
// ends now), or comes back to it.
inline void watch_pause(Watch *w, uint64_t now_ns) {
  watch_alive(w, now_ns);
  w->paused.store(true, std::memory_order_seq_cst);
}
inline void watch_resume(Watch *w, uint64_t now_ns) {
  watch_alive(w, now_ns);
  w->last_tick_ns.store(now_ns, std::memory_order_relaxed);  // time away is not lateness
  w->paused.store(false, std::memory_order_seq_cst);
  sentinel_wake();  // the sentinel waits forever on a paused watch
}

// Creates a watch for the calling thread: resolves options, starts the
// process-wide machinery on first use, takes a capture slot, warms the
// unwinder and opens the output. The caller registers it with sentinel_add
// once its heartbeat runs (which queues the "start" record), or, on failure,
// gives it back with watch_stop.
int watch_create(const uvstall_options_t *opts, uv_loop_t *loop,
                 std::shared_ptr<Watch> *out);
// Starts watching (the first beat is "now").
void sentinel_add(const std::shared_ptr<Watch> &w);
// Stops a watch on its own thread: a stall in progress ends now, the
// capture slot and the async wake are released. Waits (bounded) for the
// sentinel to queue the watch's last records and for the writer to deliver
// them, so on_report is not called after this returns (a callback still
// running after the bounded wait excepted). `thread_exit`: called by the
// thread's exit hook, the thread ends without uvstall_stop (the stall ends
// "ended_by":"thread_exit", a "thread_exit" record follows, the output is
// released). A second stop does nothing.
void watch_stop(Watch *w, bool thread_exit = false);
// Copies the capture slot's count of interrupted system calls into
// w->syscalls_interrupted (the slot counts them in the handler). Caller
// holds w->mu; does nothing once the slot is given back.
void sync_interrupted_locked(Watch *w);
// The watches being watched now (for the metrics endpoint and file).
std::vector<std::shared_ptr<Watch>> watches_now();

}  // namespace uvstall::internal
