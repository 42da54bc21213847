"""The pipeline: what a source produces goes to every sink, and --count is kept here.

A source (sources/live.py, sources/replay.py) hands typed batches to one
``Pipeline``; the pipeline hands each batch to every sink in the order they were
added, and the sinks report into the run's ``Summary``. Batches are:

- rows: events as plain tuples (events.Row), with each packet's pcapng block
  when capturing and each frame's number in the file under -r;
- runs: the kernel's pcapng blocks as whole slices (-w with no lines to show);
- flow records: flows that ended, once a second (flows.FlowBook).

Sinks say what they need from the kernel (``wants``): events, capture records,
flow counts, or nothing but the counters. One run has one delivery, chosen from
its sinks by ``delivery()``; the option table (settings.RULES) keeps runs whose
sinks would want two from ever starting.

Plain Python: no kernel, no terminal. A sink that needs either is given it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterable, TextIO

from netmon.report import Summary


class Delivery(enum.Enum):
    """What the kernel sends user space for each matching packet."""

    EVENTS = "events"  # a struct nm_event
    CAPTURE = "capture"  # a record holding the packet's pcapng block (and its event)
    FLOWS = "flows"  # nothing: the packet is counted into the flow tables
    COUNTS = "counts"  # nothing: only the counters (--quiet)
    DROPS = "drops"  # netmon drops: a struct nm_drop per dropped packet
    TCP = "tcp"  # netmon rtt: a struct nm_tcp_sample per RTT sample and retransmission


class Start(enum.Enum):
    """When a sink is made. Its failure then stops the run with nothing (FIRST: a port in
    use) or no interface (ATTACHING: a file that cannot be written) touched; ATTACHING
    sinks are told of each interface as it is attached."""

    FIRST = 0  # before anything: the kernel, the interfaces
    ATTACHING = 1  # the program is loaded, no interface attached yet
    RUNNING = 2  # attached, the banner is out


@dataclass
class Context:
    """What sinks are made with. ``counters``: the kernel's, summed; ``tally``: the
    summary as of now; ``interfaces``: names and guests of interface indexes."""

    settings: object  # settings.Settings
    out: TextIO
    err: TextIO
    clock: object  # output.Clock
    interfaces: object  # sources.interfaces.Interfaces
    counters: Callable[[], dict] = dict
    # Every watched interface's counters: ifindex -> (name, {direction: counters})
    watched: Callable[[], dict] = dict
    tally: Callable[[], Summary] = Summary
    book: object = None  # flows.FlowBook, when flows are counted
    libbpf_version: str = ""
    drop_names: object = None  # kernel.drops.Names: reasons' names, locations as function+offset
    # (uid, gid) the run becomes once attached: files it makes before then and must open
    # again after (-w's ring) are given to it. None: the run stays who it is.
    owner: tuple[int, int] | None = None


class Sink:
    """A room batches end up in. Every method is optional: the base does nothing."""

    wants: Delivery | None = None  # what the kernel must send it; None: the counters do
    start: Start = Start.RUNNING
    shows_events: bool = False  # shows each event (capture records then carry them)

    @classmethod
    def wanted(cls, settings) -> bool:
        """Does a run with these settings have this sink?"""
        return False

    @classmethod
    def writes_stdout(cls, settings) -> bool:
        """Does it write to standard output in such a run (a closed one is then refused)?"""
        return False

    @classmethod
    def takes_terminal(cls, settings, out) -> bool:
        """Does it draw a full-screen view on ``out`` (its own keys say how to stop)?"""
        return False

    def rows(self, rows: list, blocks: list | None = None, frames: list | None = None) -> None:
        """Events as rows; with -w each one's pcapng block, with -r its frame number."""

    def runs(self, runs: list) -> None:
        """The kernel's pcapng blocks, whole slices (-w alone)."""

    def flows(self, records: list, final: bool = False) -> int:
        """Flows that ended (``final``: the run's last); returns how many it showed."""
        return 0

    def interface(self, index: int, name: str | None) -> None:
        """A new interface is watched (or named by a file) as capture interface ``index``."""

    def forget(self, ifindex: int, last: tuple[str, dict[int, dict[str, int]]]) -> None:
        """An interface went away: what is kept of it by index is stale. ``last``: its
        name and counters by direction, as the kernel had them when it was unhooked."""

    def tick(self) -> None:
        """Once per poll: flush, rotate, snapshot, redraw when due."""

    def watch_fds(self) -> list[int]:
        """Descriptors whose input should wake the loop (a view's keys)."""
        return []

    @property
    def stop(self) -> bool:
        """The sink asks the run to end (a key pressed in a view)."""
        return False

    def close(self) -> None:
        """The run ends: last writes. Called once."""

    def report(self, summary: Summary) -> None:
        """Its part of the summary."""


