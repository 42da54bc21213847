"""top's view: the rows it shows (flows, or groups of them: --by), their order, the
header's totals, the drops panel's rates, and the view as plain text. No terminal here:
screen.py draws it on one, sink.py feeds it.
"""

from __future__ import annotations

import heapq
import operator
from dataclasses import dataclass
from typing import Callable

from netmon.escape import visible
from netmon.host import proxmox
from netmon import protocols
from netmon.events import DIR_NAMES
from netmon.flows import WINDOWS, Flow, FlowBook
from netmon.sinks.formats import flow_endpoints

SORTS = ("rate", "bytes", "packets")
# What a row is: a flow, or the flows of one guest, interface, host or (service) port.
BYS = ("flow", "guest", "interface", "host", "port")
BY_TITLES = {"flow": "FLOW", "guest": "GUEST", "interface": "INTERFACE", "host": "HOST",
             "port": "PORT"}
ROWS_DEFAULT = 20
# Groups whose flows all ended keep their totals (TOTAL is the run's); hosts and ports are
# unbounded, so at most this many groups per --by are remembered, the least recent first
# forgotten.
RETIRED_MAX = 4096
PORTED = (6, 17, 132)  # TCP, UDP, SCTP: ports name a service
# TCP health's columns cover one window at a time (the w key moves them to the next), the
# middle one at first: enough samples (the kernel starts ~10 a second per flow way) for a
# 99th percentile, recent enough to follow a change.
TCP_WINDOW = WINDOWS[1]


def rtt_cell(rtt: tuple[float | None, float | None]) -> str:
    """``0.12/0.40ms``: the median and the 99th percentile; "-" without samples."""
    p50, p99 = rtt
    if p50 is None:
        return "-"
    if p99 >= 1e9:
        return f"{p50 / 1e9:.2g}/{p99 / 1e9:.2g}s"
    digits = 2 if p99 < 10e6 else 0
    return f"{p50 / 1e6:.{digits}f}/{p99 / 1e6:.{digits}f}ms"


def retrans_cell(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}"


def human(value: float, unit: str) -> str:
    """1234567 -> ``1.23M``+unit, as iftop prints rates (decimal prefixes)."""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000 or prefix == "T":
            return f"{value:.0f}{unit}" if prefix == "" else f"{value:.3g}{prefix}{unit}"
        value /= 1000
    return f"{value}{unit}"  # not reached


@dataclass
class Row:
    proto: str
    endpoints: str
    where: str
    pps: float
    bps: tuple[float, ...]  # per window
    total: int
    # A guest's or an interface's row where both directions are watched: its bytes
    # (received, sent) as the row's subject sees them, in place of the total.
    split: tuple[int, int] | None = None
    # TCP health over the view's window for it: the RTT samples' median and 99th
    # percentile (ns) and retransmitted segments' share of the packets (None: none to tell)
    rtt: tuple[float | None, float | None] = (None, None)
    retrans: float | None = None


# With both directions watched, a guest's row says what the guest received and sent: on
# its tap or veth, "in" is what the guest sent (the host receives it from the guest). An
# interface's row says what the interface received (in) and sent (out).
SPLIT_TITLES = {"guest": ("RECEIVED", "SENT"), "interface": ("IN", "OUT")}


class Groups:
    """What a flow counts for under each --by other than flow: (key, label, sent) per
    group; a host's are both its ends (what it sent and received). ``sent``: the flow is
    what the group's subject sent (a guest: in on its tap; an interface: out)."""

    def __init__(self, info: Callable[[int], dict], both: bool):
        """``info``: an ifindex's interface_info(); ``both``: both directions are watched
        (guest and interface rows then split their bytes into received and sent)."""
        self._info = info
        self.both = both

    def of(self, by: str, flow: Flow) -> list[tuple[tuple, str, bool]]:
        k = flow.key
        if by in ("guest", "interface"):
            info = self._info(k.ifindex)
            if by == "guest" and "guest" in info:
                name = info.get("guest_name")
                label = f"{visible(name)} ({info['guest']})" if name else f"vm{info['guest']}"
                return [(("g", info["guest"]), label, proxmox.guest_sent(k.direction))]
            name = info["ifname"] or f"if{k.ifindex}"
            return [(("i", name), visible(name), k.direction == "out")]
        if by == "host":
            return [(("h", k.src), k.src, True), (("h", k.dst), k.dst, False)]
        proto = protocols.name(k.ipproto)
        if k.ipproto in PORTED:  # the service's port: the lower of the two
            port = min(k.sport, k.dport)
            return [(("p", k.ipproto, port), f"{proto}/{port}", False)]
        return [(("p", k.ipproto), proto, False)]


