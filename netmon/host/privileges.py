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
from netmon.host.system import CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN

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


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise PermissionProblem(f"cannot drop privileges ({what}: {os.strerror(err)})")


def drop(user: str, keep: Iterable[int]) -> Kept:
    """Become ``user`` with ``keep`` alone (root: nothing changes)."""
    keep = tuple(sorted(set(keep)))
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"-Z {user}: no such user") from None
    if pw.pw_uid == 0:
        return Kept(user)
    libc = _libc()
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        if cap not in keep:
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "the bounding set")
    _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keeping capabilities")
    os.initgroups(pw.pw_name, pw.pw_gid)  # its groups (www-data on Proxmox: guest names)
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
    return Kept(user, keep)
