// uvstall-demo: a libuv program that blocks its own loop four times, the
// four classic ways, while uvstall names each culprit as it happens.
//
//     uvstall-demo [--output FILE]
//
// The loop does real work meanwhile: a repeating 10 ms timer measures how
// late it fires, which is all a "watchdog timer" can tell you. Then, one
// after another and each in its own uv_timer callback on the loop thread:
//
//   1. demo_sleep_in_callback   sleeps 300 ms;
//   2. demo_sync_http_request   asks a slow local TCP server (a thread of
//                               this program that answers after 300 ms)
//                               with blocking connect/send/recv;
//   3. demo_parse_big_json      parses a multi-MB JSON document (~300 ms);
//   4. demo_read_file_sync      reads a big file with read() and writes a
//                               copy with write() + fsync().
//
// uvstall's records reach on_report on uvstall's writer thread, where this
// program parses them and prints one line per stall while it is still going
// on, and the exact duration when it ends. It exits 0 only if every culprit
// was named, so `meson test --suite examples` runs it as a smoke test.
// --output FILE also appends the raw JSON Lines to FILE.
#include <uvstall/uvstall.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

// noinline keeps each culprit a frame of its own; noclone (GCC) keeps its
// symbol from becoming "demo_sleep_in_callback.constprop.0".
#if defined(__clang__)
#define DEMO_NOINLINE __attribute__((noinline))
#else
#define DEMO_NOINLINE __attribute__((noinline, noclone))
#endif

// ---------------------------------------------------------------------------
// The four culprits. Each is noinline with a name you would grep for, and
// returns a value its caller uses, so none ends in a tail call that would
// take its own frame off the stack. extern "C" keeps their symbols plain.
extern "C" {

// 1. A sleep on the loop thread. A plain nanosleep()/usleep() returns early
// with EINTR when uvstall's capture signal arrives (the kernel never restarts
// them), so sleep to an absolute deadline and go back to sleep if woken.
DEMO_NOINLINE int demo_sleep_in_callback(int ms) {
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += ms / 1000;
  deadline.tv_nsec += long(ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  int wakeups = 0;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, nullptr) == EINTR)
    ++wakeups;
  return wakeups;
}

// 2. A synchronous request to a slow server: blocking connect, send, recv.
// Returns the bytes of the reply, or -1.
DEMO_NOINLINE long demo_sync_http_request(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  long total = -1;
  if (connect(fd, reinterpret_cast<struct sockaddr *>(&addr), sizeof addr) == 0) {
    static const char kRequest[] = "GET /slow HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, kRequest, sizeof kRequest - 1, MSG_NOSIGNAL) == ssize_t(sizeof kRequest - 1)) {
      total = 0;
      char buf[4096];
      for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        total += n;
      }
    }
  }
  close(fd);
  return total;
}

// 3. CPU-heavy work: parse a big JSON document and walk it once.
DEMO_NOINLINE size_t demo_parse_big_json(const std::string &text) {
  nlohmann::json doc = nlohmann::json::parse(text);
  size_t active = 0;
  for (const auto &item : doc["items"])
    if (item["active"].get<bool>()) ++active;
  return active;
}

