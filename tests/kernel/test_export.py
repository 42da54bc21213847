"""netmon's numbers in other engines: IPFIX to nfdump's nfcapd, metrics to Prometheus.

The collectors are the real ones (Debian's nfdump and prometheus), run in the
test's namespaces and stopped on every path. softflowd exports the same
traffic into a second nfcapd as the reference.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from tests.support.http import free_port, http_get
from tests.support.netns import ping, scaled, send
from tests.support.runner import Netmon

pytestmark = pytest.mark.kernel

NETMON_PORT, SOFTFLOWD_PORT = 4739, 4740  # the collectors', in namespace a


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (make deps installs it)")


@contextmanager
def running(argv: list[str], **kw):
    """A server for the length of a with block, stopped (then killed) on every path."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(scaled(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def prometheus(n, tmp_path: Path, port: int, targets: list[str], extra: str = ""):
    """Debian's Prometheus in namespace b for a with block, scraping ``targets`` every
    second as job netmon (``extra``: more of its configuration, YAML at the top level)."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" + extra
        + "scrape_configs:\n  - job_name: netmon\n"
        f"    static_configs:\n      - targets: {json.dumps(targets)}\n")
    return running(n.exec_args(n.b, "prometheus", f"--config.file={config}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}"), cwd=tmp_path)


def flow_frames(n) -> list[tuple[bytes, int]]:
    """(frame, count): flows of each kind, to addresses b does not have (b drops them,
    and answers nothing that would add flows)."""
    eth = Ether(src=n.mac(n.a), dst=n.mac(n.b))
    a, b = n.a_ip, f"{n.prefix}.20"
    a6, b6 = "2001:db8:78::1", "2001:db8:78::2"
    return [(bytes(f), count) for f, count in (
        (eth / IP(src=a, dst=b) / TCP(sport=40001, dport=443, flags="PA") / (b"t" * 200), 300),
        (eth / IP(src=a, dst=b) / UDP(sport=40002, dport=53) / (b"u" * 60), 200),
        (eth / IP(src=a, dst=b) / ICMP(type=8, id=7) / (b"i" * 56), 100),
        (eth / IPv6(src=a6, dst=b6) / UDP(sport=40003, dport=5353) / (b"v" * 1000), 150),
        (eth / IPv6(src=a6, dst=b6) / ICMPv6EchoRequest(id=9) / (b"x" * 20), 50),
        (filler_frame(eth, a, f"{n.prefix}.21"), FILLER_COUNT),  # its own flow key here
    )]


FILLER_PORT, FILLER_COUNT = 9999, 3000


def filler_frame(eth, a: str, b: str) -> Ether:
    """Last, a flow big enough to fill libpcap's ring blocks: softflowd (libpcap, no read
    timeout) sees packets only a full block at a time, so without it the flows before
    would never reach it. What is left of this flow in the ring softflowd never counts."""
    return eth / IP(src=a, dst=b) / UDP(sport=40005, dport=FILLER_PORT) / (b"f" * 1400)


def offer(n, frames: list[tuple[bytes, int]]) -> None:
    for frame, count in frames:
        send(n, "frames", n.a_if, count, frame.hex())


def flow_of(frame: bytes) -> tuple[str, str, str]:
    """(protocol, source, destination) as nfdump -N prints them."""
    ip = Ether(frame).payload
    return str(ip.proto if ip.version == 4 else ip.nh), ip.src, ip.dst


def nfdump(flowdir: Path, *args: str) -> str:
    return subprocess.run(["nfdump", "-R", str(flowdir), *args], capture_output=True,
                          text=True, check=True).stdout


def collected(flowdir: Path) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """nfdump's flows: (protocol, source, destination) -> (records, packets, bytes)."""
    out: dict[tuple[str, str, str], tuple[int, int, int]] = {}
    for line in nfdump(flowdir, "-q", "-N", "-o", "fmt:%pr|%sa|%da|%pkt|%byt").splitlines():
        proto, src, dst, packets, nbytes = (cell.strip() for cell in line.split("|"))
        r, p, b = out.get((proto, src, dst), (0, 0, 0))
        out[(proto, src, dst)] = (r + 1, p + int(packets), b + int(nbytes))
    return out


def nfcapd(n, flowdir: Path, port: int):
    flowdir.mkdir()
    return running(n.exec_args(n.a, "nfcapd", "-b", n.a_ip, "-p", str(port), "-w",
                               str(flowdir)))


