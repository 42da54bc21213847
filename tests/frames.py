"""Test frames built with scapy, and a runner that feeds them to the real program."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from netmon import events
from netmon.libbpf import XDP_PASS
from netmon.program import MonitorProgram, prog_test_run
from netmon.reader import SAMPLE_HEAD, SAMPLE_TAIL, PerfReader

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


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
    frames += [
        eth / IP(src="10.1.2.3", dst="10.1.2.4", options=b"\x01" * 8) / UDP(sport=1, dport=2),
        eth / Dot1Q(vlan=100) / IP(src="10.1.2.3", dst="8.8.8.8") / UDP(sport=3, dport=53),
        eth / Dot1AD(vlan=7) / Dot1Q(vlan=8) / IP(src="10.1.2.3", dst="8.8.8.8") / TCP(dport=443),
        eth / IP(src="10.1.2.3", dst="8.8.8.8", flags="MF") / UDP(sport=4, dport=53),
        eth / IP(src="10.1.2.3", dst="8.8.8.8", frag=100) / (b"\0" * 16),
        eth / IP(src="10.1.2.3", dst="8.8.8.8", proto=47) / (b"\0" * 8),
        eth / ARP(psrc="10.1.2.3", pdst="10.1.2.4"),
    ]
    raw = [bytes(f) for f in frames]
    tcp = bytes(eth / IP(src="10.1.2.3", dst="8.8.8.8") / TCP(dport=443))
    raw += [
        tcp[:14 + 20 + 10],  # TCP header cut short: event without ports
        tcp[:14 + 10],  # IPv4 header cut short: no event
    ]
    return raw


def run_frames(config: bytes, frames: list[bytes]) -> tuple[list[events.Event], list[int], dict]:
    """Run each frame through a freshly loaded program: (events, return values, counters)."""
    with MonitorProgram(config) as prog, PerfReader(prog.events_fd) as reader:
        retvals = []
        records = []
        for frame in frames:
            if len(frame) < 14:
                continue  # BPF_PROG_TEST_RUN refuses frames shorter than Ethernet's header
            retval, _ = prog_test_run(prog.prog_fd, frame)
            retvals.append(retval)
            records += reader.drain()
        assert reader.lost == 0
        decoder = events.Decoder()
        evs = [ev for chunk in records for ev in decoder.decode(chunk, SAMPLE_HEAD, SAMPLE_TAIL)]
        return evs, retvals, prog.counters()


def without_time(evs: list[events.Event]) -> list[events.Event]:
    return [e._replace(ts_ns=0) for e in evs]


__all__ = ["XDP_PASS", "run_frames", "sample_frames", "without_time"]
