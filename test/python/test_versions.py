"""One CPython version's lang_frames, read by the library's no-fault reader
(src/python_reader.cc), on real stalls of the default asyncio loop.

    test_versions.py 3.X DIR          an interpreter DIR/3.X.*/bin/python3.X
    test_versions.py 3.X --exe PATH   the interpreter PATH (must be 3.X)

DIR is a pyenv-style versions directory (meson option
python_versions_dir; else $UVSTALL_TEST_PYTHONS; else pyenv's). No such
interpreter: exit 77 (SKIP) with the reason. Needs $UVSTALL_LIBRARY and the
package on PYTHONPATH (the build's and the source tree's); runs on
/usr/bin/python3 for python3-jsonschema.

apps/versions.py runs twice, under `python -m uvstall` and with
uvstall.watch() in its code; for each culprit (time.sleep, json.loads, a
pure-Python loop) a stall record must be made while the culprit still
blocks, and its lang_frames must name the culprit's function, file and the
line of its "# BLOCKS:" mark, read by "cpython-nofault 3.X". A loop of
Python calls (a stack that moves while read) may instead have no frames
and a lang_reason; frames it has must include that line too.
"""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import pythons
from test_uvstall import marks, record_time, validate  # the same checks

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "apps", "versions.py")
# Record times have millisecond precision.
CLOCK_SLACK_S = 0.002


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


def find_interpreter(version, args):
    if args and args[0] == "--exe":
        exe = args[1]
        if not os.access(exe, os.X_OK):
            skip("no interpreter %s" % exe)
        return exe
    base = pythons.versions_dir(args[0] if args else "")
    found = sorted(glob.glob(os.path.join(base, version + ".*", "bin", "python" + version)),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p.split(os.sep)[-3])])
    if not found:
        skip("no CPython %s under %s (set -Dpython_versions_dir or $UVSTALL_TEST_PYTHONS)"
             % (version, base))
    return found[-1]  # the newest patch release


def run(exe, mode):
    """Runs the app; returns (windows by culprit, records)."""
    fd, out = tempfile.mkstemp(prefix="uvstall-ver-", suffix=".jsonl")
    os.close(fd)
    try:
        if mode == "launcher":
            cmd = [exe, "-m", "uvstall", "--output-path", out, APP, "launcher"]
        else:
            cmd = [exe, APP, "watch", out]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode != 0 or p.stderr:
            raise AssertionError("%s exited %d: %s" % (" ".join(cmd), p.returncode, p.stderr))
        windows = {}
        for line in p.stdout.splitlines():
            w = json.loads(line)
            windows[w["culprit"]] = w
        with open(out) as f:
            return windows, [json.loads(line) for line in f if line.strip()]
    finally:
        os.unlink(out)


def check(version, mode, windows, records, lines, failures):
    class Collect:  # test_uvstall.validate's test case: failures are collected
        def fail(self, msg):
            failures.append("%s: %s" % (mode, msg))
    validate(Collect(), records)
    stalls = [r for r in records if r["type"] == "stall"]
    for name, line in sorted(lines.items()):
        w = windows.get(name)
        if w is None:
            failures.append("%s: the app did not run culprit %s" % (mode, name))
            continue
        during = [r for r in stalls
                  if w["start"] - CLOCK_SLACK_S <= record_time(r) <= w["end"] + CLOCK_SLACK_S]
        if not during:
            failures.append("%s %s: no stall record while it blocked %s; records at %s" % (
                mode, name, w, [r["time"] for r in stalls]))
            continue
        r = during[0]
        reader = r.get("lang_reader", "")
        want = ("culprit_" + name, "versions.py", line)
        got = [(f.get("function"), os.path.basename(f.get("file") or ""), f.get("line"))
               for f in r.get("lang_frames") or []]
        # A stack that kept moving (the calls culprit): no frames, and it says so.
        moving = name == "calls" and not got and bool(r.get("lang_reason"))
        ok = reader.startswith("cpython-nofault %s." % version) and (want in got or moving)
        print("%-8s %-5s %s reader=%r frames=%d reason=%r %s" % (
            mode, name, "ok  " if ok else "FAIL", reader, len(got), r.get("lang_reason"),
            got[:3]))
        if not reader.startswith("cpython-nofault %s." % version):
            failures.append("%s %s: lang_reader %r is not cpython-nofault %s" % (
                mode, name, reader, version))
        if want not in got and not moving:
            failures.append("%s %s: %s not in lang_frames %s (reason %r)" % (
                mode, name, want, got, r.get("lang_reason")))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    version = sys.argv[1]
    lib = os.environ.get("UVSTALL_LIBRARY")
    if not lib or not os.path.exists(lib):
        sys.exit("UVSTALL_LIBRARY must name the built libuvstall.so.1 (got %r)" % lib)
    exe = find_interpreter(version, sys.argv[2:])
    got = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    if got != version:
        sys.exit("%s is CPython %s, not %s" % (exe, got, version))
    print("interpreter: %s" % exe)
    lines = marks(APP)
    failures = []
    for mode in ("launcher", "watch"):
        windows, records = run(exe, mode)
        check(version, mode, windows, records, lines, failures)
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
