"""Preload mode on real programs: Debian's uvloop (asyncio apps in apps/)
and a small C program linked against Debian's libuv, each run once plainly
and once under tools/uvstall-run.

Every run checks that the program's stdout and exit status are exactly as
without uvstall, and that each stall was reported while it was happening
(the culprit itself looks at the output file when it returns), with the
blocking C function in the native frames and, for Python, the culprit's
function and line in lang_frames.

Timing tolerance (noisy 2-core machine): a stall of D ms must end with
D - 5 <= duration_ms <= D + 150 (the culprits sleep or read for D ms; the
upper bound leaves room for the interpreter and the scheduler). Uses
/usr/bin/python3 and the standard library only.

Environment (set by test/preload/meson.build): UVSTALL_RUN (the build
tree's uvstall-run), UVSTALL_TEST_C_HOST, UVSTALL_SCHEMA.
"""
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

RUN = os.environ["UVSTALL_RUN"]
C_HOST = os.environ["UVSTALL_TEST_C_HOST"]
C_HOST_FAKEPY = os.environ["UVSTALL_TEST_C_HOST_FAKEPY"]
SCHEMA = os.environ.get("UVSTALL_SCHEMA")
APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
PY = "/usr/bin/python3"

EARLY_MS = 5
LATE_MS = 150


def culprit_line(app, tag):
    """The line number of the line marked `# CULPRIT tag` in apps/APP."""
    with open(os.path.join(APPS, app)) as f:
        for n, line in enumerate(f, 1):
            if line.rstrip().endswith("# CULPRIT " + tag):
                return n
    raise AssertionError("no CULPRIT %s in %s" % (tag, app))


def wall(record):
    t = datetime.datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def lang_frame_schema():
    with open(SCHEMA) as f:
        return json.load(f)["$defs"]["lang_frame"]


def check_lang_frame(test, frame, schema):
    """The schema's lang_frame, checked by hand (stdlib only)."""
    test.assertEqual(set(frame), set(schema["required"]))
    test.assertEqual(frame["lang"], "python")
    for key in ("function", "file"):
        test.assertTrue(frame[key] is None or isinstance(frame[key], str))
    test.assertTrue(frame["line"] is None or isinstance(frame["line"], int))


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="uvstall-preload-test.")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_cmd(self, cmd, uvstall=None, env=None, timeout=60):
        """Runs cmd, under uvstall-run with the given options when uvstall
        is a list. Returns the CompletedProcess (text)."""
        e = dict(os.environ)
        e.pop("LD_PRELOAD", None)
        e.update(env or {})
        full = cmd if uvstall is None else [PY, RUN] + uvstall + ["--"] + cmd
        return subprocess.run(full, env=e, capture_output=True, text=True, timeout=timeout,
                              cwd=self.tmp)

    def assert_same_host(self, plain, watched):
        self.assertEqual(watched.returncode, plain.returncode, watched.stderr)
        self.assertEqual(watched.stdout, plain.stdout)

    def stalls(self, records):
        return [r for r in records if r["type"] == "stall"]

    def first_samples(self, records):
        """The first stall record of each stall."""
        seen, out = set(), []
        for r in self.stalls(records):
            if r["stall_id"] not in seen:
                seen.add(r["stall_id"])
                out.append(r)
        return out

    def stalls_in(self, records, name):
        """First samples of the stalls whose Python or native frames name
        `name`. (On a loaded machine the program may stall elsewhere too,
        e.g. at start-up: those are real stalls, not this test's.)"""
        out = []
        for r in self.first_samples(records):
            names = [f["function"] for f in r.get("lang_frames", [])]
            names += [f["symbol"] for f in r["frames"]]
            if name in names:
                out.append(r)
        return out

    def end_of(self, records, stall_id):
        ends = [r for r in records if r["type"] == "stall_end" and r["stall_id"] == stall_id]
        self.assertEqual(len(ends), 1, records)
        return ends[0]


