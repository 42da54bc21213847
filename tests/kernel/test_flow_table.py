"""The kernel's flow tables, and netmon --flows and top, held to what was sent.

Real kernel: test runs for the tables alone, real traffic through veths for
the tool. Flows are sent with the bench's XDP_TX generator (live frames,
Linux >= 5.18) at 40,000 packets/s and as fast as it goes, and the records
must add up to what was sent, packet for packet, byte for byte.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from netmon.kernel.flowtable import FlowTable
from netmon.kernel.loader import MonitorProgram, prog_test_run
from netmon.kernel import config as nm_config
from tests.support.netns import ROOT, scaled, send
from tests.support.pve import fake_pve
from tests.support.runner import Netmon
from tests.support.tmux import pane, wait_pane

pytestmark = pytest.mark.kernel

GENERATOR = Path(ROOT) / "build" / "xdp_tx.bpf.o"  # make test builds it


def flow_frames(mac_a: str, mac_b: str, a: str, b: str) -> list[bytes]:
    """One frame per flow: TCP, UDP, ICMP over IPv4, UDP, TCP and ICMPv6 over IPv6."""
    eth = Ether(src=mac_a, dst=mac_b)
    a6, b6 = "2001:db8:77::1", "2001:db8:77::2"
    return [bytes(f) for f in (
        eth / IP(src=a, dst=b) / TCP(sport=40001, dport=443, flags="PA") / (b"t" * 200),
        eth / IP(src=a, dst=b) / UDP(sport=40002, dport=53) / (b"u" * 60),
        eth / IP(src=a, dst=b) / ICMP(type=8, id=7) / (b"i" * 56),
        eth / IPv6(src=a6, dst=b6) / UDP(sport=40003, dport=5353) / (b"v" * 1000),
        eth / IPv6(src=a6, dst=b6) / TCP(sport=40004, dport=22, flags="A") / (b"w" * 10),
        eth / IPv6(src=a6, dst=b6) / ICMPv6EchoRequest(id=9) / (b"x" * 20),
    )]


def key_of(rec: dict) -> tuple:
    """A record's flow, as the frame that made it would say it."""
    v = "IPv4" if "sourceIPv4Address" in rec else "IPv6"
    return (rec["protocolIdentifier"], rec[f"source{v}Address"], rec[f"destination{v}Address"],
            rec.get("sourceTransportPort"), rec.get("destinationTransportPort"),
            rec.get(f"icmpTypeCode{v}"))


def ip_len(frame: bytes) -> int:
    """The frame's IP bytes: what octetDeltaCount counts (no tags on these frames)."""
    return len(frame) - 14


def frame_key(frame: bytes) -> tuple:
    pkt = Ether(frame)
    ip = pkt.payload
    l4 = ip.payload
    proto = ip.proto if ip.version == 4 else ip.nh
    ports = (l4.sport, l4.dport) if proto in (6, 17) else (None, None)
    icmp = l4.type << 8 | l4.code if proto in (1, 58) else None
    return (proto, ip.src, ip.dst, *ports, icmp)


def totals(records: list[dict]) -> dict[tuple, tuple[int, int]]:
    out: dict[tuple, tuple[int, int]] = {}
    for rec in records:
        p, b = out.get(key_of(rec), (0, 0))
        out[key_of(rec)] = (p + rec["packetDeltaCount"], b + rec["octetDeltaCount"])
    return out


def offer(n, frame: bytes, count: int, rate: float, generator: str = "",
          flows: str = "1") -> str:
    """The bench's generator (XDP live frames, or a packet socket where the kernel refuses
    them, or ``generator`` where one is named); returns the generator that sent them."""
    res = n.run(n.a, "env", f"NETMON_TRAFFICGEN={generator}", "taskset", "-c", "0",
                sys.executable, "-m", "bench.trafficgen", str(GENERATOR), n.a_if, frame.hex(),
                str(count), str(rate), flows, cwd=ROOT)
    return json.loads(res.stdout)["generator"]


