"""netmon's command line: typer parses, ``main()`` maps failures to one line and an exit code.

What was typed becomes ``Options``, and options.py (beside this file) checks them and
builds the run's ``Settings``; app.py runs it. Everything else lives in modules that
take plain values, so tests can call them without a terminal.
"""

from __future__ import annotations

import copy
import enum
import os
import re
import sys
from typing import List, Optional

import typer

from netmon import __version__, endpoint, errors, protocols, sinks, usage
from netmon.escape import visible
from netmon.totals import report as totals_report
from netmon.totals import store as totals_store
from netmon.app import run
from netmon.filters import FilterSpec, parse_network, parse_port, parse_vlan
from netmon.kernel.abi import MAX_SNAPLEN
from netmon.options import (DEFAULT_ACTIVE, DEFAULT_DOMAIN, DEFAULT_ENTRIES, DEFAULT_IDLE,
                            DEFAULT_KEEP_DAYS, DEFAULT_PAGES, DEFAULT_TCP_ENTRIES,
                            DEFAULT_TOTALS_EVERY, Direction,
                            MAX_GUEST, Hook, Method, Mode, Options, build)


# typer raises click's exceptions (vendored as typer._click in newer releases);
# find the class through typer's public API so either layout works.
DEFAULT_METRICS_HOST = "127.0.0.1"  # an endpoint others can reach is asked for by address

_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1  # anything else that went wrong
    USAGE = 2  # bad option or value
    PERMISSION = 3  # not root / missing capabilities
    NO_INTERFACE = 4
    ENVIRONMENT = 5  # libbpf missing or too old, kernel too old, object mismatch
    REJECTED = 6  # verifier refused the program
    XDP_BUSY = 7  # interface already has someone else's XDP program
    ATTACH = 8  # the kernel refused to attach in every allowed mode
    INTERFACE_GONE = 9  # a named interface went away (without --follow)
    CAPTURE_READ = 10  # -r: not a capture netmon reads, or damaged
    CAPTURE_WRITE = 11  # -w: the file could not be written (a full disk)
    TOTALS = 12  # --totals / netmon totals: the database cannot be used


_STATUS = {
    errors.UsageError: ExitStatus.USAGE,
    errors.PermissionProblem: ExitStatus.PERMISSION,
    errors.InterfaceNotFound: ExitStatus.NO_INTERFACE,
    errors.LibbpfMissing: ExitStatus.ENVIRONMENT,
    errors.LibpcapMissing: ExitStatus.ENVIRONMENT,
    errors.ExpressionInvalid: ExitStatus.USAGE,
    errors.KernelTooOld: ExitStatus.ENVIRONMENT,
    errors.ObjectMismatch: ExitStatus.ENVIRONMENT,
    errors.ProgramRejected: ExitStatus.REJECTED,
    errors.XdpBusy: ExitStatus.XDP_BUSY,
    errors.AttachFailed: ExitStatus.ATTACH,
    errors.InterfaceGone: ExitStatus.INTERFACE_GONE,
    errors.CaptureDamaged: ExitStatus.CAPTURE_READ,
    errors.CaptureUnreadable: ExitStatus.CAPTURE_READ,
    errors.CaptureWriteError: ExitStatus.CAPTURE_WRITE,
    errors.TotalsUnavailable: ExitStatus.TOTALS,
}


def exit_status(exc: errors.NetmonError) -> ExitStatus:
    """The exit status of an error: its class's, or the nearest mapped base class's
    (a subclass of a mapped error gets its parent's status, not the default)."""
    return next((_STATUS[c] for c in type(exc).__mro__ if c in _STATUS), ExitStatus.ERROR)


def _parsed(parse):
    """A typer callback that turns a parser's ValueError into a usage error naming the option."""

    def callback(value):
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

    return callback


