"""uvstall-symbolize --pprof: stall reports as one pprof Profile message.

The one part of the tools that is not standard library only: the message is
encoded with Python's protobuf module (Debian: python3-protobuf), from the
schema Debian ships with pprof (golang-github-google-pprof-dev), compiled at
run time by protoc (protobuf-compiler) into a descriptor. Nothing of the
schema is copied into this repository. docs/pprof.md explains the choices
below for a user; in short:

  - A pprof sample is one stall *record* (a stall's samples 0, 1, 2...),
    weighted by the time it covers: record k covers the blocked time from
    record k-1's blocked_ms (0 for the first) to its own, and the last one
    also covers the rest of the stall, to its stall_end's duration_ms (to
    its own blocked_ms when there is no stall_end). So a stall's blocked
    time adds up to its duration, and a stall whose stack moves is split
    between its stacks. The `stalls` value (count) is 1 on a stall's first
    record (the one its fingerprint and summary culprit come from), 0 on
    the others.
  - Stalls suppressed by the rate limit write no stall record; the summary
    records count them per fingerprint. Each such row becomes one sample
    with `stalls` = its `suppressed` count and blocked time = its total_ms
    less the reported stalls of that fingerprint in the summary's window,
    on the stack of a reported stall with the same fingerprint when there is
    one (else on a function named after the summary's culprit), labelled
    suppressed=true.
  - One mapping per (module path, build-id), whatever process it came from.
    Mapping i starts at (i + 1) << 40 with file_offset 0, and a location's
    address is that start plus the ELF address uvstall reports (`offset`;
    for return addresses, offset - 1, the address that was looked up), so
    stacks from processes with different load addresses merge.
  - Frames, innermost first: the native frames up to the innermost frame of
    the interpreter loop (_PyEval_EvalFrameDefault), then the language
    frames (lang_frames), innermost first, then the rest of the native
    frames. Each appears once.
  - drop_frames names the functions of the runtime (modules on the skip
    list, and the interpreter) found only at the ends of stacks, never
    between two frames of the program, so pprof's -top names the culprit,
    not clock_nanosleep (see Builder.stack); --keep-all-frames leaves
    drop_frames empty.
"""

import calendar
import gzip
import os
import re
import shutil
import subprocess
import tempfile
import time

from . import reports, stacks

# Where Debian's golang-github-google-pprof-dev puts the schema;
# $UVSTALL_PPROF_PROTO names another copy.
PROTO_PATH = "/usr/share/gocode/src/github.com/google/pprof/proto/profile.proto"
PROTO_MESSAGE = "perftools.profiles.Profile"

# Modules of interpreters whose frames are runtime, like the skip list's,
# when pprof is told what to drop (matched against the module's basename).
INTERPRETER_MODULES = re.compile(r"\A(?:python\d[\d.]*|libpython\d[\d.]*\.so.*)\Z")
# The interpreter loop's native frame: language frames go in just before
# the innermost one (see the module comment).
EVAL_FRAME = re.compile(r"\A_?PyEval_EvalFrame(?:Default)?\Z")

MAPPING_SHIFT = 40

# Context keys become labels under this prefix, which none of ours has.
CONTEXT_PREFIX = "context."


class Unavailable(Exception):
    """--pprof cannot work on this machine; str() names what to install."""


def protobuf_missing():
    """True when Python's protobuf module cannot be imported."""
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        return True
    return False


