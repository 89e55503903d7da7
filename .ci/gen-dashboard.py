#!/usr/bin/env python3
"""Generate the Grafana dashboard k8s/monitoring/grafana/wardgate.json.

The panels are written here, once, as (title, unit, queries); every query uses only metrics
wardgate exports (tests/dashboard.rs reads the JSON's expressions against a live /metrics).
Each panel is drawn per track (canary beside stable: the `track` pod label the scrape copies)
in the fleet row and per pod in the instance row.

  python3 .ci/gen-dashboard.py            # rewrite the JSON
  python3 .ci/gen-dashboard.py --check    # exit 1 if the committed JSON is stale
  python3 .ci/gen-dashboard.py --rules F  # every expression as a rule file, for promtool
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DST = ROOT / "k8s/monitoring/grafana/wardgate.json"

# Selector every query carries: the dashboard's track and pod variables.
SEL = 'track=~"$track", pod=~"$pod"'
R = "$__rate_interval"


def m(name, extra=""):
    """`name{SEL[, extra]}`"""
    return f"{name}{{{SEL}{', ' + extra if extra else ''}}}"


READS_SERVED = m("wardgate_requests_total", 'route_class=~"citizens|master", cache=~"HIT|STALE"')
READS = m("wardgate_requests_total", 'route_class=~"citizens|master", cache=~"HIT|STALE|MISS"')
ANSWERS_5XX = m("wardgate_requests_total", 'status=~"5.."')
CITIZENS_TIME = m("wardgate_request_duration_seconds_bucket", 'route_class="citizens"')

# Panels: (title, unit, description, [(legend, expr with {by})]). `{by}` becomes `track` in the
# fleet row and `track, pod` in the instance row.
PANELS = [
    ("Hit ratio (reads)", "percentunit",
     "Reads answered from a stored copy (HIT or STALE) of all reads that needed one. After the "
     "warm: at least 0.95, the canary within 2 points of stable.",
     [("{{track}} {{pod}}",
       f'sum by ({{by}}) (rate({READS_SERVED}[{R}]))'
       f' / sum by ({{by}}) (rate({READS}[{R}]))')]),
    ("Answers per second, by cache state", "reqps",
     "Every answer, by X-Cache (HIT, MISS, STALE, PATCHED, PASS, ...).",
     [("{{track}} {{pod}} {{cache}}",
       f'sum by ({{by}}, cache) (rate({m("wardgate_requests_total")}[{R}]))')]),
    ("5xx ratio", "percentunit",
     "Answers with a 5xx status of all answers: under 0.5%, the canary not above stable.",
     [("{{track}} {{pod}}",
       f'sum by ({{by}}) (rate({ANSWERS_5XX}[{R}]))'
       f' / sum by ({{by}}) (rate({m("wardgate_requests_total")}[{R}]))')]),
    ("p99 latency (voter lists)", "s",
     "99th percentile of the time to answer /open/volunteer/citizens.",
     [("{{track}} {{pod}}",
       f'histogram_quantile(0.99, sum by ({{by}}, le) (rate({CITIZENS_TIME}[{R}])))')]),
    ("Backend requests per second, by outcome", "reqps",
     "What wardgate asks of the backend (misses, writes, pass-through): `shed` should stay 0.",
     [("{{track}} {{pod}} {{outcome}}",
       f'sum by ({{by}}, outcome) (rate({m("wardgate_upstream_requests_total")}[{R}]))')]),
    ("Backend bytes per second", "Bps",
     "Bytes of answers read from the backend: misses and writes; near zero once warmed.",
     [("{{track}} {{pod}}",
       f'sum by ({{by}}) (rate({m("wardgate_upstream_bytes_total")}[{R}]))')]),
    ("Backend time p99", "s",
     "99th percentile of one backend request.",
     [("{{track}} {{pod}}",
       f'histogram_quantile(0.99, sum by ({{by}}, le) (rate({m("wardgate_upstream_duration_seconds_bucket")}[{R}])))')]),
    ("Ward builds per second, by source", "ops",
     "Wards built (from the backend or the replica); requests that waited on another's build.",
     [("{{track}} {{pod}} {{source}}",
       f'sum by ({{by}}, source) (rate({m("wardgate_snapshot_builds_total")}[{R}]))'),
      ("{{track}} {{pod}} coalesced waits",
       f'sum by ({{by}}) (rate({m("wardgate_coalesced_waits_total")}[{R}]))')]),
    ("Build time p99, by phase", "s",
     "fetch, parse, chunk (compress), store: chunk well under 100 ms for a 10,000-row ward.",
     [("{{track}} {{pod}} {{phase}}",
       f'histogram_quantile(0.99, sum by ({{by}}, phase, le) (rate({m("wardgate_build_phase_seconds_bucket")}[{R}])))'),
      ("{{track}} {{pod}} whole build",
       f'histogram_quantile(0.99, sum by ({{by}}, le) (rate({m("wardgate_snapshot_build_duration_seconds_bucket")}[{R}])))')]),
    ("Writes per second, by outcome", "ops",
     "Sync POSTs: nearly all `patched`; `not_seen` rising means the backend reads a replica behind its writes.",
     [("{{track}} {{pod}} {{outcome}}",
       f'sum by ({{by}}, outcome) (rate({m("wardgate_write_patches_total")}[{R}]))')]),
    ("429s per second, by route class", "reqps",
     "Requests refused by the rate limits; the ward budget's refusals by outcome.",
     [("{{track}} {{pod}} {{route_class}}",
       f'sum by ({{by}}, route_class) (rate({m("wardgate_rate_limited_total")}[{R}]))'),
      ("{{track}} {{pod}} ward budget {{outcome}}",
       f'sum by ({{by}}, outcome) (rate({m("wardgate_ward_budget_refused_total")}[{R}]))')]),
    ("Stale serves per second, by cause", "reqps",
     "Copies served past their age because the backend failed (`error`) or for another cause.",
     [("{{track}} {{pod}} {{outcome}}",
       f'sum by ({{by}}, outcome) (rate({m("wardgate_stale_serves_total")}[{R}]))')]),
    ("L1 bytes", "bytes",
     "Memory held by the in-process cache; it stays under cache.l1_max_bytes.",
     [("{{track}} {{pod}}", f'max by ({{by}}) ({m("wardgate_l1_bytes")})'),
      ("{{track}} {{pod}} derived", f'max by ({{by}}) ({m("wardgate_derived_bytes")})')]),
    ("Ready pods", "short",
     "Pods the load balancer may send traffic to, of all pods.",
     [("{{track}} ready", 'sum by ({by}) (' + m("wardgate_ready") + ')'),
      ("{{track}} pods", 'count by ({by}) (' + m("wardgate_ready") + ')')]),
    ("Redis and replica health", "short",
     "redis_up 1 (0: degraded, still ready); Redis errors 0; replica trusted 1 with a replica.",
     [("{{track}} {{pod}} redis up", f'min by ({{by}}) ({m("wardgate_redis_up")})'),
      ("{{track}} {{pod}} Redis errors/s", f'sum by ({{by}}) (rate({m("wardgate_redis_errors_total")}[{R}]))'),
      ("{{track}} {{pod}} replica trusted", f'min by ({{by}}) ({m("wardgate_replica_trusted")})'),
      ("{{track}} {{pod}} replica errors/s {{kind}}",
       f'sum by ({{by}}, kind) (rate({m("wardgate_replica_errors_total")}[{R}]))')]),
    ("Change watch lag", "s",
     "How far the watch for changed wards lags: under 2 × replica.watch_every plus replica lag.",
     [("{{track}} {{pod}}", f'max by ({{by}}) ({m("wardgate_watch_lag_seconds")})')]),
    ("Log lines dropped", "short",
     "Access-log lines dropped because the log pipe did not drain (requests are not slowed).",
     [("{{track}} {{pod}}", f'sum by ({{by}}) ({m("wardgate_log_lines_dropped")})')]),
    ("Versions", "short",
     "Pods per version and revision: the canary runs the new one.",
     [("{{track}} {{version}} {{revision}}",
       'count by ({by}, version, revision) (' + m("wardgate_build_info") + ')')]),
]

ROWS = [("Fleet, per track (canary beside stable)", "track"), ("Per instance", "track, pod")]


def panel(pid, x, y, title, unit, desc, queries, by):
    per_pod = "pod" in by
    targets = []
    for i, (legend, expr) in enumerate(queries):
        if not per_pod:
            legend = legend.replace(" {{pod}}", "")
        targets.append({
            "refId": chr(ord("A") + i),
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "expr": expr.replace("{by}", by),
            "legendFormat": legend,
        })
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": targets,
    }


def variable(name, label, query, include_all=True):
    return {
        "name": name, "label": label, "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query, "refresh": 2, "includeAll": include_all, "multi": True,
        "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1,
    }


def render() -> dict:
    panels, pid, y = [], 1, 0
    for title, by in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (t, unit, desc, qs) in enumerate(PANELS):
            panels.append(panel(pid, 12 * (i % 2), y + 8 * (i // 2), t, unit, desc, qs, by))
            pid += 1
        y += 8 * ((len(PANELS) + 1) // 2)
    return {
        "uid": "wardgate",
        "title": "wardgate",
        "description": "wardgate, the edge read-cache of SmartNeta: generated by .ci/gen-dashboard.py",
        "tags": ["wardgate"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}},
            variable("track", "track", "label_values(wardgate_build_info, track)"),
            variable("pod", "pod", 'label_values(wardgate_build_info{track=~"$track"}, pod)'),
        ]},
        "panels": panels,
    }


def text() -> str:
    return json.dumps(render(), indent=2, ensure_ascii=False) + "\n"


def rules() -> dict:
    """Every expression with the variables given values, as a rule file promtool can check."""
    exprs = []
    for p in render()["panels"]:
        for t in p.get("targets", []):
            e = t["expr"].replace("$__rate_interval", "5m").replace("$track", ".*").replace("$pod", ".*")
            exprs.append(e)
    return {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(dict.fromkeys(exprs))]}]}


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--check"]:
        if not DST.exists() or DST.read_text() != text():
            print(f"{DST.relative_to(ROOT)} is stale: run python3 .ci/gen-dashboard.py", file=sys.stderr)
            return 1
        return 0
    if args[:1] == ["--rules"] and len(args) == 2:
        import yaml
        pathlib.Path(args[1]).write_text(yaml.safe_dump(rules(), width=1000))
        return 0
    if args:
        print(__doc__, file=sys.stderr)
        return 2
    DST.parent.mkdir(parents=True, exist_ok=True)
    DST.write_text(text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
