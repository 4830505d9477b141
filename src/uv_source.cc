// The libuv heartbeat source: an unref'd uv_timer beats every interval_ms;
// an unref'd uv_async lets the sentinel wake the loop at detection, so the
// loop's first sign of life after a stall is seen at once. Both handles are
// ours, touched only on the loop's thread (uv_async_send excepted), and
// freed in their close callbacks.
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "handle.h"

namespace uvstall::internal {
namespace {

void on_tick(uv_timer_t *t) {
  auto *h = static_cast<uvstall_t *>(t->data);
  watch_beat(h->watch.get(), mono_ns());
}

void on_async(uv_async_t *a) {
  auto *h = static_cast<uvstall_t *>(a->data);
  watch_alive(h->watch.get(), mono_ns());
}

// The sentinel's view of the loop (see LoopHooks), under Watch::mu.
class UvHooks final : public LoopHooks {
 public:
  UvHooks(uv_loop_t *loop, uv_async_t *async) : loop_(loop), async_(async) {}
  // libuv's cached clock: updated at each iteration and after each poll, so
  // at most the start of the callback that blocks. Read while the loop is
  // blocked (an aligned 64-bit field the loop thread does not write until it
  // runs again); libuv's clock may be CLOCK_MONOTONIC_COARSE, never ahead
  // of ours.
  uint64_t start_hint_ns() override { return uv_now(loop_) * kNsPerMs; }
  // After a stall libuv would poll with a timeout from its stale clock.
  void wake() override { uv_async_send(async_); }
  int poll_fd() override { return uv_backend_fd(loop_); }

 private:
  uv_loop_t *loop_;
  uv_async_t *async_;
};

void on_close(uv_handle_t *handle) {
  auto *h = static_cast<uvstall_t *>(handle->data);
  if (--h->open_handles == 0) delete h;
}

}  // namespace

void uv_source_stop(uvstall_t *h) {
  uv_timer_stop(&h->timer);
  uv_close(reinterpret_cast<uv_handle_t *>(&h->timer), on_close);
  uv_close(reinterpret_cast<uv_handle_t *>(&h->async), on_close);
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
  if (rc == 0) {
    h->watch = w;
    h->hooks.reset(new (std::nothrow) UvHooks(loop, &h->async));
    h->timer.data = h;
    h->async.data = h;
    if (h->hooks == nullptr) {
      delete h;
      rc = UVSTALL_ENOMEM;
    } else if (uv_timer_init(loop, &h->timer) != 0) {
      delete h;
      rc = UVSTALL_EUV;
    } else {
      h->open_handles = 1;
      if (uv_async_init(loop, &h->async, on_async) != 0) {
        uv_close(reinterpret_cast<uv_handle_t *>(&h->timer), on_close);
        rc = UVSTALL_EUV;
      }
    }
  }
  if (rc != 0) {
    if (w != nullptr) watch_stop(w.get());
    attach_release(loop, tid);
    return rc;
  }
  h->open_handles = 2;
  uv_unref(reinterpret_cast<uv_handle_t *>(&h->timer));
  uv_unref(reinterpret_cast<uv_handle_t *>(&h->async));
  uv_timer_start(&h->timer, on_tick, w->cfg.interval_ms, w->cfg.interval_ms);
  {
    std::lock_guard<std::mutex> lock(w->mu);
    w->hooks = h->hooks.get();
  }
  sentinel_add(w);
  attach_started(h);
  *out = h;
  return 0;
}
