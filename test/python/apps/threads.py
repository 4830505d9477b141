"""Three loops on three threads (the main thread and two others), each
blocked once by time.sleep in its own coroutine, at different times."""

import asyncio
import json
import threading
import time


async def stall_in_thread(delay):
    await asyncio.sleep(delay)
    start = time.time()
    time.sleep(0.3)  # BLOCKS: thread
    print(json.dumps({"tid": threading.get_native_id(), "start": start,
                      "end": time.time()}), flush=True)
    await asyncio.sleep(0.2)


def thread_main(delay):
    asyncio.run(stall_in_thread(delay))


threads = [threading.Thread(target=thread_main, args=(d,)) for d in (0.2, 0.7)]
for t in threads:
    t.start()
asyncio.run(stall_in_thread(1.2))
for t in threads:
    t.join()
