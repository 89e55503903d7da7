"""Cold storm: 1,000 full-ward gzip requests released at once over 100 wards nobody has cached,
against wardgate, nginx (proxy_cache_lock) and Varnish, each with a fresh cache per repetition
in front of the same origin, 200 ms slow (wardgate-sample serve --latency 200 on a database of
its own, started by run.sh). Beside each storm, a paced stream of gzip page hits on one extra
ward every system has cached (bench/hitstream.py, a process of its own)."""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

from benchlib import (BIN, E, HERE, REDIS_URL, REPEAT, STORM_PORT, TMP, CpuSplit, count_lines, http_get,
                      log, median, metric_sum, metrics, note_command, order, origin_stats, pct, q, rel,
                      reset_origin, start, stop, tree, wait_http)

SYSTEMS = ("wardgate", "nginx", "varnish")
STORM_WARDS = int(E.get("STORM_WARDS", "100"))
STORM_REQUESTS = int(E.get("STORM_REQUESTS", "1000"))
HIT_WARD = STORM_WARDS + 1  # seeded beside the storm's wards, cached before the storm
HIT_PATH = q(HIT_WARD) + "&page=0&size=1000"
HIT_CONNS = int(E.get("HIT_CONNS", "2"))
HIT_INTERVAL_MS = float(E.get("HIT_INTERVAL_MS", "5"))
ORIGIN = f"http://127.0.0.1:{STORM_PORT['origin']}"
ADMIN = f"http://127.0.0.1:{STORM_PORT['admin']}"
HIT_TARGET_MS = 5.0


# ------------------------------------------------------------------ the services, fresh per repetition
def wait_port(port, tries=150):
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


class Service:
    """One system's storm instance: its processes, its access log, how it is stopped."""

    def __init__(self, system, port, procs, logs, cmds):
        self.system, self.port, self.procs, self.logs, self.cmds = system, port, procs, logs, cmds
        self.base = f"http://127.0.0.1:{port}"
        self.extra = {}

    def pids(self):
        return [p for proc in self.procs for p in tree(proc.pid)]

    def stop(self):
        if self.system == "wardgate":
            try:
                m = metrics(ADMIN)
                self.extra = {"log_lines_dropped": metric_sum(m, "wardgate_log_lines_dropped"),
                              "requests_total": metric_sum(m, "wardgate_requests_total")}
            except OSError as e:
                log(f"storm wardgate: no metrics before stopping it: {e}")
        time.sleep(1.5)  # nginx flushes its buffered log each second, varnishncsa reads the log behind
        for proc in reversed(self.procs):  # varnishncsa before varnishd
            stop(proc)

    def log_lines(self):
        path, needle = self.logs
        return count_lines(path, needle)


def start_wardgate(rep):
    d = os.path.join(TMP, f"storm-wardgate-{rep}")
    os.makedirs(d, exist_ok=True)
    cmd = [BIN, "serve", "--listen", f"127.0.0.1:{STORM_PORT['wardgate']}",
           "--admin-listen", f"127.0.0.1:{STORM_PORT['admin']}", "--upstream", ORIGIN,
           "--redis-url", REDIS_URL, "--redis-prefix", f"{E['STORM_PREFIX']}-{rep}",
           "--rate-limit", "downloads=1000000/s:1000000", "--rate-limit", "master=1000000/s:1000000",
           "--log-format", "json", "--access-log-sample", "1"]
    log_path = os.path.join(d, "wardgate.log")
    p = start(cmd, log_path)
    wait_http(ADMIN + "/metrics")
    return Service("wardgate", STORM_PORT["wardgate"], [p], (log_path, '"target":"access"'),
                   [" ".join(cmd) + f" >{log_path} 2>&1"])


