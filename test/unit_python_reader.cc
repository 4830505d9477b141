// The no-fault CPython frame reader (src/python_reader.cc) on hostile
// memory: fake frame chains built here with the 3.12 (and 3.10) layout
// tables, then broken — pointers into unmapped and PROT_NONE pages, cycles,
// wrong types, a layout that does not fit, and a chain another thread
// rewrites while it is read. None may crash or hang the reader; each must
// give fewer frames and a reason, never a frame that is not in the chain.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "python_reader.h"

using namespace uvstall::internal;

namespace {

// Type objects: only their addresses matter.
alignas(8) char code_type[64], unicode_type[64], bytes_type[64], other_type[64];

// Fake CPython objects, laid out by a PyLayout, kept alive as long as it.
struct Fake {
  explicit Fake(const PyLayout &layout) : l(layout) {
    types.code = uintptr_t(code_type);
    types.unicode = uintptr_t(unicode_type);
    types.bytes = uintptr_t(bytes_type);
  }
  PyLayout l;
  PyTypes types;
  std::deque<std::vector<uint64_t>> blocks;

  uint8_t *alloc(size_t n) {
    blocks.emplace_back((n + 7) / 8 + 1, 0);
    return reinterpret_cast<uint8_t *>(blocks.back().data());
  }
  template <typename T>
  static void put(uint8_t *obj, uint32_t off, T v) {
    std::memcpy(obj + off, &v, sizeof v);
  }
  // A compact str of the given kind (1, 2 or 4 bytes a character).
  uintptr_t str(const std::u32string &s, int kind = 0) {
    bool ascii = true;
    uint32_t max = 0;
    for (char32_t c : s) max = std::max<uint32_t>(max, c);
    ascii = max < 0x80;
    if (kind == 0) kind = max < 0x100 ? 1 : max < 0x10000 ? 2 : 4;
    if (kind != 1) ascii = false;
    const size_t data = ascii ? l.str_ascii_size : l.str_compact_size;
    uint8_t *o = alloc(data + (s.size() + 1) * kind);
    put(o, l.ob_type, uintptr_t(unicode_type));
    put(o, l.str_length, int64_t(s.size()));
    put(o, l.str_state, uint32_t((kind << l.str_kind_shift) | (1u << l.str_compact_bit) |
                                 (ascii ? 1u << l.str_ascii_bit : 0)));
    for (size_t i = 0; i < s.size(); ++i) {
      if (kind == 1) o[data + i] = uint8_t(s[i]);
      if (kind == 2) put(o, uint32_t(data + 2 * i), uint16_t(s[i]));
      if (kind == 4) put(o, uint32_t(data + 4 * i), uint32_t(s[i]));
    }
    return uintptr_t(o);
  }
  uintptr_t str(const std::string &s) { return str(std::u32string(s.begin(), s.end())); }
  uintptr_t bytes(const std::vector<uint8_t> &b) {
    uint8_t *o = alloc(l.bytes_sval + b.size() + 1);
    put(o, l.ob_type, uintptr_t(bytes_type));
    put(o, l.ob_size, int64_t(b.size()));
    std::memcpy(o + l.bytes_sval, b.data(), b.size());
    return uintptr_t(o);
  }
  // A code object of 8 code units whose location table says: units 0-3
  // are line first+1, units 4-7 line first+3 (3.11+ format).
  uint8_t *code(const std::string &name, const std::string &file, int first) {
    uint8_t *o = alloc(l.co_code_adaptive + 16);
    put(o, l.ob_type, uintptr_t(code_type));
    put(o, l.ob_size, int64_t(8));
    put(o, l.co_filename, str(file));
    put(o, l.co_name, str(name));
    if (l.co_qualname != 0) put(o, l.co_qualname, str(name));
    put(o, l.co_firstlineno, int32_t(first));
    // 0x80 | code 13 (no columns) << 3 | length-1; then the line delta as
    // an svarint (delta << 1).
    put(o, l.co_lines, bytes({0x80 | 13 << 3 | 3, 1 << 1, 0x80 | 13 << 3 | 3, 2 << 1}));
    return o;
  }
  // An interpreter frame at code unit `unit` of code.
  uint8_t *frame(uint8_t *code, int unit, uintptr_t back) {
    uint8_t *f = alloc(l.fr_size);
    put(f, l.fr_back, back);
    put(f, l.fr_code, uintptr_t(code));
    put(f, l.fr_instr, uintptr_t(code + l.co_code_adaptive + 2 * unit));
    return f;
  }
  // A thread state whose C frame's current_frame is head (3.11/3.12).
  uintptr_t tstate(uintptr_t head) {
    uint8_t *ts = alloc(l.ts_size);
    cframe = alloc(64);
    put(cframe, l.cframe_current_frame, head);
    put(ts, l.ts_frame, uintptr_t(cframe));
    put(ts, l.ts_interp, uintptr_t(0x1000));
    put(ts, l.ts_thread_id, uint64_t(42));
    return uintptr_t(ts);
  }
  void set_head(uintptr_t head) { put(cframe, l.cframe_current_frame, head); }
  uint8_t *cframe = nullptr;
};

const PyLayout &l312() {
  const PyLayout *l = python_layout(3, 12);
  REQUIRE(l != nullptr);
  return *l;
}

// Three frames: inner (unit 5: line 13), middle (unit 1: line 21), outer.
struct Chain {
  explicit Chain(Fake &f, const std::string &tag = "") {
    outer = f.frame(f.code("outer" + tag, "/app/o.py", 30), 6, 0);
    middle = f.frame(f.code("middle" + tag, "/app/m.py", 20), 1, uintptr_t(outer));
    inner = f.frame(f.code("inner" + tag, "/app/i.py", 10), 5, uintptr_t(middle));
  }
  uint8_t *inner, *middle, *outer;
};

PyWalk walk(const Fake &f, uintptr_t ts, size_t max = kMaxPythonFrames) {
  return python_walk(f.l, f.types, ts, 0x1000, 42, max);
}

// A page that is not mapped any more, and one mapped PROT_NONE.
struct BadPages {
  BadPages() {
    const long page = sysconf(_SC_PAGESIZE);
    void *m = mmap(nullptr, size_t(page) * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    none = static_cast<uint8_t *>(m);
    unmapped = none + page;
    REQUIRE(munmap(unmapped, size_t(page)) == 0);
    REQUIRE(mprotect(none, size_t(page), PROT_NONE) == 0);
    size = size_t(page);
  }
  ~BadPages() { munmap(none, size); }
  uint8_t *none, *unmapped;
  size_t size;
};

}  // namespace

TEST_SUITE("python reader") {
  TEST_CASE("a well-formed chain is read innermost first, with its lines") {
    Fake f(l312());
    Chain c(f);
    const PyWalk w = walk(f, f.tstate(uintptr_t(c.inner)));
    CHECK(w.reason == "");
    REQUIRE(w.frames.size() == 3);
    CHECK(w.frames[0].function == "inner");
    CHECK(w.frames[0].file == "/app/i.py");
    CHECK(w.frames[0].line == 13);
    CHECK(w.frames[1].function == "middle");
    CHECK(w.frames[1].line == 21);
    CHECK(w.frames[2].function == "outer");
    CHECK(w.frames[2].line == 33);
  }

  TEST_CASE("C-stack shims are skipped; no frame at all is no frame and no problem") {
    Fake f(l312());
    Chain c(f);
    uint8_t *shim = f.alloc(f.l.fr_size);
    Fake::put(shim, f.l.fr_back, uintptr_t(c.middle));
    shim[f.l.fr_owner] = uint8_t(f.l.fr_owner_cstack);
    Fake::put(c.inner, f.l.fr_back, uintptr_t(shim));
    PyWalk w = walk(f, f.tstate(uintptr_t(c.inner)));
    CHECK(w.reason == "");
    CHECK(w.frames.size() == 3);
    w = walk(f, f.tstate(0));
    CHECK(w.reason == "");
    CHECK(w.frames.empty());
  }

  TEST_CASE("pointers into unmapped and PROT_NONE pages: fewer frames and a reason") {
    BadPages bad;
    for (uint8_t *page : {bad.none, bad.unmapped}) {
      Fake f(l312());
      Chain c(f);
      uintptr_t ts = f.tstate(uintptr_t(c.inner));
      Fake::put(c.middle, f.l.fr_back, uintptr_t(page));  // the outer frame is gone
      PyWalk w = walk(f, ts);
      CHECK(w.frames.size() == 2);
      CHECK(w.reason == "a frame is not readable");
      Fake::put(c.middle, f.l.fr_code, uintptr_t(page + 64));  // the code object is gone
      w = walk(f, ts);
      CHECK(w.frames.size() == 1);
      CHECK(w.reason == "a frame's code object fails its type check");
      // A name in a bad page: the frame stays, its name is unknown.
      uint8_t *code = const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(
          *reinterpret_cast<uintptr_t *>(c.inner + f.l.fr_code)));
      Fake::put(code, f.l.co_qualname, uintptr_t(page + 128));
      w = walk(f, ts);
      REQUIRE(w.frames.size() == 1);
      CHECK(w.frames[0].function == "");
      CHECK(w.frames[0].file == "/app/i.py");
      // The thread state itself, and its C frame, in a bad page.
      CHECK(walk(f, uintptr_t(page)).reason == "the thread state is not readable");
      Fake::put(reinterpret_cast<uint8_t *>(ts), f.l.ts_frame, uintptr_t(page));
      CHECK(walk(f, ts).reason == "the thread state's frame pointer is not readable");
    }
  }