def test_the_benchs_tcp_conversations_are_the_same_from_either_generator(netns, tmp_path):
    """bench q's traffic: 3 TCP conversations in turn, both ways in one frame stream,
    every segment new data and a new TSval, each TSecr echoing the other side's last. The
    live-frames program and the packet socket (where the kernel refuses live frames)
    send the same frames, the TCP checksum aside (neither keeps it)."""
    from scapy.utils import rdpcap

    n = netns
    frame = bytes(Ether(src=n.mac(n.a), dst=n.mac(n.b)) / IP(src=n.a_ip, dst=n.b_ip)
                  / TCP(sport=20000, dport=443, seq=1, flags="PA",
                        options=[("NOP", None), ("NOP", None), ("Timestamp", (1000, 2000))])
                  / (b"x" * 10))
    got = {}
    # XDP_TX hands frames to the peer's NAPI: b needs GRO for it (which merges none of
    # these: each segment's timestamps differ from the one before it).
    n.run(n.b, "ethtool", "-K", n.b_if, "gro", "on")
    for generator in ("", "packet-socket"):
        pcap = tmp_path / f"conv{generator}.pcap"
        dump = subprocess.Popen(n.exec_args(n.b, "tcpdump", "-i", n.b_if, "-Q", "in", "-U",
                                            "--immediate-mode", "-n", "-w", str(pcap),
                                            "-Z", "root", "tcp"),
                                stderr=subprocess.PIPE, text=True)
        try:
            assert "listening" in dump.stderr.readline()
            offer(n, frame, 12, 1000, generator, "3:conv")
            time.sleep(scaled(0.5))
        finally:
            dump.terminate()
            dump.wait(scaled(10))
        got[generator] = [p for p in rdpcap(str(pcap))]
    live, sock = got[""], got["packet-socket"]
    assert len(live) == len(sock) == 12
    for a, b in zip(live, sock):
        a[TCP].chksum = b[TCP].chksum = 0
        assert bytes(a) == bytes(b)
    # Conversation 1 (a's port 20001): a's segment 0, then b's answer, then a's segment 1.
    a0, b0, a1 = [p for p in live if 20001 in (p[TCP].sport, p[TCP].dport)][:3]
    assert (a0[IP].src, a0[TCP].sport, a0[TCP].dport) == (n.a_ip, 20001, 443)
    assert (b0[IP].src, b0[TCP].sport, b0[TCP].dport) == (n.b_ip, 443, 20001)
    assert [dict(p[TCP].options)["Timestamp"] for p in (a0, b0, a1)] == [(1, 0), (2, 1), (3, 2)]
    assert [(p[TCP].seq, p[TCP].ack) for p in (a0, b0, a1)] == [(1, 1), (1, 11), (11, 11)]
    # Addresses swapped, the IP header's checksum holds as it was.
    ip = b0[IP].copy()
    ip.chksum = None
    assert IP(bytes(ip)).chksum == b0[IP].chksum


@pytest.mark.parametrize("hook", ["xdp", "tc_in"])
def test_reading_the_tables_loses_no_count(hook):
    """Packets keep coming (test runs on another thread) while the tables are flipped
    and read a hundred times over: every packet is in exactly one read."""
    frames = flow_frames("02:00:00:00:00:01", "02:00:00:00:00:02", "10.9.0.1", "10.9.0.2")
    repeat = 20000  # runs per call: few calls, as an XDP test run costs ~16 ms a call here
    with MonitorProgram(nm_config.pack(flows=True), hooks=(hook,),
                        flow_entries=64) as prog:
        table = FlowTable(prog, 64)
        enough = threading.Event()  # set once the reads have overlapped the packets enough
        done = threading.Event()
        loops, errors = [0], []

        def packets() -> None:
            try:
                while not enough.is_set() or loops[0] < 20:
                    for frame in frames:
                        prog_test_run(prog.prog_fds[hook], frame, repeat=repeat)
                    loops[0] += 1
            except Exception as exc:  # reported below
                errors.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=packets)
        worker.start()
        rows, reads = [], 0
        deadline = time.monotonic() + scaled(120)
        while not done.is_set():
            got = table.take()
            reads += bool(got)
            rows += got
            if reads >= 10 or time.monotonic() > deadline:
                enough.set()
        worker.join()
        rows += table.take()
        assert not errors
        counters = prog.counters()
    assert reads >= 10, "the reads did not overlap the packets"
    got: dict[bytes, list[int]] = {}
    for raw, _, packets_, nbytes, first, last in rows:
        assert first <= last
        got.setdefault(raw, [0, 0])
        got[raw][0] += packets_
        got[raw][1] += nbytes
    sent = loops[0] * repeat
    assert sorted(got.values()) == sorted([sent, sent * ip_len(f)] for f in frames)
    assert counters["flow_overflow"] == 0 and counters["matched"] == sent * len(frames)


