#!/usr/bin/python3
"""Tests of uvstall-symbolize --pprof (issue 19), read back with the real
`go tool pprof`.

Real runs only: the demo (examples/uvstall-demo, four culprits) twice, so
its stacks come from two load addresses; Debian's python3 under
`python3 -m uvstall` on blocking_app.py (a time.sleep through a known call
chain, Python frames in lang_frames) with a rate limit of 2 stalls a
minute, so most of its stalls are suppressed; and test/symbolize's
stall_app stripped, its debug file split off into a build-id directory.
Every expected number is computed here from the JSON Lines, never taken
from the tool.

Needs go (golang-go) for `go tool pprof`: without it the test is skipped
(exit 77). python3-protobuf, protobuf-compiler and
golang-github-google-pprof-dev, cc, objcopy and llvm-symbolizer are
required (.ci/packages.txt). Environment (meson sets it): UVSTALL_DEMO,
UVSTALL_LIBRARY, UVSTALL_PYTHON_DIR.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
SYMBOLIZE = os.path.join(ROOT, "tools", "symbolize")
APP = os.path.join(HERE, "blocking_app.py")
sys.path.insert(0, os.path.join(ROOT, "test", "symbolize"))
import hostile  # noqa: E402
import test_symbolize as symbolize_test  # noqa: E402  (its stall_app helpers)

DEMO_CULPRITS = ("demo_sleep_in_callback", "demo_sync_http_request",
                 "demo_parse_big_json", "demo_read_file_sync")
PY_CHAIN = ("blocking_sleep", "handle_request", "serve")  # innermost first

GO = shutil.which("go") or ("/usr/bin/go" if os.access("/usr/bin/go", os.X_OK) else None)
WORK = None
DEMO_RUNS = []  # two JSONL paths
PY_RUN = None
PROFILES = {}


def records(*paths):
    out = []
    for path in paths:
        with open(path) as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


def stalls_by_id(recs):
    """{(run_id, pid, stall_id): [stall records]} and {same key: duration_ms}."""
    groups, ends = {}, {}
    for r in recs:
        key = (r.get("run_id"), r.get("pid"), r.get("stall_id"))
        if r["type"] == "stall":
            groups.setdefault(key, []).append(r)
        elif r["type"] == "stall_end":
            ends[key] = r["duration_ms"]
    return groups, ends


def duration(key, group, ends):
    return ends[key] if key in ends else max(r["blocked_ms"] for r in group)


def symbolize(*args, check_status=0):
    env = {k: v for k, v in os.environ.items() if k != "DEBUGINFOD_URLS"}
    env["XDG_CACHE_HOME"] = os.path.join(WORK, "cache")
    result = subprocess.run(["/usr/bin/python3", SYMBOLIZE, *args], capture_output=True,
                            timeout=120, env=env)
    if check_status is not None:
        assert result.returncode == check_status, (result.returncode, result.stderr)
    return result


def pprof(profile, *flags):
    """go tool pprof's text output (stdout) for the flags."""
    env = dict(os.environ, HOME=WORK, PPROF_TMPDIR=WORK, PPROF_BINARY_PATH=WORK)
    result = subprocess.run([GO, "tool", "pprof", *flags, profile], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


_UNITS_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}


def top_ms(profile, *flags):
    """{function: (flat ms, cum ms)} and the total of `-top` with -unit=ms."""
    out = pprof(profile, "-top", "-nodecount=1000", "-unit=ms", *flags)
    rows = {}
    total = None
    m = re.search(r"of ([\d.]+)(ms|s) total", out)
    if m:
        total = float(m.group(1)) * _UNITS_MS[m.group(2)]
    for line in out.splitlines():
        cols = line.split(None, 5)
        if len(cols) == 6 and cols[1].endswith("%") and cols[4].endswith("%"):
            rows[cols[5]] = (_ms(cols[0]), _ms(cols[3]))
    return rows, total


