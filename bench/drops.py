"""netmon drops, measured (issue 19; bench/run.py's sections m and n): what a drop costs the kernel with netmon watching,
and what drops cost netmon.

Drops are made by an nftables rule in namespace b that drops every datagram to
DROP_PORT on input; the frames come from namespace a's XDP generator (bench.trafficgen).

- (m) the rate at which b's kernel takes frames in and drops them, offered unpaced:
  nothing watching, then netmon drops --quiet, then netmon drops printing a line each.
- (n) netmon drops at a paced rate: lines shown and lost, netmon's CPU per drop, and
  with --quiet its CPU per second at rising rates (flat: the kernel counts).
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
from pathlib import Path

from bench.common import DPORT, Tool, cpu_ns, offer, rx_packets, udp_frame
from tests.support.netns import NetnsPair

DROP_PORT = DPORT + 100
READY = "Press Ctrl-C to stop"


def drop_rule(n: NetnsPair) -> None:
    n.run(n.b, "nft", "-f", "-", input=(
        "table inet nmbench {\n chain in {\n  type filter hook input priority 0;\n"
        f"  udp dport {DROP_PORT} drop\n }}\n}}\n"))


def _netmon(n: NetnsPair, *args: str) -> list[str]:
    return [sys.executable, "-m", "netmon", "drops", "-i", n.b_if, *args]


def bench_drop_rate(n: NetnsPair, count: int, repeats: int) -> list[dict]:
    """Frames/s b's kernel takes in and drops, unpaced, with and without netmon."""
    frame = udp_frame(n, DROP_PORT)
    runs = {"nothing": None, "netmon drops --quiet": ["--quiet"],
            "netmon drops, a line each (to /dev/null)": []}
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, args in runs.items():
            tool = None
            if args is not None:
                tool = Tool(n, "netmon", _netmon(n, *args), READY, Path(os.devnull))
            before = rx_packets(n)
            gen = offer(n, frame, count, 0)
            results[name].append((rx_packets(n) - before) / gen["seconds"])
            if tool is not None:
                tool.proc.send_signal(signal.SIGINT)
                tool.proc.wait(30)
    base = statistics.median(results["nothing"])
    return [{"watching": name, "pps": statistics.median(v),
             "ratio": statistics.median(v) / base} for name, v in results.items()]


def _summary_numbers(err: list[str]) -> dict[str, int]:
    """shown and lost from netmon's last summary line."""
    import re

    line = next(line for line in reversed(err) if " shown, " in line)
    return {k: int(re.search(rf"(\d+) {k}", line).group(1)) for k in ("shown", "lost")}


def bench_drop_tools(n: NetnsPair, rate: int, seconds: float, quiet_rates: list[int],
                     tmp: Path) -> list[dict]:
    """Lines at ``rate``: shown, lost, CPU per drop; then --quiet's CPU per second at
    each of ``quiet_rates`` (the same length of run)."""
    frame = udp_frame(n, DROP_PORT)
    rows = []
    out = tmp / "drops.txt"
    count = int(rate * seconds)
    tool = Tool(n, "netmon", _netmon(n), READY, out)
    gen = offer(n, frame, count, rate)
    done = tool.finish(count)
    numbers = _summary_numbers(done["stderr"])
    rows.append({"run": "lines", "rate": gen["offered"] / gen["seconds"], "offered": count,
                 "shown": numbers["shown"], "lost": numbers["lost"],
                 "cpu_us": done["cpu_ns"] / 1e3 / max(1, numbers["shown"]),
                 "cpu_per_s": done["cpu_ns"] / 1e9 / gen["seconds"]})
    for quiet_rate in quiet_rates:
        count = int(quiet_rate * seconds)
        tool = Tool(n, "netmon", _netmon(n, "--quiet"), READY, Path(os.devnull))
        start = cpu_ns(tool.proc.pid)
        gen = offer(n, frame, count, quiet_rate)
        cpu = cpu_ns(tool.proc.pid) - start
        tool.proc.send_signal(signal.SIGINT)
        tool.proc.wait(30)
        rows.append({"run": "--quiet", "rate": gen["offered"] / gen["seconds"], "offered": count, "shown": 0,
                     "lost": 0, "cpu_us": cpu / 1e3 / count, "cpu_per_s": cpu / 1e9 / gen["seconds"]})
    return rows
