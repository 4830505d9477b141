#!/usr/bin/python3
"""Writes a large uvstall report set made from a real one, for measuring
uvstall-report: whole stalls -- every sample (`stall` records, late
captures included) and the `stall_end` -- copied from a real run with new
times, ids and jittered durations, spread over several runs; a few stalls
"over the rate limit" that write nothing but are counted by the next
record's `suppressed` and by `summary` records (one a minute per run and at
its end, per fingerprint, as the library writes them); and one `metrics`
record per loop every --metrics-every-s seconds.

--records bounds the lines written; only whole stalls are written, so the
count of stalls is exact: --stats FILE writes it (and the other counts) as
JSON for a test to compare with the page.

The stacks stay real (so every address is looked up for real), but the
innermost frame's offset is moved by a few bytes at random, as the
interrupted pc is in real logs. `metrics` records are synthetic, shaped as
docs/report.schema.json says.

  make_big.py --records 100000 --stats stats.json demo.jsonl > big.jsonl
"""

import argparse
import json
import random
import sys
from datetime import datetime, timedelta, timezone

SUMMARY_EVERY_S = 60.0


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def load(path):
    """The real stalls of `path`, each as (its stall records, its stall_end),
    and the culprit the summaries name per fingerprint."""
    stalls, ends, start, culprits = {}, {}, None, {}
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
            elif obj.get("type") == "summary":
                for fp in obj.get("fingerprints", []):
                    culprits[fp.get("fingerprint")] = fp.get("culprit")
    pairs = [(recs, ends[k]) for k, recs in stalls.items() if k in ends]
    if start is None or not pairs:
        sys.exit("make_big.py: %s has no start record or no ended stall" % path)
    return start, pairs, culprits


