"""Run by `meson install` when the Python package went to a directory that
the interpreter does not search: says the PYTHONPATH a user needs.

    install_note.py PACKAGE_DIR PYTHON

meson 1.0 runs install scripts with their output in a pipe that it shows
only when the script fails, so the note goes to meson's own standard output
(/proc/PPID/fd/1, meson being our parent) when ours is not that already.
"""

import os
import sys


def main():
    package_dir, python = sys.argv[1:3]
    destdir = os.environ.get("DESTDIR", "")
    where = " (under DESTDIR=%s now)" % destdir if destdir else ""
    note = ("uvstall: the Python package is in %s%s, which %s does not search; run it with\n"
            "  PYTHONPATH=%s %s -m uvstall app.py\n" % (package_dir, where, python,
                                                       package_dir, python))
    meson_stdout = "/proc/%d/fd/1" % os.getppid()
    try:
        ours, theirs = os.fstat(1), os.stat(meson_stdout)
        if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino):
            with open(meson_stdout, "a") as f:
                f.write(note)
            return
    except OSError:
        pass
    sys.stdout.write(note)


if __name__ == "__main__":
    main()
