"""TCP health in the real program under BPF_PROG_TEST_RUN: exact, frame by frame.

Crafted segments go through the XDP program one at a time, so what it must find is
known exactly: which segment is a retransmission, which came out of order, which
echo ends which sample, what a full state table refuses. (Under a test run every
frame comes in: both ways of a connection are "in" here; the components, which come
from the directions, are the live tests' (test_rtt.py).)
"""

from __future__ import annotations

import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether

from netmon import events, tcphealth
from netmon.kernel import config as nm_config
from netmon.kernel import tcpstate
from netmon.kernel.abi import (TCP_EVENTS, TCP_MEASURE, TCP_TAIL, TK_REORDER, TK_RETRANS,
                               TK_RTT_ICMP, TK_RTT_SYN, TK_RTT_TS)
from netmon.kernel.libbpf import XDP_PASS
from netmon.kernel.loader import MonitorProgram, prog_test_run
from netmon.sources.reader import SAMPLE_HEAD, PerfReader, sample_size

pytestmark = pytest.mark.kernel

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A, B = "10.7.0.1", "10.7.0.2"
RECORD = events.EVENT_SIZE + TCP_TAIL.size


class TcpRunner:
    """The program with TCP health on; frames in, (kind, row) records out."""

    def __init__(self, entries: int = 1024, gap_us: int = 0):
        self.prog = MonitorProgram(
            nm_config.pack(quiet=True, tcp=TCP_MEASURE | TCP_EVENTS, rtt_gap_us=gap_us),
            hooks=["xdp"], tcp_entries=entries)
        self.reader = PerfReader(self.prog.events_fd, 64, sample=sample_size(RECORD))
        self.decoder = events.Decoder(TCP_TAIL.format)
        self.tail = sample_size(RECORD) - SAMPLE_HEAD - RECORD

    def run(self, *frames) -> list[tuple]:
        for frame in frames:
            raw = bytes(frame)
            assert prog_test_run(self.prog.prog_fd, raw.ljust(60, b"\0"))[0] == XDP_PASS
        return [row for chunk in self.reader.drain()
                for row in self.decoder.rows(chunk, SAMPLE_HEAD, self.tail)]

    def counters(self) -> dict:
        return self.prog.counters()

    def histogram(self) -> tcphealth.Histogram:
        total = tcphealth.Histogram()
        for index in (0, 1):  # slot 0 (a test run's interface is not registered), both ways
            total.add(tcphealth.Histogram(*tcpstate.read_histogram(self.prog.rtthist_fd,
                                                                   index)))
        return total

    def close(self):
        self.reader.close()
        self.prog.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def seg(src, dst, seq, data=b"", flags="PA", ack=1, ts=None, sport=40000, dport=5001,
        vlan=None, v6=False):
    opts = [("NOP", None), ("NOP", None), ("Timestamp", ts)] if ts else []
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    eth = Ether(**MAC) / Dot1Q(vlan=vlan) if vlan else Ether(**MAC)
    return eth / ip / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
                          options=opts) / data


def kinds(rows):
    return [(row[8], row[7]) for row in rows]


@pytest.mark.parametrize("vlan,v6", [(None, False), (100, False), (None, True)])
def test_retransmissions_and_reordering_exactly(vlan, v6):
    a, b = ("fd00::1", "fd00::2") if v6 else (A, B)
    d = b"x" * 100
    with TcpRunner() as r:
        rows = r.run(
            seg(a, b, 1000, d, vlan=vlan, v6=v6),  # the first: where the sequence is
            seg(a, b, 1100, d, vlan=vlan, v6=v6),  # in order
            seg(a, b, 1300, d, vlan=vlan, v6=v6),  # past a gap [1200, 1300)
            seg(a, b, 1200, d, vlan=vlan, v6=v6),  # fills it: out of order
            seg(a, b, 1100, d, vlan=vlan, v6=v6),  # seen: a retransmission
            seg(a, b, 1000, d * 2, vlan=vlan, v6=v6),  # seen, whole: another
            seg(b, a, 1100, flags="A", ack=1400, sport=5001, dport=40000, vlan=vlan, v6=v6),
            seg(a, b, 1400, d, vlan=vlan, v6=v6),  # in order again
        )
        c = r.counters()
    assert kinds(rows) == [(TK_REORDER, 1200), (TK_RETRANS, 1100), (TK_RETRANS, 1000)]
    assert (c["tcp_data"], c["tcp_retrans"], c["tcp_reorder"]) == (7, 2, 1)
    src = rows[1][3]
    assert events.decode_flow(src).src == a and events.decode_flow(src).vlan == vlan


def test_a_pure_ack_padded_to_the_minimum_frame_carries_no_data():
    """Ethernet pads a 54-byte ACK to 60: the IP header's length says there is no data."""
    with TcpRunner() as r:
        r.run(seg(A, B, 1000, flags="A"), seg(A, B, 1000, flags="A"))
        assert r.counters()["tcp_data"] == 0