def metrics_record(rng, t, common, busy):
    """A `metrics` record: an idle loop, or a busy spell whose lag sets off
    the alerts."""
    if busy:
        p50, p95, p99 = rng.uniform(110, 160), rng.uniform(180, 260), rng.uniform(250, 450)
    else:
        p50, p95, p99 = rng.uniform(0.3, 1.5), rng.uniform(2, 8), rng.uniform(10, 60)
    q = lambda scale: {"count": 500, "mean": round(p50 * scale, 3), "p50": round(p50 * scale, 3),  # noqa: E731
                       "p90": round(p95 * 0.9 * scale, 3), "p95": round(p95 * scale, 3),
                       "p99": round(p99 * scale, 3), "p999": round(p99 * 1.2 * scale, 3)}
    lateness = dict(q(1.0), min=0.01, max=round(p99 * 1.5 + 300, 3))
    return {"type": "metrics", "time": rfc3339(t), **common, "window_ms": 10000.0, "ticks": 500,
            "stalls": 0, "stalled_ms": 0.0, "utilization": round(rng.uniform(0.1, 0.9), 3),
            "lateness_ms": lateness, "delay_ms": q(1.3)}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="a real report set (the demo's --output)")
    p.add_argument("--records", type=int, default=100000,
                   help="most lines to write (default 100000); only whole stalls are written")
    p.add_argument("--runs", type=int, default=8, help="processes (default 8)")
    p.add_argument("--metrics-every-s", type=float, default=10.0,
                   help="seconds between metrics records (default 10; 0: none)")
    p.add_argument("--suppressed", type=float, default=0.02,
                   help="share of stalls over the rate limit, written nowhere but counted "
                        "(default 0.02)")
    p.add_argument("--stats", metavar="FILE",
                   help="write what was written as JSON: records, stalls, suppressed, ...")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    rng = random.Random(args.seed)
    start, pairs, culprits = load(args.report)
    out = sys.stdout
    stats = {"records": 0, "stalls": 0, "stall_records": 0, "suppressed": 0, "summaries": 0,
             "metrics": 0}

    def write(obj, kind):
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        stats["records"] += 1
        stats[kind] = stats.get(kind, 0) + 1

    t = datetime(2026, 11, 25, 8, 0, 0, tzinfo=timezone.utc)
    per_run = max(1, args.records // args.runs)
    for run in range(args.runs):
        run_id = "%016x" % rng.getrandbits(64)
        pid = 1000 + run
        common = {"version": 1, "run_id": run_id, "pid": pid, "tid": pid, "loop": "loop-1"}
        process = {"version": 1, "run_id": run_id, "pid": pid}
        budget = min(per_run * (run + 1), args.records) - 1  # its last summary
        if stats["records"] + 1 >= budget:
            break
        write(dict(start, time=rfc3339(t), **common), "starts")
        stall_id = 0
        busy_left = 0
        next_metrics = t
        window_start = t
        window = {}     # fingerprint -> [count, suppressed, total_ms, max_ms]
        unannounced = 0  # suppressed stalls no record has announced yet

        def summary(now):
            nonlocal window, window_start, unannounced
            fps = [{"fingerprint": fp, "culprit": culprits.get(fp), "count": c, "suppressed": s,
                    "total_ms": round(tot, 3), "max_ms": round(mx, 3)}
                   for fp, (c, s, tot, mx) in sorted(window.items(), key=lambda kv: -kv[1][2])]
            rec = dict(type="summary", time=rfc3339(now), **process,
                       window_ms=round((now - window_start).total_seconds() * 1000, 3),
                       stalls=sum(v[0] for v in window.values()),
                       stalls_suppressed=sum(v[1] for v in window.values()), fingerprints=fps)
            if unannounced:
                rec["suppressed"] = unannounced
                unannounced = 0
            write(rec, "summaries")
            window, window_start = {}, now

        while True:
            t += timedelta(milliseconds=rng.expovariate(1 / 900.0))
            if (t - window_start).total_seconds() >= SUMMARY_EVERY_S and window:
                if stats["records"] + 1 > budget:
                    break
                summary(t)
                continue
            if args.metrics_every_s and t >= next_metrics:
                if stats["records"] + 1 > budget:
                    break
                if busy_left <= 0 and rng.random() < 0.03:
                    busy_left = rng.randint(3, 12)
                busy_left -= 1
                write(metrics_record(rng, t, common, busy_left >= 0), "metrics")
                next_metrics = t + timedelta(seconds=args.metrics_every_s)
                continue
            records, end = rng.choice(pairs)
            first_blocked = records[0]["blocked_ms"]
            duration = round(end["duration_ms"] * rng.uniform(0.5, 3.0), 3)
            # the samples taken before the (jittered) end of the stall
            records = [r for r in records if r["blocked_ms"] < duration] or records[:1]
            duration = max(duration, max(r["blocked_ms"] for r in records) + 1.0)
            fp = records[0].get("fingerprint")
            w = window.setdefault(fp, [0, 0, 0.0, 0.0])
            w[0] += 1
            w[2] += duration
            w[3] = max(w[3], duration)
            stall_id += 1
            if rng.random() < args.suppressed:
                # over the rate limit: no record, only counts
                w[1] += 1
                unannounced += 1
                stats["suppressed"] += 1
                t += timedelta(milliseconds=duration)
                continue
            if stats["records"] + len(records) + 1 > budget:
                w[0] -= 1
                w[2] -= duration
                break
            for rec in records:
                copy = dict(rec, stall_id=stall_id, **common)
                copy.pop("suppressed", None)
                if unannounced:
                    copy["suppressed"] = unannounced
                    unannounced = 0
                copy["time"] = rfc3339(t + timedelta(milliseconds=rec["blocked_ms"] - first_blocked))
                if copy.get("frames"):
                    frames = [dict(f) for f in copy["frames"]]
                    off = int(frames[0]["offset"], 16) + rng.randrange(0, 48)
                    frames[0]["offset"] = "0x%x" % off
                    frames[0]["pc"] = "0x%x" % (int(frames[0]["pc"], 16) - int(
                        rec["frames"][0]["offset"], 16) + off)
                    copy["frames"] = frames
                write(copy, "stall_records")
            write(dict(end, stall_id=stall_id, duration_ms=duration,
                       time=rfc3339(t + timedelta(milliseconds=duration - first_blocked)),
                       **common), "stall_ends")
            stats["stalls"] += 1
            t += timedelta(milliseconds=duration)
        summary(t)  # at exit
        t += timedelta(minutes=5)

    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f)


if __name__ == "__main__":
    main()
