"""Deltas at hit speed: on the hit bench's wardgate (every ward cached), wrk over 1,000 delta
reads of one ward each with a `date` of its own, against 1,000 reads with one single `date`,
both from the last 24 h before the ward's newest `modifieddate`. Each repetition uses dates no
earlier repetition asked, and wrk starts with no warm-up, so every repetition's distinct list
includes its first pass (where wardgate may compress each answer once). Then the bytes: for 20
of the distinct dates, wardgate's gzip answer against Python's gzip level 6 of its identity
answer."""
import gzip
import json
import zlib

from benchlib import (ADMIN, BASE, BENCH_DB, REPEAT, http_get, log, median, metric_sum, metrics, mysql, order,
                      q, run_wrk)

WARD = 1
LIST_LEN = 1000
SPAN_MS = 24 * 3600 * 1000
RATIO_TARGET = 0.8  # distinct dates ÷ one date, req/s, at least
BYTES_TARGET = 1.25  # wardgate gzip ÷ gzip -6 bytes, at most
N_BYTES = 20
COMPRESSIONS = "wardgate_request_compressions"


def newest_ms():
    sql = ("SELECT UNIX_TIMESTAMP(MAX(modifieddate)) FROM citizen "
           f"WHERE state = 'Karnataka' AND assembly_no = '150' AND ward_no = '{WARD}'")
    return int(float(mysql(BENCH_DB, sql)) * 1000)


def date_lists(newest, rep):
    """Repetition `rep`'s lists: 1,000 distinct dates 86.4 s apart over the last 24 h (shifted by
    rep/REPEAT of a step, so no two repetitions share one), and one date in their middle,
    between two of them."""
    lo, step = newest - SPAN_MS, SPAN_MS / LIST_LEN
    distinct = [int(lo + (i + rep / REPEAT) * step) for i in range(LIST_LEN)]
    one = int(lo + (LIST_LEN // 2 + (rep + 0.5) / REPEAT) * step)
    return {"distinct": distinct, "one": [one] * LIST_LEN}


def run_list(kind, dates):
    m0 = metric_sum(metrics(ADMIN), COMPRESSIONS)
    res = run_wrk("wardgate", f"delta_{kind}", [q(WARD, d) for d in dates], True, warm=0)
    m1 = metric_sum(metrics(ADMIN), COMPRESSIONS)
    res.update(compressions_before=m0, compressions_after=m1, compressions=m1 - m0)
    log(f"delta {kind}: {res['rps']:.0f} req/s, {m1 - m0:.0f} compressions")
    return res


def wire_bytes(dates):
    """wardgate's gzip answer (a hit by now) against gzip level 6 of its identity answer."""
    out = []
    for d in dates:
        st, h, gz = http_get(BASE["wardgate"] + q(WARD, d), gzip=True)
        st2, h2, ident = http_get(BASE["wardgate"] + q(WARD, d), gzip=False)
        assert h.get("content-encoding") == "gzip", h
        assert gzip.decompress(gz) == ident, f"delta date={d}: gzip answer does not inflate to the identity one"
        g6 = len(gzip.compress(ident, compresslevel=6, mtime=0))
        out.append({"date": d, "rows": len(json.loads(ident)), "identity": len(ident), "wardgate_gzip": len(gz),
                    "gzip6": g6, "zlib6": len(zlib.compress(ident, 6)), "ratio": len(gz) / g6,
                    "xcache": h.get("x-cache")})
    return out


def deltas():
    newest = newest_ms()
    reps = []
    for rep in range(REPEAT):
        lists = date_lists(newest, rep)
        reps.append({kind: run_list(kind, lists[kind]) for kind in order(("distinct", "one"), rep)})
    first = date_lists(newest, 0)["distinct"]
    wb = wire_bytes(first[:: LIST_LEN // N_BYTES][:N_BYTES])
    ward_rows = int(mysql(BENCH_DB, "SELECT COUNT(*) FROM citizen WHERE state = 'Karnataka' AND assembly_no = '150' "
                                    f"AND ward_no = '{WARD}'"))
    ratios = [r["distinct"]["rps"] / max(1e-9, r["one"]["rps"]) for r in reps]
    byte_ratios = [b["ratio"] for b in wb]
    summary = {
        "ratios": ratios, "ratio_median": median(ratios),
        "rps_median": {k: median([r[k]["rps"] for r in reps]) for k in ("distinct", "one")},
        "compressions": {k: [r[k]["compressions"] for r in reps] for k in ("distinct", "one")},
        "errors": sum(r[k]["errors"] + r[k]["non2xx"] for r in reps for k in r),
        "bytes_median": median(byte_ratios), "bytes_max": max(byte_ratios),
    }
    # a delta of the last 24 h holds a few % of the ward; answers of the whole ward are no deltas
    summary["ward_rows"] = ward_rows
    summary["max_delta_rows"] = max(b["rows"] for b in wb)
    summary["valid"] = summary["max_delta_rows"] < ward_rows
    summary["met_rate"] = summary["ratio_median"] >= RATIO_TARGET and summary["errors"] == 0 and summary["valid"]
    summary["met_bytes"] = summary["bytes_max"] <= BYTES_TARGET
    log(f"deltas: {summary}")
    return {"newest_ms": newest, "reps": reps, "bytes": wb, "summary": summary,
            "one_dates": [date_lists(newest, r)["one"][0] for r in range(REPEAT)]}
