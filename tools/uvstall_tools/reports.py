"""Reading uvstall's JSON Lines stall reports.

Shared by the symbolizer and the report viewer. Every line of input becomes a
Record that remembers where it came from ("stalls.jsonl:12"), so a warning
can name the line. A line is *bad* -- skipped, with a reason -- when it is not
JSON, not a JSON object, or a `stall` record whose `frames` or `lang_frames`
are malformed. Records of any other type (`start`, `stall_end`, types added
later) are not bad: callers pass them through or ignore them.

The format itself is described in docs/report.schema.json; what is checked
here is only what symbolizing needs.
"""

import json
import math
import re
from dataclasses import dataclass, field
from typing import List, Optional

_HEX = re.compile(r"\A0x[0-9a-fA-F]+\Z")
_BUILD_ID = re.compile(r"\A[0-9a-fA-F]+\Z")

# Fields a native frame must carry (their values may be null). `symbol` and
# `symbol_offset` are optional: they only help when nothing better is found.
REQUIRED_FRAME_FIELDS = ("pc", "module", "offset", "build_id")


class BadLine(Exception):
    """A line that cannot be used; str() is the one-line reason."""


@dataclass
class Frame:
    """One native frame of a stall, innermost first (index 0)."""

    index: int
    pc: int
    module: Optional[str]
    offset: Optional[int]
    build_id: Optional[str]
    symbol: Optional[str]
    symbol_offset: Optional[int]

    @property
    def lookup_offset(self):
        """The address to ask a symbolizer about. Frame 0 is the exact
        interrupted pc; the others are return addresses, which point at the
        instruction *after* the call, possibly already on the next line or in
        the next function, so they are looked up one byte earlier."""
        if self.offset is None:
            return None
        return self.offset if self.index == 0 else self.offset - 1


@dataclass
class LangFrame:
    """A frame of an interpreted language (Python), innermost first."""

    lang: Optional[str]
    function: str
    file: Optional[str]
    line: Optional[int]


@dataclass
class Record:
    where: str  # "FILE:LINE", for warnings
    text: str  # the line as read, without its newline
    obj: dict
    frames: List[Frame] = field(default_factory=list)
    lang_frames: List[LangFrame] = field(default_factory=list)

    @property
    def type(self):
        return self.obj.get("type")

    @property
    def is_stall(self):
        return self.type == "stall"


def _hex_or_none(value, name):
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX.match(value):
        raise BadLine("frame field %r is not a 0x-prefixed hex string" % name)
    return int(value, 16)


def _str_or_none(value, name):
    if value is not None and not isinstance(value, str):
        raise BadLine("frame field %r is not a string" % name)
    return value


def parse_frame(index, raw):
    if not isinstance(raw, dict):
        raise BadLine("frame #%d is not an object" % index)
    missing = [k for k in REQUIRED_FRAME_FIELDS if k not in raw]
    if missing:
        raise BadLine("frame #%d lacks %s" % (index, ", ".join(missing)))
    try:
        pc = _hex_or_none(raw["pc"], "pc")
        if pc is None:
            raise BadLine("frame field 'pc' is null")
        offset = _hex_or_none(raw["offset"], "offset")
        module = _str_or_none(raw["module"], "module")
        build_id = _str_or_none(raw["build_id"], "build_id")
        if build_id is not None and not _BUILD_ID.match(build_id):
            raise BadLine("frame field 'build_id' is not hex")
        symbol = _str_or_none(raw.get("symbol"), "symbol")
        symbol_offset = raw.get("symbol_offset")
        if symbol_offset is not None and (
            not isinstance(symbol_offset, int) or isinstance(symbol_offset, bool)
        ):
            raise BadLine("frame field 'symbol_offset' is not an integer")
    except BadLine as e:
        raise BadLine("frame #%d: %s" % (index, e)) from None
    return Frame(
        index=index,
        pc=pc,
        module=module,
        offset=offset,
        build_id=build_id.lower() if build_id else None,
        symbol=symbol,
        symbol_offset=symbol_offset,
    )


def parse_lang_frame(index, raw):
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), str):
        raise BadLine("lang_frames #%d is not an object with a 'function'" % index)
    line = raw.get("line")
    if not isinstance(line, int) or isinstance(line, bool):
        line = None
    file = raw.get("file")
    lang = raw.get("lang")
    return LangFrame(
        lang=lang if isinstance(lang, str) else None,
        function=raw["function"],
        file=file if isinstance(file, str) else None,
        line=line,
    )


def _parse_frames(frames, cache):
    if cache is None:
        return [parse_frame(i, f) for i, f in enumerate(frames)]
    out = []
    for i, raw in enumerate(frames):
        try:
            key = (i, tuple(raw.items()))
            frame = cache.get(key)
        except (AttributeError, TypeError):  # not an object, or unhashable values
            key, frame = None, None
        if frame is None:
            frame = parse_frame(i, raw)
            if key is not None:
                cache[key] = frame
        out.append(frame)
    return out


def parse_line(where, text, frame_cache=None):
    """Returns the Record for one input line; raises BadLine.

    With a frame_cache (a dict kept across calls), frames that are the same
    in every field are parsed once and shared between records: long logs
    repeat the same stacks, and parsing frames is most of the reading time.
    Shared Frames must then be treated as read-only."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise BadLine("not JSON (%s)" % e) from None
    except RecursionError:
        raise BadLine("JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise BadLine("not a JSON object")
    record = Record(where=where, text=text, obj=obj)
    if record.is_stall:
        frames = obj.get("frames")
        if not isinstance(frames, list):
            raise BadLine("stall record without a 'frames' list")
        record.frames = _parse_frames(frames, frame_cache)
        lang = obj.get("lang_frames")
        if lang is not None:
            if not isinstance(lang, list):
                raise BadLine("'lang_frames' is not a list")
            record.lang_frames = [parse_lang_frame(i, f) for i, f in enumerate(lang)]
    return record


def read(stream, name, on_bad, frame_cache=None):
    """Yields the Records of one input stream. Blank lines are ignored; for a
    bad line, on_bad(where, reason) is called and the line is left out.
    frame_cache: see parse_line."""
    for number, text in enumerate(stream, 1):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        where = "%s:%d" % (name, number)
        try:
            yield parse_line(where, text, frame_cache)
        except BadLine as e:
            on_bad(where, str(e))


def _key_part(value):
    """A field as part of a dict key: a list or an object (a corrupt
    record) becomes its JSON text instead of failing to hash."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def stall_key(obj):
    """(run_id, pid, stall_id): what ties a stall's records and its end."""
    return (_key_part(obj.get("run_id")), _key_part(obj.get("pid")),
            _key_part(obj.get("stall_id")))


def _number(value):
    """A finite number, else None (Python's json reads NaN and Infinity, and
    integers too large for a float)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    return None


def stall_durations(records):
    """Maps each stall_end's (run_id, pid, stall_id) to its duration_ms."""
    ends = {}
    for r in records:
        if r.type == "stall_end":
            ms = _number(r.obj.get("duration_ms"))
            if ms is not None:
                ends[stall_key(r.obj)] = ms
    return ends


def blocked_ms(record):
    return _number(record.obj.get("blocked_ms"))


def duration_ms(record, ends):
    """How long a stall lasted: its stall_end's duration_ms when there is
    one, else how long it had lasted when captured (blocked_ms), else 0."""
    ms = ends.get(stall_key(record.obj))
    if ms is None:
        ms = blocked_ms(record)
    return ms if ms is not None else 0.0