// 4. A large synchronous file read, then a copy written and fsync'ed.
// Returns the bytes copied, or -1.
DEMO_NOINLINE long demo_read_file_sync(const char *path, const char *copy_path) {
  int in = open(path, O_RDONLY | O_CLOEXEC);
  if (in < 0) return -1;
  struct stat st;
  if (fstat(in, &st) != 0) {
    close(in);
    return -1;
  }
  const size_t size = size_t(st.st_size);
  std::unique_ptr<char[]> data(new char[size]);
  size_t got = 0;
  while (got < size) {
    ssize_t n = read(in, data.get() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  close(in);
  int out = open(copy_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) return -1;
  size_t put = 0;
  while (put < got) {
    ssize_t n = write(out, data.get() + put, got - put);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    put += size_t(n);
  }
  const bool ok = got == size && put == got && fsync(out) == 0;
  close(out);
  return ok ? long(put) : -1;
}

}  // extern "C"

namespace {

// How long each culprit aims to block the loop, and the quiet time between
// culprits (long enough for each stall_end to arrive before the next stall).
constexpr int kCulpritMs = 300;
constexpr int kGapMs = 300;
// The watchdog-style timer that measures how late it fires.
constexpr int kTickMs = 10;
// uvstall's settings here: the defaults, spelled out for the text below.
constexpr uint32_t kIntervalMs = 20;
constexpr uint32_t kThresholdMs = 100;
// A culprit that blocks this long must be named. A stall is seen between
// threshold and threshold + interval after it began, and its stack may take
// up to capture_timeout_ms (default 50) more; the rest is slack for a busy
// machine. A file copy that a fast disk finishes sooner is no stall at all.
constexpr double kMustNameMs = kThresholdMs + kIntervalMs + 50 + 30;
// The temp file culprit 4 reads and copies: written in kFileStep pieces
// until writing it took kFileWriteMs, within [kFileMin, kFileMax], so that
// reading and copying it takes a few hundred ms on this disk (disks in
// virtual machines vary a lot from one second to the next, though).
constexpr size_t kFileStep = size_t(8) << 20;
constexpr size_t kFileMin = size_t(48) << 20;
constexpr size_t kFileMax = size_t(160) << 20;
constexpr int kFileWriteMs = 250;

uint64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

double ms_since(uint64_t start_ns) { return double(now_ns() - start_ns) / 1e6; }

// ---------------------------------------------------------------------------
// Set-up, done before the loop starts so it is not part of any stall.

// A JSON document of about `bytes` bytes: {"items":[{...}, ...]}.
std::string make_json(size_t bytes) {
  std::string s;
  s.reserve(bytes + 256);
  s += "{\"items\":[";
  for (size_t i = 0; s.size() < bytes; ++i) {
    if (i > 0) s += ',';
    s += "{\"id\":" + std::to_string(i) + ",\"name\":\"item-" + std::to_string(i) +
         "\",\"tags\":[\"red\",\"green\",\"blue\"],\"price\":" + std::to_string(i % 1000) +
         ".25,\"active\":" + (i % 3 == 0 ? "true" : "false") + "}";
  }
  s += "]}";
  return s;
}

// A document that takes about kCulpritMs to parse on this machine (and in
// this build type): time a 1 MB one, then scale.
std::string make_calibrated_json() {
  const size_t probe_bytes = size_t(1) << 20;
  const std::string probe = make_json(probe_bytes);
  // The fastest of three: the first run also pays for page faults and
  // malloc growing its arenas.
  double probe_ms = 1e9;
  for (int i = 0; i < 3; ++i) {
    const uint64_t t0 = now_ns();
    volatile size_t sink = demo_parse_big_json(probe);
    (void)sink;
    probe_ms = std::min(probe_ms, std::max(ms_since(t0), 0.05));
  }
  double want = double(probe_bytes) * kCulpritMs / probe_ms;
  want = std::min(std::max(want, double(probe_bytes)), double(size_t(256) << 20));
  return make_json(size_t(want));
}

// Writes the file for culprit 4; returns its size, or 0 on failure.
size_t write_calibrated_file(const std::string &path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 0;
  std::vector<char> block(kFileStep);
  for (size_t i = 0; i < block.size(); ++i) block[i] = char('a' + i % 26);
  const uint64_t t0 = now_ns();
  size_t size = 0;
  bool ok = true;
  while (ok && size < kFileMax && (size < kFileMin || ms_since(t0) < kFileWriteMs)) {
    ok = write(fd, block.data(), block.size()) == ssize_t(block.size()) && fdatasync(fd) == 0;
    size += block.size();
  }
  // Drop it from the page cache, so culprit 4 reads it from the disk like a
  // file nobody touched recently. Advisory: fine if it does nothing.
  if (ok) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
  return ok ? size : 0;
}

// The slow server: one blocking-socket thread on 127.0.0.1 that accepts one
// connection, reads the request, waits kCulpritMs, and replies.
class SlowServer {
 public:
  bool start() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    struct sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = 0;  // ephemeral
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd_, reinterpret_cast<struct sockaddr *>(&addr), sizeof addr) != 0 ||
        listen(fd_, 4) != 0 ||
        getsockname(fd_, reinterpret_cast<struct sockaddr *>(&addr), &len) != 0)
      return false;
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
    return true;
  }
  // Unblocks accept() if the request never came, then joins.
  void stop() {
    if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  uint16_t port() const { return port_; }

 private:
  void serve() {
    int c = accept(fd_, nullptr, nullptr);
    if (c < 0) return;
    std::string request;
    char buf[1024];
    while (request.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      request.append(buf, size_t(n));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kCulpritMs));
    static const char kReply[] =
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nslow\n";
    ssize_t ignored = send(c, kReply, sizeof kReply - 1, MSG_NOSIGNAL);
    (void)ignored;
    close(c);
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// ---------------------------------------------------------------------------
// What the demo learns about each culprit.

struct Step {
  const char *name;  // the culprit function uvstall should name
  std::string what;  // what it does, for the progress line
  uint64_t stall_id = 0;
  bool named = false;            // a stack named `name` as the culprit
  bool named_while_blocking = false;
  double named_at_ms = 0;        // blocked_ms of that stack
  double duration_ms = -1;       // from stall_end
  double timer_late_ms = 0;      // the 10 ms timer's worst lateness after it
  double took_ms = 0;            // how long the culprit blocked, measured here
};

struct Demo {
  std::mutex mu;  // guards steps, stall_step, ended, unexpected; stdout lines
  std::condition_variable cv;
  std::vector<Step> steps;
  std::map<uint64_t, int> stall_step;  // stall_id -> step index (-1: none)
  size_t ended = 0;                    // stall_end records seen
  size_t unexpected = 0;               // stalls not during a culprit

  // Written by the loop thread, read by the writer thread.
  std::atomic<int> current_step{-1};   // the culprit that ran last
  std::atomic<bool> blocking{false};   // true while a culprit runs

  // Loop thread only.
  uv_loop_t loop;
  uv_timer_t tick;
  uv_timer_t step_timer;
  uvstall_t *watch = nullptr;
  uint64_t last_tick_ns = 0;
  double max_late_ms = 0;
  size_t next_step = 0;
  std::string json_text;
  std::string file_path, copy_path;
  SlowServer server;
  bool culprit_failed = false;
};

// Frames in these modules never name a culprit: the C library, the loader,
// the kernel's vDSO, libuv, uvstall, the C++ runtime and the sanitizers'
// interceptors (tools/skip-modules.txt is the library's list of the same).
bool is_system_module(const std::string &path) {
  const std::string base = path.substr(path.find_last_of('/') + 1);
  static const char *const kPrefixes[] = {
      "libc.so",      "libc-",   "libpthread", "libdl",       "ld-linux",
      "ld-",          "[vdso]",  "linux-vdso", "libuv.so",    "libuvstall.so",
      "libstdc++.so", "libgcc_s", "libunwind",  "libm.so",     "libasan.so",
      "libubsan.so"};
  for (const char *p : kPrefixes)
    if (base.compare(0, std::strlen(p), p) == 0) return true;
  return false;
}

// A demangled symbol reduced to its qualified name, for reading and for
// comparing: "bool ns::f<int>(x) [clone .cold]" -> "ns::f", and
// "(anonymous namespace)::on_step(uv_timer_s*)" -> "on_step".
std::string display_name(std::string sym) {
  const size_t clone = sym.find(" [clone ");
  if (clone != std::string::npos) sym.erase(clone);
  static const std::string kAnon = "(anonymous namespace)::";
  for (size_t at; (at = sym.find(kAnon)) != std::string::npos;) sym.erase(at, kAnon.size());
  std::string out;
  int depth = 0;
  for (char c : sym) {
    if (c == '<') ++depth;
    else if (c == '>' && depth > 0) --depth;
    else if (depth == 0) out += c;
  }
  // The parameter list; "operator()" keeps its own parentheses.
  size_t from = out.find("operator()");
  from = from == std::string::npos ? 0 : from + 10;
  const size_t paren = out.find('(', from);
  if (paren != std::string::npos) out.erase(paren);
  // A return type, which template functions carry: the text up to the last
  // space before the name ("operator new" has a space of its own).
  const size_t op = out.find("operator");
  const size_t space = op == std::string::npos ? out.rfind(' ')
                       : op == 0              ? std::string::npos
                                              : out.rfind(' ', op - 1);
  if (space != std::string::npos) out.erase(0, space + 1);
  return out;
}

// Library templates (nlohmann::json, std::) are compiled into the program,
// so their frames are in its module; they are where the time goes, not who
// asked for it.
bool is_library_symbol(const std::string &sym) {
  const std::string name = display_name(sym);
  for (const char *p : {"nlohmann::", "std::", "__gnu_cxx::"})
    if (name.compare(0, std::strlen(p), p) == 0) return true;
  return false;
}

// "demo_sleep_in_callback (uvstall-demo+0x1234)", or "libuv.so.1+0x1234"
// for a frame without a symbol.
std::string frame_text(const nlohmann::json &f, bool with_location) {
  std::string where;
  if (f["module"].is_string()) {
    const std::string m = f["module"].get<std::string>();
    where = m.substr(m.find_last_of('/') + 1) + "+" +
            (f["offset"].is_string() ? f["offset"].get<std::string>() : std::string("?"));
  } else {
    where = f["pc"].is_string() ? f["pc"].get<std::string>() : std::string("?");
  }
  if (!f["symbol"].is_string()) return where;
  const std::string name = display_name(f["symbol"].get<std::string>());
  return with_location ? name + " (" + where + ")" : name;
}

void on_stall(Demo *d, const nlohmann::json &r) {
  const uint64_t id = r.value("stall_id", uint64_t(0));
  const std::string capture = r.value("capture", std::string());
  const nlohmann::json frames = r.contains("frames") ? r["frames"] : nlohmann::json::array();
  // The culprit: the first frame outside system modules and library code.
  int culprit = -1;
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto &f = frames[i];
    if (!f["module"].is_string() || is_system_module(f["module"].get<std::string>())) continue;
    if (f["symbol"].is_string() && is_library_symbol(f["symbol"].get<std::string>())) continue;
    culprit = int(i);
    break;
  }
  const std::string culprit_name =
      culprit >= 0 && frames[size_t(culprit)]["symbol"].is_string()
          ? display_name(frames[size_t(culprit)]["symbol"].get<std::string>())
          : std::string();
  const bool still_blocking = d->blocking.load();
  const int step = d->current_step.load();

  std::string line = "stall #" + std::to_string(id) + " on " + r.value("loop", std::string("?")) +
                     ": blocked " + std::to_string(int(r.value("blocked_ms", 0.0))) + " ms " +
                     (still_blocking ? "so far" : "(it has returned since)");
  if (capture == "late") line += ", stack arrived late (it was in an uninterruptible system call)";
  if (culprit >= 0) {
    line += ", in " + frame_text(frames[size_t(culprit)], true);
    for (size_t i = size_t(culprit) + 1; i < frames.size() && i <= size_t(culprit) + 2; ++i)
      line += " <- " + frame_text(frames[i], false);
    if (culprit > 0) line += "  [innermost: " + frame_text(frames[0], true) + "]";
  } else if (capture == "ok" || capture == "late") {
    line += ", but no frame outside system libraries";
  } else {
    line += ", no stack (" + capture + ": " + r.value("capture_error", std::string()) + ")";
  }

  std::lock_guard<std::mutex> lock(d->mu);
  auto it = d->stall_step.find(id);
  if (it == d->stall_step.end()) {
    const int s = still_blocking ? step : -1;
    it = d->stall_step.emplace(id, s).first;
    if (s < 0) ++d->unexpected;
  }
  if (it->second >= 0) {
    Step &st = d->steps[size_t(it->second)];
    st.stall_id = id;
    if (culprit_name == st.name && !st.named) {
      st.named = true;
      st.named_while_blocking = still_blocking;
      st.named_at_ms = r.value("blocked_ms", 0.0);
    }
  }
  std::printf("%s\n", line.c_str());
}

