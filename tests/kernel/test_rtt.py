"""netmon rtt live, on a guest's tap: known delays and losses on either side of it.

tests/support/guestpath.py builds guest | delay line | host bridge (the tap) | delay
line | remote. A delay added beyond the tap must show in the network's component and
not the guest's; one added behind it (between the tap and the guest: a slow guest) in
the guest's and not the network's. Losses beyond the tap must show as exactly the
retransmissions a capture at the tap shows.

The delay lines are user-space processes (this kernel has no netem): a frame waits its
delay plus the scheduler's jitter, so an RTT is held to a range, never a time: at least
the delay added, and within a quarter of it plus 10 ms above (the buckets alone are
within 12.5 %).
"""

from __future__ import annotations

import json
import os
import sys
import re
import statistics
import subprocess
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from tests.support.guestpath import TAP, GuestPath
from tests.support.netns import ROOT, scaled
from tests.support.pve import fake_pve
from tests.support.runner import Netmon
from tests.support.tmux import pane, wait_pane

pytestmark = pytest.mark.kernel

DELAY_MS = 40.0


@pytest.fixture(scope="module")
def path():
    with GuestPath() as p:
        yield p


def _run(path: GuestPath, tmp_path, traffic, *args: str, behind: float = 0,
         beyond: float = 0, drop_every: int = 0):
    env = fake_pve(tmp_path, {100: "web1"})
    with path.lines(behind, beyond, drop_every) as stats:
        with Netmon(path, "--rtt", *args, interface=TAP, ns=path.h, env=env) as nm:
            nm.wait_ready()
            traffic()
            assert nm.stop() == 0, nm.err
    return nm, stats


def _samples(lines: list[str], component: str, method: str = "timestamp") -> list[float]:
    """RTTs in ms of the JSON lines' samples of one component and method."""
    out = []
    for line in lines:
        rec = json.loads(line)
        if rec["event"] == "rtt" and rec["component"] == component and rec["method"] == method:
            out.append(rec["rtt_ns"] / 1e6)
    return out


def _pingpong(path: GuestPath, count: int = 40):
    def traffic():
        with path.server("echo", 5001):
            path.traffic(path.g, "pingpong", path.r_ip, 5001, count, 100)
    return traffic


@pytest.mark.parametrize("where", ["beyond", "behind"])
def test_a_delay_shows_in_its_own_component_only(path, tmp_path, where):
    """40 ms added beyond the tap: the network's RTT grows by it, the guest's does not;
    added behind it, the other way round. Both components from the same flow."""
    nm, _ = _run(path, tmp_path, _pingpong(path), "--json", **{where: DELAY_MS})
    network, guest = _samples(nm.out, "network"), _samples(nm.out, "guest")
    assert len(network) >= 5 and len(guest) >= 5, nm.out
    slow, fast = (network, guest) if where == "beyond" else (guest, network)
    assert DELAY_MS <= statistics.median(slow) <= DELAY_MS * 1.25 + 10
    assert statistics.median(fast) < DELAY_MS / 4
    rec = json.loads(nm.out[0])
    assert (rec["ifname"], rec["guest"], rec["guest_name"]) == (TAP, 100, "web1")
    # The summary's table: each component of the tap, by name.
    err = "\n".join(nm.err)
    assert re.search(rf"^netmon:   {TAP} \(web1\)  network +\d+ samples  median ", err, re.M)
    assert re.search(rf"^netmon:   {TAP} \(web1\)  guest +\d+ samples  median ", err, re.M)


def test_ipv6_a_delay_beyond_the_tap_shows_in_the_networks_component(tmp_path):
    """The same over IPv6 (its own table in the kernel, 44-byte keys), and ICMPv6's echo:
    40 ms beyond the tap in the network's samples, none in the guest's."""
    with GuestPath(ipv6=True) as p6:
        def traffic():
            with p6.server("echo", 5001, ip=p6.r_ip6):
                p6.traffic(p6.g, "pingpong", p6.r_ip6, 5001, 40, 100)
            subprocess.run(p6.exec_args(p6.g, "ping", "-6", "-n", "-q", "-c", "3", "-i",
                                        "0.2", p6.r_ip6), check=True, capture_output=True)

        nm, _ = _run(p6, tmp_path, traffic, "--json", "ip6", beyond=DELAY_MS)
    network, guest = _samples(nm.out, "network"), _samples(nm.out, "guest")
    assert len(network) >= 5 and len(guest) >= 5, nm.out
    assert DELAY_MS <= statistics.median(network) <= DELAY_MS * 1.25 + 10
    assert statistics.median(guest) < DELAY_MS / 4
    echo = _samples(nm.out, "network", "echo")
    assert len(echo) == 3 and all(DELAY_MS <= ms <= DELAY_MS * 1.25 + 10 for ms in echo), echo
    recs = [json.loads(line) for line in nm.out]
    assert {(r["src"], r["dst"]) for r in recs if r["component"] == "network"} == \
        {(p6.g_ip6, p6.r_ip6)}