def test_ipfix_records_reach_nfcapd_exactly(netns, tmp_path):
    need("nfcapd", "nfdump", "softflowd", "softflowctl")
    n = netns
    frames = flow_frames(n)
    ctl = tmp_path / "softflowd.ctl"
    with nfcapd(n, tmp_path / "netmon", NETMON_PORT) as c1, \
            nfcapd(n, tmp_path / "softflowd", SOFTFLOWD_PORT) as c2, \
            running(n.exec_args(n.b, "softflowd", "-d", "-i", n.b_if, "-v", "9",
                                "-n", f"{n.a_ip}:{SOFTFLOWD_PORT}", "-c", str(ctl),
                                "-p", str(tmp_path / "softflowd.pid"),
                                f"not udp port {NETMON_PORT} and not udp port {SOFTFLOWD_PORT}"
                                )) as sf:
        with Netmon(n, "--ipfix", f"{n.a_ip}:{NETMON_PORT}", "--ipfix-domain", "7",
                    "--flows", "--json") as nm:
            nm.wait_ready()
            time.sleep(scaled(1))  # softflowd's capture open too
            offer(n, frames)
            time.sleep(scaled(1.5))  # a read of the tables
            assert nm.stop() == 0
        n.run(n.b, "softflowctl", "-c", str(ctl), "shutdown", check=False)  # exports all
        sf.wait(scaled(20))
        time.sleep(scaled(0.5))  # the last datagrams into the collectors
        for c in (c1, c2):
            c.send_signal(signal.SIGTERM)  # nfcapd writes its file as it exits
            c.wait(scaled(20))
    want = {flow_of(f): (count, count * (len(f) - 14)) for f, count in frames}
    netmon = collected(tmp_path / "netmon")
    assert {k: (p, b) for k, (_, p, b) in netmon.items()} == want
    # What netmon printed is what the collector got, record for record.
    printed = [json.loads(line) for line in nm.out]
    assert sum(r for r, _, _ in netmon.values()) == len(printed)
    summary = "\n".join(nm.err)
    assert (f"{len(printed)} flow records sent to {n.a_ip}:{NETMON_PORT} as IPFIX, 0 messages "
            f"(0 records) not sent") in summary
    # The collector saw consecutive sequence numbers, from domain 7.
    info = nfdump(tmp_path / "netmon", "-I")
    assert "Sequence failures: 0" in info, info
    # softflowd's totals are the reference: where they differ from what was sent (and
    # netmon counted), the difference is reported.
    reference = {k: (p, b) for k, (_, p, b) in collected(tmp_path / "softflowd").items()}
    filler = flow_of(frames[-1][0])
    differences = {k: (p - reference.get(k, (0, 0))[0], b - reference.get(k, (0, 0))[1])
                   for k, (p, b) in want.items() if k != filler}
    differences = {k: v for k, v in differences.items() if v != (0, 0)}
    if differences:
        warnings.warn(f"softflowd, the reference, missed (packets, bytes) {differences}")
    missed = want[filler][0] - reference.get(filler, (0, 0))[0]
    if missed:
        warnings.warn(f"softflowd never counted the last {missed} of {FILLER_COUNT} packets "
                      "of the last flow: they waited in libpcap's ring for a block to fill")


def test_a_collector_that_is_not_there_stops_nothing(netns):
    n = netns
    # UDP only: the ICMP errors a's kernel returns for the IPFIX datagrams are flows too.
    with Netmon(n, "--ipfix", f"{n.a_ip}:{NETMON_PORT}", "--flows", "--json",
                "--flow-idle", "1", "--protocol", "udp") as nm:
        nm.wait_ready()
        for i in range(3):  # nothing listens: each send after the first is refused
            send(n, "udp", n.a_ip, 40100 + i, n.b_ip, 7300, 10, 2)
            time.sleep(scaled(2.5))
        assert len(nm.wait_lines(3, timeout=10)) == 3  # the records are still shown
        assert nm.stop() == 0
    assert sum(json.loads(line)["packetDeltaCount"] for line in nm.out) == 6
    m = re.search(rf"(\d+) flow records sent to {n.a_ip}:{NETMON_PORT} as IPFIX, (\d+) "
                  rf"messages \((\d+) records\) not sent", "\n".join(nm.err))
    sent, failed, unsent = map(int, m.groups())
    assert failed >= 1 and unsent >= 1 and sent + unsent == 3


def _promql(n, prom_port: int, query: str, want: str, prom) -> str | None:
    """Prometheus's answer to ``query`` once it is ``want`` (or the last one, in time)."""
    url = (f"http://127.0.0.1:{prom_port}/api/v1/query?"
           + urllib.parse.urlencode({"query": query}))
    value = None
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline and value != want:
        time.sleep(1)
        try:
            result = json.loads(http_get(n, url))["data"]["result"]
        except (json.JSONDecodeError, KeyError):
            assert prom.poll() is None, prom.stderr.read()
            continue  # not up yet
        value = result[0]["value"][1] if result else None
    return value


