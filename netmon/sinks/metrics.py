"""--metrics: a Prometheus endpoint (prometheus_client) serving the kernel's counters.

The monitor's loop hands a snapshot of its counters to update() about once a
second; a scrape, on prometheus_client's own thread, reads the last snapshot
and never touches the BPF maps. Labels come from bounded sets: the watched
interfaces and their guests, two directions, six protocols (enum nm_proto).
Nothing per flow or per address.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field

from netmon import __version__, endpoint
from netmon.errors import MetricsUnavailable
from netmon.events import DIR_NAMES
from netmon.host import proxmox
from netmon.kernel.abi import PROTO_NAMES
from netmon.pipeline import Context, Sink, Start

EVERY = 1.0  # seconds between two snapshots of the counters
GUEST_NAMES_EVERY = 60.0  # seconds between two readings of the guests' names
GUEST_SIDE = proxmox.GUEST_SIDE  # on a guest's tap or veth, in is what the guest sent




@dataclass
class Snapshot:
    """What a scrape shows: counters as of the monitor's last update()."""

    # (interface, direction) -> the kernel's counters of that hook
    per_interface: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    lost: int = 0
    flow_overflow: int = 0
    exporter: dict[str, int] = field(default_factory=dict)  # --ipfix: records, errors
    drops: list[tuple[str, str, str, int]] | None = None  # netmon drops (Summary.drops)
    guests: dict[str, tuple[str, str]] = field(default_factory=dict)  # ifname -> id, name
    # netmon drops counts no traffic: its packets and bytes would be series of zeros that
    # a dashboard reads as "no traffic".
    traffic: bool = True
    # netmon rtt: RTT histograms by (interface, component), and what was not measured
    rtt: dict | None = None
    rtt_unmatched: int = 0
    tcp_noroom: int = 0
    # How full the perf rings were when read: (bound, reads at or below it), the shares'
    # sum, the reads (None: no rings, as -r)
    ring_fill: tuple[list[tuple[float, int]], float, int] | None = None


