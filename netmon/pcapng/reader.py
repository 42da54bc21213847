"""Reading pcap and pcapng captures: frames, with where each came from and which way it went.

Plain Python. Our own reader rather than dpkt's: dpkt's pcapng iterator yields
only (timestamp, bytes), without the packet's interface or its direction
flags, takes one link type for the whole file, and reads a cut-off record as a
short one without a word. netmon needs all three, and the byte offset where a
damaged file stops making sense. Both formats, either byte order, microsecond
and nanosecond pcap, pcapng's per-interface link type, time resolution and
offset, several sections.

Ethernet is read as it is; Linux cooked captures (SLL, SLL2, what ``tcpdump -i
any`` writes) get an Ethernet header made from their protocol field, and their
packet type gives the direction. Other link types are refused with a clear
error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from netmon.errors import CaptureDamaged, CaptureUnreadable

LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 1, 113, 276
LINKTYPE_NAMES = {0: "BSD loopback", 1: "Ethernet", 101: "raw IP", 105: "802.11",
                  113: "Linux cooked (SLL)", 127: "802.11 radiotap", 228: "raw IPv4",
                  229: "raw IPv6", 276: "Linux cooked v2 (SLL2)"}
READABLE = (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2)
MAX_SNAPLEN = 262144  # libpcap's largest; a record claiming more is damage
PACKET_OUTGOING = 4  # SLL packet type

_PCAP_MAGIC = {  # magic as read little-endian -> (byte order, ns per fraction unit)
    0xA1B2C3D4: ("<", 1000), 0xA1B23C4D: ("<", 1),
    0xD4C3B2A1: (">", 1000), 0x4D3CB2A1: (">", 1),
}
_PCAPNG_SHB = 0x0A0D0D0A
_BOM = 0x1A2B3C4D
_BT_IDB, _BT_PB, _BT_SPB, _BT_EPB = 1, 2, 3, 6






@dataclass(frozen=True)
class Frame:
    ts_ns: int  # since the epoch
    data: bytes  # from the Ethernet header on
    origlen: int  # on the wire, as the file says (the Ethernet header made for SLL added)
    ifname: str | None  # pcapng's if_name
    outbound: bool | None  # the direction, where the file records it
    offset: int  # of the record in the file
    number: int  # of the packet in the file, from 1 (tcpdump -# counts the same way)
    linktype: int = 1  # the file's LINKTYPE_* for it
    raw: bytes | None = None  # as the file holds it, where that is not ``data`` (SLL)
    filed_len: int = 0  # with ``raw``: the length on the wire the file says

    @property
    def as_filed(self) -> tuple[bytes, int]:
        """Its bytes and length on the wire as the file has them: what tcpdump's
        expression reads on a Linux cooked capture."""
        if self.raw is None:
            return self.data, self.origlen
        return self.raw, self.filed_len


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    name: str | None = None
    ns_per_unit: int = 1000  # pcapng's default resolution: microseconds
    units_per_s: int = 1_000_000
    offset_s: int = 0


def _to_ethernet(linktype: int, data: bytes) -> tuple[bytes, bool | None]:
    """(Ethernet frame, outbound or None): ``data`` itself where it is one already."""
    if linktype == LINKTYPE_ETHERNET:
        return data, None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return data, None
        pkttype, _, addrlen = struct.unpack_from(">HHH", data)
        addr, proto, head = data[6:6 + min(addrlen, 8)], data[14:16], 16
    else:  # SLL2
        if len(data) < 20:
            return data, None
        proto, pkttype, addrlen = data[0:2], data[10], data[11]
        addr, head = data[12:12 + min(addrlen, 8)], 20
    src = addr if len(addr) == 6 else b"\0" * 6
    return b"\0" * 6 + src + proto + data[head:], pkttype == PACKET_OUTGOING


def _refuse(path: str, linktype: int) -> CaptureUnreadable:
    name = LINKTYPE_NAMES.get(linktype, "unknown")
    return CaptureUnreadable(
        f"{path}: link type {linktype} ({name}) is not Ethernet; netmon reads Ethernet and "
        "Linux cooked (SLL, SLL2) captures")


class _Input:
    """A file read in exact pieces; a short read is a CaptureDamaged at its record's offset."""

    def __init__(self, f: BinaryIO, path: str):
        self._f = f
        self.path = path
        self.offset = 0
        self.record = 0  # where the record being read starts

    def read(self, n: int, what: str, eof_ok: bool = False) -> bytes:
        data = self._f.read(n)
        if len(data) < n and not (eof_ok and not data):
            raise CaptureDamaged(self.path, self.record,
                                 f"{what} cut short ({len(data)} of {n} bytes)")
        self.offset += len(data)
        return data

    def skip(self, n: int, what: str) -> None:
        while n > 0:
            n -= len(self.read(min(n, 1 << 20), what))