def test_prometheus_scrapes_the_packet_count(netns, tmp_path):
    need("prometheus")
    n = netns
    port, prom_port = free_port(n, n.b), free_port(n, n.b)
    frames = flow_frames(n)[:-1]  # no filler: no softflowd here
    udp = sum(count for f, count in frames if flow_of(f)[0] == "17")
    with Netmon(n, "--quiet", "--metrics", str(port)) as nm, \
            prometheus(n, tmp_path, prom_port, [f"127.0.0.1:{port}"]) as prom:
        nm.wait_ready()
        assert f"Metrics: http://127.0.0.1:{port}/metrics" in nm.err
        offer(n, frames)
        # The endpoint shows the counters as of netmon's last look, once a second.
        line = (f'netmon_packets_total{{direction="in",guest="",guest_name="",guest_side="",'
                f'interface="{n.b_if}",protocol="udp"}} {float(udp)}')
        deadline = time.monotonic() + scaled(10)
        text = ""
        while line not in text and time.monotonic() < deadline:
            time.sleep(0.5)
            text = http_get(n, f"http://127.0.0.1:{port}/metrics")
        assert line in text, text
        query = 'sum(netmon_packets_total{protocol="udp",direction="in"})'
        value = _promql(n, prom_port, query, str(udp), prom)
        assert value == str(udp), f"prometheus answered {value} for {query}"
        assert nm.stop() == 0
    assert prom.poll() is not None
    # --quiet: counted in the kernel, nothing sent to user space, nothing printed.
    assert nm.out == []
    total = sum(count for _, count in frames)
    assert f"{total} matched, 0 sent, 0 shown, 0 lost" in "\n".join(nm.err)


def test_prometheus_sums_a_guest_across_nodes(netns, tmp_path):
    """A guest that migrated: its tap on two nodes (namespaces b and a, a netmon each);
    PromQL sums its traffic by the guest label, whichever node carried it."""
    need("prometheus")
    n = netns
    pve = tmp_path / "pve"
    (pve / "qemu-server").mkdir(parents=True)
    (pve / "qemu-server" / "100.conf").write_text("name: web1\n")
    env = {"NETMON_PVE_DIR": str(pve)}
    a_tap, b_tap = n.link("tap100i0", "tap100i0")  # the same guest's tap on each node
    port_a, port_b, prom_port = free_port(n, n.a), free_port(n, n.b), free_port(n, n.b)
    # ICMP only: the scrapes of a's netmon cross the taps too.
    with Netmon(n, "--quiet", "-p", "icmp", "--metrics", f"{b_tap}:{port_b}",
                interface="tap100i0", env=env) as node_b, \
            Netmon(n, "--quiet", "-p", "icmp", "--metrics", f"{a_tap}:{port_a}",
                   interface="tap100i0", env=env, ns=n.a) as node_a, \
            prometheus(n, tmp_path, prom_port,
                       [f"{b_tap}:{port_b}", f"{a_tap}:{port_a}"]) as prom:
        node_b.wait_ready()
        node_a.wait_ready()
        # b's tap receives the echo requests, a's the replies: 4 packets in on each node.
        ping(n, b_tap, 4)
        by_guest = 'sum by (guest, guest_name) (netmon_packets_total{direction="in"})'
        assert _promql(n, prom_port, by_guest, "8", prom) == "8"
        per_node = 'count(netmon_packets_total{guest="100",protocol="icmp",direction="in"} > 0)'
        assert _promql(n, prom_port, per_node, "2", prom) == "2"
        named = 'sum(netmon_bytes_total{guest_name="web1",protocol="icmp"})'
        assert _promql(n, prom_port, named, str(8 * 98), prom) == str(8 * 98)
        assert node_b.stop() == 0 and node_a.stop() == 0


