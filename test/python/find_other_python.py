"""Prints the path of a working CPython 3.x that is not 3.11 (pyenv's
versions or python3.N on PATH), or nothing. pyenv's shims on PATH fail
unless their version is selected, so each candidate is run once."""

import glob
import os
import shutil
import subprocess

def version(path):
    return [int(x) for x in path.split("/versions/")[1].split("/")[0].split(".")[:2]]


candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")),
                    key=version, reverse=True)  # the newest first
candidates += [shutil.which("python3.%d" % n) for n in range(13, 7, -1)]
for c in candidates:
    if not c:
        continue
    try:
        v = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2] != (3, 11))"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        continue
    if v.returncode == 0 and v.stdout.strip() == "True":
        print(c)
        break
