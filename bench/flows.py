"""The flows bench (make bench, sections h to k), beside its baselines in the same run.

  (h) the flow update's cost per packet under BPF_PROG_TEST_RUN, against the empty
      XDP program, for the shared table netmon uses and for the per-CPU variant
      (the same source built with NM_FLOWS_PERCPU);
  (i) the packet rate the receiving veth keeps with netmon counting flows;
  (j) user-space CPU per second of netmon --flows, iftop -t and softflowd (exporting
      to nfcapd) at 40,000 packets/s and unpaced, and what each did not count;
  (k) netmon top's CPU at 2,500 packets/s spread over 20,000 flows (each packet to one
      of them), in an 80x24 tmux pane, beside top at 50 flows and --flows at 20,000.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from netmon.kernel.loader import BpfObject, MonitorProgram
from netmon.kernel import config as nm_config
from tests.support.netns import NetnsPair

from bench.common import BUILD, ROOT, TOOL_CPU, bench_rate, best_run, best_runs, offer, udp_frame

FLOWS = 50  # the generator sends the frame from this many source ports in turn
COLLECTOR_PORT = 9995  # nfcapd, on b's loopback


def flow_frame(n: NetnsPair) -> bytes:
    """A UDP frame (142 bytes) with no checksum, which the generator rewrites per flow."""
    from scapy.layers.l2 import Ether

    frame = Ether(udp_frame(n, payload=100))
    frame["UDP"].chksum = 0
    return bytes(frame)


def offer_flows(n: NetnsPair, frame: bytes, count: int, rate: float) -> dict:
    return offer(n, frame, count, rate, FLOWS)


def task_cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of a process (iftop has several), in ns."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return total


def bench_flow_update(repeat: int) -> list[dict]:
    """ns per packet of an existing flow's update, XDP, against the empty program and the
    floor (any flow table in a hash map); all loaded at once and run in turns (best_runs)."""
    from contextlib import ExitStack

    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                  / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=9) / (b"x" * 18))
    with ExitStack() as stack:
        empty = stack.enter_context(BpfObject(BUILD / "xdp_pass.bpf.o"))
        floor = stack.enter_context(BpfObject(BUILD / "xdp_flow_floor.bpf.o"))
        programs = [("empty XDP_PASS", empty.program_fd("xdp_pass")),
                    # The floor: what any flow table in a hash map pays, before netmon's work.
                    ("floor: one hash lookup of a 48-byte key", floor.program_fd("floor_lookup")),
                    ("floor: that lookup and two atomic adds", floor.program_fd("floor_count")),
                    ("floor: one hash lookup of a 24-byte key (IPv4's size)",
                     floor.program_fd("floor_lookup24"))]
        for name, path in (("netmon flows, one entry for all CPUs, atomic adds (default)", None),
                           ("netmon flows, per-CPU entries",
                            BUILD / "xdp_monitor_percpu.bpf.o")):
            prog = stack.enter_context(MonitorProgram(
                nm_config.pack(flows=True), path=path, hooks=["xdp"],
                flow_entries=1024))
            prog.slots.register(socket.if_nametoindex("lo"))
            programs.append((name, prog.prog_fds["xdp"]))
        timings = best_runs([fd for _, fd in programs], frame, repeat)
        rows = [{"program": name, "ns": ns, "kernel_ns": kns}
                for (name, _), (ns, kns) in zip(programs, timings)]
    for row in rows:
        row["ratio"] = row["ns"] / rows[0]["ns"]
        row["kernel_ratio"] = row["kernel_ns"] / rows[0]["kernel_ns"]
        row["x_floor"] = row["ns"] / rows[1]["ns"]
    return rows


def bench_flow_rate(n: NetnsPair, count: int, repeats: int) -> list[dict]:
    """Packets/s the veth keeps, unpaced: empty XDP_PASS against netmon counting flows."""
    return bench_rate(n, count, repeats, frame=flow_frame(n), flows=FLOWS, argv=["--flows"],
                      label="netmon --flows")


def start(n: NetnsPair, argv: list[str], ready: str | None = None, out=subprocess.DEVNULL,
          settle: float = 1.5) -> subprocess.Popen:
    """A tool in namespace b, pinned to the tool CPU; waits for ``ready`` on stderr."""
    proc = subprocess.Popen(n.exec_args(n.b, "taskset", "-c", TOOL_CPU, *argv), stdout=out,
                            stderr=subprocess.PIPE if ready else subprocess.DEVNULL,
                            text=True, cwd=ROOT)
    if ready:
        for line in proc.stderr:
            if ready in line:
                break
        proc.stderr.close()
    else:
        time.sleep(settle)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _trickle(n: NetnsPair, until: subprocess.Popen) -> None:
    """iftop's clock only moves when a packet comes: pings (not counted) until it ends."""
    deadline = time.monotonic() + 60
    while until.poll() is None and time.monotonic() < deadline:
        n.run(n.a, "ping", "-c", "1", "-W", "1", n.b_ip, check=False)
        time.sleep(0.2)


