"""Turning module addresses into source locations with an external tool.

llvm-symbolizer is preferred (JSON output, so no guessing where one answer
ends); GNU addr2line is the fallback. Either way one process is started per
file, fed every (already deduplicated) address on stdin, and a few files are
worked on at once.

An answer for one address is a list of Locations, innermost first: when code
was inlined there is one entry per inlined function, and the last entry is
the function that really owns the address (the one in the symbol table).
"""

import glob
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

BACKENDS = ("auto", "llvm-symbolizer", "addr2line")


@dataclass(frozen=True)
class Location:
    function: Optional[str]
    file: Optional[str]
    line: Optional[int]


class SymbolizerError(Exception):
    pass


def _child_environment():
    # Both tools can query debuginfod on their own when DEBUGINFOD_URLS is
    # set. The file we hand them was already chosen and checked by build-id;
    # a second, unchecked lookup (and network traffic) is not wanted.
    env = dict(os.environ)
    env.pop("DEBUGINFOD_URLS", None)
    return env


def _find_llvm_symbolizer():
    path = shutil.which("llvm-symbolizer")
    if path:
        return path
    versioned = sorted(
        glob.glob("/usr/bin/llvm-symbolizer-*") + glob.glob("/usr/lib/llvm-*/bin/llvm-symbolizer"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p)],
    )
    return versioned[-1] if versioned else None


class Symbolizer:
    def __init__(self, kind, program):
        self.kind = kind  # "llvm-symbolizer" or "addr2line"
        self.program = program

    @classmethod
    def find(cls, choice="auto"):
        """The backend to use, or None when none is installed."""
        if choice in ("auto", "llvm-symbolizer"):
            path = _find_llvm_symbolizer()
            if path:
                return cls("llvm-symbolizer", path)
        if choice in ("auto", "addr2line"):
            path = shutil.which("addr2line")
            if path:
                return cls("addr2line", path)
        return None

    def lookup(self, path, addresses):
        """Maps each address of `path` to its Location list (innermost
        first; empty when the tool knows nothing). Raises SymbolizerError."""
        addresses = sorted(set(addresses))
        if not addresses:
            return {}
        if self.kind == "llvm-symbolizer":
            argv = [self.program, "--obj=" + path, "--output-style=JSON",
                    "--inlines", "--functions=linkage", "--demangle"]
            parse = _parse_llvm_json
        else:
            argv = [self.program, "-e", path, "-a", "-i", "-f", "-C"]
            parse = _parse_addr2line
        stdin = "".join("0x%x\n" % a for a in addresses)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  errors="replace", env=_child_environment())
        except OSError as e:
            raise SymbolizerError("%s: %s" % (self.program, e)) from None
        if proc.returncode != 0:
            reason = proc.stderr.strip().splitlines()[:1] or ["exit %d" % proc.returncode]
            raise SymbolizerError("%s failed on %s: %s" % (self.kind, path, reason[0]))
        return parse(proc.stdout)

    def lookup_many(self, jobs, workers=None):
        """jobs: {path: addresses}. Returns {path: answer or SymbolizerError}."""
        workers = workers or max(1, min(4, os.cpu_count() or 1))
        results = {}

        def one(path):
            try:
                return path, self.lookup(path, jobs[path])
            except SymbolizerError as e:
                return path, e

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for path, answer in pool.map(one, sorted(jobs)):
                results[path] = answer
        return results


def _clean_function(name):
    return name if name and name != "??" else None


def _parse_llvm_json(out):
    answers = {}
    for text in out.splitlines():
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
            address = int(entry["Address"], 16)
        except (ValueError, KeyError, TypeError):
            raise SymbolizerError("unexpected llvm-symbolizer output: %.80s" % text) from None
        chain = []
        for s in entry.get("Symbol") or []:
            chain.append(Location(
                function=_clean_function(s.get("FunctionName")),
                file=s.get("FileName") or None,
                line=s.get("Line") or None,
            ))
        answers[address] = [loc for loc in chain if loc != Location(None, None, None)]
    return answers


_ADDR2LINE_ADDRESS = re.compile(r"\A0x[0-9a-f]+\Z")
_ADDR2LINE_LOCATION = re.compile(r"\A(.*):(\d+|\?)(?: \(discriminator \d+\))?\Z")


def _parse_addr2line(out):
    """addr2line -a -i -f prints the address, then a function line and a
    file:line line per (inlined) frame."""
    answers = {}
    chain = None
    lines = out.splitlines()
    i = 0
    while i < len(lines):
        text = lines[i]
        if _ADDR2LINE_ADDRESS.match(text):
            chain = answers.setdefault(int(text, 16), [])
            i += 1
            continue
        if chain is None or i + 1 >= len(lines):
            raise SymbolizerError("unexpected addr2line output: %.80s" % text)
        function, where = text, lines[i + 1]
        i += 2
        m = _ADDR2LINE_LOCATION.match(where)
        file, line = (m.group(1), m.group(2)) if m else (where, "?")
        loc = Location(
            function=_clean_function(function),
            file=file if file and file != "??" else None,
            line=int(line) if line.isdigit() and line != "0" else None,
        )
        if loc != Location(None, None, None):
            chain.append(loc)
    return answers
