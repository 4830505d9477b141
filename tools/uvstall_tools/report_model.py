"""The report viewer's model: stall records grouped into stalls, each
stall's culprit and fingerprint, and the compact tables the page draws.

Pure: build() takes Records (see reports.py), a resolve function (Frame ->
stacks.Resolved) and a skip list, and returns a dict ready for json.dumps.
Nothing here reads files or starts processes, so tests drive it with
hand-made records.

A stall is every `stall` record with the same (run_id, pid, stall_id) --
its samples (`sample` 0 at detection, 1, 2, ... while it lasts; a capture
"late" record repeats the index of the sample that timed out) -- plus its
`stall_end`. Its duration is the stall_end's duration_ms, else its largest
blocked_ms; its cause, fingerprint and shown stack are those of its first
sample (the first that has a stack, for the stack). In the flame graph a
stall weighs its duration once, split across its samples' stacks: each
sample stands for the time from when it was taken to the next sample (the
first also for the time before it, the last for the rest of the stall).

`summary` records (process-level) are added up per run and fingerprint:
stalls over the rate limit write no stall record, and only the summaries
(and the `suppressed` counts of later records) know about them.

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
    "fingerprint", "cause", "dropped", "handler_us", "sample", "thread",
    "suppressed",
))
# A stall's other fields are kept up to this size of JSON; a bigger
# `context` would make one stall weigh more than a thousand others.
MAX_EXTRA_CHARS = 4096
MAX_BAD_EXAMPLES = 50

# The metrics series the timeline draws, and where a `metrics` record keeps
# them: the window's raw tick lateness (loop lag) quantiles. Records of an
# earlier draft of the format had them flat (p50_ms...): still read.
METRIC_FIELDS = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "utilization")
_METRIC_PATHS = {"p50_ms": ("lateness_ms", "p50"), "p95_ms": ("lateness_ms", "p95"),
                 "p99_ms": ("lateness_ms", "p99"), "max_ms": ("lateness_ms", "max"),
                 "utilization": (None, "utilization")}


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
    t = type(value)
    if t is float:
        return value if math.isfinite(value) else None
    if t is int:
        # Python's json reads integers of any size; a float has 1e308.
        return float(value) if abs(value) < 1e308 else None
    return None


# Deeper values (no record of the library's has them) are shown as a note:
# the page must not recurse as deep as a corrupt line can nest.
MAX_DEPTH = 32


def _clean(value, depth=0):
    """A JSON value the page can hold: Python's json reads NaN and Infinity,
    which JSON (and so the page) cannot; they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
        return "(nested deeper than %d levels: not shown)" % MAX_DEPTH
    if isinstance(value, dict):
        return {str(k): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
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


def _int(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


class _Stall:
    __slots__ = ("key", "records", "end", "order")

    def __init__(self, key, order):
        self.key = key
        self.records = []
        self.end = None
        self.order = order

    def samples(self):
        """The stall records by sample index (records without one count as
        sample 0), in input order within an index: a capture "late" record
        comes after the "timeout" one of its sample."""
        return sorted(self.records, key=lambda r: _int(r.obj.get("sample")) or 0)

    def stack_record(self, samples):
        for r in samples:
            if r.frames:
                return r
        return None


def flame_pieces(samples, duration):
    """How a stall's duration is split across the stacks of its samples:
    [(record, ms)], the records that carry a stack (native or Python) in the
    order they were taken. Each stands for the time from when it was taken
    (its blocked_ms) to the next one; the first also for the time before it,
    the last for the rest of the stall. The parts add up to the duration."""
    taken = [r for r in samples if r.frames or r.lang_frames]
    if not taken:
        return []
    taken.sort(key=lambda r: _number(r.obj.get("blocked_ms")) or 0.0)
    at = [min(max(_number(r.obj.get("blocked_ms")) or 0.0, 0.0), duration) for r in taken]
    at[0] = 0.0
    at.append(duration)
    pieces = [(r, max(0.0, at[i + 1] - at[i])) for i, r in enumerate(taken)]
    if not any(ms > 0 for _, ms in pieces):
        pieces = [(taken[0], duration)]
    return [(r, ms) for r, ms in pieces if ms > 0 or len(pieces) == 1]


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
        self._record_stacks = {}  # id(Record) -> stack id; the records outlive build()
        self._frame_ids = {}  # id(Frame) -> pframe id
        self._frames_kept = []

    def s(self, text):
        return -1 if text is None else self.strs.add(str(text))

    def run(self, obj):
        key = (_scalar(obj.get("run_id")), _scalar(obj.get("pid")))
        return self.runs.add(key, {"run_id": key[0], "pid": key[1], "stalls": 0})

    def _pframe_of(self, frame):
        # reports.read shares equal Frames between records: by identity first
        i = self._frame_ids[id(frame)] = self.pframe(frame)
        self._frames_kept.append(frame)  # so that no id is reused
        return i

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
        # a record's stack is asked for more than once (stall, flame
        # graph, samples): worked out once
        i = self._record_stacks.get(id(record))
        if i is None:
            by_id = self._frame_ids
            ids = tuple(by_id.get(id(f)) if id(f) in by_id else self._pframe_of(f)
                        for f in record.frames)
            i = self._record_stacks[id(record)] = self.stacks.add(ids, list(ids))
        return i

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
    """The fields of a stall's records that have no column (context, abort,
    fields added later), merged (a later record adds fields, never removes
    them), capped in size."""
    extra = {}
    for r in records:
        for k, v in r.obj.items():
            if k not in _STALL_FIELDS:
                extra[k] = v
    if not extra:
        return None
    extra = _clean(extra)
    text = json.dumps(extra, ensure_ascii=False, default=str)
    if len(text) > MAX_EXTRA_CHARS:
        extra = {k: v for k, v in extra.items() if len(json.dumps(v, default=str)) < 256}
        extra["(truncated)"] = "fields over %d bytes are left out of the page" % 256
    return extra


_THREAD_NUMBERS = ("window_ms", "cpu_ms", "runqueue_ms", "cpu_system_ms", "sentinel_late_ms")


def _thread(b, value):
    """A sample's `thread` as the page stores it: [state, syscall,
    syscall_nr, fd, window_ms, cpu_ms, runqueue_ms, cpu_system_ms,
    sentinel_late_ms], strings as indexes into strs; None without one."""
    if not isinstance(value, dict):
        return None
    def text(k):
        return b.s(value[k]) if isinstance(value.get(k), str) else -1
    return ([text("state"), text("syscall"), _int(value.get("syscall_nr")), text("fd")]
            + [_number(value.get(k)) for k in _THREAD_NUMBERS])


def _metric(obj, name):
    group, key = _METRIC_PATHS[name]
    holder = obj.get(group) if group else obj
    value = _number(holder.get(key)) if isinstance(holder, dict) else None
    return value if value is not None else _number(obj.get(name))


def _summaries(b, summaries):
    """Summary records added up per fingerprint (over every run), and per
    run: [fingerprint, culprit (strs), stalls, suppressed, total_ms, max_ms,
    runs]; and {run index: [stalls, stalls_suppressed]}."""
    per_fp = {}
    per_run = {}
    for r in summaries:
        obj = r.obj
        run_i = b.run(obj)
        tot = per_run.setdefault(run_i, [0, 0])
        tot[0] += _int(obj.get("stalls")) or 0
        tot[1] += _int(obj.get("stalls_suppressed")) or 0
        fps = obj.get("fingerprints")
        for f in fps if isinstance(fps, list) else ():
            if not isinstance(f, dict):
                continue
            fp = f.get("fingerprint") if isinstance(f.get("fingerprint"), str) else None
            row = per_fp.get(fp)
            if row is None:
                row = per_fp[fp] = [fp, -1, 0, 0, 0.0, 0.0, set()]
            if row[1] < 0 and isinstance(f.get("culprit"), str):
                row[1] = b.s(f["culprit"])
            row[2] += _int(f.get("count")) or 0
            row[3] += _int(f.get("suppressed")) or 0
            row[4] += _number(f.get("total_ms")) or 0.0
            row[5] = max(row[5], _number(f.get("max_ms")) or 0.0)
            row[6].add(run_i)
    rows = [[fp, c, n, sup, _round(tot), _round(mx), len(runs)]
            for fp, c, n, sup, tot, mx, runs in per_fp.values()]
    rows.sort(key=lambda x: (-x[4], x[0] or ""))
    return rows, per_run


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
    # `suppressed` announced by the records, per run
    announced = Counter()
    counts = Counter()

    for r in records:
        obj = r.obj
        kind = r.type
        counts[kind if kind in ("start", "stall", "stall_end", "metrics", "summary")
               else "other"] += 1
        d = obj.get("dropped")
        if isinstance(d, int) and not isinstance(d, bool) and d > 0:
            dropped += d
        sup = _int(obj.get("suppressed"))
        if sup is not None and sup > 0:
            announced[b.run(obj)] += sup
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
            summaries.append(r)
        else:
            other_types[str(kind)] += 1

    cols = {k: [] for k in ("t", "dur", "blk", "thr", "end", "st", "ls", "g", "cap",
                            "cause", "run", "tid", "loop", "sid", "hus", "fl", "cx")}
    extras = {}
    ordered = sorted(stalls.values(), key=lambda s: s.order)
    for st in ordered:
        samples = st.samples()
        first = samples[0] if samples else None
        head = first.obj if first is not None else st.end.obj
        stack_rec = st.stack_record(samples)
        blocked = max((_number(r.obj.get("blocked_ms")) or 0.0 for r in samples),
                      default=None)
        end_ms = _number(st.end.obj.get("duration_ms")) if st.end is not None else None
        duration = end_ms if end_ms is not None else (blocked or 0.0)
        # When the stall started: the first sample's time less how long the
        # loop had been blocked then; for a stall known only by its end,
        # the end's time less its duration.
        t = epoch_ms(head.get("time"))
        if first is not None:
            first_blocked = _number(first.obj.get("blocked_ms")) or 0.0
            start = t - first_blocked if t is not None else None
        else:
            start = t - duration if t is not None else None

        stack_id = b.stack(stack_rec) if stack_rec is not None else -1
        lang_rec = next((r for r in samples if r.lang_frames), None)
        lstack_id = b.lstack(lang_rec) if lang_rec is not None else -1
        fp = next((r.obj["fingerprint"] for r in samples
                   if isinstance(r.obj.get("fingerprint"), str) and r.obj["fingerprint"]), None)
        computed = fp is None
        if computed:
            if stack_rec is not None or lang_rec is not None:
                fp = b.fingerprint(stack_id, stack_rec, lstack_id, lang_rec)
            else:
                fp = "no-stack" if first is not None else "no-stall-record"
        # the cause found at detection: the first sample's
        cause = next((r.obj["cause"] for r in samples
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
        # The flame graph's weights: null when one stack (st, ls) takes the
        # whole duration, else [[st, ls, ms], ...].
        weights = {}  # (st, ls) -> ms: samples with the same stacks merged
        for r, ms in flame_pieces(samples, duration):
            k = (b.stack(r) if r.frames else -1, b.lstack(r) if r.lang_frames else -1)
            weights[k] = weights.get(k, 0.0) + ms
        fl = [[k[0], k[1], _round(ms)] for k, ms in weights.items()]
        if not fl or (len(fl) == 1 and fl[0][:2] == [stack_id, lstack_id]):
            fl = None
        cols["fl"].append(fl)
        # Each sample, in order: [capture, blocked_ms, time, frames,
        # capture_error, sample, cause, thread, st, ls, fingerprint]; null
        # for a stall of one record without sample, cause or thread.
        cx = None
        if len(samples) > 1 or any(k in r.obj for r in samples
                                   for k in ("sample", "cause", "thread")):
            cx = [[_clean(r.obj.get("capture")), _number(r.obj.get("blocked_ms")),
                   _clean(r.obj.get("time")) if isinstance(r.obj.get("time"), str) else None,
                   len(r.frames),
                   r.obj.get("capture_error") if isinstance(r.obj.get("capture_error"), str)
                   else None,
                   _int(r.obj.get("sample")),
                   b.s(r.obj["cause"]) if isinstance(r.obj.get("cause"), str) else -1,
                   _thread(b, r.obj.get("thread")),
                   b.stack(r) if r.frames else -1,
                   b.lstack(r) if r.lang_frames else -1,
                   r.obj["fingerprint"] if isinstance(r.obj.get("fingerprint"), str)
                   and r.obj["fingerprint"] != fp else None]
                  for r in samples]
        cols["cx"].append(cx)
        extra = _extras(samples)
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
            mcols[k].append(_metric(r.obj, k))

    # Stalls over the rate limit: the summaries count them, and later
    # records announce them (`suppressed`); per run the larger of the two
    # (the last announcement or summary of a run may be missing).
    sums, sum_runs = _summaries(b, summaries)
    suppressed = 0
    for run_i, run in enumerate(b.runs.items):
        in_summaries = sum_runs.get(run_i, [0, 0])
        run["suppressed"] = max(announced.get(run_i, 0), in_summaries[1])
        if run_i in sum_runs:
            run["summary_stalls"] = in_summaries[0]
        suppressed += run["suppressed"]
    by_fp = {row[0]: row for row in sums}
    for group in b.groups.items:
        row = by_fp.get(group["fp"]) if not group["computed"] else None
        if row is not None:
            group["sup"] = row[3]
    seen = {g["fp"] for g in b.groups.items if not g["computed"]}

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
            "suppressed": suppressed,
            "summary_only": sum(1 for row in sums if row[0] not in seen),
        },
        "bad": [list(x) for x in bad[:MAX_BAD_EXAMPLES]],
        "skip": list(skip.patterns),
        "runs": b.runs.items,
        # summary records per fingerprint: [fingerprint, culprit, stalls,
        # suppressed, total_ms, max_ms, runs]
        "sums": sums,
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
