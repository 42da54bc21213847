"""Test frames built with scapy, and a runner that feeds frames to the real program."""

from __future__ import annotations

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

from netmon import events
from netmon.filters import FilterSpec
from netmon.kernel.libbpf import XDP_PASS
from netmon.kernel.loader import MonitorProgram, prog_test_run
from netmon.settings import DEFAULT_PAGES
from netmon.sources.reader import SAMPLE_HEAD, SAMPLE_TAIL, PerfReader
from netmon.kernel import config as nm_config

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
MIN_FRAME = 14  # BPF_PROG_TEST_RUN refuses frames shorter than Ethernet's header


def sample_frames() -> list[bytes]:
    """A spread of frames: every protocol, several addresses and ports, and broken ones."""
    eth = Ether(**MAC)
    frames = []
    for src in ("192.168.1.100", "10.1.2.3", "10.1.200.3"):
        for dst in ("93.184.216.34", "8.8.8.8", "10.1.2.4"):
            frames += [
                eth / IP(src=src, dst=dst) / TCP(sport=54321, dport=443, flags="S"),
                eth / IP(src=src, dst=dst) / TCP(sport=22, dport=54322, flags="PA") / (b"x" * 40),
                eth / IP(src=src, dst=dst) / UDP(sport=54321, dport=53) / (b"q" * 20),
                eth / IP(src=src, dst=dst) / UDP(sport=5353, dport=5353),
                eth / IP(src=src, dst=dst) / ICMP(type=8),
            ]
    for src, dst in (("2001:db8::1", "2001:db8::2"), ("2001:db8:1::5", "fe80::1")):
        frames += [
            eth / IPv6(src=src, dst=dst) / TCP(sport=443, dport=51000, flags="SA"),
            eth / IPv6(src=src, dst=dst) / UDP(sport=5353, dport=53) / b"q",
            eth / IPv6(src=src, dst=dst) / ICMPv6EchoRequest(),
            eth / IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
            / IPv6ExtHdrDestOpt() / UDP(sport=1000, dport=53),
            eth / IPv6(src=src, dst=dst) / AH(nh=6, payloadlen=4, icv=b"\0" * 12)
            / TCP(sport=22, dport=2222),
            eth / IPv6(src=src, dst=dst) / IPv6ExtHdrFragment(m=1) / UDP(sport=7, dport=53),
            eth / IPv6(src=src, dst=dst) / IPv6ExtHdrFragment(offset=100, nh=17) / (b"\0" * 16),
            eth / IPv6(src=src, dst=dst) / SCTP(sport=3868, dport=3868),
        ]
    frames += [
        eth / IP(src="10.1.2.3", dst="10.1.2.4", options=b"\x01" * 8) / UDP(sport=1, dport=2),
        eth / Dot1Q(vlan=100) / IP(src="10.1.2.3", dst="8.8.8.8") / UDP(sport=3, dport=53),
        eth / Dot1AD(vlan=7) / Dot1Q(vlan=8) / IP(src="10.1.2.3", dst="8.8.8.8") / TCP(dport=443),
        eth / Dot1Q(vlan=100) / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(dport=53),
        eth / IP(src="10.1.2.3", dst="8.8.8.8", flags="MF") / UDP(sport=4, dport=53),
        eth / IP(src="10.1.2.3", dst="8.8.8.8", frag=100) / (b"\0" * 16),
        eth / IP(src="10.1.2.3", dst="8.8.8.8", proto=47) / (b"\0" * 8),
        eth / IP(src="10.1.2.3", dst="8.8.8.8") / SCTP(sport=2905, dport=2905),
        eth / ARP(psrc="10.1.2.3", pdst="10.1.2.4"),
    ]
    raw = [bytes(f) for f in frames]
    tcp = bytes(eth / IP(src="10.1.2.3", dst="8.8.8.8") / TCP(dport=443))
    raw += [
        tcp[:14 + 20 + 10],  # TCP header cut short: event without ports
        tcp[:14 + 10],  # IPv4 header cut short: no event
    ]
    return raw


class Runner:
    """One loaded program and its perf buffer: a frame in, (return value, event) out."""

    def __init__(self, spec: FilterSpec = FilterSpec()):
        self.prog = MonitorProgram(nm_config.pack(spec.kernel_filters()))
        self.reader = PerfReader(self.prog.events_fd, DEFAULT_PAGES)
        self.decoder = events.Decoder()

    def run(self, frame: bytes) -> tuple[int, list[events.Event]]:
        retval, _ = prog_test_run(self.prog.prog_fd, frame)
        evs = [ev for chunk in self.reader.drain()
               for ev in self.decoder.decode(chunk, SAMPLE_HEAD, SAMPLE_TAIL)]
        return retval, evs

    def close(self) -> None:
        self.reader.close()
        self.prog.close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_frames(spec: FilterSpec, frames: list[bytes]) -> tuple[list[events.Event], list[int], dict]:
    """Run each frame through a freshly loaded program: (events, return values, counters)."""
    with Runner(spec) as runner:
        retvals, evs = [], []
        for frame in frames:
            if len(frame) < MIN_FRAME:
                continue
            retval, got = runner.run(frame)
            retvals.append(retval)
            evs += got
        assert runner.reader.lost == 0
        return evs, retvals, runner.prog.counters()


def without_time(evs: list[events.Event]) -> list[events.Event]:
    return [e._replace(ts_ns=0) for e in evs]


__all__ = ["XDP_PASS", "Runner", "run_frames", "sample_frames", "without_time"]