def _ms(text):
    if text == "0":
        return 0.0
    m = re.match(r"\A([\d.]+)(ns|us|µs|ms|s)\Z", text)
    assert m, text
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def raw_locations(profile):
    """{location id: [function names of its lines]} and the mapping lines,
    from `-raw`."""
    out = pprof(profile, "-raw")
    locations, mappings, current, section = {}, [], None, None
    for line in out.splitlines():
        if line in ("Locations", "Mappings"):
            section = line
            continue
        if section == "Locations":
            m = re.match(r"\A\s+(\d+): 0x[0-9a-f]+(?: M=\d+)? (.*) s=\d+\Z", line)
            if m:
                current = locations.setdefault(int(m.group(1)), [])
                current.append(m.group(2))
            elif line.strip() and current is not None:
                current.append(re.sub(r" s=\d+\Z", "", line.strip()))
        elif section == "Mappings" and line.strip():
            mappings.append(line)
    return locations, mappings, out


def close(actual, expected, what):
    assert expected > 0, what
    assert abs(actual - expected) <= 0.01 * expected, "%s: %.3f ms, expected %.3f ms ±1%%" % (
        what, actual, expected)


def run_demo(path, errors):
    result = subprocess.run([os.environ["UVSTALL_DEMO"], "--output", path],
                            capture_output=True, text=True, timeout=60, cwd=WORK)
    if result.returncode != 0:
        errors.append("uvstall-demo failed (%d): %s" % (result.returncode, result.stderr))


def setUpModule():
    global WORK, PY_RUN
    if GO is None:
        print("SKIP: go is not installed (golang-go): no go tool pprof to read profiles with")
        sys.exit(77)
    for name in ("UVSTALL_DEMO", "UVSTALL_LIBRARY", "UVSTALL_PYTHON_DIR"):
        if not os.environ.get(name):
            raise AssertionError("%s is not set (meson test sets it)" % name)
    WORK = tempfile.mkdtemp(prefix="uvstall-pprof-test-")
    # The runs, at once: two demos and the Python app.
    errors = []
    threads = []
    for n in (1, 2):
        path = os.path.join(WORK, "demo-%d.jsonl" % n)
        DEMO_RUNS.append(path)
        threads.append(threading.Thread(target=run_demo, args=(path, errors)))
    PY_RUN = os.path.join(WORK, "python.jsonl")
    env = dict(os.environ, PYTHONPATH=os.environ["UVSTALL_PYTHON_DIR"],
               PYTHONDONTWRITEBYTECODE="1")
    py = subprocess.Popen(["/usr/bin/python3", "-m", "uvstall", "--output-path", PY_RUN,
                           "--max-stalls-per-minute", "2", "--max-samples-per-stall", "1",
                           APP, "6", "0.25"],
                          env=env, stderr=subprocess.PIPE, text=True)
    for t in threads:
        t.start()
    _, err = py.communicate(timeout=60)
    for t in threads:
        t.join()
    if py.returncode != 0:
        errors.append("python3 -m uvstall failed (%d): %s" % (py.returncode, err))
    if errors:
        raise AssertionError("\n".join(errors))
    PROFILES["demo"] = os.path.join(WORK, "demo.pb.gz")
    symbolize("--pprof", PROFILES["demo"], *DEMO_RUNS)
    PROFILES["python"] = os.path.join(WORK, "python.pb.gz")
    symbolize("--pprof", PROFILES["python"], PY_RUN)
    PROFILES["python-all"] = os.path.join(WORK, "python-all.pb.gz")
    symbolize("--pprof", PROFILES["python-all"], "--keep-all-frames", PY_RUN)


def tearDownModule():
    if WORK:
        shutil.rmtree(WORK, ignore_errors=True)


