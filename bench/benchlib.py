"""Shared by the bench driver's modules: the settings run.sh exports, HTTP helpers, wardgate's
metrics, CPU accounting, the load generators (wrk, oha), the processes the driver starts
itself, and small statistics. Standard library only."""
import json
import math
import os
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

E = os.environ
N = int(E["WARDS"])
VOTERS = int(E["VOTERS"])
DUR = int(E["DURATION"])
WARM = int(E["WARMUP"])
CONNS = int(E["CONNS"])
RATES = [int(r) for r in E["RATES"].split(",") if r.strip()]
REPEAT = max(1, int(E.get("REPEAT", "3")))
QUICK = E.get("QUICK") == "1"
TMP = E["TMP"]
HERE = E["HERE"]
ROOT = E["ROOT"]
BIN = E["BIN"]
SAMPLE = E["SAMPLE"]
WWW = E["WWW"]
BENCH_DB = E["BENCH_DB"]
STORM_DB = E["STORM_DB"]
REDIS_URL = "redis://127.0.0.1:6379/"
LUA = os.path.join(HERE, "wrk-urls.lua")
PAGE_SIZE = 1000
RATE_TARGET = 2750  # req/s offered at which p99 is compared

BASE = {
    "wardgate": f"http://127.0.0.1:{E['P_WG']}",
    "nginx": f"http://127.0.0.1:{E['P_NGINX']}",
    "varnish": f"http://127.0.0.1:{E['P_VARNISH']}",
    "origin": f"http://127.0.0.1:{E['P_ORIGIN']}",
}
ADMIN = f"http://127.0.0.1:{E['P_ADMIN']}"
# ports of the cold-storm services (restarted per repetition by storm.py; the slow origin by run.sh)
STORM_PORT = {
    "origin": int(E["P_STORM_ORIGIN"]),
    "wardgate": int(E["P_STORM_WG"]),
    "admin": int(E["P_STORM_ADMIN"]),
    "nginx": int(E["P_STORM_NGINX"]),
    "varnish": int(E["P_STORM_VARNISH"]),
}
T_START = time.time()


