#!/usr/bin/env python3
"""wardgate benchmark driver (started by bench/run.sh, which starts and stops the services).

Measures, in one run, with access logs on everywhere:
- hits: wardgate against nginx gzip_static (serving the very bytes wardgate stores), Varnish in
  front of the origin and the uncached origin; wrk closed loop and oha at constant rates
  (bench/hits.py);
- deltas at hit speed: one date against 1,000 distinct dates, and their bytes (bench/deltas.py);
- the cold storm against nginx proxy_cache_lock and Varnish, fresh caches per repetition, with
  hits beside it (bench/storm.py);
- `wardgate warm` against its bound (bench/warmbound.py);
and writes bench/RESULTS.md (bench/report.py), the SVG plots (bench/plots.py) and
bench/results.json. Standard library only.
"""
import json
import os
import time

import deltas
import hits
import plots
import report
import storm
import warmbound
from benchlib import (ADMIN, CONNS, DUR, E, HERE, N, RATES, REPEAT, TMP, VOTERS, WARM, count_lines, log,
                      machine_cpu, metric_sum, metrics, server_pids, tree, SERVER_ROOT)


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


def access_logs():
    """Lines the hit bench's services logged (the storm's instances count theirs in storm.py)."""
    time.sleep(2)  # nginx flushes its buffer each second; varnishncsa and wardgate's writer drain
    m = metrics(ADMIN)
    return {
        "wardgate": {"lines": count_lines(os.path.join(TMP, "wardgate.log")),
                     "access_lines": count_lines(os.path.join(TMP, "wardgate.log"), '"target":"access"'),
                     "dropped": metric_sum(m, "wardgate_log_lines_dropped"),
                     "requests_total": metric_sum(m, "wardgate_requests_total")},
        "nginx": {"lines": count_lines(os.path.join(TMP, "nginx", "logs", "access.log"))},
        "varnish": {"lines": count_lines(os.path.join(TMP, "varnish", "access.log"))},
    }


PARTS = {"storm": lambda: storm.cold_storms(), "deltas": lambda: deltas.deltas(),
         "warm": lambda: warmbound.warm_vs_bound(), "closed": lambda: hits.closed_loop(),
         "rate": lambda: hits.constant_rate()}


def only(names):
    """BENCH_ONLY=storm,deltas,...: run just those parts (for development), results to
    $TMP/only.json; RESULTS.md and the plots are left as they are."""
    hits.warm_wardgate()
    R = {}
    for name in names:
        R[name] = PARTS[name]()
    with open(os.path.join(TMP, "only.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    log(f"wrote {TMP}/only.json")


def main():
    if E.get("BENCH_ONLY"):
        return only([n.strip() for n in E["BENCH_ONLY"].split(",") if n.strip()])
    t_main = time.time()
    busy, waited = wait_quiet()
    log(f"background CPU before start: {busy:.2f} cores (waited {waited:.0f}s)")
    R = {"background": f"{busy:.2f} cores busy outside the bench after waiting {waited:.0f} s for quiet "
                       f"(limit {E.get('QUIET_WAIT', '45')} s)",
         "loadavg0": open("/proc/loadavg").read().strip()}
    log(f"{N} wards x {VOTERS} voters, {DUR}s points (+{WARM}s warm-up), {CONNS} connections, rates {RATES}, "
        f"REPEAT={REPEAT}")

    hits.warm_wardgate()
    R["sizes"], R["capture_xcache"] = hits.capture_bytes()
    R["delta_rows"] = hits.delta_rows()
    R["varnish_hits"] = hits.warm_varnish()

    R["closed"] = hits.closed_loop()
    R["rate"] = hits.constant_rate()
    R["deltas"] = deltas.deltas()
    R["rss"] = {s: rss_kb(server_pids(s) if s != "origin" else tree(SERVER_ROOT[s]))
                for s in ("wardgate", "nginx", "varnish")}
    R["storm"] = storm.cold_storms()
    R["warm"] = warmbound.warm_vs_bound()
    R["logs"] = access_logs()
    R["wall"] = time.time() - t_main
    R["total_s"] = time.time() - int(E.get("T0", t_main))

    R["plots"] = plots.plot_all(R)
    report.write(R)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    log("wrote bench/RESULTS.md, bench/*.svg, bench/results.json")


if __name__ == "__main__":
    main()
