"""An asyncio program that blocks its loop with time.sleep, through a known
call chain, for test_pprof.py:

    serve (a coroutine) -> handle_request -> blocking_sleep -> time.sleep

    blocking_app.py STALLS SLEEP_S

Before each stall it labels the watch with the context route=/api/items
(uvstall.set_context, so stall records carry "context"). Run it under
`python3 -m uvstall`.
"""

import asyncio
import sys
import time

import uvstall


def blocking_sleep(seconds):
    time.sleep(seconds)


def handle_request(seconds):
    blocking_sleep(seconds)


async def serve(stalls, seconds):
    await asyncio.sleep(0.1)  # the watch is running, the loop is idle
    for _ in range(stalls):
        uvstall.set_context("route", "/api/items")
        handle_request(seconds)
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2])))
