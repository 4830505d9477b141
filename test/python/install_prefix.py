"""`meson install` to a prefix that Debian's python3 does not search: the
Python package is installed there all the same (meson's python module
install dir under the prefix), the PYTHONPATH it needs is printed at
configure time and at install time, and with it `python3 -m uvstall` runs
an app with a real stall, using the library installed in that prefix.

    install_prefix.py SOURCE_ROOT APP

A build of its own (the library and the shim only) in a temporary
directory, installed to a real prefix there (no DESTDIR). Takes about a
minute: it compiles the library.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

PY = "/usr/bin/python3"


def fail(msg):
    sys.exit("FAIL: " + msg)


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        fail("%s: exit %d\n%s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def python_path_in(text, what):
    found = re.findall(r"PYTHONPATH=(\S+)", text)
    if len(found) != 1:
        fail("%s names %d PYTHONPATHs, not one:\n%s" % (what, len(found), text))
    return found[0]


def main():
    source, app = sys.argv[1:3]
    with tempfile.TemporaryDirectory(prefix="uvstall-prefix-") as tmp:
        prefix = os.path.join(tmp, "prefix")
        build = os.path.join(tmp, "build")
        t0 = time.monotonic()
        p = run(["meson", "setup", build, source, "--prefix=" + prefix, "-Dtests=false",
                 "-Dexamples=false", "-Dbench=false"])
        configured = python_path_in(p.stdout, "the configure summary")
        p = run(["meson", "install", "-C", build])
        installed = python_path_in(p.stdout, "meson install's output")
        print("built and installed in %.0f s" % (time.monotonic() - t0))
        if configured != installed:
            fail("configure says PYTHONPATH=%s, install says %s" % (configured, installed))
        if not configured.startswith(prefix + "/"):
            fail("PYTHONPATH=%s is not under the prefix %s" % (configured, prefix))
        if not os.path.isfile(os.path.join(configured, "uvstall", "__main__.py")):
            fail("no package installed in %s" % configured)
        print("PASS: package installed in %s, PYTHONPATH printed at configure and install"
              % configured)

        libdir = run(["meson", "introspect", build, "--buildoptions"]).stdout
        libdir = [o["value"] for o in json.loads(libdir) if o["name"] == "libdir"][0]
        lib = os.path.realpath(os.path.join(prefix, libdir, "libuvstall.so.1"))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("UVSTALL_") and k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
        env["PYTHONPATH"] = configured
        out = os.path.join(tmp, "stalls.jsonl")
        p = run([PY, "-m", "uvstall", "--output-path", out, app], env=env, cwd=tmp, timeout=60)
        state = json.loads(p.stdout.splitlines()[-1])
        mapped = [os.path.realpath(x) for x in state["libs"]]
        if mapped != [lib]:
            fail("the process mapped %s, not the prefix's %s" % (state["libs"], lib))
        with open(out) as f:
            records = [json.loads(line) for line in f]
        stalls = [r for r in records if r["type"] == "stall"]
        ends = [r for r in records if r["type"] == "stall_end"]
        if not stalls or not ends or not 250 <= ends[0]["duration_ms"] <= 1000:
            fail("no 300 ms stall reported: %s" % records)
        print("PASS: python3 -m uvstall with that PYTHONPATH reported the %.0f ms stall, "
              "library %s" % (ends[0]["duration_ms"], lib))


if __name__ == "__main__":
    main()