  TEST_CASE("a cycle ends the walk with a reason") {
    Fake f(l312());
    Chain c(f);
    Fake::put(c.outer, f.l.fr_back, uintptr_t(c.inner));
    const PyWalk w = walk(f, f.tstate(uintptr_t(c.inner)));
    CHECK(w.reason == "the frame chain has a cycle");
    CHECK(w.frames.size() == 3);
  }

  TEST_CASE("objects of the wrong type, misaligned pointers, another thread's state") {
    Fake f(l312());
    Chain c(f);
    const uintptr_t ts = f.tstate(uintptr_t(c.inner));
    uint8_t *code = reinterpret_cast<uint8_t *>(*reinterpret_cast<uintptr_t *>(c.middle + f.l.fr_code));
    Fake::put(code, f.l.ob_type, uintptr_t(other_type));
    PyWalk w = walk(f, ts);
    CHECK(w.frames.size() == 1);
    CHECK(w.reason == "a frame's code object fails its type check");
    Fake::put(code, f.l.ob_type, uintptr_t(code_type));
    Fake::put(code, f.l.co_lines, f.str("not bytes"));  // the line table is a str
    w = walk(f, ts);
    REQUIRE(w.frames.size() == 3);
    CHECK(w.frames[1].line == -1);
    CHECK(w.frames[1].function == "middle");
    Fake::put(c.inner, f.l.fr_back, uintptr_t(c.middle) + 4);
    w = walk(f, ts);
    CHECK(w.frames.size() == 1);
    CHECK(w.reason == "a frame pointer is not aligned");
    CHECK(python_walk(f.l, f.types, ts, 0x2000, 42).reason ==
          "the thread state no longer belongs to the loop thread");
    CHECK(python_walk(f.l, f.types, ts, 0x1000, 43).reason ==
          "the thread state no longer belongs to the loop thread");
    CHECK(python_walk(f.l, f.types, ts + 1, 0x1000, 42).reason == "no thread state");
  }

