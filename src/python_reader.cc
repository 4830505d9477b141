// The no-fault reader of CPython frame chains: the Python stack of a loop
// thread, read by the sentinel while that thread is stalled — and possibly
// still running, changing the very frames being read.
//
// Contract:
//   - Reads only through process_vm_readv(2) on this process: a wrong
//     address (freed, unmapped, PROT_NONE) is a short read, never a fault.
//     Every read has a fixed upper size; every loop has a fixed bound
//     (frames, string lengths, line table bytes). Pointers are checked for
//     alignment before they are followed, and a cycle ends the walk.
//   - Calls nothing of the interpreter, takes no GIL and no lock, makes the
//     interpreter allocate nothing. It allocates itself (std::string,
//     std::vector): it runs on the sentinel thread, never in a signal handler.
//   - Trusts a layout only through the type checks below: a code object's
//     ob_type must be the address of PyCode_Type, a name's PyUnicode_Type, a
//     line table's PyBytes_Type. What fails a check ends the walk there with
//     a reason; nothing unchecked is reported as a frame.
//   - A running thread may push or pop frames while they are read. The head
//     of the chain (its address, code and caller) is read again after the
//     walk; if it moved, the walk is retried (kAttempts), and a chain that
//     keeps moving is reported as no frames with a reason rather than as a
//     mix of two moments. (Frames below the head do not change while they
//     are below it: CPython only pushes and pops at the head.)
#include "python_reader.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace uvstall::internal {
// The decoded parts of a code object, by its address. Valid only while the
// object still holds the same name, file name and line table objects (and
// first line): strs and bytes are immutable, so the same objects mean the
// same text. A code object freed and another made at its address that holds
// objects at the same three addresses, themselves freed and remade with other
// text, would fool it: accepted, as three coincidences at once.
struct CodeInfo {
  uintptr_t name = 0, file = 0, lines = 0;
  int first = 0;
  std::string function, filename;
  bool table_ok = false;
  std::vector<uint8_t> table;
};

