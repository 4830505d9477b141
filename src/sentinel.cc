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
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include <signal.h>

#include "capture.h"
#include "clock.h"
#include "fingerprint.h"
#include "fork.h"
#include "metrics.h"
#include "metrics_http.h"
#include "modules.h"
#include "snapshot.h"
#include "threads.h"
#include "watch.h"

namespace uvstall::internal {

namespace {

// Nanoseconds per clock tick of /proc's stat times. Read at load, not in a
// function-local static the sentinel would initialize (see warm_statics).
const long kTickNs = 1000000000L / sysconf(_SC_CLK_TCK);

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
  // Once per process image: a forked child keeps its parent's handler and
  // exit handler (src/fork.cc), but starts its own threads.
  bool capture_installed = false;
  bool atexit_registered = false;
  pid_t threads_pid = 0;                         // the process our threads run in
};
Process *g_proc = new Process;
sem_t g_wake;
std::atomic<uint64_t> g_next_stall_id{0};
std::atomic<bool> g_exiting{false};

constexpr uint64_t kForeverNs = uint64_t(3600) * 1000 * kNsPerMs;
constexpr uint32_t kExitGraceMs = 200;
// Thread state is measured over at least this window after detection
// (CPU and run-queue time need two readings).
constexpr uint64_t kStateWindowNs = 10 * kNsPerMs;
constexpr uint32_t kAbortDrainMs = 1000;
// uvstall_stop waits at most this long for the sentinel, then as long again
// for the writer to deliver the watch's last records.
constexpr uint32_t kStopWaitMs = 1000;
// Copies tried per sample before the signal is sent instead: a copy is
// thrown away when the thread ran meanwhile (a thread sleeping 1 ms at a
// time is asleep ~95% of the time; 8 misses in a row are rare).
constexpr int kSnapshotAttempts = 8;
// A thread found running is looked at this many times, this far apart,
// before the signal is sent: a thread on its way into or out of a system
// call, or running inside the kernel, is then usually found asleep.
constexpr int kRunningLooks = 4;
constexpr int kRunningPauseUs = 250;
// A thread found running that slept between two looks (its voluntary
// context switches rose) runs in short stretches: it will sleep again
// soon, and a signal sent now may well arrive as it does (and cut that
// sleep short). It is looked at this often, for up to this long from the
// first look, before the signal is sent.
constexpr int kSleepyPauseUs = 100;
constexpr uint64_t kSleepyLooksNs = 3 * kNsPerMs;
// While a signal's stack is awaited, the thread is looked at again this
// often (see SentinelState::next_look_ns).
constexpr uint64_t kLookAgainNs = 2 * kNsPerMs;
// Set at start when the snapshot unwinder loaded (src/snapshot.h).
std::atomic<bool> g_snapshots{false};

// ---- Storms: the rate limit and summaries (sentinel thread only) ----

struct SummaryEntry {
  uint64_t count = 0;
  uint64_t suppressed = 0;
  uint64_t total_ns = 0;
  uint64_t max_ns = 0;
  std::string culprit;
};

struct Storm {
  double tokens = -1;  // < 0: not started
  uint64_t refilled_ns = 0;
  std::map<std::string, SummaryEntry> by_fingerprint;
  uint64_t window_start_ns = 0;
};
Storm *g_storm = new Storm;
// Suppressed stalls not yet announced in a record ("suppressed"). Atomic:
// start records are emitted from the starting thread too.
std::atomic<uint64_t> g_unannounced_suppressed{0};

// A token bucket: max_stalls_per_minute tokens, refilled continuously.
bool rate_allow(uint64_t now) {
  const uint32_t limit = g_proc->pcfg.max_stalls_per_minute;
  if (limit == 0) return true;
  if (g_storm->tokens < 0) {
    g_storm->tokens = limit;
    g_storm->refilled_ns = now;
  }
  g_storm->tokens = std::min<double>(
      limit, g_storm->tokens + double(now - g_storm->refilled_ns) * limit / 60e9);
  g_storm->refilled_ns = now;
  if (g_storm->tokens < 1) return false;
  g_storm->tokens -= 1;
  return true;
}

// ---- Records ----

void emit(Watch *w, nlohmann::ordered_json record) {
  // Announce the drops since the last record. An announcement that is
  // itself dropped (queue full, output failed) is given back by the writer
  // and carried by the next record. Suppressed stalls are forgotten once
  // the record is queued.
  const uint64_t drops = w->counters->unannounced_drops.exchange(0);
  note_drops(record, drops);
  const uint64_t suppressed = g_unannounced_suppressed.load();
  if (suppressed > 0) record["suppressed"] = suppressed;
  std::string line;
  try {
    line = record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  } catch (...) {
    drop_unqueued(*w->counters, drops);
    return;
  }
  if (writer_enqueue(w->out, w->counters, std::move(line), drops))
    g_unannounced_suppressed.fetch_sub(suppressed);
}

// The stack window of the watch (stack_window_kb), for both ways of
// capture.
size_t window_bytes(const Config &cfg) { return size_t(cfg.stack_window_kb) * 1024; }

// The most frames an unwind keeps for the watch (max_frames).
int frames_wanted(const Watch *w) { return int(std::min<uint32_t>(w->cfg.max_frames, kMaxFrames)); }

// Appends the unwound pcs to the sample, resolved (pcs[0] is where the
// thread was; the others are return addresses).
void add_frames(StallSample *s, const uintptr_t *pcs, size_t n) {
  for (size_t i = 0; i < n; ++i)
    s->frames.push_back(modules().resolve(pcs[i], /*return_address=*/i > 0));
}

// The slot's copy as the unwinder takes it: the interrupted registers (rbp
// known) and the window, in place (not copied again).
StackCopy copy_of(const CaptureSlot &slot) {
  StackCopy c;
  c.sp = uintptr_t(slot.gregs[REG_RSP]);
  c.pc = uintptr_t(slot.gregs[REG_RIP]);
  c.rbp = uintptr_t(slot.gregs[REG_RBP]);
  c.rbp_known = true;
  c.bytes = slot.stack;
  c.len = slot.stack_bytes;
  // The mapping's top bounds the stack only when rsp is in it (a host on
  // another stack, sigaltstack or a coroutine's, is bounded by the copy).
  if (c.sp >= slot.stack_lo && c.sp < slot.stack_hi) c.stack_hi = slot.stack_hi;
  return c;
}

// Unwinds the slot's stack copy (the unwinder the snapshots use) and
// resolves its frames. Caller holds w->mu (the slot stays the watch's) and
// has seen done_gen == gen.
void fill_from_capture(Watch *w, StallSample *s) {
  CaptureSlot *slot = capture_slot(w->slot);
  s->blocked_ns = slot->t_enter_ns - std::min(w->s.start_bound_ns, slot->t_enter_ns);
  s->handler_us = double(slot->t_exit_ns - slot->t_enter_ns) / 1000.0;
  s->capture_via = "signal";
  s->interrupted_syscall = slot->interrupted_syscall;
  if (slot->error != kCaptureOk) {
    s->capture = "failed";
    s->capture_error = capture_error_text(slot->error);
    return;
  }
  uintptr_t pcs[kMaxFrames];
  UnwindStats us;
  const int n = unwind_stack(copy_of(*slot), pcs, frames_wanted(w), &us);
  if (n <= 0) {
    s->capture = "failed";
    s->capture_error = us.stop;
    return;
  }
  s->truncated = us.cut;
  s->first_guessed_frame = us.first_guessed_frame;
  add_frames(s, pcs, size_t(n));
}

// The sample's stack from the snapshot try_snapshot took.
void fill_from_snapshot(Watch *w, StallSample *s) {
  const SentinelState &st = w->s;
  s->blocked_ns = st.snap_ns - std::min(st.start_bound_ns, st.snap_ns);
  s->capture_via = "snapshot";
  s->snapshot_us = st.snap_us;
  s->truncated = st.snap_cut;
  s->first_guessed_frame = st.snap_first_guessed;
  add_frames(s, st.snap_pcs.data(), st.snap_pcs.size());
}

StallSample new_sample(Watch *w) {
  StallSample s;
  s.stall_id = w->s.stall_id;
  s.threshold_ms = w->cfg.threshold_ms;
  s.sample = w->s.sample;
  s.context = w->s.context;
  return s;
}

std::string fd_target(long fd) {
  char path[64], buf[512];
  std::snprintf(path, sizeof path, "/proc/self/fd/%ld", fd);
  const ssize_t n = readlink(path, buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, size_t(n));
}

// The thread's state since detection, and the cause it points to.
void add_thread_state(Watch *w, StallSample *s, uint64_t now) {
  const SentinelState &st = w->s;
  if (w->probe == nullptr || !st.first.ok) {
    s->cause = cause_name(Cause::kUnknown);
    return;
  }
  const ThreadSample post = w->probe->read();
  CauseInput in;
  in.stall_ns = now - std::min(now, st.start_bound_ns);
  in.state = st.first.state;
  in.syscall_nr = st.first.syscall_nr;
  in.sentinel_late_ns = st.sentinel_late_ns;
  if (post.ok && post.at_ns > st.first.at_ns) {
    in.window_ns = post.at_ns - st.first.at_ns;
    in.cpu_ns = post.run_ns - std::min(post.run_ns, st.first.run_ns);
    in.wait_ns = post.wait_ns - std::min(post.wait_ns, st.first.wait_ns);
  }
  s->cause = cause_name(classify(in));
  nlohmann::ordered_json t;
  t["state"] = state_name(st.first.state);
  const long nr = st.first.syscall_nr;
  if (nr >= 0) {
    const char *name = syscall_name(nr);
    t["syscall"] = name[0] != '\0' ? nlohmann::ordered_json(name) : nlohmann::ordered_json();
    t["syscall_nr"] = nr;
    if (syscall_takes_fd(nr)) {
      const std::string target = fd_target(long(st.first.syscall_arg0));
      if (!target.empty()) t["fd"] = target;
    }
  } else {
    t["syscall"] = nullptr;
    t["syscall_nr"] = nullptr;
  }
  t["window_ms"] = ms_from_ns(in.window_ns);
  t["cpu_ms"] = ms_from_ns(in.cpu_ns);
  t["runqueue_ms"] = ms_from_ns(in.wait_ns);
  if (post.ok) {
    t["cpu_system_ms"] = ms_from_ns(
        (post.stime_ticks - std::min(post.stime_ticks, st.first.stime_ticks)) * kTickNs);
  }
  t["sentinel_late_ms"] = ms_from_ns(st.sentinel_late_ns);
  s->thread = std::move(t);
}

// Emits a stall sample, with the stalled thread's interpreter frames when
// the watch has a source for them (taken now, from this thread).
void emit_stall(Watch *w, StallSample &s) {
  if (w->lang != nullptr) {
    std::lock_guard<std::mutex> lock(w->mu);
    if (!w->stopped) s.lang = w->lang->dump();
  }
  if (w->s.fingerprint.empty()) {
    w->s.fingerprint = stall_fingerprint(s.frames, s.lang.frames);
    for (const auto &f : s.frames) {
      if (f.module != nullptr && !module_is_skipped(f.module->path) && !f.symbol.empty()) {
        w->s.culprit = f.symbol;
        break;
      }
    }
  }
  s.fingerprint = w->s.fingerprint;
  if (!w->s.suppressed) emit(w, stall_record(w->who, wall_ns(), s));
}

void emit_end(Watch *w, uint64_t end_ns, const char *ended_by) {
  SentinelState &st = w->s;
  const uint64_t dur = end_ns - std::min(end_ns, st.start_bound_ns);
  w->stalled_ns_total.fetch_add(dur, std::memory_order_relaxed);
  if (!st.suppressed)
    emit(w, stall_end_record(w->who, wall_ns(), st.stall_id, end_ns - dur, end_ns, ended_by));
  SummaryEntry &e = g_storm->by_fingerprint[st.fingerprint];
  e.count++;
  e.suppressed += st.suppressed;
  e.total_ns += dur;
  e.max_ns = std::max(e.max_ns, dur);
  if (e.culprit.empty()) e.culprit = st.culprit;
  st.phase = SentinelState::kIdle;
  st.awaiting_late = false;
}

// One "summary" record per distinct output: stalls per fingerprint since
// the last summary. Process-level: no tid or loop.
void emit_summary(const std::vector<std::shared_ptr<Watch>> &list, uint64_t now) {
  Storm &storm = *g_storm;
  if (storm.by_fingerprint.empty()) {
    storm.window_start_ns = now;
    return;
  }
  std::vector<std::pair<std::string, SummaryEntry>> rows(storm.by_fingerprint.begin(),
                                                         storm.by_fingerprint.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto &a, const auto &b) { return a.second.total_ns > b.second.total_ns; });
  nlohmann::ordered_json r = record_base("summary", wall_ns(), nullptr);
  r["window_ms"] = ms_from_ns(now - std::min(now, storm.window_start_ns));
  uint64_t stalls = 0, suppressed = 0;
  nlohmann::ordered_json fps = nlohmann::ordered_json::array();
  for (const auto &[fp, e] : rows) {
    stalls += e.count;
    suppressed += e.suppressed;
    nlohmann::ordered_json row;
    row["fingerprint"] = fp.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(fp);
    row["culprit"] = e.culprit.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(e.culprit);
    row["count"] = e.count;
    row["suppressed"] = e.suppressed;
    row["total_ms"] = ms_from_ns(e.total_ns);
    row["max_ms"] = ms_from_ns(e.max_ns);
    fps.push_back(std::move(row));
  }
  r["stalls"] = stalls;
  r["stalls_suppressed"] = suppressed;
  r["fingerprints"] = std::move(fps);
  // Suppressed stalls not yet announced are announced here too, in every
  // copy (each output sees them once).
  const uint64_t announce = g_unannounced_suppressed.load();
  if (announce > 0) r["suppressed"] = announce;
  bool queued = false;
  std::vector<std::string> done;
  for (const auto &w : list) {
    const std::string key = w->out->key();
    if (std::find(done.begin(), done.end(), key) != done.end()) continue;
    done.push_back(key);
    nlohmann::ordered_json copy = r;
    const uint64_t drops = w->counters->unannounced_drops.exchange(0);
    note_drops(copy, drops);
    std::string line = copy.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    queued |= writer_enqueue(w->out, w->counters, std::move(line), drops);
  }
  if (queued) g_unannounced_suppressed.fetch_sub(announce);
  storm.by_fingerprint.clear();
  storm.window_start_ns = now;
}

