#!/usr/bin/env python3
"""wardgate benchmark driver (started by bench/run.sh, which starts and stops the services).

Measures, in one run, wardgate against nginx gzip_static (serving the very bytes wardgate
stores), Varnish in front of the origin, and the uncached origin; writes bench/RESULTS.md and
bench/latency.svg. Standard library only.
"""
import asyncio
import datetime
import json
import math
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

E = os.environ
N = int(E["WARDS"])
VOTERS = int(E["VOTERS"])
DUR = int(E["DURATION"])
WARM = int(E["WARMUP"])
CONNS = int(E["CONNS"])
RATES = [int(r) for r in E["RATES"].split(",") if r.strip()]
QUICK = E.get("QUICK") == "1"
TMP = E["TMP"]
HERE = E["HERE"]
ROOT = E["ROOT"]
BIN = E["BIN"]
WWW = E["WWW"]
PAGE_SIZE = 1000
PAGES = max(1, math.ceil(VOTERS / PAGE_SIZE))
ORIGIN_CONNS = int(E.get("ORIGIN_CONNS", "16"))
ORIGIN_DUR = int(E.get("ORIGIN_DURATION", "6"))

BASE = {
    "wardgate": f"http://127.0.0.1:{E['P_WG']}",
    "nginx": f"http://127.0.0.1:{E['P_NGINX']}",
    "varnish": f"http://127.0.0.1:{E['P_VARNISH']}",
    "origin": f"http://127.0.0.1:{E['P_ORIGIN']}",
}
ADMIN = f"http://127.0.0.1:{E['P_ADMIN']}"
LUA = os.path.join(HERE, "wrk-urls.lua")
T_START = time.time()


def log(msg):
    print(f"[bench.py {time.time() - T_START:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ URL sets
def q(w, date="-1"):
    return f"/open/volunteer/citizens?state=Karnataka&assemblyNo=150&wardNo={w}&date={date}&boothNos=-1"


def page_of(w):
    return (w - 1) % PAGES


def mysql_scalar(sql):
    out = subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-N", "-B", E.get("BENCH_DB", "wardgate_bench"), "-e", sql],
                         check=True, capture_output=True, text=True).stdout.strip()
    return out


# delta: rows modified in the last ~1.5 days of the seeded data (a few % of a ward)
MAX_MOD = float(mysql_scalar("SELECT UNIX_TIMESTAMP(MAX(modifieddate)) FROM citizen"))
DELTA_DATE = int((MAX_MOD - 1.5 * 86400) * 1000)

WARDS = list(range(1, N + 1))
# scenario -> (gzip?, {system: [paths]})
SCEN = {
    "page_gz": (True, {
        "app": [q(w) + f"&page={page_of(w)}&size={PAGE_SIZE}" for w in WARDS],
        "nginx": [f"/p/{w}-{page_of(w)}.json" for w in WARDS]}),
    "full_gz": (True, {
        "app": [q(w) for w in WARDS],
        "nginx": [f"/w/{w}.json" for w in WARDS]}),
    "master_gz": (True, {
        "app": ["/open/volunteer/states"],
        "nginx": ["/states.json"]}),
    "page_identity": (False, {
        "app": [q(w) + f"&page={page_of(w)}&size={PAGE_SIZE}" for w in WARDS],
        "nginx": [f"/p/{w}-{page_of(w)}.json" for w in WARDS]}),
    "delta_gz": (True, {
        "app": [q(w, DELTA_DATE) for w in WARDS],
        "nginx": [f"/d/{w}.json" for w in WARDS]}),
}
SCEN_LABEL = {
    "page_gz": "page hit, gzip (1,000 rows)",
    "full_gz": f"full-ward hit, gzip ({VOTERS:,} rows)",
    "master_gz": "master data hit, gzip (/states)",
    "page_identity": "page hit, identity (no gzip)",
    "delta_gz": "delta read, gzip (~1.5 days of changes)",
}


def paths_for(scen, system):
    return SCEN[scen][1]["nginx" if system == "nginx" else "app"]


def url_file(scen, system, full=False):
    p = os.path.join(TMP, f"urls-{scen}-{system}{'-full' if full else ''}.txt")
    with open(p, "w") as f:
        for path in paths_for(scen, system):
            f.write((BASE[system] + path if full else path) + "\n")
    return p


# ------------------------------------------------------------------ HTTP helpers
def http_get(url, gzip=True, timeout=120):
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def origin_stats():
    return json.loads(http_get(BASE["origin"] + "/__origin/stats", gzip=False)[2])


