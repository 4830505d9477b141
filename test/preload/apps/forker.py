"""A uvloop app that forks, and that starts another uvloop app.

From a callback on its loop it (1) forks a child that works a bit and exits
with status 5 without running any loop, and (2) runs CHILD_APP (a second
Python program whose loop blocks for 0.25 s) with subprocess, and prints
both exit statuses. Exits 0.

usage: forker.py CHILD_APP
"""
import asyncio
import os
import subprocess
import sys
import time

import uvloop


async def main():
    await asyncio.sleep(0.05)
    pid = os.fork()
    if pid == 0:
        time.sleep(0.2)
        os._exit(5)
    _, status = os.waitpid(pid, 0)
    print("forked child exit:", os.waitstatus_to_exitcode(status))
    proc = await asyncio.create_subprocess_exec(sys.executable, sys.argv[1])
    print("subprocess exit:", await proc.wait())


loop = uvloop.new_event_loop()
try:
    loop.run_until_complete(main())
finally:
    loop.close()
print("parent done")
