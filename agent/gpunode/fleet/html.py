"""The fleet report as one self-contained HTML page: inline SVG drawn here, inline CSS, no script
and nothing fetched, so it opens from a mail attachment or an air-gapped share.

Built for fleets of hundreds of hosts: per metric and SKU, a strip plot of every host's current
figure over the p10-p90 box, and a time plot where the healthy hosts are one band (p10-p90 per
time bin, median line) and only the drifting hosts are drawn as their own red lines, labelled.
"""

from __future__ import annotations

import statistics
import time
from html import escape

from gpunode.fleet.report import compressed, drifting_hosts
from gpunode.fleet.trends import quantile

WIDTH, STRIP_H, PLOT_H, PAD = 720, 70, 230, 48
BINS = 40
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
.FAIL,.UNREACHABLE,.FAILED,.drift{color:#b00;font-weight:600}.WARN{color:#a60}.OK{color:#070}
.UNKNOWN,.NOT_RUN,.NO_REPORT,.INVALID{color:#808}
svg{display:block;margin:6px 0;background:#fafafa;border:1px solid #eee}
.note{color:#666;font-size:12px}
"""


def _fmt(v: float) -> str:
    return f"{v:,.1f}" if abs(v) < 1e5 else f"{v:,.0f}"


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


class _Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        if hi <= lo:
            lo, hi = lo - 1, hi + 1
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        return round(self.a + (v - self.lo) * (self.b - self.a) / (self.hi - self.lo), 1)


def strip_svg(row: dict) -> str:
    """Every host's current figure as a dot over the p10-p90 box; drifting hosts red."""
    dist = row["distribution"]
    span = (dist["max"] - dist["min"]) or abs(dist["median"]) * 0.01 or 1.0
    x = _Scale(dist["min"] - 0.05 * span, dist["max"] + 0.05 * span, PAD, WIDTH - PAD)
    bad = {d["series"] for d in row["drifting"]}
    parts = [f'<svg class="strip" width="{WIDTH}" height="{STRIP_H}" viewBox="0 0 {WIDTH} {STRIP_H}" '
             f'role="img" aria-label="{escape(row["metric"])} distribution">',
             f'<rect x="{x(dist["p10"])}" y="18" width="{max(1.0, x(dist["p90"]) - x(dist["p10"]))}" height="26" '
             'fill="#cde" stroke="#89a"/>',
             f'<line x1="{x(dist["median"])}" x2="{x(dist["median"])}" y1="14" y2="48" stroke="#124" stroke-width="2"/>']
    for i, (label, value) in enumerate(sorted(row["current"].items())):
        y = 24 + (i * 7) % 16  # spread the dots a little so identical values stay visible
        colour = "#c00" if label in bad else "#333"
        parts.append(f'<circle cx="{x(value)}" cy="{y}" r="{3.5 if label in bad else 2.2}" fill="{colour}" '
                     f'fill-opacity="{1 if label in bad else 0.5}"><title>{escape(label)}: {_fmt(value)}</title></circle>')
    parts.append(f'<text x="{PAD}" y="64" font-size="11">{_fmt(dist["min"])}</text>')
    parts.append(f'<text x="{WIDTH - PAD}" y="64" font-size="11" text-anchor="end">{_fmt(dist["max"])} '
                 f'{escape(row["unit"])}</text>')
    parts.append(f'<text x="{x(dist["median"])}" y="11" font-size="11" text-anchor="middle">median '
                 f'{_fmt(dist["median"])}</text></svg>')
    return "".join(parts)


def _bands(points: dict[str, list[list[float]]], skip: set[str]) -> list[tuple[float, float, float, float]]:
    """(time, p10, median, p90) per time bin over the series not in `skip`."""
    pts = [(t, v) for label, series in points.items() if label not in skip for t, v in series]
    if not pts:
        return []
    t0, t1 = min(t for t, _ in pts), max(t for t, _ in pts)
    width = (t1 - t0) / BINS or 1.0
    bins: dict[int, list[float]] = {}
    for t, v in pts:
        bins.setdefault(min(BINS - 1, int((t - t0) / width)), []).append(v)
    out = []
    for i in sorted(bins):
        vals = sorted(bins[i])
        out.append((t0 + (i + 0.5) * width, quantile(vals, 0.1), statistics.median(vals), quantile(vals, 0.9)))
    return out


def _band_shapes(bands: list[tuple[float, float, float, float]], x: _Scale, y: _Scale) -> list[str]:
    """The healthy hosts' p10-p90 band as one polygon and their median as one line."""
    if not bands:
        return []
    upper = " ".join(f"{x(t)},{y(p90)}" for t, _, _, p90 in bands)
    lower = " ".join(f"{x(t)},{y(p10)}" for t, p10, _, _ in reversed(bands))
    return [f'<polygon points="{upper} {lower}" fill="#cde" fill-opacity="0.8" stroke="none"/>',
            '<polyline fill="none" stroke="#124" stroke-width="1.5" points="'
            + " ".join(f"{x(t)},{y(med)}" for t, _, med, _ in bands) + '"/>']


def _drift_line(d: dict, series: list[list[float]], x: _Scale, y: _Scale) -> list[str]:
    """One drifting series as a red line, labelled at its last point with its change."""
    if not series:
        return []
    end_t, end_v = series[-1]
    return ['<polyline class="drift-line" fill="none" stroke="#c00" stroke-width="2" points="'
            + " ".join(f"{x(t)},{y(v)}" for t, v in series) + f'"><title>{escape(d["series"])}</title></polyline>',
            f'<text class="drift-label" x="{x(end_t) + 4}" y="{y(end_v) + 4}" font-size="11" fill="#c00">'
            f'{escape(d["series"])} {d["change"]:+.1%}</text>']


def time_svg(row: dict) -> str:
    """Healthy hosts as a p10-p90 band with a median line; drifting hosts as labelled red lines."""
    bad = {d["series"] for d in row["drifting"]}
    every = [(t, v) for series in row["points"].values() for t, v in series]
    if not every:
        return ""
    ts, vs = [t for t, _ in every], [v for _, v in every]
    x = _Scale(min(ts), max(ts), PAD, WIDTH - PAD - 90)
    pad_v = (max(vs) - min(vs)) * 0.08 or abs(max(vs)) * 0.01 or 1.0
    y = _Scale(min(vs) - pad_v, max(vs) + pad_v, PLOT_H - 28, 12)
    parts = [f'<svg class="trend" width="{WIDTH}" height="{PLOT_H}" viewBox="0 0 {WIDTH} {PLOT_H}" role="img" '
             f'aria-label="{escape(row["metric"])} over time">']
    parts += _band_shapes(_bands(row["points"], bad), x, y)
    for d in row["drifting"]:
        parts += _drift_line(d, row["points"].get(d["series"]) or [], x, y)
    parts.append(f'<text x="{PAD}" y="{PLOT_H - 8}" font-size="11">{_day(min(ts))}</text>')
    parts.append(f'<text x="{WIDTH - PAD - 90}" y="{PLOT_H - 8}" font-size="11" text-anchor="end">{_day(max(ts))}</text>')
    parts.append(f'<text x="4" y="{y(max(vs)) + 4}" font-size="11">{_fmt(max(vs))}</text>')
    parts.append(f'<text x="4" y="{y(min(vs)) + 4}" font-size="11">{_fmt(min(vs))}</text></svg>')
    return "".join(parts)


def _hosts_table(doc: dict) -> str:
    """One row per host: its status, what it said, and the ids of the checks it FAILs."""
    rows = "".join(
        f'<tr><td>{escape(h["host"])}</td><td>{escape(h["sku"])}</td><td class="{escape(h["status"])}">'
        f'{escape(h["status"])}</td><td>{escape(h.get("message") or "")}</td>'
        f'<td class="failing">{escape(", ".join(h.get("failing") or []))}</td></tr>' for h in doc["hosts"])
    return ("<table><tr><th>Host</th><th>SKU</th><th>Status</th><th>Result</th><th>Failing checks</th></tr>"
            f"{rows}</table>")


def _checks_table(doc: dict) -> str:
    """Checks not passing everywhere: per check the hosts that FAIL, ERROR or WARN it."""
    rows = "".join(
        f'<tr><td>{escape(c["id"])}</td><td class="FAIL">{escape(compressed(c["fail_hosts"]))}</td>'
        f'<td class="UNKNOWN">{escape(compressed(c["error_hosts"]))}</td>'
        f'<td class="WARN">{escape(compressed(c["warn_hosts"]))}</td></tr>' for c in doc.get("checks") or [])
    return ("<h2>Checks not passing everywhere</h2><table><tr><th>Check</th><th>FAIL on</th><th>ERROR on</th>"
            f"<th>WARN on</th></tr>{rows}</table>") if rows else ""


def _changes_table(doc: dict) -> str:
    """apply/rollback: each change once, from -> to, with the hosts it is planned or made on."""
    def move(c: dict) -> str:
        if c["from"] is None and c["to"] is None:
            return escape(c.get("note") or "")
        return f'{escape(str(c["from"]))} → {escape(str(c["to"]))}'

    rows = "".join(f'<tr><td>{escape(c["hostlist"])}</td><td>{escape(c["setting"])}</td><td>{move(c)}</td>'
                   f'<td>{escape(c["status"])}</td></tr>' for c in doc.get("changes") or [])
    title = "Changes that would be made (check mode)" if doc.get("check_mode") else "Changes"
    return (f"<h2>{title}</h2><table><tr><th>Hosts</th><th>Setting</th><th>From → to</th><th>Status</th></tr>"
            f"{rows}</table>") if rows else ""


def _trend_section(doc: dict) -> str:
    trends = doc["trends"]
    out = [f'<h2>Trends per SKU</h2><p class="note">Drifting: the median of a host\'s last {trends["window"]} '
           f'runs is worse than the median of its first {trends["window"]} by more than '
           f'{trends["min_drop"]:.0%} and more than {trends["k"]:g}× the SKU\'s spread (robust, across hosts), '
           'with a Theil–Sen slope the same way. Only figures measured without interference count.</p>']
    if trends["drifting_hosts"]:
        named = ", ".join(f'{escape(h)} (<span class="{escape(s)}">{escape(s)}</span>)' for h, s in drifting_hosts(doc))
        out.append(f'<p class="drift">Drifting hosts (their own status): {named}</p>')
    for row in trends["metrics"]:
        title = f'{row["metric"]} · {row["sku"]} · {row["hosts"]} hosts · spread {row["spread"]:.1%}'
        out.append(f'<section class="metric"><h2>{escape(title)}</h2>')
        out.append(strip_svg(row))
        out.append(time_svg(row))
        if row["drifting"]:
            cells = "".join(
                f'<tr class="drift"><td>{escape(d["series"])}</td><td>{_fmt(d["first"])}</td><td>{_fmt(d["last"])}</td>'
                f'<td>{d["change"]:+.1%}</td><td>{d["runs"]}</td></tr>' for d in row["drifting"])
            out.append("<table><tr><th>Drifting</th><th>First runs</th><th>Last runs</th><th>Change</th>"
                       f"<th>Runs</th></tr>{cells}</table>")
        out.append("</section>")
    return "".join(out)


def fleet_html(doc: dict) -> str:
    """The whole page for a gpunode.fleet/1 document (trends drawn when the run collected them)."""
    title = f'gpunode fleet {doc["kind"]} · {doc["summary"]["hosts"]} hosts · {doc["status"]}'
    body = [f"<h1>{escape(title)}</h1>", f'<p class="note">{escape(doc.get("time") or "")} · '
            f'{escape(str(doc.get("inventory") or ""))}</p>']
    if doc.get("trends"):
        body.append(_trend_section(doc))
    body.append("<h2>Hosts</h2>" + _hosts_table(doc))
    body.append(_changes_table(doc) + _checks_table(doc))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
