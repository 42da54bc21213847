"""Test network: two namespaces joined by a veth pair, no default route, removed on exit.

All traffic the tests send stays between these two namespaces. Names start with
``nmt-`` plus the pid, so parallel runs never collide.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

_serial = itertools.count()

SYSCTLS = {
    # IPv6 autoconfiguration and MLD would add packets no test asked for.
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    # Pin the TCP options so the SYN's length is known.
    "net.ipv4.tcp_timestamps": "1",
    "net.ipv4.tcp_sack": "1",
    "net.ipv4.tcp_window_scaling": "1",
}


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


class NetnsPair:
    """Namespace ``a`` (veth0) sends to namespace ``b`` (veth1), where netmon watches."""

    def __init__(self, subnet: int | None = None):
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
        self.a_if, self.b_if = "veth0", "veth1"

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
            for key, value in SYSCTLS.items():
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.a, "link", "add", self.a_if, "type", "veth",
           "peer", "name", self.b_if, "netns", self.b)
        for ns, dev, ips in ((self.a, self.a_if, (self.a_ip, self.a_ip2)),
                             (self.b, self.b_if, (self.b_ip, self.b_ip2))):
            for ip in ips:
                sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")

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
