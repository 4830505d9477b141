"""ctypes binding of libuvstall.so.1: finding the library, its structs, its
functions.

The process must never hold two copies of the library (two sentinels, two
signal handlers fighting over one signal), so the copy already loaded — by
preload mode's shim, or by a host program — always wins. Otherwise the
lookup is: $UVSTALL_LIBRARY when it is set (a path, and then the only
place looked at: the test suites point it at the build tree); else the
copy inside this package (a wheel's, from `pip install`); else the libdir
this package was installed with (written to _installed.py by `meson
install`), then the soname through the dynamic linker's own search path.

Which functions hold the GIL while they run matters:
  - uvstall_start_external runs with the GIL held (a PyDLL function), so
    the library can look up the calling thread's interpreter state for
    lang_frames; it never waits for our other threads.
  - uvstall_beat holds it too: it is a clock read and a few atomic stores,
    and releasing and retaking the GIL would cost more than the call; so
    does uvstall_external_woken (the wake descriptor's read callback: one
    non-blocking read and the same stores).
  - uvstall_stop and uvstall_get_stats release it (CDLL functions): stop
    may wait for the sentinel.
The package never gives the library a callback into Python (see _relay.py).
"""

import ctypes
import os

SONAME = "libuvstall.so.1"

# Error codes the package treats specially (include/uvstall/uvstall.h).
EALREADY = -9
EWRONGTHREAD = -17


class LibraryNotFound(OSError):
    """libuvstall.so.1 could not be loaded; the message says where we looked."""


# The library's structs only grow at the end, and its init functions write
# all of the library's struct (struct_size included). So ours carry room for
# fields added after this file was written: init fills them with their
# defaults, and the library reads them back as such.
_ROOM = ("_room", ctypes.c_char * 512)


class Options(ctypes.Structure):
    """uvstall_options_t, field for field, then room to grow."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("interval_ms", ctypes.c_uint32),
        ("threshold_ms", ctypes.c_uint32),
        ("max_frames", ctypes.c_uint32),
        ("capture_timeout_ms", ctypes.c_uint32),
        ("loop_name", ctypes.c_char_p),
        ("output_path", ctypes.c_char_p),
        ("on_report", ctypes.c_void_p),
        ("report_arg", ctypes.c_void_p),
        ("max_samples_per_stall", ctypes.c_uint32),
        ("abort_after_ms", ctypes.c_uint32),
        ("metrics_interval_ms", ctypes.c_uint32),
        ("stack_window_kb", ctypes.c_uint32),
        _ROOM,
    ]


class ProcessOptions(ctypes.Structure):
    """uvstall_process_options_t, field for field, then room to grow."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("signal", ctypes.c_int),
        ("max_queued_reports", ctypes.c_uint32),
        ("max_stalls_per_minute", ctypes.c_uint32),
        ("summary_interval_ms", ctypes.c_uint32),
        _ROOM,
    ]


class CStats(ctypes.Structure):
    """uvstall_stats_t, field for field (its struct_size is ours: the
    library fills only what we know)."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("ticks", ctypes.c_uint64),
        ("stalls", ctypes.c_uint64),
        ("stalled_ms_total", ctypes.c_double),
        ("reports_written", ctypes.c_uint64),
        ("reports_dropped", ctypes.c_uint64),
    ]


class Lib:
    """The loaded library with typed functions (see the module docstring for
    which ones keep the GIL)."""

    def __init__(self, path):
        # The same handle twice: one view that releases the GIL around calls,
        # one that keeps it.
        self.path = path
        released = ctypes.CDLL(path)
        held = ctypes.PyDLL(path)
        self.handle = released

        def fn(view, name, restype, *argtypes):
            f = getattr(view, name)
            f.restype = restype
            f.argtypes = list(argtypes)
            return f

        ptr = ctypes.c_void_p
        self.options_init = fn(held, "uvstall_options_init", None, ctypes.POINTER(Options))
        self.process_options_init = fn(held, "uvstall_process_options_init", None,
                                       ctypes.POINTER(ProcessOptions))
        self.configure = fn(held, "uvstall_configure", ctypes.c_int,
                            ctypes.POINTER(ProcessOptions))
        self.start_external = fn(held, "uvstall_start_external", ctypes.c_int,
                                 ctypes.POINTER(Options), ctypes.POINTER(ptr))
        self.beat = fn(held, "uvstall_beat", None, ptr)
        self.stop = fn(released, "uvstall_stop", ctypes.c_int, ptr)
        self.get_stats = fn(released, "uvstall_get_stats", ctypes.c_int, ptr,
                            ctypes.POINTER(CStats))
        self.strerror = fn(held, "uvstall_strerror", ctypes.c_char_p, ctypes.c_int)
        self.version = fn(held, "uvstall_version", ctypes.c_char_p)
        # Issue 7 adds uvstall_set_context(h, key, value); older libraries
        # do not have it, and Watch.set_context is then a no-op.
        self.set_context = None
        if hasattr(released, "uvstall_set_context"):
            self.set_context = fn(held, "uvstall_set_context", ctypes.c_int, ptr,
                                  ctypes.c_char_p, ctypes.c_char_p)
        # Issue 15 adds the wake descriptor and the poll clock of external
        # watches (exact stall bounds); without them a stall runs from beat
        # to beat.
        self.external_wake_fd = self.external_woken = self.external_poll_clock = None
        if hasattr(released, "uvstall_external_wake_fd"):
            self.external_wake_fd = fn(held, "uvstall_external_wake_fd", ctypes.c_int, ptr)
            self.external_woken = fn(held, "uvstall_external_woken", None, ptr)
            self.external_poll_clock = fn(held, "uvstall_external_poll_clock", ctypes.c_int,
                                          ptr, ctypes.POINTER(ctypes.c_uint64))

    def message(self, rc):
        return self.strerror(rc).decode("utf-8", "replace")


def _candidates():
    """Where to look, in order, as (description, name-or-path)."""
    env = os.environ.get("UVSTALL_LIBRARY")
    if env:
        yield "$UVSTALL_LIBRARY", env
        return
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), SONAME)
    if os.path.exists(here):
        yield "the package's own copy", here
    try:
        from ._installed import LIBDIR
    except ImportError:
        LIBDIR = None
    if LIBDIR:
        yield "the installed libdir", os.path.join(LIBDIR, SONAME)
    yield "the dynamic linker's search path", SONAME


def load():
    """Returns a Lib, or raises LibraryNotFound naming every place tried."""
    # A copy already in the process (preload mode) is the one to use.
    try:
        ctypes.CDLL(SONAME, mode=os.RTLD_NOLOAD)
        return Lib(SONAME)
    except OSError:
        pass
    tried = []
    for where, name in _candidates():
        try:
            return Lib(name)
        except OSError as e:
            tried.append("%s (%s): %s" % (name, where, e))
        except AttributeError as e:
            tried.append("%s (%s): not uvstall's library, or too old: %s" % (name, where, e))
    raise LibraryNotFound("cannot load %s; tried %s" % (SONAME, "; ".join(tried)))