def delivery(sinks: Iterable[type[Sink]]) -> Delivery:
    """The one delivery the sinks want: the richest any of them needs."""
    wanted = {s.wants for s in sinks if s.wants is not None}
    if Delivery.CAPTURE in wanted:  # capture records carry the events too, when shown
        wanted.discard(Delivery.EVENTS)
    if len(wanted) > 1:
        raise ValueError(f"sinks want {sorted(w.value for w in wanted)} from one run")
    return wanted.pop() if wanted else Delivery.COUNTS


class Pipeline:
    """Fans each batch out to every sink; counts what was shown; stops at --count."""

    def __init__(self, count: int | None = None):
        self.sinks: list[Sink] = []
        self.summary = Summary()
        self._count = count
        self._sources: list[Callable[[Summary], None]] = []
        self._closed = False

    def add(self, sink: Sink) -> Sink:
        self.sinks.append(sink)
        return sink

    def make(self, kinds: Iterable[type[Sink]], start: Start, ctx: Context) -> None:
        """Make and add the sinks of ``kinds`` that start at ``start``, in their order."""
        for kind in kinds:
            if kind.start is start:
                self.add(kind(ctx))

    def reports(self, fill: Callable[[Summary], None]) -> None:
        """A source's part of the summary (its counters, its losses), filled on tally()."""
        self._sources.append(fill)

    @property
    def count_reached(self) -> bool:
        return self._count is not None and self.summary.shown >= self._count

    @property
    def stopped(self) -> bool:
        return self.count_reached or any(s.stop for s in self.sinks)

    def rows(self, rows: list, blocks: list | None = None, frames: list | None = None) -> None:
        if self._count is not None:
            rows = rows[: self._count - self.summary.shown]
        if not rows:
            return
        for sink in self.sinks:
            sink.rows(rows, blocks[:len(rows)] if blocks is not None else None, frames)
        self.summary.shown += len(rows)

    def runs(self, runs: list) -> None:
        for sink in self.sinks:
            sink.runs(runs)
        self.summary.shown += sum(run.packets for run in runs)

    def flows(self, records: list, final: bool = False) -> None:
        self.summary.shown += max([s.flows(records, final) for s in self.sinks], default=0)

    def interface(self, index: int, name: str | None) -> None:
        for sink in self.sinks:
            sink.interface(index, name)

    def forget(self, ifindex: int, last: tuple[str, dict[int, dict[str, int]]]) -> None:
        for sink in self.sinks:
            sink.forget(ifindex, last)

    def tick(self) -> None:
        for sink in self.sinks:
            sink.tick()

    def tally(self) -> Summary:
        """The summary as of now: the sources' counts, then each sink's part."""
        for fill in self._sources:
            fill(self.summary)
        for sink in self.sinks:
            sink.report(self.summary)
        return self.summary

    def close(self) -> None:
        """Every sink's last writes, once (then again is nothing)."""
        if self._closed:
            return
        self._closed = True
        for sink in self.sinks:
            sink.close()
