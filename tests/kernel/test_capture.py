"""Capture on the wire: -w files that tshark and capinfos read, and -r of what netmon wrote.

Real kernel, real packets. What netmon writes in namespace b is held against a
`tcpdump -w` capture of the same traffic taken on the sending side (namespace a).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from netmon.kernel import facts
from netmon.pcapng import reader as savefile
from tests.support.netns import ROOT, ping, scaled, send
from tests.support.runner import Netmon
from tests.support.tshark import tshark_fields

pytestmark = pytest.mark.kernel


def capinfos(path) -> dict[str, str]:
    out = subprocess.run(["capinfos", "-M", "-c", "-d", "-i", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in
                                                 out.splitlines()[1:]) if v}


class Tcpdump:
    """tcpdump -w in a namespace, stopped (and flushed) on exit."""

    def __init__(self, pair, ns: str, ifname: str, path, expr: str):
        self.proc = subprocess.Popen(pair.exec_args(ns, "tcpdump", "-i", ifname, "-w", str(path),
                                                    "--immediate-mode",
                                                    "-U", expr),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:  # "listening on ...": capturing from here on
            if "listening on" in line:
                break

    def __enter__(self) -> "Tcpdump":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(scaled(30))


@pytest.mark.parametrize("until", ["count", "signal"])
def test_both_directions_and_two_interfaces_in_one_file(netns, tmp_path, until):
    """--count: records carry events, walked one by one; a signal: -w alone, the
    kernel's blocks written as slices of the rings."""
    n = netns
    a2, b2 = n.link("veth2", "veth3")
    ours, theirs1, theirs2 = tmp_path / "netmon.pcapng", tmp_path / "a1.pcap", tmp_path / "a2.pcap"
    stop = ["--count", "8"] if until == "count" else []
    before = time.time()
    with Tcpdump(n, n.a, "veth0", theirs1, "icmp"), Tcpdump(n, n.a, "veth2", theirs2, "icmp"):
        with Netmon(n, "-i", "veth1,veth3", "-Q", "both", "--protocol", "icmp", "-w", str(ours),
                    *stop, interface=None) as nm:
            nm.wait_ready()
            ping(n, n.b_ip, count=2)
            ping(n, b2, count=2)
            if stop:
                assert nm.wait_exit() == 0
            else:
                time.sleep(scaled(0.5) + 0.5)  # a poll: the rings are drained
                assert nm.stop(signal.SIGINT) == 0
    after = time.time()
    assert nm.out == []  # -w: the packets go to the file, not to stdout
    assert "netmon: 8 packets written to " + str(ours) in nm.err
    rows = tshark_fields(ours, "frame.interface_name", "frame.packet_flags_direction",
                         "icmp.type", "frame.len", "frame.cap_len", "frame.time_epoch")
    rows.sort(key=lambda r: float(r[5]))  # -w alone: CPUs' packets may interleave
    assert [r[:3] for r in rows] == [
        ["veth1", "0x00000001", "8"], ["veth1", "0x00000002", "0"]] * 2 + [
        ["veth3", "0x00000001", "8"], ["veth3", "0x00000002", "0"]] * 2
    assert all(r[3] == r[4] for r in rows)  # whole frames
    # Wall-clock stamps, within the test's own window (a second either side for rounding).
    assert all(before - 1 < float(r[5]) < after + 1 for r in rows), (before, after, rows)
    # The same packets and bytes as tcpdump on the sending side saw.
    ref = [capinfos(theirs1), capinfos(theirs2)]
    got = capinfos(ours)
    assert int(got["Number of packets"]) == sum(int(r["Number of packets"]) for r in ref) == 8
    assert int(got["Data size"].split()[0]) == sum(int(r["Data size"].split()[0]) for r in ref)


def test_timestamps_follow_the_wall_clock(netns, tmp_path):
    n = netns
    path = tmp_path / "t.pcapng"
    with Netmon(n, "--protocol", "icmp", "-w", str(path), "--count", "1") as nm:
        nm.wait_ready()
        ping(n, n.b_ip)
        sent = time.time()
        assert nm.wait_exit() == 0
    (row,) = tshark_fields(path, "frame.time_epoch")
    assert abs(float(row[0]) - sent) < 1


