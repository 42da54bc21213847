"""What the user asked to see: parsed, validated, and compiled two ways.

A FilterSpec compiles to the kernel's ``struct nm_config`` (the one writer of
it) and to a Python predicate over Events. The two must agree; the tests hold
them against each other on real packets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Union

from netmon import protocols
from netmon.events import Event
from netmon.kernel.abi import (CONFIG, M_DADDR, M_DPORT, M_HOST, M_PORT, M_PROTO, M_SADDR,
                               M_SPORT, M_VLAN)

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
CONFIG_FORMAT = CONFIG  # struct nm_config (kernel/abi.py), which kernel_config() alone writes
CONFIG_SIZE = CONFIG.size


def parse_network(text: str) -> Network:
    """An address or CIDR prefix, IPv4 or IPv6. Host bits set are an error."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise ValueError(f"'{text}' has host bits set beyond the prefix length") from None
        raise ValueError(f"'{text}' is not an IP address or CIDR prefix") from None


def _parse_int(text: str | int, what: str, low: int, high: int) -> int:
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise ValueError(f"'{text}' is not a {what}") from None
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of range {low}-{high}")
    return value


def parse_vlan(text: str | int) -> int:
    # 0 marks a priority-only tag (no VLAN) and 4095 is reserved.
    return _parse_int(text, "VLAN id", 1, 4094)


def parse_port(text: str | int) -> int:
    return _parse_int(text, "port number", 0, 65535)


@dataclass(frozen=True)
class FilterSpec:
    """Every filter given must hold (AND). None means "any".

    ``host`` and ``port`` match either direction, like tcpdump's ``host`` and
    ``port``; ``vlan`` is the outer 802.1Q/802.1ad id.
    """

    protocol: int | None = None
    src: Network | None = None
    dst: Network | None = None
    sport: int | None = None
    dport: int | None = None
    host: Network | None = None
    port: int | None = None
    vlan: int | None = None
    expression: str | None = None  # tcpdump's filter language (netmon/expression/)

    def __post_init__(self):
        has_port = any(p is not None for p in (self.sport, self.dport, self.port))
        if has_port and self.protocol is not None and self.protocol not in protocols.WITH_PORTS:
            raise ValueError(
                f"port filters need a protocol with ports (tcp, udp or sctp), "
                f"not {protocols.name(self.protocol).lower()}"
            )

    def impossible(self) -> str | None:
        """Why no packet can match, where the options say so (the CLI refuses such a
        spec); None if some packet can. A packet is of one family, so prefixes of two
        can never all hold."""
        nets = [(name, n) for name, n in (("--src-ip", self.src), ("--dst-ip", self.dst),
                                          ("--host", self.host)) if n is not None]
        for (a, na), (b, nb) in zip(nets, nets[1:]):
            if na.version != nb.version:
                return (f"{a} {na} and {b} {nb} are IPv{na.version} and IPv{nb.version}: "
                        f"no packet matches both")
        return None

    # -- the kernel side -------------------------------------------------

    def kernel_config(self, snaplen: int = 0, cap_events: bool = False,
                      epoch_ns: int = 0, flows: bool = False, quiet: bool = False,
                      owner: int = 0) -> bytes:
        """The bytes of struct nm_config that make the program apply this spec.

        Capture (netmon/capture.py): ``snaplen``, the most bytes of each matching
        packet its record keeps (0: no capture); ``cap_events``, records carry the
        event too; ``epoch_ns``, added to the kernel's monotonic stamps for pcapng's.
        ``flows`` (netmon/flows.py): packets are counted in the flow table instead.
        ``quiet``: packets are only counted (the counters, --metrics); nothing is sent.
        ``owner``: the pid of the netmon that attaches it (a leftover is told by it).
        A filter expression, if any, is spliced into the program (kernel/splice.py).
        """
        match = 0
        for value, bit in ((self.protocol, M_PROTO), (self.src, M_SADDR), (self.dst, M_DADDR),
                           (self.sport, M_SPORT), (self.dport, M_DPORT), (self.host, M_HOST),
                           (self.port, M_PORT), (self.vlan, M_VLAN)):
            if value is not None:
                match |= bit
        return CONFIG_FORMAT.pack(
            *_prefix_fields(self.src), *_prefix_fields(self.dst), *_prefix_fields(self.host),
            self.sport or 0, self.dport or 0, self.port or 0, self.vlan or 0,
            match, self.protocol or 0, snaplen, cap_events, flows, quiet,
            self.expression is not None, epoch_ns, owner,
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
        if self.host is not None and not (_in(ev.src, self.host) or _in(ev.dst, self.host)):
            return False
        if self.port is not None and self.port not in (ev.sport, ev.dport):
            return False
        if self.vlan is not None and ev.vlan != self.vlan:
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
        if self.host is not None:
            rows.append(("Host (either direction)", _net_text(self.host)))
        if self.port is not None:
            rows.append(("Port (either direction)", str(self.port)))
        if self.vlan is not None:
            rows.append(("VLAN", str(self.vlan)))
        if self.expression is not None:
            rows.append(("Expression", self.expression))
        return rows


def _prefix_fields(net: Network | None) -> tuple[bytes, bytes, int]:
    """struct nm_prefix's net, mask and family."""
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
