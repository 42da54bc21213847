"""(o) TCP health's cost per packet (netmon rtt), under BPF_PROG_TEST_RUN, at XDP and tc.

Side by side, each round every program in turn (common.best_runs): the empty program,
netmon counting only (--quiet), and netmon rtt --quiet (round trips and
retransmissions measured, the histograms and counters kept, no records), on:

- a TCP segment with data and timestamps, of a connection the state table holds: the
  same frame again and again, so from the second run on it is a retransmission (the
  path that counts one: the dearest a data segment takes);
- a pure ACK with timestamps (its TSval seen already: the commonest packet of a bulk
  transfer's other way, which starts and ends nothing);
- a UDP datagram: other protocols must pay nothing measurable.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import sys

from bench.common import BUILD, best_runs
from netmon.kernel import config as nm_config
from netmon.kernel.abi import TCP_MEASURE
from netmon.kernel.loader import BpfObject, MonitorProgram


def frames() -> dict[str, bytes]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    ip = IP(src="10.0.0.1", dst="10.0.0.2")
    ts = [("NOP", None), ("NOP", None), ("Timestamp", (1000, 2000))]
    return {
        "TCP data segment (a retransmission)": bytes(
            eth / ip / TCP(sport=40000, dport=443, seq=1, flags="PA", options=ts)
            / (b"x" * 1000)),
        "TCP pure ACK": bytes(eth / ip / TCP(sport=40000, dport=443, seq=1, flags="A",
                                             options=ts)),
        "UDP datagram": bytes(eth / ip / UDP(sport=40000, dport=53) / (b"x" * 18)),
    }


def bench_tcp_health(repeat: int) -> list[dict]:
    rows = []
    lo = socket.if_nametoindex("lo")
    for hook, empty_name, label in (("xdp", "xdp_pass", "XDP"), ("tc_in", "tc_pass", "tc")):
        with contextlib.ExitStack() as stack:
            empty = stack.enter_context(BpfObject(BUILD / f"{empty_name}.bpf.o"))
            quiet = stack.enter_context(MonitorProgram(nm_config.pack(quiet=True),
                                                       hooks=[hook]))
            rtt = stack.enter_context(MonitorProgram(
                nm_config.pack(quiet=True, tcp=TCP_MEASURE, rtt_gap_us=100_000),
                hooks=[hook], tcp_entries=65536))
            for p in (quiet, rtt):
                p.slots.register(lo)
            fds = [empty.program_fd(empty_name), quiet.prog_fds[hook], rtt.prog_fds[hook]]
            for what, frame in frames().items():
                (e_ns, e_k), (q_ns, q_k), (r_ns, r_k) = best_runs(fds, frame, repeat)
                rows.append({"hook": label, "packet": what, "empty": e_ns, "quiet": q_ns,
                             "rtt": r_ns, "added": r_ns - q_ns, "empty_k": e_k,
                             "quiet_k": q_k, "rtt_k": r_k})
            counters = rtt.counters()
            assert counters["tcp_retrans"] > 0 and counters["tcp_noroom"] == 0
    return rows


RATE_FLOWS = 10_000  # TCP connections offered in turn


def tcp_frame(n) -> bytes:
    """A TCP data segment with timestamps from a to b (no IP options: the generator
    rewrites its source port where UDP's would be, for RATE_FLOWS connections in turn)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    ts = [("NOP", None), ("NOP", None), ("Timestamp", (1000, 2000))]
    return bytes(Ether(src=n.mac(n.a), dst=n.mac(n.b)) / IP(src=n.a_ip, dst=n.b_ip)
                 / TCP(sport=20000, dport=443, seq=1, flags="PA", options=ts) / (b"x" * 100))


def bench_tcp_rate(n, count: int, repeats: int) -> list[dict]:
    """(p) The rate the receiving veth keeps with RATE_FLOWS TCP connections offered
    unpaced: the empty program, netmon --quiet, netmon rtt --quiet (ingress only, at
    XDP). Each connection's segment repeats, so from its second on each is counted as a
    retransmission: the dearest path. The state table holds them all (16,384)."""
    from bench.common import bench_rate

    frame = tcp_frame(n)
    quiet = bench_rate(n, count, repeats, frame, RATE_FLOWS,
                       ["--quiet", "--hook", "xdp"], "netmon --quiet")
    rtt = bench_rate(n, count, repeats, frame, RATE_FLOWS,
                     ["--rtt", "--quiet", "-Q", "in", "--hook", "xdp"], "netmon rtt --quiet")
    return quiet + rtt[1:]


def bench_tcp_conversations(n, count: int, repeats: int, tmp) -> list[dict]:
    """(q) RATE_FLOWS TCP conversations offered unpaced, both ways into the receiving
    veth (xdp_tx.bpf.c's conversations: every segment new data with a new TSval, each
    echoing the other side's last): the rate kept with nothing attached (the empty
    program), netmon rtt --quiet, and netmon rtt with a line per sample to a file, text
    and JSON; for the lines, the samples shown and lost (netmon's own count), and
    netmon's summary of the last text run (its data segments, none retransmitted)."""
    import os
    import signal
    from pathlib import Path

    from bench.common import BUILD, Tool, offer, rx_packets
    from bench.drops import _summary_numbers

    frame = tcp_frame(n)
    pass_obj = BUILD / "xdp_pass.bpf.o"
    base = [sys.executable, "-m", "netmon", "rtt", "-i", n.b_if, "-Q", "in", "--hook", "xdp"]
    runs = {"empty XDP_PASS": None, "netmon rtt --quiet": [*base, "--quiet"],
            "netmon rtt, a line per sample (to a file)": base,
            "netmon rtt --json, a line per sample (to a file)": [*base, "--json"]}
    results: dict[str, list[dict]] = {name: [] for name in runs}
    out = Path(tmp) / "rtt-lines.txt"
    for _ in range(repeats):
        for name, argv in runs.items():
            tool = None
            if argv is None:
                n.run(n.b, "ip", "link", "set", "dev", n.b_if, "xdpdrv", "obj",
                      str(pass_obj), "sec", "xdp")
            else:
                lines = "--quiet" not in argv
                tool = Tool(n, "netmon", argv, "Press Ctrl-C to stop",
                            out if lines else Path(os.devnull))
            before = rx_packets(n)
            gen = offer(n, frame, count, 0, RATE_FLOWS, conv=True)
            row = {"pps": (rx_packets(n) - before) / gen["seconds"]}
            if tool is None:
                n.run(n.b, "ip", "link", "set", "dev", n.b_if, "xdpdrv", "off")
            elif lines:
                done = tool.finish(1 << 62, idle=1.5)
                row.update(_summary_numbers(done["stderr"]), err=done["stderr"])
            else:
                tool.proc.send_signal(signal.SIGINT)
                tool.proc.wait(30)
            results[name].append(row)
    empty = statistics.median(r["pps"] for r in results["empty XDP_PASS"])
    rows = []
    for name, rs in results.items():
        pps = statistics.median(r["pps"] for r in rs)
        lines = runs[name] is not None and "--quiet" not in runs[name]
        rows.append({"attached": name, "pps": pps, "ratio": pps / empty,
                     "shown": sum(r["shown"] for r in rs) if lines else None,
                     "lost": sum(r["lost"] for r in rs) if lines else None,
                     "err": rs[-1].get("err", [])})
    return rows
