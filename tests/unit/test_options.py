"""The option table (options.RULES) and the Settings it lets through: no terminal, no kernel."""

import pytest

from netmon.errors import InterfaceNotFound, UsageError
from netmon.events import DIR_IN, DIR_OUT
from netmon.options import (GIVEN, RULES, RTT_PAGES, DEFAULT_PAGES, Direction, Hook, Options, build,
                             capture_pages, conflict)


def settings(**kw):
    return build(Options(**kw), cpus=2, default_interface=lambda: "eth9")


def test_every_rule_names_options_the_table_knows():
    for _, these, those, message in RULES:
        assert set(these) | set(those) <= set(GIVEN), message


@pytest.mark.parametrize("kw,fragment", [
    (dict(print_lines=True), "--print, -C, -W and -G go with -w FILE"),
    (dict(rotate_seconds=5), "--print, -C, -W and -G go with -w FILE"),
    (dict(write="x", file_count=3), "-W N needs -C or -G"),
    (dict(write="-", file_mb=1.0), "-w - writes to standard output"),
    (dict(quiet=True, count=3), "--quiet prints nothing"),
    (dict(quiet=True, read="x"), "--quiet prints nothing"),
    (dict(flow_records=True, top=True), "one at a time"),
    (dict(ipfix=("127.0.0.1", 4739), write="x"), "flows are counted live, without -w or -r"),
    (dict(top=True, read="x"), "flows are counted live, without -w or -r"),
    (dict(top=True, sort="name"), "--sort takes rate, bytes or packets, not 'name'"),
    (dict(read="x", metrics=("127.0.0.1", 9)), "--metrics serves live counters"),
    (dict(read="x", follow=True), "-r reads a capture file"),
    (dict(read="x", guest=(100,)), "-r reads a capture file"),
    (dict(hook=Hook.XDP, direction=Direction.OUT), "--hook xdp watches ingress only"),
    # Options that would do nothing (they were accepted in silence).
    (dict(sort="name"), "--sort orders the rows of top"),
    (dict(flow_records=True, sort="bytes"), "--sort orders the rows of top"),
    (dict(flow_entries=10), "--flow-entries, --flow-idle and --flow-active size and time"),
    (dict(flow_idle=5.0, write="x"), "--flow-entries, --flow-idle and --flow-active"),
])
def test_conflicts_are_one_line(kw, fragment):
    assert fragment in conflict(Options(**kw))
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        settings(**kw)


def test_the_first_broken_rule_is_the_one_shown():
    # --print without -w is row 1, --quiet with --count row 4.
    assert conflict(Options(print_lines=True, quiet=True, count=1)).startswith("--print")


@pytest.mark.parametrize("kw", [
    dict(), dict(write="x", file_mb=1.0, file_count=2), dict(write="-", print_lines=True),
    dict(top=True, sort="bytes"), dict(flow_records=True, ipfix=("127.0.0.1", 4739)),
    dict(quiet=True, metrics=("127.0.0.1", 9)), dict(read="x", write="y", count=3),
    dict(hook=Hook.XDP, direction=Direction.IN), dict(ipfix=("127.0.0.1", 4739), flow_idle=5.0),
    dict(flow_records=True, flow_entries=10), dict(top=True, flow_active=30.0),
])
def test_what_goes_together_passes(kw):
    assert conflict(Options(**kw)) is None
    settings(**kw)


def test_defaults():
    s = settings()
    assert s.selection.names == ("eth9",) and s.directions == (DIR_IN,)
    assert s.pages == DEFAULT_PAGES and s.capture is None and s.flows is None
    assert settings(guest=(100,), follow=True).directions == (DIR_IN, DIR_OUT)
    assert settings(write="x").pages == capture_pages(2)
    # TCP health's records come in bursts: their rings are larger; none with --quiet.
    assert settings(rtt=True).pages == RTT_PAGES == capture_pages(2, RTT_PAGES)
    assert settings(rtt=True, quiet=True).pages == DEFAULT_PAGES
    assert settings(rtt=True, buffer_pages=64).pages == 64
    assert capture_pages(64, RTT_PAGES) == 256 and capture_pages(512, RTT_PAGES) == 128


def test_guests_by_id_or_name(tmp_path, monkeypatch):
    """--guest takes an id or a name (a VM's name:, a container's hostname:); one that is
    not there is refused in one line, or with --follow waited for."""
    (tmp_path / "qemu-server").mkdir()
    (tmp_path / "lxc").mkdir()
    (tmp_path / "qemu-server" / "100.conf").write_text("name: web1\n")
    (tmp_path / "lxc" / "101.conf").write_text("hostname: mail1\n")
    (tmp_path / "qemu-server" / "102.conf").write_text("name: web1\n")
    monkeypatch.setenv("NETMON_PVE_DIR", str(tmp_path))
    assert settings(guest=("mail1", "100", "101")).selection.guests == (101, 100)
    with pytest.raises(InterfaceNotFound, match=r"--guest 'web1': several guests are named "
                                                r"so on this node \(guests: 100 \(web1\), "
                                                r"101 \(mail1\), 102 \(web1\)\)"):
        settings(guest=("web1",))
    with pytest.raises(InterfaceNotFound, match="--guest 'db1': no guest is named so"):
        settings(guest=("db1",))
    with pytest.raises(InterfaceNotFound, match="--guest 999: no such guest on this node"):
        settings(guest=("999",))
    assert settings(guest=("999",), follow=True).selection.guests == (999,)
    # Every guest, VMs and containers alike: one way to say it.
    every = settings(guest=("all",))
    assert every.selection.patterns == ("tap[0-9]*i[0-9]*", "veth[0-9]*i[0-9]*")
    assert every.selection.all_guests and every.selection.matches("veth101i0")
    assert not every.selection.matches("veth1") and not every.selection.matches("vethab12")
    assert every.directions == (DIR_IN, DIR_OUT)


def test_modes_become_their_settings():
    s = settings(ipfix=("127.0.0.1", 4739), ipfix_domain=7)
    assert s.ipfix == ("127.0.0.1", 4739, 7) and s.flows and not s.flows.print_records
    assert settings(top=True).flows.top
    r = settings(read="f.pcap", json=True)
    assert r.read == "f.pcap" and r.selection.names == ("-",) and r.json


def test_bad_values():
    with pytest.raises(UsageError, match="power of two, not 3"):
        settings(buffer_pages=3)
    with pytest.raises(UsageError, match="empty interface name"):
        settings(interface=("a,",))
