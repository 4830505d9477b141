"""The UVSTALL_* environment variables, read by `python3 -m uvstall` as
preload mode reads them (src/env.cc): the same names, ranges, defaults and
one-line warnings ("uvstall: ignoring NAME="VALUE": accepted ...; using the
default ..."). The launcher uses the values as its flags' defaults, so a
flag wins over a variable.

Read here: every variable that has a `python3 -m uvstall` flag of the same
name (UVSTALL_THRESHOLD_MS <-> --threshold-ms, ...). Not read: the metrics
variables (UVSTALL_METRICS_INTERVAL_MS, _ADDR, _FILE: the package has no
metrics options; `python3 -m uvstall` says once that it ignores them) and
UVSTALL_NO_CHILDREN (the package never watches child processes: a child is
watched only when it is itself started with `python3 -m uvstall`).

Keep the table in step with kNumericVars in src/env.cc.
"""

import os
import signal

# name, min, max, min_nonzero, accepted, default text, option (the flag's
# dest); min_nonzero: values 1..min_nonzero-1 are refused too (0 is off).
_NUMERIC = [
    ("UVSTALL_INTERVAL_MS", 1, 3600000, 0, "1..3600000 (milliseconds)", "20", "interval_ms"),
    ("UVSTALL_THRESHOLD_MS", 0, 3600000, 0,
     "0 (automatic) or 2 x interval..3600000 (milliseconds)",
     "0 (automatic: max(100, 2 x interval))", "threshold_ms"),
    ("UVSTALL_MAX_FRAMES", 1, 256, 0, "1..256", "64", "max_frames"),
    ("UVSTALL_CAPTURE_TIMEOUT_MS", 1, 10000, 0, "1..10000 (milliseconds)", "50",
     "capture_timeout_ms"),
    ("UVSTALL_MAX_QUEUED_REPORTS", 1, 1000000, 0, "1..1000000", "1024", "max_queued_reports"),
    ("UVSTALL_MAX_SAMPLES_PER_STALL", 1, 64, 0, "1..64", "8", "max_samples_per_stall"),
    ("UVSTALL_ABORT_AFTER_MS", 0, 3600000, 0, "0 (off) or threshold..3600000 (milliseconds)",
     "0 (off)", "abort_after_ms"),
    ("UVSTALL_MAX_STALLS_PER_MINUTE", 0, 1000000, 0, "0 (unlimited)..1000000", "60",
     "max_stalls_per_minute"),
    ("UVSTALL_SUMMARY_INTERVAL_MS", 0, 86400000, 100,
     "0 (at stop and exit only) or 100..86400000 (milliseconds)", "60000",
     "summary_interval_ms"),
    ("UVSTALL_STACK_WINDOW_KB", 4, 1024, 0, "4..1024 (KiB)", "64", "stack_window_kb"),
]

# Read by preload mode only (see the module docstring).
NOT_READ = ("UVSTALL_METRICS_INTERVAL_MS", "UVSTALL_METRICS_ADDR", "UVSTALL_METRICS_FILE")

_MAX_QUOTED = 80  # kMaxQuotedValueBytes in src/env.h


def quote(value):
    """The value as env.cc quotes it: printable ASCII as is, \\" and \\\\,
    other bytes as \\xHH, cut at 80 bytes with "... (N bytes)"."""
    out = ""
    n = 0
    for n, c in enumerate(value):
        if len(out) >= _MAX_QUOTED:
            break
        if c in b'"\\':
            out += "\\" + chr(c)
        elif 0x20 <= c < 0x7f:
            out += chr(c)
        else:
            out += "\\x%02x" % c
    else:
        return out
    return out + "... (%d bytes)" % len(value)


def warning(name, value, accepted, default):
    return 'uvstall: ignoring %s="%s": accepted %s; using the default %s' % (
        name, quote(value), accepted, default)


def _u32(text):
    """Decimal digits only: no sign, no spaces, no suffix."""
    if not text or not all(0x30 <= c <= 0x39 for c in text):
        return None
    n = int(text)
    return n if n <= 0xFFFFFFFF else None


