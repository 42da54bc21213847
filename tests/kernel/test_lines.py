"""netmon end to end: the real object, attached to a real veth, real packets, exact lines.

Traffic flows from namespace a to namespace b, where netmon watches b's veth.
Excluded traffic is always sent before included traffic, so a filter that
failed to exclude would show up ahead of the expected lines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from netmon.kernel import facts
from tests.support.netns import ROOT, Listener, ping, scaled, send
from tests.support.runner import READY, Netmon

pytestmark = pytest.mark.kernel

UDP_HDRS = 14 + 20 + 8
ICMP_ECHO = 14 + 20 + 8 + 56  # ping's default payload
TCP_SYN = 14 + 20 + 40  # MSS, SACK, timestamps, window scale
TCP_ACK = 14 + 20 + 32  # timestamps


SUMMARY = re.compile(
    r"netmon: (?P<seen>\d+) packets seen \((?P<non_ip>\d+) not IP, (?P<malformed>\d+) "
    r"malformed\), (?P<matched>\d+) matched, (?P<sent>\d+) sent, (?P<shown>\d+) shown, "
    r"(?P<lost>\d+) lost \((?P<send_failed>\d+) send failures, (?P<perf_lost>\d+) reported "
    r"by the perf buffer\)$")


def summary(line: str, prefix: str = "netmon: ") -> dict[str, int]:
    m = SUMMARY.match("netmon: " + line[len(prefix):])
    assert m, f"not a summary line: {line!r}"
    return {k: int(v) for k, v in m.groupdict().items()}


def udp_line(src, sport, dst, dport, payload):
    return f"UDP {src}:{sport} -> {dst}:{dport} ({UDP_HDRS + payload}b)"


def test_every_protocol_unfiltered(netns):
    n = netns
    with Netmon(n, "--count", "3") as nm:
        nm.wait_ready()
        ping(n, n.b_ip)
        send(n, "udp", n.a_ip, 40001, n.b_ip, 5001, 100)
        send(n, "syn", n.a_ip, 40002, n.b_ip, 5999)
        assert nm.wait_exit() == 0
    assert nm.out == [
        f"ICMP {n.a_ip} -> {n.b_ip} ({ICMP_ECHO}b)",
        udp_line(n.a_ip, 40001, n.b_ip, 5001, 100),
        f"TCP {n.a_ip}:40002 -> {n.b_ip}:5999 ({TCP_SYN}b)",
    ]


def test_banner_and_summary_go_to_stderr(netns):
    n = netns
    with Netmon(n, "--protocol", "udp", "--dst-port", "5001") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40001, n.b_ip, 5001, 10, 2)
        nm.wait_lines(2)
        assert nm.stop(signal.SIGINT) == 0
    err = "\n".join(nm.err)
    assert f"Interface: {n.b_if}" in err
    assert "Attach mode: native (bpf_link)" in err
    assert "Protocol: udp" in err and "Destination port: 5001" in err
    counts = summary(nm.err[-1])
    assert (counts["matched"], counts["sent"], counts["shown"], counts["lost"]) == (2, 2, 2, 0)
    # ARP from a is the only other traffic b receives: seen, counted, not shown.
    assert counts["seen"] == counts["non_ip"] + counts["matched"]
    assert nm.out == [udp_line(n.a_ip, 40001, n.b_ip, 5001, 10)] * 2
    assert n.xdp_prog_id() == 0


# Packets for the filter table. A1/A2 are a's addresses, B1/B2 b's.
def udp(src, sport, dst, dport, payload):
    return ("udp", src, sport, dst, dport, payload)


def syn(src, sport, dst, dport):
    return ("syn", src, sport, dst, dport)


def icmp(src, dst):
    return ("icmp", src, dst)


# (options, [(packet, shown?)]): each case ends with a shown packet, so a packet
# the filter should have dropped would take the place of an expected line.
FILTER_CASES = {
    "protocol icmp": (["--protocol", "icmp"], [
        (udp("A1", 40003, "B1", 5003, 20), False), (syn("A1", 40004, "B1", 5998), False),
        (icmp("A1", "B1"), True)]),
    "protocol udp": (["--protocol", "udp"], [
        (icmp("A1", "B1"), False), (syn("A1", 40004, "B1", 5998), False),
        (udp("A1", 40003, "B1", 5003, 20), True)]),
    "protocol tcp": (["--protocol", "tcp"], [
        (icmp("A1", "B1"), False), (udp("A1", 40003, "B1", 5003, 20), False),
        (syn("A1", 40004, "B1", 5998), True)]),
    "src-ip": (["--src-ip", "A2"], [
        (udp("A1", 40005, "B1", 5005, 1), False), (icmp("A1", "B1"), False),
        (udp("A2", 40005, "B1", 5005, 2), True), (icmp("A2", "B1"), True)]),
    "dst-ip prefix": (["--dst-ip", "B2/32"], [
        (udp("A1", 40006, "B1", 5006, 3), False), (udp("A1", 40006, "B2", 5006, 4), True)]),
    "src-ip and dst-ip": (["--src-ip", "A1", "--dst-ip", "B2"], [
        (udp("A2", 40007, "B2", 5007, 5), False), (udp("A1", 40007, "B1", 5007, 6), False),
        (udp("A1", 40007, "B2", 5007, 7), True)]),
    "src-port": (["--src-port", "40010"], [
        (udp("A1", 40011, "B1", 5010, 8), False), (udp("A1", 40010, "B1", 5010, 9), True),
        (syn("A1", 40010, "B1", 5997), True)]),
    "dst-port": (["--dst-port", "443"], [
        (icmp("A1", "B1"), False), (udp("A1", 40012, "B1", 444, 10), False),
        (udp("A1", 40012, "B1", 443, 11), True)]),
}


@pytest.mark.parametrize("args,packets", FILTER_CASES.values(), ids=FILTER_CASES.keys())
def test_filters(netns, args, packets):
    n = netns
    addr = {"A1": n.a_ip, "A2": n.a_ip2, "B1": n.b_ip, "B2": n.b_ip2}

    def resolve(text):
        head, _, tail = text.partition("/")
        return addr[head] + (f"/{tail}" if tail else "") if head in addr else text

    packets = [(tuple(resolve(f) if isinstance(f, str) else f for f in p), shown)
               for p, shown in packets]
    expected = [expected_line(p) for p, shown in packets if shown]
    with Netmon(n, *map(resolve, args), "--count", str(len(expected))) as nm:
        nm.wait_ready()
        for p, _ in packets:
            emit(n, p)
        assert nm.wait_exit() == 0
    assert nm.out == expected


def emit(n, packet):
    if packet[0] == "icmp":
        ping(n, packet[2], src=packet[1])
    else:
        send(n, *packet)


def expected_line(packet):
    kind, src, *rest = packet
    if kind == "icmp":
        return f"ICMP {src} -> {rest[0]} ({ICMP_ECHO}b)"
    if kind == "syn":
        sport, dst, dport = rest
        return f"TCP {src}:{sport} -> {dst}:{dport} ({TCP_SYN}b)"
    return udp_line(src, *rest)


def test_tcp_connection_with_the_originals_combined_filter(netns):
    n = netns
    args = ["--protocol", "tcp", "--src-ip", n.a_ip, "--dst-port", "22", "--count", "3"]
    with Netmon(n, *args) as nm, Listener(n, n.b_ip, 22):
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40013, n.b_ip, 22, 12)
        send(n, "tcp", n.a_ip, 40013, n.b_ip, 22, 100)
        assert nm.wait_exit() == 0
    assert nm.out == [
        f"TCP {n.a_ip}:40013 -> {n.b_ip}:22 ({TCP_SYN}b)",
        f"TCP {n.a_ip}:40013 -> {n.b_ip}:22 ({TCP_ACK}b)",
        f"TCP {n.a_ip}:40013 -> {n.b_ip}:22 ({TCP_ACK + 100}b)",
    ]


def test_count_stops_after_n_shown(netns):
    n = netns
    with Netmon(n, "--count", "2") as nm:
        nm.wait_ready()
        ping(n, n.b_ip, count=5)
        assert nm.wait_exit() == 0
    assert nm.out == [f"ICMP {n.a_ip} -> {n.b_ip} ({ICMP_ECHO}b)"] * 2
    assert summary(nm.err[-1])["shown"] == 2 and summary(nm.err[-1])["lost"] == 0
    assert n.xdp_prog_id() == 0


def test_json_lines(netns):
    n = netns
    with Netmon(n, "--json", "--count", "2") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40014, n.b_ip, 5014, 30)
        ping(n, n.b_ip)
        assert nm.wait_exit() == 0
    udp, icmp = (json.loads(line) for line in nm.out)
    assert udp["ts"] > 1.6e9 and isinstance(udp["ts"], float)
    del udp["ts"], icmp["ts"]
    assert udp == {"ifname": n.b_if, "dir": "in", "proto": "udp", "ipproto": 17,
                   "src": n.a_ip, "dst": n.b_ip, "sport": 40014, "dport": 5014,
                   "len": UDP_HDRS + 30, "segs": 1, "vlan": None, "icmp_type": None, "icmp_code": None, "tcp_flags": None,
                   "frag": False}
    assert (icmp["proto"], icmp["sport"], icmp["dport"], icmp["icmp_type"], icmp["len"]) == \
        ("icmp", None, None, 8, ICMP_ECHO)


def test_output_is_flushed_while_running(netns):
    n = netns
    with Netmon(n, "--protocol", "icmp") as nm:
        nm.wait_ready()
        ping(n, n.b_ip)
        assert nm.wait_lines(1) == [f"ICMP {n.a_ip} -> {n.b_ip} ({ICMP_ECHO}b)"]
        assert nm.proc.poll() is None
        assert nm.stop(signal.SIGTERM) == 0
    counts = summary(nm.err[-1])
    assert (counts["matched"], counts["shown"], counts["lost"]) == (1, 1, 0)


def _netmon_into_a_pipe(n, *args):
    """netmon whose stdout is a pipe this test reads when it chooses: (process, read end)."""
    r, w = os.pipe()
    proc = subprocess.Popen(n.exec_args(n.b, sys.executable, "-m", "netmon", "-i", n.b_if,
                                        *args), stdout=w, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    os.close(w)
    for line in proc.stderr:
        if READY in line:
            return proc, r
    proc.kill()
    raise AssertionError(f"netmon did not start: {proc.wait()}")


def _read_to_end(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


def test_a_stop_while_the_reader_lags_writes_every_line_it_counts(netns):
    # 600 JSON lines, about 150 kB: more than the pipe holds, so netmon is blocked in a
    # write when SIGINT comes; Python's own write() dropped the rest (272 arrived).
    n = netns
    proc, r = _netmon_into_a_pipe(n, "--json", "udp")
    try:
        send(n, "udp", n.a_ip, 40016, n.b_ip, 5016, 100, 600)
        time.sleep(scaled(1))  # not measured: lets netmon fill the pipe and block
        proc.send_signal(signal.SIGINT)
        lines = _read_to_end(r).decode().splitlines()
        assert proc.wait(scaled(30)) == 0
        err = proc.stderr.read().splitlines()
    finally:
        proc.kill()
        proc.wait()
        os.close(r)
    assert len(lines) == 600 and all(json.loads(line)["dport"] == 5016 for line in lines)
    counts = summary(err[-1])
    assert (counts["matched"], counts["shown"], counts["lost"]) == (600, 600, 0)


def test_a_reader_that_goes_away_is_told_in_the_summary(netns):
    n = netns
    proc, r = _netmon_into_a_pipe(n, "--json", "udp")
    try:
        send(n, "udp", n.a_ip, 40017, n.b_ip, 5017, 100, 600)
        time.sleep(scaled(1))
        got = os.read(r, 10_000)  # the first forty-odd lines and part of the next
        os.close(r)
        r = None
        assert proc.wait(scaled(30)) == 0  # it stops by itself: no one reads
        err = proc.stderr.read().splitlines()
    finally:
        proc.kill()
        proc.wait()
        if r is not None:
            os.close(r)
    unread = int(re.fullmatch(r"netmon: (\d+) lines did not reach standard output: its "
                              r"reader went away", err[-2]).group(1))
    counts = summary(err[-1])
    assert counts["matched"] == 600 and counts["shown"] + unread == 600
    # What was read whole was shown; what the pipe held when it was closed had left
    # netmon whole too, and counts as shown.
    assert counts["shown"] >= got.count(b"\n") and unread > 0


def test_stats_lines_on_stderr(netns):
    n = netns
    with Netmon(n, "--protocol", "udp", "--stats", "0.2") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40020, n.b_ip, 5020, 5, 3)
        send(n, "syn", n.a_ip, 40021, n.b_ip, 5021)
        nm.wait_lines(3)
        ping(n, n.b_ip, count=3)
        nm.wait_stderr("netmon: stats: ", after=len(nm.err))  # one taken after the pings
        assert nm.stop() == 0
    stats = [summary(line, "netmon: stats: ") for line in nm.err
             if line.startswith("netmon: stats: ") and " packets seen " in line]
    # Each says who the run became, too.
    assert any(line.startswith("netmon: stats: running as ") for line in nm.err)
    assert stats, nm.err
    final = summary(nm.err[-1])
    assert stats[-1] == final
    # Three UDP matched; the SYN and the pings were seen but filtered out in the kernel.
    assert (final["matched"], final["sent"], final["shown"], final["lost"]) == (3, 3, 3, 0)
    assert final["seen"] == final["non_ip"] + 3 + 1 + 3
    assert nm.out == [udp_line(n.a_ip, 40020, n.b_ip, 5020, 5)] * 3


@pytest.mark.parametrize("mode,shown", [("native", "native"), ("generic", "generic"),
                                        ("auto", "native")])
def test_attach_modes(netns, mode, shown):
    n = netns
    with Netmon(n, "--mode", mode, "--protocol", "icmp", "--count", "1") as nm:
        nm.wait_ready()
        assert n.xdp_prog_id() != 0
        ping(n, n.b_ip)
        assert nm.wait_exit() == 0
    assert f"Attach mode: {shown} (bpf_link)" in nm.err
    assert nm.out == [f"ICMP {n.a_ip} -> {n.b_ip} ({ICMP_ECHO}b)"]
    assert n.xdp_prog_id() == 0


def test_auto_falls_back_to_generic_where_native_cannot_attach(netns):
    n = netns
    # Loopback has no driver-mode XDP.
    nm = Netmon(n, "--mode", "native", interface="lo")
    assert nm.wait_exit() == 8
    assert nm.err[0].startswith("netmon: error: cannot attach XDP to lo in native mode")
    assert len(nm.err) == 1

    with Netmon(n, "--protocol", "icmp", "--count", "1", interface="lo") as nm:
        nm.wait_ready()
        n.run(n.b, "ping", "-n", "-q", "-c", "1", "127.0.0.1")
        assert nm.wait_exit() == 0
    assert "Attach mode: generic (bpf_link)" in nm.err
    assert nm.out == [f"ICMP 127.0.0.1 -> 127.0.0.1 ({ICMP_ECHO}b)"]


@pytest.mark.skipif(not facts.supports("frags"),
                    reason="multi-buffer XDP needs Linux >= 5.18")
def test_jumbo_frames_are_counted_whole(netns):
    n = netns
    for ns, dev in ((n.a, n.a_if), (n.b, n.b_if)):
        n.run(ns, "ip", "link", "set", "dev", dev, "mtu", "9000")
    with Netmon(n, "--protocol", "udp", "--count", "1") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40060, n.b_ip, 5060, 8000)
        assert nm.wait_exit() == 0
    # Native mode on a 9000-byte MTU: the frame spans buffers, the length is all of them.
    assert "Attach mode: native (bpf_link)" in nm.err
    assert nm.out == [udp_line(n.a_ip, 40060, n.b_ip, 5060, 8000)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_netlink_attach_is_detached_on_exit(netns, sig):
    n = netns
    with Netmon(n, "--attach", "netlink", "--protocol", "icmp") as nm:
        nm.wait_ready()
        assert "Attach mode: native (netlink)" in nm.err
        assert n.xdp_prog_id() != 0
        ping(n, n.b_ip)
        nm.wait_lines(1)
        assert nm.stop(sig) == 0
    assert nm.out == [f"ICMP {n.a_ip} -> {n.b_ip} ({ICMP_ECHO}b)"]
    assert n.xdp_prog_id() == 0


def test_a_tiny_memlock_limit_is_no_obstacle(netns):
    # Before 5.11 the kernel charges BPF maps and programs to RLIMIT_MEMLOCK, and
    # libbpf raises the limit for netmon; later kernels account them to memory
    # cgroups. Either way, 64 KiB must not stop netmon.
    n = netns
    command = ["prlimit", "--memlock=65536", sys.executable, "-m", "netmon"]
    with Netmon(n, "--protocol", "icmp", "--count", "1", command=command) as nm:
        nm.wait_ready()
        ping(n, n.b_ip)
        assert nm.wait_exit() == 0
    assert nm.out == [f"ICMP {n.a_ip} -> {n.b_ip} ({ICMP_ECHO}b)"]


def test_kill_9_leaves_no_program_attached(netns):
    n = netns
    nm = Netmon(n).wait_ready()
    assert n.xdp_prog_id() != 0
    nm.proc.kill()
    nm.proc.wait()
    # The kernel releases the bpf_link with the process's last fd.
    assert n.xdp_prog_id() == 0
    # And the interface takes a new program: nothing was left half-attached.
    with Netmon(n, "--protocol", "icmp", "--count", "1") as again:
        again.wait_ready()
        ping(n, n.b_ip)
        assert again.wait_exit() == 0


@pytest.mark.parametrize("mode", ["xdpgeneric", "xdpdrv"])
def test_hook_xdp_refuses_an_interface_with_a_foreign_program(netns, pass_object, mode):
    n = netns
    n.run(n.b, "ip", "link", "set", "dev", n.b_if, mode, "obj", str(pass_object), "sec", "xdp")
    foreign = n.xdp_prog_id()
    assert foreign != 0
    for attach_mode in ("auto", "native", "generic"):
        nm = Netmon(n, "--hook", "xdp", "--mode", attach_mode)
        rc = nm.wait_exit()
        assert rc == 7
        assert nm.out == []
        assert len(nm.err) == 1
        assert nm.err[0].startswith(f"netmon: error: interface {n.b_if} already has an XDP "
                                    f"program (id {foreign},")
        assert n.xdp_prog_id() == foreign


@pytest.mark.parametrize("mode", ["xdpgeneric", "xdpdrv"])
def test_auto_watches_with_tc_beside_a_foreign_xdp_program(netns, pass_object, mode):
    n = netns
    n.run(n.b, "ip", "link", "set", "dev", n.b_if, mode, "obj", str(pass_object), "sec", "xdp")
    foreign = n.xdp_prog_id()
    with Netmon(n, "--protocol", "icmp", "--count", "1") as nm:
        nm.wait_ready()
        ping(n, n.b_ip)
        assert nm.wait_exit() == 0
    assert nm.out == [f"ICMP {n.a_ip} -> {n.b_ip} ({ICMP_ECHO}b)"]
    assert any(line.startswith(f"Note: {n.b_if} already has an XDP program (id {foreign})")
               for line in nm.err)
    assert any(line.startswith("Attach mode: tc (") for line in nm.err)
    assert n.xdp_prog_id() == foreign


def test_missing_interface_in_a_namespace(netns):
    nm = Netmon(netns, interface="nmt-none0")
    assert nm.wait_exit() == 4
    assert nm.err == [f"netmon: error: interface 'nmt-none0' does not exist; available: "
                      f"lo, {netns.b_if} (see: ip addr show)"]


def test_without_capabilities(netns):
    cmd = netns.exec_args(netns.b, "setpriv", "--bounding-set=-all", "--inh-caps=-all")
    import subprocess
    import sys

    from tests.support.netns import ROOT

    res = subprocess.run([*cmd, sys.executable, "-m", "netmon", "-i", netns.b_if],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 3
    assert res.stdout == ""
    assert res.stderr.startswith("netmon: error: permission denied: netmon needs root")
    assert res.stderr.count("\n") == 1
    assert netns.xdp_prog_id() == 0


def test_verifier_rejection_shows_the_log_tail(netns, bpf_objects):
    bad = bpf_objects("xdp_reject")
    nm = Netmon(netns, env={"NETMON_BPF_OBJECT": str(bad)})
    assert nm.wait_exit() == 6
    assert len(nm.err) == 1
    assert nm.err[0].startswith("netmon: error: the kernel's verifier rejected the program: ")
    assert "invalid access to packet" in nm.err[0]
    assert netns.xdp_prog_id() == 0


def test_object_from_another_build_is_refused(netns, pass_object):
    nm = Netmon(netns, env={"NETMON_BPF_OBJECT": str(pass_object)})
    assert nm.wait_exit() == 5
    assert nm.err == ["netmon: error: BPF object has no BTF for struct nm_event; rebuild it"]


# -- IPv6 and VLANs on the wire ------------------------------------------------

ICMP6_ECHO = 14 + 40 + 8 + 56
UDP6_HDRS = 14 + 40 + 8
TCP6_SYN = 14 + 40 + 40


@pytest.fixture
def netns6():
    from tests.support.netns import NetnsPair

    with NetnsPair(ipv6=True) as pair:
        yield pair


def ping6(pair, dst: str, count: int = 1) -> None:
    pair.run(pair.a, "taskset", "-c", "0", "ping", "-6", "-n", "-q", "-c", str(count),
             "-i", "0.01", "-W", "2", dst)


def test_ipv6_lines(netns6):
    n = netns6
    # Link-local chatter (MLD, neighbour discovery) comes from fe80::/10: the source
    # filter leaves only what the test sends.
    with Netmon(n, "--src-ip", f"{n.a_ip6}/128", "--count", "3") as nm:
        nm.wait_ready()
        ping6(n, n.b_ip6)
        send(n, "udp", n.a_ip6, 40030, n.b_ip6, 5030, 12)
        send(n, "syn", n.a_ip6, 40031, n.b_ip6, 5031)
        assert nm.wait_exit() == 0
    assert nm.out == [
        f"ICMPv6 {n.a_ip6} -> {n.b_ip6} ({ICMP6_ECHO}b)",
        f"UDP [{n.a_ip6}]:40030 -> [{n.b_ip6}]:5030 ({UDP6_HDRS + 12}b)",
        f"TCP [{n.a_ip6}]:40031 -> [{n.b_ip6}]:5031 ({TCP6_SYN}b)",
    ]


def test_icmp6_is_not_icmp(netns6):
    n = netns6
    with Netmon(n, "--protocol", "icmp6", "--src-ip", n.a_ip6, "--count", "1") as nm:
        nm.wait_ready()
        ping(n, n.b_ip)  # ICMP over IPv4: not icmp6
        ping6(n, n.b_ip6)
        assert nm.wait_exit() == 0
    assert nm.out == [f"ICMPv6 {n.a_ip6} -> {n.b_ip6} ({ICMP6_ECHO}b)"]
    with Netmon(n, "--protocol", "icmp", "--count", "1") as nm:
        nm.wait_ready()
        ping6(n, n.b_ip6)
        ping(n, n.b_ip)
        assert nm.wait_exit() == 0
    assert nm.out == [f"ICMP {n.a_ip} -> {n.b_ip} ({ICMP_ECHO}b)"]


def test_host_and_port_match_either_direction(netns6):
    n = netns6
    # b sends nothing that b's own hook sees, so "either direction" is shown by
    # matching a's address as a source and b's second address as a destination.
    with Netmon(n, "--host", n.b_ip2, "--count", "1") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40040, n.b_ip, 5040, 1)
        send(n, "udp", n.a_ip, 40040, n.b_ip2, 5040, 2)
        assert nm.wait_exit() == 0
    assert nm.out == [udp_line(n.a_ip, 40040, n.b_ip2, 5040, 2)]

    with Netmon(n, "--host", f"{n.a_ip6}/128", "--protocol", "udp", "--count", "1") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40041, n.b_ip, 5041, 3)
        send(n, "udp", n.a_ip6, 40041, n.b_ip6, 5041, 4)
        assert nm.wait_exit() == 0
    assert nm.out == [f"UDP [{n.a_ip6}]:40041 -> [{n.b_ip6}]:5041 ({UDP6_HDRS + 4}b)"]

    with Netmon(n, "--port", "5042", "--count", "2") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40042, n.b_ip, 5043, 5)
        send(n, "udp", n.a_ip, 5042, n.b_ip, 40043, 6)  # as source port
        send(n, "udp", n.a_ip6, 40044, n.b_ip6, 5042, 7)  # as destination port
        assert nm.wait_exit() == 0
    assert nm.out == [udp_line(n.a_ip, 5042, n.b_ip, 40043, 6),
                      f"UDP [{n.a_ip6}]:40044 -> [{n.b_ip6}]:5042 ({UDP6_HDRS + 7}b)"]


def test_vlan_tagged_frames(netns):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    n = netns
    # Tagged frames built whole and sent raw from a: no 8021q module needed, and the
    # tags are in the frame as a switch port would deliver them.
    eth = Ether(src=n.mac(n.a), dst=n.mac(n.b))
    udp = IP(src=n.a_ip, dst=n.b_ip) / UDP(sport=40050, dport=5050) / (b"v" * 9)
    frames = [eth / Dot1Q(vlan=200) / udp, eth / udp, eth / Dot1Q(vlan=100) / udp,
              eth / Dot1AD(vlan=100) / Dot1Q(vlan=7) / udp]
    with Netmon(n, "--vlan", "100", "--json", "--count", "2") as nm:
        nm.wait_ready()
        for frame in frames:
            send(n, "raw", n.a_if, bytes(frame).hex())
        assert nm.wait_exit() == 0
    got = [json.loads(line) for line in nm.out]
    assert [(ev["vlan"], ev["src"], ev["dst"], ev["sport"], ev["dport"], ev["len"])
            for ev in got] == [(100, n.a_ip, n.b_ip, 40050, 5050, 4 + UDP_HDRS + 9),
                               (100, n.a_ip, n.b_ip, 40050, 5050, 8 + UDP_HDRS + 9)]
    assert "  VLAN: 100" in nm.err


# -- issue 28, item 9: times, guests, what -w says --------------------------------------

@pytest.mark.parametrize("flag", ["-tt", "-ttt", "-tttt", "-ttttt"])
def test_tcpdumps_time_options_print_tcpdumps_times(flag, monkeypatch):
    """-r of a corpus capture: each line's time is the one tcpdump prints with the same
    flag, to the microsecond (TZ fixed: -tttt is local time)."""
    import shutil

    if shutil.which("tcpdump") is None:
        pytest.skip("needs tcpdump (apt-get install tcpdump)")
    from pathlib import Path

    capture = Path(ROOT) / "tests" / "data" / "tcpdump" / "afs.pcap"
    env = {**os.environ, "TZ": "UTC"}
    ours = subprocess.run([sys.executable, "-m", "netmon", "-r", str(capture), flag, "-c", "20"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    theirs = subprocess.run(["tcpdump", "-nr", str(capture), flag, "-c", "20"],
                            capture_output=True, text=True, env=env)
    assert ours.returncode == 0, ours.stderr
    width = 27 if flag == "-tttt" else 17  # the time and its space
    assert [line[:width] for line in ours.stdout.splitlines()] == \
        [line[:width] for line in theirs.stdout.splitlines()]
    assert ours.stdout.splitlines()[0][width:].startswith("UDP ")  # then the line as ever


@pytest.mark.parametrize("argv,fragment", [
    (["-tttttt"], "Invalid value for '-t': 6 is not in the range x<=5"),
    (["-tt", "--json"], "-tt to -ttttt put a time before each text line"),
    (["top", "-tt"], "-tt to -ttttt put a time before each text line"),
])
def test_time_options_refused_where_there_is_no_line(capsys, argv, fragment):
    from netmon import cli

    assert cli.main([*argv, "-i", "nmt-none0"]) == cli.ExitStatus.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_a_guests_lines_name_the_guest(netns, tmp_path):
    """--guest: each line names the guest beside its interface (a name from its config)."""
    from tests.support.pve import fake_pve

    n = netns
    env = fake_pve(tmp_path, {100: "web1"})
    _, tap = n.link("nmt-g0", "tap100i0")
    with Netmon(n, "--guest", "100", "--protocol", "icmp", interface=None, env=env) as nm:
        nm.wait_ready()
        ping(n, tap, 1)
        nm.wait_lines(2)
        assert nm.stop() == 0
    assert sorted(nm.out) == [
        f"tap100i0 (web1) in ICMP {tap.rsplit('.', 1)[0]}.1 -> {tap} (98b)",
        f"tap100i0 (web1) out ICMP {tap} -> {tap.rsplit('.', 1)[0]}.1 (98b)"]


def test_writing_says_where_and_how_many_were_written(netns, tmp_path):
    n = netns
    path = tmp_path / "c.pcapng"
    with Netmon(n, "--protocol", "icmp", "-w", str(path)) as nm:
        nm.wait_ready()
        ping(n, n.b_ip, 2)
        time.sleep(scaled(0.5))
        assert nm.stop() == 0
    assert f"Capture: pcapng to {path}" in nm.err
    last = nm.err[-1]
    assert ", 2 written, 0 lost" in last and " shown" not in last, nm.err
