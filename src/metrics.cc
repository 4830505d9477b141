// Loop-lag metrics (see metrics.h).
#include "metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "clock.h"
#include "handle.h"
#include "report.h"

namespace uvstall::internal {

LoopCounters read_counters(Watch *w, bool histograms) {
  LoopCounters c;
  // ticks, lag and delay as of the same tick (Watch::beat_seq). A tick is a
  // few stores, so a retry is rare; after 100 the copy is taken as it is
  // (a loop thread stopped inside a tick, e.g. by a debugger).
  for (int attempt = 0; attempt < 100; ++attempt) {
    const uint64_t seq = w->beat_seq.load(std::memory_order_acquire);
    c.ticks = w->ticks.load(std::memory_order_relaxed);
    if (histograms) {
      w->lag->snapshot(&c.lag);
      w->delay->snapshot(&c.delay);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (seq % 2 == 0 && w->beat_seq.load(std::memory_order_relaxed) == seq) break;
  }
  c.stalls = w->stalls.load(std::memory_order_relaxed);
  c.stalled_ns = w->stalled_ns_total.load(std::memory_order_relaxed);
  c.written = w->counters->written.load(std::memory_order_relaxed);
  c.dropped = w->counters->dropped.load(std::memory_order_relaxed);
  {
    // libuv guards the idle time with a mutex of its own so that other
    // threads may read it; w->mu keeps the loop from being stopped (and
    // perhaps freed) meanwhile. Not for a watch inherited by a forked child:
    // the loop's thread may have held that mutex when the parent forked.
    std::lock_guard<std::mutex> lock(w->mu);
    if (w->loop != nullptr && !w->stopped && !w->inherited)
      c.idle_ns = uv_metrics_idle_time(w->loop);
    sync_interrupted_locked(w);
  }
  c.signals_sent = w->signals_sent.load(std::memory_order_relaxed);
  c.snapshots = w->snapshots.load(std::memory_order_relaxed);
  c.snapshots_discarded = w->snapshots_discarded.load(std::memory_order_relaxed);
  c.syscalls_interrupted = w->syscalls_interrupted.load(std::memory_order_relaxed);
  c.at_ns = mono_ns();
  return c;
}

namespace {
// A counter's growth over a window (0 if it went back: a reset baseline).
uint64_t since(uint64_t now, uint64_t base) { return now - std::min(now, base); }
}  // namespace

double utilization(const LoopCounters &now, const LoopCounters &base) {
  if (now.idle_ns == 0 || now.at_ns <= base.at_ns) return -1;
  const double idle = double(since(now.idle_ns, base.idle_ns));
  const double u = 1.0 - idle / double(now.at_ns - base.at_ns);
  return std::min(1.0, std::max(0.0, u));
}

void fill_stats(const LoopCounters &now, const LoopCounters &base, uvstall_stats_t *out) {
  uvstall_stats_t s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  s.ticks = since(now.ticks, base.ticks);
  s.stalls = since(now.stalls, base.stalls);
  s.stalled_ms_total = ns_to_ms(since(now.stalled_ns, base.stalled_ns));
  s.reports_written = since(now.written, base.written);
  s.reports_dropped = since(now.dropped, base.dropped);
  const HistSnapshot lag = now.lag.minus(base.lag);
  const HistSummary l = hist_summarize(lag.counts, lag.sum_us);
  s.lateness_count = l.count;
  s.lateness_min_ms = l.min_ms;
  s.lateness_max_ms = l.max_ms;
  s.lateness_mean_ms = l.mean_ms;
  s.lateness_p50_ms = l.p50_ms;
  s.lateness_p90_ms = l.p90_ms;
  s.lateness_p95_ms = l.p95_ms;
  s.lateness_p99_ms = l.p99_ms;
  s.lateness_p999_ms = l.p999_ms;
  const HistSnapshot delay = now.delay.minus(base.delay);
  const HistSummary d = hist_summarize(delay.counts, delay.sum_us);
  s.delay_count = d.count;
  s.delay_mean_ms = d.mean_ms;
  s.delay_p50_ms = d.p50_ms;
  s.delay_p90_ms = d.p90_ms;
  s.delay_p95_ms = d.p95_ms;
  s.delay_p99_ms = d.p99_ms;
  s.delay_p999_ms = d.p999_ms;
  s.utilization = utilization(now, base);
  s.signals_sent = since(now.signals_sent, base.signals_sent);
  s.snapshots = since(now.snapshots, base.snapshots);
  s.snapshots_discarded = since(now.snapshots_discarded, base.snapshots_discarded);
  s.syscalls_interrupted = since(now.syscalls_interrupted, base.syscalls_interrupted);
  const size_t room = std::min(out->struct_size, sizeof s);  // memcpy overwrites it
  std::memcpy(out, &s, room);
  out->struct_size = room;
}

namespace {

double round_us(double ms) { return std::round(ms * 1000) / 1000; }

nlohmann::ordered_json summary_json(const HistSummary &h, bool with_min_max) {
  nlohmann::ordered_json j;
  j["count"] = h.count;
  if (with_min_max) {
    j["min"] = round_us(h.min_ms);
    j["max"] = round_us(h.max_ms);
  }
  j["mean"] = round_us(h.mean_ms);
  j["p50"] = round_us(h.p50_ms);
  j["p90"] = round_us(h.p90_ms);
  j["p95"] = round_us(h.p95_ms);
  j["p99"] = round_us(h.p99_ms);
  j["p999"] = round_us(h.p999_ms);
  return j;
}

}  // namespace

nlohmann::ordered_json metrics_record(const LoopIdentity &who, uint64_t wall_ns,
                                      const LoopCounters &now, const LoopCounters &base) {
  nlohmann::ordered_json r = record_base("metrics", wall_ns, &who);
  r["window_ms"] = ms_from_ns(since(now.at_ns, base.at_ns));
  r["ticks"] = since(now.ticks, base.ticks);
  r["stalls"] = since(now.stalls, base.stalls);
  r["stalled_ms"] = ms_from_ns(since(now.stalled_ns, base.stalled_ns));
  const double u = utilization(now, base);
  r["utilization"] = u < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(std::round(u * 1e4) / 1e4);
  nlohmann::ordered_json cap;
  cap["signals_sent"] = since(now.signals_sent, base.signals_sent);
  cap["snapshots"] = since(now.snapshots, base.snapshots);
  cap["snapshots_discarded"] = since(now.snapshots_discarded, base.snapshots_discarded);
  cap["syscalls_interrupted"] = since(now.syscalls_interrupted, base.syscalls_interrupted);
  r["captures"] = std::move(cap);
  const HistSnapshot lag = now.lag.minus(base.lag);
  r["lateness_ms"] = summary_json(hist_summarize(lag.counts, lag.sum_us), true);
  const HistSnapshot delay = now.delay.minus(base.delay);
  r["delay_ms"] = summary_json(hist_summarize(delay.counts, delay.sum_us), false);
  return r;
}

// ---- Prometheus text format ----

namespace {

std::string label_value(const std::string &v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void family(std::string *out, const char *name, const char *type, const char *help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void histogram(std::string *out, const char *name, const char *help,
               const std::vector<LoopExposition> &loops, bool corrected) {
  family(out, name, "histogram", help);
  for (const auto &l : loops) {
    const HistSnapshot &h = corrected ? l.c.delay : l.c.lag;
    const std::vector<uint64_t> cum = prom_cumulative(h);
    const std::string lv = label_value(l.loop);
    for (int i = 0; i < kPromBoundsCount; ++i)
      *out += std::string(name) + "_bucket{loop=\"" + lv + "\",le=\"" + num(kPromBoundsSeconds[i]) +
              "\"} " + std::to_string(cum[size_t(i)]) + "\n";
    *out += std::string(name) + "_bucket{loop=\"" + lv + "\",le=\"+Inf\"} " +
            std::to_string(cum.back()) + "\n";
    *out += std::string(name) + "_sum{loop=\"" + lv + "\"} " + num(double(h.sum_us) / 1e6) + "\n";
    *out += std::string(name) + "_count{loop=\"" + lv + "\"} " + std::to_string(cum.back()) + "\n";
  }
}

template <typename Get>
void simple(std::string *out, const char *name, const char *type, const char *help,
            const std::vector<LoopExposition> &loops, Get get) {
  bool any = false;
  for (const auto &l : loops) {
    double v;
    if (!get(l, &v)) continue;
    if (!any) family(out, name, type, help);
    any = true;
    *out += std::string(name) + "{loop=\"" + label_value(l.loop) + "\"} " + num(v) + "\n";
  }
}

}  // namespace

std::string prometheus_text(const std::vector<LoopExposition> &loops) {
  std::string out;
  histogram(&out, "uvstall_loop_lag_seconds",
            "Raw tick lateness: how late each heartbeat tick of the loop ran (one value per tick).",
            loops, false);
  histogram(&out, "uvstall_loop_delay_seconds",
            "Request delay: tick lateness corrected for coordinated omission (a delay of D also "
            "counts the ticks that should have run during it).",
            loops, true);
  simple(&out, "uvstall_loop_lag_current_seconds", "gauge",
         "How late the loop is now: the lateness of the last tick, or of the tick now overdue.",
         loops, [](const LoopExposition &l, double *v) { *v = l.lag_current_s; return true; });
  simple(&out, "uvstall_stalls_total", "counter", "Stalls detected.", loops,
         [](const LoopExposition &l, double *v) { *v = double(l.c.stalls); return true; });
  simple(&out, "uvstall_stalled_seconds_total", "counter",
         "Sum of the durations of the stalls that have ended.", loops,
         [](const LoopExposition &l, double *v) { *v = double(l.c.stalled_ns) / 1e9; return true; });
  simple(&out, "uvstall_reports_written_total", "counter",
         "Records of this loop handed to the output.", loops,
         [](const LoopExposition &l, double *v) { *v = double(l.c.written); return true; });
  simple(&out, "uvstall_reports_dropped_total", "counter",
         "Records of this loop dropped (queue full or output failed).", loops,
         [](const LoopExposition &l, double *v) { *v = double(l.c.dropped); return true; });
  simple(&out, "uvstall_capture_signals_total", "counter",
         "Capture signals sent to the loop thread (samples of a thread running user code).",
         loops, [](const LoopExposition &l, double *v) { *v = double(l.c.signals_sent); return true; });
  simple(&out, "uvstall_snapshots_total", "counter",
         "Stacks copied without a signal while the loop thread slept in a system call.", loops,
         [](const LoopExposition &l, double *v) { *v = double(l.c.snapshots); return true; });
  simple(&out, "uvstall_snapshots_discarded_total", "counter",
         "Stack copies thrown away because the thread ran while it was copied.", loops,
         [](const LoopExposition &l, double *v) { *v = double(l.c.snapshots_discarded); return true; });
  simple(&out, "uvstall_syscalls_interrupted_total", "counter",
         "Capture signals that cut a system call of the host short (it returned EINTR).", loops,
         [](const LoopExposition &l, double *v) { *v = double(l.c.syscalls_interrupted); return true; });
  simple(&out, "uvstall_loop_idle_seconds_total", "counter",
         "Time the loop spent idle in its poll (uv_metrics_idle_time; only loops configured with "
         "UV_METRICS_IDLE_TIME). Utilization = 1 - rate(this).",
         loops, [](const LoopExposition &l, double *v) {
           *v = double(l.c.idle_ns) / 1e9;
           return l.c.idle_ns != 0;
         });
  return out;
}

std::vector<LoopExposition> expose_all() {
  std::vector<LoopExposition> out;
  std::set<std::string> names;
  for (const auto &w : watches_now()) {
    LoopExposition e;
    e.loop = w->who.loop;
    // Two watches may share a loop_name: keep every series unique.
    if (!names.insert(e.loop).second) e.loop += "#" + std::to_string(w->who.tid);
    names.insert(e.loop);
    e.c = read_counters(w.get());
    const uint64_t last = w->last_tick_ns.load(std::memory_order_relaxed);
    const uint64_t due = last + uint64_t(w->cfg.interval_ms) * kNsPerMs;
    double lag = double(w->last_late_us.load(std::memory_order_relaxed)) / 1e6;
    if (!w->paused.load(std::memory_order_relaxed) && e.c.at_ns > due)
      lag = std::max(lag, double(e.c.at_ns - due) / 1e9);
    e.lag_current_s = lag;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace uvstall::internal

extern "C" int uvstall_stats_reset(uvstall_t *h) {
  using namespace uvstall::internal;
  if (h == nullptr) return UVSTALL_EINVAL;
  Watch *w = h->watch.get();
  auto base = std::make_shared<const LoopCounters>(read_counters(w));
  std::lock_guard<std::mutex> lock(w->stats_mu);
  w->stats_base = std::move(base);
  return 0;
}

extern "C" int uvstall_get_stats(const uvstall_t *h, uvstall_stats_t *out) {
  using namespace uvstall::internal;
  if (h == nullptr || out == nullptr || out->struct_size < sizeof(size_t) + sizeof(uint64_t))
    return UVSTALL_EINVAL;
  Watch *w = h->watch.get();
  std::shared_ptr<const LoopCounters> base;
  {
    std::lock_guard<std::mutex> lock(w->stats_mu);
    base = w->stats_base;
  }
  const LoopCounters now = read_counters(w);
  fill_stats(now, base != nullptr ? *base : LoopCounters{}, out);
  return 0;
}