def test_text_lines_name_the_guest_the_component_and_the_flow(path, tmp_path):
    def traffic():
        _pingpong(path, 10)()
        subprocess.run(path.exec_args(path.g, "ping", "-n", "-q", "-c", "3", "-i", "0.2",
                                      path.r_ip), check=True, capture_output=True)

    nm, _ = _run(path, tmp_path, traffic, beyond=20)
    g, r = (re.escape(ip) for ip in (path.g_ip, path.r_ip))
    tcp_net = re.compile(rf"^{TAP} \(web1\) network TCP {g}:\d+ -> {r}:5001 rtt "
                         rf"\d+\.\d+ ms( \(handshake\))?$")
    tcp_guest = re.compile(rf"^{TAP} \(web1\) guest TCP {r}:5001 -> {g}:\d+ rtt "
                           rf"\d+\.\d+ ms( \(handshake\))?$")
    echo = re.compile(rf"^{TAP} \(web1\) network ICMP {g} -> {r} rtt \d+\.\d+ ms \(echo\)$")
    for line in nm.out:
        assert tcp_net.match(line) or tcp_guest.match(line) or echo.match(line), line
    assert sum(bool(echo.match(line)) for line in nm.out) == 3
    assert any(line.endswith("(handshake)") for line in nm.out)


