// libuvstall-preload.so: watch every libuv loop of an unmodified program.
// Loaded with LD_PRELOAD (tools/uvstall-run sets it up), it interposes five
// libuv functions and otherwise calls the real ones (dlsym(RTLD_NEXT)). The
// watching itself is libuvstall.so's, one copy per process, shared with a
// language package that may also be loaded.
//
//   uv_run          attaches to the loop the first time it runs (on the
//                   thread that runs it; configured from UVSTALL_*), and
//                   tells the watch when the thread enters and leaves the
//                   loop, so time spent outside uv_run is not a stall.
//   uv_walk         hides our handles from the host (uvloop walks every
//                   handle at close and fails on one that is not its own).
//   uv_loop_close,  detach first, so the loop closes with no handle of ours;
//   uv_loop_delete  our handles need one more loop iteration to be freed, run
//                   only when every remaining handle is ours (then no host
//                   callback can run).
//   uv_loop_init    forgets a loop whose memory is reused without a close.
//
// The host must not be able to tell we are there: our handles are unref'd
// (uv_loop_alive and uv_run's result are unchanged), hidden from uv_walk and
// gone before uv_loop_close. Nothing here writes to stdout; stderr gets one
// line per bad UVSTALL_* value and the JSON records when no output file is set.
//
// Children: forked children keep the shim but are never watched (libuvstall's
// threads do not survive fork); the loops they inherit still hide and drop our
// handles. Children that exec inherit LD_PRELOAD and are watched if they run a
// loop, unless UVSTALL_NO_CHILDREN=1, which takes the shim out of LD_PRELOAD
// at load time.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>
#include <uvstall/uvstall.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "env.h"
#include "private_api.h"