def open_capture(path: str) -> BinaryIO:
    """The file -r names, open: before netmon gives up root (it may be root's alone)."""
    try:
        # "-": standard input, as tcpdump -r - reads it (a pipe reads as a file does).
        return open(0, "rb", closefd=False) if path == "-" else open(path, "rb")
    except OSError as exc:
        raise CaptureUnreadable(f"cannot read {path}: {exc.strerror}") from None


def frames(path: str | Path, opened: BinaryIO | None = None) -> Iterator[Frame]:
    """Every frame of a pcap or pcapng file ("-": standard input), in file order.

    Raises CaptureUnreadable before the first frame for a file netmon cannot
    read, and CaptureDamaged where a damaged file stops making sense.
    """
    path = str(path)
    f = opened if opened is not None else open_capture(path)
    if path == "-":
        path = "standard input"
    with f:
        inp = _Input(f, path)
        head = inp.read(4, "file header", eof_ok=True)
        if len(head) < 4:
            raise CaptureUnreadable(f"{path}: empty file, not a capture")
        magic = struct.unpack("<I", head)[0]
        if magic in _PCAP_MAGIC:
            records = _pcap(inp, *_PCAP_MAGIC[magic])
        elif magic == _PCAPNG_SHB:
            records = _pcapng(inp)
        else:
            raise CaptureUnreadable(f"{path}: not a pcap or pcapng file")
        for number, (ts, data, origlen, *fields, linktype, raw) in enumerate(records, 1):
            # A cooked frame's header is made Ethernet's: its length on the wire too,
            # never below 0 (a file may say 0 for a frame of any size).
            made = origlen if raw is None else max(0, origlen + len(data) - len(raw))
            yield Frame(ts, data, made, *fields, number, linktype, raw, origlen)


def _pcap(inp: _Input, order: str, ns_per_unit: int) -> Iterator[tuple]:
    _, _, _, _, snaplen, linktype = struct.unpack(order + "HHiIII", inp.read(20, "file header"))
    linktype &= 0xFFFF  # the upper bits carry FCS information
    if linktype not in READABLE:
        raise _refuse(inp.path, linktype)
    snaplen = snaplen if 0 < snaplen <= MAX_SNAPLEN else MAX_SNAPLEN
    record = struct.Struct(order + "IIII")
    while True:
        offset = inp.record = inp.offset
        hdr = inp.read(16, "record header", eof_ok=True)
        if not hdr:
            return
        sec, frac, caplen, origlen = record.unpack(hdr)
        if caplen > MAX_SNAPLEN:
            raise CaptureDamaged(inp.path, offset, f"record claims {caplen} captured bytes")
        data = inp.read(min(caplen, snaplen), "packet data")
        inp.skip(caplen - len(data), "packet data")  # past the snaplen: cut, as tcpdump does
        made, outbound = _to_ethernet(linktype, data)
        yield (sec * 1_000_000_000 + frac * ns_per_unit, made, origlen, None,
               outbound, offset, linktype, None if made is data else data)


def _options(body: bytes, order: str) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        if code == 0:
            break
        out.setdefault(code, body[pos + 4:pos + 4 + length])
        pos += 4 + ((length + 3) & ~3)
    return out


