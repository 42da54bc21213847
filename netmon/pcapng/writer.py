"""pcapng for Wireshark: the blocks, and a writer that rotates files and loses nothing quietly.

Plain Python (no libbpf). A file is a Section Header Block, one Interface
Description Block per interface (name, Ethernet, snaplen, nanosecond stamps),
then one Enhanced Packet Block per packet with its direction in the flags.
Every file a rotation starts is whole on its own: its own SHB and IDBs.

Blocks are in the host's byte order (the Section Header says which), as the
kernel builds them when capturing live (sources/records.py); files read with
-r have theirs built here.

Writes go straight to the file descriptor, a poll's blocks at a time, and only
whole blocks stay in a file: if a write fails (a full disk), the file is cut
back to the last whole block, as many of the batch's blocks as fit are written
one by one, and the error is raised for the caller to report.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import time
from typing import Iterable

from netmon import __version__
from netmon.errors import CaptureWriteError

LINKTYPE_ETHERNET = 1
BT_SHB, BT_IDB, BT_EPB = 0x0A0D0D0A, 1, 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_TSRESOL = 2, 9
EPB_FLAGS = 2
# epb_flags bits 0-1: the direction (RFC draft: 01 inbound, 10 outbound).
FLAG_INBOUND, FLAG_OUTBOUND = 1, 2

_EPB_HEAD = struct.Struct("=IIIIIII")  # type, length, interface, ts high, ts low, caplen, len
_EPB_TAIL = struct.Struct("=HHIHHI")
_BLOCK_HEAD = struct.Struct("=II")  # type, total length  # epb_flags option, end of options, length again
_PADS = (b"", b"\0\0\0", b"\0\0", b"\0")
_IOV_MAX = 1024  # buffers one writev() takes (Linux's UIO_MAXIOV)




def _option(code: int, value: bytes) -> bytes:
    return struct.pack("=HH", code, len(value)) + value + _PADS[len(value) % 4]


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("=II", block_type, length) + body + struct.pack("=I", length)


def section_header() -> bytes:
    options = _option(SHB_USERAPPL, f"netmon {__version__}".encode()) + _option(OPT_ENDOFOPT, b"")
    return _block(BT_SHB, struct.pack("=IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + options)


def interface_description(name: str | None, snaplen: int) -> bytes:
    named = _option(IF_NAME, name.encode()) if name else b""
    options = named + _option(IF_TSRESOL, bytes([9])) + _option(OPT_ENDOFOPT, b"")
    return _block(BT_IDB, struct.pack("=HHI", LINKTYPE_ETHERNET, 0, snaplen) + options)


TS_MAX = (1 << 64) - 1  # an EPB's stamp: 64 bits of nanoseconds, 1970 to 2554


def in_range(ts_ns: int) -> int:
    """The nearest stamp an EPB holds: a file read with -r may say any time (a pcapng's
    if_tsoffset, a microsecond stamp of 2^64 - 1), and tcpdump reads such files."""
    return min(max(ts_ns, 0), TS_MAX)


def enhanced_packet(interface: int, ts_ns: int, data: bytes, origlen: int,
                    outbound: bool) -> bytes:
    """One EPB: nanosecond stamp (the IDB says so; in_range() of it), direction in
    epb_flags."""
    ts_ns = in_range(ts_ns)
    pad = _PADS[len(data) % 4]
    length = _EPB_HEAD.size + len(data) + len(pad) + _EPB_TAIL.size
    return b"".join((
        _EPB_HEAD.pack(BT_EPB, length, interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data),
                       origlen),
        data, pad,
        _EPB_TAIL.pack(EPB_FLAGS, 4, FLAG_OUTBOUND if outbound else FLAG_INBOUND, 0, 0, length),
    ))


def split_blocks(data: bytes) -> list[bytes]:
    """A run of whole blocks, one by one (rare: a rotation inside it, a failed write)."""
    blocks, pos = [], 0
    while pos + _BLOCK_HEAD.size <= len(data):
        length = _BLOCK_HEAD.unpack_from(data, pos)[1]
        if length < 12:
            break  # not a block: keep the rest whole rather than spin
        blocks.append(data[pos:pos + length])
        pos += length
    if pos < len(data):
        blocks.append(data[pos:])
    return blocks


def is_packet(block: bytes) -> bool:
    return _BLOCK_HEAD.unpack_from(block)[0] == BT_EPB


class PcapngWriter:
    """Packets into FILE (or stdout for "-"), rotated as tcpdump's -C, -W and -G do.

    - ``file_mb``: once a file holds more than this many million bytes, the next
      packet goes to a new one: FILE, FILE.1, FILE.2, ...
    - ``rotate_seconds``: a new file every so many seconds, as well.
    - ``file_count``: at most this many files, reused in turn (a ring): FILE,
      FILE.1, ..., FILE.<N-1>, then FILE again.
    """

    def __init__(self, path: str, snaplen: int, file_mb: float | None = None,
                 file_count: int | None = None, rotate_seconds: float | None = None,
                 owner: tuple[int, int] | None = None):
        self.path = path
        self._owner = owner
        self.snaplen = snaplen
        self._limit = int(file_mb * 1_000_000) if file_mb else None
        self._count = file_count
        self._every = rotate_seconds
        self._interfaces: list[str | None] = []  # by pcapng interface id
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._number = 0  # of the current file in the rotation
        self._fd = -1
        self._size = 0  # bytes of whole blocks in the current file
        self.packets = 0  # written to files, in all
        self.files = 0
        self._open()

    # -- files -----------------------------------------------------------------

    def file_name(self, number: int) -> str:
        return self.path if number == 0 else f"{self.path}.{number}"

    def _open(self) -> None:
        if self.path == "-":
            self._fd = 1
        else:
            name = self.file_name(self._number)
            try:
                self._fd = self._create(name)
            except OSError as exc:
                raise CaptureWriteError(f"cannot write {name}: {exc.strerror}") from None
        self._size = 0
        self._opened = time.monotonic()
        self.files += 1
        head = [section_header()] + [
            interface_description(name, self.snaplen) for name in self._interfaces]
        self._pending[:0] = head
        self._pending_size += sum(len(b) for b in head)

    def _create(self, name: str) -> int:
        """A file made by a run that will give root up is given to the user it becomes (as
        tcpdump -Z makes it as that user): a ring (-W) opens it again after the drop. One
        that was there already keeps its owner."""
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return os.open(name, os.O_WRONLY | os.O_TRUNC)
        if self._owner is not None and os.geteuid() == 0:
            os.fchown(fd, *self._owner)
        return fd

    def _rotate(self) -> None:
        self.flush()
        if self._fd != 1:
            fd, self._fd = self._fd, -1  # closed, whether the next opens or not
            os.close(fd)
        self._number += 1
        if self._count and self._number >= self._count:
            self._number = 0
        self._open()

    # -- writing ---------------------------------------------------------------

    def describe(self, interface: int, name: str | None) -> None:
        """Interface id ``interface`` is ``name`` (None: unnamed) in this file and the next.

        Ids are positions: any not yet described below it are described unnamed.
        """
        if interface < len(self._interfaces):
            return  # ids are never reused with another name: the caller's promise
        while len(self._interfaces) <= interface:
            named = name if len(self._interfaces) == interface else None
            self._interfaces.append(named)
            self._add(interface_description(named, self.snaplen), 0)

    @property
    def described(self) -> int:
        """How many interface ids the files describe."""
        return len(self._interfaces)

    def write(self, packets: Iterable[bytes]) -> None:
        """Enhanced Packet Blocks, one packet each."""
        self._every_due()
        for block in packets:
            self._add(block, 1)

    def write_run(self, parts: list, packets: int) -> None:
        """Whole blocks, back to back in ``parts`` (bytes-likes), ``packets`` of them EPBs
        (the rest are blocks readers skip). Written at once: the parts may be views
        into a perf ring, which the caller hands back to the kernel after this.
        """
        self._every_due()
        size = sum(len(p) for p in parts)
        if self._limit is not None and self._size + self._pending_size + size > self._limit:
            for block in split_blocks(b"".join(parts)):  # the file fills up inside the run
                self._add(block, is_packet(block))
        else:
            self._pending += parts
            self._pending_size += size
            self.packets += packets
        self.flush()

    def _every_due(self) -> None:
        if self._every and time.monotonic() - self._opened >= self._every:
            self._rotate()  # as tcpdump -G: when a packet comes after the time is up

    def _add(self, data: bytes, packets: int) -> None:
        # As tcpdump -C: a new file before a packet once the current one is over.
        if self._limit is not None and packets and self._size + self._pending_size > self._limit:
            self._rotate()
        self._pending.append(data)
        self._pending_size += len(data)
        self.packets += packets

    def tick(self) -> None:
        """Once per poll: what was written reaches the file (tshark -r sees it)."""
        self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        blocks, size = self._pending, self._pending_size
        self._pending, self._pending_size = [], 0
        try:
            self._write_all(blocks)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and self._fd == 1:
                raise  # -w - and the reader went away: the caller stops quietly
            self._salvage([bytes(b) for b in blocks], exc)
        self._size += size

    def _write_all(self, bufs: list) -> None:
        """Every byte of ``bufs``, in order, with as few system calls as it takes."""
        views = [memoryview(b) for b in bufs]
        first = 0
        while first < len(views):
            done = os.writev(self._fd, views[first:first + _IOV_MAX])
            while first < len(views) and done >= len(views[first]):
                done -= len(views[first])
                first += 1
            if done:
                views[first] = views[first][done:]

    def _salvage(self, runs: list[bytes], exc: OSError) -> None:
        """Cut the file back to whole blocks, fit in what fits, then report."""
        blocks = [block for run in runs for block in split_blocks(run)]
        kept = 0
        # Only a regular file can be cut back; a pipe or a device (/dev/full) keeps what
        # it took, and what failed is only counted.
        regular = self._fd != 1 and stat.S_ISREG(os.fstat(self._fd).st_mode)
        if regular:
            try:
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
                for block in blocks:
                    self._write_all([block])
                    self._size += len(block)
                    kept += 1
            except OSError:
                os.ftruncate(self._fd, self._size)
        lost = sum(1 for b in blocks[kept:] if is_packet(b))
        self.packets -= lost
        where = "standard output" if self._fd == 1 else self.file_name(self._number)
        reason = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror
        raise CaptureWriteError(
            f"writing {where}: {reason}; {lost} packets could not be written, the file "
            f"keeps the {self.packets} before them" if regular else
            f"writing {where}: {reason}") from None

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            if self._fd != 1:
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "PcapngWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
