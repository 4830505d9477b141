// The public handle (uvstall_t) and the registry of what is attached where.
// A libuv loop is watched at most once; a thread with an external heartbeat
// (uvstall_start_external) is watched at most once and not also through a
// libuv loop, so preload mode and the Python package never double-watch.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <atomic>
#include <memory>

#include "watch.h"

struct uvstall_s {
  std::shared_ptr<uvstall::internal::Watch> watch;
  bool external = false;  // heartbeat from uvstall_beat, no handles of ours
  // Stopped by its thread's exit (no uvstall_stop): the handle stays in the
  // loop, and uvstall_stop refuses it (UVSTALL_EWRONGTHREAD).
  std::atomic<bool> thread_ended{false};
  // What the source lets the sentinel ask of the loop (src/watch.h); the
  // watch points at it until stop.
  std::unique_ptr<uvstall::internal::LoopHooks> hooks;
  // libuv source only (src/uv_source.cc):
  uv_timer_t timer;
  uv_async_t async;
  uv_prepare_t prepare;  // publishes the loop's clock and poll fd for the sentinel
  uv_check_t check;      // publishes the loop's clock after each poll
  int open_handles = 0;  // handles initialized and not yet closed; the last close frees this
};

namespace uvstall::internal {

// Claims `loop` (null for an external heartbeat) on thread `tid`. Returns 0
// or UVSTALL_EALREADY.
int attach_claim(uv_loop_t *loop, pid_t tid);
// `h` is started on the calling thread: if the thread ends before
// uvstall_stop (pthread_exit or a return from its function, not exit()),
// its exit stops the watch and gives back the claim (see src/api.cc).
void attach_started(uvstall_t *h);
// Gives the claim back (and forgets `h`, if given, for the thread's exit).
void attach_release(uv_loop_t *loop, pid_t tid, uvstall_t *h = nullptr);

// Source-specific halves of uvstall_stop, on the watch's thread.
void uv_source_stop(uvstall_t *h);

}  // namespace uvstall::internal
