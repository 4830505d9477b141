// The libuv heartbeat source and the public start/stop API: an unref'd
// uv_timer beats every interval_ms; an unref'd uv_async lets the sentinel
// wake the loop at detection, so the loop's first sign of life after a
// stall is seen at once. Both handles are ours, touched only on the loop's
// thread (uv_async_send excepted), and freed in their close callbacks.
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <unordered_set>

#include "clock.h"
#include "watch.h"

using uvstall::internal::Watch;

struct uvstall_s {
  uv_timer_t timer;
  uv_async_t async;
  std::shared_ptr<Watch> watch;
  int open_handles = 0;
};

namespace uvstall::internal {
namespace {

// Loops being watched, for UVSTALL_EALREADY. Never destroyed (exit-safe).
std::mutex *g_loops_mu = new std::mutex;
std::unordered_set<uv_loop_t *> *g_loops = new std::unordered_set<uv_loop_t *>;

void on_tick(uv_timer_t *t) {
  auto *h = static_cast<uvstall_t *>(t->data);
  watch_beat(h->watch.get(), mono_ns());
}

void on_async(uv_async_t *a) {
  auto *h = static_cast<uvstall_t *>(a->data);
  watch_alive(h->watch.get(), mono_ns());
}

void on_close(uv_handle_t *handle) {
  auto *h = static_cast<uvstall_t *>(handle->data);
  if (--h->open_handles == 0) delete h;
}

}  // namespace
}  // namespace uvstall::internal

extern "C" int uvstall_start(uv_loop_t *loop, const uvstall_options_t *opts,
                             uvstall_t **out) {
  using namespace uvstall::internal;
  if (loop == nullptr || out == nullptr) return UVSTALL_EINVAL;
  std::lock_guard<std::mutex> lock(*g_loops_mu);
  if (g_loops->count(loop) != 0) return UVSTALL_EALREADY;
  std::shared_ptr<Watch> w;
  int rc = watch_create(opts, loop, &w);
  if (rc != 0) return rc;
  auto *h = new (std::nothrow) uvstall_t;
  if (h == nullptr) {
    watch_stop(w.get());
    return UVSTALL_ENOMEM;
  }
  h->watch = w;
  h->timer.data = h;
  h->async.data = h;
  if (uv_timer_init(loop, &h->timer) != 0) {
    watch_stop(w.get());
    delete h;
    return UVSTALL_EUV;
  }
  h->open_handles = 1;
  if (uv_async_init(loop, &h->async, on_async) != 0) {
    watch_stop(w.get());
    uv_close(reinterpret_cast<uv_handle_t *>(&h->timer), on_close);
    return UVSTALL_EUV;
  }
  h->open_handles = 2;
  uv_unref(reinterpret_cast<uv_handle_t *>(&h->timer));
  uv_unref(reinterpret_cast<uv_handle_t *>(&h->async));
  uv_timer_start(&h->timer, on_tick, w->cfg.interval_ms, w->cfg.interval_ms);
  {
    std::lock_guard<std::mutex> wl(w->mu);
    w->async = &h->async;
  }
  g_loops->insert(loop);
  sentinel_add(w);
  *out = h;
  return 0;
}

extern "C" int uvstall_stop(uvstall_t *h) {
  using namespace uvstall::internal;
  if (h == nullptr) return UVSTALL_EINVAL;
  Watch *w = h->watch.get();
  if (pid_t(syscall(SYS_gettid)) != w->who.tid) return UVSTALL_EWRONGTHREAD;
  watch_stop(w);
  {
    std::lock_guard<std::mutex> lock(*g_loops_mu);
    g_loops->erase(w->loop);
  }
  uv_timer_stop(&h->timer);
  uv_close(reinterpret_cast<uv_handle_t *>(&h->timer), on_close);
  uv_close(reinterpret_cast<uv_handle_t *>(&h->async), on_close);
  return 0;
}

extern "C" int uvstall_get_stats(const uvstall_t *h, uvstall_stats_t *out) {
  if (h == nullptr || out == nullptr || out->struct_size < sizeof(size_t) + sizeof(uint64_t))
    return UVSTALL_EINVAL;
  uvstall::internal::watch_stats(h->watch.get(), out);
  return 0;
}
