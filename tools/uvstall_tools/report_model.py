"""The report viewer's model: stall records grouped into stalls, each
stall's culprit and fingerprint, and the compact tables the page draws.

Pure: build() takes Records (see reports.py), a resolve function (Frame ->
stacks.Resolved) and a skip list, and returns a dict ready for json.dumps.
Nothing here reads files or starts processes, so tests drive it with
hand-made records.

A stall is every `stall` record with the same (run_id, pid, stall_id) -- a
stall whose first capture timed out may have a second record with capture
"late" -- plus its `stall_end`. Its stack is that of the first of its
records that has one.

Size matters: the page for 100,000 records must load fast, so every string
(function, file, module) is stored once in `strs` and referred to by index;
physical frames (module + offset) and whole stacks are deduplicated; stalls
are stored column by column. The page's script (report_page.js) documents
the same layout from the reading side.
"""

import hashlib
import json
import math
from collections import Counter
from datetime import datetime

from . import stacks

# Fields of a stall record that have a column or a table of their own; every
# other field (capture_error, state, syscall, context, sample, fields added
# later) is shown as is in the stall's detail.
_STALL_FIELDS = frozenset((
    "type", "version", "time", "run_id", "pid", "tid", "loop", "stall_id",
    "threshold_ms", "blocked_ms", "capture", "frames", "lang_frames",
    "fingerprint", "cause", "dropped", "handler_us",
))
# A stall's other fields are kept up to this size of JSON; a bigger
# `context` would make one stall weigh more than a thousand others.
MAX_EXTRA_CHARS = 4096
MAX_BAD_EXAMPLES = 50
MAX_SUMMARY_RECORDS = 100

METRIC_FIELDS = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "utilization")


class _Table:
    """Values stored once, referred to by their index."""

    def __init__(self):
        self.items = []
        self._index = {}

    def add(self, key, value=None):
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.items)
            self.items.append(key if value is None else value)
        return i


