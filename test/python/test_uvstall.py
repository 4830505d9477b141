"""The Python package on real asyncio programs: the default loop and
Debian's uvloop, blocked by the classic culprits, run with
`python3 -m uvstall` and with uvstall.watch().

    test_uvstall.py [--lang-frames] CLASS [CLASS...]

Needs $UVSTALL_LIBRARY (the built library) and the package on PYTHONPATH;
python3-uvloop and python3-jsonschema must be installed: a missing one is a
failure, never a skip. Timing tolerances are for a noisy 2-core machine and
are stated where they are asserted.

lang_frames come from the library (issue 15's no-fault CPython reader);
the tests that judge them have lang_frames in their names and run as their
own meson test (`--lang-frames`); test_versions.py checks them on every
CPython version.
"""

import asyncio
import datetime
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")
SCHEMA = os.path.join(HERE, "..", "..", "docs", "report.schema.json")
PY = sys.executable

# A stall is reported once the heartbeat is threshold (100 ms by default)
# late; the first record must then come while the loop is still blocked.
# Every culprit blocks for ~400 ms, so a report is "during the stall" when
# its time falls inside the culprit's [start, end] (record times have
# millisecond precision: 2 ms of slack).
CLOCK_SLACK_S = 0.002

SUMMARY = []  # (what, value) printed at the end of the run


def require_env():
    lib = os.environ.get("UVSTALL_LIBRARY")
    if not lib or not os.path.exists(lib):
        raise AssertionError("UVSTALL_LIBRARY must name the built libuvstall.so.1 (got %r)" % lib)


