"""Keeping only what a run still needs, once it has opened, loaded and attached
(tcpdump's droproot(): open first, then drop to the -Z user).

drop() switches to a user and keeps the capabilities named, nothing else: the bounding
set loses every other one (no exec can get them back), the ambient set is cleared, and
no_new_privs is set. Python has no capset(): it is called through libc.

What a run keeps is the caller's to say (app.py); on a kernel before 6.5 with
unprivileged BPF disabled, every bpf() call, a map read included, needs CAP_BPF (or
CAP_SYS_ADMIN before 5.8): kept_for_bpf() says which, if any.
"""

from __future__ import annotations

import ctypes
import os
import pwd
from dataclasses import dataclass
from typing import Iterable

from netmon.errors import PermissionProblem, UsageError
from netmon.host import system
from netmon.host.system import (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SETPCAP,
                                CAP_SYS_ADMIN)

CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
             CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}
DEFAULT_USERS = ("netmon", "nobody")  # the package's user where made, else nobody
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_CAP_V3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True)
class Kept:
    """Who the run is after the drop, and what it kept: the summary says so."""

    user: str
    caps: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.user == "root":
            return "running as root, every privilege kept (-Z root)"
        caps = ", ".join(CAP_NAMES.get(c, str(c)) for c in self.caps) or "no capabilities"
        return f"running as {self.user} with {caps}"


def default_user() -> str:
    for name in DEFAULT_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return "root"


def account(user: str | None) -> pwd.struct_passwd | None:
    """Whom a run becomes once attached (None: it stays as it is), checked before anything
    is opened: -Z USER, else the package's user, else nobody; -Z root stays root. A netmon
    started without root (a unit's User= with ambient capabilities) is already who it
    runs as: it can only give capabilities up, and -Z naming someone else is refused."""
    name = user or default_user()
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"-Z {name}: no such user") from None
    uid = os.geteuid()
    if uid != 0:
        if user is not None and pw.pw_uid != uid:
            raise UsageError(f"-Z {name}: only root can become another user")
        try:
            return pwd.getpwuid(uid)
        except KeyError:  # a uid with no passwd entry (systemd's DynamicUser=): its number
            return pwd.struct_passwd((str(uid), "x", uid, os.getegid(), "", "/", ""))
    return None if pw.pw_uid == 0 else pw


def kept_for_bpf(release: tuple[int, int], unprivileged_disabled: int | None = None) -> set:
    """What the bpf() calls of a running program (map reads, test runs) need: nothing from
    6.5 (an fd's holder may use it), else CAP_BPF, or CAP_SYS_ADMIN before 5.8, where
    unprivileged BPF is disabled."""
    if release >= (6, 5):
        return set()
    if unprivileged_disabled is None:
        try:
            with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
                unprivileged_disabled = int(f.read())
        except (OSError, ValueError):
            unprivileged_disabled = 1
    if not unprivileged_disabled:
        return set()
    return {CAP_BPF} if release >= (5, 8) else {CAP_SYS_ADMIN}


def _pve_group() -> int | None:
    """The group that may read Proxmox's guest configs (www-data), where there are any:
    kept so that guests are still named after the drop. Never root's group."""
    from netmon.host import proxmox

    try:
        gid = os.stat(proxmox.pve_dir()).st_gid
    except OSError:
        return None
    return gid or None


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise PermissionProblem(f"cannot drop privileges ({what}: {os.strerror(err)})")


def drop(pw: pwd.struct_passwd, keep: Iterable[int]) -> Kept:
    """Become ``pw`` (from account()) with ``keep`` alone. Already ``pw`` (not started as
    root): the capabilities beyond ``keep`` are given up all the same; the bounding set
    only where CAP_SETPCAP allows it (a unit's CapabilityBoundingSet= has bounded it)."""
    keep = tuple(sorted(set(keep)))
    libc = _libc()
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 40
    switch = os.geteuid() != pw.pw_uid
    if switch or system.effective_caps() >> CAP_SETPCAP & 1:
        for cap in range(last + 1):
            if cap not in keep:
                _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "the bounding set")
    if switch:
        _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keeping capabilities")
        os.initgroups(pw.pw_name, pw.pw_gid)  # its groups (the netmon user's www-data)
        pve = _pve_group()
        if pve and pve not in os.getgroups():  # guest names: /etc/pve is root:www-data
            os.setgroups(os.getgroups() + [pve])
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    mask = [0, 0]
    for cap in keep:
        mask[cap // 32] |= 1 << (cap % 32)
    header = _Header(_CAP_V3, 0)
    data = (_Data * 2)(*[_Data(m, m, 0) for m in mask])
    _check(libc.capset(ctypes.byref(header), data), "capset")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient set")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    return Kept(pw.pw_name, keep)
