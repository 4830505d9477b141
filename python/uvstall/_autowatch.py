"""Watch every asyncio loop a program runs, for `python3 -m uvstall`.

The hook is asyncio.events._set_running_loop: every loop calls it on its
own thread when it starts running (with the loop) and when it stops (with
None) — asyncio's BaseEventLoop looks it up at each call, uvloop (0.17)
binds it once when it is imported. So it covers asyncio.run, run_forever,
run_until_complete, uvloop.install() + asyncio.run and
uvloop.new_event_loop(), provided the hook is installed before uvloop is
imported (the launcher installs it before the program runs).

A loop is watched while it runs: the watch starts when the loop starts
running and stops when it stops, so a thread that does other work between
two runs of its loop is not reported as a stalled loop. (asyncio.run runs
its loop up to three times — the program, then shutting down async
generators and the executor — so its report has up to three "start"
records with the same loop name.)
"""

import asyncio
import asyncio.events
import sys
import threading

from . import UvstallError, watch

_options = {}
_tls = threading.local()
_original = None
_failed = False


def _started(loop):
    global _failed
    if _failed:
        return
    try:
        _tls.watch = watch(loop, **_options)
    except (UvstallError, OSError, ValueError, TypeError) as e:
        # Options were checked before the program started; whatever is left
        # (no free capture slot, a thread that cannot start) is said once,
        # and the program goes on unwatched.
        _failed = True
        sys.stderr.write("uvstall: not watching asyncio loops: %s\n" % e)


def _stopped():
    w = getattr(_tls, "watch", None)
    _tls.watch = None
    if w is not None:
        try:
            w.stop()
        except UvstallError as e:
            sys.stderr.write("uvstall: %s\n" % e)


def _set_running_loop(loop):
    _original(loop)
    if loop is not None:
        _started(loop)
    else:
        _stopped()


def install(**options):
    """Watches, with `options` (those of uvstall.watch), every loop that
    starts running from now on. Once per process."""
    global _original
    if _original is not None:
        raise RuntimeError("uvstall: the asyncio hook is already installed")
    _options.update(options)
    _original = asyncio.events._set_running_loop
    asyncio.events._set_running_loop = _set_running_loop
    if getattr(asyncio, "_set_running_loop", None) is _original:
        asyncio._set_running_loop = _set_running_loop
    if "uvloop" in sys.modules:
        sys.stderr.write("uvstall: uvloop was imported before the asyncio hook; "
                         "its loops are not watched\n")