def run_tool(n: NetnsPair, tool: str, frame: bytes, count: int, rate: float, seconds: float,
             tmp: Path) -> dict:
    """One tool on one traffic run: its CPU over the run and what it counted."""
    iplen = len(frame) - 14
    out_path = tmp / f"{tool}.out"
    collector = None
    with open(out_path, "w") as out:
        if tool == "netmon --flows":
            proc = start(n, [sys.executable, "-m", "netmon", "-i", n.b_if, "--protocol", "udp",
                             "--flows", "--json"], ready="Press Ctrl-C to stop", out=out)
        elif tool == "iftop -t":
            proc = start(n, ["iftop", "-t", "-n", "-N", "-P", "-B", "-L", str(FLOWS * 2),
                             "-i", n.b_if, "-s", str(int(seconds + 3))], out=out)
        else:
            flowdir = tmp / "nfcapd"
            flowdir.mkdir(exist_ok=True)
            for old in flowdir.iterdir():
                old.unlink()
            collector = subprocess.Popen(n.exec_args(n.b, "nfcapd", "-b", "127.0.0.1", "-p",
                                                     str(COLLECTOR_PORT), "-w", str(flowdir)),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            proc = start(n, ["softflowd", "-d", "-i", n.b_if, "-n",
                             f"127.0.0.1:{COLLECTOR_PORT}", "-v", "9", "-c",
                             str(tmp / "softflowd.ctl"), "-p", str(tmp / "softflowd.pid"),
                             "udp"], out=out)
        try:
            cpu0, t0 = task_cpu_ns(proc.pid), time.monotonic()
            gen = offer_flows(n, frame, count, rate)
            time.sleep(1.5)  # netmon's next read of the tables; the others' last packets
            cpu, elapsed = task_cpu_ns(proc.pid) - cpu0, time.monotonic() - t0
            if tool == "iftop -t":
                _trickle(n, proc)
            elif tool.startswith("softflowd"):
                n.run(n.b, "softflowctl", "-c", str(tmp / "softflowd.ctl"), "shutdown",
                      check=False)  # exports every flow, then exits
                proc.wait(30)
                time.sleep(0.5)
                stop(collector, signal.SIGTERM)
        finally:
            stop(proc)
            if collector is not None:
                stop(collector, signal.SIGTERM)
    text = out_path.read_text()
    if tool == "netmon --flows":
        counted = sum(json.loads(line)["packetDeltaCount"] for line in text.splitlines())
    elif tool == "iftop -t":
        counted = round(iftop_udp_bytes(text) / iplen)
    else:
        res = subprocess.run(["nfdump", "-R", str(tmp / "nfcapd"), "-q", "-o", "fmt:%pkt"],
                             capture_output=True, text=True)
        counted = sum(int(x) for x in res.stdout.split() if x.isdigit())
    return {"tool": tool, "rate": rate, "offered": gen["offered"], "counted": counted,
            "cpu_ms_per_s": cpu / 1e6 / elapsed}


def iftop_udp_bytes(text: str) -> float:
    """The IP bytes iftop -t -P counted into b: the cumulative column of its "<=" lines
    with a port (the UDP flows; the pings that keep its clock going have none). iftop
    prints three significant digits: the count is that close."""
    units = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    total = 0.0
    for line in text.split("=" * 20)[0].splitlines():  # the one report before the totals
        m = re.search(r"\S+:\d+\s+<=.*\s([\d.]+)([KMG]?)B\s*$", line)
        if m:
            total += float(m.group(1)) * units[m.group(2)]
    return total


def bench_flow_tools(n: NetnsPair, rates: list[float], counts: list[int], repeats: int,
                     tmp: Path) -> list[dict]:
    frame = flow_frame(n)
    rows = []
    for rate, count in zip(rates, counts):
        for tool in ("netmon --flows", "iftop -t", "softflowd"):
            runs = [run_tool(n, tool, frame, count, rate, count / (rate or 400_000), tmp)
                    for _ in range(repeats)]
            rows.append({
                "tool": tool, "rate": rate, "offered": count,
                "counted": min(r["counted"] for r in runs),
                "missed": max(r["offered"] - r["counted"] for r in runs),
                "cpu_ms_per_s": statistics.median(r["cpu_ms_per_s"] for r in runs),
            })
    return rows



def _pane_pid(session: str, argv: list[str], root: Path) -> int:
    """``argv`` in a new 80x24 tmux pane (a real terminal: top draws with rich); its pid."""
    for _ in range(3):  # a tmux server that is just starting may refuse the first
        res = subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y",
                              "24", "-P", "-F", "#{pane_pid}",
                              f"cd {root} && exec {' '.join(argv)}"],
                             capture_output=True, text=True)
        if res.returncode == 0:
            return int(res.stdout.strip())
        time.sleep(0.5)
    raise RuntimeError(f"tmux: {res.stderr.strip()}")


