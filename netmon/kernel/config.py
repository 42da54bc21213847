"""struct nm_config: the one writer of the program's .rodata, from plain values.

Beside the ABI mirrors (abi.CONFIG is its layout): what the filter options ask for
(FilterSpec.kernel_filters() gives them), and what the run asks for (a snaplen, flows,
quiet, the owner's pid, replay, the drops' namespace). The loader sets these bytes as
the .rodata's initial value (MonitorProgram(config=...)).
"""

from __future__ import annotations

from typing import Mapping

from netmon.kernel.abi import (ALT, CONFIG, EXPR_IF, EXPR_LEN, EXPR_ON, M_DADDR, M_DPORT, M_HOST,
                               M_PORT, M_PROTO, M_SADDR, M_SPORT, M_VLAN)

# The filter options, in struct nm_config's order of their match bits.
OPTION_BITS = (("protocol", M_PROTO), ("src", M_SADDR), ("dst", M_DADDR), ("sport", M_SPORT),
               ("dport", M_DPORT), ("host", M_HOST), ("port", M_PORT), ("vlan", M_VLAN))


def pack(filters: Mapping | None = None, *, snaplen: int = 0, cap_events: bool = False,
         epoch_ns: int = 0, flows: bool = False, quiet: bool = False, owner: int = 0,
         replay: bool = False, any_if: bool = False, netns: int = 0, tcp: int = 0,
         rtt_gap_us: int = 0) -> bytes:
    """The bytes of struct nm_config.

    ``filters``: the options' values by name (OPTION_BITS; each a tuple of at most ALT:
    ip_network-like prefixes for src, dst and host, numbers for the rest), and the
    expression's: ``expression`` (one is spliced in, kernel/splice.py), ``expr_len``
    (it reads the wire length), ``expr_if`` (the interface or direction): the hooks fill
    in only what it reads.
    Capture (sources/records.py): ``snaplen``, the most bytes of each matching packet its
    record keeps (0: no capture); ``cap_events``, records carry the event too;
    ``epoch_ns``, added to the kernel's monotonic stamps for pcapng's.
    ``flows`` (netmon/flows.py): packets are counted in the flow table instead.
    ``quiet``: packets are only counted (the counters, --metrics); nothing is sent.
    ``owner``: the pid of the netmon that attaches it (a leftover is told by it).
    ``replay``: -r, each frame's wire length told apart (MonitorProgram.wire_len).
    Drops: ``any_if``, on every interface, not only the registered ones; ``netns``,
    the inode of the network namespace whose drops count (0: every one's).
    TCP health (netmon rtt): ``tcp``, abi.TCP_MEASURE and TCP_EVENTS; ``rtt_gap_us``, the
    least time between the starts of two samples of one connection's way.
    """
    f = dict(filters or {})
    values = {name: tuple(f.get(name, ())) for name, _ in OPTION_BITS}
    match = 0
    for name, bit in OPTION_BITS:
        if values[name]:
            match |= bit
    prefixes = [field for name in ("src", "dst", "host")
                for net in _padded(values[name], None) for field in _prefix_fields(net)]
    numbers = [n for name in ("sport", "dport", "port", "vlan")
               for n in _padded(values[name], 0)]
    counts = [len(values[name]) for name in ("src", "dst", "host", "sport", "dport", "port",
                                             "vlan", "protocol")]
    expr = (EXPR_ON | (EXPR_LEN if f.get("expr_len") else 0)
            | (EXPR_IF if f.get("expr_if") else 0)) if f.get("expression") else 0
    return CONFIG.pack(
        *prefixes, *numbers, match, *_padded(values["protocol"], 0), *counts, replay, any_if,
        snaplen, cap_events, flows, quiet, expr, tcp, rtt_gap_us, epoch_ns, owner, netns,
    )


def _padded(values: tuple, empty) -> list:
    return list(values) + [empty] * (ALT - len(values))


def _prefix_fields(net) -> tuple[bytes, bytes, int]:
    """struct nm_prefix's net, mask and family."""
    if net is None:
        return b"", b"", 0
    return (
        net.network_address.packed.ljust(16, b"\0"),
        net.netmask.packed.ljust(16, b"\0"),
        net.version,
    )
