"""The live source: the program on interfaces, its rings and flow tables, and link changes.

One loaded object serves every watched interface and direction. ``poll()``
waits on the perf rings and on a netlink socket at once (and on whatever a
sink asks to be woken by: a view's keys), then hands what arrived to the
pipeline: rows of events, runs or rows of capture records, or, once a second,
the flow records the kernel's tables yield. Interfaces that appear are
attached to, interfaces that vanish are noted (and, for a plainly named one,
end the run unless ``follow`` is set).

Every kernel resource here (the object, the rings, the hooks, the netlink
socket) is entered into the caller's ExitStack: one close path for normal exit,
signals and errors.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, closing
from typing import Callable

from netmon import events
from netmon.errors import AttachFailed, InterfaceGone, NetmonError, XdpBusy
from netmon.events import DIR_IN, DIR_NAMES
from netmon.flows import INTERVAL, FlowBook
from netmon.kernel import attach as hooking
from netmon.kernel import drops, hooks
from netmon.kernel.abi import DROP_TAIL
from netmon.kernel.flowtable import FlowTable
from netmon.kernel.loader import MonitorProgram
from netmon.pipeline import Delivery, Pipeline
from netmon.report import Summary
from netmon.settings import Hook, Settings
from netmon.sources.interfaces import Interfaces, existing, targets
from netmon.sources.netlink import LinkChange, LinkWatcher
from netmon.sources.reader import SAMPLE_HEAD, PerfReader, Span, sample_size
from netmon.sources.records import epb_time, FLUSH_MS, WAKEUP_BYTES, Records


def _foreign_xdp(settings: Settings, xdp_captures: bool, ifindex: int) -> int:
    """The id of someone else's XDP program on the interface where it decides the ingress
    hook (hooks.ingress: --hook auto, ingress watched, XDP possible); else 0."""
    if settings.hook is Hook.AUTO and DIR_IN in settings.directions \
            and not hooks.tc_ingress_only(settings, xdp_captures):
        return hooking.query(ifindex).prog_id
    return 0


class Watch:
    """The interfaces being watched and their hooks; closes them all once."""

    def __init__(self, prog: MonitorProgram, settings: Settings, summary: Summary,
                 xdp_captures: bool):
        self._prog = prog
        self._settings = settings
        self._summary = summary
        self._xdp_captures = xdp_captures
        self.attached: dict[int, tuple[str, list[hooking.Attachment]]] = {}

    def _hooks(self, ifindex: int, ifname: str) -> tuple[list[str], list[str]]:
        """The hooks for one interface (hooks.for_interface), and a note on the choice."""
        s = self._settings
        taken = _foreign_xdp(s, self._xdp_captures, ifindex)
        notes = [f"{ifname} already has an XDP program (id {taken}), left as it is: "
                 f"watching its ingress with tc instead"] if taken else []
        return hooks.for_interface(s, bool(taken), self._xdp_captures), notes

    def add(self, ifindex: int, ifname: str) -> list[str]:
        """Register and hook one interface in every direction; returns notes for the user."""
        self._prog.register(ifindex)
        attached: list[hooking.Attachment] = []
        try:
            kinds, notes = self._hooks(ifindex, ifname)
            for kind in kinds:
                attached.append(self._prog.attach(kind, ifindex, ifname, self._settings))
        except BaseException:
            for a in attached:
                a.close()
            self._prog.unregister(ifindex)
            raise
        for a in attached:
            notes += a.notes
            self._summary.per_interface.setdefault((ifname, a.direction), {})
        self.attached[ifindex] = (ifname, attached)
        return notes

    def remove(self, ifindex: int) -> tuple[str, dict[int, dict[str, int]]]:
        """Unhook an interface (gone or going); keep its last counts. Returns its name and
        those counts by direction."""
        ifname, attached = self.attached.pop(ifindex)
        for a in attached:
            try:
                a.close()
            except NetmonError:
                pass  # the interface is gone, and its hooks with it
        last = self._prog.unregister(ifindex)
        for direction, counts in last.items():
            if (ifname, direction) in self._summary.per_interface:
                self._summary.per_interface[(ifname, direction)] = counts
        return ifname, {a.direction: last[a.direction] for a in attached if a.direction in last}

    def describe(self, ifindex: int) -> str:
        _, attached = self.attached[ifindex]
        return ", ".join(f"{DIR_NAMES[a.direction]}: {a.describe()}" for a in attached)

    def counters(self) -> dict[int, tuple[str, dict[int, dict[str, int]]]]:
        """Each watched interface's name and counters by hooked direction."""
        return {ifindex: (ifname, {a.direction: self._prog.counters(ifindex, a.direction)
                                   for a in attached})
                for ifindex, (ifname, attached) in self.attached.items()}

    def tally(self) -> None:
        for ifindex, (ifname, attached) in self.attached.items():
            for a in attached:
                self._summary.per_interface[(ifname, a.direction)] = \
                    self._prog.counters(ifindex, a.direction)

    def close(self) -> None:
        for ifindex in list(self.attached):
            _, attached = self.attached[ifindex]
            for a in attached:
                a.close()
        self.tally()


