"""Filter expressions: libpcap's classic BPF, translated to eBPF by netmon, against libpcap
itself, frame by frame (issue 18).

The oracle is pcap_offline_filter(): libpcap running the same classic program on the
same bytes. The translation runs in the kernel under BPF_PROG_TEST_RUN, as an XDP and as
a tc program, on every frame of the corpus in tests/data, on hypothesis-drawn frames, and
on every prefix of a few frames (which catches off-by-one bounds). The verdicts must be
equal, every one.
"""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from netmon.errors import ExpressionInvalid
from netmon.expression import cbpf, libpcap
from netmon.expression import translate as t
from netmon.pcapng import reader as savefile
from netmon.kernel import config as nm_config

from tests.support.exprprog import FRAME_AT, ExprProgram
from tests.support.netns import scaled, send
from tests.support.runner import Netmon
from tests.kernel.test_dissection import frames as drawn_frames

DATA = Path(__file__).parent.parent / "data" / "tcpdump"

EXPRESSIONS = [
    "tcp port 443 and host 10.0.0.5",
    "src net 192.168.0.0/16",
    "net 10.0.0.0/8 and not port 22",
    "ip[12:4] > 0x80000000",
    "greater 1000",
    "less 100",
    "len >= 100 and len <= 200",
    "udp[8:2] = 0x1234",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[((tcp[12]&0xf0)>>2):4] = 0x47455420",
    "ip[2:2] / ip[8] > 3",  # division by a packet value (a TTL of 0 rejects)
    "ip[2:2] % (ip[1] & 7) = 1",
    "ip[8] << 24 >> 28 = 4",
    "ether[0] & 1 = 1",
    "vlan 20 and icmp6",
    "vlan and vlan",  # QinQ: a second tag
    "vlan 100 and udp",
    "ip6 and tcp",
    "ip6 proto 44",
    "icmp6 or icmp[icmptype] = icmp-echo",
    "ip[0] & 0xf > 5",  # IP options
    "arp or stp or ether proto 0x88cc",
    "broadcast or multicast",
    "udp and (port 53 or port 123 or portrange 1000-2000)",
    "ip6 net fd00::/8 or ip6 dst host ff02::1",
    "sctp or ip proto 50",
]
HOOKS = {"xdp": t.XDP, "tc": t.TC}


@functools.lru_cache(maxsize=None)
def compiled(expression: str) -> tuple:
    insns = libpcap.compile(expression)
    cbpf.check(insns, expression)
    return insns


