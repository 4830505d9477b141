"""The pip path: a wheel built from a clean export of the source tree, with
Debian's python3 and meson-python offline, installed into fresh venvs of
Debian's 3.11 and of every other CPython 3 in VERSIONS_DIR (pyenv's), where
`python -m uvstall` runs an app with a real stall and must use the venv's
own copy of the library.

    wheel.py SOURCE_ROOT VERSIONS_DIR APP

Everything runs under `env -i` with a minimal PATH (no $UVSTALL_LIBRARY,
no $PYTHONPATH, no pip configuration). Also checked: the export is left
as it was (meson-python writes nothing into the tree), the wheel's tag is
py3-none-<platform> and it holds the package, libuvstall.so.1 and the
preload shim and nothing else, and the shim loads the package's library.
The wheel is built once (it compiles the library, 1-2 minutes) and reused.

Exit status 77 (skipped) when nothing can run: no meson-python for
/usr/bin/python3. Interpreters that are missing or too old are SKIPped
with the reason; the rest must pass.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile

import pythons

DEBIAN_PY = "/usr/bin/python3"
MIN_PYTHON = (3, 7)  # requires-python in pyproject.toml
PATH = "/usr/bin:/bin"
EXPECTED = {"uvstall/__init__.py", "uvstall/__main__.py", "uvstall/_autowatch.py",
            "uvstall/_env.py", "uvstall/_lib.py", "uvstall/_relay.py",
            "uvstall/libuvstall.so.1", "uvstall/libuvstall-preload.so"}


def fail(msg):
    sys.exit("FAIL: " + msg)


def run(cmd, env_extra=None, venv=None, **kw):
    """cmd under env -i: PATH minimal (the venv's bin first), HOME in tmp."""
    env = {"PATH": (venv + "/bin:" if venv else "") + PATH, "HOME": kw.pop("home"),
           "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "LANG": "C.UTF-8"}
    env.update(env_extra or {})
    argv = ["env", "-i"] + ["%s=%s" % kv for kv in env.items()] + cmd
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        fail("%s: exit %d\n%s%s" % (" ".join(cmd), p.returncode, p.stdout[-3000:],
                                    p.stderr[-3000:]))
    return p


def export(source, dest):
    """The files git tracks or would (not ignored), as they are in the
    working tree; without git,
    the tree minus build directories and .git."""
    try:
        p = subprocess.run(["git", "-C", source, "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True)
    except OSError:  # no git (a fresh machine, an unpacked archive)
        p = None
    if p is not None and p.returncode == 0 and p.stdout:
        names = [n for n in p.stdout.decode().split("\0") if n]
    else:
        names = []
        for root, dirs, files in os.walk(source):
            # Build directories are the top level's (build, build-asan...):
            # python/build_backend is source.
            dirs[:] = [d for d in dirs if d not in (".git", "__pycache__") and
                       not (root == source and d.startswith("build"))]
            names += [os.path.relpath(os.path.join(root, f), source) for f in files]
    for n in names:
        src = os.path.join(source, n)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, n)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, n))


def snapshot(tree):
    out = {}
    for root, dirs, files in os.walk(tree):
        for f in dirs + files:
            path = os.path.join(root, f)
            out[os.path.relpath(path, tree)] = os.lstat(path).st_mtime_ns
    return out


def interpreters(versions_dir):
    """[(label, python)], and SKIP lines for those that cannot be used."""
    found = [("debian-3.11", DEBIAN_PY)]
    skips = []
    if not os.path.isdir(versions_dir):
        skips.append("SKIP: %s does not exist: no other interpreters" % versions_dir)
        return found, skips
    for v in sorted(os.listdir(versions_dir)):
        py = os.path.join(versions_dir, v, "bin", "python3")
        if not os.access(py, os.X_OK):
            skips.append("SKIP: %s: no bin/python3 (a Python 2 or not CPython)" % v)
            continue
        ver = subprocess.run([py, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.split()
        if tuple(map(int, ver)) < MIN_PYTHON:
            skips.append("SKIP: %s: older than requires-python >= %d.%d" % ((v,) + MIN_PYTHON))
            continue
        found.append((v, py))
    return found, skips


def check_wheel(path):
    name = os.path.basename(path)
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if not name.endswith("-py3-none-%s.whl" % platform):
        fail("wheel %s is not tagged py3-none-%s" % (name, platform))
    with zipfile.ZipFile(path) as z:
        files = set(z.namelist())
        wheel_meta = z.read("uvstall-%s.dist-info/WHEEL" % name.split("-")[1]).decode()
    contents = {f for f in files if ".dist-info/" not in f}
    if contents != EXPECTED:
        fail("the wheel holds %s, not %s" % (sorted(contents), sorted(EXPECTED)))
    if "Root-Is-Purelib: false" not in wheel_meta:
        fail("WHEEL says %r" % wheel_meta)
    print("PASS: %s holds %s" % (name, " ".join(sorted(files))))


def run_app(label, py, wheel, tmp, app):
    venv = os.path.join(tmp, "venv-" + label)
    home = tmp
    t0 = time.monotonic()
    run([py, "-m", "venv", venv], home=home, timeout=120)
    run([venv + "/bin/python", "-m", "pip", "install", "--no-index", "--quiet", wheel],
        venv=venv, home=home, timeout=120)
    out = os.path.join(tmp, "stalls-%s.jsonl" % label)
    p = run([venv + "/bin/python", "-m", "uvstall", "--output-path", out, app],
            venv=venv, home=home, cwd=tmp, timeout=60)
    state = json.loads(p.stdout.splitlines()[-1])
    pkg = run([venv + "/bin/python", "-c", "import os, uvstall; "
               "print(os.path.dirname(os.path.realpath(uvstall.__file__)))"],
              venv=venv, home=home, cwd=tmp).stdout.strip()
    ours = os.path.join(pkg, "libuvstall.so.1")
    if not pkg.startswith(os.path.realpath(venv) + "/"):
        fail("%s: imported uvstall from %s, not the venv" % (label, pkg))
    if [os.path.realpath(x) for x in state["libs"]] != [ours]:
        fail("%s: the process mapped %s, not the venv's %s" % (label, state["libs"], ours))
    with open(out) as f:
        records = [json.loads(line) for line in f]
    ends = [r for r in records if r["type"] == "stall_end"]
    if not any(r["type"] == "stall" for r in records) or not ends or \
            not 250 <= ends[0]["duration_ms"] <= 1000:
        fail("%s: no 300 ms stall reported: %s" % (label, records))
    print("PASS: %s (Python %s): reported the %.0f ms stall with %s (%.1f s)" % (
        label, state["python"], ends[0]["duration_ms"], ours, time.monotonic() - t0))
    return venv, ours


def main():
    source, versions_dir, app = sys.argv[1:4]
    versions_dir = pythons.versions_dir(versions_dir)
    has_mesonpy = subprocess.run([DEBIAN_PY, "-c", "import mesonpy"],
                                 capture_output=True).returncode == 0
    if not has_mesonpy:
        print("SKIP: /usr/bin/python3 has no meson-python (apt-get install python3-mesonpy)")
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="uvstall-wheel-") as tmp:
        app_copy = os.path.join(tmp, "app.py")
        shutil.copy(app, app_copy)
        tree = os.path.join(tmp, "src")
        export(source, tree)
        before = snapshot(tree)
        builder = os.path.join(tmp, "venv-builder")
        run([DEBIAN_PY, "-m", "venv", "--system-site-packages", builder], home=tmp)
        t0 = time.monotonic()
        run([builder + "/bin/pip", "wheel", "--no-build-isolation", "--no-index", "-w",
             os.path.join(tmp, "wheels"), "."], venv=builder, home=tmp, cwd=tree, timeout=600)
        built = time.monotonic() - t0
        wheels = os.listdir(os.path.join(tmp, "wheels"))
        if len(wheels) != 1:
            fail("pip wheel made %s" % wheels)
        wheel = os.path.join(tmp, "wheels", wheels[0])
        print("PASS: built %s in %.0f s" % (wheels[0], built))
        after = snapshot(tree)
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            fail("building the wheel changed the source tree: %s" % changed[:20])
        print("PASS: the exported tree is unchanged (%d entries)" % len(after))
        check_wheel(wheel)

        found, skips = interpreters(versions_dir)
        for s in skips:
            print(s)
        # Two at a time (one per core): each venv is mostly pip and a short
        # run, independent of the others.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            jobs = {label: pool.submit(run_app, label, py, wheel, tmp, app_copy)
                    for label, py in found}
            venvs = {label: job.result() for label, job in jobs.items()}
        others = len(found) - 1
        if others < 2:
            print("SKIP: only %d interpreter(s) besides Debian's in %s (two wanted)" % (
                others, versions_dir))

        # The preload shim from the wheel finds the package's library ($ORIGIN).
        venv, ours = venvs["debian-3.11"]
        shim = os.path.join(os.path.dirname(ours), "libuvstall-preload.so")
        p = run([venv + "/bin/python", "-c", "import json; print(json.dumps(sorted({"
                 "l.split()[-1] for l in open('/proc/self/maps') if 'libuvstall' in l})))"],
                env_extra={"LD_PRELOAD": shim}, venv=venv, home=tmp, cwd=tmp)
        mapped = sorted(os.path.realpath(x) for x in json.loads(p.stdout))
        if mapped != sorted([ours, os.path.realpath(shim)]):
            fail("LD_PRELOAD=%s mapped %s" % (shim, mapped))
        print("PASS: the wheel's preload shim loads the package's library")


if __name__ == "__main__":
    main()
