"""Differential test: every frame of tcpdump's own test captures through the real program.

The captures are read from ../shared/corpus/tcpdump-tests (never copied into
the repository); the test skips when they are absent. Each frame runs through
the XDP program with BPF_PROG_TEST_RUN and its event is held against the
reference dissector (tests/reference.py). At least 99.5% must agree, and every
frame that does not must be listed in KNOWN_DIFFERENCES with its reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.utils import RawPcapNgReader, RawPcapReader

from tests.conftest import CORPUS
from tests.frames import MIN_FRAME, XDP_PASS, Runner
from tests.reference import of_event, reference

pytestmark = pytest.mark.kernel

LINKTYPE_ETHERNET = 1
AGREEMENT = 0.995

# (capture, frame number from 1, as tcpdump -# counts) -> why the program and the
# reference differ there. Empty: on the corpus they agree on every frame.
KNOWN_DIFFERENCES: dict[tuple[str, int], str] = {}


def captures() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*") if p.suffix in (".pcap", ".pcapng"))


def read_frames(path: Path):
    try:
        reader = RawPcapReader(str(path))
    except Exception:
        reader = RawPcapNgReader(str(path))
    with reader:
        if getattr(reader, "linktype", LINKTYPE_ETHERNET) != LINKTYPE_ETHERNET:
            return
        for number, (data, _) in enumerate(reader, start=1):
            yield number, bytes(data)


def test_corpus_agrees_with_the_reference():
    files = captures()
    if not files:
        pytest.skip(f"tcpdump's test captures are not at {CORPUS}")
    compared, too_short, differences = 0, 0, {}
    with Runner() as runner:
        for path in files:
            for number, frame in read_frames(path):
                if len(frame) < MIN_FRAME:
                    too_short += 1  # BPF_PROG_TEST_RUN refuses them; XDP never sees one
                    continue
                retval, got = runner.run(frame)
                assert retval == XDP_PASS, f"{path.name}#{number} returned {retval}"
                want = reference(frame)
                compared += 1
                if [of_event(e) for e in got] != ([want] if want else []):
                    differences[(path.name, number)] = (got, want)
        assert runner.reader.lost == 0
    agreement = 1 - len(differences) / compared
    report = "\n".join(f"{name}#{n}: program {got!r}, reference {want!r}"
                       for (name, n), (got, want) in differences.items())
    print(f"\n{compared} frames compared ({too_short} shorter than Ethernet skipped), "
          f"agreement {agreement:.4%}, {len(differences)} differences\n{report}")
    assert compared > 5000
    assert agreement >= AGREEMENT, report
    unexplained = set(differences) - set(KNOWN_DIFFERENCES)
    assert not unexplained, report
    assert set(KNOWN_DIFFERENCES) <= set(differences), "a known difference went away"
