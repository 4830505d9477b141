// Our background threads (sentinel, writer) are detached and run with every
// signal blocked: process-directed signals meant for the host never land on
// them, and a write to a closed pipe gives EPIPE instead of killing the host.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <thread>

namespace uvstall::internal {

template <typename Fn>
bool start_quiet_thread(Fn fn) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  bool ok = true;
  try {
    std::thread(fn).detach();
  } catch (...) {
    ok = false;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return ok;
}

}  // namespace uvstall::internal