class DemoCulprits(unittest.TestCase):
    """Two runs of the demo merged into one profile."""

    @classmethod
    def setUpClass(cls):
        cls.recs = records(*DEMO_RUNS)
        cls.groups, cls.ends = stalls_by_id(cls.recs)

    def shares(self):
        """(record, ms) for every stall record, as docs/pprof.md defines a
        sample: record k covers from record k-1's blocked_ms (0) to its own,
        the last one to the stall's duration; a timed-out capture whose
        stack came late is the late record."""
        for key, group in self.groups.items():
            late = {r.get("sample") for r in group if r["capture"] == "late"}
            kept = sorted((r for r in group
                           if not (r["capture"] == "timeout" and r.get("sample") in late)),
                          key=lambda r: r["blocked_ms"])
            end = duration(key, group, self.ends)
            previous = 0.0
            for i, r in enumerate(kept):
                bound = end if i == len(kept) - 1 else min(r["blocked_ms"], end)
                yield r, bound - previous
                previous = bound

    def expected_ms(self, culprit):
        """The time of the stall records whose stack holds the culprit."""
        return sum(ms for r, ms in self.shares()
                   if any(f.get("symbol") == culprit for f in r["frames"]))

    def test_each_culprit_with_its_blocked_time(self):
        # Stalls sampled more than once: their records share the time.
        self.assertTrue(any(len(g) > 1 for g in self.groups.values()), self.groups)
        for flags in (("-cum",), ()):
            rows, total = top_ms(PROFILES["demo"], *flags)
            for culprit in DEMO_CULPRITS:
                with self.subTest(culprit=culprit, flags=flags):
                    self.assertIn(culprit, rows, rows)
                    close(rows[culprit][1], self.expected_ms(culprit), culprit + " cum")
            close(total, sum(duration(k, g, self.ends) for k, g in self.groups.items()),
                  "total")
        # -top without -cum: drop_frames takes libc off the innermost end,
        # so the sleep is blamed on its culprit, not on clock_nanosleep.
        rows, _ = top_ms(PROFILES["demo"])
        self.assertNotIn("clock_nanosleep", rows)
        close(rows["demo_sleep_in_callback"][0], self.expected_ms("demo_sleep_in_callback"),
              "demo_sleep_in_callback flat")

    def test_stall_counts(self):
        rows, total = top_ms(PROFILES["demo"], "-sample_index=stalls")
        out = pprof(PROFILES["demo"], "-top", "-sample_index=stalls", "-cum")
        m = re.search(r"of (\d+) total", out)
        self.assertEqual(int(m.group(1)), len(self.groups), out)

    def test_two_load_addresses_one_mapping_one_location_per_address(self):
        locations, mappings, raw = raw_locations(PROFILES["demo"])
        demo = [m for m in mappings if m.split()[2].endswith("/uvstall-demo")]
        self.assertEqual(len(demo), 1, mappings)
        for culprit in DEMO_CULPRITS:
            with self.subTest(culprit=culprit):
                frames = [(f, r["pid"]) for g in self.groups.values() for r in g
                          for f in r["frames"] if f.get("symbol") == culprit]
                pcs = {f["pc"] for f, _ in frames}
                self.assertEqual(len({pid for _, pid in frames}), 2)
                offsets = {(f["offset"], f is r["frames"][0]) for g in self.groups.values()
                           for r in g for f in r["frames"] if f.get("symbol") == culprit}
                found = [lid for lid, names in locations.items()
                         if any(n.split()[0] == culprit for n in names)]
                # Each address once, although every process had its own pcs.
                self.assertEqual(len(found), len(offsets), raw)
                self.assertGreater(len(pcs), len(found) - 1)
                if culprit == "demo_sleep_in_callback":
                    self.assertEqual(len(found), 1, raw)  # one return address
                    self.assertEqual(len(pcs), 2, pcs)  # from two load addresses

    def test_labels(self):
        out = pprof(PROFILES["demo"], "-tags")
        for key in ("loop", "cause", "fingerprint", "pid", "host", "run_id", "capture"):
            self.assertRegex(out, r"(?m)^ %s: Total" % key)
        hosts = {r["host"] for r in self.recs if r["type"] == "start"}
        for host in hosts:
            self.assertIn(host, out)
        for r in self.recs[:1]:
            self.assertIn(r["run_id"], out)

    def test_tagfocus_cause(self):
        rows, total = top_ms(PROFILES["demo"], "-tagfocus=cause=syscall", "-cum")
        syscall_ms = sum(duration(k, g, self.ends) for k, g in self.groups.items()
                         if all(r.get("cause") == "syscall" for r in g))
        self.assertGreaterEqual(total, syscall_ms * 0.99)
        self.assertIn("demo_sleep_in_callback", rows)
        if not any(r.get("cause") == "syscall" for g in self.groups.values() for r in g
                   if any(f.get("symbol") == "demo_parse_big_json" for f in r["frames"])):
            self.assertNotIn("demo_parse_big_json", rows)