void on_stall_end(Demo *d, const nlohmann::json &r) {
  const uint64_t id = r.value("stall_id", uint64_t(0));
  const double ms = r.value("duration_ms", 0.0);
  std::lock_guard<std::mutex> lock(d->mu);
  auto it = d->stall_step.find(id);
  if (it != d->stall_step.end() && it->second >= 0) d->steps[size_t(it->second)].duration_ms = ms;
  ++d->ended;
  std::printf("stall #%llu on %s ended: the loop was blocked for %.3f ms\n",
              static_cast<unsigned long long>(id), r.value("loop", std::string("?")).c_str(), ms);
  d->cv.notify_all();
}

// uvstall's writer thread: one JSON record per call.
void on_report(const char *json, size_t len, void *arg) {
  auto *d = static_cast<Demo *>(arg);
  const nlohmann::json r = nlohmann::json::parse(json, json + len, nullptr, false);
  if (r.is_discarded() || !r.is_object()) return;
  const std::string type = r.value("type", std::string());
  if (type == "stall") on_stall(d, r);
  else if (type == "stall_end") on_stall_end(d, r);
}

// ---------------------------------------------------------------------------
// The loop's work.

void on_tick(uv_timer_t *t) {
  auto *d = static_cast<Demo *>(t->data);
  const uint64_t now = now_ns();
  if (d->last_tick_ns != 0) {
    const double late = double(now - d->last_tick_ns) / 1e6 - kTickMs;
    if (late > d->max_late_ms) d->max_late_ms = late;
    const int s = d->current_step.load();
    if (s >= 0) {
      std::lock_guard<std::mutex> lock(d->mu);
      Step &st = d->steps[size_t(s)];
      if (late > st.timer_late_ms) st.timer_late_ms = late;
    }
  }
  d->last_tick_ns = now;
}