// ---- The state machine of one watch; returns when to look again. ----

// The loop's thread has ended without running its exit hook (src/api.cc),
// e.g. it left with a raw exit system call: the sentinel stops the watch
// itself, and never touches its loop (whose memory may have gone with the
// thread), its async handle or its capture slot again. Caller holds no lock.
void stop_vanished(Watch *w, uint64_t now) {
  std::lock_guard<std::mutex> lock(w->mu);
  if (w->stopped) return;
  sync_interrupted_locked(w);
  w->stopped = true;
  w->thread_exited = true;
  w->exit_seen_by_sentinel = true;
  w->stop_ns = now;
  w->hooks = nullptr;
  if (w->slot >= 0) capture_release(w->slot);
}

// Unwinds the snapshot take_snapshot just accepted into the sentinel state
// (`t0`: when the sentinel began on it). False when the copy gives no
// stack the signal could not do better (see below).
bool unwind_taken(Watch *w, uint64_t t0) {
  SentinelState &st = w->s;
  st.snap_ns = mono_ns();
  uintptr_t pcs[kMaxFrames];
  UnwindStats us;
  const int n = unwind_snapshot(*w->snap, pcs, frames_wanted(w), &us);
  // No stack from the copy: the signal is sent instead (and counted). A
  // stack that ends in code no object maps (JIT code) is kept: the signal's
  // copy goes through the same unwinder and would end there too. (Objects
  // loaded since the tables were read were found in /proc/self/maps.)
  if (n <= 0) return false;
  st.snap_pcs.assign(pcs, pcs + n);
  st.snap_first_guessed = us.first_guessed_frame;
  st.snap_cut = us.cut;
  st.snap_us = double(mono_ns() - t0) / 1000.0;
  st.snap_done = true;
  w->snapshots.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// True when a snapshot may be tried now: the unwinder loaded, and our
// handler is not running on the thread (for this sample or a late one: the
// stack would be the handler's, and the handler delivers the real one).
bool snapshot_allowed(Watch *w) {
  if (!g_snapshots.load(std::memory_order_acquire) || w->snap == nullptr) return false;
  const CaptureSlot *slot = w->slot >= 0 ? capture_slot(w->slot) : nullptr;
  return slot == nullptr || slot->in_handler.load(std::memory_order_seq_cst) == 0;
}

// Copies the stack of a thread that sleeps in a system call, without a
// signal (src/snapshot.h), and unwinds the copy. True with the snap_* fields
// of the sentinel state set; false when the thread runs (user code, or
// inside the kernel: /proc gives no registers then), kept moving through
// every attempt, or could not be read: the signal is the way then. Never
// called with a lock held: a cold unwind takes about a millisecond.
bool try_snapshot(Watch *w, int running_looks = kRunningLooks) {
  SentinelState &st = w->s;
  st.snap_done = false;
  if (!snapshot_allowed(w)) return false;
  const uint64_t t0 = mono_ns();
  int moved = 0, running = 0;
  bool have_switches = false, sleepy = false;
  uint64_t first_switches = 0;
  for (;;) {
    Snapshot &snap = *w->snap;
    if (take_snapshot(w->who.tid, &snap, window_bytes(w->cfg))) return unwind_taken(w, t0);
    if (std::strcmp(snap.refusal, "thread moved") == 0) {
      w->snapshots_discarded.fetch_add(1, std::memory_order_relaxed);
      if (++moved == kSnapshotAttempts) return false;
      continue;
    }
    if (std::strcmp(snap.refusal, "thread running") != 0) return false;
    // Running: in user code (the signal's case), or inside the kernel (a
    // long read of the page cache, a call on its way in or out): look again
    // shortly before a signal is sent; for longer if it sleeps now and then.
    if (snap.switches_read) {
      if (!have_switches) first_switches = snap.last_switches;
      have_switches = true;
      sleepy = sleepy || snap.last_switches != first_switches;
    }
    ++running;
    if (running >= running_looks && !(sleepy && mono_ns() - t0 < kSleepyLooksNs)) return false;
    struct timespec pause = {0, long(sleepy ? kSleepyPauseUs : kRunningPauseUs) * 1000};
    nanosleep(&pause, nullptr);
  }
}

// Asks the loop thread for its stack, for the generation start_capture
// set. Returns "" or why it could not. Caller holds no lock.
std::string request_capture(Watch *w) {
  // Never signal a TID whose thread has ended: another thread of the
  // process may have it now. The probe's files stay bound to the thread
  // they were opened for, so they tell.
  if (w->probe != nullptr && w->probe->read().gone) {
    stop_vanished(w, mono_ns());
    return "the loop thread has exited";
  }
  std::unique_lock<std::mutex> lock(w->mu);
  if (w->stopped) return "the watch was stopped";
  if (!capture_handler_installed())
    return "the capture signal's handler was replaced by the host";
  // The signal's copy is unwound by the snapshot unwinder: without it the
  // thread is not interrupted for nothing.
  if (!g_snapshots.load(std::memory_order_acquire))
    return "the stack unwinder is not available: " + snapshot_unwinder_problem();
  // A last look right before the signal: a thread that went to sleep in a
  // system call since the looks of try_snapshot is copied instead. (Those
  // looks found it running for a while, so it is likely near the end of
  // what it runs; without this look the signal would often find it just
  // asleep, and cut its sleep short.) What is left is the time from this
  // read of /proc to the signal's arrival: microseconds.
  if (snapshot_allowed(w)) {
    const uint64_t t0 = mono_ns();
    if (take_snapshot(w->who.tid, w->snap.get(), window_bytes(w->cfg),
                      /*status_when_running=*/false)) {
      lock.unlock();
      if (unwind_taken(w, t0)) return {};
      lock.lock();
      if (w->stopped) return "the watch was stopped";
    }
  }
  const int rc = capture_request(w->slot, w->s.gen);
  if (rc == -ESRCH) return "the loop thread has exited";
  if (rc != 0) return std::string("could not signal the loop thread: ") + strerror(-rc);
  w->signals_sent.fetch_add(1, std::memory_order_relaxed);
  w->s.next_look_ns = mono_ns() + kLookAgainNs;
  return {};
}

// Takes the sample's stack: a snapshot when the thread sleeps in a system
// call (no signal, nothing the host can see), else the capture signal.
// Returns "" or why neither could be had. Caller holds no lock.
std::string start_capture(Watch *w) {
  // A new generation first, so a stack from an older signal that lands
  // now is never taken for this sample.
  w->s.gen = capture_next_gen();
  w->s.next_look_ns = 0;
  if (try_snapshot(w)) return {};
  return request_capture(w);
}

// True when the loop's thread sits in epoll_wait on the loop's own poll
// fd: the loop is idle and responsive, whatever its timer says.
bool idle_in_own_poll(Watch *w, const ThreadSample &t) {
  if (!t.ok) return false;
  if (t.syscall_nr != SYS_epoll_wait && t.syscall_nr != SYS_epoll_pwait) return false;
  std::lock_guard<std::mutex> lock(w->mu);
  if (w->stopped || w->hooks == nullptr) return false;
  const int fd = w->hooks->poll_fd();
  return fd >= 0 && int(t.syscall_arg0) == fd;
}

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
  // The thread's state first: a capture signal would interrupt its syscall.
  SentinelState &st = w->s;
  st = SentinelState{};
  st.first = w->probe != nullptr ? w->probe->read() : ThreadSample{};
  if (st.first.gone) {
    // Not a stall: the thread is gone (the next pass finishes the watch).
    w->pending_stall.exchange(0, std::memory_order_seq_cst);
    stop_vanished(w, now);
    return now;
  }
  if (idle_in_own_poll(w, st.first)) {
    // Not a stall: the loop waits for I/O in its own epoll_wait, and only
    // its timer is late — after a callback that ran a while (but less than
    // the threshold), libuv polls with a timeout from its stale cached
    // clock. Wake it so it beats now, and look again one interval later.
    w->pending_stall.exchange(0, std::memory_order_seq_cst);
    std::lock_guard<std::mutex> lock(w->mu);
    if (w->hooks != nullptr) w->hooks->wake();
    return now + uint64_t(w->cfg.interval_ms) * kNsPerMs;
  }
  w->stalls.fetch_add(1, std::memory_order_relaxed);
  st.stall_id = id;
  st.start_bound_ns = beat;
  st.sentinel_late_ns = now - deadline;
  st.context = context_read(&w->context);
  st.suppressed = !rate_allow(now);
  if (st.suppressed) g_unannounced_suppressed.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(w->mu);
    // The source's start hint (libuv's cached clock, when the loop last
    // left its poll) bounds the start of the blocking better than the last
    // beat when it is later: it is at most the start of the callback that
    // blocks. A hint in the future is not one (a coarser or broken clock).
    if (!w->stopped && w->hooks != nullptr) {
      const uint64_t hint = w->hooks->start_hint_ns();
      if (hint > beat && hint <= now) st.start_bound_ns = hint;
      // Wake the loop so its first sign of life after the stall is seen
      // at once, not one interval later (at its next beat).
      w->hooks->wake();
    }
  }
  const std::string problem = start_capture(w);
  if (!problem.empty()) {
    StallSample s = new_sample(w);
    s.blocked_ns = now - st.start_bound_ns;
    s.capture = "failed";
    s.capture_error = problem;
    add_thread_state(w, &s, now);
    emit_stall(w, s);
    st.sample = w->cfg.max_samples_per_stall;  // no further samples
    st.phase = SentinelState::kStalled;
    return now + kForeverNs;
  }
  st.phase = SentinelState::kCapturing;
  st.capture_deadline_ns = now + uint64_t(w->cfg.capture_timeout_ms) * kNsPerMs;
  st.window_until_ns = st.first.at_ns + kStateWindowNs;
  return std::min(st.capture_deadline_ns, st.window_until_ns);
}

