// fork() in the host: pthread_atfork handlers that leave a forked child
// with consistent locks and state. Before fork, the forking thread takes
// every lock of the library, so no other thread of ours (sentinel, writer,
// metrics) or of the host (in uvstall_start, _stop, _get_stats) is inside a
// critical section when the address space is copied; the parent then
// releases them. In the child, which has only the forking thread:
//   - every lock is free again, the writer's queue and the sentinel's
//     private state are fresh (the parent's queued records are the
//     parent's to write: the child never writes them twice);
//   - the watches that existed are "inherited": never signalled, sampled
//     or reported by the child, but uvstall_get_stats and uvstall_stop work
//     on them (stop from any thread of the child: their threads are gone);
//   - no sentinel or writer runs until the child calls uvstall_start (or
//     _start_external), which starts them for the child: its stalls are
//     reported with its own pid and a new run_id. The capture handler and
//     the process options stay the parent's (uvstall_configure returns
//     UVSTALL_ECONFIGURED); the metrics endpoint and textfile stay the
//     parent's too (the child closes its copy of the listening socket).
//
// Lock order (outermost first; the rest of the library never takes two of
// them in the other order): registry -> process -> each watch's stats_mu ->
// its mu -> capture pool -> module table -> snapshot unwinder -> writer queue. The preload
// shim's own handler (registered after ours, so run before ours) takes its
// lock outside all of these, as its uv_run does.
//
// Registered from a constructor when the library is loaded, so a host that
// forks before its first uvstall_start is covered as well.
#include "fork.h"

#include <pthread.h>

namespace uvstall::internal {
namespace {

void prepare() {
  registry_fork_prepare();
  process_fork_prepare();
  capture_fork_prepare();
  modules_fork_prepare();
  snapshot_fork_prepare();
  writer_fork_prepare();
}

void parent() {
  writer_fork_parent();
  snapshot_fork_parent();
  modules_fork_parent();
  capture_fork_parent();
  process_fork_parent();
  registry_fork_parent();
}

void child() {
  writer_fork_child();
  snapshot_fork_child();
  modules_fork_child();
  capture_fork_child();
  metrics_server_fork_child();
  run_id_fork_child();
  process_fork_child();
  registry_fork_child();
}

__attribute__((constructor)) void register_fork_handlers() {
  pthread_atfork(prepare, parent, child);
}

}  // namespace
}  // namespace uvstall::internal
