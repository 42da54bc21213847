"""Which interfaces a run watches: names, shell-style globs, ``any``, a guest's.

A Selection is what the user asked for; it decides for any interface name
whether it belongs. Plain names are expected to exist; globs, ``any`` and
guests match whatever exists now and whatever appears later.
"""

from __future__ import annotations

import fcntl
import fnmatch
import socket
import struct
from dataclasses import dataclass

from netmon.host import system
from netmon.host import proxmox

ANY = "any"
SIOCGIFNETMASK = 0x891B


@dataclass(frozen=True)
class Selection:
    names: tuple[str, ...] = ()  # interfaces that must exist
    patterns: tuple[str, ...] = ()  # globs (``any`` is ``*`` less lo)
    any: bool = False
    guests: tuple[int, ...] = ()
    all_guests: bool = False  # --guest all

    @classmethod
    def parse(cls, values: list[str], guests: list[int] = (),
              all_guests: bool = False) -> "Selection":
        """``-i`` values (each may hold several, comma-separated), ``--guest`` ids, and
        every guest (VMs and containers alike)."""
        names, patterns, any_ = [], [], False
        for value in values:
            for item in (v.strip() for v in value.split(",")):
                if not item:
                    raise ValueError(f"empty interface name in '{value}'")
                if item == ANY:
                    any_ = True
                elif any(ch in item for ch in "*?["):
                    patterns.append(item)
                else:
                    if len(item) >= 16 or "/" in item or item in (".", ".."):
                        raise ValueError(f"'{item}' is not a valid interface name")
                    names.append(item)
        for guest in guests:
            patterns += proxmox.guest_patterns(guest)
        if all_guests:
            patterns += proxmox.ALL_PATTERNS
        return cls(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(patterns)), any_,
                   tuple(guests), all_guests)

    @property
    def dynamic(self) -> bool:
        """Interfaces may join the run as they appear."""
        return bool(self.patterns or self.any)

    @property
    def single(self) -> bool:
        """Exactly one named interface: lines keep the original tool's format."""
        return len(self.names) == 1 and not self.dynamic

    def matches(self, ifname: str) -> bool:
        if ifname in self.names:
            return True
        if self.any and ifname != "lo":
            return True
        return any(fnmatch.fnmatchcase(ifname, p) for p in self.patterns)

    def describe(self) -> str:
        parts = list(self.names) + list(self.patterns) + ([ANY] if self.any else [])
        return ", ".join(parts)

    def title(self) -> str:
        """describe() in a person's words, for a view's title: guests by id ("guest 100",
        "every guest") instead of the patterns they stand for."""
        theirs = {p for g in self.guests for p in proxmox.guest_patterns(g)}
        theirs |= set(proxmox.ALL_PATTERNS) if self.all_guests else set()
        parts = list(self.names) + [p for p in self.patterns if p not in theirs]
        parts += ([ANY] if self.any else []) + [f"guest {g}" for g in self.guests]
        return ", ".join(parts + (["every guest"] if self.all_guests else []))


def existing() -> dict[int, str]:
    """Every interface of this network namespace, by index."""
    return {idx: name for idx, name in socket.if_nameindex()}


def netmask(name: str) -> int | None:
    """The netmask of the interface's (first) IPv4 address, as an integer in host order,
    as libpcap's pcap_lookupnet() reads it for tcpdump; None if it has none or is not
    there."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifreq = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK,
                                struct.pack("16s16x", name.encode()[:15]))
    except (OSError, UnicodeEncodeError):
        return None
    return struct.unpack_from("!I", ifreq, 20)[0]  # sockaddr_in's address, after the name


def targets(selection: Selection, follow: bool = False) -> dict[int, str]:
    """The interfaces to watch now: the named ones (which must exist, unless ``follow``:
    then one not there yet is waited for), then the matches."""
    present = existing()
    by_name = {name: idx for idx, name in present.items()}
    targets = {}
    for name in selection.names:
        idx = by_name.get(name)
        if idx is None and follow:
            continue  # --follow: watched when it appears (a guest's tap at boot)
        targets[idx if idx is not None else system.ifindex(name)] = name
    for idx, name in sorted(present.items(), key=lambda item: item[1]):
        if idx not in targets and selection.matches(name):
            targets[idx] = name
    return targets


class Interfaces:
    """What is known of each interface an event may name: its name, its guest."""

    def __init__(self):
        self.names: dict[int, str | None] = {}
        self._info: dict[int, dict] = {}
        # A capture file's interfaces whose frames record no direction (-r).
        self.undirected: set[int] = set()

    def name(self, ifindex: int) -> str | None:
        """The interface's name (None: a capture file's interface that has none)."""
        if ifindex not in self.names:
            self.names[ifindex] = existing().get(ifindex, str(ifindex))
        return self.names[ifindex]

    def info(self, ifindex: int) -> dict:
        info = self._info.get(ifindex)
        if info is None:
            name = self.name(ifindex)
            info = proxmox.interface_info(name) if name else {"ifname": name}
            self._info[ifindex] = info
        return info

    def learn(self, ifindex: int, name: str | None) -> None:
        # ``in`` first: None is a name here (a pcap names no interface), not "unknown".
        if ifindex not in self.names or self.names[ifindex] != name:
            self.names[ifindex] = name
            self._info.pop(ifindex, None)
