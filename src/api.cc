// Public functions shared by every heartbeat source (stop) and the
// attach registry (see handle.h).
#include <sys/syscall.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>

#include "clock.h"
#include "fork.h"
#include "handle.h"
#include "private_api.h"

namespace uvstall::internal {
namespace {

struct Registry {
  std::mutex mu;
  std::set<uv_loop_t *> loops;
  std::map<pid_t, int> uv_watches;        // per thread
  std::set<pid_t> external_threads;
};
Registry *g_reg = new Registry;  // never destroyed (exit-safe)

}  // namespace

int attach_claim(uv_loop_t *loop, pid_t tid) {
  std::lock_guard<std::mutex> lock(g_reg->mu);
  if (g_reg->external_threads.count(tid) != 0) return UVSTALL_EALREADY;
  if (loop == nullptr) {
    if (g_reg->uv_watches.count(tid) != 0) return UVSTALL_EALREADY;
    g_reg->external_threads.insert(tid);
    return 0;
  }
  if (!g_reg->loops.insert(loop).second) return UVSTALL_EALREADY;
  ++g_reg->uv_watches[tid];
  return 0;
}

void registry_fork_prepare() { g_reg->mu.lock(); }
void registry_fork_parent() { g_reg->mu.unlock(); }
// The child's threads are new: claims by thread are the parent's. Loops stay
// claimed until their inherited watch is stopped.
void registry_fork_child() {
  g_reg->uv_watches.clear();
  g_reg->external_threads.clear();
  g_reg->mu.unlock();
}

void attach_release(uv_loop_t *loop, pid_t tid) {
  std::lock_guard<std::mutex> lock(g_reg->mu);
  if (loop == nullptr) {
    g_reg->external_threads.erase(tid);
    return;
  }
  g_reg->loops.erase(loop);
  auto it = g_reg->uv_watches.find(tid);
  if (it != g_reg->uv_watches.end() && --it->second == 0) g_reg->uv_watches.erase(it);
}

}  // namespace uvstall::internal

extern "C" int uvstall_stop(uvstall_t *h) {
  using namespace uvstall::internal;
  if (h == nullptr) return UVSTALL_EINVAL;
  Watch *w = h->watch.get();
  // A watch inherited by a forked child may be stopped from any thread of
  // the child: the thread that started it does not exist there.
  if (!w->inherited && pid_t(syscall(SYS_gettid)) != w->who.tid) return UVSTALL_EWRONGTHREAD;
  watch_stop(w);
  // An inherited watch's claim by thread was dropped at fork (tid 0 is no
  // thread: a thread of the child that reuses the parent's tid keeps its own).
  attach_release(h->external ? nullptr : w->loop, w->inherited ? 0 : w->who.tid);
  if (h->external) {
    delete h;
  } else {
    uv_source_stop(h);
  }
  return 0;
}

// ---- Private exports (src/private_api.h) ----

extern "C" void uvstall__set_paused(uvstall_t *h, int paused) {
  using namespace uvstall::internal;
  if (h == nullptr) return;
  if (paused != 0) {
    watch_pause(h->watch.get(), mono_ns());
  } else {
    watch_resume(h->watch.get(), mono_ns());
  }
}

extern "C" int uvstall__handles(const uvstall_t *h, uv_handle_t *out[2]) {
  if (h == nullptr || out == nullptr || h->external) return 0;
  out[0] = reinterpret_cast<uv_handle_t *>(const_cast<uv_timer_t *>(&h->timer));
  out[1] = reinterpret_cast<uv_handle_t *>(const_cast<uv_async_t *>(&h->async));
  return 2;
}