def crafted() -> list[bytes]:
    """Frames that some expressions above match and the corpus lacks."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return [bytes(f) for f in (
        eth / IP(src="10.0.0.5", dst="10.9.9.9") / TCP(sport=40000, dport=443, flags="S"),
        eth / IP(src="10.0.0.5", dst="10.9.9.9") / TCP(dport=80, flags="PA") / b"GET / HTTP/1.1\r\n",
        eth / Dot1Q(vlan=20) / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(),
        eth / IPv6(src="fd00::1", dst="2001:db8::2") / TCP(dport=22),
        eth / Dot1AD(vlan=100) / Dot1Q(vlan=7) / IP(dst="10.1.1.1") / UDP(dport=53),
        eth / Dot1Q(vlan=100) / IP(dst="10.1.1.1") / UDP(dport=1500) / (b"x" * 2),
        eth / IP(dst="192.168.1.1", ttl=0) / ICMP(),
        eth / IP(src="200.1.1.1", options=b"\x01" * 4) / UDP(sport=123) / (b"\x12\x34" * 600),
    )]


@functools.lru_cache(maxsize=None)
def corpus() -> list[bytes]:
    """Every frame of the corpus a test run takes (14 bytes and more, as XDP sees), and
    the crafted ones."""
    out = crafted()
    for path in sorted(DATA.glob("*.pcap*")):
        try:
            out += [f.data for f in savefile.frames(path) if 14 <= len(f.data) <= 3000]
        except Exception:  # a capture netmon does not read (link type): not frames here
            continue
    return out


def verdicts(expression: str, hook: str, frames: list[bytes],
             taken: float = 0.99) -> tuple[list[bool], list[bool]]:
    """The kernel's and libpcap's verdicts on the frames a test run takes (at least this
    share of them: a tc test run takes no IP frame whose IP header is cut short)."""
    insns = compiled(expression)
    oracle = libpcap.Program(insns)
    got, want = [], []
    with ExprProgram(insns, HOOKS[hook], hook) as prog:
        for frame in frames:
            verdict = prog.matches(frame)
            if verdict is not None:
                got.append(verdict)
                want.append(oracle.matches(frame))
    assert len(got) >= taken * len(frames)
    return got, want


@pytest.mark.kernel
@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_corpus_gets_libpcaps_verdicts(expression, hook):
    frames = corpus()
    got, want = verdicts(expression, hook, frames)
    differ = sum(g != w for g, w in zip(got, want))
    assert not differ, f"{differ} of {len(got)} frames differ"
    assert any(want) and not all(want)  # the expression tells frames apart


@pytest.mark.kernel
@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("expression", ["32 > 0", "tcp or 8 > 0"])
def test_a_constant_expression_loads_and_matches_everything(expression, hook):
    """libpcap compiles these to a lone `ret`: the reject path after it is reached by no
    jump, and the verifier refused the program it was left in (found by tests/fuzz)."""
    got, want = verdicts(expression, hook, corpus()[:200])
    assert got == want and all(got)


@pytest.mark.kernel
def test_netmon_runs_a_constant_expression(tmp_path):
    import subprocess
    import sys

    from tests.support.netns import ROOT

    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(DATA / "afs.pcap"),
                          "tcp or 8 > 0"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines()[-1].startswith("netmon: 601 packets seen (0 not IP, "
                                                  "0 malformed), 601 matched")


@pytest.mark.kernel
@pytest.mark.parametrize("hook", HOOKS)
def test_every_prefix_of_a_frame_gets_libpcaps_verdict(hook):
    """Cut one byte at a time: each load's bounds, exactly."""
    frames = [f for f in corpus() if 60 <= len(f) <= 200][::97][:12]
    assert len(frames) == 12
    prefixes = [f[:n] for f in frames for n in range(14, len(f) + 1)]
    for expression in EXPRESSIONS:
        got, want = verdicts(expression, hook, prefixes, taken=1.0 if hook == "xdp" else 0.5)
        assert got == want, expression


@pytest.mark.kernel
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=drawn_frames())
def test_drawn_frames_get_libpcaps_verdicts(frame):
    if len(frame) < 14:
        return
    for expression in EXPRESSIONS[:: 3]:
        for hook in HOOKS:
            got, want = verdicts(expression, hook, [frame], taken=0)
            assert got == want, (expression, hook, frame.hex())


@pytest.mark.parametrize("expression,fragment", [
    ("tcp prt 4", "syntax error"),
    ("ip and ip6", "rejects all packets"),
    ("net 10.0.0.1/8", "non-network bits set"),
    ("host nmt-no-such-host.invalid", "unknown host"),
    ("ip protochain 6", "backward jump"),
])
def test_what_cannot_run_is_refused_in_one_line(expression, fragment):
    with pytest.raises(ExpressionInvalid) as exc:
        compiled.__wrapped__(expression)
    message = str(exc.value)
    assert fragment in message and "\n" not in message and repr(expression) in message


