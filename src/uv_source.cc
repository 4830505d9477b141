// The libuv heartbeat source: an unref'd uv_timer beats every interval_ms;
// an unref'd uv_async lets the sentinel wake the loop at detection, so the
// loop's first sign of life after a stall is seen at once; an unref'd
// uv_prepare and uv_check publish libuv's cached clock (and the loop's poll
// descriptor) into atomics, which is all the sentinel reads of the loop.
// All four handles are ours, touched only on the loop's thread
// (uv_async_send excepted), and the last of their close callbacks frees
// the uvstall_t.
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#include "clock.h"
#include "handle.h"

namespace uvstall::internal {
namespace {

// The sentinel's view of the loop (see LoopHooks), under Watch::mu. It calls
// nothing of libuv's for the loop's state (libuv is not thread-safe): the
// loop's thread publishes that state here, at uvstall_start and in the
// prepare and check callbacks.
//
// The start hint is uv_now(), libuv's cached clock, as of the latest of
// those stores. It is never later than the start of whatever blocks the
// loop: uv_now was at most the time of the store (it is CLOCK_MONOTONIC,
// or CLOCK_MONOTONIC_COARSE, which is never ahead of it, truncated to whole
// ms), and the loop was between two callbacks at the store, so what blocks
// it now began after. Which store comes last before a blocking callback
// depends on the callback's phase. libuv 1.44 runs: update_time, timers,
// pending, idle, prepare, poll (epoll_wait, update_time, I/O callbacks),
// check, closing; 1.45 and later run the timers last, behind an
// update_time, and the pending callbacks also right after the poll (then
// bounded as the I/O callbacks are).
//   - A timer, pending, idle or closing callback (or the host's own code
//     between two uv_run calls): our check after the poll before it, which
//     stored when that poll returned. Off by the callbacks run since.
//   - An I/O callback (or a prepare or check callback queued after ours):
//     our prepare before the poll, which stored the clock as libuv last
//     updated it before the timers. No handle runs between epoll_wait's return and
//     the I/O callbacks, so the time the poll waited for its event counts
//     as stalled: at most until the poll's timeout, which our timer keeps
//     within interval_ms of its last beat, so such a stall reads at most
//     about one interval too long.
// Our timer stores nothing: its beat (mono_ns in on_tick) is later than
// uv_now in the same callback, and the sentinel takes the hint only when
// it is later than the last beat. The prepare also keeps the poll
// descriptor current for the poll that follows it (uv_loop_fork makes a
// new one).
//
// Both words are stored relaxed on the loop's thread and loaded relaxed by
// the sentinel, during a stall, when the loop stores nothing. Each word is
// the whole message (it publishes no other memory), so no ordering is
// needed: atomicity alone rules out a torn read. A load that races a store
// sees the older or the newer value; an older clock is an earlier, still
// valid bound, and a newer one comes from a loop that has just run again,
// which the sentinel keeps only if it is not in the future.
class UvHooks final : public LoopHooks {
 public:
  explicit UvHooks(uv_async_t *async) : async_(async) {}
  uint64_t start_hint_ns() override { return clock_ns_.load(std::memory_order_relaxed); }
  // After a stall libuv would poll with a timeout from its stale clock.
  void wake() override { uv_async_send(async_); }
  int poll_fd() override { return poll_fd_.load(std::memory_order_relaxed); }

  // On the loop's thread: two relaxed stores of fields libuv already has
  // (no clock read, no syscall), once per loop iteration each.
  void publish_clock(uv_loop_t *loop) {
    clock_ns_.store(uv_now(loop) * kNsPerMs, std::memory_order_relaxed);
  }
  void publish_poll_fd(uv_loop_t *loop) {
    poll_fd_.store(uv_backend_fd(loop), std::memory_order_relaxed);
  }

