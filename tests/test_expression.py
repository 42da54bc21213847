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
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from netmon.errors import ExpressionInvalid
from netmon.expression import cbpf, libpcap
from netmon.expression import translate as t
from netmon.sources import savefile
from tests.exprprog import ExprProgram
from tests.test_dissection import frames as drawn_frames

DATA = Path(__file__).parent / "data" / "tcpdump"

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
    with ExprProgram(t.translate(insns, HOOKS[hook]), hook) as prog:
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