def test_retransmissions_equal_what_a_capture_at_the_tap_shows_twice(path, tmp_path):
    """Every 10th data segment to the remote is lost beyond the tap: netmon counts as
    retransmitted exactly the data segments a capture at the tap shows again (at least
    the ones lost; more where the sender retransmits what was not lost)."""
    pcap = tmp_path / "tap.pcap"

    def traffic():
        dump = subprocess.Popen(path.exec_args(path.h, "tcpdump", "-i", TAP, "-Q", "in",
                                               "--immediate-mode", "-U", "-n", "-w", str(pcap), "-Z", "root",
                                               "tcp"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            dump.stderr.readline()  # "listening on ..."
            with path.server("listen", 5002):
                path.traffic(path.g, "bulk", path.r_ip, 5002, 300_000)
        finally:
            time.sleep(scaled(0.5))  # what is in flight to tcpdump reaches it
            dump.terminate()
            _, err = dump.communicate(timeout=scaled(10))
            assert re.search(r"^0 packets dropped by kernel", err, re.M), err

    nm, stats = _run(path, tmp_path, traffic, "--json", "tcp", "port", "5002",
                     drop_every=10)
    seen, again, data = [], 0, 0
    for pkt in rdpcap(str(pcap)):
        if IP not in pkt or pkt[IP].src != path.g_ip:
            continue
        tcp = pkt[TCP]
        size = pkt[IP].len - pkt[IP].ihl * 4 - tcp.dataofs * 4
        if size <= 0:
            continue
        data += 1
        lo, hi = tcp.seq, tcp.seq + size
        if any(lo < b and a < hi for a, b in seen):
            again += 1
        seen.append((lo, hi))
    lost = stats["beyond"]["dropped"]
    retrans = [json.loads(line) for line in nm.out]
    retrans = [r for r in retrans if r["event"] == "retransmission"]
    assert lost >= 10 and again >= lost
    assert len(retrans) == again
    assert all(r["dir"] == "in" and r["src"] == path.g_ip for r in retrans)
    err = "\n".join(nm.err)
    assert re.search(rf"^netmon:   {TAP} \(web1\)  in +{data} data segments, {again} "
                     rf"retransmitted \(", err, re.M), err


def test_without_timestamps_the_handshake_gives_both_components(path, tmp_path):
    """Windows sends no TCP timestamps by default: the handshake still gives an RTT each
    way (SYN to SYN-ACK: the network; SYN-ACK to ACK: the guest)."""
    path.sysctl(path.g, "net.ipv4.tcp_timestamps", "0")
    try:
        nm, _ = _run(path, tmp_path, _pingpong(path, 5), "--json", beyond=DELAY_MS)
    finally:
        path.sysctl(path.g, "net.ipv4.tcp_timestamps", "1")
    assert _samples(nm.out, "network") == _samples(nm.out, "guest") == []
    network = _samples(nm.out, "network", "handshake")
    guest = _samples(nm.out, "guest", "handshake")
    assert len(network) == len(guest) == 1
    assert DELAY_MS <= network[0] <= DELAY_MS * 1.25 + 10
    assert guest[0] < DELAY_MS / 4


def test_metrics_serve_the_histograms_each_sample_in_them(path, tmp_path):
    """--metrics: netmon_tcp_rtt_seconds per interface, guest and component holds
    exactly the samples the lines showed, in buckets that are the kernel's bounds; the
    retransmission counters sit beside it."""
    from prometheus_client.parser import text_string_to_metric_families

    port = 19000 + os.getpid() % 1000
    scraped = {}

    def traffic():
        _pingpong(path, 20)()
        time.sleep(scaled(2))  # a snapshot after the last sample
        code = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                "sys.argv[1], timeout=5).read().decode())")
        scraped["text"] = subprocess.run(
            path.exec_args(path.h, sys.executable, "-c", code,
                           f"http://127.0.0.1:{port}/metrics"),
            check=True, capture_output=True, text=True).stdout

    nm, _ = _run(path, tmp_path, traffic, "--json", "--metrics", f"127.0.0.1:{port}",
                 beyond=10)
    families = {f.name: f for f in text_string_to_metric_families(scraped["text"])}
    counts = {}
    for s in families["netmon_tcp_rtt_seconds"].samples:
        assert (s.labels["interface"], s.labels["guest"], s.labels["guest_name"]) == (
            TAP, "100", "web1")
        if s.name.endswith("_count"):
            counts[s.labels["component"]] = s.value
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf":
            ns = float(s.labels["le"]) * 1e9
            assert round(ns) & (round(ns) - 1) == 0  # a power of two: a kernel bound
    lines = [json.loads(line) for line in nm.out]
    for comp in ("network", "guest"):
        assert counts[comp] == sum(1 for r in lines if r.get("component") == comp) > 0
    data = {s.labels["direction"]: s.value for s in families["netmon_tcp_data_segments"].samples}
    assert data["in"] >= 20 and data["out"] >= 20
    assert {s.value for s in families["netmon_tcp_retransmits"].samples} == {0}


def test_top_shows_each_flows_round_trips_as_a_person_sees_them(path, tmp_path):
    """top in tmux, 40 ms added beyond the tap: the guest's flow (in) shows the network's
    RTT, the remote's (out) the guest's own; then by guest (key b), the guest's row
    shows the network's."""
    if subprocess.run(["which", "tmux"], capture_output=True).returncode:
        pytest.skip("needs tmux (apt-get install tmux)")
    env = fake_pve(tmp_path, {100: "web1"})
    session = f"nmt-toprtt-{path.id}"
    # Without the COLUMNS and LINES an import here (scapy's) put in the environment: the
    # pane's size is the terminal's.
    cmd = " ".join(["env", "-u", "COLUMNS", "-u", "LINES",
                    *(f"{k}={v}" for k, v in env.items()), *path.exec_args(
        path.h, sys.executable, "-m", "netmon", "top", "-i", TAP, "-Q", "both")])
    rtt = re.compile(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)ms")

    def cell(screen: str, start: str) -> float:
        line = next(ln for ln in screen.splitlines() if re.match(start, ln))
        return float(rtt.search(line).group(1))

    with path.lines(beyond_ms=DELAY_MS):
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "130", "-y", "20",
                        f"cd {ROOT} && {cmd}; sleep 60"], check=True)
        try:
            wait_pane(session, "RTT 10s")
            _pingpong(path, 40)()
            screen = wait_pane(session, "ms")
            time.sleep(scaled(1.5))  # a redraw with every sample in
            screen = pane(session)
            assert "RETR%" in screen, screen
            assert DELAY_MS <= cell(screen, rf"TCP +{re.escape(path.g_ip)}:") <= DELAY_MS * 1.25 + 10
            assert cell(screen, rf"TCP +{re.escape(path.r_ip)}:5001") < DELAY_MS / 4, screen
            subprocess.run(["tmux", "send-keys", "-t", session, "b"], check=True)
            screen = wait_pane(session, "by: guest")
            assert DELAY_MS <= cell(screen, r"web1 \(100\)") <= DELAY_MS * 1.25 + 10, screen
            # w: the columns over the 40 s window, the same samples in it
            subprocess.run(["tmux", "send-keys", "-t", session, "w"], check=True)
            screen = wait_pane(session, "RTT 40s")
            assert DELAY_MS <= cell(screen, r"web1 \(100\)") <= DELAY_MS * 1.25 + 10, screen
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _netem() -> str | None:
    """Why netem cannot be used here (this machine's kernel has none), or None: tried on
    the loopback of a namespace of its own."""
    from tests.support.netns import sh

    probe = f"nmt-netem-{os.getpid()}"
    sh("ip", "netns", "add", probe)
    try:
        res = sh("ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root",
                 "netem", "delay", "1ms", check=False)
        return None if res.returncode == 0 else f"no netem: {res.stderr.strip()}"
    finally:
        sh("ip", "netns", "del", probe, check=False)


