"""Hits: wardgate against nginx gzip_static serving the very bytes wardgate stores, Varnish in
front of the origin, and the uncached origin; closed loop (wrk) and constant offered rate (oha).
The scenarios with targets (page and full-ward gzip hits, p99 at 2,750 req/s) run REPEAT times,
the systems' order alternating between repetitions."""
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

from benchlib import (BASE, BENCH_DB, N, PAGE_SIZE, RATE_TARGET, RATES, REPEAT, VOTERS, WARM, WWW, http_get, log,
                      median, mysql, order, q, run_oha, run_wrk)

SYSTEMS = ("wardgate", "nginx", "varnish")
PAGES = max(1, math.ceil(VOTERS / PAGE_SIZE))
WARDS = list(range(1, N + 1))
ORIGIN_CONNS = int(os.environ.get("ORIGIN_CONNS", "16"))
ORIGIN_DUR = int(os.environ.get("ORIGIN_DURATION", "6"))


def page_of(w):
    return (w - 1) % PAGES


# delta scenario of the hit table: rows modified in the last ~1.5 days of the seeded data
MAX_MOD = float(mysql(BENCH_DB, "SELECT UNIX_TIMESTAMP(MAX(modifieddate)) FROM citizen"))
DELTA_DATE = int((MAX_MOD - 1.5 * 86400) * 1000)

# scenario -> (gzip?, {"app": wardgate/varnish/origin paths, "nginx": nginx paths})
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
    "page_gz": f"page hit, gzip ({PAGE_SIZE:,} rows)",
    "full_gz": f"full-ward hit, gzip ({VOTERS:,} rows)",
    "master_gz": "master data hit, gzip (/states)",
    "page_identity": "page hit, identity (no gzip)",
    "delta_gz": "delta read, gzip (~1.5 days of changes)",
}
REPEATED = ("page_gz", "full_gz")  # the scenarios with targets
TARGET_RATIO = {"page_gz": 1.0, "full_gz": 1.2}  # wardgate ÷ nginx req/s at least


def paths_for(scen, system):
    return SCEN[scen][1]["nginx" if system == "nginx" else "app"]


# ------------------------------------------------------------------ warm-up / byte capture
def warm_wardgate():
    """Builds every ward of the hit bench in wardgate (from the origin), two at a time."""
    t0 = time.time()
    with ThreadPoolExecutor(2) as ex:
        got = list(ex.map(lambda w: http_get(BASE["wardgate"] + q(w))[1].get("x-cache"), WARDS))
    log(f"wardgate warmed: {N} wards in {time.time() - t0:.1f}s, X-Cache {dict((x, got.count(x)) for x in set(got))}")


def capture_bytes():
    """Fetch every URL of every scenario from wardgate (gzip and identity) into $WWW, so nginx
    serves byte-identical answers; also checks that wardgate answers HIT for each."""
    for d in ("p", "w", "d"):
        os.makedirs(f"{WWW}/{d}", exist_ok=True)
    xcache, sizes = {}, {}
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
    for scen in SCEN:  # nginx returns the same bytes
        gz = SCEN[scen][0]
        ng = http_get(BASE["nginx"] + paths_for(scen, "nginx")[0], gzip=gz)
        wg = http_get(BASE["wardgate"] + paths_for(scen, "wardgate")[0], gzip=gz)
        assert ng[2] == wg[2], f"nginx bytes differ for {scen}"
        if gz:
            assert ng[1].get("content-encoding") == "gzip", f"nginx did not send gzip for {scen}"
    return {k: sum(v) / len(v) for k, v in sizes.items()}, xcache


def delta_rows():
    body = http_get(BASE["wardgate"] + q(1, DELTA_DATE), gzip=False)[2]
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


# ------------------------------------------------------------------ closed loop
def wrk_point(scen, system, **kw):
    return run_wrk(system, scen, paths_for(scen, system), SCEN[scen][0], **kw)


