// Thread state from /proc and the cause rule (see thread_state.h).
#include "thread_state.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "clock.h"

namespace uvstall::internal {

namespace {

int open_task_file(pid_t tid, const char *name) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/%s", int(tid), name);
  return open(path, O_RDONLY | O_CLOEXEC);
}

std::string pread_text(int fd, bool *gone = nullptr) {
  if (fd < 0) return {};
  char buf[1024];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n < 0 && errno == ESRCH && gone != nullptr) *gone = true;
  if (n <= 0) return {};
  return std::string(buf, size_t(n));
}

}  // namespace

ThreadProbe::ThreadProbe(pid_t tid) : tid_(tid) {
  stat_fd_ = open_task_file(tid, "stat");
  schedstat_fd_ = open_task_file(tid, "schedstat");
  syscall_fd_ = open_task_file(tid, "syscall");
}

ThreadProbe::~ThreadProbe() {
  for (int fd : {stat_fd_, schedstat_fd_, syscall_fd_})
    if (fd >= 0) close(fd);
}

ThreadSample ThreadProbe::read() const {
  ThreadSample s;
  s.at_ns = mono_ns();
  // The syscall first: it is what the thread is doing right now.
  const bool a = parse_syscall(pread_text(syscall_fd_), &s);
  const bool b = parse_stat(pread_text(stat_fd_, &s.gone), &s);
  if (b && (s.state == 'Z' || s.state == 'X')) s.gone = true;
  const bool c = parse_schedstat(pread_text(schedstat_fd_), &s);
  s.ok = b && c;
  (void)a;
  return s;
}

bool parse_stat(const std::string &text, ThreadSample *s) {
  // "pid (comm) S ppid ..." — comm may hold spaces and parentheses: the
  // fields start after the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return false;
  const char *p = text.c_str() + close + 2;
  char state = 0;
  unsigned long long utime = 0, stime = 0;
  // state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
  // cmajflt utime(14) stime(15)
  if (std::sscanf(p, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &utime,
                  &stime) != 3)
    return false;
  s->state = state;
  s->utime_ticks = utime;
  s->stime_ticks = stime;
  return true;
}

bool parse_schedstat(const std::string &text, ThreadSample *s) {
  unsigned long long run = 0, wait = 0;
  if (std::sscanf(text.c_str(), "%llu %llu", &run, &wait) != 2) return false;
  s->run_ns = run;
  s->wait_ns = wait;
  return true;
}

bool parse_syscall(const std::string &text, ThreadSample *s) {
  if (text.compare(0, 7, "running") == 0) {
    s->syscall_nr = -1;
    return true;
  }
  long nr = 0;
  unsigned long long arg0 = 0;
  int got = std::sscanf(text.c_str(), "%ld %llx", &nr, &arg0);
  if (got < 1) return false;
  s->syscall_nr = nr;  // -1 here too: blocked, but not in a syscall
  s->syscall_arg0 = got == 2 ? arg0 : 0;
  return true;
}

const char *cause_name(Cause c) {
  switch (c) {
    case Cause::kCpu: return "cpu";
    case Cause::kSyscall: return "syscall";
    case Cause::kRunqueue: return "runqueue";
    case Cause::kPaused: return "paused";
    default: return "unknown";
  }
}

Cause classify(const CauseInput &in) {
  if (in.stall_ns > 0 && in.sentinel_late_ns * 2 >= in.stall_ns) return Cause::kPaused;
  if (in.window_ns > 0) {
    if (in.wait_ns * 2 >= in.window_ns) return Cause::kRunqueue;
    // Runnable most of the time and waiting less than half: CPU-bound code,
    // slowed by some contention, is still the code's own doing.
    if ((in.cpu_ns + in.wait_ns) * 2 >= in.window_ns) return Cause::kCpu;
  }
  if (in.syscall_nr >= 0 && (in.state == 'S' || in.state == 'D')) return Cause::kSyscall;
  if (in.state == 'D') return Cause::kSyscall;
  return Cause::kUnknown;
}

const char *state_name(char state) {
  switch (state) {
    case 'R': return "running";
    case 'S': return "sleeping";
    case 'D': return "disk wait";
    case 'T': return "stopped";
    case 't': return "tracing stop";
    case 'Z': return "zombie";
    case 'X': return "dead";
    case 'I': return "idle";
    default: return "unknown";
  }
}