def metrics():
    body = http_get(ADMIN + "/metrics", gzip=False)[2].decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^(\S+?)(\{.*\})?\s+(\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric_sum(ms, name):
    return sum(v for k, v in ms.items() if k == name or k.startswith(name + "{"))


# ------------------------------------------------------------------ CPU accounting
CLK = os.sysconf("SC_CLK_TCK")


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                ppid = int(s[s.rindex(")") + 2:].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    return kids


def tree(pid):
    kids = children_map()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def pid_cpu(pids):
    tot = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            fields = s[s.rindex(")") + 2:].split()
            tot += (int(fields[11]) + int(fields[12])) / CLK
        except (OSError, ValueError):
            pass
    return tot


def machine_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) / CLK, (sum(v) - idle) / CLK


def pidof(name):
    r = subprocess.run(["pidof", name], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


SERVER_ROOT = {
    "wardgate": int(E["WG_PID"]),
    "nginx": int(E["NGINX_PID"]),
    "varnish": int(E["VARNISH_PID"]),
    "origin": int(E["ORIGIN_PID"]),
}


def server_pids(system):
    pids = tree(SERVER_ROOT[system])
    if system == "origin":
        pids += pidof("mariadbd") or pidof("mysqld")
    return pids


class CpuSplit:
    def __init__(self, system):
        self.pids = server_pids(system)

    def __enter__(self):
        self.s0 = pid_cpu(self.pids)
        self.r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.m0 = machine_cpu()
        self.t0 = time.time()
        return self

    def __exit__(self, *a):
        wall = time.time() - self.t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m1 = machine_cpu()
        self.server = (pid_cpu(self.pids) - self.s0) / wall
        self.loadgen = ((r1.ru_utime + r1.ru_stime) - (self.r0.ru_utime + self.r0.ru_stime)) / wall
        busy = (m1[1] - self.m0[1]) / wall
        self.other = max(0.0, busy - self.server - self.loadgen)
        self.idle = max(0.0, ((m1[0] - self.m0[0]) - (m1[1] - self.m0[1])) / wall)


# ------------------------------------------------------------------ load generators
COMMANDS = []  # exact load-generator command lines, for RESULTS.md


def run_wrk(system, scen, conns=CONNS, dur=DUR, warm=WARM, timeout="10s"):
    gz = SCEN[scen][0]
    uf = url_file(scen, system)
    env = dict(E, WRK_URLS=uf)
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{dur}s", f"--timeout={timeout}", "--latency", "-s", LUA]
    if gz:
        cmd += ["-H", "Accept-Encoding: gzip"]
    cmd += [BASE[system] + "/"]
    if warm:
        wcmd = list(cmd)
        wcmd[3] = f"-d{warm}s"
        subprocess.run(wcmd, env=env, capture_output=True, text=True)
    with CpuSplit(system) as cpu:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    COMMANDS.append(f"WRK_URLS={uf} " + shlex.join(cmd))
    m = re.search(r"WRKJSON (\{.*\})", r.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {r.stdout}\n{r.stderr}")
    j = json.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    dur_s = j["duration_us"] / 1e6
    res = {
        "system": system, "scen": scen, "conns": conns,
        "rps": j["requests"] / dur_s,
        "mbps": j["bytes"] / dur_s / 1e6,
        "bytes_per_resp": j["bytes"] / max(1, j["requests"]),
        "p50": j["p50_us"] / 1000, "p99": j["p99_us"] / 1000, "p999": j["p999_us"] / 1000,
        "max": j["max_us"] / 1000,
        "errors": j["connect_err"] + j["read_err"] + j["write_err"] + j["timeout_err"],
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "requests": j["requests"],
        "cpu_server": cpu.server, "cpu_loadgen": cpu.loadgen, "cpu_other": cpu.other, "cpu_idle": cpu.idle,
    }
    log(f"wrk {system:8s} {scen:14s} {res['rps']:9.0f} req/s p50 {res['p50']:.2f} p99 {res['p99']:.2f} "
        f"p99.9 {res['p999']:.2f} ms  {res['bytes_per_resp']:.0f} B/resp  errs {res['errors']} non2xx {res['non2xx']}  "
        f"cpu server {cpu.server:.2f} loadgen {cpu.loadgen:.2f} other {cpu.other:.2f}")
    return res


def run_oha(system, scen, rate, dur=DUR, conns=CONNS):
    gz = SCEN[scen][0]
    uf = url_file(scen, system, full=True)
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{dur}s", "-c", str(conns),
           "-q", str(rate), "--latency-correction", "--urls-from-file", uf]
    if gz:
        cmd += ["-H", "Accept-Encoding: gzip"]
    with CpuSplit(system) as cpu:
        r = subprocess.run(cmd, capture_output=True, text=True)
    COMMANDS.append(shlex.join(cmd))
    try:
        j = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"oha failed: {r.stdout[:2000]}\n{r.stderr[:2000]}")
    s = j["summary"]
    lp = j.get("latencyPercentiles", {})
    codes = j.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    errs = sum(v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k)
    res = {
        "system": system, "scen": scen, "rate": rate,
        "rps": s.get("requestsPerSec") or 0.0,
        "ok": ok, "errors": errs, "non2xx": sum(codes.values()) - ok,
        "p50": (lp.get("p50") or float("nan")) * 1000,
        "p99": (lp.get("p99") or float("nan")) * 1000,
        "p999": (lp.get("p99.9") or float("nan")) * 1000,
        "cpu_server": cpu.server, "cpu_loadgen": cpu.loadgen, "cpu_other": cpu.other, "cpu_idle": cpu.idle,
    }
    log(f"oha {system:8s} {scen} @{rate:6d}/s -> {res['rps']:8.0f} req/s ok {ok} errs {errs} p50 {res['p50']:.2f} "
        f"p99 {res['p99']:.2f} p99.9 {res['p999']:.2f} ms  cpu server {cpu.server:.2f} loadgen {cpu.loadgen:.2f} other {cpu.other:.2f}")
    return res


# ------------------------------------------------------------------ cold-miss storm
async def one_request(path, host, port, gate, results):
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    except OSError as e:
        results.append({"status": 0, "err": f"connect {e}"})
        gate.count += 1
        return
    await gate.wait()
    t0 = time.perf_counter()
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n".encode())
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
    def __init__(self, n):
        self.n, self.count, self.ev = n, 0, asyncio.Event()

    async def wait(self):
        self.count += 1
        if self.count >= self.n:
            self.ev.set()
        await self.ev.wait()


async def storm_async(paths, port):
    gate = Gate(len(paths))
    results = []
    t0 = time.perf_counter()
    await asyncio.gather(*(one_request(p, "127.0.0.1", port, gate, results) for p in paths))
    return results, time.perf_counter() - t0


def cold_storm(n_req=1000):
    paths = [q(WARDS[i % N]) for i in range(n_req)]
    req = urllib.request.Request(BASE["origin"] + "/__origin/reset-stats", method="POST", data=b"")
    urllib.request.urlopen(req, timeout=10).read()
    m0 = metrics()
    s0 = origin_stats()
    with CpuSplit("wardgate") as cpu:
        results, wall = asyncio.run(storm_async(paths, int(E["P_WG"])))
    s1 = origin_stats()
    m1 = metrics()
    lats = sorted(r["lat"] for r in results if r.get("status") == 200)
    codes = {}
    for r in results:
        codes[r["status"]] = codes.get(r["status"], 0) + 1
    xc = {}
    for r in results:
        if r.get("xcache"):
            xc[r["xcache"]] = xc.get(r["xcache"], 0) + 1
    errs = [r.get("err") for r in results if r.get("err")][:3]
    res = {
        "requests": n_req, "distinct_wards": len(set(paths)),
        "upstream_citizens_reads": s1["citizens_reads"] - s0["citizens_reads"],
        "upstream_requests": s1["requests"] - s0["requests"],
        "builds": metric_sum(m1, "wardgate_snapshot_builds_total") - metric_sum(m0, "wardgate_snapshot_builds_total"),
        "codes": codes, "xcache": xc, "wall": wall, "errors_sample": errs,
        "p50": lats[len(lats) // 2] * 1000 if lats else float("nan"),
        "p99": lats[min(len(lats) - 1, int(len(lats) * 0.99))] * 1000 if lats else float("nan"),
        "max": lats[-1] * 1000 if lats else float("nan"),
        "cpu_server": cpu.server,
    }
    log(f"cold storm: {res}")
    return res


# ------------------------------------------------------------------ warm-up / byte capture
def capture_bytes():
    """Fetch every URL of every scenario from wardgate (gzip and identity) into $WWW, so nginx
    serves byte-identical answers; also checks that wardgate answers HIT for each."""
    os.makedirs(f"{WWW}/p", exist_ok=True)
    os.makedirs(f"{WWW}/w", exist_ok=True)
    os.makedirs(f"{WWW}/d", exist_ok=True)
    xcache = {}
    sizes = {}
    for scen, (gz, sets) in SCEN.items():
        for app_path, ng_path in zip(sets["app"], sets["nginx"]):
            st, h, body = http_get(BASE["wardgate"] + app_path, gzip=gz)
            assert st == 200, (scen, app_path, st)
            if gz:
                assert h.get("content-encoding") == "gzip", (scen, h)
            xcache[h.get("x-cache")] = xcache.get(h.get("x-cache"), 0) + 1
            with open(WWW + ng_path + (".gz" if gz else ""), "wb") as f:
                f.write(body)
            sizes.setdefault(scen, []).append(len(body))
    log(f"captured wardgate bytes into {WWW}; X-Cache seen: {xcache}")
    # sanity: nginx returns the same bytes
    for scen in SCEN:
        gz = SCEN[scen][0]
        ng = http_get(BASE["nginx"] + paths_for(scen, "nginx")[0], gzip=gz)
        wg = http_get(BASE["wardgate"] + paths_for(scen, "wardgate")[0], gzip=gz)
        assert ng[2] == wg[2], f"nginx bytes differ for {scen}"
        if gz:
            assert ng[1].get("content-encoding") == "gzip", f"nginx did not send gzip for {scen}"
    return {k: sum(v) / len(v) for k, v in sizes.items()}, xcache


def delta_rows():
    st, h, body = http_get(BASE["wardgate"] + q(1, DELTA_DATE), gzip=False)
    gz = http_get(BASE["wardgate"] + q(1, DELTA_DATE), gzip=True)[2]
    return f"{len(json.loads(body)):,} rows of ward 1 ({len(body):,} B identity, {len(gz):,} B gzip from wardgate)"


def warm_varnish():
    urls = []
    for scen in ("page_gz", "full_gz", "master_gz", "delta_gz"):
        urls += [BASE["varnish"] + p for p in paths_for(scen, "varnish")]
    t0 = time.time()
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda u: http_get(u, gzip=True, timeout=300), urls))
    hits = {}
    for scen in SCEN:
        gz = SCEN[scen][0]
        st, h, body = http_get(BASE["varnish"] + paths_for(scen, "varnish")[-1], gzip=gz)
        hits[scen] = (h.get("x-cache"), h.get("content-encoding", "identity"), len(body))
    log(f"varnish warmed with {len(urls)} URLs in {time.time() - t0:.1f}s; last URL per scenario: {hits}")
    return hits


