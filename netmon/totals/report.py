"""netmon totals: tables of what --totals kept, by hour, day or (billing) month.

Reads the database only (store.connect_read): no root, no BPF. A guest's NICs
are folded together and it is named as last seen; host interfaces go by name.
``in`` and ``out`` are as the host's interface sees them: a guest's tap
receives what the guest sends. Times are local, as the host's clock shows them.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TextIO

from netmon.escape import visible
from netmon.totals import store
from netmon.errors import TotalsUnavailable, UsageError

VIEWS = ("hours", "days", "months")
# How far back a view goes when --since is not given.
DEFAULT_SPAN = {"hours": 24, "days": 30, "months": 12}

Who = tuple[int, str]  # (guest, "") or (0, interface)


@dataclass
class Query:
    db: str = store.DEFAULT_PATH
    view: str = "days"
    since: str | None = None
    until: str | None = None
    guests: tuple[int, ...] = ()
    top: int | None = None
    month_start: int = 1  # the day of the month a (billing) month begins on
    json: bool = False
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
    cols = "guest, interface, direction, protocol, sum(packets), sum(bytes)"
    if hourly_only:
        return db.execute(f"SELECT start, {cols} FROM hourly WHERE {where} "
                          f"GROUP BY 1, 2, 3, 4, 5", args).fetchall()
    return db.execute(
        f"SELECT {store.DAY_OF_START}, {cols} FROM hourly WHERE {where} GROUP BY 1, 2, 3, 4, 5 "
        f"UNION ALL SELECT start, {cols} FROM daily WHERE {where} GROUP BY 1, 2, 3, 4, 5",
        args + args).fetchall()


def _period(start: int, q: Query) -> str:
    when = _local(start)
    if q.view == "hours":
        return when.strftime("%Y-%m-%d %H:00")
    if q.view == "days":
        return when.strftime("%Y-%m-%d")
    first = month_of(when.date(), q.month_start)
    return first.strftime("%Y-%m") if q.month_start == 1 else first.isoformat()


def gather(q: Query) -> tuple[dict[Who, dict[str, Figures]], dict[int, str | None],
                              tuple[int, int]]:
    """Figures per key and period, the guests' names, and the period [since, until)."""
    db = store.connect_read(q.db)
    try:
        since, until = _span(q)
        rows = _rows(db, q, since, until, q.view == "hours" and q.top is None)
        names = dict(db.execute("SELECT guest, name FROM guests").fetchall())
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # a damaged page met on the way
        raise TotalsUnavailable(f"{q.db}: damaged ({store.told(exc)})") from None
    finally:
        db.close()
    _check(q.db, rows, names)
    out: dict[Who, dict[str, Figures]] = {}
    for start, guest, interface, direction, protocol, packets, octets in rows:
        period = "" if q.top is not None else _period(start, q)
        figures = out.setdefault((guest, interface), {}).setdefault(period, Figures())
        figures.add(direction, protocol, packets, octets)
    return out, names, (since, until)


def _check(path: str, rows: list, names: dict) -> None:
    """Every value as netmon writes it, or the database is damaged: SQLite keeps any
    value in any column, and a page changed on disk can hold a NULL hour, a direction
    that is neither in nor out, a name that is a number. A ledger is refused whole
    rather than read in part; the error names the column, never what is in it."""
    def whole(v) -> bool:
        return type(v) is int and v >= 0

    for row in rows:
        start, guest, interface, direction, protocol, packets, octets = row
        for column, good in (("start", type(start) is int), ("guest", whole(guest)),
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


def _label(who: Who, names: dict[int, str | None]) -> str:
    guest, interface = who
    if not guest:
        return visible(interface)
    name = names.get(guest)
    if name:  # stored as read; shown visible, then cut (an escape is not split: ok if it is)
        name = visible(name)
    if name and len(name) > NAME_WIDTH:
        name = name[:NAME_WIDTH - 1] + "…"
    return f"guest {guest}" + (f" ({name})" if name else "")


def _order(who: Who) -> tuple:
    return (0, who[0], "") if who[0] else (1, 0, who[1])


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


def _cells(label: str, f: Figures) -> list[str]:
    return [label, human_bytes(f.bytes["in"]), human_bytes(f.bytes["out"]),
            human_bytes(f.total_bytes), f"{f.total_packets:,}"]


def _json_row(who: Who, names, f: Figures, **extra) -> str:
    guest, interface = who
    row = {**extra, "guest": guest or None, "guest_name": names.get(guest) if guest else None,
           "interface": interface or None,
           "in_packets": f.packets["in"], "in_bytes": f.bytes["in"],
           "out_packets": f.packets["out"], "out_bytes": f.bytes["out"],
           "packets": f.total_packets, "bytes": f.total_bytes,
           "protocols": dict(sorted(f.protocols.items()))}
    return json.dumps(row)


def report(q: Query, out: TextIO) -> int:
    """Print the query's tables (or JSON lines); returns how many keys had traffic."""
    if q.view not in VIEWS:
        raise UsageError(f"view must be one of {', '.join(VIEWS)}")
    if not 1 <= q.month_start <= 28:
        raise UsageError("--month-start takes a day from 1 to 28 (every month has it)")
    data, names, span = gather(q)
    if q.top is not None:
        return _top(q, data, names, span, out)
    unit = q.view[:-1]
    for who in sorted(data, key=_order):
        periods = data[who]
        if q.json:
            for period in sorted(periods):
                out.write(_json_row(who, names, periods[period], **{unit: period}) + "\n")
            continue
        total = Figures()
        for f in periods.values():
            for d in ("in", "out"):
                total.packets[d] += f.packets[d]
                total.bytes[d] += f.bytes[d]
        rows = [_cells(p, periods[p]) for p in sorted(periods)]
        lines = _table([unit, "in", "out", "total", "packets"], rows + [_cells("total", total)])
        rule = "-" * len(lines[0])
        out.write(f"{_label(who, names)}\n" + "\n".join(
            ["  " + lines[0], "  " + rule] + ["  " + r for r in lines[1:-1]]
            + ["  " + rule, "  " + lines[-1]]) + "\n\n")
    if not data and not q.json:
        out.write("no traffic in the period\n")
    return len(data)


def _top(q: Query, data, names, span: tuple[int, int], out: TextIO) -> int:
    ranked = sorted(((who, periods[""]) for who, periods in data.items()),
                    key=lambda wf: (-wf[1].total_bytes, _order(wf[0])))[:q.top]
    if q.json:
        for rank, (who, f) in enumerate(ranked, 1):
            out.write(_json_row(who, names, f, rank=rank) + "\n")
        return len(ranked)
    since, until = span
    out.write(f"top {q.top} by bytes, {_local(since):%Y-%m-%d %H:%M} to "
              f"{_local(until):%Y-%m-%d %H:%M}\n")
    rows = [[f"{rank}. {_label(who, names)}", *_cells("", f)[1:]]
            for rank, (who, f) in enumerate(ranked, 1)]
    if rows:
        out.write("\n".join("  " + line for line in
                            _table(["", "in", "out", "total", "packets"], rows)) + "\n")
    else:
        out.write("no traffic in the period\n")
    return len(ranked)
