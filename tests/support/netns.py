"""Test network: two namespaces joined by a veth pair, no default route, removed on exit.

All traffic the tests send stays between these two namespaces. Names start with
``nmt-`` plus the pid, so parallel runs never collide.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import json
import os
import subprocess
import sys

_serial = itertools.count()

# The repository's top: where `python -m tests.support.traffic` and netmon run from.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Every wait below is multiplied by this: the kernel matrix sets it from how much
# slower its emulated guests run, so a slow machine gives a slow pass, not a failure.
TIME_SCALE = max(1.0, float(os.environ.get("NETMON_TIME_SCALE", "1")))


def scaled(seconds: float) -> float:
    return seconds * TIME_SCALE

SYSCTLS = {
    # Pin the TCP options so the SYN's length is known.
    "net.ipv4.tcp_timestamps": "1",
    "net.ipv4.tcp_sack": "1",
    "net.ipv4.tcp_window_scaling": "1",
}
# Without IPv6, autoconfiguration and MLD add no packets that no test asked for.
NO_IPV6 = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}
# With it, keep its chatter down: no router solicitations, no RAs taken.
QUIET_IPV6 = {
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
    "net.ipv6.conf.all.router_solicitations": "0",
    "net.ipv6.conf.default.router_solicitations": "0",
}


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


class NetnsPair:
    """Namespace ``a`` (veth0) sends to namespace ``b`` (veth1), where netmon watches."""

    def __init__(self, subnet: int | None = None, b_if: str = "veth1", ipv6: bool = False):
        n = next(_serial)
        self.id = f"nmt-{os.getpid()}-{n}"
        self.a = f"{self.id}-a"
        self.b = f"{self.id}-b"
        third = subnet if subnet is not None else (os.getpid() + n) % 250
        self.prefix = f"10.199.{third}"
        self.a_ip = f"{self.prefix}.1"
        self.b_ip = f"{self.prefix}.2"
        self.a_ip2 = f"{self.prefix}.3"  # a second source address in a
        self.b_ip2 = f"{self.prefix}.4"  # a second destination address in b
        self.a_if, self.b_if = "veth0", b_if
        self.ipv6 = ipv6
        # Unique local addresses, this pair's own, written as netmon prints them (RFC 5952:
        # the third group 0 folds into "::", fd00:199::1, not fd00:199:0::1).
        self.a_ip6 = str(ipaddress.ip_address(f"fd00:199:{third:x}::1"))
        self.b_ip6 = str(ipaddress.ip_address(f"fd00:199:{third:x}::2"))

    def __enter__(self) -> "NetnsPair":
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        for ns in (self.a, self.b):
            sh("ip", "netns", "add", ns)
            sysctls = {**SYSCTLS, **(QUIET_IPV6 if self.ipv6 else NO_IPV6)}
            for key, value in sysctls.items():
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.a, "link", "add", self.a_if, "type", "veth",
           "peer", "name", self.b_if, "netns", self.b)
        for ns, dev, ips in ((self.a, self.a_if, (self.a_ip, self.a_ip2)),
                             (self.b, self.b_if, (self.b_ip, self.b_ip2))):
            for ip in ips:
                sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        if self.ipv6:
            ends = ((self.a, self.a_if, self.a_ip6), (self.b, self.b_if, self.b_ip6))
            for ns, dev, ip in ends:
                sh("ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", dev, "nodad")
            # Neighbour discovery is ICMPv6 between the very addresses the tests
            # use: settle it beforehand so the wire carries only what tests send.
            macs = [self.mac(ns) for ns, _, _ in ends]
            for (ns, dev, _), (_, _, peer_ip), mac in zip(ends, reversed(ends), reversed(macs)):
                sh("ip", "-n", ns, "neigh", "replace", peer_ip, "lladdr", mac, "dev", dev,
                   "nud", "permanent")

    def link(self, a_if: str, b_if: str) -> tuple[str, str]:
        """Another veth pair between a and b, with a subnet of its own: (a's ip, b's ip)."""
        third = (os.getpid() + next(_serial)) % 250
        a_ip, b_ip = f"10.198.{third}.1", f"10.198.{third}.2"
        sh("ip", "-n", self.a, "link", "add", a_if, "type", "veth", "peer", "name", b_if,
           "netns", self.b)
        for ns, dev, ip in ((self.a, a_if, a_ip), (self.b, b_if, b_ip)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        return a_ip, b_ip

    def mac(self, ns: str) -> str:
        dev = self.a_if if ns == self.a else self.b_if
        return self.run(ns, "cat", f"/sys/class/net/{dev}/address").stdout.strip()

    def close(self) -> None:
        for ns in (self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)

    def __exit__(self, *exc) -> None:
        self.close()

    def exec_args(self, ns: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *args]

    def run(self, ns: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return sh(*self.exec_args(ns, *args), **kw)

    def python(self, ns: str, code: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(ns, sys.executable, "-c", code, *args, **kw)

    def xdp_prog_id(self) -> int:
        """Id of the XDP program on b's veth (0 = none)."""
        out = self.run(self.b, "ip", "-d", "-j", "link", "show", self.b_if).stdout
        info = json.loads(out)[0].get("xdp") or {}
        prog = info.get("prog") or {}
        if not prog and info.get("attached"):
            prog = info["attached"][0].get("prog", {})
        return int(prog.get("id", 0))


def send(pair: NetnsPair, *args) -> None:
    """Run tests/support/traffic.py in namespace a, pinned to one CPU so the order is kept."""
    pair.run(pair.a, "taskset", "-c", "0", sys.executable, "-m", "tests.support.traffic",
             *map(str, args), cwd=ROOT)


def ping(pair: NetnsPair, dst: str, count: int = 1, src: str | None = None) -> None:
    extra = ["-I", src] if src else []
    pair.run(pair.a, "taskset", "-c", "0", "ping", "-n", "-q", "-c", str(count),
             "-i", "0.01", "-W", str(math.ceil(scaled(2))), *extra, dst)


class Listener:
    """A TCP server in namespace b that takes one connection."""

    def __init__(self, pair: NetnsPair, addr: str, port: int):
        self.proc = subprocess.Popen(
            pair.exec_args(pair.b, sys.executable, "-m", "tests.support.traffic", "listen", addr,
                           str(port)),
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout.readline().strip() == "ready"

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.proc.wait(scaled(10))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
