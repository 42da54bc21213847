"""What the live source hands the pipeline, one small feed per delivery.

The kernel sends user space one kind of thing a run (pipeline.Delivery): events
(or drops), capture records, or nothing (flows are counted in tables, --quiet's
packets in the counters). A feed knows its kind: what the config must ask of the
program (``config``), how the rings are sized and woken, what to do with what a
poll brought (``poll``) and what is left at the end (``finish``), and what it
lost (``fill``). The live source (live.py) holds the program, the rings, the
hooks and the links, and knows no delivery.
"""

from __future__ import annotations

import time

from netmon import events
from netmon.flows import INTERVAL, FlowBook
from netmon import tcphealth
from netmon.kernel import tcpstate
from netmon.kernel.abi import DIR_IN, DIR_OUT, DROP_TAIL, TCP_EVENTS, TCP_MEASURE, TCP_TAIL
from netmon.kernel.flowtable import FlowTable
from netmon.kernel.loader import MonitorProgram
from netmon.pipeline import Delivery, Pipeline
from netmon.report import Summary
from netmon.settings import FlowSettings, TcpSettings
from netmon.sinks import formats
from netmon.sources.reader import SAMPLE_HEAD, PerfReader, Span, sample_size
from netmon.sources.records import FLUSH_MS, WAKEUP_BYTES, Records, epb_time


def tcp_decoding() -> tuple[events.Decoder, int, int]:
    """TCP health's records (struct nm_tcp_sample): their decoder, the samples' size and
    the bytes after each record (netmon rtt's feed and the flows' alike)."""
    record = events.EVENT_SIZE + TCP_TAIL.size
    sample = sample_size(record)
    return events.Decoder(TCP_TAIL.format), sample, sample - SAMPLE_HEAD - record


class Feed:
    """One delivery's handling. The base: the rings as settings size them."""

    capture = False  # records carry packets: the loader sizes the copy buffers
    flow_entries = 0  # flows: the tables' size
    tcp_entries = 0  # TCP health: the connections' state table's size
    wakeup: int | None = None  # bytes a ring holds when it wakes the reader (None: default)
    sample = sample_size(events.EVENT_SIZE)
    book: FlowBook | None = None  # the flows, where they are counted

    def __init__(self, pipeline: Pipeline, pages: int, poll_ms: int):
        self._pipeline = pipeline
        self.pages = pages
        self.poll_ms = poll_ms

    def config(self) -> dict:
        """What struct nm_config says for this delivery (kernel/config.py's pack())."""
        return {}

    def started(self, prog: MonitorProgram) -> None:
        """The interfaces are attached: what runs by the clock starts now."""

    def poll(self, reader: PerfReader) -> None:
        raise NotImplementedError

    def finish(self, reader: PerfReader) -> None:
        """Everything left, once the hooks are gone (the rings hold all there will be)."""
        raise NotImplementedError

    def fill(self, summary: Summary) -> None:
        """Its losses and what it could not decode, added to the reader's."""


class EventFeed(Feed):
    """Events (a struct nm_event per packet), drops (an nm_drop per drop), or nothing but
    the counters (--quiet: the rings only wake the loop)."""

    def __init__(self, pipeline: Pipeline, pages: int, poll_ms: int, drops: bool = False,
                 quiet: bool = False):
        super().__init__(pipeline, pages, poll_ms)
        self._quiet = quiet
        # netmon drops: each record an nm_event, then where and why it was dropped.
        self._decoder = events.Decoder(DROP_TAIL.format if drops else "")
        record = events.EVENT_SIZE + (DROP_TAIL.size if drops else 0)
        self.sample = sample_size(record)
        self._tail = self.sample - SAMPLE_HEAD - record

    def config(self) -> dict:
        return {"quiet": self._quiet}

    def poll(self, reader: PerfReader) -> None:
        self._rows(reader.poll(self.poll_ms))

    def finish(self, reader: PerfReader) -> None:
        self._rows(reader.drain())

    def _rows(self, chunks: list[bytes]) -> None:
        rows = []
        for chunk in chunks:
            rows += self._decoder.rows(chunk, SAMPLE_HEAD, self._tail)
        if len(chunks) > 1:
            rows.sort(key=events.BY_TIME)  # each CPU's ring is in order; merge them
        self._pipeline.rows(rows)

    def fill(self, summary: Summary) -> None:
        summary.undecodable += self._decoder.undecodable


