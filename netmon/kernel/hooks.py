"""The hooks netmon can watch from, and the one policy that chooses among them.

Each hook is a program of the object (a thin SEC wrapper in the C that calls
the shared inspect() and deliver()), the direction it sees, and how it is
attached. ``HOOKS`` is the registry: a new hook is one entry here plus its SEC
wrapper. ``ingress()`` is the policy for an interface's ingress, and both what
is loaded (``to_load``: only programs a run can use are verified) and what is
attached (``for_interface``) are derived from it, so the two always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from netmon import system
from netmon.kernel import attach
from netmon.kernel.abi import DIR_IN, DIR_OUT
from netmon.settings import Hook, Settings

FRAGS_KERNEL = (5, 18)  # BPF_F_XDP_HAS_FRAGS, bpf_xdp_get_buff_len(), bpf_xdp_load_bytes()


@dataclass(frozen=True)
class HookKind:
    name: str  # how netmon names it: MonitorProgram(hooks=...), the tests, the bench
    program: str  # the SEC function's name in bpf/xdp_monitor.bpf.c
    direction: int
    # (program fd, ifindex, ifname, settings) -> an attachment that closes once
    attach: Callable[[int, int, str, Settings], attach.Attachment]


def _xdp(fd: int, ifindex: int, ifname: str, s: Settings) -> attach.Attachment:
    return attach.attach_xdp(fd, ifindex, ifname, s.mode, s.method)


def _tc(direction: int):
    def attach_tc(fd: int, ifindex: int, ifname: str, s: Settings) -> attach.Attachment:
        return attach.attach_tc(fd, ifindex, ifname, direction, s.method, PROGRAM_NAMES)
    return attach_tc


def _drops(fd: int, ifindex: int, ifname: str, s: Settings) -> attach.Attachment:
    return attach.DropsWatch(ifindex, ifname)


HOOKS: dict[str, HookKind] = {h.name: h for h in (
    HookKind("xdp", "xdp_monitor", DIR_IN, _xdp),
    HookKind("tc_in", "tc_ingress", DIR_IN, _tc(DIR_IN)),
    HookKind("tc_out", "tc_egress", DIR_OUT, _tc(DIR_OUT)),
    # netmon drops: one program on a tracepoint for every interface (the loader attaches
    # it); each watched interface only gets a slot, its drops counted apart.
    HookKind("drops", "kfree_skb", DIR_IN, _drops),
)}
PROGRAM_NAMES = tuple(h.program for h in HOOKS.values())


def xdp_can_capture() -> bool:
    """XDP copies packets for -w with bpf_xdp_load_bytes(), from 5.18 on; tc always can."""
    return system.kernel_version() >= FRAGS_KERNEL


def tc_ingress_only(settings: Settings, xdp_captures: bool) -> bool:
    """--hook auto watches every ingress with tc: for globs, and for captures XDP cannot copy."""
    return settings.selection.dynamic or (settings.capture is not None and not xdp_captures)


def ingress(settings: Settings, xdp_busy: bool, xdp_captures: bool) -> str:
    """The hook for one interface's ingress: ``xdp_busy``, it has someone else's XDP program."""
    if settings.hook is Hook.XDP:
        return "xdp"
    if settings.hook is Hook.TC or tc_ingress_only(settings, xdp_captures) or xdp_busy:
        return "tc_in"
    return "xdp"


def for_interface(settings: Settings, xdp_busy: bool, xdp_captures: bool) -> list[str]:
    """The hooks one interface gets, one per watched direction (netmon drops: the one)."""
    if settings.drops and settings.flows is None:
        return ["drops"]
    return [ingress(settings, xdp_busy, xdp_captures) if d == DIR_IN else "tc_out"
            for d in settings.directions]


def to_load(settings: Settings, busy_now: list[bool], xdp_captures: bool) -> set[str]:
    """Every hook the run may attach: for the interfaces there now (``busy_now``: whether
    each has a foreign XDP program), and, with --follow, for one that comes back with one."""
    states = set(busy_now) or {False}
    if settings.follow:
        states |= {False, True}
    hooks = {h for busy in states for h in for_interface(settings, busy, xdp_captures)}
    return hooks | {"drops"} if settings.drops else hooks  # top --drops: its panel too
