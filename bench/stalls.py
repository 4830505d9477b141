#!/usr/bin/python3
"""Stall schedule and throughput workload for asyncio, for bench/run.

usage: stalls.py stalls [--loop uvloop|asyncio] [--watchdog] [--schedule MS,MS,...]
                        [--gap-ms N] --events FILE
       stalls.py throughput [--loop uvloop|asyncio] [--monitor none|watchdog|uvstall]
                            [--reps N] [--window-ms N] [--idle-thread]

stalls: runs each stall of the schedule (a busy loop in a coroutine, so the
Python stack is `culprit`) with --gap-ms of a free loop between them, and
writes one JSON line per stall to FILE: its start and end (time.monotonic
and time.time). With --watchdog, the watchdog coroutine the asyncio
loop-lag posts describe runs too (sleep 20 ms, measure how late it woke,
alert when over 100 ms), and each alert is a line of FILE.

throughput: callbacks per CPU second of the process (time.process_time:
every thread, uvstall's too) of a call_soon chain, in windows of
--window-ms; with --monitor, each repetition runs one window without the
monitor and one with it (order alternating), in this process. "uvstall" is
uvstall.watch() (python/uvstall, the package `python3 -m uvstall` uses).
Without --monitor it prints the plain rate (to compare processes, e.g. one
run under uvstall-run).

examples:
  stalls.py stalls --loop uvloop --watchdog --events /tmp/ev.jsonl
  stalls.py throughput --loop asyncio --monitor uvstall --reps 5
"""

import argparse
import asyncio
import json
import sys
import time

WATCHDOG_INTERVAL_S = 0.020
WATCHDOG_THRESHOLD_S = 0.100


def culprit(until):
    while time.monotonic() < until:
        pass


async def watchdog(events, stop):
    """The seed's watchdog: sleep, measure how late we woke, alert if late."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + WATCHDOG_INTERVAL_S
        await asyncio.sleep(WATCHDOG_INTERVAL_S)
        late = loop.time() - expected
        if late > WATCHDOG_THRESHOLD_S:
            events.append({"alert": "watchdog", "at_mono": time.monotonic(), "late_ms": late * 1e3})


async def run_stalls(args):
    events = []
    stop = asyncio.Event()
    dog = asyncio.ensure_future(watchdog(events, stop)) if args.watchdog else None
    await asyncio.sleep(0.3)
    for ms in args.schedule:
        t0m, t0w = time.monotonic(), time.time()
        culprit(t0m + ms / 1e3)
        t1m, t1w = time.monotonic(), time.time()
        events.append({"stall_ms": ms, "start_mono": t0m, "end_mono": t1m,
                       "start_wall": t0w, "end_wall": t1w})
        await asyncio.sleep(args.gap_ms / 1e3)
    stop.set()
    if dog is not None:
        await dog
    with open(args.events, "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")


async def chain_window(window_s):
    loop = asyncio.get_running_loop()
    count = 0
    done = loop.create_future()
    end = time.monotonic() + window_s

    def step():
        nonlocal count
        count += 1
        if count % 1000 == 0 and time.monotonic() >= end:
            done.set_result(None)
        else:
            loop.call_soon(step)

    c0 = time.process_time()
    loop.call_soon(step)
    await done
    return count / (time.process_time() - c0)


async def run_throughput(args):
    window_s = args.window_ms / 1e3
    if args.idle_thread:
        # A control: a thread that only waits. A process with a second
        # thread loses glibc's and the kernel's single-threaded fast paths
        # (lock-free malloc, fd lookups without reference counts), which any
        # in-process monitor with a thread of its own brings too.
        import threading
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    await chain_window(0.05)  # warm-up
    if args.monitor == "none":
        rates = [await chain_window(window_s) for _ in range(args.reps)]
        print(json.dumps({"monitor": "none", "rates": rates}))
        return
    if args.monitor == "uvstall":
        import uvstall
        # The library's threads outlive a watch: start and stop one first, so
        # every window runs in a process that has them (their mere presence
        # is measured by the preload rows' control, see --idle-thread).
        uvstall.watch(interval_ms=20, on_report=lambda rec: None).stop()
        await asyncio.sleep(0.01)
    pairs = []
    for r in range(args.reps):
        result = {}
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            if not on:
                result["off"] = await chain_window(window_s)
            elif args.monitor == "watchdog":
                stop = asyncio.Event()
                dog = asyncio.ensure_future(watchdog([], stop))
                result["on"] = await chain_window(window_s)
                stop.set()
                await dog
            else:
                w = uvstall.watch(interval_ms=20, on_report=lambda rec: None)
                result["on"] = await chain_window(window_s)
                w.stop()
                await asyncio.sleep(0.01)
        pairs.append(result)
    print(json.dumps({"monitor": args.monitor, "pairs": pairs}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stalls")
    s.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    s.add_argument("--watchdog", action="store_true")
    s.add_argument("--schedule", default="30,100,300,1000,5000")
    s.add_argument("--gap-ms", type=int, default=500)
    s.add_argument("--events", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    t.add_argument("--monitor", choices=("none", "watchdog", "uvstall"), default="none")
    t.add_argument("--reps", type=int, default=5)
    t.add_argument("--window-ms", type=int, default=300)
    t.add_argument("--idle-thread", action="store_true",
                   help="start a thread that only waits (a control for --monitor none)")
    args = p.parse_args()
    if args.loop == "uvloop":
        import uvloop
        uvloop.install()
    if args.cmd == "stalls":
        args.schedule = [float(x) for x in args.schedule.split(",")]
        asyncio.run(run_stalls(args))
    else:
        asyncio.run(run_throughput(args))


if __name__ == "__main__":
    sys.exit(main())