class CaptureFeed(Feed):
    """-w: records holding each packet's pcapng block (and its event, when lines are shown)."""

    capture = True
    wakeup = WAKEUP_BYTES

    def __init__(self, pipeline: Pipeline, pages: int, poll_ms: int, snaplen: int,
                 shows_lines: bool, cap_events: bool, epoch_ns: int):
        # With no lines to show, the file is flushed at the pace FLUSH_MS sets.
        super().__init__(pipeline, pages, poll_ms if shows_lines else FLUSH_MS)
        self._records = Records(events=cap_events)
        self._config = dict(snaplen=snaplen, cap_events=cap_events, epoch_ns=epoch_ns)

    def config(self) -> dict:
        return self._config

    def poll(self, reader: PerfReader) -> None:
        self._captured(reader.poll_spans(self.poll_ms))

    def finish(self, reader: PerfReader) -> None:
        self._captured(reader.drain_spans())

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

    def fill(self, summary: Summary) -> None:
        summary.perf_lost += self._records.lost
        summary.undecodable += self._records.undecodable


class FlowFeed(Feed):
    """top, --flows, --ipfix: nothing is sent; the kernel's tables are read once a second
    (INTERVAL) into the book, and the flows that ended go down the pipeline. With TCP
    health (top, --flows), its records (an RTT sample, a retransmission) come through
    the rings and go to the book as they arrive."""

    def __init__(self, pipeline: Pipeline, poll_ms: int, flows: FlowSettings,
                 tcp: TcpSettings | None = None, pages: int = 1):
        # Without TCP health, the one-page rings are there to wait on with the rest:
        # flows send no events.
        super().__init__(pipeline, pages if tcp else 1, poll_ms)
        self._settings = flows
        self.flow_entries = flows.entries
        self._table: FlowTable | None = None
        self.book = None  # made once attached: its first interval starts then
        self._next = 0.0
        self._tcp = tcp
        self._sweeper: tcpstate.Sweeper | None = None
        if tcp is not None:
            self.tcp_entries = tcp.entries
            self._decoder, self.sample, self._tail = tcp_decoding()

    def config(self) -> dict:
        if self._tcp is None:
            return {"flows": True}
        return {"flows": True, "tcp": TCP_MEASURE | TCP_EVENTS,
                "rtt_gap_us": int(self._tcp.gap_ms * 1000)}

    def _samples(self, chunks: list[bytes]) -> None:
        if self._tcp is None or self.book is None:
            return
        rows = []
        for chunk in chunks:
            rows += self._decoder.rows(chunk, SAMPLE_HEAD, self._tail)
        if rows:
            self.book.tcp(rows)

    def started(self, prog: MonitorProgram) -> None:
        fs = self._settings
        self._table = FlowTable(prog, fs.entries)
        self.book = FlowBook(time.monotonic_ns(), fs.idle, fs.active)
        self._next = time.monotonic() + INTERVAL
        if self._tcp is not None:
            self._sweeper = tcpstate.Sweeper(prog.tcpstate_fds, prog.tcpgen_fd)

    def poll(self, reader: PerfReader) -> None:
        self._samples(reader.poll(max(0, int((self._next - time.monotonic()) * 1000))))
        now = time.monotonic()
        if self._sweeper is not None:
            self._sweeper.tick()
        if now < self._next:
            return
        self._next = max(self._next + INTERVAL, now + INTERVAL / 2)
        self._pipeline.flows(self.book.add(self._table.take(), time.monotonic_ns()))

    def finish(self, reader: PerfReader) -> None:
        self._samples(reader.drain())
        records = self.book.add(self._table.take(), time.monotonic_ns()) + self.book.flush()
        self._pipeline.flows(records, final=True)

    def fill(self, summary: Summary) -> None:
        if self.book is not None:
            summary.flows = (self.book.seen, self.book.active, self.book.ended)


