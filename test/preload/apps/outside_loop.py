"""Blocking between two runs of a uvloop loop is not a loop stall.

The loop runs a short coroutine, the program then sleeps 0.4 s outside the
loop (no callback of the loop is due: nothing is late), runs the loop again
with a coroutine that blocks 0.25 s in blocks_inside (a real stall), and
closes it. Exits 0.
"""
import asyncio
import time

import uvloop


def blocks_inside():
    time.sleep(0.25)  # CULPRIT inside


async def quick():
    await asyncio.sleep(0.05)


async def stalls():
    await asyncio.sleep(0.05)
    blocks_inside()


loop = uvloop.new_event_loop()
loop.run_until_complete(quick())
time.sleep(0.4)  # outside the loop
loop.run_until_complete(stalls())
loop.close()
print("done")