class PythonStalls(unittest.TestCase):
    """blocking_app.py: Python frames joined with the native ones, and the
    stalls the rate limit suppressed. One sample per stall, taken in the
    middle of its sleep: a later one may find the sleep over and the stack
    elsewhere (the weighting by sample is checked on the demo's stalls)."""

    @classmethod
    def setUpClass(cls):
        cls.recs = records(PY_RUN)
        cls.groups, cls.ends = stalls_by_id(cls.recs)
        cls.summaries = [r for r in cls.recs if r["type"] == "summary"]

    def test_mixed_stack_in_documented_order(self):
        out = pprof(PROFILES["python-all"], "-traces")
        chains = []
        for block in out.split("-----------+")[1:]:
            names = None
            for line in block.splitlines():
                m = re.match(r"\A\s*[\d.]+(?:ns|us|µs|ms|s)?\s{3}(\S.*)\Z", line)
                if m and names is None:
                    names = [m.group(1)]
                elif names is not None and line.strip():
                    names.append(line.strip())
            if names and "blocking_sleep" in names:
                chains.append(names)
        self.assertTrue(chains, out)
        for names in chains:
            # Innermost first: the system call, the C of time.sleep, the
            # Python frames innermost first, then the interpreter's loop
            # and the native frames out to main.
            self.assertEqual(names[0], "clock_nanosleep", names)
            at = [names.index(n) for n in PY_CHAIN]
            self.assertEqual(at, sorted(at), names)
            for n in PY_CHAIN:
                self.assertEqual(names.count(n), 1, names)  # never twice
            self.assertIn("PyObject_Vectorcall", names[1:at[0]], names)
            # Python's <module> is [module] (pprof drops <...> from names).
            eval_at = names.index("_PyEval_EvalFrameDefault")
            self.assertGreater(eval_at, names.index("[module]"), names)
            self.assertGreater(names.index("Py_RunMain"), eval_at, names)

    def test_culprit_and_suppressed_stalls(self):
        suppressed = sum(s["stalls_suppressed"] for s in self.summaries)
        self.assertGreater(suppressed, 0, self.summaries)
        self.assertGreater(len(self.groups), 0)
        # Every stall, reported or not, is in the summaries' total_ms; the
        # profile must hold all that time, on the Python culprit.
        fps = {r["fingerprint"] for g in self.groups.values() for r in g
               if r["lang_frames"][0]["function"] == "blocking_sleep"}
        expected = sum(row["total_ms"] for s in self.summaries for row in s["fingerprints"]
                       if row["fingerprint"] in fps)
        rows, total = top_ms(PROFILES["python"])
        close(rows["blocking_sleep"][0], expected, "blocking_sleep flat (drop_frames)")
        rows, _ = top_ms(PROFILES["python"], "-cum")
        close(rows["blocking_sleep"][1], expected, "blocking_sleep cum")
        # Counts: reported stalls plus the suppressed ones.
        out = pprof(PROFILES["python"], "-top", "-sample_index=stalls")
        self.assertEqual(int(re.search(r"of (\d+) total", out).group(1)),
                         sum(s["stalls"] for s in self.summaries), out)
        self.assertEqual(sum(s["stalls"] for s in self.summaries), len(self.groups) + suppressed)
        out = pprof(PROFILES["python"], "-top", "-sample_index=stalls",
                    "-tagfocus=suppressed=true")
        self.assertEqual(int(re.search(r"accounting for (\d+),", out).group(1)), suppressed, out)

    def test_context_labels_under_their_prefix(self):
        out = pprof(PROFILES["python"], "-tags")
        self.assertRegex(out, r"(?m)^ context\.route: Total")
        self.assertIn("/api/items", out)


