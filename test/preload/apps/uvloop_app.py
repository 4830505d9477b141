"""An asyncio server on Debian's uvloop whose request handler blocks the loop.

usage: uvloop_app.py sleep|json|read [EXIT_CODE]

A client on the same loop sends one request; the handler blocks in one of
three classic ways (time.sleep, parsing a large JSON document, a big
synchronous read of a file fed slowly through a FIFO), replies, and the app
closes everything, loop.close() included, then exits with EXIT_CODE
(default 3). Its stdout is the same with and without uvstall.

Test scaffolding, off unless UVSTALL_TEST_PROBE is set: the culprit appends
its start and end times to that file, and at its end whether the file named
by UVSTALL_TEST_WATCH already holds a stall record (it was reported during
the stall).
"""
import asyncio
import json
import os
import sys
import tempfile
import threading
import time

import uvloop

MODE = sys.argv[1]
EXIT_CODE = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BIG_JSON = None
FIFO = None


def probe(event):
    path = os.environ.get("UVSTALL_TEST_PROBE")
    if not path:
        return
    rec = {"event": event, "time": time.time()}
    watch = os.environ.get("UVSTALL_TEST_WATCH")
    if event == "end" and watch:
        try:
            with open(watch) as f:
                rec["stall_seen"] = any('"type":"stall"' in line for line in f)
        except FileNotFoundError:
            rec["stall_seen"] = False
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def handle_sleep():
    probe("start")
    time.sleep(0.3)  # CULPRIT sleep
    probe("end")
    return "slept"


def parse_big_json():
    probe("start")
    doc = json.loads(BIG_JSON)  # CULPRIT json
    probe("end")
    return "parsed %d items" % len(doc)


def feed_fifo():
    # 32 MiB in 1 MiB pieces, one every 10 ms: a read of about 320 ms.
    with open(FIFO, "wb") as f:
        piece = b"x" * (1 << 20)
        for _ in range(32):
            f.write(piece)
            f.flush()
            time.sleep(0.01)


def read_big_file():
    probe("start")
    feeder = threading.Thread(target=feed_fifo)
    feeder.start()
    with open(FIFO, "rb") as f:
        data = f.read()  # CULPRIT read
    feeder.join()
    probe("end")
    return "read %d bytes" % len(data)


CULPRITS = {"sleep": handle_sleep, "json": parse_big_json, "read": read_big_file}


async def handle(reader, writer):
    request = await reader.readline()
    reply = CULPRITS[MODE]()
    writer.write(("%s for %s\n" % (reply, request.decode().strip())).encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /report\n")
    await writer.drain()
    reply = await reader.readline()
    print("reply:", reply.decode().strip())
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return EXIT_CODE


if MODE == "json":
    BIG_JSON = json.dumps([{"id": i, "name": "item %d" % i, "tags": ["a", "b", "c"],
                            "value": i * 1.5, "nested": {"x": i, "y": [1, 2, 3]}}
                           for i in range(120000)])
tmpdir = tempfile.mkdtemp()
if MODE == "read":
    FIFO = os.path.join(tmpdir, "fifo")
    os.mkfifo(FIFO)

loop = uvloop.new_event_loop()
asyncio.set_event_loop(loop)
try:
    rc = loop.run_until_complete(main())
finally:
    loop.close()
print("loop closed:", loop.is_closed())
if FIFO:
    os.unlink(FIFO)
os.rmdir(tmpdir)
sys.exit(rc)