  TEST_CASE("a fake or truncated layout is refused or reads nothing wrong") {
    Fake f(l312());
    Chain c(f);
    const uintptr_t ts = f.tstate(uintptr_t(c.inner));
    PyLayout huge = f.l;
    huge.fr_size = 1 << 20;
    CHECK(python_walk(huge, f.types, ts, 0x1000, 42).reason ==
          "the layout table is not one this reader can use");
    // Offsets past the bytes read for their object (a table cut short).
    for (uint32_t PyLayout::*field : {&PyLayout::fr_back, &PyLayout::co_filename,
                                      &PyLayout::str_length, &PyLayout::ob_size}) {
      PyLayout cut = f.l;
      cut.*field = 4000;
      CHECK(python_walk(cut, f.types, ts, 0x1000, 42).reason ==
            "the layout table is not one this reader can use");
    }
    // Another version's table on this memory: every offset is off. The
    // walk must end early with a reason and show no frame of garbage.
    for (const auto &mm : {std::pair<int, int>{3, 8}, {3, 10}, {3, 11}, {3, 13}}) {
      const PyLayout *other = python_layout(mm.first, mm.second);
      REQUIRE(other != nullptr);
      const PyWalk w = python_walk(*other, f.types, ts, 0, 0);
      for (const PyFrameRead &fr : w.frames) {
        CHECK((fr.function == "" || fr.function == "inner" || fr.function == "middle" ||
               fr.function == "outer"));
      }
      CHECK((w.reason != "" || w.frames.empty()));
    }
  }