# --- live, on veths: the expression inside netmon's programs ---------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("hook,direction", [("xdp", "in"), ("tc", "in"), ("tc", "out")])
def test_an_expression_at_every_hook(netns, hook, direction):
    """Only what the expression matches is shown; what it does not match never leaves the
    kernel (the counters say so)."""
    n = netns
    # b answers a's UDP to a closed port with ICMP port unreachable: in, a's datagrams;
    # out, b's ICMP, the one that quotes a datagram to port 5050 (its UDP header's
    # destination port: 8 bytes of ICMP and 20 of the quoted IP header in, then 2).
    expression = (f"udp and dst port 5050 and src host {n.a_ip}" if direction == "in"
                  else f"icmp[icmptype] = icmp-unreach and icmp[30:2] = 5050 and "
                       f"dst host {n.a_ip}")
    with Netmon(n, "--hook", hook, "-Q", direction, "--json", "--count", "2",
                *expression.split()) as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40060, n.b_ip, 5051, 10, 3)  # other port: in, no match
        send(n, "udp", n.a_ip, 40061, n.b_ip, 5050, 10, 2)
        assert nm.wait_exit() == 0
    got = [json.loads(line) for line in nm.out]
    if direction == "in":
        assert [(ev["proto"], ev["sport"], ev["dport"]) for ev in got] == [
            ("udp", 40061, 5050)] * 2
    else:
        assert [(ev["proto"], ev["dst"], ev["icmp_type"]) for ev in got] == [
            ("icmp", n.a_ip, 3)] * 2
    assert f"  Expression: {expression}" in nm.err
    summary = next(line for line in nm.err if " matched, " in line)
    assert " 2 matched, 2 sent, 2 shown" in summary


@pytest.mark.kernel
@pytest.mark.parametrize("expression,want", [
    ("outbound and ifindex {index}", ("icmp", 3)),
    ("inbound and ifindex {index} and not arp", ("udp", None)),
    ("ifindex {other}", None),
])
def test_direction_and_interface_are_the_hooks(netns, expression, want):
    """`inbound`, `outbound` and `ifindex` at tc, watching both ways: the hook's
    direction and interface (the tc programs fill them in only for an expression that
    reads them). a's UDP to a closed port comes in, b's ICMP goes out."""
    n = netns
    index = int(n.run(n.b, "ip", "-o", "link", "show", "dev", n.b_if).stdout.split(":")[0])
    text = expression.format(index=index, other=index + 1000)
    with Netmon(n, "--hook", "tc", "-Q", "both", "--json", *text.split()) as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40065, n.b_ip, 5065, 10, 2)
        if want:
            nm.wait_lines(2)
        time.sleep(scaled(0.5))  # anything else there was to show
    got = [(ev["proto"], ev.get("icmp_type")) for ev in map(json.loads, nm.out)]
    assert got == ([want] * 2 if want else [])


@pytest.mark.kernel
def test_an_expression_with_options_flows_and_capture(netns, tmp_path):
    """ANDed with the options; the same in --flows and in -w, where tshark reads what
    tcpdump -w with the same expression wrote, frame for frame (ARP too: not IP, written)."""
    from tests.kernel.test_capture import Tcpdump
    from tests.support.tshark import tshark_fields

    n = netns
    expression = "udp[8:2] = 0x7878 or arp"  # payload "xx...": udp's first data bytes
    with Netmon(n, "--protocol", "udp", "--flows", "--flow-idle", "1", "--json",
                *expression.split()) as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40070, n.b_ip, 5070, 10, 3)  # "n" * 10: no match
        send(n, "raw", n.a_if, _udp_frame(n, b"xx" * 8).hex())
        nm.wait_lines(1)
    (flow,) = [json.loads(line) for line in nm.out]
    assert (flow["destinationTransportPort"], flow["packetDeltaCount"]) == (5071, 1)

    ours, theirs = tmp_path / "netmon.pcapng", tmp_path / "tcpdump.pcap"
    # tcpdump on the same veth sees both ways: what a sent is what it receives. (Not
    # `inbound`: on a live handle libpcap 1.10's passes no broadcast, not even ARP's.)
    with Tcpdump(n, n.b, n.b_if, theirs, f"ether src {n.mac(n.a)} and ({expression})"), \
            Netmon(n, "-w", str(ours), "--count", "3", *expression.split()) as nm:
        nm.wait_ready()
        n.run(n.a, "ip", "neigh", "flush", "all")
        send(n, "udp", n.a_ip, 40071, n.b_ip, 5070, 10, 3)  # ARP first, then no match
        send(n, "raw", n.a_if, _udp_frame(n, b"xx" * 8).hex())
        send(n, "raw", n.a_if, _udp_frame(n, b"xx" * 8).hex())
        assert nm.wait_exit() == 0
    ours_frames = tshark_fields(ours, "frame.len", "frame.protocols")
    theirs_frames = tshark_fields(theirs, "frame.len", "frame.protocols")
    assert ours_frames == theirs_frames and len(ours_frames) == 3
    assert any("arp" in p for _, p in ours_frames)  # not IP, matched: written, counted
    assert any("not IP" in line and "of them matched by the expression" in line
               for line in nm.err)


