"""struct nm_config as kernel/config.py packs it, from a FilterSpec's values and the run's."""

from __future__ import annotations

import ipaddress

from netmon.filters import FilterSpec as spec
from netmon.filters import parse_network as net
from netmon.kernel import abi, config


def test_the_layout():
    cfg = config.pack(
        spec(protocol=6, src=net("192.168.0.0/16"), dport=(443, 8443),
             host=net("2001:db8::/32"), port=22, vlan=100, expression="tcp").kernel_filters(),
        snaplen=1500, cap_events=True, epoch_ns=7 << 60, flows=True, quiet=True, owner=4242,
        replay=True, any_if=True, netns=77, tcp=3, rtt_gap_us=100_000)
    alt = abi.ALT
    assert len(cfg) == abi.CONFIG.size == 3 * alt * 36 + 4 * alt * 2 + 2 + 2 * alt + 6 + 32
    fields = abi.CONFIG.unpack(cfg)
    prefixes = [fields[i:i + 3] for i in range(0, 3 * 3 * alt, 3)]
    src, dst, host = prefixes[:alt], prefixes[alt:2 * alt], prefixes[2 * alt:]
    rest = fields[9 * alt:]
    sport, dport, port, vlan = (rest[i * alt:(i + 1) * alt] for i in range(4))
    rest = rest[4 * alt:]
    match, proto, counts = rest[0], rest[1:1 + alt], rest[1 + alt:1 + 2 * alt]
    replay, any_if, snaplen, cap_events, flows, quiet, expr, tcp, gap, epoch_ns, owner, \
        netns = rest[1 + 2 * alt:]
    assert (replay, any_if, netns, tcp, gap) == (1, 1, 77, 3, 100_000)
    assert (snaplen, cap_events, flows, quiet, expr, epoch_ns, owner) == (
        1500, 1, 1, 1, 1, 7 << 60, 4242)
    snet, smask, sfam = src[0]
    assert snet[:4] == ipaddress.ip_address("192.168.0.0").packed and snet[4:] == bytes(12)
    assert smask == b"\xff\xff" + bytes(14) and sfam == 4
    assert all(p == (bytes(16), bytes(16), 0) for p in src[1:] + dst)
    assert host[0] == (ipaddress.ip_address("2001:db8::").packed, b"\xff" * 4 + bytes(12), 6)
    assert (sport, dport[:3], port[:2], vlan[:2], proto[:2]) == (
        (0,) * alt, (443, 8443, 0), (22, 0), (100, 0), (6, 0))
    # src, dst, host, sport, dport, port, vlan, protocol: how many values each
    assert counts == (1, 0, 1, 0, 2, 1, 1, 1)
    assert match == (abi.M_PROTO | abi.M_SADDR | abi.M_DPORT | abi.M_HOST
                     | abi.M_PORT | abi.M_VLAN)


def test_an_expression_says_what_it_reads():
    """The hooks fill in the length (XDP asks a helper) and the interface only for an
    expression that reads them."""
    expr_at = -6  # nm_config.expr: then tcp, rtt_gap_us, epoch_ns, owner, netns

    def flags(text):
        return abi.CONFIG.unpack(config.pack(spec(expression=text).kernel_filters()))[expr_at]
    on, length, interface = abi.EXPR_ON, abi.EXPR_LEN, abi.EXPR_IF
    assert flags("tcp") == on
    for text in ("greater 100", "len < 64", "tcp and less 1000"):
        assert flags(text) == on | length
    for text in ("inbound", "ifindex 3", "outbound and greater 100"):
        assert flags(text) & (on | interface) == on | interface
    assert flags("outbound and greater 100") == on | length | interface
    assert abi.CONFIG.unpack(config.pack(spec().kernel_filters()))[expr_at] == 0


def test_empty_spec_turns_every_filter_off():
    assert config.pack(spec().kernel_filters()) == config.pack() == bytes(abi.CONFIG.size)
