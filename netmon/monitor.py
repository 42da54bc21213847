"""The loop that ties netmon together: load, attach, poll, show, follow links, stop, summarise.

One loaded object serves every watched interface and direction. The loop
waits on the perf rings and on a netlink socket at once: events are shown as
they come, interfaces that appear are attached to, interfaces that vanish are
noted (and, for a plainly named one, end the run unless ``follow`` is set).
"""

from __future__ import annotations

import gc
import select
import signal
import time
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from netmon import capture as captures
from netmon import endpoint, events, output, system
from netmon.kernel import libbpf
from netmon.kernel import loader as program
from netmon.sources import interfaces, proxmox
from netmon.capture import Capture
from netmon.flows import INTERVAL, FlowBook, FlowSettings, FlowTable
from netmon.flows import kernel_config as flows_config
from netmon.errors import AttachFailed, NetmonError, UsageError, XdpBusy
from netmon.events import DIR_IN, DIR_NAMES, DIR_OUT
from netmon.filters import FilterSpec
from netmon.sources.interfaces import Selection
from netmon.sinks.ipfix import ExportCounts, Exporter
from netmon.sources.netlink import LinkChange, LinkWatcher
from netmon.kernel.loader import Hook, Method, Mode, MonitorProgram
from netmon.pcapng import PcapngWriter
from netmon.sources.reader import DEFAULT_PAGES, SAMPLE_HEAD, SAMPLE_TAIL, PerfReader, Span

RULE = "═" * 39
METRICS_EVERY = 1.0  # seconds between two snapshots of the counters for --metrics


@dataclass(frozen=True)
class Settings:
    selection: Selection
    directions: tuple[int, ...] = (DIR_IN,)
    hook: Hook = Hook.AUTO  # for ingress; egress is always tc
    mode: Mode = Mode.AUTO
    method: Method = Method.AUTO
    json: bool = False
    count: int | None = None  # stop after this many shown events
    pages: int = DEFAULT_PAGES
    poll_ms: int = 100  # also the longest an event waits before it is shown
    stats_every: float | None = None  # seconds between --stats lines
    follow: bool = False  # a named interface that goes away is waited for
    capture: Capture | None = None  # -w: matching packets into pcapng files
    flows: FlowSettings | None = None  # top, --flows, --ipfix: packets counted as flows
    metrics: tuple[str, int] | None = None  # --metrics: serve counters on this address
    ipfix: tuple[str, int, int] | None = None  # --ipfix: collector host, port, domain
    quiet: bool = False  # count only: no lines (the counters, --metrics, --stats)

    @property
    def labelled(self) -> bool:
        """Lines name the interface and direction (more than one of either is watched)."""
        return not self.selection.single or len(self.directions) > 1