def epoch_ms(text):
    """Milliseconds since the epoch of an RFC 3339 time, or None."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000.0
    except ValueError:
        return None


def _number(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _clean(value):
    """A JSON value the page can hold: Python's json reads NaN and Infinity,
    which JSON (and so the page) cannot; they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _scalar(value):
    """An id-like field (tid, stall_id) as the page shows it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return json.dumps(_clean(value))


def _round(value, places=3):
    return None if value is None else round(value, places)


def fingerprint_names(record, resolve, skip):
    """The names a computed fingerprint hashes: one per native frame that
    may be blamed (see stacks.native_frames), innermost first. The report's
    own `symbol` is preferred over a looked-up name, so the fingerprint does
    not depend on the debug files of the machine that draws the page."""
    names = []
    for frame, res in stacks.native_frames(record, resolve, skip, keep_all=False):
        names.append(frame.symbol or res.function or stacks.address_name(frame))
    return names


def computed_fingerprint(record, resolve, skip, lang_record=None):
    """A stand-in for the library's `fingerprint` field, for reports that
    lack it: 16 hex digits of a hash of fingerprint_names(), then of the
    language frames' functions (without them every stall of a Python
    program would share the interpreter's native stack). It is not the
    library's hash (that one hashes function addresses): the page says
    which kind it shows."""
    names = fingerprint_names(record, resolve, skip) if record is not None else []
    if lang_record is not None:
        names += ["%s:%s (%s)" % (lf.lang or "lang", lf.function, lf.file or "?")
                  for lf in lang_record.lang_frames]
    if not names:
        return "no-stack"
    return hashlib.blake2b("\n".join(names).encode("utf-8", "replace"),
                           digest_size=8).hexdigest()


class _Stall:
    __slots__ = ("key", "records", "end", "order")

    def __init__(self, key, order):
        self.key = key
        self.records = []
        self.end = None
        self.order = order

    def stack_record(self):
        for r in self.records:
            if r.frames:
                return r
        return None


class _Builder:
    def __init__(self, resolve, skip):
        self.resolve = resolve
        self.skip = skip
        self.strs = _Table()
        self.modules = _Table()
        self.pframes = _Table()
        self.stacks = _Table()
        self.lframes = _Table()
        self.lstacks = _Table()
        self.runs = _Table()
        self.groups = _Table()
        # Per stack id: what a stack's stalls are blamed on, worked out once.
        self._fingerprints = {}
        self._culprits = {}

    def s(self, text):
        return -1 if text is None else self.strs.add(str(text))

    def run(self, obj):
        key = (_scalar(obj.get("run_id")), _scalar(obj.get("pid")))
        return self.runs.add(key, {"run_id": key[0], "pid": key[1], "stalls": 0})

    def pframe(self, frame):
        key = (frame.module, frame.offset, frame.build_id, frame.symbol,
               frame.pc if frame.module is None else None, frame.index == 0)
        i = self.pframes._index.get(key)
        if i is not None:
            return i
        res = self.resolve(frame)
        chain = [[self.s(loc.function), self.s(loc.file), loc.line] for loc in res.chain()]
        module = -1
        if frame.module is not None:
            module = self.modules.add((frame.module, frame.build_id),
                                      [self.s(frame.module), frame.build_id])
        value = [
            module,
            "0x%x" % frame.offset if frame.offset is not None else "0x%x" % frame.pc,
            1 if self.skip.matches(frame.module) else 0,
            chain,
            {None: 0, stacks.FROM_REPORT: 1, stacks.FROM_SYMBOL_TABLE: 2,
             stacks.FROM_DEBUG_INFO: 3}.get(res.source, 0),
        ]
        return self.pframes.add(key, value)

    def stack(self, record):
        ids = tuple(self.pframe(f) for f in record.frames)
        return self.stacks.add(ids, list(ids))

    def lstack(self, record):
        ids = []
        for lf in record.lang_frames:
            key = (lf.lang, lf.function, lf.file, lf.line)
            ids.append(self.lframes.add(key, [self.s(lf.lang), self.s(lf.function),
                                              self.s(lf.file), lf.line]))
        return self.lstacks.add(tuple(ids), ids)

    def culprit_pframe(self, stack_id, record):
        """The physical frame whose innermost logical frame is the native
        culprit (the shared rule of stacks.native_frames), or -1."""
        top = self._culprits.get(stack_id)
        if top is None:
            frames = stacks.native_frames(record, self.resolve, self.skip, keep_all=False)
            top = self._culprits[stack_id] = self.pframe(frames[0][0]) if frames else -1
        return top

    def fingerprint(self, stack_id, record, lstack_id, lang_record):
        key = (stack_id, lstack_id)
        fp = self._fingerprints.get(key)
        if fp is None:
            fp = self._fingerprints[key] = computed_fingerprint(record, self.resolve, self.skip,
                                                                lang_record)
        return fp


def _extras(records):
    """The fields of a stall's records that have no column, merged (a later
    record adds fields, never removes them), capped in size."""
    extra = {}
    for r in records:
        for k, v in r.obj.items():
            if k not in _STALL_FIELDS:
                extra[k] = v
    if len(records) > 1:
        # [capture, blocked_ms, time, frames, capture_error] per record
        extra["captures"] = [
            [r.obj.get("capture"), r.obj.get("blocked_ms"), r.obj.get("time"), len(r.frames),
             r.obj.get("capture_error")]
            for r in records
        ]
    if not extra:
        return None
    extra = _clean(extra)
    text = json.dumps(extra, ensure_ascii=False, default=str)
    if len(text) > MAX_EXTRA_CHARS:
        extra = {k: v for k, v in extra.items() if len(json.dumps(v, default=str)) < 256}
        extra["(truncated)"] = "fields over %d bytes are left out of the page" % 256
    return extra


def build(records, resolve, skip, bad, meta):
    """The page's data. records: every good Record, in input order; bad:
    [(where, reason)] of the skipped lines; meta: shown as is (inputs,
    lookup tool, thresholds)."""
    b = _Builder(resolve, skip)
    stalls = {}
    other_types = Counter()
    metrics = []
    summaries = []
    dropped = 0
    counts = Counter()

    for r in records:
        obj = r.obj
        kind = r.type
        counts[kind if kind in ("start", "stall", "stall_end", "metrics", "summary")
               else "other"] += 1
        d = obj.get("dropped")
        if isinstance(d, int) and not isinstance(d, bool) and d > 0:
            dropped += d
        if kind in ("stall", "stall_end"):
            stall_id = obj.get("stall_id")
            key = (_scalar(obj.get("run_id")), _scalar(obj.get("pid")),
                   _scalar(stall_id) if stall_id is not None else ("line", r.where))
            st = stalls.get(key)
            if st is None:
                st = stalls[key] = _Stall(key, len(stalls))
            if kind == "stall":
                st.records.append(r)
            else:
                st.end = r
        elif kind == "start":
            run = b.runs.items[b.run(obj)]
            for k in ("host", "executable", "uvstall_version", "options", "time", "loop"):
                if k in obj and k not in run:
                    run[k] = _clean(obj[k])
        elif kind == "metrics":
            metrics.append(r)
        elif kind == "summary":
            if len(summaries) < MAX_SUMMARY_RECORDS:
                summaries.append(_clean(obj))
        else:
            other_types[str(kind)] += 1

    cols = {k: [] for k in ("t", "dur", "blk", "thr", "end", "st", "ls", "g", "cap",
                            "cause", "run", "tid", "loop", "sid", "hus")}
    extras = {}
    ordered = sorted(stalls.values(), key=lambda s: s.order)
    for st in ordered:
        first = st.records[0] if st.records else None
        head = first.obj if first is not None else st.end.obj
        stack_rec = st.stack_record()
        blocked = max((_number(r.obj.get("blocked_ms")) or 0.0 for r in st.records),
                      default=None)
        end_ms = _number(st.end.obj.get("duration_ms")) if st.end is not None else None
        duration = end_ms if end_ms is not None else (blocked or 0.0)
        # When the stall started: the first record's time less how long the
        # loop had been blocked then; for a stall known only by its end,
        # the end's time less its duration.
        if first is not None:
            t = epoch_ms(head.get("time"))
            first_blocked = _number(first.obj.get("blocked_ms")) or 0.0
            start = t - first_blocked if t is not None else None
        else:
            t = epoch_ms(head.get("time"))
            start = t - duration if t is not None else None

        stack_id = b.stack(stack_rec) if stack_rec is not None else -1
        lang_rec = next((r for r in st.records if r.lang_frames), None)
        lstack_id = b.lstack(lang_rec) if lang_rec is not None else -1
        fp = next((r.obj["fingerprint"] for r in st.records
                   if isinstance(r.obj.get("fingerprint"), str) and r.obj["fingerprint"]), None)
        computed = fp is None
        if computed:
            if stack_rec is not None or lang_rec is not None:
                fp = b.fingerprint(stack_id, stack_rec, lstack_id, lang_rec)
            else:
                fp = "no-stack" if first is not None else "no-stall-record"
        cause = next((r.obj["cause"] for r in st.records
                      if isinstance(r.obj.get("cause"), str)), None)
        gi = b.groups.add((fp, computed), {
            "fp": fp, "computed": computed,
            "top": b.culprit_pframe(stack_id, stack_rec) if stack_rec is not None else -1,
            "st": -1, "py": -1,
        })
        group = b.groups.items[gi]
        if group["st"] < 0:
            group["st"] = stack_id
        if lang_rec is not None and group["py"] < 0:
            group["py"] = b.lstacks.items[lstack_id][0]
        if group["top"] < 0 and stack_rec is None and first is not None:
            group["nostack"] = first.obj.get("capture")

        run_i = b.run(head)
        b.runs.items[run_i]["stalls"] += 1
        capture = (stack_rec or first).obj.get("capture") if first is not None else None
        cols["t"].append(_round(start, 1))
        cols["dur"].append(_round(duration))
        cols["blk"].append(_round(blocked))
        cols["thr"].append(_number(head.get("threshold_ms")))
        cols["end"].append(b.s(st.end.obj.get("ended_by")) if st.end is not None else -1)
        cols["st"].append(stack_id)
        cols["ls"].append(lstack_id)
        cols["g"].append(gi)
        cols["cap"].append(b.s(capture if first is not None else "(no stall record)"))
        cols["cause"].append(b.s(cause))
        cols["run"].append(run_i)
        cols["tid"].append(_scalar(head.get("tid")))
        cols["loop"].append(b.s(head.get("loop")))
        cols["sid"].append(_scalar(head.get("stall_id")))
        # the signal handler's time of the capture whose stack is shown
        cols["hus"].append(_number((stack_rec.obj if stack_rec is not None else head)
                                   .get("handler_us")))
        extra = _extras(st.records)
        if extra is not None:
            extras[len(cols["t"]) - 1] = extra
    cols["x"] = extras

    mcols = {k: [] for k in ("t", "run", "loop") + METRIC_FIELDS}
    for r in metrics:
        t = epoch_ms(r.obj.get("time"))
        if t is None:
            continue
        mcols["t"].append(_round(t, 1))
        mcols["run"].append(b.run(r.obj))
        mcols["loop"].append(b.s(r.obj.get("loop")))
        for k in METRIC_FIELDS:
            mcols[k].append(_number(r.obj.get(k)))

    return {
        "meta": meta,
        "counts": {
            "records": len(records) + len(bad),
            "bad": len(bad),
            "stall_records": counts["stall"],
            "stall_ends": counts["stall_end"],
            "starts": counts["start"],
            "metrics": counts["metrics"],
            "summaries": counts["summary"],
            "other_types": dict(other_types),
            "dropped": dropped,
        },
        "bad": [list(x) for x in bad[:MAX_BAD_EXAMPLES]],
        "skip": list(skip.patterns),
        "runs": b.runs.items,
        "summaries": summaries,
        "strs": b.strs.items,
        "mods": b.modules.items,
        "pf": b.pframes.items,
        "st": b.stacks.items,
        "lf": b.lframes.items,
        "lst": b.lstacks.items,
        "groups": b.groups.items,
        "stalls": cols,
        "metrics": mcols,
    }
