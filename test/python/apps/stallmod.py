"""Run as `-m stallmod`: a default-asyncio program with one time.sleep
stall, to check module mode."""

import asyncio
import sys
import time


async def blocked_in_module():
    time.sleep(0.3)  # BLOCKS: module


async def main():
    await asyncio.sleep(0.1)
    await blocked_in_module()
    await asyncio.sleep(0.1)
    print("module", __name__, sys.argv[1:], flush=True)


if __name__ == "__main__":
    asyncio.run(main())
