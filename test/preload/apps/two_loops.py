"""Two uvloop loops in two threads; each blocks once in its own function.

The main thread's loop blocks in main_thread_blocks (time.sleep 0.25 s);
the worker thread's loop, started 0.5 s later, in worker_blocks (0.25 s).
Prints what each loop did; exits 0.
"""
import asyncio
import threading
import time

import uvloop


def main_thread_blocks():
    time.sleep(0.25)  # CULPRIT main


def worker_blocks():
    time.sleep(0.25)  # CULPRIT worker


async def job(name, delay, culprit):
    await asyncio.sleep(delay)
    culprit()
    await asyncio.sleep(0.05)
    return name + " done"


def run_loop(name, delay, culprit, results):
    loop = uvloop.new_event_loop()
    try:
        results[name] = loop.run_until_complete(job(name, delay, culprit))
    finally:
        loop.close()


results = {}
worker = threading.Thread(target=run_loop, args=("worker", 0.6, worker_blocks, results))
worker.start()
run_loop("main", 0.1, main_thread_blocks, results)
worker.join()
print(results["main"], results["worker"])
