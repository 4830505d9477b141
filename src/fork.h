// fork() in the host: each module's part of the pthread_atfork handlers
// (registered once, in src/fork.cc, which also states the lock order).
// *_fork_prepare takes the module's locks in the parent before fork;
// *_fork_parent releases them; *_fork_child releases or replaces them in
// the child and forgets what belonged to the parent's threads.
#pragma once

namespace uvstall::internal {

void registry_fork_prepare();   // api.cc: the attach registry
void registry_fork_parent();
void registry_fork_child();
void process_fork_prepare();    // sentinel.cc: process state, each watch's locks
void process_fork_parent();
void process_fork_child();
void capture_fork_prepare();    // capture.cc: the slot pool
void capture_fork_parent();
void capture_fork_child();
void modules_fork_prepare();    // modules.cc: the module table
void modules_fork_parent();
void modules_fork_child();
void snapshot_fork_prepare();   // snapshot.cc: the snapshot unwinder
void snapshot_fork_parent();
void snapshot_fork_child();
void writer_fork_prepare();     // sink.cc: the writer's queue
void writer_fork_parent();
void writer_fork_child();
void metrics_server_fork_child();  // metrics_http.cc: the parent's endpoint
void run_id_fork_child();          // report.cc: a new run_id

}  // namespace uvstall::internal
