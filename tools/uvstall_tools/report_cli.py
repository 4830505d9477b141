"""uvstall-report: the command line. Reads stall reports, looks their frames
up the way uvstall-symbolize does (same package, same options, same skip
list), and writes one self-contained HTML page: no file or network access
is needed to view it.
"""

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

from . import report_model, report_page
from .symbolize_cli import (EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, MAX_BAD_WARNINGS, Diagnostics,
                            Parser,
                            add_lookup_arguments, check_lookup_arguments, load_skip_list,
                            make_resolver, read_inputs)

PROG = "uvstall-report"
DEFAULT_OUTPUT = "uvstall-report.html"

EPILOG = """\
examples:
  uvstall-report stalls.jsonl -o report.html
      the page: timeline, culprits, flame graph, every stall's samples and stacks
  uvstall-report run1.jsonl run2.jsonl -o both.html
      several runs (or hosts) on one page
  uvstall-report --debug-dir ./debug stalls.jsonl -o report.html
      a stripped production binary, its debug file in ./debug/.build-id/xx/rest.debug
  uvstall-report --no-lookup stalls.jsonl -o report.html
      look nothing up: the symbols in the reports, else module+offset
  uvstall-report --lag-alert-ms 50 --p99-alert-ms 100 stalls.jsonl
      draw your own alert thresholds on the timeline

The page needs no network and no other file: mail it, attach it to an issue.
Frames are looked up as by uvstall-symbolize (see docs/symbolize.md); culprits
skip the modules in skip-modules.txt. docs/report-viewer.md explains the page.

exit status:
  0  the page was written; every line was used, every module found
  1  the page was written, but some lines were skipped (counted on the page)
     or some modules could not be looked up; stderr says which
  2  usage error: bad option, unreadable input, no input; no page written
"""


class _Diagnostics(Diagnostics):
    """Names the first bad lines on stderr and counts the rest (the page
    lists the first report_model.MAX_BAD_EXAMPLES of them); keeps them all
    for the page."""

    def __init__(self):
        super().__init__(prog=PROG)
        self.bad = []

    def bad_line(self, where, reason):
        self.bad.append((where, reason))
        super().bad_line(where, reason)


def parse_args(argv):
    p = Parser(
        prog=PROG,
        description="Draw uvstall's JSON Lines stall reports as one self-contained HTML "
                    "page: when the loop stalled and for how long, which code is "
                    "responsible, a flame graph of the blocked time, and every stall's "
                    "native and Python stacks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="FILE",
                   help="JSON Lines stall reports; '-' reads stdin")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="FILE",
                   help="the page to write (default %s; '-' writes stdout)" % DEFAULT_OUTPUT)
    p.add_argument("--title", help="the page's title (default: the input file names)")
    p.add_argument("--lag-alert-ms", type=float, default=100.0, metavar="MS",
                   help="alert line: loop lag above MS (default 100) ...")
    p.add_argument("--lag-alert-for-s", type=float, default=30.0, metavar="S",
                   help="... for S seconds (default 30)")
    p.add_argument("--p99-alert-ms", type=float, default=200.0, metavar="MS",
                   help="alert line: p99 lag above MS (default 200)")
    add_lookup_arguments(p)
    args = p.parse_args(argv)
    for name in ("lag_alert_ms", "lag_alert_for_s", "p99_alert_ms"):
        if not getattr(args, name) > 0:
            p.error("--%s must be more than 0" % name.replace("_", "-"))
    return args


def _lookup_name(args, resolver):
    if args.no_lookup:
        return "none (--no-lookup): report symbols, else module+offset"
    if resolver.symbolizer is None:
        return "none installed (llvm-symbolizer or addr2line): report symbols, else module+offset"
    return resolver.symbolizer.kind


def _write(path, text):
    """Writes the page whole or not at all: a reader never sees half."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".uvstall-report-", suffix=".html", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None, script_dir=None):
    began = time.monotonic()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    script_dir = script_dir or os.path.dirname(os.path.realpath(sys.argv[0]))
    if not args.inputs and sys.stdin is not None and sys.stdin.isatty():
        sys.stderr.write("%s: no input: name a JSON Lines file, or '-' for stdin "
                         "(see --help)\n" % PROG)
        return EXIT_USAGE
    skip = load_skip_list(args, script_dir, prog=PROG)
    status = check_lookup_arguments(args, prog=PROG)
    if status is not None:
        return status
    if args.output != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        sys.stderr.write("%s: cannot write %s: no such directory\n" % (PROG, args.output))
        return EXIT_USAGE

    diag = _Diagnostics()
    names, records = read_inputs(args.inputs, diag, prog=PROG, frame_cache={})
    if len(diag.bad) > MAX_BAD_WARNINGS:
        diag.warn(None, "%d more bad lines skipped (all counted on the page)"
                  % (len(diag.bad) - MAX_BAD_WARNINGS))

    resolver = make_resolver(args, diag)
    resolver.run([r for r in records if r.is_stall])
    meta = {
        "title": args.title or ", ".join(os.path.basename(n) for n in names),
        "inputs": names,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lookup": _lookup_name(args, resolver),
        "lag_alert_ms": args.lag_alert_ms,
        "lag_alert_for_s": args.lag_alert_for_s,
        "p99_alert_ms": args.p99_alert_ms,
    }
    data = report_model.build(records, resolver, skip, diag.bad, meta)
    page = report_page.render(data)
    try:
        _write(args.output, page)
    except OSError as e:
        sys.stderr.write("%s: cannot write %s: %s\n" % (PROG, args.output, e.strerror))
        return EXIT_USAGE
    if args.output != "-":
        stalls = len(data["stalls"]["t"])
        suppressed = data["counts"]["suppressed"]
        sys.stderr.write("%s: wrote %s: %d stall%s, %d culprit%s, %d bad line%s skipped%s "
                         "(%.1f s)\n" % (
                             PROG, args.output, stalls, "" if stalls == 1 else "s",
                             len(data["groups"]), "" if len(data["groups"]) == 1 else "s",
                             len(diag.bad), "" if len(diag.bad) == 1 else "s",
                             ", %d suppressed (over the rate limit, in the summaries)"
                             % suppressed if suppressed else "",
                             time.monotonic() - began))
    return EXIT_SKIPPED if diag.lossy else EXIT_OK