// The system calls a loop thread is likely to block in, by number.
const char *syscall_name(long nr) {
  switch (nr) {
#define UVSTALL_SYSCALL_(name) \
  case SYS_##name:             \
    return #name;
    UVSTALL_SYSCALL_(read)
    UVSTALL_SYSCALL_(write)
    UVSTALL_SYSCALL_(pread64)
    UVSTALL_SYSCALL_(pwrite64)
    UVSTALL_SYSCALL_(readv)
    UVSTALL_SYSCALL_(writev)
    UVSTALL_SYSCALL_(preadv)
    UVSTALL_SYSCALL_(pwritev)
    UVSTALL_SYSCALL_(open)
    UVSTALL_SYSCALL_(openat)
    UVSTALL_SYSCALL_(close)
    UVSTALL_SYSCALL_(stat)
    UVSTALL_SYSCALL_(fstat)
    UVSTALL_SYSCALL_(lstat)
    UVSTALL_SYSCALL_(newfstatat)
    UVSTALL_SYSCALL_(statx)
    UVSTALL_SYSCALL_(fsync)
    UVSTALL_SYSCALL_(fdatasync)
    UVSTALL_SYSCALL_(sync)
    UVSTALL_SYSCALL_(sync_file_range)
    UVSTALL_SYSCALL_(ftruncate)
    UVSTALL_SYSCALL_(fallocate)
    UVSTALL_SYSCALL_(rename)
    UVSTALL_SYSCALL_(unlink)
    UVSTALL_SYSCALL_(mkdir)
    UVSTALL_SYSCALL_(getdents64)
    UVSTALL_SYSCALL_(nanosleep)
    UVSTALL_SYSCALL_(clock_nanosleep)
    UVSTALL_SYSCALL_(futex)
    UVSTALL_SYSCALL_(poll)
    UVSTALL_SYSCALL_(ppoll)
    UVSTALL_SYSCALL_(select)
    UVSTALL_SYSCALL_(pselect6)
    UVSTALL_SYSCALL_(epoll_wait)
    UVSTALL_SYSCALL_(epoll_pwait)
    UVSTALL_SYSCALL_(connect)
    UVSTALL_SYSCALL_(accept)
    UVSTALL_SYSCALL_(accept4)
    UVSTALL_SYSCALL_(sendto)
    UVSTALL_SYSCALL_(recvfrom)
    UVSTALL_SYSCALL_(sendmsg)
    UVSTALL_SYSCALL_(recvmsg)
    UVSTALL_SYSCALL_(wait4)
    UVSTALL_SYSCALL_(waitid)
    UVSTALL_SYSCALL_(flock)
    UVSTALL_SYSCALL_(fcntl)
    UVSTALL_SYSCALL_(ioctl)
    UVSTALL_SYSCALL_(mmap)
    UVSTALL_SYSCALL_(munmap)
    UVSTALL_SYSCALL_(madvise)
    UVSTALL_SYSCALL_(msync)
    UVSTALL_SYSCALL_(getrandom)
    UVSTALL_SYSCALL_(sendfile)
    UVSTALL_SYSCALL_(copy_file_range)
    UVSTALL_SYSCALL_(splice)
#undef UVSTALL_SYSCALL_
    default:
      return "";
  }
}

bool syscall_takes_fd(long nr) {
  switch (nr) {
    case SYS_read: case SYS_write: case SYS_pread64: case SYS_pwrite64:
    case SYS_readv: case SYS_writev: case SYS_preadv: case SYS_pwritev:
    case SYS_fstat: case SYS_fsync: case SYS_fdatasync: case SYS_sync_file_range:
    case SYS_ftruncate: case SYS_fallocate: case SYS_getdents64: case SYS_connect:
    case SYS_accept: case SYS_accept4: case SYS_sendto: case SYS_recvfrom:
    case SYS_sendmsg: case SYS_recvmsg: case SYS_flock: case SYS_fcntl:
    case SYS_ioctl: case SYS_sendfile: case SYS_splice: case SYS_epoll_wait:
    case SYS_epoll_pwait:
      return true;
    default:
      return false;
  }
}

}  // namespace uvstall::internal
