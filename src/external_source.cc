// The external heartbeat source, for loops that are not libuv loops (Python's
// asyncio, a private copy of libuv): the host calls uvstall_beat every
// interval_ms from its loop. No handles of ours; two optional helpers make a
// stall's bounds exact, as the libuv source's uv_async and uv_now do:
//   - a wake descriptor (an eventfd, uvstall_external_wake_fd) the host's
//     loop polls: the sentinel writes it at detection, and the host's read
//     callback (uvstall_external_woken) is the loop's first sign of life
//     after the stall, instead of the next beat;
//   - a poll clock (uvstall_external_poll_clock): a word of the host's where
//     its loop stores CLOCK_MONOTONIC ns each time it returns from its poll.
//     At detection it bounds the stall's start (the loop was between two
//     callbacks then); in the wake callback it is when that poll returned,
//     before the callbacks queued ahead of the wake's ran.
// Without them a stall starts at the last beat before it and ends at the
// first beat after it.
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "clock.h"
#include "handle.h"

namespace uvstall::internal {
namespace {

// The host stores the poll clock with one aligned 64-bit store (a C host
// with an atomic or a plain store, Python with ctypes' c_uint64.value, whose
// 8-byte memcpy is one move on x86-64 and aarch64), on the loop's thread.
// The sentinel reads it relaxed while the loop is stalled: it sees the last
// value stored before the stall (or, racing the stall's end, a newer one,
// which the sentinel's "not in the future" check keeps or refuses), never a
// torn one. No ordering with other memory is needed: the word is the value.
uint64_t load_word(const uint64_t *word) {
  return word != nullptr ? __atomic_load_n(word, __ATOMIC_RELAXED) : 0;
}

class ExternalHooks final : public LoopHooks {
 public:
  ~ExternalHooks() override {
    const int fd = wake_fd.load(std::memory_order_relaxed);
    if (fd >= 0) close(fd);
  }
  uint64_t start_hint_ns() override { return load_word(poll_clock.load(std::memory_order_relaxed)); }
  // Non-blocking: a counter that is full (a host that never reads) is EAGAIN.
  void wake() override {
    const int fd = wake_fd.load(std::memory_order_relaxed);
    if (fd < 0) return;
    const uint64_t one = 1;
    const ssize_t n = write(fd, &one, sizeof one);
    (void)n;
  }

  // Both set by the host's calls (under Watch::mu), read by the sentinel
  // (under Watch::mu) and by uvstall_external_woken on the loop's thread.
  std::atomic<int> wake_fd{-1};
  std::atomic<const uint64_t *> poll_clock{nullptr};
};

ExternalHooks *external_hooks(uvstall_t *h) {
  if (h == nullptr || !h->external || h->thread_ended.load()) return nullptr;
  return static_cast<ExternalHooks *>(h->hooks.get());
}

}  // namespace
}  // namespace uvstall::internal

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
  if (h != nullptr) h->hooks.reset(new (std::nothrow) ExternalHooks);
  if (rc == 0 && (h == nullptr || h->hooks == nullptr)) rc = UVSTALL_ENOMEM;
  if (rc != 0) {
    delete h;
    if (w != nullptr) watch_stop(w.get());
    attach_release(nullptr, tid);
    return rc;
  }
  h->watch = w;
  h->external = true;
  {
    std::lock_guard<std::mutex> lock(w->mu);
    w->hooks = h->hooks.get();
  }
  sentinel_add(w);
  attach_started(h);
  *out = h;
  return 0;
}

extern "C" void uvstall_beat(uvstall_t *h) {
  if (h != nullptr) uvstall::internal::watch_beat(h->watch.get(), uvstall::internal::mono_ns());
}

extern "C" int uvstall_external_wake_fd(uvstall_t *h) {
  using namespace uvstall::internal;
  ExternalHooks *x = external_hooks(h);
  if (x == nullptr) return UVSTALL_EINVAL;
  std::lock_guard<std::mutex> lock(h->watch->mu);
  int fd = x->wake_fd.load(std::memory_order_relaxed);
  if (fd >= 0) return fd;
  fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return UVSTALL_EWAKEFD;
  x->wake_fd.store(fd, std::memory_order_relaxed);
  return fd;
}

extern "C" void uvstall_external_woken(uvstall_t *h) {
  using namespace uvstall::internal;
  ExternalHooks *x = external_hooks(h);
  if (x == nullptr) return;
  const int fd = x->wake_fd.load(std::memory_order_relaxed);
  if (fd >= 0) {
    // Drain: one read empties an eventfd's counter (EAGAIN when empty).
    uint64_t count;
    const ssize_t n = read(fd, &count, sizeof count);
    (void)n;
  }
  const uint64_t now = mono_ns();
  const uint64_t polled = load_word(x->poll_clock.load(std::memory_order_relaxed));
  watch_alive(h->watch.get(), now, polled != 0 && polled <= now ? polled : now);
}

extern "C" int uvstall_external_poll_clock(uvstall_t *h, const uint64_t *word) {
  using namespace uvstall::internal;
  ExternalHooks *x = external_hooks(h);
  if (x == nullptr) return UVSTALL_EINVAL;
  std::lock_guard<std::mutex> lock(h->watch->mu);
  x->poll_clock.store(word, std::memory_order_relaxed);
  return 0;
}
