"""-w: the kernel's pcapng blocks, out of the perf rings and into files.

With a snaplen the program sends each matching packet as a record that already
holds its pcapng Enhanced Packet Block (bpf/xdp_monitor.h draws the layout).
Between two EPBs of one ring lies one local-use block that pcapng readers skip,
so a ring's new records go to the file as one slice, from the first record's
EPB to before the last record's tail: no work per packet here, which is what
lets a Python capture cost less CPU per packet than tcpdump's.

The slice holds while no loss report sits among the records. Each record's
tail says how many records its CPU has sent (seq) and failed to send (failed);
the kernel writes a loss report just before the first record after a failure,
so a ring whose last record shows the same failed count as the one before it
holds none. Otherwise the records' headers are walked to find the reports,
and the stretches between them are written as slices; when lines are printed
as well, each record is taken apart for its event.

Each ring is in time order; rings are written in the order of their first
packets, so packets of different CPUs within one poll may interleave out of
time order in the file (``reordercap`` sorts a file), unless lines are printed
too, which sorts them.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from netmon.events import EVENT_SIZE, NOT_IP, Decoder, Row
from netmon.kernel.abi import CAP_BLOCK, CAP_TAIL
from netmon.sources.reader import HEADER, PERF_RECORD_SAMPLE, SAMPLE_HEAD, Span, samples

# With no lines to show, the rings are drained (and the file flushed) at least this
# often: a quiet link's packets reach the file within it, as tcpdump -U's do within
# its one-second buffer timeout, and an idle capture wakes up twice a second.
FLUSH_MS = 500
# A ring wakes the reader once it holds this much (or a quarter of it, if less): a few
# times a second at tens of thousands of small packets a second, and with the rest of a
# large ring as room for a write that stalls at hundreds of thousands of large ones.
WAKEUP_BYTES = 2 << 20
_TAIL = struct.Struct("=II")  # seq, failed: a record's last 8 bytes
_FULL_TAIL = struct.Struct("=IIII")  # block type, gap length, seq, failed
_U32 = struct.Struct("=I")
_EPB_TIME = struct.Struct("=II")  # an EPB's time, high and low words, 12 bytes in


class Run(NamedTuple):
    """Whole pcapng blocks from one ring, ``packets`` of them EPBs."""

    ts_ns: int  # the first packet's: runs of one poll are written in this order
    parts: list  # the blocks, back to back: views into the ring, or bytes
    packets: int
    walked: bool = False  # a loss report may have been among them: found record by record


def epb_time(epb: bytes, at: int = 0) -> int:
    high, low = _EPB_TIME.unpack_from(epb, at + 12)
    return high << 32 | low


class Records:
    """Each ring's new bytes as pcapng blocks (and events, when records carry them).

    ``events``: records carry the packet's nm_event before its EPB (lines are
    printed too), as cfg.cap_events told the program.
    """

    def __init__(self, events: bool):
        self.events = events
        self.lead = SAMPLE_HEAD + (EVENT_SIZE if events else 0) + 4  # a record's start to its EPB
        self.lost = 0  # records the perf buffer reported lost
        self.foreign = 0  # records that are neither samples nor loss reports
        self._last: dict[int, tuple[int, int]] = {}  # ring -> its last record's seq, failed
        self._decoder = Decoder()

    @property
    def undecodable(self) -> int:
        return self._decoder.undecodable + self.foreign

    def run(self, ring: int, span: Span) -> Run:
        """The span's packets as one run of blocks: in place when it can be, else walked."""
        end = span.size
        if end >= self.lead + CAP_TAIL:
            tail = span.read(end - CAP_TAIL, CAP_TAIL)
            block, _, seq, failed = _FULL_TAIL.unpack(tail)
            last_seq, last_failed = self._last.get(ring, (0, 0))
            if (block == CAP_BLOCK and failed == last_failed
                    and HEADER.unpack(span.read(0, HEADER.size))[0] == PERF_RECORD_SAMPLE):
                self._last[ring] = (seq, failed)
                return Run(epb_time(span.read(self.lead, 20)),
                           span.views(self.lead, end - CAP_TAIL), (seq - last_seq) & 0xFFFFFFFF)
        return self.stretches(ring, span.tobytes())

    def stretches(self, ring: int, chunk: bytes) -> Run:
        """A span a loss report may sit in: each stretch of samples between reports is
        one slice (gap blocks and all), found with one look at each record's header."""
        parts, packets = [], 0
        lead = self.lead
        start = last = -1  # the current stretch's first sample; the end of the last one
        for pos, size in samples(chunk, self):
            if size < lead + CAP_TAIL:
                self.foreign += 1
                continue
            if pos != last:  # the first sample, or one after a report: a new stretch
                if start >= 0:
                    parts.append(chunk[start + lead:last - CAP_TAIL])
                start = pos
            last = pos + size
            packets += 1
        if start >= 0:
            parts.append(chunk[start + lead:last - CAP_TAIL])
        if last >= 0:
            self._last[ring] = _TAIL.unpack_from(chunk, last - 8)
        return Run(epb_time(parts[0]) if parts else 0, parts, packets, walked=True)

    def walk(self, ring: int, chunk: bytes) -> list[tuple[int, bytes]]:
        """(offset, EPB) of each record in the chunk; loss reports counted."""
        out = []
        lead = self.lead
        for pos, size in samples(chunk, self):
            if size < lead + CAP_TAIL:
                self.foreign += 1
                continue
            length = _U32.unpack_from(chunk, pos + lead + 4)[0]
            out.append((pos, chunk[pos + lead:pos + lead + length]))
            self._last[ring] = _TAIL.unpack_from(chunk, pos + size - 8)
        return out

    def rows(self, ring: int, span: Span) -> tuple[list[Row | None], list[bytes]]:
        """The events (rows) the records carry, and their EPBs alongside. A frame a filter
        expression matched that carries no IP packet has no row (None), only its EPB."""
        chunk = span.tobytes()
        rows, epbs = [], []
        for pos, epb in self.walk(ring, chunk):
            row = self._decoder.row_at(chunk, pos + SAMPLE_HEAD)
            if row is NOT_IP:
                rows.append(None)
                epbs.append(epb)
            elif row is not None:
                rows.append(row)
                epbs.append(epb)
        return rows, epbs
