"""How events are shown: the original tool's text line, or JSON lines.

Formatters render a whole batch into one string, so a poll's worth of events
costs one write. A batch holds Events or plain rows of their fields (what the
decoder's hot path yields); both unpack alike. The text formatter keeps each
flow's line prefix, so a repeated flow costs one lookup and the length.

With one interface and one direction, a line is exactly the original tool's; with
more, it starts with the interface and the direction (``tap100i0 out TCP ...``).
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable

from netmon import protocols
from netmon.events import DIR_NAMES, Event, Flow, Row, decode_flow

_PREFIX_CACHE_MAX = 65536


def _endpoint(addr: str, port: int | None, family: int) -> str:
    if port is None:
        return addr
    if family == 6:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def _prefix(flow: Flow) -> str:
    return (f"{protocols.name(flow.ipproto)} {_endpoint(flow.src, flow.sport, flow.family)}"
            f" -> {_endpoint(flow.dst, flow.dport, flow.family)} (")


class TextFormat:
    """``TCP 192.168.1.100:54321 -> 93.184.216.34:443 (1248b)``

    ``ifnames`` (ifindex -> name) given: ``veth1 in TCP ...``, for runs that watch
    more than one interface or direction.
    """

    def __init__(self, ifnames: Callable[[int], str] | None = None):
        self._prefixes: dict[bytes, str] = {}  # by the event's raw flow key
        self._ifnames = ifnames
        self._labels: dict[tuple[int, int], str] = {}  # by (ifindex, dir)

    def _label(self, ifindex: int, direction: int) -> str:
        label = self._labels.get((ifindex, direction))
        if label is None:
            label = self._labels[(ifindex, direction)] = \
                f"{self._ifnames(ifindex)} {DIR_NAMES[direction]} "
        return label

    def forget(self, ifindex: int) -> None:
        """An interface went away: its index may come back under another name."""
        for key in [k for k in self._labels if k[0] == ifindex]:
            del self._labels[key]

    def _new_prefix(self, key: bytes) -> str:
        if len(self._prefixes) >= _PREFIX_CACHE_MAX:
            self._prefixes.clear()
        text = self._prefixes[key] = _prefix(decode_flow(key))
        return text

    def line(self, ev: Event | Row) -> str:
        _, ifindex, length, key, direction, _ = ev
        label = self._label(ifindex, direction) if self._ifnames else ""
        return f"{label}{self._prefixes.get(key) or self._new_prefix(key)}{length}b)"

    def render(self, events: Iterable[Event | Row], frames: list[int] | None = None) -> str:
        prefixes = self._prefixes
        new = self._new_prefix
        if self._ifnames is None:
            return "".join([f"{prefixes.get(key) or new(key)}{length}b)\n"
                            for _, _, length, key, _, _ in events])
        labels = self._labels
        label = self._label
        return "".join([f"{labels.get((ifindex, d)) or label(ifindex, d)}"
                        f"{prefixes.get(key) or new(key)}{length}b)\n"
                        for _, ifindex, length, key, d, _ in events])


class Clock:
    """Turns the kernel's CLOCK_MONOTONIC stamps into epoch seconds."""

    def __init__(self, offset_ns: int | None = None):
        """``offset_ns`` given: stamps are that far from the epoch (0: epoch already)."""
        self.offset_ns = time.time_ns() - time.monotonic_ns() if offset_ns is None else offset_ns

    def epoch(self, ts_ns: int) -> float:
        return (ts_ns + self.offset_ns) / 1e9


class JsonFormat:
    """One JSON object per event.

    ``ifinfo`` maps an ifindex to the interface's fields: ``ifname``, and for a
    Proxmox VE guest's interface ``guest`` and ``guest_name``.
    """

    def __init__(self, ifinfo: Callable[[int], dict], clock: Clock | None = None):
        self._ifinfo = ifinfo
        self._clock = clock or Clock()
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def line(self, ev: Event | Row, frame: int | None = None) -> str:
        ev = Event(*ev)
        f = ev.flow
        where = {"frame": frame} if frame is not None else {}
        return self._dumps({
            **where,
            "ts": round(self._clock.epoch(ev.ts_ns), 6),
            **self._ifinfo(ev.ifindex),
            "dir": DIR_NAMES[ev.dir],
            "proto": protocols.name(f.ipproto).lower(),
            "ipproto": f.ipproto,
            "src": f.src,
            "dst": f.dst,
            "sport": f.sport,
            "dport": f.dport,
            "len": ev.length,
            "segs": ev.segs,
            "vlan": f.vlan,
            "icmp_type": f.icmp_type,
            "icmp_code": f.icmp_code,
            "tcp_flags": f.tcp_flags,
            "frag": f.fragment,
        })

    def render(self, events: Iterable[Event | Row], frames: list[int] | None = None) -> str:
        """``frames``: each event's frame number in the capture file it was read from."""
        if frames is None:
            return "".join([self.line(ev) + "\n" for ev in events])
        return "".join([self.line(ev, n) + "\n" for ev, n in zip(events, frames)])