def _parsed_each(parse):
    """As _parsed, for an option given any number of times: a tuple of the values (an
    option given more than once means any of them). A value that parses to None (a
    protocol of "all") makes the option match anything."""

    def callback(values):
        try:
            parsed = tuple(parse(v) for v in values or ())
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return () if None in parsed else parsed

    return callback


def _version(value: bool) -> None:
    if value:
        typer.echo(f"netmon {__version__}")
        raise typer.Exit()


app = typer.Typer(add_completion=False, rich_markup_mode=None)


# The options, one constant each (typer reads them from the signature's defaults).
_INTERFACE = typer.Option(
    None, "-i", "--interface", metavar="IFACE",
    help="Interface to watch; repeat it or separate names with commas. A shell-style "
         "glob ('tap*') or 'any' also watches matching interfaces that appear later "
         "[default: that of the default route, else eth0].")
_DIRECTION = typer.Option(
    None, "--direction", "-Q", case_sensitive=False,
    help="What to show: what the interface receives (in), sends (out), or both "
         "[default: in; both with --guest].")
_HOOK = typer.Option(
    Hook.AUTO, "--hook", case_sensitive=False,
    help="Ingress hook: xdp, tc, or auto: XDP, but tc where XDP is taken or for "
         "globs and 'any'. Egress is always tc.")
_FOLLOW = typer.Option(
    False, "--follow",
    help="When a named interface goes away, wait for it to come back and watch it "
         "again (Proxmox recreates a VM's tap when it restarts); one not there yet is "
         "waited for too.")
_GUEST = typer.Option(
    None, "--guest", metavar="VMID|NAME|all",
    help="Watch a Proxmox VE guest's tap/veth interfaces, VM or container, by id or name, "
         "or every guest with 'all' (both directions by default; repeat for more).")
# The filter options: each may be repeated, for any of its values ("or").
_PROTOCOL = typer.Option(
    None, "--protocol", "-p", metavar="PROTO", callback=_parsed_each(protocols.parse),
    help="tcp, udp, icmp (IPv4), icmp6, or all; also any IP protocol name or number. "
         "Repeat any filter option for any of several values.", show_default=False)
_SRC_IP = typer.Option(
    None, "--src-ip", metavar="ADDR[/LEN]", callback=_parsed_each(parse_network),
    help="Source address or prefix.")
_DST_IP = typer.Option(
    None, "--dst-ip", metavar="ADDR[/LEN]", callback=_parsed_each(parse_network),
    help="Destination address or prefix.")
_SRC_PORT = typer.Option(
    None, "--src-port", metavar="PORT", callback=_parsed_each(parse_port),
    help="Source port (TCP/UDP/SCTP).")
_DST_PORT = typer.Option(
    None, "--dst-port", metavar="PORT", callback=_parsed_each(parse_port),
    help="Destination port (TCP/UDP/SCTP).")
_HOST = typer.Option(
    None, "--host", metavar="ADDR[/LEN]", callback=_parsed_each(parse_network),
    help="Source or destination address or prefix (like tcpdump's host).")
_PORT = typer.Option(
    None, "--port", metavar="PORT", callback=_parsed_each(parse_port),
    help="Source or destination port (like tcpdump's port).")
_VLAN = typer.Option(
    None, "--vlan", metavar="ID", callback=_parsed_each(parse_vlan),
    help="Outer VLAN id (802.1Q or 802.1ad).")
_EXPRESSION = typer.Argument(
    None, metavar="[EXPRESSION]", show_default=False,
    help="A filter expression in tcpdump's language (man pcap-filter), after the options; "
         "its words are joined with spaces. It must hold as well as the options' filters, "
         "and runs in the kernel. Compiled by libpcap (the libpcap0.8 package).")
_EXPRESSION_FILE = typer.Option(
    None, "-F", metavar="FILE", help="Read the filter expression from FILE, as tcpdump -F.")
_MODE = typer.Option(
    Mode.AUTO, "--mode", case_sensitive=False,
    help="XDP attach mode: native (driver), generic (SKB), or auto: native, "
         "falling back to generic.")