def load_profile_class():
    """The Profile message class, built from the installed profile.proto.
    Raises Unavailable with a one-line reason."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise Unavailable("--pprof needs Python's protobuf module: install python3-protobuf "
                          "(and run under /usr/bin/python3)") from None
    proto = os.environ.get("UVSTALL_PPROF_PROTO") or PROTO_PATH
    if not os.path.isfile(proto):
        raise Unavailable("--pprof needs pprof's profile.proto, not found at %s: install "
                          "golang-github-google-pprof-dev (or set UVSTALL_PPROF_PROTO)" % proto)
    protoc = shutil.which("protoc")
    if protoc is None:
        raise Unavailable("--pprof needs protoc to read profile.proto: install protobuf-compiler")
    with tempfile.TemporaryDirectory(prefix="uvstall-pprof-") as tmp:
        out = os.path.join(tmp, "profile.desc")
        proc = subprocess.run([protoc, "--proto_path=" + os.path.dirname(os.path.abspath(proto)),
                               "--descriptor_set_out=" + out, os.path.basename(proto)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[0]
            raise Unavailable("protoc cannot read %s: %s" % (proto, reason))
        with open(out, "rb") as f:
            files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files.file:
        pool.Add(file_proto)
    try:
        desc = pool.FindMessageTypeByName(PROTO_MESSAGE)
    except KeyError:
        raise Unavailable("%s has no message %s" % (proto, PROTO_MESSAGE)) from None
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is not None:
        return get_class(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


_RESERVED = ("(anonymous namespace)", "operator()")


def simplify(name):
    """The name pprof matches drop_frames against: without the argument
    list (its simplifyFunc)."""
    start = 0
    while True:
        i = name.find("(", start)
        if i < 0:
            return name
        if any(name.startswith(r, i) or (r == "operator()" and name.startswith(r, i - 8))
               for r in _RESERVED):
            start = i + 1
            continue
        return name[:i]


_SYMBOL_VERSION = re.compile(r"@@?[A-Za-z_][A-Za-z0-9_.]*\Z")


def native_function_name(name):
    """A symbol table's name without its version (clock_nanosleep@@GLIBC_2.17
    is clock_nanosleep): the same function in every libc build."""
    return _SYMBOL_VERSION.sub("", name) or name


def lang_function_name(name):
    """Python names its module code <module> (and <lambda>, <listcomp>...);
    pprof takes <...> for template arguments and shows <unknown>, so they
    become [module], [lambda]. The real name is the function's system_name."""
    m = re.match(r"\A<(.*)>\Z", name)
    return "[%s]" % m.group(1) if m else name


def _go_regex_escape(text):
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def _time_ns(value):
    if not isinstance(value, str):
        return None
    m = re.match(r"\A(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z\Z", value)
    if not m:
        return None
    try:
        parts = [int(g) for g in m.groups()[:6]]
        seconds = calendar.timegm(time.struct_time(parts + [0, 0, 0]))
        if not (1 <= parts[1] <= 12 and 1 <= parts[2] <= 31 and parts[3] < 24):
            return None
    except (ValueError, OverflowError):
        return None
    fraction = (m.group(7) or "0").ljust(9, "0")
    return seconds * 10**9 + int(fraction)


def _label_text(value):
    if isinstance(value, str):
        return value
    if value is None:
        return None
    return reports._key_part(value) if not isinstance(value, (int, float)) else str(value)


