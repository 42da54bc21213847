"""How the command line was typed: ``Options`` in, one validated ``Settings`` out.

The CLI (typer, cli.py) fills ``Options`` with what was typed and calls ``build()``;
everything after that reads ``Settings`` (settings.py) only. Plain Python: no
terminal, no kernel, so every rule here is unit-tested without either.

A new option that cannot go with another is a row in ``RULES``, not an if in
the CLI: each row names options by how the user types them (``GIVEN``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass, field
from typing import Callable

from netmon.errors import ExpressionInvalid, InterfaceNotFound, UsageError, quoted
from netmon.events import DIR_IN, DIR_OUT
from netmon.filters import FilterSpec
from netmon.flows import DEFAULT_ACTIVE, DEFAULT_ENTRIES, DEFAULT_IDLE
from netmon.host import proxmox, system
from netmon.expression import FILE_NETMASK, NETMASK_UNKNOWN
from netmon.host.interfaces import ANY, Selection, netmask
from netmon.kernel.abi import HDR_BUF, MAX_SNAPLEN
from netmon.kernel.choices import Hook, Method, Mode
from netmon.settings import (DEFAULT_PAGES, DEFAULT_KEEP_DAYS, DEFAULT_TCP_ENTRIES,
                             DEFAULT_TOTALS_EVERY, Capture, FlowSettings, Settings, TcpSettings,
                             TotalsSettings)
from netmon.sinks.ipfix import DEFAULT_DOMAIN
from netmon.sinks.top.view import BYS, SORTS

# Capturing, records carry whole packets: 32 MiB per CPU (a ring wakes the reader at
# 2 MiB, sources/records.py), ~50 ms of 1500-byte frames at 400,000/s: with 8 MiB a
# reader that stalled lost up to 7% of such bursts here, with 32 MiB none.
CAPTURE_PAGES = 8192
CAPTURE_BUDGET_PAGES = 16384  # 64 MiB for all CPUs' rings together


# TCP health's records come in bursts: connections that began together begin their
# samples together, each at most every 100 ms, so 10,000 conversations at the rig's
# full rate make bursts of 10,000 and more records at once; with DEFAULT_PAGES (512 KiB
# per CPU) 37-64 % of them were lost (counted), with 8 MiB none (bench q).
RTT_PAGES = 2048


def capture_pages(cpus: int, pages: int = CAPTURE_PAGES) -> int:
    """Pages per CPU for a capture (or ``pages``): less on hosts with many CPUs, all the
    CPUs' rings together within CAPTURE_BUDGET_PAGES."""
    while pages > 128 and pages * cpus > CAPTURE_BUDGET_PAGES:
        pages //= 2
    return pages


class Direction(str, enum.Enum):
    IN = "in"
    OUT = "out"
    BOTH = "both"


DIRECTIONS = {Direction.IN: (DIR_IN,), Direction.OUT: (DIR_OUT,),
              Direction.BOTH: (DIR_IN, DIR_OUT)}


@dataclass(frozen=True)
class Options:
    """What was typed, as typed (None: not given). The CLI's only product."""

    interface: tuple[str, ...] = ()
    guest: tuple[int | str, ...] = ()  # ids, or names (resolved by build())
    direction: Direction | None = None
    hook: Hook = Hook.AUTO
    mode: Mode = Mode.AUTO
    attach: Method = Method.AUTO
    follow: bool = False
    spec: FilterSpec = field(default_factory=FilterSpec)
    write: str | None = None
    print_lines: bool = False
    snaplen: int | None = None  # -s (default: MAX_SNAPLEN)
    file_mb: float | None = None
    file_count: int | None = None
    rotate_seconds: float | None = None
    read: str | None = None
    user: str | None = None
    flow_records: bool = False
    top: bool = False
    sort: str = "rate"
    by: str = "flow"
    flow_entries: int = DEFAULT_ENTRIES
    flow_idle: float = DEFAULT_IDLE
    flow_active: float = DEFAULT_ACTIVE
    metrics: tuple[str, int] | None = None
    web_config: str | None = None
    ipfix: tuple[str, int] | None = None
    ipfix_domain: int = DEFAULT_DOMAIN
    quiet: bool = False
    json: bool = False
    timestamps: int = 0  # -t given N times (tcpdump's): 0 or 1, no time on a line
    count: int | None = None
    stats: float | None = None
    buffer_pages: int | None = None
    drops: bool = False
    totals: str | None = None
    totals_every: float = DEFAULT_TOTALS_EVERY
    totals_keep: int = DEFAULT_KEEP_DAYS
    totals_snapshot: str | None = None
    rtt: bool = False  # netmon rtt
    rtt_entries: int = DEFAULT_TCP_ENTRIES


