"""The symbolizer's four outputs: text, JSON Lines, summary and folded."""

import json
from collections import defaultdict

from . import reports, stacks


def _ms(value):
    return "%.1f ms" % value


def _frame_lines(frame, res):
    """Text lines of one native frame: the innermost (inlined) function
    first, each inlined one marked, the owning function last."""
    where = stacks.address_name(frame)
    chain = res.chain()
    out = []
    for i, loc in enumerate(chain):
        if loc.function is None and loc.file is None:
            text = where
        else:
            name = loc.function or "??"
            if res.source == stacks.FROM_REPORT and frame.symbol_offset is not None:
                name += "+0x%x" % frame.symbol_offset
            if loc.file:
                text = "%s (%s:%s)" % (name, loc.file, loc.line or "?")
            else:
                text = "%s (%s)" % (name, where)
        if i < len(chain) - 1:
            text += " [inlined]"
        number = "#%d" % frame.index if i == 0 else ""
        out.append("%-4s %s" % (number, text))
    return out


def text(record, resolve, ends):
    obj = record.obj
    head = ["stall %s" % obj.get("stall_id", "?"), str(obj.get("time", "?"))]
    for key in ("pid", "tid"):
        if key in obj:
            head.append("%s %s" % (key, obj[key]))
    if "loop" in obj:
        head.append("loop %s" % json.dumps(obj["loop"], ensure_ascii=False))
    blocked = reports.blocked_ms(record)
    timing = "blocked %s" % (_ms(blocked) if blocked is not None else "? ms")
    lasted = ends.get(reports.stall_key(obj))
    timing += ", lasted %s" % (_ms(lasted) if lasted is not None else "? (no stall_end)")
    head.append(timing)
    lines = ["  ".join(head)]

    capture = obj.get("capture")
    if capture not in (None, "ok"):
        error = obj.get("capture_error")
        lines.append("  capture %s%s" % (capture, ": %s" % error if error else ""))

    native = []
    for frame in record.frames:
        native.extend(_frame_lines(frame, resolve(frame)))
    if record.lang_frames:
        langs = sorted({lf.lang or "lang" for lf in record.lang_frames})
        lines.append("  %s:" % "/".join(langs))
        for i, lf in enumerate(record.lang_frames):
            where = "%s:%s" % (lf.file, lf.line if lf.line is not None else "?")
            lines.append("    %-4s %s (%s)" % ("#%d" % i, lf.function, where))
        lines.append("  native:")
        indent = "    "
    else:
        indent = "  "
    lines.extend(indent + line for line in native)
    if not record.frames:
        lines.append(indent + "(no native frames)")
    return "\n".join(lines) + "\n"


def _location_json(loc):
    return {"function": loc.function, "file": loc.file, "line": loc.line}


def json_line(record, resolve):
    """The record with each frame enriched; every other field kept. Records
    that are not stalls come back exactly as read."""
    if not record.is_stall:
        return record.text
    for frame, raw in zip(record.frames, record.obj["frames"]):
        res = resolve(frame)
        raw.update(function=res.function, file=res.file, line=res.line,
                   inlined=[_location_json(loc) for loc in res.inlined])
    return json.dumps(record.obj, ensure_ascii=False, separators=(",", ":"))


def summary(stalls, resolve, ends, skip, keep_all, top):
    rows = defaultdict(lambda: [0, 0.0, 0.0])  # culprit -> count, total, max
    total = 0.0
    for record in stalls:
        ms = reports.duration_ms(record, ends)
        total += ms
        row = rows[stacks.culprit(record, resolve, skip, keep_all)]
        row[0] += 1
        row[1] += ms
        row[2] = max(row[2], ms)

    out = ["%d stalls, %.1f ms in all (a stall weighs its stall_end duration_ms, "
           "else its blocked_ms)" % (len(stalls), total)]
    if keep_all:
        out.append("culprit: innermost frame; no module skipped (--keep-all-frames)")
    else:
        out.append("culprit: innermost frame outside %s (--keep-all-frames keeps them)"
                   % (", ".join(skip.patterns) or "(empty skip list)"))
    out.append("language frames (lang_frames), when a stall has them, name its culprit first")
    out.append("")
    out.append("%6s %11s %10s  %s" % ("count", "total_ms", "max_ms", "culprit"))
    ordered = sorted(rows.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0].label))
    shown = ordered if top <= 0 else ordered[:top]
    for culprit, (count, ms, most) in shown:
        label = culprit.label + (" [%s]" % culprit.lang if culprit.lang else "")
        out.append("%6d %11.1f %10.1f  %s" % (count, ms, most, label))
    if len(shown) < len(ordered):
        out.append("(%d more culprits; --top 0 shows all)" % (len(ordered) - len(shown)))
    return "\n".join(out) + "\n"


def folded(stalls, resolve, ends, skip, keep_all):
    weights = defaultdict(float)
    for record in stalls:
        stack = stacks.folded_stack(record, resolve, skip, keep_all)
        weights[";".join(stack)] += reports.duration_ms(record, ends)
    # Flame-graph tools want integer weights; a stall is never less than 1 ms.
    return "".join("%s %d\n" % (stack, max(1, round(ms)))
                   for stack, ms in sorted(weights.items()))
