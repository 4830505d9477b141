#!/usr/bin/python3
"""bench/python_frames.py: the time the sentinel takes to read 100 Python
frames (one stall sample's lang_frames), per CPython version.

usage: bench/python_frames.py BUILD_DIR [VERSIONS_DIR] [--iterations N]

Each CPython found (VERSIONS_DIR/3.X.Y/bin/python3.X, default
$PYENV_ROOT/versions or ~/.pyenv/versions, and /usr/bin/python3) calls
120 distinct functions deep, then asks BUILD_DIR's
libuvstall.so.1 (private uvstall__lang_frames_bench) to read its frames
1 + N times with the no-fault reader, exactly as the sentinel reads a
stalled loop thread's: process_vm_readv, type checks, line tables, JSON.
The first read decodes every code object's names and line table; later
ones (a stall sampled again, the next stall in the same code) find them in
the reader's cache and read only the frames and code objects. Prints one
Markdown table: version, frames read, us of the first read, mean us of the
later ones. Target: <= 1000 us.

examples:
  bench/python_frames.py build-r
  bench/python_frames.py build-rel ~/.pyenv/versions --iterations 5000

exit status: 0 when every interpreter gave numbers, 1 with a one-line reason.
"""

import glob
import json
import os
import re
import statistics
import subprocess
import sys

RUNS = 5

# Run inside each interpreter: standard library only, 3.8 syntax.
INNER = r"""
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
f = lib.uvstall__lang_frames_bench
D = ctypes.POINTER(ctypes.c_double)
f.argtypes = [ctypes.c_int, D, D, ctypes.POINTER(ctypes.c_int)]
def bench():
    first, ns, frames = ctypes.c_double(), ctypes.c_double(), ctypes.c_int()
    if f(int(sys.argv[2]), ctypes.byref(first), ctypes.byref(ns), ctypes.byref(frames)) != 0:
        return {"version": sys.version.split()[0], "frames": 0}  # not read (out of range)
    return {"version": sys.version.split()[0], "frames": frames.value, "us": ns.value / 1000,
            "first_us": first.value / 1000}
# 120 distinct functions, so the first read decodes 100 code objects.
exec(compile("".join("def f%d():\n    return f%d()\n" % (i, i + 1) for i in range(120)) +
             "def f120():\n    return bench()\n", "chain.py", "exec"))
print(json.dumps(f0()))
"""


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if args else 2)
    iterations = 2000
    if "--iterations" in args:
        i = args.index("--iterations")
        iterations = int(args[i + 1])
        del args[i:i + 2]
    lib = os.path.join(args[0], "libuvstall.so.1")
    if not os.path.exists(lib):
        sys.exit("bench/python_frames.py: no %s (build the library first)" % lib)
    base = args[1] if len(args) > 1 else os.path.join(
        os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv"), "versions")
    exes = sorted(glob.glob(os.path.join(base, "3.*", "bin", "python3.*[0-9]")),
                  key=lambda p: [int(x) for x in re.findall(r"\d+", p.split(os.sep)[-3])])
    exes = [e for e in exes if re.search(r"python3\.\d+$", e)] + ["/usr/bin/python3"]
    rows, failed = [], []
    for exe in exes:
        runs = []
        for _ in range(RUNS):  # a first read happens once a process: several processes
            p = subprocess.run([exe, "-c", INNER, lib, str(iterations)], capture_output=True,
                               text=True, timeout=300)
            if p.returncode != 0:
                failed.append("%s: %s" % (exe, (p.stderr.strip().splitlines() or ["?"])[-1]))
                break
            runs.append(json.loads(p.stdout))
        if len(runs) < RUNS:
            continue
        r = runs[0]
        if r["frames"] == 0:
            rows.append("| %s | %s | not read (no layout table) | | |" % (r["version"], exe))
            continue
        rows.append("| %s | %s | %d | %.0f (%.0f-%.0f) | %.0f |" % (
            r["version"], exe, r["frames"], statistics.median(x["first_us"] for x in runs),
            min(x["first_us"] for x in runs), max(x["first_us"] for x in runs),
            statistics.median(x["us"] for x in runs)))
    print("Sentinel time to read one sample's Python frames (%d processes, 1 + %d reads each;"
          " target <= 1000 us)\n" % (RUNS, iterations))
    print("| CPython | interpreter | frames | first read, us: median (min-max) | later reads, us: median |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    for f in failed:
        print("\nno numbers: " + f)
    sys.exit(1 if failed or not rows else 0)


if __name__ == "__main__":
    main()
