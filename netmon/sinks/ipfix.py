"""--ipfix: flow records to a collector as IPFIX (RFC 7011) over UDP.

Why a small encoder here and not a library: the one IPFIX package on PyPI
(python-ipfix) has not had a release since 2017, and export needs little:
two fixed templates and records packed with struct. Collectors read it
(the tests check with nfdump's nfcapd).

Each message carries whole sets and stays within MAX_MESSAGE bytes, so no
datagram is fragmented on a 1500-byte path. Templates go out in the first
message and again every TEMPLATE_EVERY seconds (RFC 7011 10.3.6, UDP). The
sequence number counts the data records sent before the message, per
observation domain, failed sends included: a collector sees the gap.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from netmon import endpoint
from netmon.pipeline import Context, Delivery, Sink

VERSION = 10
SET_TEMPLATE = 2
TEMPLATE_V4, TEMPLATE_V6 = 256, 257
MAX_MESSAGE = 1400  # bytes: a datagram that fits a 1500-byte MTU with room for tunnels
TEMPLATE_EVERY = 60.0  # seconds between templates (sent with the first message too)
DEFAULT_DOMAIN = 1

HEADER = struct.Struct("!HHIII")  # version, length, export time, sequence, domain
SET_HEADER = struct.Struct("!HH")  # set id, length

# IANA information elements: (id, length), in the order of the records' fields.
_HEAD = {4: ((8, 4), (12, 4)), 6: ((27, 16), (28, 16))}  # source/destinationIPvXAddress
_TAIL = (
    (7, 2), (11, 2),  # sourceTransportPort, destinationTransportPort
    (4, 1),  # protocolIdentifier
    (6, 2),  # tcpControlBits (RFC 7125: two octets)
    (1, 8), (2, 8),  # octetDeltaCount, packetDeltaCount
    (152, 8), (153, 8),  # flowStartMilliseconds, flowEndMilliseconds
    (10, 4), (14, 4),  # ingressInterface, egressInterface
    (61, 1),  # flowDirection: 0 ingress, 1 egress
    (58, 2),  # vlanId
    (136, 1),  # flowEndReason
)
_ICMP_TYPE_CODE = {4: (32, 2), 6: (139, 2)}  # icmpTypeCodeIPv4, icmpTypeCodeIPv6
FIELDS = {family: _HEAD[family] + _TAIL + (_ICMP_TYPE_CODE[family],) for family in (4, 6)}
TEMPLATE_IDS = {4: TEMPLATE_V4, 6: TEMPLATE_V6}
RECORD = {4: struct.Struct("!4s4sHHBHQQQQIIBHBH"), 6: struct.Struct("!16s16sHHBHQQQQIIBHBH")}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def template_set() -> bytes:
    body = b""
    for family in (4, 6):
        fields = FIELDS[family]
        body += struct.pack("!HH", TEMPLATE_IDS[family], len(fields))
        body += b"".join(struct.pack("!HH", ie, size) for ie, size in fields)
    return SET_HEADER.pack(SET_TEMPLATE, SET_HEADER.size + len(body)) + body


def record_bytes(rec, epoch_ms: Callable[[int], int]) -> tuple[int, bytes]:
    """(family, the data record) of a flows.FlowRecord."""
    k = rec.key
    icmp = k.icmp
    return k.family, RECORD[k.family].pack(
        socket.inet_pton(_AF[k.family], k.src), socket.inet_pton(_AF[k.family], k.dst),
        0 if icmp else k.sport, 0 if icmp else k.dport, k.ipproto,
        rec.tcp_flags if k.ipproto == 6 else 0, rec.bytes, rec.packets,
        epoch_ms(rec.first_ns), epoch_ms(rec.last_ns),
        k.ifindex if k.dir == 0 else 0, k.ifindex if k.dir == 1 else 0, k.dir, k.vlan,
        rec.reason, (k.sport << 8 | k.dport) if icmp else 0)


class Encoder:
    """Records into messages of one observation domain; keeps the sequence number."""

    def __init__(self, domain: int = DEFAULT_DOMAIN, max_message: int = MAX_MESSAGE):
        self.domain = domain
        self.sequence = 0  # data records in the messages made so far (mod 2**32)
        self._max = max_message

    def messages(self, records: Iterable[tuple[int, bytes]], export_time: int,
                 templates: bool = False) -> list[tuple[bytes, int]]:
        """(message, data records in it) for (family, record) pairs, in their order."""
        out = []
        parts: list[bytes] = []
        size = HEADER.size
        count = 0
        current: list[bytes] = []  # the open data set's records
        current_id = None
        if templates:
            parts.append(template_set())
            size += len(parts[0])

        def close_set():
            nonlocal current, current_id
            if current:
                body = b"".join(current)
                parts.append(SET_HEADER.pack(current_id, SET_HEADER.size + len(body)) + body)
            current, current_id = [], None

        def finish():
            nonlocal parts, size, count
            close_set()
            if parts:
                body = b"".join(parts)
                out.append((HEADER.pack(VERSION, HEADER.size + len(body), export_time,
                                        self.sequence, self.domain) + body, count))
                self.sequence = (self.sequence + count) % (1 << 32)
            parts, size, count = [], HEADER.size, 0

        for family, record in records:
            set_id = TEMPLATE_IDS[family]
            grow = len(record) + (SET_HEADER.size if set_id != current_id else 0)
            if size + grow > self._max:
                finish()
                grow = len(record) + SET_HEADER.size
            if set_id != current_id:
                close_set()
                current_id = set_id
            current.append(record)
            size += grow
            count += 1
        finish()
        return out


@dataclass
class ExportCounts:
    records: int = 0  # data records in messages the socket took
    messages: int = 0
    errors: int = 0  # messages that could not be sent (refused, unreachable, no buffer)
    unsent: int = 0  # the records in those


class Exporter:
    """A UDP socket to one collector. A send error is counted, never raised: a collector
    that is down or goes away must not stop the monitoring."""

    def __init__(self, host: str, port: int, epoch_ms: Callable[[int], int],
                 domain: int = DEFAULT_DOMAIN, template_every: float = TEMPLATE_EVERY):
        self.counts = ExportCounts()
        self._encoder = Encoder(domain)
        self._epoch_ms = epoch_ms
        self._template_every = template_every
        self._templates_due = 0.0  # monotonic time the templates are next sent
        self._address = endpoint.sockaddr(host, port)
        family = socket.AF_INET6 if len(self._address) == 4 else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._connected = False
        self._connect()

    def _connect(self) -> bool:
        """Connected (once): a collector's ICMP refusals then come back as send errors.
        No route yet (or ever) is no reason to stop monitoring: sends count it."""
        if not self._connected:
            try:
                self._sock.connect(self._address)
                self._connected = True
            except OSError:
                pass
        return self._connected

    def send(self, records: list) -> None:
        now = time.monotonic()
        templates = now >= self._templates_due
        if not records and not templates:
            return
        if templates:
            self._templates_due = now + self._template_every
        pairs = sorted((record_bytes(r, self._epoch_ms) for r in records),
                       key=lambda p: p[0])
        connected = self._connect()
        for message, count in self._encoder.messages(pairs, int(time.time()), templates):
            try:
                if not connected:
                    raise OSError("not connected")
                self._sock.send(message)
            except OSError:  # refused (ICMP unreachable came back), no route, no buffer
                self.counts.errors += 1
                self.counts.unsent += count
                if templates:
                    self._templates_due = 0.0  # the collector may have missed them
                continue
            self.counts.messages += 1
            self.counts.records += count

    def close(self) -> None:
        self._sock.close()


class IpfixSink(Sink):
    """--ipfix: every flow record to the collector (the templates when they are due)."""

    wants = Delivery.FLOWS

    @classmethod
    def wanted(cls, settings) -> bool:
        return settings.ipfix is not None

    def __init__(self, ctx: Context):
        host, port, domain = ctx.settings.ipfix
        clock = ctx.clock
        self._exporter = Exporter(host, port, lambda ns: int(clock.epoch(ns) * 1000), domain)
        self._where = endpoint.display(host, port)

    def flows(self, records, final=False) -> int:
        self._exporter.send(records)
        return 0

    def close(self) -> None:
        self._exporter.close()

    def report(self, summary) -> None:
        summary.exported = (self._where, self._exporter.counts)
