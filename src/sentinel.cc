// The sentinel: one thread per process that waits (a timed wait on one
// semaphore, no polling) for the earliest deadline of any watch, signals the
// stalled thread for its stack, resolves it and queues the records. It never
// waits unbounded on a loop thread and never writes output itself.
//
// Also here: the process-wide start-up (uvstall_configure, first start) and
// the generic parts of creating and stopping a watch.
#include <semaphore.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "capture.h"
#include "clock.h"
#include "modules.h"
#include "threads.h"
#include "watch.h"

namespace uvstall::internal {

namespace {

// Process state: heap objects never destroyed, so the sentinel and writer
// may run while the host's static destructors do (exit is not a stop).
struct Process {
  std::mutex mu;                                 // guards everything below
  bool configured = false;                       // uvstall_configure called
  bool started = false;                          // first start done
  int start_err = 0;
  ProcessConfig pcfg;
  std::vector<std::shared_ptr<Watch>> watches;   // the sentinel's list
  uint64_t next_loop_number = 1;
  bool exiting = false;                          // atexit ran
  bool exit_finalized = false;
};
Process *g_proc = new Process;
sem_t g_wake;
std::atomic<uint64_t> g_next_stall_id{0};
std::atomic<bool> g_exiting{false};

constexpr uint64_t kForeverNs = uint64_t(3600) * 1000 * kNsPerMs;
constexpr uint32_t kExitGraceMs = 200;

// ---- Records ----

void emit(Watch *w, nlohmann::ordered_json record) {
  // Announce the drops since the last record, and forget them only once
  // this record is queued: an announcement that is itself dropped is
  // carried by the next one.
  const uint64_t drops = w->counters->unannounced_drops.load();
  note_drops(record, drops);
  std::string line;
  try {
    line = record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  } catch (...) {
    w->counters->dropped.fetch_add(1);
    w->counters->unannounced_drops.fetch_add(1);
    return;
  }
  if (writer_enqueue(w->out, w->counters, std::move(line)))
    w->counters->unannounced_drops.fetch_sub(drops);
}

// Copies the slot's result and resolves its frames. Caller holds w->mu and
// has seen done_gen == gen.
void fill_from_capture(Watch *w, StallSample *s) {
  CaptureSlot *slot = capture_slot(w->slot);
  s->blocked_ns = slot->t_enter_ns - std::min(w->s.start_bound_ns, slot->t_enter_ns);
  s->handler_us = double(slot->t_exit_ns - slot->t_enter_ns) / 1000.0;
  s->truncated = slot->truncated;
  if (slot->error != kCaptureOk) {
    s->capture = "failed";
    s->capture_error = capture_error_text(slot->error);
    return;
  }
  const uint32_t n = std::min<uint32_t>(slot->nframes, kMaxFrames);
  std::vector<uintptr_t> pcs(slot->frames, slot->frames + n);
  for (uint32_t i = 0; i < n; ++i)
    s->frames.push_back(modules().resolve(pcs[i], /*return_address=*/i > 0));
}

StallSample new_sample(Watch *w) {
  StallSample s;
  s.stall_id = w->s.stall_id;
  s.threshold_ms = w->cfg.threshold_ms;
  return s;
}

// Emits a stall sample, with the stalled thread's interpreter frames when
// the watch has a source for them (taken now, from this thread).
void emit_stall(Watch *w, StallSample &s) {
  if (w->lang != nullptr) {
    std::lock_guard<std::mutex> lock(w->mu);
    if (!w->stopped) s.lang_frames = w->lang->dump();
  }
  emit(w, stall_record(w->who, wall_ns(), s));
}

void emit_end(Watch *w, uint64_t end_ns, const char *ended_by) {
  const uint64_t dur = end_ns - std::min(end_ns, w->s.start_bound_ns);
  w->stalled_ns_total.fetch_add(dur, std::memory_order_relaxed);
  emit(w, stall_end_record(w->who, wall_ns(), w->s.stall_id, dur, ended_by));
  w->s.phase = SentinelState::kIdle;
  w->s.awaiting_late = false;
}

// ---- The state machine of one watch; returns when to look again. ----

uint64_t begin_stall(Watch *w, uint64_t now) {
  if (w->paused.load(std::memory_order_seq_cst)) return now + kForeverNs;
  const uint64_t beat = w->last_beat_ns.load(std::memory_order_seq_cst);
  const uint64_t deadline =
      beat + uint64_t(w->cfg.interval_ms + w->cfg.threshold_ms) * kNsPerMs;
  if (now < deadline) return deadline;

  const uint64_t id = g_next_stall_id.fetch_add(1) + 1;
  w->ended_stall.store(0, std::memory_order_relaxed);
  w->pending_stall.store(id, std::memory_order_seq_cst);
  if (w->last_beat_ns.load(std::memory_order_seq_cst) != beat) {
    // The loop beat just now: not stalled after all. Whoever swaps first
    // clears the flag; an end the loop already stored is simply dropped.
    w->pending_stall.exchange(0, std::memory_order_seq_cst);
    return now;
  }
  w->stalls.fetch_add(1, std::memory_order_relaxed);
  w->s.stall_id = id;
  w->s.start_bound_ns = beat;
  w->s.gen = capture_next_gen();
  w->s.awaiting_late = false;

  std::string problem;
  {
    std::lock_guard<std::mutex> lock(w->mu);
    // The loop's cached clock bounds the start of the blocking better than
    // the last beat: libuv updates it at each iteration and after each poll,
    // so it is at most the start of the callback that blocks. Read from this
    // thread while the loop is blocked (an aligned 64-bit field the loop
    // thread does not write until it runs again); libuv's clock may be
    // CLOCK_MONOTONIC_COARSE, never ahead of ours.
    if (w->loop != nullptr && !w->stopped) {
      const uint64_t loop_ns = uv_now(w->loop) * kNsPerMs;
      if (loop_ns > beat && loop_ns <= now) w->s.start_bound_ns = loop_ns;
    }
    // Wake the loop so its first sign of life after the stall is seen at
    // once, not one interval later (libuv polls with a stale timeout).
    if (w->async != nullptr) uv_async_send(w->async);
    if (w->stopped) {
      problem = "the watch was stopped";
    } else if (!capture_handler_installed()) {
      problem = "the capture signal's handler was replaced by the host";
    } else {
      const int rc = capture_request(w->slot, w->s.gen);
      if (rc == -ESRCH) problem = "the loop thread has exited";
      else if (rc != 0) problem = std::string("could not signal the loop thread: ") + strerror(-rc);
    }
  }
  if (!problem.empty()) {
    StallSample s = new_sample(w);
    s.blocked_ns = now - w->s.start_bound_ns;
    s.capture = "failed";
    s.capture_error = problem;
    emit_stall(w, s);
    w->s.phase = SentinelState::kStalled;
    return now + kForeverNs;
  }
  w->s.phase = SentinelState::kCapturing;
  w->s.capture_deadline_ns = now + uint64_t(w->cfg.capture_timeout_ms) * kNsPerMs;
  return w->s.capture_deadline_ns;
}

bool capture_done(Watch *w) {
  CaptureSlot *slot = capture_slot(w->slot);
  return slot != nullptr && slot->done_gen.load(std::memory_order_acquire) == w->s.gen;
}

uint64_t step(Watch *w, uint64_t now, bool exiting) {
  SentinelState &st = w->s;
  bool stopped;
  uint64_t stop_ns;
  {
    std::lock_guard<std::mutex> lock(w->mu);
    stopped = w->stopped;
    stop_ns = w->stop_ns;
  }
  if (st.phase == SentinelState::kIdle) {
    if (stopped) {
      st.finished = true;
      return now + kForeverNs;
    }
    if (exiting) return now + kForeverNs;
    return begin_stall(w, now);
  }

  const bool ended = w->ended_stall.load(std::memory_order_acquire) == st.stall_id;
  const uint64_t end_ns = ended ? w->end_ns.load(std::memory_order_relaxed) : 0;

  if (st.phase == SentinelState::kCapturing) {
    StallSample s = new_sample(w);
    bool have = false;
    uint64_t t_enter = 0;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      if (!w->stopped && capture_done(w)) {
        t_enter = capture_slot(w->slot)->t_enter_ns;
        fill_from_capture(w, &s);
        have = true;
      }
    }
    if (have && ended && t_enter > end_ns) {
      // The signal was handled after the loop came back: that stack is
      // not the stall's.
      s = new_sample(w);
      s.blocked_ns = end_ns - std::min(end_ns, st.start_bound_ns);
      s.capture = "failed";
      s.capture_error = "the stall ended before the signal was handled";
    } else if (!have) {
      if (now < st.capture_deadline_ns && !ended && !stopped && !exiting)
        return st.capture_deadline_ns;
      s.blocked_ns = now - std::min(now, st.start_bound_ns);
      s.capture = stopped || exiting ? "failed" : "timeout";
      s.capture_error = stopped    ? "the watch was stopped before the stack arrived"
                        : exiting ? "the process is exiting"
                                  : "the loop thread did not handle the signal in time "
                                    "(signal blocked, or an uninterruptible system call)";
      st.awaiting_late = !stopped && !exiting;
    }
    emit_stall(w, s);
    st.phase = SentinelState::kStalled;
  }