void on_closed(uv_handle_t *) {}

void finish(Demo *d) {
  uv_timer_stop(&d->tick);
  uv_close(reinterpret_cast<uv_handle_t *>(&d->tick), on_closed);
  uv_close(reinterpret_cast<uv_handle_t *>(&d->step_timer), on_closed);
  int rc = uvstall_stop(d->watch);
  if (rc != 0) std::fprintf(stderr, "uvstall-demo: uvstall_stop: %s\n", uvstall_strerror(rc));
  d->watch = nullptr;
}

void on_step(uv_timer_t *t) {
  auto *d = static_cast<Demo *>(t->data);
  if (d->next_step >= d->steps.size()) {
    finish(d);
    return;
  }
  const size_t i = d->next_step++;
  {
    std::lock_guard<std::mutex> lock(d->mu);
    std::printf("\n-> %s: %s, on the loop thread\n", d->steps[i].name,
                d->steps[i].what.c_str());
  }
  d->current_step.store(int(i));
  d->blocking.store(true);
  const uint64_t t0 = now_ns();
  long result = 0;
  switch (i) {
    case 0: result = demo_sleep_in_callback(kCulpritMs); break;
    case 1: result = demo_sync_http_request(d->server.port()); break;
    case 2: result = long(demo_parse_big_json(d->json_text)); break;
    case 3: result = demo_read_file_sync(d->file_path.c_str(), d->copy_path.c_str()); break;
  }
  const double took = ms_since(t0);
  d->blocking.store(false);
  {
    std::lock_guard<std::mutex> lock(d->mu);
    d->steps[i].took_ms = took;
  }
  if (result < 0) d->culprit_failed = true;
  {
    std::lock_guard<std::mutex> lock(d->mu);
    std::printf("   %s returned after %.1f ms%s\n", d->steps[i].name, took,
                result < 0 ? " (and FAILED)" : "");
  }
  // libuv's clock still says "before the culprit": without this update the
  // next step would be due at once instead of kGapMs from now.
  uv_update_time(&d->loop);
  uv_timer_start(&d->step_timer, on_step, kGapMs, 0);
}