def _counts_line(c: dict[str, int]) -> str:
    return (f"{c.get('seen', 0)} packets seen ({c.get('non_ip', 0)} not IP, "
            f"{c.get('malformed', 0)} malformed), {c.get('matched', 0)} matched, "
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
    flows: tuple[int, int, int] | None = None  # top, --flows: seen, active, ended
    exported: tuple[str, ExportCounts] | None = None  # --ipfix: the collector, what was sent

    @property
    def lost(self) -> int:
        # A full ring fails the kernel's send and is reported in the ring once there
        # is room: the same loss seen twice, the first count being the sooner.
        return (max(self.perf_lost, self.counters.get("send_failed", 0)) + self.undecodable
                + self.counters.get("copy_failed", 0) + self.counters.get("flow_overflow", 0))

    def line(self) -> str:
        c = self.counters
        pulls = c.get("pull_failed", 0)
        copies = c.get("copy_failed", 0)
        return (f"{_counts_line(c)}, {self.shown} shown, {self.lost} lost "
                f"({c.get('send_failed', 0)} send failures, {self.perf_lost} reported "
                f"by the perf buffer)" + (f", {pulls} with headers unreadable" if pulls else "")
                + (f", {copies} not captured (bytes unreadable)" if copies else ""))

    def lines(self) -> list[str]:
        """Per interface and direction when there is more than one, then the total."""
        rows = []
        if len(self.per_interface) > 1:
            for (name, direction), c in self.per_interface.items():
                failed = c.get("send_failed", 0)
                rows.append(f"{name} {DIR_NAMES[direction]}: {_counts_line(c)}"
                            + (f", {failed} send failures" if failed else ""))
        if self.flows:
            seen, active, ended = self.flows
            c = self.counters
            overflow = c.get("flow_overflow", 0)
            rows.append(f"{seen} flows seen, {active} active, {ended} ended; "
                        f"{c.get('matched', 0) - overflow} packets counted in flows, "
                        f"{overflow} ({c.get('flow_overflow_bytes', 0)} bytes) not: "
                        f"the flow table was full")
        if self.exported:
            where, n = self.exported
            rows.append(f"{n.records} flow records sent to {where} as IPFIX, {n.errors} "
                        f"messages ({n.unsent} records) not sent")
        if self.written:
            packets, files, path = self.written
            where = "standard output" if path == "-" else path
            rows.append(f"{packets} packets written to {where}"
                        + (f" and the {files - 1} files after it" if files > 1 else ""))
        return rows + [self.line()]


class _Stop:
    """Set by SIGINT/SIGTERM; the loop checks it after every poll."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


@contextmanager
def _signals_stop(stop: _Stop):
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, stop) for s in sigs}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Interfaces:
    """What is known of each interface an event may name: its name, its guest."""

    def __init__(self):
        self.names: dict[int, str | None] = {}
        self._info: dict[int, dict] = {}

    def name(self, ifindex: int) -> str | None:
        """The interface's name (None: a capture file's interface that has none)."""
        if ifindex not in self.names:
            self.names[ifindex] = interfaces.existing().get(ifindex, str(ifindex))
        return self.names[ifindex]

    def info(self, ifindex: int) -> dict:
        info = self._info.get(ifindex)
        if info is None:
            name = self.name(ifindex)
            info = {"ifname": name}
            guest = proxmox.guest_of(name) if name else None
            if guest is not None:
                info.update(guest=guest, guest_name=proxmox.guest_name(guest))
            self._info[ifindex] = info
        return info

    def learn(self, ifindex: int, name: str | None) -> None:
        if self.names.get(ifindex) != name:
            self.names[ifindex] = name
            self._info.pop(ifindex, None)


class _Watch:
    """The interfaces being watched and their hooks; closes them all once."""

    def __init__(self, prog: MonitorProgram, settings: Settings, summary: Summary):
        self._prog = prog
        self._settings = settings
        self._summary = summary
        self.attached: dict[int, tuple[str, list[program.Attachment]]] = {}

    def _ingress_hook(self, ifindex: int, ifname: str) -> tuple[str, str | None]:
        """("xdp" or "tc", a note on the choice) for one interface's ingress."""
        hook = self._settings.hook
        if hook is Hook.XDP:
            return "xdp", None
        if hook is Hook.TC or _tc_ingress_only(self._settings):
            return "tc", None
        taken = program.query(ifindex).prog_id
        if taken:
            return "tc", (f"{ifname} already has an XDP program (id {taken}), left as it is: "
                          f"watching its ingress with tc instead")
        return "xdp", None

    def add(self, ifindex: int, ifname: str) -> list[str]:
        """Register and hook one interface in every direction; returns notes for the user."""
        s = self._settings
        self._prog.register(ifindex)
        hooks: list[program.Attachment] = []
        notes = []
        try:
            for direction in s.directions:
                if direction == DIR_IN:
                    kind, note = self._ingress_hook(ifindex, ifname)
                    if note:
                        notes.append(note)
                    if kind == "xdp":
                        hooks.append(self._prog.attach_xdp(ifindex, ifname, s.mode, s.method))
                        continue
                hooks.append(self._prog.attach_tc(ifindex, ifname, direction, s.method))
        except BaseException:
            for h in hooks:
                h.close()
            self._prog.unregister(ifindex)
            raise
        for h in hooks:
            notes += h.notes
            self._summary.per_interface.setdefault((ifname, h.direction), {})
        self.attached[ifindex] = (ifname, hooks)
        return notes

    def remove(self, ifindex: int) -> str:
        """Unhook an interface (gone or going); keep its last counts. Returns its name."""
        ifname, hooks = self.attached.pop(ifindex)
        for h in hooks:
            try:
                h.close()
            except NetmonError:
                pass  # the interface is gone, and its hooks with it
        for direction, counts in self._prog.unregister(ifindex).items():
            if (ifname, direction) in self._summary.per_interface:
                self._summary.per_interface[(ifname, direction)] = counts
        return ifname

    def describe(self, ifindex: int) -> str:
        _, hooks = self.attached[ifindex]
        return ", ".join(f"{DIR_NAMES[h.direction]}: {h.describe()}" for h in hooks)

    def tally(self) -> None:
        for ifindex, (ifname, hooks) in self.attached.items():
            for h in hooks:
                self._summary.per_interface[(ifname, h.direction)] = \
                    self._prog.counters(ifindex, h.direction)

    def close(self) -> None:
        for ifindex in list(self.attached):
            _, hooks = self.attached[ifindex]
            for h in hooks:
                h.close()
        self.tally()