@pytest.mark.parametrize("hook,generator", [("xdp", ""), ("tc", ""), ("tc", "packet-socket")])
def test_flow_records_add_up_to_what_was_sent(netns, hook, generator):
    """Every frame offered is in the records, from either generator: the kernel's live
    frames where it allows them, a packet socket where it refuses (named here, so that
    it is tested on every kernel)."""
    n = netns
    frames = flow_frames(n.mac(n.a), n.mac(n.b), n.a_ip, n.b_ip)
    paced, unpaced = 4000, 20000
    # XDP_TX hands frames to the peer's NAPI: b needs an XDP program or GRO for it. With
    # GRO, tc sees TCP segments merged: their headers count once per segment.
    n.run(n.b, "ethtool", "-K", n.b_if, "gro", "on")
    with Netmon(n, "--flows", "--json", "--hook", hook) as nm:
        nm.wait_ready()
        used = {offer(n, frame, paced, 40_000, generator) for frame in frames}
        for frame in frames:
            used.add(offer(n, frame, unpaced, 0, generator))  # as fast as it goes
        time.sleep(scaled(1.5))  # a read of the tables
        assert nm.stop() == 0
    records = [json.loads(line) for line in nm.out]
    want = {frame_key(f): ((paced + unpaced), (paced + unpaced) * ip_len(f)) for f in frames}
    assert totals(records) == want
    assert f"{len(frames)} flows seen, 0 active, {len(frames)} ended; " \
           f"{len(frames) * (paced + unpaced)} packets counted in flows, 0 (0 bytes) not" \
           in "\n".join(nm.err)
    tcp = [r for r in records if r["protocolIdentifier"] == 6 and "sourceIPv4Address" in r]
    assert [r["tcpControlBits"] for r in tcp] == [0x18]  # PSH|ACK
    assert used == {generator} if generator else len(used) == 1


def test_idle_and_active_timeouts_end_flows(netns):
    n = netns
    with Netmon(n, "--flows", "--json", "--flow-idle", "2", "--flow-active", "3") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40010, n.b_ip, 7001, 10, 1)  # one packet, then silence
        for _ in range(10):  # a packet every 0.5 s for 5 s: split by the active timeout
            send(n, "udp", n.a_ip, 40011, n.b_ip, 7002, 10, 1)
            time.sleep(0.5)
        lines = nm.wait_lines(2, timeout=10)
        running = [json.loads(line) for line in lines]
        assert nm.stop() == 0
    records = [json.loads(line) for line in nm.out]
    quiet = [r for r in records if r["destinationTransportPort"] == 7001]
    busy = [r for r in records if r["destinationTransportPort"] == 7002]
    # The quiet flow ended while netmon ran, by the idle timeout.
    assert [(r["packetDeltaCount"], r["flowEndReason"]) for r in quiet] == [(1, 1)]
    assert any(r["destinationTransportPort"] == 7001 for r in running)
    # The busy one: split by the active timeout, nothing lost between the records.
    assert len(busy) >= 2 and busy[0]["flowEndReason"] == 2
    assert sum(r["packetDeltaCount"] for r in busy) == 10
    assert all(r2["flowStartMilliseconds"] >= r1["flowEndMilliseconds"]
               for r1, r2 in zip(busy, busy[1:]))


