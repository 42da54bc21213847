"""TCP health as people read it: RTT histograms, percentiles, components, retransmissions.

Plain Python: the kernel measures (bpf/xdp_monitor.h, "TCP health") and keeps RTT
histograms per interface and the direction of the packet that started each sample;
kernel/tcpstate.py reads them; this module says what they mean.

Buckets (struct nm_rtt_hist): bucket 0 holds RTTs under 1024 ns; bucket b >= 1 those in
[2^k (4 + s) / 4, 2^k (5 + s) / 4) ns, k = 10 + (b - 1) // 4, s = (b - 1) % 4: four to a
power of two, so a percentile read from them is within a quarter of its bucket's lower
bound (a 25 % wide bucket at most, 12.5 % either side of its middle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netmon.host import proxmox
from netmon.kernel.abi import (DIR_NAMES, DIR_OUT, RTT_BUCKETS, TK_REORDER, TK_RETRANS, TK_RTT_ICMP,
                               TK_RTT_SYN, TK_RTT_TS)

# How often a connection's way starts a sample at most (ePPing's default rate limit).
DEFAULT_GAP_MS = 100.0
# Connections whose state the kernel keeps at once, per address family (an entry, its key
# and the table's own: ~200 bytes; preallocated, ~3 MiB a family).
DEFAULT_ENTRIES = 16384

KIND_NAMES = {TK_RTT_TS: "timestamp", TK_RTT_SYN: "handshake", TK_RTT_ICMP: "echo",
              TK_RETRANS: "retransmission", TK_REORDER: "out of order"}
RTT_KINDS = frozenset((TK_RTT_TS, TK_RTT_SYN, TK_RTT_ICMP))

NETWORK, GUEST, LOCAL = "network", "guest", "local"

# The buckets whose upper bounds --metrics gives as its histogram's: every other one,
# so powers of two from 4.096 us to 68.7 s (2^12 .. 2^36 ns); the kernel's in between
# are summed into them exactly.
PROMETHEUS_BUCKETS = frozenset(range(8, 4 * 26 + 1, 4))


def component(guest_interface: bool, start_dir: int) -> str:
    """What a sample measured, by the direction of the packet that started it.

    Started by a packet leaving the host's side of the interface, it was answered from
    beyond: on a host's NIC, the network. A guest's tap or veth is the other way round:
    what comes in on it is what the guest sent, so a sample started coming in was
    answered by the network, and one started going out (to the guest) by the guest:
    its vCPU, its stack, its application. On a host's NIC a sample started coming in
    was answered by this host (or what is behind it: its bridge and guests): local.
    """
    if guest_interface:
        return NETWORK if proxmox.guest_sent(DIR_NAMES[start_dir]) else GUEST
    return NETWORK if start_dir == DIR_OUT else LOCAL


def bucket_bounds(b: int) -> tuple[int, int]:
    """[lower, upper) of bucket ``b`` in ns (the last also holds all above: ~46 minutes)."""
    if b == 0:
        return 0, 1024
    k, s = 10 + (b - 1) // 4, (b - 1) % 4
    return (1 << k) * (4 + s) // 4, (1 << k) * (5 + s) // 4


def bucket_of(ns: int) -> int:
    """The kernel's rtt_bucket(), for tests and tools."""
    if ns < 1024:
        return 0
    k = ns.bit_length() - 1
    return min((k - 10) * 4 + ((ns >> (k - 2)) & 3) + 1, RTT_BUCKETS - 1)


@dataclass
class Histogram:
    """RTT samples by bucket; count and sum exact."""

    count: int = 0
    sum_ns: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * RTT_BUCKETS)

    def add(self, other: "Histogram") -> None:
        self.count += other.count
        self.sum_ns += other.sum_ns
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]

    def quantile(self, q: float) -> float | None:
        """The q-quantile in ns, linear within its bucket (as Prometheus'
        histogram_quantile); None without samples."""
        total = sum(self.buckets)
        if not total:
            return None
        rank = q * total
        seen = 0
        for b, n in enumerate(self.buckets):
            if n and seen + n >= rank:
                lo, hi = bucket_bounds(b)
                return lo + (hi - lo) * max(0.0, rank - seen) / n
            seen += n
        lo, hi = bucket_bounds(RTT_BUCKETS - 1)
        return float(hi)

    @property
    def mean(self) -> float | None:
        return self.sum_ns / self.count if self.count else None


def ms(ns: float | None) -> str:
    """An RTT for people: ``20.31 ms``, ``0.051 ms``; "-" for none."""
    if ns is None:
        return "-"
    v = ns / 1e6
    return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s"


@dataclass
class Retransmissions:
    """One interface and direction's data segments, and how many came again or late."""

    data: int = 0
    retrans: int = 0
    reorder: int = 0

    @property
    def share(self) -> float:
        return self.retrans / self.data if self.data else 0.0


def summary_lines(hists: dict[tuple[str, str], Histogram],
                  retrans: dict[tuple[str, int], Retransmissions],
                  unmatched: int, noroom: int) -> list[str]:
    """The end of netmon rtt: per interface and component, the RTT percentiles; per
    interface and direction, the retransmissions; then what was not measured."""
    rows = []
    measured = {k: h for k, h in hists.items() if h.count}
    if measured:
        rows.append("round-trip times by interface and component (percentiles from the "
                    "kernel's histograms, each within 12.5%):")
        width = max(len(name) for name, _ in measured)
        for (name, comp), h in measured.items():
            rows.append(f"  {name:<{width}}  {comp:<7}  {h.count:>7} samples  median "
                        f"{ms(h.quantile(0.5))}, p90 {ms(h.quantile(0.9))}, p99 "
                        f"{ms(h.quantile(0.99))}, mean {ms(h.mean)}")
    else:
        rows.append("no round trips measured")
    seen = {k: r for k, r in retrans.items() if r.data}
    if seen:
        rows.append("retransmissions by interface and direction (data segments seen "
                    "again at the interface):")
        width = max(len(name) for name, _ in seen)
        for (name, d), r in seen.items():
            rows.append(f"  {name:<{width}}  {('in', 'out')[d]:<3}  {r.data:>9} data "
                        f"segments, {r.retrans} retransmitted ({100 * r.share:.2f}%), "
                        f"{r.reorder} out of order")
    if unmatched or noroom:
        rows.append(f"{unmatched} samples given up (no echo came, or a later one first); "
                    f"{noroom} packets of connections not followed: the state table was "
                    f"full (--rtt-entries)")
    return rows
