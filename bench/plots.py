"""The SVG plots RESULTS.md links, from the results of one run."""
import os

import hits
import storm
from benchlib import CONNS, HERE, RATE_TARGET
from svg import COLOR, bar_chart, line_chart, nines

FILES = {
    "latency": "latency.svg",
    "hits": "hit-latency.svg",
    "storm": "storm-latency.svg",
    "deltas": "deltas.svg",
    "warm": "warm-bound.svg",
}


def plot_all(R):
    out = {}
    for key, fn in (("latency", p99_vs_load), ("hits", hit_spectrum), ("storm", storm_cdf),
                    ("deltas", delta_bars), ("warm", warm_bars)):
        path = os.path.join(HERE, FILES[key])
        fn(R, path)
        out[key] = FILES[key]
    return out


def p99_vs_load(R, path):
    sweep = hits.sweep_medians(R["rate"])
    series = [{"name": s, "color": COLOR[s], "dots": True,
               "points": sorted((p["rate"], p["p99"]) for p in sweep if p["system"] == s)} for s in hits.SYSTEMS]
    line_chart(path, f"p99 vs offered load: full-ward gzip hits, {CONNS} conns (oha -q, latency-corrected)",
               series, "offered load (req/s)", "p99 latency (ms, log)", ylog=True, xmin=0,
               vlines=[(RATE_TARGET, f"{RATE_TARGET:,}/s (median of repetitions)")])


def hit_spectrum(R, path):
    reps = R["closed"]["reps"]
    series = []
    for scen, dash in (("page_gz", None), ("full_gz", "6,4")):
        for s in ("wardgate", "nginx"):
            r = hits.median_rep(reps[scen], s)
            series.append({"name": f"{s} {'page' if scen == 'page_gz' else 'full ward'}", "color": COLOR[s],
                           "dash": dash, "dots": True, "points": [(p, v) for p, v in r["spectrum"]]})
    ticks = [(p, f"p{p:g}") for p in (50, 90, 99, 99.9, 99.99)]
    line_chart(path, f"Hit latency spectrum, wrk closed loop {CONNS} conns (repetition of median req/s)",
               series, "percentile", "latency (ms, log)", ylog=True, xticks=ticks, xmap=nines)


def storm_cdf(R, path):
    runs = R["storm"]["runs"]
    series = []
    for s in storm.SYSTEMS:
        r = storm.median_run(runs, s)
        lats = r["lat_ms"]
        n = len(lats)
        step = max(1, n // 200)
        pts = [(lats[i], (i + 1) / n) for i in range(0, n, step)] + ([(lats[-1], 1.0)] if n else [])
        series.append({"name": f"{s} storm", "color": COLOR[s], "points": pts})
    for s in storm.SYSTEMS:
        r = storm.median_run(runs, s)
        hl = sorted(r.get("hits_lat_ms", []))
        if hl:
            step = max(1, len(hl) // 200)
            series.append({"name": f"{s} hits beside", "color": COLOR[s], "dash": "3,3",
                           "points": [(hl[i], (i + 1) / len(hl)) for i in range(0, len(hl), step)] + [(hl[-1], 1.0)]})
    line_chart(path, f"Cold storm: {R['storm']['setup']['requests']:,} full-ward gzip requests at once over "
               f"{R['storm']['setup']['wards']} cold wards (origin 200 ms)", series,
               "latency (ms, log)", "share of requests answered", xlog=True, ymin=0)


def delta_bars(R, path):
    d = R["deltas"]
    bars = [{"name": "one date (1,000 reqs)", "color": "#1f77b4", "value": d["summary"]["rps_median"]["one"],
             "reps": [r["one"]["rps"] for r in d["reps"]]},
            {"name": "1,000 distinct dates", "color": COLOR["wardgate"], "value": d["summary"]["rps_median"]["distinct"],
             "reps": [r["distinct"]["rps"] for r in d["reps"]]}]
    target = 0.8 * d["summary"]["rps_median"]["one"]
    bar_chart(path, "Delta reads of one ward, gzip, wardgate (wrk, median of repetitions)", bars, "req/s",
              hlines=[(target, "0.8x one date")])


def warm_bars(R, path):
    w = R["warm"]
    bars = [{"name": "bound: mysql + gzip -6 / nproc", "color": "#7f7f7f", "value": w["bound_rows_per_s"]},
            {"name": "mysql client alone", "color": "#bcbd22", "value": w["mysql_rows_per_s"]},
            {"name": "wardgate warm", "color": COLOR["wardgate"], "value": w["warm_rows_per_s_median"],
             "reps": [x["rows_per_s"] or float("nan") for x in w["warms"]]}]
    bar_chart(path, f"Warm: {w['rows']:,} rows into Redis, rows/s", bars, "rows/s",
              hlines=[(0.75 * w["bound_rows_per_s"], "0.75 x bound")])

