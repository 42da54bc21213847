"""netmon drops (issue 19): the packets the kernel dropped, where and why, counted exactly.

Real drops in namespaces the tests make: datagrams to a port with no socket, an
nftables drop rule. The reason is this kernel's (5.17 and later); before, only the
location, and the tests say so.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from netmon import output
from netmon.kernel import drops
from tests.netns import Netmon, NetnsPair, ping, scaled, send

kernel = pytest.mark.kernel


def _has_reasons() -> bool:
    return bool(drops.reasons())


def _nft(n: NetnsPair, rules: str) -> None:
    n.run(n.b, "nft", "-f", "-", input=rules)


def _drops_of(nm: Netmon) -> list[str]:
    """The summary's table rows: interface, drops, why."""
    at = next(i for i, line in enumerate(nm.err) if line.startswith("netmon: drops by"))
    return [line.removeprefix("netmon: ").split(None, 2) for line in nm.err[at + 1:]
            if line.startswith("netmon:   ")]


def _ifindex(n: NetnsPair, ns: str, ifname: str) -> int:
    return int(n.run(ns, "ip", "-o", "link", "show", "dev", ifname).stdout.split(":")[0])


@kernel
@pytest.mark.parametrize("expression,counted", [(None, 4), ("udp dst port 5095", 4),
                                                 ("udp dst port 5096", 0)])
def test_the_program_counts_drops_by_interface_and_reason(netns, expression, counted):
    """The drops program alone, on its tracepoint (every kernel's verifier, CO-RE and
    raw tracepoint; an expression spliced in): datagrams to a closed port in b's
    namespace, counted in the kernel's table by b's veth and NO_SOCKET, or by where
    before 5.17. Drops in other namespaces (the host's, a's) are not counted."""
    from netmon.filters import FilterSpec
    from netmon.kernel.loader import MonitorProgram

    n = netns
    netns_ino = os.stat(f"/run/netns/{n.b}").st_ino
    index = _ifindex(n, n.b, n.b_if)
    config = FilterSpec(expression=expression).kernel_config(netns=netns_ino)
    with MonitorProgram(config, hooks=("drops",), expression=expression) as prog:
        prog.register(index)
        send(n, "udp", n.a_ip, 40095, n.b_ip, 5095, 10, 4)
        table = drops.table(prog.drops_fd)
        counters = prog.counters(index)
    if not counted:
        assert table == {}
        return
    ((key, count),) = table.items()
    ifindex, reason, location = key
    assert (ifindex, count) == (index, 4)
    if _has_reasons():
        assert (drops.reason_name(reason), location) == ("NO_SOCKET", 0)
    else:
        assert reason == 0 and drops.Symbols().name(location).startswith("__udp4_lib_rcv+")
    assert counters["matched"] == 4 and counters["drop_unkeyed"] == 0


@kernel
def test_a_port_with_no_socket_drops_each_datagram(netns):
    """5 datagrams to a closed port: 5 lines, the reason NO_SOCKET, in __udp4_lib_rcv,
    on b's veth; the summary counts them."""
    n = netns
    with Netmon(n, "drops", "-i", n.b_if, "--json", interface=None) as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40090, n.b_ip, 5090, 10, 5)
        nm.wait_lines(5)
        time.sleep(scaled(0.3))
        assert nm.stop() == 0
    got = [json.loads(line) for line in nm.out]
    assert [(d["ifname"], d["proto"], d["src"], d["dport"], d["len"]) for d in got] == [
        (n.b_if, "udp", n.a_ip, 5090, 14 + 20 + 8 + 10)] * 5
    assert all(d["location"].startswith("__udp4_lib_rcv+0x") for d in got)
    want = "NO_SOCKET" if _has_reasons() else None
    assert {d["reason"] for d in got} == {want}
    assert _drops_of(nm) == [[n.b_if, "5", want or f"at {got[0]['location']}"]]


@kernel
def test_an_nftables_drop_and_a_closed_port_told_apart_and_filtered(netns):
    """An nftables rule drops datagrams to one port; another port has no socket. Each
    drop has its own reason; an option and an expression narrow the drops as they
    narrow traffic, in the kernel (the counts too)."""
    n = netns
    _nft(n, "table inet nmt {\n chain in {\n  type filter hook input priority 0;\n"
            "  udp dport 5091 drop\n }\n}\n")
    for filters in (["--port", "5091"], ["udp", "dst", "port", "5091"], []):
        with Netmon(n, "drops", "-i", n.b_if, *filters, interface=None) as nm:
            nm.wait_ready()
            send(n, "udp", n.a_ip, 40091, n.b_ip, 5091, 10, 4)  # the rule's
            send(n, "udp", n.a_ip, 40092, n.b_ip, 5092, 10, 3)  # no socket
            nm.wait_lines(4 if filters else 7)
            time.sleep(scaled(0.3))
            assert nm.stop() == 0
        rule = "NETFILTER_DROP" if _has_reasons() else None
        # Where: nf_hook_slow, or nftables itself on later kernels.
        lines = [re.sub(r" (nf_hook_slow|nft_do_chain)\+0x[0-9a-f]+$", " NF", line)
                 for line in nm.out]
        ours = f"{n.b_if} UDP {n.a_ip}:40091 -> {n.b_ip}:5091 (52b) drop " + \
            (f"{rule} " if rule else "") + "NF"
        assert lines[:4] == [ours] * 4, filters
        table = {why.split(" at ")[0]: int(count) for _, count, why in _drops_of(nm)}
        if rule:
            assert table == ({rule: 4} if filters else {rule: 4, "NO_SOCKET": 3})
        else:
            assert sum(table.values()) == (4 if filters else 7)


