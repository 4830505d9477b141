// Where records go: a bounded queue drained by one writer thread, which runs
// the host's on_report callbacks and does every write. The sentinel only
// ever enqueues (never blocks on output): when the queue is full, or an
// output fails, the record is dropped and counted in the watch's counters.
//
// A record is written whole or counted as dropped. A record cut by a full
// disk is removed from the end of a regular file; one cut in a pipe (a
// non-blocking pipe that stayed full for kFullWaitMs = 500 ms) stays there
// as one line that is not JSON, and the next record starts on a fresh line.
// A full blocking descriptor (a stderr pipe whose reader stopped) blocks
// the writer thread until it takes the record: records queue up, then drop
// and are counted; uvstall_stop and exit wait for it only their bounded
// times.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "config.h"

namespace uvstall::internal {

// Delivery counters of one watch, shared by the sentinel and the writer.
struct DeliveryCounters {
  std::atomic<uint64_t> written{0};
  std::atomic<uint64_t> dropped{0};
  // Drops not yet announced in a record ("dropped" field); the sentinel
  // takes it when it builds the watch's next record.
  std::atomic<uint64_t> unannounced_drops{0};
};

// One watch's destinations: a file or standard error, and/or a callback.
class Output {
 public:
  // Opens what `cfg` asks for. Returns null and sets *err on failure.
  static std::shared_ptr<Output> open(const Config &cfg, int *err);
  ~Output();
  // Writer thread only. False when any destination failed.
  bool deliver(const std::string &line);
  // Tells destinations apart: outputs with equal keys write to the same
  // place (process-level records are written once per key).
  std::string key() const;

  // Records queued for this output and not yet delivered (or skipped).
  std::atomic<uint64_t> pending{0};
  // Set when the watch has stopped: no callback starts after this; records
  // still queued are skipped and counted as dropped.
  std::atomic<bool> closed{false};

 private:
  Output() = default;
  bool write_fd(const std::string &line);
  bool cut_back(size_t n);
  void reopen_if_rotated();

  int fd_ = -1;            // -1: no file output
  bool owns_fd_ = false;   // false for the shared duplicate of stderr
  std::string path_;       // empty for stderr
  uvstall_report_cb cb_ = nullptr;
  void *cb_arg_ = nullptr;
};

// Starts the writer thread (once). Returns 0 or UVSTALL_ETHREAD.
int writer_start(uint32_t max_queued);
// Queues a line for `out`; counts a drop (and returns false) when the queue
// is full. Never blocks for longer than a queue lock held only to push or pop.
// `announced`: the drops the line's "dropped" field announces (taken from
// unannounced_drops by the caller); if the line is lost they are given
// back, so that the next record that gets through announces them.
bool writer_enqueue(std::shared_ptr<Output> out, std::shared_ptr<DeliveryCounters> counters,
                    std::string line, uint64_t announced);
// Counts a record that could not even be queued (it failed to serialize).
void drop_unqueued(DeliveryCounters &counters, uint64_t announced);
// Waits up to `timeout_ms` for the queue to empty (process exit).
void writer_drain(uint32_t timeout_ms);
// Waits up to `timeout_ms` for every record queued for `out` to be
// delivered, then closes it: its callback is never started again. Returns
// false on timeout (a callback that is running then may still finish).
bool writer_flush_and_close(Output *out, uint32_t timeout_ms);

}  // namespace uvstall::internal
