"""Ends the way argv[1] says, from inside a coroutine, after a stall:
exit3 (sys.exit(3)), raise (an uncaught ValueError), ok (returns)."""

import asyncio
import sys
import time


async def main(how):
    print("before", how, flush=True)
    time.sleep(0.25)
    await asyncio.sleep(0.05)
    if how == "exit3":
        sys.exit(3)
    if how == "raise":
        raise ValueError("boom from the app")
    print("after", how, sys.argv, __name__, flush=True)


asyncio.run(main(sys.argv[1]))
