"""netmon totals --html FILE: what --totals kept, as one self-contained HTML file.

Charts instead of tables, for the period and guests the usual options select: the
guests (and host interfaces) with the most bytes; each one's bytes received and sent
per day as bars; per hour over the period's last days as a heat map; and where
`netmon rtt --totals` kept them, its round trips' hourly percentiles. Inline SVG and
CSS only: no script, no font or image fetched from anywhere (a Content-Security-Policy
says so to the browser), so the file reads the same copied to a laptop.

Every figure comes from report.gather(), as `netmon totals --json` prints it, and each
mark carries it exactly in data- attributes (bytes, ns) beside its rounded label. Names
(guests', interfaces', files') are anyone's to choose: every text goes through
escape.visible() and html.escape().
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import math
import os
import tempfile
from typing import TextIO

from netmon.errors import UsageError
from netmon.escape import visible
from netmon.totals import report as rep

HEAT_DAYS = 7  # the heat map's (and the round trips') days: the period's last
TOP_DEFAULT = 10
RECEIVED, SENT = "#2b6cb0", "#dd6b20"  # bar colours (a legend names them)
# RTT lines: each component's median solid, 99th percentile dashed.
COMPONENT_COLOURS = {"network": "#2b6cb0", "guest": "#c53030", "local": "#2f855a"}
W, H = 960, 220  # a chart's viewBox; it scales to the page's width
LEFT, RIGHT, TOP, BOTTOM = 78, 12, 12, 34

CSS = """
body{font:15px/1.4 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1280px;padding:12px 16px;color:#1a202c;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.6em 0 .3em;
border-bottom:1px solid #cbd5e0}h3{font-size:1em;margin:1em 0 .2em}
p.note{color:#4a5568;margin:.2em 0}svg{width:100%;height:auto;display:block}
svg text{font-size:12px;fill:#2d3748}svg .grid{stroke:#e2e8f0}svg .axis{stroke:#718096}
.legend{display:flex;flex-wrap:wrap;gap:.3em 1.2em;margin:.3em 0;color:#2d3748}
.sw{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;margin-right:.3em}
.scroll{overflow-x:auto}table{border-collapse:collapse;min-width:100%}
td,th{padding:.25em .6em;text-align:right;white-space:nowrap}
th{border-bottom:1px solid #a0aec0}td:first-child,th:first-child{text-align:left}
td.bar{width:40%;min-width:6em}.bar span{display:inline-block;height:.8em}
section{break-inside:avoid}
@media (max-width:640px){body{font-size:14px;padding:8px}td.bar{display:none}}
"""


def write(q: rep.Query, out: TextIO) -> int:
    """Write the report to q.html ("-": ``out``); returns how many guests and interfaces
    it shows."""
    rep.check(q)
    if q.json or q.csv or q.rtt or q.by_nic:
        raise UsageError("--html draws its own report: it goes without --json, --csv, "
                         "--rtt and --by-nic (it shows round trips where they were kept)")
    if q.view != "days":
        raise UsageError("--html draws days and hours: it goes without --hours and --months")
    text, shown = render(q)
    if q.html == "-":
        out.write(text)
        return shown
    _write_file(q.html, text)
    return shown


def _write_file(path: str, text: str) -> None:
    """Whole or not at all: a temporary file beside it, renamed over it."""
    where = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".netmon-report-", dir=where)
    except OSError as exc:
        raise UsageError(f"--html {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise UsageError(f"--html {path}: {exc.strerror}") from None


def _esc(text: str) -> str:
    return html.escape(visible(text), quote=True)


@dataclasses.dataclass
class Report:
    """What the report shows, gathered as `netmon totals --json` gathers it."""

    span: tuple[int, int]  # the period: [since, until)
    heat: tuple[int, int]  # its last HEAT_DAYS days (the heat map, the round trips)
    days: rep.Gathered  # per key and day
    hours: rep.Gathered  # per key and hour, over ``heat``
    top: rep.Gathered  # per key, the period whole
    tcp: rep.Gathered  # TCP health per key and hour, over ``heat``
    n_top: int


def gather(q: rep.Query) -> Report:
    # The period as the days' tables have it (--top alone would make it this month).
    span = rep._span(dataclasses.replace(q, top=None))
    since, until = span
    first = rep._local(until - 1).date() - dt.timedelta(days=HEAT_DAYS - 1)
    heat = (max(since, rep._epoch(dt.datetime.combine(first, dt.time()))), until)
    plain = dataclasses.replace(q, html=None)
    n_top = q.top or TOP_DEFAULT
    return Report(
        span=span, heat=heat,
        days=rep.gather(dataclasses.replace(plain, top=None), span),
        hours=rep.gather(dataclasses.replace(plain, view="hours", top=None), heat),
        top=rep.gather(dataclasses.replace(plain, top=n_top), span),
        tcp=rep.gather(dataclasses.replace(plain, view="hours", top=None, rtt=True), heat),
        n_top=n_top)


def render(q: rep.Query) -> tuple[str, int]:
    r = gather(q)
    keys = sorted(r.days.figures, key=_weight(r))
    parts = [_head(r), _top(r)]
    for who in keys:
        parts.append(_key_section(r, who))
    if not keys:
        parts.append('<p class="note">No traffic in the period.</p>')
    parts.append("</body></html>\n")
    return "".join(parts), len(keys)


def _weight(r: Report):
    """Keys in the top's order: the most bytes first, then as the tables order them."""
    totals = {who: sum(f.total_bytes for f in periods.values())
              for who, periods in r.days.figures.items()}
    return lambda who: (-totals[who], rep._order(who))


def _fmt_time(t: int) -> str:
    return rep._local(t).strftime("%Y-%m-%d %H:%M")


def _zone() -> str:
    now = dt.datetime.now().astimezone()
    return f"{now.tzname()} (UTC{now.strftime('%z')[:3]}:{now.strftime('%z')[3:]})"


def _head(r: Report) -> str:
    since, until = r.span
    ledgers = "; ".join(
        f"{_esc(ledger.path)}"
        + (f" (node {_esc(ledger.node)})" if ledger.node and len(r.days.ledgers) > 1 else "")
        + (f", last written {_fmt_time(ledger.written)}" if ledger.written is not None
           else "") for ledger in r.days.ledgers)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # Nothing fetched: a browser refuses any script, font or image from anywhere.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">"
        f"<title>netmon totals {_fmt_time(since)} to {_fmt_time(until)}</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>Traffic per guest</h1>"
        f'<p class="note" data-since="{since}" data-until="{until}">'
        f"{_fmt_time(since)} to {_fmt_time(until)}, times in {_esc(_zone())}. "
        f"Bytes on the wire, Ethernet header included, in powers of 1024 "
        f"(1 KiB = 1024 B). From {ledgers or 'no database'}.</p>")


def _legend(*items: tuple[str, str, str]) -> str:
    """Swatches: (colour, label, extra style)."""
    return '<div class="legend">' + "".join(
        f'<span><span class="sw" style="background:{colour};{style}"></span>{label}</span>'
        for colour, label, style in items) + "</div>"


def _top(r: Report) -> str:
    ranked = sorted(((who, periods[""]) for who, periods in r.top.figures.items()),
                    key=lambda wf: (-wf[1].total_bytes, rep._order(wf[0])))[:r.n_top]
    if not ranked:
        return ""
    most = max(f.total_bytes for _, f in ranked) or 1
    rows = []
    for rank, (who, f) in enumerate(ranked, 1):
        received, sent = rep._sides(who)
        rx, tx = f.bytes[received], f.bytes[sent]
        bar = (f'<span style="width:{100 * rx / most:.2f}%;background:{RECEIVED}"></span>'
               f'<span style="width:{100 * tx / most:.2f}%;background:{SENT}"></span>')
        rows.append(
            f'<tr data-rank="{rank}" data-guest="{who[0] or ""}" '
            f'data-interface="{_esc(who[2])}" data-received="{rx}" data-sent="{tx}" '
            f'data-bytes="{f.total_bytes}" data-packets="{f.total_packets}">'
            f"<td>{rank}. {_esc(rep._label(who, r.top.names))}</td>"
            f"<td>{rep.human_bytes(rx)}</td><td>{rep.human_bytes(tx)}</td>"
            f"<td>{rep.human_bytes(f.total_bytes)}</td><td>{f.total_packets:,}</td>"
            f'<td class="bar">{bar}</td></tr>')
    return (f"<section><h2>The {len(ranked)} with the most traffic</h2>"
            + _legend((RECEIVED, "received", ""), (SENT, "sent", ""))
            + '<div class="scroll"><table id="top"><tr><th></th><th>received</th>'
            "<th>sent</th><th>total</th><th>packets</th><th></th></tr>"
            + "".join(rows) + "</table></div></section>")


def _key_section(r: Report, who: rep.Who) -> str:
    label = _esc(rep._label(who, r.days.names))
    ident = f'data-guest="{who[0] or ""}" data-interface="{_esc(who[2])}"'
    parts = [f"<section {ident}><h2>{label}</h2>",
             _legend((RECEIVED, "received", ""), (SENT, "sent", "")),
             _day_bars(r, who)]
    hours = r.hours.figures.get(who)
    if hours:
        parts.append(_heat_map(r, who, hours))
    tcp = r.tcp.figures.get(who)
    if tcp:
        parts.append(_rtt_chart(r, who, tcp))
    parts.append("</section>")
    return "".join(parts)


def _byte_axis(most: float) -> tuple[list[float], str, int]:
    """Ticks (bytes) up to at least ``most``, the binary unit they are labelled in and
    its size: 0, 1, 2, 5 ... times a power of ten of that unit."""
    unit, size = "B", 1
    for name in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if most < size * 1024:
            break
        unit, size = name, size * 1024
    top = max(most / size, 1e-9)
    raw = top / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [i * step * size for i in range(int(math.ceil(top / step)) + 1)]
    return ticks, unit, size


def _tick_label(value: float, unit: str, size: int) -> str:
    v = value / size
    return f"{v:g} {unit}" if v else "0"


def _frame(ticks: list[float], label, y_of) -> list[str]:
    out = []
    for t in ticks:
        y = y_of(t)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" '
                   f'y2="{y:.1f}"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{label(t)}</text>')
    out.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}"/>')
    out.append(f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" '
               f'y2="{H - BOTTOM}"/>')
    return out


def _all_days(span: tuple[int, int]) -> list[str]:
    first, last = rep._local(span[0]).date(), rep._local(span[1] - 1).date()
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _day_bars(r: Report, who: rep.Who) -> str:
    """Bytes received and sent per day, two bars a day; the days without a row too."""
    periods = r.days.figures[who]
    days = _all_days(r.span)
    received, sent = rep._sides(who)
    most = max((max(f.bytes[received], f.bytes[sent]) for f in periods.values()), default=0)
    ticks, unit, size = _byte_axis(most)
    plot_h = H - TOP - BOTTOM
    y_of = lambda v: TOP + plot_h * (1 - v / ticks[-1]) if ticks[-1] else H - BOTTOM  # noqa: E731
    slot = (W - LEFT - RIGHT) / max(1, len(days))
    bar = max(0.5, slot * 0.4)
    out = [f'<svg viewBox="0 0 {W} {H}" role="img" class="days" '
           f'aria-label="bytes received and sent per day">',
           *_frame(ticks, lambda t: _tick_label(t, unit, size), y_of)]
    every = max(1, math.ceil(len(days) / 12))  # at most ~12 dates under the axis
    for i, day in enumerate(days):
        x = LEFT + i * slot + slot * 0.1
        f = periods.get(day)
        rx, tx = (f.bytes[received], f.bytes[sent]) if f else (0, 0)
        for j, (n, colour, what) in enumerate(((rx, RECEIVED, "received"),
                                               (tx, SENT, "sent"))):
            y = y_of(n)
            out.append(f'<rect x="{x + j * bar:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                       f'height="{H - BOTTOM - y:.1f}" fill="{colour}" data-day="{day}" '
                       f'data-{what}="{n}"><title>{day} {what} {rep.human_bytes(n)}'
                       f'</title></rect>')
        if i % every == 0:
            out.append(f'<text x="{x + bar:.1f}" y="{H - BOTTOM + 16}" '
                       f'text-anchor="middle">{day[5:]}</text>')
    years = days[0][:4] if days[0][:4] == days[-1][:4] else f"{days[0][:4]}-{days[-1][:4]}"
    out.append(f'<text x="{LEFT}" y="{H - 2}">per day ({years}; {unit})</text>')
    out.append("</svg>")
    return "".join(out)


def _heat_colour(share: float) -> str:
    """White (nothing) to dark blue (the key's busiest hour)."""
    lo, hi = (247, 251, 255), (8, 48, 107)
    c = [round(a + (b - a) * share) for a, b in zip(lo, hi)]
    return f"#{c[0]:02x}{c[1]:02x}{c[2]:02x}"


def _heat_map(r: Report, who: rep.Who, hours: dict) -> str:
    """Bytes per hour (both ways), a row per day of the last HEAT_DAYS, a column per hour
    of the day."""
    received, sent = rep._sides(who)
    days = _all_days(r.heat)
    cell_w, cell_h, left, top = (W - 110) / 24, 22, 100, 18
    height = top + cell_h * len(days) + 8
    most = max(f.total_bytes for f in hours.values()) or 1
    out = [f"<h3>Per hour, the last {len(days)} days (both ways)</h3>",
           f'<svg viewBox="0 0 {W} {height + 26}" role="img" class="hours" '
           f'aria-label="bytes per hour">']
    for h in range(0, 24, 2):
        out.append(f'<text x="{left + (h + 0.5) * cell_w:.1f}" y="{top - 5}" '
                   f'text-anchor="middle">{h:02d}</text>')
    for i, day in enumerate(days):
        y = top + i * cell_h
        out.append(f'<text x="{left - 8}" y="{y + cell_h * 0.7:.1f}" '
                   f'text-anchor="end">{day}</text>')
        for h in range(24):
            hour = f"{day} {h:02d}:00"
            f = hours.get(hour)
            if f is None:
                continue
            rx, tx = f.bytes[received], f.bytes[sent]
            out.append(
                f'<rect x="{left + h * cell_w:.1f}" y="{y:.1f}" width="{cell_w - 1:.1f}" '
                f'height="{cell_h - 1}" fill="{_heat_colour(f.total_bytes / most)}" '
                f'data-hour="{hour}" data-received="{rx}" data-sent="{tx}"><title>{hour} '
                f'received {rep.human_bytes(rx)}, sent {rep.human_bytes(tx)}</title></rect>')
    # The scale: white to the busiest hour.
    y = height + 4
    for k in range(10):
        out.append(f'<rect x="{left + k * 16}" y="{y}" width="16" height="12" '
                   f'fill="{_heat_colour(k / 9)}"/>')
    out.append(f'<text x="{left - 8}" y="{y + 10}" text-anchor="end">0</text>'
               f'<text x="{left + 166}" y="{y + 10}">{rep.human_bytes(most)} an hour '
               f'(the busiest); blank: no row</text></svg>')
    return "".join(out)


def _rtt_chart(r: Report, who: rep.Who, tcp: dict) -> str:
    """Each component's hourly median and 99th percentile round trip (log scale)."""
    hours = [f"{day} {h:02d}:00" for day in _all_days(r.heat) for h in range(24)]
    index = {hour: i for i, hour in enumerate(hours)}
    series: dict[str, list[tuple[int, str, int, float, float]]] = {}
    for hour, f in sorted(tcp.items()):
        if hour not in index:
            continue
        for comp in rep.COMPONENTS:
            h = f.histogram(comp)
            if h.count:
                series.setdefault(comp, []).append(
                    (index[hour], hour, h.count, h.quantile(0.5), h.quantile(0.99)))
    if not series:
        return ""
    values = [v for pts in series.values() for p in pts for v in p[3:] if v > 0]
    lo = 10 ** math.floor(math.log10(min(values) / 1e6)) if values else 0.1
    hi = 10 ** math.ceil(math.log10(max(values) / 1e6)) if values else 1000
    hi = max(hi, lo * 10)
    plot_h = H - TOP - BOTTOM
    y_of = lambda ms: TOP + plot_h * (1 - (math.log10(max(ms, lo)) - math.log10(lo))  # noqa: E731
                                      / (math.log10(hi) - math.log10(lo)))
    ticks = [lo * 10 ** k for k in range(round(math.log10(hi / lo)) + 1)]
    x_of = lambda i: LEFT + (W - LEFT - RIGHT) * (i + 0.5) / len(hours)  # noqa: E731
    out = [f"<h3>Round trips per hour, the last {len(hours) // 24} days</h3>",
           _legend(*[(COMPONENT_COLOURS[c], f"{c} median / p99 (dashed)", "")
                     for c in series]),
           f'<svg viewBox="0 0 {W} {H}" role="img" class="rtt" '
           f'aria-label="round-trip times per hour">',
           *_frame(ticks, lambda ms: f"{ms:g} ms", y_of)]
    for day_i in range(0, len(hours), 24):
        out.append(f'<text x="{x_of(day_i):.1f}" y="{H - BOTTOM + 16}">'
                   f'{hours[day_i][5:10]}</text>')
    for comp, pts in series.items():
        colour = COMPONENT_COLOURS[comp]
        for q_i, dash in ((3, ""), (4, ' stroke-dasharray="5 3"')):
            line = " ".join(f"{x_of(p[0]):.1f},{y_of(p[q_i] / 1e6):.1f}" for p in pts)
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                       f'stroke-width="1.5"{dash}/>')
        for i, hour, count, p50, p99 in pts:
            out.append(f'<circle cx="{x_of(i):.1f}" cy="{y_of(p50 / 1e6):.1f}" r="2.5" '
                       f'fill="{colour}" data-hour="{hour}" data-component="{comp}" '
                       f'data-samples="{count}" data-median-ns="{round(p50)}" '
                       f'data-p99-ns="{round(p99)}"><title>{hour} {comp}: {count:,} '
                       f'samples, median {p50 / 1e6:.3g} ms, p99 {p99 / 1e6:.3g} ms</title>'
                       f'</circle>')
    out.append(f'<text x="{LEFT}" y="{H - 2}">round-trip time, log scale; percentiles '
               f'from the kernel\'s buckets, each within 12.5%</text></svg>')
    return "".join(out)
