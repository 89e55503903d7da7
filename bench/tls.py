"""Driver of bench/tls.sh (which starts and stops the long-lived services): hits over HTTPS and
plain HTTP, wardgate against nginx serving the same bytes; then wardgate served from Redis,
single node against a 3-master Cluster. Writes bench/TLS.md and a section of bench/RESULTS.md.
Standard library only; the load generator, CPU accounting and statistics are benchlib's."""
import json
import os
import platform
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from benchlib import (BIN, COMMANDS, CONNS, DUR, E, HERE, N, PAGE_SIZE, REPEAT, ROOT, TMP, VOTERS, WARM, WWW,
                      CpuSplit, count_lines, fmt, log, machine_cpu, median, metric_sum, metrics, order, pct, pid_cpu,
                      reset_origin, origin_stats, rel, run_wrk, start, stop, tree, q)

ORIGIN = f"http://127.0.0.1:{E['P_ORIGIN']}"
ADMIN = f"http://127.0.0.1:{E['P_ADMIN']}"
CERT = E["CERT"]
SYSTEMS = ("wardgate", "nginx")
PROTOS = ("http", "https")
BASES = {
    ("wardgate", "http"): f"http://127.0.0.1:{E['P_WG']}",
    ("wardgate", "https"): f"https://127.0.0.1:{E['P_WG_TLS']}",
    ("nginx", "http"): f"http://127.0.0.1:{E['P_NGINX']}",
    ("nginx", "https"): f"https://127.0.0.1:{E['P_NGINX_TLS']}",
}
PAGES = max(1, -(-VOTERS // PAGE_SIZE))
WARDS = list(range(1, N + 1))
WRITE_WARD = N + 1  # seeded beside the read wards; only the write-syncs touch it
COLD_CONC = int(E["COLD_CONC"])
WRITES = int(E["WRITES"])
QUIET_MAX = int(E["QUIET_MAX"])
QUIET_CORES = 0.3  # busy cores below which the machine counts as quiet (before a point)
OTHER_MAX = 0.25  # cores outside the bench during a point above which it is measured again
RETRIES = int(E.get("RETRIES", "2"))
SCEN = {
    "page_gz": {"app": [q(w) + f"&page={(w - 1) % PAGES}&size={PAGE_SIZE}" for w in WARDS],
                "nginx": [f"/p/{w}-{(w - 1) % PAGES}.json" for w in WARDS]},
    "full_gz": {"app": [q(w) for w in WARDS], "nginx": [f"/w/{w}.json" for w in WARDS]},
}
LABEL = {"page_gz": f"page hit, gzip ({PAGE_SIZE:,} rows)", "full_gz": f"full-ward hit, gzip ({VOTERS:,} rows)"}
TOPOS = ("single", "cluster")
REDIS_PORTS = {"single": [int(E["P_REDIS"])], "cluster": [int(E[f"P_CL{i}"]) for i in (1, 2, 3)]}
REDIS_PIDS = {"single": [int(E["REDIS_SINGLE_PID"])],
              "cluster": [int(p) for p in E["REDIS_CLUSTER_PIDS"].split()]}
REDIS_FLAGS = {"single": ["--redis-url", E["REDIS_SINGLE_URL"]],
               "cluster": ["--redis-url", E["REDIS_CLUSTER_URL"], "--redis-cluster"]}
CTX = ssl.create_default_context(cafile=CERT)  # the run's own self-signed certificate, verified
L2_CMDS = {}
VERSION = []  # X-Wardgate-Version of the binary measured (its version and git revision)


def get(url, gzip=True, timeout=120):
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip else {})
    with urllib.request.urlopen(req, timeout=timeout, context=CTX if url.startswith("https") else None) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def tls_session(port):
    """Protocol and cipher a default OpenSSL client (Python's ssl) negotiates with `port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with CTX.wrap_socket(s, server_hostname="localhost") as t:
            return f"{t.version()} {t.cipher()[0]}"


def paths(scen, system):
    return SCEN[scen]["nginx" if system == "nginx" else "app"]


# ------------------------------------------------------------------ a quiet machine
def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def builds_running():
    """rustc / cargo processes on the machine (another engineer's build would share the cores)."""
    out = []
    for name in ("rustc", "cargo"):
        r = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
        out += r.stdout.split()
    return out


def busy_cores(secs=2.0):
    """Cores busy on the whole machine over `secs` (the bench's own services idle meanwhile)."""
    a = machine_cpu()
    time.sleep(secs)
    b = machine_cpu()
    return (b[1] - a[1]) / secs


def wait_quiet(what, poll=30):
    """Polls every `poll` s, up to QUIET_MAX s, until no rustc/cargo runs and the machine is
    idle (< QUIET_CORES busy over 2 s); returns what was seen."""
    t0 = time.time()
    while True:
        running = builds_running()
        busy = busy_cores()
        if (not running and busy < QUIET_CORES) or time.time() - t0 >= QUIET_MAX:
            break
        log(f"{what}: {len(running)} rustc/cargo process(es), {busy:.2f} cores busy; waiting for a quiet machine")
        time.sleep(poll)
    waited = time.time() - t0
    note = {"what": what, "waited_s": round(waited), "builds_at_start": len(running), "busy": round(busy, 2),
            "loadavg": loadavg()}
    if waited >= 1 or running:
        log(f"{what}: waited {waited:.0f} s, rustc/cargo now {len(running)}, load {note['loadavg']}")
    return note


def measured(what, fn, quiet):
    """fn() (a wrk point) on a quiet machine; re-run (up to RETRIES times, after waiting again)
    while more than OTHER_MAX cores went to processes outside the bench during it."""
    for attempt in range(RETRIES + 1):
        note = wait_quiet(what, poll=10)
        if note["waited_s"] or note["builds_at_start"]:
            quiet.append(note)
        r = fn()
        r["attempts"] = attempt + 1
        if r["cpu_other"] <= OTHER_MAX:
            break
        log(f"{what}: {r['cpu_other']:.2f} cores went elsewhere during the point; "
            + ("measuring again" if attempt < RETRIES else "kept, marked"))
    return r


# ------------------------------------------------------------------ HTTPS against HTTP
def load_and_capture():
    """Every ward into the hit wardgate (from the warmed single Redis), then every answer of both
    scenarios fetched from it into $WWW for nginx; checks both systems send identical bytes on
    both protocols, and that wardgate answers HIT."""
    reset_origin(ORIGIN)
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda w: get(BASES[("wardgate", "http")] + q(w)), WARDS))
    built = origin_stats(ORIGIN)["full_reads"]
    for d in ("p", "w"):
        os.makedirs(f"{WWW}/{d}", exist_ok=True)
    xcache, sizes = {}, {}
    VERSION.append(get(BASES[("wardgate", "http")] + q(1))[1].get("x-wardgate-version", "?"))
    for scen, sets in SCEN.items():
        for app, ng in zip(sets["app"], sets["nginx"]):
            st, h, body = get(BASES[("wardgate", "http")] + app)
            assert st == 200 and h.get("content-encoding") == "gzip", (scen, app, st, h)
            xcache[h.get("x-cache")] = xcache.get(h.get("x-cache"), 0) + 1
            with open(WWW + ng + ".gz", "wb") as f:
                f.write(body)
            sizes.setdefault(scen, []).append(len(body))
    for scen in SCEN:
        bodies = {}
        for (system, proto), base in BASES.items():
            st, h, body = get(base + paths(scen, system)[0])
            assert st == 200 and h.get("content-encoding") == "gzip", (system, proto, scen, h)
            bodies[(system, proto)] = body
        assert len(set(bodies.values())) == 1, f"bodies differ for {scen}"
    log(f"hit wardgate loaded {N} wards (backend whole-ward reads: {built}); captured; X-Cache {xcache}")
    return {k: sum(v) / len(v) for k, v in sizes.items()}, xcache, built