namespace {

using uvstall::internal::EnvSettings;

// Real libuv functions, resolved once (thread-safe static initialization).
template <typename F>
F real(const char *name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}
using RunFn = int (*)(uv_loop_t *, uv_run_mode);
using WalkFn = void (*)(uv_loop_t *, uv_walk_cb, void *);
using LoopFn = int (*)(uv_loop_t *);
using DeleteFn = void (*)(uv_loop_t *);
using CloseFn = void (*)(uv_handle_t *, uv_close_cb);

RunFn real_run() {
  static const RunFn f = real<RunFn>("uv_run");
  return f;
}
WalkFn real_walk() {
  static const WalkFn f = real<WalkFn>("uv_walk");
  return f;
}

// One loop the shim has seen run.
struct Loop {
  uvstall_t *watch = nullptr;  // null: not watched (failed, another watcher, detached)
  pid_t tid = 0;               // the thread that attached
  int depth = 0;               // nesting of uv_run on that thread
  // Our handles, kept after the watch is stopped: until their close
  // callbacks run they are still in the loop, and the host must not see
  // them. `data` tells them apart from a host handle at the same address
  // after they are freed.
  uv_handle_t *ours[UVSTALL__MAX_HANDLES] = {};
  void *ours_data = nullptr;
  bool detached = false;       // stays detached until the loop is closed
};

struct State {
  std::mutex mu;  // guards everything below
  std::unordered_map<uv_loop_t *, Loop> loops;
  bool env_read = false;
  EnvSettings env;
  bool status_written = false;
  bool warned_output = false;
  bool warned_thread = false;
};
State *g = new State;  // never destroyed: hooks may run during exit
pid_t g_pid = 0;       // the process the shim was loaded into

pid_t gettid_() { return pid_t(syscall(SYS_gettid)); }

void say(const std::string &line) {
  const std::string s = line + "\n";
  ssize_t n = write(STDERR_FILENO, s.data(), s.size());
  (void)n;
}

bool is_ours(const Loop &l, uv_handle_t *h) {
  if (h == nullptr || h->data != l.ours_data) return false;
  for (uv_handle_t *o : l.ours) {
    if (h == o) return true;
  }
  return false;
}

// For uvstall-run: this process attached to a loop (once per process).
void note_attached_locked() {
  if (g->status_written) return;
  g->status_written = true;
  const char *path = getenv("UVSTALL_RUN_STATUS");
  if (path == nullptr || path[0] == '\0') return;
  const int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const std::string line = "attached " + std::to_string(getpid()) + "\n";
  ssize_t n = write(fd, line.data(), line.size());
  (void)n;
  close(fd);
}

// Starts a watch on `loop` from the calling thread. Under g->mu.
void attach_locked(uv_loop_t *loop, Loop *l) {
  if (!g->env_read) {
    g->env_read = true;
    g->env = uvstall::internal::read_env([](const char *n) -> const char * { return getenv(n); });
    for (const auto &w : g->env.warnings) say(w);
    // The metrics settings point into g->env, which lives as long as we do.
    if (!g->env.metrics_addr.empty()) g->env.popts.metrics_addr = g->env.metrics_addr.c_str();
    if (!g->env.metrics_file.empty()) {
      g->env.metrics_file = uvstall::internal::expand_output_path(g->env.metrics_file, getpid());
      g->env.popts.metrics_file = g->env.metrics_file.c_str();
    }
    // Another user of the library (a language package) may have configured
    // it already: then its settings stand.
    // The parser only passes values the library accepts; if it ever does
    // not, say so rather than drop the settings silently.
    if (g->env.process_set) {
      const int rc = uvstall_configure(&g->env.popts);
      if (rc != 0 && rc != UVSTALL_ECONFIGURED)
        say(std::string("uvstall: ignoring the process-wide UVSTALL_* settings: ") +
            uvstall_strerror(rc));
    }
  }
  uvstall_options_t opts = g->env.opts;
  const std::string path = uvstall::internal::expand_output_path(g->env.output_path, getpid());
  opts.output_path = path.empty() ? nullptr : path.c_str();
  int rc = uvstall_start(loop, &opts, &l->watch);
  if (rc == UVSTALL_EOUTPUT) {
    if (!g->warned_output) {
      g->warned_output = true;
      say("uvstall: ignoring UVSTALL_OUTPUT_PATH=\"" +
          uvstall::internal::quote_env_value(g->env.output_path.c_str()) + "\": cannot open " +
          uvstall::internal::quote_env_value(path.c_str()) +
          " for appending; using the default, standard error");
    }
    opts.output_path = nullptr;
    rc = uvstall_start(loop, &opts, &l->watch);
  }
  if (rc != 0) {
    // UVSTALL_EALREADY: the program (or a language package) watches this
    // loop itself; it keeps its watch.
    if (rc != UVSTALL_EALREADY) say(std::string("uvstall: not watching a loop: ") + uvstall_strerror(rc));
    l->watch = nullptr;
    return;
  }
  uvstall__handles(l->watch, l->ours);
  l->ours_data = l->ours[0] != nullptr ? l->ours[0]->data : nullptr;
  note_attached_locked();
}

// Stops watching `loop` before the host closes it. Returns true when the
// loop should run once to free our handles.
bool detach(uv_loop_t *loop) {
  std::unique_lock<std::mutex> lock(g->mu);
  auto it = g->loops.find(loop);
  if (it == g->loops.end() || it->second.detached) return false;
  Loop &l = it->second;
  l.detached = true;
  if (l.watch == nullptr) return false;
  if (getpid() != g_pid) {
    // A forked child: the library's threads are gone, so only close the
    // handles (their memory stays with the parent's watch, never freed).
    static const CloseFn close_ = real<CloseFn>("uv_close");
    for (uv_handle_t *h : l.ours) {
      if (h != nullptr && !uv_is_closing(h)) close_(h, nullptr);
    }
  } else if (gettid_() != l.tid) {
    // uvstall_stop must run on the watch's thread: our handles stay, and
    // uv_loop_close returns UV_EBUSY. Said once.
    if (!g->warned_thread) {
      g->warned_thread = true;
      say("uvstall: a loop is being closed on another thread than the one that ran it; "
          "uvstall cannot detach from it (uv_loop_close will return EBUSY)");
    }
    l.detached = false;
    return false;
  } else {
    uvstall_stop(l.watch);
  }
  l.watch = nullptr;
  const Loop copy = l;
  lock.unlock();

  // Run the loop once only when nothing of the host's can run in it.
  if (loop->active_reqs.count != 0) return false;
  struct Check {
    const Loop *l;
    bool only_ours;
  } check{&copy, true};
  real_walk()(loop, [](uv_handle_t *h, void *arg) {
    auto *c = static_cast<Check *>(arg);
    if (!is_ours(*c->l, h)) c->only_ours = false;
  }, &check);
  return check.only_ours;
}

void forget(uv_loop_t *loop) {
  std::lock_guard<std::mutex> lock(g->mu);
  g->loops.erase(loop);
}

// Takes our own path out of LD_PRELOAD (UVSTALL_NO_CHILDREN=1), so that
// programs this one starts do not load the shim.
void drop_from_ld_preload() {
  const char *cur = getenv("LD_PRELOAD");
  Dl_info info;
  if (cur == nullptr || dladdr(reinterpret_cast<void *>(&drop_from_ld_preload), &info) == 0 ||
      info.dli_fname == nullptr)
    return;
  const char *self_base = strrchr(info.dli_fname, '/');
  self_base = self_base != nullptr ? self_base + 1 : info.dli_fname;
  std::string kept, item;
  const std::string list = std::string(cur) + " ";
  for (char c : list) {
    if (c != ' ' && c != ':') {
      item += c;
      continue;
    }
    if (item.empty()) continue;
    const char *base = strrchr(item.c_str(), '/');
    base = base != nullptr ? base + 1 : item.c_str();
    if (item != info.dli_fname && strcmp(base, self_base) != 0) {
      if (!kept.empty()) kept += ' ';
      kept += item;
    }
    item.clear();
  }
  if (kept.empty()) {
    unsetenv("LD_PRELOAD");
  } else {
    setenv("LD_PRELOAD", kept.c_str(), 1);
  }
}

// fork: the child gets a consistent registry (the lock is not held by a
// thread that does not exist there).
void before_fork() { g->mu.lock(); }
void after_fork() { g->mu.unlock(); }

__attribute__((constructor)) void preload_init() {
  g_pid = getpid();
  pthread_atfork(before_fork, after_fork, after_fork);
  const char *nc = getenv("UVSTALL_NO_CHILDREN");
  if (nc != nullptr && strcmp(nc, "1") == 0) drop_from_ld_preload();
}

}  // namespace

