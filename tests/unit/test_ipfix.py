"""The IPFIX encoder and the [HOST:]PORT values, without a network.

tests/test_export.py holds the messages to a real collector (nfcapd).
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmon import cli, endpoint
from netmon.sinks import ipfix
from netmon.cli import ExitStatus
from netmon.flows import END_IDLE, FLOW_KEY, FlowKey, FlowRecord


def record(family: int = 4, proto: int = 17, sport: int = 5000, dport: int = 53,
           packets: int = 3, nbytes: int = 300, direction: int = 0, vlan: int = 0):
    src, dst = ((bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) if family == 4 else
                (socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                 socket.inet_pton(socket.AF_INET6, "2001:db8::2")))
    key = FlowKey.decode(FLOW_KEY.pack(9, direction, family, proto, vlan, sport, dport, src, dst))
    return FlowRecord(key, 1_000_000_000, 2_500_000_000, packets, nbytes, 0x12, END_IDLE)


def epoch_ms(ns: int) -> int:
    return 1_700_000_000_000 + ns // 1_000_000


def sets(message: bytes) -> list[tuple[int, bytes]]:
    version, length, _, _, _ = ipfix.HEADER.unpack_from(message)
    assert version == 10 and length == len(message)
    out, pos = [], ipfix.HEADER.size
    while pos < length:
        set_id, set_len = ipfix.SET_HEADER.unpack_from(message, pos)
        assert set_len >= 4
        out.append((set_id, message[pos + 4:pos + set_len]))
        pos += set_len
    assert pos == length
    return out


def test_templates_name_the_iana_elements():
    (set_id, body), = sets(ipfix.Encoder().messages([], 0, templates=True)[0][0])
    assert set_id == 2
    templates = {}
    pos = 0
    while pos < len(body):
        tid, count = struct.unpack_from("!HH", body, pos)
        templates[tid] = list(struct.iter_unpack("!HH", body[pos + 4:pos + 4 + 4 * count]))
        pos += 4 + 4 * count
    assert set(templates) == {256, 257}
    v4 = dict(templates[256])
    assert v4[8] == v4[12] == 4 and v4[1] == v4[2] == 8 and v4[152] == v4[153] == 8
    assert {7, 11, 4, 6, 10, 14, 61, 58}.issubset(v4)
    assert dict(templates[257])[27] == 16
    # A record is exactly as long as its template says.
    for family, tid in ((4, 256), (6, 257)):
        assert ipfix.RECORD[family].size == sum(size for _, size in templates[tid])


def test_a_record_carries_its_flow():
    family, data = ipfix.record_bytes(record(vlan=12, direction=1), epoch_ms)
    fields = ipfix.RECORD[4].unpack(data)
    assert family == 4
    assert fields == (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 5000, 53, 17, 0, 300, 3,
                      1_700_000_001_000, 1_700_000_002_500, 0, 9, 1, 12, END_IDLE, 0)
    # ICMP: type and code in icmpTypeCode, no ports; TCP keeps its flags.
    icmp = ipfix.RECORD[6].unpack(ipfix.record_bytes(record(6, 58, 128, 0), epoch_ms)[1])
    assert icmp[2:4] == (0, 0) and icmp[-1] == 128 << 8
    tcp = ipfix.RECORD[4].unpack(ipfix.record_bytes(record(proto=6), epoch_ms)[1])
    assert tcp[5] == 0x12


@given(st.lists(st.sampled_from([4, 6]), max_size=200), st.booleans())
def test_messages_stay_small_and_count_every_record_once(families, templates):
    enc = ipfix.Encoder(domain=7)
    enc.sequence = (1 << 32) - 5  # wraps
    pairs = [ipfix.record_bytes(record(f, sport=i), epoch_ms) for i, f in enumerate(families)]
    messages = enc.messages(pairs, 1234, templates)
    seq = (1 << 32) - 5
    got = []
    for message, count in messages:
        assert len(message) <= ipfix.MAX_MESSAGE
        _, _, export_time, sequence, domain = ipfix.HEADER.unpack_from(message)
        assert (export_time, sequence, domain) == (1234, seq, 7)
        n = 0
        for set_id, body in sets(message):
            if set_id == 2:
                continue
            family = {256: 4, 257: 6}[set_id]
            size = ipfix.RECORD[family].size
            assert len(body) % size == 0
            got += [(family, body[i:i + size]) for i in range(0, len(body), size)]
            n += len(body) // size
        assert n == count
        seq = (seq + count) % (1 << 32)
    assert got == pairs
    assert enc.sequence == seq
    assert bool(messages) == bool(pairs or templates)


@pytest.mark.parametrize("text, default, want", [
    ("127.0.0.1:4739", None, ("127.0.0.1", 4739)),
    ("[::1]:4739", None, ("::1", 4739)),
    ("9100", "127.0.0.1", ("127.0.0.1", 9100)),
    ("0.0.0.0:9100", "127.0.0.1", ("0.0.0.0", 9100)),
    ("localhost:4739", None, ("127.0.0.1", 4739)),
])
def test_endpoints(text, default, want):
    assert endpoint.parse(text, default) == want


@pytest.mark.parametrize("argv, message", [
    (["--ipfix", "10.0.0.1"], "'10.0.0.1' is not HOST:PORT"),
    (["--ipfix", "10.0.0.1:99999"], "the port must be 1-65535"),
    (["--ipfix", "::1:4739"], "write an IPv6 address in brackets"),
    (["--ipfix", "no-such-host.invalid:4739"], "cannot resolve 'no-such-host.invalid'"),
    (["--metrics", "http"], "the port must be a number"),
    (["--ipfix", "10.0.0.1:4739", "-w", "x.pcapng"], "flows are counted live, without -w or -r"),
    (["--metrics", "9100", "-r", "x.pcap"], "--metrics serves live counters; -r reads a file"),
    (["--quiet", "--flows"], "--quiet prints nothing and only counts"),
    (["-q", "-w", "x.pcapng"], "--quiet prints nothing and only counts"),
    (["-q", "-c", "3"], "--quiet prints nothing and only counts"),
])
def test_bad_endpoints_are_usage_errors(capsys, argv, message):
    assert cli.main(argv) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_metrics_show_the_last_snapshot_with_bounded_labels():
    from prometheus_client import generate_latest

    from netmon.sinks.metrics import Metrics, Snapshot

    m = Metrics("v1.1")
    counts = {"packets_udp": 5, "bytes_udp": 500, "packets_icmpv6": 2, "bytes_icmpv6": 140}
    m.update(Snapshot({("veth1", 0): counts, ("veth1", 1): {}}, lost=3, flow_overflow=1,
                      exporter={"records": 4, "errors": 1}))
    text = generate_latest(m.registry).decode()
    host = 'guest="",guest_name="",guest_side="",interface="veth1"'  # the exposition's order
    assert f'netmon_packets_total{{direction="in",{host},protocol="udp"}} 5.0' in text
    assert f'netmon_bytes_total{{direction="in",{host},protocol="icmpv6"}} 140.0' in text
    assert f'netmon_packets_total{{direction="out",{host},protocol="tcp"}} 0.0' in text
    for line in ("netmon_events_lost_total 3.0", "netmon_flows_overflow_total 1.0",
                 "netmon_ipfix_records_total 4.0", "netmon_ipfix_send_errors_total 1.0"):
        assert line in text
    assert 'netmon_build_info{libbpf="v1.1"' in text
    # Two interface-directions, six protocols: 12 series of each; nothing else varies.
    assert text.count("netmon_packets_total{") == 2 * 6
    m.close()  # never served: nothing to stop


def test_metrics_name_each_interfaces_guest(tmp_path, monkeypatch):
    """A guest's tap carries its id and name (from the Proxmox config); the host's
    interfaces, empty ones. Names are read once a minute, not at every snapshot."""
    from prometheus_client import generate_latest

    from netmon.sinks.metrics import Metrics, MetricsSink, Snapshot

    (tmp_path / "qemu-server").mkdir()
    (tmp_path / "qemu-server" / "100.conf").write_text("name: web\nmemory: 512\n")
    monkeypatch.setenv("NETMON_PVE_DIR", str(tmp_path))
    sink = MetricsSink.__new__(MetricsSink)  # its label cache alone, no endpoint
    sink._guests, sink._guests_at = {}, 0.0
    labels = sink._guest_labels({"tap100i0", "vmbr0", "veth101i1"})
    assert labels == {"tap100i0": ("100", "web"), "veth101i1": ("101", "")}
    m = Metrics()
    m.update(Snapshot({("tap100i0", 1): {"packets_tcp": 3}}, guests=labels))
    text = generate_latest(m.registry).decode()
    assert ('netmon_packets_total{direction="out",guest="100",guest_name="web",'
            'guest_side="received",interface="tap100i0",protocol="tcp"} 3.0') in text
    # Which side a guest's direction is, where the number is read.
    for name in ("netmon_packets_total", "netmon_bytes_total"):
        help_line = next(line for line in text.splitlines()
                         if line.startswith(f"# HELP {name} "))
        assert "in is what the guest sent, out what it received" in help_line
    m.close()


def test_drops_alone_export_drops_named_by_guest_and_no_traffic():
    """netmon drops --metrics: no series of zero packets and bytes (a dashboard would read
    "no traffic"); each drop carries its guest's id and name, as the traffic's series do."""
    from prometheus_client import generate_latest

    from netmon.sinks.metrics import Metrics, Snapshot

    m = Metrics()
    drops = [("tap100i0", "NO_SOCKET", "__udp4_lib_rcv+0x1", 4),
             ("tap100i0", "NO_SOCKET", "__udp6_lib_rcv+0x2", 1), ("-", "NOT_SPECIFIED", "", 2)]
    m.update(Snapshot({("tap100i0", 0): {}}, drops=drops,
                      guests={"tap100i0": ("100", "web")}, traffic=False))
    text = generate_latest(m.registry).decode()
    assert "netmon_packets_total{" not in text and "netmon_bytes_total{" not in text
    assert ('netmon_drops_total{guest="100",guest_name="web",interface="tap100i0",'
            'reason="NO_SOCKET"} 5.0') in text
    assert ('netmon_drops_total{guest="",guest_name="",interface="-",'
            'reason="NOT_SPECIFIED"} 2.0') in text
    m.close()


def test_the_exporter_resends_templates_and_counts_what_it_could_not_send(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(ipfix.time, "monotonic", lambda: now[0])
    exporter = ipfix.Exporter("127.0.0.1", 4739, epoch_ms, domain=3, template_every=60)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    exporter._sock.close()
    exporter._sock = mine  # a datagram socket we can read the messages from

    def received() -> list[list[int]]:
        out = []
        theirs.setblocking(False)
        while True:
            try:
                out.append([set_id for set_id, _ in sets(theirs.recv(65536))])
            except BlockingIOError:
                return out

    exporter.send([record(), record(6)])
    assert received() == [[2, 256, 257]]  # templates first, then a set per family
    now[0] += 30
    exporter.send([record()])
    exporter.send([])  # nothing to send, templates not due: no message
    assert received() == [[256]]
    now[0] += 31
    exporter.send([])  # due: templates alone
    assert received() == [[2]]
    assert (exporter.counts.records, exporter.counts.messages) == (3, 3)

    mine.close()  # the collector's side gone: sends fail, counted, monitoring goes on
    exporter._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    exporter.send([record(), record()])
    assert (exporter.counts.errors, exporter.counts.unsent) == (1, 2)
    exporter.close()
    theirs.close()


def test_how_full_the_rings_were_is_a_histogram():
    """Each read of a ring counts under the first bound at or above its share; the
    exposition's buckets count the reads at or below each bound, as Prometheus's do."""
    from prometheus_client import generate_latest

    from netmon.sinks.metrics import Metrics, Snapshot
    from netmon.sources.reader import Fill

    fill = Fill()
    for share in (0.0, 0.0, 0.1, 0.3, 0.95, 1.0):
        fill.add(share)
    assert fill.buckets() == [(0.25, 3), (0.5, 4), (0.75, 4), (0.9, 4), (1.0, 6)]
    m = Metrics()
    m.update(Snapshot(ring_fill=(fill.buckets(), fill.sum, fill.reads)))
    text = generate_latest(m.registry).decode()
    for line in ('netmon_ring_fill_ratio_bucket{le="0.25"} 3.0',
                 'netmon_ring_fill_ratio_bucket{le="0.9"} 4.0',
                 'netmon_ring_fill_ratio_bucket{le="1.0"} 6.0',
                 'netmon_ring_fill_ratio_bucket{le="+Inf"} 6.0',
                 "netmon_ring_fill_ratio_count 6.0", "netmon_ring_fill_ratio_sum 2.35"):
        assert line in text, text
    assert "netmon_ring_fill_ratio" not in generate_latest(Metrics().registry).decode()
    m.close()
