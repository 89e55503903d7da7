#!/usr/bin/env python3
"""A paced stream of gzip hits on one URL, run beside the cold storm in a process of its own
(so the storm's client does not delay it).

    python3 bench/hitstream.py PORT PATH CONNS INTERVAL_MS

Opens CONNS keep-alive connections and sends one request on each, prints "ready", waits for
"go" on stdin, then on every connection sends a request each INTERVAL_MS (sequentially: the
next after the previous answer) until "stop" on stdin, and prints one JSON line: latencies in
ms measured from each request's scheduled time (a late answer delays the ones behind it, and
they count that wait: no coordinated omission), status codes and X-Cache values.
"""
import asyncio
import json
import os
import sys
import time


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    if "content-length" in hdrs:
        await reader.readexactly(int(hdrs["content-length"]))
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, hdrs


class Conn:
    def __init__(self, port, path):
        self.port, self.req = port, (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                                     f"Accept-Encoding: gzip\r\n\r\n").encode()

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
        return await self.get()

    async def get(self):
        self.writer.write(self.req)
        await self.writer.drain()
        return await read_response(self.reader)


async def run(conn, interval, stop, out, t0):
    t_next = t0
    while not stop.is_set():
        now = time.perf_counter()
        if now < t_next:
            await asyncio.sleep(t_next - now)
            if stop.is_set():
                break
        t_send = time.perf_counter()
        try:
            status, hdrs = await conn.get()
        except Exception as e:  # noqa: BLE001
            out["errors"].append(repr(e))
            return
        t_done = time.perf_counter()
        out["lat_ms"].append((t_done - t_next) * 1000)
        # [scheduled ms after go, latency from the scheduled time, from the send]
        out["samples"].append([round((t_next - t0) * 1000, 2), round((t_done - t_next) * 1000, 3),
                               round((t_done - t_send) * 1000, 3)])
        out["codes"][status] = out["codes"].get(status, 0) + 1
        xc = hdrs.get("x-cache", "")
        out["xcache"][xc] = out["xcache"].get(xc, 0) + 1
        t_next += interval


async def main():
    port, path, n, interval = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000
    conns = [Conn(port, path) for _ in range(n)]
    for c in conns:
        await c.open()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print("ready", flush=True)
    while True:
        line = await stdin.readline()
        if line == b"":  # the driver went away before "go": nothing to measure
            return
        if line.strip() == b"go":
            break
    stop = asyncio.Event()
    out = {"lat_ms": [], "samples": [], "codes": {}, "xcache": {}, "errors": []}
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(run(c, interval, stop, out, t0 + i * interval / n)) for i, c in enumerate(conns)]
    while (await stdin.readline()).strip() not in (b"stop", b""):
        pass
    stop.set()
    await asyncio.gather(*tasks)
    out["wall"] = time.perf_counter() - t0
    policy = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    out["sched"] = "fifo" if policy == os.SCHED_FIFO else f"normal, niceness {os.nice(0)}"
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