namespace {

constexpr PyLayout kLayouts[] = {
#include "python_layouts.inc"
};

// Walks tried before a moving chain is given up.
constexpr int kAttempts = 4;
// Upper bounds of what one read may ask for.
constexpr size_t kMaxStructBytes = 512;             // a frame, a code object's fixed part
constexpr size_t kMaxLineTableBytes = 64 * 1024;    // co_lnotab / co_linetable
constexpr size_t kStrChunkBytes = 512;              // a string's header and its first bytes

bool aligned(uintptr_t p) { return p != 0 && (p & 7) == 0; }

template <typename T>
T field(const uint8_t *buf, uint32_t off) {
  T v;
  std::memcpy(&v, buf + off, sizeof v);
  return v;
}

void append_utf8(std::string *out, uint32_t cp) {
  if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;  // a lone surrogate: not UTF-8
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

// A str object as UTF-8 (compact ASCII, or compact with 1, 2 or 4 bytes a
// character). False when it is not a readable, consistent str.
// buf holds the got bytes read at addr (read_batch).
bool read_str(const PyLayout &l, const PyTypes &t, uintptr_t addr, const uint8_t *buf, size_t got,
              std::string *out) {
  // A short string near the end of a mapping: the ASCII header may be all there is.
  if (!aligned(addr) || got < l.str_ascii_size || got < l.ob_type + sizeof(uintptr_t) ||
      field<uintptr_t>(buf, l.ob_type) != t.unicode)
    return false;
  const int64_t length = field<int64_t>(buf, l.str_length);
  const uint32_t state = field<uint32_t>(buf, l.str_state);
  const uint32_t kind = (state >> l.str_kind_shift) & 7;
  const bool compact = (state >> l.str_compact_bit) & 1;
  const bool ascii = (state >> l.str_ascii_bit) & 1;
  if (length < 0 || !compact || (kind != 1 && kind != 2 && kind != 4) || (ascii && kind != 1))
    return false;
  const size_t chars = size_t(std::min<int64_t>(length, int64_t(kMaxPythonNameChars)));
  const size_t data = ascii ? l.str_ascii_size : l.str_compact_size;
  const size_t bytes = chars * kind;
  uint8_t big[kMaxPythonNameChars * 4];
  const uint8_t *p;
  if (data + bytes <= got) {
    p = buf + data;
  } else {
    if (python_read(addr + data, big, bytes) != bytes) return false;
    p = big;
  }
  out->clear();
  for (size_t i = 0; i < chars; ++i) {
    uint32_t cp = kind == 1 ? p[i] : kind == 2 ? field<uint16_t>(p, uint32_t(2 * i))
                                                : field<uint32_t>(p, uint32_t(4 * i));
    if (ascii && cp >= 0x80) return false;  // says ASCII, is not: not a str we know
    append_utf8(out, cp);
  }
  if (size_t(length) > chars) *out += "...";
  return true;
}

// A bytes object's contents (at most kMaxLineTableBytes); buf holds the
// got bytes read at addr (read_batch).
bool read_bytes(const PyLayout &l, const PyTypes &t, uintptr_t addr, const uint8_t *buf, size_t got,
                std::vector<uint8_t> *out) {
  if (!aligned(addr) || got < l.bytes_sval || got < l.ob_type + sizeof(uintptr_t) ||
      field<uintptr_t>(buf, l.ob_type) != t.bytes)
    return false;
  const int64_t size = field<int64_t>(buf, l.ob_size);
  if (size < 0 || size > int64_t(kMaxLineTableBytes)) return false;
  out->resize(size_t(size));
  if (l.bytes_sval + size_t(size) <= got) {
    std::memcpy(out->data(), buf + l.bytes_sval, size_t(size));
    return true;
  }
  return python_read(addr + l.bytes_sval, out->data(), size_t(size)) == size_t(size);
}

// The innermost frame's address (the chain's head), or false.
bool read_head(const PyLayout &l, uintptr_t tstate, uintptr_t *head) {
  uintptr_t p = 0;
  if (python_read(tstate + l.ts_frame, &p, sizeof p) != sizeof p) return false;
  if (l.chain == kCFrame) {
    if (p == 0) {  // no C frame: no Python frame
      *head = 0;
      return true;
    }
    if (!aligned(p)) return false;
    const uintptr_t cframe = p;
    if (python_read(cframe + l.cframe_current_frame, &p, sizeof p) != sizeof p) return false;
  }
  if (p != 0 && !aligned(p)) return false;
  *head = p;
  return true;
}

// What must not change while a chain is read: its head, and the head
// frame's code and caller (not its instruction pointer, which a thread in
// a pure-Python loop moves all the time). A frame popped and another pushed
// at the same address (3.11+ reuse their stack) changes the code or caller.
struct HeadMark {
  uintptr_t head = 0, code = 0, back = 0;
  bool operator==(const HeadMark &o) const { return head == o.head && code == o.code && back == o.back; }
};

bool read_mark(const PyLayout &l, uintptr_t tstate, HeadMark *m) {
  *m = HeadMark();
  if (!read_head(l, tstate, &m->head)) return false;
  if (m->head == 0) return true;
  // Unreadable fields stay 0: the walk says what is wrong with the frame.
  uint8_t fr[kMaxStructBytes];
  if (l.fr_size <= sizeof fr && python_read(m->head, fr, l.fr_size) == l.fr_size) {
    m->code = field<uintptr_t>(fr, l.fr_code);
    m->back = field<uintptr_t>(fr, l.fr_back);
  }
  return true;
}

// One frame of the chain, as phase 1 of a walk found it.
struct RawFrame {
  uintptr_t code;
  uintptr_t instr;  // prev_instr / instr_ptr (3.11+)
  int lasti;        // f_lasti (3.8-3.10)
};

// Reads objects of size bytes at addrs into out (addrs.size() * size
// bytes) with as few process_vm_readv calls as it can: one, unless an
// object is unreadable (the call stops there; the rest is read as another
// batch). got[i]: the bytes of object i read (fewer near an unmapped page).
void read_batch(const std::vector<uintptr_t> &addrs, size_t size, uint8_t *out,
                std::vector<size_t> *got) {
  const size_t n = addrs.size();
  got->assign(n, 0);
  std::vector<iovec> remote(n);
  for (size_t i = 0; i < n; ++i) remote[i] = {reinterpret_cast<void *>(addrs[i]), size};
  for (size_t i = 0; i < n;) {
    // IOV_MAX is 1024; at most 3 * kMaxPythonFrames objects are asked for.
    iovec local{out + i * size, (n - i) * size};
    const ssize_t r = process_vm_readv(getpid(), &local, 1, &remote[i], n - i, 0);
    const size_t bytes = r <= 0 ? 0 : size_t(r);
    const size_t whole = bytes / size;
    for (size_t k = 0; k < whole; ++k) (*got)[i + k] = size;
    if (i + whole < n) (*got)[i + whole] = bytes % size;  // where the call stopped
    i += whole + 1;
  }
}

// One walk from head; false with a reason when it stopped on a problem.
// Phase 1 follows the frames (one read each), phase 2 reads their code
// objects in one batch, phase 3 type-checks them and decodes names and
// lines (from the cache when the code object is unchanged).
bool walk_once(const PyLayout &l, const PyTypes &t, uintptr_t head, size_t max_frames,
               PyCodeCache *cache, PyWalk *w) {
  std::vector<uintptr_t> seen;
  std::vector<RawFrame> raw;
  uint8_t fr[kMaxStructBytes];
  bool ok = true;
  for (uintptr_t f = head; f != 0;) {
    if (raw.size() >= max_frames) {
      w->reason = "the stack is deeper than " + std::to_string(max_frames) + " frames: the innermost are shown";
      break;  // not a problem of the read: the frames are right
    }
    if (seen.size() > 4 * kMaxPythonFrames) {
      w->reason = "more than " + std::to_string(4 * kMaxPythonFrames) + " frames skipped";
      ok = false;
      break;
    }
    if (!aligned(f)) {
      w->reason = "a frame pointer is not aligned";
      ok = false;
      break;
    }
    if (std::find(seen.begin(), seen.end(), f) != seen.end()) {
      w->reason = "the frame chain has a cycle";
      ok = false;
      break;
    }
    seen.push_back(f);
    if (python_read(f, fr, l.fr_size) != l.fr_size) {
      w->reason = "a frame is not readable";
      ok = false;
      break;
    }
    const uintptr_t back = field<uintptr_t>(fr, l.fr_back);
    if (l.chain != kFrameObject && l.fr_owner_cstack >= 0 &&
        fr[l.fr_owner] == uint8_t(l.fr_owner_cstack)) {
      f = back;  // a shim the interpreter pushes for calls from C: no Python code
      continue;
    }
    if (l.chain == kFrameObject && t.frame != 0 && field<uintptr_t>(fr, l.ob_type) != t.frame) {
      w->reason = "a frame object fails its type check";
      ok = false;
      break;
    }
    RawFrame rf;
    rf.code = field<uintptr_t>(fr, l.fr_code);
    rf.instr = l.chain == kFrameObject ? 0 : field<uintptr_t>(fr, l.fr_instr);
    rf.lasti = l.chain == kFrameObject ? field<int32_t>(fr, l.fr_instr) : 0;
    raw.push_back(rf);
    f = back;
  }

  std::vector<uintptr_t> addrs(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) addrs[i] = raw[i].code;
  std::vector<uint8_t> codes(raw.size() * l.co_size);
  std::vector<size_t> got;
  read_batch(addrs, l.co_size, codes.data(), &got);
  // The code objects that type-check, up to the first that does not.
  size_t good = 0;
  while (good < raw.size() && aligned(raw[good].code) && got[good] == l.co_size &&
         field<uintptr_t>(codes.data() + good * l.co_size, l.ob_type) == t.code)
    ++good;
  // The names, file names and line tables of those not in the cache (or
  // changed), in one more batch.
  std::vector<CodeInfo *> infos(good);
  std::vector<CodeInfo> fresh(cache == nullptr ? good : 0);
  std::vector<size_t> missing;
  addrs.clear();
  for (size_t i = 0; i < good; ++i) {
    const uint8_t *co = codes.data() + i * l.co_size;
    const uintptr_t name = field<uintptr_t>(co, l.co_qualname != 0 ? l.co_qualname : l.co_name);
    const uintptr_t file = field<uintptr_t>(co, l.co_filename);
    const uintptr_t lines = field<uintptr_t>(co, l.co_lines);
    const int first = field<int32_t>(co, l.co_firstlineno);
    CodeInfo *ci = cache != nullptr ? cache->find(raw[i].code) : nullptr;
    if (ci == nullptr || ci->name != name || ci->file != file || ci->lines != lines ||
        ci->first != first) {
      ci = cache != nullptr ? cache->put(raw[i].code) : &fresh[i];
      *ci = CodeInfo();
      ci->name = name;
      ci->file = file;
      ci->lines = lines;
      ci->first = first;
      missing.push_back(i);
      addrs.insert(addrs.end(), {name, file, lines});
    }
    infos[i] = ci;
  }
  std::vector<uint8_t> parts(addrs.size() * kStrChunkBytes);
  read_batch(addrs, kStrChunkBytes, parts.data(), &got);
  for (size_t m = 0; m < missing.size(); ++m) {
    CodeInfo *ci = infos[missing[m]];
    const uint8_t *p = parts.data() + 3 * m * kStrChunkBytes;
    if (!read_str(l, t, ci->name, p, got[3 * m], &ci->function)) ci->function.clear();
    if (!read_str(l, t, ci->file, p + kStrChunkBytes, got[3 * m + 1], &ci->filename))
      ci->filename.clear();
    ci->table_ok = read_bytes(l, t, ci->lines, p + 2 * kStrChunkBytes, got[3 * m + 2], &ci->table);
  }
  for (size_t i = 0; i < raw.size(); ++i) {
    if (i == good) {
      w->reason = "a frame's code object fails its type check";
      return false;
    }
    const uint8_t *co = codes.data() + i * l.co_size;
    const uintptr_t code = raw[i].code;
    const CodeInfo *ci = infos[i];
    const int first = ci->first;
    PyFrameRead out;
    out.function = ci->function;
    out.file = ci->filename;
    long addr;  // byte offset of the instruction the frame is at
    bool known = true;
    if (l.chain == kFrameObject) {
      addr = l.lines == kLinetable310 ? 2L * raw[i].lasti : raw[i].lasti;  // 3.10 counts code units
    } else {
      // Unsigned arithmetic until the pointer is known to be inside the
      // code: garbage must not overflow a signed subtraction.
      const int64_t units = field<int64_t>(co, l.ob_size);  // code units of instructions
      const uintptr_t base = code + l.co_code_adaptive, instr = raw[i].instr;
      known = units > 0 && units <= (int64_t(1) << 28) && instr + 2 >= base &&
              instr < base + 2 * uint64_t(units);  // base - 2: not started yet
      addr = known ? long(instr - (base - 2)) - 2 : 0;
    }
    if (!known) {
      out.line = -1;  // outside its code: unknown
    } else if (addr < 0) {
      out.line = first;  // not started: the def line, as CPython says
    } else if (ci->table_ok) {
      out.line = python_line(l.lines, ci->table.data(), ci->table.size(), first, addr);
    }
    if (out.line < 0) out.line = -1;
    w->frames.push_back(std::move(out));
  }
  return ok;
}

// The location table's variable-length integers (6 bits a byte, 0x40 = more).
bool varint(const uint8_t *p, size_t n, size_t *i, unsigned *v) {
  unsigned shift = 0;
  *v = 0;
  for (int k = 0; k < 6; ++k) {
    if (*i >= n) return false;
    const uint8_t b = p[(*i)++];
    *v |= unsigned(b & 63) << shift;
    shift += 6;
    if (!(b & 64)) return true;
  }
  return false;
}

bool svarint(const uint8_t *p, size_t n, size_t *i, int *v) {
  unsigned u;
  if (!varint(p, n, i, &u)) return false;
  *v = (u & 1) ? -int(u >> 1) : int(u >> 1);
  return true;
}

// Every field read lies inside the bytes read for its object, and those
// fit the buffers: a table that says otherwise (made by hand, cut short)
// is refused before any read.
bool layout_usable(const PyLayout &l) {
  const auto in = [](uint32_t off, size_t width, size_t size) { return off + width <= size; };
  const size_t p = sizeof(uintptr_t);
  if (l.fr_size > kMaxStructBytes || l.co_size > kMaxStructBytes ||
      l.str_compact_size > kStrChunkBytes || l.bytes_sval > kStrChunkBytes ||
      l.str_ascii_size > l.str_compact_size)
    return false;
  if (!in(l.fr_back, p, l.fr_size) || !in(l.fr_code, p, l.fr_size) ||
      !in(l.fr_instr, p, l.fr_size) || !in(l.fr_owner, 1, l.fr_size) || !in(l.ob_type, p, l.fr_size))
    return false;
  if (!in(l.ob_type, p, l.co_size) || !in(l.ob_size, 8, l.co_size) ||
      !in(l.co_filename, p, l.co_size) || !in(l.co_name, p, l.co_size) ||
      !in(l.co_qualname, p, l.co_size) || !in(l.co_firstlineno, 4, l.co_size) ||
      !in(l.co_lines, p, l.co_size))
    return false;
  if (!in(l.ob_type, p, l.str_ascii_size) || !in(l.str_length, 8, l.str_ascii_size) ||
      !in(l.str_state, 4, l.str_ascii_size) || !in(l.ob_size, 8, l.bytes_sval) ||
      !in(l.ob_type, p, l.bytes_sval))
    return false;
  return l.str_kind_shift >= 0 && l.str_kind_shift <= 29 && l.str_compact_bit >= 0 &&
         l.str_compact_bit < 32 && l.str_ascii_bit >= 0 && l.str_ascii_bit < 32;
}

}  // namespace

const PyLayout *python_layout(int major, int minor) {
  for (const PyLayout &l : kLayouts)
    if (l.major == major && l.minor == minor) return &l;
  return nullptr;
}

size_t python_read(uintptr_t addr, void *out, size_t n) {
  if (n == 0) return 0;
  iovec local{out, n};
  iovec remote{reinterpret_cast<void *>(addr), n};
  // getpid() each time, not cached: a forked child must read its own copy.
  const ssize_t r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  return r < 0 ? 0 : size_t(r);
}

namespace {

// python_line in a long: a garbage table's deltas (at most 64 KiB of them,
// each below 2^31) cannot overflow it.
long python_line_long(PyLineFormat f, const uint8_t *p, size_t n, int first, long addr) {
  long line = first;
  long start = 0, end = 0;
  if (f == kLnotab) {  // CPython 3.8/3.9 PyCode_Addr2Line
    for (size_t i = 0; i + 1 < n; i += 2) {
      end += p[i];
      if (end > addr) break;
      line += int8_t(p[i + 1]);
    }
    return line;
  }
  if (f == kLinetable310) {
    for (size_t i = 0; i + 1 < n; i += 2) {
      start = end;
      end += p[i];
      const int8_t d = int8_t(p[i + 1]);
      if (d != -128) line += d;
      if (start <= addr && addr < end) return d == -128 ? -1 : line;
    }
    return -1;
  }
  size_t i = 0;
  while (i < n) {
    const uint8_t b = p[i++];
    if (!(b & 0x80)) return -1;  // not the start of an entry: a table we do not know
    const int code = (b >> 3) & 15;
    start = end;
    end += 2L * ((b & 7) + 1);
    bool has_line = true;
    int delta = 0;
    unsigned skip;
    if (code == 15) {
      has_line = false;
    } else if (code == 14) {
      if (!svarint(p, n, &i, &delta) || !varint(p, n, &i, &skip) || !varint(p, n, &i, &skip) ||
          !varint(p, n, &i, &skip))
        return -1;
    } else if (code == 13) {
      if (!svarint(p, n, &i, &delta)) return -1;
    } else if (code >= 10) {
      delta = code - 10;
      i += 2;
    } else {
      i += 1;
    }
    if (has_line) line += delta;
    if (start <= addr && addr < end) return has_line ? line : -1;
  }
  return -1;
}

}  // namespace

int python_line(PyLineFormat f, const uint8_t *p, size_t n, int first, long addr) {
  const long line = python_line_long(f, p, n, first, addr);
  return line >= 0 && line <= INT32_MAX ? int(line) : -1;
}

CodeInfo *PyCodeCache::find(uintptr_t code) {
  auto it = map_.find(code);
  return it == map_.end() ? nullptr : it->second.get();
}

CodeInfo *PyCodeCache::put(uintptr_t code) {
  auto &slot = map_[code];
  if (slot == nullptr) slot = std::make_unique<CodeInfo>();
  return slot.get();
}

void PyCodeCache::make_room(size_t n) {
  // Bounded: at most kMaxEntries + one walk's worth, kMaxBytes + one walk's
  // (each entry's table is at most kMaxLineTableBytes). Counted now rather
  // than kept up to date: a walk writes its entries' text directly.
  size_t bytes = 0;
  for (const auto &[code, ci] : map_)
    bytes += ci->table.size() + ci->function.size() + ci->filename.size();
  if (map_.size() + n > kMaxEntries || bytes > kMaxBytes) map_.clear();
}

PyCodeCache::PyCodeCache() = default;
PyCodeCache::~PyCodeCache() = default;

PyWalk python_walk(const PyLayout &l, const PyTypes &t, uintptr_t tstate, uintptr_t expect_interp,
                   uint64_t expect_thread_id, size_t max_frames, PyCodeCache *cache) {
  PyWalk w;
  if (!layout_usable(l) || max_frames > kMaxPythonFrames) {
    w.reason = "the layout table is not one this reader can use";
    return w;
  }
  if (!aligned(tstate)) {
    w.reason = "no thread state";
    return w;
  }
  uintptr_t interp = 0;
  uint64_t tid = 0;
  if (python_read(tstate + l.ts_interp, &interp, sizeof interp) != sizeof interp ||
      python_read(tstate + l.ts_thread_id, &tid, sizeof tid) != sizeof tid) {
    w.reason = "the thread state is not readable";
    return w;
  }
  if ((expect_interp != 0 && interp != expect_interp) ||
      (expect_thread_id != 0 && tid != expect_thread_id)) {
    w.reason = "the thread state no longer belongs to the loop thread";
    return w;
  }
  PyWalk failed;  // the last walk that stopped on a problem while the head held
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    HeadMark before, after;
    if (!read_mark(l, tstate, &before)) {
      w.reason = "the thread state's frame pointer is not readable";
      return w;
    }
    PyWalk one;
    // Never inside a walk: it holds pointers to the entries it found.
    if (cache != nullptr) cache->make_room(max_frames);
    const bool ok = walk_once(l, t, before.head, max_frames, cache, &one);
    if (!read_mark(l, tstate, &after)) {
      w.reason = "the thread state's frame pointer is not readable";
      return w;
    }
    if (!(after == before)) {  // the thread pushed or popped: what was read may mix two moments
      failed = PyWalk();
      continue;
    }
    if (ok) return one;
    // A frame being rewritten under us looks like garbage for a moment:
    // another look tells a transient state from a broken chain.
    failed = std::move(one);
  }
  if (!failed.reason.empty()) return failed;  // the same kind of problem on the last look
  w.reason = "the stack kept changing while it was read (the thread runs Python code)";
  return w;
}

}  // namespace uvstall::internal