  TEST_CASE("a stack deeper than the bound: the innermost frames and a reason") {
    Fake f(l312());
    uint8_t *code = f.code("deep", "/app/d.py", 1);
    uintptr_t back = 0;
    for (int i = 0; i < 150; ++i) back = uintptr_t(f.frame(code, 0, back));
    const PyWalk w = walk(f, f.tstate(back));
    CHECK(w.frames.size() == kMaxPythonFrames);
    CHECK(w.reason.find("deeper than 100") != std::string::npos);
  }

  TEST_CASE("a code cache that fills up starts again between walks, never within one") {
    // 100-frame stacks of distinct code objects, more of them than the cache
    // keeps: every walk must still name every frame (ASan: no entry freed
    // while a walk holds it).
    Fake f(l312());
    PyCodeCache cache;
    for (int s = 0; s < 50; ++s) {
      uintptr_t back = 0;
      for (int i = 0; i < int(kMaxPythonFrames); ++i)
        back = uintptr_t(f.frame(f.code("fn" + std::to_string(s * 100 + i), "/app/c.py", 10), 5, back));
      const PyWalk w = python_walk(f.l, f.types, f.tstate(back), 0x1000, 42, kMaxPythonFrames, &cache);
      REQUIRE(w.frames.size() == kMaxPythonFrames);
      CHECK(w.frames.front().function == "fn" + std::to_string(s * 100 + 99));
      CHECK(w.frames.back().function == "fn" + std::to_string(s * 100));
      CHECK(w.frames.back().line == 13);
      CHECK(cache.size() <= PyCodeCache::kMaxEntries);
    }
  }

  TEST_CASE("names: ASCII, Latin-1, UCS-2 and UCS-4 become UTF-8; long ones are cut") {
    Fake f(l312());
    Chain c(f);
    uint8_t *code = reinterpret_cast<uint8_t *>(*reinterpret_cast<uintptr_t *>(c.inner + f.l.fr_code));
    const uintptr_t ts = f.tstate(uintptr_t(c.inner));
    const std::pair<std::u32string, std::string> cases[] = {
        {U"caf\u00e9", "caf\xc3\xa9"},
        {U"\u20ac uro", "\xe2\x82\xac uro"},
        {U"smile \U0001F600", "smile \xf0\x9f\x98\x80"},
    };
    for (const auto &cs : cases) {
      Fake::put(code, f.l.co_qualname, f.str(cs.first));
      CHECK(walk(f, ts).frames[0].function == cs.second);
    }
    Fake::put(code, f.l.co_qualname, f.str(std::string(600, 'x')));
    CHECK(walk(f, ts).frames[0].function == std::string(kMaxPythonNameChars, 'x') + "...");
    // A str that says ASCII but is not, and one of an unknown kind: unknown.
    uintptr_t s = f.str(std::string("ab"));
    reinterpret_cast<uint8_t *>(s)[f.l.str_ascii_size] = 0xff;
    Fake::put(code, f.l.co_qualname, s);
    CHECK(walk(f, ts).frames[0].function == "");
    s = f.str(U"x", 1);
    Fake::put(reinterpret_cast<uint8_t *>(s), f.l.str_state, uint32_t(3u << f.l.str_kind_shift | 1u << f.l.str_compact_bit));
    Fake::put(code, f.l.co_qualname, s);
    CHECK(walk(f, ts).frames[0].function == "");
  }