  // kStalled: a late stack may still land, then the end comes.
  if (st.awaiting_late) {
    std::lock_guard<std::mutex> lock(w->mu);
    if (!w->stopped && capture_done(w) &&
        (!ended || capture_slot(w->slot)->t_enter_ns <= end_ns)) {
      StallSample s = new_sample(w);
      fill_from_capture(w, &s);
      if (std::string(s.capture) == "ok") s.capture = "late";
      st.awaiting_late = false;
      emit_stall(w, s);
    }
  }
  if (ended) {
    emit_end(w, end_ns, "loop");
  } else if (stopped) {
    emit_end(w, stop_ns, "stop");
  } else if (exiting) {
    emit_end(w, now, "exit");
  } else {
    return now + kForeverNs;  // woken by the end, a late stack or a stop
  }
  if (stopped) st.finished = true;
  return now;
}

void sentinel_main() {
  std::vector<std::shared_ptr<Watch>> list;
  for (;;) {
    bool exiting;
    {
      std::lock_guard<std::mutex> lock(g_proc->mu);
      list = g_proc->watches;
      exiting = g_proc->exiting;
    }
    const uint64_t now = mono_ns();
    uint64_t next = now + kForeverNs;
    bool any_finished = false;
    for (auto &w : list) {
      next = std::min(next, step(w.get(), now, exiting));
      any_finished |= w->s.finished;
    }
    {
      std::lock_guard<std::mutex> lock(g_proc->mu);
      if (any_finished) {
        auto &ws = g_proc->watches;
        ws.erase(std::remove_if(ws.begin(), ws.end(),
                                [](const auto &w) { return w->s.finished; }),
                 ws.end());
      }
      if (exiting) g_proc->exit_finalized = true;
    }
    list.clear();
    // The wait: until the earliest deadline, or a post (new watch, stop,
    // a stack ready, a loop alive again, exit).
    if (next <= now) continue;
    timespec ts;
    ts.tv_sec = time_t(next / 1000000000u);
    ts.tv_nsec = long(next % 1000000000u);
    while (sem_clockwait(&g_wake, CLOCK_MONOTONIC, &ts) != 0 && errno == EINTR) {
    }
    // Coalesce a burst of posts into one pass.
    while (sem_trywait(&g_wake) == 0) {
    }
  }
}

// At exit: end the stalls in progress ("ended_by":"exit"), then give the
// writer a moment to flush. Bounded: exit never waits long for us.
void at_exit() {
  {
    std::lock_guard<std::mutex> lock(g_proc->mu);
    g_proc->exiting = true;
  }
  g_exiting.store(true);
  sentinel_wake();
  const uint64_t until = mono_ns() + kExitGraceMs * kNsPerMs;
  while (mono_ns() < until) {
    {
      std::lock_guard<std::mutex> lock(g_proc->mu);
      if (g_proc->exit_finalized) break;
    }
    usleep(1000);
  }
  const uint64_t now = mono_ns();
  writer_drain(uint32_t(now < until ? (until - now) / kNsPerMs : 0) + 1);
}

// Once per process, under g_proc->mu.
int process_start_locked() {
  if (g_proc->started) return g_proc->start_err;
  g_proc->started = true;
  if (!g_proc->configured) {
    int rc = resolve_process_options(nullptr, &g_proc->pcfg);
    if (rc != 0) return g_proc->start_err = rc;
  }
  run_id();
  sem_init(&g_wake, 0, 0);
  int rc = capture_init(g_proc->pcfg.signal, &g_wake);
  if (rc == 0) rc = writer_start(g_proc->pcfg.max_queued_reports);
  if (rc == 0 && !start_quiet_thread(sentinel_main)) rc = UVSTALL_ETHREAD;
  if (rc == 0) std::atexit(at_exit);
  return g_proc->start_err = rc;
}

}  // namespace

