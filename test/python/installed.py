"""The installed Python package: `meson install` into a temporary DESTDIR,
then run the package from there, outside the source tree.

    installed.py BUILD_DIR PYTHON_DIR PREFIX LIBDIR APP

Checks that the package lands in PYTHON_DIR, that PYTHON_DIR (when it was
chosen automatically) is on /usr/bin/python3's sys.path, that _installed.py
names the installed libdir, and that `python3 -m uvstall` from the install
runs APP and reports its stall, with the library found by its soname (the
installed libdir is under DESTDIR here, so the dynamic linker is pointed at
it) and $UVSTALL_LIBRARY unset.
"""

import json
import os
import subprocess
import sys
import tempfile

MODULES = ("__init__.py", "__main__.py", "_autowatch.py", "_env.py", "_installed.py",
           "_lib.py", "_relay.py")


def fail(msg):
    sys.exit("FAIL: " + msg)


def main():
    build, python_dir, prefix, libdir, app = sys.argv[1:6]
    if not python_dir:
        fail("meson found no package directory of /usr/bin/python3 under %s" % prefix)
    if not os.path.isabs(python_dir):
        python_dir = os.path.join(prefix, python_dir)
    if not os.path.isabs(libdir):
        libdir = os.path.join(prefix, libdir)
    with tempfile.TemporaryDirectory(prefix="uvstall-pyinst-") as tmp:
        root = os.path.join(tmp, "root")
        p = subprocess.run(["meson", "install", "-C", build, "--no-rebuild", "--quiet"],
                           env=dict(os.environ, DESTDIR=root), capture_output=True, text=True)
        if p.returncode != 0:
            fail("meson install failed:\n" + p.stdout + p.stderr)
        pkg = root + python_dir + "/uvstall"
        for m in MODULES:
            if not os.path.isfile(os.path.join(pkg, m)):
                fail("%s not installed in %s" % (m, pkg))
        print("PASS: installed into", python_dir)

        path = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('\\n'.join(sys.path))"],
                              capture_output=True, text=True, check=True).stdout.split()
        if python_dir not in path:
            fail("%s is not on /usr/bin/python3's sys.path %s" % (python_dir, path))
        print("PASS: on /usr/bin/python3's path")

        installed = {}
        with open(os.path.join(pkg, "_installed.py")) as f:
            exec(f.read(), installed)
        if installed["LIBDIR"] != libdir:
            fail("_installed.py names %r, not the libdir %r" % (installed["LIBDIR"], libdir))
        print("PASS: _installed.py names", libdir)

        env = {k: v for k, v in os.environ.items() if k not in ("UVSTALL_LIBRARY", "PYTHONPATH")}
        env.update(PYTHONPATH=root + python_dir, LD_LIBRARY_PATH=root + libdir)
        out = os.path.join(tmp, "stalls.jsonl")
        p = subprocess.run(["/usr/bin/python3", "-m", "uvstall", "--output-path", out, app, "ok"],
                           env=env, capture_output=True, text=True, cwd=tmp, timeout=60)
        if p.returncode != 0 or "after ok" not in p.stdout:
            fail("the installed package did not run the app: %d\n%s%s" % (
                p.returncode, p.stdout, p.stderr))
        with open(out) as f:
            records = [json.loads(line) for line in f]
        if not any(r["type"] == "stall" for r in records):
            fail("no stall reported by the installed package: %s" % records)
        p = subprocess.run(["/usr/bin/python3", "-c", "import uvstall; print(uvstall.__file__)"],
                           env=env, capture_output=True, text=True, cwd=tmp)
        if not p.stdout.startswith(pkg):
            fail("imported %r, not the installed package" % p.stdout)
        print("PASS: the installed package watches a program (library by soname)")


if __name__ == "__main__":
    main()