 private:
  uv_async_t *async_;
  std::atomic<uint64_t> clock_ns_{0};  // uv_now in ns; 0 before the first store
  std::atomic<int> poll_fd_{-1};       // uv_backend_fd; -1 before the first store
};

UvHooks *uv_hooks(uv_handle_t *handle) {
  return static_cast<UvHooks *>(static_cast<uvstall_t *>(handle->data)->hooks.get());
}

void on_tick(uv_timer_t *t) {
  auto *h = static_cast<uvstall_t *>(t->data);
  watch_beat(h->watch.get(), mono_ns());
}

void on_async(uv_async_t *a) {
  auto *h = static_cast<uvstall_t *>(a->data);
  watch_alive(h->watch.get(), mono_ns());
}

// Right before the poll.
void on_prepare(uv_prepare_t *p) {
  UvHooks *x = uv_hooks(reinterpret_cast<uv_handle_t *>(p));
  x->publish_clock(p->loop);
  x->publish_poll_fd(p->loop);
}

// Right after the poll and its callbacks.
void on_check(uv_check_t *c) { uv_hooks(reinterpret_cast<uv_handle_t *>(c))->publish_clock(c->loop); }

void on_close(uv_handle_t *handle) {
  auto *h = static_cast<uvstall_t *>(handle->data);
  if (--h->open_handles == 0) delete h;
}

// Initializes our four handles, in order. On a failure closes those already
// initialized (their last close callback frees h) or, when none was, frees
// h here. Returns 0 or UVSTALL_EUV.
int init_handles(uv_loop_t *loop, uvstall_t *h) {
  uv_handle_t *const handles[] = {
      reinterpret_cast<uv_handle_t *>(&h->timer), reinterpret_cast<uv_handle_t *>(&h->async),
      reinterpret_cast<uv_handle_t *>(&h->prepare), reinterpret_cast<uv_handle_t *>(&h->check)};
  for (uv_handle_t *handle : handles) handle->data = h;  // libuv's init leaves data alone
  int done = 0;
  if (uv_timer_init(loop, &h->timer) == 0) {
    ++done;
    if (uv_async_init(loop, &h->async, on_async) == 0) {
      ++done;
      if (uv_prepare_init(loop, &h->prepare) == 0) {
        ++done;
        if (uv_check_init(loop, &h->check) == 0) ++done;
      }
    }
  }
  h->open_handles = done;
  if (done == 4) return 0;
  if (done == 0) delete h;
  for (int i = 0; i < done; ++i) uv_close(handles[i], on_close);
  return UVSTALL_EUV;
}

}  // namespace

void uv_source_stop(uvstall_t *h) {
  // uv_close stops each handle: no callback of ours runs after this.
  uv_close(reinterpret_cast<uv_handle_t *>(&h->timer), on_close);
  uv_close(reinterpret_cast<uv_handle_t *>(&h->async), on_close);
  uv_close(reinterpret_cast<uv_handle_t *>(&h->prepare), on_close);
  uv_close(reinterpret_cast<uv_handle_t *>(&h->check), on_close);
}

}  // namespace uvstall::internal

extern "C" int uvstall_start(uv_loop_t *loop, const uvstall_options_t *opts,
                             uvstall_t **out) {
  using namespace uvstall::internal;
  if (loop == nullptr || out == nullptr) return UVSTALL_EINVAL;
  *out = nullptr;  // a defined result on every error
  const pid_t tid = pid_t(syscall(SYS_gettid));
  int rc = attach_claim(loop, tid);
  if (rc != 0) return rc;
  std::shared_ptr<Watch> w;
  rc = watch_create(opts, loop, &w);
  auto *h = rc == 0 ? new (std::nothrow) uvstall_t : nullptr;
  if (rc == 0 && h == nullptr) rc = UVSTALL_ENOMEM;
  UvHooks *hooks = nullptr;
  if (rc == 0) {
    h->watch = w;
    hooks = new (std::nothrow) UvHooks(&h->async);
    h->hooks.reset(hooks);
    if (hooks == nullptr) {
      delete h;
      rc = UVSTALL_ENOMEM;
    } else {
      rc = init_handles(loop, h);  // frees h on a failure
    }
  }
  if (rc != 0) {
    if (w != nullptr) watch_stop(w.get());
    attach_release(loop, tid);
    return rc;
  }
  // What the sentinel may read from now on, before the first callback.
  hooks->publish_clock(loop);
  hooks->publish_poll_fd(loop);
  uv_unref(reinterpret_cast<uv_handle_t *>(&h->timer));
  uv_unref(reinterpret_cast<uv_handle_t *>(&h->async));
  uv_unref(reinterpret_cast<uv_handle_t *>(&h->prepare));
  uv_unref(reinterpret_cast<uv_handle_t *>(&h->check));
  uv_timer_start(&h->timer, on_tick, w->cfg.interval_ms, w->cfg.interval_ms);
  uv_prepare_start(&h->prepare, on_prepare);
  uv_check_start(&h->check, on_check);
  {
    std::lock_guard<std::mutex> lock(w->mu);
    w->hooks = h->hooks.get();
  }
  sentinel_add(w);
  attach_started(h);
  *out = h;
  return 0;
}
