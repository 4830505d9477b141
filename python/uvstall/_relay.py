"""Delivers a watch's records to its Python on_report callback.

Why not hand the library a ctypes callback: the library's writer thread
would call it, and it may do so after the interpreter is finalized — a
watch still running on a daemon thread at exit gets its "exit" records
from the library's own atexit handler, which runs after Py_Finalize — and
a ctypes callback entered then crashes the process (it takes the GIL of an
interpreter that is gone). So the library writes each watch's records to a
FIFO of ours (its ordinary output_path: one JSON line per record), and one
daemon thread here reads them and calls the callbacks. The library's
writer never runs Python; at exit the relay thread just stops.

Each FIFO lives until the library closes its end (end of file here), so a
record queued before uvstall_stop — a stall_end — still reaches the
callback after the stop. A callback that is slower than the records fill
the FIFO (64 KiB) makes the library's writer wait, and records beyond the
library's queue are dropped and counted, as with a slow C callback.
"""

import atexit
import os
import selectors
import shutil
import sys
import tempfile
import threading
import traceback

_lock = threading.Lock()
_relay = None


class _Relay:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="uvstall-relay-")
        self.sel = selectors.DefaultSelector()
        self.count = 0
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.pending = []  # (fd, entry) to register, handed over under _lock
        self.thread = threading.Thread(target=self._run, name="uvstall-relay", daemon=True)
        self.thread.start()
        atexit.register(shutil.rmtree, self.dir, True)

    def open(self):
        """A new FIFO: (path for the library's output_path, our read end)."""
        with _lock:
            self.count += 1
            path = os.path.join(self.dir, "watch-%d" % self.count)
        os.mkfifo(path, 0o600)
        # Non-blocking, so opening needs no writer; the library opens the
        # write end during uvstall_start_external.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        return path, fd

    def watch(self, fd, path, on_report):
        """Starts delivering: call once the library has opened `path`."""
        with _lock:
            self.pending.append((fd, [on_report, b"", path]))
        os.write(self.wake_w, b"x")

    def discard(self, fd, path):
        """The library never opened it (the start failed)."""
        os.close(fd)
        os.unlink(path)

    def _run(self):
        while True:
            for key, _ in self.sel.select():
                if key.data is None:
                    try:
                        os.read(self.wake_r, 512)
                    except BlockingIOError:
                        pass
                    with _lock:
                        pending, self.pending = self.pending, []
                    for fd, entry in pending:
                        self.sel.register(fd, selectors.EVENT_READ, entry)
                    continue
                self._drain(key.fd, key.data)

    def _drain(self, fd, entry):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:  # the library closed the output: this watch is done
            self.sel.unregister(fd)
            os.close(fd)
            try:
                os.unlink(entry[2])
            except OSError:
                pass
            return
        lines = (entry[1] + chunk).split(b"\n")
        entry[1] = lines.pop()
        for line in lines:
            try:
                entry[0](line.decode("utf-8", "replace"))
            except Exception:
                sys.stderr.write("uvstall: on_report raised; that record is lost:\n")
                traceback.print_exc()


def relay():
    global _relay
    with _lock:
        if _relay is None:
            _relay = _Relay()
        return _relay