void sentinel_wake() { sem_post(&g_wake); }

int watch_create(const uvstall_options_t *opts, uv_loop_t *loop,
                 std::shared_ptr<Watch> *out) {
  Config cfg;
  int rc = resolve_options(opts, &cfg);
  if (rc != 0) return rc;
  std::shared_ptr<Watch> w;
  try {
    w = std::make_shared<Watch>();
  } catch (...) {
    return UVSTALL_ENOMEM;
  }
  int sig;
  {
    std::lock_guard<std::mutex> lock(g_proc->mu);
    rc = process_start_locked();
    if (rc != 0) return rc;
    sig = g_proc->pcfg.signal;
  }
  w->out = Output::open(cfg, &rc);
  if (w->out == nullptr) return rc;
  w->slot = capture_acquire(cfg.max_frames);
  if (w->slot < 0) return UVSTALL_ELIMIT;
  uint64_t number;
  {
    std::lock_guard<std::mutex> lock(g_proc->mu);
    number = g_proc->next_loop_number++;
  }
  w->cfg = std::move(cfg);
  w->loop = loop;
  w->who.tid = pid_t(syscall(SYS_gettid));
  w->who.loop = w->cfg.loop_name.empty() ? "loop-" + std::to_string(number) : w->cfg.loop_name;
  w->signal = sig;
  w->lang = lang_frames_for_current_thread();
  capture_warm_thread();
  modules().refresh_from_loader();
  *out = std::move(w);
  return 0;
}