def test_a_timestamp_echo_ends_the_sample_it_started():
    with TcpRunner() as r:
        rows = r.run(seg(A, B, 1000, b"x" * 10, ts=(100, 0)),
                     seg(B, A, 1, flags="A", ack=1010, ts=(500, 100), sport=5001, dport=40000))
        again = r.run(seg(B, A, 1, flags="A", ack=1010, ts=(501, 100), sport=5001,
                          dport=40000))
        # A pure ACK's new TSval starts nothing; a later echo than the one awaited gives
        # the sample up.
        r.run(seg(A, B, 1010, flags="A", ts=(101, 501)))
        late = r.run(seg(A, B, 1010, b"y", ts=(102, 501)),
                     seg(B, A, 1, flags="A", ack=1011, ts=(502, 103), sport=5001, dport=40000))
        c = r.counters()
        h = r.histogram()
    assert [row[8] for row in rows] == [TK_RTT_TS] and again == [] and late == []
    flow = events.decode_flow(rows[0][3])
    # The sample is named by the segment that started it: A's, to B.
    assert (flow.src, flow.sport, flow.dst, flow.dport) == (A, 40000, B, 5001)
    assert rows[0][6] > 0
    assert (c["rtt_samples"], c["rtt_unmatched"]) == (1, 1)
    assert h.count == 1 and sum(h.buckets) == 1 and h.sum_ns == rows[0][6]
    assert h.buckets[tcphealth.bucket_of(rows[0][6])] == 1


def test_the_handshake_gives_both_round_trips_without_timestamps():
    with TcpRunner() as r:
        rows = r.run(seg(A, B, 5000, flags="S", ack=0),
                     seg(B, A, 9000, flags="SA", ack=5001, sport=5001, dport=40000),
                     seg(A, B, 5001, flags="A", ack=9001))
    assert [row[8] for row in rows] == [TK_RTT_SYN, TK_RTT_SYN]
    first, second = (events.decode_flow(row[3]) for row in rows)
    assert (first.src, second.src) == (A, B)


def test_icmp_echo_gives_a_round_trip_v4_and_v6():
    eth = Ether(**MAC)
    with TcpRunner() as r:
        rows = r.run(eth / IP(src=A, dst=B) / ICMP(type=8, id=7, seq=1),
                     eth / IP(src=B, dst=A) / ICMP(type=0, id=7, seq=2),  # not its reply
                     eth / IP(src=B, dst=A) / ICMP(type=0, id=7, seq=1),
                     eth / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(id=9, seq=4),
                     eth / IPv6(src="fd00::2", dst="fd00::1") / ICMPv6EchoReply(id=9, seq=4))
    assert [row[8] for row in rows] == [TK_RTT_ICMP, TK_RTT_ICMP]
    assert events.decode_flow(rows[1][3]).src == "fd00::1"


def test_a_lost_echo_reply_holds_the_next_sample_back_a_second_at_most():
    eth = Ether(**MAC)
    with TcpRunner(gap_us=100_000) as r:
        r.run(eth / IP(src=A, dst=B) / ICMP(type=8, id=7, seq=1))  # its reply is lost
        time.sleep(1.1)
        rows = r.run(eth / IP(src=A, dst=B) / ICMP(type=8, id=7, seq=2),
                     eth / IP(src=B, dst=A) / ICMP(type=0, id=7, seq=2))
        assert [row[8] for row in rows] == [TK_RTT_ICMP]
        assert r.counters()["rtt_unmatched"] == 1


def test_other_protocols_cost_no_state():
    eth = Ether(**MAC)
    with TcpRunner() as r:
        r.run(*(eth / IP(src=A, dst=B) / UDP(sport=p, dport=53) for p in range(1000, 1050)))
        assert r.counters()["tcp_noroom"] == 0
        assert tcpstate.Sweeper(r.prog.tcpstate_fds, r.prog.tcpgen_fd).sweep() == 0


def test_a_full_state_table_is_counted_packet_by_packet():
    """10,000 connections, room for 5,000: the others' packets are counted, none wrong."""
    frames = [bytes(seg(A, B, 1, flags="S", ack=0, sport=10000 + i)).ljust(60, b"\0")
              for i in range(10000)]
    with TcpRunner(entries=5000) as r:
        for frame in frames:
            prog_test_run(r.prog.prog_fd, frame)
        r.reader.drain()
        c = r.counters()
    assert c["tcp_noroom"] == 5000
    assert c["rtt_unmatched"] == 0


def test_the_sweep_forgets_connections_no_packet_touched_for_two_sweeps():
    with TcpRunner() as r:
        r.run(*(seg(A, B, 1, b"x", sport=20000 + i) for i in range(10)))
        sweeper = tcpstate.Sweeper(r.prog.tcpstate_fds, r.prog.tcpgen_fd)
        assert sweeper.sweep() == 0  # touched in the generation before: kept
        r.run(*(seg(A, B, 2, b"x", sport=20000 + i) for i in range(5)))
        assert sweeper.sweep() == 5 and sweeper.expired == 5
        # The forgotten ones start anew: their next segment is no retransmission.
        r.run(*(seg(A, B, 1, b"x", sport=20000 + i) for i in range(5, 10)))
        assert r.counters()["tcp_retrans"] == 0
