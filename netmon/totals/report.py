"""netmon totals: tables of what --totals kept, by hour, day or (billing) month.

Reads the database only (store.connect_read): no root, no BPF. A guest's NICs
are folded together and it is named as last seen; host interfaces go by name.
The database keeps ``in`` and ``out`` as the host's interface counted them (a guest's
tap receives what the guest sends); rows say ``received`` and ``sent`` as the row's
subject sees them: a guest's own, an interface's. Times are local, as the host's clock
shows them.
"""

from __future__ import annotations

import csv
import datetime as dt
import glob
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TextIO

from netmon import tcphealth
from netmon.escape import visible
from netmon.host import proxmox
from netmon.kernel.abi import RTT_BUCKETS
from netmon.totals import store
from netmon.errors import TotalsUnavailable, UsageError

VIEWS = ("hours", "days", "months")
# How far back a view goes when --since is not given.
DEFAULT_SPAN = {"hours": 24, "days": 30, "months": 12}

Who = tuple[int, int, str]  # (guest, NIC, "") (NIC -1: all of them) or (0, -1, interface)


@dataclass
class Query:
    # Databases (a glob matches several): read together, their counts summed; one
    # ledger's copies (a snapshot, and the file it was taken of) are read once.
    db: tuple[str, ...] = (store.DEFAULT_PATH,)
    view: str = "days"
    since: str | None = None
    until: str | None = None
    guests: tuple[int, ...] = ()
    top: int | None = None
    month_start: int = 1  # the day of the month a (billing) month begins on
    json: bool = False
    csv: bool = False
    by_nic: bool = False  # a row per guest NIC (net0, net1) instead of per guest
    rtt: bool = False  # TCP health's figures (netmon rtt --totals) instead of the traffic
    html: str | None = None  # --html: totals/html.py's report to this file, not tables
    now: float = field(default_factory=time.time)


@dataclass
class Figures:
    """Packets and bytes by direction, and by protocol (for --json)."""

    packets: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    bytes: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    protocols: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, direction: str, protocol: str, packets: int, octets: int) -> None:
        self.packets[direction] += packets
        self.bytes[direction] += octets
        p = self.protocols.setdefault(protocol, {"packets": 0, "bytes": 0})
        p["packets"] += packets
        p["bytes"] += octets

    @property
    def total_bytes(self) -> int:
        return self.bytes["in"] + self.bytes["out"]

    @property
    def total_packets(self) -> int:
        return self.packets["in"] + self.packets["out"]


def _local(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t)


def _epoch(d: dt.datetime) -> int:
    return int(time.mktime(d.timetuple()))


def month_of(day: dt.date, start: int) -> dt.date:
    """The first day of the (billing) month ``day`` is in, months beginning on ``start``."""
    if day.day >= start:
        return day.replace(day=start)
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return dt.date(year, month, start)


def _next_month(first: dt.date) -> dt.date:
    year, month = (first.year, first.month + 1) if first.month < 12 else (first.year + 1, 1)
    return first.replace(year=year, month=month)


def parse_time(text: str, end: bool) -> int:
    """YYYY-MM, YYYY-MM-DD or YYYY-MM-DD HH[:MM] (local time) as a Unix time: where it
    begins, or with ``end`` where it ends (an --until day includes the whole day)."""
    for fmt, step in (("%Y-%m-%d %H:%M", dt.timedelta(minutes=1)),
                      ("%Y-%m-%dT%H:%M", dt.timedelta(minutes=1)),
                      ("%Y-%m-%d %H", dt.timedelta(hours=1)),
                      ("%Y-%m-%d", dt.timedelta(days=1)), ("%Y-%m", None)):
        try:
            t = dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        if end:
            t = t + step if step else dt.datetime.combine(_next_month(t.date()), dt.time())
        return _epoch(t)
    raise UsageError(f"not a time netmon totals reads: {text!r} (YYYY-MM, YYYY-MM-DD or "
                     f"'YYYY-MM-DD HH:MM')")