class Delivery:
    """Where decoded events go: lines (stdout; stderr with -w --print) and a capture file.

    Rows come with their packets' pcapng blocks when capturing; --count applies to both.
    """

    def __init__(self, settings: Settings, known: Interfaces, summary: Summary,
                 out: TextIO, err: TextIO, writer: PcapngWriter | None, clock: output.Clock):
        self._count = settings.count
        self._summary = summary
        self._writer = writer
        capture = settings.capture
        if writer is not None and not capture.print_lines:
            self._lines = None
        else:
            self._lines = err if writer is not None else out
        if settings.json:
            self._fmt = output.JsonFormat(known.info, clock)
        else:
            self._fmt = output.TextFormat(known.name if settings.labelled else None)

    @property
    def lines(self) -> bool:
        """Events are shown as lines (else, with -w, only written)."""
        return self._lines is not None

    def forget(self, ifindex: int) -> None:
        if isinstance(self._fmt, output.TextFormat):
            self._fmt.forget(ifindex)

    def count_reached(self) -> bool:
        return self._count is not None and self._summary.shown >= self._count

    def __call__(self, rows: list, blocks: list[bytes] | None = None,
                 frames: list[int] | None = None) -> None:
        """``blocks``: with -w, each row's EPB. ``frames``: with -r, each row's frame
        number in the file (JSON shows it)."""
        if self._count is not None:
            rows = rows[: self._count - self._summary.shown]
        if not rows:
            return
        if self._writer is not None:
            self._writer.write(blocks[:len(rows)])
        if self._lines is not None:
            self._lines.write(self._fmt.render(rows, frames))
            self._lines.flush()
        self._summary.shown += len(rows)

    def runs(self, runs: list[captures.Run]) -> None:
        """-w alone: runs of the kernel's blocks straight to the file."""
        for run in runs:
            self._writer.write_run(run.parts, run.packets)
            self._summary.shown += run.packets

    def tick(self) -> None:
        """Once per poll: the file is flushed (and rotated by time)."""
        if self._writer is not None:
            self._writer.tick()


class _Flows:
    """top and --flows: the kernel's tables read every INTERVAL, then records or the view."""

    def __init__(self, fs: FlowSettings, prog: MonitorProgram, settings: Settings,
                 known: Interfaces, summary: Summary, out: TextIO, clock: output.Clock,
                 exporter: Exporter | None = None):
        self._table = FlowTable(prog, fs.entries)
        self._exporter = exporter
        self.book = FlowBook(time.monotonic_ns(), fs.idle, fs.active)
        self._prog = prog
        self._known = known
        self._summary = summary
        self._out = out
        self._next = time.monotonic() + INTERVAL
        self._title = f"netmon top: {settings.selection.describe()}"
        self.screen = None
        self._view = None
        self._fmt = None
        if fs.top:
            from netmon.sinks import top

            many = not settings.selection.single
            both = len(settings.directions) > 1
            self._where_parts = (many, both)
            self._view = top.TopView(self.book, self._where if many or both else None,
                                     "WHERE" if many else "DIR", fs.sort)
            if out.isatty():
                self.screen = top.Screen(self._view, out)
        elif not fs.print_records:
            pass  # --ipfix alone: the records go to the collector only
        elif settings.json:
            self._fmt = output.FlowRecordJson(known.info, clock)
        else:
            self._fmt = output.FlowRecordText(known.name, clock)

    def _where(self, flow) -> str:
        """The interface (a guest's name for a guest's) and the direction, as needed."""
        many, both = self._where_parts
        if not many:
            return flow.key.direction
        info = self._known.info(flow.key.ifindex)
        name = info.get("guest_name") or (f"vm{info['guest']}" if "guest" in info
                                          else info["ifname"])
        return f"{name} {flow.key.direction}" if both else name

    def wait_ms(self) -> int:
        return max(0, int((self._next - time.monotonic()) * 1000))

    def key(self, stop: "_Stop") -> None:
        """A key pressed in the view: q quits, s changes the sort."""
        fd = self.screen.keys_fd if self.screen else None
        if fd is None or not select.select([fd], [], [], 0)[0]:
            return
        key = self.screen.key()
        if key == "q":
            stop.requested = True
        elif key == "s":
            self._view.next_sort()
            self._show([])

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = max(self._next + INTERVAL, now + INTERVAL / 2)
        records = self.book.add(self._table.take(), time.monotonic_ns())
        if self._exporter is not None:
            self._exporter.send(records)  # also the templates, when they are due
        self._show(records)

    def finish(self) -> None:
        """The hooks are gone: the last counts, then every flow ends."""
        records = self.book.add(self._table.take(), time.monotonic_ns()) + self.book.flush()
        if self._exporter is not None:
            self._exporter.send(records)
        if self._fmt is not None:
            self._show(records)
        self._summary.flows = (self.book.seen, self.book.active, self.book.ended)

    def _show(self, records: list) -> None:
        self._summary.flows = (self.book.seen, self.book.active, self.book.ended)
        if self._view is None:
            if self._fmt is not None and records:
                self._out.write(self._fmt.render(records))
                self._out.flush()
                self._summary.shown += len(records)
            return
        c = self._prog.counters()
        lost = c.get("flow_overflow", 0)
        if self.screen is not None:
            self.screen.draw(self._title, c.get("send_failed", 0), lost)
        else:
            self._out.write(self._view.plain(self._title, c.get("send_failed", 0), lost))
            self._out.flush()


