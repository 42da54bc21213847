"""The one hook policy: what a run loads and what each interface gets agree. No kernel needed."""

import pytest

from netmon.events import DIR_IN, DIR_OUT
from netmon.kernel.choices import Hook
from netmon.kernel.hooks import HOOKS, PROGRAM_NAMES
from netmon.settings import Capture, Settings
from netmon.sources.policy import for_interface, ingress, to_load
from netmon.host.interfaces import Selection

ONE = Selection(("eth0",))
GLOB = Selection(patterns=("tap*",))


def s(**kw):
    return Settings(selection=kw.pop("selection", ONE), **kw)


def test_the_registry_names_the_objects_programs():
    assert PROGRAM_NAMES == ("xdp_monitor", "tc_ingress", "tc_egress", "kfree_skb")
    assert {h.direction for h in HOOKS.values()} == {DIR_IN, DIR_OUT}


def test_drops_load_the_tracepoints_program_alone():
    """netmon drops: one program for every interface; nothing hooked on any of them."""
    drops = s(drops=True, selection=Selection(any=True), directions=(DIR_IN, DIR_OUT))
    assert for_interface(drops, False, True) == ["drops"]
    assert to_load(drops, [False, True], True) == {"drops"}


@pytest.mark.parametrize("settings,busy,captures,want", [
    (s(), False, True, "xdp"),
    (s(), True, True, "tc_in"),  # someone else's XDP program: left alone
    (s(hook=Hook.XDP), True, True, "xdp"),  # asked for: attach refuses, exit 7
    (s(hook=Hook.TC), False, True, "tc_in"),
    (s(selection=GLOB), False, True, "tc_in"),  # globs: tc for every ingress
    (s(capture=Capture("x")), False, False, "tc_in"),  # XDP cannot copy before 5.18
    (s(capture=Capture("x")), False, True, "xdp"),
])
def test_ingress_choice(settings, busy, captures, want):
    assert ingress(settings, busy, captures) == want


def test_one_hook_per_direction():
    assert for_interface(s(directions=(DIR_IN, DIR_OUT)), False, True) == ["xdp", "tc_out"]
    assert for_interface(s(directions=(DIR_OUT,)), True, True) == ["tc_out"]


@pytest.mark.parametrize("settings,busy,want", [
    # --hook auto: tc beside XDP, for an interface that gets a foreign XDP program between
    # netmon's look and its attach (another netmon started at the same moment)
    (s(), [False], {"xdp", "tc_in"}),
    (s(), [True], {"xdp", "tc_in"}),
    (s(), [False, True], {"xdp", "tc_in"}),
    (s(follow=True), [False], {"xdp", "tc_in"}),  # it may come back with a foreign program
    (s(hook=Hook.XDP, follow=True), [False], {"xdp"}),
    (s(selection=GLOB, directions=(DIR_IN, DIR_OUT)), [], {"tc_in", "tc_out"}),
    (s(directions=(DIR_OUT,)), [], {"tc_out"}),
])
def test_what_is_loaded_is_what_can_be_attached(settings, busy, want):
    loaded = to_load(settings, busy, True)
    assert loaded == want
    for b in busy or [False]:
        assert set(for_interface(settings, b, True)) <= loaded
