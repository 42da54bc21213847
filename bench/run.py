"""netmon's benchmark: run by `make bench`, never by the tests.

Everything runs in one go on the same rig, side by side with its baseline:

  (a) CPU time per shown event of netmon (text to a file) and of `tcpdump -n -l`
      with the equivalent filter, on the same offered UDP traffic, and what each lost;
  (b) the XDP program's cost per packet under BPF_PROG_TEST_RUN, non-matching and
      matching, and rejected by a short and by a 20-term filter expression, against an
      empty XDP_PASS program;
  (c) the packet rate the receiving veth keeps with netmon attached and filtering
      everything out, against the empty XDP_PASS program attached;
  (d) the delay from the hook to the line on stdout;
  (e) the tc programs' cost per packet under BPF_PROG_TEST_RUN against an empty tc
      program, and CPU per shown event with --direction both on traffic the
      interface sends (tcpdump sees both directions by default);
  (f) start-up: from exec to netmon's "Press Ctrl-C" and to tcpdump's "listening on",
      each without and with a filter expression;
  (g) capture: CPU per captured packet of `netmon -w` and `tcpdump -w` (and xdpdump,
      where it runs), 64- and 1500-byte frames, at 40,000/s and unpaced, and what each
      lost; packets counted in the files with capinfos;
  (h), (i), (j) flows, (k) top at 20,000 flows: see bench/flows.py.
  (l) each program's verification at load: instructions and time (what start-up waits on).
  (o), (p), (q) TCP health (netmon rtt): its cost per packet at XDP and tc, the rate
      kept with 10,000 connections, and with 10,000 conversations both ways, the
      samples shown and lost: see bench/rtt.py.
  (r) netmon totals --html's time against --days --json's: see bench/report.py.

The rig: two namespaces joined by a veth pair (tests/support/netns.py), no default route;
frames are offered by bench/trafficgen.py from namespace a. Timings are never
asserted: they are printed, with the machine, as a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netmon.events import EVENT_SIZE
from netmon.filters import FilterSpec, parse_network
from netmon.kernel.loader import BpfObject, MonitorProgram
from netmon.sources.reader import PerfReader
from netmon.kernel import config as nm_config
from tests.support.netns import NetnsPair
from bench.common import (BUILD, DPORT, GEN_CPU, GENERATORS, ROOT, TOOL_CPU, Tool, bench_rate,
                          best_runs, offer, rx_packets, timed_run, udp_frame)


def netmon_lost(stderr: list[str]) -> int:
    last = [ln for ln in stderr if ln.startswith("netmon: ") and " lost" in ln][-1]
    return int(re.search(r"(\d+) lost", last).group(1))


def tcpdump_lost(stderr: list[str]) -> int:
    line = next(ln for ln in stderr if "dropped by kernel" in ln)
    return int(line.split()[0])


def send_from_b(n: NetnsPair, count: int, rate: float) -> dict:
    """UDP datagrams from b to a through b's stack: they leave by veth1's tc egress."""
    res = n.run(n.b, "taskset", "-c", GEN_CPU, sys.executable, "-m", "bench.udpsend",
                n.b_ip, n.a_ip, str(DPORT), "18", str(count), str(rate), cwd=ROOT)
    return json.loads(res.stdout)


def bench_cpu(n: NetnsPair, rates: list[float], counts: list[int], repeats: int,
              tmp: Path, egress: bool = False) -> list[dict]:
    """CPU per shown event of netmon and tcpdump on the same traffic.

    egress: b sends the traffic and netmon watches both directions; otherwise a
    sends it and netmon watches what b receives.
    """
    frame = udp_frame(n)
    both = ["--direction", "both"] if egress else []
    tools = {
        "netmon": ([sys.executable, "-m", "netmon", "-i", n.b_if, *both, "--protocol", "udp",
                    "--dst-port", str(DPORT)], "Press Ctrl-C to stop", netmon_lost),
        "tcpdump": (["tcpdump", "-n", "-l", "-i", n.b_if, f"udp and dst port {DPORT}"],
                    "listening on", tcpdump_lost),
    }
    rows = []
    for rate, count in zip(rates, counts):
        samples: dict[str, list[dict]] = {name: [] for name in tools}
        for _ in range(repeats):
            for name, (argv, ready, lost) in tools.items():  # alternate, same traffic
                tool = Tool(n, name, argv, ready, tmp / f"{name}.out")
                before = rx_packets(n)
                if egress:
                    gen = send_from_b(n, count, rate)
                    before -= count  # counted as sent, not received
                else:
                    gen = offer(n, frame, count, rate)
                res = tool.finish(expected=count)
                res.update(received=rx_packets(n) - before, seconds=gen["seconds"],
                           lost=lost(res["stderr"]))
                samples[name].append(res)
        for name, runs in samples.items():
            per_event = [r["cpu_ns"] / max(r["lines"], 1) for r in runs]
            rows.append({
                "tool": name, "rate": rate, "offered": count,
                "offered_rate": statistics.median(r["received"] / r["seconds"] for r in runs),
                "shown": min(r["lines"] for r in runs),
                "lost": max(r["lost"] for r in runs),
                "us_per_event": statistics.median(per_event) / 1000,
            })
    return rows


def capinfos_count(path: Path) -> int:
    res = subprocess.run(["capinfos", "-M", "-c", "-T", "-r", str(path)], capture_output=True,
                         text=True)
    try:
        return int(res.stdout.split("\t")[-1])
    except ValueError:
        return 0


def xdpdump_lost(stderr: list[str]) -> int:
    # "N packets captured\nM packets dropped by perf ring"
    line = next((ln for ln in stderr if "dropped by perf ring" in ln), "0")
    return int(line.split()[0])


def bench_capture(n: NetnsPair, rates: list[float], counts: list[int], sizes: list[int],
                  repeats: int, tmp: Path) -> list[dict]:
    """CPU per captured packet, each tool writing its file on tmpfs."""
    tools = {
        "netmon -w": (lambda out: [sys.executable, "-m", "netmon", "-i", n.b_if, "--protocol",
                                   "udp", "--dst-port", str(DPORT), "-w", str(out)],
                      "Press Ctrl-C to stop", netmon_lost),
        "tcpdump -w": (lambda out: ["tcpdump", "-n", "-i", n.b_if, "-w", str(out),
                                    f"udp and dst port {DPORT}"], "listening on", tcpdump_lost),
    }
    xdpdump_note = xdpdump_runs(n, tmp)
    if xdpdump_note is None:
        tools["xdpdump -w"] = (lambda out: ["xdpdump", "-i", n.b_if, "-w", str(out)],
                               "listening on", xdpdump_lost)
    else:
        print(f"\nxdpdump left out: {xdpdump_note}")
    rows = []
    for size in sizes:
        frame = udp_frame(n, payload=size - 42)
        for rate, count in zip(rates, counts):
            samples: dict[str, list[dict]] = {name: [] for name in tools}
            for _ in range(repeats):
                for name, (argv, ready, lost) in tools.items():
                    out = tmp / "capture.out"
                    out.unlink(missing_ok=True)
                    tool = Tool(n, name, argv(out), ready, Path(os.devnull))
                    gen = offer(n, frame, count, rate)
                    res = tool.finish_file(out)
                    res.update(seconds=gen["seconds"], lost=lost(res["stderr"]),
                               captured=capinfos_count(out))
                    samples[name].append(res)
            for name, runs in samples.items():
                rows.append({
                    "tool": name, "size": size, "rate": rate, "offered": count,
                    "captured": min(r["captured"] for r in runs),
                    "lost": max(max(r["lost"], count - r["captured"]) for r in runs),
                    "us_per_packet": statistics.median(
                        r["cpu_ns"] / max(r["captured"], 1) for r in runs) / 1000,
                })
    return rows


def xdpdump_runs(n: NetnsPair, tmp: Path) -> str | None:
    """None if xdp-tools' xdpdump captures in XDP mode here, else why not.

    Without an XDP program on the interface xdpdump falls back to "legacy mode",
    libpcap, which is tcpdump's path; its own mode traces an XDP program that is
    there (fentry/fexit), so the probe attaches the empty XDP_PASS first.
    """
    if shutil.which("xdpdump") is None:
        return "not installed (apt-get install xdp-tools)"
    n.run(n.b, "ip", "link", "set", "dev", n.b_if, "xdpdrv", "obj",
          str(BUILD / "xdp_pass.bpf.o"), "sec", "xdp")
    try:
        res = n.run(n.b, "timeout", "-s", "INT", "2", "xdpdump", "-i", n.b_if, "-w",
                    str(tmp / "probe"), check=False)
    finally:
        n.run(n.b, "ip", "link", "set", "dev", n.b_if, "xdpdrv", "off")
    errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln or "Couldn't" in ln]
    if errors:
        return " / ".join(errors)
    return "its XDP mode needs the empty program kept attached, which this bench does not do" \
        if "listening on" in res.stderr else res.stderr.strip()[-200:]


# (label, expression): each rejects bench_prog_run's non-matching packet, a TCP SYN from
# 10.0.0.1 to 10.0.0.2 port 443, after reading what a real filter would.
EXPRESSIONS = [
    ("`tcp port 443 and host 10.0.0.5`", "tcp port 443 and host 10.0.0.5"),
    ("a 20-term expression", " or ".join(f"(udp and port {5000 + i})" for i in range(19))
     + " or host 10.9.9.9"),
]


def bench_prog_run(repeat: int, hook: str = "xdp") -> list[dict]:
    """ns per packet under BPF_PROG_TEST_RUN, of the XDP or the tc ingress program."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    match = bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=DPORT)
                  / (b"x" * 18))
    miss = bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=443))
    spec = FilterSpec(protocol=17, dst=parse_network("10.0.0.2"), dport=DPORT)
    empty_name = {"xdp": "xdp_pass", "tc_in": "tc_pass"}[hook]
    lo = socket.if_nametoindex("lo")
    with contextlib.ExitStack() as stack:
        empty = stack.enter_context(BpfObject(BUILD / f"{empty_name}.bpf.o"))
        prog = stack.enter_context(MonitorProgram(nm_config.pack(spec.kernel_filters()),
                                                  hooks=[hook]))
        reader = stack.enter_context(PerfReader(prog.events_fd, pages=256))
        # A test run's packet arrives on this namespace's loopback: register it, as every
        # interface netmon attaches to is, so its counters are found the way live ones are.
        prog.slots.register(lo)
        # Filter expressions (issue 18): the packet, rejected by a short one and by one of
        # 20 terms, each the whole filter, in the program as a run would load it.
        exprs = []
        for label, expression in EXPRESSIONS:
            p = stack.enter_context(MonitorProgram(
                nm_config.pack(FilterSpec(expression=expression).kernel_filters()), hooks=[hook],
                expression=expression))
            p.slots.register(lo)
            exprs.append((f"netmon, non-matching packet, {label}", p))
        labels = ["empty XDP_PASS" if hook == "xdp" else "empty tc (UNSPEC)",
                  "netmon, non-matching packet"] + [label for label, _ in exprs]
        fds = [empty.program_fd(empty_name), prog.prog_fds[hook]] + [
            p.prog_fds[hook] for _, p in exprs]
        rows = [{"program": label, "ns": ns, "kernel_ns": kns}
                for label, (ns, kns) in zip(labels, best_runs(fds, miss, repeat))]
        assert all(p.counters()["matched"] == 0 for _, p in exprs)
        # Matching packets each write an event: run in rounds the buffer holds, draining
        # between rounds, so every run pays for a successful write.
        per_round = 256 * 4096 // (EVENT_SIZE + 16) // 2
        runs = []
        prog_fd = prog.prog_fds[hook]
        for _ in range(max(1, repeat // per_round)):
            runs.append(timed_run(prog_fd, match, per_round))
            reader.drain()
        rows.insert(2, {"program": "netmon, matching packet (event sent)", "ns": None,
                        "kernel_ns": int(statistics.median(r[1] for r in runs))})
        assert prog.counters()["send_failed"] == 0
    for row in rows:
        row["ratio"] = row["ns"] / rows[0]["ns"] if row["ns"] else None
        row["kernel_ratio"] = row["kernel_ns"] / rows[0]["kernel_ns"]
    return rows


def bench_verifier() -> list[dict]:
    """Each program's load: the instructions the verifier went through (what start-up
    waits for, growing with the program's paths) and the load's wall time, with the
    filters off and all on, for each thing the kernel can deliver."""
    from netmon.kernel.loader import verified_insns

    every = FilterSpec(protocol=6, src=parse_network("10.0.0.0/8"), dport=443,
                       host=parse_network("10.1.0.0/16"), port=22, vlan=7)
    configs = [("events, no filter", nm_config.pack(), False, 0),
               ("events, every filter", nm_config.pack(every.kernel_filters()), False, 0),
               ("capture (-w)", nm_config.pack(snaplen=1500), True, 0),
               ("flows", nm_config.pack(flows=True), False, 64)]
    rows = []
    for hook in ("xdp", "tc_in", "tc_out"):
        for label, config, capture, flows in configs:
            start = time.perf_counter()
            with MonitorProgram(config, hooks=(hook,), capture=capture,
                                flow_entries=flows) as prog:
                seconds = time.perf_counter() - start
                rows.append({"hook": hook, "config": label, "seconds": seconds,
                             "insns": verified_insns(prog.prog_fds[hook])})
    return rows


def bench_latency(n: NetnsPair, frames: int) -> dict:
    """Delay from the XDP hook (the event's kernel timestamp) to the line on stdout."""
    frame = udp_frame(n)
    argv = [sys.executable, "-m", "netmon", "-i", n.b_if, "--protocol", "udp", "--json"]
    proc = subprocess.Popen(n.exec_args(n.b, "taskset", "-c", TOOL_CPU, *argv),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    delays = []
    try:
        for line in proc.stderr:
            if "Press Ctrl-C to stop" in line:
                break
        for _ in range(frames):
            offer(n, frame, 1, 0)
            line = proc.stdout.readline()
            delays.append(time.time() - json.loads(line)["ts"])
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    return {"frames": frames, "median_ms": statistics.median(delays) * 1000,
            "max_ms": max(delays) * 1000}


def bench_startup(n: NetnsPair, runs: int) -> list[dict]:
    """Seconds from exec to ready: netmon attached with its banner out, tcpdump listening."""
    expression = EXPRESSIONS[0][1].split()
    tools = {
        "netmon": ([sys.executable, "-m", "netmon", "-i", n.b_if], "Press Ctrl-C to stop"),
        "netmon, with an expression": ([sys.executable, "-m", "netmon", "-i", n.b_if,
                                        *expression], "Press Ctrl-C to stop"),
        "tcpdump": (["tcpdump", "-n", "-i", n.b_if], "listening on"),
        "tcpdump, with the expression": (["tcpdump", "-n", "-i", n.b_if, *expression],
                                         "listening on"),
    }
    times: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(runs):
        for name, (argv, ready) in tools.items():
            start = time.perf_counter()
            proc = subprocess.Popen(n.exec_args(n.b, *argv), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, cwd=ROOT)
            for line in proc.stderr:
                if ready in line:
                    times[name].append(time.perf_counter() - start)
                    break
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    # ip netns exec itself costs a few ms; it is in both figures alike.
    return [{"tool": name, "median_s": statistics.median(v), "max_s": max(v)}
            for name, v in times.items()]


def rate_label(rate: float) -> str:
    return "unpaced" if not rate else f"{rate:,.0f}/s"


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A Markdown table under its title: the first column to the left, the rest right."""
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * (len(columns) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_prog_rows(title: str, rows: list[dict]) -> None:
    print_table(title, ["program", "ns/run, wall clock", "× empty", "ns/run, kernel's figure",
                        "× empty"],
                [[r["program"], *([f"{r['ns']:.1f}", f"{r['ratio']:.2f}"] if r["ns"]
                                  else ["–", "–"]),
                  str(r["kernel_ns"]), f"{r['kernel_ratio']:.1f}"] for r in rows])


def print_cpu_rows(title: str, rows: list[dict]) -> None:
    print_table(title, ["tool", "offered", "at (packets/s)", "shown", "lost", "µs CPU/event"],
                [[r["tool"], f"{r['offered']:,} ({rate_label(r['rate'])})",
                  f"{r['offered_rate']:,.0f}", f"{r['shown']:,}", f"{r['lost']:,}",
                  f"{r['us_per_event']:.2f}"] for r in rows])
    for rate_ in sorted({r["rate"] for r in rows}, reverse=True):
        nm = next(r for r in rows if r["rate"] == rate_ and r["tool"] == "netmon")
        td = next(r for r in rows if r["rate"] == rate_ and r["tool"] == "tcpdump")
        print(f"\nnetmon/tcpdump CPU per event at {rate_label(rate_)}: "
              f"{nm['us_per_event'] / td['us_per_event']:.2f}")


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} × {cpu}, Linux {platform.release()}, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5, help="length of the paced runs")
    ap.add_argument("--max-count", type=int, default=1_000_000,
                    help="frames offered in the unpaced runs")
    ap.add_argument("--only", default="abcdefghijklmnopqr",
                    help="the sections to run, by letter (default: all of them)")
    args = ap.parse_args()

    def want(section: str) -> bool:
        return section in args.only

    for obj in ("xdp_tx", "xdp_pass", "tc_pass", "xdp_monitor_percpu", "xdp_flow_floor"):
        subprocess.run(["make", "-s", "-C", str(ROOT), f"build/{obj}.bpf.o"], check=True)

    print(f"Machine: {machine()}\n")
    if want("b"):
        print_prog_rows("(b) XDP program cost per packet, BPF_PROG_TEST_RUN",
                        bench_prog_run(repeat=5_000_000))
    if want("e"):
        print_prog_rows("(e) tc program cost per packet, BPF_PROG_TEST_RUN",
                        bench_prog_run(repeat=2_000_000, hook="tc_in"))
    if want("l"):
        print_table("(l) verifying each program at load: instructions and wall time",
                    ["program", "config", "verified instructions", "load s"],
                    [[r["hook"], r["config"], f"{r['insns']:,}" if r["insns"] else "n/a",
                      f"{r['seconds']:.3f}"] for r in bench_verifier()])
    if want("r"):
        from bench.report import bench_report

        with tempfile.TemporaryDirectory(prefix="nmt-report-") as report_tmp:
            print_table("(r) netmon totals --html against --days --json on the same days, "
                        "a process each, medians",
                        ["database", "--days --json s", "--html s", "× json", "report"],
                        [[r["case"], f"{r['json']:.2f}", f"{r['html']:.2f}",
                          f"{r['html'] / r['json']:.2f}", f"{r['size'] / 1e6:.1f} MB"]
                         for r in bench_report(Path(report_tmp), args.repeats)])
    if want("o"):
        from bench.rtt import bench_tcp_health

        print_table("(o) TCP health's cost per packet (netmon rtt --quiet against netmon "
                    "--quiet), BPF_PROG_TEST_RUN, the programs run in turns",
                    ["hook", "packet", "empty ns", "netmon --quiet ns", "netmon rtt ns",
                     "added ns", "kernel's figures (empty, quiet, rtt)"],
                    [[r["hook"], r["packet"], f"{r['empty']:.1f}", f"{r['quiet']:.1f}",
                      f"{r['rtt']:.1f}", f"{r['added']:+.1f}",
                      f"{r['empty_k']}, {r['quiet_k']}, {r['rtt_k']}"]
                     for r in bench_tcp_health(repeat=2_000_000)])
    if want("h"):
        from bench.flows import bench_flow_update

        rows = bench_flow_update(repeat=2_000_000)
        print_table("(h) flow update cost per packet (an existing flow), XDP, "
                    "BPF_PROG_TEST_RUN, the programs run in turns",
                    ["program", "ns/run, wall clock", "× empty", "× floor (48-byte lookup)",
                     "ns/run, kernel's figure", "× empty"],
                    [[r["program"], f"{r['ns']:.1f}", f"{r['ratio']:.2f}",
                      f"{r['x_floor']:.2f}", str(r["kernel_ns"]), f"{r['kernel_ratio']:.1f}"]
                     for r in rows])

    with NetnsPair() as n:
        n.run(n.b, "ethtool", "-K", n.b_if, "gro", "on")
        # Outputs go to tmpfs: on disk, writeback of one run's output stalls the next
        # run's writes, which measures the disk rather than the tools.
        tmp = Path("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp") / n.id
        tmp.mkdir(exist_ok=True)

        if want("f"):
            print_table("(f) start-up, exec to ready, 10 runs each", ["tool", "median s", "max s"],
                        [[r["tool"], f"{r['median_s']:.3f}", f"{r['max_s']:.3f}"]
                         for r in bench_startup(n, 10)])
        if want("c"):
            print_table("(c) packet rate the receiving veth keeps, frames offered unpaced",
                        ["attached", "packets/s", "× empty"],
                        [[r["attached"], f"{r['pps']:,.0f}", f"{r['ratio']:.3f}"]
                         for r in bench_rate(n, args.max_count, args.repeats)])
        if want("d"):
            lat = bench_latency(n, 20)
            print(f"\n(d) delay from the XDP hook to the line on stdout, one packet at a time: "
                  f"median {lat['median_ms']:.0f} ms, max {lat['max_ms']:.0f} ms "
                  f"over {lat['frames']} packets")

        rate = 40_000
        if want("a"):
            print_cpu_rows("(a) CPU per shown event, text output to a file, every frame matching",
                           bench_cpu(n, [rate, 0], [int(rate * args.seconds), args.max_count],
                                     args.repeats, tmp))
        if want("e"):
            print_cpu_rows("(e) CPU per shown event, --direction both, traffic b sends",
                           bench_cpu(n, [rate], [int(rate * args.seconds)], args.repeats, tmp,
                                     egress=True))
        if want("g"):
            cap_rows = bench_capture(n, [rate, 0],
                                     [int(rate * args.seconds), args.max_count // 2],
                                     [64, 1500], args.repeats, tmp)
            print_table("(g) capture to a file on tmpfs, CPU per captured packet",
                        ["tool", "frame", "offered", "captured", "lost", "µs CPU/packet"],
                        [[r["tool"], f"{r['size']} B",
                          f"{r['offered']:,} ({rate_label(r['rate'])})",
                          f"{r['captured']:,}", f"{r['lost']:,}", f"{r['us_per_packet']:.2f}"]
                         for r in cap_rows])
        if want("m") or want("n"):
            from bench.drops import bench_drop_rate, bench_drop_tools, drop_rule

            drop_rule(n)
        if want("m"):
            print_table("(m) frames/s b's kernel takes in and drops (an nftables rule), "
                        "offered unpaced", ["watching", "frames/s", "× nothing"],
                        [[r["watching"], f"{r['pps']:,.0f}", f"{r['ratio']:.3f}"]
                         for r in bench_drop_rate(n, args.max_count, args.repeats)])
        if want("n"):
            print_table("(n) netmon drops: lines and --quiet, CPU",
                        ["run", "rate", "offered", "shown", "lost", "µs CPU/drop", "CPU s/s"],
                        [[r["run"], rate_label(r["rate"]), f"{r['offered']:,}",
                          f"{r['shown']:,}", f"{r['lost']:,}", f"{r['cpu_us']:.2f}",
                          f"{r['cpu_per_s']:.4f}"]
                         for r in bench_drop_tools(n, rate, args.seconds,
                                                   [10_000, rate, 100_000], tmp)])
        if want("p"):
            from bench.rtt import RATE_FLOWS, bench_tcp_rate

            print_table(f"(p) packet rate the receiving veth keeps, {RATE_FLOWS:,} TCP "
                        "connections offered unpaced (each segment a retransmission)",
                        ["attached", "packets/s", "× empty"],
                        [[r["attached"], f"{r['pps']:,.0f}", f"{r['ratio']:.3f}"]
                         for r in bench_tcp_rate(n, args.max_count, args.repeats)])
        if want("q"):
            from bench.rtt import RATE_FLOWS, bench_tcp_conversations

            q_rows = bench_tcp_conversations(n, args.max_count, args.repeats, tmp)
            print_table(f"(q) packet rate the receiving veth keeps, {RATE_FLOWS:,} TCP "
                        "conversations offered unpaced (both ways, every segment new)",
                        ["attached", "packets/s", "× empty", "samples shown", "lost"],
                        [[r["attached"], f"{r['pps']:,.0f}", f"{r['ratio']:.3f}",
                          "" if r["shown"] is None else f"{r['shown']:,}",
                          "" if r["lost"] is None else f"{r['lost']:,}"] for r in q_rows])
            print("\n".join(q_rows[2]["err"][-12:]))
        if want("i") or want("j"):
            from bench.flows import FLOWS, bench_flow_rate, bench_flow_tools
        if want("i"):
            print_table(f"(i) packet rate the receiving veth keeps, {FLOWS} flows offered "
                        "unpaced", ["attached", "packets/s", "× empty"],
                        [[r["attached"], f"{r['pps']:,.0f}", f"{r['ratio']:.3f}"]
                         for r in bench_flow_rate(n, args.max_count, args.repeats)])
        if want("j"):
            flow_rows = bench_flow_tools(n, [rate, 0], [int(rate * args.seconds),
                                                        args.max_count], args.repeats, tmp)
            print_table(f"(j) flows: user-space CPU and packets not counted, {FLOWS} UDP "
                        "flows of 142-byte frames",
                        ["tool", "offered", "counted", "not counted", "CPU ms/s"],
                        [[r["tool"], f"{r['offered']:,} ({rate_label(r['rate'])})",
                          f"{r['counted']:,}", f"{r['missed']:,}",
                          f"{r['cpu_ms_per_s']:.1f}"] for r in flow_rows])
        if want("k"):
            from bench.flows import bench_top_cost

            print_table("(k) netmon's CPU at 2,500 packets/s over many flows, in an 80x24 "
                        "tmux pane", ["netmon", "flows", "% of a core"],
                        [[r["argv"], f"{r['flows']:,}", f"{r['cpu_pct']:.1f}"]
                         for r in bench_top_cost(n)])
        shutil.rmtree(tmp, ignore_errors=True)
    if GENERATORS:
        print(f"\nFrames offered by: {', '.join(sorted(GENERATORS))} (bench/trafficgen.py)")


if __name__ == "__main__":
    main()