class TopView:
    """The state of the view (sort, key, rows) and its text; drawing is the caller's."""

    def __init__(self, book: FlowBook, where: Callable[[Flow], str] | None,
                 where_title: str = "WHERE", sort: str = "rate", rows: int = ROWS_DEFAULT,
                 by: str = "flow", groups: Groups | None = None, tcp: bool = False):
        """``where``: a flow's interface and direction (or guest) as the view shows them;
        None when one interface and one direction are watched (no column needed).
        ``groups``: what a flow counts for under each --by (None: flows only). ``tcp``:
        TCP health is measured: RTT and retransmission columns."""
        self.book = book
        self.tcp = tcp
        self._where = where
        self._where_title = where_title if where else None
        self.sort = sort
        self.by = by
        self.tcp_window = TCP_WINDOW  # seconds: the window TCP health's columns cover
        self._groups = groups
        self.rows = rows
        self._cached_at, self._cache = -1, {}
        # Per --by: the totals of its groups' flows that ended, key -> [label, bytes,
        # packets, bytes received, bytes sent], least recently added to first.
        self._retired: dict[str, dict[tuple, list]] = {by: {} for by in BYS[1:]}
        if groups is not None:
            book.on_end = self._retire

    def _retire(self, flow: Flow) -> None:
        for by, retired in self._retired.items():
            for key, label, sent in self._groups.of(by, flow):
                r = retired.pop(key, None) or [label, 0, 0, 0, 0]
                r[1] += flow.total_bytes
                r[2] += flow.total_packets
                r[4 if sent else 3] += flow.total_bytes
                retired[key] = r  # now the most recent
                if len(retired) > RETIRED_MAX:
                    del retired[next(iter(retired))]

    @property
    def where_title(self) -> str | None:
        return self._where_title if self.by == "flow" else None

    @property
    def total_titles(self) -> tuple[str, ...]:
        """The last columns: TOTAL, or a guest's RECEIVED and SENT (an interface's IN and
        OUT) where both directions are watched."""
        if self.by in SPLIT_TITLES and self._groups is not None and self._groups.both:
            return SPLIT_TITLES[self.by]
        return ("TOTAL",)

    @staticmethod
    def total_cells(row: Row) -> list[str]:
        return [human(n, "B") for n in row.split] if row.split else [human(row.total, "B")]

    def tcp_shown(self, rows: list[Row]) -> bool:
        """TCP health's columns are shown when measured and a row has a figure in them
        (UDP's rows alone would fill them with dashes)."""
        return self.tcp and any(r.rtt[0] is not None or r.retrans is not None for r in rows)

    @property
    def tcp_titles(self) -> tuple[str, ...]:
        return (f"RTT {self.tcp_window}s", "RETR%") if self.tcp else ()

    def tcp_cells(self, row: Row) -> list[str]:
        return [rtt_cell(row.rtt), retrans_cell(row.retrans)] if self.tcp else []

    @property
    def key_title(self) -> str:
        return BY_TITLES[self.by]

    def next_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]

    def next_window(self) -> None:
        """TCP health's columns over the next of the windows (2 s, 10 s, 40 s in turn)."""
        self.tcp_window = WINDOWS[(WINDOWS.index(self.tcp_window) + 1) % len(WINDOWS)]

    def next_by(self) -> None:
        if self._groups is not None:
            self.by = BYS[(BYS.index(self.by) + 1) % len(BYS)]

    def top(self) -> list[Row]:
        if self.by != "flow":
            return self._grouped()
        book = self.book
        flows = self._chosen()
        where = self._where or (lambda flow: "")
        rows = []
        for f in flows:
            rates = [book.rate(f, w) for w in WINDOWS]
            row = Row(protocols.name(f.key.ipproto), flow_endpoints(f.key), where(f),
                      rates[0][1], tuple(bps for bps, _ in rates), f.total_bytes)
            if self.tcp:
                p50, p99, row.retrans = book.tcp_window([f], self.tcp_window)
                row.rtt = (p50, p99)
            rows.append(row)
        return rows

    def _grouped(self) -> list[Row]:
        """One row per group: its flows' rates and the run's totals summed (those of its
        flows that ended too), in the sort's order. A group stays while any of its flows has
        packets in the longest window, or it has totals."""
        book = self.book
        recent = book.recent(distinct=False)
        busy = book.window[-1]  # flows with packets in the longest window
        bits = self._bits([f for f in recent if f in busy])
        # key -> [label, bits per window, pps, bytes, packets, received, sent, flows]
        sums: dict[tuple, list] = {}

        def group(key, label) -> list:
            g = sums.get(key)
            if g is None:
                g = sums[key] = [label, [0.0] * len(WINDOWS), 0.0, 0, 0, 0, 0, []]
            return g

        # Live flows in the order they appeared (serial), then the ended: ties go to the
        # first.
        for flow in recent:
            rate = bits.get(flow) if flow in busy else None
            pps = book.rate(flow, WINDOWS[0])[1] if rate else 0.0
            for key, label, sent in self._groups.of(self.by, flow):
                g = group(key, label)
                # A group's RTT and RETR%: of the segments its subject sent (a guest's: the
                # network's round trips, its own retransmissions); a port's: the service's.
                if self.tcp and flow in busy and (
                        sent if self.by != "port" else flow.key.sport == key[-1]):
                    g[7].append(flow)
                if rate:
                    g[1] = [a + b for a, b in zip(g[1], rate)]
                    g[2] += pps
                if not flow.ended:  # an ended flow's totals are in _retired
                    g[3] += flow.total_bytes
                    g[4] += flow.total_packets
                    g[6 if sent else 5] += flow.total_bytes
        for key, (label, nbytes, packets, received, sent) in self._retired[self.by].items():
            g = group(key, label)
            g[3] += nbytes
            g[4] += packets
            g[5] += received
            g[6] += sent
        if self.sort == "rate":
            order = lambda g: (*g[1], g[3])  # noqa: E731
        else:
            order = (lambda g: g[3]) if self.sort == "bytes" else (lambda g: g[4])  # noqa: E731
        chosen = heapq.nlargest(self.rows, sums.values(), key=order)  # ties: the first seen
        split = len(self.total_titles) == 2
        rows = [Row("", label, "", pps, tuple(bps), total, (rx, tx) if split else None)
                for label, bps, pps, total, _, rx, tx, _ in chosen]
        if self.tcp:
            for row, g in zip(rows, chosen):
                p50, p99, row.retrans = book.tcp_window(g[7], self.tcp_window)
                row.rtt = (p50, p99)
        return rows

    def _chosen(self) -> list[Flow]:
        """The flows the view shows, in its order: as sorting every flow by its key would
        give them (ties to the older flow), without rating flows that cannot be among them."""
        book, n = self.book, self.rows
        if self.sort != "rate":
            total = operator.attrgetter("total_bytes" if self.sort == "bytes" else "total_packets")
            return heapq.nlargest(n, book.recent(), key=lambda f: (total(f), -f.serial))
        # A flow with packets in a shorter window outranks every flow without: take the
        # flows of the 2 s window first, then of the 10 s and 40 s ones, then the idle.
        chosen: list[Flow] = []
        taken: set = set()
        for tier in (*book.window, book.flows.values()):
            if len(chosen) >= n:
                break
            rest = [f for f in tier if f not in taken and not (f.ended and book.live(f))]
            bits = self._bits(rest)
            chosen += heapq.nlargest(n - len(chosen), rest,
                                     key=lambda f: (*bits[f], f.total_bytes, -f.serial))
            taken.update(rest)
        return chosen

    def totals(self) -> dict[tuple[str, str], float]:
        """bits/s over the shortest window, per (direction, protocol)."""
        # Every kind of flow there is, in the order of its oldest flow (a stable sort
        # keeps that order among equal rates); usually found in the first few flows.
        kinds: dict[tuple[int, int], None] = {}
        for flow in self.book.flows.values():
            kinds.setdefault((flow.key.dir, flow.key.ipproto))
            if len(kinds) == len(self.book.kinds):
                break
        out: dict[tuple[str, str], float] = {
            (DIR_NAMES[d], protocols.name(p)): 0.0 for d, p in kinds}
        busy = self.book.window[0]
        bits = self._bits(busy)
        # Added in the flows' order: float sums then come out the same to the last bit.
        for flow in sorted(busy, key=operator.attrgetter("serial")):
            k = (flow.key.direction, protocols.name(flow.key.ipproto))
            out[k] = out.get(k, 0.0) + bits[flow][0]
        return out

    def _bits(self, flows) -> dict[Flow, tuple[float, ...]]:
        """book.bits(), worked out once per interval: the rows and the header share it."""
        if self._cached_at != self.book.ticks:
            self._cached_at, self._cache = self.book.ticks, {}
        missing = [f for f in flows if f not in self._cache]
        if missing:
            self._cache.update(self.book.bits(missing))
        return self._cache

    def header(self, title: str, lost: int, overflow: int) -> list[str]:
        totals = self.totals()
        parts = []
        for direction in ("in", "out"):
            mine = sorted(((p, bps) for (d, p), bps in totals.items() if d == direction),
                          key=lambda pb: -pb[1])
            if mine:
                parts.append(f"{direction}: " + " ".join(f"{p} {human(b, 'b/s')}"
                                                         for p, b in mine))
        by = f"  by: {self.by}" if self.by != "flow" else ""
        return [f"{title}  sort: {self.sort}{by}  flows: {self.book.active}  "
                f"lost: {lost}  overflow: {overflow}",
                "  ".join(parts) or (f"no traffic in the last {WINDOWS[0]} s" if self.book.seen
                                     else "no traffic yet")]

    def plain(self, title: str, lost: int, overflow: int) -> str:
        """The view as plain text: for a pipe or a file, one block per interval."""
        named = [self.where_title] if self.where_title else []
        proto = ["PROTO"] if self.by == "flow" else []
        rows = self.top()
        tcp = self.tcp_shown(rows)
        cols = [*proto, self.key_title, *named, "PKT/S"] + [f"{w}s" for w in WINDOWS] + [
            *(self.tcp_titles if tcp else ()), *self.total_titles]
        table = [cols] + [[*([r.proto] if proto else []), r.endpoints,
                           *([r.where] if named else []), f"{r.pps:.0f}",
                           *(human(b, "b") for b in r.bps),
                           *(self.tcp_cells(r) if tcp else ()), *self.total_cells(r)]
                          for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        left = len(proto) + 1 + len(named)  # text columns, left-aligned; numbers right-aligned
        lines = self.header(title, lost, overflow)
        for row in table:
            cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in
                     enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines) + "\n\n"