bool capture_done(Watch *w) {
  if (w->s.snap_done) return true;
  CaptureSlot *slot = capture_slot(w->slot);
  return slot != nullptr && slot->done_gen.load(std::memory_order_acquire) == w->s.gen;
}

// The sample of a capture that is done or timed out: one stall record.
void take_sample(Watch *w, uint64_t now, bool ended, uint64_t end_ns, bool stopped,
                 bool exiting) {
  SentinelState &st = w->s;
  StallSample s = new_sample(w);
  bool have = false;
  uint64_t t_enter = 0;
  {
    std::lock_guard<std::mutex> lock(w->mu);
    if (!w->stopped && st.snap_done) {
      t_enter = st.snap_ns;
      fill_from_snapshot(w, &s);
      have = true;
    } else if (!w->stopped && capture_done(w)) {
      t_enter = capture_slot(w->slot)->t_enter_ns;
      fill_from_capture(w, &s);
      have = true;
    }
  }
  // The loop came back before the stack did (a stack that arrives now, or
  // arrived after the end, is not the stall's); not a timeout either: the
  // sentinel did not wait one out.
  const bool after_end = have ? t_enter > end_ns : !stopped && !exiting;
  if (ended && after_end) {
    s = new_sample(w);
    s.blocked_ns = end_ns - std::min(end_ns, st.start_bound_ns);
    s.capture = "failed";
    s.capture_error = "the stall ended before the signal was handled";
  } else if (!have) {
    s.blocked_ns = now - std::min(now, st.start_bound_ns);
    s.capture = stopped || exiting ? "failed" : "timeout";
    s.capture_error = stopped    ? "the watch was stopped before the stack arrived"
                      : exiting ? "the process is exiting"
                                : "the loop thread did not handle the signal in time "
                                  "(signal blocked, or an uninterruptible system call)";
    st.awaiting_late = !stopped && !exiting;
  }
  add_thread_state(w, &s, now);
  s.abort = st.aborting;
  emit_stall(w, s);
  st.sample++;
  st.next_sample_ns = st.sample < w->cfg.max_samples_per_stall
                          ? st.start_bound_ns + (uint64_t(w->cfg.threshold_ms) * kNsPerMs << std::min<uint32_t>(st.sample, 40))
                          : now + kForeverNs;
  st.phase = SentinelState::kStalled;
  if (st.aborting) {
    // Escalation: the report first, then a core dump of the loop thread.
    writer_drain(kAbortDrainMs);
    syscall(SYS_tgkill, getpid(), w->who.tid, SIGABRT);
  }
}

