"""uvstall for asyncio: find event-loop stalls while they happen and name the
line that blocks.

    import asyncio, uvstall

    async def main():
        with uvstall.watch(threshold_ms=100):   # the running loop
            await serve()

    asyncio.run(main())

or, without changing the program, `python3 -m uvstall app.py` (every asyncio
loop the program runs is watched). Works for the default asyncio loop and
uvloop alike: the heartbeat is a `loop.call_later` callback that calls
uvstall_beat(); a sentinel thread of libuvstall notices a late heartbeat,
captures the stalled thread's native stack and Python frames (lang_frames)
and writes JSON Lines reports (the library's docs/report.schema.json).

This package is only the standard library's ctypes over libuvstall.so.1 —
the same copy preload mode loads, so a process never has two sentinels.
Python frames are read on CPython 3.11 (Debian 12's); elsewhere reports
carry native frames only, and the library says why once, on stderr.
"""

import atexit
import collections
import ctypes
import os
import threading
import time
import weakref

from . import _lib, _relay
from ._lib import LibraryNotFound

__all__ = ["watch", "Watch", "Stats", "current", "set_context", "configure", "version",
           "UvstallError", "LibraryNotFound"]


class UvstallError(RuntimeError):
    """A libuvstall call failed; .code is its negative error code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


Stats = collections.namedtuple(
    "Stats", "ticks stalls stalled_ms_total reports_written reports_dropped")
Stats.__doc__ = """Counters of one watch (uvstall_stats_t): heartbeats so far,
stalls detected, total milliseconds of the stalls that ended, records handed
to the output and records dropped."""

_lock = threading.Lock()
_library = None
# Our active watches by thread id: a thread is watched at most once.
_active = {}
# Per-loop names ("asyncio-1", "uvloop-2"), stable across the runs of a loop.
_loop_names = weakref.WeakKeyDictionary()
_loop_numbers = collections.Counter()

_U32_MAX = 0xFFFFFFFF


def library():
    """The loaded library (a _lib.Lib). Raises LibraryNotFound when it cannot
    be loaded; the next call tries again."""
    global _library
    with _lock:
        if _library is None:
            _library = _lib.load()
        return _library


def version():
    """libuvstall's version string, e.g. "0.1.0"."""
    return library().version().decode()


def _check(lib, rc):
    if rc != 0:
        raise UvstallError(rc, "uvstall: " + lib.message(rc))


def configure(*, signal=0, max_queued_reports=1024, max_stalls_per_minute=60,
              summary_interval_ms=60000):
    """Process-wide settings (uvstall_configure), once, before the first
    watch starts:
      signal                 capture signal; 0 = the library's, SIGRTMAX - 3
      max_queued_reports     records waiting for the writer beyond this are
                             dropped and counted (1..1000000)
      max_stalls_per_minute  stalls reported per minute over all loops;
                             more are only counted; 0 = unlimited
      summary_interval_ms    how often a "summary" record is written while
                             there are stalls; 0 = only at exit"""
    lib = library()
    popts = _lib.ProcessOptions()
    lib.process_options_init(ctypes.byref(popts))
    popts.signal = _c_int("signal", signal)
    popts.max_queued_reports = _u32("max_queued_reports", max_queued_reports)
    popts.max_stalls_per_minute = _u32("max_stalls_per_minute", max_stalls_per_minute)
    popts.summary_interval_ms = _u32("summary_interval_ms", summary_interval_ms)
    _check(lib, lib.configure(ctypes.byref(popts)))