def test_a_growing_file_is_readable_while_netmon_runs(netns, tmp_path):
    n = netns
    path = tmp_path / "g.pcapng"
    with Netmon(n, "--protocol", "udp", "-w", str(path), "--print") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40200, n.b_ip, 5200, 10, 3)
        deadline = time.monotonic() + scaled(5)
        count = 0
        while count < 3 and time.monotonic() < deadline:
            time.sleep(0.1)  # flushed every poll: no need to stop netmon
            count = len(tshark_fields(path, "frame.number"))
        assert count == 3
        assert nm.proc.poll() is None
        assert nm.stop(signal.SIGTERM) == 0
    # --print: the lines went to stderr as well.
    assert nm.err.count(f"UDP {n.a_ip}:40200 -> {n.b_ip}:5200 (52b)") == 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_leaves_a_whole_file(netns, tmp_path, sig):
    n = netns
    path = tmp_path / "s.pcapng"
    with Netmon(n, "-w", str(path), "--protocol", "udp") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40201, n.b_ip, 5201, 1000, 50)
        time.sleep(0.3)
        assert nm.stop(sig) == 0
    info = capinfos(path)
    assert info["Number of packets"] == "50"


@pytest.mark.skipif(not facts.supports("frags"),
                    reason="multi-buffer XDP needs Linux >= 5.18")
def test_jumbo_frames_are_captured_whole(netns, tmp_path):
    n = netns
    for ns, dev in ((n.a, n.a_if), (n.b, n.b_if)):
        n.run(ns, "ip", "link", "set", "dev", dev, "mtu", "9000")
    path = tmp_path / "j.pcapng"
    with Netmon(n, "--protocol", "udp", "-w", str(path), "--count", "1") as nm:
        nm.wait_ready()
        send(n, "udp", n.a_ip, 40202, n.b_ip, 5202, 8000)
        assert nm.wait_exit() == 0
    assert "Attach mode: native (bpf_link)" in nm.err
    ((length, caplen, payload),) = tshark_fields(path, "frame.len", "frame.cap_len", "udp.length")
    assert (length, caplen, payload) == ("8042", "8042", "8008")


def test_snaplen_cuts_packets(netns, tmp_path):
    n = netns
    path = tmp_path / "s.pcapng"
    with Netmon(n, "--protocol", "icmp", "-w", str(path), "-s", "60", "--count", "1") as nm:
        nm.wait_ready()
        ping(n, n.b_ip)
        assert nm.wait_exit() == 0
    assert tshark_fields(path, "frame.len", "frame.cap_len") == [["98", "60"]]


def test_rotation_leaves_exactly_n_readable_files(netns, tmp_path):
    n = netns
    path = tmp_path / "ring.pcapng"
    with Netmon(n, "--protocol", "udp", "-w", str(path), "-C", "0.01", "-W", "3") as nm:
        nm.wait_ready()
        for _ in range(6):
            send(n, "udp", n.a_ip, 40203, n.b_ip, 5203, 1000, 20)  # ~21 KB a round
            time.sleep(0.15)
        assert nm.stop() == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ring.pcapng", "ring.pcapng.1", "ring.pcapng.2"]
    for name in files:
        assert int(capinfos(tmp_path / name)["Number of packets"]) > 0


def test_write_to_stdout_for_tshark(netns):
    n = netns
    cmd = n.exec_args(n.b, sys.executable, "-m", "netmon", "-i", n.b_if, "--protocol", "icmp",
                      "-w", "-", "--count", "2")
    netmon = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    tshark = subprocess.Popen(["tshark", "-r", "-", "-T", "fields", "-e", "ip.src", "-e",
                               "frame.interface_name"], stdin=netmon.stdout,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    netmon.stdout.close()
    for line in netmon.stderr:
        if b"Press Ctrl-C to stop" in line:
            break
    ping(n, n.b_ip, count=2)
    out, _ = tshark.communicate(timeout=scaled(30))
    assert netmon.wait(scaled(30)) == 0
    assert out.splitlines() == [f"{n.a_ip}\t{n.b_if}"] * 2


def test_reading_back_gives_the_live_lines(netns, tmp_path):
    n = netns
    path = tmp_path / "live.pcapng"
    with Netmon(n, "-Q", "both", "-w", str(path), "--print", "--count", "4") as nm:
        nm.wait_ready()
        ping(n, n.b_ip)
        send(n, "syn", n.a_ip, 40204, n.b_ip, 5999)
        assert nm.wait_exit() == 0
    live = [line for line in nm.err if line.startswith(f"{n.b_if} ")]
    assert len(live) == 4
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path)], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    # The file records each frame's interface and direction: the live lines, as they were.
    assert res.stdout.splitlines() == live
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path), "--json", "--protocol",
                          "tcp", "--dst-port", "5999"], capture_output=True, text=True, cwd=ROOT)
    (ev,) = map(json.loads, res.stdout.splitlines())
    assert (ev["frame"], ev["ifname"], ev["dir"], ev["sport"]) == (3, n.b_if, "in", 40204)