// A stopped watch's last pass: says so when its thread ended without
// uvstall_stop, and closes its /proc files (the watch itself may live on
// in a loop that is never closed).
void finish(Watch *w) {
  bool thread_exited, by_sentinel;
  {
    std::lock_guard<std::mutex> lock(w->mu);
    thread_exited = w->thread_exited;
    by_sentinel = w->exit_seen_by_sentinel;
  }
  if (thread_exited)
    emit(w, thread_exit_record(w->who, wall_ns(), by_sentinel ? "sentinel" : "exit_hook"));
  w->probe.reset();
  w->snap.reset();
  w->s.finished = true;
}

uint64_t step(Watch *w, uint64_t now, bool exiting) {
  SentinelState &st = w->s;
  bool stopped, thread_exited;
  uint64_t stop_ns;
  {
    std::lock_guard<std::mutex> lock(w->mu);
    stopped = w->stopped;
    stop_ns = w->stop_ns;
    thread_exited = w->thread_exited;
  }
  if (st.phase == SentinelState::kIdle) {
    if (stopped) {
      finish(w);
      return now + kForeverNs;
    }
    if (exiting) return now + kForeverNs;
    return begin_stall(w, now);
  }

  const bool ended = w->ended_stall.load(std::memory_order_acquire) == st.stall_id;
  uint64_t end_ns = 0;
  if (ended) {
    // The source's earliest "running again" when it is after the start (a
    // stale one is not), else when it saw the loop alive.
    end_ns = w->end_ns.load(std::memory_order_relaxed);
    if (end_ns <= st.start_bound_ns) end_ns = w->end_alive_ns.load(std::memory_order_relaxed);
  }

  if (st.phase == SentinelState::kCapturing) {
    bool done;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      done = !w->stopped && capture_done(w);
    }
    if (!done && !ended && !stopped && !exiting && st.next_look_ns != 0 &&
        now >= st.next_look_ns) {
      // The signal is not handled yet: a thread now asleep in a system
      // call is copied instead (the signal, still pending, is handled when
      // that call returns; its stack is then ignored).
      done = try_snapshot(w, /*running_looks=*/1);
      st.next_look_ns = done ? 0 : now + kLookAgainNs;
    }
    if (!ended && !stopped && !exiting) {
      if (!done && now < st.capture_deadline_ns)
        return st.next_look_ns != 0 ? std::min(st.capture_deadline_ns, st.next_look_ns)
                                     : st.capture_deadline_ns;
      if (done && now < st.window_until_ns) return st.window_until_ns;
    }
    take_sample(w, now, ended, end_ns, stopped, exiting);
  }

  // kStalled: a late stack may still land, then the end comes.
  if (st.awaiting_late) {
    StallSample s = new_sample(w);
    bool landed = false;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      if (!w->stopped && !st.snap_done && capture_done(w) &&
          (!ended || capture_slot(w->slot)->t_enter_ns <= end_ns)) {
        s.sample = st.sample - 1;  // the stack of the sample that timed out
        fill_from_capture(w, &s);
        if (std::string(s.capture) == "ok") s.capture = "late";
        landed = true;
      }
    }
    if (landed) {
      st.awaiting_late = false;
      add_thread_state(w, &s, now);
      emit_stall(w, s);
    }
  }
  if (ended) {
    emit_end(w, end_ns, "loop");
  } else if (stopped) {
    emit_end(w, stop_ns, thread_exited ? "thread_exit" : "stop");
  } else if (exiting) {
    emit_end(w, now, "exit");
  } else {
    uint64_t next = now + kForeverNs;
    const uint64_t abort_at =
        w->cfg.abort_after_ms != 0
            ? st.start_bound_ns + uint64_t(w->cfg.abort_after_ms) * kNsPerMs
            : now + kForeverNs;
    const bool abort_due = !st.aborting && now >= abort_at;
    const bool sample_due = st.sample < w->cfg.max_samples_per_stall && now >= st.next_sample_ns;
    if (abort_due || sample_due) {
      st.aborting = abort_due;
      const std::string problem = start_capture(w);
      if (problem.empty()) {
        st.awaiting_late = false;
        st.phase = SentinelState::kCapturing;
        st.capture_deadline_ns = now + uint64_t(w->cfg.capture_timeout_ms) * kNsPerMs;
        st.window_until_ns = now;
        return st.capture_deadline_ns;
      }
      st.sample = w->cfg.max_samples_per_stall;
    }
    if (st.sample < w->cfg.max_samples_per_stall) next = std::min(next, st.next_sample_ns);
    if (!st.aborting) next = std::min(next, abort_at);
    return next;  // or woken by the end, a late stack or a stop
  }
  if (stopped) finish(w);
  return now;
}

