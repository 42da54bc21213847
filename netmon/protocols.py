"""IP protocol numbers and their IANA keywords, as netmon prints and parses them.

A fixed table, not /etc/protocols: that file is missing on slim hosts.
"""

from __future__ import annotations

# IANA "Assigned Internet Protocol Numbers" keywords as printed (acronyms in
# capitals, IPv6's own in IANA's spelling); 4 ("IPv4", IP in IP) under the
# name tcpdump prints for it, 89 under the name people know (IANA: OSPFIGP).
NAMES: dict[int, str] = {
    0: "HOPOPT", 1: "ICMP", 2: "IGMP", 4: "IPIP", 6: "TCP", 8: "EGP", 9: "IGP",
    17: "UDP", 27: "RDP", 33: "DCCP", 41: "IPv6", 43: "IPv6-Route", 44: "IPv6-Frag",
    46: "RSVP", 47: "GRE", 50: "ESP", 51: "AH", 58: "ICMPv6", 59: "IPv6-NoNxt",
    60: "IPv6-Opts", 88: "EIGRP", 89: "OSPF", 97: "ETHERIP", 98: "ENCAP",
    103: "PIM", 108: "IPCOMP", 112: "VRRP", 115: "L2TP", 132: "SCTP",
    135: "MOBILITY-HEADER", 136: "UDPLITE", 137: "MPLS-IN-IP", 143: "ETHERNET",
}

TCP, UDP, ICMP, ICMPV6, SCTP = 6, 17, 1, 58, 132

# Protocols whose events carry ports.
WITH_PORTS = frozenset({TCP, UDP, SCTP})

_BY_NAME = {name.lower(): num for num, name in NAMES.items()}
_BY_NAME.update({"icmp6": ICMPV6, "ipv6-icmp": ICMPV6, "ipencap": 4, "ospfigp": 89})


def name(num: int) -> str:
    """How an event's protocol is printed: its keyword, or its number."""
    return NAMES.get(num) or str(num)


def parse(text: str) -> int | None:
    """A --protocol value: a keyword or a number 0-255; None for "all"."""
    key = text.strip().lower()
    if key in ("all", "any"):
        return None
    if key in _BY_NAME:
        return _BY_NAME[key]
    if key.isdigit() and 0 <= int(key) <= 255:
        return int(key)
    raise ValueError(f"unknown protocol '{text}' (use tcp, udp, icmp, all, a name like gre or a number 0-255)")