_WRITE = typer.Option(
    None, "-w", "--write", metavar="FILE",
    help="Write the matching packets to FILE as pcapng ('-': standard output), for "
         "Wireshark; no event lines unless --print.")
_PRINT_LINES = typer.Option(
    False, "--print", help="With -w, print the event lines too, on stderr.")
_SNAPLEN = typer.Option(
    None, "-s", "--snaplen", metavar="N", min=1, max=MAX_SNAPLEN,
    help=f"With -w, keep at most N bytes of each packet [default: the whole frame, "
         f"up to {MAX_SNAPLEN}]", show_default=False)
_FILE_MB = typer.Option(
    None, "-C", metavar="MB", min=0.001,
    help="With -w, start a new file (FILE.1, FILE.2, ...) once one holds MB million "
         "bytes.")
_FILE_COUNT = typer.Option(
    None, "-W", metavar="N", min=1,
    help="With -C or -G, keep at most N files, reusing them in turn (a ring).")
_ROTATE_SECONDS = typer.Option(
    None, "-G", metavar="SECONDS", min=0.1,
    help="With -w, start a new file every SECONDS.")
_READ = typer.Option(
    None, "-r", "--read", metavar="FILE",
    help="Read packets from a pcap or pcapng file instead of an interface, through the "
         "same kernel program and filters.")
_FLOW_RECORDS = typer.Option(
    False, "--flows",
    help="Count packets as flows in the kernel and print one record per flow when it "
         "ends (idle or active timeout, or the end of the run); --json: IPFIX field "
         "names.")
_TOP = typer.Option(
    False, "--top",
    help="The flows with the highest rates, redrawn every second ('netmon top' is the "
         "same).")
_SORT = typer.Option(
    "rate", "--sort", metavar="KEY", help="top: sort by rate, bytes or packets.")
_BY = typer.Option(
    "flow", "--by", metavar="KEY",
    help="top: a row per flow, guest (its NICs together), interface, host (what it sent "
         "and received) or port (the service's: the lower of the two); key b cycles.")
_FLOW_ENTRIES = typer.Option(
    DEFAULT_ENTRIES, "--flow-entries", metavar="N", min=1, max=1 << 24,
    help="Flows the kernel's table holds per second; beyond, packets are counted as "
         "overflow.")
_FLOW_IDLE = typer.Option(
    DEFAULT_IDLE, "--flow-idle", metavar="SECONDS", min=1,
    help="A flow without packets for SECONDS ends.")
_FLOW_ACTIVE = typer.Option(
    DEFAULT_ACTIVE, "--flow-active", metavar="SECONDS", min=1,
    help="A record covers at most SECONDS; longer flows are split.")
_METRICS = typer.Option(
    None, "--metrics", metavar="[ADDR:]PORT",
    callback=_parsed(lambda v: endpoint.parse(v, DEFAULT_METRICS_HOST)),
    help="Serve Prometheus metrics (packets and bytes by interface, direction and "
         "protocol; losses) at http://ADDR:PORT/metrics [ADDR: 127.0.0.1].")
_WEB_CONFIG = typer.Option(
    None, "--web-config", metavar="FILE",
    help="Serve --metrics as the Prometheus exporter toolkit's web configuration says "
         "(tls_server_config, basic_auth_users with bcrypt hashes): node_exporter's file "
         "works.")
_IPFIX = typer.Option(
    None, "--ipfix", metavar="HOST:PORT", callback=_parsed(endpoint.parse),
    help="Count flows in the kernel and send their records to an IPFIX collector "
         "over UDP (with --flows or top, they are shown too).")
_IPFIX_DOMAIN = typer.Option(
    DEFAULT_DOMAIN, "--ipfix-domain", metavar="N", min=0, max=(1 << 32) - 1,
    help="The IPFIX observation domain id the messages carry.")
