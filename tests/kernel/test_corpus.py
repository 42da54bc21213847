"""Differential test: every frame of tcpdump's own test captures through `netmon -r --json`.

The captures live in tests/data/tcpdump (BSD licence, see PROVENANCE). Every
readable frame of every file (Ethernet, and Linux cooked captures netmon turns
into Ethernet) is gathered into one pcapng file, which one `netmon -r --json`
runs through the real program with BPF_PROG_TEST_RUN. Each event names its
frame, and is held against the reference dissector (tests/reference.py). At
least 99.5% must agree, and every frame that does not must be listed in
KNOWN_DIFFERENCES with its reason. A few files are also read as they are, to
show that reading them directly gives the same events.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from netmon.pcapng import writer as pcapng
from netmon.pcapng import reader as savefile
from tests.conftest import CORPUS, ROOT
from tests.support.reference import Expected, reference

pytestmark = pytest.mark.kernel

AGREEMENT = 0.995
MIN_FRAME = 14  # BPF_PROG_TEST_RUN refuses shorter frames; netmon counts them malformed

# (capture, frame number from 1, as tcpdump -# counts) -> why the program and the
# reference differ there. Empty: on the corpus they agree on every frame.
KNOWN_DIFFERENCES: dict[tuple[str, int], str] = {}


def captures() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*") if p.suffix in (".pcap", ".pcapng"))


def readable_frames(path: Path) -> list[savefile.Frame]:
    """The frames netmon reads from one file: all, or those before it gave up."""
    got = []
    try:
        for frame in savefile.frames(path):
            got.append(frame)
    except (savefile.CaptureUnreadable, savefile.CaptureDamaged):
        pass  # another link type, or damage (some of tcpdump's tests are damaged on purpose)
    return got


def of_json(ev: dict) -> Expected:
    src = ipaddress.ip_address(ev["src"])
    return Expected(ev["len"], src.version, ev["ipproto"], src, ipaddress.ip_address(ev["dst"]),
                    ev["sport"], ev["dport"], ev["vlan"], ev["icmp_type"], ev["icmp_code"],
                    ev["tcp_flags"], ev["frag"])


def netmon_r(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netmon", "-r", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_corpus_agrees_with_the_reference(tmp_path):
    files = captures()
    assert files, f"tcpdump's test captures are missing from {CORPUS}"
    origin = []  # frame number in the combined file - 1 -> (capture, number there)
    combined = tmp_path / "corpus.pcapng"
    with pcapng.PcapngWriter(str(combined), savefile.MAX_SNAPLEN) as w:
        w.describe(0, "corpus")
        for path in files:
            for frame in readable_frames(path):
                w.write([pcapng.enhanced_packet(0, frame.ts_ns, frame.data, frame.origlen,
                                                bool(frame.outbound))])
                origin.append((path.name, frame.number, frame))
    res = netmon_r(str(combined), "--json")
    assert res.returncode == 0, res.stderr
    got = {ev["frame"]: of_json(ev) for ev in map(json.loads, res.stdout.splitlines())}

    compared, too_short, differences = 0, 0, {}
    for number, (name, n, frame) in enumerate(origin, start=1):
        if len(frame.data) < MIN_FRAME:
            too_short += 1
            continue
        compared += 1
        want = reference(frame.data)
        if want is not None:  # the length on the wire, as the file gives it
            want = dataclasses.replace(want, length=frame.origlen)
        if got.get(number) != want:
            differences[(name, n)] = (got.get(number), want)
    agreement = 1 - len(differences) / compared
    report = "\n".join(f"{name}#{n}: program {g!r}, reference {w!r}"
                       for (name, n), (g, w) in differences.items())
    print(f"\n{len(files)} files, {compared} frames compared ({too_short} shorter than "
          f"Ethernet counted malformed), agreement {agreement:.4%}, "
          f"{len(differences)} differences\n{report}")
    summary = res.stderr.splitlines()[-1]
    assert f"{len(got)} matched, {len(got)} sent, {len(got)} shown, 0 lost" in summary
    assert compared > 5000
    assert agreement >= AGREEMENT, report
    unexplained = set(differences) - set(KNOWN_DIFFERENCES)
    assert not unexplained, report
    assert set(KNOWN_DIFFERENCES) <= set(differences), "a known difference went away"


@pytest.mark.parametrize("name", ["802.1ad_QinQ.pcap", "ip6_frag_asan.pcap", "bigtcp-ipv6-hbh.pcap",
                                  "icmp6-rfc8335.pcap", "dns_tcp_8053.pcap"])
def test_files_read_as_they_are(name):
    """The original files, pcap or pcapng, through -r directly: as the reference says."""
    path = CORPUS / name
    frames = readable_frames(path)
    want = {}
    for frame in frames:
        ref = reference(frame.data) if len(frame.data) >= MIN_FRAME else None
        if ref is not None:
            want[frame.number] = dataclasses.replace(ref, length=frame.origlen)
    res = netmon_r(str(path), "--json")
    got = {ev["frame"]: of_json(ev) for ev in map(json.loads, res.stdout.splitlines())}
    assert got == want
