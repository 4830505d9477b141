"""Symbolized stacks and the choice of a stall's culprit.

Shared by the symbolizer's --summary and --folded and by the report viewer,
so that every tool blames the same code for the same stall:

  - interpreted-language frames (`lang_frames`), when a record has them, come
    first: the innermost one is the culprit;
  - otherwise the innermost native frame whose module is not on the skip list
    (tools/skip-modules.txt) is, and within it the innermost inlined function;
  - when every native frame is skipped, the innermost frame is named anyway,
    so the stall is still counted somewhere.
"""

from dataclasses import dataclass, field
from typing import List, Optional

from .symbolizer import Location

# Where a frame's function name came from.
FROM_DEBUG_INFO = "debug info"  # DWARF: function, file and line
FROM_SYMBOL_TABLE = "symbol table"  # the ELF symbol table: function only
FROM_REPORT = "report"  # the report's own `symbol`: nothing was looked up


@dataclass
class Resolved:
    """A native frame after lookup. function/file/line describe the function
    that owns the address (for an inlined call, the line of the call site in
    it); `inlined` lists the functions inlined at the address, innermost
    first."""

    function: Optional[str] = None
    file: Optional[str] = None
    line: Optional[int] = None
    inlined: List[Location] = field(default_factory=list)
    source: Optional[str] = None

    def chain(self):
        """Logical frames at this address, innermost first."""
        return self.inlined + [Location(self.function, self.file, self.line)]


def module_name(module):
    return module.rsplit("/", 1)[-1] if module else None


def address_name(frame):
    """`libfoo.so+0x1234`, or the bare pc when the module is unknown."""
    if frame.module and frame.offset is not None:
        return "%s+0x%x" % (module_name(frame.module), frame.offset)
    return "0x%x" % frame.pc


def location_name(loc, frame):
    """Short name of one logical frame, for folded stacks."""
    return loc.function or address_name(frame)


def lang_name(lf):
    return "%s (%s)" % (lf.function, lf.file) if lf.file else lf.function


@dataclass(frozen=True)
class Culprit:
    """What a stall is blamed on; equal culprits are added up."""

    label: str
    lang: Optional[str] = None  # "python" for a lang frame, None for native


def native_frames(record, resolve, skip, keep_all):
    """(frame, Resolved) pairs that may be blamed, innermost first; resolve
    maps a Frame to its Resolved. When the skip list leaves no frame, the
    innermost one alone."""
    pairs = [(f, resolve(f)) for f in record.frames]
    if keep_all:
        return pairs
    kept = [(f, r) for f, r in pairs if not skip.matches(f.module)]
    return kept or pairs[:1]


def culprit(record, resolve, skip, keep_all):
    if record.lang_frames:
        lf = record.lang_frames[0]
        return Culprit(lang_name(lf), lf.lang or "lang")
    frames = native_frames(record, resolve, skip, keep_all)
    if not frames:
        capture = record.obj.get("capture")
        return Culprit("(no stack: capture %s)" % capture if capture else "(no stack)")
    frame, res = frames[0]
    loc = res.chain()[0]
    if loc.function is None:
        return Culprit(address_name(frame))
    where = loc.file or module_name(frame.module)
    return Culprit("%s (%s)" % (loc.function, where) if where else loc.function)


def folded_stack(record, resolve, skip, keep_all):
    """Frame names from the outermost to the innermost, as flame graphs
    want them. Language frames replace native ones when present: they are
    the stack the application's author wrote."""
    if record.lang_frames:
        names = [lang_name(lf) for lf in reversed(record.lang_frames)]
    else:
        names = []
        for frame, res in reversed(native_frames(record, resolve, skip, keep_all)):
            names.extend(location_name(loc, frame) for loc in reversed(res.chain()))
    if not names:
        capture = record.obj.get("capture")
        names = ["[no stack: capture %s]" % capture if capture else "[no stack]"]
    # ';' separates frames in the folded format, so it may not appear in a
    # name. Spaces may: the weight is what follows the last one.
    return [n.replace(";", ":").replace("\n", " ") for n in names]