def log(msg):
    print(f"[bench.py {time.time() - T_START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def rel(s):
    """A command line as RESULTS.md shows it: paths relative to the repository root, the
    temp dir as $TMP."""
    return str(s).replace(TMP, "$TMP").replace(ROOT + "/", "")


def q(w, date="-1"):
    return f"/open/volunteer/citizens?state=Karnataka&assemblyNo=150&wardNo={w}&date={date}&boothNos=-1"


# ------------------------------------------------------------------ statistics
def median(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else float("nan")


def pct(sorted_xs, p):
    """Nearest-rank percentile p (0-100) of an ascending list."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, math.ceil(p / 100 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def fmt(v, d=0):
    if v is None or v != v:
        return "n/a"
    return f"{v:,.{d}f}"


# ------------------------------------------------------------------ HTTP helpers
def http_get(url, gzip=True, timeout=120):
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def http_post(url, timeout=10):
    req = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def origin_stats(base):
    return json.loads(http_get(base + "/__origin/stats", gzip=False)[2])


def reset_origin(base):
    http_post(base + "/__origin/reset-stats")


def wait_http(url, tries=150):
    for _ in range(tries):
        try:
            http_get(url, gzip=False, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"not answering: {url}")


def mysql(db, sql, tz_utc=True):
    """One statement through the stock client; DATETIMEs read as UTC, as wardgate reads them."""
    pre = "SET time_zone = '+00:00'; " if tz_utc else ""
    return subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-N", "-B", db, "-e", pre + sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def metrics(admin=ADMIN):
    body = http_get(admin + "/metrics", gzip=False)[2].decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^(\S+?)(\{.*\})?\s+(\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric_sum(ms, name):
    """Sum over the labels of `name` (also matching its `_total` spelling)."""
    names = (name, name + "_total") if not name.endswith("_total") else (name,)
    return sum(v for k, v in ms.items() if k.split("{")[0] in names)


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
    """The processes whose CPU counts as the system's: with MariaDB for the origin, with
    varnishncsa (its access log) for Varnish."""
    pids = tree(SERVER_ROOT[system])
    if system == "origin":
        pids += pidof("mariadbd") or pidof("mysqld")
    if system == "varnish" and E.get("VARNISHNCSA_PID"):
        pids.append(int(E["VARNISHNCSA_PID"]))
    return pids


class CpuSplit:
    """CPU used during a block, in cores: by the server's processes, by the load generators
    (this driver's children), by everything else on the machine, and idle."""

    def __init__(self, system_or_pids):
        self.pids = server_pids(system_or_pids) if isinstance(system_or_pids, str) else list(system_or_pids)

    def __enter__(self):
        self.s0 = pid_cpu(self.pids)
        self.r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.m0 = machine_cpu()
        self.t0 = time.time()
        return self

    def __exit__(self, *a):
        wall = max(1e-6, time.time() - self.t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m1 = machine_cpu()
        self.server = (pid_cpu(self.pids) - self.s0) / wall
        self.loadgen = ((r1.ru_utime + r1.ru_stime) - (self.r0.ru_utime + self.r0.ru_stime)) / wall
        busy = (m1[1] - self.m0[1]) / wall
        self.other = max(0.0, busy - self.server - self.loadgen)
        self.idle = max(0.0, ((m1[0] - self.m0[0]) - (m1[1] - self.m0[1])) / wall)


# ------------------------------------------------------------------ load generators
COMMANDS = []  # exact load-generator command lines, for RESULTS.md (deduplicated there)


def note_command(cmd):
    c = rel(cmd if isinstance(cmd, str) else shlex.join(cmd))
    if c not in COMMANDS:
        COMMANDS.append(c)


def url_file(label, system, paths, base=None):
    """The paths (or, with base, full URLs) one per line; returns the file."""
    p = os.path.join(TMP, f"urls-{label}-{system}{'-full' if base else ''}.txt")
    with open(p, "w") as f:
        for path in paths:
            f.write((base + path if base else path) + "\n")
    return p


def run_wrk(system, label, paths, gz, conns=CONNS, dur=DUR, warm=WARM, timeout="10s", base=None, pids=None):
    """wrk closed loop over `paths` round-robin (bench/wrk-urls.lua): req/s, latency, CPU split
    (of `system`'s processes, or of `pids` when given: a service the caller started itself)."""
    uf = url_file(label, system, paths)
    env = dict(E, WRK_URLS=uf)
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{dur}s", f"--timeout={timeout}", "--latency", "-s", LUA]
    if gz:
        cmd += ["-H", "Accept-Encoding: gzip"]
    cmd += [(base or BASE[system]) + "/"]
    if warm:
        wcmd = list(cmd)
        wcmd[3] = f"-d{warm}s"
        subprocess.run(wcmd, env=env, capture_output=True, text=True)
    way0 = send_way(system, label, base)
    with CpuSplit(pids if pids is not None else system) as cpu:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    way1 = send_way(system, label, base)
    note_command(f"WRK_URLS={uf} " + shlex.join(cmd))
    m = re.search(r"WRKJSON (\{.*\})", r.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {r.stdout}\n{r.stderr}")
    j = json.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    dur_s = j["duration_us"] / 1e6
    res = {
        "system": system, "scen": label, "conns": conns,
        "rps": j["requests"] / dur_s,
        "mbps": j["bytes"] / dur_s / 1e6,
        "bytes_per_resp": j["bytes"] / max(1, j["requests"]),
        "p50": j["p50_us"] / 1000, "p99": j["p99_us"] / 1000, "p999": j["p999_us"] / 1000,
        "max": j["max_us"] / 1000,
        "spectrum": [[p, us / 1000] for p, us in j.get("pcts", [])],
        "errors": j["connect_err"] + j["read_err"] + j["write_err"] + j["timeout_err"],
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "requests": j["requests"],
        "cpu_server": cpu.server, "cpu_loadgen": cpu.loadgen, "cpu_other": cpu.other, "cpu_idle": cpu.idle,
        "send_way": way0 if way0 == way1 else f"{way0}→{way1}",
    }
    log(f"wrk {system:8s} {label:14s} {res['rps']:9.0f} req/s p50 {res['p50']:.2f} p99 {res['p99']:.2f} "
        f"p99.9 {res['p999']:.2f} ms  {res['bytes_per_resp']:.0f} B/resp  errs {res['errors']} non2xx {res['non2xx']}  "
        f"cpu server {cpu.server:.2f} loadgen {cpu.loadgen:.2f} other {cpu.other:.2f}")
    return res


def send_way(system, label, base=None):
    """How the bench's wardgate sent cached answers of the scenario's size then
    (`wardgate_sendfile_chosen{size}`, which `--sendfile auto` revises every 30 s per size:
    whole wards are large sends, the rest small): "sendfile" or "copied"; None for other
    systems."""
    if system != "wardgate" or base is not None:
        return None
    size = "large" if label.startswith("full") else "small"
    try:
        chosen = metrics().get(f'wardgate_sendfile_chosen{{size="{size}"}}')
    except OSError:
        return None
    return None if chosen is None else ("sendfile" if chosen else "copied")


def run_oha(system, label, paths, gz, rate, dur=DUR, conns=CONNS):
    """oha at a constant offered rate with latency correction (no coordinated omission)."""
    uf = url_file(label, system, paths, base=BASE[system])
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{dur}s", "-c", str(conns),
           "-q", str(rate), "--latency-correction", "--urls-from-file", uf]
    if gz:
        cmd += ["-H", "Accept-Encoding: gzip"]
    with CpuSplit(system) as cpu:
        r = subprocess.run(cmd, capture_output=True, text=True)
    note_command(cmd)
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
        "system": system, "scen": label, "rate": rate,
        "rps": s.get("requestsPerSec") or 0.0,
        "ok": ok, "errors": errs, "non2xx": sum(codes.values()) - ok,
        "p50": (lp.get("p50") or float("nan")) * 1000,
        "p99": (lp.get("p99") or float("nan")) * 1000,
        "p999": (lp.get("p99.9") or float("nan")) * 1000,
        "cpu_server": cpu.server, "cpu_loadgen": cpu.loadgen, "cpu_other": cpu.other, "cpu_idle": cpu.idle,
    }
    log(f"oha {system:8s} {label} @{rate:6d}/s -> {res['rps']:8.0f} req/s ok {ok} errs {errs} p50 {res['p50']:.2f} "
        f"p99 {res['p99']:.2f} p99.9 {res['p999']:.2f} ms  cpu server {cpu.server:.2f} loadgen {cpu.loadgen:.2f} other {cpu.other:.2f}")
    return res


def order(systems, rep):
    """Alternate the order of the systems between repetitions (even: as given, odd: reversed)."""
    return list(systems) if rep % 2 == 0 else list(reversed(systems))


# ------------------------------------------------------------------ processes started here
STARTED_FILE = os.path.join(TMP, "started.pids")  # run.sh's cleanup kills these too


def start(cmd, out_path):
    """Starts a service of this driver (stdout and stderr to out_path); its PID is recorded so
    that run.sh stops it even if the driver dies."""
    out = open(out_path, "ab")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out.close()
    with open(STARTED_FILE, "a") as f:
        f.write(f"{p.pid}\n")
    return p


def stop(p, timeout=15):
    """SIGTERM (lets logs flush), then SIGKILL after `timeout` s; only this process."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def count_lines(path, needle=None):
    """Lines of a file (0 if missing); with needle, the lines containing it."""
    n = 0
    try:
        with open(path, "rb") as f:
            if needle is None:
                while True:
                    b = f.read(1 << 22)
                    if not b:
                        break
                    n += b.count(b"\n")
            else:
                nb = needle.encode()
                for line in f:
                    if nb in line:
                        n += 1
    except OSError:
        return 0
    return n