def test_a_metrics_port_in_use_is_one_line(netns):
    n = netns
    holder = subprocess.Popen(n.exec_args(n.b, sys.executable, "-c", (
        "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
        "print(s.getsockname()[1], flush=True); sys.stdin.read()")),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        with Netmon(n, "--metrics", f"127.0.0.1:{port}") as nm:
            assert nm.wait_exit() == 1
        assert nm.err == [f"netmon: error: cannot serve metrics on 127.0.0.1:{port}: "
                          f"Address already in use"]
    finally:
        holder.kill()
        holder.wait()


SLOW_CLIENTS = """
import socket, subprocess, sys, time
port, timeout = int(sys.argv[1]), float(sys.argv[2])
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]  # say nothing
scrape = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                         str(timeout), f"http://127.0.0.1:{port}/metrics"],
                        capture_output=True, text=True).stdout
closed = 0
for s in socks:  # each is closed by netmon once its time is up, not held open
    s.settimeout(timeout + 20)
    try:
        closed += s.recv(1) == b""
    except OSError:
        pass
print(scrape, closed)
"""


def test_slow_clients_cannot_hold_the_metrics_endpoint(netns):
    """200 connections that say nothing: a scrape still answers (curl's limit is a second,
    scaled), and netmon closes each slow one after its request time, not never."""
    n = netns
    port = free_port(n, n.b)
    with Netmon(n, "--quiet", "--metrics", str(port)) as nm:
        nm.wait_ready()
        res = n.python(n.b, SLOW_CLIENTS, str(port), str(scaled(1)))
        assert nm.stop() == 0
    assert res.stdout.split() == ["200", "200"], res.stderr


def test_metrics_over_tls_with_a_password(netns, tmp_path):
    """--web-config in the exporter toolkit's format: TLS with a self-signed certificate,
    basic auth with a bcrypt hash. curl without the password gets 401, with it the
    metrics; plain HTTP gets nothing."""
    import bcrypt

    n = netns
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
                      f"basic_auth_users:\n  prom: '{hashed}'\n")
    port = free_port(n, n.b)
    url = f"https://127.0.0.1:{port}/metrics"

    def curl(*args: str) -> str:
        return n.run(n.b, "curl", "-s", "--max-time", str(scaled(5)), "-o", "/dev/null", "-w",
                     "%{http_code}", "--cacert", str(tmp_path / "cert.pem"), *args,
                     check=False).stdout

    with Netmon(n, "--quiet", "--metrics", str(port), "--web-config", str(config)) as nm:
        nm.wait_ready()
        assert curl(url) == "401"
        assert curl("-u", "prom:wrong", url) == "401"
        assert curl("-u", "prom:s3cret", url) == "200"
        body = n.run(n.b, "curl", "-s", "--cacert", str(tmp_path / "cert.pem"), "-u",
                     "prom:s3cret", url).stdout
        assert "netmon_packets_total" in body or "netmon_build_info" in body
        assert curl(f"http://127.0.0.1:{port}/metrics") in ("000", "400")  # no plain HTTP
        assert nm.stop() == 0


@pytest.mark.parametrize("text,said", [
    ("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.pem\n",
     "the certificate or key cannot be used (No such file or directory)"),
    ("basic_auth_users:\n  prom: plaintext\n", "basic_auth_users maps users to bcrypt hashes"),
    ("http_server_config:\n  http2: true\n", "netmon does not take 'http_server_config' (it "
     "takes tls_server_config and basic_auth_users)"),
])
def test_a_web_config_netmon_cannot_use_is_one_line(netns, tmp_path, text, said):
    n = netns
    config = tmp_path / "web.yml"
    config.write_text(text)
    with Netmon(n, "--metrics", str(free_port(n, n.b)), "--web-config", str(config)) as nm:
        assert nm.wait_exit() == 2
    assert nm.err == [f"netmon: error: --web-config {config}: {said}"]


def test_a_ring_too_small_shows_full_in_the_metrics(netns):
    """One page a ring (--buffer-pages 1) and frames offered as fast as the generator
    goes: reads find the ring nearly full, and records are lost; the metrics say both,
    as the dashboard's "Ring use" and the NetmonRingNearlyFull alert read them. A
    --quiet run (nothing sent) finds its rings empty."""
    from tests.kernel.test_flow_table import offer as generate

    n = netns
    frame = bytes(Ether(src=n.mac(n.a), dst=n.mac(n.b)) / IP(src=n.a_ip, dst=f"{n.prefix}.20")
                  / UDP(sport=40002, dport=53) / (b"u" * 60))
    bucket = re.compile(r'^netmon_ring_fill_ratio_bucket\{le="([^"]+)"\} (\S+)$', re.M)
    for args, full in ((["--buffer-pages", "1"], True), (["--quiet"], False)):
        port = free_port(n, n.b)
        with Netmon(n, *args, "--metrics", str(port)) as nm:
            nm.wait_ready()
            generate(n, frame, 50_000, 0)
            deadline = time.monotonic() + scaled(10)
            counts: dict = {}
            while time.monotonic() < deadline:
                time.sleep(0.5)
                text = http_get(n, f"http://127.0.0.1:{port}/metrics")
                counts = {le: float(v) for le, v in bucket.findall(text)}
                lost = float(re.search(r"^netmon_events_lost_total (\S+)$", text, re.M)[1])
                if counts and (not full or (counts["+Inf"] > counts["0.9"] and lost)):
                    break
            assert nm.stop() == 0
        assert counts["+Inf"] > 0, counts
        if full:
            assert counts["+Inf"] > counts["0.9"] and lost > 0, (counts, lost)
        else:
            assert counts["0.25"] == counts["+Inf"] and lost == 0, (counts, lost)
