"""Hand-written SVG charts for RESULTS.md: line charts (linear or log axes) and bar charts.
Standard library only."""
import math

COLOR = {"wardgate": "#d62728", "nginx": "#2ca02c", "varnish": "#1f77b4", "origin": "#7f7f7f"}
W, H, L, R, T, B = 780, 460, 75, 170, 44, 62


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Axis:
    """Maps data to pixels on [p0, p1], linear or log10."""

    def __init__(self, lo, hi, p0, p1, log=False):
        if log:
            lo = 10 ** math.floor(math.log10(max(lo, 1e-9)))
            hi = 10 ** math.ceil(math.log10(max(hi, lo * 10)))
        elif hi <= lo:
            hi = lo + 1
        self.lo, self.hi, self.p0, self.p1, self.log = lo, hi, p0, p1, log

    def __call__(self, v):
        if self.log:
            v = max(v, self.lo)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + (self.p1 - self.p0) * f

    def ticks(self):
        if self.log:
            out, d = [], self.lo
            decades = math.log10(self.hi / self.lo)
            while d <= self.hi * 1.0001:
                for m in (1, 2, 5):
                    if d * m <= self.hi * 1.0001 and (m == 1 or decades <= 4):
                        out.append((d * m, m == 1))
                d *= 10
            return out
        step = nice_step((self.hi - self.lo) / 6)
        v, out = math.ceil(self.lo / step) * step, []
        while v <= self.hi + 1e-9:
            out.append((v, True))
            v += step
        return out


def nice_step(raw):
    e = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * e:
            return m * e
    return 10 * e


def label(v):
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:g}"


def frame(title, xlabel, ylabel):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
            f'<rect width="{W}" height="{H}" fill="white"/>',
            f'<text x="{(L + W - R) / 2:.0f}" y="24" text-anchor="middle" font-size="14">{_esc(title)}</text>',
            f'<text x="{(L + W - R) / 2:.0f}" y="{H - 16}" text-anchor="middle">{_esc(xlabel)}</text>',
            f'<text transform="translate(18,{(T + H - B) / 2:.0f}) rotate(-90)" text-anchor="middle">{_esc(ylabel)}</text>']