def record_time(r):
    return datetime.datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def marks(path):
    """{"sleep": line, ...} from the '# BLOCKS: name' comments of an app."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            m = re.search(r"# BLOCKS: (\w+)", line)
            if m:
                out[m.group(1)] = n
    return out


def read_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def validate(testcase, records):
    import jsonschema  # python3-jsonschema: required
    with open(SCHEMA) as f:
        schema = json.load(f)
    for r in records:
        try:
            jsonschema.validate(r, schema)
        except jsonschema.ValidationError as e:
            testcase.fail("record does not match docs/report.schema.json: %s\n%s" % (
                e.message, json.dumps(r)[:600]))


def run_app(args, *, uvstall_opts=(), env=None, plain=False, cwd=None, timeout=60,
            preexec_fn=None):
    """Runs an app under `python3 -m uvstall` (or plainly); returns the
    CompletedProcess and the records written to the output file."""
    out = tempfile.NamedTemporaryFile(prefix="uvstall-py-", suffix=".jsonl", delete=False)
    out.close()
    try:
        cmd = [PY] + args if plain else (
            [PY, "-m", "uvstall", "--output-path", out.name] + list(uvstall_opts) + args)
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run(cmd, capture_output=True, text=True, env=e, cwd=cwd, timeout=timeout,
                           preexec_fn=preexec_fn)
        return p, read_records(out.name)
    finally:
        os.unlink(out.name)


def stalls(records):
    return [r for r in records if r["type"] == "stall"]


def stall_ids(records):
    """Distinct stalls (a long stall may have several sample records)."""
    return {r["stall_id"] for r in stalls(records)}


class SlowServer:
    """A loopback HTTP server that answers each request after delay_s."""

    def __init__(self, delay_s):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                time.sleep(delay_s)
                body = b"slow answer\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/slow" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- culprits

class Culprits:
    """One run of apps/culprits.py with every culprit, under
    `python3 -m uvstall` with the default options (interval 20 ms, threshold
    100 ms); the test methods judge its records."""

    LOOP = None
    CULPRITS = ("sleep", "http", "json", "re", "read")
    APP = os.path.join(APPS, "culprits.py")

    @classmethod
    def setUpClass(cls):
        require_env()
        server = SlowServer(0.45)
        try:
            cls.proc, cls.records = run_app(
                [cls.APP, cls.LOOP, ",".join(cls.CULPRITS), server.url])
        finally:
            server.close()
        cls.windows = {}
        for line in cls.proc.stdout.splitlines():
            w = json.loads(line)
            cls.windows[w["culprit"]] = w
        cls.lines = marks(cls.APP)

    def during(self, name):
        """The stall records made while culprit `name` blocked the loop."""
        w = self.windows[name]
        return [r for r in stalls(self.records)
                if w["start"] - CLOCK_SLACK_S <= record_time(r) <= w["end"] + CLOCK_SLACK_S]

    def test_program_ran_to_the_end(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr)
        self.assertEqual(sorted(self.windows), sorted(self.CULPRITS), self.proc.stdout)
        self.assertEqual(self.proc.stderr, "")

    def test_loop_kind(self):
        want = "uvloop" if self.LOOP.startswith("uvloop") else "asyncio"
        for w in self.windows.values():
            self.assertTrue(w["loop"].startswith(want), w)
        names = {r["loop"] for r in self.records if "loop" in r}
        self.assertEqual(names, {want + "-1"})

    def test_each_culprit_reported_while_it_blocks(self):
        for name in self.CULPRITS:
            with self.subTest(culprit=name):
                got = self.during(name)
                self.assertTrue(got, "no stall record during %s %s; records: %s" % (
                    name, self.windows[name], [(r["type"], r["time"]) for r in self.records]))
                first = got[0]
                self.assertEqual(first["capture"], "ok", first)
                self.assertGreaterEqual(first["blocked_ms"], 100)
                self.assertTrue(first["frames"])
                lag = record_time(first) - self.windows[name]["start"]
                SUMMARY.append(("%s %s: stall start to first record (ms)" % (self.LOOP, name),
                                round(lag * 1000)))

    def test_native_frames_name_the_system_call(self):
        # Some sample of the stall is in the system call (a sample may land
        # between two reads).
        for name, call in (("sleep", "clock_nanosleep"), ("read", "read")):
            if name in self.CULPRITS:
                tops = [[f["symbol"] for f in r["frames"][:3]] for r in self.during(name)]
                self.assertTrue(any(call in top for top in tops), (name, tops))

    def test_blocked_in_a_system_call_taken_without_a_signal(self):
        # time.sleep sleeps in one clock_nanosleep; urlopen waits for the
        # slow server in poll/recv. The thread is asleep in a system call
        # when each sample is taken, so its stack is copied (a snapshot), and
        # no signal reaches it: CPython would retry an EINTR'd sleep, so the
        # record's capture_via is what proves the path. A sample due as the
        # call returns (the backoff's 400 ms one for a 400 ms sleep) finds
        # Python running and is signalled: only samples taken 30 ms or more
        # before the culprit's end count. (The CPU culprits are signalled:
        # they are the control.)
        for name in ("sleep", "http"):
            if name in self.CULPRITS:
                with self.subTest(culprit=name):
                    got = [r for r in self.during(name)
                           if record_time(r) <= self.windows[name]["end"] - 0.030]
                    self.assertTrue(got)
                    vias = [r.get("capture_via") for r in got]
                    if name == "sleep":
                        self.assertEqual(set(vias), {"snapshot"}, vias)
                    else:
                        self.assertEqual(vias[0], "snapshot", vias)
        for name in ("json", "re"):
            if name in self.CULPRITS:
                with self.subTest(culprit=name):
                    self.assertIn("signal", [r.get("capture_via") for r in self.during(name)])

    def test_every_stall_ends_once_with_its_duration(self):
        ends = {r["stall_id"]: r for r in self.records if r["type"] == "stall_end"}
        for name in self.CULPRITS:
            with self.subTest(culprit=name):
                sid = self.during(name)[0]["stall_id"]
                end = ends[sid]
                self.assertEqual(end["ended_by"], "loop")
                # ~400 ms blocked (450 for http); the end is the first beat
                # after it, so up to one interval (20 ms) more, plus a noisy
                # machine's scheduling: [350, 700] ms.
                self.assertGreaterEqual(end["duration_ms"], 350)
                self.assertLessEqual(end["duration_ms"], 700)
        self.assertEqual(len([r for r in self.records if r["type"] == "stall_end"]),
                         len({r["stall_id"] for r in stalls(self.records)}))

    def test_records_match_the_schema(self):
        validate(self, self.records)

    def test_lang_frames_name_coroutine_and_line(self):
        for name in self.CULPRITS:
            with self.subTest(culprit=name):
                r = self.during(name)[0]
                lf = r.get("lang_frames")
                self.assertTrue(lf, "no lang_frames in the stall record of %s" % name)
                want = ("culprit_" + name, self.lines[name])
                got = [(f.get("function"), f.get("line")) for f in lf
                       if os.path.basename(f.get("file") or "") == "culprits.py"]
                self.assertIn(want, got, lf)
                self.assertEqual(lf[0].get("lang"), "python")


class CulpritsAsyncio(Culprits, unittest.TestCase):
    LOOP = "asyncio"


class CulpritsUvloopInstall(Culprits, unittest.TestCase):
    LOOP = "uvloop-install"

    @classmethod
    def setUpClass(cls):
        import uvloop  # python3-uvloop: required
        assert uvloop
        super().setUpClass()


class CulpritsUvloopNew(Culprits, unittest.TestCase):
    LOOP = "uvloop-new"
    CULPRITS = ("sleep",)

    @classmethod
    def setUpClass(cls):
        import uvloop  # python3-uvloop: required
        assert uvloop
        super().setUpClass()


# ---------------------------------------------------------------- launcher

class Launcher(unittest.TestCase):
    """python3 -m uvstall leaves the program's behaviour alone."""

    EXITS = os.path.join(APPS, "exits.py")

    def setUp(self):
        require_env()

    def test_sys_exit_3(self):
        p, records = run_app([self.EXITS, "exit3"])
        plain, _ = run_app([self.EXITS, "exit3"], plain=True)
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertEqual((p.stdout, p.stderr), (plain.stdout, plain.stderr))
        self.assertEqual(len(stall_ids(records)), 1, records)

    def test_uncaught_exception(self):
        p, records = run_app([self.EXITS, "raise"])
        plain, _ = run_app([self.EXITS, "raise"], plain=True)
        self.assertEqual(plain.returncode, 1)
        self.assertEqual(p.returncode, 1)
        self.assertIn("ValueError: boom from the app", p.stderr)
        # The same traceback, frame for frame: none of ours or runpy's.
        self.assertEqual(p.stderr, plain.stderr)
        self.assertEqual(p.stdout, plain.stdout)
        self.assertEqual(len(stall_ids(records)), 1, records)

    def test_argv_name_and_output(self):
        p, _ = run_app([self.EXITS, "ok"])
        plain, _ = run_app([self.EXITS, "ok"], plain=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, plain.stdout)
        self.assertIn("__main__", p.stdout)

    def test_module_mode(self):
        p, records = run_app(["-m", "stallmod", "a", "-b"], cwd=APPS)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "module __main__ ['a', '-b']\n")
        self.assertEqual(len(stall_ids(records)), 1, records)

    def test_module_mode_lang_frames(self):
        _, records = run_app(["-m", "stallmod"], cwd=APPS)
        lf = stalls(records)[0].get("lang_frames") or []
        want = ("blocked_in_module", marks(os.path.join(APPS, "stallmod.py"))["module"])
        self.assertIn(want, [(f.get("function"), f.get("line")) for f in lf], lf)

    def test_threads_with_their_own_loops(self):
        p, records = run_app([os.path.join(APPS, "threads.py")])
        self.assertEqual(p.returncode, 0, p.stderr)
        windows = [json.loads(line) for line in p.stdout.splitlines()]
        self.assertEqual(len({w["tid"] for w in windows}), 3)
        names = set()
        for w in windows:
            with self.subTest(tid=w["tid"]):
                got = [r for r in stalls(records) if r["tid"] == w["tid"] and
                       w["start"] - CLOCK_SLACK_S <= record_time(r) <= w["end"] + CLOCK_SLACK_S]
                self.assertTrue(got, (w, records))
                names.add(got[0]["loop"])
        self.assertEqual(len(names), 3, names)
        # No thread is reported stalled outside its own time.sleep.
        self.assertEqual(len(stall_ids(records)), 3)

    def test_threads_lang_frames(self):
        _, records = run_app([os.path.join(APPS, "threads.py")])
        line = marks(os.path.join(APPS, "threads.py"))["thread"]
        for r in stalls(records):
            lf = r.get("lang_frames") or []
            self.assertIn(("stall_in_thread", line),
                          [(f.get("function"), f.get("line")) for f in lf], lf)

    def test_missing_library_fails_before_the_program(self):
        p, _ = run_app([self.EXITS, "ok"], env={"UVSTALL_LIBRARY": "/nonexistent/libuvstall.so.1"})
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, "")
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertTrue(p.stderr.startswith("uvstall: cannot load libuvstall.so.1"), p.stderr)

    def test_bad_options_fail_before_the_program(self):
        for opts, msg in ((["--interval-ms", "0"], "interval_ms must be between"),
                          (["--threshold-ms", "30"], "threshold_ms must be"),
                          (["--max-frames", "999"], "max_frames must be"),
                          (["--output-path", "/nonexistent/dir/x.jsonl"], "output_path"),
                          (["--max-samples-per-stall", "0"], "max_samples_per_stall must be"),
                          (["--abort-after-ms", "50"], "abort_after_ms must be"),
                          (["--summary-interval-ms", "5"], "summary_interval_ms must be"),
                          (["--stack-window-kb", "3"], "stack_window_kb must be"),
                          (["--stack-window-kb", "1025"], "stack_window_kb must be")):
            with self.subTest(opts=opts):
                p = subprocess.run([PY, "-m", "uvstall"] + opts + [self.EXITS, "ok"],
                                   capture_output=True, text=True)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
                self.assertIn(msg, p.stderr)

    def test_hostile_flag_values(self):
        # Garbage flags: exit 2 with argparse's or the library's one line,
        # never a traceback; a loop name that is not UTF-8 (argv bytes) is
        # taken as it is.
        for opts in (["--interval-ms", "1e3"], ["--max-frames", "0x10"],
                     ["--threshold-ms", "99999999999999999999"], ["--signal", "SIGKILL"],
                     ["--capture-timeout-ms", "5ms"], ["--loop-name", "x" * 64],
                     ["--summary-interval-ms", "-1"], ["--max-queued-reports", ""],
                     ["--stack-window-kb", "64k"]):
            with self.subTest(opts=opts):
                p = subprocess.run([PY, "-m", "uvstall"] + opts + [self.EXITS, "ok"],
                                   capture_output=True, text=True)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
                self.assertNotIn("Traceback", p.stderr)
        p = subprocess.run([PY.encode(), b"-m", b"uvstall", b"--loop-name", b"caf\xe9",
                            self.EXITS.encode(), b"ok"], capture_output=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(b"Traceback", p.stderr)

    def test_per_watch_and_process_options_reach_the_library(self):
        p, records = run_app([self.EXITS, "ok"], uvstall_opts=[
            "--max-samples-per-stall", "1", "--max-stalls-per-minute", "5",
            "--summary-interval-ms", "0", "--interval-ms", "10", "--threshold-ms", "50"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(stalls(records)), 1, records)  # one sample only
        start = [r for r in records if r["type"] == "start"][0]
        self.assertEqual((start["options"]["interval_ms"], start["options"]["threshold_ms"]),
                         (10, 50))
        # Two stalls, one allowed per minute: the second is only counted.
        p, records = run_app([os.path.join(APPS, "culprits.py"), "asyncio", "sleep,sleep"],
                             uvstall_opts=["--max-stalls-per-minute", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(p.stdout.splitlines()), 2)
        self.assertEqual(len(stall_ids(records)), 1, records)

    def test_abort_after_ms(self):
        import resource
        p, records = run_app([self.EXITS, "ok"], uvstall_opts=["--abort-after-ms", "150"],
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
        self.assertEqual(p.returncode, -6, p.stderr)  # SIGABRT, after the report
        self.assertEqual(len(stall_ids(records)), 1, records)

    def test_help_and_no_program(self):
        p = subprocess.run([PY, "-m", "uvstall", "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn("--threshold-ms", p.stdout)
        p = subprocess.run([PY, "-m", "uvstall"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no program to run", p.stderr)


class UnderPreload(unittest.TestCase):
    """Preload mode ($UVSTALL_RUN, the build tree's uvstall-run) and the
    package in one process: one copy of the library, one watch per thread."""

    def run_preloaded(self, cmd):
        require_env()
        run = os.environ.get("UVSTALL_RUN")
        self.assertTrue(run and os.path.exists(run), "UVSTALL_RUN must name uvstall-run")
        out = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False)
        out.close()
        try:
            p = subprocess.run([PY, run, "-q", "-o", out.name, "--"] + cmd,
                               capture_output=True, text=True, timeout=60)
            return p, read_records(out.name)
        finally:
            os.unlink(out.name)

    def test_watch_in_a_thread_preload_watches_is_quietly_inactive(self):
        import uvloop  # python3-uvloop: required
        assert uvloop
        app = os.path.join(APPS, "under_preload.py")
        p, records = self.run_preloaded([PY, app])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        state = json.loads(p.stdout)
        self.assertEqual((state["already_watched"], state["active"]), (True, False))
        self.assertEqual(len(state["copies"]), 1, state)
        # Preload's watch reports the stall, with the coroutine's line.
        self.assertEqual(len(stall_ids(records)), 1, records)
        lf = stalls(records)[0].get("lang_frames") or []
        self.assertIn(("blocked_under_preload", marks(app)["preload"]),
                      [(f.get("function"), f.get("line")) for f in lf], lf)

    def test_launcher_under_preload_watches_once(self):
        out = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False)
        out.close()
        try:
            p, preload_records = self.run_preloaded(
                [PY, "-m", "uvstall", "--output-path", out.name,
                 os.path.join(APPS, "culprits.py"), "uvloop-install", "sleep"])
            ours = read_records(out.name)
        finally:
            os.unlink(out.name)
        self.assertEqual(p.returncode, 0, p.stderr)
        # The package's watch starts before uvloop's first uv_run, so it is
        # the one; preload finds the thread watched and stays out.
        self.assertEqual(len(stall_ids(ours)), 1, ours)
        self.assertEqual(stall_ids(preload_records), set(), preload_records)


# ---------------------------------------------------------------- watch()

def run_watched(make_loop, body, **watch_opts):
    """Runs `body(watch)` (a coroutine function) on a fresh loop inside
    uvstall.watch(**watch_opts); returns (watch, records, body's result)."""
    import uvstall
    records = []
    loop = make_loop()
    result = {}

    async def main():
        with uvstall.watch(on_report=records.append, **watch_opts) as w:
            result["value"] = await body(w)
        return w
    try:
        w = loop.run_until_complete(main())
    finally:
        loop.close()
    # Records reach on_report asynchronously: wait for all that were written.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and len(records) < w.stats().reports_written:
        time.sleep(0.01)
    return w, [json.loads(r) for r in records], result.get("value")


def blocking_body(seconds):
    async def body(w):
        await asyncio.sleep(0.05)
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        await asyncio.sleep(0.05)
        return start, end
    return body


class WatchApi(unittest.TestCase):
    def setUp(self):
        require_env()

    def check_one_stall(self, make_loop):
        import uvstall
        w, records, (start, end) = run_watched(make_loop, blocking_body(0.3),
                                               threshold_ms=60, interval_ms=10)
        types = [r["type"] for r in records]
        self.assertEqual(types[0], "start")
        self.assertEqual(types.count("stall_end"), 1)
        self.assertEqual(len(stall_ids(records)), 1)
        first = stalls(records)[0]
        self.assertTrue(start - CLOCK_SLACK_S <= record_time(first) <= end + CLOCK_SLACK_S,
                        (start, first["time"], end))
        st = w.stats()
        self.assertIsInstance(st, uvstall.Stats)
        self.assertFalse(w.active)
        self.assertEqual(st.stalls, 1)
        # ~0.4 s in all with beats every 10 ms, 0.3 s of it blocked: ~10
        # beats; the bounds allow a noisy machine.
        self.assertGreaterEqual(st.ticks, 4)
        self.assertLessEqual(st.ticks, 40)
        self.assertGreaterEqual(st.stalled_ms_total, 290)
        self.assertGreaterEqual(st.reports_written, 3)
        return records

    def test_default_loop(self):
        records = self.check_one_stall(asyncio.new_event_loop)
        self.assertTrue(records[0]["loop"].startswith("asyncio-"))

    def test_uvloop(self):
        import uvloop  # python3-uvloop: required
        records = self.check_one_stall(uvloop.new_event_loop)
        self.assertTrue(records[0]["loop"].startswith("uvloop-"))

    def test_watch_records_match_the_schema(self):
        _, records, _ = run_watched(asyncio.new_event_loop, blocking_body(0.2),
                                    threshold_ms=60, interval_ms=10)
        self.assertEqual(len(stall_ids(records)), 1)
        validate(self, records)

    def test_watch_lang_frames(self):
        _, records, _ = run_watched(asyncio.new_event_loop, blocking_body(0.2),
                                    threshold_ms=60, interval_ms=10)
        lf = stalls(records)[0].get("lang_frames") or []
        # 3.11+ frames are named by co_qualname.
        self.assertIn("blocking_body.<locals>.body", [f.get("function") for f in lf], lf)

    def test_on_report_with_a_watch_left_running_at_exit(self):
        # A daemon thread's loop is still watched (and stalled) when the
        # program exits: the library then writes its exit records, after
        # the interpreter is gone. That must not crash the program.
        code = ("import asyncio, threading, time, uvstall\n"
                "def loop_thread():\n"
                "    loop = asyncio.new_event_loop()\n"
                "    async def main():\n"
                "        uvstall.watch(on_report=print, threshold_ms=40, interval_ms=10)\n"
                "    loop.run_until_complete(main())\n"
                "    time.sleep(5)\n"
                "threading.Thread(target=loop_thread, daemon=True).start()\n"
                "time.sleep(0.3)\n"
                "print('main done', flush=True)\n")
        p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("main done", p.stdout)
        self.assertIn('"type":"stall"', p.stdout)

    def test_on_report_runs_off_the_loop_thread(self):
        import uvstall
        threads = set()
        loop = asyncio.new_event_loop()

        async def main():
            with uvstall.watch(on_report=lambda r: threads.add(threading.get_ident())):
                await asyncio.sleep(0.05)
        loop.run_until_complete(main())
        loop.close()
        time.sleep(0.2)
        self.assertTrue(threads)
        self.assertNotIn(threading.get_ident(), threads)

    def test_a_thread_is_watched_once(self):
        import uvstall
        loop = asyncio.new_event_loop()

        async def main():
            with uvstall.watch() as first:
                second = uvstall.watch()
                self.assertTrue(first.active)
                self.assertIs(uvstall.current(), first)
                self.assertTrue(second.already_watched)
                self.assertFalse(second.active)
                self.assertIsNone(second.stats())
                second.stop()  # quietly nothing
            self.assertIsNone(uvstall.current())
            with uvstall.watch() as third:  # free again
                self.assertTrue(third.active)
        loop.run_until_complete(main())
        loop.close()

    def test_stop_from_another_thread(self):
        import uvstall
        loop = asyncio.new_event_loop()
        started = threading.Event()
        box = {}

        async def main():
            box["w"] = uvstall.watch(on_report=lambda r: None)
            started.set()
            while box["w"].active:
                await asyncio.sleep(0.01)
        t = threading.Thread(target=loop.run_until_complete, args=(main(),))
        t.start()
        self.assertTrue(started.wait(5))
        box["w"].stop()  # scheduled on the loop's thread
        t.join(5)
        self.assertFalse(t.is_alive())
        self.assertFalse(box["w"].active)
        self.assertIsNotNone(box["w"].stats())
        loop.close()

    def test_stop_from_another_thread_after_close_is_an_error(self):
        import uvstall
        loop = asyncio.new_event_loop()
        box = {}

        def in_thread():
            async def main():
                box["w"] = uvstall.watch(on_report=lambda r: None)
            loop.run_until_complete(main())
            loop.close()
        t = threading.Thread(target=in_thread)
        t.start()
        t.join(5)
        with self.assertRaisesRegex(RuntimeError, "loop is closed"):
            box["w"].stop()

    def test_watch_on_another_threads_loop_is_refused(self):
        import uvstall
        loop = asyncio.new_event_loop()
        t = threading.Thread(target=loop.run_forever)
        t.start()
        try:
            while not loop.is_running():
                time.sleep(0.005)
            with self.assertRaisesRegex(RuntimeError, "another thread"):
                uvstall.watch(loop)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            t.join(5)
            loop.close()

    def test_no_running_loop(self):
        import uvstall
        with self.assertRaisesRegex(RuntimeError, "no running event loop"):
            uvstall.watch()

    def test_bad_options(self):
        import uvstall
        loop = asyncio.new_event_loop()
        try:
            with self.assertRaises(uvstall.UvstallError) as cm:
                uvstall.watch(loop, interval_ms=0)
            self.assertEqual(cm.exception.code, -3)
            self.assertIn("interval_ms must be between 1 and 3600000", str(cm.exception))
            with self.assertRaises(ValueError):
                uvstall.watch(loop, threshold_ms=-1)
            with self.assertRaises(TypeError):
                uvstall.watch(loop, threshold_ms=1.5)
            with self.assertRaises(uvstall.UvstallError) as cm:
                uvstall.watch(loop, max_samples_per_stall=65)
            self.assertIn("max_samples_per_stall must be between 1 and 64", str(cm.exception))
            with self.assertRaisesRegex(ValueError, "not both"):
                uvstall.watch(loop, on_report=print, output_path="/tmp/x")
            self.assertIsNone(uvstall.current())
        finally:
            loop.close()

    def test_every_keyword_fuzzed(self):
        # Each bad value: an exception naming the keyword, raised before
        # anything starts; then the defaults still watch the loop.
        import uvstall
        ints = ("threshold_ms", "interval_ms", "max_frames", "capture_timeout_ms",
                "max_samples_per_stall", "abort_after_ms", "stack_window_kb")
        cases = []
        for k in ints:
            for v in (-1, -0.0, 2**32, 10**30, 1.5, "5", "", None, True, b"5", [5]):
                cases.append(({k: v}, (TypeError, ValueError), k))
        cases += [
            ({"interval_ms": 0}, uvstall.UvstallError, "interval_ms"),
            ({"max_frames": 2**32 - 1}, uvstall.UvstallError, "max_frames"),
            ({"stack_window_kb": 3}, uvstall.UvstallError, "stack_window_kb"),
            ({"stack_window_kb": 1025}, uvstall.UvstallError, "stack_window_kb"),
            ({"loop_name": "x" * 64}, uvstall.UvstallError, "loop_name"),
            ({"loop_name": "a\0b"}, ValueError, "loop_name"),
            ({"loop_name": b"bytes"}, TypeError, "loop_name"),
            ({"loop_name": 5}, TypeError, "loop_name"),
            ({"output_path": "/tmp/a\0b"}, ValueError, "output_path"),
            ({"output_path": ""}, uvstall.UvstallError, "output_path"),
            ({"output_path": "/nonexistent-dir/x.jsonl"}, uvstall.UvstallError, "output_path"),
            ({"output_path": 5}, TypeError, "output_path"),
            ({"on_report": 5}, TypeError, "on_report"),
            ({"on_report": "print"}, TypeError, "on_report"),
        ]
        loop = asyncio.new_event_loop()
        try:
            for kw, exc, name in cases:
                with self.subTest(kw=repr(kw)[:60]):
                    with self.assertRaises(exc) as cm:
                        uvstall.watch(loop, **kw)
                    self.assertIn(name, str(cm.exception))
                    self.assertIsNone(uvstall.current())
            # A name of any bytes (from argv, say) is taken as it is.
            w = uvstall.watch(loop, loop_name="caf\udce9 \"q\"\n")
            self.assertTrue(w.active)
            w.stop()
            w = uvstall.watch(loop)
            self.assertTrue(w.active)
            w.stop()
        finally:
            loop.close()
        for kw in ({"signal": 2**32 + 10}, {"signal": "x"}, {"signal": None},
                   {"max_queued_reports": -1}, {"summary_interval_ms": 1.5}):
            with self.subTest(kw=kw):
                with self.assertRaises((TypeError, ValueError)) as cm:
                    uvstall.configure(**kw)
                self.assertIn(list(kw)[0], str(cm.exception))

    def test_hostile_context(self):
        import uvstall
        if uvstall.library().set_context is None:
            self.fail("the library has no uvstall_set_context")
        loop = asyncio.new_event_loop()
        try:
            w = uvstall.watch(loop)
            with self.assertRaisesRegex(ValueError, "context key must not contain a NUL"):
                w.set_context("k\0x", "v")
            with self.assertRaisesRegex(ValueError, "context value must not contain a NUL"):
                w.set_context("k", "v\0x")
            with self.assertRaises(uvstall.UvstallError):
                w.set_context("", "v")
            with self.assertRaises(uvstall.UvstallError):
                w.set_context("k" * 32, "v")
            w.set_context("\udcff", "\udcfe")   # undecodable bytes: passed on as they are
            w.set_context("huge", "x" * 100000)  # the library keeps 127 bytes
            self.assertEqual(set(w.context), {"\udcff", "huge"})  # refused keys not kept
            w.stop()
        finally:
            loop.close()

    def test_set_context(self):
        import uvstall

        async def body(w):
            w.set_context("job", "nightly-42")
            uvstall.set_context("route", "/api/users")
            await asyncio.sleep(0.05)
            time.sleep(0.2)
            await asyncio.sleep(0.05)
            return dict(w.context)
        w, records, ctx = run_watched(asyncio.new_event_loop, body, threshold_ms=60,
                                      interval_ms=10)
        self.assertEqual(ctx, {"job": "nightly-42", "route": "/api/users"})
        if uvstall.library().set_context is not None:
            text = json.dumps(stalls(records)[0].get("context"))
            self.assertIn("nightly-42", text)
            self.assertIn("/api/users", text)
        uvstall.set_context("ignored", "not watched")  # no watch: nothing

    def test_beat_cost(self):
        import uvstall
        lib = uvstall.library()
        loop = asyncio.new_event_loop()

        async def measure():
            with uvstall.watch(interval_ms=1000, on_report=lambda r: None) as w:
                h = w._h
                n = 200000
                t0 = time.perf_counter()
                for _ in range(n):
                    lib.beat(h)
                ctypes_us = (time.perf_counter() - t0) / n * 1e6
                # The whole heartbeat callback: uvstall_beat + call_later.
                tick = w._timer._callback
                n2 = 20000
                t0 = time.perf_counter()
                for _ in range(n2):
                    tick()
                tick_us = (time.perf_counter() - t0) / n2 * 1e6
            return ctypes_us, tick_us
        ctypes_us, tick_us = loop.run_until_complete(measure())
        loop.close()
        SUMMARY.append(("uvstall_beat through ctypes (us)", round(ctypes_us, 2)))
        SUMMARY.append(("heartbeat callback, beat + call_later re-arm (us)", round(tick_us, 2)))
        # Loose bounds: a regression to something heavy (a lock, a system
        # call per beat, a Python-level allocation storm) would break them.
        self.assertLess(ctypes_us, 20)
        self.assertLess(tick_us, 100)


# ---------------------------------------------------------------- bounds

def bounds_body(count, seconds):
    """`count` stalls of time.sleep(seconds) in a callback; the app's own
    times (time.monotonic) of each: "pre", the callback that schedules the
    culprit (so the loop polls between the two); "start" and "end" of the
    culprit; "next", the callback the culprit schedules as it ends."""
    async def body(w):
        loop = asyncio.get_running_loop()
        windows = []
        for _ in range(count):
            await asyncio.sleep(0.08)
            done = loop.create_future()
            win = {}

            def pre():
                win["pre"] = time.monotonic()
                loop.call_soon(culprit)

            def culprit():
                win["start"] = time.monotonic()
                time.sleep(seconds)
                win["end"] = time.monotonic()
                loop.call_soon(nxt)

            def nxt():
                win["next"] = time.monotonic()
                done.set_result(None)
            loop.call_soon(pre)
            await done
            windows.append(win)
        await asyncio.sleep(0.05)
        return {"windows": windows, "fd": w._wake_fd}
    return body


class StallBounds(unittest.TestCase):
    """A stall's bounds (stall_end's start_mono_ms and end_mono_ms, on the
    clock of time.monotonic) against the culprit's own times. On the default
    loop they are orderings of events on the loop's thread, which no load
    changes: the start is after the loop left the poll before the culprit
    (after "pre") and not after the culprit began; the end is not before the
    culprit ended and not after the next callback ran. Tolerance: 0.002 ms
    (records keep microseconds). uvloop: the end the same; the start is the
    last beat, at most one interval before "pre" on an idle loop, plus 100
    ms for a loaded machine's late beats."""

    TOL_MS = 0.002
    INTERVAL_MS = 20

    def run_bounds(self, make_loop):
        w, records, result = run_watched(make_loop, bounds_body(3, 0.25),
                                         threshold_ms=100, interval_ms=self.INTERVAL_MS)
        ends = sorted((r for r in records if r["type"] == "stall_end"),
                      key=lambda r: r["stall_id"])
        windows = result["windows"]
        self.assertEqual(len(ends), len(windows), records)
        self.assertIsNotNone(result["fd"], "no wake descriptor was watched")
        validate(self, records)
        for win, end in zip(windows, ends):
            self.assertEqual(end["ended_by"], "loop", end)
            ms = {k: v * 1e3 for k, v in win.items()}
            SUMMARY.append(("%s: stall start - culprit start, end - culprit end (ms)" % records[0]["loop"],
                            (round(end["start_mono_ms"] - ms["start"], 3),
                             round(end["end_mono_ms"] - ms["end"], 3))))
            self.assertGreaterEqual(end["end_mono_ms"], ms["end"] - self.TOL_MS, (win, end))
            self.assertLessEqual(end["end_mono_ms"], ms["next"] + self.TOL_MS, (win, end))
            self.assertLessEqual(end["start_mono_ms"], ms["start"] + self.TOL_MS, (win, end))
        return w, windows, ends, result["fd"]

    def test_default_loop_bounds_are_the_loops_own(self):
        _, windows, ends, _ = self.run_bounds(asyncio.new_event_loop)
        for win, end in zip(windows, ends):
            self.assertGreaterEqual(end["start_mono_ms"], win["pre"] * 1e3 - self.TOL_MS,
                                    (win, end))

    def test_uvloop_end_is_exact_start_is_the_last_beat(self):
        import uvloop  # python3-uvloop: required
        _, windows, ends, _ = self.run_bounds(uvloop.new_event_loop)
        for win, end in zip(windows, ends):
            self.assertGreaterEqual(end["start_mono_ms"],
                                    win["pre"] * 1e3 - self.INTERVAL_MS - 100, (win, end))

    def test_hooks_leave_the_loop_as_they_found_it(self):
        # While watched, the selector's select returns what the selector's
        # own select returns and raises what it raises; after the stop the
        # wrapper and the reader are gone. The same for a loop that was
        # closed before the watch stopped.
        import uvstall
        loop = asyncio.new_event_loop()
        sel = loop._selector
        r, wfd = os.pipe()
        w = None
        try:
            os.write(wfd, b"x")
            loop.add_reader(r, lambda: None)
            w = uvstall.watch(loop, on_report=lambda rec: None)
            self.assertIn("select", sel.__dict__)
            self.assertIn(w._wake_fd, sel.get_map())
            got = sel.select(0)
            own = type(sel).select(sel, 0)
            self.assertEqual([(k.fd, ev) for k, ev in got], [(k.fd, ev) for k, ev in own])
            self.assertIn(r, [k.fd for k, _ in got])
            with self.assertRaises(TypeError):
                sel.select("not a timeout")
            fd = w._wake_fd
            w.stop()
            self.assertNotIn("select", sel.__dict__)
            self.assertNotIn(fd, sel.get_map())
            self.assertIn(r, sel.get_map())  # the host's reader stays
            w = uvstall.watch(loop, on_report=lambda rec: None)
            loop.remove_reader(r)
            loop.close()
            w.stop()
            self.assertNotIn("select", sel.__dict__)
        finally:
            if w is not None:
                w.stop()  # a failed check leaves no watch behind
            os.close(r)
            os.close(wfd)
            if not loop.is_closed():
                loop.close()


def main():
    """test_uvstall.py [--lang-frames] CLASS...: the tests of CLASS whose
    names mention lang_frames with --lang-frames, the others without."""
    args = sys.argv[1:]
    lang = "--lang-frames" in args
    names = [a for a in args if a != "--lang-frames"]
    suite = unittest.TestSuite()
    for n in names:
        for t in unittest.defaultTestLoader.loadTestsFromTestCase(globals()[n]):
            if ("lang_frames" in t.id()) == lang:
                suite.addTest(t)
    if suite.countTestCases() == 0:
        sys.exit("no tests selected by %s" % args)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    for what, value in SUMMARY:
        print("measured: %s: %s" % (what, value))
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
