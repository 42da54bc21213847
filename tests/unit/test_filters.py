import pytest

from netmon import filters, protocols
from netmon.events import make_event as Event
from netmon.filters import FilterSpec

TCP_EV = Event(0, 1, 1248, 4, 6, "192.168.1.100", "93.184.216.34", 54321, 443)
UDP_EV = Event(0, 1, 64, 4, 17, "192.168.1.100", "8.8.8.8", 54321, 53)
ICMP_EV = Event(0, 1, 84, 4, 1, "192.168.1.100", "192.168.1.1", icmp_type=8, icmp_code=0)
V6_EV = Event(0, 1, 86, 6, 6, "2001:db8::1", "2001:db8::2", 443, 51000)
VLAN_EV = Event(0, 1, 68, 4, 17, "10.0.0.1", "10.0.0.2", 5353, 53, vlan=100)


def spec(**kw):
    return FilterSpec(**kw)


def net(text):
    return filters.parse_network(text)


@pytest.mark.parametrize("text,num", [
    ("tcp", 6), ("UDP", 17), ("icmp", 1), ("all", None), ("gre", 47), ("132", 132),
    ("icmp6", 58), ("icmpv6", 58),
])
def test_protocol_names_and_numbers(text, num):
    assert protocols.parse(text) == num


@pytest.mark.parametrize("bad", ["xyz", "256", "-1", ""])
def test_bad_protocol(bad):
    with pytest.raises(ValueError):
        protocols.parse(bad)


@pytest.mark.parametrize("bad", ["1.2.3", "300.1.1.1", "10.0.0.1/33", "10.0.0.1/8", "host"])
def test_bad_networks(bad):
    with pytest.raises(ValueError):
        filters.parse_network(bad)


@pytest.mark.parametrize("bad", ["x", "0", "4095", "-1", "1.5"])
def test_bad_vlans(bad):
    with pytest.raises(ValueError):
        filters.parse_vlan(bad)


@pytest.mark.parametrize("bad", ["x", "65536", "-1", "1.5"])
def test_bad_ports(bad):
    with pytest.raises(ValueError):
        filters.parse_port(bad)


def test_port_filter_needs_a_protocol_with_ports():
    with pytest.raises(ValueError, match="icmp"):
        spec(protocol=1, dport=53)
    with pytest.raises(ValueError, match="gre"):
        spec(protocol=47, port=53)
    spec(protocol=17, dport=53)
    spec(dport=53)


@pytest.mark.parametrize("fs,matching", [
    (spec(), {"tcp", "udp", "icmp", "v6", "vlan"}),
    (spec(protocol=6), {"tcp", "v6"}),
    (spec(protocol=1), {"icmp"}),
    (spec(src=net("192.168.1.100")), {"tcp", "udp", "icmp"}),
    (spec(src=net("192.168.0.0/16")), {"tcp", "udp", "icmp"}),
    (spec(dst=net("8.8.8.8")), {"udp"}),
    (spec(src=net("192.168.1.100"), dst=net("8.8.8.8")), {"udp"}),
    (spec(sport=54321), {"tcp", "udp"}),
    (spec(protocol=17), {"udp", "vlan"}),
    (spec(dport=443), {"tcp"}),
    (spec(protocol=6, dport=443, dst=net("1.1.1.1")), set()),
    (spec(protocol=6, src=net("192.168.1.100"), dport=22), set()),
    (spec(src=net("2001:db8::/32")), {"v6"}),
    (spec(src=net("0.0.0.0/0")), {"tcp", "udp", "icmp", "vlan"}),
    (spec(host=net("8.8.8.8")), {"udp"}),
    (spec(host=net("192.168.1.100")), {"tcp", "udp", "icmp"}),
    (spec(host=net("2001:db8::2")), {"v6"}),
    (spec(port=443), {"tcp", "v6"}),
    (spec(port=54321), {"tcp", "udp"}),
    (spec(port=51000, protocol=6), {"v6"}),
    (spec(vlan=100), {"vlan"}),
    (spec(vlan=100, port=53), {"vlan"}),
])
def test_python_predicate(fs, matching):
    evs = {"tcp": TCP_EV, "udp": UDP_EV, "icmp": ICMP_EV, "v6": V6_EV, "vlan": VLAN_EV}
    assert {name for name, ev in evs.items() if fs.matches(ev)} == matching


def test_repeated_values_mean_or():
    s = spec(port=(53, 80), protocol=(6, 17), host=(net("10.0.0.0/8"), net("fd00::/8")))
    assert s.describe() == [("Protocol", "tcp or udp"),
                            ("Host (either direction)", "10.0.0.0/8 or fd00::/8"),
                            ("Port (either direction)", "53 or 80")]
    assert s.port == (53, 80) and spec(port=(53, 53)).port == (53,)
    with pytest.raises(ValueError, match="at most 8 values"):
        spec(port=tuple(range(9)))
    with pytest.raises(ValueError, match="not icmp"):
        spec(protocol=(6, 1), port=53)
    assert spec(src=(net("10.0.0.0/8"), net("fd00::/8")), dst=net("fd00::1")).impossible() is None
    assert "no packet matches both" in spec(src=net("10.0.0.0/8"), dst=net("fd00::1")).impossible()


def test_describe_for_the_banner():
    assert spec(protocol=6, dport=443).describe() == [("Protocol", "tcp"),
                                                      ("Destination port", "443")]
    assert spec(src=net("10.0.0.0/8"), dst=net("8.8.8.8"), sport=22).describe() == [
        ("Source IP", "10.0.0.0/8"), ("Destination IP", "8.8.8.8"), ("Source port", "22")]