def banner(settings: Settings, spec: FilterSpec, watch: _Watch, notes: list[str]) -> str:
    sel = settings.selection
    lines = [RULE, "     netmon: eBPF/XDP network traffic monitor", RULE]
    if sel.single:
        lines.append(f"Interface: {sel.names[0]}")
    else:
        now = ", ".join(name for name, _ in watch.attached.values()) or "none yet"
        later = "; more are watched as they appear" if sel.dynamic else ""
        lines.append(f"Interfaces: {sel.describe()} (now: {now}{later})")
    directions = {(DIR_IN,): "in", (DIR_OUT,): "out"}.get(settings.directions, "both")
    hint = " (what it receives; --direction both adds what it sends)" if directions == "in" \
        else ""
    lines.append(f"Direction: {directions}{hint}")
    hooks = [(name, h) for name, hs in watch.attached.values() for h in hs]
    if len(hooks) == 1:
        lines.append(f"Attach mode: {hooks[0][1].describe()}")
    elif hooks:
        lines.append("Attach mode: " + "; ".join(
            f"{name} {DIR_NAMES[h.direction]} {h.describe()}" for name, h in hooks))
    lines.append("Architecture: eBPF (XDP/tc in the kernel, filters applied there) "
                 "→ perf buffer → Python")
    if settings.quiet:
        lines.append("Output: none (--quiet): the kernel counts, nothing more")
    if settings.metrics:
        lines.append(f"Metrics: http://{endpoint.display(*settings.metrics)}/metrics")
    if settings.ipfix:
        host, port, domain = settings.ipfix
        lines.append(f"IPFIX: flow records to {endpoint.display(host, port)} over UDP, "
                     f"observation domain {domain}")
    lines += [f"Note: {note}" for note in notes]
    lines.append("")
    rows = spec.describe()
    if rows:
        lines.append("Filters:")
        lines += [f"  {label}: {value}" for label, value in rows]
    else:
        lines.append("Filters: none (all IP traffic)")
    lines += [RULE, "", "Monitoring...", "Press Ctrl-C to stop", ""]
    return "\n".join(lines)


def _programs_needed(settings: Settings, targets: dict[int, str]) -> set[str]:
    """Which of the object's programs this run can use: only those are loaded."""
    needed = set()
    if DIR_OUT in settings.directions:
        needed.add("tc_out")
    if DIR_IN in settings.directions:
        hook = settings.hook
        if hook is Hook.TC or (hook is Hook.AUTO and _tc_ingress_only(settings)):
            needed.add("tc_in")
        else:
            needed.add("xdp")
            busy = any(program.query(idx).prog_id for idx in targets)
            if hook is Hook.AUTO and (busy or settings.follow):
                needed.add("tc_in")
    return needed


def _tc_ingress_only(settings: Settings) -> bool:
    """--hook auto watches every ingress with tc: for globs, and for captures XDP cannot copy."""
    return settings.selection.dynamic or (settings.capture is not None
                                          and not program.xdp_can_capture())


