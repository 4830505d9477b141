"""The committed layout table (src/python_layouts.inc) against the headers
of every CPython on this machine: tools/pylayout.c is compiled against each
one's headers and its row must equal the committed row for that version.

    layouts_test.py SRC_ROOT VERSIONS_DIR [INCLUDE_DIR...] -- CC [CC_ARGS...]

VERSIONS_DIR is a pyenv-style versions directory (3.X.Y/include/python3.X;
empty: $UVSTALL_TEST_PYTHONS, then $PYENV_ROOT/versions or ~/.pyenv/versions),
each INCLUDE_DIR another python3.X include directory (Debian's). No headers
at all: exit 77 (SKIP) with the reason.
"""

import glob
import os
import re
import subprocess
import sys
import tempfile

import pythons


def main():
    args = sys.argv[1:]
    if "--" not in args or len(args) < 3:
        sys.exit(__doc__)
    cc = args[args.index("--") + 1:]
    src, versions_dir, *extra = args[:args.index("--")]
    versions_dir = pythons.versions_dir(versions_dir)
    incs = sorted(glob.glob(os.path.join(versions_dir, "3.*", "include", "python3.*")))
    incs += [d for d in extra if os.path.isdir(d)]
    with open(os.path.join(src, "src", "python_layouts.inc")) as f:
        table = {}
        for line in f:
            m = re.match(r"\s*\{(\d+), (\d+),", line)
            if m:
                table["%s.%s" % m.groups()] = line.strip()
    checked, failures = 0, []
    with tempfile.TemporaryDirectory(prefix="uvstall-layouts-") as tmp:
        for inc in incs:
            version = os.path.basename(inc)[len("python"):]
            if not os.path.isdir(os.path.join(inc, "internal")):
                print("%s: no internal headers, not checked" % inc)
                continue
            exe = os.path.join(tmp, "pylayout-" + version)
            c = subprocess.run(cc + ["-DPy_BUILD_CORE", "-I", inc, "-o", exe,
                                     os.path.join(src, "tools", "pylayout.c")],
                               capture_output=True, text=True)
            if c.returncode != 0:
                if version not in table:
                    print("%s: pylayout does not know %s (%s)" % (inc, version,
                                                                  c.stderr.strip()[-120:]))
                    continue
                failures.append("%s: pylayout.c does not compile: %s" % (inc, c.stderr[-400:]))
                continue
            row = subprocess.run([exe], capture_output=True, text=True, check=True).stdout.strip()
            checked += 1
            if table.get(version) != row:
                failures.append("%s: the headers give\n  %s\nthe table has\n  %s" % (
                    inc, row, table.get(version)))
            else:
                print("%s: %s agrees" % (inc, version))
    for f in failures:
        print("FAIL: " + f)
    if failures:
        sys.exit(1)
    if checked == 0:
        print("SKIP: no CPython headers with internal headers under %s or %s" % (versions_dir, extra))
        sys.exit(77)


if __name__ == "__main__":
    main()