def test_a_table_too_small_counts_the_overflow(netns):
    n = netns
    with Netmon(n, "--flows", "--json", "--flow-entries", "2") as nm:
        nm.wait_ready()
        send(n, "flows", n.a_ip, 40020, n.b_ip, 7100, 10, 8, 5)  # 8 flows, 5 packets each
        assert nm.stop() == 0  # its last read of the tables finds them
    counted = sum(json.loads(line)["packetDeltaCount"] for line in nm.out)
    summary = "\n".join(nm.err)
    overflow = int(re.search(r"packets counted in flows, (\d+) \(", summary).group(1))
    assert overflow > 0 and counted + overflow == 40
    assert f"{counted} packets counted in flows" in summary


def rate(text: str) -> float:
    """``16.1Mb`` -> 16.1e6."""
    m = re.fullmatch(r"([\d.]+)([kMGT]?)b", text)
    return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]


def test_top_shows_the_flows_at_their_rates(netns):
    """netmon top in tmux, as a person sees it: two flows offered at known rates."""
    if subprocess.run(["which", "tmux"], capture_output=True).returncode:
        pytest.skip("needs tmux (apt-get install tmux)")
    n = netns
    frames = flow_frames(n.mac(n.a), n.mac(n.b), n.a_ip, n.b_ip)
    big, small = frames[3], frames[1]  # IPv6 UDP 1048 IP bytes, IPv4 UDP 88
    offered = {"big": (big, 2000), "small": (small, 1000)}  # packets/s
    session = f"nmt-top-{n.id}"
    cmd = " ".join(n.exec_args(n.b, sys.executable, "-m", "netmon", "top", "-i", n.b_if))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    f"cd {ROOT} && {cmd}"], check=True)
    gens = []
    try:
        deadline = time.monotonic() + scaled(10)
        while "netmon top" not in pane(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        for frame, pps in offered.values():
            gens.append(subprocess.Popen(
                n.exec_args(n.a, sys.executable, "-m", "bench.trafficgen", str(GENERATOR),
                            n.a_if, frame.hex(), str(pps * 8), str(pps)),
                cwd=ROOT, stdout=subprocess.DEVNULL))
        time.sleep(4.5)  # the 2 s window full of steady traffic
        screen = pane(session)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        for g in gens:
            g.wait(30)
    finally:
        for g in gens:
            g.kill()
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    lines = screen.splitlines()
    assert lines[0].startswith(f"netmon top: {n.b_if}  sort: rate  flows: 2")
    rows = [line.split() for line in lines if line.startswith("UDP ")]
    assert len(rows) == 2, screen
    # PROTO, src, ->, dst, PKT/S, 2s, 10s, 40s, TOTAL; the faster flow first.
    for cells, (frame, pps) in zip(rows, [offered["big"], offered["small"]]):
        assert abs(float(cells[4]) - pps) <= 0.1 * pps, screen
        bps = pps * ip_len(frame) * 8
        assert abs(rate(cells[5]) - bps) <= 0.1 * bps, screen


# A sender in namespace a: UDP datagrams of 972 bytes (1,000 of IP: 8,000 bits) to each
# address at its own rate, paced by the clock (not by sleeps adding up), for SECONDS.
PACED = """
import socket, sys, time
seconds = float(sys.argv[1])
targets = [(a, float(r)) for a, r in (t.split("=") for t in sys.argv[2:])]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = bytes(972)
t0 = time.monotonic()
sent = [0] * len(targets)
while True:
    now = time.monotonic() - t0
    if now >= seconds:
        break
    for i, (addr, rate) in enumerate(targets):
        while sent[i] < now * rate:
            s.sendto(payload, (addr, 9))
            sent[i] += 1
    time.sleep(0.002)
"""


def _top_in_tmux(n, session: str, env: dict, size: tuple[int, int], *args: str) -> None:
    """netmon top in b, in a detached tmux session of ``size`` columns and rows; the pane
    stays a minute after it quits (the caller kills the session on every path)."""
    cmd = " ".join(["env", *(f"{k}={v}" for k, v in env.items()), *n.exec_args(
        n.b, sys.executable, "-m", "netmon", "top", *args)])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(size[0]), "-y",
                    str(size[1]), f"cd {ROOT} && {cmd}; sleep 60"], check=True)


