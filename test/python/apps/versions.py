"""The culprits of the per-version tests (test_versions.py), in a program
every CPython from 3.8 on runs: the default asyncio loop, blocked by
time.sleep in a handler, json.loads of a big document, a CPU-bound
pure-Python loop, and a loop of Python calls (a stack that changes all the
time while it is read).

    versions.py launcher            (under python -m uvstall)
    versions.py watch OUTPUT_PATH   (uvstall.watch() in the code)

Each culprit blocks the loop for about BLOCK_S seconds; for each, one JSON
line on stdout: {"culprit", "start", "end"} (wall-clock seconds). The test
finds the blocking lines by their "# BLOCKS:" marks.
"""

import asyncio
import json
import sys
import time

BLOCK_S = 0.5

# Made before the loop runs: making it is no stall.
DOC = json.dumps([{"id": i, "name": "item %d" % i, "tags": ["a", "b", "c"]}
                  for i in range(20000)])


async def culprit_sleep(until):
    time.sleep(BLOCK_S)  # BLOCKS: sleep


async def culprit_json(until):
    while time.monotonic() < until: json.loads(DOC)  # BLOCKS: json


async def culprit_cpu(until):
    n = 0
    while time.monotonic() < until: n += 1  # BLOCKS: cpu
    return n


def tiny(n):
    return n + 1


async def culprit_calls(until):
    # Pushes and pops a Python frame millions of times a second while the
    # sentinel reads the stack.
    n = 0
    while time.monotonic() < until: n = tiny(n)  # BLOCKS: calls
    return n


CULPRITS = {"sleep": culprit_sleep, "json": culprit_json, "cpu": culprit_cpu,
            "calls": culprit_calls}


async def main(output_path):
    watch = None
    if output_path is not None:
        import uvstall
        watch = uvstall.watch(output_path=output_path)
    await asyncio.sleep(0.15)  # the watch is running, the loop is idle
    for name, culprit in CULPRITS.items():
        start = time.time()
        await culprit(time.monotonic() + BLOCK_S)
        print(json.dumps({"culprit": name, "start": start, "end": time.time()}), flush=True)
        await asyncio.sleep(0.25)  # the loop runs again: the stall ends
    if watch is not None:
        watch.stop()


if __name__ == "__main__":
    mode = sys.argv[1]
    asyncio.run(main(sys.argv[2] if mode == "watch" else None))
