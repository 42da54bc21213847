"""The kernel facts: one table, read by version."""

import pytest

from netmon import errors
from netmon.kernel import facts


@pytest.mark.parametrize("release,version", [
    ("6.1.0-18-amd64", (6, 1)), ("5.10.0-28-amd64", (5, 10)), ("4.19.0", (4, 19)), ("x", (0, 0)),
])
def test_kernel_version(release, version):
    assert facts.kernel_version(release) == version


def test_old_kernel_is_refused():
    with pytest.raises(errors.KernelTooOld, match="4.19.0-26-amd64 is too old"):
        facts.check_kernel("4.19.0-26-amd64")
    facts.check_kernel("5.10.0-28-amd64")


def test_each_fact_is_read_from_the_one_table():
    assert facts.supports("frags", "5.18.0") and not facts.supports("frags", "5.17.9")
    assert facts.supports("tcx", "6.6.1") and not facts.supports("tcx", "6.5.0")
    assert facts.since("xdp_link") == (5, 9)
    assert all(version >= facts.since("netmon") for version, _ in facts.KERNEL.values())
