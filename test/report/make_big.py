#!/usr/bin/python3
"""Writes a large uvstall report set made from a real one, for measuring
uvstall-report: stall / stall_end pairs (and late captures) copied from a
real run with new times, ids and jittered durations, spread over several
runs, plus one `metrics` record per loop every --metrics-every-s seconds.

The stacks stay real (so every address is looked up for real), but the
innermost frame's offset is moved by a few bytes at random, as the
interrupted pc is in real logs. `metrics` records are synthetic: the
library writes none yet; their fields are those the report format names.

  make_big.py --records 100000 demo.jsonl > big.jsonl
"""

import argparse
import json
import random
import sys
from datetime import datetime, timedelta, timezone


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def load(path):
    """The real stalls of `path`, each as (stall records, stall_end)."""
    stalls, ends, start = {}, {}, None
    with open(path) as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            key = (obj.get("run_id"), obj.get("stall_id"))
            if obj.get("type") == "start" and start is None:
                start = obj
            elif obj.get("type") == "stall":
                stalls.setdefault(key, []).append(obj)
            elif obj.get("type") == "stall_end":
                ends[key] = obj
    pairs = [(recs, ends[k]) for k, recs in stalls.items() if k in ends]
    if start is None or not pairs:
        sys.exit("make_big.py: %s has no start record or no ended stall" % path)
    return start, pairs


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="a real report set (the demo's --output)")
    p.add_argument("--records", type=int, default=100000, help="lines to write (default 100000)")
    p.add_argument("--runs", type=int, default=8, help="processes (default 8)")
    p.add_argument("--metrics-every-s", type=float, default=10.0,
                   help="seconds between metrics records (default 10; 0: none)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    rng = random.Random(args.seed)
    start, pairs = load(args.report)
    out = sys.stdout
    write = lambda obj: out.write(json.dumps(obj, separators=(",", ":")) + "\n")  # noqa: E731
    t = datetime(2026, 11, 25, 8, 0, 0, tzinfo=timezone.utc)
    per_run = max(1, args.records // args.runs)
    written = 0
    for run in range(args.runs):
        run_id = "%016x" % rng.getrandbits(64)
        pid = 1000 + run
        common = {"version": 1, "run_id": run_id, "pid": pid, "tid": pid, "loop": "loop-1"}
        write(dict(start, time=rfc3339(t), **common))
        written += 1
        stall_id = 0
        busy_left = 0
        next_metrics = t
        budget = min(per_run * (run + 1), args.records)
        while written < budget:
            t += timedelta(milliseconds=rng.expovariate(1 / 900.0))
            if args.metrics_every_s and t >= next_metrics:
                # Mostly an idle loop; now and then a busy spell of 30 s to
                # 2 min whose lag sets off the alerts.
                if busy_left <= 0 and rng.random() < 0.03:
                    busy_left = rng.randint(3, 12)
                busy_left -= 1
                if busy_left >= 0:
                    p50, p95, p99 = rng.uniform(110, 160), rng.uniform(180, 260), rng.uniform(250, 450)
                else:
                    p50, p95, p99 = rng.uniform(0.3, 1.5), rng.uniform(2, 8), rng.uniform(10, 60)
                write({"type": "metrics", "time": rfc3339(t), **common,
                       "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3),
                       "max_ms": round(p99 * 1.5 + 300, 3),
                       "utilization": round(rng.uniform(0.1, 0.9), 3)})
                written += 1
                next_metrics = t + timedelta(seconds=args.metrics_every_s)
                continue
            records, end = rng.choice(pairs)
            stall_id += 1
            scale = rng.uniform(0.5, 3.0)
            first_blocked = records[0]["blocked_ms"]
            for rec in records:
                copy = dict(rec, stall_id=stall_id, **common)
                copy["time"] = rfc3339(t + timedelta(milliseconds=rec["blocked_ms"] - first_blocked))
                if copy.get("frames"):
                    frames = [dict(f) for f in copy["frames"]]
                    off = int(frames[0]["offset"], 16) + rng.randrange(0, 48)
                    frames[0]["offset"] = "0x%x" % off
                    frames[0]["pc"] = "0x%x" % (int(frames[0]["pc"], 16) - int(
                        rec["frames"][0]["offset"], 16) + off)
                    copy["frames"] = frames
                write(copy)
                written += 1
            duration = round(end["duration_ms"] * scale, 3)
            write(dict(end, stall_id=stall_id, duration_ms=duration,
                       time=rfc3339(t + timedelta(milliseconds=duration - first_blocked)),
                       **common))
            written += 1
            t += timedelta(milliseconds=duration)
        t += timedelta(minutes=5)


if __name__ == "__main__":
    main()
