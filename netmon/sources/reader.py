"""The perf buffer's owner: raw records in, batches of bytes out, losses counted.

libbpf opens one perf ring per CPU and maps it; netmon then reads the rings
itself instead of taking a callback per record. The kernel wakes the reader
only when a ring is a quarter full (a watermark), and the loop drains every
ring at least once per poll timeout, so a quiet link still shows each event
within that timeout while a busy one costs a wakeup per ~800 events instead of
one per event. Each drain copies a ring's new bytes in one slice; the records
in it are decoded as one batch.
"""

from __future__ import annotations

import mmap
import select
import struct
from typing import Iterator

from netmon.kernel import libbpf
from netmon.events import EVENT_SIZE
from netmon.kernel.libbpf import ffi

# Kernel UAPI: linux/perf_event.h
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_ATTR_FLAG_WATERMARK = 1 << 14
PERF_ATTR_SIZE_VER0 = 64
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
# struct perf_event_mmap_page: where the ring's bookkeeping sits in its first page.
_DATA_HEAD, _DATA_TAIL, _DATA_OFFSET, _DATA_SIZE = 1024, 1032, 1040, 1048

# A sample record: perf_event_header (8), u32 raw size, the event, padding to 8 bytes
# (capture records are laid out otherwise: sources/records.py).
HEADER = struct.Struct("=IHH")  # type, misc, size
SAMPLE_HEAD = HEADER.size + 4


def sample_size(record: int) -> int:
    """A sample's size for records of ``record`` bytes: SAMPLE_SIZE for nm_event's."""
    return (SAMPLE_HEAD + record + 7) & ~7


SAMPLE_SIZE = sample_size(EVENT_SIZE)
SAMPLE_TAIL = SAMPLE_SIZE - SAMPLE_HEAD - EVENT_SIZE
LOST = struct.Struct("=IHHQQ")  # the header, id, records lost


def samples(chunk: bytes, tally) -> Iterator[tuple[int, int]]:
    """(offset, size) of each sample record in ``chunk``, back-to-back perf records.

    Loss reports add to ``tally.lost``, other records to ``tally.foreign``.
    """
    pos, end = 0, len(chunk)
    while pos + HEADER.size <= end:
        rtype, _, size = HEADER.unpack_from(chunk, pos)
        if size < HEADER.size:
            return  # cannot happen with a sane kernel; do not spin
        if rtype == PERF_RECORD_SAMPLE:
            yield pos, size
        elif rtype == PERF_RECORD_LOST:
            tally.lost += LOST.unpack_from(chunk, pos)[4]
        else:
            tally.foreign += 1
        pos += size


@ffi.callback("int(void *, int, struct perf_event_header *)")
def _unused_event_cb(ctx, cpu, header):  # rings are read directly; libbpf never calls this
    return 0


class Span:
    """A ring's unread bytes, in place: no copy until asked for one.

    They lie in one stretch of the ring's memory, or two when they wrap past its
    end. release() hands the space back to the kernel; no view of it may be
    used after that.
    """

    def __init__(self, ring: "_Ring", parts: list[memoryview], head: int):
        self._ring = ring
        self.parts = parts
        self._head = head
        self.size = sum(len(p) for p in parts)

    def views(self, start: int, end: int) -> list[memoryview]:
        """Bytes start..end (0 <= start <= end <= size) as views into the ring."""
        out = []
        for part in self.parts:
            n = len(part)
            if start < n and end > 0:
                out.append(part[max(start, 0):min(end, n)])
            start -= n
            end -= n
        return out

    def read(self, start: int, length: int) -> bytes:
        """A few bytes, copied, across the wrap if need be."""
        return b"".join(self.views(start, start + length))

    def tobytes(self) -> bytes:
        return b"".join(self.parts)

    def release(self) -> None:
        # Hand the space back only after the copy: the kernel may reuse it at once.
        # x86-64 keeps loads before a later store (TSO); libbpf's C reader uses
        # acquire/release here, which Python cannot issue, so on weakly ordered CPUs
        # only the thousands of instructions between copy and store keep the order.
        self.parts = []
        self._ring.tail[0] = self._head


# How full a ring was found, by these bounds (a share of its size): netmon's own health
# (the metrics' netmon_ring_fill_ratio). A ring often found past 0.9 is about to lose.
FILL_BOUNDS = (0.25, 0.5, 0.75, 0.9, 1.0)


class Fill:
    """How full the rings were each time they were read: reads per bound (each counted
    under the first bound at or above its share), their shares' sum, and the reads."""

    def __init__(self):
        self.counts = [0] * len(FILL_BOUNDS)
        self.sum = 0.0
        self.reads = 0

    def add(self, share: float) -> None:
        self.reads += 1
        self.sum += share
        for i, bound in enumerate(FILL_BOUNDS):
            if share <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1  # not reached: a ring holds at most its size

    def buckets(self) -> list[tuple[float, int]]:
        """(bound, reads at or below it): as a Prometheus histogram's buckets count."""
        out, seen = [], 0
        for bound, n in zip(FILL_BOUNDS, self.counts):
            seen += n
            out.append((bound, seen))
        return out