// ---- The interposed libuv functions ----

extern "C" int uv_run(uv_loop_t *loop, uv_run_mode mode) {
  const RunFn run = real_run();
  if (run == nullptr) return UV_ENOSYS;
  if (loop == nullptr || getpid() != g_pid) return run(loop, mode);
  uvstall_t *watch = nullptr;
  {
    std::lock_guard<std::mutex> lock(g->mu);
    auto it = g->loops.find(loop);
    if (it == g->loops.end()) {
      it = g->loops.emplace(loop, Loop{}).first;
      it->second.tid = gettid_();
      attach_locked(loop, &it->second);
    }
    Loop &l = it->second;
    if (l.watch != nullptr && l.tid == gettid_()) {
      watch = l.watch;
      if (l.depth++ == 0) uvstall__set_paused(watch, 0);
    }
  }
  const int r = run(loop, mode);
  if (watch != nullptr) {
    std::lock_guard<std::mutex> lock(g->mu);
    auto it = g->loops.find(loop);
    // The host may have closed the loop from a callback (detached then).
    if (it != g->loops.end() && it->second.watch == watch && --it->second.depth == 0)
      uvstall__set_paused(watch, 1);
  }
  return r;
}

extern "C" void uv_walk(uv_loop_t *loop, uv_walk_cb cb, void *arg) {
  const WalkFn walk = real_walk();
  Loop copy;
  bool found = false;
  {
    std::lock_guard<std::mutex> lock(g->mu);
    auto it = g->loops.find(loop);
    if (it != g->loops.end() && it->second.ours[0] != nullptr) {
      copy = it->second;
      found = true;
    }
  }
  if (!found) {
    walk(loop, cb, arg);
    return;
  }
  struct Filter {
    const Loop *l;
    uv_walk_cb cb;
    void *arg;
  } f{&copy, cb, arg};
  walk(loop, [](uv_handle_t *h, void *a) {
    auto *f = static_cast<Filter *>(a);
    if (!is_ours(*f->l, h)) f->cb(h, f->arg);
  }, &f);
}

extern "C" int uv_loop_close(uv_loop_t *loop) {
  static const LoopFn close_ = real<LoopFn>("uv_loop_close");
  if (detach(loop)) real_run()(loop, UV_RUN_NOWAIT);
  const int r = close_(loop);
  if (r == 0) forget(loop);
  return r;
}

extern "C" void uv_loop_delete(uv_loop_t *loop) {
  static const DeleteFn delete_ = real<DeleteFn>("uv_loop_delete");
  if (detach(loop)) real_run()(loop, UV_RUN_NOWAIT);
  forget(loop);
  delete_(loop);
}

extern "C" int uv_loop_init(uv_loop_t *loop) {
  static const LoopFn init = real<LoopFn>("uv_loop_init");
  forget(loop);
  return init(loop);
}