class UvloopCulprits(Base):
    """The issue's three culprits in an asyncio server on Debian's uvloop."""

    def culprit(self, mode, function, native, stall_ms):
        app = os.path.join(APPS, "uvloop_app.py")
        plain = self.run_cmd([PY, app, mode])
        self.assertEqual(plain.returncode, 3, plain.stderr)
        out = os.path.join(self.tmp, "stalls-%p.jsonl")
        probe = os.path.join(self.tmp, "probe.jsonl")
        watched = self.run_cmd([PY, app, mode], uvstall=["-o", out])
        self.assert_same_host(plain, watched)
        self.assertNotIn("uvstall", watched.stderr)

        # Once more with the probe: was the stall on file before the culprit
        # returned? (The probe path is only known once the pid is; so the
        # output goes to a fixed path here.)
        fixed = os.path.join(self.tmp, "stalls.jsonl")
        probed = self.run_cmd([PY, app, mode], uvstall=["-o", fixed],
                              env={"UVSTALL_TEST_PROBE": probe, "UVSTALL_TEST_WATCH": fixed})
        self.assertEqual(probed.returncode, 3, probed.stderr)
        events = {e["event"]: e for e in read_jsonl(probe)}
        self.assertTrue(events["end"]["stall_seen"], "no stall record during the stall")

        files = [f for f in os.listdir(self.tmp) if re.match(r"stalls-\d+\.jsonl$", f)]
        self.assertEqual(len(files), 1, files)
        # The probed run's culprit measured its own length: its stall must
        # match it. The other run's is only known when the test fixes it.
        probed_ms = (events["end"]["time"] - events["start"]["time"]) * 1000
        for records, known_ms in ((read_jsonl(os.path.join(self.tmp, files[0])), stall_ms),
                                  (read_jsonl(fixed), probed_ms)):
            starts = [r for r in records if r["type"] == "start"]
            self.assertEqual(len(starts), 1, records)
            firsts = self.stalls_in(records, function)
            self.assertEqual(len(firsts), 1, [r.get("lang_frames") for r in firsts])
            s = firsts[0]
            self.assertEqual(s["capture"], "ok")
            self.assertEqual(s["tid"], s["pid"])
            native(s["frames"])
            lang = s["lang_frames"]
            schema = lang_frame_schema()
            for f in lang:
                check_lang_frame(self, f, schema)
            want = {"lang": "python", "function": function, "file": app,
                    "line": culprit_line("uvloop_app.py", mode)}
            self.assertIn(want, lang)
            end = self.end_of(records, s["stall_id"])
            self.assertEqual(end["ended_by"], "loop")
            self.assertGreaterEqual(end["duration_ms"], s["blocked_ms"])
            if known_ms is not None:
                self.assertGreaterEqual(end["duration_ms"], known_ms - EARLY_MS)
                self.assertLessEqual(end["duration_ms"], known_ms + LATE_MS)
        # Reported during the stall, and how soon.
        s = self.stalls_in(read_jsonl(fixed), function)[0]
        self.assertGreater(wall(s), events["start"]["time"] - 0.002)
        self.assertLess(wall(s), events["end"]["time"])
        print("%s: first stall record %.0f ms after the culprit started (blocked_ms %.1f); "
              "culprit ran %.0f ms" % (mode, (wall(s) - events["start"]["time"]) * 1000,
                                        s["blocked_ms"],
                                        (events["end"]["time"] - events["start"]["time"]) * 1000))

    def test_time_sleep_in_a_request_handler(self):
        def native(frames):
            self.assertEqual(frames[0]["symbol"], "clock_nanosleep")
        # The innermost Python frame is the handler itself.
        self.culprit("sleep", "handle_sleep", native, 300)

    def test_big_json_document_parsed_synchronously(self):
        def native(frames):
            # The parser is C code of the interpreter (its _json module);
            # the stack is in the interpreter, not in a system call.
            self.assertIn("python3", frames[0]["module"])
        self.culprit("json", "parse_big_json", native, None)

    def test_big_synchronous_file_read(self):
        def native(frames):
            self.assertIn(frames[0]["symbol"], ("read", "__libc_read", "__GI___libc_read"))
            self.assertTrue(frames[0]["module"].endswith("libc.so.6"))
        # A FIFO fed 1 MiB every 10 ms: at least 320 ms, and as long as the
        # feeding thread is kept waiting on a loaded machine (seen: 470-700
        # ms at load 10), so only the probed run's own measure bounds it.
        self.culprit("read", "read_big_file", native, None)