class DropRates:
    """top --drops: drops per second by where and why over each window, from the kernel's
    running totals (Summary.drops) read once a second."""

    def __init__(self, now: float, where: Callable[[str], str]):
        self._where = where
        # (time, totals): the table is empty when the program loads, just before this
        self._history: list[tuple[float, dict[tuple[str, str], int]]] = [(now, {})]

    def add(self, now: float, rows: list[tuple[str, str, str, int]]) -> None:
        totals: dict[tuple[str, str], int] = {}
        for ifname, reason, at, n in rows:
            key = (self._where(ifname), " ".join(filter(None, (reason, at))))
            totals[key] = totals.get(key, 0) + n
        self._history.append((now, totals))
        while len(self._history) > 2 and self._history[1][0] <= now - WINDOWS[-1]:
            self._history.pop(0)  # the oldest that still spans the longest window stays

    def top(self, n: int) -> list[tuple[str, str, tuple[float, ...], int]]:
        """(where, why, drops/s per window, total), the most frequent first."""
        now, latest = self._history[-1]
        rows = []
        for key, total in latest.items():
            rates = []
            for w in WINDOWS:
                then, old = next(((t, o) for t, o in self._history if t >= now - w - 0.5),
                                 self._history[0])
                rates.append((total - old.get(key, 0)) / max(now - then, 1e-9))
            rows.append((*key, tuple(rates), total))
        rows.sort(key=lambda r: (-r[2][0], -r[3], r[0], r[1]))
        return rows[:n]

    def plain(self, n: int) -> list[str]:
        table = [["DROPS", "WHY"] + [f"{w}s/s" for w in WINDOWS] + ["TOTAL"]]
        table += [[where, why, *(f"{r:.0f}" for r in rates), str(total)]
                  for where, why, rates, total in self.top(n)]
        if len(table) == 1:
            return ["no drops"]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        return ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                          for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                for row in table]


DROP_ROWS = 5  # top --drops: the panel's rows (the flows' table gives them room)
