"""Filter expressions, differentially: random expressions from a grammar of pcap-filter's
primitives, arithmetic and link-layer terms, compiled by libpcap, translated by netmon
and run in the kernel (BPF_PROG_TEST_RUN, as XDP and as tc) on frames, against libpcap's
own pcap_offline_filter() on the same bytes. Every verdict must be equal.

An expression draws its values (addresses, ports, VLAN ids, the bytes a load reads)
from one frame of the corpus, so that many of them match it; that frame, some cuts of
it, and a sample of the corpus are what it runs on. What libpcap refuses, or netmon
refuses in one line (protochain's backward jumps), is counted, not a finding. A
disagreement, a translation the verifier rejects, or a caller's register not given back
is.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import traceback
from pathlib import Path

from netmon.errors import ExpressionInvalid
from netmon.expression import cbpf, libpcap
from netmon.expression import translate as t
from netmon.pcapng import reader as savefile
from tests.fuzz import Finding, Report

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tcpdump"
HOOKS = {"xdp": t.XDP, "tc": t.TC}
PROTOS = ("ip", "ip6", "arp", "rarp", "tcp", "udp", "icmp", "icmp6", "sctp", "igmp", "vlan",
          "mpls", "pppoes", "stp", "llc", "geneve", "ether broadcast", "ether multicast",
          "broadcast", "multicast", "ip multicast", "ip6 multicast", "ah", "esp", "pim", "vrrp")
LOADERS = ("ether", "ip", "ip6", "tcp", "udp", "icmp", "icmp6", "sctp", "igmp", "arp", "link")
ARITH = ("+", "-", "*", "/", "%", "&", "|", "^", "<<", ">>")
RELOPS = ("<", "<=", "=", "!=", ">", ">=")
DIRS = ("", "src ", "dst ", "src or dst ", "src and dst ")


class Values:
    """What a frame holds that an expression can name."""

    def __init__(self, frame: bytes):
        self.frame = frame
        self.macs = [frame[0:6], frame[6:12]] if len(frame) >= 12 else []
        self.ethertypes, self.vlans, self.hosts, self.ports, self.protos = [], [], [], [], []
        at = 12
        while at + 2 <= len(frame):
            kind = struct.unpack_from(">H", frame, at)[0]
            self.ethertypes.append(kind)
            if kind in (0x8100, 0x88A8, 0x9100) and at + 4 <= len(frame):
                self.vlans.append(struct.unpack_from(">H", frame, at + 2)[0] & 0xFFF)
                at += 4
                continue
            at += 2
            break
        if self.ethertypes and self.ethertypes[-1] == 0x0800 and at + 20 <= len(frame):
            ihl = (frame[at] & 0xF) * 4
            self.protos.append(frame[at + 9])
            self.hosts += [ipaddress.ip_address(frame[at + 12:at + 16]),
                           ipaddress.ip_address(frame[at + 16:at + 20])]
            at += ihl
        elif self.ethertypes and self.ethertypes[-1] == 0x86DD and at + 40 <= len(frame):
            self.protos.append(frame[at + 6])
            self.hosts += [ipaddress.ip_address(frame[at + 8:at + 24]),
                           ipaddress.ip_address(frame[at + 24:at + 40])]
            at += 40
        if self.protos and self.protos[-1] in (6, 17, 132) and at + 4 <= len(frame):
            self.ports += list(struct.unpack_from(">HH", frame, at))


class Grammar:
    def __init__(self, rng: random.Random, v: Values):
        self.rng, self.v = rng, v

    def pick(self, seq, default):
        return self.rng.choice(seq) if seq and self.rng.random() < 0.8 else default

    def number(self) -> int:
        rng = self.rng
        return rng.choice((0, 1, 2, 3, 4, 7, 8, 14, 20, 31, 32, 40, 60, 64, 255, 256, 1500,
                           65535, 0x80000000, 0xFFFFFFFF, rng.getrandbits(rng.choice((4, 8, 16,
                                                                                      32)))))

    def expression(self, depth: int = 0) -> str:
        rng = self.rng
        r = rng.random()
        if depth < 3 and r < 0.35:
            a, b = self.expression(depth + 1), self.expression(depth + 1)
            return f"({a}) {rng.choice(('and', 'or'))} ({b})" if rng.random() < 0.5 \
                else f"{a} {rng.choice(('and', 'or', '&&', '||'))} {b}"
        if depth < 3 and r < 0.42:
            return f"not ({self.expression(depth + 1)})"
        return self.primitive()

    def primitive(self) -> str:
        rng, v = self.rng, self.v
        kind = rng.randrange(11)
        if kind == 0:
            name = rng.choice(PROTOS)
            if name == "vlan" and rng.random() < 0.6:
                return f"vlan {self.pick(v.vlans, rng.randrange(4096))}"
            if name == "mpls" and rng.random() < 0.5:
                return f"mpls {rng.randrange(1 << 20)}"
            if name == "pppoes" and rng.random() < 0.5:
                return f"pppoes {rng.randrange(65536)}"
            return name
        if kind == 1:
            host = self.pick(v.hosts, ipaddress.ip_address(rng.getrandbits(32)))
            prefix = "ip6 " if host.version == 6 and rng.random() < 0.3 else \
                "ip " if host.version == 4 and rng.random() < 0.3 else ""
            return f"{prefix}{rng.choice(DIRS)}host {host}"
        if kind == 2:
            host = self.pick(v.hosts, ipaddress.ip_address(rng.getrandbits(32)))
            bits = rng.randrange(0, host.max_prefixlen + 1)
            net = ipaddress.ip_network(f"{host}/{bits}", strict=False)
            return f"{rng.choice(DIRS)}net {net}"
        if kind == 3:
            mac = self.pick(v.macs, rng.randbytes(6))
            return f"ether {rng.choice(DIRS)}host {mac.hex(':')}"
        if kind == 4:
            port = self.pick(v.ports, rng.randrange(65536))
            proto = rng.choice(("", "tcp ", "udp ", "sctp "))
            if rng.random() < 0.3:
                low = max(0, port - rng.randrange(100))
                return f"{proto}{rng.choice(DIRS)}portrange {low}-{low + rng.randrange(200)}"
            return f"{proto}{rng.choice(DIRS)}port {port}"
        if kind == 5:
            return rng.choice((f"greater {self.length()}", f"less {self.length()}",
                               f"len {rng.choice(RELOPS)} {self.length()}"))
        if kind == 6:
            kind_ = self.pick(v.ethertypes, rng.getrandbits(16))
            return f"ether proto {kind_:#x}"
        if kind == 7:
            proto = self.pick(v.protos, rng.randrange(256))
            return f"{rng.choice(('ip', 'ip6'))} proto {proto}"
        if kind == 8:
            return rng.choice((
                f"tcp[tcpflags] & ({self.flags()}) != 0", f"tcp[tcpflags] = {self.flags()}",
                f"icmp[icmptype] = {rng.randrange(20)}", f"icmp6[icmp6type] = {rng.randrange(256)}",
                f"ip[0] & 0xf {rng.choice(RELOPS)} 5", "ip[6:2] & 0x1fff != 0"))
        return f"{self.arith(0)} {rng.choice(RELOPS)} {self.arith(0)}"

    def flags(self) -> str:
        names = ("tcp-fin", "tcp-syn", "tcp-rst", "tcp-push", "tcp-ack", "tcp-urg")
        return "|".join(self.rng.sample(names, self.rng.randrange(1, 4)))

    def length(self) -> int:
        n = len(self.v.frame)
        return max(0, n + self.rng.choice((-1, 0, 0, 1, -20, 40, -n)))

    def load(self, depth: int) -> str:
        rng = self.rng
        base = rng.choice(LOADERS)
        size = rng.choice((1, 1, 2, 4))
        if depth < 2 and rng.random() < 0.15:  # a computed index, as tcp[(tcp[12]&0xf0)>>2]
            return f"{base}[{self.arith(depth + 1)}:{size}]"
        at = rng.choice((rng.randrange(16), rng.randrange(64), rng.randrange(2000)))
        text = f"{base}[{at}]" if size == 1 and rng.random() < 0.5 else f"{base}[{at}:{size}]"
        return text

    def arith(self, depth: int) -> str:
        rng = self.rng
        r = rng.random()
        if depth < 2 and r < 0.3:
            a, b = self.arith(depth + 1), self.arith(depth + 1)
            return f"({a} {rng.choice(ARITH)} {b})"
        if r < 0.6:
            return self.load(depth)
        if r < 0.65:
            return "len"
        if r < 0.7:
            return f"-{self.number()}"
        if r < 0.8 and len(self.v.frame) >= 4:  # a value the frame holds
            at = rng.randrange(len(self.v.frame) - 3)
            return str(struct.unpack_from(">I", self.v.frame, at)[0] >> rng.choice((0, 16, 24)))
        return str(self.number())


def corpus_frames(limit: int = 3000, seed: int = 0) -> list[bytes]:
    """Distinct frames of the corpus a test run takes (14 bytes and more), a sample."""
    seen = {}
    for path in sorted(CORPUS.glob("*.pcap*")):
        try:
            for f in savefile.frames(path):
                if 14 <= len(f.data) <= 3000:
                    seen.setdefault(f.data, None)
        except (savefile.CaptureUnreadable, savefile.CaptureDamaged):
            continue
    frames = list(seen)
    random.Random(seed).shuffle(frames)
    return frames[:limit]


def _compile(text: str):
    insns = libpcap.compile(text)
    cbpf.check(insns, text)
    return insns


def campaign(n: int, seed: int, sample: int = 24, frames: list[bytes] | None = None) -> Report:
    """``n`` expressions, each run on its seed frame, three cuts of it and ``sample``
    other frames, at XDP and at tc."""
    from tests.support.exprprog import ExprProgram

    rng = random.Random(seed)
    report = Report("filter expressions")
    frames = frames if frames is not None else corpus_frames()
    for _ in range(n):
        frame = rng.choice(frames)
        text = Grammar(rng, Values(frame)).expression()
        report.inputs += 1
        try:
            insns = _compile(text)
        except ExpressionInvalid as exc:
            report.count("refused by netmon" if "netmon cannot" in str(exc)
                         else "refused by libpcap")
            continue
        cuts = [frame[:rng.randrange(14, len(frame) + 1)] for _ in range(3)]
        runs = [frame] + cuts + rng.sample(frames, min(sample, len(frames)))
        oracle = libpcap.Program(insns)
        want = [oracle.matches(f) for f in runs]
        report.count("compiled and run")
        report.count("matched its frame", want[0])
        for hook, target in HOOKS.items():
            try:
                with ExprProgram(insns, target, hook) as prog:
                    for f, w in zip(runs, want):
                        got = prog.matches(f)
                        report.count("verdicts compared", got is not None)
                        if got is not None and got != w:
                            report.findings.append(Finding(
                                f"{hook}: netmon {got}, libpcap {w}: {text}", text,
                                f"frame {f.hex()}"))
                            break
            except ExpressionInvalid:  # too long for a jump, in one line
                report.count("refused by netmon")
                break
            except Exception as exc:  # the verifier, a register not given back
                report.findings.append(Finding(f"{hook}: {type(exc).__name__}: "
                                               f"{str(exc).splitlines()[0]}: {text}", text,
                                               traceback.format_exc()))
                break
    return report