def tls_hits(quiet):
    """REPEAT repetitions; in each, both scenarios, both protocols and both systems, the order of
    protocols and of systems alternating between repetitions."""
    reps = []
    for rep in range(REPEAT):
        quiet.append(wait_quiet(f"HTTPS/HTTP repetition {rep + 1}"))
        points = {}
        for scen in SCEN:
            for proto in order(PROTOS, rep):
                for system in order(SYSTEMS, rep):
                    r = measured(f"{scen} {proto} {system} rep {rep + 1}",
                                 lambda: hit_point(scen, proto, system), quiet)
                    r.update(proto=proto, rep=rep + 1)
                    points[(scen, proto, system)] = r
        reps.append(points)
    return reps


def redis_commands(topo):
    return sum(int(redis_info(p, "stats")["total_commands_processed"]) for p in REDIS_PORTS[topo])


def hit_point(scen, proto, system):
    """One wrk point. wardgate's CPU includes the Redis it is connected to (its rate limiter and
    watermarks use it while it serves hits), reported apart as redis_cpu."""
    pids = tree(int(E["WG_PID"])) + REDIS_PIDS["single"] if system == "wardgate" else None
    c0, k0, t0 = pid_cpu(REDIS_PIDS["single"]), redis_commands("single"), time.time()
    r = run_wrk(system, f"{scen}-{proto}", paths(scen, system), True, base=BASES[(system, proto)], pids=pids)
    r["redis_cpu"] = (pid_cpu(REDIS_PIDS["single"]) - c0) / (time.time() - t0)
    r["redis_cmds_per_req"] = (redis_commands("single") - k0) / max(1, r["requests"])
    return r


