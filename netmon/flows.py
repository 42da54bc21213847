"""Flows: the kernel counts them, netmon reads its tables once a second and keeps the flows.

The programs add each matching packet to its flow in one of two tables (see
bpf/xdp_monitor.h). kernel/flowtable.py flips them and reads the one no program
writes any more; user space does work per flow and per second, none per packet.
Plain Python from here on: FlowBook keeps each flow's totals and rates, and ends
flows as records: after an idle timeout, after an active timeout (a long flow is
split), or when the run ends. A record's counts are the ones since the flow's last record, as
IPFIX's octetDeltaCount and packetDeltaCount are.
"""

from __future__ import annotations

import collections
import operator
import socket
import statistics
import struct
from dataclasses import dataclass
from typing import Callable

from netmon.kernel.abi import DIR_NAMES, FLOW_KEY, FLOW_KEY4, TK_REORDER, TK_RETRANS, TK_RTT_ICMP

DEFAULT_ENTRIES = 65536
DEFAULT_IDLE = 15.0  # seconds without a packet: the flow ends
DEFAULT_ACTIVE = 60.0  # seconds a record covers at most: longer flows are split
INTERVAL = 1.0  # seconds between two reads of the tables
WINDOWS = (2, 10, 40)  # rate windows in seconds, as iftop's

# flowEndReason (IANA IPFIX information element 136)
END_IDLE, END_ACTIVE, END_FORCED = 1, 2, 4
END_NAMES = {END_IDLE: "idle", END_ACTIVE: "active", END_FORCED: "end"}

_AF = {4: (socket.AF_INET, 4), 6: (socket.AF_INET6, 16)}
ICMP_PROTOS = (1, 58)
ECHO_REQUEST = {4: 8, 6: 128}  # an ICMP echo's flow: its request's type
RTT_KEPT = 512  # RTT samples a flow keeps for top's windows (the kernel's ~10/s for 40 s)
# The event's flow part (events.py): addresses, ports, vlan, family, protocol
_EVENT_FLOW = struct.Struct("=16s16sHHHBB")


@dataclass(frozen=True)
class FlowKey:
    """What makes packets one flow; for ICMP, type and code are in the ports' place."""

    ifindex: int
    dir: int
    family: int
    ipproto: int
    vlan: int
    sport: int
    dport: int
    src: str
    dst: str

    @classmethod
    def decode(cls, raw: bytes) -> "FlowKey":
        """struct nm_flow_key, or the shorter nm_flow_key4 of IPv4's tables."""
        ifindex, direction, family, ipproto, vlan, sport, dport, saddr, daddr = \
            (FLOW_KEY4 if len(raw) == FLOW_KEY4.size else FLOW_KEY).unpack(raw)
        af, width = _AF[family]
        return cls(ifindex, direction, family, ipproto, vlan, sport, dport,
                   socket.inet_ntop(af, saddr[:width]), socket.inet_ntop(af, daddr[:width]))

    @property
    def icmp(self) -> bool:
        return self.ipproto in ICMP_PROTOS

    @property
    def direction(self) -> str:
        return DIR_NAMES[self.dir]


@dataclass(eq=False)
class Flow:
    """One flow as netmon keeps it between two reads (hashed by identity: a flow that
    ends and comes back is another Flow)."""

    key: FlowKey
    first_ns: int  # of the current record (monotonic)
    last_ns: int
    packets: int = 0  # since the flow's last record
    bytes: int = 0
    tcp_flags: int = 0
    total_packets: int = 0  # since netmon first saw it
    total_bytes: int = 0
    born: int = 0  # the interval it was first seen in (FlowBook's count)
    serial: int = 0  # order of appearance: ties in top go to the older flow
    ended: bool = False  # its record is made; it stays in the rate windows it has packets in
    raw: bytes = b""  # the kernel's key, as FlowBook.flows holds it
    # TCP health (top, --flows): RTT samples this flow's packets started, as (interval,
    # ns), the last RTT_KEPT; retransmitted segments as (interval, n); and both since the
    # flow's last record.
    rtts: collections.deque | None = None
    retrans: collections.deque | None = None
    record_rtts: list | None = None
    record_retrans: int = 0


@dataclass(frozen=True)
class FlowRecord:
    """A flow's counts from first_ns to last_ns (monotonic), ended for ``reason``."""

    key: FlowKey
    first_ns: int
    last_ns: int
    packets: int
    bytes: int
    tcp_flags: int
    reason: int  # END_*
    rtts: tuple[int, ...] = ()  # TCP health: the RTT samples (ns) the flow's packets started
    retrans: int = 0  # TCP health: its data segments seen again


BY_START = operator.attrgetter("first_ns")  # records in the order their flows started


