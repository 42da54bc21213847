"""A guest, a Proxmox-like host and a remote, with delay lines between, in namespaces.

    g (the guest: eth0)  d1 (delay line)  h (the host: bridge br0)  d2 (delay line)  r
       eth0 ---------- d1g | d1h ------ tap100i0  br0  hr ------ d2h | d2r ---------- eth0

netmon watches tap100i0 in h, a guest's tap as Proxmox VE names it; with a fake
/etc/pve, guest 100. d1's line is behind the tap (between it and the guest: a slow
guest), d2's beyond it (the network). Each line's delays and losses are set per run
(lines()). All in namespaces named nmt-PID-N-*, removed on exit; no default route.
With ``ipv6``, the guest and the remote talk IPv6 too (g_ip6, r_ip6), as quietly as
IPv6 can (no router solicitations, no duplicate address detection).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

from tests.support.netns import NO_IPV6, QUIET_IPV6, ROOT, _serial, scaled, sh

TAP = "tap100i0"


class GuestPath:
    def __init__(self, ipv6: bool = False):
        n = next(_serial)
        self.ipv6 = ipv6
        self.id = f"nmt-{os.getpid()}-{n}"
        self.g, self.d1, self.h, self.d2, self.r = (f"{self.id}-{x}" for x in
                                                   ("g", "d1", "h", "d2", "r"))
        third = (os.getpid() + n) % 250
        self.g_ip, self.r_ip = f"10.197.{third}.1", f"10.197.{third}.2"
        self.g_ip6, self.r_ip6 = f"fd00:197:{third:x}::1", f"fd00:197:{third:x}::2"

    def __enter__(self) -> "GuestPath":
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        for ns in (self.g, self.d1, self.h, self.d2, self.r):
            sh("ip", "netns", "add", ns)
            talks = self.ipv6 and ns in (self.g, self.r)
            for key, value in (QUIET_IPV6 if talks else NO_IPV6).items():
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        links = ((self.g, "eth0", self.d1, "d1g"), (self.d1, "d1h", self.h, TAP),
                 (self.h, "hr", self.d2, "d2h"), (self.d2, "d2r", self.r, "eth0"))
        for ns1, if1, ns2, if2 in links:
            sh("ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2,
               "netns", ns2)
        sh("ip", "-n", self.h, "link", "add", "br0", "type", "bridge")
        for dev in (TAP, "hr"):
            sh("ip", "-n", self.h, "link", "set", dev, "master", "br0")
        sh("ip", "-n", self.g, "addr", "add", f"{self.g_ip}/24", "dev", "eth0")
        sh("ip", "-n", self.r, "addr", "add", f"{self.r_ip}/24", "dev", "eth0")
        if self.ipv6:
            for ns, ip in ((self.g, self.g_ip6), (self.r, self.r_ip6)):
                sh("ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", "eth0", "nodad")
        # Each segment as itself, with its checksum in it: packet sockets forward frames
        # as they are, and a merged or unchecksummed one would not cross.
        for ns1, if1, ns2, if2 in links:
            for ns, dev in ((ns1, if1), (ns2, if2)):
                sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off",
                   "gro", "off", "tx", "off", "rx", "off", check=False)
                sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", self.h, "link", "set", "br0", "up")

    def sysctl(self, ns: str, key: str, value: str) -> None:
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")

    def exec_args(self, ns: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *args]

    def traffic(self, ns: str, *args) -> subprocess.CompletedProcess:
        return sh(*self.exec_args(ns, sys.executable, "-m", "tests.support.traffic",
                                  *map(str, args)), cwd=ROOT, timeout=scaled(120))

    @contextlib.contextmanager
    def server(self, kind: str, port: int, ip: str | None = None):
        """An echo or listen server in r (on r_ip, or ``ip``)."""
        proc = subprocess.Popen(self.exec_args(self.r, sys.executable, "-m",
                                               "tests.support.traffic", kind,
                                               ip or self.r_ip, str(port)),
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert proc.stdout.readline().strip() == "ready"
            yield proc
        finally:
            try:
                proc.wait(scaled(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @contextlib.contextmanager
    def lines(self, behind_ms: float = 0, beyond_ms: float = 0, drop_every: int = 0):
        """The delay lines: ``behind_ms`` added to what goes to the guest (between the tap
        and it), ``beyond_ms`` to what goes to the remote, every ``drop_every``th data
        segment to the remote dropped beyond the tap. Yields a dict their counts fill."""
        procs = [
            subprocess.Popen(self.exec_args(self.d1, sys.executable, "-m",
                                            "tests.support.delayline", "d1g", "d1h",
                                            "--to-a", str(behind_ms)),
                             stdout=subprocess.PIPE, text=True, cwd=ROOT),
            subprocess.Popen(self.exec_args(self.d2, sys.executable, "-m",
                                            "tests.support.delayline", "d2h", "d2r",
                                            "--to-b", str(beyond_ms),
                                            "--drop-every", str(drop_every)),
                             stdout=subprocess.PIPE, text=True, cwd=ROOT),
        ]
        stats: dict = {}
        try:
            for p in procs:
                assert p.stdout.readline().strip() == "ready"
            yield stats
        finally:
            for p in procs:
                p.terminate()
            for name, p in zip(("behind", "beyond"), procs):
                try:
                    out, _ = p.communicate(timeout=scaled(10))
                    stats[name] = json.loads(out.strip().splitlines()[-1])
                except (subprocess.TimeoutExpired, ValueError, IndexError):
                    p.kill()
                    p.wait()

    def close(self) -> None:
        for ns in (self.g, self.d1, self.h, self.d2, self.r):
            sh("ip", "netns", "del", ns, check=False)

    def __exit__(self, *exc) -> None:
        self.close()