def summarize_tls(reps):
    keys = reps[0].keys()
    med = {k: {m: median([r[k][m] for r in reps]) for m in ("rps", "mbps", "p50", "p99", "cpu_server",
                                                             "cpu_loadgen", "cpu_other", "redis_cpu",
                                                             "redis_cmds_per_req")} for k in keys}
    for k in keys:
        med[k]["per_core"] = median([r[k]["rps"] / max(1e-9, r[k]["cpu_server"]) for r in reps])
        med[k]["errors"] = sum(r[k]["errors"] + r[k]["non2xx"] for r in reps)
    ratio = {}
    for scen in SCEN:
        for proto in PROTOS:  # wardgate ÷ nginx, same repetition
            per = [r[(scen, proto, "wardgate")]["rps"] / max(1e-9, r[(scen, proto, "nginx")]["rps"]) for r in reps]
            ratio[(scen, "wg/ng", proto)] = (median(per), per)
        for system in SYSTEMS:  # HTTPS ÷ HTTP, same repetition
            per = [r[(scen, "https", system)]["rps"] / max(1e-9, r[(scen, "http", system)]["rps"]) for r in reps]
            ratio[(scen, "tls/plain", system)] = (median(per), per)
    return med, ratio


# ------------------------------------------------------------------ Redis: single against Cluster
def redis_info(port, section):
    out = subprocess.run(["redis-cli", "-p", str(port), "info", section], capture_output=True, text=True).stdout
    return dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln and not ln.startswith("#"))


def redis_out_bytes(topo):
    return sum(int(redis_info(p, "stats")["total_net_output_bytes"]) for p in REDIS_PORTS[topo])


def redis_memory():
    out = {}
    for topo, ports in REDIS_PORTS.items():
        out[topo] = []
        for p in ports:
            keys = int(subprocess.run(["redis-cli", "-p", str(p), "dbsize"], capture_output=True,
                                      text=True).stdout.strip() or 0)
            out[topo].append({"port": p, "used_memory": int(redis_info(p, "memory")["used_memory"]), "keys": keys})
    return out


