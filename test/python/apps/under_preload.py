"""Run under uvstall-run (preload mode) on Debian's uvloop, which links the
system libuv: preload watches the loop from its first uv_run, so
uvstall.watch() in a coroutine finds the thread already watched. Prints one
JSON line: the watch's state and the libuvstall copies mapped."""

import asyncio
import json
import time

import uvloop

import uvstall


async def blocked_under_preload():
    time.sleep(0.3)  # BLOCKS: preload


async def main():
    await asyncio.sleep(0.05)
    w = uvstall.watch()
    await blocked_under_preload()
    await asyncio.sleep(0.1)
    with open("/proc/self/maps") as f:
        copies = sorted({line.split()[-1] for line in f if "libuvstall.so" in line})
    print(json.dumps({"already_watched": w.already_watched, "active": w.active,
                      "copies": copies}), flush=True)


loop = uvloop.new_event_loop()
loop.run_until_complete(main())
loop.close()