class Builder:
    def __init__(self, profile_class, resolve, skip, keep_all):
        self.p = profile_class()
        self.resolve = resolve
        self.skip = skip
        self.keep_all = keep_all
        self._strings = {}
        self.s("")
        self._mappings = {}  # (module, build_id) -> Mapping message
        self._mapping_limit = {}
        self._functions = {}
        self._locations = {}
        self._frame_location = {}  # id(Frame) -> (location id, is runtime)
        # Each distinct stack (location ids, innermost first) -> (innermost,
        # outermost) index of its program's frames, None if it has none.
        self._stacks = {}
        self._native_stacks = {}  # ids of a record's Frame objects -> stack()
        self._location_names = {}  # location id -> simplified function names

    # ---- tables ----

    def s(self, text):
        index = self._strings.get(text)
        if index is None:
            index = self._strings[text] = len(self._strings)
            self.p.string_table.append(text)
        return index

    def function(self, name, filename, system_name=None):
        key = (name, filename, system_name)
        fid = self._functions.get(key)
        if fid is None:
            fid = len(self._functions) + 1
            self._functions[key] = fid
            f = self.p.function.add()
            f.id = fid
            f.name = self.s(name)
            f.system_name = self.s(system_name or name)
            f.filename = self.s(filename or "")
        return fid

    def mapping(self, frame):
        key = (frame.module, frame.build_id)
        m = self._mappings.get(key)
        if m is None:
            m = self.p.mapping.add()
            m.id = len(self._mappings) + 1
            m.memory_start = m.id << MAPPING_SHIFT
            m.file_offset = 0
            m.filename = self.s(frame.module)
            m.build_id = self.s(frame.build_id or "")
            # Cleared below when a frame lacks them.
            m.has_functions = m.has_filenames = m.has_line_numbers = True
            m.has_inline_frames = True
            self._mappings[key] = m
            self._mapping_limit[m.id] = 0
        return m

    def _location(self, key, mapping_id, address, lines):
        lid = self._locations.get(key)
        if lid is None:
            lid = len(self._locations) + 1
            self._locations[key] = lid
            loc = self.p.location.add()
            loc.id = lid
            loc.mapping_id = mapping_id
            loc.address = address
            names = []
            for fid, line, name in lines:
                entry = loc.line.add()
                entry.function_id = fid
                entry.line = line
                names.append(simplify(name))
            self._location_names[lid] = names
        return lid

    def native_location(self, frame):
        """(location id, runtime?) of a native frame."""
        known = self._frame_location.get(id(frame))
        if known is not None:
            return known
        res = self.resolve(frame)
        chain = res.chain()  # innermost (inlined) first, as pprof's lines
        module = stacks.module_name(frame.module)
        runtime = self.skip.matches(frame.module) or bool(
            module and INTERPRETER_MODULES.match(module))
        lines = []
        for loc in chain:
            if loc.function:
                name = native_function_name(loc.function)
                lines.append((self.function(name, loc.file), loc.line or 0, name))
        if not lines:
            # A frame with no symbol (libuv's and the interpreter's static
            # functions) is named by its address, libuv.so.1+0xbcbe as in
            # the other outputs, so that drop_frames can name it too.
            name = stacks.address_name(frame)
            lines.append((self.function(name, None), 0, name))
        offset = frame.lookup_offset
        if frame.module and offset is not None and offset >= 0:
            m = self.mapping(frame)
            if not any(loc.file for loc in chain if loc.function):
                m.has_filenames = m.has_line_numbers = False
            address = m.memory_start + offset
            limit = offset + 1
            if limit > self._mapping_limit[m.id]:
                self._mapping_limit[m.id] = limit
            lid = self._location(("native", m.id, offset, tuple(lines)), m.id, address, lines)
        else:
            lid = self._location(("pc", frame.pc, tuple(lines)), 0, frame.pc, lines)
        known = self._frame_location[id(frame)] = (lid, runtime)
        return known

    def lang_location(self, lf):
        lang = lf.lang or "lang"
        fid = self.function(lang_function_name(lf.function), lf.file, system_name=lf.function)
        return self._location(("lang", lang, lf.function, lf.file, lf.line), 0, 0,
                              [(fid, lf.line or 0, lf.function)])

    def pseudo_location(self, name):
        fid = self.function(name, None)
        return self._location(("pseudo", name), 0, 0, [(fid, 0, name)])

    # ---- stacks ----

    def stack(self, record):
        """Location ids of a record, innermost first (module comment)."""
        if record.lang_frames or not record.frames:
            return self._stack(record)
        # Records that share their frames (reports.parse_line's frame cache:
        # long logs repeat a few stacks) share their stack.
        key = tuple(map(id, record.frames))
        ids = self._native_stacks.get(key)
        if ids is None:
            ids = self._native_stacks[key] = self._stack(record)
        return ids

    def _stack(self, record):
        native = [self.native_location(f) for f in record.frames]
        if record.lang_frames:
            lang = [(self.lang_location(lf), False) for lf in record.lang_frames]
            split = len(native)
            for i, frame in enumerate(record.frames):
                res = self.resolve(frame)
                if any(loc.function and EVAL_FRAME.match(loc.function) for loc in res.chain()) \
                        or (frame.symbol and EVAL_FRAME.match(frame.symbol)):
                    split = i
                    break
            entries = native[:split] + lang + native[split:]
        else:
            entries = native
        if not entries:
            capture = record.obj.get("capture")
            name = "[no stack: capture %s]" % capture if isinstance(capture, str) else "[no stack]"
            return [self.pseudo_location(name)]
        if record.lang_frames:
            # With language frames the culprit is the innermost of them (as
            # in every tool): all native frames are the interpreter's.
            entries = [(lid, not is_lang) for (lid, _), is_lang in
                       zip(entries, [False] * split + [True] * len(lang)
                           + [False] * (len(native) - split))]
        ids = tuple(lid for lid, _ in entries)
        if ids not in self._stacks:
            kept = [i for i, (_, runtime) in enumerate(entries) if not runtime]
            self._stacks[ids] = (kept[0], kept[-1]) if kept else None
        return list(ids)

    def add_sample(self, locations, count, nanoseconds, labels):
        sample = self.p.sample.add()
        sample.location_id.extend(locations)
        sample.value.extend((count, nanoseconds))
        for key, value in labels:
            label = sample.label.add()
            label.key = self.s(key)
            if isinstance(value, int):
                label.num = value
            else:
                label.str = self.s(value)
        return sample

    def drop_names(self):
        """The runtime's function names pprof may drop (simplified).

        pprof cuts a stack at the first frame drop_frames names, looking from
        its root, once it has passed a frame it does not name (Prune in its
        profile package). The runtime frames at the innermost end (libc
        under the culprit) and at the outermost (libc and the interpreter
        around the program) may be named; a name also seen between the
        program's outermost and innermost frame may not. A stack whose
        outer runtime frames would then be named only in part would be cut
        too far from its root: their names are taken back until no stack is.
        """
        names = self._location_names
        ends, middle = set(), set()
        for ids, span in self._stacks.items():
            if span is None:
                for lid in ids:
                    ends.update(names[lid])
                continue
            inner, outer = span
            for lid in ids[inner:outer + 1]:
                middle.update(names[lid])
            for lid in ids[:inner] + ids[outer + 1:]:
                ends.update(names[lid])
        drop = ends - middle

        def matches(lid):
            return any(n in drop for n in names[lid])

        changed = True
        while changed and drop:
            changed = False
            for ids, span in self._stacks.items():
                if span is None:
                    continue
                passed = False
                for i in range(len(ids) - 1, -1, -1):
                    if not matches(ids[i]):
                        passed = True
                    elif passed:
                        if i >= span[0]:  # cut at or beyond the culprit
                            for lid in ids[span[1] + 1:]:
                                drop.difference_update(names[lid])
                            changed = True
                        break
        return drop

    def finish(self):
        for m in self.p.mapping:
            limit = self._mapping_limit.get(m.id, 0)
            m.memory_limit = m.memory_start + ((limit + 0xFFF) & ~0xFFF or 0x1000)
        if not self.keep_all:
            names = sorted(n for n in self.drop_names() if n)
            if names:
                self.p.drop_frames = self.s("|".join(_go_regex_escape(n) for n in names))
        return self.p


