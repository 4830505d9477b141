// The CPython frames provider ("lang_frames"): the Python stack of a
// stalled loop thread, read by the sentinel while the thread is stalled,
// with src/python_reader.cc's no-fault reader (process_vm_readv on this
// process, a layout table per CPython minor version, type-checked objects).
//
// Contract:
//   - At watch start, on the loop thread, and only then, this calls the
//     interpreter: Py_GetVersion, PyGILState_GetThisThreadState (the
//     thread's own state), PyThreadState_GetInterpreter (3.9+) or
//     PyInterpreterState_Main (3.8); and dlsym(RTLD_DEFAULT) for the type
//     objects. None of these needs the GIL. libpython is never linked; a
//     host without Py_GetVersion is not CPython and hears nothing from us.
//   - The reader is refused, with a reason that every stall record of the
//     watch carries ("lang_reason") and one line on stderr, when: the
//     version has no layout table (3.8 to 3.13 have one), the build is a
//     debug (Py_DEBUG) or free-threaded one, a type object is not exported,
//     3.13's _Py_DebugOffsets (at the start of _PyRuntime) disagree with the
//     table, or the start-time self-check fails: the calling thread's own
//     chain, read the way the sentinel will read it, must type-check, belong
//     to the expected interpreter and thread id.
//   - At stall time nothing of the interpreter is called: no GIL, no call,
//     no allocation by it; a thread that runs Python code while it is read
//     gets fewer or no frames and a reason, never a crash or a wrong frame.
//   - CPython's own _Py_DumpTraceback (faulthandler's dumper, used before
//     issue 15) is not kept as a fallback: it dereferences the frames in
//     process, so a thread that changes them while they are read can crash
//     the host; the no-fault reader covers the threads blocked in C as well.
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "clock.h"
#include "private_api.h"
#include "python_reader.h"
#include "watch.h"

