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

from netmon import libbpf
from netmon.events import EVENT_SIZE
from netmon.libbpf import ffi

# Per CPU: 512 KiB, ~6,500 events, 7 ms at a million events/s on one CPU: room for
# the reader to be late, as on a busy host it will be.
DEFAULT_PAGES = 128
# Capturing, records carry whole packets: 2 MiB per CPU, as tcpdump's default buffer.
CAPTURE_PAGES = 512

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

# A sample record: perf_event_header (8), u32 raw size, the event, padding to 8 bytes;
# when capturing, the packet's bytes follow the event, before the padding.
_HEADER = struct.Struct("=IHH")
RECORD_SIZE_AT = 6  # the header's u16 size field
# The most packet bytes a record can carry (NM_MAX_SNAPLEN in bpf/xdp_monitor.h): the
# size is a u16 and holds the header, the raw size, the event and padding to 8 too.
MAX_SNAPLEN = 65535 - 8 - 4 - EVENT_SIZE - 7
SAMPLE_HEAD = _HEADER.size + 4
SAMPLE_SIZE = (SAMPLE_HEAD + EVENT_SIZE + 7) & ~7
SAMPLE_TAIL = SAMPLE_SIZE - SAMPLE_HEAD - EVENT_SIZE
_LOST = struct.Struct("=IHHQQ")


@ffi.callback("int(void *, int, struct perf_event_header *)")
def _unused_event_cb(ctx, cpu, header):  # rings are read directly; libbpf never calls this
    return 0


class _Ring:
    """One CPU's mapped perf ring."""

    def __init__(self, base, fd: int):
        self.fd = fd
        header = ffi.cast("__u64 *", base)
        self._head = header + _DATA_HEAD // 8
        self._tail = header + _DATA_TAIL // 8
        offset, self.size = int(header[_DATA_OFFSET // 8]), int(header[_DATA_SIZE // 8])
        self._data = ffi.buffer(ffi.cast("char *", base) + offset, self.size)

    def take(self) -> bytes:
        """Everything written since the last take, as one contiguous copy."""
        head = self._head[0]
        tail = self._tail[0]
        if head == tail:
            return b""
        start = tail % self.size
        end = start + (head - tail)
        if end <= self.size:
            chunk = self._data[start:end]
        else:  # wrapped: the records straddling the end come out whole
            chunk = self._data[start:] + self._data[: end - self.size]
        # Hand the space back only after the copy: the kernel may reuse it at once.
        # x86-64 keeps loads before a later store (TSO); libbpf's C reader uses
        # acquire/release here, which Python cannot issue, so on weakly ordered CPUs
        # only the thousands of instructions between copy and store keep the order.
        self._tail[0] = head
        return chunk


class PerfReader:
    """Reads nm_event records from the program's perf event array.

    ``sized``: records carry packet bytes after the event, so their sizes vary
    (capture); otherwise every record is SAMPLE_SIZE bytes and the fast path holds.
    """

    def __init__(self, map_fd: int, pages: int = DEFAULT_PAGES, sized: bool = False):
        if pages < 1 or pages & (pages - 1):
            raise ValueError(f"buffer pages must be a power of two, not {pages}")
        self.lost = 0  # records the kernel reported lost (ring full)
        self.foreign = 0  # records that are neither samples nor loss reports
        self._sized = sized
        self._closed = False
        lib = libbpf.lib()
        attr = ffi.new("struct perf_event_attr *")
        attr.type = PERF_TYPE_SOFTWARE
        attr.size = PERF_ATTR_SIZE_VER0
        attr.config = PERF_COUNT_SW_BPF_OUTPUT
        attr.sample_type = PERF_SAMPLE_RAW
        attr.sample_period = 1
        attr.flags = PERF_ATTR_FLAG_WATERMARK
        attr.wakeup_watermark = max(SAMPLE_SIZE, pages * mmap.PAGESIZE // 4)
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
                self._rings.append(_Ring(base[0], fd))
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

        Returns chunks of back-to-back sample records, each with the event
        SAMPLE_HEAD bytes in: SAMPLE_SIZE bytes each, or (sized) as long as the
        u16 at RECORD_SIZE_AT says.
        """
        try:
            self._poller.poll(timeout_ms)
        except InterruptedError:
            pass  # a signal is how the user stops us; drain what is there
        return self.drain()

    def drain(self) -> list[bytes]:
        """Whatever the rings hold now, without waiting."""
        chunks = []
        for ring in self._rings:
            chunk = ring.take()
            if chunk:
                chunks.append(self._samples(chunk))
        return [c for c in chunks if c]

    def _samples(self, chunk: bytes) -> bytes:
        """The chunk's sample records; loss reports are counted and taken out."""
        if not self._sized and len(chunk) % SAMPLE_SIZE == 0:
            # Fast path: every record a sample of our size. The header's type and size
            # sit at the same offsets of every SAMPLE_SIZE stride.
            view = memoryview(chunk)
            if (set(view.cast("I")[0::SAMPLE_SIZE // 4]) == {PERF_RECORD_SAMPLE}
                    and set(view.cast("H")[3::SAMPLE_SIZE // 2]) == {SAMPLE_SIZE}):
                return chunk
        keep = []
        pos = 0
        while pos + _HEADER.size <= len(chunk):
            rtype, _, rsize = _HEADER.unpack_from(chunk, pos)
            if rsize < _HEADER.size:
                break  # cannot happen with a sane kernel; do not spin
            if rtype == PERF_RECORD_SAMPLE and (rsize == SAMPLE_SIZE or
                                                self._sized and rsize > SAMPLE_SIZE):
                keep.append(chunk[pos:pos + rsize])
            elif rtype == PERF_RECORD_LOST:
                self.lost += _LOST.unpack_from(chunk, pos)[4]
            else:
                self.foreign += 1
            pos += rsize
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