def test_reading_a_damaged_file(netns, tmp_path):
    n = netns
    path = tmp_path / "d.pcapng"
    with Netmon(n, "--protocol", "icmp", "-w", str(path), "--count", "3") as nm:
        nm.wait_ready()
        ping(n, n.b_ip, count=3)
        assert nm.wait_exit() == 0
    data = path.read_bytes()
    path.write_bytes(data[:-20])
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path)], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 10
    assert res.stdout.splitlines() == [f"{n.b_if} in ICMP {n.a_ip} -> {n.b_ip} (98b)"] * 2
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"netmon: error: {path}: damaged at byte ")
    assert line.endswith("block cut short (92 of 112 bytes)") or "cut short" in line


def test_a_full_disk_ends_the_run_with_a_readable_file(netns, tmp_path):
    n = netns
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        path = mnt / "full.pcapng"
        with Netmon(n, "--protocol", "udp", "-w", str(path)) as nm:
            nm.wait_ready()
            for _ in range(10):
                send(n, "udp", n.a_ip, 40205, n.b_ip, 5205, 1400, 10)
                if nm.proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert nm.wait_exit() == 11
        errors = [line for line in nm.err if line.startswith("netmon: error:")]
        assert len(errors) == 1
        assert errors[0].startswith(f"netmon: error: writing {path}: no space left on device")
        info = capinfos(path)
        assert int(info["Number of packets"]) > 0
        assert n.xdp_prog_id() == 0  # unhooked on the way out
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_pcap_names_no_interface():
    """A pcap file has no interface names: ``ifname`` is null (it was netmon's own number
    for the file's interface, "1073741824"); pcapng keeps its names (the test above)."""
    path = f"{ROOT}/tests/data/tcpdump/08-sunrise-sunset-esp2.pcap"
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", path, "--json"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert events and {ev["ifname"] for ev in events} == {None}


@pytest.mark.parametrize("tsoffset,stamp", [(0, (1 << 64) - 1), (1 << 62, 0), (-(1 << 62), 0)])
def test_r_w_writes_times_pcapng_cannot_hold_at_the_nearest_it_can(tmp_path, tsoffset, stamp):
    """A pcapng whose stamps (microseconds by default) or if_tsoffset put a frame before
    1970 or after 2554: -r -w crashed (struct.error); tcpdump reads such files. The frame
    is written at the nearest time an EPB holds, and the summary says how many were."""
    import struct

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("=II", kind, len(body) + 12) + body + struct.pack("=I", len(body) + 12)

    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                  / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    options = (struct.pack("=HHq", 14, 8, tsoffset) if tsoffset else b"") + bytes(4)
    shb = block(0x0A0D0D0A, struct.pack("=IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("=HHI", 1, 0, 0) + options)
    epb = block(6, struct.pack("=IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, len(frame),
                               len(frame)) + frame)
    src, out = tmp_path / "odd.pcapng", tmp_path / "out.pcapng"
    src.write_bytes(shb + idb + epb)
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(src), "-w", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert (f"1 packets written to {out}; 1 of them at the nearest time pcapng holds (their "
            f"own was before 1970 or after 2554)") in res.stderr
    got = list(savefile.frames(out))
    assert [f.data for f in got] == [frame]
    assert got[0].ts_ns in (0, (1 << 64) - 1)


@pytest.mark.parametrize("expression", ["less 40", "ether[0] = 2"])
def test_r_frames_shorter_than_ethernet_get_the_expressions_verdict(tmp_path, expression):
    """A 13-byte frame: tcpdump matches `less 40` and `ether[0] = 2` on it; netmon counted
    it malformed and never matched. Now -w writes it, and the summary counts it among the
    frames the expression matched that are not IP."""
    import struct

    short = bytes.fromhex("02000000000102000000000208")  # 13 bytes
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="04:00:00:00:00:02")  # matches neither
                  / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / bytes(60))
    records = b"".join(struct.pack("=IIII", 1, 0, len(f), len(f)) + f for f in (short, frame))
    src, out = tmp_path / "short.pcap", tmp_path / "out.pcapng"
    src.write_bytes(struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + records)
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(src), "-w", str(out),
                          expression], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert [f.data for f in savefile.frames(out)] == [short]
    assert "2 packets seen (0 not IP, 1 malformed, 1 of them matched by the expression)" \
        in res.stderr