_QUIET = typer.Option(
    False, "--quiet", "-q",
    help="Print no packet lines: the kernel only counts (for --metrics and --stats).")
_JSON_OUT = typer.Option(False, "--json", help="One JSON object per line.")
_TIMESTAMPS = typer.Option(
    0, "-t", count=True, max=5, show_default=False,
    help="A time before each line, as tcpdump's: -tt seconds since the epoch, -ttt since "
         "the line before, -tttt date and time, -ttttt since the first line [default and "
         "-t: none, the original tool's line].")
_COUNT = typer.Option(
    None, "--count", "-c", min=1, metavar="N", help="Exit after N shown events.")
_STATS = typer.Option(
    None, "--stats", metavar="SECONDS", min=0.1,
    help="Every SECONDS, print the counters on stderr.")
_BUFFER_PAGES = typer.Option(
    None, "--buffer-pages", metavar="N", min=1,
    help=f"Perf buffer size per CPU, in pages (a power of two) [default: "
         f"{DEFAULT_PAGES}; with -w 8192, less on hosts with over 2 CPUs]",
    show_default=False)
_ATTACH = typer.Option(
    Method.AUTO, "--attach", case_sensitive=False, hidden=True,
    help="link (XDP bpf_link, tcx), netlink (XDP by netlink, tc cls_bpf), or auto: "
         "links where the kernel has them.")
_DROPS = typer.Option(
    False, "--drops",
    help="The packets the kernel drops instead of the traffic, with its reason and where "
         "('netmon drops' is the same); with top, a panel of them below the flows.")
_TOTALS = typer.Option(
    None, "--totals", metavar="PATH",
    help="Add the kernel's counts (packets and bytes by guest NIC or interface, direction "
         "and protocol) to a SQLite database every minute, per hour; 'netmon totals' "
         "reads it. One netmon writes a database at a time.")
_TOTALS_EVERY = typer.Option(
    DEFAULT_TOTALS_EVERY, "--totals-every", metavar="SECONDS", min=1,
    help="With --totals, seconds between two writes (a kill -9 loses at most these).")
_TOTALS_KEEP = typer.Option(
    DEFAULT_KEEP_DAYS, "--totals-keep", metavar="DAYS", min=1,
    help="With --totals, keep hourly rows for DAYS days, then fold them into daily rows.")
_TOTALS_SNAPSHOT = typer.Option(
    None, "--totals-snapshot", metavar="PATH",
    help="With --totals, a consistent copy of the database at PATH every 5 minutes and at "
         "exit (SQLite's online backup, one file): for a cluster's shared storage, where "
         "'netmon totals --db' reads every node's.")
_RTT = typer.Option(
    False, "--rtt",
    help="Round-trip times and retransmissions of TCP connections (and ICMP echoes) "
         "instead of packets ('netmon rtt' is the same): a line per sample, percentiles at "
         "the end.")
_RTT_ENTRIES = typer.Option(
    DEFAULT_TCP_ENTRIES, "--rtt-entries", metavar="N", min=1, max=1 << 22,
    help="netmon rtt, top and --flows: TCP connections whose round trips and "
         "retransmissions the kernel follows at once; beyond, packets of new ones are "
         "counted as not followed.")
_USER = typer.Option(
    None, "-Z", "--relinquish-privileges", metavar="USER",
    help="Once the program is loaded and attached and the files are open, become USER, "
         "keeping only the capabilities the run still needs (as tcpdump -Z). Without -Z: "
         "the netmon user, else nobody. -Z root keeps root.")
_VERSION = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                        help="Show the version and exit.")