def test_netem_delay_and_loss_where_the_kernel_has_netem(tmp_path):
    """The kernel matrix's Debian kernels have netem: a guest (namespace a) behind its
    tap (b's veth, named so) with netem delaying what the guest sends: the guest's
    component grows by it, the network's (b's own stack answering) does not; netem
    losing what goes to the guest, after netmon saw it: retransmissions."""
    from tests.support.netns import NetnsPair, sh

    why = _netem()
    if why:
        pytest.skip(why)
    env = fake_pve(tmp_path, {100: "web1"})
    with NetnsPair(b_if=TAP) as n:
        sh("ip", "netns", "exec", n.a, "tc", "qdisc", "add", "dev", n.a_if, "root", "netem",
           "delay", f"{DELAY_MS:g}ms")
        sh("ip", "netns", "exec", n.b, "tc", "qdisc", "add", "dev", TAP, "root", "netem",
           "loss", "10%")
        with Netmon(n, "--rtt", "--json", interface=TAP, env=env) as nm:
            nm.wait_ready()
            server = subprocess.Popen(n.exec_args(n.b, sys.executable, "-m",
                                                  "tests.support.traffic", "echo", n.b_ip,
                                                  "5003"), stdout=subprocess.PIPE, text=True,
                                      cwd=ROOT)
            try:
                assert server.stdout.readline().strip() == "ready"
                n.run(n.a, sys.executable, "-m", "tests.support.traffic", "pingpong",
                      n.b_ip, "5003", "30", "3000", cwd=ROOT, timeout=scaled(120))
            finally:
                server.wait(scaled(20))
            assert nm.stop() == 0, nm.err
    guest, network = _samples(nm.out, "guest"), _samples(nm.out, "network")
    assert guest and network, nm.out
    assert DELAY_MS <= statistics.median(guest) <= DELAY_MS * 1.25 + 10
    assert statistics.median(network) < DELAY_MS / 4
    retrans = [json.loads(line) for line in nm.out]
    assert any(r["event"] == "retransmission" and r["dir"] == "out" for r in retrans)