def _udp_frame(n, payload: bytes) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(src=n.mac(n.a), dst=n.mac(n.b)) / IP(src=n.a_ip, dst=n.b_ip) /
                 UDP(sport=40072, dport=5071) / payload)


LONG_OR = " or ".join(f"port {1000 + i}" for i in range(200))


@pytest.mark.kernel
@pytest.mark.parametrize("hook", ["xdp", "tc_in", "tc_out"])
def test_a_long_or_chain_is_verified_in_each_program(hook):
    """200 terms, spliced into the program of each hook: the kernel's verifier takes it
    (the matrix runs this on every kernel), and the program finds the one term."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from netmon.filters import FilterSpec
    from netmon.kernel.loader import MonitorProgram, prog_test_run

    spec = FilterSpec(expression=LONG_OR)
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=1199))
    miss = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=1200))
    with MonitorProgram(nm_config.pack(spec.kernel_filters()), hooks=(hook,),
                        expression=LONG_OR) as prog:
        for f in (frame, miss, frame):
            prog_test_run(prog.prog_fds[hook], f)
        assert prog.counters()["matched"] == 2


@pytest.mark.kernel
def test_a_long_or_chain_loads(netns):
    """200 terms, live."""
    n = netns
    expression = LONG_OR
    with Netmon(n, "--json", "--count", "1", *expression.split()) as nm:
        nm.wait_ready(timeout=60)
        send(n, "udp", n.a_ip, 40080, n.b_ip, 1199, 10, 1)
        assert nm.wait_exit() == 0
    assert json.loads(nm.out[0])["dport"] == 1199


def _to_broadcast(src: str, dst: str) -> str:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src=src, dst=dst)
                 / UDP(sport=40070, dport=5070)).hex()


@pytest.mark.kernel
def test_ip_broadcast_live_uses_the_interfaces_netmask(netns):
    """As tcpdump: the netmask of the one interface watched (b's /24), so the subnet's
    broadcast address matches and a host address does not."""
    n = netns
    with Netmon(n, "--json", "--count", "1", "ip", "broadcast") as nm:
        nm.wait_ready()
        send(n, "frames", n.a_if, 1, _to_broadcast(n.a_ip, n.b_ip),
             _to_broadcast(n.a_ip, f"{n.prefix}.255"))
        assert nm.wait_exit() == 0
    assert [json.loads(line)["dst"] for line in nm.out] == [f"{n.prefix}.255"]
    assert " 1 matched, " in nm.err[-1]


def test_ip_broadcast_without_a_known_netmask_is_one_line(capsys):
    status, _, err = _cli(capsys, "-i", "nmt-none*", "ip", "broadcast")
    assert status == 2
    assert err == ("netmon: error: netmask not known, so 'ip broadcast' not supported "
                   "(netmon knows the netmask when -i names one interface with an IPv4 "
                   "address, as tcpdump does): 'ip broadcast'\n")


@pytest.mark.kernel
def test_ip_broadcast_in_a_file_is_tcpdumps(tmp_path):
    """tcpdump -r compiles with the netmask 0: 255.255.255.255 and 0.0.0.0 match."""
    import subprocess
    import sys

    from scapy.utils import wrpcap
    from scapy.layers.l2 import Ether
    from tests.support.netns import ROOT

    path = tmp_path / "b.pcap"
    dsts = ("255.255.255.255", "10.0.0.255", "0.0.0.0", "10.0.0.2")
    wrpcap(str(path), [Ether(bytes.fromhex(_to_broadcast("10.0.0.1", d))) for d in dsts])
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path), "--json", "ip",
                          "broadcast"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    tcpdump = subprocess.run(["tcpdump", "-nr", str(path), "ip", "broadcast"],
                             capture_output=True, text=True, check=True).stdout
    assert [json.loads(line)["dst"] for line in res.stdout.splitlines()] == \
        ["255.255.255.255", "0.0.0.0"]
    assert [line.split(" > ")[1].rsplit(".", 1)[0] for line in tcpdump.splitlines()] == \
        ["255.255.255.255", "0.0.0.0"]


@pytest.mark.kernel
def test_reading_a_file_gives_tcpdumps_frames(tmp_path):
    """netmon -r FILE EXPR and tcpdump -r FILE EXPR pick the same frames (IP frames:
    netmon shows no other as a line); also from a capture whose snap length cut the
    frames, where `len` is still the length on the wire, as libpcap's."""
    import subprocess
    import sys

    from tests.support.netns import ROOT

    whole = DATA / "ldp-common-session.pcap"
    cut = tmp_path / "cut.pcap"
    subprocess.run(["editcap", "-s", "64", str(whole), str(cut)], check=True)
    assert all(len(f.data) <= 64 for f in savefile.frames(cut))
    for path in (whole, cut):
        frames = [(f.ts_ns, f.data) for f in savefile.frames(path)]
        for expression in ("udp or icmp", "vlan and ip", "greater 200", "less 100",
                           "tcp[tcpflags] & tcp-push != 0"):
            res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path), "--json",
                                  *expression.split()], capture_output=True, text=True, cwd=ROOT)
            assert res.returncode == 0, res.stderr
            ours = [json.loads(line)["frame"] for line in res.stdout.splitlines()]
            picked = tmp_path / "picked.pcap"
            subprocess.run(["tcpdump", "-r", str(path), "-w", str(picked), f"({expression}) "
                            f"and (ip or ip6 or (vlan and (ip or ip6)))"],
                           capture_output=True, check=True)
            theirs = [frames.index((f.ts_ns, f.data)) + 1 for f in savefile.frames(picked)]
            assert ours == theirs and ours, (path.name, expression)