def _span(q: Query) -> tuple[int, int]:
    """[since, until) of the query, as Unix times."""
    now = _local(q.now)
    until = parse_time(q.until, end=True) if q.until else None
    if q.since:
        since = parse_time(q.since, end=False)
    elif q.top is not None:  # the current (billing) month
        since = _epoch(dt.datetime.combine(month_of(now.date(), q.month_start), dt.time()))
    elif q.view == "hours":
        since = store.hour_of(q.now) - (DEFAULT_SPAN["hours"] - 1) * store.HOUR
    elif q.view == "days":
        since = _epoch(dt.datetime.combine(now.date(), dt.time())
                       - dt.timedelta(days=DEFAULT_SPAN["days"] - 1))
    else:
        first = month_of(now.date(), q.month_start)
        for _ in range(DEFAULT_SPAN["months"] - 1):
            first = month_of(first - dt.timedelta(days=1), q.month_start)
        since = _epoch(dt.datetime.combine(first, dt.time()))
    if until is None:
        until = store.hour_of(q.now) + store.HOUR
    if until <= since:
        if q.until:
            raise UsageError("--until is before --since: the period is empty")
        raise UsageError(f"--since {q.since} is after now: the period is empty")
    return since, until


def _rows(db, q: Query, since: int, until: int, hourly_only: bool):
    """(start, guest, interface, direction, protocol, packets, bytes): hours, or local
    days (hours folded by day, and the daily rows)."""
    where = "start >= ? AND start < ?"
    args: list = [since, until]
    if q.guests:
        where += f" AND guest IN ({','.join('?' * len(q.guests))})"
        args += list(q.guests)
    cols = "guest, nic, interface, direction, protocol, sum(packets), sum(bytes)"
    if hourly_only:
        return db.execute(f"SELECT start, {cols} FROM hourly WHERE {where} "
                          f"GROUP BY 1, 2, 3, 4, 5, 6", args).fetchall()
    return db.execute(
        f"SELECT {store.DAY_OF_START}, {cols} FROM hourly WHERE {where} "
        f"GROUP BY 1, 2, 3, 4, 5, 6 UNION ALL SELECT start, {cols} FROM daily WHERE {where} "
        f"GROUP BY 1, 2, 3, 4, 5, 6", args + args).fetchall()


def _period(start: int, q: Query) -> str:
    when = _local(start)
    if q.view == "hours":
        return when.strftime("%Y-%m-%d %H:00")
    if q.view == "days":
        return when.strftime("%Y-%m-%d")
    first = month_of(when.date(), q.month_start)
    return first.strftime("%Y-%m") if q.month_start == 1 else first.isoformat()


def databases(given: tuple[str, ...]) -> list[str]:
    """The paths --db names: as given, or what a glob among them matches (sorted); each
    once. A glob that matches nothing is refused (a missing file by its own error)."""
    paths: list[str] = []
    for path in given:
        matched = sorted(glob.glob(path)) if glob.has_magic(path) and \
            not os.path.exists(path) else [path]
        if not matched:
            raise TotalsUnavailable(f"{path}: no database matches")
        paths += [p for p in matched if p not in paths]
    return paths


def _read(path: str, q: Query, since: int, until: int):
    """One database's rows, its guests' names (with when each was seen) and its ledger."""
    db = store.connect_read(path)
    try:
        rows = _rows(db, q, since, until, q.view == "hours" and q.top is None)
        names = db.execute("SELECT guest, name, seen FROM guests").fetchall()
        ledger = store.ledger_of(db, path)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # a damaged page met on the way
        raise TotalsUnavailable(f"{path}: damaged ({store.told(exc)})") from None
    finally:
        db.close()
    _check(path, rows, {guest: name for guest, name, _ in names})
    return rows, names, ledger


@dataclass
class Gathered:
    figures: dict[Who, dict[str, Figures]]  # per key and period
    names: dict[int, str | None]  # each guest's name, as last seen in any database
    span: tuple[int, int]  # [since, until)
    ledgers: list[store.Ledger]  # those read, in order
    copies: list[tuple[str, str]]  # (path left out, the path of its ledger that was read)

    @property
    def as_of(self) -> int | None:
        """When the oldest of the databases read was last written: every figure is whole
        up to then (None: one was written by a netmon that did not keep the time)."""
        times = [ledger.written for ledger in self.ledgers]
        return None if None in times else min(times, default=None)


