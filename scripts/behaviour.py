#!/usr/bin/env python3
"""Save what netmon prints, to prove that a change meant to keep behaviour kept it.

    scripts/behaviour.py save DIR      # before the change
    scripts/behaviour.py save DIR2     # after it
    diff -r DIR DIR2                   # the same bytes, or the change is not a refactor

What is saved, each as stdout, stderr and exit status:
- ``netmon -r FILE --json`` and ``netmon -r FILE`` over every capture in tests/data
  (the events' times come from the files: deterministic), and ``-w`` files written
  from a few of them;
- every usage error and option conflict the CLI knows of (tests/test_cli.py's and
  the mode conflicts);
- ``-r`` with filter options and expressions (READS);
- a live run of each mode in a namespace of its own with no traffic: the banner and
  the summary.

Needs root and the kernel (BPF_PROG_TEST_RUN, XDP on lo). Runs on both cores.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "tcpdump"
NETNS = f"nmt-behave{os.getpid()}"
WRITTEN = ("802.1ad_QinQ.pcap", "dns_tcp_8053.pcap", "ip6_frag_asan.pcap")

# Usage errors: argv after "-i lo".
ERRORS = [
    ["--protocol", "xyz"], ["--src-ip", "300.1.1.1"], ["--dst-ip", "10.0.0.1/8"],
    ["--src-port", "x"], ["--dst-port", "70000"], ["--protocol", "icmp", "--dst-port", "53"],
    ["--count", "0"], ["--mode", "turbo"], ["--buffer-pages", "3"],
    ["--host", "2001:db8::1/129"], ["--port", "65536"], ["--vlan", "4095"],
    ["--protocol", "esp", "--port", "1"], ["--no-such-option"], ["-i", "veth1,"],
    ["-i", "a" * 20], ["--hook", "xdp", "-Q", "out"], ["--direction", "sideways"],
    ["--hook", "ebpf"], ["--guest", "abc"], ["--print"], ["-w", "x.pcapng", "-W", "3"],
    ["-w", "-", "-C", "10"], ["-w", "x.pcapng", "-s", "0"], ["-w", "x.pcapng", "-s", "70000"],
    ["-r", "x.pcap", "--direction", "both"], ["-r", "x.pcap", "--follow"],
    ["-r", "x.pcap", "--guest", "100"], ["-r", "x.pcap", "--metrics", "9999"],
    ["--quiet", "-w", "x"], ["--quiet", "-r", "x"], ["--quiet", "--flows"], ["--quiet", "--top"],
    ["--quiet", "-c", "3"], ["--flows", "--top"], ["--flows", "-w", "x"], ["--top", "-r", "x"],
    ["--ipfix", "127.0.0.1:4739", "-w", "x"], ["--flows", "--sort", "name"],
    ["--ipfix", "nohost"], ["--ipfix", "fe80::1:4739"], ["--metrics", "x:y"],
    ["--flow-entries", "0"], ["--stats", "0"], ["-C", "1"], ["-G", "1"],
    ["-r", "/nonexistent.pcap"], ["-r", str(ROOT / "README.md")], ["-i", "nmt-nope0"],
    ["--help"], ["--version"],
]

# Live runs in an empty namespace, stopped by SIGINT after a second: argv after netmon.
LIVE = [
    ["-i", "lo"], ["-i", "lo", "--json"], ["-i", "lo", "-Q", "both"], ["-i", "lo", "--hook", "tc"],
    ["-i", "lo", "--protocol", "tcp", "--dst-port", "443"], ["-i", "lo,nmt-d*"],
    ["-i", "any", "-Q", "out"], ["-i", "lo", "--flows"], ["top", "-i", "lo"],
    ["-i", "lo", "--quiet", "--metrics", "127.0.0.1:19977"],
    ["-i", "lo", "--ipfix", "127.0.0.1:4739", "--ipfix-domain", "7"],
    ["-i", "lo", "-w", "{tmp}/live.pcapng"], ["-i", "lo", "-w", "{tmp}/live.pcapng", "--print"],
    ["-i", "lo", "--mode", "generic", "--attach", "netlink"],
    ["-i", "lo", "--src-ip", "10.0.0.0/8", "--vlan", "20", "-p", "udp", "--port", "53"],
    ["drops"], ["drops", "-i", "lo", "--json", "udp"], ["top", "-i", "lo", "--drops"],
    ["-i", "lo", "-Q", "both", "--quiet", "--totals", "{tmp}/totals.db", "--stats", "1"],
    ["-i", "lo", "icmp or udp port 53"],
]

# -r with filters and expressions: argv after "-r FILE" (a capture of the corpus).
READS = [
    ("dns_tcp_8053.pcap", ["tcp port 8053"]), ("dns_tcp_8053.pcap", ["-p", "tcp", "--json"]),
    ("802.1ad_QinQ.pcap", ["--vlan", "1000", "-c", "3"]), ("ip6_frag_asan.pcap", ["ip6"]),
    ("dns_tcp_8053.pcap", ["-c", "2", "-w", "-"]),
]


def netmon(*argv: str, netns: str | None = None, timeout: float | None = None
           ) -> tuple[bytes, bytes, int]:
    cmd = [sys.executable, "-m", "netmon", *argv]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    env = dict(os.environ, COLUMNS="100")
    if timeout is None:
        res = subprocess.run(cmd, capture_output=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
        return res.stdout, res.stderr, res.returncode
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env=env, stdin=subprocess.DEVNULL)
    time.sleep(timeout)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return out, err, proc.returncode


def save(where: Path, name: str, result: tuple[bytes, bytes, int], *files: Path,
         tmp: Path | None = None) -> None:
    out, err, rc = result
    if tmp is not None:  # the run's temporary directory, named the same in every save
        out, err = (b.replace(str(tmp).encode(), b"{tmp}") for b in (out, err))
    (where / f"{name}.out").write_bytes(out)
    (where / f"{name}.err").write_bytes(err)
    (where / f"{name}.rc").write_text(f"{rc}\n")
    for i, f in enumerate(files):
        (where / f"{name}.file{i}").write_bytes(f.read_bytes() if f.exists() else b"(none)")


def corpus(where: Path, tmp: Path) -> None:
    def one(path: Path) -> None:
        save(where, f"r-json-{path.name}", netmon("-r", str(path), "--json"))
        save(where, f"r-text-{path.name}", netmon("-r", str(path)))
        for i, (name, argv) in enumerate(READS):
            if name == path.name:
                save(where, f"r-with-{i:02d}", netmon("-r", str(path), *argv))
        if path.name in WRITTEN:
            out = tmp / f"{path.name}.pcapng"
            save(where, f"r-w-{path.name}", netmon("-r", str(path), "-w", str(out), "-c", "5"),
                 out, tmp=tmp)

    files = sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(one, files))


def live(where: Path, tmp: Path) -> None:
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        for i, argv in enumerate(LIVE):
            argv = [a.replace("{tmp}", str(tmp)) for a in argv]
            result = netmon(*argv, netns=NETNS, timeout=2.5)
            if argv[0] == "top":  # how many views a second's ticks fit in the run is timing
                result = (b"(not compared)\n", *result[1:])
            save(where, f"live-{i:02d}", result, tmp / "live.pcapng", tmp=tmp)
            (tmp / "live.pcapng").unlink(missing_ok=True)
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] != "save":
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    where = Path(sys.argv[2])
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nmt-behave") as tmp:
        for i, argv in enumerate(ERRORS):
            save(where, f"error-{i:02d}", netmon("-i", "lo", *argv))
        live(where, Path(tmp))
        corpus(where, Path(tmp))
    print(f"saved {len(list(where.iterdir()))} files in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