class TcpFeed(EventFeed):
    """netmon rtt: a record per RTT sample and retransmission (none with --quiet: the
    histograms and counters only); the connections' state swept now and then; the
    histograms and retransmission counts read into the summary at the end."""

    def __init__(self, pipeline: Pipeline, pages: int, poll_ms: int, tcp: TcpSettings,
                 quiet: bool, interfaces):
        super().__init__(pipeline, pages, poll_ms)
        self._decoder, self.sample, self._tail = tcp_decoding()
        self._tcp = tcp
        self._lines = not quiet
        self._interfaces = interfaces
        self.tcp_entries = tcp.entries
        self._prog: MonitorProgram | None = None
        self._sweeper: tcpstate.Sweeper | None = None
        # Interfaces no longer watched: their histograms, by name and component
        self._retired_hists: dict[tuple[str, str], tcphealth.Histogram] = {}
        self._labels: dict[str, str] = {}  # ifname -> "tap100i0 (web1)"

    def config(self) -> dict:
        return {"quiet": True, "tcp": TCP_MEASURE | (TCP_EVENTS if self._lines else 0),
                "rtt_gap_us": int(self._tcp.gap_ms * 1000)}

    def started(self, prog: MonitorProgram) -> None:
        self._prog = prog
        self._sweeper = tcpstate.Sweeper(prog.tcpstate_fds, prog.tcpgen_fd)
        prog.slots.on_unregister.append(self._retire)

    def poll(self, reader: PerfReader) -> None:
        super().poll(reader)
        if self._sweeper is not None:
            self._sweeper.tick()

    def _label(self, ifindex: int) -> tuple[str, bool]:
        """The interface's name and whether it is a guest's (its label kept for lines)."""
        info = self._interfaces.info(ifindex)
        self._labels[info["ifname"]] = formats.with_guest(info)
        return info["ifname"], "guest" in info

    def _retire(self, ifindex: int, slot: int) -> None:
        """An interface is no longer watched: its slot's histograms are kept by name and
        cleared for the next interface that gets the slot."""
        name, guest = self._label(ifindex)
        for start in (DIR_IN, DIR_OUT):
            key = (name, tcphealth.component(guest, start))
            h = tcphealth.Histogram(*tcpstate.read_histogram(self._prog.rtthist_fd,
                                                             slot * 2 + start))
            self._retired_hists.setdefault(key, tcphealth.Histogram()).add(h)
            tcpstate.clear_histogram(self._prog.rtthist_fd, slot * 2 + start)

    def histograms(self) -> dict[tuple[str, str], tcphealth.Histogram]:
        """RTT histograms by (interface, component), the retired ones' included."""
        out = {k: tcphealth.Histogram(h.count, h.sum_ns, list(h.buckets))
               for k, h in self._retired_hists.items()}
        if self._prog is None:
            return out
        for ifindex, slot in self._prog.slots.registered().items():
            name, guest = self._label(ifindex)
            for start in (DIR_IN, DIR_OUT):
                h = tcphealth.Histogram(*tcpstate.read_histogram(self._prog.rtthist_fd,
                                                                 slot * 2 + start))
                out.setdefault((name, tcphealth.component(guest, start)),
                               tcphealth.Histogram()).add(h)
        return out

    def fill(self, summary: Summary) -> None:
        super().fill(summary)
        if self._prog is None:
            return
        hists = self.histograms()
        summary.rtt_hists = hists
        label = self._labels.get
        retrans = {(label(ifname, ifname), d): tcphealth.Retransmissions(
            c.get("tcp_data", 0), c.get("tcp_retrans", 0), c.get("tcp_reorder", 0))
            for (ifname, d), c in summary.per_interface.items()}
        c = summary.counters
        summary.rtt = tcphealth.summary_lines(
            {(label(ifname, ifname), comp): h for (ifname, comp), h in hists.items()},
            retrans, c.get("rtt_unmatched", 0), c.get("tcp_noroom", 0))


def for_delivery(delivery: Delivery, pipeline: Pipeline, pages: int, poll_ms: int,
                 flows: FlowSettings | None, snaplen: int, shows_lines: bool,
                 cap_events: bool, epoch_ns: int, tcp: TcpSettings | None = None,
                 quiet: bool = False, interfaces=None, flows_tcp: TcpSettings | None = None
                 ) -> Feed:
    """The feed of a run's one delivery. ``tcp``: netmon rtt's; ``flows_tcp``: TCP
    health beside the flows (top, --flows)."""
    if tcp is not None:  # netmon rtt, with its lines or (--quiet) without
        return TcpFeed(pipeline, pages, poll_ms, tcp, quiet, interfaces)
    if delivery is Delivery.FLOWS:
        return FlowFeed(pipeline, poll_ms, flows, flows_tcp, pages)
    if delivery is Delivery.CAPTURE:
        return CaptureFeed(pipeline, pages, poll_ms, snaplen, shows_lines, cap_events,
                           epoch_ns)
    return EventFeed(pipeline, pages, poll_ms, drops=delivery is Delivery.DROPS,
                     quiet=delivery is Delivery.COUNTS)