@pytest.mark.kernel
def test_top_by_guest_shows_each_guests_rate_as_a_person_sees_it(netns, tmp_path):
    """top --by guest in tmux, two guests (a fake /etc/pve): each guest's row shows the
    rate it was offered, within 10%, its NICs together."""
    if subprocess.run(["which", "tmux"], capture_output=True).returncode:
        pytest.skip("needs tmux (apt-get install tmux)")
    n = netns
    env = fake_pve(tmp_path, {100: "web1", 101: "mail1"})
    _, web0 = n.link("nmt-g0", "tap100i0")
    _, web1 = n.link("nmt-g1", "tap100i1")  # web1's second NIC
    _, mail = n.link("nmt-g2", "tap101i0")
    session = f"nmt-topby-{n.id}"
    _top_in_tmux(n, session, env, (100, 30), "--by", "guest", "-i", "'tap*'")
    # pps per address: web1 250 + 50 on its two NICs (2.4 Mb/s), mail1 150 (1.2 Mb/s)
    rates = {web0: 250, web1: 50, mail: 150}
    offered = {"web1 (100)": 300 * 8000, "mail1 (101)": 150 * 8000}
    sender = None
    try:
        screen = wait_pane(session, "by: guest")
        seconds = scaled(14)
        sender = subprocess.Popen(n.exec_args(n.a, "taskset", "-c", "0", sys.executable,
                                              "-c", PACED, str(seconds),
                                              *(f"{a}={r}" for a, r in rates.items())))
        time.sleep(seconds - scaled(1.5))  # the 10 s window is full of traffic
        screen = pane(session)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    finally:
        if sender is not None:
            sender.wait()
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert "GUEST" in screen and "10s" in screen, screen
    for label, bits in offered.items():
        row = next((line for line in screen.splitlines() if line.startswith(label)), None)
        assert row is not None, screen
        ten = rate(row[len(label):].split()[2])  # PKT/S, 2s, 10s
        assert abs(ten - bits) <= 0.1 * bits, (label, ten, bits, screen)


@pytest.mark.kernel
def test_top_at_80_columns_shows_whole_flows_names_nics_and_leaves_cleanly(netns, tmp_path):
    """top on two of a guest's NICs in an 80-column tmux pane: each flow's addresses and
    ports whole (the optional columns give way), each NIC named (web1/net0, web1/net1);
    after q the summary, and no "Press Ctrl-C to stop" left above it."""
    if subprocess.run(["which", "tmux"], capture_output=True).returncode:
        pytest.skip("needs tmux (apt-get install tmux)")
    n = netns
    env = fake_pve(tmp_path, {100: "web1"})
    a0, b0 = n.link("nmt-g0", "tap100i0")
    a1, b1 = n.link("nmt-g1", "tap100i1")
    session = f"nmt-top80-{n.id}"
    _top_in_tmux(n, session, env, (80, 24), "-i", "'tap*'", "--protocol", "udp")
    try:
        wait_pane(session, "no traffic yet")
        send(n, "udp", a0, 50123, b0, 44443, 100, 20)
        send(n, "udp", a1, 50124, b1, 44444, 100, 20)
        flows = [f"{a0}:50123 -> {b0}:44443", f"{a1}:50124 -> {b1}:44444"]
        screen = wait_pane(session, flows[1])
        screen = wait_pane(session, flows[0]) if flows[0] not in screen else screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        after = wait_pane(session, "packets seen")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    rows = {f: next((line for line in screen.splitlines() if f in line), None) for f in flows}
    assert all(rows.values()), screen
    assert "web1/net0" in rows[flows[0]] and "web1/net1" in rows[flows[1]], screen
    assert "netmon: " in after and "Press Ctrl-C to stop" not in after, after
