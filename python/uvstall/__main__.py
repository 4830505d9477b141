"""python3 -m uvstall [options] (app.py | -m module) [args...]

Runs a Python program with every asyncio loop it runs watched (the default
loop and uvloop). The program sees the same sys.argv, exit status, output
and exceptions as without uvstall.

Options (the C library's names; see `--help`) are checked before the
program starts. Exit status 2 without running the program: bad options, or
libuvstall.so.1 cannot be loaded. The UVSTALL_* variables of preload mode
set the same options (see _env.py); a flag wins over a variable.
"""

import argparse
import ctypes
import os
import runpy
import sys

USAGE = "python3 -m uvstall [options] (app.py | -m module) [args...]"
EXAMPLES = """examples:
  python3 -m uvstall app.py --port 8080
  python3 -m uvstall --threshold-ms 200 --output-path stalls.jsonl app.py
  python3 -m uvstall --interval-ms 10 -m mypkg.server

Reports are JSON Lines on standard error (or --output-path), one "stall"
record while the loop is blocked, with native frames and the Python frames
of the blocked thread (lang_frames), and one "stall_end" when it is free.

environment: the UVSTALL_* variables of preload mode set the option of the
same name (UVSTALL_THRESHOLD_MS is --threshold-ms, UVSTALL_OUTPUT_PATH is
--output-path with %p = the pid, UVSTALL_SIGNAL also takes names such as
SIGUSR2); a flag wins over a variable, and a bad value gets one warning line
and the default. Not read here: UVSTALL_METRICS_* (no metrics options yet)
and UVSTALL_NO_CHILDREN (child processes are never watched).
"""

# Ranges from include/uvstall/uvstall.h, checked here so that a bad option
# stops us before the program runs; the messages are the library's own.
_LIMIT = 3600000


