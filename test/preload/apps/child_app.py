"""A uvloop app whose loop blocks once in child_blocks (0.25 s); exits 4."""
import asyncio
import sys
import time

import uvloop


def child_blocks():
    time.sleep(0.25)  # CULPRIT child


async def main():
    await asyncio.sleep(0.05)
    child_blocks()
    await asyncio.sleep(0.05)


loop = uvloop.new_event_loop()
loop.run_until_complete(main())
loop.close()
sys.exit(4)
