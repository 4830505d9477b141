// Public functions shared by every heartbeat source (stop), the attach
// registry (see handle.h) and the thread-exit hook: a thread that ends with
// watches still started stops them on its way out, as uvstall_stop would.
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <vector>

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
  // Handles started on each thread and not stopped yet: the thread's exit
  // hook stops those still there when it ends.
  std::map<pid_t, std::vector<uvstall_t *>> started;
};
Registry *g_reg = new Registry;  // never destroyed (exit-safe)

// The exit hook is a pthread key destructor: it runs on the ending thread
// (pthread_exit, or a return from the thread's function), before its TID
// can be reused and while its stack (where a loop often lives) is still
// there, so the sentinel never signals the TID again and never touches the
// loop. exit() runs no key destructors: a process exit stays "exit".
pthread_key_t g_exit_key;
bool g_exit_key_ok = false;
std::once_flag g_exit_key_once;

void on_thread_exit(void *) {
  const pid_t tid = pid_t(syscall(SYS_gettid));
  std::vector<uvstall_t *> hs;
  {
    std::lock_guard<std::mutex> lock(g_reg->mu);
    auto it = g_reg->started.find(tid);
    if (it == g_reg->started.end()) return;
    hs = std::move(it->second);
    g_reg->started.erase(it);
  }
  for (uvstall_t *h : hs) {
    // The handle stays in the loop (the loop may be gone with the thread's
    // stack): only the watch stops.
    h->thread_ended.store(true);
    watch_stop(h->watch.get(), /*thread_exit=*/true);
    attach_release(h->external ? nullptr : h->watch->loop, tid);
  }
}

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
// The child's threads are new: claims by thread and the watches started by
// thread are the parent's. Loops stay claimed until their inherited watch is
// stopped.
void registry_fork_child() {
  g_reg->uv_watches.clear();
  g_reg->external_threads.clear();
  g_reg->started.clear();
  g_reg->mu.unlock();
}

void attach_started(uvstall_t *h) {
  std::call_once(g_exit_key_once,
                 [] { g_exit_key_ok = pthread_key_create(&g_exit_key, on_thread_exit) == 0; });
  {
    std::lock_guard<std::mutex> lock(g_reg->mu);
    g_reg->started[h->watch->who.tid].push_back(h);
  }
  // Any non-null value: the destructor runs only for threads that set it.
  if (g_exit_key_ok) pthread_setspecific(g_exit_key, &g_exit_key);
}

void attach_release(uv_loop_t *loop, pid_t tid, uvstall_t *h) {
  std::lock_guard<std::mutex> lock(g_reg->mu);
  if (h != nullptr) {
    auto it = g_reg->started.find(tid);
    if (it != g_reg->started.end()) {
      auto &v = it->second;
      v.erase(std::remove(v.begin(), v.end(), h), v.end());
      if (v.empty()) g_reg->started.erase(it);
    }
  }
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
  // A watch its thread's exit stopped belongs to no thread any more (a
  // thread that reuses the TID must not close handles of a loop it never ran).
  if (h->thread_ended.load()) return UVSTALL_EWRONGTHREAD;
  // A watch inherited by a forked child may be stopped from any thread of
  // the child: the thread that started it does not exist there.
  if (!w->inherited && pid_t(syscall(SYS_gettid)) != w->who.tid) return UVSTALL_EWRONGTHREAD;
  watch_stop(w);
  // An inherited watch's claim by thread was dropped at fork (tid 0 is no
  // thread: a thread of the child that reuses the parent's tid keeps its own).
  attach_release(h->external ? nullptr : w->loop, w->inherited ? 0 : w->who.tid, h);
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

extern "C" int uvstall__handles(const uvstall_t *h, uv_handle_t *out[UVSTALL__MAX_HANDLES]) {
  if (h == nullptr || out == nullptr || h->external) return 0;
  out[0] = reinterpret_cast<uv_handle_t *>(const_cast<uv_timer_t *>(&h->timer));
  out[1] = reinterpret_cast<uv_handle_t *>(const_cast<uv_async_t *>(&h->async));
  out[2] = reinterpret_cast<uv_handle_t *>(const_cast<uv_prepare_t *>(&h->prepare));
  out[3] = reinterpret_cast<uv_handle_t *>(const_cast<uv_check_t *>(&h->check));
  return 4;
}
