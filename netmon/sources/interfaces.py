"""Which interfaces a run watches: names, shell-style globs, ``any``, a guest's.

A Selection is what the user asked for; it decides for any interface name
whether it belongs. Plain names are expected to exist; globs, ``any`` and
guests match whatever exists now and whatever appears later.
"""

from __future__ import annotations

import fnmatch
import socket
from dataclasses import dataclass

from netmon.sources import proxmox

ANY = "any"


@dataclass(frozen=True)
class Selection:
    names: tuple[str, ...] = ()  # interfaces that must exist
    patterns: tuple[str, ...] = ()  # globs (``any`` is ``*`` less lo)
    any: bool = False
    guests: tuple[int, ...] = ()

    @classmethod
    def parse(cls, values: list[str], guests: list[int] = ()) -> "Selection":
        """``-i`` values (each may hold several, comma-separated) and ``--guest`` ids."""
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
        return cls(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(patterns)), any_,
                   tuple(guests))

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


def existing() -> dict[int, str]:
    """Every interface of this network namespace, by index."""
    return {idx: name for idx, name in socket.if_nameindex()}
