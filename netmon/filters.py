"""What the user asked to see: parsed, validated, and compiled two ways.

A FilterSpec compiles to the kernel's ``struct nm_config`` (its values; the one
writer of the struct is kernel/config.py) and to a Python predicate over Events. The two must agree; the tests hold
them against each other on real packets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Union

from netmon import protocols
from netmon.events import Event
from netmon.kernel.abi import ALT

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


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
    # What its `ip broadcast` compares with (options.py: the interface's, a file's 0)
    netmask: int = 0xFFFFFFFF  # libpcap's PCAP_NETMASK_UNKNOWN

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

    def one_way(self) -> bool:
        """Whether an option holds for one way of a connection only (a source or a
        destination): its answers, the other way, do not match it."""
        return bool(self.src or self.dst or self.sport or self.dport)

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

    def kernel_filters(self) -> dict:
        """What struct nm_config takes of this spec (kernel/config.py packs it): the
        options' values, and whether an expression is spliced in and what it reads."""
        values: dict = {name: getattr(self, name) for name in OPTIONS}
        if self.expression is not None:
            from netmon import expression

            values.update(expression=True,
                          expr_len=expression.reads_the_length(self.expression, self.netmask),
                          expr_if=expression.reads_the_interface(self.expression,
                                                                 self.netmask))
        return values

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


def _nets_text(nets: tuple) -> str:
    return " or ".join(_net_text(n) for n in nets)


def _net_text(net: Network) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _in(addr: str, net: Network) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.version == net.version and ip in net
