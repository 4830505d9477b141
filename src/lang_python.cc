// Interpreter frames for CPython hosts ("lang_frames"): the Python stack of a
// stalled loop thread, read from the sentinel while the thread is blocked.
//
// How: the way CPython's faulthandler.dump_traceback_later does it from its
// watchdog thread. CPython's traceback dumper, _Py_DumpTraceback(fd, tstate),
// walks a thread state's frames without the GIL, without allocating and
// without locks, writing text to a file descriptor; we give it the write end
// of a non-blocking pipe and parse what it wrote. Everything is found at run
// time with dlsym(RTLD_DEFAULT): libpython is never linked, and a host that
// is not CPython has none of these symbols (and hears nothing from us).
//
// Limits, the same as faulthandler's:
//   - The frames of a thread that runs Python code while they are read may
//     be read half-updated (the dumper follows pointers the thread is
//     changing). A thread blocked in C (time.sleep, read, a C parser) does
//     not change its frames. The tstate is checked to be still in its
//     interpreter's list before each dump, and nothing is read once the
//     interpreter is finalizing.
//   - Only CPython 3.11 is read (the dumper's text and the symbols we need
//     are checked against 3.11); other versions get native frames only,
//     said once on stderr at the first start.
//   - The thread must have a Python thread state when its watch starts
//     (every thread that runs Python code has one; in preload mode, the first
//     uv_run of a uvloop loop is always from Python). A thread without one
//     gets no lang_frames.
//   - Strings are the dumper's: non-ASCII characters come back decoded from
//     its \xNN, \uNNNN, \UNNNNNNNN escapes; names longer than 500 characters
//     end in "..."; at most 100 frames.
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "lang_python.h"
#include "watch.h"

namespace uvstall::internal {
namespace {

// At most this much dumper output is read per stall (100 frames of two
// 500-character names fit).
constexpr size_t kMaxDumpBytes = 256 * 1024;
// Pipe capacity asked for: the dumper must never meet a full pipe.
constexpr int kPipeBytes = 512 * 1024;
// A thread list longer than this is not walked further (a cycle read while
// the list changes must not loop forever).
constexpr int kMaxThreadStates = 100000;

struct Python {
  void (*dump)(int fd, void *tstate);
  void *(*this_thread_state)();
  void *(*interp_of)(void *tstate);
  void *(*thread_head)(void *interp);
  void *(*thread_next)(void *tstate);
  int (*is_initialized)();
  int (*is_finalizing)();
};

template <typename F>
bool sym(const char *name, F *out) {
  *out = reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
  return *out != nullptr;
}

void say_once(const std::string &why) {
  static std::atomic<bool> said{false};
  if (said.exchange(true)) return;
  const std::string line = "uvstall: no lang_frames: " + why + " (native frames still work)\n";
  ssize_t n = write(STDERR_FILENO, line.data(), line.size());
  (void)n;
}

// The interpreter's functions, or null for a host that is not CPython 3.11.
const Python *python() {
  static const Python *const py = []() -> const Python * {
    const char *(*version)() = nullptr;
    if (!sym("Py_GetVersion", &version)) return nullptr;  // not CPython: silent
    const char *v = version();
    if (v == nullptr || std::strncmp(v, "3.11.", 5) != 0) {
      const std::string ver = v == nullptr ? "?" : std::string(v, strcspn(v, " "));
      say_once("CPython " + ver + " is not 3.11, the only version uvstall reads");
      return nullptr;
    }
    static Python p;
    if (!sym("_Py_DumpTraceback", &p.dump) ||
        !sym("PyGILState_GetThisThreadState", &p.this_thread_state) ||
        !sym("PyThreadState_GetInterpreter", &p.interp_of) ||
        !sym("PyInterpreterState_ThreadHead", &p.thread_head) ||
        !sym("PyThreadState_Next", &p.thread_next) ||
        !sym("Py_IsInitialized", &p.is_initialized) ||
        !sym("_Py_IsFinalizing", &p.is_finalizing)) {
      say_once("this CPython 3.11 does not export _Py_DumpTraceback and the thread-state functions");
      return nullptr;
    }
    return &p;
  }();
  return py;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string *out, uint32_t cp) {
  if (cp < 0x80) {
    *out += char(cp);
  } else if (cp < 0x800) {
    *out += char(0xC0 | (cp >> 6));
    *out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += char(0xE0 | (cp >> 12));
    *out += char(0x80 | ((cp >> 6) & 0x3F));
    *out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x110000) {
    *out += char(0xF0 | (cp >> 18));
    *out += char(0x80 | ((cp >> 12) & 0x3F));
    *out += char(0x80 | ((cp >> 6) & 0x3F));
    *out += char(0x80 | (cp & 0x3F));
  } else {
    *out += "\xEF\xBF\xBD";
  }
}

}  // namespace

// Undoes the dumper's escapes of non-ASCII characters (\xNN, \uNNNN,
// \UNNNNNNNN); a backslash not followed by a full escape is kept.
std::string python_unescape(const std::string &s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char k = s[i + 1];
      const size_t n = k == 'x' ? 2 : k == 'u' ? 4 : k == 'U' ? 8 : 0;
      if (n != 0 && i + 2 + n <= s.size()) {
        uint32_t cp = 0;
        bool ok = true;
        for (size_t j = 0; j < n && ok; ++j) {
          const int h = hex_value(s[i + 2 + j]);
          ok = h >= 0;
          cp = cp * 16 + uint32_t(h < 0 ? 0 : h);
        }
        if (ok) {
          append_utf8(&out, cp);
          i += 1 + n;
          continue;
        }
      }
    }
    out += s[i];
  }
  return out;
}