def start_nginx(rep):
    d = os.path.join(TMP, f"storm-nginx-{rep}")
    for sub in ("logs", "tmp", "cache"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    with open(os.path.join(HERE, "nginx-storm.conf")) as f:
        conf = (f.read().replace("@PORT@", str(STORM_PORT["nginx"])).replace("@DIR@", d)
                .replace("@ORIGIN_PORT@", str(STORM_PORT["origin"])))
    conf_path = os.path.join(d, "nginx.conf")
    with open(conf_path, "w") as f:
        f.write(conf)
    cmd = ["nginx", "-p", d + "/", "-e", f"{d}/logs/error.log", "-c", conf_path]
    p = start(cmd, os.path.join(d, "nginx.out"))
    wait_port(STORM_PORT["nginx"])
    return Service("nginx", STORM_PORT["nginx"], [p], (f"{d}/logs/access.log", None), [" ".join(cmd)])


def start_varnish(rep):
    d = os.path.join(TMP, f"storm-varnish-{rep}")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    with open(os.path.join(HERE, "varnish.vcl")) as f:
        vcl = f.read().replace("@ORIGIN_PORT@", str(STORM_PORT["origin"]))
    vcl_path = os.path.join(d, "bench.vcl")
    with open(vcl_path, "w") as f:
        f.write(vcl)
    os.chmod(vcl_path, 0o644)
    vd = ["varnishd", "-F", "-n", f"{d}/work", "-a", f"127.0.0.1:{STORM_PORT['varnish']}", "-f", vcl_path,
          "-s", "malloc,1G", "-T", "none"]
    p = start(vd, os.path.join(d, "varnishd.out"))
    wait_port(STORM_PORT["varnish"])
    ncsa = ["varnishncsa", "-n", f"{d}/work", "-w", f"{d}/access.log"]
    pl = start(ncsa, os.path.join(d, "varnishncsa.out"))
    time.sleep(1.0)  # varnishncsa attaches to the shared log
    return Service("varnish", STORM_PORT["varnish"], [p, pl], (f"{d}/access.log", None),
                   [" ".join(vd), " ".join(ncsa)])


START = {"wardgate": start_wardgate, "nginx": start_nginx, "varnish": start_varnish}


# ------------------------------------------------------------------ the storm client
async def one_request(path, port, gate, results):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    except OSError as e:
        results.append({"status": 0, "err": f"connect {e}"})
        await gate.wait()
        return
    await gate.wait()
    t0 = time.perf_counter()
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: gzip\r\n"
                     f"Connection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        body = await reader.readexactly(n) if n else await reader.read()
        results.append({"status": status, "xcache": hdrs.get("x-cache", ""), "bytes": len(body),
                        "lat": time.perf_counter() - t0})
    except Exception as e:  # noqa: BLE001
        results.append({"status": 0, "err": repr(e), "lat": time.perf_counter() - t0})
    finally:
        writer.close()


class Gate:
    """Opens when every request's connection is open (or failed); calls on_open once then."""

    def __init__(self, n, on_open):
        self.n, self.count, self.ev, self.on_open = n, 0, asyncio.Event(), on_open

    async def wait(self):
        self.count += 1
        if self.count >= self.n and not self.ev.is_set():
            self.on_open()
            self.ev.set()
        await self.ev.wait()


async def storm_async(paths, port, on_open):
    gate = Gate(len(paths), on_open)
    results = []
    await asyncio.gather(*(one_request(p, port, gate, results) for p in paths))
    return results


HIT_NICE = int(E.get("HIT_NICE", "-10"))
# "fifo": the hit stream runs SCHED_FIFO (priority 1) where allowed, else at niceness HIT_NICE.
HIT_SCHED = E.get("HIT_SCHED", "fifo")
HIT_SCHED_USED = {}


def raise_priority():
    """The hit stream stands in for phones elsewhere: its own wait for a core (the storm's client,
    the servers' threads) should not count as the server's latency. A niceness is not enough on
    these two cores: the kernel lets a busy task finish its slice (~4 ms) before a woken one runs,
    whatever their weights, and the stream waits that long to send or to read. A real-time class
    runs it as soon as it wakes."""
    if HIT_SCHED == "fifo":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
            return
        except OSError:
            pass
    try:
        os.nice(HIT_NICE)
    except OSError:
        pass


class HitStream:
    def __init__(self, port):
        cmd = [sys.executable, os.path.join(HERE, "hitstream.py"), str(port), HIT_PATH, str(HIT_CONNS),
               str(HIT_INTERVAL_MS)]
        note_command(["python3"] + cmd[1:])
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  preexec_fn=raise_priority)
        line = self.p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"hitstream did not start: {line!r}")

    def go(self):
        self.t0 = time.perf_counter()
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def finish(self):
        self.p.stdin.write("stop\n")
        self.p.stdin.flush()
        out = json.loads(self.p.stdout.readline())
        self.p.wait(10)
        return out


