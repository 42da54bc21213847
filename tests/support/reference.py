"""The reference dissector the XDP program is held against.

Headers are parsed with scapy, independently of the C code; what makes an
event is decided by netmon's rules, written here from the issue, not from
bpf/xdp_monitor.bpf.c:

- up to two VLAN tags (802.1Q, 802.1ad); the outer id is the event's vlan
  (an id of 0 is a priority tag: no VLAN);
- an IPv4 event needs a whole IPv4 header: version 4, ihl >= 5, ihl*4 bytes;
- an IPv6 event needs the 40-byte header with version 6; then hop-by-hop,
  routing, fragment, destination options and AH headers are walked, 8 at most;
  the protocol is the first other header, or the extension header where the
  walk stopped (cut short, or a ninth);
- ports (TCP 20, UDP 8, SCTP 12 bytes), TCP flags, and ICMP/ICMPv6 type and
  code (4 bytes) come only with the whole fixed header, and never from a
  later fragment or a stopped walk;
- anything else makes no event; the length is the whole frame.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Dot1Q
from scapy.layers.sctp import SCTP

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
EXT_GENERIC = {0, 43, 60}  # hop-by-hop, routing, destination options: (len+1)*8
EXT_AH, EXT_FRAGMENT = 51, 44
EXT_ALL = EXT_GENERIC | {EXT_AH, EXT_FRAGMENT}
EXT_MAX = 8


@dataclass(frozen=True)
class Expected:
    length: int
    family: int
    ipproto: int
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int | None = None
    dport: int | None = None
    vlan: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    tcp_flags: int | None = None
    fragment: bool = False


def of_event(ev) -> Expected:
    """An Event in the reference's terms, to compare the two."""
    return Expected(ev.length, ev.family, ev.ipproto, ipaddress.ip_address(ev.src),
                    ipaddress.ip_address(ev.dst), ev.sport, ev.dport, ev.vlan, ev.icmp_type,
                    ev.icmp_code, ev.tcp_flags, ev.fragment)


def _walk_ipv6(frame: bytes, pos: int, nh: int) -> tuple[int, int, bool, bool]:
    """(protocol, transport offset, fragment?, transport header present?)"""
    fragment = False
    for _ in range(EXT_MAX):
        if nh in EXT_GENERIC or nh == EXT_AH:
            if len(frame) - pos < 2:
                return nh, pos, fragment, False
            hdrlen = frame[pos + 1]
            size = (hdrlen + 2) * 4 if nh == EXT_AH else (hdrlen + 1) * 8
            if len(frame) - pos < size:
                return nh, pos, fragment, False
            nh, pos = frame[pos], pos + size
        elif nh == EXT_FRAGMENT:
            if len(frame) - pos < 8:
                return nh, pos, fragment, False
            fh = IPv6ExtHdrFragment(frame[pos:pos + 8])
            fragment = fragment or bool(fh.offset or fh.m)
            nh, pos = fh.nh, pos + 8
            if fh.offset:
                return nh, pos, fragment, False
        else:
            return nh, pos, fragment, True
    return nh, pos, fragment, nh not in EXT_ALL


def reference(frame: bytes) -> Expected | None:
    if len(frame) < 14:
        return None
    # The type/length field read raw: scapy turns values <= 1500 into 802.3 lengths,
    # which are not IP either way.
    etype = int.from_bytes(frame[12:14], "big")
    off, vlan = 14, None
    for depth in range(2):
        if etype not in (ETH_P_8021Q, ETH_P_8021AD):
            break
        if len(frame) < off + 4:
            return None
        tag = Dot1Q(frame[off:off + 4])
        if depth == 0:
            vlan = tag.vlan or None
        etype, off = tag.type, off + 4

    fields: dict = {"length": len(frame), "vlan": vlan}
    if etype == ETH_P_IP:
        if len(frame) - off < 20:
            return None
        ip = IP(frame[off:off + 20])
        if ip.version != 4 or ip.ihl < 5 or len(frame) - off < ip.ihl * 4:
            return None
        fields.update(family=4, ipproto=ip.proto, src=ipaddress.ip_address(ip.src),
                      dst=ipaddress.ip_address(ip.dst), fragment=bool(ip.flags.MF or ip.frag))
        proto, l4, has_l4 = ip.proto, off + ip.ihl * 4, ip.frag == 0
    elif etype == ETH_P_IPV6:
        if len(frame) - off < 40:
            return None
        ip6 = IPv6(frame[off:off + 40])
        if ip6.version != 6:
            return None
        proto, l4, fragment, has_l4 = _walk_ipv6(frame, off + 40, ip6.nh)
        fields.update(family=6, ipproto=proto, src=ipaddress.ip_address(ip6.src),
                      dst=ipaddress.ip_address(ip6.dst), fragment=fragment)
    else:
        return None

    rest = len(frame) - l4
    if has_l4:
        if proto == 6 and rest >= 20:
            tcp = TCP(frame[l4:l4 + 20])
            fields.update(sport=tcp.sport, dport=tcp.dport, tcp_flags=int(tcp.flags) & 0xFF)
        elif proto == 17 and rest >= 8:
            udp = UDP(frame[l4:l4 + 8])
            fields.update(sport=udp.sport, dport=udp.dport)
        elif proto == 132 and rest >= 12:
            sctp = SCTP(frame[l4:l4 + 12])
            fields.update(sport=sctp.sport, dport=sctp.dport)
        elif proto in (1, 58) and rest >= 4:
            # Type and code lead ICMP and ICMPv6 alike (RFC 792, RFC 4443); scapy's
            # classes insist on the message body, which need not be there.
            fields.update(icmp_type=frame[l4], icmp_code=frame[l4 + 1])
    return Expected(**fields)
