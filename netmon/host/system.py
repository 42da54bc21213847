"""Facts about the host netmon runs on: privileges, interfaces, the default route.

The kernel's version and what it can do are kernel/facts.py's.
"""

from __future__ import annotations

import re
import socket

from netmon.errors import InterfaceNotFound, PermissionProblem

CAP_SETPCAP = 8  # changes the bounding set
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_caps(status_text: str | None = None) -> int:
    if status_text is None:
        with open("/proc/self/status") as f:
            status_text = f.read()
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status_text, re.M)
    return int(m.group(1), 16) if m else 0


def missing_caps(caps: int) -> list[str]:
    """Capabilities netmon lacks: BPF+PERFMON (or SYS_ADMIN before 5.8) and NET_ADMIN."""

    def has(cap: int) -> bool:
        return bool(caps & (1 << cap))

    missing = []
    if not has(CAP_SYS_ADMIN):
        if not has(CAP_BPF):
            missing.append("CAP_BPF")
        if not has(CAP_PERFMON):
            missing.append("CAP_PERFMON")
    if not has(CAP_NET_ADMIN):
        missing.append("CAP_NET_ADMIN")
    return missing


def check_privileges(caps: int | None = None) -> None:
    missing = missing_caps(effective_caps() if caps is None else caps)
    if missing:
        raise PermissionProblem(
            f"permission denied: netmon needs root (or {', '.join(missing)}); run it with sudo"
        )


def interface_names() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        known = ", ".join(interface_names()) or "none"
        raise InterfaceNotFound(
            f"interface '{name}' does not exist; available: {known} (see: ip addr show)"
        ) from None


def default_interface(route_table: str | None = None) -> str:
    """The interface of the IPv4 default route (lowest metric), else eth0."""
    if route_table is None:
        try:
            with open("/proc/net/route") as f:
                route_table = f.read()
        except OSError:
            route_table = ""
    best = None
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        metric = int(fields[6])
        if best is None or metric < best[0]:
            best = (metric, fields[0])
    return best[1] if best else "eth0"
