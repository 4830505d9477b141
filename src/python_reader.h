// The no-fault reader of CPython frame chains (src/python_reader.cc): the
// layout tables it trusts and the walk, with the layout and the type
// addresses passed in so that tests drive it on fake memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace uvstall::internal {

// How a thread state leads to its innermost frame.
enum PyFrameChain : uint8_t {
  kFrameObject,   // 3.8-3.10: tstate->frame, a PyFrameObject chain (f_back)
  kCFrame,        // 3.11-3.12: tstate->cframe->current_frame, _PyInterpreterFrame
  kCurrentFrame,  // 3.13: tstate->current_frame, _PyInterpreterFrame
};
// How a code object maps an instruction to a line.
enum PyLineFormat : uint8_t {
  kLnotab,        // 3.8-3.9 co_lnotab: (address delta, signed line delta) pairs
  kLinetable310,  // 3.10 co_linetable: the same pairs, -128 = no line
  kLocations,     // 3.11+ co_linetable: the location table (Objects/locations.md)
};

// Byte offsets of every field the reader reads, for one CPython minor
// version (a release build; x86-64 and aarch64 Linux share them). The order
// is tools/pylayout.c's, which prints the rows of src/python_layouts.inc.
struct PyLayout {
  int major, minor;
  PyFrameChain chain;
  uint32_t ts_interp, ts_thread_id, ts_frame;  // ts_frame: frame, cframe or current_frame
  uint32_t ts_size;
  uint32_t cframe_current_frame;               // kCFrame only
  uint32_t fr_size, fr_back, fr_code, fr_instr;  // fr_instr: f_lasti, prev_instr or instr_ptr
  uint32_t fr_owner;                           // a char; 0 for kFrameObject (not read)
  int fr_owner_cstack;                         // the owner value of C-stack shims, -1: none
  uint32_t co_size;                            // bytes of the code object read (fixed part)
  uint32_t co_filename, co_name, co_qualname;  // co_qualname 0: none (before 3.11)
  uint32_t co_firstlineno, co_lines;           // co_lines: co_lnotab or co_linetable
  uint32_t co_code_adaptive;                   // 3.11+: the instructions, inside the object
  PyLineFormat lines;
  uint32_t ob_type, ob_size, bytes_sval;
  uint32_t str_length, str_state, str_ascii_size, str_compact_size;
  int str_kind_shift, str_compact_bit, str_ascii_bit;
};

// The table for major.minor, or null.
const PyLayout *python_layout(int major, int minor);

// Addresses of the type objects a read object must point at.
struct PyTypes {
  uintptr_t code = 0, unicode = 0, bytes = 0;
  uintptr_t frame = 0;  // PyFrame_Type: checked for 3.8-3.10's frame objects; 0: not checked
};

struct PyFrameRead {
  std::string function;  // empty: unknown
  std::string file;      // empty: unknown
  int line = -1;         // -1: unknown
};

struct PyWalk {
  std::vector<PyFrameRead> frames;  // innermost first
  // Empty when the chain was read to its end and did not move while read;
  // otherwise why frames are missing (frames then holds those read
  // before the problem, or none).
  std::string reason;
};

// At most this many frames are read; a longer chain says so in reason.
constexpr size_t kMaxPythonFrames = 100;
// Names and file names longer than this many characters end in "...".
constexpr size_t kMaxPythonNameChars = 500;

// Names, file names and line tables of the code objects met, by address,
// so that a stall sampled again does not read them again (the code object
// itself is read and compared each time). Owned by one reader; not
// thread-safe.
struct CodeInfo;
class PyCodeCache {
 public:
  PyCodeCache();
  ~PyCodeCache();
  CodeInfo *find(uintptr_t code);
  // An entry for code (new or reused); never frees another one, so the
  // pointers a walk holds stay valid until its end.
  CodeInfo *put(uintptr_t code);
  // Before a walk that may put up to `n` entries: starts again (frees every
  // entry) when they would not fit, in count or in bytes kept.
  void make_room(size_t n);
  size_t size() const { return map_.size(); }

  static constexpr size_t kMaxEntries = 4096;
  static constexpr size_t kMaxBytes = size_t(4) << 20;  // names, file names, line tables

 private:
  std::unordered_map<uintptr_t, std::unique_ptr<CodeInfo>> map_;
};

// Walks the frame chain of the thread state at tstate. Every read goes
// through process_vm_readv on this process, so no address can fault;
// nothing of the interpreter's is called. expect_interp and expect_thread_id
// (0: unchecked) are compared with the thread state's fields first.
PyWalk python_walk(const PyLayout &l, const PyTypes &t, uintptr_t tstate,
                   uintptr_t expect_interp, uint64_t expect_thread_id,
                   size_t max_frames = kMaxPythonFrames, PyCodeCache *cache = nullptr);

// Reads n bytes at addr of this process without faulting; the number of
// bytes read (fewer when part of the range is not mapped readable).
size_t python_read(uintptr_t addr, void *out, size_t n);

// Line of the instruction at byte offset addr, from a line table in the
// given format (the decoders python_walk uses); -1 when the table has no
// line for it.
int python_line(PyLineFormat f, const uint8_t *table, size_t n, int firstlineno, long addr);

}  // namespace uvstall::internal
