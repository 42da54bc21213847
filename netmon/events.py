"""``struct nm_event`` records (layout: kernel/abi.py) decoded into Events.

Plain Python: no libbpf, no cffi. The reader hands over raw records in batches;
this module turns them into typed, immutable Events.

An Event is when and how long (timestamp, interface, length) plus the record's
flow part: what the packet is (addresses, protocol, ports, flags). Busy links
repeat a few flows endlessly, so a flow is decoded into a Flow once and shared
by every event that carries it; decoding a batch stays in C (struct.iter_unpack).
"""

from __future__ import annotations

import operator
import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

from netmon.kernel.abi import (DIR_IN, DIR_NAMES, DIR_OUT, EV_FRAG, EV_ICMP, EV_PORTS,  # noqa: F401
                               EV_TCPFLAGS, EVENT, EVENT_FLOW_FIELDS, EVENT_TAIL_FIELDS,
                               EVENT_TIME_FIELDS)

_TIME_FIELDS = EVENT_TIME_FIELDS
_FLOW_FIELDS = EVENT_FLOW_FIELDS
_TAIL_FIELDS = EVENT_TAIL_FIELDS
EVENT_SIZE = EVENT.size
_FLOW_FORMAT = struct.Struct("=" + _FLOW_FIELDS)
_FLOW_OFFSET = struct.calcsize("=" + _TIME_FIELDS)
_FLOW_SIZE = _FLOW_FORMAT.size
_FAMILY_OFFSET = struct.calcsize("=16s16sHHH")  # of the family byte, in the flow part

_FAMILIES = {4: (socket.AF_INET, 4), 6: (socket.AF_INET6, 16)}
_KNOWN_FAMILIES = frozenset(_FAMILIES)
_FLOW_CACHE_MAX = 65536


@dataclass(frozen=True)
class Flow:
    """What a packet is, apart from when it came and how long it was."""

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


class Event(NamedTuple):
    """One IP packet as a hook (XDP, tc ingress or egress) saw it.

    ``key`` is the record's flow part, raw; ``flow`` is it decoded (once per
    distinct key, shared by every event of that flow).
    """

    ts_ns: int  # CLOCK_MONOTONIC nanoseconds
    ifindex: int
    length: int  # frame length at the hook (tc: a GRO/GSO-merged skb's whole length)
    key: bytes
    dir: int = DIR_IN  # DIR_IN or DIR_OUT
    segs: int = 1  # packets merged into this one by GRO/GSO

    @property
    def flow(self) -> Flow:
        return _FLOWS.get(self.key) or _intern(self.key)

    # The flow's fields, read through the event.
    family = property(lambda self: self.flow.family)
    ipproto = property(lambda self: self.flow.ipproto)
    src = property(lambda self: self.flow.src)
    dst = property(lambda self: self.flow.dst)
    sport = property(lambda self: self.flow.sport)
    dport = property(lambda self: self.flow.dport)
    vlan = property(lambda self: self.flow.vlan)
    icmp_type = property(lambda self: self.flow.icmp_type)
    icmp_code = property(lambda self: self.flow.icmp_code)
    tcp_flags = property(lambda self: self.flow.tcp_flags)
    fragment = property(lambda self: self.flow.fragment)


_FLOWS: dict[bytes, Flow] = {}


def _intern(key: bytes) -> Flow:
    if len(_FLOWS) >= _FLOW_CACHE_MAX:
        _FLOWS.clear()
    flow = _FLOWS[key] = decode_flow(key)
    return flow


def decode_flow(raw: bytes) -> Flow:
    """The flow part of a record (the kernel sends families 4 and 6 only)."""
    (saddr, daddr, sport, dport, vlan, family, ipproto, icmp_type, icmp_code, tcp_flags,
     flags) = _FLOW_FORMAT.unpack(raw)
    af, width = _FAMILIES[family]
    has_ports = flags & EV_PORTS
    has_icmp = flags & EV_ICMP
    return Flow(
        family=family,
        ipproto=ipproto,
        src=socket.inet_ntop(af, saddr[:width]),
        dst=socket.inet_ntop(af, daddr[:width]),
        sport=sport if has_ports else None,
        dport=dport if has_ports else None,
        vlan=vlan or None,
        icmp_type=icmp_type if has_icmp else None,
        icmp_code=icmp_code if has_icmp else None,
        tcp_flags=tcp_flags if flags & EV_TCPFLAGS else None,
        fragment=bool(flags & EV_FRAG),
    )