class StrippedBinary(unittest.TestCase):
    def test_names_from_the_build_id_debug_directory(self):
        work = tempfile.mkdtemp(dir=WORK)
        binary = os.path.join(work, "prod", "stall_app")
        os.makedirs(os.path.dirname(binary))
        symbolize_test.build(binary)
        report = os.path.join(work, "report.jsonl")
        with open(report, "w") as f:
            f.write(symbolize_test.run_app(binary))
        debug_root = os.path.join(work, "debug")
        symbolize_test.split_debug(binary, debug_root)
        self.assertNotIn(b"spin", subprocess.run(["nm", binary], capture_output=True).stdout
                         + subprocess.run(["nm", "-D", binary], capture_output=True).stdout)
        profile = os.path.join(work, "stripped.pb.gz")
        symbolize("--pprof", profile, "--debug-dir", debug_root, report)
        _, _, raw = raw_locations(profile)
        source = os.path.basename(symbolize_test.APP_SOURCE)
        self.assertRegex(raw, r"\bspin \S*/%s:%d\b" % (re.escape(source),
                                                         symbolize_test.marker_line("@spin-line")))
        self.assertRegex(raw, r"\bculprit \S*/%s:%d\b" % (
            re.escape(source), symbolize_test.marker_line("@culprit-call")))


class Interpreter(unittest.TestCase):
    """The tools' `#!/usr/bin/env python3` may find an interpreter without
    Debian's python3-protobuf (pyenv's, here one started with -S, which
    has no dist-packages): --pprof runs itself again under /usr/bin/python3."""

    def setUp(self):
        self.bin = tempfile.mkdtemp(dir=WORK)
        with open(os.path.join(self.bin, "python3"), "w") as f:
            f.write('#!/bin/sh\nexec /usr/bin/python3 -S "$@"\n')
        os.chmod(os.path.join(self.bin, "python3"), 0o755)
        self.env = dict(os.environ, PATH=self.bin + ":" + os.environ.get("PATH", ""))
        self.env.pop("UVSTALL_PPROF_REEXEC", None)
        self.out = os.path.join(self.bin, "out.pb.gz")

    def test_reexec_under_the_system_interpreter(self):
        probe = subprocess.run(["python3", "-c", "import google.protobuf"], env=self.env,
                               capture_output=True)
        self.assertNotEqual(probe.returncode, 0)  # the PATH interpreter lacks it
        result = subprocess.run([SYMBOLIZE, "--no-lookup", "--pprof", self.out,
                                 hostile.GOOD_PATH], env=self.env, capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        out = pprof(self.out, "-top", "-sample_index=stalls")
        self.assertRegex(out, r"of 7 total")  # reports.jsonl's seven stalls

    def test_missing_protobuf_is_one_line_naming_the_package(self):
        self.env["UVSTALL_PPROF_REEXEC"] = "1"  # as if already run again
        result = subprocess.run([SYMBOLIZE, "--no-lookup", "--pprof", self.out,
                                 hostile.GOOD_PATH], env=self.env, capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("install python3-protobuf", result.stderr)
        self.assertFalse(os.path.exists(self.out))


class BadInput(unittest.TestCase):
    def test_hostile_cases_skipped_and_counted(self):
        path = os.path.join(WORK, "hostile.jsonl")
        out = os.path.join(WORK, "hostile.pb.gz")
        for name, content, bad, kept in hostile.cases() + [hostile.empty_case()]:
            with self.subTest(case=name):
                with open(path, "wb") as f:
                    f.write(content)
                if os.path.exists(out):
                    os.unlink(out)
                result = symbolize("--no-lookup", "--pprof", out, path, check_status=None)
                hostile.check_diagnostics(self, result, bad)
                # The good stalls are in the profile (reports.jsonl: 7).
                text = pprof(out, "-top", "-sample_index=stalls")
                stalls = int(re.search(r"of (\d+) total", text).group(1)) if content else 0
                if content:
                    self.assertGreaterEqual(stalls, 7, text)

    def test_unreadable_input_exit_2(self):
        for path, reason in ((WORK, "Is a directory"), ("/proc/self/mem", "Input/output error")):
            result = symbolize("--no-lookup", "--pprof", os.path.join(WORK, "x.pb.gz"), path,
                               check_status=2)
            self.assertEqual(result.stderr.decode(), "uvstall-symbolize: cannot read %s: %s\n"
                             % (path, reason))
            self.assertFalse(os.path.exists(os.path.join(WORK, "x.pb.gz")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