class Metrics:
    """The metrics, and with serve() the endpoint, until close()."""

    def __init__(self, libbpf_version: str = ""):
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._build = {"version": __version__, "libbpf": libbpf_version,
                       "python": platform.python_version()}
        # Imported here: every run loads this module, few serve metrics.
        from prometheus_client.core import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._server = None

    def serve(self, host: str, port: int, web_config: str | None = None) -> "Metrics":
        """Serve /metrics (sinks/web.py: timeouts, a bound on connections; TLS and
        passwords as ``web_config`` says)."""
        from prometheus_client import make_wsgi_app

        from netmon.sinks import web

        config = web.load_web_config(web_config) if web_config else web.WebConfig()
        try:
            self._server, self._thread = web.serve(host, port, make_wsgi_app(self.registry),
                                                   config)
        except OSError as exc:
            raise MetricsUnavailable(f"cannot serve metrics on {endpoint.display(host, port)}: "
                                     f"{exc.strerror or exc}") from None
        return self

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            snap = self._snapshot
        # A guest's interfaces carry its id and name (empty for the host's): bounded, as
        # guests are; summed by guest, a migrated VM's traffic adds up across nodes.
        # guest_side: the direction as the guest sees it ("received", "sent"; "" on a
        # host's interface), a function of the labels before it: no more series.
        labels = ["interface", "direction", "protocol", "guest", "guest_name", "guest_side"]
        # Which side "direction" is, said where the number is read: on a guest's tap or
        # veth the host receives what the guest sends.
        which_side = ("; direction as the interface counts them: on a guest's interface "
                      "(guest label set) in is what the guest sent, out what it received "
                      "(guest_side)")
        packets = CounterMetricFamily(
            "netmon_packets", "Packets that matched the filters, on the wire (GRO/GSO "
            "segments each)" + which_side, labels=labels)
        octets = CounterMetricFamily(
            "netmon_bytes", "Bytes on the wire (Ethernet header included) of the packets "
            "that matched the filters" + which_side, labels=labels)
        if snap.traffic:
            for (ifname, direction), c in snap.per_interface.items():
                guest, name = snap.guests.get(ifname, ("", ""))
                side = GUEST_SIDE[DIR_NAMES[direction]] if guest else ""
                for proto in PROTO_NAMES:
                    where = [ifname, DIR_NAMES[direction], proto, guest, name, side]
                    packets.add_metric(where, c.get(f"packets_{proto}", 0))
                    octets.add_metric(where, c.get(f"bytes_{proto}", 0))
            yield packets
            yield octets
        if snap.drops is not None:
            yield self._drops(snap.drops, snap.guests)
        if snap.rtt is not None:
            yield from self._tcp(snap)
        yield CounterMetricFamily(
            "netmon_events_lost", "Packets that matched but were not shown, written or "
            "counted (a full perf buffer, unreadable bytes, a full flow table)",
            value=snap.lost)
        yield CounterMetricFamily(
            "netmon_flows_overflow", "Packets not counted in flows: the kernel's flow "
            "table was full", value=snap.flow_overflow)
        if snap.ring_fill is not None:
            from prometheus_client.core import HistogramMetricFamily

            below, total, reads = snap.ring_fill
            yield HistogramMetricFamily(
                "netmon_ring_fill_ratio", "How full a CPU's perf ring was each time netmon "
                "read it (0 empty, 1 full: records then lost; raise --buffer-pages)",
                buckets=[*((repr(b), n) for b, n in below), ("+Inf", reads)],
                sum_value=total)
        if snap.exporter:
            yield CounterMetricFamily("netmon_ipfix_records", "Flow records sent by --ipfix",
                                      value=snap.exporter.get("records", 0))
            yield CounterMetricFamily(
                "netmon_ipfix_send_errors", "IPFIX messages the collector's address "
                "refused or the host could not send", value=snap.exporter.get("errors", 0))
        info = GaugeMetricFamily("netmon_build_info", "netmon's version, its libbpf and "
                                 "Python's", labels=list(self._build))
        info.add_metric(list(self._build.values()), 1)
        yield info

    @staticmethod
    def _tcp(snap: Snapshot):
        """netmon rtt: the RTT histograms (the kernel's buckets, every other bound: powers
        of two from 4 us to 69 s, each count exact), and the retransmissions."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        from netmon import tcphealth

        rtt = HistogramMetricFamily(
            "netmon_tcp_rtt_seconds", "Round-trip times measured from the packets "
            "crossing the interface (TCP timestamps, handshakes, ICMP echo), by what "
            "answered: the network beyond the interface, the guest behind a guest's "
            "interface, this host behind its own (local)",
            labels=["interface", "guest", "guest_name", "component"])
        for (ifname, comp), h in sorted(snap.rtt.items()):
            guest, name = snap.guests.get(ifname, ("", ""))
            buckets, seen = [], 0
            for b, n in enumerate(h.buckets):
                seen += n
                lo, hi = tcphealth.bucket_bounds(b)
                if b in tcphealth.PROMETHEUS_BUCKETS:
                    buckets.append((repr(hi / 1e9), seen))
            buckets.append(("+Inf", seen))
            rtt.add_metric([ifname, guest, name, comp], buckets, h.sum_ns / 1e9)
        yield rtt
        labels = ["interface", "direction", "guest", "guest_name", "guest_side"]
        families = {name: CounterMetricFamily(f"netmon_tcp_{name}", doc, labels=labels)
                    for name, doc in (
                        ("data_segments", "TCP segments with data that crossed the "
                                          "interface (GRO/GSO segments each)"),
                        ("retransmits", "TCP data segments the interface had seen already: "
                                        "sent again"),
                        ("out_of_order", "TCP data segments that filled a gap: late, "
                                         "not lost"))}
        for (ifname, direction), c in snap.per_interface.items():
            guest, name = snap.guests.get(ifname, ("", ""))
            side = GUEST_SIDE[DIR_NAMES[direction]] if guest else ""
            where = [ifname, DIR_NAMES[direction], guest, name, side]
            for family, counter in (("data_segments", "tcp_data"),
                                    ("retransmits", "tcp_retrans"),
                                    ("out_of_order", "tcp_reorder")):
                families[family].add_metric(where, c.get(counter, 0))
        yield from families.values()
        yield CounterMetricFamily(
            "netmon_tcp_rtt_unmatched", "RTT samples started and given up: no echo came, "
            "or a later one first", value=snap.rtt_unmatched)
        yield CounterMetricFamily(
            "netmon_tcp_untracked_packets", "Packets of connections whose round trips and "
            "retransmissions were not followed: the state table was full (--rtt-entries)",
            value=snap.tcp_noroom)

    @staticmethod
    def _drops(rows: list[tuple[str, str, str, int]], guests: dict[str, tuple[str, str]]):
        """netmon drops: by interface, its guest and the guest's name (Proxmox VE; "" for
        none, as the traffic's series) and reason ("" where the kernel gives none, before
        5.17); locations summed."""
        from prometheus_client.core import CounterMetricFamily

        total: dict[tuple[str, str, str, str], int] = {}
        for ifname, reason, _, n in rows:
            key = (ifname, *guests.get(ifname, ("", "")), reason)
            total[key] = total.get(key, 0) + n
        family = CounterMetricFamily("netmon_drops", "Packets the kernel dropped, by the "
                                     "reason it gave",
                                     labels=["interface", "guest", "guest_name", "reason"])
        for labels, n in sorted(total.items()):
            family.add_metric(list(labels), n)
        return family

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join()

    def __enter__(self) -> "Metrics":
        return self

    def __exit__(self, *exc) -> None:
        self.close()



class MetricsSink(Sink):
    """--metrics: the summary's counters, snapshotted once a second for the scrapes."""

    start = Start.FIRST  # a port in use stops the run before anything is attached

    @classmethod
    def wanted(cls, settings) -> bool:
        return settings.metrics is not None

    def __init__(self, ctx: Context):
        self._metrics = Metrics(ctx.libbpf_version).serve(*ctx.settings.metrics,
                                                          ctx.settings.web_config)
        self._tally = ctx.tally
        self._drops_alone = ctx.settings.drops_alone
        self._next = time.monotonic()
        self._guests: dict[str, tuple[str, str]] = {}  # ifname -> (guest id, name)
        self._guests_at = 0.0

    def _guest_labels(self, names) -> dict[str, tuple[str, str]]:
        """Each guest interface's (id, name), names read again once a minute (a guest
        renamed in Proxmox shows so without a restart)."""
        now = time.monotonic()
        if now - self._guests_at > GUEST_NAMES_EVERY:
            self._guests, self._guests_at = {}, now
        for ifname in names:
            if ifname not in self._guests:
                info = proxmox.interface_info(ifname)
                self._guests[ifname] = (str(info.get("guest", "")),
                                        info.get("guest_name") or "")
        return {name: self._guests[name] for name in names if self._guests[name][0]}

    def tick(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + EVERY
        s = self._tally()
        exported = s.exported[1] if s.exported else None
        named = {name for name, _ in s.per_interface} | {
            row[0] for row in s.drops or () if row[0] != "-"}  # "-": a drop with no device
        self._metrics.update(Snapshot(
            dict(s.per_interface), s.lost + s.not_in_flows, s.not_in_flows,
            {"records": exported.records, "errors": exported.errors} if exported else {},
            s.drops, self._guest_labels(named), traffic=not self._drops_alone,
            rtt=s.rtt_hists, rtt_unmatched=s.counters.get("rtt_unmatched", 0),
            tcp_noroom=s.counters.get("tcp_noroom", 0),
            ring_fill=(s.ring_fill.buckets(), s.ring_fill.sum, s.ring_fill.reads)
            if s.ring_fill is not None else None))

    def close(self) -> None:
        self._metrics.close()