class _Ring:
    """One CPU's mapped perf ring."""

    def __init__(self, base, fd: int, fill: Fill | None = None):
        self.fd = fd
        self._fill = fill
        header = ffi.cast("__u64 *", base)
        self._head = header + _DATA_HEAD // 8
        self.tail = header + _DATA_TAIL // 8
        offset, self.size = int(header[_DATA_OFFSET // 8]), int(header[_DATA_SIZE // 8])
        self._data = memoryview(ffi.buffer(ffi.cast("char *", base) + offset, self.size))

    def span(self) -> Span | None:
        """Everything written since the last release, in place (None: nothing)."""
        head = self._head[0]
        tail = self.tail[0]
        if self._fill is not None:
            self._fill.add((head - tail) / self.size)
        if head == tail:
            return None
        start = tail % self.size
        end = start + (head - tail)
        if end <= self.size:
            parts = [self._data[start:end]]
        else:  # wrapped: the records straddling the end come out whole
            parts = [self._data[start:], self._data[: end - self.size]]
        return Span(self, parts, head)

    def take(self) -> bytes:
        """Everything written since the last take, as one contiguous copy."""
        span = self.span()
        if span is None:
            return b""
        chunk = span.tobytes()
        span.release()
        return chunk


class PerfReader:
    """Reads nm_event records from the program's perf event array.

    poll() and drain() give the sample records, SAMPLE_SIZE bytes each, loss
    reports counted and taken out. poll_spans() gives each ring's new bytes as
    they are, for records of other shapes (capture: sources/records.py).
    """

    def __init__(self, map_fd: int, pages: int, wakeup: int | None = None,
                 sample: int = SAMPLE_SIZE):
        """``wakeup``: bytes a ring holds when it wakes the reader (default a quarter);
        ``sample``: the samples' size (sample_size(): netmon drops' records are larger)."""
        if pages < 1 or pages & (pages - 1):
            raise ValueError(f"buffer pages must be a power of two, not {pages}")
        self._sample = sample
        self.lost = 0  # records the kernel reported lost (ring full)
        self.foreign = 0  # records that are neither samples nor loss reports
        self.fill = Fill()  # how full the rings were when read
        self._closed = False
        lib = libbpf.lib()
        attr = ffi.new("struct perf_event_attr *")
        attr.type = PERF_TYPE_SOFTWARE
        attr.size = PERF_ATTR_SIZE_VER0
        attr.config = PERF_COUNT_SW_BPF_OUTPUT
        attr.sample_type = PERF_SAMPLE_RAW
        attr.sample_period = 1
        attr.flags = PERF_ATTR_FLAG_WATERMARK
        attr.wakeup_watermark = max(SAMPLE_SIZE, min(wakeup or pages * mmap.PAGESIZE // 4,
                                                     pages * mmap.PAGESIZE // 4))
        self._pb = libbpf.ensure(
            lib.perf_buffer__new_raw(map_fd, pages, attr, _unused_event_cb, ffi.NULL, ffi.NULL),
            "opening the perf buffer",
        )
        try:
            self._rings = []
            base = ffi.new("void **")
            size = ffi.new("size_t *")
            for idx in range(lib.perf_buffer__buffer_cnt(self._pb)):
                libbpf.ensure(lib.perf_buffer__buffer(self._pb, idx, base, size),
                              "mapping the perf buffer")
                fd = libbpf.ensure(lib.perf_buffer__buffer_fd(self._pb, idx), "perf ring fd")
                self._rings.append(_Ring(base[0], fd, self.fill))
            self._poller = select.poll()
            for ring in self._rings:
                self._poller.register(ring.fd, select.POLLIN)
        except BaseException:
            self.close()
            raise

    def watch(self, fd: int) -> None:
        """Wake poll() when ``fd`` is readable too (the caller reads it)."""
        self._poller.register(fd, select.POLLIN)

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Wait up to ``timeout_ms`` for a ring to pass its watermark, then drain them all.

        Returns chunks of back-to-back sample records, SAMPLE_SIZE bytes each, each
        with its event SAMPLE_HEAD bytes in.
        """
        self._wait(timeout_ms)
        return self.drain()

    def _wait(self, timeout_ms: int) -> None:
        try:
            self._poller.poll(timeout_ms)
        except InterruptedError:
            pass  # a signal is how the user stops us; drain what is there

    def drain(self) -> list[bytes]:
        """Whatever the rings hold now, without waiting."""
        chunks = [self._samples(chunk) for chunk in map(_Ring.take, self._rings) if chunk]
        return [c for c in chunks if c]

    def poll_spans(self, timeout_ms: int) -> list[tuple[int, Span]]:
        """As poll(), but (ring index, its new bytes in place) for each ring, records
        of any shape (capture: sources/records.py). Release each span once done."""
        self._wait(timeout_ms)
        return self.drain_spans()

    def drain_spans(self) -> list[tuple[int, Span]]:
        spans = [(idx, ring.span()) for idx, ring in enumerate(self._rings)]
        return [(idx, span) for idx, span in spans if span is not None]


    def _samples(self, chunk: bytes) -> bytes:
        """The chunk's sample records; loss reports are counted and taken out."""
        sample = self._sample
        if len(chunk) % sample == 0:
            # Fast path: every record a sample of our size. The header's type and size
            # sit at the same offsets of every sample's stride.
            view = memoryview(chunk)
            if (set(view.cast("I")[0::sample // 4]) == {PERF_RECORD_SAMPLE}
                    and set(view.cast("H")[3::sample // 2]) == {sample}):
                return chunk
        keep = []
        for pos, size in samples(chunk, self):
            if size == sample:
                keep.append(chunk[pos:pos + size])
            else:
                self.foreign += 1
        return b"".join(keep)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        libbpf.lib().perf_buffer__free(self._pb)
        self._rings = []

    def __enter__(self) -> "PerfReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
