"""What the user asked to see: parsed, validated, and compiled two ways.

A FilterSpec compiles to the kernel's ``struct nm_config`` (the one writer of
it) and to a Python predicate over Events. The two must agree; the tests hold
them against each other on real packets.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Union

from netmon import protocols
from netmon.events import Event

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Mirror of struct nm_config (bpf/xdp_monitor.h), native byte order.
CONFIG_FORMAT = struct.Struct("=16s16s16s16sHHBBBB")
CONFIG_SIZE = CONFIG_FORMAT.size

# nm_config.match
M_PROTO = 0x01
M_SADDR = 0x02
M_DADDR = 0x04
M_SPORT = 0x08
M_DPORT = 0x10


def parse_network(text: str) -> Network:
    """An address or CIDR prefix, IPv4 or IPv6. Host bits set are an error."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise ValueError(f"'{text}' has host bits set beyond the prefix length") from None
        raise ValueError(f"'{text}' is not an IP address or CIDR prefix") from None


def parse_port(text: str | int) -> int:
    try:
        port = int(str(text).strip(), 10)
    except ValueError:
        raise ValueError(f"'{text}' is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return port


@dataclass(frozen=True)
class FilterSpec:
    """Every filter given must hold (AND). None means "any"."""

    protocol: int | None = None
    src: Network | None = None
    dst: Network | None = None
    sport: int | None = None
    dport: int | None = None

    def __post_init__(self):
        if (self.sport is not None or self.dport is not None) and (
            self.protocol is not None and self.protocol not in protocols.WITH_PORTS
        ):
            raise ValueError(
                f"port filters need a protocol with ports (tcp, udp or sctp), "
                f"not {protocols.name(self.protocol).lower()}"
            )

    # -- the kernel side -------------------------------------------------

    def kernel_config(self) -> bytes:
        """The bytes of struct nm_config that make the XDP program apply this spec."""
        match = 0
        if self.protocol is not None:
            match |= M_PROTO
        if self.src is not None:
            match |= M_SADDR
        if self.dst is not None:
            match |= M_DADDR
        if self.sport is not None:
            match |= M_SPORT
        if self.dport is not None:
            match |= M_DPORT
        saddr, smask, sfam = _net_fields(self.src)
        daddr, dmask, dfam = _net_fields(self.dst)
        return CONFIG_FORMAT.pack(
            saddr, smask, daddr, dmask,
            self.sport or 0, self.dport or 0,
            sfam, dfam, self.protocol or 0, match,
        )

    # -- the Python side -------------------------------------------------

    def matches(self, ev: Event) -> bool:
        if self.protocol is not None and ev.ipproto != self.protocol:
            return False
        if self.src is not None and not _in(ev.src, self.src):
            return False
        if self.dst is not None and not _in(ev.dst, self.dst):
            return False
        if self.sport is not None and ev.sport != self.sport:
            return False
        if self.dport is not None and ev.dport != self.dport:
            return False
        return True

    def describe(self) -> list[tuple[str, str]]:
        """(label, value) pairs of the active filters, for the banner."""
        rows = []
        if self.protocol is not None:
            rows.append(("Protocol", protocols.name(self.protocol).lower()))
        if self.src is not None:
            rows.append(("Source IP", _net_text(self.src)))
        if self.dst is not None:
            rows.append(("Destination IP", _net_text(self.dst)))
        if self.sport is not None:
            rows.append(("Source port", str(self.sport)))
        if self.dport is not None:
            rows.append(("Destination port", str(self.dport)))
        return rows


def _net_fields(net: Network | None) -> tuple[bytes, bytes, int]:
    if net is None:
        return b"", b"", 0
    return (
        net.network_address.packed.ljust(16, b"\0"),
        net.netmask.packed.ljust(16, b"\0"),
        net.version,
    )


def _net_text(net: Network) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _in(addr: str, net: Network) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.version == net.version and ip in net
