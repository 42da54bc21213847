"""The small rtnetlink client's parsing, on messages built here (no kernel)."""

import struct

from netmon.kernel import netlink


def nlmsg(mtype: int, payload: bytes) -> bytes:
    length = 16 + len(payload)
    return struct.pack("=IHHII", length, mtype, 0, 0, 0) + payload + bytes(-length % 4)


def rtattr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def ifinfo(ifindex: int, name: str) -> bytes:
    return struct.pack("=BxHiII", 0, 1, ifindex, 0, 0) + rtattr(4, struct.pack("=I", 1500)) \
        + rtattr(netlink.IFLA_IFNAME, name.encode() + b"\0")


def test_link_messages_in_one_datagram():
    buf = (nlmsg(netlink.RTM_NEWLINK, ifinfo(7, "tap100i0"))
           + nlmsg(20, b"\0" * 12)  # an address message: not a link change
           + nlmsg(netlink.RTM_DELLINK, ifinfo(5, "veth3")))
    assert netlink.link_changes(buf) == [netlink.LinkChange(7, "tap100i0", False),
                                         netlink.LinkChange(5, "veth3", True)]


def test_short_or_broken_messages_are_skipped():
    assert netlink.link_changes(nlmsg(netlink.RTM_NEWLINK, b"\0" * 8)) == []
    assert netlink.link_changes(b"\x03\0\0\0") == []  # a length below the header's
    assert netlink.link_changes(b"") == []