def closed_loop():
    """REPEAT repetitions of the target scenarios (systems' order alternating), the others once,
    the uncached origin once. Returns {"reps": {scen: [{system: res}]}, "once": {scen: {system: res}}}."""
    reps = {scen: [] for scen in REPEATED}
    for rep in range(REPEAT):
        for scen in REPEATED:
            reps[scen].append({system: wrk_point(scen, system) for system in order(SYSTEMS, rep)})
    once = {}
    for scen in SCEN:
        if scen not in REPEATED:
            once[scen] = {system: wrk_point(scen, system) for system in SYSTEMS}
    for scen in REPEATED:
        once.setdefault(scen, {})["origin"] = wrk_point(scen, "origin", conns=ORIGIN_CONNS, dur=ORIGIN_DUR,
                                                        warm=0, timeout="60s")
    return {"reps": reps, "once": once, "summary": summarize_closed(reps)}


def summarize_closed(reps):
    out = {}
    for scen, rs in reps.items():
        ratios = [r["wardgate"]["rps"] / max(1e-9, r["nginx"]["rps"]) for r in rs]
        out[scen] = {
            "ratios": ratios, "ratio_median": median(ratios), "target": TARGET_RATIO[scen],
            "rps_median": {s: median([r[s]["rps"] for r in rs]) for s in SYSTEMS},
            "p99_median": {s: median([r[s]["p99"] for r in rs]) for s in SYSTEMS},
            "errors": {s: sum(r[s]["errors"] + r[s]["non2xx"] for r in rs) for s in SYSTEMS},
        }
        out[scen]["met"] = out[scen]["ratio_median"] >= TARGET_RATIO[scen] and out[scen]["errors"]["wardgate"] == 0
    return out


def median_rep(rs, system):
    """The repetition whose req/s is the median one for `system` (for the latency plots)."""
    srt = sorted(rs, key=lambda r: r[system]["rps"])
    return srt[(len(srt) - 1) // 2][system]


# ------------------------------------------------------------------ constant rate
def constant_rate():
    """The sweep over RATES once per system (full-ward gzip hits), then the 2,750 req/s point
    again until each system has REPEAT of them, order alternating."""
    paths = {s: paths_for("full_gz", s) for s in SYSTEMS}
    rates = sorted(set(RATES) | {RATE_TARGET})
    sweep, at_target = [], {s: [] for s in SYSTEMS}
    for system in SYSTEMS:
        run_oha(system, "full_gz", paths[system], True, rates[0], dur=max(1, WARM))  # warm-up
        for rate in rates:
            p = run_oha(system, "full_gz", paths[system], True, rate)
            sweep.append(p)
            if rate == RATE_TARGET:
                at_target[system].append(p)
    for rep in range(1, REPEAT):
        for system in order(SYSTEMS, rep):
            at_target[system].append(run_oha(system, "full_gz", paths[system], True, RATE_TARGET))
    return {"sweep": sweep, "at_target": at_target, "rates": rates, "summary": summarize_rate(at_target)}


def summarize_rate(at_target):
    out = {s: {"p99s": [p["p99"] for p in ps], "p99_median": median([p["p99"] for p in ps]),
               "rps_median": median([p["rps"] for p in ps]),
               "errors": sum(p["errors"] + p["non2xx"] for p in ps)} for s, ps in at_target.items()}
    wg, ng = out["wardgate"], out["nginx"]
    out["met"] = (wg["p99_median"] <= ng["p99_median"] and wg["errors"] == 0
                  and wg["rps_median"] >= 0.95 * RATE_TARGET)
    return out


def sweep_medians(rate_res):
    """Sweep points with the 2,750 req/s point replaced by the median of its repetitions."""
    out = []
    for p in rate_res["sweep"]:
        if p["rate"] == RATE_TARGET:
            p = dict(p, p99=rate_res["summary"][p["system"]]["p99_median"])
        out.append(p)
    return out