_INT64_MAX = 2**63 - 1


def _ns(ms):
    """Milliseconds as int64 nanoseconds (absurd values clamped, not fatal)."""
    return max(0, min(_INT64_MAX, int(round(ms * 1e6))))


def build(profile_class, records, resolve, ends, skip, keep_all, inputs=()):
    """The Profile of all records (any number of files, runs and hosts)."""
    b = Builder(profile_class, resolve, skip, keep_all)
    p = b.p
    for type_, unit in (("stalls", "count"), ("blocked", "nanoseconds")):
        vt = p.sample_type.add()
        vt.type = b.s(type_)
        vt.unit = b.s(unit)
    p.period_type.type = b.s("blocked")
    p.period_type.unit = b.s("nanoseconds")
    p.period = 1
    p.default_sample_type = b.s("blocked")

    hosts = {}
    for r in records:
        if r.type == "start" and isinstance(r.obj.get("host"), str):
            hosts[(reports._key_part(r.obj.get("run_id")),
                   reports._key_part(r.obj.get("pid")))] = r.obj["host"]

    # A stall's records, in file order; a timed-out capture whose stack came
    # later (capture "late", same sample index) is that late record.
    by_stall = {}
    order = []
    for r in records:
        if r.is_stall:
            key = reports.stall_key(r.obj)
            if key not in by_stall:
                by_stall[key] = []
                order.append(key)
            by_stall[key].append(r)

    # pprof calls the first mapping the main binary ("File:" in its
    # headers): the module of the outermost frame of the first stack.
    for r in records:
        if r.is_stall and r.frames:
            if r.frames[-1].module and r.frames[-1].offset is not None:
                b.mapping(r.frames[-1])
            break

    first_stack = {}  # (run, pid, fingerprint) and fingerprint -> locations
    fingerprint_of = {}  # stall key -> fingerprint
    earliest = None
    stalls = 0
    for key in order:
        group = by_stall[key]
        late = {r.obj.get("sample") for r in group if r.obj.get("capture") == "late"}
        group = [r for r in group
                 if not (r.obj.get("capture") == "timeout" and r.obj.get("sample") in late)]
        group.sort(key=lambda r: reports.blocked_ms(r) or 0.0)
        duration = ends.get(key)
        if duration is None:
            duration = reports.blocked_ms(group[-1]) or 0.0
        stalls += 1
        previous = 0.0
        for i, r in enumerate(group):
            bound = reports.blocked_ms(r)
            bound = previous if bound is None else min(max(bound, previous), duration)
            if i == len(group) - 1:
                bound = max(duration, previous)
            covered, previous = bound - previous, bound
            obj = r.obj
            labels = []
            for name in ("loop", "cause", "fingerprint", "capture"):
                text = _label_text(obj.get(name))
                if text is not None:
                    labels.append((name, text))
            run = _label_text(obj.get("run_id"))
            if run is not None:
                labels.append(("run_id", run))
            pid = obj.get("pid")
            if isinstance(pid, int) and not isinstance(pid, bool) and -2**63 <= pid < 2**63:
                labels.append(("pid", pid))
            host = hosts.get(key[:2])
            if host is not None:
                labels.append(("host", host))
            context = obj.get("context")
            if isinstance(context, dict):
                for k, v in context.items():
                    text = _label_text(v)
                    if text is not None:
                        labels.append((CONTEXT_PREFIX + k, text))
            locations = b.stack(r)
            b.add_sample(locations, 1 if i == 0 else 0, _ns(covered), labels)
            if i == 0:
                fp = obj.get("fingerprint")
                if isinstance(fp, str):
                    fingerprint_of[key] = fp
                    first_stack.setdefault(key[:2] + (fp,), locations)
                    first_stack.setdefault(fp, locations)
            t = _time_ns(obj.get("time"))
            if t is not None and (earliest is None or t < earliest):
                earliest = t
    if earliest is not None:
        p.time_nanos = earliest

    suppressed = _add_suppressed(b, records, ends, hosts, fingerprint_of, first_stack)

    comments = ["uvstall-symbolize --pprof: %d stall%s reported, %d suppressed by the rate "
                "limit (counted in summary records)" % (stalls, "" if stalls == 1 else "s",
                                                        suppressed)]
    if inputs:
        comments.append("inputs: " + ", ".join(inputs))
    p.comment.extend(b.s(c) for c in comments)
    return b.finish()


