"""The live source: the program on interfaces, its rings, and link changes.

One loaded object serves every watched interface and direction. ``poll()``
waits on the perf rings and on a netlink socket at once (and on whatever a
sink asks to be woken by: a view's keys), then lets the run's feed (feeds.py)
hand what arrived to the pipeline: rows of events, runs or rows of capture
records, or, once a second, the flow records the kernel's tables yield.
Interfaces that appear are attached to, interfaces that vanish are noted (and,
for a plainly named one, end the run unless ``follow`` is set). Which hooks an
interface gets is policy.py's.

Every kernel resource here (the object, the rings, the hooks, the netlink
socket) is entered into the caller's ExitStack: one close path for normal exit,
signals and errors.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, closing
from typing import Callable

from netmon.errors import AttachFailed, InterfaceGone, NetmonError, XdpBusy
from netmon.events import DIR_IN, DIR_NAMES
from netmon.flows import FlowBook
from netmon.host.interfaces import Interfaces, existing, targets
from netmon.kernel import attach as hooking
from netmon.kernel import config, drops
from netmon.kernel.choices import Hook
from netmon.kernel.loader import MonitorProgram
from netmon.kernel.netlink import LinkChange, LinkWatcher
from netmon.pipeline import Delivery, Pipeline
from netmon.report import Summary
from netmon.settings import Settings
from netmon.sources import feeds, policy
from netmon.sources.reader import PerfReader


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
        """The hooks for one interface (policy.for_interface), and a note on the choice."""
        s = self._settings
        taken = policy.foreign_xdp(s, self._xdp_captures, ifindex)
        notes = [f"{ifname} already has an XDP program (id {taken}), left as it is: "
                 f"watching its ingress with tc instead"] if taken else []
        return policy.for_interface(s, bool(taken), self._xdp_captures), notes

    def add(self, ifindex: int, ifname: str) -> list[str]:
        """Register and hook one interface in every direction; returns notes for the user."""
        self._prog.slots.register(ifindex)
        attached: list[hooking.Attachment] = []
        try:
            kinds, notes = self._hooks(ifindex, ifname)
            for kind in kinds:
                try:
                    attached.append(self._prog.attach(kind, ifindex, ifname,
                                                      self._settings.mode,
                                                      self._settings.method))
                except XdpBusy:
                    # Another program came between the look (_hooks) and the attach: a
                    # netmon started at the same moment. --hook auto watches the ingress
                    # with tc then, as if it had been there (policy.to_load loads tc).
                    if kind != "xdp" or self._settings.hook is not Hook.AUTO:
                        raise
                    attached.append(self._prog.attach("tc_in", ifindex, ifname,
                                                      self._settings.mode,
                                                      self._settings.method))
                    notes.append(f"{ifname} got another XDP program while netmon attached: "
                                 f"watching its ingress with tc instead")
        except BaseException:
            for a in attached:
                a.close()
            self._prog.slots.unregister(ifindex)
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
        last = self._prog.slots.unregister(ifindex)
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

    done = False  # a live run ends by a signal, --count, a sink or a named interface gone

    def __init__(self, stack: ExitStack, settings: Settings, delivery: Delivery,
                 pipeline: Pipeline, interfaces: Interfaces, say: Callable[[str], None],
                 shows_lines: bool = False, epoch_offset_ns: int = 0,
                 drop_names: drops.Names | None = None):
        """Listens for links, loads and opens the rings; attaches nothing yet (start())."""
        self._settings = s = settings
        self._pipeline = pipeline
        self._interfaces = interfaces
        self._say = say
        self._drop_names = drop_names
        self._feed = feeds.for_delivery(
            delivery, pipeline, s.pages, s.poll_ms, s.flows,
            s.capture.snaplen if s.capture else 0, shows_lines,
            cap_events=shows_lines or s.count is not None, epoch_ns=epoch_offset_ns,
            tcp=s.tcp if s.rtt_alone else None, quiet=s.quiet, interfaces=interfaces,
            flows_tcp=None if s.rtt_alone else s.tcp)
        # Listen before listing, so that no interface slips between the two.
        self._links = stack.enter_context(closing(LinkWatcher()))
        self._targets = targets(s.selection, s.follow)
        # What a killed netmon left first: then its interfaces are free for XDP again.
        self._notes = [note for idx, name in self._targets.items()
                       for note in self._stale(idx, name)]
        self._notes += [f"interface {name} does not exist yet; waiting for it to appear"
                        for name in s.selection.names if name not in self._targets.values()]
        xdp_captures = policy.xdp_can_capture()
        busy = [bool(policy.foreign_xdp(s, xdp_captures, idx)) for idx in self._targets
                if not s.drops_alone]
        packed = config.pack(
            s.spec.kernel_filters(), owner=os.getpid(), **self._feed.config(),
            **(dict(any_if=s.selection.any, netns=os.stat("/proc/self/ns/net").st_ino)
               if s.drops else {}))
        self.prog = stack.enter_context(MonitorProgram(
            packed, hooks=policy.to_load(s, busy, xdp_captures), capture=self._feed.capture,
            flow_entries=self._feed.flow_entries, expression=s.spec.expression,
            netmask=s.spec.netmask, tcp_entries=self._feed.tcp_entries))
        self._reader = stack.enter_context(PerfReader(
            self.prog.events_fd, self._feed.pages, wakeup=self._feed.wakeup,
            sample=self._feed.sample))
        self._reader.watch(self._links.fileno())
        self.watch = stack.enter_context(closing(Watch(self.prog, s, pipeline.summary,
                                                       xdp_captures)))
        pipeline.reports(self._fill)

    @property
    def book(self) -> FlowBook | None:
        """The flows, when they are counted (top, --flows, --ipfix)."""
        return self._feed.book

    def counters(self) -> dict[str, int]:
        return self.prog.counters()

    def watched(self) -> dict[int, tuple[str, dict[int, dict[str, int]]]]:
        return self.watch.counters()

    def start(self) -> list[str]:
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
        self._feed.started(self.prog)
        return notes

    def attached(self) -> list[tuple[str, list[hooking.Attachment]]]:
        """Each watched interface's name and hooks, in the order they were watched."""
        return list(self.watch.attached.values())

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
        self._pipeline.interface(self.prog.slots.slot(ifindex), name)
        return notes

    # -- the loop's steps -----------------------------------------------------

    def poll(self) -> None:
        """Wait for what comes (at most a poll's time) and hand it on."""
        self._feed.poll(self._reader)

    def finish(self) -> None:
        """Unhook first, so what is left in the rings is all there will be; then hand it on."""
        self.watch.close()
        if self._pipeline.count_reached:
            return
        self._feed.finish(self._reader)

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
        summary.perf_lost = self._reader.lost
        summary.undecodable = self._reader.foreign
        summary.ring_fill = self._reader.fill
        self._feed.fill(summary)
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
