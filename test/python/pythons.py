"""Where the tests look for other CPython interpreters: a pyenv-style
versions directory (VERSION/bin/python3.X, VERSION/include/python3.X).

The meson option -Dpython_versions_dir wins when set; else
$UVSTALL_TEST_PYTHONS; else pyenv's own ($PYENV_ROOT/versions, or
~/.pyenv/versions). Shared by the per-version, layout and wheel tests."""

import os


def versions_dir(option=""):
    return option or os.environ.get("UVSTALL_TEST_PYTHONS") or os.path.join(
        os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv"), "versions")
