"""What the benches share (bench/run.py and bench/flows.py both import it, never each other):
the paths, the traffic offered, the tools run beside netmon, and the timing helpers."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from netmon.kernel.loader import prog_test_run
from tests.support.netns import NetnsPair

ROOT = Path(__file__).resolve().parent.parent


BUILD = ROOT / "build"


DPORT = 9  # discard: the port every offered frame goes to


GEN_CPU, TOOL_CPU = "0", "1"


def udp_frame(n: NetnsPair, dport: int = DPORT, payload: int = 18) -> bytes:
    """A UDP frame from a to b: 42 bytes of headers and ``payload`` bytes."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(src=n.mac(n.a), dst=n.mac(n.b)) / IP(src=n.a_ip, dst=n.b_ip)
                 / UDP(sport=40000, dport=dport) / (b"x" * payload))


# The generators that offered the run's frames (bench/trafficgen.py: XDP live frames,
# or a packet socket where the kernel refuses them): the tables say which.
GENERATORS: set[str] = set()


def offer(n: NetnsPair, frame: bytes, count: int, rate: float, flows: int = 1,
          conv: bool = False) -> dict:
    """``flows``: the frame (UDP, checksum 0) from that many source ports in turn; with
    ``conv``, the frame (TCP, timestamps) as the first of that many conversations."""
    res = n.run(n.a, "taskset", "-c", GEN_CPU, sys.executable, "-m", "bench.trafficgen",
                str(BUILD / "xdp_tx.bpf.o"), n.a_if, frame.hex(), str(count), str(rate),
                f"{flows}:conv" if conv else str(flows), cwd=ROOT)
    gen = json.loads(res.stdout)
    GENERATORS.add(gen["generator"])
    return gen


def rx_packets(n: NetnsPair) -> int:
    return int(n.run(n.b, "cat", f"/sys/class/net/{n.b_if}/statistics/rx_packets").stdout)


def cpu_ns(pid: int) -> int:
    """On-CPU time of a single-threaded process, in ns (first field of schedstat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


class Tool:
    """A capture tool running in namespace b, pinned to TOOL_CPU, stdout to a file."""

    def __init__(self, n: NetnsPair, name: str, argv: list[str], ready: str, out: Path):
        self.name, self.out = name, out
        self.err: list[str] = []
        self._ready = threading.Event()
        with open(out, "w") as f:
            self.proc = subprocess.Popen(
                n.exec_args(n.b, "taskset", "-c", TOOL_CPU, *argv), stdout=f,
                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        threading.Thread(target=self._pump, args=(ready,), daemon=True).start()
        if not self._ready.wait(30) or self.proc.poll() is not None:
            self.proc.kill()
            raise RuntimeError(f"{name} did not start: {self.err}")
        time.sleep(0.3)  # let start-up work settle before the CPU clock is read
        self.cpu_start = cpu_ns(self.proc.pid)

    def _pump(self, ready: str) -> None:
        for line in self.proc.stderr:
            self.err.append(line.rstrip("\n"))
            if ready in line:
                self._ready.set()

    def finish_file(self, path: Path, idle: float = 1.5) -> dict:
        """Wait for the file to stop growing, read the CPU clock, stop the tool."""
        last, still_since = -1, time.monotonic()
        while time.monotonic() - still_since <= idle:
            size = path.stat().st_size if path.exists() else 0
            if size != last:
                last, still_since = size, time.monotonic()
            time.sleep(0.1)
        cpu = cpu_ns(self.proc.pid) - self.cpu_start
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        time.sleep(0.1)
        return {"cpu_ns": cpu, "stderr": list(self.err)}

    def finish(self, expected: int, idle: float = 1.5) -> dict:
        """Wait for the output to stop growing, read the CPU clock, stop the tool."""
        last, still_since = -1, time.monotonic()
        while True:
            lines = count_lines(self.out)
            if lines != last:
                last, still_since = lines, time.monotonic()
            elif lines >= expected or time.monotonic() - still_since > idle:
                break
            time.sleep(0.1)
        cpu = cpu_ns(self.proc.pid) - self.cpu_start
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        time.sleep(0.1)
        return {"lines": count_lines(self.out), "cpu_ns": cpu, "stderr": list(self.err)}


def timed_run(prog_fd: int, frame: bytes, repeat: int) -> tuple[float, int]:
    """(wall-clock ns per run, the kernel's own figure) for one BPF_PROG_TEST_RUN.

    The kernel reports a whole-ns average, too coarse for programs this short;
    the wall clock around a few million runs resolves tenths of a ns. A run that
    writes perf events pays ~16 ms per call on this kernel whatever its length,
    so for matching packets only the kernel's figure means anything.
    """
    start = time.perf_counter_ns()
    _, kernel_ns = prog_test_run(prog_fd, frame, repeat)
    return (time.perf_counter_ns() - start) / repeat, kernel_ns


def best_run(prog_fd: int, frame: bytes, repeat: int, rounds: int = 7) -> tuple[float, int]:
    """The least disturbed of several rounds: other tenants only ever add time."""
    runs = [timed_run(prog_fd, frame, repeat) for _ in range(rounds)]
    return min(r[0] for r in runs), int(statistics.median(r[1] for r in runs))


def best_runs(prog_fds: list[int], frame: bytes, repeat: int,
              rounds: int = 15) -> list[tuple[float, int]]:
    """best_run() of several programs, side by side: each round runs every program in
    turn, so that a noisy minute weighs on all of them alike, not on the one it fell
    on; then each one's least disturbed round (wall clock and the kernel's figure)."""
    runs: list[list[tuple[float, int]]] = [[] for _ in prog_fds]
    for _ in range(rounds):
        for i, fd in enumerate(prog_fds):
            runs[i].append(timed_run(fd, frame, repeat))
    return [(min(r[0] for r in each), min(r[1] for r in each)) for each in runs]


def bench_rate(n: NetnsPair, count: int, repeats: int, frame: bytes | None = None,
               flows: int = 1, argv: list[str] | None = None,
               label: str = "netmon, filtering all out") -> list[dict]:
    """Packets/s the veth keeps, frames offered unpaced: the empty XDP_PASS program
    attached, then netmon (by default filtering everything out; or ``argv``)."""
    frame = frame or udp_frame(n)
    pass_obj = BUILD / "xdp_pass.bpf.o"
    argv = argv or ["--protocol", "udp", "--dst-port", str(DPORT + 1)]
    netmon = [sys.executable, "-m", "netmon", "-i", n.b_if, *argv]
    results: dict[str, list[float]] = {"empty XDP_PASS": [], label: []}
    for _ in range(repeats):
        for name in results:
            tool = None
            if name == "empty XDP_PASS":
                n.run(n.b, "ip", "link", "set", "dev", n.b_if, "xdpdrv", "obj", str(pass_obj),
                      "sec", "xdp")
            else:
                tool = Tool(n, "netmon", netmon, "Press Ctrl-C to stop", Path(os.devnull))
            before = rx_packets(n)
            gen = offer(n, frame, count, 0, flows)
            results[name].append((rx_packets(n) - before) / gen["seconds"])
            if tool is None:
                n.run(n.b, "ip", "link", "set", "dev", n.b_if, "xdpdrv", "off")
            else:
                tool.proc.send_signal(signal.SIGINT)
                tool.proc.wait(30)
    base = statistics.median(results["empty XDP_PASS"])
    return [{"attached": name, "pps": statistics.median(v),
             "ratio": statistics.median(v) / base} for name, v in results.items()]