def _usable(sig):
    return sig in (signal.SIGUSR1, signal.SIGUSR2) or signal.SIGRTMIN <= sig <= signal.SIGRTMAX


def parse_signal(text):
    """A signal by number or name (SIGUSR1, USR2, SIGRTMIN+2, RTMAX-3), as
    env.cc's parse_signal; None if uvstall cannot use it."""
    s = text.decode("ascii", "replace")
    if s.startswith("SIG"):
        s = s[3:]
    sig = -1
    if s == "USR1":
        sig = signal.SIGUSR1
    elif s == "USR2":
        sig = signal.SIGUSR2
    elif s[:5] in ("RTMIN", "RTMAX"):
        low = s[4] == "N"
        rest = s[5:]
        if not rest:
            sig = signal.SIGRTMIN if low else signal.SIGRTMAX
        elif rest[0] == ("+" if low else "-"):
            n = _u32(rest[1:].encode())
            if n is not None and n <= signal.SIGRTMAX - signal.SIGRTMIN:
                sig = signal.SIGRTMIN + n if low else signal.SIGRTMAX - n
    elif s.encode() == text:
        n = _u32(text)
        if n is not None and n < 1024:
            sig = n
    return sig if _usable(sig) else None


def expand_output_path(path, pid):
    """%p is the pid, %% a percent sign (as in preload mode)."""
    out = ""
    i = 0
    while i < len(path):
        if path[i] == "%" and path[i + 1:i + 2] in ("p", "%"):
            out += str(pid) if path[i + 1] == "p" else "%"
            i += 2
        else:
            out += path[i]
            i += 1
    return out


def read(environ=None):
    """(values, warnings): values maps flag dests (threshold_ms, ...,
    output_path, signal) to what the variables set; warnings are the lines
    to print, one per bad variable (whose default then stands)."""
    env = os.environb if environ is None else environ
    values = {}
    warnings = []
    for name, low, high, min_nonzero, accepted, default, dest in _NUMERIC:
        text = env.get(name.encode())
        if text is None:
            continue
        n = _u32(text)
        if n is None or not low <= n <= high or (n != 0 and n < min_nonzero):
            warnings.append(warning(name, text, accepted, default))
            continue
        values[dest] = n
    # The threshold's range depends on the interval (given above or default).
    interval = values.get("interval_ms", 20)
    threshold = values.get("threshold_ms", 0)
    if threshold != 0 and threshold < 2 * interval:
        warnings.append(warning(
            "UVSTALL_THRESHOLD_MS", env[b"UVSTALL_THRESHOLD_MS"],
            "0 (automatic) or %d..3600000 (at least 2 x UVSTALL_INTERVAL_MS)" % (2 * interval),
            "0 (automatic: max(100, 2 x interval))"))
        del values["threshold_ms"]
        threshold = 0
    # And the abort's on the threshold in force (given or automatic).
    threshold = threshold or min(max(100, 2 * interval), 3600000)
    abort = values.get("abort_after_ms", 0)
    if abort != 0 and abort < threshold:
        warnings.append(warning(
            "UVSTALL_ABORT_AFTER_MS", env[b"UVSTALL_ABORT_AFTER_MS"],
            "0 (off) or %d..3600000 (at least the threshold)" % threshold, "0 (off)"))
        del values["abort_after_ms"]

    text = env.get(b"UVSTALL_SIGNAL")
    if text is not None:
        sig = parse_signal(text)
        if sig is not None:
            values["signal"] = int(sig)
        else:
            warnings.append(warning(
                "UVSTALL_SIGNAL", text,
                "SIGUSR1, SIGUSR2, SIGRTMIN..SIGRTMAX (%d..%d), by name or number" % (
                    signal.SIGRTMIN, signal.SIGRTMAX),
                "SIGRTMAX-3 (%d)" % (signal.SIGRTMAX - 3)))

    text = env.get(b"UVSTALL_OUTPUT_PATH")
    if text:
        values["output_path"] = expand_output_path(os.fsdecode(text), os.getpid())
    return values, warnings