def _targets(selection: Selection) -> dict[int, str]:
    """The interfaces to watch now: the named ones (which must exist), then the matches."""
    present = interfaces.existing()
    by_name = {name: idx for idx, name in present.items()}
    targets = {}
    for name in selection.names:
        idx = by_name.get(name)
        targets[idx if idx is not None else system.ifindex(name)] = name
    for idx, name in sorted(present.items(), key=lambda item: item[1]):
        if idx not in targets and selection.matches(name):
            targets[idx] = name
    return targets


def run(settings: Settings, spec: FilterSpec, out: TextIO, err: TextIO) -> Summary:
    """Monitor until stopped (signal, --count reached, a closed stdout, a named interface gone)."""
    system.check_kernel()
    libbpf.lib()  # a missing libbpf is reported before anything else is tried
    system.check_privileges()
    sel = settings.selection

    capture = settings.capture
    if capture and settings.hook is Hook.XDP and not program.xdp_can_capture():
        raise UsageError("capturing (-w) through XDP needs Linux 5.18 or later "
                         "(bpf_xdp_load_bytes); leave out --hook xdp to capture with tc")

    summary = Summary()
    stop = _Stop()
    known = Interfaces()
    decoder = events.Decoder()
    clock = output.Clock()
    with ExitStack() as stack:
        stack.enter_context(_signals_stop(stop))
        metrics = None
        if settings.metrics:  # first: a port in use stops the run before anything is attached
            from netmon.sinks.metrics import Metrics

            metrics = stack.enter_context(Metrics(libbpf.version()).serve(*settings.metrics))
        # Listen before listing, so that no interface slips between the two.
        links = stack.enter_context(closing(LinkWatcher()))
        targets = _targets(sel)
        records = None
        config = flows_config(spec) if settings.flows else \
            spec.kernel_config(quiet=settings.quiet)
        if capture:
            # Records carry events only when lines are printed or counted as well.
            records = captures.Records(events=capture.print_lines or settings.count is not None)
            config = spec.kernel_config(capture.snaplen, records.events, clock.offset_ns)
        prog = stack.enter_context(MonitorProgram(
            config, hooks=_programs_needed(settings, targets), capture=capture is not None,
            flow_entries=settings.flows.entries if settings.flows else 0))
        # Flows send no events: the one-page rings are there to wait on with the rest.
        reader = stack.enter_context(PerfReader(
            prog.events_fd, 1 if settings.flows else settings.pages,
            wakeup=captures.WAKEUP_BYTES if capture else None))
        writer = stack.enter_context(capture.writer()) if capture else None
        reader.watch(links.fileno())
        watch = stack.enter_context(closing(_Watch(prog, settings, summary)))
        if writer is not None:
            writer.describe(0, None)  # slot 0: frames of interfaces not registered

        def watched(ifindex: int, name: str) -> list[str]:
            notes = watch.add(ifindex, name)
            if writer is not None:
                writer.describe(prog.slot(ifindex), name)
            return notes

        notes = []
        for idx, name in targets.items():
            known.learn(idx, name)
            try:
                notes += watched(idx, name)
            except (AttachFailed, XdpBusy) as exc:
                if name in sel.names:
                    raise
                # A glob's match that cannot be watched; the others can.
                notes.append(f"not watching {name}: {exc}")
        err.write(banner(settings, spec, watch, notes))
        err.flush()

        deliver = Delivery(settings, known, summary, out, err, writer, clock)
        flows = exporter = None
        if settings.ipfix:
            host, port, domain = settings.ipfix
            exporter = stack.enter_context(closing(Exporter(
                host, port, lambda ns: int(clock.epoch(ns) * 1000), domain)))
            summary.exported = (endpoint.display(host, port), exporter.counts)
        if settings.flows:
            flows = _Flows(settings.flows, prog, settings, known, summary, out, clock,
                           exporter)
            if flows.screen is not None:
                stack.enter_context(flows.screen)
                if flows.screen.keys_fd is not None:
                    reader.watch(flows.screen.keys_fd)

        def say(text: str) -> None:
            err.write(f"netmon: {text}\n")
            err.flush()

        def show(chunks: list[bytes]) -> None:
            rows = []
            for chunk in chunks:
                rows += decoder.rows(chunk, SAMPLE_HEAD, SAMPLE_TAIL)
            if len(chunks) > 1:
                rows.sort(key=events.BY_TIME)  # each CPU's ring is in order; merge them
            deliver(rows)

        def show_captured(spans: list[tuple[int, Span]]) -> None:
            try:
                if not records.events:
                    deliver.runs(sorted((records.run(ring, span) for ring, span in spans),
                                        key=events.BY_TIME))
                    return
                rows, blocks = [], []
                for ring, span in spans:
                    r, b = records.rows(ring, span)
                    rows += r
                    blocks += b
                if len(spans) > 1:
                    order = sorted(range(len(rows)), key=lambda i: rows[i][0])
                    rows, blocks = [rows[i] for i in order], [blocks[i] for i in order]
                deliver(rows, blocks)
            finally:
                for _, span in spans:
                    span.release()

        poll_ms = settings.poll_ms if deliver.lines else captures.FLUSH_MS

        def poll() -> None:
            if flows is not None:
                reader.poll(flows.wait_ms())  # wakes for links, keys and signals too
                flows.key(stop)
                flows.tick()
            elif records is None:
                show(reader.poll(poll_ms))
            else:
                show_captured(reader.poll_spans(poll_ms))

        def drain() -> None:
            if flows is not None:
                flows.finish()
            elif records is None:
                show(reader.drain())
            else:
                show_captured(reader.drain_spans())

        def link_changes() -> None:
            changes = links.changes()
            if links.overrun:  # notifications were dropped: compare with what exists
                links.overrun = False
                present = interfaces.existing()
                changes = [LinkChange(idx, name, True) for idx, (name, _) in
                            watch.attached.items() if present.get(idx) != name]
                changes += [LinkChange(idx, name, False) for idx, name in present.items()]
            for change in changes:
                if change.gone:
                    if change.ifindex not in watch.attached:
                        continue
                    name = watch.remove(change.ifindex)
                    deliver.forget(change.ifindex)
                    if name in sel.names and not settings.follow:
                        say(f"interface {name} went away")
                        summary.gone = name
                        stop.requested = True
                    elif name in sel.names:
                        say(f"interface {name} went away; waiting for it to come back")
                    else:
                        say(f"interface {name} went away")
                    continue
                if change.ifindex in watch.attached or not sel.matches(change.ifname):
                    continue
                if change.ifname in sel.names and not settings.follow:
                    continue
                known.learn(change.ifindex, change.ifname)
                try:
                    for note in watched(change.ifindex, change.ifname):
                        say(note)
                except NetmonError as exc:
                    say(f"cannot watch {change.ifname}: {exc}")
                    continue
                back = " again" if change.ifname in sel.names else ""
                say(f"watching {change.ifname}{back} ({watch.describe(change.ifindex)})")

        def tally() -> Summary:
            summary.counters = prog.counters()
            watch.tally()
            summary.perf_lost = reader.lost + (records.lost if records else 0)
            summary.undecodable = (decoder.undecodable + reader.foreign
                                   + (records.undecodable if records else 0))
            if writer is not None:
                summary.written = (writer.packets, writer.files, capture.path)
            return summary

        def serve_metrics() -> None:
            from netmon.sinks.metrics import Snapshot

            tally()
            metrics.update(Snapshot(
                dict(summary.per_interface), summary.lost, summary.counters.get("flow_overflow", 0),
                {"records": exporter.counts.records, "errors": exporter.counts.errors}
                if exporter else {}))

        def stats() -> None:
            tally()
            for line in summary.lines():
                err.write(f"netmon: stats: {line}\n")
            err.flush()

        # Everything made so far lives until exit; keep the collector from walking it
        # again and again while the loop allocates rows by the thousand.
        gc.freeze()
        next_stats = time.monotonic() + (settings.stats_every or 0)
        next_metrics = time.monotonic()
        try:
            while not (stop.requested or deliver.count_reached()):
                poll()
                deliver.tick()
                link_changes()
                if metrics is not None and time.monotonic() >= next_metrics:
                    next_metrics = time.monotonic() + METRICS_EVERY
                    serve_metrics()
                if settings.stats_every and time.monotonic() >= next_stats:
                    next_stats += settings.stats_every
                    stats()
            # Unhook first, so what is left in the buffer is all there will be.
            watch.close()
            if not deliver.count_reached():
                drain()
            if writer is not None:
                writer.close()
        except BrokenPipeError:
            pass  # the reader of our output went away: stop quietly
        tally()
    return summary
