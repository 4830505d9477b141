// The public handle (uvstall_t) and the registry of what is attached where.
// A libuv loop is watched at most once; a thread with an external heartbeat
// (uvstall_start_external) is watched at most once and not also through a
// libuv loop, so preload mode and the Python package never double-watch.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <memory>

#include "watch.h"

struct uvstall_s {
  std::shared_ptr<uvstall::internal::Watch> watch;
  bool external = false;  // heartbeat from uvstall_beat, no handles of ours
  // libuv source only:
  uv_timer_t timer;
  uv_async_t async;
  int open_handles = 0;
};

namespace uvstall::internal {

// Claims `loop` (null for an external heartbeat) on thread `tid`. Returns 0
// or UVSTALL_EALREADY.
int attach_claim(uv_loop_t *loop, pid_t tid);
void attach_release(uv_loop_t *loop, pid_t tid);

// Source-specific halves of uvstall_stop, on the watch's thread.
void uv_source_stop(uvstall_t *h);

}  // namespace uvstall::internal
