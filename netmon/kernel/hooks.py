"""The hooks netmon can watch from: one registry, ``HOOKS``.

Each hook is a program of the object (a thin SEC wrapper in the C that calls the
shared inspect() and deliver()), the direction it sees, how it is attached, and
the target a filter expression is translated for. A new hook is one entry here
plus its SEC wrapper. Which hooks a run uses for which interface is policy, and
lives above kernel/ (sources/policy.py); everything here takes plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from netmon.kernel import attach
from netmon.kernel.abi import DIR_IN, DIR_OUT
from netmon.kernel.choices import Method, Mode


@dataclass(frozen=True)
class HookKind:
    name: str  # how netmon names it: MonitorProgram(hooks=...), the tests, the bench
    program: str  # the SEC function's name in bpf/xdp_monitor.bpf.c
    direction: int
    # (program fd, ifindex, ifname, mode, method) -> an attachment that closes once
    attach: Callable[[int, int, str, Mode, Method], attach.Attachment]
    # What a filter expression is translated for (kernel/loader.py: expression_target)
    target: str


def _xdp(fd: int, ifindex: int, ifname: str, mode: Mode, method: Method) -> attach.Attachment:
    return attach.attach_xdp(fd, ifindex, ifname, mode, method)


def _tc(direction: int):
    def attach_tc(fd: int, ifindex: int, ifname: str, mode: Mode,
                  method: Method) -> attach.Attachment:
        return attach.attach_tc(fd, ifindex, ifname, direction, method, PROGRAM_NAMES)
    return attach_tc


def _drops(fd: int, ifindex: int, ifname: str, mode: Mode, method: Method) -> attach.Attachment:
    return attach.DropsWatch(ifindex, ifname)


HOOKS: dict[str, HookKind] = {h.name: h for h in (
    HookKind("xdp", "xdp_monitor", DIR_IN, _xdp, "xdp"),
    HookKind("tc_in", "tc_ingress", DIR_IN, _tc(DIR_IN), "tc"),
    HookKind("tc_out", "tc_egress", DIR_OUT, _tc(DIR_OUT), "tc"),
    # netmon drops: one program on a tracepoint for every interface (the loader attaches
    # it); each watched interface only gets a slot, its drops counted apart.
    HookKind("drops", "kfree_skb", DIR_IN, _drops, "drops"),
)}
PROGRAM_NAMES = tuple(h.program for h in HOOKS.values())