namespace uvstall::internal {
namespace {

constexpr const char *kReader = "cpython-nofault";

template <typename F>
F sym(const char *name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}
uintptr_t addr_of(const char *name) { return reinterpret_cast<uintptr_t>(dlsym(RTLD_DEFAULT, name)); }

void say_once(const std::string &why) {
  static std::atomic<bool> said{false};
  if (said.exchange(true)) return;
  const std::string line = "uvstall: no lang_frames: " + why + " (native frames still work)\n";
  ssize_t n = write(STDERR_FILENO, line.data(), line.size());
  (void)n;
}

// What the process's interpreter is, found once.
struct Python {
  std::string version;      // "3.12.1"
  const PyLayout *layout = nullptr;
  PyTypes types;
  std::string reader;       // the record's lang_reader
  std::string refused;      // empty: the reader may be used
  void *(*this_thread_state)() = nullptr;
  void *(*interp_of)(void *tstate) = nullptr;  // 3.9+
  void *(*main_interp)() = nullptr;           // 3.8
};

// 3.13's _Py_DebugOffsets, the fields we read, as uint64 indexes into the
// struct (Include/internal/pycore_runtime.h of 3.13.0): cookie[8], version,
// free_threaded, runtime_state{size, finalizing, interpreters_head},
// interpreter_state{13 fields}, thread_state{size, prev, next, interp,
// current_frame, thread_id, ...}, interpreter_frame{size, previous,
// executable, instr_ptr, localsplus, owner}, code_object{size, filename,
// name, qualname, linetable, firstlineno, argcount, localsplusnames,
// localspluskinds, co_code_adaptive}, pyobject{size, ob_type}, ...
std::string check_debug_offsets(const PyLayout &l) {
  const uintptr_t rt = addr_of("_PyRuntime");
  if (rt == 0) return "_PyRuntime is not exported";
  uint64_t d[64];
  if (python_read(rt, d, sizeof d) != sizeof d) return "_PyRuntime is not readable";
  if (std::memcmp(d, "xdebugpy", 8) != 0) return "_PyRuntime has no _Py_DebugOffsets cookie";
  if (d[2] != 0) return "_Py_DebugOffsets says free-threaded";
  constexpr int kTs = 3 + 3 + 13, kFr = kTs + 9, kCo = kFr + 6, kOb = kCo + 10;
  const struct {
    const char *name;
    uint64_t debug, table;
  } checks[] = {
      {"thread_state.interp", d[kTs + 3], l.ts_interp},
      {"thread_state.current_frame", d[kTs + 4], l.ts_frame},
      {"thread_state.thread_id", d[kTs + 5], l.ts_thread_id},
      {"interpreter_frame.previous", d[kFr + 1], l.fr_back},
      {"interpreter_frame.executable", d[kFr + 2], l.fr_code},
      {"interpreter_frame.instr_ptr", d[kFr + 3], l.fr_instr},
      {"interpreter_frame.owner", d[kFr + 5], l.fr_owner},
      {"code_object.filename", d[kCo + 1], l.co_filename},
      {"code_object.name", d[kCo + 2], l.co_name},
      {"code_object.qualname", d[kCo + 3], l.co_qualname},
      {"code_object.linetable", d[kCo + 4], l.co_lines},
      {"code_object.firstlineno", d[kCo + 5], l.co_firstlineno},
      {"code_object.co_code_adaptive", d[kCo + 9], l.co_code_adaptive},
      {"pyobject.ob_type", d[kOb + 1], l.ob_type},
  };
  for (const auto &c : checks)
    if (c.debug != c.table)
      return std::string("_Py_DebugOffsets ") + c.name + " = " + std::to_string(c.debug) +
             ", the table has " + std::to_string(c.table);
  return "";
}

const Python *python() {
  static const Python *const py = []() -> const Python * {
    const auto version = sym<const char *(*)()>("Py_GetVersion");
    if (version == nullptr) return nullptr;  // not CPython: silent
    static Python p;
    const char *v = version();
    p.version = v == nullptr ? "?" : std::string(v, std::strcspn(v, " "));
    p.reader = kReader;
    int major = 0, minor = 0;
    if (std::sscanf(p.version.c_str(), "%d.%d", &major, &minor) != 2) {
      p.refused = "CPython version " + p.version + " is not one uvstall understands";
      return &p;
    }
    p.layout = python_layout(major, minor);
    if (p.layout == nullptr) {
      p.refused = "CPython " + p.version + " has no layout table (3.8 to 3.13 are read)";
      return &p;
    }
    p.reader += " " + p.version + " (table " + std::to_string(major) + "." + std::to_string(minor);
    if (v != nullptr && std::strstr(v, "free-threading") != nullptr) {
      p.refused = "CPython " + p.version + " is a free-threaded build, whose object and frame layouts are not tabled";
      return &p;
    }
    if (addr_of("_Py_RefTotal") != 0 || addr_of("_Py_GetRefTotal") != 0 ||
        addr_of("_Py_GetGlobalRefTotal") != 0) {
      p.refused = "CPython " + p.version + " is a debug build (Py_DEBUG), whose layouts are not tabled";
      return &p;
    }
    p.types.code = addr_of("PyCode_Type");
    p.types.unicode = addr_of("PyUnicode_Type");
    p.types.bytes = addr_of("PyBytes_Type");
    if (p.layout->chain == kFrameObject) p.types.frame = addr_of("PyFrame_Type");
    const uintptr_t type_type = addr_of("PyType_Type");
    p.this_thread_state = sym<void *(*)()>("PyGILState_GetThisThreadState");
    p.interp_of = sym<void *(*)(void *)>("PyThreadState_GetInterpreter");
    p.main_interp = sym<void *(*)()>("PyInterpreterState_Main");
    if (p.types.code == 0 || p.types.unicode == 0 || p.types.bytes == 0 || type_type == 0 ||
        (p.layout->chain == kFrameObject && p.types.frame == 0) || p.this_thread_state == nullptr ||
        (p.interp_of == nullptr && p.main_interp == nullptr)) {
      p.refused = "CPython " + p.version + " does not export the type objects and thread-state functions the reader needs";
      return &p;
    }
    // The object header: a type object's own type is PyType_Type (a build
    // with another header, Py_TRACE_REFS say, fails here), and the read
    // itself works (process_vm_readv may be forbidden by a seccomp policy).
    uintptr_t t = 0;
    if (python_read(p.types.code + p.layout->ob_type, &t, sizeof t) != sizeof t) {
      p.refused = std::string("process_vm_readv on this process failed: ") + std::strerror(errno);
      return &p;
    }
    if (t != type_type) {
      p.refused = "CPython " + p.version + ": PyCode_Type's header is not the table's (another object header?)";
      return &p;
    }
    if (p.layout->chain == kCurrentFrame) {
      const std::string bad = check_debug_offsets(*p.layout);
      if (!bad.empty()) {
        p.refused = "CPython " + p.version + ": " + bad;
        return &p;
      }
      p.reader += ", _Py_DebugOffsets agree";
    }
    p.reader += ")";
    return &p;
  }();
  return py;
}

nlohmann::ordered_json frames_json(const PyWalk &w) {
  if (w.frames.empty()) return nullptr;
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const PyFrameRead &f : w.frames) {
    nlohmann::ordered_json j;
    j["lang"] = "python";
    j["function"] = f.function.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(f.function);
    j["file"] = f.file.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(f.file);
    j["line"] = f.line < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(f.line);
    out.push_back(std::move(j));
  }
  return out;
}

class PythonFrames : public LangFrames {
 public:
  PythonFrames(const Python *py, uintptr_t tstate, uintptr_t interp, uint64_t thread_id)
      : py_(py), tstate_(tstate), interp_(interp), thread_id_(thread_id) {}