@app.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help=usage.MONITOR.summary, epilog=usage.epilog(usage.MONITOR),
)
def monitor(
    interface: Optional[List[str]] = _INTERFACE,
    direction: Optional[Direction] = _DIRECTION,
    hook: Hook = _HOOK,
    follow: bool = _FOLLOW,
    guest: Optional[List[str]] = _GUEST,
    protocol: Optional[List[str]] = _PROTOCOL,
    src_ip: Optional[List[str]] = _SRC_IP,
    dst_ip: Optional[List[str]] = _DST_IP,
    src_port: Optional[List[str]] = _SRC_PORT,
    dst_port: Optional[List[str]] = _DST_PORT,
    host: Optional[List[str]] = _HOST,
    port: Optional[List[str]] = _PORT,
    vlan: Optional[List[str]] = _VLAN,
    expression_words: Optional[List[str]] = _EXPRESSION,
    expression_file: Optional[str] = _EXPRESSION_FILE,
    mode: Mode = _MODE,
    write: Optional[str] = _WRITE,
    print_lines: bool = _PRINT_LINES,
    snaplen: Optional[int] = _SNAPLEN,
    file_mb: Optional[float] = _FILE_MB,
    file_count: Optional[int] = _FILE_COUNT,
    rotate_seconds: Optional[float] = _ROTATE_SECONDS,
    read: Optional[str] = _READ,
    flow_records: bool = _FLOW_RECORDS,
    top: bool = _TOP,
    sort: str = _SORT,
    by: str = _BY,
    flow_entries: int = _FLOW_ENTRIES,
    flow_idle: float = _FLOW_IDLE,
    flow_active: float = _FLOW_ACTIVE,
    metrics: Optional[str] = _METRICS,
    web_config: Optional[str] = _WEB_CONFIG,
    ipfix: Optional[str] = _IPFIX,
    ipfix_domain: int = _IPFIX_DOMAIN,
    quiet: bool = _QUIET,
    json_out: bool = _JSON_OUT,
    timestamps: int = _TIMESTAMPS,
    count: Optional[int] = _COUNT,
    stats: Optional[float] = _STATS,
    buffer_pages: Optional[int] = _BUFFER_PAGES,
    attach: Method = _ATTACH,
    drops: bool = _DROPS,
    totals: Optional[str] = _TOTALS,
    totals_every: float = _TOTALS_EVERY,
    totals_keep: int = _TOTALS_KEEP,
    totals_snapshot: Optional[str] = _TOTALS_SNAPSHOT,
    rtt: bool = _RTT,
    rtt_entries: int = _RTT_ENTRIES,
    user: Optional[str] = _USER,
    version: bool = _VERSION,
) -> int:
    expression = read_expression(expression_words, expression_file)
    try:
        spec = FilterSpec(protocol=protocol, src=src_ip, dst=dst_ip, sport=src_port,
                          dport=dst_port, host=host, port=port, vlan=vlan,
                          expression=expression)
    except ValueError as exc:
        raise errors.UsageError(str(exc)) from None
    options = Options(
        interface=tuple(interface or ()), guest=tuple(guest or ()), direction=direction,
        hook=hook, mode=mode, attach=attach, follow=follow, spec=spec, write=write,
        print_lines=print_lines, snaplen=snaplen, file_mb=file_mb, file_count=file_count,
        rotate_seconds=rotate_seconds, read=read, flow_records=flow_records, top=top, sort=sort,
        by=by,
        flow_entries=flow_entries, flow_idle=flow_idle, flow_active=flow_active,
        metrics=metrics, web_config=web_config, ipfix=ipfix, ipfix_domain=ipfix_domain, quiet=quiet, json=json_out,
        timestamps=timestamps,
        count=count, stats=stats, buffer_pages=buffer_pages, drops=drops, totals=totals,
        totals_every=totals_every, totals_keep=totals_keep,
        totals_snapshot=totals_snapshot, user=user, rtt=rtt, rtt_entries=rtt_entries)
    try:
        settings = build(options, cpus=os.cpu_count() or 1)
    except errors.ExpressionInvalid as exc:
        if expression_file is None:
            raise
        raise exc.from_file(expression_file) from None
    if 1 in _closed_fds and any(k.writes_stdout(settings) for k in sinks.for_run(settings)):
        raise errors.UsageError("standard output is closed, and this run writes to it: "
                                "redirect it (>/dev/null), or use --quiet or -w FILE")
    summary = run(settings, sys.stdout, sys.stderr)
    # Live runs end with a blank line after the events; -r's summary follows them directly.
    gap = "" if settings.read is not None else "\n"
    sys.stderr.write(gap + "".join(f"netmon: {visible(line)}\n" for line in summary.lines()))
    if summary.gone:
        return ExitStatus.INTERFACE_GONE
    return ExitStatus.TOTALS if summary.totals_lost else ExitStatus.SUCCESS