def _resolution(raw: bytes | None) -> tuple[int, int]:
    """(ns per unit, units per second) from if_tsresol; microseconds by default."""
    if not raw:
        return 1000, 1_000_000
    value = raw[0]
    units = 2 ** (value & 0x7F) if value & 0x80 else 10 ** value
    return (1_000_000_000 // units if units <= 1_000_000_000 else 0), units


def _pcapng(inp: _Input) -> Iterator[tuple]:
    order = "<"
    interfaces: list[_Interface] = []
    block_type = _PCAPNG_SHB
    first = True
    while True:
        offset = inp.record = inp.offset - (4 if first else 0)
        if not first:
            head = inp.read(4, "block header", eof_ok=True)
            if not head:
                return
            block_type = struct.unpack(order + "I", head)[0]
        first = False
        raw_len = inp.read(4, "block length")
        if block_type == _PCAPNG_SHB:
            bom = inp.read(4, "section header")
            order = {_BOM: "<", 0x4D3C2B1A: ">"}.get(struct.unpack("<I", bom)[0])
            if order is None:
                raise CaptureDamaged(inp.path, offset, "section header with no byte-order mark")
            length = struct.unpack(order + "I", raw_len)[0]
            if length < 28 or length % 4:
                raise CaptureDamaged(inp.path, offset, f"section header of {length} bytes")
            inp.read(length - 12, "section header")
            interfaces = []  # a new section describes its interfaces anew
            continue
        length = struct.unpack(order + "I", raw_len)[0]
        if length < 12 or length % 4 or length > MAX_SNAPLEN + 4096:
            raise CaptureDamaged(inp.path, offset, f"block of {length} bytes")
        body = inp.read(length - 12, "block")
        trailer = struct.unpack(order + "I", inp.read(4, "block trailer"))[0]
        if trailer != length:
            raise CaptureDamaged(inp.path, offset, "block lengths at its start and end differ")
        if block_type == _BT_IDB:
            interfaces.append(_idb(body, order, inp.path, offset))
            continue
        if block_type not in (_BT_EPB, _BT_PB, _BT_SPB):
            continue  # name resolution, statistics, custom blocks: nothing to show
        yield _packet(block_type, body, length, order, interfaces, inp.path, offset)


def _idb(body: bytes, order: str, path: str, offset: int) -> _Interface:
    """An Interface Description Block's link type, snaplen, name and time resolution."""
    if len(body) < 8:
        raise CaptureDamaged(path, offset, "interface description too short")
    linktype, _, snaplen = struct.unpack_from(order + "HHI", body)
    opts = _options(body[8:], order)
    ns, units = _resolution(opts.get(9))
    tsoffset = struct.unpack(order + "q", opts[14])[0] if len(opts.get(14, b"")) == 8 else 0
    name = opts.get(2, b"").rstrip(b"\0").decode("utf-8", "replace") or None
    return _Interface(linktype, snaplen if 0 < snaplen <= MAX_SNAPLEN else MAX_SNAPLEN, name,
                      ns, units, tsoffset)


def _packet(block_type: int, body: bytes, length: int, order: str,
            interfaces: list[_Interface], path: str, offset: int) -> tuple:
    """An EPB's, PB's or SPB's frame, as _pcapng() yields it."""
    if block_type == _BT_SPB:
        if len(body) < 4:
            raise CaptureDamaged(path, offset, "simple packet block too short")
        iface_id, ts, origlen, data_at = 0, 0, struct.unpack_from(order + "I", body)[0], 4
        caplen = min(origlen, len(body) - 4)
    else:
        if len(body) < 20:
            raise CaptureDamaged(path, offset, "packet block too short")
        if block_type == _BT_EPB:
            iface_id, hi, lo, caplen, origlen = struct.unpack_from(order + "IIIII", body)
        else:
            iface_id, _, hi, lo, caplen, origlen = struct.unpack_from(order + "HHIIII", body)
        ts, data_at = (hi << 32) | lo, 20
        if data_at + caplen > len(body):
            raise CaptureDamaged(path, offset, f"packet of {caplen} bytes in a block "
                                               f"of {length}")
    if iface_id >= len(interfaces):
        raise CaptureDamaged(path, offset, f"packet on undescribed interface {iface_id}")
    iface = interfaces[iface_id]
    if iface.linktype not in READABLE:
        raise _refuse(path, iface.linktype)
    data = body[data_at:data_at + min(caplen, iface.snaplen)]
    outbound = None
    if block_type == _BT_EPB:
        flags = _options(body[data_at + ((caplen + 3) & ~3):], order).get(2)
        if flags and len(flags) == 4:
            direction = struct.unpack(order + "I", flags)[0] & 3
            outbound = {1: False, 2: True}.get(direction)
    made, sll_outbound = _to_ethernet(iface.linktype, data)
    if outbound is None:
        outbound = sll_outbound
    if iface.ns_per_unit:
        ts_ns = ts * iface.ns_per_unit
    else:
        ts_ns = ts * 1_000_000_000 // iface.units_per_s
    return (ts_ns + iface.offset_s * 1_000_000_000, made, origlen, iface.name,
            outbound, offset, iface.linktype, None if made is data else data)
