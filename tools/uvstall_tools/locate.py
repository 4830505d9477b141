"""Finding the file to symbolize a module with, by its build-id.

Order, first match wins among files that carry DWARF (a file with only a
symbol table is kept as a fallback in case nothing better turns up):

  1. the module's path from the report, when its build-id matches;
  2. each --debug-dir DIR, then /usr/lib/debug: DIR/.build-id/xx/rest.debug
     (and DIR/xx/rest.debug, for a DIR that is itself a .build-id tree);
  3. each debuginfod server in $DEBUGINFOD_URLS (GET /buildid/ID/debuginfo),
     downloads cached under $XDG_CACHE_HOME/uvstall (~/.cache/uvstall).

Every file is checked by its build-id before use. A file whose build-id
differs from the report's is never used: using it could print a plausible but
wrong line. When a report carries no build-id, only the report's path is
tried, unchecked.
"""

import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import List, Optional

from . import elf

SYSTEM_DEBUG_DIR = "/usr/lib/debug"
DEFAULT_DEBUGINFOD_TIMEOUT_S = 30


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(base, "uvstall")


class _WrongFile(Exception):
    """A server answered with a file whose build-id is not the one asked for."""


@dataclass
class Found:
    path: Optional[str]  # None: nothing usable; frames keep the report's symbol
    has_debug_info: bool = False
    problems: List[str] = field(default_factory=list)  # each a one-line warning


class Locator:
    def __init__(self, debug_dirs=(), debuginfod_urls=None, cache=None,
                 timeout_s=DEFAULT_DEBUGINFOD_TIMEOUT_S):
        self.debug_dirs = list(debug_dirs) + [SYSTEM_DEBUG_DIR]
        self.servers = [u.rstrip("/") for u in (debuginfod_urls or "").split() if u]
        self.cache = cache or cache_dir()
        self.timeout_s = timeout_s
        self._info = {}

    @classmethod
    def from_environment(cls, debug_dirs):
        timeout = DEFAULT_DEBUGINFOD_TIMEOUT_S
        try:
            timeout = max(1, int(os.environ.get("DEBUGINFOD_TIMEOUT", timeout)))
        except ValueError:
            pass
        return cls(debug_dirs, os.environ.get("DEBUGINFOD_URLS"), timeout_s=timeout)

    def info(self, path):
        """ElfInfo of `path`, or None when it is missing or not ELF."""
        if path not in self._info:
            try:
                self._info[path] = elf.read_info(path)
            except (OSError, elf.NotElf):
                self._info[path] = None
        return self._info[path]

    def find(self, module, build_id):
        found = Found(path=None)
        fallback = None  # a matching file without DWARF

        def consider(path, where):
            """True when `path` is the answer; notes a fallback or a problem."""
            nonlocal fallback
            info = self.info(path)
            if info is None:
                return False
            if build_id is not None and info.build_id != build_id:
                found.problems.append(
                    "%s %s has build-id %s, the report says %s; not using it"
                    % (where, path, info.build_id or "(none)", build_id))
                return False
            if info.has_debug_info:
                found.path, found.has_debug_info = path, True
                return True
            if fallback is None:
                fallback = path
            return False

        if module.startswith("/") and consider(module, "module"):
            return found
        if build_id is not None and len(build_id) > 2:
            head, rest = build_id[:2], build_id[2:]
            for d in self.debug_dirs:
                for sub in (os.path.join(d, ".build-id"), d):
                    path = os.path.join(sub, head, rest + ".debug")
                    if os.path.exists(path) and consider(path, "debug file"):
                        return found
            path = self._debuginfod(build_id, found.problems)
            if path is not None and consider(path, "debuginfod file"):
                return found
        found.path = fallback
        return found

    def _debuginfod(self, build_id, problems):
        """Path of the cached debug file for build_id, fetched if need be."""
        if not self.servers:
            return None
        cached = os.path.join(self.cache, "debuginfod", build_id + ".debug")
        if os.path.exists(cached):
            return cached
        for server in list(self.servers):
            url = "%s/buildid/%s/debuginfo" % (server, build_id)
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                self.servers.remove(server)
                problems.append("debuginfod URL %s is not http(s); ignored" % server)
                continue
            try:
                self._download(url, build_id, cached)
                return cached
            except _WrongFile:
                problems.append("debuginfod %s served a file with another build-id; "
                                "not using it" % url)
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    problems.append("debuginfod %s: HTTP %d" % (url, e.code))
            except (OSError, urllib.error.URLError) as e:
                # Unreachable: asking again for every module would only add
                # a timeout each time.
                self.servers.remove(server)
                problems.append("debuginfod %s: %s; not asked again" % (url, getattr(e, "reason", e)))
        return None

    def _download(self, url, build_id, dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
            # Written under a temporary name and renamed, so an interrupted
            # download never leaves a truncated file in the cache.
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(response, out)
                info = self.info(tmp)
                if info is None or info.build_id != build_id:
                    raise _WrongFile()
                os.replace(tmp, dest)
            except BaseException:
                os.unlink(tmp)
                raise
