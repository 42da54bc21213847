"""-r: a capture file's frames through the same BPF program, so filters and output are live's.

The replay source has the live source's face (start, poll, finish): app.py wires
both alike.

Each frame runs through the loaded XDP program with BPF_PROG_TEST_RUN, which
parses, filters and counts it and sends its event through the perf buffer
exactly as on the wire. The event is then given back what the file knows and the
test run cannot: the frame's time, its length on the wire, its interface name,
its direction, and for -w its bytes (the same bytes the kernel would copy).
Which frame an event belongs to is told by time: the kernel stamps each event
with CLOCK_MONOTONIC, the clock Python reads around each test run, so every
event falls inside its own frame's window.

A test run takes a frame of up to ~64 KiB where the kernel builds multi-buffer
test frames (>= 5.18), and of a page before. The program reads headers only, so
a longer frame runs as its first RUN_LIMITS bytes; its event is the same.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import time
from contextlib import ExitStack

from netmon import events
from netmon.errors import CaptureUnreadable, LibbpfError
from netmon.events import DIR_IN, DIR_OUT
from netmon.flows import FlowBook
from netmon.host.interfaces import Interfaces
from netmon.kernel import config
from netmon.kernel.loader import MonitorProgram, prog_test_run
from netmon.pcapng import reader as savefile
from netmon.pcapng import writer as pcapng
from netmon.pipeline import Pipeline
from netmon.report import Summary
from netmon.settings import Settings
from netmon.sources.reader import SAMPLE_HEAD, SAMPLE_TAIL, PerfReader

ETH_HLEN = 14  # BPF_PROG_TEST_RUN refuses anything shorter
RUN_LIMITS = (65536, 3072)  # the most of a frame a test run is given, by kernel
BATCH = 256  # frames run between two drains of the perf buffer
# Interfaces named in the file get indexes of their own, far from any real one.
_FIRST_INDEX = 1 << 30


class ReplaySource:
    """The frames through BPF_PROG_TEST_RUN, a batch a poll, and their events back; done at
    the file's end or --count. A damaged file: what came before the damage is delivered,
    then CaptureDamaged."""

    book: FlowBook | None = None  # flows are counted live only

    def __init__(self, stack: ExitStack, settings: Settings, pipeline: Pipeline,
                 interfaces: Interfaces):
        """Opens the file (a file that is not a capture is refused before anything else);
        loads nothing yet (start())."""
        self._stack = stack
        self._settings = settings
        # Open now, as root: the frames are read after the run gave root up (-Z).
        self._frames = iter(savefile.frames(settings.read, savefile.open_capture(
            settings.read)))
        self._pipeline = pipeline
        self._interfaces = interfaces
        self._snaplen = settings.capture.snaplen if settings.capture else None
        self._decoder = events.Decoder()
        self._indexes: dict[str | None, int] = {}
        self._batch: list[tuple[int, savefile.Frame]] = []
        self._limits = list(RUN_LIMITS)
        self._short = 0  # frames too short to run: malformed
        self._clamped = 0  # -w: frames whose time a pcapng EPB cannot hold
        self._prog: MonitorProgram | None = None
        self._reader: PerfReader | None = None
        self.done = False
        # An expression and no filter option: the frames it matches that carry no IP
        # packet are counted, and written by -w, as live (the kernel sends no event for
        # them; it counts them, and libpcap, whose verdicts the kernel's equal, picks them
        # here). Frames shorter than an Ethernet header, which a test run refuses, are
        # libpcap's to judge alone (tcpdump's `less 40`, `ether[0] = 2` match them).
        # Compiled for the file's link type (start()).
        self._libpcap = None
        self._alone = settings.spec.expression is not None and not settings.spec.has_options
        self._others = False
        self._cooked = False  # not Ethernet: libpcap's verdict, then the program's
        self._linktype = None
        self._short_matched = 0  # of the short frames, those the expression matched
        self._rejected = 0  # cooked frames the expression did not match: seen, no more

    def start(self) -> list[str]:
        """Load the program (its XDP hook alone) and open its rings; no notes."""
        s = self._settings
        expression = s.spec.expression
        if expression is not None:
            expression = self._expression_for_the_file(expression)
        self._prog = self._stack.enter_context(MonitorProgram(
            config.pack(s.spec.kernel_filters(), replay=True), hooks=("xdp",),
            expression=expression, netmask=s.spec.netmask))
        self._reader = self._stack.enter_context(PerfReader(self._prog.events_fd, s.pages))
        self._pipeline.reports(self._fill)
        return []

    def _expression_for_the_file(self, text: str) -> str | None:
        """What the program runs of the expression: compiled as tcpdump compiles it, for
        the link type of the file's first frame. On Ethernet, the expression itself. On
        a Linux cooked capture (SLL, SLL2), whose frames the program is given with a
        made-up Ethernet header, libpcap's verdict on the frame as filed, and the program
        none spliced in: its nm_expr() as compiled takes every frame it is given, and the
        counters still count as an expression's (libpcap refuses what the link type cannot
        answer: `vlan`, `ether host` on SLL, as tcpdump does)."""
        from netmon.expression import libpcap

        spec = self._settings.spec
        first = next(self._frames, None)
        if first is None:
            return text
        self._frames = itertools.chain((first,), self._frames)
        self._linktype = first.linktype
        self._cooked = first.linktype != savefile.LINKTYPE_ETHERNET
        if self._cooked or self._alone:
            self._libpcap = libpcap.Program(libpcap.compile(text, spec.netmask,
                                                            first.linktype))
        self._others = self._alone and self._snaplen is not None
        return None if self._cooked else text

    def _matches(self, frame: savefile.Frame) -> bool:
        """libpcap's verdict on the frame, as tcpdump -r gives it."""
        if frame.linktype != self._linktype:
            raise CaptureUnreadable(
                f"{self._settings.read}: frame {frame.number} is of link type "
                f"{frame.linktype}, the first of {self._linktype}: netmon compiles a filter "
                f"expression for one link type, as tcpdump does")
        return self._libpcap.matches(*frame.as_filed)

    def attached(self) -> list:
        return []

    def counters(self) -> dict[str, int]:
        return self._prog.counters()

    def watched(self) -> dict:
        return {}

    def wake_on(self, fds: list[int]) -> None:
        """Nothing waits: the frames are there to be read."""

    def link_changes(self) -> None:
        """A file's interfaces come with its frames (_index)."""

    def poll(self) -> None:
        """The next batch of frames through the program, then their events down the
        pipeline; what came before an error is shown before it."""
        try:
            for frame in self._frames:
                if self._pipeline.count_reached:
                    self.done = True
                    break
                start = time.monotonic_ns()
                if self._cooked and not self._matches(frame):
                    self._rejected += 1
                    continue
                if len(frame.data) < ETH_HLEN:
                    self._short += 1
                    if not self._alone or not self._matches(frame):
                        continue
                    self._short_matched += 1  # in the batch, with no test run: no event
                else:
                    self._test_run(frame)
                self._batch.append((start, frame))
                if len(self._batch) >= BATCH:
                    break
            else:
                self.done = True
        finally:
            self._flush()

    def finish(self) -> None:
        """Every batch was handed on as it was run."""

    def _test_run(self, frame: savefile.Frame) -> None:
        data, limits = frame.data, self._limits
        while True:
            try:
                # Its length on the wire, where that is not the bytes it is given: the
                # program's `len`, `greater`, `less` read it, as libpcap's do.
                given = min(len(data), limits[0])
                self._prog.wire_len(frame.origlen if frame.origlen != given else 0)
                prog_test_run(self._prog.prog_fd, data[:limits[0]])
                return
            except LibbpfError as exc:
                # Too long for this kernel's test runs: the smaller limit.
                too_long = exc.errno in (errno.EINVAL, errno.ENOMEM, errno.E2BIG,
                                         errno.EMSGSIZE)  # the last: 5.10
                if not too_long or len(limits) == 1 or len(data) <= limits[1]:
                    raise
                limits.pop(0)

    def _index(self, ifname: str | None) -> int:
        """The file's interface as an index of its own (learnt, and told to the sinks)."""
        ifindex = self._indexes.get(ifname)
        if ifindex is None:
            ifindex = self._indexes[ifname] = _FIRST_INDEX + len(self._indexes)
            self._interfaces.learn(ifindex, ifname)  # None: the file names none
            self._pipeline.interface(ifindex - _FIRST_INDEX, ifname)
        return ifindex

    def _flush(self) -> None:
        """The batch's events, each given back what the file knows of its frame."""
        batch = self._batch
        if self._reader is None:
            return  # the program never loaded
        starts = [start for start, _ in batch]
        rows = []
        for chunk in self._reader.drain():
            rows += self._decoder.rows(chunk, SAMPLE_HEAD, SAMPLE_TAIL)
        rows.sort(key=events.BY_TIME)
        found = []  # (frame, its row or None: a frame the expression matched, not IP)
        for ts, _, _, key, _, segs in rows:
            frame = batch[bisect.bisect_right(starts, ts) - 1][1]
            found.append((frame, (key, segs)))
        if self._others:
            shown = {frame.number for frame, _ in found}
            found += [(frame, None) for _, frame in batch if frame.number not in shown
                      and self._matches(frame)]
            found.sort(key=lambda item: item[0].number)
        fixed, numbers, blocks = [], [], []
        for frame, row in found:
            ifindex = self._index(frame.ifname)
            if frame.outbound is None:  # the file records no direction: lines say none
                self._interfaces.undirected.add(ifindex)
            fixed.append(None if row is None else (
                frame.ts_ns, ifindex, frame.origlen, row[0],
                DIR_OUT if frame.outbound else DIR_IN, row[1]))
            numbers.append(frame.number)
            if self._snaplen is not None:
                if pcapng.in_range(frame.ts_ns) != frame.ts_ns:
                    self._clamped += 1
                blocks.append(pcapng.enhanced_packet(
                    ifindex - _FIRST_INDEX, frame.ts_ns, frame.data[:self._snaplen],
                    frame.origlen, frame.outbound))
        self._pipeline.rows(fixed, blocks, numbers)
        batch.clear()

    def _fill(self, summary: Summary) -> None:
        summary.counters = self._prog.counters()
        summary.perf_lost = self._reader.lost
        summary.undecodable = self._decoder.undecodable + self._reader.foreign
        for name in ("seen", "malformed"):
            summary.counters[name] = summary.counters.get(name, 0) + self._short
        summary.counters["seen"] += self._rejected
        # As the kernel counts a frame the expression matched that is not IP.
        summary.counters["expr_not_ip"] = (summary.counters.get("expr_not_ip", 0)
                                           + self._short_matched)
        summary.clamped = self._clamped
