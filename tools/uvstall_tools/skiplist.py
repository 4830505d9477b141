"""The list of modules whose frames never name a stall's culprit.

The list lives in tools/skip-modules.txt (installed as
share/uvstall/skip-modules.txt); its header documents the syntax. This module
reads it and matches module paths against it, for the symbolizer and the
report viewer. The C++ library implements the same matching for the stall
fingerprint, so the syntax stays deliberately small: `*` and `?` are the only
special characters, brackets match themselves.
"""

import os
import re

FILE_NAME = "skip-modules.txt"


def default_paths(script_dir):
    """Where the list may be, in order: next to the script (source tree),
    then ../share/uvstall/ (installed by meson)."""
    return [
        os.path.join(script_dir, FILE_NAME),
        os.path.join(script_dir, os.pardir, "share", "uvstall", FILE_NAME),
    ]


def parse(text):
    """Returns the patterns of a skip list's text, in file order."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _to_regex(pattern):
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return "".join(parts)


class SkipList:
    """Answers "is this frame's module one we never blame?"."""

    def __init__(self, patterns):
        self.patterns = list(patterns)
        if self.patterns:
            joined = "|".join("(?:%s)" % _to_regex(p) for p in self.patterns)
            self._regex = re.compile(r"\A(?:%s)\Z" % joined, re.DOTALL)
        else:
            self._regex = None

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(parse(f.read()))

    def matches(self, module):
        """True when `module` (a path, "[vdso]" or None) is skipped.
        A frame without a module is never skipped: nothing says it is ours."""
        if module is None or self._regex is None:
            return False
        return self._regex.match(module.rsplit("/", 1)[-1]) is not None
