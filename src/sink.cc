// The writer thread and the outputs (see sink.h).
#include "sink.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "threads.h"

namespace uvstall::internal {

namespace {

// Our duplicate of the host's standard error, taken at the first start so a
// host that later reuses fd 2 never receives JSON. Never closed.
std::once_flag g_stderr_once;
int g_stderr_fd = -1;

struct Item {
  std::shared_ptr<Output> out;
  std::shared_ptr<DeliveryCounters> counters;
  std::string line;
};

// The queue; owned by a heap object that is never destroyed, so the writer
// can still run while static destructors run at exit.
struct Queue {
  std::mutex mu;
  std::condition_variable cv;       // writer waits for items
  std::condition_variable idle_cv;  // writer_drain waits for an empty queue
  std::deque<Item> items;
  size_t cap = kDefaultMaxQueuedReports;
  bool busy = false;                // writer is delivering an item
};
Queue *g_queue = nullptr;
std::once_flag g_writer_once;
int g_writer_err = 0;

void writer_main() {
  Queue &q = *g_queue;
  std::unique_lock<std::mutex> lock(q.mu);
  for (;;) {
    q.cv.wait(lock, [&] { return !q.items.empty(); });
    Item item = std::move(q.items.front());
    q.items.pop_front();
    q.busy = true;
    lock.unlock();
    const bool ok = !item.out->closed.load() && item.out->deliver(item.line);
    item.out->pending.fetch_sub(1);
    if (ok) {
      item.counters->written.fetch_add(1, std::memory_order_relaxed);
    } else {
      item.counters->dropped.fetch_add(1, std::memory_order_relaxed);
      item.counters->unannounced_drops.fetch_add(1, std::memory_order_relaxed);
    }
    item = Item{};  // release the output outside the lock
    lock.lock();
    q.busy = false;
    q.idle_cv.notify_all();  // writer_drain and writer_flush_and_close wait on it
  }
}

}  // namespace

std::shared_ptr<Output> Output::open(const Config &cfg, int *err) {
  std::shared_ptr<Output> out(new Output);
  out->cb_ = cfg.on_report;
  out->cb_arg_ = cfg.report_arg;
  if (cfg.has_output_path) {
    out->path_ = cfg.output_path;
    out->fd_ = ::open(cfg.output_path.c_str(),
                      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out->fd_ < 0) {
      *err = UVSTALL_EOUTPUT;
      return nullptr;
    }
    out->owns_fd_ = true;
  } else if (cfg.on_report == nullptr) {
    std::call_once(g_stderr_once,
                   [] { g_stderr_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3); });
    out->fd_ = g_stderr_fd;  // -1 if the host had no stderr: records count as dropped
  }
  return out;
}

Output::~Output() {
  if (owns_fd_ && fd_ >= 0) close(fd_);
}

void Output::reopen_if_rotated() {
  struct stat by_path, by_fd;
  const bool gone = stat(path_.c_str(), &by_path) != 0;
  if (!gone && fstat(fd_, &by_fd) == 0 && by_path.st_ino == by_fd.st_ino &&
      by_path.st_dev == by_fd.st_dev)
    return;
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;  // keep writing to the old file rather than lose records
  close(fd_);
  fd_ = fd;
}

bool Output::write_fd(const std::string &line) {
  if (fd_ < 0) return false;
  if (!path_.empty()) reopen_if_rotated();
  std::string buf = line;
  buf += '\n';
  const char *p = buf.data();
  size_t left = buf.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (errno == EPIPE) {
        // The writer thread blocks SIGPIPE; take the pending one so it never
        // reaches the host later.
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        timespec zero{0, 0};
        sigtimedwait(&pipe_set, nullptr, &zero);
      }
      return false;
    }
    p += n;
    left -= size_t(n);
  }
  return true;
}

std::string Output::key() const {
  if (!path_.empty()) return "file:" + path_;
  if (cb_ != nullptr) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "callback:%p:%p", reinterpret_cast<void *>(cb_), cb_arg_);
    return buf;
  }
  return "stderr";
}

bool Output::deliver(const std::string &line) {
  bool ok = true;
  if (cb_ != nullptr) cb_(line.c_str(), line.size(), cb_arg_);
  if (fd_ >= 0 || (cb_ == nullptr)) ok = write_fd(line);
  return ok;
}

int writer_start(uint32_t max_queued) {
  std::call_once(g_writer_once, [max_queued] {
    g_queue = new Queue;
    g_queue->cap = max_queued;
    if (!start_quiet_thread(writer_main)) g_writer_err = UVSTALL_ETHREAD;
  });
  return g_writer_err;
}

bool writer_enqueue(std::shared_ptr<Output> out,
                    std::shared_ptr<DeliveryCounters> counters, std::string line) {
  Queue &q = *g_queue;
  {
    std::lock_guard<std::mutex> lock(q.mu);
    if (q.items.size() < q.cap) {
      out->pending.fetch_add(1);
      q.items.push_back(Item{std::move(out), counters, std::move(line)});
      q.cv.notify_one();
      return true;
    }
  }
  counters->dropped.fetch_add(1, std::memory_order_relaxed);
  counters->unannounced_drops.fetch_add(1, std::memory_order_relaxed);
  return false;
}

bool writer_flush_and_close(Output *out, uint32_t timeout_ms) {
  bool flushed = true;
  if (g_queue != nullptr) {
    Queue &q = *g_queue;
    std::unique_lock<std::mutex> lock(q.mu);
    flushed = q.idle_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                 [&] { return out->pending.load() == 0; });
  }
  out->closed.store(true);
  return flushed;
}

void writer_drain(uint32_t timeout_ms) {
  if (g_queue == nullptr) return;
  Queue &q = *g_queue;
  std::unique_lock<std::mutex> lock(q.mu);
  q.idle_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                     [&] { return q.items.empty() && !q.busy; });
}

}  // namespace uvstall::internal