def _cooked(path, linktype: int, out) -> None:
    """The Ethernet capture ``path`` as a Linux cooked one (SLL 113, SLL2 276) at ``out``:
    each frame's header as `tcpdump -i any` writes it, the source MAC as the address."""
    import struct

    records = []
    for i, f in enumerate(savefile.frames(path)):
        pkttype = i % 5  # host, broadcast, multicast, otherhost, outgoing in turn
        src, proto, rest = f.data[6:12], f.data[12:14], f.data[14:]
        if linktype == 113:
            head = struct.pack(">HHH", pkttype, 1, 6) + src + b"\0\0" + proto
        else:
            head = proto + b"\0\0" + struct.pack(">IHBB", 2, 1, pkttype, 6) + src + b"\0\0"
        data = head + rest
        records.append(struct.pack("<IIII", i, 0, len(data), f.origlen - 14 + len(head))
                       + data)
    out.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)
                    + b"".join(records))


@pytest.mark.kernel
@pytest.mark.parametrize("linktype", [113, 276])
def test_a_linux_cooked_capture_gets_tcpdumps_answers(tmp_path, linktype):
    """Compiled for the file's own link type, as tcpdump compiles it: lengths count the
    cooked header, link-layer loads read it (they were off by 2 and 6 bytes on a made-up
    Ethernet header), and what the link type cannot answer is refused."""
    import subprocess
    import sys

    from tests.support.netns import ROOT

    path = tmp_path / "cooked.pcap"
    _cooked(DATA / "ldp-common-session.pcap", linktype, path)
    # The cooked header's length, and where its protocol and packet type are
    head, proto_at, type_at = (16, 14, 1) if linktype == 113 else (20, 0, 10)
    lengths = sorted({f.origlen for f in savefile.frames(DATA / "ldp-common-session.pcap")})
    every = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path), "--json"],
                           capture_output=True, text=True, cwd=ROOT, check=True).stdout
    lines = {json.loads(line)["frame"] for line in every.splitlines()}
    for expression in (f"len = {lengths[0] - 14 + head}", f"len = {lengths[-1] - 14 + head}",
                       f"ether[{proto_at}:2] = 0x0800", f"ether[{type_at}] = 4",
                       f"ether[{type_at}] = 0", "ip and greater 100", "tcp",
                       "udp or icmp", "ip[8] = 1 or ip[8] = 255", "not tcp"):
        res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path), "--json",
                              *expression.split()], capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        ours = [json.loads(line)["frame"] for line in res.stdout.splitlines()]
        picked = tmp_path / "picked.pcap"
        subprocess.run(["tcpdump", "-r", str(path), "-w", str(picked), expression],
                       capture_output=True, check=True)
        frames = [f.as_filed for f in savefile.frames(path)]
        theirs, at = [], 0
        for f in savefile.frames(picked):  # in order: the capture repeats some frames
            at = frames.index(f.as_filed, at) + 1
            theirs.append(at)
        # Of tcpdump's, those netmon shows as lines (IP, a VLAN tag's too).
        assert ours == [n for n in theirs if n in lines] and ours, (linktype, expression)
        seen = sum(1 for _ in savefile.frames(path))
        assert f"netmon: {seen} packets seen" in res.stderr
    for expression, said in (("vlan", "no VLAN support for Linux cooked"),
                             ("ether host 1:2:3:4:5:6", "ethernet addresses supported only")):
        res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path), expression],
                             capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 2 and res.stdout == ""
        assert res.stderr.startswith(f"netmon: error: {said}") and res.stderr.count("\n") == 1


