#!/usr/bin/python3
"""Judge the output of consumer.c (see run.sh).

usage: check.py OUTPUT_FILE

For each culprit (consumer_busy_culprit, consumer_sleep_culprit) checks that
  1. a "stall" record arrived while the culprit was still running,
  2. that record's frames name the culprit (a frame's "symbol"),
  3. the stall_end with the same stall_id has 235 <= duration_ms <= 265.
Prints one PASS/FAIL line per check; exits 1 if any failed, 2 on bad input.
"""
import json
import sys

CULPRITS = ("consumer_busy_culprit", "consumer_sleep_culprit")
TARGET_MS = 250.0
TOLERANCE_MS = 15.0


def read_records(path):
    """Returns [(when, record)]; `when` is "during:NAME" or "after"."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            when, sep, text = line.partition("\t")
            if not sep:
                raise ValueError(f"line {n}: no tab between prefix and JSON: {line!r}")
            out.append((when, json.loads(text)))
    return out


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    try:
        records = read_records(argv[1])
    except (OSError, ValueError) as e:
        print(f"FAIL: cannot read the consumer's output: {e}")
        return 2

    ends = {r.get("stall_id"): r for _, r in records if r.get("type") == "stall_end"}
    failed = 0

    def check(ok, text):
        nonlocal failed
        print(("PASS: " if ok else "FAIL: ") + text)
        failed += 0 if ok else 1

    for name in CULPRITS:
        during = [r for when, r in records
                  if when == "during:" + name and r.get("type") == "stall"]
        check(bool(during), f"{name}: a stall record arrived while it was still running"
              f" ({len(during)} record(s))")
        named = [r for r in during
                 if any(f.get("symbol") == name for f in r.get("frames") or [])]
        if during and not named:
            for r in during:
                syms = [f.get("symbol") for f in r.get("frames") or []]
                print(f"      stall {r.get('stall_id')}: capture={r.get('capture')}"
                      f" frames={syms[:6]}")
        check(bool(named), f"{name}: the stall record's frames name {name}")
        stall_id = (named or during or [{}])[0].get("stall_id")
        end = ends.get(stall_id)
        if end is None:
            check(False, f"{name}: a stall_end for stall {stall_id}")
            continue
        ms = end.get("duration_ms")
        ok = isinstance(ms, (int, float)) and \
            TARGET_MS - TOLERANCE_MS <= ms <= TARGET_MS + TOLERANCE_MS
        check(ok, f"{name}: stall_end duration_ms {ms} is within"
              f" {TARGET_MS:.0f} +- {TOLERANCE_MS:.0f} ms")

    print(("FAIL" if failed else "PASS") + f": installed consumer, {failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