class LiveSource:
    """Loads the program for one delivery, attaches it, and feeds the pipeline."""

    def __init__(self, stack: ExitStack, settings: Settings, delivery: Delivery,
                 pipeline: Pipeline, interfaces: Interfaces, say: Callable[[str], None],
                 cap_events: bool = False, epoch_offset_ns: int = 0,
                 drop_names: drops.Names | None = None):
        """Listens for links, loads and opens the rings; attaches nothing yet (start())."""
        self._settings = s = settings
        self._delivery = delivery
        self._pipeline = pipeline
        self._interfaces = interfaces
        self._say = say
        self._drop_names = drop_names
        # netmon drops: each record an nm_event, then where and why it was dropped.
        drop_records = delivery is Delivery.DROPS
        self._decoder = events.Decoder(DROP_TAIL.format if drop_records else "")
        record = events.EVENT_SIZE + (DROP_TAIL.size if drop_records else 0)
        self._sample = sample_size(record)
        self._tail = self._sample - SAMPLE_HEAD - record
        # Listen before listing, so that no interface slips between the two.
        self._links = stack.enter_context(closing(LinkWatcher()))
        self._targets = targets(s.selection)
        # What a killed netmon left first: then its interfaces are free for XDP again.
        self._notes = [note for idx, name in self._targets.items()
                       for note in self._stale(idx, name)]
        xdp_captures = hooks.xdp_can_capture()
        busy = [bool(_foreign_xdp(s, xdp_captures, idx)) for idx in self._targets
                if not s.drops_alone]
        self._records = Records(events=cap_events) if delivery is Delivery.CAPTURE else None
        flows = delivery is Delivery.FLOWS
        config = s.spec.kernel_config(
            flows=flows, quiet=delivery is Delivery.COUNTS, owner=os.getpid(),
            **(dict(any_if=s.selection.any, netns=os.stat("/proc/self/ns/net").st_ino)
               if s.drops else {}),
            **(dict(snaplen=s.capture.snaplen, cap_events=cap_events, epoch_ns=epoch_offset_ns)
               if self._records else {}))
        self.prog = stack.enter_context(MonitorProgram(
            config, hooks=hooks.to_load(s, busy, xdp_captures), capture=self._records is not None,
            flow_entries=s.flows.entries if flows else 0, expression=s.spec.expression))
        # Flows send no events: the one-page rings are there to wait on with the rest.
        self._reader = stack.enter_context(PerfReader(
            self.prog.events_fd, 1 if flows else s.pages,
            wakeup=WAKEUP_BYTES if self._records else None, sample=self._sample))
        self._reader.watch(self._links.fileno())
        self.watch = stack.enter_context(closing(Watch(self.prog, s, pipeline.summary,
                                                       xdp_captures)))
        self._table = FlowTable(self.prog, s.flows.entries) if flows else None
        self.book: FlowBook | None = None  # made once attached: its first interval starts
        self._next = 0.0
        self.poll_ms = s.poll_ms
        pipeline.reports(self._fill)

    def start(self, shows_lines: bool) -> list[str]:
        """Attach to every interface there is now; returns notes for the banner."""
        sel = self._settings.selection
        self._pipeline.interface(0, None)  # capture interface 0: frames of unregistered ones
        notes = self._notes
        if self._settings.drops and not drops.reasons():
            notes.append("this kernel gives no reasons for its drops (they came in Linux "
                         "5.17): each drop shows where it happened only")
        for idx, name in self._targets.items():
            self._interfaces.learn(idx, name)
            try:
                notes += self._watched(idx, name)
            except InterfaceGone:
                if name in sel.names and not self._settings.follow:
                    raise  # exit 9, as when it goes away later
                if name in sel.names:  # --follow: it is watched again when it comes back
                    notes.append(f"interface {name} went away; waiting for it to come back")
            except (AttachFailed, XdpBusy) as exc:
                if name in sel.names:
                    raise
                notes.append(f"not watching {name}: {exc}")  # a glob's; the others can be
        if self._records is not None and not shows_lines:
            self.poll_ms = FLUSH_MS
        if self._table is not None:
            fs = self._settings.flows
            self.book = FlowBook(time.monotonic_ns(), fs.idle, fs.active)
            self._next = time.monotonic() + INTERVAL
        return notes

    def wake_on(self, fds: list[int]) -> None:
        """Input on these (a view's keys) wakes the loop too."""
        for fd in fds:
            self._reader.watch(fd)

    def _stale(self, ifindex: int, name: str) -> list[str]:
        """The XDP program a killed netmon left on an interface whose ingress is watched,
        removed (attach.remove_stale_xdp); notes for the user."""
        if DIR_IN not in self._settings.directions or self._settings.drops_alone:
            return []
        return hooking.remove_stale_xdp(ifindex, name)

    def _watched(self, ifindex: int, name: str) -> list[str]:
        notes = self.watch.add(ifindex, name)
        self._pipeline.interface(self.prog.slot(ifindex), name)
        return notes

    # -- the loop's steps -----------------------------------------------------

    def poll(self) -> None:
        """Wait for what comes (at most a poll's time), hand it on, then follow links."""
        if self._delivery is Delivery.FLOWS:
            self._reader.poll(max(0, int((self._next - time.monotonic()) * 1000)))
            self._flows_due()
        elif self._records is None:
            self._rows(self._reader.poll(self.poll_ms))
        else:
            self._captured(self._reader.poll_spans(self.poll_ms))

    def finish(self) -> None:
        """Unhook first, so what is left in the rings is all there will be; then hand it on."""
        self.watch.close()
        if self._pipeline.count_reached:
            return
        if self._table is not None:
            records = self.book.add(self._table.take(), time.monotonic_ns()) + self.book.flush()
            self._pipeline.flows(records, final=True)
        elif self._records is None:
            self._rows(self._reader.drain())
        else:
            self._captured(self._reader.drain_spans())

    def _rows(self, chunks: list[bytes]) -> None:
        rows = []
        for chunk in chunks:
            rows += self._decoder.rows(chunk, SAMPLE_HEAD, self._tail)
        if len(chunks) > 1:
            rows.sort(key=events.BY_TIME)  # each CPU's ring is in order; merge them
        self._pipeline.rows(rows)

    def _captured(self, spans: list[tuple[int, Span]]) -> None:
        records = self._records
        try:
            if not records.events:
                self._pipeline.runs(sorted((records.run(ring, span) for ring, span in spans),
                                           key=events.BY_TIME))
                return
            rows, blocks = [], []
            for ring, span in spans:
                r, b = records.rows(ring, span)
                rows += r
                blocks += b
            if len(spans) > 1:  # by the EPBs' stamps: a frame that is not IP has no row
                order = sorted(range(len(rows)), key=lambda i: epb_time(blocks[i]))
                rows, blocks = [rows[i] for i in order], [blocks[i] for i in order]
            self._pipeline.rows(rows, blocks)
        finally:
            for _, span in spans:
                span.release()

    def _flows_due(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = max(self._next + INTERVAL, now + INTERVAL / 2)
        self._pipeline.flows(self.book.add(self._table.take(), time.monotonic_ns()))

    def link_changes(self) -> None:
        """Interfaces that came and went since the last poll."""
        links = self._links
        changes = links.changes()
        if links.overrun:  # notifications were dropped: compare with what exists
            links.overrun = False
            present = existing()
            changes = [LinkChange(idx, name, True) for idx, (name, _) in
                       self.watch.attached.items() if present.get(idx) != name]
            changes += [LinkChange(idx, name, False) for idx, name in present.items()]
        for change in changes:
            if change.gone:
                self._gone(change)
            else:
                self._came(change)

    def _gone(self, change: LinkChange) -> None:
        if change.ifindex not in self.watch.attached:
            return
        sel, follow = self._settings.selection, self._settings.follow
        name, last = self.watch.remove(change.ifindex)
        self._pipeline.forget(change.ifindex, (name, last))
        if name in sel.names and not follow:
            self._say(f"interface {name} went away")
            self._pipeline.summary.gone = name
        elif name in sel.names:
            self._say(f"interface {name} went away; waiting for it to come back")
        else:
            self._say(f"interface {name} went away")

    def _came(self, change: LinkChange) -> None:
        sel = self._settings.selection
        if change.ifindex in self.watch.attached or not sel.matches(change.ifname):
            return
        if change.ifname in sel.names and not self._settings.follow:
            return
        self._interfaces.learn(change.ifindex, change.ifname)
        try:
            for note in self._stale(change.ifindex, change.ifname) + self._watched(
                    change.ifindex, change.ifname):
                self._say(note)
        except NetmonError as exc:
            self._say(f"cannot watch {change.ifname}: {exc}")
            return
        back = " again" if change.ifname in sel.names else ""
        self._say(f"watching {change.ifname}{back} ({self.watch.describe(change.ifindex)})")

    def _fill(self, summary: Summary) -> None:
        summary.counters = self.prog.counters()
        self.watch.tally()
        records = self._records
        summary.perf_lost = self._reader.lost + (records.lost if records else 0)
        summary.undecodable = (self._decoder.undecodable + self._reader.foreign
                               + (records.undecodable if records else 0))
        if self.book is not None:
            summary.flows = (self.book.seen, self.book.active, self.book.ended)
        if self._settings.drops:
            summary.drops = self._drops()
        if self._settings.drops_alone:
            summary.noun = "drops"

    def _drops(self) -> list[tuple[str, str, str, int]]:
        """The kernel's drops table: (interface, reason, where, drops), most first; the
        reason "" where the kernel gives none (< 5.17), where "" unless it has no reason
        to tell the drops apart by (NOT_SPECIFIED, or none)."""
        names = self._drop_names
        out = [(self._interfaces.name(ifindex) if ifindex else "-",
                names.reason(reason) or "", names.location(location) if location else "", n)
               for (ifindex, reason, location), n in drops.table(self.prog.drops_fd).items()]
        return sorted(out, key=lambda row: (-row[3], row[:3]))
