"""uvstall-symbolize: the command line, and the lookup of every frame.

Input is read whole before anything is printed: addresses from all reports
are deduplicated and looked up with one symbolizer process per file, which
is what makes thousands of reports fast.
"""

import argparse
import os
import signal
import sys

from . import locate, pprof, render, reports, skiplist, stacks
from .symbolizer import BACKENDS, Symbolizer, SymbolizerError

PROG = "uvstall-symbolize"

EXIT_OK = 0
EXIT_SKIPPED = 1
EXIT_USAGE = 2

EPILOG = """\
examples:
  uvstall-symbolize stalls.jsonl
      one block per stall: header, then '#N function (file:line)' per frame
  uvstall-symbolize --debug-dir ./debug stalls.jsonl
      a stripped production binary, its debug file in ./debug/.build-id/xx/rest.debug
  DEBUGINFOD_URLS=http://debuginfod.example:8002 uvstall-symbolize stalls.jsonl
      fetch debug files by build-id (cached in ~/.cache/uvstall/debuginfod)
  uvstall-symbolize --summary stalls.jsonl
      which functions stall the loop most: count, total and max ms
  uvstall-symbolize --folded stalls.jsonl | flamegraph.pl > stalls.svg
      collapsed stacks weighted by stall ms, for any flame-graph tool
  tail -n 1000 stalls.jsonl | uvstall-symbolize --json > symbolized.jsonl
      the same records, each frame with function, file, line and inlined
  uvstall-symbolize --pprof stalls.pb.gz host1/*.jsonl host2/*.jsonl
      one pprof profile of every stall (blocked ns, stall count, labels);
      then: go tool pprof -top stalls.pb.gz (docs/pprof.md)

lookup order for a module (each file checked by build-id): the module path in
the report; DIR/.build-id/xx/rest.debug for each --debug-dir, then
/usr/lib/debug; each server in $DEBUGINFOD_URLS. A build-id mismatch is warned
about and the frame keeps the report's own symbol: never a wrong line.

exit status:
  0  every line was used and every module with a path was found
  1  output was written, but some lines were skipped (not JSON, not an
     object, broken frames) or some modules could not be looked up (missing,
     build-id mismatch, symbolizer failure); stderr says which, by line
  2  usage error: bad option, unreadable input file or skip list; --pprof
     without its packages (the one line names them), or OUT not writable
"""


# Bad lines named one by one on stderr; the rest are only counted, so a
# file of garbage gives a few lines of stderr, not one per line.
MAX_BAD_WARNINGS = 10


class Diagnostics:
    """One-line warnings on stderr; remembers whether anything was lost and
    counts the bad lines (the first MAX_BAD_WARNINGS are named)."""

    def __init__(self, stream=None, prog=PROG):
        self.stream = stream or sys.stderr
        self.prog = prog
        self.lossy = False
        self.bad_count = 0

    def warn(self, where, message, lossy=True):
        self.lossy = self.lossy or lossy
        prefix = "%s: %s: " % (self.prog, where) if where else "%s: " % self.prog
        self.stream.write(prefix + message + "\n")

    def bad_line(self, where, reason):
        self.bad_count += 1
        if self.bad_count <= MAX_BAD_WARNINGS:
            self.warn(where, reason + "; line skipped")
        else:
            self.lossy = True

    def bad_lines_total(self):
        """The one line that counts every skipped line (none if none was)."""
        if self.bad_count:
            self.warn(None, "%d bad line%s skipped%s" % (
                self.bad_count, "" if self.bad_count == 1 else "s",
                " (the first %d named above)" % MAX_BAD_WARNINGS
                if self.bad_count > MAX_BAD_WARNINGS else ""))


class Resolver:
    """Looks up every native frame of the given stalls, once per distinct
    (file, address), and answers resolve(frame) -> stacks.Resolved."""

    def __init__(self, locator, symbolizer, diagnostics):
        self.locator = locator
        self.symbolizer = symbolizer
        self.diag = diagnostics
        self._resolved = {}

    def __call__(self, frame):
        return self._resolved.get(id(frame)) or _from_report(frame)

    def run(self, stalls):
        # Each distinct (module, build-id), with the first line naming it
        # and its frames (once each: records may share Frame objects).
        modules = {}
        for record in stalls:
            for frame in record.frames:
                if frame.module and frame.lookup_offset is not None and frame.lookup_offset >= 0:
                    key = (frame.module, frame.build_id)
                    modules.setdefault(key, (record.where, {}))[1][id(frame)] = frame
        if self.locator is None or not modules:
            return

        files = {}
        for (module, build_id), (where, _) in sorted(modules.items(), key=lambda kv: kv[0][0]):
            found = self.locator.find(module, build_id)
            for problem in found.problems:
                self.diag.warn(where, problem, lossy=False)
            if found.path is not None:
                files[(module, build_id)] = found.path
            elif module.startswith("/"):
                # [vdso] and other pseudo-modules have no file to miss.
                self.diag.warn(where, "%s: no file with %s found; its frames keep the "
                               "report's symbol" % (module, "build-id " + build_id if build_id
                                                    else "that path"))
        if not files:
            return
        if self.symbolizer is None:
            self.diag.warn(None, "neither llvm-symbolizer nor addr2line is installed; "
                           "frames keep the report's symbol")
            return

        jobs = {}
        for key, path in files.items():
            jobs.setdefault(path, set()).update(f.lookup_offset for f in modules[key][1].values())
        answers = self.symbolizer.lookup_many(jobs)
        for key, path in files.items():
            answer = answers[path]
            if isinstance(answer, SymbolizerError):
                self.diag.warn(modules[key][0], str(answer))
                continue
            for frame in modules[key][1].values():
                chain = answer.get(frame.lookup_offset)
                if chain:
                    self._resolved[id(frame)] = _from_chain(frame, chain)


