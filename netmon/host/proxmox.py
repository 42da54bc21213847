"""Proxmox VE guests: which interfaces belong to which VM or container, and its name.

Proxmox names a guest's host-side interfaces after the guest id: ``tapNNNiM``
(VM NIC M), ``vethNNNiM`` (container NIC M), and, with the firewall on,
``fwlnNNNiM`` / ``fwprNNNpM`` (the veth pair to the firewall bridge). The name
comes from the guest's config: ``name:`` for a VM, ``hostname:`` for a container.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PVE_DIR_ENV = "NETMON_PVE_DIR"  # another /etc/pve, for tests
_GUEST_IF = re.compile(r"^(?:tap(\d+)i\d+|veth(\d+)i\d+|fwln(\d+)i\d+|fwpr(\d+)p\d+)$")


def guest_of(ifname: str) -> int | None:
    """The guest id an interface belongs to, or None."""
    m = _GUEST_IF.match(ifname)
    return int(next(g for g in m.groups() if g)) if m else None


_GUEST_NIC = re.compile(r"^(?:tap|veth)(\d+)i(\d+)$")


def guest_nic(ifname: str) -> tuple[int, int] | None:
    """(guest id, NIC number) of a guest's own interface, its VM tap or container veth:
    ``tap100i0`` is guest 100's NIC 0 (``net0`` in its config)."""
    m = _GUEST_NIC.match(ifname)
    return (int(m.group(1)), int(m.group(2))) if m else None


def interface_info(ifname: str) -> dict:
    """``ifname``, and for a guest's interface its ``guest`` id and ``guest_name`` (None
    where its config is not readable): what JSON lines, top and the metrics show."""
    info: dict = {"ifname": ifname}
    guest = guest_of(ifname)
    if guest is not None:
        info.update(guest=guest, guest_name=guest_name(guest))
    return info


# A guest's tap or veth counts the guest's traffic the other way round: what comes in on
# it (the host receives) is what the guest sent, what goes out what the guest received.
# The one place this is written: metrics' guest_side, top's rows, the totals' columns
# and RTT's components all ask here.
GUEST_SENT = "in"  # the interface's direction of what the guest sent
GUEST_RECEIVED = "out"
GUEST_SIDE = {GUEST_SENT: "sent", GUEST_RECEIVED: "received"}


def guest_sent(direction: str) -> bool:
    """On a guest's interface, is ``direction`` ("in", "out") what the guest sent?"""
    return direction == GUEST_SENT


ALL = "all"  # --guest all: every guest, VM or container
ALL_PATTERNS = ("tap[0-9]*i[0-9]*", "veth[0-9]*i[0-9]*")  # VMs' taps, containers' veths (not Docker's)


def guest_patterns(guest: int) -> tuple[str, ...]:
    """The interfaces that carry a guest's traffic: its VM taps and container veths."""
    return (f"tap{guest}i*", f"veth{guest}i*")


def pve_dir() -> Path:
    return Path(os.environ.get(PVE_DIR_ENV, "/etc/pve"))


def guests(root: Path | None = None) -> dict[int, str | None]:
    """Every guest this node has a config for (VMs and containers), with its name."""
    root = root or pve_dir()
    found: dict[int, str | None] = {}
    for sub in ("qemu-server", "lxc"):
        try:
            names = os.listdir(root / sub)
        except OSError:
            continue
        for name in names:
            stem, _, ext = name.partition(".")
            if ext == "conf" and stem.isdigit():
                found[int(stem)] = guest_name(int(stem), root)
    return dict(sorted(found.items()))


def guest_name(guest: int, root: Path | None = None) -> str | None:
    """A VM's ``name:`` or a container's ``hostname:``, where the config is readable."""
    root = root or pve_dir()
    for sub, key in (("qemu-server", "name"), ("lxc", "hostname")):
        try:
            text = (root / sub / f"{guest}.conf").read_text(errors="replace")
        except OSError:
            continue
        # The guest's own settings come before its first [snapshot] section.
        current = text.split("\n[", 1)[0]
        m = re.search(rf"^{key}:\s*(\S+)", current, re.M)
        if m:
            return m.group(1)
    return None