# ------------------------------------------------------------------ one storm
def storm_once(system, rep):
    paths = [q(1 + i % STORM_WARDS) for i in range(STORM_REQUESTS)]
    svc = START[system](rep)
    hs = None
    try:
        for _ in range(2):  # the hit ward: built/cached, then a hit
            st, h, _ = http_get(svc.base + HIT_PATH)
        hit_warm = {"status": st, "xcache": h.get("x-cache"), "encoding": h.get("content-encoding")}
        hs = HitStream(svc.port)
        m0 = metrics(ADMIN) if system == "wardgate" else {}
        reset_origin(ORIGIN)
        t_release = {}

        def release():
            t_release["t"] = time.perf_counter()
            hs.go()

        with CpuSplit(svc.pids()) as cpu:
            results = asyncio.run(storm_async(paths, svc.port, release))
            wall = time.perf_counter() - t_release["t"]
            hits = hs.finish()
        s1 = origin_stats(ORIGIN)
        m1 = metrics(ADMIN) if system == "wardgate" else {}
    finally:
        if hs is not None and hs.p.poll() is None:
            hs.p.kill()
        svc.stop()
    res = summarize_once(system, rep, paths, results, hits, s1, wall, cpu)
    res["hit_warm"] = hit_warm
    res["log_lines"] = svc.log_lines()
    res["commands"] = [rel(c) for c in svc.cmds]
    res.update(svc.extra)
    if system == "wardgate":
        res["builds"] = metric_sum(m1, "wardgate_snapshot_builds") - metric_sum(m0, "wardgate_snapshot_builds")
    log(f"storm {system:8s} rep {rep}: origin requests {res['origin_requests']} codes {res['codes']} "
        f"p50 {res['p50']:.0f} p99 {res['p99']:.0f} max {res['max']:.0f} ms wall {wall:.2f}s; "
        f"hits during storm: {res['hits_n']} p99 {res['hits_p99']:.2f} ms (service {res['hits_service_p99']:.2f}) codes {hits['codes']} {hits['xcache']}")
    return res


def summarize_once(system, rep, paths, results, hits, s1, wall, cpu):
    lats = sorted(r["lat"] * 1000 for r in results if r.get("status") == 200)
    codes, xc = {}, {}
    for r in results:
        codes[r["status"]] = codes.get(r["status"], 0) + 1
        if r.get("xcache"):
            xc[r["xcache"]] = xc.get(r["xcache"], 0) + 1
    hl = sorted(hits["lat_ms"])
    svc = sorted(x[2] for x in hits["samples"])
    return {
        "system": system, "rep": rep, "requests": len(paths), "distinct_wards": len(set(paths)),
        "origin_requests": s1["requests"], "origin_citizens_reads": s1["citizens_reads"],
        "origin_max_inflight": s1.get("max_inflight"),
        "codes": codes, "xcache": xc, "wall": wall, "errors_sample": [r["err"] for r in results if r.get("err")][:3],
        "p50": pct(lats, 50), "p99": pct(lats, 99), "max": lats[-1] if lats else float("nan"),
        "lat_ms": lats,
        "hits_n": len(hl), "hits_lat_ms": hl, "hits_p50": pct(hl, 50), "hits_p99": pct(hl, 99),
        "hits_max": hl[-1] if hl else float("nan"), "hits_service_p99": pct(svc, 99),
        "hits_samples": hits["samples"], "hits_codes": hits["codes"], "hits_xcache": hits["xcache"],
        "hits_errors": hits["errors"][:3], "hits_wall": hits.get("wall"), "hits_sched": hits.get("sched"),
        "cpu_server": cpu.server, "cpu_loadgen": cpu.loadgen, "cpu_other": cpu.other,
    }


# ------------------------------------------------------------------ all of it
def cold_storms():
    runs = {s: [] for s in SYSTEMS}
    for rep in range(REPEAT):
        for system in order(SYSTEMS, rep):
            runs[system].append(storm_once(system, rep))
    return {"runs": runs, "summary": summarize(runs),
            "setup": {"wards": STORM_WARDS, "requests": STORM_REQUESTS, "hit_path": HIT_PATH,
                      "hit_conns": HIT_CONNS, "hit_interval_ms": HIT_INTERVAL_MS}}


def summarize(runs):
    out = {}
    for s, rs in runs.items():
        out[s] = {k: median([r[k] for r in rs]) for k in ("p50", "p99", "max", "origin_requests", "hits_p99",
                                                            "hits_p50", "hits_service_p99", "wall")}
        out[s]["origin_requests_all"] = [r["origin_requests"] for r in rs]
        out[s]["p99_all"] = [r["p99"] for r in rs]
        out[s]["hits_p99_all"] = [r["hits_p99"] for r in rs]
        out[s]["all_200"] = all(r["codes"].get(200, 0) == r["requests"] for r in rs)
        out[s]["exact_origin"] = all(r["origin_requests"] == r["distinct_wards"] for r in rs)
    wg = out["wardgate"]
    out["met_storm"] = (wg["p99"] < out["nginx"]["p99"] and wg["p99"] < out["varnish"]["p99"]
                        and wg["exact_origin"] and wg["all_200"])
    out["met_hits"] = wg["hits_p99"] < HIT_TARGET_MS and all(
        # The stream's JSON names status codes as strings.
        r["hits_codes"].get("200", 0) == r["hits_n"] and r["hits_n"] > 0 for r in runs["wardgate"])
    return out


def median_run(runs, system):
    """The repetition with the median p99, for the latency plot."""
    srt = sorted(runs[system], key=lambda r: r["p99"])
    return srt[(len(srt) - 1) // 2]