def _from_report(frame):
    source = stacks.FROM_REPORT if frame.symbol else None
    return stacks.Resolved(function=frame.symbol, source=source)


def _from_chain(frame, chain):
    owner = chain[-1]
    has_lines = any(loc.file for loc in chain)
    return stacks.Resolved(
        function=owner.function or frame.symbol,
        file=owner.file,
        line=owner.line,
        inlined=list(chain[:-1]),
        source=stacks.FROM_DEBUG_INFO if has_lines else stacks.FROM_SYMBOL_TABLE,
    )


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, not argparse's usage dump: the reason and where to look.
        self.exit(EXIT_USAGE, "%s: %s (see --help)\n" % (self.prog, message))


def add_lookup_arguments(p):
    """The options that say how frames are looked up and blamed; shared
    with uvstall-report so both tools take the same ones."""
    p.add_argument("--debug-dir", action="append", default=[], metavar="DIR",
                   help="look for DIR/.build-id/xx/rest.debug (repeatable; searched "
                        "before /usr/lib/debug)")
    p.add_argument("--skip-list", metavar="FILE",
                   help="the skip list to use instead of the installed skip-modules.txt")
    p.add_argument("--symbolizer", choices=BACKENDS, default="auto",
                   help="which tool looks addresses up (default: llvm-symbolizer if "
                        "installed, else addr2line)")
    p.add_argument("--no-lookup", action="store_true",
                   help="look nothing up: use only the symbol names in the reports")


def check_lookup_arguments(args, prog=PROG):
    """Returns EXIT_USAGE after one line on stderr when the lookup options
    cannot work, else None."""
    for d in args.debug_dir:
        if not os.path.isdir(d):
            sys.stderr.write("%s: --debug-dir %s is not a directory\n" % (prog, d))
            return EXIT_USAGE
    if args.symbolizer != "auto" and not args.no_lookup and Symbolizer.find(args.symbolizer) is None:
        sys.stderr.write("%s: %s is not installed\n" % (prog, args.symbolizer))
        return EXIT_USAGE
    return None


def make_resolver(args, diag):
    """The Resolver the lookup options ask for (one that looks nothing up
    for --no-lookup)."""
    if args.no_lookup:
        return Resolver(None, None, diag)
    return Resolver(locate.Locator.from_environment(args.debug_dir),
                    Symbolizer.find(args.symbolizer), diag)


def parse_args(argv):
    p = Parser(
        prog=PROG,
        description="Turn uvstall's JSON Lines stall reports into function, file:line "
                    "and inlined frames, using the build-ids in the reports to find "
                    "debug information (also for stripped binaries, on another machine).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="FILE",
                   help="JSON Lines stall reports; '-' or none reads stdin")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--json", dest="mode", action="store_const", const="json",
                      help="the records again, each frame enriched with function, file, line "
                           "and inlined; other records unchanged")
    mode.add_argument("--summary", dest="mode", action="store_const", const="summary",
                      help="top culprit functions across all stalls: count, total and max ms")
    mode.add_argument("--folded", dest="mode", action="store_const", const="folded",
                      help="collapsed stacks 'a;b;c weight', weighted by stall ms")
    mode.add_argument("--pprof", metavar="OUT",
                      help="write one gzipped pprof profile of all stalls to OUT ('-': "
                           "stdout); needs python3-protobuf, protobuf-compiler and "
                           "golang-github-google-pprof-dev (docs/pprof.md)")
    add_lookup_arguments(p)
    p.add_argument("--keep-all-frames", action="store_true",
                   help="--summary/--folded/--pprof: do not skip frames of the modules in "
                        "skip-modules.txt (libc, libuv, uvstall, ...)")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="--summary: show the N worst culprits (default 20, 0 = all)")
    p.set_defaults(mode="text")
    args = p.parse_args(argv)
    if args.pprof is not None:
        args.mode = "pprof"
    return args


def load_skip_list(args, script_dir, prog=PROG):
    """The skip list of --skip-list, else the one beside the script or
    installed; exits with EXIT_USAGE and one line when there is none."""
    candidates = [args.skip_list] if args.skip_list else skiplist.default_paths(script_dir)
    for path in candidates:
        try:
            return skiplist.SkipList.load(path)
        except FileNotFoundError:
            if args.skip_list:
                break
        except OSError as e:
            sys.stderr.write("%s: cannot read skip list %s: %s\n" % (prog, path, e.strerror))
            sys.exit(EXIT_USAGE)
    sys.stderr.write("%s: no skip list at %s (pass --skip-list FILE)\n"
                     % (prog, " or ".join(candidates)))
    sys.exit(EXIT_USAGE)


