"""Hostile inputs for uvstall-symbolize and uvstall-report (issue 11): the
hand-built reports.jsonl beside this file, with truncated, corrupt and
enormous lines mixed in. Shared by test/symbolize/test_symbolize.py and
test/report/test_bad_input.py, which feed each case to their tool and
check what a user sees: no traceback, the skipped lines counted in one
line on stderr, the documented exit status, and every good line used.

Each case is (name, content bytes, bad, kept): `bad` lines must be
skipped and counted, `kept` extra records (beyond reports.jsonl's) must
be used. Standard library only.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD_PATH = os.path.join(HERE, "reports.jsonl")

BIG_LINE_BYTES = 50 * 1024 * 1024


def good_lines():
    with open(GOOD_PATH, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def good_stall():
    """The first stall record of reports.jsonl, as a dict."""
    return next(json.loads(line) for line in good_lines() if '"type":"stall"' in line)


def _stall(**fields):
    record = good_stall()
    record.update(stall_id=900 + len(fields), run_id="hostile")
    record.update(fields)
    return json.dumps(record)


def _frames(frames):
    return _stall(frames=frames)


def _join(lines, newline_at_end=True):
    data = b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines)
    return data + (b"\n" if newline_at_end else b"")


def cases():
    good = good_lines()
    stall_text = good[1]
    frame = good_stall()["frames"][0]
    wrong_types = [
        _frames("x"), _frames(12), _frames({"0": frame}),
        _frames([dict(frame, pc=12)]),                 # "addr": 12 instead of "0x.."
        _frames([dict(frame, offset="-0x10")]),        # a negative address
        _frames([dict(frame, offset="0xZZ")]),
        _frames([dict(frame, module=5)]),
        _frames([dict(frame, build_id="not hex")]),
        _frames([dict(frame, symbol_offset="12")]),
        _frames([dict(frame, pc=None)]),
        _frames([None]), _frames([[1, 2]]),
        _stall(lang_frames="x"), _stall(lang_frames=[{"function": 5}]),
    ]
    # Wrong types in fields that are not needed to read the stack: the
    # record is used, the odd field shown as it is or left out.
    odd_but_usable = [
        _stall(blocked_ms=-5), _stall(blocked_ms="x"), _stall(blocked_ms=None),
        _stall(stall_id=[1]), _stall(run_id={"a": 1}), _stall(pid=-1), _stall(tid="x"),
        _stall(time=12), _stall(time="2026-13-45T99:99:99Z"), _stall(loop=None),
        _stall(threshold_ms=[]), _stall(capture=None), _stall(context="x"), _stall(thread=5),
        _stall(thread={"state": [], "cpu_ms": "x"}), _stall(fingerprint=7), _stall(sample=-3),
        _stall(cause={}), _stall(suppressed="x"), _stall(dropped=-1),
        stall_text[:-1] + ',"blocked_ms":NaN}', stall_text[:-1] + ',"blocked_ms":Infinity}',
        stall_text[:-1] + ',"blocked_ms":-Infinity}',
        stall_text[:-1] + ',"blocked_ms":1' + "0" * 400 + "}",
        json.dumps({k: None for k in good_stall()} | {"type": "stall", "frames": []}),
        '{"type":"stall_end","run_id":"r1","pid":100,"stall_id":1,"duration_ms":"x"}',
        '{"type":"stall_end","run_id":[],"pid":{},"stall_id":null,"duration_ms":-1}',
        '{"type":"summary","stalls":"x","stalls_suppressed":-1,"fingerprints":"x"}',
        '{"type":"summary","fingerprints":[null,1,{"count":"x","total_ms":NaN}]}',
        '{"type":"metrics","lateness_ms":"x","delay_ms":null,"utilization":"x","window_ms":-1}',
        '{"type":"start","options":[],"host":5,"executable":null}',
        '{"type":null}', '{"type":5}', '{"type":["stall"]}', "{}",
        # nested, but within reason: kept (the page notes what it cannot show)
        stall_text[:-1] + ',"context":' + "[" * 500 + "]" * 500 + "}",
    ]
    return [
        ("truncated last line", _join(good + [stall_text[: len(stall_text) // 2]], False), 1, 0),
        # (a lone \r ends a line too, as in Python's text files)
        ("binary garbage", _join(good + [b"\x00\x01\x02\xff\xfe garbage \x80\x81",
                                         bytes(c for c in range(256) if c not in b"\r\n"),
                                         b"\x1b[31m\x07\x08 not json"]), 3, 0),
        ("a line of 50 MB", _join(good + [b"x" * BIG_LINE_BYTES]), 1, 0),
        ("a record of 50 MB", _join(good + [_stall(loop="L" * BIG_LINE_BYTES)]), 0, 1),
        ("deeply nested JSON", _join(good + ["[" * 100000 + "]" * 100000,
                                             '{"a":' * 100000 + "1" + "}" * 100000,
                                             stall_text[:-1] + ',"context":' + "[" * 5000
                                             + "]" * 5000 + "}"]), 3, 0),
        ("wrong types in the stack", _join(good + wrong_types), len(wrong_types), 0),
        ("wrong types elsewhere", _join(good + odd_but_usable), 0, len(odd_but_usable)),
        ("not objects", _join(good + ["null", "12", '"stall"', "[]", "true"]), 5, 0),
        ("non-UTF-8 bytes", _join(good + [stall_text.replace('"main"', '"m\xffain"')
                                          .encode("latin-1"),
                                          b'{"type":"stall_end","loop":"\xc3\x28\xa0\xa1"}']),
         0, 2),
        ("carriage returns and blank lines", _join([line + "\r" for line in good]
                                                   + ["", "   ", "\t"]), 0, 0),
        ("a thousand bad lines", _join(good + ["garbage %d {" % i for i in range(1000)]),
         1000, 0),
    ]


def check_diagnostics(test, result, bad, prog="uvstall-symbolize"):
    """What a user sees of a hostile case on stderr, for a unittest
    TestCase: no traceback; exit status 1 when lines were skipped, else 0;
    at most 11 lines, the last counting the skipped lines (the first ten
    named, each ending "; line skipped"); nothing at all for clean input."""
    err = result.stderr.decode("utf-8", "replace")
    test.assertNotIn("Traceback", err)
    test.assertEqual(result.returncode, 1 if bad else 0, err[-2000:])
    lines = err.splitlines()
    test.assertLessEqual(len(lines), 11, err[-2000:])
    if bad:
        test.assertEqual(lines[-1], "%s: %d bad line%s skipped%s" % (
            prog, bad, "" if bad == 1 else "s",
            " (the first 10 named above)" if bad > 10 else ""))
        test.assertTrue(all(l.endswith("; line skipped") for l in lines[:-1]), lines)
    else:
        test.assertEqual(err, "")


def empty_case():
    return ("empty file", b"", 0, 0)