@pytest.mark.kernel
def test_an_expression_on_a_file_of_two_link_types_is_refused(tmp_path):
    """libpcap compiles for one link type; tcpdump refuses such a pcapng."""
    import subprocess
    import sys

    from tests.support.netns import ROOT

    sll = tmp_path / "sll.pcap"
    _cooked(DATA / "ldp-common-session.pcap", 113, sll)
    both = tmp_path / "both.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(both),
                    str(DATA / "ldp-common-session.pcap"), str(sll)], check=True)
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(both), "tcp"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 10
    assert "netmon compiles a filter expression for one link type" in res.stderr
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(both)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0  # without an expression, both are read


# --- the command line -------------------------------------------------------------------

def _cli(capsys, *argv):
    from netmon import cli

    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("argv,fragment", [
    (["-i", "nmt-none0", "tcp", "prt", "4"], "syntax error: 'tcp prt 4'"),
    (["-i", "nmt-none0", "ip", "and", "ip6"], "expression rejects all packets"),
    (["-i", "nmt-none0", "ip", "protochain", "6"], "a backward jump"),
    (["-r", "x.pcap", "inbound"], "`inbound`, `outbound` and `ifindex` work live"),
    (["-F", "/nonexistent/nmt", "tcp"], "-F FILE or after the options, not both"),
    (["-F", "/nonexistent/nmt"], "-F /nonexistent/nmt: No such file or directory"),
])
def test_a_bad_expression_is_one_line_and_status_2(capsys, argv, fragment):
    from netmon.cli import ExitStatus

    status, out, err = _cli(capsys, *argv)
    assert status == ExitStatus.USAGE and out == ""
    assert err.startswith("netmon: error: ") and err.count("\n") == 1 and fragment in err


def test_an_expression_file_as_tcpdumps(tmp_path, monkeypatch):
    from netmon import cli

    path = tmp_path / "filter"
    path.write_text("# web traffic\ntcp port 443   # TLS\n  and not host 10.0.0.1\n")
    assert cli.read_expression(None, str(path)) == "tcp port 443 and not host 10.0.0.1"
    assert cli.read_expression(["udp", "port", "53"], None) == "udp port 53"
    assert cli.read_expression([], None) is None


@pytest.mark.parametrize("text,reason", [
    ("root:$6$salt$hash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
     "can't parse filter expression: syntax error"),
    ("host secret-host.invalid\n", "unknown host …"),
])
def test_an_expression_file_is_never_shown(capsys, tmp_path, text, reason):
    """-F may name any file (through a sudo rule that allows netmon): the error names the
    file, never a word of it (libpcap's reason quotes the word it could not look up)."""
    path = tmp_path / "shadow"
    path.write_text(text)
    status, out, err = _cli(capsys, "-r", str(DATA / "afs.pcap"), "-F", str(path))
    assert status == 2 and out == ""
    assert err == f"netmon: error: -F {path}: not a filter expression netmon can run ({reason})\n"
    told = err.replace(str(path), "")
    assert not {"root", "salt", "hash", "daemon", "secret"} & set(re.split(r"\W+", told))


