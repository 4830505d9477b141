#!/usr/bin/python3
"""Every record uvstall writes in real runs is valid against
docs/report.schema.json (validated with Debian's python3-jsonschema).

Usage: schema_test.py SCHEMA CHILD_EXE [DEMO_EXE]
Runs the test host's scenarios (stderr output, exit mid-stall, stop or exit
right after a stall, a replaced handler, a late capture...) and the demo,
validates every JSON line and checks that every reported stall has exactly
one stall_end. With $UVSTALL_TEST_STRESS_CHILD set, also that host's loop
threads that end without uvstall_stop ("thread_exit" records) and a stall
that never ends.
"""
import json
import os
import subprocess
import sys
import tempfile

import jsonschema


def records_of(cmd, stream="stderr", env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    text = proc.stderr if stream == "stderr" else proc.stdout
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def exactly_once(name, records):
    """Every reported stall has exactly one stall_end, after its samples, and
    every stall_end belongs to a reported stall. Returns the failure count."""
    samples, ends, failures = {}, {}, 0
    for i, r in enumerate(records):
        key = (r.get("pid"), r.get("loop"), r.get("stall_id"))
        if r.get("type") == "stall":
            samples.setdefault(key, []).append(i)
        elif r.get("type") == "stall_end":
            ends.setdefault(key, []).append(i)
    for key, idx in samples.items():
        got = ends.get(key, [])
        if len(got) != 1:
            print(f"FAIL {name}: stall {key} has {len(got)} stall_end records")
            failures += 1
        elif got[0] < max(idx):
            print(f"FAIL {name}: stall_end of {key} precedes a sample of it")
            failures += 1
    for key in ends:
        if key not in samples:
            print(f"FAIL {name}: stall_end {key} without a stall record")
            failures += 1
    return failures


def main():
    schema_path, child = sys.argv[1], sys.argv[2]
    demo = sys.argv[3] if len(sys.argv) > 3 else None
    with open(schema_path) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    runs = {}
    for scenario in ["stderr", "exit-mid-stall", "exit-after-stall", "stop-after-stall",
                     "handler-replaced", "chain", "sigusr2", "metrics"]:
        runs[scenario] = records_of([child, scenario])
    stress = os.environ.get("UVSTALL_TEST_STRESS_CHILD")
    if stress:
        for scenario in ["thread-exit", "stuck-exit"]:
            runs[scenario] = records_of([stress, scenario])
    if demo:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "demo.jsonl")
            subprocess.run([demo, "--output", path], capture_output=True, timeout=120)
            with open(path) as f:
                runs["demo"] = [json.loads(l) for l in f if l.strip()]

    failures = 0
    total = 0
    seen_types = set()
    seen_captures = set()
    seen_ends = set()
    for name, records in runs.items():
        if not records:
            print(f"FAIL {name}: no records")
            failures += 1
        for r in records:
            total += 1
            seen_types.add(r.get("type"))
            if r.get("type") == "stall":
                seen_captures.add(r.get("capture"))
            if r.get("type") == "stall_end":
                seen_ends.add(r.get("ended_by"))
            errors = sorted(validator.iter_errors(r), key=lambda e: e.path)
            if errors:
                failures += 1
                print(f"FAIL {name}: {errors[0].message} in {json.dumps(r)[:300]}")
        failures += exactly_once(name, records)
    # The runs must have exercised every record type and the main captures,
    # or this test proves little.
    for t in ["start", "stall", "stall_end", "metrics"] + (["thread_exit"] if stress else []):
        if t not in seen_types:
            print(f"FAIL: no {t} record in any run")
            failures += 1
    for e in ["loop", "stop", "exit"]:
        if e not in seen_ends:
            print(f"FAIL: no stall_end ended by {e}")
            failures += 1
    for c in ["ok", "failed"]:
        if c not in seen_captures:
            print(f"FAIL: no stall with capture {c}")
            failures += 1
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
