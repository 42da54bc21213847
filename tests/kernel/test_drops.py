"""netmon drops (issue 19): the packets the kernel dropped, where and why, counted exactly.

Real drops in namespaces the tests make: datagrams to a port with no socket, an
nftables drop rule. The reason is this kernel's (5.17 and later); before, only the
location, and the tests say so.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from netmon.sinks import formats
from netmon.kernel import drops
from netmon.kernel import config as nm_config
from tests.support.netns import NetnsPair, scaled, send
from tests.support.runner import Netmon
from tests.support.tmux import pane

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


def _raw_drops(n: NetnsPair, frame: str, *args: str, count: int = 3) -> tuple[Netmon, list]:
    """netmon drops --json ARGS while a sends ``frame`` (hex) ``count`` times: netmon
    (stopped) and its drops."""
    with Netmon(n, "drops", "--json", *args, interface=None) as nm:
        nm.wait_ready()
        for _ in range(count):
            send(n, "raw", n.a_if, frame)
        nm.wait_lines(count)
        time.sleep(scaled(0.3))
        assert nm.stop() == 0
    return nm, [json.loads(line) for line in nm.out]


def _ifindex(n: NetnsPair, ns: str, ifname: str) -> int:
    return int(n.run(ns, "ip", "-o", "link", "show", "dev", ifname).stdout.split(":")[0])


@kernel
# Without an expression last: netmon's section handlers, registered by the first load
# with one, then stand in for libbpf's (they find the tracepoint in the BTF themselves).
@pytest.mark.parametrize("expression,counted", [("udp dst port 5095", 4),
                                                 ("udp dst port 5096", 0), (None, 4)])
def test_the_program_counts_drops_by_interface_and_reason(netns, expression, counted):
    """The drops program alone, on its tracepoint (every kernel's verifier, CO-RE, the
    BTF tracepoint; an expression spliced in): datagrams to a closed port in b's
    namespace, counted in the kernel's table by b's veth and NO_SOCKET, or by where
    before 5.17. Drops in other namespaces (the host's, a's) are not counted."""
    from netmon.filters import FilterSpec
    from netmon.kernel.loader import MonitorProgram

    n = netns
    netns_ino = os.stat(f"/run/netns/{n.b}").st_ino
    index = _ifindex(n, n.b, n.b_if)
    config = nm_config.pack(FilterSpec(expression=expression).kernel_filters(), netns=netns_ino)
    with MonitorProgram(config, hooks=("drops",), expression=expression) as prog:
        prog.slots.register(index)
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
    """100,000 pings answered: nothing dropped on b's veth, nothing shown."""
    n = netns
    with Netmon(n, "drops", "-i", n.b_if, "--quiet", interface=None) as nm:
        nm.wait_ready()
        res = n.run(n.a, "ping", "-n", "-q", "-f", "-c", "100000", n.b_ip)
        assert "100000 received" in res.stdout
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
    # The values move between kernels (6.1 has no SKB_CONSUMED: NOT_SPECIFIED is 1 there,
    # 2 from 6.3): the program's counts are named by this kernel's, as the tests above see.
    assert names[0] == "SKB_NOT_DROPPED_YET" and names[1] in ("NOT_SPECIFIED", "SKB_CONSUMED")


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
    text = formats.DropText(names.get, {5: "NETFILTER_DROP"}.get,
                           lambda a: "nf_hook_slow+0x10a")
    assert text.render([row]) == ("tap100i0 TCP 10.0.0.5:443 -> 10.0.0.9:51000 (60b) drop "
                                  "NETFILTER_DROP nf_hook_slow+0x10a\n")
    no_reason = formats.DropText(names.get, lambda r: None, lambda a: "nf_hook_slow+0x10a")
    assert no_reason.line(row).endswith("(60b) drop nf_hook_slow+0x10a")
    js = json.loads(formats.DropJson(lambda i: {"ifname": "tap100i0", "guest": 100,
                                               "guest_name": "web"},
                                    {5: "NETFILTER_DROP"}.get, lambda a: "nf_hook_slow+0x10a",
                                    formats.Clock(0)).line(row))
    assert (js["reason"], js["location"], js["guest"], js["guest_name"], js["dport"]) == (
        "NETFILTER_DROP", "nf_hook_slow+0x10a", 100, "web", 51000)
    assert "dir" not in js
    # A drop with no device (ifindex 0): no name in JSON, as "-" in the text and metrics.
    deviceless = (*make_event(10**9, 0, 60, 4, 6, "10.0.0.5", "10.0.0.9", 443, 51000),
                  0xffffffff8100110a, 5)
    assert text.render([deviceless]).startswith("- TCP 10.0.0.5:443")
    js = json.loads(formats.DropJson(lambda i: {"ifname": str(i)}, {5: "NETFILTER_DROP"}.get,
                                     lambda a: "nf_hook_slow+0x10a",
                                     formats.Clock(0)).line(deviceless))
    assert js["ifname"] is None