@kernel
def test_traffic_without_drops_shows_none(netns):
    """Pings answered, datagrams received: nothing dropped on b's veth, nothing shown."""
    n = netns
    with Netmon(n, "drops", "-i", n.b_if, "--quiet", interface=None) as nm:
        nm.wait_ready()
        ping(n, n.b_ip, count=200)
        time.sleep(scaled(0.3))
        assert nm.stop() == 0
    assert nm.out == []
    assert "netmon: no drops" in nm.err


@kernel
def test_the_kernels_reasons_are_read_from_its_btf():
    """Names as the running kernel has them, not a table of netmon's."""
    names = drops.reasons()
    if not names:
        pytest.skip("this kernel gives no drop reasons (Linux < 5.17)")
    assert {"NO_SOCKET", "NOT_SPECIFIED", "NETFILTER_DROP"} <= set(names.values())
    assert names[2] == "NOT_SPECIFIED"  # the same on every kernel that has reasons


def test_locations_are_function_and_offset(tmp_path):
    syms = tmp_path / "kallsyms"
    syms.write_text("ffffffff81000000 T _stext\nffffffff81001000 t nf_hook_slow\n"
                    "ffffffff81002000 D some_data\nffffffff81003000 T kfree_skb_reason\n")
    s = drops.Symbols(str(syms))
    assert s.name(0xffffffff8100110a) == "nf_hook_slow+0x10a"
    assert s.name(0xffffffff81003000) == "kfree_skb_reason+0x0"
    assert s.name(0x1000) == "0x1000"
    hidden = tmp_path / "hidden"  # kptr_restrict: every address 0
    hidden.write_text("0000000000000000 T _stext\n0000000000000000 t nf_hook_slow\n")
    assert drops.Symbols(str(hidden)).name(0xffffffff8100110a) == "0xffffffff8100110a"


def test_a_drop_line_and_its_json():
    from netmon.events import make_event

    ev = make_event(10**9, 7, 60, 4, 6, "10.0.0.5", "10.0.0.9", 443, 51000)
    row = (*ev, 0xffffffff8100110a, 5)
    names = {7: "tap100i0"}
    text = output.DropText(names.get, {5: "NETFILTER_DROP"}.get,
                           lambda a: "nf_hook_slow+0x10a")
    assert text.render([row]) == ("tap100i0 TCP 10.0.0.5:443 -> 10.0.0.9:51000 (60b) drop "
                                  "NETFILTER_DROP nf_hook_slow+0x10a\n")
    no_reason = output.DropText(names.get, lambda r: None, lambda a: "nf_hook_slow+0x10a")
    assert no_reason.line(row).endswith("(60b) drop nf_hook_slow+0x10a")
    js = json.loads(output.DropJson(lambda i: {"ifname": "tap100i0", "guest": 100,
                                               "guest_name": "web"},
                                    {5: "NETFILTER_DROP"}.get, lambda a: "nf_hook_slow+0x10a",
                                    output.Clock(0)).line(row))
    assert (js["reason"], js["location"], js["guest"], js["guest_name"], js["dport"]) == (
        "NETFILTER_DROP", "nf_hook_slow+0x10a", 100, "web", 51000)
    assert "dir" not in js


@pytest.mark.parametrize("argv", [["drops", "-w", "x.pcapng"], ["drops", "--flows"],
                                  ["drops", "-Q", "out"], ["drops", "--hook", "tc"],
                                  ["drops", "-r", "x.pcap"]])
def test_what_drops_cannot_do_is_one_line(capsys, argv):
    from netmon import cli

    assert cli.main(argv + ["-i", "nmt-none0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "netmon drops" in err


@kernel
def test_metrics_count_drops_by_interface_and_reason(netns):
    """--metrics with --quiet: netmon_drops_total, from the kernel's table."""
    from tests.test_export import free_port, http_get

    n = netns
    port = free_port(n, n.b)
    reason = "NO_SOCKET" if _has_reasons() else ""
    want = re.compile(r'netmon_drops_total\{(?=[^}]*interface="%s")(?=[^}]*guest="")'
                      r'(?=[^}]*reason="%s")[^}]*\} 5\.0' % (n.b_if, reason))
    with Netmon(n, "drops", "-i", n.b_if, "--quiet", "--metrics", str(port),
                interface=None) as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40093, n.b_ip, 5093, 10, 5)
        deadline = time.monotonic() + scaled(10)
        text = ""
        while not want.search(text) and time.monotonic() < deadline:
            time.sleep(0.5)
            text = http_get(n, f"http://127.0.0.1:{port}/metrics")
        assert want.search(text), text
        assert nm.stop() == 0
    assert nm.out == []


@kernel
def test_reverse_path_filtering_drops_a_spoofed_source(netns):
    """rp_filter on b: a datagram from a source b would not route back over its veth
    (it has no route at all) is dropped, IP_RPFILTER."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    n = netns
    for conf in ("all", n.b_if):
        n.run(n.b, "sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=1")
    frame = bytes(Ether(src=n.mac(n.a), dst=n.mac(n.b)) / IP(src="10.254.1.1", dst=n.b_ip)
                  / UDP(sport=40094, dport=5094) / (b"r" * 10))
    with Netmon(n, "drops", "-i", n.b_if, "--json", interface=None) as nm:
        nm.wait_ready()
        for _ in range(3):
            send(n, "raw", n.a_if, frame.hex())
        nm.wait_lines(3)
        time.sleep(scaled(0.3))
        assert nm.stop() == 0
    got = [json.loads(line) for line in nm.out]
    assert [(d["src"], d["dport"]) for d in got] == [("10.254.1.1", 5094)] * 3
    if _has_reasons():
        assert {d["reason"] for d in got} == {"IP_RPFILTER"}
    assert _drops_of(nm)[0][:2] == [n.b_if, "3"]