def test_samples_agree_with_tsharks_round_trips_on_netmons_own_capture(path, tmp_path):
    """A second netmon writes the tap's packets (-w, both ways) while netmon rtt measures:
    each of netmon's samples has tshark's ack_rtt for the same echo within 100 us. Why
    that much: the two netmons stamp a packet at different hooks of the same interface
    (the first has the tap's XDP hook, the second its tc ingress, a little later in the
    stack) with the same clock; a sample is a difference of two stamps, so their offsets
    from the epoch do not enter, only how far apart the two hooks run."""
    import shutil

    if shutil.which("tshark") is None or shutil.which("reordercap") is None:
        pytest.skip("needs tshark and reordercap (apt-get install tshark)")
    env = fake_pve(tmp_path, {100: "web1"})
    capture = tmp_path / "tap.pcapng"
    with path.lines(beyond_ms=20):
        with Netmon(path, "--rtt", "--json", interface=TAP, ns=path.h, env=env) as nm, \
                Netmon(path, "-Q", "both", "-w", str(capture), "tcp", interface=TAP,
                       ns=path.h, env=env) as writer:
            nm.wait_ready()
            writer.wait_ready()
            _pingpong(path, 50)()
            time.sleep(scaled(0.5))
            assert writer.stop() == 0 and nm.stop() == 0, (writer.err, nm.err)
    # -w writes each CPU's ring as it comes: packets two CPUs handled in one poll may be
    # out of time order in the file (README: Capture), and tshark's analysis takes the
    # file's order for the wire's. reordercap (Wireshark's) sorts it first.
    ordered = tmp_path / "ordered.pcapng"
    subprocess.run(["reordercap", str(capture), str(ordered)], check=True, capture_output=True)
    res = subprocess.run(["tshark", "-r", str(ordered), "-Y", "tcp.analysis.ack_rtt", "-T",
                          "fields", "-e", "frame.time_epoch", "-e", "ip.src", "-e",
                          "tcp.analysis.ack_rtt"], capture_output=True, text=True, check=True)
    acks = [(float(t), src, float(rtt) * 1e9) for t, src, rtt in
            (line.split("\t") for line in res.stdout.splitlines())]
    samples = [json.loads(line) for line in nm.out]
    samples = [s for s in samples if s["event"] == "rtt" and s["method"] == "timestamp"]
    assert len(samples) >= 10
    for s in samples:
        # The echo came from the far side of the sample's first packet.
        echo_from = s["dst"]
        near = [a for a in acks if a[1] == echo_from and abs(a[0] - s["ts"]) < 0.002]
        assert near, (s, acks[:5])
        best = min(near, key=lambda a: abs(a[2] - s["rtt_ns"]))
        assert abs(best[2] - s["rtt_ns"]) < 100_000, (s, best)


def test_the_state_is_swept_after_root_is_given_up(path, tmp_path):
    """The sweep deletes and writes map entries from user space: as the user the run
    became (nobody here), every half second (NETMON_TCP_SWEEP), while connections come
    and go; the run ends cleanly and still measures."""
    env = {**fake_pve(tmp_path, {100: "web1"}), "NETMON_TCP_SWEEP": "0.5"}
    with path.lines():
        with Netmon(path, "--rtt", "--json", interface=TAP, ns=path.h, env=env) as nm:
            nm.wait_ready()
            for _ in range(3):
                _pingpong(path, 10)()
                time.sleep(scaled(1.2))  # two sweeps: the connection's state is gone
            assert nm.stop() == 0, nm.err
    assert not [e for e in nm.err if "error" in e], nm.err
    assert any("running as nobody" in e for e in nm.err), nm.err
    assert len({json.loads(line)["sport"] for line in nm.out
                if json.loads(line)["component"] == "network"}) == 3


def test_totals_keep_each_sample_and_segment_per_hour(path, tmp_path):
    """netmon rtt --totals: `netmon totals --rtt` holds as many samples per component as
    the run showed lines, and the tap's data segments as the summary counted them (the
    guest's sent: the tap's in)."""
    db = tmp_path / "rtt.db"
    nm, _ = _run(path, tmp_path, _pingpong(path, 20), "--json", "--totals", str(db),
                 beyond=10)
    lines = [json.loads(line) for line in nm.out]
    res = subprocess.run([sys.executable, "-m", "netmon", "totals", "--rtt", "--hours",
                          "--json", "--db", str(db)], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    for comp in ("network", "guest"):
        kept = sum(r["samples"] for r in rows if r.get("component") == comp)
        assert kept == sum(1 for r in lines if r.get("component") == comp) > 0
        assert all(r["guest"] == 100 and r["guest_name"] == "web1" for r in rows)
    err = "\n".join(nm.err)
    sent = sum(r["sent"]["segments"] for r in rows if "sent" in r)
    assert re.search(rf"^netmon:   {TAP} \(web1\)  in +{sent} data segments", err, re.M), err
