"""What a run is: the validated ``Settings``, plain data and nothing else.

options.py makes them from what was typed (its rules and conflicts beside the CLI);
everything after that reads ``Settings`` only: the wiring (app.py), the sources, the
sinks, the banner. No option table here, no parsing, no kernel: plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netmon.events import DIR_IN
from netmon.filters import FilterSpec
from netmon.flows import DEFAULT_ACTIVE, DEFAULT_ENTRIES, DEFAULT_IDLE
from netmon.host.interfaces import Selection
from netmon.kernel.abi import MAX_SNAPLEN
from netmon.kernel.choices import Hook, Method, Mode
from netmon.totals.store import DEFAULT_EVERY as DEFAULT_TOTALS_EVERY
from netmon.totals.store import DEFAULT_KEEP_DAYS
from netmon.tcphealth import DEFAULT_ENTRIES as DEFAULT_TCP_ENTRIES
from netmon.tcphealth import DEFAULT_GAP_MS

# Per CPU: 512 KiB, ~6,500 events, 7 ms at a million events/s on one CPU: room for
# the reader to be late, as on a busy host it will be.
DEFAULT_PAGES = 128


@dataclass(frozen=True)
class Capture:
    """-w and its companions: where packets go, how much of each, how files rotate."""

    path: str  # "-": standard output
    snaplen: int = MAX_SNAPLEN
    file_mb: float | None = None  # -C
    file_count: int | None = None  # -W
    rotate_seconds: float | None = None  # -G
    print_lines: bool = False  # --print: event lines on stderr as well


@dataclass(frozen=True)
class FlowSettings:
    """netmon top, --flows and --ipfix: what to show and how the kernel's tables are sized."""

    top: bool = False  # the live view; else a record per flow as it ends
    entries: int = DEFAULT_ENTRIES  # per table: the flows one interval can hold
    idle: float = DEFAULT_IDLE
    active: float = DEFAULT_ACTIVE
    sort: str = "rate"  # top: rate, bytes or packets
    by: str = "flow"  # top: a row per flow, guest, interface, host or port
    print_records: bool = True  # --flows prints them; --ipfix alone only sends them


@dataclass(frozen=True)
class TotalsSettings:
    """--totals: the database the kernel's counts are added to, how often, for how long."""

    path: str
    every: float = DEFAULT_TOTALS_EVERY  # seconds between two writes
    keep_days: int = DEFAULT_KEEP_DAYS  # hourly rows kept; older ones are folded into days
    snapshot: str | None = None  # --totals-snapshot: a consistent copy kept here, for others


@dataclass(frozen=True)
class TcpSettings:
    """netmon rtt: how often a connection's way starts a sample, how many connections."""

    gap_ms: float = DEFAULT_GAP_MS
    entries: int = DEFAULT_TCP_ENTRIES


@dataclass(frozen=True)
class Settings:
    selection: Selection
    spec: FilterSpec = field(default_factory=FilterSpec)
    directions: tuple[int, ...] = (DIR_IN,)
    hook: Hook = Hook.AUTO  # for ingress; egress is always tc
    mode: Mode = Mode.AUTO
    method: Method = Method.AUTO
    json: bool = False
    timestamps: int = 0  # tcpdump's -t family: 2 -tt ... 5 -ttttt; 0 and 1 none
    count: int | None = None  # stop after this many shown events
    pages: int = DEFAULT_PAGES
    poll_ms: int = 100  # also the longest an event waits before it is shown
    stats_every: float | None = None  # seconds between --stats lines
    follow: bool = False  # a named interface that goes away is waited for
    capture: Capture | None = None  # -w: matching packets into pcapng files
    flows: FlowSettings | None = None  # top, --flows, --ipfix: packets counted as flows
    metrics: tuple[str, int] | None = None  # --metrics: serve counters on this address
    web_config: str | None = None  # --web-config: TLS and users for --metrics
    ipfix: tuple[str, int, int] | None = None  # --ipfix: collector host, port, domain
    quiet: bool = False  # count only: no lines (the counters, --metrics, --stats)
    read: str | None = None  # -r: frames from this file instead of interfaces
    # -Z: the user the run becomes once attached (None: the netmon user, else nobody)
    user: str | None = None
    # The packets the kernel dropped: netmon drops (flows None), or top's panel beside flows
    drops: bool = False
    totals: TotalsSettings | None = None  # --totals: counts kept in SQLite
    tcp: TcpSettings | None = None  # netmon rtt: TCP health measured in the kernel

    @property
    def drops_alone(self) -> bool:
        """netmon drops: the drops instead of the traffic (not top's panel beside it)."""
        return self.drops and self.flows is None

    @property
    def rtt_alone(self) -> bool:
        """netmon rtt: round trips and retransmissions instead of the traffic (not the
        columns top shows beside its flows)."""
        return self.tcp is not None and self.flows is None

    @property
    def labelled(self) -> bool:
        """Lines name the interface and direction (more than one of either is watched)."""
        return not self.selection.single or len(self.directions) > 1