// "metrics" records: one per window of metrics_interval_ms. Returns when
// the next is due.
uint64_t metrics_step(Watch *w, uint64_t now) {
  const uint64_t every = uint64_t(w->cfg.metrics_interval_ms) * kNsPerMs;
  if (w->metrics_base == nullptr) {
    w->metrics_base = std::make_shared<const LoopCounters>(read_counters(w));
    w->metrics_due_ns = now + every;
  }
  if (now < w->metrics_due_ns) return w->metrics_due_ns;
  auto cur = std::make_shared<const LoopCounters>(read_counters(w));
  emit(w, metrics_record(w->who, wall_ns(), *cur, *w->metrics_base));
  w->metrics_base = std::move(cur);
  w->metrics_due_ns += every;
  if (w->metrics_due_ns <= now) w->metrics_due_ns = now + every;
  return w->metrics_due_ns;
}

void sentinel_main() {
  std::vector<std::shared_ptr<Watch>> list;
  for (;;) {
    bool exiting;
    uint32_t summary_interval_ms;
    {
      std::lock_guard<std::mutex> lock(g_proc->mu);
      list = g_proc->watches;
      exiting = g_proc->exiting;
      summary_interval_ms = g_proc->pcfg.summary_interval_ms;
    }
    const uint64_t now = mono_ns();
    uint64_t next = now + kForeverNs;
    bool any_finished = false;
    for (auto &w : list) {
      next = std::min(next, step(w.get(), now, exiting));
      any_finished |= w->s.finished;
      if (w->cfg.metrics_interval_ms != 0 && !w->s.finished && !exiting)
        next = std::min(next, metrics_step(w.get(), now));
    }
    // Summaries: every summary_interval_ms while there were stalls, and a
    // last one when a watch stops or the process exits.
    const uint64_t every = uint64_t(summary_interval_ms) * kNsPerMs;
    if (g_storm->window_start_ns == 0) g_storm->window_start_ns = now;
    if (any_finished || exiting ||
        (every != 0 && now >= g_storm->window_start_ns + every))
      emit_summary(list, now);
    if (every != 0 && !g_storm->by_fingerprint.empty())
      next = std::min(next, g_storm->window_start_ns + every);
    {
      std::lock_guard<std::mutex> lock(g_proc->mu);
      if (any_finished) {
        for (auto &w : list)
          if (w->s.finished) w->finalized.store(true);
        auto &ws = g_proc->watches;
        ws.erase(std::remove_if(ws.begin(), ws.end(),
                                [](const auto &w) { return w->s.finished; }),
                 ws.end());
      }
      if (exiting) g_proc->exit_finalized = true;
      // Our references go before a stop waiting for this pass returns: a
      // stopped watch is freed with its handle, not at our next pass.
      list.clear();
    }
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
    // A forked child that never started: no sentinel or writer to wait for.
    if (g_proc->threads_pid != getpid()) return;
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

// Function-local statics that our threads would otherwise be first to
// reach are initialized here, in the host's thread before any thread of
// ours starts, under g_proc->mu (which fork's prepare handler takes): a
// static mid-way through its initialization when the host forks leaves its
// guard taken in the child, whose sentinel or uvstall_start would then wait
// on it forever (a child's sentinel was seen stuck in __cxa_guard_acquire
// this way in the fork test).
void warm_statics() {
  modules();
  lang_python_warm();
}

// Once per process, under g_proc->mu.
int process_start_locked() {
  if (g_proc->started) return g_proc->start_err;
  g_proc->started = true;
  warm_statics();
  // The unwinder reads every object's unwind tables now, outside any
  // stall; without it no stack is taken (snapshot or signal copy alike:
  // the records say why).
  g_snapshots.store(snapshot_unwinder_init(), std::memory_order_release);
  if (!g_proc->configured) {
    int rc = resolve_process_options(nullptr, &g_proc->pcfg);
    if (rc != 0) return g_proc->start_err = rc;
  }
  run_id();
  int rc = 0;
  if (!g_proc->capture_installed) {
    sem_init(&g_wake, 0, 0);
    rc = capture_init(g_proc->pcfg.signal, &g_wake);
    g_proc->capture_installed = rc == 0;
  }
  if (rc == 0) rc = writer_start(g_proc->pcfg.max_queued_reports);
  if (rc == 0 && !start_quiet_thread(sentinel_main)) rc = UVSTALL_ETHREAD;
  if (rc == 0) g_proc->threads_pid = getpid();
  if (rc == 0) rc = metrics_server_start(g_proc->pcfg);
  if (rc == 0 && !g_proc->atexit_registered) {
    std::atexit(at_exit);
    g_proc->atexit_registered = true;
  }
  return g_proc->start_err = rc;
}

}  // namespace

void sentinel_wake() { sem_post(&g_wake); }

// ---- fork (src/fork.cc) ----

// Takes the process lock, then each watch's locks: no thread of ours or of
// the host is inside them when the address space is copied.
void process_fork_prepare() {
  g_proc->mu.lock();
  for (auto &w : g_proc->watches) {
    w->stats_mu.lock();
    w->mu.lock();
  }
}

void process_fork_parent() {
  for (auto it = g_proc->watches.rbegin(); it != g_proc->watches.rend(); ++it) {
    (*it)->mu.unlock();
    (*it)->stats_mu.unlock();
  }
  g_proc->mu.unlock();
}

// The child has no sentinel: the parent's watches become inherited (never
// signalled or reported here), and a start in the child starts threads of
// its own. The capture handler stays installed; the options stay the
// parent's; the metrics endpoint and file stay the parent's alone.
void process_fork_child() {
  for (auto it = g_proc->watches.rbegin(); it != g_proc->watches.rend(); ++it) {
    (*it)->inherited = true;
    (*it)->mu.unlock();
    (*it)->stats_mu.unlock();
  }
  g_proc->watches.clear();
  if (g_proc->started && g_proc->start_err == 0) {
    g_proc->started = false;
    g_proc->configured = true;
    g_proc->pcfg.metrics_host.clear();
    g_proc->pcfg.metrics_file.clear();
  }
  g_proc->exiting = false;
  g_proc->exit_finalized = false;
  // The sentinel's own state may have been half-updated by the parent's
  // sentinel: the child's sentinel starts from fresh copies.
  sem_init(&g_wake, 0, 0);
  g_storm = new Storm;
  g_unannounced_suppressed.store(0);
  g_proc->mu.unlock();
}

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
  w->slot = capture_acquire(window_bytes(cfg));
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
  w->probe = std::make_unique<ThreadProbe>(w->who.tid);
  w->snap = std::make_unique<Snapshot>();
  modules().refresh_from_loader();
  snapshot_unwinder_refresh();
  *out = std::move(w);
  return 0;
}

