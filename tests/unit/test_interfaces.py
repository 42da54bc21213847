"""Interface selection and Proxmox VE guest naming: plain Python, no kernel."""

import pytest

from netmon.host import proxmox
from netmon.host.interfaces import Selection


def test_names_commas_globs_and_any():
    sel = Selection.parse(["eth0,tap*", "vmbr0", "eth0"])
    assert sel.names == ("eth0", "vmbr0") and sel.patterns == ("tap*",)
    assert sel.dynamic and not sel.single
    assert [n for n in ("eth0", "tap100i0", "lo", "veth1") if sel.matches(n)] == \
        ["eth0", "tap100i0"]
    anything = Selection.parse(["any"])
    assert anything.matches("eth0") and not anything.matches("lo")
    assert Selection.parse(["eth0"]).single
    assert not Selection.parse(["eth0"]).dynamic


@pytest.mark.parametrize("value", ["", "eth0,,eth1", "x" * 16, "a/b"])
def test_bad_names(value):
    with pytest.raises(ValueError):
        Selection.parse([value])


def test_guest_interfaces():
    assert [proxmox.guest_of(n) for n in ("tap100i0", "veth101i1", "fwln102i0", "fwpr103p1",
                                          "tap1x", "eth0", "vmbr0")] == \
        [100, 101, 102, 103, None, None, None]
    sel = Selection.parse([], guests=[100])
    assert sel.patterns == ("tap100i*", "veth100i*")
    assert sel.matches("tap100i0") and sel.matches("veth100i2")
    assert not sel.matches("tap1000i0") and not sel.matches("fwln100i0")


def test_guest_names_from_a_config_tree(tmp_path):
    (tmp_path / "qemu-server").mkdir()
    (tmp_path / "lxc").mkdir()
    (tmp_path / "qemu-server" / "100.conf").write_text(
        "cores: 2\nname: web1\n\n[pre-upgrade]\nname: web1-old\n")
    (tmp_path / "lxc" / "101.conf").write_text("arch: amd64\nhostname: ct-dns\n")
    assert proxmox.guest_name(100, tmp_path) == "web1"
    assert proxmox.guest_name(101, tmp_path) == "ct-dns"
    assert proxmox.guest_name(102, tmp_path) is None


def test_a_views_title_names_guests_not_their_patterns():
    from netmon.host.interfaces import Selection

    assert Selection.parse([], [], True).title() == "every guest"
    assert Selection.parse(["vmbr0", "tap*"], [100]).title() == "vmbr0, tap*, guest 100"
    assert Selection.parse(["any"]).title() == "any"