def open_inputs(names, prog=PROG):
    """(name, stream) for each input; '-' or none is stdin. Exits with
    EXIT_USAGE and one line for a file that cannot be read."""
    streams = []
    for name in names or ["-"]:
        if name == "-":
            if sys.stdin is None:
                sys.stderr.write("%s: no standard input to read\n" % prog)
                sys.exit(EXIT_USAGE)
            sys.stdin.reconfigure(encoding="utf-8", errors="replace")
            streams.append(("<stdin>", sys.stdin))
            continue
        try:
            streams.append((name, open(name, encoding="utf-8", errors="replace")))
        except OSError as e:
            sys.stderr.write("%s: cannot read %s: %s\n" % (prog, name, e.strerror))
            sys.exit(EXIT_USAGE)
    return streams


def _slimmed(recs):
    for record in recs:
        record.text = ""
        record.obj.pop("frames", None)
        yield record


def read_inputs(inputs, diag, prog=PROG, frame_cache=None, slim=False):
    """(names, records) of every input, bad lines counted by diag. Exits
    with EXIT_USAGE and one line when a file cannot be read to its end (a
    read error, not a bad line: nothing is written then). slim: each
    record drops its text and raw frames (parsed into .frames) as it is
    read, for a caller that needs neither: a log of long stacks then takes
    a sixth of the memory, and less time."""
    names, records = [], []
    for name, stream in open_inputs(inputs, prog=prog):
        names.append(name)
        try:
            recs = reports.read(stream, name, diag.bad_line, frame_cache)
            records.extend(_slimmed(recs) if slim else recs)
        except OSError as e:
            sys.stderr.write("%s: cannot read %s: %s\n" % (prog, name, e.strerror or e))
            sys.exit(EXIT_USAGE)
    return names, records


# The interpreter that has Debian's python3-protobuf (see reexec_for_pprof).
SYSTEM_PYTHON = "/usr/bin/python3"
REEXEC_MARK = "UVSTALL_PPROF_REEXEC"


def reexec_for_pprof(argv):
    """--pprof needs python3-protobuf, which is Debian's: an interpreter found
    first on PATH by the script's `#!/usr/bin/env python3` (pyenv, a venv)
    lacks it. Then run again, once (the environment marks it), under
    /usr/bin/python3; returns when that is not possible, and the caller
    says which package is missing."""
    if not pprof.protobuf_missing() or os.environ.get(REEXEC_MARK):
        return
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return
    script = os.path.abspath(sys.argv[0])
    if not os.path.isfile(script):
        return
    sys.stdout.flush()
    os.environ[REEXEC_MARK] = "1"
    try:
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, script] + list(argv))
    except OSError:
        return


def main(argv=None, script_dir=None):
    # Die quietly like other filters when the reader goes away (| head).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    script_dir = script_dir or os.path.dirname(os.path.realpath(sys.argv[0]))
    skip = (load_skip_list(args, script_dir)
            if args.mode in ("summary", "folded", "pprof") else None)
    status = check_lookup_arguments(args)
    if status is not None:
        return status
    profile_class = None
    if args.mode == "pprof":
        reexec_for_pprof(argv)
        try:
            profile_class = pprof.load_profile_class()
        except pprof.Unavailable as e:
            sys.stderr.write("%s: %s\n" % (PROG, e))
            return EXIT_USAGE

    diag = Diagnostics()
    # --pprof shares equal frames between records (reports.parse_line), so a
    # frame becomes a pprof location once, not once per record, and keeps
    # neither the lines' text nor their raw frames.
    pprof_mode = args.mode == "pprof"
    names, records = read_inputs(args.inputs, diag, frame_cache={} if pprof_mode else None,
                                 slim=pprof_mode)
    diag.bad_lines_total()
    stalls = [r for r in records if r.is_stall]

    resolver = make_resolver(args, diag)
    resolver.run(stalls)
    ends = reports.stall_durations(records)

    out = sys.stdout
    if args.mode == "json":
        for record in records:
            out.write(render.json_line(record, resolver) + "\n")
    elif args.mode == "summary":
        out.write(render.summary(stalls, resolver, ends, skip, args.keep_all_frames, args.top))
    elif args.mode == "folded":
        out.write(render.folded(stalls, resolver, ends, skip, args.keep_all_frames))
    elif args.mode == "pprof":
        profile = pprof.build(profile_class, records, resolver, ends, skip,
                              args.keep_all_frames, inputs=[n for n in names])
        try:
            pprof.write(profile, args.pprof)
        except OSError as e:
            sys.stderr.write("%s: cannot write %s: %s\n" % (PROG, args.pprof, e.strerror or e))
            return EXIT_USAGE
    else:
        out.write("\n".join(render.text(r, resolver, ends) for r in stalls))
    out.flush()
    return EXIT_SKIPPED if diag.lossy else EXIT_OK