totals_app = typer.Typer(add_completion=False, rich_markup_mode=None)


@totals_app.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help=usage.TOTALS.summary, epilog=usage.epilog(usage.TOTALS))
def totals(
    db: Optional[List[str]] = typer.Option(
        None, "--db", metavar="PATH",
        help="The database netmon --totals writes [default: "
             f"{totals_store.DEFAULT_PATH}]. Repeat it, or give a glob ('/mnt/pve/shared/"
             "netmon/*.db'), to read several (each node's): their counts are summed, and "
             "copies of one database are read once."),
    hours: bool = typer.Option(False, "--hours", help="Per hour [default: the last 24]."),
    days: bool = typer.Option(False, "--days", help="Per day [default: the last 30] "
                                                    "(the default view)."),
    months: bool = typer.Option(False, "--months", help="Per month [default: the last 12]."),
    top: Optional[int] = typer.Option(
        None, "--top", metavar="N", min=1,
        help="The N guests and interfaces with the most bytes in the period [default "
             "period: this month]."),
    guest: Optional[List[int]] = typer.Option(None, "--guest", metavar="VMID", min=1,
                                              max=MAX_GUEST,
                                              help="Only this guest (repeat for more)."),
    since: Optional[str] = typer.Option(
        None, "--since", metavar="TIME", help="From TIME: YYYY-MM, YYYY-MM-DD or "
                                              "'YYYY-MM-DD HH:MM' (local time)."),
    until: Optional[str] = typer.Option(
        None, "--until", metavar="TIME", help="Up to TIME, inclusive: a day includes the "
                                              "whole day."),
    month_start: int = typer.Option(
        1, "--month-start", metavar="DAY", help="Months begin on this day (1-28), for "
                                                "billing cycles."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line, exact "
                                                        "counts."),
    csv_out: bool = typer.Option(False, "--csv", help="CSV for a spreadsheet: a header, "
                                                      "then a row per guest and period."),
    by_nic: bool = typer.Option(False, "--by-nic", help="A row per guest NIC (net0, net1) "
                                                        "instead of its NICs together."),
    rtt: bool = typer.Option(False, "--rtt", help="Round-trip times (percentiles per "
                                                  "component) and retransmissions instead "
                                                  "of the traffic: what 'netmon rtt "
                                                  "--totals' kept."),
    html_out: Optional[str] = typer.Option(
        None, "--html", metavar="FILE",
        help="A report to FILE ('-': standard output): one self-contained HTML file, each "
             "guest's traffic per day as bars and per hour of the last 7 days as a heat "
             "map, the top guests (--top N, 10), round trips where kept."),
) -> int:
    views = [v for v, on in (("hours", hours), ("days", days), ("months", months)) if on]
    if len(views) > 1:
        raise errors.UsageError("--hours, --days and --months: one at a time")
    query = totals_report.Query(
        db=tuple(db or (totals_store.DEFAULT_PATH,)), view=views[0] if views else "days",
        since=since, until=until, guests=tuple(guest or ()), top=top,
        month_start=month_start, json=json_out, csv=csv_out, by_nic=by_nic, rtt=rtt,
        html=html_out)
    if html_out is not None:  # charts in a file, not tables
        from netmon.totals import html

        html.write(query, sys.stdout)
    else:
        totals_report.report(query, sys.stdout)
    return ExitStatus.SUCCESS