void sync_interrupted_locked(Watch *w) {
  if (w->stopped || w->inherited || w->slot < 0) return;
  const CaptureSlot *slot = capture_slot(w->slot);
  if (slot != nullptr)
    w->syscalls_interrupted.store(slot->interrupted_total.load(std::memory_order_relaxed),
                                  std::memory_order_relaxed);
}

void sentinel_add(const std::shared_ptr<Watch> &w) {
  emit(w.get(), start_record(w->who, w->cfg, w->signal));
  w->last_tick_ns.store(mono_ns(), std::memory_order_relaxed);
  {
    // The stats window starts at zero counts (empty snapshots, not 2 x 26 KiB
    // of zeros per watch); only the loop's idle time (counted since the loop
    // began) needs a starting point.
    LoopCounters now = read_counters(w.get(), /*histograms=*/false);
    auto base = std::make_shared<LoopCounters>();
    base->at_ns = now.at_ns;
    base->idle_ns = now.idle_ns;
    std::lock_guard<std::mutex> lock(w->stats_mu);
    w->stats_base = std::move(base);
  }
  {
    std::lock_guard<std::mutex> lock(w->mu);
    w->registered = true;
  }
  w->last_beat_ns.store(mono_ns(), std::memory_order_seq_cst);
  {
    std::lock_guard<std::mutex> lock(g_proc->mu);
    g_proc->watches.push_back(w);
  }
  sentinel_wake();
}

