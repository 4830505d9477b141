#!/usr/bin/env python3
"""Writes synthetic uvstall stall reports about real binaries, for measuring
uvstall-symbolize on many reports.

Each frame points into a function (from `nm`) of one of the given modules,
with the module's real build-id, so every address is looked up for real.
Stacks are drawn from a pool of --stacks distinct stacks (real stall logs
repeat the same few stacks); --stacks 0 makes every report's stack distinct,
the worst case for the symbolizer.

  make_reports.py --count 1000 --frames 64 --module ./stall_app \
      --module /lib/x86_64-linux-gnu/libc.so.6 > reports.jsonl
"""

import argparse
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from uvstall_tools import elf  # noqa: E402


def functions(path):
    """(address, size) of the sized function symbols of `path`."""
    for extra in ([], ["-D"]):
        out = subprocess.run(["nm", "-S", "--defined-only"] + extra + [path],
                             capture_output=True, text=True).stdout
        found = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] in "tTwW" and int(parts[1], 16) > 1:
                found.append((int(parts[0], 16), int(parts[1], 16)))
        if found:
            return found
    sys.exit("make_reports.py: no sized function symbols in %s" % path)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1000, help="stall reports (default 1000)")
    p.add_argument("--frames", type=int, default=64, help="frames per report (default 64)")
    p.add_argument("--stacks", type=int, default=50,
                   help="distinct stacks to draw from; 0: all distinct (default 50)")
    p.add_argument("--module", action="append", required=True, help="an ELF file (repeatable)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    rng = random.Random(args.seed)
    modules = []
    for path in args.module:
        path = os.path.abspath(path)
        modules.append((path, elf.read_info(path).build_id, functions(path)))

    def frame(index):
        path, build_id, funcs = rng.choice(modules)
        start, size = rng.choice(funcs)
        offset = start + rng.randrange(1, size)
        return {"pc": "0x%x" % (0x7f0000000000 + offset), "module": path,
                "offset": "0x%x" % offset, "build_id": build_id,
                "symbol": None, "symbol_offset": None}

    pool = [[frame(i) for i in range(args.frames)] for _ in range(args.stacks)]
    out = sys.stdout
    for n in range(args.count):
        frames = rng.choice(pool) if pool else [frame(i) for i in range(args.frames)]
        record = {"type": "stall", "version": 1, "time": "2026-11-25T12:40:01.123Z",
                  "run_id": "bench", "pid": 1, "tid": 1, "loop": "main", "stall_id": n,
                  "threshold_ms": 100, "blocked_ms": 100.0 + n % 400, "capture": "ok",
                  "frames": frames}
        out.write(json.dumps(record, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