def read_expression(words: list[str] | None, path: str | None) -> str | None:
    """The filter expression: the words after the options, or -F's file (not both)."""
    if path is not None:
        if words:
            raise errors.UsageError("a filter expression comes from -F FILE or after the "
                                    "options, not both")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                # tcpdump's -F files may hold comments from '#' to the end of a line.
                text = " ".join(line.split("#", 1)[0] for line in f)
        except OSError as exc:
            raise errors.UsageError(f"-F {path}: {exc.strerror}") from None
    else:
        text = " ".join(words or ())
    return " ".join(text.split()) or None


_closed_fds: frozenset[int] = frozenset()  # of 0-2, those closed when netmon started


def _reopen_standard_fds() -> frozenset[int]:
    """/dev/null in place of a closed stdin, stdout or stderr, as daemons do: else the
    first socket or file netmon opens takes the number, and output meant for stdout goes
    into it. Returns the ones that were closed."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
    # Python leaves the streams of closed fds None.
    if 1 in closed:
        sys.stdout = open(1, "w", closefd=False)
    if 2 in closed:
        sys.stderr = open(2, "w", closefd=False)
    return frozenset(closed)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command, turn every failure into one line on stderr."""
    global _closed_fds
    _closed_fds = _reopen_standard_fds()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(totals_app if argv[:1] == ["totals"] else app)
    prog = "netmon"
    if argv[:1] in (["top"], ["drops"], ["rtt"]) and _asks_help(argv):
        sys.stdout.write(_help_of(argv[0], command))
        return ExitStatus.SUCCESS
    if argv[:1] == ["totals"]:  # netmon totals ...: what --totals kept
        argv, prog = argv[1:], "netmon totals"
    elif argv[:1] == ["top"]:  # netmon top ...: the live flow view
        argv[0] = "--top"
    elif argv[:1] == ["drops"]:  # netmon drops ...: what the kernel dropped
        argv[0] = "--drops"
    elif argv[:1] == ["rtt"]:  # netmon rtt ...: round trips and retransmissions
        argv[0] = "--rtt"
    try:
        status = command.main(args=argv, prog_name=prog, standalone_mode=False)
    except _ClickException as exc:
        _fail(exc.format_message())
        return ExitStatus.USAGE
    except typer.Abort:
        return ExitStatus.ERROR
    except errors.NetmonError as exc:
        _fail(str(exc))
        return exit_status(exc)
    except KeyboardInterrupt:  # before the monitor's own handler was installed
        return ExitStatus.SUCCESS
    except OSError as exc:
        _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return ExitStatus.ERROR
    _close_stdout()
    return int(status or 0)


def _asks_help(argv: list[str]) -> bool:
    words = argv[:argv.index("--")] if "--" in argv else argv
    return "-h" in words or "--help" in words


def _help_of(name: str, command) -> str:
    """netmon top and netmon drops are netmon's command with another mode: their help is
    its own (usage.py), with the options the mode takes."""
    about = usage.BY_NAME[name]
    own = copy.copy(command)
    own.params = [p for p in command.params if p.name not in about.without]
    own.help, own.epilog = about.summary, usage.epilog(about)
    ctx = command.context_class(own, info_name=f"netmon {name}", **own.context_settings)
    return own.get_help(ctx) + "\n"


def _fail(message: str) -> None:
    # One line (runs of spaces, tabs and newlines one space), and nothing in it a
    # terminal acts on (a name, a path, a word of input: netmon/escape.py).
    line = " ".join(re.split(r"[ \t\n]+", message.strip(" \t\n")))
    sys.stderr.write(f"netmon: error: {visible(line)}\n")
    sys.stderr.flush()


def _close_stdout() -> None:
    # A reader that went away must not turn into a traceback at interpreter exit.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