def top_cost(n: NetnsPair, flows: int, argv: list[str], rate: float, seconds: float,
             root: Path = ROOT) -> dict:
    """netmon's CPU (% of a core) over the second half of ``seconds`` of traffic at ``rate``
    packets/s spread over ``flows`` flows, netmon running ``argv`` in a tmux pane."""
    session = f"nmt-bench-top-{os.getpid()}"
    cmd = n.exec_args(n.b, "taskset", "-c", TOOL_CPU, sys.executable, "-m", "netmon", *argv,
                      "-i", n.b_if, "--protocol", "udp")
    pid = _pane_pid(session, cmd, root)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout
            if "Ctrl-C" in screen or "netmon top" in screen:  # --flows' banner, or top's view
                break
            time.sleep(0.2)
        gen = threading.Thread(target=offer, args=(n, flow_frame(n), int(rate * seconds), rate,
                                                  flows))
        gen.start()
        time.sleep(seconds / 2)  # every flow seen: the tables and the book are full
        cpu0, t0 = task_cpu_ns(pid), time.monotonic()
        gen.join()
        cpu, elapsed = task_cpu_ns(pid) - cpu0, time.monotonic() - t0
    finally:
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], capture_output=True)
        time.sleep(1)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    return {"argv": " ".join(argv), "flows": flows, "cpu_pct": cpu / 1e7 / elapsed}


def bench_top_cost(n: NetnsPair, rate: float = 2500, seconds: float = 24) -> list[dict]:
    """Issue 17's case: top at 20,000 live flows (each packet to one of them), beside
    top at 50 flows and --flows at 20,000, on the same traffic."""
    return [top_cost(n, flows, argv, rate, seconds)
            for argv, flows in ((["top"], 50), (["top"], 20_000), (["--flows"], 20_000))]
