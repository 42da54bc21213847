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
from netmon.kernel.abi import (ALT, CONFIG, EXPR_IF, EXPR_LEN, EXPR_ON, M_DADDR, M_DPORT, M_HOST,
                               M_PORT, M_PROTO, M_SADDR, M_SPORT, M_VLAN)

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
    """Every option given must hold (AND); within one option, any of its values (OR),
    as tcpdump's ``port 53 or port 80``. An empty tuple means "any".

    ``host`` and ``port`` match either direction, like tcpdump's ``host`` and
    ``port``; ``vlan`` is the outer 802.1Q/802.1ad id. A single value may be given
    for any option; it becomes a tuple of one.
    """

    protocol: tuple[int, ...] = ()
    src: tuple[Network, ...] = ()
    dst: tuple[Network, ...] = ()
    sport: tuple[int, ...] = ()
    dport: tuple[int, ...] = ()
    host: tuple[Network, ...] = ()
    port: tuple[int, ...] = ()
    vlan: tuple[int, ...] = ()
    expression: str | None = None  # tcpdump's filter language (netmon/expression/)

    def __post_init__(self):
        for name in OPTIONS:
            value = getattr(self, name)
            values = () if value is None else tuple(value) if isinstance(value, (tuple, list)) \
                else (value,)
            values = tuple(dict.fromkeys(values))  # each once, in the order given
            if len(values) > ALT:
                raise ValueError(f"{OPTIONS[name]} takes at most {ALT} values, not {len(values)}")
            object.__setattr__(self, name, values)
        if self.sport or self.dport or self.port:
            without = [p for p in self.protocol if p not in protocols.WITH_PORTS]
            if without:
                raise ValueError(
                    f"port filters need a protocol with ports (tcp, udp or sctp), "
                    f"not {protocols.name(without[0]).lower()}"
                )

    @property
    def has_options(self) -> bool:
        """Whether any filter option is given (the kernel's nm_config.match is not 0)."""
        return any(getattr(self, name) for name in OPTIONS)

    def impossible(self) -> str | None:
        """Why no packet can match, where the options say so (the CLI refuses such a
        spec); None if some packet can. A packet is of one family, so address options
        that share no family can never all hold."""
        nets = [(name, n) for name, n in (("--src-ip", self.src), ("--dst-ip", self.dst),
                                          ("--host", self.host)) if n]
        for (a, na), (b, nb) in zip(nets, nets[1:]):
            if not {n.version for n in na} & {n.version for n in nb}:
                return (f"{a} {_nets_text(na)} and {b} {_nets_text(nb)} are "
                        f"IPv{na[0].version} and IPv{nb[0].version}: no packet matches both")
        if len(nets) == 3 and not set.intersection(*({n.version for n in x} for _, x in nets)):
            return "--src-ip, --dst-ip and --host share no address family: no packet matches all"
        return None

    # -- the kernel side -------------------------------------------------

    def kernel_config(self, snaplen: int = 0, cap_events: bool = False,
                      epoch_ns: int = 0, flows: bool = False, quiet: bool = False,
                      owner: int = 0, replay: bool = False, any_if: bool = False,
                      netns: int = 0) -> bytes:
        """The bytes of struct nm_config that make the program apply this spec.

        Capture (netmon/capture.py): ``snaplen``, the most bytes of each matching
        packet its record keeps (0: no capture); ``cap_events``, records carry the
        event too; ``epoch_ns``, added to the kernel's monotonic stamps for pcapng's.
        ``flows`` (netmon/flows.py): packets are counted in the flow table instead.
        ``quiet``: packets are only counted (the counters, --metrics); nothing is sent.
        ``owner``: the pid of the netmon that attaches it (a leftover is told by it).
        ``replay``: -r, each frame's wire length told apart (MonitorProgram.wire_len).
        Drops: ``any_if``, on every interface, not only the registered ones; ``netns``,
        the inode of the network namespace whose drops count (0: every one's).
        A filter expression, if any, is spliced into the program (kernel/splice.py).
        """
        match = 0
        for value, bit in ((self.protocol, M_PROTO), (self.src, M_SADDR), (self.dst, M_DADDR),
                           (self.sport, M_SPORT), (self.dport, M_DPORT), (self.host, M_HOST),
                           (self.port, M_PORT), (self.vlan, M_VLAN)):
            if value:
                match |= bit
        prefixes = [f for nets in (self.src, self.dst, self.host)
                    for net in _padded(nets, None) for f in _prefix_fields(net)]
        numbers = [n for values in (self.sport, self.dport, self.port, self.vlan)
                   for n in _padded(values, 0)]
        counts = [len(v) for v in (self.src, self.dst, self.host, self.sport, self.dport,
                                   self.port, self.vlan, self.protocol)]
        return CONFIG_FORMAT.pack(
            *prefixes, *numbers, match, *_padded(self.protocol, 0), *counts, replay, any_if,
            snaplen, cap_events, flows, quiet, _expression_flags(self.expression), epoch_ns,
            owner, netns,
        )

    # -- the Python side -------------------------------------------------

    def matches(self, ev: Event) -> bool:
        """The options' verdict on an event (an expression needs the frame: not here)."""
        if self.protocol and ev.ipproto not in self.protocol:
            return False
        if self.src and not any(_in(ev.src, n) for n in self.src):
            return False
        if self.dst and not any(_in(ev.dst, n) for n in self.dst):
            return False
        if self.sport and ev.sport not in self.sport:
            return False
        if self.dport and ev.dport not in self.dport:
            return False
        if self.host and not any(_in(ev.src, n) or _in(ev.dst, n) for n in self.host):
            return False
        if self.port and ev.sport not in self.port and ev.dport not in self.port:
            return False
        if self.vlan and ev.vlan not in self.vlan:
            return False
        return True

    def describe(self) -> list[tuple[str, str]]:
        """(label, value) pairs of the active filters, for the banner."""
        rows = []
        for label, values, text in (
                ("Protocol", self.protocol, lambda p: protocols.name(p).lower()),
                ("Source IP", self.src, _net_text), ("Destination IP", self.dst, _net_text),
                ("Source port", self.sport, str), ("Destination port", self.dport, str),
                ("Host (either direction)", self.host, _net_text),
                ("Port (either direction)", self.port, str), ("VLAN", self.vlan, str)):
            if values:
                rows.append((label, " or ".join(text(v) for v in values)))
        if self.expression is not None:
            rows.append(("Expression", self.expression))
        return rows


# The options, by field: their names on the command line.
OPTIONS = {"protocol": "--protocol", "src": "--src-ip", "dst": "--dst-ip",
           "sport": "--src-port", "dport": "--dst-port", "host": "--host", "port": "--port",
           "vlan": "--vlan"}


def _expression_flags(text: str | None) -> int:
    """nm_config.expr: NM_EXPR_ON, NM_EXPR_LEN if it reads the wire length, NM_EXPR_IF
    if the interface or direction: the hooks fill in only what it reads."""
    if text is None:
        return 0
    from netmon import expression

    return (EXPR_ON | (EXPR_LEN if expression.reads_the_length(text) else 0)
            | (EXPR_IF if expression.reads_the_interface(text) else 0))


def _padded(values: tuple, empty) -> list:
    return list(values) + [empty] * (ALT - len(values))


def _nets_text(nets: tuple) -> str:
    return " or ".join(_net_text(n) for n in nets)


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
