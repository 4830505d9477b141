#!/usr/bin/python3
"""uvstall-report fed truncated, corrupt and enormous input (the cases of
test/symbolize/hostile.py), as a user would run it: never a traceback; the
first ten bad lines named on stderr, the rest counted, and the closing
"wrote ..." line counting them all; exit status 1 when a line was skipped,
else 0 (docs/report-viewer.md); the page still written from the good lines,
its data valid JSON with the bad lines counted. A directory or a file that
fails to read is a usage error: exit status 2, one line, no page.

No browser: the page's data is read from the file. Standard library only.
Run: /usr/bin/python3 test/report/test_bad_input.py
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT_TOOL = os.path.join(HERE, "..", "..", "tools", "uvstall-report")
sys.path.insert(0, os.path.join(HERE, "..", "symbolize"))
import hostile  # noqa: E402

WORK = None


def setUpModule():
    global WORK
    WORK = tempfile.mkdtemp(prefix="uvstall-report-bad-input-")


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def run_report(*args):
    env = {k: v for k, v in os.environ.items()
           if k != "DEBUGINFOD_URLS" and not k.lower().endswith("_proxy")}
    return subprocess.run(["/usr/bin/python3", REPORT_TOOL, "--no-lookup", *args],
                          capture_output=True, timeout=180, env=env,
                          stdin=subprocess.DEVNULL)


def page_data(path):
    with open(path, encoding="utf-8") as f:
        page = f.read()
    m = re.search(r'<script type="application/json" id="uvstall-data">(.*?)</script>', page,
                  re.S)
    assert m, "no data element in %s" % path

    def strict(constant):
        raise ValueError("%s is not JSON: the page could not read its data" % constant)
    return json.loads(m.group(1), parse_constant=strict)


class BadInput(unittest.TestCase):
    def check(self, name, content, bad, kept):
        src = os.path.join(WORK, "in.jsonl")
        page = os.path.join(WORK, "report.html")
        with open(src, "wb") as f:
            f.write(content)
        if os.path.exists(page):
            os.unlink(page)
        result = run_report(src, "-o", page)
        err = result.stderr.decode("utf-8", "replace")
        self.assertNotIn("Traceback", err)
        self.assertEqual(result.returncode, 1 if bad else 0, err[-2000:])
        lines = err.splitlines()
        named = [l for l in lines if l.endswith("; line skipped")]
        self.assertEqual(len(named), min(bad, 10), lines)
        if bad > 10:
            self.assertIn("uvstall-report: %d more bad lines skipped (all counted on the page)"
                          % (bad - 10), lines)
        self.assertRegex(lines[-1], r"\Auvstall-report: wrote %s: \d+ stalls?, \d+ culprits?, "
                         r"%d bad lines? skipped" % (re.escape(page), bad))
        self.assertLessEqual(len(lines), 12, lines)
        d = page_data(page)
        self.assertEqual(d["counts"]["bad"], bad)
        # every stall of the good lines is on the page
        good_stalls = {json.loads(l)["run_id"] + "/" + str(json.loads(l)["stall_id"])
                       for l in hostile.good_lines() if '"type":"stall"' in l}
        self.assertGreaterEqual(len(d["stalls"]["t"]), len(good_stalls) if content else 0)

    def test_each_case(self):
        for case in hostile.cases() + [hostile.empty_case()]:
            with self.subTest(case=case[0]):
                self.check(*case)

    def test_a_directory_or_a_file_that_fails_to_read(self):
        page = os.path.join(WORK, "never.html")
        for path, reason in ((WORK, "Is a directory"), ("/proc/self/mem", "Input/output error")):
            result = run_report(path, "-o", page)
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertEqual(result.stderr.decode(),
                             "uvstall-report: cannot read %s: %s\n" % (path, reason))
            self.assertFalse(os.path.exists(page))


if __name__ == "__main__":
    unittest.main(verbosity=2)