def warm_throughput():
    r = subprocess.run([BIN, "warm", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        return {"available": False, "text": "n/a (warm not available)"}
    prefix = f"bench-warm-{os.getppid()}"
    cmd = [BIN, "warm", "--state", "Karnataka", "--assembly", "150", "--mysql-url", E["MYSQL_URL"],
           "--redis-url", "redis://127.0.0.1:6379/", "--redis-prefix", prefix, "--concurrency", "4"]
    COMMANDS.append(shlex.join(cmd))
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.time() - t0
    out = r.stdout + r.stderr
    lines = [ln for ln in out.splitlines() if "rows/s" in ln]
    m = None
    if lines:
        m = re.search(r"([\d][\d,_.]*)\s*rows/s", lines[-1]) or re.search(r"rows/s\D*([\d][\d,_.]*)", lines[-1])
    rate = float(m.group(1).replace(",", "").replace("_", "")) if m else None
    return {"available": True, "rc": r.returncode, "line": lines[-1].strip() if lines else out.strip()[-300:],
            "rows_per_s": rate, "wall": wall}


def rss_kb(pids):
    out = {}
    for key in ("VmRSS", "VmHWM"):
        tot = 0
        for p in pids:
            try:
                with open(f"/proc/{p}/status") as f:
                    for ln in f:
                        if ln.startswith(key + ":"):
                            tot += int(ln.split()[1])
            except OSError:
                pass
        out[key] = tot
    return out


# ------------------------------------------------------------------ SVG
def write_svg(sweep, path):
    W, H, L, R, T, B = 760, 460, 70, 150, 40, 60
    systems = [("wardgate", "#d62728"), ("nginx", "#2ca02c"), ("varnish", "#1f77b4")]
    xs = sorted({p["rate"] for p in sweep})
    ys = [p["p99"] for p in sweep if p["p99"] == p["p99"] and p["p99"] > 0]
    ymin = 10 ** math.floor(math.log10(max(0.01, min(ys)))) if ys else 0.1
    ymax = 10 ** math.ceil(math.log10(max(ys))) if ys else 1000
    xmax = max(xs) * 1.05

    def X(v):
        return L + (W - L - R) * v / xmax

    def Y(v):
        v = max(v, ymin)
        return T + (H - T - B) * (1 - (math.log10(v) - math.log10(ymin)) / (math.log10(ymax) - math.log10(ymin)))

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W/2 - R/2 + L/2}" y="22" text-anchor="middle" font-size="15">p99 latency vs offered load — full-ward gzip hits, {CONNS} connections (oha -q, latency-corrected)</text>']
    # grid: y decades
    d = ymin
    while d <= ymax * 1.0001:
        for mult in (1, 2, 5):
            v = d * mult
            if v > ymax * 1.0001:
                break
            yy = Y(v)
            o.append(f'<line x1="{L}" x2="{W-R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{"#ccc" if mult == 1 else "#eee"}"/>')
            if mult in (1, 5) or (ymax / ymin) <= 1000:
                o.append(f'<text x="{L-6}" y="{yy+4:.1f}" text-anchor="end">{v:g}</text>')
        d *= 10
    for x in xs:
        xx = X(x)
        o.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{T}" y2="{H-B}" stroke="#eee"/>')
        o.append(f'<text x="{xx:.1f}" y="{H-B+16}" text-anchor="middle">{x}</text>')
    # 10 ms target and 2,750 req/s marker
    o.append(f'<line x1="{L}" x2="{W-R}" y1="{Y(10):.1f}" y2="{Y(10):.1f}" stroke="#999" stroke-dasharray="6,4"/>')
    o.append(f'<text x="{W-R-4}" y="{Y(10)-4:.1f}" text-anchor="end" fill="#666">10 ms target</text>')
    o.append(f'<line x1="{X(2750):.1f}" x2="{X(2750):.1f}" y1="{T}" y2="{H-B}" stroke="#999" stroke-dasharray="2,3"/>')
    o.append(f'<rect x="{L}" y="{T}" width="{W-L-R}" height="{H-T-B}" fill="none" stroke="#333"/>')
    o.append(f'<text x="{(L + W - R)/2}" y="{H-18}" text-anchor="middle">offered load (req/s)</text>')
    o.append(f'<text transform="translate(18,{(T + H - B)/2}) rotate(-90)" text-anchor="middle">p99 latency (ms, log)</text>')
    for i, (sysn, col) in enumerate(systems):
        pts = sorted((p["rate"], p["p99"]) for p in sweep if p["system"] == sysn and p["p99"] == p["p99"])
        if pts:
            o.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' %
                     (col, " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in pts)))
            for a, b in pts:
                o.append(f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="3.5" fill="{col}"/>')
        ly = T + 20 + i * 22
        o.append(f'<line x1="{W-R+12}" x2="{W-R+36}" y1="{ly}" y2="{ly}" stroke="{col}" stroke-width="2"/>')
        o.append(f'<text x="{W-R+42}" y="{ly+4}">{sysn}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


# ------------------------------------------------------------------ report
def sh(cmd):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else ""
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


def fmt(v, d=0):
    if v is None or v != v:
        return "n/a"
    return f"{v:,.{d}f}"


def wait_quiet(max_wait=int(E.get("QUIET_WAIT", "45")), limit=0.25):
    """Wait (bounded) until processes outside the bench use < limit cores: this machine is shared."""
    t0 = time.time()
    while True:
        a = machine_cpu()
        time.sleep(2)
        b = machine_cpu()
        busy = (b[1] - a[1]) / 2
        if busy < limit or time.time() - t0 > max_wait:
            return busy, time.time() - t0


def main():
    t_main = time.time()
    busy, waited = wait_quiet()
    log(f"background CPU before start: {busy:.2f} cores (waited {waited:.0f}s)")
    E["_BG"] = f"{busy:.2f} cores busy outside the bench after waiting {waited:.0f} s for quiet (limit {E.get('QUIET_WAIT', '45')} s)"
    loadavg0 = open("/proc/loadavg").read().strip()
    log(f"{N} wards x {VOTERS} voters, {DUR}s points (+{WARM}s warm-up), {CONNS} connections, rates {RATES}")

    # 1. cold-miss storm on the fresh wardgate (new Redis prefix, empty L1); it also warms wardgate
    storm = cold_storm(1000)
    # make sure every ward is built even if the storm failed somewhere
    for w in WARDS:
        http_get(BASE["wardgate"] + q(w))

    # 2. capture wardgate's bytes for nginx; warm Varnish
    sizes, cap_xcache = capture_bytes()
    drows = delta_rows()
    vhits = warm_varnish()

    # 3. closed-loop max throughput (wrk)
    results = {}
    for scen in SCEN:
        for system in ("wardgate", "nginx", "varnish"):
            results[(scen, system)] = run_wrk(system, scen)
    for scen in ("page_gz", "full_gz"):
        results[(scen, "origin")] = run_wrk("origin", scen, conns=ORIGIN_CONNS, dur=ORIGIN_DUR, warm=0, timeout="60s")

    # 4. constant offered rate sweep (oha -q --latency-correction), full-ward gzip
    sweep = []
    for system in ("wardgate", "nginx", "varnish"):
        run_oha(system, "full_gz", RATES[0], dur=WARM)  # warm-up
        for rate in RATES:
            sweep.append(run_oha(system, "full_gz", rate))

    # 5. RSS after the load
    rss = {s: rss_kb(server_pids(s) if s != "origin" else tree(SERVER_ROOT[s])) for s in ("wardgate", "nginx", "varnish")}
    wg_metrics = metrics()

    # 6. warm throughput
    warm = warm_throughput()
    log(f"warm: {warm}")

    write_svg(sweep, os.path.join(HERE, "latency.svg"))
    write_report(storm, sizes, cap_xcache, drows, vhits, results, sweep, rss, warm, wg_metrics, loadavg0,
                 time.time() - t_main)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump({"storm": storm, "results": {f"{k[0]}/{k[1]}": v for k, v in results.items()},
                   "sweep": sweep, "rss_kb": rss, "warm": warm, "sizes": sizes}, f, indent=1, default=str)
    log("wrote bench/RESULTS.md, bench/latency.svg, bench/results.json")


def write_report(storm, sizes, cap_xcache, drows, vhits, R, sweep, rss, warm, wgm, loadavg0, wall):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip()
    mem = sh("free -h | awk '/Mem:/{print $2}'")
    git = sh(f"cd {ROOT} && git rev-parse --short HEAD") + (" (+ uncommitted changes)" if sh(f"cd {ROOT} && git status --porcelain -- src Cargo.toml | head -1") else "")
    versions = {
        "wardgate": sh(f"{BIN} --version") + f", commit {git}",
        "nginx": sh("nginx -v"),
        "varnish": sh("varnishd -V"),
        "wrk": sh("wrk -v"),
        "oha": sh("oha --version"),
        "rustc": sh("rustc --version"),
        "MariaDB": sh("mysql -uroot -h127.0.0.1 -N -e 'select version()'"),
        "Redis": sh("redis-server --version || redis-cli -h 127.0.0.1 info server | grep redis_version"),
        "kernel": platform.release(),
        "OS": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "python": platform.python_version(),
    }

    def r(scen, system):
        return R.get((scen, system))

    pg_wg, pg_ng = r("page_gz", "wardgate"), r("page_gz", "nginx")
    full_wg, full_or = r("full_gz", "wardgate"), r("full_gz", "origin")
    pg_or = r("page_gz", "origin")
    at2750 = [p for p in sweep if p["system"] == "wardgate" and p["rate"] == 2750]
    at2750 = at2750[0] if at2750 else None
    L = []
    A = L.append
    A("# wardgate benchmark results\n")
    A(f"Generated by `bench/run.sh{' --quick' if QUICK else ''}` on {now}; measurement phase {wall:.0f} s. "
      f"Data: {N} wards × {VOTERS:,} voters ({N*VOTERS:,} rows) of Karnataka/150 in MariaDB.\n")
    A("## Machine\n")
    A(f"- nproc: {os.cpu_count()}; CPU: {cpu_model}; memory: {mem}")
    A(f"- load average just before the measurements: `{loadavg0}`; {E.get('_BG', '')}")
    A("- **The machine is shared**: other engineers' builds and tests ran during this bench; the `CPU other` columns "
      "show how much CPU went to processes outside the bench during each point (anything above ~0.1 core means the point is "
      "contaminated and the server/load generator had less than 2 cores).")
    A("- Everything (origin, MariaDB, Redis, wardgate, nginx, Varnish and the load generator) shares these cores "
      "over loopback; the CPU columns below show the split (in cores: 1.00 = one core busy).\n")
    A("## Targets\n")
    A("| target | measured | verdict |")
    A("| --- | --- | --- |")

    def verdict(ok):
        return "**met**" if ok else "**missed**"
    if pg_wg and pg_ng:
        ratio = pg_wg["rps"] / pg_ng["rps"]
        A(f"| page hit ≥ 0.9× nginx gzip_static req/s | {fmt(pg_wg['rps'])} vs {fmt(pg_ng['rps'])} req/s = {ratio:.2f}× | {verdict(ratio >= 0.9)} |")
    if at2750:
        ok = at2750["p99"] < 10 and at2750["errors"] == 0 and at2750["non2xx"] == 0 and at2750["rps"] >= 0.95 * 2750
        A(f"| p99 < 10 ms at 2,750 req/s offered (full-ward gzip hits) | p99 {fmt(at2750['p99'], 2)} ms, achieved {fmt(at2750['rps'])} req/s, errors {at2750['errors'] + at2750['non2xx']} | {verdict(ok)} |")
    if full_wg and full_or and pg_or:
        rf = full_wg["rps"] / max(1e-9, full_or["rps"])
        rp = pg_wg["rps"] / max(1e-9, pg_or["rps"])
        A(f"| ≥ 50× the uncached origin | full ward {rf:,.0f}×, page {rp:,.0f}× | {verdict(min(rf, rp) >= 50)} |")
    ok = storm["upstream_citizens_reads"] == storm["distinct_wards"]
    A(f"| cold storm: upstream calls = distinct wards | {storm['upstream_citizens_reads']} citizens calls for {storm['distinct_wards']} wards | {verdict(ok)} |")
    ok200 = storm["codes"].get(200, 0)
    A(f"| (not a target, reported) cold storm: every request answered | {ok200}/{storm['requests']} answered 200, others {({k: v for k, v in storm['codes'].items() if k != 200})}; "
      f"max {fmt(storm['max'])} ms | {'all 200' if ok200 == storm['requests'] else '**not all 200**'} |")
    if warm["available"] and warm.get("rows_per_s"):
        A(f"| warm ≥ 200,000 rows/s | {fmt(warm['rows_per_s'])} rows/s | {verdict(warm['rows_per_s'] >= 200000)} |")
    elif warm["available"]:
        A(f"| warm ≥ 200,000 rows/s | could not parse rows/s (rc {warm.get('rc')}): `{warm.get('line','')[:120]}` | **unknown** |")
    else:
        A("| warm ≥ 200,000 rows/s | n/a (warm not available) | n/a |")
    A("")

    A("## Closed-loop throughput (wrk, %d connections, %d s per point after %d s warm-up)\n" % (CONNS, DUR, WARM))
    A("Latency here is closed-loop (wrk measures from send to response on a busy connection); "
      "see the constant-rate section for latency at a fixed offered load.\n")
    A("| scenario | system | req/s | MB/s | p50 ms | p99 ms | p99.9 ms | bytes/resp | errors | CPU server | CPU loadgen | CPU other | wardgate ÷ this |")
    A("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scen in SCEN:
        for system in ("wardgate", "nginx", "varnish", "origin"):
            x = r(scen, system)
            if not x:
                continue
            wg = r(scen, "wardgate")
            ratio = "—" if system == "wardgate" else f"{wg['rps'] / max(1e-9, x['rps']):,.2f}×"
            name = system + (f" (uncached, {x['conns']} conns)" if system == "origin" else "")
            A(f"| {SCEN_LABEL[scen]} | {name} | {fmt(x['rps'])} | {fmt(x['mbps'])} | {fmt(x['p50'], 2)} | {fmt(x['p99'], 2)} | "
              f"{fmt(x['p999'], 2)} | {fmt(x['bytes_per_resp'])} | {x['errors'] + x['non2xx']} | {x['cpu_server']:.2f} | "
              f"{x['cpu_loadgen']:.2f} | {x['cpu_other']:.2f} | {ratio} |")
    A("")
    A("bytes/resp includes response headers. nginx serves the bytes fetched from wardgate "
      "(gzip and identity), so bodies are identical; Varnish gzips the origin's identity JSON itself "
      "(`beresp.do_gzip`, default gzip_level 6) and gunzips for identity clients. The origin sends identity JSON only.")
    A(f"Average body sizes fetched from wardgate: " + ", ".join(f"{k} {v:,.0f} B" for k, v in sizes.items())
      + f". The delta (date={DELTA_DATE}) holds {drows}.\n")

    A("## Constant offered rate (oha -q, --latency-correction, full-ward gzip hits, %d connections, %d s per point)\n" % (CONNS, DUR))
    A("oha schedules requests at the offered rate and, with `--latency-correction`, measures each "
      "latency from the request's scheduled start, so queueing behind a slow response counts "
      "(no coordinated omission, as wrk2). Points beyond saturation show achieved < offered.\n")
    A("| offered req/s | system | achieved req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU server | CPU loadgen | CPU other |")
    A("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for rate in RATES:
        for system in ("wardgate", "nginx", "varnish"):
            for p in sweep:
                if p["system"] == system and p["rate"] == rate:
                    A(f"| {rate:,} | {system} | {fmt(p['rps'])} | {fmt(p['p50'], 2)} | {fmt(p['p99'], 2)} | {fmt(p['p999'], 2)} | "
                      f"{p['errors'] + p['non2xx']} | {p['cpu_server']:.2f} | {p['cpu_loadgen']:.2f} | {p['cpu_other']:.2f} |")
    A("\n![p99 vs offered load](latency.svg)\n")

    A("## Cold-miss storm\n")
    A(f"Fresh wardgate (empty L1, new Redis prefix `{E['PREFIX']}`): {storm['requests']} connections opened first, then "
      f"all requests released at once, full-ward gzip, spread round-robin over {storm['distinct_wards']} wards.\n")
    A("| upstream citizens calls | upstream requests | snapshot builds | distinct wards | status codes | X-Cache | wall s | p50 ms | p99 ms | max ms |")
    A("| ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    A(f"| {storm['upstream_citizens_reads']} | {storm['upstream_requests']} | {fmt(storm['builds'])} | {storm['distinct_wards']} | "
      f"{storm['codes']} | {storm['xcache']} | {storm['wall']:.2f} | {fmt(storm['p50'])} | {fmt(storm['p99'])} | {fmt(storm['max'])} |")
    if storm["errors_sample"]:
        A(f"\nSample errors: `{storm['errors_sample']}`")
    A("")

    A("## Memory after the load\n")
    A("| process | VmRSS | VmHWM |")
    A("| --- | ---: | ---: |")
    for s, v in rss.items():
        A(f"| {s}{' (all processes)' if s != 'wardgate' else ''} | {v['VmRSS']/1024:,.0f} MiB | {v['VmHWM']/1024:,.0f} MiB |")
    A("")
    A("## Warm throughput\n")
    if warm["available"]:
        A(f"`wardgate warm` (concurrency 4): **{fmt(warm.get('rows_per_s'))} rows/s** (wall {warm['wall']:.1f} s, rc {warm['rc']}); "
          f"summary line: `{warm['line'][:300]}`\n")
    else:
        A("n/a (warm not available: `wardgate warm --help` failed in this build).\n")

    A("## Observations (automatic)\n")
    obs = []
    for scen in SCEN:
        wg, ng = r(scen, "wardgate"), r(scen, "nginx")
        if wg and ng:
            obs.append(f"- {SCEN_LABEL[scen]}: wardgate {wg['rps']/ng['rps']:.2f}× nginx; CPU wardgate {wg['cpu_server']:.2f} "
                       f"vs nginx {ng['cpu_server']:.2f} cores, load generator {wg['cpu_loadgen']:.2f} / {ng['cpu_loadgen']:.2f} cores; "
                       f"wardgate spends {wg['cpu_server']/max(1,wg['rps'])*1e6:.0f} µs CPU per response, nginx {ng['cpu_server']/max(1,ng['rps'])*1e6:.0f} µs.")
    A("\n".join(obs) + "\n")
    wgreq = {k: v for k, v in wgm.items() if k.startswith("wardgate_requests_total")}
    if wgreq:
        A("wardgate `wardgate_requests_total` at the end: " + ", ".join(f"`{k}` {v:,.0f}" for k, v in sorted(wgreq.items())[:12]) + "\n")

    A("## How it was run\n")
    A("```")
    A(f"bench/run.sh{' --quick' if QUICK else ''}    # WARDS={N} VOTERS={VOTERS} DURATION={DUR} WARMUP={WARM} CONNS={CONNS} RATES={','.join(map(str, RATES))}")
    A("```\n")
    A("Services (ports from PORT_BASE, temp dir removed at exit):\n")
    A("```")
    for k in ("SEED_CMD", "ORIGIN_CMD", "WG_CMD", "VARNISH_CMD", "NGINX_CMD"):
        A(E[k].replace(TMP, "$TMP"))
    A("```\n")
    A("nginx config: `bench/nginx.conf` (gzip_static on, sendfile, access log off); Varnish VCL: `bench/varnish.vcl`; "
      "wrk script: `bench/wrk-urls.lua` (round-robin over the URL list, JSON summary). Load-generator commands:\n")
    A("```")
    for c in COMMANDS:
        A(c.replace(TMP, "$TMP"))
    A("```\n")
    A("## Wire bytes, memory and build time per ward\n")
    A("Measured by scripts of their own, each writing its table: `bench/wire-bytes.sh` writes "
      "[WIRE-BYTES.md](WIRE-BYTES.md) (bytes per answer kind against whole-stream `gzip -6`), "
      "`bench/memory.sh` writes [MEMORY.md](MEMORY.md) (RSS per cached ward, built and loaded "
      "from Redis), `bench/build-time.sh` writes [BUILD-TIME.md](BUILD-TIME.md) (one cold "
      "10,000-row ward build, against a base revision in the same run).\n")
    A("## Tool versions\n")
    for k, v in versions.items():
        A(f"- {k}: {v}")
    A("")
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