  TEST_CASE("a chain another thread rewrites while it is read") {
    // The writer swaps the head between two chains and breaks and mends
    // a code pointer of chain A; every read must be all of one chain (or
    // its innermost part with a reason), never a mix.
    Fake f(l312());
    Chain a(f, "A"), b(f, "B");
    BadPages bad;
    const uintptr_t ts = f.tstate(uintptr_t(a.inner));
    const uintptr_t a_code = *reinterpret_cast<uintptr_t *>(a.middle + f.l.fr_code);
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      for (unsigned i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        f.set_head(i & 1 ? uintptr_t(b.inner) : uintptr_t(a.inner));
        Fake::put(a.middle, f.l.fr_code, i & 2 ? uintptr_t(bad.unmapped) : a_code);
      }
    });
    int whole = 0, partial = 0, moving = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < until) {
      const PyWalk w = walk(f, ts);
      if (w.frames.empty()) {
        CHECK(w.reason != "");
        ++moving;
        continue;
      }
      const char tag = w.frames[0].function.back();
      REQUIRE((tag == 'A' || tag == 'B'));
      const char *names[] = {"inner", "middle", "outer"};
      for (size_t i = 0; i < w.frames.size(); ++i) {
        CHECK(w.frames[i].function == std::string(names[i]) + tag);
      }
      if (w.frames.size() == 3) {
        CHECK(w.reason == "");
        ++whole;
      } else {
        CHECK(w.reason != "");
        ++partial;
      }
    }
    stop = true;
    writer.join();
    MESSAGE("reads: " << whole << " whole, " << partial << " partial, " << moving << " moving");
    CHECK(whole + partial + moving > 10);
  }

  TEST_CASE("line tables of 3.8/3.9 (lnotab) and 3.10 (linetable)") {
    // lnotab: (address delta, line delta) from the first line: bytes 0-5 at
    // 10, 6-13 at 12, 14- at 11.
    const uint8_t lnotab[] = {6, 2, 8, uint8_t(-1)};
    CHECK(python_line(kLnotab, lnotab, sizeof lnotab, 10, 0) == 10);
    CHECK(python_line(kLnotab, lnotab, sizeof lnotab, 10, 6) == 12);
    CHECK(python_line(kLnotab, lnotab, sizeof lnotab, 10, 13) == 12);
    CHECK(python_line(kLnotab, lnotab, sizeof lnotab, 10, 40) == 11);
    // 3.10: (length, line delta) ranges; -128 = no line.
    const uint8_t lt[] = {4, 1, 6, uint8_t(-128), 2, 3};
    CHECK(python_line(kLinetable310, lt, sizeof lt, 5, 0) == 6);
    CHECK(python_line(kLinetable310, lt, sizeof lt, 5, 5) == -1);
    CHECK(python_line(kLinetable310, lt, sizeof lt, 5, 10) == 9);
    CHECK(python_line(kLinetable310, lt, sizeof lt, 5, 12) == -1);  // past the table
    // 3.11+: garbage (no entry start) is no line, never a wrong one.
    const uint8_t junk[] = {0x01, 0x02, 0x03};
    CHECK(python_line(kLocations, junk, sizeof junk, 5, 0) == -1);
  }
}