void remove_temp(Demo *d, const std::string &dir) {
  if (!d->file_path.empty()) unlink(d->file_path.c_str());
  if (!d->copy_path.empty()) unlink(d->copy_path.c_str());
  if (!dir.empty()) rmdir(dir.c_str());
}

int usage(FILE *to, const char *argv0, int status) {
  std::fprintf(to,
               "usage: %s [--output FILE]\n"
               "  Blocks a libuv loop four ways and prints what uvstall reports.\n"
               "  --output FILE  also append uvstall's JSON Lines records to FILE\n",
               argv0);
  return status;
}

}  // namespace

int main(int argc, char **argv) {
  const char *output = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--output") == 0 && i + 1 < argc) output = argv[++i];
    else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0)
      return usage(stdout, argv[0], 0);
    else return usage(stderr, argv[0], 2);
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  // Shared with on_report (uvstall's writer thread) until uvstall_stop.
  auto *d = new Demo;
  d->steps = {
      {"demo_sleep_in_callback", "sleeping 300 ms"},
      {"demo_sync_http_request", "a blocking request to a local server that takes 300 ms to answer"},
      {"demo_parse_big_json", "parsing a big JSON document"},
      {"demo_read_file_sync", "reading a big file with read() and writing a copy with fsync()"},
  };

  std::printf(
      "uvstall-demo: this program blocks its own libuv loop four times on purpose; each "
      "\"stall\" line is uvstall naming the blocking function (once it has blocked for "
      "%u ms) while it still blocks, and a 10 ms timer shows what a plain watchdog sees.\n",
      unsigned(kThresholdMs));

  // Set-up, before the loop runs.
  // /var/tmp rather than $TMPDIR or /tmp: those are often tmpfs, where
  // fsync() costs nothing and culprit 4 would not block.
  std::string dir = "/var/tmp/uvstall-demo.XXXXXX";
  if (mkdtemp(&dir[0]) == nullptr) {
    const char *tmp = std::getenv("TMPDIR");
    dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/uvstall-demo.XXXXXX";
    if (mkdtemp(&dir[0]) == nullptr) {
      std::fprintf(stderr, "uvstall-demo: cannot create a temporary directory %s: %s\n",
                   dir.c_str(), std::strerror(errno));
      return 1;
    }
  }
  d->file_path = dir + "/big.dat";
  d->copy_path = dir + "/big-copy.dat";
  const size_t file_bytes = write_calibrated_file(d->file_path);
  if (file_bytes == 0) {
    std::fprintf(stderr, "uvstall-demo: cannot write %s: %s\n", d->file_path.c_str(),
                 std::strerror(errno));
    remove_temp(d, dir);
    return 1;
  }
  d->steps[3].what = "reading a " + std::to_string(file_bytes >> 20) +
                     " MB file with read() and writing a copy with write() + fsync()";
  d->json_text = make_calibrated_json();
  d->steps[2].what =
      "parsing a " + std::to_string(d->json_text.size() >> 20) + " MB JSON document";
  if (!d->server.start()) {
    std::fprintf(stderr, "uvstall-demo: cannot start the local server: %s\n", std::strerror(errno));
    remove_temp(d, dir);
    return 1;
  }

  uv_loop_init(&d->loop);
  uvstall_options_t opts;
  uvstall_options_init(&opts);
  opts.interval_ms = kIntervalMs;
  opts.threshold_ms = kThresholdMs;
  opts.on_report = on_report;
  opts.report_arg = d;
  opts.output_path = output;
  int rc = uvstall_start(&d->loop, &opts, &d->watch);
  if (rc != 0) {
    std::fprintf(stderr, "uvstall-demo: uvstall_start: %s\n", uvstall_strerror(rc));
    d->server.stop();
    remove_temp(d, dir);
    return 1;
  }

  uv_timer_init(&d->loop, &d->tick);
  d->tick.data = d;
  uv_timer_start(&d->tick, on_tick, kTickMs, kTickMs);
  uv_timer_init(&d->loop, &d->step_timer);
  d->step_timer.data = d;
  uv_timer_start(&d->step_timer, on_step, kGapMs, 0);
  uv_run(&d->loop, UV_RUN_DEFAULT);
  uv_run(&d->loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&d->loop) != 0) std::fprintf(stderr, "uvstall-demo: uv_loop_close failed\n");
  d->server.stop();
  remove_temp(d, dir);

  // Each stall's end is reported on the writer thread; wait (bounded) for
  // the last ones.
  std::unique_lock<std::mutex> lock(d->mu);
  d->cv.wait_for(lock, std::chrono::seconds(2),
                 [d] { return d->ended >= d->stall_step.size() && !d->stall_step.empty(); });

  std::printf("\nSummary\n");
  std::printf("  %-24s %-16s %-22s %s\n", "culprit", "uvstall: stall", "named by uvstall",
              "10 ms timer: late by");
  bool all_named = true;
  size_t too_short = 0;
  for (const Step &st : d->steps) {
    char dur[32], named[48];
    if (st.duration_ms >= 0) std::snprintf(dur, sizeof dur, "%.1f ms", st.duration_ms);
    else if (st.stall_id != 0) std::snprintf(dur, sizeof dur, "(no end)");
    else std::snprintf(dur, sizeof dur, "none (%.0f ms)", st.took_ms);
    if (st.named_while_blocking)
      std::snprintf(named, sizeof named, "yes, at %.0f ms", st.named_at_ms);
    else
      std::snprintf(named, sizeof named, "%s", st.named ? "yes, afterwards" : "NO");
    std::printf("  %-24s %-16s %-22s %.0f ms\n", st.name, dur, named, st.timer_late_ms);
    if (!st.named && st.took_ms < kMustNameMs) ++too_short;
    else all_named = all_named && st.named;
  }
  std::printf(
      "\nA watchdog timer alone sees only this: the 10 ms timer was at most %.0f ms late. "
      "It knows the loop stalled, not who stalled it.\n",
      d->max_late_ms);
  if (d->unexpected > 0)
    std::printf("(%zu stall(s) happened outside the four culprits.)\n", d->unexpected);
  if (too_short > 0)
    std::printf("(%zu culprit(s) blocked for less than %.0f ms this time: too short to be sure "
                "of a stall, so not counted.)\n",
                too_short, kMustNameMs);
  if (d->culprit_failed) std::printf("FAIL: a culprit could not do its work (see above)\n");
  if (!all_named) std::printf("FAIL: uvstall did not name every culprit\n");
  const int status = all_named && !d->culprit_failed ? 0 : 1;
  // uvstall_stop has returned: on_report is not called any more.
  lock.unlock();
  delete d;
  return status;
}
