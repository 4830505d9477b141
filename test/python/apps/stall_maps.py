"""A real stall (time.sleep(0.3) in a loop callback), then one JSON line on
stdout: the interpreter's version and every uvstall library mapped in this
process (from /proc/self/maps), for tests that check which copy was used.
Runs on any CPython 3.6+."""

import asyncio
import json
import sys
import time


def block():
    time.sleep(0.3)


async def main():
    asyncio.get_event_loop().call_soon(block)
    await asyncio.sleep(0.5)


loop = asyncio.new_event_loop()
loop.run_until_complete(main())
loop.close()
with open("/proc/self/maps") as f:
    libs = sorted({line.split()[-1] for line in f if "libuvstall" in line})
print(json.dumps({"python": sys.version.split()[0], "libs": libs}))
