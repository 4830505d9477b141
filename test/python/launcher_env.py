"""`python3 -m uvstall` reads the UVSTALL_* variables as preload mode does,
and its flags win over them. Real runs of test/python/apps/stall_maps.py (a
300 ms time.sleep in a callback) with the package from the source tree and
the library from the build ($UVSTALL_LIBRARY, $PYTHONPATH from meson).

    launcher_env.py APP PRELOAD_LIB

PRELOAD_LIB (the build's libuvstall-preload.so) gives preload mode's own
warning for the same bad value, to compare the lines word for word.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

PY = "/usr/bin/python3"
APP, PRELOAD_LIB = sys.argv[1:3]
del sys.argv[1:3]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("UVSTALL_")}
    env["UVSTALL_LIBRARY"] = os.environ["UVSTALL_LIBRARY"]
    env.update(extra)
    return env


def read_records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


class LauncherEnv(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="uvstall-env-")
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def launch(self, flags, **env):
        p = subprocess.run([PY, "-m", "uvstall"] + flags + [APP], env=clean_env(**env),
                           capture_output=True, text=True, cwd=self.dir, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('"libs"', p.stdout)
        return p

    def stalls_in(self, path):
        recs = read_records(path)
        return [r for r in recs if r["type"] == "stall"]

    def test_output_path_variable_is_honoured(self):
        out = os.path.join(self.dir, "env-%p.jsonl")
        p = self.launch([], UVSTALL_OUTPUT_PATH=out)
        files = [f for f in os.listdir(self.dir) if f.startswith("env-")]
        self.assertEqual(len(files), 1, files)
        self.assertRegex(files[0], r"^env-\d+\.jsonl$")  # %p is the pid
        self.assertTrue(self.stalls_in(os.path.join(self.dir, files[0])))
        self.assertNotIn('"type":"stall"', p.stderr)

    def test_output_path_flag_wins_over_the_variable(self):
        env_out = os.path.join(self.dir, "env.jsonl")
        flag_out = os.path.join(self.dir, "flag.jsonl")
        self.launch(["--output-path", flag_out], UVSTALL_OUTPUT_PATH=env_out)
        self.assertTrue(self.stalls_in(flag_out))
        self.assertFalse(os.path.exists(env_out))

    def test_threshold_variable_and_flag(self):
        out = os.path.join(self.dir, "t.jsonl")
        self.launch(["--output-path", out], UVSTALL_THRESHOLD_MS="150")
        self.assertEqual({r["threshold_ms"] for r in self.stalls_in(out)}, {150})
        os.unlink(out)
        self.launch(["--output-path", out, "--threshold-ms", "120"], UVSTALL_THRESHOLD_MS="150")
        self.assertEqual({r["threshold_ms"] for r in self.stalls_in(out)}, {120})

    def test_bad_threshold_gives_preload_modes_one_line_and_the_default(self):
        out = os.path.join(self.dir, "bad.jsonl")
        p = self.launch(["--output-path", out], UVSTALL_THRESHOLD_MS="12x")
        lines = [line for line in p.stderr.splitlines() if "UVSTALL_" in line]
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertEqual({r["threshold_ms"] for r in self.stalls_in(out)}, {100})
        # Preload mode's line for the same value (a libuv loop under the shim:
        # Debian's uvloop), word for word.
        q = subprocess.run(
            [PY, "-c", "import asyncio, uvloop; l = uvloop.new_event_loop(); "
                       "l.run_until_complete(asyncio.sleep(0.05))"],
            env=clean_env(LD_PRELOAD=PRELOAD_LIB, UVSTALL_THRESHOLD_MS="12x",
                          UVSTALL_OUTPUT_PATH=os.path.join(self.dir, "preload.jsonl")),
            capture_output=True, text=True, timeout=60)
        self.assertEqual(q.returncode, 0, q.stderr)
        preload = [line for line in q.stderr.splitlines() if "UVSTALL_" in line]
        self.assertEqual(lines, preload)


if __name__ == "__main__":
    unittest.main(verbosity=2)