def _add_suppressed(b, records, ends, hosts, fingerprint_of, first_stack):
    """One sample per summary row with suppressed stalls; returns how many
    stalls they stand for. Summaries written to several outputs are the
    same record in several files: each counts once."""
    reported_ms = {}  # (run, pid) -> fingerprint -> ms since the last summary
    seen = set()
    total = 0
    for r in records:
        obj = r.obj
        proc = (reports._key_part(obj.get("run_id")), reports._key_part(obj.get("pid")))
        if r.type == "stall_end":
            fp = fingerprint_of.get(reports.stall_key(obj))
            ms = reports._number(obj.get("duration_ms"))
            if fp is not None and ms is not None:
                window = reported_ms.setdefault(proc, {})
                window[fp] = window.get(fp, 0.0) + ms
            continue
        if r.type != "summary":
            continue
        window = reported_ms.pop(proc, {})
        identity = (proc, reports._key_part(obj.get("time")),
                    reports._key_part(obj.get("window_ms")), reports._key_part(obj.get("stalls")))
        if identity in seen:
            continue
        seen.add(identity)
        rows = obj.get("fingerprints")
        if not isinstance(rows, list):
            continue
        for row in rows:
            if not isinstance(row, dict):
                continue
            count = row.get("suppressed")
            if not isinstance(count, int) or isinstance(count, bool) or not 0 < count < 2**62:
                continue
            fp = row.get("fingerprint")
            total_ms = reports._number(row.get("total_ms")) or 0.0
            ms = max(0.0, total_ms - window.get(fp, 0.0))
            locations = first_stack.get(proc + (fp,)) or first_stack.get(fp)
            if locations is None:
                culprit = row.get("culprit")
                name = culprit if isinstance(culprit, str) and culprit else \
                    "[suppressed stall, fingerprint %s]" % (fp if isinstance(fp, str) else "?")
                locations = [b.pseudo_location(name)]
            labels = [("suppressed", "true")]
            if isinstance(fp, str):
                labels.append(("fingerprint", fp))
            if isinstance(proc[0], str):
                labels.append(("run_id", proc[0]))
            if isinstance(proc[1], int) and -2**63 <= proc[1] < 2**63:
                labels.append(("pid", proc[1]))
            if proc in hosts:
                labels.append(("host", hosts[proc]))
            b.add_sample(locations, count, _ns(ms), labels)
            total += count
    return total


def write(profile, path):
    """Writes the gzipped message to path ('-': standard output)."""
    data = gzip.compress(profile.SerializeToString(), compresslevel=6, mtime=0)
    if path == "-":
        import sys
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
