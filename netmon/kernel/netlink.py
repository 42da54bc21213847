"""A small NETLINK_ROUTE client: link notifications and tc filter dumps.

netmon needs two things from rtnetlink: to hear when interfaces appear and
vanish, and to list the cls_bpf filters on a clsact hook (to find those a
killed netmon left). That is one multicast group and two message types, so a
plain socket does it; pyroute2 would do it too, at ~100 ms of import time on
every start.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

# linux/rtnetlink.h, linux/netlink.h, linux/if_link.h, linux/pkt_cls.h
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWTFILTER, RTM_GETTFILTER = 44, 46
RTMGRP_LINK = 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME = 3
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_NAME, TCA_BPF_ID = 7, 11
TC_H_CLSACT_INGRESS = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
TC_H_CLSACT_EGRESS = 0xFFFFFFF3

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_TCMSG = struct.Struct("=BxxxiIII")
_RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(buf: bytes, pos: int, end: int) -> dict[int, bytes]:
    out = {}
    while pos + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(buf, pos)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = buf[pos + _RTATTR.size:pos + length]
        pos += _align(length)
    return out


def _messages(buf: bytes):
    """(type, payload) for each message in a datagram."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(buf):
        length, mtype, _, _, _ = _NLMSGHDR.unpack_from(buf, pos)
        if length < _NLMSGHDR.size:
            break
        yield mtype, buf[pos + _NLMSGHDR.size:pos + length]
        pos += _align(length)


@dataclass(frozen=True)
class LinkChange:
    ifindex: int
    ifname: str
    gone: bool  # RTM_DELLINK; otherwise the link exists (new or changed)


def link_changes(buf: bytes) -> list[LinkChange]:
    """The link messages (RTM_NEWLINK, RTM_DELLINK) of one netlink datagram."""
    out = []
    for mtype, payload in _messages(buf):
        if mtype not in (RTM_NEWLINK, RTM_DELLINK) or len(payload) < _IFINFOMSG.size:
            continue
        _, _, ifindex, _, _ = _IFINFOMSG.unpack_from(payload)
        name = _attrs(payload, _IFINFOMSG.size, len(payload)).get(IFLA_IFNAME, b"")
        out.append(LinkChange(ifindex, name.rstrip(b"\0").decode(errors="replace"),
                              mtype == RTM_DELLINK))
    return out


class LinkWatcher:
    """Link notifications of this network namespace, read without blocking."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                   socket.NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._sock.bind((0, RTMGRP_LINK))
        except BaseException:
            self._sock.close()
            raise
        self.overrun = False  # the kernel dropped notifications: rescan the links

    def fileno(self) -> int:
        return self._sock.fileno()

    def changes(self) -> list[LinkChange]:
        out = []
        while True:
            try:
                buf = self._sock.recv(65536)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overrun = True
                    continue
                raise
            out += link_changes(buf)

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class TcFilter:
    handle: int
    priority: int
    kind: str
    prog_id: int | None  # cls_bpf's program id
    name: str | None  # cls_bpf's program name, as its loader set it


def tc_filters(ifindex: int, parent: int) -> list[TcFilter]:
    """The filters on one clsact hook (TC_H_CLSACT_INGRESS or _EGRESS) of an interface."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        body = _TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, parent, 0)
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETTFILTER,
                                 NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        found = []
        while True:
            buf = sock.recv(1 << 16)
            for mtype, payload in _messages(buf):
                if mtype == NLMSG_DONE:
                    return found
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err in (errno.EINVAL, errno.ENOENT, errno.ENODEV):
                        return found  # no clsact qdisc (or no interface): no filters
                    raise OSError(err, f"listing tc filters: {os.strerror(err)}")
                if mtype != RTM_NEWTFILTER:
                    continue
                _, _, handle, _, info = _TCMSG.unpack_from(payload)
                attrs = _attrs(payload, _TCMSG.size, len(payload))
                kind = attrs.get(TCA_KIND, b"").rstrip(b"\0").decode()
                if not handle or not kind:
                    continue  # the classifier's own entry, not a filter
                opts = _attrs(attrs.get(TCA_OPTIONS, b""), 0, len(attrs.get(TCA_OPTIONS, b"")))
                prog_id = struct.unpack("=I", opts[TCA_BPF_ID])[0] if TCA_BPF_ID in opts else None
                name = opts.get(TCA_BPF_NAME)
                found.append(TcFilter(handle, info >> 16, kind, prog_id,
                                      name.rstrip(b"\0").decode() if name else None))