def gather(q: Query, span: tuple[int, int] | None = None) -> Gathered:
    """Figures per key and period from every database --db names, summed exactly; over
    ``span`` ([since, until) as Unix times) where given, else the query's own."""
    since, until = span or _span(q)
    read = [(path, *_read(path, q, since, until)) for path in databases(q.db)]
    # A ledger's copies (the file and a snapshot of it, or two copies collected) hold the
    # same counts: the one written last is read, the rest left out and said.
    newest: dict[str, tuple] = {}
    for entry in read:
        ledger = entry[3]
        if ledger.ledger is None:
            continue
        best = newest.get(ledger.ledger)
        if best is None or (ledger.written or 0) > (best[3].written or 0):
            newest[ledger.ledger] = entry
    kept = [e for e in read if e[3].ledger is None or newest[e[3].ledger] is e]
    copies = [(e[0], newest[e[3].ledger][0]) for e in read if e not in kept]
    out: dict[Who, dict[str, Figures]] = {}
    names = _names([e[2] for e in kept])
    for _, rows, _, _ in kept:
        for start, guest, nic, interface, direction, protocol, packets, octets in rows:
            period = "" if q.top is not None else _period(start, q)
            who = (guest, nic if q.by_nic and guest else -1, interface)
            figures = out.setdefault(who, {}).setdefault(period, Figures())
            figures.add(direction, protocol, packets, octets)
    if q.rtt:
        out = _gather_tcp(q, since, until, [e[0] for e in kept])
    return Gathered(out, names, (since, until), [e[3] for e in kept], copies)


def _names(tables: list) -> dict[int, str | None]:
    """Each guest's name from the databases' guests tables: a name over none; of two
    names, the one seen last."""
    seen: dict[int, tuple[int, str | None]] = {}  # guest -> (seen, name)
    for rows in tables:
        for guest, name, when in rows:
            when = when if type(when) is int else 0
            best = seen.get(guest)
            if best is None or (name is not None and (best[1] is None or when >= best[0])):
                seen[guest] = (when, name)
    return {guest: name for guest, (_, name) in seen.items()}


@dataclass
class TcpFigures:
    """TCP health in a period: RTT samples by component and bucket (the kernel's, so
    percentiles read from their sum are as exact as an hour's), and data segments,
    retransmitted and out of order, by direction."""

    buckets: dict[str, list[int]] = field(default_factory=dict)
    segments: dict[str, list[int]] = field(default_factory=dict)

    def histogram(self, component: str) -> tcphealth.Histogram:
        counts = self.buckets.get(component) or [0] * RTT_BUCKETS
        return tcphealth.Histogram(sum(counts), 0, list(counts))


COMPONENTS = (tcphealth.NETWORK, tcphealth.GUEST, tcphealth.LOCAL)


def _gather_tcp(q: Query, since: int, until: int, paths: list[str]) -> dict:
    """TCP health's figures per key and period from the databases read (copies left out),
    summed exactly."""
    out: dict[Who, dict[str, TcpFigures]] = {}
    for path in paths:
        rtt, tcp = _read_tcp(path, q, since, until)
        for start, guest, nic, interface, component, bucket, samples in rtt:
            period = _period(start, q)
            who = (guest, nic if q.by_nic and guest else -1, interface)
            f = out.setdefault(who, {}).setdefault(period, TcpFigures())
            f.buckets.setdefault(component, [0] * RTT_BUCKETS)[bucket] += samples
        for start, guest, nic, interface, direction, data, retrans, reorder in tcp:
            period = _period(start, q)
            who = (guest, nic if q.by_nic and guest else -1, interface)
            f = out.setdefault(who, {}).setdefault(period, TcpFigures())
            seg = f.segments.setdefault(direction, [0, 0, 0])
            seg[0] += data
            seg[1] += retrans
            seg[2] += reorder
    return out


def _read_tcp(path: str, q: Query, since: int, until: int) -> tuple[list, list]:
    """One database's RTT and segment rows in the period (none in a database made before
    they were kept), each value checked as _check() checks the traffic's."""
    db = store.connect_read(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = "
                                           "'table'")}
        if not set(store.TCP_TABLES) <= tables:
            return [], []
        where = "start >= ? AND start < ?"
        args: list = [since, until]
        if q.guests:
            where += f" AND guest IN ({','.join('?' * len(q.guests))})"
            args += list(q.guests)
        hourly = q.view == "hours"
        out = []
        for kind, cols in (("rtt", "component, bucket, sum(samples)"),
                           ("tcp", "direction, sum(data), sum(retrans), sum(reorder)")):
            group = "GROUP BY 1, 2, 3, 4, 5" + (", 6" if kind == "rtt" else "")
            select = f"guest, nic, interface, {cols}"
            if hourly:
                sql = f"SELECT start, {select} FROM {kind}_hourly WHERE {where} {group}"
                out.append(db.execute(sql, args).fetchall())
            else:
                sql = (f"SELECT {store.DAY_OF_START}, {select} FROM {kind}_hourly WHERE "
                       f"{where} {group} UNION ALL SELECT start, {select} FROM {kind}_daily "
                       f"WHERE {where} {group}")
                out.append(db.execute(sql, args + args).fetchall())
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        raise TotalsUnavailable(f"{path}: damaged ({store.told(exc)})") from None
    finally:
        db.close()
    rtt, tcp = out

    def whole(v) -> bool:
        return type(v) is int and v >= 0

    for rows, kinds, histogram in ((rtt, COMPONENTS, True), (tcp, ("in", "out"), False)):
        for start, guest, nic, interface, what, *counts in rows:
            good = (type(start) is int and whole(guest) and type(nic) is int and nic >= -1
                    and type(interface) is str and what in kinds
                    and all(whole(n) for n in counts)
                    and (not histogram or counts[0] < RTT_BUCKETS))
            if good:
                continue
            raise TotalsUnavailable(f"{path}: damaged (a round-trip or segment row holds a "
                                    f"value netmon does not write)")
    return rtt, tcp