@pytest.mark.parametrize("argv", [["drops", "-w", "x.pcapng"], ["drops", "--flows"],
                                  ["drops", "-Q", "out"], ["drops", "--hook", "tc"],
                                  ["drops", "-r", "x.pcap"], ["drops", "inbound"],
                                  ["drops", "outbound", "and", "udp"], ["drops", "ifindex", "3"],
                                  ["drops", "udp[300:4]", "=", "1"], ["drops", "ip[250:4]=0"]])
def test_what_drops_cannot_do_is_one_line(capsys, argv):
    from netmon import cli

    assert cli.main(argv + ["-i", "nmt-none0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "netmon drops" in err


@kernel
def test_metrics_count_drops_by_interface_and_reason(netns):
    """--metrics with --quiet: netmon_drops_total, from the kernel's table."""
    from tests.support.http import free_port, http_get

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
        # It counts drops, not traffic: no series of zeros that read as "no traffic".
        assert "netmon_packets_total{" not in text and "netmon_bytes_total{" not in text
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
    nm, got = _raw_drops(n, frame.hex(), "-i", n.b_if)
    assert [(d["src"], d["dport"]) for d in got] == [("10.254.1.1", 5094)] * 3
    if _has_reasons():
        assert {d["reason"] for d in got} == {"IP_RPFILTER"}
    assert _drops_of(nm)[0][:2] == [n.b_if, "3"]


def _reason(name: str) -> str | None:
    """``name`` where this kernel has it; NOT_SPECIFIED where it has reasons but not this
    one yet; None before 5.17."""
    names = set(drops.reasons().values())
    if not names:
        return None
    return name if name in names else "NOT_SPECIFIED"


def _udp_to(n: NetnsPair, dst: str, ttl: int = 64) -> str:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(src=n.mac(n.a), dst=n.mac(n.b)) / IP(src=n.a_ip, dst=dst, ttl=ttl)
                 / UDP(sport=40100, dport=5100) / (b"f" * 10)).hex()


# (name, commands in b, ttl, the reason, the function that drops it: one of them)
ROUTED = [
    ("forwarding off", [["sysctl", "-qw", "net.ipv4.ip_forward=0"]], 64,
     "IP_INADDRERRORS", "ip_error"),
    ("no route", [["sysctl", "-qw", "net.ipv4.ip_forward=1"]], 64, "IP_INNOROUTES",
     "ip_error"),
    ("ttl expired", [["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                     ["ip", "route", "add", "10.250.0.0/24", "dev", "lo"]], 1, "IP_INHDR",
     "ip_forward"),
    ("nftables on forward", [["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                             ["ip", "route", "add", "10.250.0.0/24", "dev", "lo"],
                             ["nft", "add", "table", "inet", "nmt"],
                             ["nft", "add", "chain", "inet", "nmt", "nmtfw",
                              "{ type filter hook forward priority 0 ; }"],
                             ["nft", "add", "rule", "inet", "nmt", "nmtfw", "udp", "dport",
                              "5100", "drop"]], 64, "NETFILTER_DROP", ("nf_hook_slow",
                                                                       "nft_do_chain")),
]


@kernel
@pytest.mark.parametrize("name,setup,ttl,reason,where", ROUTED, ids=[r[0] for r in ROUTED])
def test_a_router_drops_what_it_cannot_forward(netns, name, setup, ttl, reason, where):
    """a routes 10.250.0.0/24 through b, which cannot pass it on: forwarding off, no
    route, the TTL run out, an nftables rule on forward. Three datagrams, three drops,
    this kernel's reason for each, and where."""
    n = netns
    n.run(n.a, "ip", "route", "add", "10.250.0.0/24", "via", n.b_ip)
    for command in setup:
        n.run(n.b, *command)
    nm, got = _raw_drops(n, _udp_to(n, "10.250.0.5", ttl), "-i", n.b_if, "udp", "port", "5100")
    assert [(d["dst"], d["dport"]) for d in got] == [("10.250.0.5", 5100)] * 3
    assert {d["reason"] for d in got} == {_reason(reason)}
    assert {d["location"].split("+")[0] for d in got} <= set(
        where if isinstance(where, tuple) else (where,))
    assert _drops_of(nm)[0][:2] == [n.b_if, "3"]


@kernel
def test_a_tc_filter_that_drops_is_a_drop(netns, bpf_objects):
    """Someone else's tc filter returns TC_ACT_SHOT for echo requests to b's .4 address:
    each is a drop on b's veth (TC_INGRESS from Linux 6.8; where, before)."""
    n = netns
    drop = bpf_objects("tc_drop")
    n.run(n.b, "tc", "qdisc", "add", "dev", n.b_if, "clsact")
    n.run(n.b, "tc", "filter", "add", "dev", n.b_if, "ingress", "bpf", "da", "obj", str(drop),
          "sec", "tc")
    with Netmon(n, "drops", "-i", n.b_if, "--json", "icmp", interface=None) as nm:
        nm.wait_ready()
        n.run(n.a, "ping", "-n", "-q", "-c", "3", "-i", "0.05", "-W", "1", n.b_ip2, check=False)
        nm.wait_lines(3)
        time.sleep(scaled(0.3))
        assert nm.stop() == 0
    got = [json.loads(line) for line in nm.out]
    assert [(d["dst"], d["icmp_type"]) for d in got] == [(n.b_ip2, 8)] * 3
    assert {d["reason"] for d in got} == {_reason("TC_INGRESS")}


@kernel
def test_a_stopped_guests_tap_drops_at_the_bridge(netns):
    """The Proxmox case of a VM stopped while its tap stays (no process holds it): the
    bridge knows the guest's MAC on that port, which does not forward. The frame is
    dropped on the bridge port it came in on, where the bridge found nowhere to send it."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    n = netns
    guest_mac = "02:00:00:00:01:00"
    for command in (["ip", "link", "add", "nmtbr0", "type", "bridge"],
                    ["ip", "link", "set", n.b_if, "master", "nmtbr0"],
                    ["ip", "tuntap", "add", "mode", "tap", "tap100i0"],
                    ["ip", "link", "set", "tap100i0", "master", "nmtbr0"],
                    ["ip", "link", "set", "tap100i0", "up"],
                    ["ip", "link", "set", "nmtbr0", "up"],
                    ["bridge", "fdb", "add", guest_mac, "dev", "tap100i0", "master", "static"]):
        n.run(n.b, *command)
    frame = bytes(Ether(src=n.mac(n.a), dst=guest_mac) / IP(src=n.a_ip, dst="10.0.9.100")
                  / UDP(sport=40101, dport=5101) / (b"t" * 10)).hex()
    _, got = _raw_drops(n, frame, "udp", "port", "5101")
    assert [(d["ifname"], d["dst"]) for d in got] == [(n.b_if, "10.0.9.100")] * 3
    assert {d["location"].split("+")[0] for d in got} == {"br_handle_frame_finish"}


def _top_blocks(out: list[str]) -> list[list[str]]:
    """top's plain output (not a terminal): one block of lines per interval."""
    blocks, block = [], []
    for line in out:
        if line:
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    return blocks


@kernel
def test_top_shows_the_drops_beside_the_flows(netns):
    """top --drops, its plain text (stdout a pipe): the flow of the datagrams, and below
    it the drops they became, by interface and reason, the kernel's exact total."""
    n = netns
    with Netmon(n, "top", "--drops", "-i", n.b_if, interface=None) as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40096, n.b_ip, 5096, 10, 5)
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline:
            blocks = _top_blocks(nm.out)
            if blocks and any(line.endswith(" 5") and n.b_if in line for line in blocks[-1]):
                break
            time.sleep(0.2)
        assert nm.stop() == 0
    last = next(b for b in reversed(_top_blocks(nm.out)) if any("DROPS" in x for x in b))
    at = next(i for i, line in enumerate(last) if line.startswith("DROPS"))
    assert last[at].split() == ["DROPS", "WHY", "2s/s", "10s/s", "40s/s", "TOTAL"]
    cells = last[at + 1].split()
    reason = _reason("NO_SOCKET") or "__udp4_lib_rcv"
    assert (cells[0], cells[1].split("+")[0], cells[-1]) == (n.b_if, reason, "5"), last
    assert any(line.startswith("UDP ") and f":{5096}" in line for line in last[:at]), last
    # Traffic counters stay the traffic's: the drops are in the table only.
    assert ", 5 matched, 0 sent" in "\n".join(nm.err)


@kernel
def test_top_drops_panel_as_a_person_sees_it(netns):
    """top --drops in tmux: the panel below the flows, the drops' rate and total."""
    import subprocess
    import sys

    from tests.support.netns import ROOT

    if subprocess.run(["which", "tmux"], capture_output=True).returncode:
        pytest.skip("needs tmux (apt-get install tmux)")
    n = netns
    session = f"nmt-topdrops-{n.id}"
    cmd = " ".join(n.exec_args(n.b, sys.executable, "-m", "netmon", "top", "--drops", "-i",
                               n.b_if))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    f"cd {ROOT} && {cmd}"], check=True)
    try:
        deadline = time.monotonic() + scaled(10)
        screen = ""
        while "DROPS" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
            screen = pane(session)
        send(n, "udp", n.a_ip, 40097, n.b_ip, 5097, 10, 20)
        reason = _reason("NO_SOCKET") or "__udp4_lib_rcv"
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline:
            screen = pane(session)
            rows = [line.split() for line in screen.splitlines()
                    if line.startswith(n.b_if + " ") and reason in line]
            if rows and rows[0][-1] == "20":
                break
            time.sleep(0.3)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert rows and rows[0][-1] == "20", screen
    assert "DROPS" in screen and "WHY" in screen


def _drop_monitor() -> str | None:
    """Why dropwatch cannot run here, or None: it needs the kernel's drop monitor
    (NET_DM, the drop_monitor module)."""
    import shutil
    import subprocess

    if shutil.which("dropwatch") is None:
        return "needs dropwatch (apt-get install dropwatch)"
    subprocess.run(["modprobe", "drop_monitor"], capture_output=True)
    if not os.path.exists("/sys/module/drop_monitor") and not os.path.exists(
            "/sys/kernel/btf/drop_monitor"):
        return "this kernel has no drop monitor (CONFIG_NET_DROP_MONITOR) for dropwatch"
    return None


@kernel
def test_netmon_counts_what_dropwatch_counts_and_says_why(netns):
    """dropwatch (-l kas) and netmon drops on the same drops: netmon counts at least what
    dropwatch counts where they happened, and gives the reason dropwatch has not."""
    import signal
    import subprocess
    import threading

    why_not = _drop_monitor()
    if why_not:
        pytest.skip(why_not)
    n = netns
    watch = subprocess.Popen("(echo start; sleep 600) | stdbuf -oL dropwatch -l kas",
                             shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(watch.stdout), daemon=True).start()
    pattern = re.compile(r"^(\d+) drops at __udp4_lib_rcv\+[0-9a-f]+ ")

    def theirs() -> int:
        return sum(int(m.group(1)) for m in map(pattern.match, list(lines)) if m)

    def wait_for(done) -> None:
        deadline = time.monotonic() + scaled(10)
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)
    try:
        with Netmon(n, "drops", "-i", n.b_if, "--json", interface=None) as nm:
            nm.wait_ready()
            wait_for(lambda: any("monitoring activated" in line for line in lines))
            send(n, "udp", n.a_ip, 40102, n.b_ip, 5102, 10, 20)
            nm.wait_lines(20)
            wait_for(lambda: theirs() >= 20)  # it reports what it saw once a second
            assert nm.stop() == 0
    finally:
        os.killpg(watch.pid, signal.SIGKILL)
        watch.wait()
    got = [json.loads(line) for line in nm.out]
    ours = sum(d["location"].startswith("__udp4_lib_rcv+") for d in got)
    assert theirs() > 0, lines
    assert ours == 20 and ours >= theirs(), lines
    if _has_reasons():
        assert {d["reason"] for d in got} == {"NO_SOCKET"}


