"""A uvloop app whose coroutine blocks 0.25 s, then raises ValueError: the
traceback on stderr and exit status 1 are Python's own, with or without
uvstall."""
import asyncio
import time

import uvloop


async def main():
    await asyncio.sleep(0.05)
    time.sleep(0.25)
    raise ValueError("boom")


loop = uvloop.new_event_loop()
try:
    loop.run_until_complete(main())
finally:
    loop.close()
