// The external heartbeat source, for loops that are not libuv loops (Python's
// asyncio, a private copy of libuv): the host calls uvstall_beat every
// interval_ms from its loop. No handles of ours, so a stall's end is the
// first beat after it: the duration may be overstated by up to one
// interval (the loop is free again before its next timer callback runs).
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "handle.h"

extern "C" int uvstall_start_external(const uvstall_options_t *opts, uvstall_t **out) {
  using namespace uvstall::internal;
  if (out == nullptr) return UVSTALL_EINVAL;
  *out = nullptr;  // a defined result on every error
  const pid_t tid = pid_t(syscall(SYS_gettid));
  int rc = attach_claim(nullptr, tid);
  if (rc != 0) return rc;
  std::shared_ptr<Watch> w;
  rc = watch_create(opts, nullptr, &w);
  auto *h = rc == 0 ? new (std::nothrow) uvstall_t : nullptr;
  if (rc == 0 && h == nullptr) rc = UVSTALL_ENOMEM;
  if (rc != 0) {
    if (w != nullptr) watch_stop(w.get());
    attach_release(nullptr, tid);
    return rc;
  }
  h->watch = w;
  h->external = true;
  sentinel_add(w);
  attach_started(h);
  *out = h;
  return 0;
}

extern "C" void uvstall_beat(uvstall_t *h) {
  if (h != nullptr) uvstall::internal::watch_beat(h->watch.get(), uvstall::internal::mono_ns());
}