  LangSample dump() override {
    const PyWalk w = python_walk(*py_->layout, py_->types, tstate_, interp_, thread_id_,
                                 kMaxPythonFrames, &cache_);
    LangSample s;
    s.frames = frames_json(w);
    s.reader = py_->reader;
    s.reason = w.reason;
    if (s.frames.is_null() && s.reason.empty()) s.reason = "the thread runs no Python code";
    return s;
  }

 private:
  const Python *py_;
  uintptr_t tstate_, interp_;
  uint64_t thread_id_;
  PyCodeCache cache_;  // the sentinel's alone (dump is never concurrent)
};

// A provider that reads nothing, for a CPython uvstall cannot read: every
// record then says which reader refused and why.
class RefusedFrames : public LangFrames {
 public:
  RefusedFrames(std::string reader, std::string reason)
      : reader_(std::move(reader)), reason_(std::move(reason)) {}
  LangSample dump() override {
    LangSample s;
    s.reader = reader_;
    s.reason = reason_;
    return s;
  }

 private:
  std::string reader_, reason_;
};

std::shared_ptr<LangFrames> refuse(const Python *py, const std::string &why) {
  say_once(why);
  return std::make_shared<RefusedFrames>(py->reader, why);
}

}  // namespace

void lang_python_warm() {
  try {
    (void)python();
  } catch (...) {
  }
}

std::shared_ptr<LangFrames> lang_frames_for_current_thread() {
  try {
    const Python *py = python();
    if (py == nullptr) return nullptr;
    if (!py->refused.empty()) return refuse(py, py->refused);
    void *tstate = py->this_thread_state();
    if (tstate == nullptr)
      return refuse(py, "the loop thread had no Python thread state when its watch started");
    void *interp = py->interp_of != nullptr ? py->interp_of(tstate) : py->main_interp();
    const uint64_t tid = uint64_t(pthread_self());
    // The self-check: this thread's chain, read now as the sentinel will
    // read it (this thread is in C, so its chain holds still).
    const PyWalk w = python_walk(*py->layout, py->types, uintptr_t(tstate), uintptr_t(interp), tid);
    if (!w.reason.empty() && w.frames.size() < kMaxPythonFrames)
      return refuse(py, "CPython " + py->version + ": the start-time check of the loop thread's frames failed: " + w.reason);
    return std::make_shared<PythonFrames>(py, uintptr_t(tstate), uintptr_t(interp), tid);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace uvstall::internal

// ---- Private export (src/private_api.h) ----
extern "C" int uvstall__lang_frames_bench(int iterations, double *first_ns, double *ns_per_read,
                                          int *frames) {
  using namespace uvstall::internal;
  const std::shared_ptr<LangFrames> lang = lang_frames_for_current_thread();
  if (lang == nullptr || iterations <= 0) return -1;
  const uint64_t t = mono_ns();
  LangSample s = lang->dump();
  *first_ns = double(mono_ns() - t);
  const uint64_t t0 = mono_ns();
  for (int i = 0; i < iterations; ++i) s = lang->dump();
  const uint64_t t1 = mono_ns();
  if (!s.frames.is_array()) return -1;
  *ns_per_read = double(t1 - t0) / iterations;
  *frames = int(s.frames.size());
  return 0;
}