def test_without_libpcap_one_line_names_the_package(capsys, monkeypatch):
    from netmon.cli import ExitStatus
    from netmon.expression import compiled, libpcap

    monkeypatch.setattr(libpcap, "_lib", None)
    monkeypatch.setattr(libpcap, "LIBPCAP_SONAME", "libpcap.so.nmt-missing")
    compiled.cache_clear()
    status, _, err = _cli(capsys, "-i", "nmt-none0", "udp")
    compiled.cache_clear()
    assert status == ExitStatus.ENVIRONMENT and err.count("\n") == 1
    assert "install the libpcap0.8 package" in err


def test_no_expression_needs_no_libpcap():
    """Without an expression nothing loads libpcap (hosts without it run netmon)."""
    import subprocess
    import sys

    code = ("import sys; from netmon import cli; cli.main(['-i', 'nmt-none0', '--protocol', "
            "'tcp']); print([m for m in sys.modules if 'libpcap' in m or '_pcap_ffi' in m])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "[]", res.stderr


# --- options given more than once: any of their values ----------------------------------

@pytest.mark.kernel
def test_a_repeated_option_means_any_of_its_values(netns):
    """--dst-port 5050 --dst-port 5052 is `dst port 5050 or dst port 5052` (it used to keep
    the last one, silently); different options still all hold."""
    n = netns
    with Netmon(n, "--dst-port", "5050", "--dst-port", "5052", "-p", "udp", "-p", "tcp",
                "--json", "--count", "2") as nm:
        nm.wait_ready()
        for port in (5050, 5051, 5052):
            send(n, "udp", n.a_ip, 40090, n.b_ip, port, 10, 1)
        assert nm.wait_exit() == 0
    assert [json.loads(line)["dport"] for line in nm.out] == [5050, 5052]
    assert "  Destination port: 5050 or 5052" in nm.err
    assert "  Protocol: udp or tcp" in nm.err


def test_repeated_options_reach_the_spec(capsys, monkeypatch):
    from netmon import cli

    seen = {}

    def build(options, **kw):
        seen["spec"] = options.spec
        raise SystemExit(0)

    monkeypatch.setattr(cli, "build", build)
    with pytest.raises(SystemExit):
        cli.main(["-i", "nmt-none0", "--port", "53", "--port", "80", "--host", "10.0.0.1",
                  "--host", "fd00::1", "-p", "all", "-p", "tcp"])
    spec = seen["spec"]
    assert spec.port == (53, 80) and len(spec.host) == 2
    assert spec.protocol == ()  # "all" among them: any protocol


@pytest.mark.kernel
def test_reading_with_w_writes_the_frames_the_expression_matched(tmp_path):
    """-r FILE -w OUT EXPR: what tcpdump -r FILE -w OUT EXPR writes, ARP included; the
    lines show IP packets only."""
    import subprocess
    import sys

    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import ARP, Ether

    from netmon.pcapng import writer as pcapng
    from tests.support.netns import ROOT

    eth = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
    frames = [bytes(f) for f in (eth / ARP(pdst="10.0.0.2"), eth / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(),
                                 eth / IP(dst="10.0.0.2") / UDP(dport=53), eth / ARP(op=2))]
    source = tmp_path / "in.pcapng"
    with pcapng.PcapngWriter(str(source), 65535) as w:
        w.describe(0, "eth0")
        w.write([pcapng.enhanced_packet(0, 1_700_000_000_000_000_000 + i, f, len(f), False)
                 for i, f in enumerate(frames)])
    out = tmp_path / "out.pcapng"
    expression = "arp or icmp"
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(source), "-w", str(out),
                          "--print", expression], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert [f.data for f in savefile.frames(out)] == [frames[0], frames[1], frames[3]]
    assert [line for line in res.stderr.splitlines() if " ICMP " in line] == [
        "eth0 in ICMP 10.0.0.1 -> 10.0.0.2 (42b)"]  # the file says where, and which way
    theirs = tmp_path / "theirs.pcap"
    subprocess.run(["tcpdump", "-r", str(source), "-w", str(theirs), expression],
                   capture_output=True, check=True)
    assert [f.data for f in savefile.frames(theirs)] == [f.data for f in savefile.frames(out)]