class MoreHosts(Base):
    def test_two_loops_in_two_threads(self):
        app = os.path.join(APPS, "two_loops.py")
        plain = self.run_cmd([PY, app])
        out = os.path.join(self.tmp, "s.jsonl")
        watched = self.run_cmd([PY, app], uvstall=["-o", out])
        self.assert_same_host(plain, watched)
        records = read_jsonl(out)
        starts = [r for r in records if r["type"] == "start"]
        self.assertEqual(len(starts), 2)
        self.assertEqual(len({r["tid"] for r in starts}), 2)
        firsts = (self.stalls_in(records, "main_thread_blocks") +
                  self.stalls_in(records, "worker_blocks"))
        self.assertEqual(len(firsts), 2)
        by_fn = {s["lang_frames"][0]["function"]: s for s in firsts}
        self.assertEqual(set(by_fn), {"main_thread_blocks", "worker_blocks"})
        self.assertEqual(by_fn["main_thread_blocks"]["tid"], by_fn["main_thread_blocks"]["pid"])
        self.assertNotEqual(by_fn["worker_blocks"]["tid"], by_fn["worker_blocks"]["pid"])
        self.assertEqual(by_fn["worker_blocks"]["lang_frames"][0]["line"],
                         culprit_line("two_loops.py", "worker"))
        for s in firsts:
            self.assertEqual(s["frames"][0]["symbol"], "clock_nanosleep")
            d = self.end_of(records, s["stall_id"])["duration_ms"]
            self.assertGreaterEqual(d, 250 - EARLY_MS)
            self.assertLessEqual(d, 250 + LATE_MS)

    def test_time_outside_uv_run_is_not_a_stall(self):
        app = os.path.join(APPS, "outside_loop.py")
        plain = self.run_cmd([PY, app])
        out = os.path.join(self.tmp, "s.jsonl")
        watched = self.run_cmd([PY, app], uvstall=["-o", out])
        self.assert_same_host(plain, watched)
        records = read_jsonl(out)
        self.assertEqual(len(self.stalls_in(records, "blocks_inside")), 1)
        # The 0.4 s sleep between the runs is in <module>, outside the loop.
        outside = [s for s in self.first_samples(records)
                   if s["lang_frames"][0]["function"] == "<module>"]
        self.assertEqual(outside, [])

    def test_an_exception_of_the_host_is_unchanged(self):
        app = os.path.join(APPS, "raise_app.py")
        plain = self.run_cmd([PY, app])
        self.assertEqual(plain.returncode, 1)
        self.assertIn("ValueError: boom", plain.stderr)
        out = os.path.join(self.tmp, "s.jsonl")
        watched = self.run_cmd([PY, app], uvstall=["-o", out])
        self.assert_same_host(plain, watched)
        self.assertEqual(watched.stderr, plain.stderr)
        self.assertEqual(len(self.stalls_in(read_jsonl(out), "main")), 1)

    def forker(self, extra):
        app = os.path.join(APPS, "forker.py")
        child = os.path.join(APPS, "child_app.py")
        plain = self.run_cmd([PY, app, child])
        self.assertIn("forked child exit: 5", plain.stdout)
        self.assertIn("subprocess exit: 4", plain.stdout)
        out = os.path.join(self.tmp, "s-%p.jsonl")
        watched = self.run_cmd([PY, app, child], uvstall=["-o", out] + extra)
        self.assert_same_host(plain, watched)
        by_pid = {}
        for f in os.listdir(self.tmp):
            m = re.match(r"s-(\d+)\.jsonl$", f)
            if m:
                by_pid[int(m.group(1))] = read_jsonl(os.path.join(self.tmp, f))
        return by_pid

    def test_a_host_that_forks_and_starts_a_child_that_runs_a_loop(self):
        by_pid = self.forker([])
        # The parent, and the child that ran a loop; not the forked child
        # (it ran no loop, and forked children are never watched).
        self.assertEqual(len(by_pid), 2, list(by_pid))
        fns = {}
        for pid, records in by_pid.items():
            self.assertEqual(len([r for r in records if r["type"] == "start"]), 1)
            for s in self.first_samples(records):
                fns.setdefault(pid, set()).add(s["lang_frames"][0]["function"])
        self.assertEqual(len([p for p, names in fns.items() if "child_blocks" in names]), 1)

    def test_no_children_keeps_children_out(self):
        by_pid = self.forker(["--no-children"])
        self.assertEqual(len(by_pid), 1, list(by_pid))

    def test_a_c_program_linked_against_debians_libuv(self):
        plain = self.run_cmd([C_HOST, "stall"])
        self.assertEqual(plain.returncode, 7)
        self.assertIn("uv_walk saw 1 handle(s)", plain.stdout)
        self.assertIn("uv_loop_close returned 0", plain.stdout)
        out = os.path.join(self.tmp, "s.jsonl")
        watched = self.run_cmd([C_HOST, "stall"], uvstall=["-o", out])
        self.assert_same_host(plain, watched)
        self.assertEqual(watched.stderr, "")
        records = read_jsonl(out)
        firsts = self.stalls_in(records, "c_host_blocking_sleep")
        self.assertEqual(len(firsts), 1)
        s = firsts[0]
        self.assertEqual(s["capture"], "ok")
        self.assertNotIn("lang_frames", s)
        d = self.end_of(records, s["stall_id"])["duration_ms"]
        self.assertGreaterEqual(d, 300 - EARLY_MS)
        self.assertLessEqual(d, 300 + LATE_MS)

    def test_another_cpython_version_gets_native_frames_and_one_line(self):
        # A host that exports Py_GetVersion() = "3.12.1 ..." and nothing
        # else of CPython's: the reader is refused, and says why.
        plain = self.run_cmd([C_HOST_FAKEPY, "stall"])
        out = os.path.join(self.tmp, "s.jsonl")
        watched = self.run_cmd([C_HOST_FAKEPY, "stall"], uvstall=["-o", out])
        self.assert_same_host(plain, watched)
        lines = watched.stderr.splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("no lang_frames", lines[0])
        self.assertIn("CPython 3.12.1", lines[0])
        s = self.stalls_in(read_jsonl(out), "c_host_blocking_sleep")[0]
        self.assertNotIn("lang_frames", s)
        self.assertTrue(s["lang_reader"].startswith("cpython-nofault 3.12.1"), s)
        self.assertIn("does not export", s["lang_reason"])

    def test_death_by_signal_is_passed_on(self):
        plain = self.run_cmd([C_HOST, "kill"])
        self.assertEqual(plain.returncode, -15)
        watched = self.run_cmd([C_HOST, "kill"], uvstall=["-o", os.path.join(self.tmp, "s")])
        self.assert_same_host(plain, watched)

    def test_records_go_to_stderr_by_default(self):
        plain = self.run_cmd([C_HOST, "stall"])
        watched = self.run_cmd([C_HOST, "stall"], uvstall=[])
        self.assert_same_host(plain, watched)
        types = [json.loads(line)["type"] for line in watched.stderr.splitlines()]
        self.assertIn("start", types)
        self.assertIn("stall", types)