@kernel
def test_a_containers_drop_in_its_own_namespace_is_the_guests(netns, tmp_path):
    """CT 101 in a namespace of its own, as Proxmox VE makes it: the host's veth101i0,
    its eth0 inside. A datagram to a closed port in the container is dropped there, by
    the node's kernel: netmon drops --guest 101 shows it, on veth101i0, named as the
    guest (it said "no drops": only netmon's own namespace counted)."""
    from tests.support.netns import sh

    from tests.support.pve import fake_pve

    n = netns
    env = fake_pve(tmp_path, containers={101: "ct1"})
    ct = f"{n.id}-ct"
    sh("ip", "netns", "add", ct)
    try:
        n.run(n.b, "ip", "link", "add", "veth101i0", "type", "veth", "peer", "name", "eth0",
              "netns", ct)
        n.run(n.b, "ip", "addr", "add", "10.197.101.1/24", "dev", "veth101i0")
        n.run(n.b, "ip", "link", "set", "veth101i0", "up")
        n.run(ct, "ip", "addr", "add", "10.197.101.2/24", "dev", "eth0")
        n.run(ct, "ip", "link", "set", "eth0", "up")
        n.run(ct, "ip", "link", "set", "lo", "up")
        with Netmon(n, "drops", "--guest", "101", "--json", "udp", interface=None,
                    env=env) as nm:
            nm.wait_ready()
            n.run(n.b, sys.executable, "-m", "tests.support.traffic", "udp", "10.197.101.1",
                  "40102", "10.197.101.2", "5102", "10", "3")
            nm.wait_lines(3)
            time.sleep(scaled(0.3))
            assert nm.stop() == 0
    finally:
        sh("ip", "netns", "del", ct, check=False)
    got = [json.loads(line) for line in nm.out]
    assert [(d["ifname"], d["guest"], d["guest_name"], d["dst"], d["dport"]) for d in got] \
        == [("veth101i0", 101, "ct1", "10.197.101.2", 5102)] * 3, nm.out
    assert all(d["location"].startswith("__udp4_lib_rcv+0x") for d in got)
    want = "NO_SOCKET" if _has_reasons() else None
    assert {d["reason"] for d in got} == {want}
