"""How events are shown: the original tool's text line, or JSON lines.

Formatters work on batches and return one string, so a poll's worth of events
costs one write.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable

from netmon import protocols
from netmon.events import Event


def _endpoint(addr: str, port: int | None, family: int) -> str:
    if port is None:
        return addr
    if family == 6:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def format_text(ev: Event) -> str:
    """``TCP 192.168.1.100:54321 -> 93.184.216.34:443 (1248b)``"""
    return (
        f"{protocols.name(ev.ipproto)} {_endpoint(ev.src, ev.sport, ev.family)}"
        f" -> {_endpoint(ev.dst, ev.dport, ev.family)} ({ev.length}b)"
    )


class Clock:
    """Turns the kernel's CLOCK_MONOTONIC stamps into epoch seconds."""

    def __init__(self):
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def epoch(self, ts_ns: int) -> float:
        return (ts_ns + self.offset_ns) / 1e9


def json_formatter(ifnames: Callable[[int], str], clock: Clock | None = None):
    """A formatter for JSON lines; ``ifnames`` maps an ifindex to its name."""
    clock = clock or Clock()
    dumps = json.JSONEncoder(separators=(",", ":")).encode

    def format_json(ev: Event) -> str:
        return dumps({
            "ts": round(clock.epoch(ev.ts_ns), 6),
            "ifname": ifnames(ev.ifindex),
            "proto": protocols.name(ev.ipproto).lower(),
            "ipproto": ev.ipproto,
            "src": ev.src,
            "dst": ev.dst,
            "sport": ev.sport,
            "dport": ev.dport,
            "len": ev.length,
            "vlan": ev.vlan,
            "icmp_type": ev.icmp_type,
            "icmp_code": ev.icmp_code,
            "tcp_flags": ev.tcp_flags,
            "frag": ev.fragment,
        })

    return format_json


def render(events: Iterable[Event], fmt: Callable[[Event], str]) -> str:
    """One string for a batch, each event on its own line."""
    lines = [fmt(ev) for ev in events]
    if not lines:
        return ""
    lines.append("")
    return "\n".join(lines)