def legend(o, entries):
    """entries: (name, color, dash)"""
    for i, (name, col, dash) in enumerate(entries):
        y = T + 16 + i * 20
        o.append(f'<line x1="{W - R + 12}" x2="{W - R + 38}" y1="{y}" y2="{y}" stroke="{col}" stroke-width="2.5"'
                 + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        o.append(f'<text x="{W - R + 44}" y="{y + 4}">{_esc(name)}</text>')


def write(path, o):
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def line_chart(path, title, series, xlabel, ylabel, xlog=False, ylog=False, xticks=None, xmap=None,
               hlines=(), vlines=(), ymin=None, xmin=None):
    """series: [{"name", "color", "points": [(x, y)], "dash": None|"6,4", "dots": bool}].
    xmap transforms x before plotting (e.g. percentiles to 'nines'); xticks: [(x, text)]."""
    xm = xmap or (lambda v: v)
    pts = [(xm(x), y) for s in series for x, y in s["points"] if y == y]
    if not pts:
        pts = [(0, 1), (1, 10)]
    ys = [y for _, y in pts if not ylog or y > 0] + [h[0] for h in hlines]
    xa = Axis(xmin if xmin is not None else min(p[0] for p in pts), max(p[0] for p in pts), L, W - R, xlog)
    ya = Axis(ymin if ymin is not None else (min(ys) if ylog else 0), max(ys) * (1 if ylog else 1.08),
              H - B, T, ylog)
    o = frame(title, xlabel, ylabel)
    for v, major in ya.ticks():
        yy = ya(v)
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{"#ccc" if major else "#eee"}"/>')
        o.append(f'<text x="{L - 6}" y="{yy + 4:.1f}" text-anchor="end">{label(v)}</text>')
    xt = [(xm(x), t) for x, t in xticks] if xticks else [(v, label(v)) for v, major in xa.ticks() if major]
    for xx, t in xt:
        o.append(f'<line x1="{xa(xx):.1f}" x2="{xa(xx):.1f}" y1="{T}" y2="{H - B}" stroke="#eee"/>')
        o.append(f'<text x="{xa(xx):.1f}" y="{H - B + 16}" text-anchor="middle">{_esc(t)}</text>')
    for yv, text in hlines:
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{ya(yv):.1f}" y2="{ya(yv):.1f}" stroke="#888" stroke-dasharray="6,4"/>')
        o.append(f'<text x="{W - R - 4}" y="{ya(yv) - 4:.1f}" text-anchor="end" fill="#555">{_esc(text)}</text>')
    for xv, text in vlines:
        o.append(f'<line x1="{xa(xm(xv)):.1f}" x2="{xa(xm(xv)):.1f}" y1="{T}" y2="{H - B}" stroke="#888" stroke-dasharray="2,3"/>')
        o.append(f'<text x="{xa(xm(xv)) + 4:.1f}" y="{T + 12}" fill="#555">{_esc(text)}</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#333"/>')
    for s in series:
        p = [(xa(xm(x)), ya(y)) for x, y in s["points"] if y == y]
        if not p:
            continue
        dash = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
        o.append(f'<polyline fill="none" stroke="{s["color"]}" stroke-width="2"{dash} points="'
                 + " ".join(f"{a:.1f},{b:.1f}" for a, b in p) + '"/>')
        if s.get("dots"):
            o += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{s["color"]}"/>' for a, b in p]
    legend(o, [(s["name"], s["color"], s.get("dash")) for s in series])
    write(path, o)


def bar_chart(path, title, bars, ylabel, hlines=()):
    """bars: [{"name", "color", "value", "reps": [values]}]; each repetition drawn as a dot."""
    vals = [b["value"] for b in bars if b["value"] == b["value"]] + [v for b in bars for v in b.get("reps", [])
                                                                      if v == v] + [h[0] for h in hlines]
    ya = Axis(0, max(vals or [1]) * 1.15, H - B, T)
    o = frame(title, "", ylabel)
    for v, _ in ya.ticks():
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{ya(v):.1f}" y2="{ya(v):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{ya(v) + 4:.1f}" text-anchor="end">{label(v)}</text>')
    slot = (W - R - L) / max(1, len(bars))
    for i, b in enumerate(bars):
        x0 = L + i * slot + slot * 0.2
        bw = slot * 0.6
        if b["value"] == b["value"]:
            o.append(f'<rect x="{x0:.1f}" y="{ya(b["value"]):.1f}" width="{bw:.1f}" height="{ya(0) - ya(b["value"]):.1f}" '
                     f'fill="{b["color"]}" opacity="0.8"/>')
            o.append(f'<text x="{x0 + bw / 2:.1f}" y="{ya(b["value"]) - 6:.1f}" text-anchor="middle">{label(round(b["value"]))}</text>')
        for j, v in enumerate(b.get("reps", [])):
            if v == v:
                o.append(f'<circle cx="{x0 + bw * (j + 1) / (len(b["reps"]) + 1):.1f}" cy="{ya(v):.1f}" r="3" fill="black"/>')
        o.append(f'<text x="{x0 + bw / 2:.1f}" y="{H - B + 16}" text-anchor="middle">{_esc(b["name"])}</text>')
    for yv, text in hlines:
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{ya(yv):.1f}" y2="{ya(yv):.1f}" stroke="#555" stroke-dasharray="6,4"/>')
        o.append(f'<text x="{W - R + 6}" y="{ya(yv) + 4:.1f}" fill="#555">{_esc(text)}</text>')
    o.append(f'<line x1="{L}" x2="{W - R}" y1="{ya(0):.1f}" y2="{ya(0):.1f}" stroke="#333"/>')
    o.append(f'<text x="{W - R + 6}" y="{H - B - 4}" fill="#555" font-size="11">dots: repetitions</text>')
    write(path, o)


def nines(p):
    """Percentile to the 'number of nines' axis: 90 -> 1, 99 -> 2, 99.9 -> 3."""
    return -math.log10(max(1e-6, 1 - p / 100))