def _check(path: str, rows: list, names: dict) -> None:
    """Every value as netmon writes it, or the database is damaged: SQLite keeps any
    value in any column, and a page changed on disk can hold a NULL hour, a direction
    that is neither in nor out, a name that is a number. A ledger is refused whole
    rather than read in part; the error names the column, never what is in it."""
    def whole(v) -> bool:
        return type(v) is int and v >= 0

    for row in rows:
        start, guest, nic, interface, direction, protocol, packets, octets = row
        for column, good in (("start", type(start) is int), ("guest", whole(guest)),
                             ("nic", type(nic) is int and nic >= -1),
                             ("interface", type(interface) is str),
                             ("direction", direction in ("in", "out")),
                             ("protocol", type(protocol) is str), ("packets", whole(packets)),
                             ("bytes", whole(octets))):
            if not good:
                raise TotalsUnavailable(f"{path}: damaged (a traffic row's {column} is not "
                                        f"one netmon writes)")
    for guest, name in names.items():
        if type(guest) is not int or not (name is None or type(name) is str):
            raise TotalsUnavailable(f"{path}: damaged (a guest's number or name is not one "
                                    f"netmon writes)")


NAME_WIDTH = 24  # a guest's name in a table, cut with an ellipsis past it (JSON: whole)
BYTES_NOTE = "bytes on the wire, Ethernet header included; 1 KiB = 1024 B"


def _label(who: Who, names: dict[int, str | None]) -> str:
    guest, nic, interface = who
    if not guest:
        return visible(interface)
    name = names.get(guest)
    if name:  # stored as read; shown visible, then cut (an escape is not split: ok if it is)
        name = visible(name)
    if name and len(name) > NAME_WIDTH:
        name = name[:NAME_WIDTH - 1] + "…"
    return f"guest {guest}" + (f" ({name})" if name else "") + (
        f" net{nic}" if nic >= 0 else "")


def _order(who: Who) -> tuple:
    return (0, who[0], who[1], "") if who[0] else (1, 0, -1, who[2])


def human_bytes(n: int) -> str:
    """1536 -> '1.50 KiB', as vnstat shows traffic (binary prefixes)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [fmt(head)] + [fmt(r) for r in rows]


def _sides(who: Who) -> tuple[str, str]:
    """(received, sent) as the row's subject sees them, in the host interface's terms: a
    guest received what its tap or veth sent out, and sent what came in on it; a host
    interface received what came in."""
    return (proxmox.GUEST_RECEIVED, proxmox.GUEST_SENT) if who[0] else ("in", "out")


def _cells(label: str, who: Who, f: Figures) -> list[str]:
    received, sent = _sides(who)
    return [label, human_bytes(f.bytes[received]), human_bytes(f.bytes[sent]),
            human_bytes(f.total_bytes), f"{f.total_packets:,}"]


def _fields(who: Who, names, f: Figures, by_nic: bool) -> dict:
    guest, nic, interface = who
    return {"guest": guest or None, "guest_name": names.get(guest) if guest else None,
            **({"nic": nic if guest else None} if by_nic else {}),
            "interface": interface or None,
            "received_packets": f.packets[_sides(who)[0]],
            "received_bytes": f.bytes[_sides(who)[0]],
            "sent_packets": f.packets[_sides(who)[1]], "sent_bytes": f.bytes[_sides(who)[1]],
            "packets": f.total_packets, "bytes": f.total_bytes}


def _host_view(f: Figures) -> dict:
    """in and out as the host's interface counted them (JSON keeps them as they were)."""
    return {"in_packets": f.packets["in"], "in_bytes": f.bytes["in"],
            "out_packets": f.packets["out"], "out_bytes": f.bytes["out"]}