def test_a_translation_past_what_a_jump_reaches_is_one_line(monkeypatch):
    """eBPF jumps reach 32,767 instructions; a longer translation is refused, not a
    traceback. (An expression that long takes libpcap minutes to compile: the classic
    program stands in for it: three thousand loads.)"""
    from netmon import expression
    from netmon.expression.libpcap import Insn

    ldh_ind, ret = 0x48, 0x06  # ldh [x + k], ret #k
    # The first load's jump to the reject at the end spans the other loads' translations
    # (every one reached: a jump over them would leave them out).
    insns = (Insn(ldh_ind, 0, 0, 14),) * 3000 + (Insn(ret, 0, 0, 1),)
    monkeypatch.setattr(expression, "compiled", lambda text, *_: insns)
    with pytest.raises(ExpressionInvalid) as exc:
        expression.body("a thousand loads", t.TC, FRAME_AT)
    assert "too long" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.kernel
def test_a_translation_that_stretches_the_programs_jumps_too_far_is_one_line(monkeypatch):
    """The translation goes in place of a call: the program's own jumps across that
    call grow by its length. One that fits in itself but takes such a jump past its
    reach is refused in one line too, not a traceback."""
    from netmon import expression
    from netmon.expression.libpcap import Insn
    from netmon.filters import FilterSpec
    from netmon.kernel import facts
    from netmon.kernel.loader import MonitorProgram, expression_target

    ldh_ind, ld_imm, ret = 0x48, 0x00, 0x06  # ldh [x + k], ld #k, ret #k
    xdp = expression_target("xdp", facts.supports("frags"))  # as the program's XDP hook
    program = ()
    monkeypatch.setattr(expression, "compiled", lambda *_: program)

    def fits(n: int) -> bool:
        """Whether a load, n immediates, then ret translate within a jump's reach (the
        load's jump to the reject at the end spans them all)."""
        nonlocal program
        program = (Insn(ldh_ind, 0, 0, 14),) + (Insn(ld_imm, 0, 0, 7),) * n + (Insn(ret, 0, 0, 1),)
        try:
            expression.body("immediates", xdp, FRAME_AT)
            return True
        except ExpressionInvalid:
            return False

    low, high = 0, 40000  # fits(low), not fits(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    assert fits(low)  # the longest that fits in itself
    with pytest.raises(ExpressionInvalid) as exc:
        MonitorProgram(nm_config.pack(FilterSpec(expression="immediates").kernel_filters()),
                       hooks=("xdp",), expression="immediates")
    assert "too long" in str(exc.value) and "\n" not in str(exc.value)


def test_an_error_quotes_a_long_expression_cut(capsys, tmp_path):
    """An error shows the start of a long expression and its length, not all of it (one
    line of ~200 KB for 10,000 terms, or a whole -F file)."""
    from netmon import cli

    text = " or ".join(f"port {i}" for i in range(1, 3000)) + " and ("
    assert cli.main(["-i", "lo", *text.split()]) == cli.ExitStatus.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 200
    assert err.endswith(f"'port 1 or port 2 or port 3 or port 4 or port 5 or port 6 or '... "
                        f"({len(text):,} characters)\n")
    # From -F, the file is named and nothing of it shown (it may be any file).
    (tmp_path / "filter").write_text(text)
    assert cli.main(["-i", "lo", "-F", str(tmp_path / "filter")]) == cli.ExitStatus.USAGE
    assert capsys.readouterr().err == (f"netmon: error: -F {tmp_path / 'filter'}: not a filter "
                                       f"expression netmon can run (can't parse filter "
                                       f"expression: syntax error)\n")