# Each option a rule can name, as the user types it: is it given?
GIVEN: dict[str, Callable[[Options], bool]] = {
    "-w": lambda o: o.write is not None,
    "-w -": lambda o: o.write == "-",
    "--print": lambda o: o.print_lines,
    "-w without --print": lambda o: o.write is not None and not o.print_lines,
    "-s": lambda o: o.snaplen is not None,
    "-C": lambda o: bool(o.file_mb),
    "-W": lambda o: bool(o.file_count),
    "-G": lambda o: bool(o.rotate_seconds),
    "-r": lambda o: o.read is not None,
    "--quiet": lambda o: o.quiet,
    "--flows": lambda o: o.flow_records,
    "top": lambda o: o.top,
    "--ipfix": lambda o: o.ipfix is not None,
    "--count": lambda o: bool(o.count),
    "--metrics": lambda o: o.metrics is not None,
    "--web-config": lambda o: o.web_config is not None,
    "-i": lambda o: bool(o.interface),
    "--guest": lambda o: bool(o.guest),
    "--direction": lambda o: o.direction is not None,
    "--follow": lambda o: o.follow,
    "--hook xdp": lambda o: o.hook is Hook.XDP,
    "-Q out": lambda o: o.direction is Direction.OUT,
    "--sort other": lambda o: o.sort not in SORTS,
    "--by": lambda o: o.by != "flow",
    "--sort": lambda o: o.sort != "rate",
    "--flow-*": lambda o: (o.flow_entries, o.flow_idle, o.flow_active) != (
        DEFAULT_ENTRIES, DEFAULT_IDLE, DEFAULT_ACTIVE),
    "--by other": lambda o: o.by not in BYS,
    "--json": lambda o: o.json,
    "-tt": lambda o: o.timestamps >= 2,
    "drops": lambda o: o.drops,
    "drops alone": lambda o: o.drops and not o.top,
    "--hook": lambda o: o.hook is not Hook.AUTO,
    "--mode": lambda o: o.mode is not Mode.AUTO,
    "--totals": lambda o: o.totals is not None,
    "--totals-every": lambda o: o.totals_every != DEFAULT_TOTALS_EVERY,
    "--totals-keep": lambda o: o.totals_keep != DEFAULT_KEEP_DAYS,
    "--totals-snapshot": lambda o: o.totals_snapshot is not None,
    "rtt": lambda o: o.rtt,
    "--rtt-entries": lambda o: o.rtt_entries != DEFAULT_TCP_ENTRIES,
}


class Rule(enum.Enum):
    NEEDS = "needs"  # any of the first options needs one of the second
    EXCLUDES = "excludes"  # any of the first cannot go with any of the second