def encode_flow(flow: Flow) -> bytes:
    """The flow part the kernel would send for ``flow``."""
    af, _ = _FAMILIES[flow.family]
    flags = (
        (EV_PORTS if flow.sport is not None else 0)
        | (EV_ICMP if flow.icmp_type is not None else 0)
        | (EV_FRAG if flow.fragment else 0)
        | (EV_TCPFLAGS if flow.tcp_flags is not None else 0)
    )
    return _FLOW_FORMAT.pack(
        socket.inet_pton(af, flow.src).ljust(16, b"\0"),
        socket.inet_pton(af, flow.dst).ljust(16, b"\0"),
        flow.sport or 0, flow.dport or 0, flow.vlan or 0,
        flow.family, flow.ipproto, flow.icmp_type or 0, flow.icmp_code or 0,
        flow.tcp_flags or 0, flags,
    )


def make_event(ts_ns: int, ifindex: int, length: int, family: int, ipproto: int, src: str,
               dst: str, sport: int | None = None, dport: int | None = None,
               dir: int = DIR_IN, segs: int = 1, **flow_fields) -> Event:
    """An Event from flat fields (tests, tools)."""
    flow = Flow(family, ipproto, src, dst, sport, dport, **flow_fields)
    return Event(ts_ns, ifindex, length, encode_flow(flow), dir, segs)


def encode(ev: Event) -> bytes:
    """The nm_event record the kernel would send for ``ev``."""
    return struct.pack(f"={_TIME_FIELDS}{_FLOW_SIZE}s{_TAIL_FIELDS}", ev.ts_ns, ev.ifindex,
                       ev.length, ev.key, ev.dir, ev.segs)


Row = tuple  # an Event's fields, in Event's order, as a plain tuple
BY_TIME = operator.itemgetter(0)  # sort key: a row's (or Event's) kernel time stamp


# Decoder.row_at()'s answer for a record of family 0: a frame with no IP packet.
NOT_IP = object()


class Decoder:
    """Decodes batches of records into rows: Events' fields as plain tuples.

    Rows are what the hot path passes along (building a tuple subclass per event
    would double the decoding cost); ``Event(*row)`` is the typed view of one.
    """

    def __init__(self, extra: str = ""):
        """``extra``: what follows each nm_event in its record, as a struct format whose
        fields end each row (netmon drops: struct nm_drop's location and reason)."""
        self._extra = extra.lstrip("=")
        self._formats: dict[tuple[int, int], struct.Struct] = {}
        self.undecodable = 0  # records of an unknown address family, dropped
        # Capture records of frames a filter expression matched that carry no IP packet
        # (family 0): written by -w, never a row (the kernel counts them: expr_not_ip).
        self.not_ip = 0

    def _format(self, head: int, tail: int) -> struct.Struct:
        fmt = self._formats.get((head, tail))
        if fmt is None:
            fmt = self._formats[(head, tail)] = struct.Struct(
                f"={head}x{_TIME_FIELDS}{_FLOW_SIZE}s{_TAIL_FIELDS}{self._extra}{tail}x")
        return fmt

    def rows(self, buf: bytes, head: int = 0, tail: int = 0) -> list[Row]:
        """Rows from ``buf``: back-to-back records of ``head`` bytes, an nm_event, ``tail`` bytes.

        A row is (ts_ns, ifindex, length, key, dir, segs).
        """
        fmt = self._format(head, tail)
        # Every record's family byte in one slice: when all are known, as the kernel
        # guarantees, the per-event work stays in C.
        families = memoryview(buf)[head + _FLOW_OFFSET + _FAMILY_OFFSET::fmt.size]
        if _KNOWN_FAMILIES.issuperset(families):
            return list(fmt.iter_unpack(buf))
        out = [rec for rec in fmt.iter_unpack(buf) if rec[3][_FAMILY_OFFSET] in _KNOWN_FAMILIES]
        not_ip = families.tolist().count(0)
        self.not_ip += not_ip
        self.undecodable += len(buf) // fmt.size - len(out) - not_ip
        return out

    def row_at(self, buf: bytes, offset: int) -> Row | None:
        """One row from the nm_event at ``offset``: None for one of an unknown family,
        NOT_IP for a frame a filter expression matched that carries no IP packet (both
        counted)."""
        row = self._format(0, 0).unpack_from(buf, offset)
        family = row[3][_FAMILY_OFFSET]
        if family in _KNOWN_FAMILIES:
            return row
        if family == 0:
            self.not_ip += 1
            return NOT_IP
        self.undecodable += 1
        return None

    def decode(self, buf: bytes, head: int = 0, tail: int = 0) -> list[Event]:
        """Typed Events from ``buf``; see rows()."""
        return [Event(*row) for row in self.rows(buf, head, tail)]