def _parser():
    p = argparse.ArgumentParser(
        prog="python3 -m uvstall", usage=USAGE, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a Python program with every asyncio loop watched for stalls.")
    p.add_argument("--threshold-ms", type=int, default=0, metavar="N",
                   help="report when the heartbeat is N ms late (0 = max(100, 2 x interval))")
    p.add_argument("--interval-ms", type=int, default=20, metavar="N",
                   help="heartbeat period on each loop, 1..3600000 (default 20)")
    p.add_argument("--max-frames", type=int, default=64, metavar="N",
                   help="native frames per stall, 1..256 (default 64)")
    p.add_argument("--capture-timeout-ms", type=int, default=50, metavar="N",
                   help="how long to wait for the stack, 1..10000 (default 50)")
    p.add_argument("--loop-name", default=None, metavar="NAME",
                   help="name of every loop in reports (default asyncio-N / uvloop-N)")
    p.add_argument("--output-path", default=None, metavar="FILE",
                   help="append JSON Lines here (default: standard error)")
    p.add_argument("--max-samples-per-stall", type=int, default=8, metavar="N",
                   help="records of one long stall, 1..64 (default 8)")
    p.add_argument("--abort-after-ms", type=int, default=0, metavar="N",
                   help="abort (SIGABRT, for a core dump) after a stall of N ms (default 0: off)")
    p.add_argument("--stack-window-kb", type=int, default=64, metavar="N",
                   help="KiB of native stack copied per capture, 4..1024 (default 64)")
    p.add_argument("--signal", type=int, default=0, metavar="N",
                   help="capture signal (default 0 = SIGRTMAX - 3)")
    p.add_argument("--max-queued-reports", type=int, default=1024, metavar="N",
                   help="records waiting for the writer beyond N are dropped (default 1024)")
    p.add_argument("--max-stalls-per-minute", type=int, default=60, metavar="N",
                   help="stalls reported per minute, more are counted (default 60; 0: unlimited)")
    p.add_argument("--summary-interval-ms", type=int, default=60000, metavar="N",
                   help="summary record period while there are stalls (default 60000; 0: at exit)")
    p.add_argument("--version", action="store_true", help="print versions and exit")
    return p


def _split(argv):
    """Our options | the target. The target starts at the first argument that
    is not one of our options (or after `-m MODULE`, or after `--`)."""
    takes_value = {"--threshold-ms", "--interval-ms", "--max-frames",
                   "--capture-timeout-ms", "--loop-name", "--output-path",
                   "--max-samples-per-stall", "--abort-after-ms", "--signal",
                   "--max-queued-reports", "--max-stalls-per-minute",
                   "--summary-interval-ms", "--stack-window-kb"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[:i], None, argv[i + 1:]
        if a == "-m":
            if i + 1 >= len(argv):
                return argv[:i], "-m", []
            return argv[:i], argv[i + 1], argv[i + 2:]
        if a.startswith("-m") and len(a) > 2 and not a.startswith("--"):
            return argv[:i], a[2:], argv[i + 1:]
        if not a.startswith("-") or a == "-":
            return argv[:i], None, argv[i:]
        i += 2 if a in takes_value else 1
    return argv, None, []


def _check_options(lib, o):
    """The library's message for the first bad option, or None."""
    if not 1 <= o.interval_ms <= _LIMIT:
        return lib.message(-3)
    if o.threshold_ms != 0 and not 2 * o.interval_ms <= o.threshold_ms <= _LIMIT:
        return lib.message(-4)
    if not 1 <= o.max_frames <= 256:
        return lib.message(-5)
    if not 1 <= o.capture_timeout_ms <= 10000:
        return lib.message(-6)
    if o.loop_name is not None and len(o.loop_name.encode("utf-8", "surrogateescape")) > 63:
        return lib.message(-7)
    if o.output_path is not None:
        try:
            with open(o.output_path, "a"):
                pass
        except OSError as e:
            return "%s (%s)" % (lib.message(-8), e)
    if not 1 <= o.max_samples_per_stall <= 64:
        return lib.message(-19)
    threshold = o.threshold_ms or max(100, 2 * o.interval_ms)
    if o.abort_after_ms != 0 and not threshold <= o.abort_after_ms <= _LIMIT:
        return lib.message(-20)
    if not 4 <= o.stack_window_kb <= 1024:
        return lib.message(-29)
    if not 1 <= o.max_queued_reports <= 1000000:
        return lib.message(-12)
    if not 0 <= o.max_stalls_per_minute <= 1000000:
        return lib.message(-21)
    if o.summary_interval_ms != 0 and not 100 <= o.summary_interval_ms <= 86400000:
        return lib.message(-22)
    return None


def _trimmed(tb):
    """The traceback from the program's first frame on (runpy and this file
    are not the program's)."""
    here = os.path.abspath(__file__)
    while tb is not None:
        f = tb.tb_frame.f_code.co_filename
        if os.path.abspath(f) == here or "runpy" in os.path.basename(f):
            tb = tb.tb_next
            continue
        break
    return tb


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, module, rest = _split(argv)
    parser = _parser()
    from . import _env, _lib
    env_values, env_warnings = _env.read()
    env_output = env_values.pop("output_path", None)
    parser.set_defaults(**env_values)
    o = parser.parse_args(ours)
    if o.output_path is None and env_output is not None:
        # As preload mode does: a file that cannot be opened is said, and
        # the reports go to stderr (a bad --output-path is an error).
        try:
            with open(env_output, "a"):
                pass
            o.output_path = env_output
        except OSError:
            env_warnings.append("uvstall: ignoring UVSTALL_OUTPUT_PATH=\"%s\": cannot open %s "
                                "for appending; using the default, standard error" % (
                                    _env.quote(os.environb[b"UVSTALL_OUTPUT_PATH"]),
                                    _env.quote(os.fsencode(env_output))))
    # Under preload mode the shim reads the metrics variables itself.
    try:
        ctypes.CDLL(_lib.SONAME, mode=os.RTLD_NOLOAD)
    except OSError:
        for name in _env.NOT_READ:
            if os.environ.get(name):
                env_warnings.append("uvstall: ignoring %s: python3 -m uvstall has no metrics "
                                    "options (preload mode reads it)" % name)
    for w in env_warnings:
        sys.stderr.write(w + "\n")
    import uvstall
    try:
        lib = uvstall.library()
    except uvstall.LibraryNotFound as e:
        sys.stderr.write("uvstall: %s\n" % e)
        return 2
    if o.version:
        sys.stdout.write("uvstall %s (library %s, %s)\n" % (
            uvstall.version(), lib.path, sys.version.split()[0]))
        return 0
    if module == "-m":
        parser.error("-m needs a module name")
    if module is None and not rest:
        parser.error("no program to run (app.py or -m module)")
    err = _check_options(lib, o)
    if err is not None:
        sys.stderr.write("uvstall: %s\n" % err)
        return 2
    if (o.signal, o.max_queued_reports, o.max_stalls_per_minute,
            o.summary_interval_ms) != (0, 1024, 60, 60000):
        try:
            uvstall.configure(signal=o.signal, max_queued_reports=o.max_queued_reports,
                              max_stalls_per_minute=o.max_stalls_per_minute,
                              summary_interval_ms=o.summary_interval_ms)
        except uvstall.UvstallError as e:
            sys.stderr.write("%s\n" % e)
            return 2
    if module is None and not os.path.exists(rest[0]):
        sys.stderr.write("uvstall: can't open file %r: no such file\n" % rest[0])
        return 2

    from . import _autowatch
    _autowatch.install(threshold_ms=o.threshold_ms, interval_ms=o.interval_ms,
                       max_frames=o.max_frames, capture_timeout_ms=o.capture_timeout_ms,
                       loop_name=o.loop_name, output_path=o.output_path,
                       max_samples_per_stall=o.max_samples_per_stall,
                       abort_after_ms=o.abort_after_ms,
                       stack_window_kb=o.stack_window_kb)

    # As `python3 app.py` / `python3 -m module` would: argv, sys.path[0],
    # a fresh __main__.
    try:
        if module is not None:
            sys.argv = [module] + rest
            sys.path[0] = os.getcwd()
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(rest)
            sys.path[0] = os.path.dirname(os.path.abspath(rest[0]))
            runpy.run_path(rest[0], run_name="__main__")
    except SystemExit:
        raise
    except Exception as e:
        # Printed as Python prints an uncaught exception, without our frames.
        tb = _trimmed(e.__traceback__)
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