# Checked in order; the first that fails is the one line the user sees.
RULES: tuple[tuple[Rule, tuple[str, ...], tuple[str, ...], str], ...] = (
    (Rule.EXCLUDES, ("rtt",), ("-w", "-r", "--flows", "--ipfix", "top", "drops"),
     "netmon rtt measures round trips live: it goes without -w, -r, --flows, --ipfix, top "
     "and drops"),
    (Rule.NEEDS, ("--rtt-entries",), ("rtt", "top", "--flows"),
     "--rtt-entries sizes the table of connections whose round trips are measured: it "
     "goes with netmon rtt, top and --flows"),
    (Rule.EXCLUDES, ("drops alone",), ("-w", "-r", "--flows", "--ipfix", "--direction",
                                       "--hook", "--mode"),
     "netmon drops shows the packets the kernel dropped, from a tracepoint: it goes "
     "without -w, -r, --flows, --ipfix, --direction, --hook and --mode"),
    (Rule.EXCLUDES, ("--totals",), ("-r", "drops alone"),
     "--totals keeps the traffic of the interfaces watched live: it goes without -r "
     "and netmon drops"),
    (Rule.EXCLUDES, ("drops",), ("-w", "-r", "--flows", "--ipfix"),
     "top --drops shows the drops beside the flows: it goes without -w, -r, --flows and "
     "--ipfix"),
    (Rule.NEEDS, ("--print", "-C", "-W", "-G"), ("-w",),
     "--print, -C, -W and -G go with -w FILE"),
    (Rule.NEEDS, ("--totals-every", "--totals-keep", "--totals-snapshot"), ("--totals",),
     "--totals-every, --totals-keep and --totals-snapshot go with --totals PATH"),
    (Rule.NEEDS, ("-s",), ("-w",), "-s sets how much of each packet -w keeps: it goes with -w FILE"),
    (Rule.NEEDS, ("-W",), ("-C", "-G"), "-W N needs -C or -G: it limits the files they rotate "
                                        "through"),
    (Rule.EXCLUDES, ("-w -",), ("-C", "-G"),
     "-C and -G rotate files; -w - writes to standard output"),
    (Rule.EXCLUDES, ("--quiet",), ("-w", "-r", "--flows", "top", "--count"),
     "--quiet prints nothing and only counts: it goes without -w, -r, --flows, top and "
     "--count"),
    (Rule.EXCLUDES, ("--flows",), ("top",),
     "top shows flows live, --flows prints their records: one at a time"),
    (Rule.EXCLUDES, ("top",), ("--json",),
     "top draws a view for people; --json goes with lines and --flows records"),
    (Rule.EXCLUDES, ("--flows", "top", "--ipfix"), ("-w", "-r"),
     "flows are counted live, without -w or -r"),
    (Rule.EXCLUDES, ("--flows", "top", "--ipfix"), ("--sort other",),
     "--sort takes rate, bytes or packets, not {o.sort!r}"),
    (Rule.NEEDS, ("--by",), ("top",), "--by says what a row of top is: it goes with top"),
    (Rule.NEEDS, ("--sort",), ("top",), "--sort orders the rows of top: it goes with top"),
    (Rule.NEEDS, ("--flow-*",), ("--flows", "top", "--ipfix"),
     "--flow-entries, --flow-idle and --flow-active size and time the flow table: they go "
     "with --flows, top or --ipfix"),
    (Rule.EXCLUDES, ("top",), ("--by other",),
     "--by takes flow, guest, interface, host or port, not {o.by!r}"),
    (Rule.EXCLUDES, ("-r",), ("--metrics",), "--metrics serves live counters; -r reads a file"),
    (Rule.EXCLUDES, ("-tt",), ("--json", "--quiet", "top", "--flows", "-w without --print"),
     "-tt to -ttttt put a time before each text line: they go without --json (its lines "
     "have ts), --quiet, top, --flows and -w (without --print)"),
    (Rule.NEEDS, ("--web-config",), ("--metrics",),
     "--web-config says how --metrics is served: give --metrics too"),
    (Rule.EXCLUDES, ("-r",), ("-i", "--guest", "--direction", "--follow"),
     "-r reads a capture file: -i, --guest, --direction and --follow are for live interfaces"),
    (Rule.EXCLUDES, ("--hook xdp",), ("-Q out",),
     "--hook xdp watches ingress only; egress is always tc"),
)


def conflict(options: Options) -> str | None:
    """The first rule the options break, as the line to show; None if they break none."""
    for kind, these, those, message in RULES:
        if not any(GIVEN[name](options) for name in these):
            continue
        others = any(GIVEN[name](options) for name in those)
        if others if kind is Rule.EXCLUDES else not others:
            return message.format(o=options)
    return None


def _expression(o: Options, mask: int) -> FilterSpec:
    """The spec with the netmask its expression is compiled with, the expression
    compiled now, so that a bad one is one line before anything is touched (and host
    names are looked up once, as tcpdump does)."""
    if o.spec.expression is None:
        return o.spec
    spec = dataclasses.replace(o.spec, netmask=mask)
    try:
        _check_expression(spec.expression, mask, o.read is not None, o.drops and not o.top)
    except ExpressionInvalid as exc:
        if mask == NETMASK_UNKNOWN and "netmask not known" in exc.reason:
            raise ExpressionInvalid(f"{exc.reason} (netmon knows the netmask when -i names "
                                    f"one interface with an IPv4 address, as tcpdump does)",
                                    spec.expression) from None
        raise
    return spec


def _check_expression(text: str, mask: int, reading: bool, drops: bool) -> None:
    from netmon import expression

    expression.compiled(text, mask)
    if reading and expression.reads_the_interface(text, mask):
        raise ExpressionInvalid("a capture file's frames have no direction or interface "
                                "index the kernel knows: `inbound`, `outbound` and `ifindex` "
                                "work live, not with -r", text)
    if drops and expression.reads_the_interface(text, mask):
        raise ExpressionInvalid("a drop has no direction netmon can tell (as --direction, "
                                "`inbound`, `outbound` and `ifindex` go without netmon "
                                "drops; -i names the interfaces)", text)
    if drops and expression.farthest_read(text, mask) > HDR_BUF:
        raise ExpressionInvalid(f"netmon drops copies the first {HDR_BUF} bytes of a "
                                f"dropped packet, and this expression reads past them (up to "
                                f"byte {expression.farthest_read(text, mask)})", text)


