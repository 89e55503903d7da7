"""`wardgate warm` against its bound on this machine: the time the stock `mysql` client takes to
read the same rows, plus the time one core takes to gzip (level 6) the identity JSON of every
ward, both spread perfectly over the cores:

    bound rows/s = rows / ((mysql_s + gzip_s_one_core) / nproc)
"""
import os
import re
import subprocess
import time
import zlib

from benchlib import (BASE, BENCH_DB, BIN, E, N, REDIS_URL, REPEAT, http_get, log, median, mysql, note_command, q)

TARGET = 0.75  # warm rows/s ÷ bound rows/s, at least
WARM_TIMEOUT = int(E.get("WARM_TIMEOUT", "120"))  # s (a full warm takes ~10 s); still running then: killed, counted failed
GZIP_SAMPLE_WARDS = 3
# The warm's query (crates/wardgate/src/replica/mod.rs, WARD_SQL: SELECT * ... ORDER BY srno + 0, id,
# per ward), for the whole assembly in one statement, wards in the order the warm takes them.
BOUND_SQL = ("SELECT * FROM citizen WHERE state = 'Karnataka' AND assembly_no = '150' "
             "ORDER BY ward_no + 0, srno + 0, id")
MYSQL_CMD = f'mysql -uroot -h127.0.0.1 -N -B {BENCH_DB} -e "{BOUND_SQL}" > /dev/null'


def time_mysql():
    t0 = time.perf_counter()
    subprocess.run(MYSQL_CMD, shell=True, check=True)
    return time.perf_counter() - t0


def identity_bytes():
    """Identity bytes of every ward's full answer (from wardgate), and a few of the bodies."""
    sizes, sample = [], []
    for w in range(1, N + 1):
        body = http_get(BASE["wardgate"] + q(w), gzip=False, timeout=300)[2]
        sizes.append(len(body))
        if len(sample) < GZIP_SAMPLE_WARDS:
            sample.append(body)
    return sizes, sample


def gzip_rate(sample):
    """zlib level 6 on one core over the sample bodies: bytes/s (best of two passes)."""
    best = None
    for _ in range(2):
        t0 = time.perf_counter()
        for b in sample:
            zlib.compress(b, 6)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return sum(map(len, sample)) / best


def warm_once(rep):
    prefix = f"{E['WARM_PREFIX']}-{rep}"
    cmd = [BIN, "warm", "--state", "Karnataka", "--assembly", "150", "--mysql-url", E["MYSQL_URL"],
           "--upstream", BASE["origin"], "--redis-url", REDIS_URL, "--redis-prefix", prefix, "--concurrency", "4"]
    note_command(cmd)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=WARM_TIMEOUT)
        rc, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:  # killed: reported as a failed repetition
        rc = f"timeout after {WARM_TIMEOUT} s"
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
    wall = time.time() - t0
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    lines = [ln for ln in out.splitlines() if "rows/s" in ln]
    m = re.search(r"([\d][\d,_.]*)\s*rows/s", lines[-1]) if lines else None
    rate = float(m.group(1).replace(",", "").replace("_", "")) if m and rc == 0 else None
    res = {"rep": rep, "rc": rc, "rows_per_s": rate, "wall": wall,
           "line": lines[-1].strip() if lines else out.strip()[-300:]}
    log(f"warm rep {rep}: {res}")
    return res


def warm_vs_bound():
    rows = int(mysql(BENCH_DB, "SELECT COUNT(*) FROM citizen WHERE state = 'Karnataka' AND assembly_no = '150'"))
    sizes, sample = identity_bytes()
    rate = gzip_rate(sample)
    gzip_s = sum(sizes) / rate
    warms, mysql_s = [], []
    for rep in range(REPEAT):
        mysql_s.append(time_mysql())
        warms.append(warm_once(rep))
    nproc = os.cpu_count()
    mysql_med = median(mysql_s)
    bound = rows / ((mysql_med + gzip_s) / nproc)
    warm_med = median([w["rows_per_s"] for w in warms])
    ratio = warm_med / bound if warm_med == warm_med else float("nan")
    res = {
        "rows": rows, "identity_bytes": sum(sizes), "gzip_mb_per_s_one_core": rate / 1e6,
        "gzip_sample_bytes": sum(map(len, sample)), "gzip_s_one_core": gzip_s,
        "mysql_s": mysql_s, "mysql_s_median": mysql_med, "mysql_rows_per_s": rows / mysql_med, "nproc": nproc,
        "bound_rows_per_s": bound, "warms": warms, "warm_rows_per_s_median": warm_med,
        "ratio": ratio, "ratio_all": [w["rows_per_s"] / bound if w["rows_per_s"] else None for w in warms],
        "target": TARGET, "met": ratio == ratio and ratio >= TARGET and all(w["rc"] == 0 for w in warms),
        "mysql_cmd": MYSQL_CMD,
    }
    log(f"warm vs bound: warm {warm_med:,.0f} rows/s, bound {bound:,.0f} rows/s (mysql {mysql_med:.2f}s, "
        f"gzip {gzip_s:.2f}s on one core at {rate / 1e6:.1f} MB/s, nproc {nproc}) = {ratio:.2f}")
    return res