def _int_in(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    if not low <= value <= high:
        raise ValueError("%s must be between %d and %d (got %d)" % (name, low, high, value))
    return value


def _u32(name, value):
    return _int_in(name, value, 0, _U32_MAX)


def _c_int(name, value):
    # ctypes would keep only the low 32 bits: 2**32 + 10 must not become 10.
    return _int_in(name, value, -2**31, 2**31 - 1)


def _c_string(name, value, path=False):
    """str (or, for paths, bytes and path-like) as the library's C string:
    UTF-8, with the bytes of undecodable file names and arguments
    (surrogateescape) passed on as they were. A NUL would cut the string
    short in C, so it is refused, as open() refuses it."""
    if path:
        try:
            data = os.fsencode(value)
        except TypeError:
            raise TypeError("%s must be a str, bytes or os.PathLike, not %s"
                            % (name, type(value).__name__)) from None
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
    else:
        raise TypeError("%s must be a str, not %s" % (name, type(value).__name__))
    if b"\0" in data:
        raise ValueError("%s must not contain a NUL character" % name)
    return data


def _loop_name(loop):
    kind = "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"
    try:
        name = _loop_names.get(loop)
    except TypeError:  # not weak-referenceable: a new number per watch
        name = None
    if name is None:
        with _lock:
            _loop_numbers[kind] += 1
            name = "%s-%d" % (kind, _loop_numbers[kind])
        try:
            _loop_names[loop] = name
        except TypeError:
            pass
    return name


def _current_loop():
    import asyncio
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "uvstall.watch(): no running event loop in this thread; call it from "
            "a coroutine, or pass the loop (on the thread that will run it)") from None


def watch(loop=None, *, threshold_ms=0, interval_ms=20, output_path=None,
          on_report=None, max_frames=64, capture_timeout_ms=50, loop_name=None,
          max_samples_per_stall=8, abort_after_ms=0, stack_window_kb=64):
    """Watches `loop` (default: the running loop) from now until .stop().

    Call on the thread that runs the loop, and keep running it there: the
    capture signal goes to that thread, and while the watch is on, any time
    the thread spends away from the loop longer than the threshold is a
    stall. Options are the C library's (one name everywhere):
      threshold_ms       report when the heartbeat is this late; 0 =
                         max(100, 2 x interval_ms)
      interval_ms        how often the heartbeat runs on the loop (1..3600000)
      output_path        JSON Lines file (append); None = standard error
      on_report          callable(str) given each record (one JSON object),
                         on a thread of ours, never the loop's; nothing
                         goes to stderr then. Not with output_path.
      max_frames         native frames per stall (1..256)
      capture_timeout_ms how long to wait for the stack (1..10000)
      loop_name          name in reports; None = "asyncio-N" / "uvloop-N"
      max_samples_per_stall  records of one long stall (1..64): more
                         samples at 2x, 4x, 8x... the threshold
      abort_after_ms     0 = off; a stall this long is reported, then the
                         loop thread gets SIGABRT (for a core dump)
      stack_window_kb    KiB of native stack copied per capture (4..1024);
                         frames beyond it are cut ("truncated")
    Raises TypeError or ValueError for a value of the wrong type, outside
    0..2**32-1, or a string with a NUL (checked before anything starts),
    UvstallError (options the library refuses, ...) or LibraryNotFound. If this
    thread is already watched (preload mode, or another watch), returns an
    inactive Watch with already_watched set, quietly.
    """
    if loop is None:
        loop = _current_loop()
    return Watch(loop, threshold_ms=threshold_ms, interval_ms=interval_ms,
                 output_path=output_path, on_report=on_report, max_frames=max_frames,
                 capture_timeout_ms=capture_timeout_ms, loop_name=loop_name,
                 max_samples_per_stall=max_samples_per_stall,
                 abort_after_ms=abort_after_ms, stack_window_kb=stack_window_kb)