class Configuration(Base):
    def test_bad_values_one_warning_each_then_defaults(self):
        plain = self.run_cmd([C_HOST, "stall"])
        out = os.path.join(self.tmp, "s.jsonl")
        bad = {"UVSTALL_THRESHOLD_MS": "abc", "UVSTALL_MAX_FRAMES": "0",
               "UVSTALL_SIGNAL": "SIGKILL", "UVSTALL_INTERVAL_MS": "-1"}
        watched = self.run_cmd([C_HOST, "stall"], uvstall=["-o", out], env=bad)
        self.assert_same_host(plain, watched)
        lines = watched.stderr.splitlines()
        self.assertEqual(len(lines), len(bad), lines)
        for name, value in bad.items():
            mine = [l for l in lines if '%s="%s"' % (name, value) in l]
            self.assertEqual(len(mine), 1, lines)
            self.assertIn("accepted", mine[0])
            self.assertIn("using the default", mine[0])
        start = [r for r in read_jsonl(out) if r["type"] == "start"][0]
        self.assertEqual(start["options"]["interval_ms"], 20)
        self.assertEqual(start["options"]["threshold_ms"], 100)
        self.assertEqual(start["options"]["max_frames"], 64)
        self.assertEqual(len(self.stalls_in(read_jsonl(out), "c_host_blocking_sleep")), 1)

    def test_hostile_values_one_printable_line_each_then_defaults(self):
        # Values a shell, a typo or an attacker could leave in the
        # environment (issue 11): each gives one printable line naming the
        # variable, the loop is still watched, with the defaults.
        plain = self.run_cmd([C_HOST, "stall"])
        out = os.path.join(self.tmp, "s.jsonl")
        bad = {"UVSTALL_INTERVAL_MS": "99999999999999999999",
               "UVSTALL_THRESHOLD_MS": "1e3",
               "UVSTALL_MAX_FRAMES": "0x10",
               "UVSTALL_CAPTURE_TIMEOUT_MS": " 5",
               "UVSTALL_MAX_SAMPLES_PER_STALL": "5ms",
               "UVSTALL_ABORT_AFTER_MS": "50",             # before the 100 ms threshold
               "UVSTALL_SUMMARY_INTERVAL_MS": "50",        # 1..99 is refused
               "UVSTALL_MAX_QUEUED_REPORTS": "-0",
               "UVSTALL_MAX_STALLS_PER_MINUTE": "",
               "UVSTALL_STACK_WINDOW_KB": "2048",
               "UVSTALL_METRICS_INTERVAL_MS": "x" * 100000,
               "UVSTALL_METRICS_ADDR": "127.0.0.1:9464\nX-Injected: 1",
               "UVSTALL_METRICS_FILE": "/nonexistent-dir/\x1b[31mred.prom",
               "UVSTALL_SIGNAL": "SIGRTMIN+4294967296",
               "UVSTALL_NO_CHILDREN": "\u00e9"}
        watched = self.run_cmd([C_HOST, "stall"], uvstall=["-o", out], env=bad)
        self.assert_same_host(plain, watched)
        lines = watched.stderr.splitlines()
        self.assertEqual(len(lines), len(bad), lines)
        for name in bad:
            mine = [l for l in lines if l.startswith("uvstall: ignoring %s=\"" % name)]
            self.assertEqual(len(mine), 1, (name, lines))
            self.assertIn("; using the default ", mine[0])
            self.assertLess(len(mine[0]), 400)
            self.assertTrue(mine[0].isprintable() and mine[0].isascii(), mine[0])
        records = read_jsonl(out)
        options = [r for r in records if r["type"] == "start"][0]["options"]
        self.assertEqual((options["interval_ms"], options["threshold_ms"], options["max_frames"],
                          options["capture_timeout_ms"], options["max_samples_per_stall"],
                          options["abort_after_ms"], options["stack_window_kb"]),
                         (20, 100, 64, 50, 8, 0, 64))
        self.assertEqual(len(self.stalls_in(records, "c_host_blocking_sleep")), 1)

    def test_flags_set_the_options(self):
        out = os.path.join(self.tmp, "s.jsonl")
        watched = self.run_cmd([C_HOST, "stall"], uvstall=[
            "-o", out, "--interval-ms", "10", "--threshold-ms", "50", "--max-frames", "8",
            "--signal", "SIGUSR2"])
        self.assertEqual(watched.returncode, 7, watched.stderr)
        start = [r for r in read_jsonl(out) if r["type"] == "start"][0]
        self.assertEqual(start["options"]["interval_ms"], 10)
        self.assertEqual(start["options"]["threshold_ms"], 50)
        self.assertEqual(start["options"]["max_frames"], 8)
        self.assertEqual(start["options"]["signal"], 12)
        s = self.stalls_in(read_jsonl(out), "c_host_blocking_sleep")[0]
        self.assertLessEqual(len(s["frames"]), 8)

    def test_an_output_path_that_cannot_be_opened(self):
        plain = self.run_cmd([C_HOST, "stall"])
        watched = self.run_cmd([C_HOST, "stall"], uvstall=["-o", "/nonexistent/dir/s.jsonl"])
        self.assert_same_host(plain, watched)
        lines = watched.stderr.splitlines()
        warn = [l for l in lines if l.startswith("uvstall:")]
        self.assertEqual(len(warn), 1, lines)
        self.assertIn("UVSTALL_OUTPUT_PATH", warn[0])
        self.assertIn("start", [json.loads(l)["type"] for l in lines if l.startswith("{")])

    def test_a_program_that_runs_no_hookable_loop_is_named(self):
        for cmd in ([C_HOST, "norun"], ["/bin/true"]):
            plain = self.run_cmd(cmd)
            watched = self.run_cmd(cmd, uvstall=[])
            self.assert_same_host(plain, watched)
            lines = watched.stderr.splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith("uvstall-run: "))
            self.assertIn("never ran a libuv loop", lines[0])
        quiet = self.run_cmd(["/bin/true"], uvstall=["-q"])
        self.assertEqual(quiet.stderr, "")

    def test_usage_errors(self):
        r = self.run_cmd([], uvstall=["--bogus"])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.splitlines()), 1)
        r = self.run_cmd(["/nonexistent/program"], uvstall=[])
        self.assertEqual(r.returncode, 127)
        h = subprocess.run([PY, RUN, "--help"], capture_output=True, text=True)
        self.assertEqual(h.returncode, 0)
        self.assertIn("examples:", h.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
