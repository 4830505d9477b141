"""An asyncio program whose coroutines block its loop in the classic ways.

    culprits.py LOOP CULPRITS [URL]

LOOP is asyncio (asyncio.run), uvloop-install (uvloop.install() then
asyncio.run) or uvloop-new (uvloop.new_event_loop() + run_until_complete).
CULPRITS is a comma-separated list of sleep, http, json, re, read; http
needs URL, a local server that answers slowly. Each blocks the loop for
about BLOCK_S seconds; the CPU and file culprits repeat their work until
then, so the stall lasts long enough on any machine. For each, one JSON
line on stdout: {"culprit", "start", "end"} (wall-clock seconds).
The test finds the blocking lines by their "# BLOCKS:" marks.
"""

import asyncio
import json
import os
import re
import sys
import tempfile
import time
import urllib.request

BLOCK_S = 0.4

# Inputs are made before the loop runs, so making them is no stall.
DOC = json.dumps([{"id": i, "name": "item %d" % i, "tags": ["a", "b", "c"]}
                  for i in range(20000)])
TEXT = " ".join("user%d@example%d.com filler words here" % (i, i % 97)
                for i in range(20000))
EMAIL = re.compile(r"(\w+)@(\w+)\.com")
BIG_FILE_BYTES = 32 << 20
BUF = bytearray(BIG_FILE_BYTES)  # read into, so reading allocates nothing


async def culprit_sleep():
    time.sleep(BLOCK_S)  # BLOCKS: sleep


async def culprit_http(url):
    urllib.request.urlopen(url, timeout=10).read()  # BLOCKS: http


async def culprit_json(until):
    while time.monotonic() < until: json.loads(DOC)  # BLOCKS: json


async def culprit_re(until):
    while time.monotonic() < until: EMAIL.findall(TEXT)  # BLOCKS: re


async def culprit_read(path, until):
    with open(path, "rb", buffering=0) as f:
        while time.monotonic() < until: f.seek(0); f.readinto(BUF)  # BLOCKS: read


async def main(culprits, url, big_file):
    await asyncio.sleep(0.15)  # the watch is running, the loop is idle
    for name in culprits:
        start = time.time()
        until = time.monotonic() + BLOCK_S
        if name == "sleep":
            await culprit_sleep()
        elif name == "http":
            await culprit_http(url)
        elif name == "json":
            await culprit_json(until)
        elif name == "re":
            await culprit_re(until)
        elif name == "read":
            await culprit_read(big_file, until)
        else:
            raise SystemExit("unknown culprit " + name)
        print(json.dumps({"culprit": name, "start": start, "end": time.time(),
                          "loop": type(asyncio.get_running_loop()).__module__}), flush=True)
        await asyncio.sleep(0.25)  # the loop runs again: the stall ends


def run(kind, culprits, url):
    big_file = None
    if "read" in culprits:
        fd, big_file = tempfile.mkstemp(prefix="uvstall-culprit-")
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1 << 20) * (BIG_FILE_BYTES >> 20))
    try:
        coro = main(culprits, url, big_file)
        if kind == "asyncio":
            asyncio.run(coro)
        elif kind == "uvloop-install":
            import uvloop
            uvloop.install()
            asyncio.run(coro)
        elif kind == "uvloop-new":
            import uvloop
            loop = uvloop.new_event_loop()
            try:
                loop.run_until_complete(coro)
            finally:
                loop.close()
        else:
            raise SystemExit("unknown loop " + kind)
    finally:
        if big_file:
            os.unlink(big_file)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2].split(","), sys.argv[3] if len(sys.argv) > 3 else None)
