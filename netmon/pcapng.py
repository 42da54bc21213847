"""pcapng for Wireshark: the blocks, and a writer that rotates files and loses nothing quietly.

Plain Python (no libbpf). A file is a Section Header Block, one Interface
Description Block per interface (name, Ethernet, snaplen, nanosecond stamps),
then one Enhanced Packet Block per packet with its direction in the flags.
Every file a rotation starts is whole on its own: its own SHB and IDBs.

Writes go straight to the file descriptor, a poll's blocks at a time, and only
whole blocks stay in a file: if a write fails (a full disk), the file is cut
back to the last whole block, as many of the batch's blocks as fit are written
one by one, and the error is raised for the caller to report.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from typing import Iterable

from netmon import __version__
from netmon.errors import NetmonError

LINKTYPE_ETHERNET = 1
BT_SHB, BT_IDB, BT_EPB = 0x0A0D0D0A, 1, 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_TSRESOL = 2, 9
EPB_FLAGS = 2
# epb_flags bits 0-1: the direction (RFC draft: 01 inbound, 10 outbound).
FLAG_INBOUND, FLAG_OUTBOUND = 1, 2

_EPB_HEAD = struct.Struct("<IIIIIII")  # type, length, interface, ts high, ts low, caplen, len
_EPB_TAIL = struct.Struct("<HHIHHI")  # epb_flags option, end of options, length again
_PADS = (b"", b"\0\0\0", b"\0\0", b"\0")


class CaptureWriteError(NetmonError):
    """The capture file could not be written (a full disk, an I/O error)."""


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + _PADS[len(value) % 4]


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def section_header() -> bytes:
    options = _option(SHB_USERAPPL, f"netmon {__version__}".encode()) + _option(OPT_ENDOFOPT, b"")
    return _block(BT_SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + options)


def interface_description(name: str | None, snaplen: int) -> bytes:
    named = _option(IF_NAME, name.encode()) if name else b""
    options = named + _option(IF_TSRESOL, bytes([9])) + _option(OPT_ENDOFOPT, b"")
    return _block(BT_IDB, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, snaplen) + options)


def enhanced_packet(interface: int, ts_ns: int, data: bytes, origlen: int,
                    outbound: bool) -> bytes:
    """One EPB: nanosecond stamp (the IDB says so), direction in epb_flags."""
    pad = _PADS[len(data) % 4]
    length = _EPB_HEAD.size + len(data) + len(pad) + _EPB_TAIL.size
    return b"".join((
        _EPB_HEAD.pack(BT_EPB, length, interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data),
                       origlen),
        data, pad,
        _EPB_TAIL.pack(EPB_FLAGS, 4, FLAG_OUTBOUND if outbound else FLAG_INBOUND, 0, 0, length),
    ))


class PcapngWriter:
    """Packets into FILE (or stdout for "-"), rotated as tcpdump's -C, -W and -G do.

    - ``file_mb``: once a file holds more than this many million bytes, the next
      packet goes to a new one: FILE, FILE.1, FILE.2, ...
    - ``rotate_seconds``: a new file every so many seconds, as well.
    - ``file_count``: at most this many files, reused in turn (a ring): FILE,
      FILE.1, ..., FILE.<N-1>, then FILE again.
    """

    def __init__(self, path: str, snaplen: int, file_mb: float | None = None,
                 file_count: int | None = None, rotate_seconds: float | None = None):
        self.path = path
        self.snaplen = snaplen
        self._limit = int(file_mb * 1_000_000) if file_mb else None
        self._count = file_count
        self._every = rotate_seconds
        self._interfaces: list[str | None] = []  # by pcapng interface id
        # ifindex -> interface id; callers may read it on their hot path.
        self.ids: dict[int, int] = {}
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
                self._fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            except OSError as exc:
                raise CaptureWriteError(f"cannot write {name}: {exc.strerror}") from None
        self._size = 0
        self._opened = time.monotonic()
        self.files += 1
        self._pending[:0] = [section_header()] + [
            interface_description(name, self.snaplen) for name in self._interfaces]
        self._pending_size += sum(len(b) for b in self._pending)

    def _rotate(self) -> None:
        self.flush()
        if self._fd != 1:
            os.close(self._fd)
        self._number += 1
        if self._count and self._number >= self._count:
            self._number = 0
        self._pending_size = sum(len(b) for b in self._pending)
        self._open()

    # -- writing ---------------------------------------------------------------

    def interface(self, ifindex: int, name: str | None) -> int:
        """The pcapng interface id of ``ifindex``; describes it in the file when new."""
        found = self.ids.get(ifindex)
        if found is None or self._interfaces[found] != name:
            found = self.ids[ifindex] = len(self._interfaces)
            self._interfaces.append(name)
            block = interface_description(name, self.snaplen)
            self._pending.append(block)
            self._pending_size += len(block)
        return found

    def forget(self, ifindex: int) -> None:
        """The interface went away: if its index comes back, it is described anew."""
        self.ids.pop(ifindex, None)

    def write(self, packets: Iterable[tuple[int, int, int, bytes, bool]]) -> None:
        """(interface id, epoch ns, original length, captured bytes, outbound) each."""
        if self._every and time.monotonic() - self._opened >= self._every:
            self._rotate()  # as tcpdump -G: when a packet comes after the time is up
        pending = self._pending
        limit = self._limit
        for interface, ts_ns, origlen, data, outbound in packets:
            if limit is not None and self._size + self._pending_size > limit:
                self._rotate()
                pending = self._pending
            block = enhanced_packet(interface, ts_ns, data, origlen, outbound)
            pending.append(block)
            self._pending_size += len(block)
            self.packets += 1

    def tick(self) -> None:
        """Once per poll: what was written reaches the file (tshark -r sees it)."""
        self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        blocks, self._pending, self._pending_size = self._pending, [], 0
        data = b"".join(blocks)
        try:
            self._write_all(data)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and self._fd == 1:
                raise  # -w - and the reader went away: the caller stops quietly
            self._salvage(blocks, exc)
        self._size += len(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _salvage(self, blocks: list[bytes], exc: OSError) -> None:
        """Cut the file back to whole blocks, fit in what fits, then report."""
        kept = 0
        if self._fd != 1:
            try:
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
                for block in blocks:
                    self._write_all(block)
                    self._size += len(block)
                    kept += 1
            except OSError:
                os.ftruncate(self._fd, self._size)
        lost = sum(1 for b in blocks[kept:] if b[:4] == b"\x06\0\0\0")
        self.packets -= lost
        where = "standard output" if self._fd == 1 else self.file_name(self._number)
        reason = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror
        raise CaptureWriteError(
            f"writing {where}: {reason}; {lost} packets could not be written, the file "
            f"keeps the {self.packets} before them" if self._fd != 1 else
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