def start_l2(topo, tag, l1=None):
    """A fresh wardgate on the warmed prefix of `topo`'s Redis (empty L1); access log on."""
    cmd = [BIN, "serve", "--snapshot-max-age", "1h", "--listen", f"127.0.0.1:{E['P_L2']}",
           "--admin-listen", f"127.0.0.1:{E['P_L2_ADMIN']}", "--upstream", ORIGIN,
           *REDIS_FLAGS[topo], "--redis-prefix", E["PREFIX"], *E["RL"].split(),
           "--log-format", "json", "--access-log-sample", "1"]
    if l1:
        cmd += ["--l1-max-bytes", l1]
    logf = os.path.join(TMP, f"l2-{tag}.log")
    p = start(cmd, logf)
    L2_CMDS.setdefault((topo, bool(l1)), rel(" ".join(cmd)) + f" >{rel(logf)} 2>&1")
    admin = f"http://127.0.0.1:{E['P_L2_ADMIN']}"
    for _ in range(150):
        try:
            get(admin + "/metrics", gzip=False, timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise RuntimeError(f"wardgate for {topo} did not start; see {logf}")
    for _ in range(100):  # connected to Redis (the Cluster's slots discovered)
        if metric_sum(metrics(admin), "wardgate_redis_up") >= 1:
            break
        time.sleep(0.1)
    return p, admin, logf


def finish_l2(p, admin, logf):
    """Requests counted by the instance and access lines it wrote, then stopped."""
    ms = metrics(admin)
    reqs = metric_sum(ms, "wardgate_requests_total")
    dropped = metric_sum(ms, "wardgate_log_lines_dropped")
    redis_errors = metric_sum(ms, "wardgate_redis_errors_total")
    stop(p)
    return {"requests": reqs, "dropped": dropped, "redis_errors": redis_errors,
            "access_lines": count_lines(logf, '"access"')}


def cold_reads(topo, rep):
    """A fresh instance's first read of every ward, COLD_CONC at a time: each answered from Redis."""
    p, admin, logf = start_l2(topo, f"cold-{topo}-{rep}")
    base = f"http://127.0.0.1:{E['P_L2']}"
    reset_origin(ORIGIN)
    r0 = redis_out_bytes(topo)

    def one(w):
        t = time.perf_counter()
        st, h, body = get(base + q(w))
        return time.perf_counter() - t, st, h.get("x-cache"), len(body)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(COLD_CONC) as ex:
        got = list(ex.map(one, WARDS))
    wall = time.perf_counter() - t0
    redis_out = redis_out_bytes(topo) - r0
    backend = origin_stats(ORIGIN)["full_reads"]
    # the write-syncs, on the same instance: ward WRITE_WARD loaded, then WRITES syncs of one row
    writes = write_syncs(base, rep, topo)
    info = finish_l2(p, admin, logf)
    lat = sorted(x[0] * 1e3 for x in got)
    res = {"topo": topo, "rep": rep + 1, "wall_s": wall, "wards_per_s": N / wall,
           "mb_per_s": sum(x[3] for x in got) / wall / 1e6, "p50": pct(lat, 50), "p90": pct(lat, 90),
           "p99": pct(lat, 99), "max": lat[-1], "status": sorted({x[1] for x in got}),
           "xcache": sorted({str(x[2]) for x in got}), "backend_full_reads": backend,
           "redis_out_per_ward": redis_out / N, **{f"w_{k}": v for k, v in writes.items()},
           **{f"log_{k}": v for k, v in info.items()}}
    log(f"cold {topo:7s} rep {rep + 1}: {N} wards in {wall:.2f}s ({res['wards_per_s']:.0f}/s) p50 {res['p50']:.1f} "
        f"p90 {res['p90']:.1f} max {res['max']:.1f} ms, backend reads {backend}; writes median "
        f"{writes['ms_median']:.1f} ms {writes['xcache']}")
    return res


WRITE_IDS = []


def write_syncs(base, rep, topo):
    """WRITES write-syncs of one changed row each, the full-ward query installed apps send, to a
    ward the instance holds (as bench/writes.py); each a different row."""
    st, h, _ = get(base + q(WRITE_WARD))
    assert st == 200, st
    n = len(WRITE_IDS)
    k = (rep * 2 + TOPOS.index(topo)) * WRITES  # rows of their own per repetition and Redis
    out = []
    for i in range(WRITES):
        body = json.dumps([{"id": WRITE_IDS[((k + i) * 97) % n], "voted": True}]).encode()
        req = urllib.request.Request(base + "/open/volunteer/citizens?" + q(WRITE_WARD).split("?", 1)[1],
                                     data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept-Encoding": "gzip"})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            out.append((time.perf_counter() - t, r.status, r.headers.get("X-Cache", "-")))
    lat = sorted(x[0] * 1e3 for x in out)
    return {"ms_median": median(lat), "ms_p90": pct(lat, 90), "ms_max": lat[-1],
            "all_200": all(x[1] == 200 for x in out), "xcache": sorted({x[2] for x in out})}


def l2_hits(topo, rep, quiet):
    """Full-ward gzip hits on an instance whose L1 (1 MiB, the minimum) holds at most one ward:
    every answer is loaded from Redis (concurrent requests for one ward share the load)."""
    p, admin, logf = start_l2(topo, f"l2hits-{topo}-{rep}", l1="1MiB")
    base = f"http://127.0.0.1:{E['P_L2']}"
    pids = tree(p.pid)
    run_wrk("wardgate", f"l2-{topo}-warmup", SCEN["full_gz"]["app"], True, dur=max(1, WARM), warm=0, base=base,
            pids=pids)

    def point():
        reset_origin(ORIGIN)
        r0, c0 = redis_out_bytes(topo), pid_cpu(REDIS_PIDS[topo])
        t0 = time.time()
        r = run_wrk("wardgate", f"l2-{topo}", SCEN["full_gz"]["app"], True, warm=0, base=base,
                    pids=pids + REDIS_PIDS[topo])
        wall = time.time() - t0
        r["redis_cpu"] = (pid_cpu(REDIS_PIDS[topo]) - c0) / wall
        r["redis_out_per_answer"] = (redis_out_bytes(topo) - r0) / max(1, r["requests"])
        r["cpu_server"] -= r["redis_cpu"]  # wardgate's own; Redis apart
        r["backend_full_reads"] = origin_stats(ORIGIN)["full_reads"]
        return r

    r = measured(f"L1-1MiB hits {topo} rep {rep + 1}", point, quiet)
    ms = metrics(admin)
    r["l1_bytes"] = metric_sum(ms, "wardgate_l1_bytes")
    r.update({f"log_{k}": v for k, v in finish_l2(p, admin, logf).items()})
    r.update(topo=topo, rep=rep + 1)
    log(f"l2 hits {topo}: {r['rps']:.0f} req/s, Redis out {r['redis_out_per_answer']:,.0f} B/answer, "
        f"Redis CPU {r['redis_cpu']:.2f}, backend reads {r['backend_full_reads']}")
    return r


def redis_bench(quiet):
    global WRITE_IDS
    WRITE_IDS = [row["id"] for row in json.loads(get(ORIGIN + q(WRITE_WARD), gzip=False)[2])]
    cold, hits = [], []
    for rep in range(REPEAT):
        quiet.append(wait_quiet(f"Redis repetition {rep + 1}"))
        for topo in order(TOPOS, rep):
            cold.append(cold_reads(topo, rep))
            hits.append(l2_hits(topo, rep, quiet))
    return cold, hits


# ------------------------------------------------------------------ report
def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def ratio(a, b):
    return a / b if b else float("nan")


def xf(v, d=2):
    return "n/a" if v != v else f"{v:.{d}f}×"


NGINX_SSL = sh("nginx -V 2>&1 | grep -o 'built with OpenSSL [^ ]*'")
MARIADB = sh("mysql -uroot -h127.0.0.1 -N -B -e 'select version()'")


def waits_summary(quiet, reps, l2):
    pts = [r for p in reps for r in p.values()] + list(l2)
    waited = sum(x["waited_s"] for x in quiet)
    reruns = sum(r.get("attempts", 1) - 1 for r in pts)
    kept = [r for r in pts if r["cpu_other"] > OTHER_MAX]
    loads = "; ".join(f"{x['what']}: load {x['loadavg']}" for x in quiet if "repetition" in x["what"])
    return (f"Waited {waited} s in all; {reruns} point(s) measured again; {len(kept)} point(s) kept above the "
            f"limit after {RETRIES + 1} tries (marked † below). Load average (1, 5, 15 min) at each repetition's "
            f"start: {loads}.")


def report(sizes, xcache, built, reps, med, rat, cold, l2, mem, quiet, tls_neg, logs, t_meas):
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    rev = sh(f"git -C {ROOT} rev-parse --short HEAD")
    dirty = sh(f"git -C {ROOT} status --porcelain -- crates Cargo.toml Cargo.lock | head -1")
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    memtot = sh("free -h | awk '/^Mem:/ {print $2}'")
    A = []
    A.append(f"## TLS and Redis Cluster ({when} UTC, commit {rev}{' + uncommitted changes in crates/' if dirty else ''}, "
             f"`bench/tls.sh`)\n")
    A.append(f"Binary measured: `X-Wardgate-Version: {VERSION[0]}` (target/release, built by the script when older "
             "than the sources).\n")
    A.append(f"`bench/tls.sh` (WARDS={N} VOTERS={VOTERS} DURATION={DUR} WARMUP={WARM} CONNS={CONNS} "
             f"REPEAT={REPEAT} COLD_CONC={COLD_CONC} WRITES={WRITES}), {t_meas:.0f} s of measurements. "
             f"{N} wards × {VOTERS:,} voters of Karnataka/150 (+ ward {WRITE_WARD} for the write-syncs) in MariaDB, "
             "warmed by `wardgate warm` into a single `redis-server` and into a 3-master Redis Cluster of the "
             f"run's own. Medians of {REPEAT} repetition(s), the order of protocols, systems and Redis setups "
             "alternating between repetitions.\n")
    A.append(f"**Machine:** {os.cpu_count()} cores ({cpu}), {memtot} memory, {platform.system()} "
             f"{platform.release()}. The servers, MariaDB, Redis and the load generator (wrk, 2 threads, on the "
             "same cores; it also does the client side of TLS) share these 2 cores over loopback, so the "
             "absolute figures are what a server gets with about one core left to it; `CPU server` is what "
             "the measured server itself used, and `req/s per server core` divides by it. **The machine is "
             "shared** (other engineers build and test on it): before each repetition, and again before each "
             "point, the run waited until no `rustc`/`cargo` ran and fewer than "
             f"{QUIET_CORES} cores were busy (polled every 30 s / 10 s, up to {QUIET_MAX} s), and a point during "
             f"which more than {OTHER_MAX} cores went to processes outside the bench (`CPU other`) was measured "
             f"again, up to {RETRIES} times. {waits_summary(quiet, reps, l2)}\n")
    A.append("**TLS:** self-signed P-256 certificate generated by the run; wardgate terminates TLS with "
             "rustls (ring provider) on `tls.listen` beside its plain `listen`, nginx with OpenSSL "
             f"(`{NGINX_SSL}`, `listen … ssl`, "
             "`ssl_session_cache shared:SSL:10m`, `bench/nginx-tls.conf`); both HTTP/1.1 (no http2: wrk speaks "
             "HTTP/1.1). Negotiated with a default OpenSSL client: wardgate "
             f"{tls_neg['wardgate']}, nginx {tls_neg['nginx']}. wrk keeps its {CONNS} connections open "
             "(keep-alive), so handshakes are 64 per point and the figures are the record layer's cost: "
             "the cost of a phone opening a new TLS connection per download is not measured here. "
             "nginx sends files over HTTPS through OpenSSL's buffers (no kTLS; plain HTTP uses sendfile); "
             "wardgate copies into rustls' records (plain HTTP: by sendfile from sealed memory or "
             "copied, whichever `runtime.sendfile = \"auto\"` measured to cost less).\n")
    A.append(f"nginx serves the very bytes fetched from wardgate (identical on both protocols, checked); "
             f"bodies: page {sizes['page_gz']:,.0f} B, full ward {sizes['full_gz']:,.0f} B (gzip). The hit "
             f"wardgate loaded its wards from the warmed Redis (backend whole-ward reads: {built}); "
             f"X-Cache while the bytes were captured: {xcache}.\n")
    # --- TLS summary
    A.append("### HTTPS against plain HTTP (wrk closed loop, keep-alive)\n")
    A.append("| scenario | system | HTTP req/s | HTTPS req/s | HTTPS ÷ HTTP | HTTP MB/s | HTTPS MB/s | HTTP p50 / p99 ms "
             "| HTTPS p50 / p99 ms | CPU server HTTP / HTTPS | of which Redis | req/s per server core HTTP / HTTPS | errors |")
    A.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scen in SCEN:
        for system in SYSTEMS:
            h, s = med[(scen, "http", system)], med[(scen, "https", system)]
            tr = rat[(scen, "tls/plain", system)]
            A.append(f"| {LABEL[scen]} | {system} | {fmt(h['rps'])} | {fmt(s['rps'])} | **{xf(tr[0])}** "
                     f"({', '.join(xf(x) for x in tr[1])}) | {fmt(h['mbps'])} | {fmt(s['mbps'])} "
                     f"| {h['p50']:.2f} / {h['p99']:.2f} | {s['p50']:.2f} / {s['p99']:.2f} "
                     f"| {h['cpu_server']:.2f} / {s['cpu_server']:.2f} "
                     f"| {(h['redis_cpu'] if system == 'wardgate' else 0):.2f} / {(s['redis_cpu'] if system == 'wardgate' else 0):.2f} "
                     f"| {fmt(h['per_core'])} / {fmt(s['per_core'])} "
                     f"| {h['errors'] + s['errors']} |")
    A.append("")
    A.append("| scenario | wardgate ÷ nginx over HTTP (median; per repetition) | wardgate ÷ nginx over HTTPS (median; per repetition) |")
    A.append("| --- | ---: | ---: |")
    for scen in SCEN:
        cells = []
        for proto in PROTOS:
            m, per = rat[(scen, "wg/ng", proto)]
            cells.append(f"**{xf(m)}**; {', '.join(xf(x) for x in per)}")
        A.append(f"| {LABEL[scen]} | {cells[0]} | {cells[1]} |")
    rc = [med[(sc, pr, "wardgate")]["redis_cmds_per_req"] for sc in SCEN for pr in PROTOS]
    A.append(f"\nwardgate's `CPU server` includes the Redis it is connected to (`of which Redis`): while it "
             f"served these hits it sent Redis {min(rc):.2f}-{max(rc):.2f} commands per request (INFO "
             "`total_commands_processed`), so Redis is part of what a hit costs it.")
    A.append("\nMedians of req/s, MB/s, p50, p99 and CPU over the repetitions; ratios are the median of the "
             "per-repetition ratios (same repetition, next to each other in time). MB/s counts bodies and headers "
             "as wrk reads them (decrypted).\n")
    # --- Redis summary
    A.append("### Served from Redis: single node against a 3-master Cluster\n")
    A.append("Each repetition and Redis setup: a **fresh wardgate** (empty L1) reads every ward once, "
             f"{COLD_CONC} at a time (a pod started in the morning against the warmed Redis: every answer a load "
             f"from Redis); on the same instance, ward {WRITE_WARD} is read, then {WRITES} **write-syncs** "
             "of one changed row each with the full-ward query (as `bench/writes.py`: backend write, cheap "
             "read, the patch stored in Redis, the watermark written and published before the answer); then a "
             "fresh instance with `--l1-max-bytes 1MiB` (the minimum; it holds at most one ward) takes "
             f"full-ward gzip hits from wrk ({CONNS} connections, {DUR} s) over the {N} wards round-robin, so "
             "answers are loaded from Redis (requests for a ward being loaded share that load: Redis bytes "
             "per answer shows how many loads there were). Hits held in L1, the normal case, never touch "
             "Redis and cost the same on either setup.\n")

    def m(rows, key):
        return median([r[key] for r in rows])

    c = {t: [r for r in cold if r["topo"] == t] for t in TOPOS}
    h = {t: [r for r in l2 if r["topo"] == t] for t in TOPOS}
    rows = [
        ("cold instance: every ward read once, wall s", lambda t: m(c[t], "wall_s"), 2),
        ("cold instance: wards/s", lambda t: m(c[t], "wards_per_s"), 0),
        ("cold instance: MB/s to clients", lambda t: m(c[t], "mb_per_s"), 0),
        ("cold instance: first-read p50 ms", lambda t: m(c[t], "p50"), 1),
        ("cold instance: first-read p90 ms", lambda t: m(c[t], "p90"), 1),
        ("cold instance: first-read max ms", lambda t: m(c[t], "max"), 1),
        ("cold instance: Redis bytes out per ward", lambda t: m(c[t], "redis_out_per_ward"), 0),
        ("write-sync median ms", lambda t: m(c[t], "w_ms_median"), 1),
        ("write-sync p90 ms", lambda t: m(c[t], "w_ms_p90"), 1),
        ("write-sync max ms", lambda t: m(c[t], "w_ms_max"), 1),
        ("L1 1 MiB, full-ward hits: req/s", lambda t: m(h[t], "rps"), 0),
        ("L1 1 MiB, full-ward hits: MB/s", lambda t: m(h[t], "mbps"), 0),
        ("L1 1 MiB, full-ward hits: p50 ms", lambda t: m(h[t], "p50"), 2),
        ("L1 1 MiB, full-ward hits: p99 ms", lambda t: m(h[t], "p99"), 2),
        ("L1 1 MiB, full-ward hits: wardgate CPU (cores, without Redis)", lambda t: m(h[t], "cpu_server"), 2),
        ("L1 1 MiB, full-ward hits: Redis CPU (cores, all nodes)", lambda t: m(h[t], "redis_cpu"), 2),
        ("L1 1 MiB, full-ward hits: Redis bytes out per answer", lambda t: m(h[t], "redis_out_per_answer"), 0),
    ]
    A.append("| measure | single Redis | Redis Cluster (3 masters) | Cluster ÷ single |")
    A.append("| --- | ---: | ---: | ---: |")
    for name, f, d in rows:
        s, cl = f("single"), f("cluster")
        A.append(f"| {name} | {fmt(s, d)} | {fmt(cl, d)} | {xf(ratio(cl, s))} |")
    A.append("")
    A.append("Checks: backend whole-ward reads during the cold reads "
             f"{[r['backend_full_reads'] for r in cold]} and during the L1-1MiB hits "
             f"{[r['backend_full_reads'] for r in l2]} (0 = every answer came from Redis); status codes "
             f"{sorted({s for r in cold for s in r['status']})}, X-Cache of first reads "
             f"{sorted({x for r in cold for x in r['xcache']})}, of write-syncs "
             f"{sorted({x for r in cold for x in r['w_xcache']})} (all 200: {all(r['w_all_200'] for r in cold)}); "
             f"wrk errors + non-2xx {[r['errors'] + r['non2xx'] for r in l2]}; "
             f"`wardgate_redis_errors_total` {[r['log_redis_errors'] for r in cold + l2]}.\n")
    A.append("Redis memory after the warm and the run (`INFO memory` used_memory, `DBSIZE`):\n")
    A.append("| setup | node | used_memory | keys |")
    A.append("| --- | --- | ---: | ---: |")
    for topo, nodes in mem.items():
        for nd in nodes:
            A.append(f"| {topo} | :{nd['port']} | {nd['used_memory'] / 1e6:,.1f} MB | {nd['keys']:,} |")
    A.append("")
    # --- every point
    A.append("### Every point\n")
    A.append("| scenario | protocol | system | rep | req/s | MB/s | p50 ms | p99 ms | p99.9 ms | bytes/resp | errors "
             "| CPU server | of which Redis | CPU loadgen | CPU other | tries |")
    A.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for points in reps:
        for (scen, proto, system), r in points.items():
            A.append(f"| {LABEL[scen]} | {proto.upper()} | {system} | {r['rep']} | {fmt(r['rps'])} | {fmt(r['mbps'])} "
                     f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | {fmt(r['bytes_per_resp'])} "
                     f"| {r['errors'] + r['non2xx']} | {r['cpu_server']:.2f} | {(r['redis_cpu'] if system == 'wardgate' else 0):.2f} | {r['cpu_loadgen']:.2f} | {r['cpu_other']:.2f}{' †' if r['cpu_other'] > OTHER_MAX else ''} | {r.get('attempts', 1)} |")
    A.append("")
    A.append("| Redis | rep | cold wall s | cold p50 / p90 / max ms | write-sync median / max ms | L1-1MiB req/s "
             "| p50 / p99 ms | Redis B out / answer | wardgate CPU | Redis CPU | CPU loadgen | CPU other |")
    A.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for cr in cold:
        hr = next(x for x in l2 if x["topo"] == cr["topo"] and x["rep"] == cr["rep"])
        A.append(f"| {cr['topo']} | {cr['rep']} | {cr['wall_s']:.2f} | {cr['p50']:.1f} / {cr['p90']:.1f} / {cr['max']:.1f} "
                 f"| {cr['w_ms_median']:.1f} / {cr['w_ms_max']:.1f} | {fmt(hr['rps'])} | {hr['p50']:.2f} / {hr['p99']:.2f} "
                 f"| {fmt(hr['redis_out_per_answer'])} | {hr['cpu_server']:.2f} | {hr['redis_cpu']:.2f} "
                 f"| {hr['cpu_loadgen']:.2f} | {hr['cpu_other']:.2f}{' †' if hr['cpu_other'] > OTHER_MAX else ''} |")
    A.append("")
    # --- access logs
    A.append("### Access logs\n")
    A.append(f"On for every system: wardgate `--log-format json --access-log-sample 1` (stderr to a file), "
             f"nginx `access_log … combined buffer=64k flush=1s`. Lines at the end: hit wardgate "
             f"{logs['wardgate']:,} access lines (`wardgate_requests_total` {logs['wardgate_requests']:,.0f}, dropped "
             f"{logs['wardgate_dropped']:,.0f}); nginx {logs['nginx']:,}; the Redis-served instances "
             f"{[int(r['log_access_lines']) for r in cold + l2]} lines for "
             f"{[int(r['log_requests']) for r in cold + l2]} requests (dropped "
             f"{[int(r['log_dropped']) for r in cold + l2]}).\n")
    # --- commands
    A.append("### How it was run\n")
    A.append("Commands relative to the repository root; `$TMP` is the run's temp dir.\n")
    A.append("```")
    A.append(f"bench/tls.sh    # WARDS={N} VOTERS={VOTERS} DURATION={DUR} WARMUP={WARM} CONNS={CONNS} REPEAT={REPEAT}")
    for k in ("CERT_CMD", "CLUSTER_CMD", "SEED_CMD", "ORIGIN_CMD", "WARM_SINGLE_CMD", "WARM_CLUSTER_CMD", "WG_CMD",
              "NGINX_CMD"):
        A.append(rel(E[k]))
    for cmd in L2_CMDS.values():
        A.append(cmd)
    for cmd in COMMANDS:
        A.append(cmd)
    A.append("```\n")
    A.append(f"Tools: {sh(f'{BIN} --version')}; {sh('nginx -v 2>&1')}; {sh('wrk -v 2>&1 | head -1')}; "
             f"{sh('redis-server --version')}; {sh('openssl version')}; MariaDB {MARIADB}.\n")
    return "\n".join(A)


def main():
    t0 = time.time()
    quiet = []
    sizes, xcache, built = load_and_capture()
    tls_neg = {"wardgate": tls_session(int(E["P_WG_TLS"])), "nginx": tls_session(int(E["P_NGINX_TLS"]))}
    log(f"TLS negotiated: {tls_neg}")
    t_meas = time.time()
    reps = tls_hits(quiet)
    med, rat = summarize_tls(reps)
    time.sleep(2)  # nginx flushes its access-log buffer every second, wardgate's writer every 100 ms
    ms = metrics(ADMIN)
    logs = {"wardgate": count_lines(os.path.join(TMP, "wardgate.log"), '"access"'),
            "wardgate_requests": metric_sum(ms, "wardgate_requests_total"),
            "wardgate_dropped": metric_sum(ms, "wardgate_log_lines_dropped"),
            "nginx": count_lines(os.path.join(TMP, "nginx", "logs", "access.log"))}
    cold, l2 = redis_bench(quiet)
    t_meas = time.time() - t_meas
    mem = redis_memory()
    text = report(sizes, xcache, built, reps, med, rat, cold, l2, mem, quiet, tls_neg, logs, t_meas)
    with open(os.path.join(HERE, "TLS.md"), "w") as f:
        f.write("# Measured over TLS, and on a Redis Cluster\n\n" + text)
    # RESULTS.md: the two summary tables and a link (every point is in TLS.md)
    summary = text.split("### Every point")[0].rstrip()
    summary += "\n\nEvery point, access logs and the commands: [TLS.md](TLS.md).\n"
    results = os.path.join(HERE, "RESULTS.md")
    old = open(results).read()
    old = re.sub(r"\n## TLS and Redis Cluster \(.*?(?=\n## |\Z)", "\n", old, flags=re.S).rstrip() + "\n\n"
    with open(results, "w") as f:
        f.write(old + summary)
    with open(os.path.join(TMP, "tls.json"), "w") as f:
        json.dump({"cold": cold, "l2": l2, "mem": mem, "quiet": quiet,
                   "tls": [{f"{k[0]}|{k[1]}|{k[2]}": v for k, v in p.items()} for p in reps]}, f, default=str)
    print(summary)
    log(f"driver done in {time.time() - t0:.0f} s")


main()