void sentinel_add(const std::shared_ptr<Watch> &w) {
  emit(w.get(), start_record(w->who, w->cfg, w->signal));
  w->last_beat_ns.store(mono_ns(), std::memory_order_seq_cst);
  {
    std::lock_guard<std::mutex> lock(g_proc->mu);
    g_proc->watches.push_back(w);
  }
  sentinel_wake();
}

void watch_stop(Watch *w) {
  // Not a sign of life: a stall in progress is ended by the stop itself
  // ("ended_by":"stop"), e.g. when the blocking code calls uvstall_stop.
  const uint64_t now = mono_ns();
  {
    std::lock_guard<std::mutex> lock(w->mu);
    w->stopped = true;
    w->stop_ns = now;
    w->async = nullptr;
    if (w->slot >= 0) capture_release(w->slot);
  }
  sentinel_wake();
}

void watch_stats(const Watch *w, uvstall_stats_t *out) {
  uvstall_stats_t s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  s.ticks = w->ticks.load(std::memory_order_relaxed);
  s.stalls = w->stalls.load(std::memory_order_relaxed);
  s.stalled_ms_total = ns_to_ms(w->stalled_ns_total.load(std::memory_order_relaxed));
  s.reports_written = w->counters->written.load(std::memory_order_relaxed);
  s.reports_dropped = w->counters->dropped.load(std::memory_order_relaxed);
  std::memcpy(out, &s, std::min(out->struct_size, sizeof s));
  out->struct_size = std::min(out->struct_size, sizeof s);
}

}  // namespace uvstall::internal

extern "C" int uvstall_configure(const uvstall_process_options_t *popts) {
  using namespace uvstall::internal;
  if (popts == nullptr) return UVSTALL_EINVAL;
  ProcessConfig p;
  int rc = resolve_process_options(popts, &p);
  if (rc != 0) return rc;
  std::lock_guard<std::mutex> lock(g_proc->mu);
  if (g_proc->started || g_proc->configured) return UVSTALL_ECONFIGURED;
  g_proc->pcfg = p;
  g_proc->configured = true;
  return 0;
}