def _json_row(who: Who, g: Gathered, f: Figures, by_nic: bool, **extra) -> str:
    return json.dumps({**extra, **_fields(who, g.names, f, by_nic), **_host_view(f),
                       "protocols": dict(sorted(f.protocols.items())),
                       "as_of": _iso(g.as_of)})


def _iso(t: int | None) -> str | None:
    """A Unix time as local ISO 8601 with its offset (2026-12-06T14:00:05+01:00)."""
    return None if t is None else _local(t).astimezone().isoformat(timespec="seconds")


def _spreadsheet_safe(value):
    """A cell a spreadsheet will not run: text starting with = + - @ (or a tab or CR)
    is a formula to Excel and LibreOffice; a guest's name is anyone's to choose (OWASP's
    CSV injection advice: a leading apostrophe)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(g: Gathered, q: Query, rows: list[tuple[str, Who, Figures]], out: TextIO) -> None:
    """A header and a row per key and period: for a spreadsheet."""
    first = "rank" if q.top is not None else q.view[:-1]
    fields = ["guest", "guest_name", *(["nic"] if q.by_nic else []), "interface",
              "received_packets", "received_bytes", "sent_packets", "sent_bytes", "packets",
              "bytes"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([first, *fields, "as_of"])
    for period, who, f in rows:
        cells = _fields(who, g.names, f, q.by_nic)
        writer.writerow([_spreadsheet_safe(v) for v in
                         [period, *("" if cells[k] is None else cells[k] for k in fields),
                          _iso(g.as_of) or ""]])


def _as_of_lines(g: Gathered) -> str:
    """Whose figures these are, and as of when: a line per database read, and per copy
    left out."""
    lines = []
    for ledger in g.ledgers:
        when = (_local(ledger.written).strftime("%Y-%m-%d %H:%M:%S")
                if ledger.written is not None else "an unknown time (an older netmon wrote it)")
        node = f", node {visible(ledger.node)}" if ledger.node and len(g.ledgers) > 1 else ""
        lines.append(f"as of {when}: the last write to {visible(ledger.path)}{node}")
    lines += [f"{visible(copy)} left out: a copy of {visible(of)}'s ledger (read once)"
              for copy, of in g.copies]
    # Which bytes, in which units: top counts IP bytes in powers of 1000.
    lines.append(BYTES_NOTE)
    return "\n".join(lines) + "\n\n"


def check(q: Query) -> None:
    """The query's options, as they go together (UsageError: the one line to show)."""
    if q.view not in VIEWS:
        raise UsageError(f"view must be one of {', '.join(VIEWS)}")
    if not 1 <= q.month_start <= 28:
        raise UsageError("--month-start takes a day from 1 to 28 (every month has it)")
    if q.json and q.csv:
        raise UsageError("--json and --csv: one at a time")
    if q.rtt and (q.top is not None or q.csv):
        raise UsageError("--rtt shows round trips and retransmissions per period: it goes "
                         "without --top and --csv")


def report(q: Query, out: TextIO) -> int:
    """Print the query's tables (or JSON lines); returns how many keys had traffic."""
    check(q)
    g = gather(q)
    if q.rtt:
        return _report_tcp(q, g, out)
    data, names = g.figures, g.names
    if q.top is not None:
        return _top(q, g, out)
    unit = q.view[:-1]
    if q.csv:
        _csv(g, q, [(period, who, data[who][period]) for who in sorted(data, key=_order)
                    for period in sorted(data[who])], out)
        return len(data)
    if not q.json:
        out.write(_as_of_lines(g))
    for who in sorted(data, key=_order):
        periods = data[who]
        if q.json:
            for period in sorted(periods):
                out.write(_json_row(who, g, periods[period], q.by_nic, **{unit: period})
                          + "\n")
            continue
        total = Figures()
        for f in periods.values():
            for d in ("in", "out"):
                total.packets[d] += f.packets[d]
                total.bytes[d] += f.bytes[d]
        rows = [_cells(p, who, periods[p]) for p in sorted(periods)]
        lines = _table([unit, "received", "sent", "total", "packets"],
                       rows + [_cells("total", who, total)])
        rule = "-" * len(lines[0])
        out.write(f"{_label(who, names)}\n" + "\n".join(
            ["  " + lines[0], "  " + rule] + ["  " + r for r in lines[1:-1]]
            + ["  " + rule, "  " + lines[-1]]) + "\n\n")
    if not data and not q.json:
        out.write("no traffic in the period\n")
    return len(data)


