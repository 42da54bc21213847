"""The XDP program against the reference dissector, on random and malformed frames.

Frames are built with scapy from random layers and then, as often as not,
broken: cut short, overwritten, extended with garbage. Each runs through the
real program with BPF_PROG_TEST_RUN. Three things must hold for every frame:
the program returns XDP_PASS and leaves the frame as it was; and its event is
the reference's (tests/reference.py) - which reads nothing past the frame's
end, so agreement on cut frames shows the program does not either (the
verifier proves the same for memory safety).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Raw

from netmon.kernel import libbpf
from netmon.kernel.libbpf import XDP_PASS, ffi
from tests.support.frames import MAC, MIN_FRAME, Runner
from tests.support.reference import of_event, reference

pytestmark = pytest.mark.kernel

ports = st.integers(0, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)


@st.composite
def transport(draw, family: int):
    kind = draw(st.sampled_from(["tcp", "udp", "sctp", "icmp", "raw"]))
    payload = Raw(draw(st.binary(max_size=40)))
    if kind == "tcp":
        return TCP(sport=draw(ports), dport=draw(ports), flags=draw(st.integers(0, 255))) / payload
    if kind == "udp":
        return UDP(sport=draw(ports), dport=draw(ports)) / payload
    if kind == "sctp":
        return SCTP(sport=draw(ports), dport=draw(ports)) / payload
    if kind == "icmp":
        return (ICMP(type=draw(st.integers(0, 255))) if family == 4
                else ICMPv6EchoRequest()) / payload
    return payload


@st.composite
def ipv6_extensions(draw):
    chain = []
    for kind in draw(st.lists(st.sampled_from(["hop", "rt", "frag", "dst", "ah"]), max_size=10)):
        if kind == "hop":
            chain.append(IPv6ExtHdrHopByHop())
        elif kind == "rt":
            chain.append(IPv6ExtHdrRouting(addresses=draw(st.lists(v6, max_size=2))))
        elif kind == "frag":
            chain.append(IPv6ExtHdrFragment(offset=draw(st.sampled_from([0, 0, 1, 100])),
                                            m=draw(st.integers(0, 1))))
        elif kind == "dst":
            chain.append(IPv6ExtHdrDestOpt())
        else:
            icv = draw(st.sampled_from([4, 12]))
            chain.append(AH(payloadlen=(12 + icv) // 4 - 2, icv=b"\0" * icv))
    return chain


@st.composite
def frames(draw) -> bytes:
    tags = draw(st.lists(st.tuples(st.sampled_from([Dot1Q, Dot1AD]), st.integers(0, 4095)),
                         max_size=3))
    ethertype = None  # scapy fills in the right one, unless "other" picks its own
    l3 = draw(st.sampled_from(["ipv4", "ipv6", "arp", "other"]))
    if l3 == "ipv4":
        body = IP(src=draw(v4), dst=draw(v4), flags=draw(st.sampled_from([0, 1, 2])),
                  frag=draw(st.sampled_from([0, 0, 0, 1, 185])),
                  options=b"\x01" * draw(st.sampled_from([0, 0, 4, 8, 40])))
        upper = draw(transport(4))
        if isinstance(upper, Raw):
            body.proto = draw(st.integers(0, 255))
        body = body / upper
    elif l3 == "ipv6":
        body = IPv6(src=draw(v6), dst=draw(v6))
        for ext in draw(ipv6_extensions()):
            body = body / ext
        upper = draw(transport(6))
        if isinstance(upper, Raw):  # name the raw payload's protocol in the last header
            body.getlayer(len(body.layers()) - 1).nh = draw(st.integers(0, 255))
        body = body / upper
    elif l3 == "arp":
        body = ARP()
    else:
        ethertype = draw(st.integers(0, 0xFFFF))
        body = Raw(draw(st.binary(max_size=60)))

    pkt = Ether(**MAC)
    for cls, vid in tags:
        pkt = pkt / cls(vlan=vid)
    if ethertype is not None:
        pkt.getlayer(len(pkt.layers()) - 1).type = ethertype
    frame = bytes(pkt / body)

    mutation = draw(st.sampled_from(["none", "cut", "overwrite", "append", "random"]))
    if mutation == "cut":
        frame = frame[:draw(st.integers(MIN_FRAME, len(frame)))]
    elif mutation == "overwrite":
        buf = bytearray(frame)
        for _ in range(draw(st.integers(1, 4))):
            buf[draw(st.integers(12, len(buf) - 1))] = draw(st.integers(0, 255))
        frame = bytes(buf)
    elif mutation == "append":
        frame += draw(st.binary(min_size=1, max_size=64))
    elif mutation == "random":
        frame = draw(st.binary(min_size=MIN_FRAME, max_size=200))
    return frame


def run_with_output(prog_fd: int, frame: bytes) -> tuple[int, bytes]:
    """One test run that also returns the frame as the program left it."""
    out = ffi.new("char[]", len(frame) + 256)
    opts = libbpf.new_opts("bpf_test_run_opts", data_in=ffi.from_buffer(frame),
                           data_size_in=len(frame), data_out=out, data_size_out=len(out))
    libbpf.ensure(libbpf.lib().bpf_prog_test_run_opts(prog_fd, opts), "BPF_PROG_TEST_RUN")
    return opts.retval, ffi.buffer(out, opts.data_size_out)[:]


@pytest.fixture(scope="module")
def runner():
    with Runner() as r:
        yield r


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frame=frames())
def test_random_frames_match_the_reference(runner, frame):
    retval, got = runner.run(frame)
    assert retval == XDP_PASS
    want = reference(frame)
    assert [of_event(e) for e in got] == ([want] if want else [])


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames())
def test_the_program_never_changes_a_frame(runner, frame):
    retval, out = run_with_output(runner.prog.prog_fd, frame)
    runner.reader.drain()
    assert retval == XDP_PASS
    assert out == frame
