"""What a run tells the user: the banner at its start and the summary at its end.

Plain Python: the banner is made from the settings and what was attached (its
describe() strings), the summary from the counts the source and the sinks
report into it. Neither knows how they were gathered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netmon import endpoint
from netmon.events import DIR_IN, DIR_NAMES, DIR_OUT

RULE = "═" * 39


def _counts_line(c: dict[str, int], noun: str = "packets") -> str:
    # Frames a filter expression matched that carry no IP packet: among "not IP" and
    # "malformed", written by -w only.
    other = c.get("expr_not_ip", 0)
    also = f", {other} of them matched by the expression" if other else ""
    return (f"{c.get('seen', 0)} {noun} seen ({c.get('non_ip', 0)} not IP, "
            f"{c.get('malformed', 0)} malformed{also}), {c.get('matched', 0)} matched, "
            f"{c.get('sent', 0)} sent")


@dataclass
class Summary:
    """Where every packet went: the kernel's counters and user space's."""

    shown: int = 0
    perf_lost: int = 0  # records the perf buffer reported lost (ring full)
    undecodable: int = 0  # records that were not events of a known family
    counters: dict[str, int] = field(default_factory=dict)
    # Per interface and direction, in the order they were first watched.
    per_interface: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    gone: str | None = None  # the named interface whose going away ended the run
    written: tuple[int, int, str] | None = None  # -w: packets, files, the first file
    shows_lines: bool = True  # a line per event (-w alone shows none: it writes)
    flows: tuple[int, int, int] | None = None  # top, --flows: seen, active, ended
    exported: tuple[str, object] | None = None  # --ipfix: the collector, its ExportCounts
    noun: str = "packets"  # what was seen: packets, or drops (netmon drops)
    clamped: int = 0  # -r -w: frames whose time pcapng's nanoseconds cannot hold
    # netmon drops: interface, reason, where (see LiveSource._drops), drops
    drops: list[tuple[str, str, str, int]] | None = None
    # --totals: the database, writes, failed ones, and what the last (at exit) could not
    # write (packets, bytes) or None
    totals: tuple[str, int, int, tuple[int, int] | None] | None = None
    totals_snapshots: tuple[str, int] | None = None  # --totals-snapshot: (path, copies made)
    # Lines made but not read: the reader of the stream named went away before them
    unread: dict[str, int] = field(default_factory=dict)
    kept: str | None = None  # -Z: who the run became and what it kept (privileges.Kept)
    rtt: list[str] | None = None  # netmon rtt: its tables (tcphealth.summary_lines)
    # netmon rtt: the kernel's RTT histograms by (interface, component) (tcphealth)
    rtt_hists: dict | None = None
    ring_fill: object | None = None  # how full the perf rings were when read (reader.Fill)

    @property
    def totals_lost(self) -> bool:
        """Counts --totals could not write at exit: the run ends with status 12."""
        return bool(self.totals and self.totals[3])

    @property
    def lost(self) -> int:
        # A full ring fails the kernel's send and is reported in the ring once there
        # is room: the same loss seen twice, the first count being the sooner.
        # Packets a full flow table could not count are not among them: they were
        # counted, as overflow, and the summary says so apart (not_in_flows).
        return (max(self.perf_lost, self.counters.get("send_failed", 0)) + self.undecodable
                + self.counters.get("copy_failed", 0))

    @property
    def not_in_flows(self) -> int:
        return self.counters.get("flow_overflow", 0)

    def line(self) -> str:
        c = self.counters
        pulls = c.get("pull_failed", 0)
        copies = c.get("copy_failed", 0)
        overflow = self.not_in_flows
        unkeyed = c.get("drop_unkeyed", 0)
        # What a reader that went away never got was not shown (sinks.stream).
        shown = self.shown - sum(self.unread.values())
        # -w: the packets went to the file; lines (--print) are shown beside them.
        delivered = f"{shown} shown" if not self.written else (
            f"{self.written[0]} written" + (f", {shown} shown" if self.shows_lines else ""))
        return (f"{_counts_line(c, self.noun)}, {delivered}, {self.lost} lost "
                f"({c.get('send_failed', 0)} send failures, {self.perf_lost} reported "
                f"by the perf buffer)" + (f", {pulls} with headers unreadable" if pulls else "")
                + (f", {copies} not captured (bytes unreadable)" if copies else "")
                + (f", {overflow} not counted in flows: the table was full (--flow-entries)"
                   if overflow else "")
                + (f", {unkeyed} drops not in the table by reason: it was full"
                   if unkeyed else ""))

    def lines(self) -> list[str]:
        """Per interface and direction when there is more than one, then the total."""
        rows = [self.kept] if self.kept else []
        if self.drops is not None:
            rows.append("drops by interface and reason:" if self.drops else "no drops")
            width = max([len(row[0]) for row in self.drops], default=0)
            rows += [f"  {name:<{width}}  {n:>8}  " + (f"{why} at {at}".lstrip() if at else why)
                     for name, why, at, n in self.drops]
        elif self.rtt is not None:
            rows += self.rtt
        elif len(self.per_interface) > 1:
            for (name, direction), c in self.per_interface.items():
                failed = c.get("send_failed", 0)
                rows.append(f"{name} {DIR_NAMES[direction]}: {_counts_line(c)}"
                            + (f", {failed} send failures" if failed else ""))
        if self.flows:
            seen, active, ended = self.flows
            c = self.counters
            overflow = self.not_in_flows
            rows.append(f"{seen} flows seen, {active} active, {ended} ended; "
                        f"{c.get('matched', 0) - overflow} packets counted in flows, "
                        f"{overflow} ({c.get('flow_overflow_bytes', 0)} bytes) not: "
                        f"the flow table was full")
        if self.exported:
            where, n = self.exported
            rows.append(f"{n.records} flow records sent to {where} as IPFIX, {n.errors} "
                        f"messages ({n.unsent} records) not sent")
        if self.totals:
            path, writes, failed, unwritten = self.totals
            if unwritten:  # the last write, at exit, failed: there is no next
                rows.append(f"totals: {writes} writes to {path}, {failed} failed; the last, at "
                            f"exit: {unwritten[0]} packets ({unwritten[1]} bytes) not written")
            else:
                rows.append(f"totals: {writes} writes to {path}"
                            + (f", {failed} failed (the counts they held were kept for the "
                               f"next)" if failed else ""))
        if self.totals_snapshots:
            path, n = self.totals_snapshots
            rows.append(f"totals: {n} snapshots to {path}")
        if self.written:
            packets, files, path = self.written
            where = "standard output" if path == "-" else path
            rows.append(f"{packets} packets written to {where}"
                        + (f" and the {files - 1} files after it" if files > 1 else "")
                        + (f"; {self.clamped} of them at the nearest time pcapng holds (their "
                           f"own was before 1970 or after 2554)" if self.clamped else ""))
        rows += [f"{n} lines did not reach {where}: its reader went away"
                 for where, n in self.unread.items()]
        return rows + [self.line()]


def banner(settings, attached: list[tuple[str, list]], notes: list[str],
           how_to_stop: bool = True) -> str:
    """``attached``: each watched interface's name and its hooks (each has a direction and
    describe()), in the order they were watched. ``how_to_stop``: end with it; not
    above a full-screen view (top's says q), which leaves it on the screen after."""
    sel = settings.selection
    lines = [RULE, "     netmon: eBPF/XDP network traffic monitor", RULE]
    if sel.single:
        lines.append(f"Interface: {sel.names[0]}")
    else:
        now = ", ".join(name for name, _ in attached) or "none yet"
        later = "; more are watched as they appear" if sel.dynamic else ""
        lines.append(f"Interfaces: {sel.describe()} (now: {now}{later})")
    if sel.guests or sel.all_guests:  # by id and name, as the user may have named it
        from netmon.host import proxmox

        known = proxmox.guests()
        lines.append("Guests: " + ", ".join(
            ["all: every VM's taps and container's veths, as they come and go"]
            * sel.all_guests + [
                (f"{g} ({known[g]})" if known[g] else str(g)) if g in known
                else f"{g} (no config yet: waited for)" for g in sel.guests]))
    hooks = [(name, h) for name, hs in attached for h in hs]
    if settings.drops_alone:
        lines.append("Watching: the packets the kernel drops (the tracepoint "
                     "skb:kfree_skb), on every interface at once")
        hooks = []
    else:
        directions = {(DIR_IN,): "in", (DIR_OUT,): "out"}.get(settings.directions, "both")
        hint = " (what it receives; --direction both adds what it sends)" \
            if directions == "in" else ""
        lines.append(f"Direction: {directions}{hint}")
    if len(hooks) == 1:
        lines.append(f"Attach mode: {hooks[0][1].describe()}")
    elif hooks:
        lines.append("Attach mode: " + "; ".join(
            f"{name} {DIR_NAMES[h.direction]} {h.describe()}" for name, h in hooks))
    where = "skb:kfree_skb" if settings.drops_alone else "XDP/tc"
    lines.append(f"Architecture: eBPF ({where} in the kernel, filters applied there) "
                 "→ perf buffer → Python")
    if settings.rtt_alone:
        lines.append("Measuring: round-trip times (TCP timestamps, handshakes, ICMP echo) "
                     "and retransmissions, in the kernel"
                     + ("; no lines (--quiet), the tables at the end" if settings.quiet
                        else "; a line per sample"))
        if len(settings.directions) < 2:
            notes = [*notes, "a round trip crosses the interface both ways: with one "
                             "direction watched no RTT is measured, only retransmissions"]
        if settings.spec.one_way():
            notes = [*notes, "a filter here holds for one way of a connection only (its "
                             "echoes go the other way, unseen): --host and --port hold "
                             "for both"]
    if settings.drops and not settings.drops_alone:
        lines.append("Drops: beside the flows, from the tracepoint skb:kfree_skb")
    if settings.quiet:
        lines.append("Output: none (--quiet): the kernel counts, nothing more")
    if settings.capture:
        c = settings.capture
        rotation = ", ".join(
            ([f"a new file past {c.file_mb:g} MB"] if c.file_mb else [])
            + ([f"every {c.rotate_seconds:g} s"] if c.rotate_seconds else [])
            + ([f"at most {c.file_count} files"] if c.file_count else []))
        where = "standard output" if c.path == "-" else c.path
        lines.append(f"Capture: pcapng to {where}" + (f" ({rotation})" if rotation else "")
                     + ("; lines on stderr too (--print)" if c.print_lines else ""))
    if settings.metrics:
        lines.append(f"Metrics: http://{endpoint.display(*settings.metrics)}/metrics")
    if settings.totals:
        lines.append(f"Totals: added to {settings.totals.path} every "
                     f"{settings.totals.every:g} s (netmon totals --db {settings.totals.path})")
    if settings.ipfix:
        host, port, domain = settings.ipfix
        lines.append(f"IPFIX: flow records to {endpoint.display(host, port)} over UDP, "
                     f"observation domain {domain}")
    lines += [f"Note: {note}" for note in notes]
    lines.append("")
    rows = settings.spec.describe()
    if rows:
        lines.append("Filters:")
        lines += [f"  {label}: {value}" for label, value in rows]
    else:
        lines.append("Filters: none (every drop)" if settings.drops_alone
                     else "Filters: none (all IP traffic)")
    lines += [RULE, "", "Monitoring...", "Press Ctrl-C to stop", ""] if how_to_stop else \
        [RULE, ""]
    return "\n".join(lines)
