"""Which hooks a live run puts on which interface: the one policy, from the settings.

The hooks themselves are kernel/hooks.py's (mechanism: what can be attached, and
how); choosing among them is here, above kernel/. ``ingress()`` is the policy for
an interface's ingress, and both what is loaded (``to_load``: only programs a run
can use are verified) and what is attached (``for_interface``) are derived from
it, so the two always agree.
"""

from __future__ import annotations

from netmon.kernel import attach, facts
from netmon.kernel.abi import DIR_IN
from netmon.kernel.choices import Hook
from netmon.settings import Settings


def xdp_can_capture() -> bool:
    """XDP copies packets for -w with bpf_xdp_load_bytes(), from 5.18 on; tc always can."""
    return facts.supports("frags")


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
    if settings.drops_alone:
        return ["drops"]
    return [ingress(settings, xdp_busy, xdp_captures) if d == DIR_IN else "tc_out"
            for d in settings.directions]


def to_load(settings: Settings, busy_now: list[bool], xdp_captures: bool) -> set[str]:
    """Every hook the run may attach: for the interfaces there now (``busy_now``: whether
    each has a foreign XDP program), for one that comes back with one (--follow), and for
    one that gets one between the look and the attach: with --hook auto, tc is loaded
    beside XDP (two netmons started at once each found the interface free, and the
    second, finding the first's program there, wanted a tc program it had not loaded:
    KeyError 'tc_in')."""
    states = set(busy_now) or {False}
    if settings.follow or settings.hook is Hook.AUTO:
        states |= {False, True}
    hooks = {h for busy in states for h in for_interface(settings, busy, xdp_captures)}
    return hooks | {"drops"} if settings.drops else hooks  # top --drops: its panel too


def foreign_xdp(settings: Settings, xdp_captures: bool, ifindex: int) -> int:
    """The id of someone else's XDP program on the interface where it decides the ingress
    hook (ingress(): --hook auto, ingress watched, XDP possible); else 0."""
    if settings.hook is Hook.AUTO and DIR_IN in settings.directions \
            and not tc_ingress_only(settings, xdp_captures):
        return attach.query(ifindex).prog_id
    return 0