def build(o: Options, cpus: int = 1,
          default_interface: Callable[[], str] = system.default_interface) -> Settings:
    """Options to Settings, or UsageError with the one line to show."""
    pages = o.buffer_pages
    if pages is None:
        pages = (capture_pages(cpus) if o.write else
                 capture_pages(cpus, RTT_PAGES) if o.rtt and not o.quiet else DEFAULT_PAGES)
    if pages & (pages - 1):
        raise UsageError(f"--buffer-pages must be a power of two, not {pages}")
    message = conflict(o) or o.spec.impossible() or _same_file(o.read, o.write)
    if message:
        raise UsageError(message)
    flows = None
    if o.flow_records or o.top or o.ipfix:
        flows = FlowSettings(top=o.top, entries=o.flow_entries, idle=o.flow_idle,
                             active=o.flow_active, sort=o.sort, by=o.by,
                             print_records=o.flow_records)
    capture = None
    if o.write is not None:
        capture = Capture(o.write, o.snaplen or MAX_SNAPLEN, o.file_mb, o.file_count,
                          o.rotate_seconds, o.print_lines)
    if o.read is not None:
        return Settings(selection=Selection(("-",)), spec=_expression(o, FILE_NETMASK),
                        json=o.json, count=o.count, pages=pages, capture=capture, read=o.read,
                        user=o.user, timestamps=o.timestamps)
    # Drops are anywhere: every interface unless some are named.
    names = list(o.interface) or ([] if o.guest else [ANY] if o.drops and not o.top
                                  else [default_interface()])
    guests = _guests([g for g in o.guest if g != proxmox.ALL], o.follow)
    try:
        selection = Selection.parse(names, guests, proxmox.ALL in o.guest)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # A round trip is seen both ways: netmon rtt watches both unless told otherwise.
    direction = o.direction or (Direction.BOTH if o.guest or o.rtt else Direction.IN)
    # As tcpdump: the netmask of the one interface it watches, where it has an IPv4
    # address; else none is known (and `ip broadcast` is refused).
    mask = netmask(selection.names[0]) if selection.single and not o.drops else None
    spec = _expression(o, NETMASK_UNKNOWN if mask is None else mask)
    return Settings(
        selection=selection, spec=spec, directions=DIRECTIONS[direction], hook=o.hook,
        follow=o.follow, mode=o.mode, method=o.attach, json=o.json, count=o.count,
        pages=pages, stats_every=o.stats, capture=capture, flows=flows, metrics=o.metrics,
        web_config=o.web_config, user=o.user, timestamps=o.timestamps,
        quiet=o.quiet, ipfix=(*o.ipfix, o.ipfix_domain) if o.ipfix else None,
        drops=o.drops,
        totals=TotalsSettings(o.totals, o.totals_every, o.totals_keep,
                              o.totals_snapshot) if o.totals else None,
        # TCP health: netmon rtt's, and beside the flows top and --flows show (their RTT
        # and retransmissions); not for --ipfix alone (IPFIX has no element for them).
        tcp=TcpSettings(entries=o.rtt_entries) if o.rtt or o.top or o.flow_records
        else None,
    )


MAX_GUEST = 999_999_999  # Proxmox VE's largest guest id


def _guests(values, follow: bool) -> list[int]:
    """--guest values (an id or a name) as ids. A name must name one guest with a config
    here; an id without one is refused, or with --follow waited for (a guest made later:
    the banner says so)."""
    known = proxmox.guests() if values else {}
    ids = []
    for value in values:
        text = str(value)
        if text.isdigit():
            guest = int(text)
            if not 1 <= guest <= MAX_GUEST:
                raise UsageError(f"--guest {text}: a guest id is 1 to {MAX_GUEST}")
            if guest not in known and not follow:
                raise InterfaceNotFound(f"--guest {text}: no such guest on this node (no "
                                        f"qemu-server or lxc config in {proxmox.pve_dir()}); "
                                        f"with --follow netmon waits for it")
        else:
            matches = [g for g, name in known.items() if name == text]
            if len(matches) != 1:
                have = ", ".join(f"{g} ({n})" if n else str(g) for g, n in known.items())
                why = "several guests are" if matches else "no guest is"
                raise InterfaceNotFound(f"--guest {quoted(text)}: {why} named so on this "
                                        f"node (guests: {have or 'none'})")
            guest = matches[0]
        ids.append(guest)
    return list(dict.fromkeys(ids))


def _same_file(read: str | None, write: str | None) -> str | None:
    """-r and -w naming one file (through a link, too): -w would empty it before -r reads."""
    if read is None or write is None or "-" in (read, write):
        return None
    try:
        same = os.path.samefile(read, write)  # device and inode
    except OSError:
        return None  # one of them does not exist (yet): -w makes a new file
    if same:
        return f"-r and -w name the same file ({write}): writing it would destroy what is read"
    return None