def _report_tcp(q: Query, g: Gathered, out: TextIO) -> int:
    """netmon totals --rtt: per key and period, each component's RTT percentiles (from
    the kernel's buckets, summed over the period: each within 12.5%) and the data
    segments the key sent and received, retransmitted and out of order."""
    unit = q.view[:-1]
    data = g.figures
    if not q.json:
        out.write(_as_of_lines(g).replace(BYTES_NOTE, RTT_NOTE))
    for who in sorted(data, key=_order):
        periods = data[who]
        received, sent = _sides(who)
        guest, nic, interface = who
        ident = {"guest": guest or None, "guest_name": g.names.get(guest) if guest else None,
                 **({"nic": nic if guest else None} if q.by_nic else {}),
                 "interface": interface or None}
        rtt_rows, seg_rows = [], []
        for period in sorted(periods):
            f = periods[period]
            for component in COMPONENTS:
                h = f.histogram(component)
                if not h.count:
                    continue
                p50, p90, p99 = (h.quantile(x) for x in (0.5, 0.9, 0.99))
                if q.json:
                    out.write(json.dumps({
                        unit: period, **ident, "component": component, "samples": h.count,
                        "median_ns": round(p50), "p90_ns": round(p90), "p99_ns": round(p99),
                        "buckets": [[tcphealth.bucket_bounds(b)[0], n]
                                    for b, n in enumerate(h.buckets) if n],
                        "as_of": _iso(g.as_of)}) + "\n")
                rtt_rows.append([period, component, f"{h.count:,}", tcphealth.ms(p50),
                                 tcphealth.ms(p90), tcphealth.ms(p99)])
            if f.segments:
                sides = {side: f.segments.get(d, [0, 0, 0])
                         for side, d in (("received", received), ("sent", sent))}
                if q.json:
                    out.write(json.dumps({
                        unit: period, **ident, **{
                            side: {"segments": s[0], "retransmitted": s[1],
                                   "out_of_order": s[2]} for side, s in sides.items()},
                        "as_of": _iso(g.as_of)}) + "\n")
                seg_rows.append([period, *(cell for s in sides.values() for cell in (
                    f"{s[0]:,}", f"{s[1]:,} ({100 * s[1] / s[0] if s[0] else 0:.2f}%)",
                    f"{s[2]:,}"))])
        if q.json:
            continue
        out.write(f"{_label(who, g.names)}\n")
        if rtt_rows:
            out.write("\n".join("  " + line for line in _table(
                [unit, "component", "samples", "median", "p90", "p99"], rtt_rows)) + "\n")
        if seg_rows:
            out.write("\n".join("  " + line for line in _table(
                [unit, "received", "retransmitted", "out of order", "sent", "retransmitted",
                 "out of order"], seg_rows)) + "\n")
        out.write("\n")
    if not data and not q.json:
        out.write("no round trips or TCP segments in the period (netmon rtt --totals "
                  "keeps them)\n")
    return len(data)


RTT_NOTE = ("round trips: network (beyond the interface), guest (behind a guest's tap or "
            "veth), local (this host); percentiles each within 12.5%; data segments as the "
            "subject sent and received them")


def _top(q: Query, g: Gathered, out: TextIO) -> int:
    names = g.names
    ranked = sorted(((who, periods[""]) for who, periods in g.figures.items()),
                    key=lambda wf: (-wf[1].total_bytes, _order(wf[0])))[:q.top]
    if q.json:
        for rank, (who, f) in enumerate(ranked, 1):
            out.write(_json_row(who, g, f, q.by_nic, rank=rank) + "\n")
        return len(ranked)
    if q.csv:
        _csv(g, q, [(str(rank), who, f) for rank, (who, f) in enumerate(ranked, 1)], out)
        return len(ranked)
    out.write(_as_of_lines(g))
    since, until = g.span
    out.write(f"top {q.top} by bytes, {_local(since):%Y-%m-%d %H:%M} to "
              f"{_local(until):%Y-%m-%d %H:%M}\n")
    rows = [[f"{rank}. {_label(who, names)}", *_cells("", who, f)[1:]]
            for rank, (who, f) in enumerate(ranked, 1)]
    if rows:
        out.write("\n".join("  " + line for line in
                            _table(["", "received", "sent", "total", "packets"], rows))
                  + "\n")
    else:
        out.write("no traffic in the period\n")
    return len(ranked)
