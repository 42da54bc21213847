"""The one Python mirror of ``struct nm_event`` (bpf/xdp_monitor.h), and its decoding.

Plain Python: no libbpf, no cffi. The reader hands over raw records; this module
turns a batch of them into typed, immutable events.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Iterable

# Field order and widths of struct nm_event, native byte order, no implicit padding.
EVENT_FORMAT = struct.Struct("=QII16s16sHHHBBBBBB4x")
EVENT_SIZE = EVENT_FORMAT.size

# nm_event.flags
EV_PORTS = 0x01
EV_ICMP = 0x02
EV_FRAG = 0x04
EV_TCPFLAGS = 0x08

_FAMILIES = {4: (socket.AF_INET, 4), 6: (socket.AF_INET6, 16)}


@dataclass(frozen=True, slots=True)
class Event:
    """One IP packet as the XDP hook saw it."""

    ts_ns: int  # CLOCK_MONOTONIC nanoseconds
    ifindex: int
    length: int  # frame length at the hook
    family: int  # 4 or 6
    ipproto: int
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    vlan: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    tcp_flags: int | None = None
    fragment: bool = False


class _AddressCache(dict):
    """Packed address -> text. Busy hosts repeat a few addresses endlessly."""

    def __init__(self, family: int, width: int):
        super().__init__()
        self._family = family
        self._width = width

    def __missing__(self, packed: bytes) -> str:
        if len(self) > 65536:
            self.clear()
        text = self[packed] = socket.inet_ntop(self._family, packed[: self._width])
        return text


_address_caches = {fam: _AddressCache(*spec) for fam, spec in _FAMILIES.items()}


def decode(record: bytes) -> Event | None:
    """One record to an Event; None for a record too short or of an unknown family."""
    if len(record) < EVENT_SIZE:
        return None
    (ts_ns, ifindex, length, saddr, daddr, sport, dport, vlan,
     family, ipproto, icmp_type, icmp_code, tcp_flags, flags) = EVENT_FORMAT.unpack_from(record)
    cache = _address_caches.get(family)
    if cache is None:
        return None
    has_ports = flags & EV_PORTS
    has_icmp = flags & EV_ICMP
    return Event(
        ts_ns=ts_ns,
        ifindex=ifindex,
        length=length,
        family=family,
        ipproto=ipproto,
        src=cache[saddr],
        dst=cache[daddr],
        sport=sport if has_ports else None,
        dport=dport if has_ports else None,
        vlan=vlan or None,
        icmp_type=icmp_type if has_icmp else None,
        icmp_code=icmp_code if has_icmp else None,
        tcp_flags=tcp_flags if flags & EV_TCPFLAGS else None,
        fragment=bool(flags & EV_FRAG),
    )


def decode_batch(records: Iterable[bytes]) -> list[Event]:
    """Decode a batch, dropping records that cannot be events (counted by the caller)."""
    events = []
    for record in records:
        ev = decode(record)
        if ev is not None:
            events.append(ev)
    return events


def encode(ev: Event) -> bytes:
    """The record the kernel would send for ``ev``; for tests and tools."""
    fam, width = _FAMILIES[ev.family]
    flags = (
        (EV_PORTS if ev.sport is not None else 0)
        | (EV_ICMP if ev.icmp_type is not None else 0)
        | (EV_FRAG if ev.fragment else 0)
        | (EV_TCPFLAGS if ev.tcp_flags is not None else 0)
    )
    return EVENT_FORMAT.pack(
        ev.ts_ns, ev.ifindex, ev.length,
        socket.inet_pton(fam, ev.src).ljust(16, b"\0"),
        socket.inet_pton(fam, ev.dst).ljust(16, b"\0"),
        ev.sport or 0, ev.dport or 0, ev.vlan or 0,
        ev.family, ev.ipproto, ev.icmp_type or 0, ev.icmp_code or 0,
        ev.tcp_flags or 0, flags,
    )
