"""PEP 517 build backend for uvstall: meson-python (mesonpy), with two
adjustments made in this process only, each applied when the meson-python
in use has the internals it replaces (written against Debian 12's 0.12;
with another version whatever is missing is left as meson-python does it).

1. The wheel tag. uvstall's wheel holds pure Python code plus
   libuvstall.so.1 and libuvstall-preload.so inside the package. Those are
   ordinary shared libraries loaded with ctypes.CDLL: they link libc and
   libuv, not libpython, and no interpreter imports them as a module, so
   the wheel depends on the platform and not on the Python version or ABI:
   its honest tag is py3-none-<platform> (linux_x86_64 here). meson-python
   0.12 assumes that everything installed in {platlib} is an extension
   module and tags such a wheel cp311-cp311-<platform>, which pip refuses
   on every other interpreter. meson-python already has the right answer
   for a wheel with native code and no extension module (py3-none-
   <platform>); we only make its "has extension modules" test look at what
   an extension module is: a file in {platlib} whose name is
   IDENTIFIER + one of importlib.machinery.EXTENSION_SUFFIXES (what the
   import system would load). Should an extension module ever be added,
   the tag goes back to meson-python's cpXY-cpXY on its own.

2. The checkout stays clean. meson-python 0.12 writes
   .mesonpy-native-file.ini into the source tree and makes its working
   directory (build and staging) a temporary .mesonpy-XXXX directory inside
   it. Both go to a temporary directory outside the tree instead. (Python
   would also write this file's bytecode next to it, in __pycache__: a
   plain file of that name stands there, so it cannot.)

Everything else (metadata, the build, the files in the wheel) is
meson-python's.
"""

import importlib.machinery
import os
import pathlib
import tempfile
import contextlib

import mesonpy
from mesonpy import (build_sdist, build_wheel, get_requires_for_build_sdist,  # noqa: F401
                     get_requires_for_build_wheel)

__all__ = ["build_sdist", "build_wheel", "get_requires_for_build_sdist",
           "get_requires_for_build_wheel"]


def _is_extension_module(path):
    name = pathlib.PurePath(path).name
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if name.endswith(suffix) and name[:-len(suffix)].isidentifier():
            return True
    return False


def _has_extension_modules(self):
    return any(_is_extension_module(dest) for dest, _ in self._wheel_files["platlib"])


_builder = getattr(mesonpy, "_WheelBuilder", None)
if isinstance(getattr(_builder, "_has_extension_modules", None), property) and \
        hasattr(_builder, "_wheel_files"):
    _builder._has_extension_modules = property(_has_extension_modules)


def _in_working_dir(name):
    """An attribute that is always WORKING_DIR/name; setting it does nothing."""
    return property(lambda self: self._working_dir / name, lambda self, _value: None)


_project = getattr(mesonpy, "Project", None)
if _project is not None and hasattr(_project, "with_temp_working_dir"):

    class _OutOfTreeProject(_project):
        """meson-python's Project with its working directory and native file
        outside the source tree."""

        # Project.__init__ sets these to paths in the source tree, then
        # writes the native file there: they are read from the working
        # directory (a fresh temporary one) instead.
        _meson_native_file = _in_working_dir(".mesonpy-native-file.ini")
        _meson_cross_file = _in_working_dir(".mesonpy-cross-file.ini")

        @classmethod
        @contextlib.contextmanager
        def with_temp_working_dir(cls, source_dir=os.path.curdir, build_dir=None,
                                  meson_args=None):
            with tempfile.TemporaryDirectory(prefix="uvstall-mesonpy-") as tmpdir:
                yield cls(source_dir, tmpdir, build_dir, meson_args)

    mesonpy.Project = _OutOfTreeProject
