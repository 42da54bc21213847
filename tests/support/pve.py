"""A node's guest configs as netmon reads them (/etc/pve), made in a test's directory:
netmon is pointed at it with NETMON_PVE_DIR."""

from __future__ import annotations

from pathlib import Path


def fake_pve(where: Path, vms: dict[int, str] | None = None,
             containers: dict[int, str] | None = None) -> dict[str, str]:
    """VMs' names (qemu-server/N.conf, ``name:``) and containers' (lxc/N.conf,
    ``hostname:``) under ``where``/pve; the environment that points netmon at them."""
    pve = where / "pve"
    for sub, key, guests in (("qemu-server", "name", vms), ("lxc", "hostname", containers)):
        (pve / sub).mkdir(parents=True, exist_ok=True)
        for guest, name in (guests or {}).items():
            (pve / sub / f"{guest}.conf").write_text(f"{key}: {name}\n")
    return {"NETMON_PVE_DIR": str(pve)}
