"""Driver of bench/writes.sh: the same write-syncs through wardgate before and after patching,
and straight to the backend, counted at the backend and at Redis. Standard library only."""
import json
import os
import re
import statistics
import subprocess
import time
import urllib.request

E = os.environ
ORIGIN = f"http://127.0.0.1:{E['P_ORIGIN']}"
WG = f"http://127.0.0.1:{E['P_WG']}"
ADMIN = f"http://127.0.0.1:{E['P_ADMIN']}"
VOTERS = int(E["VOTERS"])
PATH = "/open/volunteer/citizens"


def query(ward, page=None):
    q = f"state=Karnataka&assemblyNo=150&wardNo={ward}&date=-1&boothNos=-1"
    return q + (f"&page={page}&size=1000" if page is not None else "")


def call(url, body=None):
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept-Encoding", "gzip")
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        data = r.read()
        return r.status, r.headers.get("X-Cache", "-"), len(data), time.perf_counter() - t


def wait_up(url):
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"not up: {url}")


def origin_stats():
    return json.loads(urllib.request.urlopen(ORIGIN + "/__origin/stats").read())


def reset_origin():
    urllib.request.urlopen(urllib.request.Request(ORIGIN + "/__origin/reset-stats", data=b"", method="POST")).read()


def redis_bytes():
    out = subprocess.run(["redis-cli", "-p", E["P_REDIS"], "info", "stats"], capture_output=True, text=True).stdout
    get = lambda k: int(re.search(rf"^{k}:(\d+)", out, re.M).group(1))
    return get("total_net_input_bytes"), get("total_net_output_bytes")


def ids_of(ward):
    with urllib.request.urlopen(ORIGIN + PATH + "?" + query(ward), timeout=120) as r:
        return [row["id"] for row in json.loads(r.read())]


def syncs(base, ids):
    """20 write-syncs of ward 1, then a 10-page sync of ward 2 re-sending 3 changes per page."""
    one = []
    for i in range(20):
        body = json.dumps([{"id": ids[1][i * 97], "voted": True}]).encode()
        one.append(call(base + PATH + "?" + query(1), body))
    pages = []
    body = json.dumps([{"id": ids[2][k], "voted": True} for k in (5, 4000, 9000)]).encode()
    for p in range(VOTERS // 1000):
        pages.append(call(base + PATH + "?" + query(2, p), body))
    return one, pages


def measure(name, binary):
    """One system's figures: backend and Redis cost of the syncs, after both wards are warm."""
    proc = None
    base = ORIGIN
    if binary:
        prefix = f"writes-{os.getpid()}-" + re.sub(r"[^a-z0-9]+", "-", name.lower())
        proc = subprocess.Popen([binary, "serve", "--listen", WG[7:], "--admin-listen", ADMIN[7:],
                                 "--upstream", ORIGIN, "--redis-url", f"redis://127.0.0.1:{E['P_REDIS']}/",
                                 "--redis-prefix", prefix, "--snapshot-max-age", "1h",
                                 "--rate-limit", "downloads=1000000/s:1000000",
                                 "--rate-limit", "writes=1000000/s:1000000"],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(E["TMP"], prefix + ".log"), "w"))
        wait_up(ADMIN + "/metrics")
        base = WG
        for w in (1, 2):
            call(base + PATH + "?" + query(w))
    ids = {1: ids_of(1), 2: ids_of(2)}
    time.sleep(1)
    reset_origin()
    r0 = redis_bytes()
    one, pages = syncs(base, ids)
    time.sleep(2)  # renewals after writes (before patching) run in the background
    s = origin_stats()
    r1 = redis_bytes()
    if proc:
        proc.terminate()
        proc.wait(timeout=15)
    n = len(one) + len(pages)
    return {
        "system": name,
        "write_syncs": n,
        "backend_rows_per_sync": s["citizens_rows"] / n,
        "backend_ward_share_per_sync": s["citizens_rows"] / n / VOTERS,
        "backend_bytes_per_sync": s["citizens_bytes"] / n,
        "backend_full_reads": s["full_reads"],
        "redis_in_per_sync": (r1[0] - r0[0]) / n,
        "redis_out_per_sync": (r1[1] - r0[1]) / n,
        "ms_median_full": statistics.median(x[3] for x in one) * 1e3,
        "ms_median_page": statistics.median(x[3] for x in pages) * 1e3,
        "client_bytes_full": statistics.median(x[2] for x in one),
        "x_cache": sorted({x[1] for x in one + pages}),
        "all_200": all(x[0] == 200 for x in one + pages),
    }


def table(rows):
    head = ("| system | backend rows / sync | share of a ward | backend bytes / sync | whole-ward reads "
            "| Redis in / sync | Redis out / sync | median ms (full-ward sync) | median ms (page sync) | X-Cache |")
    out = [head, "|" + "---|" * 10]
    for r in rows:
        out.append(f"| {r['system']} | {r['backend_rows_per_sync']:,.1f} | {r['backend_ward_share_per_sync']:.2%} "
                   f"| {r['backend_bytes_per_sync']:,.0f} | {r['backend_full_reads']} "
                   f"| {r['redis_in_per_sync']:,.0f} | {r['redis_out_per_sync']:,.0f} "
                   f"| {r['ms_median_full']:.1f} | {r['ms_median_page']:.1f} | {' '.join(r['x_cache'])} |")
    return "\n".join(out)


def main():
    rows = [measure("backend alone", None),
            measure(f"wardgate {E['BEFORE_REV']} (before)", E["BEFORE_BIN"]),
            measure("wardgate (patching)", E["AFTER_BIN"])]
    assert all(r["all_200"] for r in rows), rows
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    rev = subprocess.run(["git", "-C", E["ROOT"], "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    text = (f"## Writes ({when} UTC, commit {rev}, `bench/writes.sh`)\n\n"
            f"30 write-syncs per system on {VOTERS:,}-row wards: 20 of one changed row each with the "
            "full-ward query installed apps send, then a 10-page sync (size 1,000) re-sending its 3 "
            "changes with every page. Both wards warm in wardgate first; counted at the sample backend "
            "and at a Redis of the run's own; same run.\n\n" + table(rows) + "\n")
    with open(os.path.join(E["HERE"], "WRITES.md"), "w") as f:
        f.write("# What a write-sync costs\n\n" + text)
    results = os.path.join(E["HERE"], "RESULTS.md")
    old = open(results).read()
    old = re.sub(r"\n## Writes \(.*?(?=\n## |\Z)", "\n", old, flags=re.S).rstrip() + "\n\n"
    open(results, "w").write(old + text)
    print(text)


main()