void watch_stop(Watch *w, bool thread_exit) {
  // Not a sign of life: a stall in progress is ended by the stop itself
  // ("ended_by":"stop"), e.g. when the blocking code calls uvstall_stop.
  const uint64_t now = mono_ns();
  bool registered;
  {
    std::lock_guard<std::mutex> lock(w->mu);
    if (w->stopped) return;  // stopped already (its thread vanished)
    sync_interrupted_locked(w);
    w->stopped = true;
    w->thread_exited = thread_exit;
    w->stop_ns = now;
    w->hooks = nullptr;
    registered = w->registered;
    if (w->slot >= 0) capture_release(w->slot);
  }
  if (w->inherited) {
    // A forked child's copy of a parent's watch: no sentinel of this
    // process knows it, and its queued records are the parent's.
    w->out->closed.store(true);
    return;
  }
  if (registered) {
    sentinel_wake();
    // The sentinel finalizes in one pass (it never blocks on the loop): a
    // wake-up round trip, some 20 us. Short naps first, longer ones if it
    // is busy; no lock (a forked child has no sentinel to release one).
    const uint64_t until = mono_ns() + kStopWaitMs * kNsPerMs;
    for (useconds_t nap = 10; !w->finalized.load() && mono_ns() < until;
         nap = std::min<useconds_t>(nap * 2, 1000))
      usleep(nap);
  }
  const bool finalized = w->finalized.load();
  writer_flush_and_close(w->out.get(), kStopWaitMs);
  // A watch whose thread ended is never freed (its handles stay in the
  // loop): let its output (a file descriptor) go, once the sentinel is done.
  if (thread_exit && finalized) w->out.reset();
}

std::vector<std::shared_ptr<Watch>> watches_now() {
  std::lock_guard<std::mutex> lock(g_proc->mu);
  return g_proc->watches;
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
