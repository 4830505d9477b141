// The writer thread and the outputs (see sink.h).
#include "sink.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "fork.h"
#include "threads.h"

namespace uvstall::internal {

namespace {

// Our duplicate of the host's standard error, taken at the first start so a
// host that later reuses fd 2 never receives JSON. Never closed.
std::once_flag g_stderr_once;
int g_stderr_fd = -1;

// A full non-blocking descriptor (a host's O_NONBLOCK stderr pipe whose
// reader is slow) gets this long per record to take it, waited in poll()
// slices of kFullSliceMs: no spinning, and a closed output stops waiting.
constexpr uint32_t kFullWaitMs = 500;
constexpr long long kFullSliceMs = 50;

// Opens output_path for appending without ever blocking in open(): a FIFO
// without a reader fails at once (ENXIO: UVSTALL_EOUTPUT) instead of
// hanging uvstall_start on the loop's thread. Writes then block as usual
// (the Python relay's FIFO relies on that: a slow callback holds the
// writer back rather than losing records).
int open_output(const std::string &path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

struct Item {
  std::shared_ptr<Output> out;
  std::shared_ptr<DeliveryCounters> counters;
  std::string line;
  uint64_t announced = 0;  // the drops its "dropped" field announces
};

// One record lost: counted, and announced by a later record, together with
// the drops this one was to announce.
void count_drop(DeliveryCounters &c, uint64_t announced) {
  c.dropped.fetch_add(1, std::memory_order_relaxed);
  c.unannounced_drops.fetch_add(1 + announced, std::memory_order_relaxed);
}

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
// Set by the first writer_start; replaced in a forked child (writer_fork_child).
Queue *g_queue = nullptr;
// Whether this process has a writer thread. Only writer_start (called under
// the process lock, src/sentinel.cc) and the fork handlers touch it.
bool g_writer_running = false;

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
      count_drop(*item.counters, item.announced);
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
    out->fd_ = open_output(cfg.output_path);
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
  int fd = open_output(path_);
  if (fd < 0) return;  // keep writing to the old file rather than lose records
  close(fd_);
  fd_ = fd;
}

namespace {

// Takes the SIGPIPE that a write to a pipe without reader raised on this
// thread (our threads block it), so that it never reaches the host later.
void consume_sigpipe() {
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  timespec zero{0, 0};
  sigtimedwait(&pipe_set, nullptr, &zero);
}

// What the writer knows of one stream ("stderr", or a path), shared by the
// outputs of every watch that writes there. Writer thread only.
struct StreamState {
  bool broken_line = false;  // a cut record ends it: the next starts with '\n'
  bool stuck = false;        // the last record was given up: don't wait
};

// Created at load, never destroyed (the writer may run during exit); not a
// function-local static the writer would initialize (see warm_statics).
std::map<std::string, StreamState> *const g_stream_states = new std::map<std::string, StreamState>;

StreamState &stream_state(const std::string &key) { return (*g_stream_states)[key]; }

// Waits until fd takes more bytes, up to `ms`, in slices so that a closed
// output stops waiting. False when it still does not.
bool wait_writable(int fd, uint32_t ms, const std::atomic<bool> &closed) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now()).count();
    if (left <= 0 || closed.load()) return false;
    pollfd p{fd, POLLOUT, 0};
    const int n = poll(&p, 1, int(std::min<long long>(left, kFullSliceMs)));
    if (n > 0) return true;  // room, or an error the next write reports
    if (n < 0 && errno != EINTR) return false;
  }
}

}  // namespace

bool Output::write_fd(const std::string &line) {
  if (fd_ < 0) return false;
  if (!path_.empty()) reopen_if_rotated();
  StreamState &ss = stream_state(key());
  // After a cut record (a pipe cannot take bytes back) the next record
  // starts on a fresh line.
  const size_t prefix = ss.broken_line ? 1 : 0;
  std::string buf;
  buf.reserve(prefix + line.size() + 1);
  if (prefix) buf += '\n';
  buf += line;
  buf += '\n';
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::write(fd_, buf.data() + done, buf.size() - done);
    if (n > 0) {
      done += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // A full non-blocking descriptor. Once a record was given up, the next
    // ones are not waited for unless they have begun (the reader may be gone
    // for good: dropping at once keeps the queue moving).
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && (!ss.stuck || done > 0) &&
        wait_writable(fd_, kFullWaitMs, closed))
      continue;
    if (n < 0 && errno == EPIPE) consume_sigpipe();
    break;
  }
  if (done == buf.size()) {
    ss.broken_line = ss.stuck = false;
    return true;
  }
  ss.stuck = true;
  if (done > prefix) ss.broken_line = !cut_back(done - prefix);
  else if (done == 1) ss.broken_line = false;  // only the fresh line got out
  return false;
}

// Removes the `n` bytes of a cut record from the end of a regular file, if
// nothing was appended after them. False if they stay (a pipe, a tty).
bool Output::cut_back(size_t n) {
  struct stat st;
  const off_t end = lseek(fd_, 0, SEEK_CUR);
  if (end < off_t(n) || fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != end)
    return false;
  if (ftruncate(fd_, end - off_t(n)) != 0) return false;
  lseek(fd_, end - off_t(n), SEEK_SET);  // for a descriptor without O_APPEND
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
  if (g_writer_running) return 0;
  if (g_queue == nullptr) {
    g_queue = new Queue;
    g_queue->cap = max_queued;
  }
  if (!start_quiet_thread(writer_main)) return UVSTALL_ETHREAD;
  g_writer_running = true;
  return 0;
}

// fork (src/fork.cc). The queue's lock is not held across fork. The child
// has no writer: it gets an empty queue of its own (the records queued in
// the parent are the parent's to write; the old queue's condition variables
// may count waiters that do not exist in the child, so it is left alone,
// never freed), and its first start starts a writer.
void writer_fork_prepare() {
  if (g_queue != nullptr) g_queue->mu.lock();
}

void writer_fork_parent() {
  if (g_queue != nullptr) g_queue->mu.unlock();
}

void writer_fork_child() {
  if (g_queue == nullptr) return;
  auto *fresh = new Queue;
  fresh->cap = g_queue->cap;
  g_queue = fresh;
  g_writer_running = false;
}

bool writer_enqueue(std::shared_ptr<Output> out, std::shared_ptr<DeliveryCounters> counters,
                    std::string line, uint64_t announced) {
  Queue &q = *g_queue;
  {
    std::lock_guard<std::mutex> lock(q.mu);
    if (q.items.size() < q.cap) {
      out->pending.fetch_add(1);
      q.items.push_back(Item{std::move(out), counters, std::move(line), announced});
      q.cv.notify_one();
      return true;
    }
  }
  count_drop(*counters, announced);
  return false;
}

void drop_unqueued(DeliveryCounters &counters, uint64_t announced) {
  count_drop(counters, announced);
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
