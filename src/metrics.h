// Loop-lag metrics: counters of a watch read from any thread, the stats of
// a window (uvstall_get_stats, "metrics" records) and the Prometheus text
// exposition. Readers only: nothing here runs on a watched loop's thread,
// and nothing here takes a lock a tick takes (a tick takes none).
#pragma once

#include <uvstall/uvstall.h>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "histogram.h"
#include "watch.h"

namespace uvstall::internal {

// Everything a window is computed from, read at one moment.
struct LoopCounters {
  uint64_t at_ns = 0;  // CLOCK_MONOTONIC (uv_hrtime's clock)
  uint64_t ticks = 0, stalls = 0, stalled_ns = 0, written = 0, dropped = 0;
  HistSnapshot lag, delay;
  uint64_t idle_ns = 0;  // uv_metrics_idle_time; 0: the loop tracks none
  // How stacks were taken (Watch's counters of the same names).
  uint64_t signals_sent = 0, snapshots = 0, snapshots_discarded = 0, syscalls_interrupted = 0;
};

// Reads the watch's counters (takes w->mu briefly for the idle time; the
// loop thread takes it only in start and stop). Without `histograms` the
// lateness snapshots stay empty, which every reader takes as zero counts.
LoopCounters read_counters(Watch *w, bool histograms = true);

// Busy fraction between two readings, or -1 when the loop reports no idle time.
double utilization(const LoopCounters &now, const LoopCounters &base);

// uvstall_get_stats over the window base..now.
void fill_stats(const LoopCounters &now, const LoopCounters &base, uvstall_stats_t *out);

// The "metrics" record of the window base..now.
nlohmann::ordered_json metrics_record(const LoopIdentity &who, uint64_t wall_ns,
                                      const LoopCounters &now, const LoopCounters &base);

// One loop's cumulative values for the exposition (never reset).
struct LoopExposition {
  std::string loop;
  LoopCounters c;
  double lag_current_s = 0;  // how late the loop is right now
};
// The Prometheus text format (version 0.0.4) for these loops.
std::string prometheus_text(const std::vector<LoopExposition> &loops);
// Reads every watched loop (any thread but a watched one).
std::vector<LoopExposition> expose_all();

}  // namespace uvstall::internal