// Parses _Py_DumpTraceback's text ("Stack (most recent call first):" then
// lines `  File "F", line N in NAME`) into lang_frames, innermost first.
// Lines it does not know ("  <no Python frame>", "  ...") are skipped.
nlohmann::ordered_json parse_python_traceback(const std::string &text) {
  nlohmann::ordered_json frames = nlohmann::ordered_json::array();
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) break;  // a cut last line is dropped
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    static const std::string kFile = "  File ";
    if (line.compare(0, kFile.size(), kFile) != 0) continue;
    std::string rest = line.substr(kFile.size());
    nlohmann::ordered_json file;
    size_t after;
    if (rest.size() > 1 && rest[0] == '"') {
      const size_t q = rest.rfind("\", line ");
      if (q == std::string::npos || q == 0) continue;
      file = python_unescape(rest.substr(1, q - 1));
      after = q + 8;
    } else if (rest.compare(0, 10, "???, line ") == 0) {
      after = 10;
    } else {
      continue;
    }
    const size_t in = rest.find(" in ", after);
    if (in == std::string::npos) continue;
    const std::string num = rest.substr(after, in - after);
    nlohmann::ordered_json lineno;
    if (!num.empty() && num.find_first_not_of("0123456789") == std::string::npos &&
        num.size() < 10)
      lineno = std::stoi(num);
    const std::string name = rest.substr(in + 4);
    nlohmann::ordered_json f;
    f["lang"] = "python";
    f["function"] = name == "???" ? nlohmann::ordered_json() : nlohmann::ordered_json(python_unescape(name));
    f["file"] = file;
    f["line"] = lineno;
    frames.push_back(std::move(f));
  }
  return frames;
}

namespace {

class PythonFrames : public LangFrames {
 public:
  PythonFrames(const Python *py, void *tstate, void *interp)
      : py_(py), tstate_(tstate), interp_(interp) {}
  ~PythonFrames() override {
    if (fds_[0] >= 0) close(fds_[0]);
    if (fds_[1] >= 0) close(fds_[1]);
  }

  nlohmann::ordered_json dump() override {
    if (!py_->is_initialized() || py_->is_finalizing()) return nullptr;
    if (!thread_state_alive()) return nullptr;
    // The pipe is made at the first stall, so a host that never stalls
    // sees no file descriptors of ours.
    if (fds_[0] < 0) {
      if (pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
        fds_[0] = fds_[1] = -1;
        return nullptr;
      }
      fcntl(fds_[1], F_SETPIPE_SZ, kPipeBytes);
    }
    drain(nullptr);
    py_->dump(fds_[1], tstate_);
    std::string text;
    drain(&text);
    nlohmann::ordered_json frames = parse_python_traceback(text);
    if (frames.empty()) return nullptr;
    return frames;
  }

 private:
  // The thread state may have been freed by a thread that exited: dump
  // only one that is still in its interpreter's list.
  bool thread_state_alive() const {
    void *ts = py_->thread_head(interp_);
    for (int i = 0; ts != nullptr && i < kMaxThreadStates; ++i) {
      if (ts == tstate_) return true;
      ts = py_->thread_next(ts);
    }
    return false;
  }

  // Reads what the pipe holds (into out, up to kMaxDumpBytes; the rest is
  // discarded). Never blocks: the pipe is non-blocking.
  void drain(std::string *out) {
    char buf[16384];
    for (;;) {
      const ssize_t n = read(fds_[0], buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      if (out != nullptr && out->size() < kMaxDumpBytes)
        out->append(buf, std::min(size_t(n), kMaxDumpBytes - out->size()));
    }
  }

  const Python *py_;
  void *tstate_;
  void *interp_;
  int fds_[2] = {-1, -1};
};

}  // namespace

std::shared_ptr<LangFrames> lang_frames_for_current_thread() {
  const Python *py = python();
  if (py == nullptr) return nullptr;
  void *tstate = py->this_thread_state();
  if (tstate == nullptr) return nullptr;
  void *interp = py->interp_of(tstate);
  if (interp == nullptr) return nullptr;
  try {
    return std::make_shared<PythonFrames>(py, tstate, interp);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace uvstall::internal