class Watch:
    """One watch of one loop. Use watch() to make one."""

    def __init__(self, loop, *, threshold_ms, interval_ms, output_path, on_report,
                 max_frames, capture_timeout_ms, loop_name, max_samples_per_stall,
                 abort_after_ms, stack_window_kb=64):
        import asyncio
        lib = library()
        if loop.is_running() and asyncio._get_running_loop() is not loop:
            raise RuntimeError(
                "uvstall.watch(): the loop runs in another thread; call watch() "
                "on the loop's own thread")
        opts = _lib.Options()
        lib.options_init(ctypes.byref(opts))
        opts.interval_ms = _u32("interval_ms", interval_ms)
        opts.threshold_ms = _u32("threshold_ms", threshold_ms)
        opts.max_frames = _u32("max_frames", max_frames)
        opts.capture_timeout_ms = _u32("capture_timeout_ms", capture_timeout_ms)
        opts.max_samples_per_stall = _u32("max_samples_per_stall", max_samples_per_stall)
        opts.abort_after_ms = _u32("abort_after_ms", abort_after_ms)
        opts.stack_window_kb = _u32("stack_window_kb", stack_window_kb)
        name = loop_name if loop_name is not None else _loop_name(loop)
        opts.loop_name = _c_string("loop_name", name)
        if output_path is not None:
            output_path = _c_string("output_path", output_path, path=True)
        fifo = None
        if on_report is not None and not callable(on_report):
            raise TypeError("on_report must be callable(str), not %s" % type(on_report).__name__)
        if on_report is not None:
            if output_path is not None:
                raise ValueError("uvstall.watch(): give on_report or output_path, not "
                                 "both (write the file from on_report)")
            relay = _relay.relay()
            fifo = relay.open()
            output_path = fifo[0]
        if output_path is not None:
            opts.output_path = os.fsencode(output_path)

        self.loop = loop
        self.name = name
        self.thread_id = threading.get_ident()
        self.already_watched = False
        self.context = {}
        self._lib = lib
        self._mu = threading.Lock()   # guards _h against stats() racing stop
        self._h = None
        self._timer = None
        self._final = None
        self._interval_s = interval_ms / 1000.0
        self._wake_fd = None       # the library's wake descriptor, while we read it
        self._selector = None      # the selector whose select() we wrapped
        self._select = None        # our wrapper
        self._poll_clock = None    # the word it stores into (the library reads it)

        h = ctypes.c_void_p()
        rc = lib.start_external(ctypes.byref(opts), ctypes.byref(h))
        if fifo is not None:
            if rc == 0:
                relay.watch(fifo[1], fifo[0], on_report)
            else:
                relay.discard(fifo[1], fifo[0])
        if rc == _lib.EALREADY:
            self.already_watched = True
            return
        _check(lib, rc)
        self._h = h
        with _lock:
            _active[self.thread_id] = self
        # The heartbeat: each beat re-arms itself. Bound once, for speed.
        beat, call_later, interval = lib.beat, loop.call_later, self._interval_s

        def tick():
            beat(h)
            self._timer = call_later(interval, tick)
        self._timer = call_later(interval, tick)
        self._attach_bounds(loop, lib, h)

    def _attach_bounds(self, loop, lib, h):
        # Exact stall bounds (README, "Python"). The end: the library's wake
        # descriptor, which its sentinel makes readable at detection (no GIL
        # needed), read by the loop as soon as it polls again. The start: on a
        # selector loop (the default asyncio loop), when its select() last
        # returned, stored by a wrapper into a word the sentinel reads. uvloop
        # has no select to wrap: its stalls start at the last beat.
        if lib.external_wake_fd is None:
            return  # an older library: stalls run from beat to beat
        fd = lib.external_wake_fd(h)
        if fd >= 0:
            try:
                loop.add_reader(fd, lib.external_woken, h)
                self._wake_fd = fd
            except Exception:
                # No add_reader (a proactor loop, a loop of another kind):
                # the next beat ends a stall; the watch itself goes on.
                pass
        sel = getattr(loop, "_selector", None)
        inner = getattr(sel, "select", None)
        if not callable(inner) or not _mono_is_clock_monotonic():
            return
        word = ctypes.c_uint64(0)
        mono_ns = time.monotonic_ns

        def select(timeout=None):
            # The selector's own result or exception, unchanged; only the
            # time it returned is kept (one 8-byte store).
            events = inner(timeout)
            word.value = mono_ns()
            return events
        try:
            sel.select = select
        except (AttributeError, TypeError):  # __slots__, or not a Python class
            return
        self._selector, self._select, self._poll_clock = sel, select, word
        _check(lib, lib.external_poll_clock(h, ctypes.byref(word)))

    def _detach_bounds(self):
        # Before uvstall_stop, which closes the descriptor. A selector that
        # was wrapped again since keeps our wrapper in its chain: it stores
        # into our word (kept alive by the wrapper), which nothing reads.
        fd, self._wake_fd = self._wake_fd, None
        if fd is not None:
            try:
                self.loop.remove_reader(fd)
            except (RuntimeError, ValueError, OSError):
                pass  # a closed loop polls nothing
        sel, select, self._selector, self._select = self._selector, self._select, None, None
        if sel is not None and sel.__dict__.get("select") is select:
            del sel.select

    @property
    def active(self):
        """True from a successful start until the stop has run."""
        return self._h is not None

    def stop(self):
        """Stops the watch; a stall in progress gets its stall_end. Idempotent.
        From another thread, the stop is scheduled on the loop's thread with
        call_soon_threadsafe and happens when the loop next runs; raises
        RuntimeError if that loop is already closed."""
        if self._h is None:
            return
        if threading.get_ident() == self.thread_id:
            self._stop_here()
            return
        try:
            self.loop.call_soon_threadsafe(self._stop_here)
        except RuntimeError as e:
            raise RuntimeError(
                "uvstall: Watch.stop() from another thread runs the stop on the "
                "loop's thread, but the loop is closed (%s); stop it on its own "
                "thread instead" % e) from None

    def _stop_here(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._mu:
            h, self._h = self._h, None
            if h is None:
                return
            self._detach_bounds()
            self._final = self._read_stats(h)
            rc = self._lib.stop(h)
        with _lock:
            if _active.get(self.thread_id) is self:
                del _active[self.thread_id]
        _check(self._lib, rc)

    def _read_stats(self, h):
        s = _lib.CStats()
        s.struct_size = ctypes.sizeof(s)
        _check(self._lib, self._lib.get_stats(h, ctypes.byref(s)))
        return Stats(s.ticks, s.stalls, s.stalled_ms_total, s.reports_written,
                     s.reports_dropped)

    def stats(self):
        """A Stats (any thread). After stop: the counters as they were at the
        stop. None if the thread was already watched by someone else."""
        with self._mu:
            if self._h is None:
                return self._final
            return self._read_stats(self._h)

    def set_context(self, key, value):
        """Labels what the loop is doing now (e.g. "route", "/api/users"):
        records of stalls that begin while it is set carry it in "context".
        value None removes the key. Call on the loop's thread. Needs a
        library with uvstall_set_context (issue 7); with an older one this
        only keeps the values in .context, and raises nothing."""
        ckey = _c_string("context key", str(key))
        cvalue = None if value is None else _c_string("context value", str(value))
        fn = self._lib.set_context
        if fn is not None and self._h is not None:
            if threading.get_ident() != self.thread_id:
                raise RuntimeError("uvstall: set_context must be called on the loop's thread")
            _check(self._lib, fn(self._h, ckey, cvalue))
        # Only what the library took (a refused key is not kept either).
        if value is None:
            self.context.pop(key, None)
        else:
            self.context[key] = value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def __repr__(self):
        state = "active" if self.active else (
            "already watched" if self.already_watched else "stopped")
        return "<uvstall.Watch %s %s>" % (self.name, state)


_clock_checked = None


def _mono_is_clock_monotonic():
    # The poll clock must be the library's clock (CLOCK_MONOTONIC).
    global _clock_checked
    if _clock_checked is None:
        info = time.get_clock_info("monotonic")
        _clock_checked = "CLOCK_MONOTONIC)" in info.implementation
    return _clock_checked


def current():
    """The active watch of the calling thread's loop (one started by watch()
    or by `python3 -m uvstall`), or None."""
    with _lock:
        return _active.get(threading.get_ident())


def set_context(key, value):
    """Watch.set_context on current(); does nothing when this thread's loop
    is not watched, so a program can label its work unconditionally."""
    w = current()
    if w is not None:
        w.set_context(key, value)


@atexit.register
def _stop_at_exit():
    # Watches of the exiting thread: stop them while the interpreter still
    # runs, so their last records go out before it is finalized.
    me = threading.get_ident()
    with _lock:
        mine = [w for t, w in _active.items() if t == me]
    for w in mine:
        try:
            w.stop()
        except Exception:
            pass