class FlowBook:
    """Every flow seen, its counts, rates and records.

    Rates are kept per window as running sums of the intervals in it, and only flows
    with packets in an interval are touched for it: with 20,000 flows and a few thousand
    busy ones, a second's work follows the busy ones (top stayed at ~47% of a core when
    every flow's 40 intervals were summed every second).
    """

    def __init__(self, start_ns: int, idle: float = DEFAULT_IDLE,
                 active: float = DEFAULT_ACTIVE):
        """``start_ns``: when the kernel began counting (monotonic), the first interval's start."""
        self.idle_ns = int(idle * 1e9)
        self.active_ns = int(active * 1e9)
        self.flows: dict[bytes, Flow] = {}
        self.seen = 0  # flows ever started (a split flow counts once)
        self.ended = 0  # records made
        # Interval lengths in seconds, newest last, for the rate windows.
        self.intervals: collections.deque = collections.deque(maxlen=max(WINDOWS))
        self._spans = [0.0] * (max(WINDOWS) + 1)  # seconds in the last n intervals
        self._ticks = 0  # intervals so far
        # Per interval, newest last: each flow with packets in it, its bytes and packets.
        self._history: collections.deque = collections.deque(maxlen=max(WINDOWS))
        # Per window (WINDOWS' order): each flow with packets in it, [bytes, packets].
        self.window: list[dict[Flow, list[int]]] = [{} for _ in WINDOWS]
        self.kinds: collections.Counter = collections.Counter()  # (direction, ipproto) of flows
        self._last_tick = start_ns
        self.on_end: Callable[[Flow], None] | None = None  # told of each flow that ends
        # TCP health's records of flows not in the book yet (the tables are read once a
        # second, the records come as they are made), by the flow's raw key.
        self._pending: dict[bytes, list] = {}

    @property
    def active(self) -> int:
        return len(self.flows)

    def add(self, rows: list, now_ns: int) -> list[FlowRecord]:
        """One interval's rows from FlowTable.take(); returns the records that ended."""
        self.intervals.append(max(now_ns - self._last_tick, 1) / 1e9)
        self._last_tick = now_ns
        self._ticks += 1
        counts: dict[Flow, list[int]] = {}
        if len(self._pending) > 4 * RTT_KEPT:  # of flows the tables never held (full)
            self._pending.clear()
        for raw, flags, packets, nbytes, first, last in rows:
            flow = self.flows.get(raw)
            if flow is None:
                flow = self.flows[raw] = Flow(FlowKey.decode(raw), first, last,
                                              born=self._ticks, serial=self.seen, raw=raw)
                self.kinds[(flow.key.dir, flow.key.ipproto)] += 1
                self.seen += 1
                for tick, row in self._pending.pop(raw, ()):
                    self._tcp_one(flow, tick, row)
            flow.packets += packets
            flow.bytes += nbytes
            flow.tcp_flags |= flags
            flow.last_ns = max(flow.last_ns, last)
            flow.total_packets += packets
            flow.total_bytes += nbytes
            c = counts.setdefault(flow, [0, 0])
            c[0] += nbytes
            c[1] += packets
        self._slide(counts)
        return self._expire(now_ns)

    def tcp(self, rows: list) -> None:
        """TCP health's records (netmon's struct nm_tcp_sample rows) as they came: each
        RTT sample to the flow whose packet started it, each retransmission to its
        segment's. Of a flow the tables have not shown yet: kept for when they do."""
        tick = self._ticks + 1  # the interval being counted now
        for row in rows:
            kind = row[8]
            if kind == TK_REORDER:
                continue
            saddr, daddr, sport, dport, vlan, family, ipproto = _EVENT_FLOW.unpack_from(row[3])
            if kind == TK_RTT_ICMP:
                sport, dport = ECHO_REQUEST[family], 0
            if family == 4:
                raw = FLOW_KEY4.pack(row[1], row[4], 4, ipproto, vlan, sport, dport,
                                     saddr[:4], daddr[:4])
            else:
                raw = FLOW_KEY.pack(row[1], row[4], family, ipproto, vlan, sport, dport,
                                    saddr, daddr)
            flow = self.flows.get(raw)
            if flow is None:
                pending = self._pending.setdefault(raw, [])
                if len(pending) < RTT_KEPT:
                    pending.append((tick, row))
                continue
            self._tcp_one(flow, tick, row)

    def _tcp_one(self, flow: Flow, tick: int, row) -> None:
        if row[8] == TK_RETRANS:
            if flow.retrans is None:
                flow.retrans = collections.deque(maxlen=max(WINDOWS))
            if flow.retrans and flow.retrans[-1][0] == tick:
                flow.retrans[-1][1] += row[5]
            else:
                flow.retrans.append([tick, row[5]])
            flow.record_retrans += row[5]
            return
        if flow.rtts is None:
            flow.rtts = collections.deque(maxlen=RTT_KEPT)
            flow.record_rtts = []
        flow.rtts.append((tick, row[6]))
        if len(flow.record_rtts) < RTT_KEPT:
            flow.record_rtts.append(row[6])

    def tcp_window(self, flows, seconds: int) -> tuple[float | None, float | None, float | None]:
        """Over the last ``seconds`` intervals of these flows (a row's, or a group's): the
        RTTs' median and 99th percentile (ns), and retransmitted segments as a share of
        their TCP packets (None: no samples; no TCP packets)."""
        since = self._ticks + 1 - seconds
        rtts = [ns for f in flows if f.rtts for t, ns in f.rtts if t > since]
        retrans = sum(n for f in flows if f.retrans for t, n in f.retrans if t > since)
        window = self.window[WINDOWS.index(seconds)]
        packets = sum(window[f][1] for f in flows if f in window and f.key.ipproto == 6)
        p50 = p99 = None
        if rtts:
            rtts.sort()
            p50 = statistics.median(rtts)
            p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
        return p50, p99, (retrans / packets if packets else None)

    def _slide(self, counts: dict[Flow, list[int]]) -> None:
        """The windows move on by one interval: ``counts`` come in, the oldest go out."""
        history = self._history
        for window, w in zip(self.window, WINDOWS):
            if len(history) >= w:  # the interval that leaves this window now
                for flow, (b, p) in history[-w].items():
                    sums = window.get(flow)
                    if sums is None:
                        continue  # ended meanwhile
                    sums[0] -= b
                    sums[1] -= p
                    if not sums[1]:
                        del window[flow]
            for flow, (b, p) in counts.items():
                sums = window.get(flow)
                if sums is None:
                    window[flow] = [b, p]
                else:
                    sums[0] += b
                    sums[1] += p
        history.append(counts)
        intervals = list(self.intervals)
        for n in range(1, len(intervals) + 1):  # summed oldest first, as ever: same floats
            self._spans[n] = sum(intervals[-n:])

    def _end(self, raw: bytes) -> Flow:
        # An ended flow leaves the windows as its intervals age out of them, not at once:
        # top shows its rate over 40 s though it ended (idle) after 15.
        flow = self.flows.pop(raw)
        flow.ended = True
        if self.on_end is not None:
            self.on_end(flow)
        kind = (flow.key.dir, flow.key.ipproto)
        self.kinds[kind] -= 1
        if not self.kinds[kind]:
            del self.kinds[kind]
        return flow

    def _expire(self, now_ns: int) -> list[FlowRecord]:
        records: list[FlowRecord] = []
        idle_at, active_at = now_ns - self.idle_ns, now_ns - self.active_ns
        # One pass that only compares: most flows have nothing due.
        due = [raw for raw, f in self.flows.items()
               if f.last_ns <= idle_at or (f.first_ns <= active_at and f.packets)]
        for raw in due:
            flow = self.flows[raw]
            if now_ns - flow.last_ns >= self.idle_ns:
                records.append(self._record(flow, END_IDLE))
                self._end(raw)
            elif now_ns - flow.first_ns >= self.active_ns and flow.packets:
                records.append(self._record(flow, END_ACTIVE))
                # The next record starts where this one's last packet was.
                flow.first_ns = flow.last_ns
                flow.packets = flow.bytes = flow.tcp_flags = 0
        return sorted(records, key=BY_START)

    def flush(self) -> list[FlowRecord]:
        """The run ends: every flow with counts left ends now."""
        records = [self._record(f, END_FORCED) for f in self.flows.values() if f.packets]
        for raw in list(self.flows):
            self._end(raw)
        return sorted(records, key=BY_START)

    def _record(self, flow: Flow, reason: int) -> FlowRecord:
        self.ended += 1
        rtts, retrans = tuple(flow.record_rtts or ()), flow.record_retrans
        if flow.record_rtts:
            flow.record_rtts = []
        flow.record_retrans = 0
        return FlowRecord(flow.key, flow.first_ns, flow.last_ns, flow.packets, flow.bytes,
                          flow.tcp_flags, reason, rtts, retrans)

    def recent(self, distinct: bool = True) -> list[Flow]:
        """The flows in the book, then those that ended with packets still in the longest
        window: what top shows. ``distinct``: not an ended one whose key came back (a row
        per flow would show it twice); a group sums them all."""
        return [*self.flows.values(), *(f for f in self.window[-1]
                                         if f.ended and not (distinct and self.live(f)))]

    def live(self, flow: Flow) -> bool:
        """Its key is in the book now (the flow, or one that came back after it ended)."""
        return flow.raw in self.flows

    @property
    def ticks(self) -> int:
        """Intervals so far: what was worked out for one still holds until the next."""
        return self._ticks

    def bits(self, flows) -> dict[Flow, tuple[float, ...]]:
        """Each flow's bits/s over each of WINDOWS (rate()'s first figures, to the bit),
        for many flows in one pass."""
        born_now = self._ticks + 1
        have = len(self.intervals)
        spans = self._spans
        windows = [(window.get, min(w, have)) for window, w in zip(self.window, WINDOWS)]
        out = {}
        for flow in flows:
            age = born_now - flow.born
            out[flow] = tuple(sums[0] * 8 / spans[n if n <= age else age]
                              if (sums := get(flow)) else 0.0 for get, n in windows)
        return out

    def rate(self, flow: Flow, seconds: int) -> tuple[float, float]:
        """(bits/s, packets/s) over the last ``seconds`` intervals, one of WINDOWS (fewer
        at start, and for a flow younger than that)."""
        n = min(seconds, self._ticks - flow.born + 1, len(self.intervals))
        if n <= 0:
            return 0.0, 0.0
        b, p = self.window[WINDOWS.index(seconds)].get(flow, (0, 0))
        span = self._spans[n]
        return b * 8 / span, p / span
