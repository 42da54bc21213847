import pytest

from netmon import errors
from netmon.host import system

ROUTES = """Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
ens18	0000A8C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
vmbr1	00000000	0101A8C0	0003	0	0	200	00000000	0	0	0
vmbr0	00000000	0101A8C0	0003	0	0	100	00000000	0	0	0
"""


def test_default_interface_is_the_lowest_metric_default_route():
    assert system.default_interface(ROUTES) == "vmbr0"


def test_default_interface_falls_back_to_eth0():
    assert system.default_interface(ROUTES.splitlines()[0] + "\n") == "eth0"


def caps(*bits):
    return sum(1 << b for b in bits)


def test_capabilities():
    full = "CapEff:\t000001ffffffffff\n"
    assert system.missing_caps(system.effective_caps(full)) == []
    assert system.missing_caps(caps(system.CAP_BPF, system.CAP_PERFMON,
                                    system.CAP_NET_ADMIN)) == []
    # Before CAP_BPF existed (< 5.8), CAP_SYS_ADMIN covered BPF and perf.
    assert system.missing_caps(caps(system.CAP_SYS_ADMIN, system.CAP_NET_ADMIN)) == []
    assert system.missing_caps(caps(system.CAP_BPF, system.CAP_PERFMON)) == ["CAP_NET_ADMIN"]
    assert system.missing_caps(0) == ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
    with pytest.raises(errors.PermissionProblem, match="run it with sudo"):
        system.check_privileges(0)


def test_unknown_interface_lists_the_real_ones():
    with pytest.raises(errors.InterfaceNotFound, match=r"'nmt-nope0' does not exist; available: .*lo"):
        system.ifindex("nmt-nope0")
