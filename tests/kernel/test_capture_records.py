"""Capture records from the real program: the kernel's EPBs, sliced or walked, make pcapng.

Frames go through the loaded program with BPF_PROG_TEST_RUN (XDP and both tc
hooks); what the perf rings then hold is turned into a file the way netmon -w
does it, and read back with netmon's reader and with tshark.
"""

from __future__ import annotations

import struct
import time

import pytest

from netmon.pcapng import writer as pcapng
from netmon.kernel import abi
from netmon.sources import records as capture
from netmon.pcapng import reader as savefile
from netmon.sources.policy import xdp_can_capture
from netmon.kernel.loader import MonitorProgram, prog_test_run
from netmon.sources.reader import PerfReader
from netmon.kernel import config as nm_config
from tests.support.frames import MIN_FRAME, Runner, sample_frames
from tests.support.tshark import tshark_fields

pytestmark = pytest.mark.kernel

EPOCH = 1_700_000_000 * 10**9  # what the kernel adds to its monotonic stamps here
HOOKS = ["tc_in", "tc_out"] + (["xdp"] if xdp_can_capture() else [])


def frames(hook: str = "xdp") -> list[bytes]:
    """The sample frames, padded so that every caplen % 8 occurs (both record shapes).

    tc's test runs refuse an IPv4 frame whose header is cut short (EINVAL).
    """
    shortest = MIN_FRAME if hook == "xdp" else 14 + 20
    out = [f for f in sample_frames() if len(f) >= shortest]
    base = out[0]
    return out + [base + bytes(pad) for pad in range(1, 8)]


def matching(frames_: list[bytes]) -> list[bytes]:
    """The frames the plain program sends an event for: those a capture keeps."""
    with Runner() as runner:
        return [f for f in frames_ if runner.run(f)[1]]


class Capturing:
    """The program loaded for capture, its rings, and a file the records go to."""

    def __init__(self, hook: str, path, events: bool, snaplen: int = abi.MAX_SNAPLEN,
                 pages: int = 64):
        config = nm_config.pack(snaplen=snaplen, cap_events=events, epoch_ns=EPOCH)
        self.prog = MonitorProgram(config, hooks=(hook,), capture=True)
        self.fd = self.prog.prog_fds[hook]
        self.reader = PerfReader(self.prog.events_fd, pages)
        self.records = capture.Records(events)
        self.writer = pcapng.PcapngWriter(str(path), snaplen)
        self.writer.describe(0, "lo")  # test runs: frames of no registered interface
        self.rows: list = []
        self.runs: list[tuple[int, int, bool]] = []  # each run's packets, gap blocks, walked

    def send(self, frame: bytes) -> None:
        prog_test_run(self.fd, frame)

    def drain(self) -> None:
        spans = self.reader.drain_spans()
        for ring, span in spans:
            if self.records.events:
                rows, blocks = self.records.rows(ring, span)
                self.rows += rows
                self.writer.write(blocks)
            else:
                run = self.records.run(ring, span)
                self.runs.append((run.packets, gap_blocks(run), run.walked))
                self.writer.write_run(run.parts, run.packets)
            span.release()

    def close(self) -> None:
        self.writer.close()
        self.reader.close()
        self.prog.close()

    def __enter__(self) -> "Capturing":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def gap_blocks(run: capture.Run) -> int:
    """How many of the kernel's gap blocks a run kept (a slice keeps them all; the
    12-byte blocks that pad a record to 8 bytes are not counted)."""
    return sum(1 for b in pcapng.split_blocks(b"".join(run.parts))
               if struct.unpack_from("=I", b)[0] == capture.CAP_BLOCK and len(b) > 12)


@pytest.mark.parametrize("events", [False, True], ids=["file-only", "with-events"])
@pytest.mark.parametrize("hook", HOOKS)
def test_records_make_the_file_tshark_reads(tmp_path, hook, events, one_cpu):
    sent = frames(hook)
    want = matching(sent)
    path = tmp_path / "r.pcapng"
    before = time.monotonic_ns()
    with Capturing(hook, path, events) as cap:
        for frame in sent:
            cap.send(frame)
        cap.drain()
        after = time.monotonic_ns()
        counters = cap.prog.counters()
        assert cap.writer.packets == counters["sent"] == len(want)
        assert cap.records.lost == counters["send_failed"] == 0
        if events:
            assert [row[2] for row in cap.rows] == [len(f) for f in want]
        else:  # one ring (one CPU) and no loss: written as a slice, gap blocks and all
            assert cap.runs == [(len(want), len(want) - 1, False)]
    got = list(savefile.frames(path))
    assert [f.data for f in got] == want
    assert [f.origlen for f in got] == [len(f) for f in want]
    assert {f.ifname for f in got} == {"lo"}
    assert {f.outbound for f in got} == {hook == "tc_out"}
    assert all(before + EPOCH <= f.ts_ns <= after + EPOCH for f in got)
    rows = tshark_fields(path, "frame.len", "frame.cap_len", "frame.interface_name",
                         "frame.packet_flags_direction")
    direction = "0x00000002" if hook == "tc_out" else "0x00000001"
    assert rows == [[str(len(f)), str(len(f)), "lo", direction] for f in want]


@pytest.mark.parametrize("hook", HOOKS)
def test_the_snaplen_cuts_records(tmp_path, hook, one_cpu):
    want = matching(frames(hook))
    path = tmp_path / "s.pcapng"
    with Capturing(hook, path, events=False, snaplen=37) as cap:
        for frame in want:
            cap.send(frame)
        cap.drain()
    got = list(savefile.frames(path))
    assert [(f.data, f.origlen) for f in got] == [(w[:37], len(w)) for w in want]


def test_a_loss_report_among_records_is_walked_and_counted(tmp_path, one_cpu):
    """A ring too small: sends fail, the kernel reports the loss before the next record,
    the reader walks that span (and only it), and the file holds every record sent."""
    frame = matching(frames("tc_in"))[0] + bytes(1000)
    path = tmp_path / "l.pcapng"
    with Capturing("tc_in", path, events=False, pages=1) as cap:
        for _ in range(20):  # a 4 KiB ring takes three or so
            cap.send(frame)
        cap.drain()
        first = cap.runs[-1]
        for _ in range(2):
            cap.send(frame)
        cap.drain()
        walked = cap.runs[-1]
        for _ in range(2):
            cap.send(frame)
        cap.drain()
        sliced = cap.runs[-1]
        counters = cap.prog.counters()
    assert first[0] + 4 == counters["sent"] < 20 + 4
    assert cap.records.lost == counters["send_failed"] == 20 + 4 - counters["sent"]
    assert first == (first[0], first[0] - 1, False)  # the failures came after it: a slice
    assert walked == (2, 1, True)  # a loss report before the two: walked, their stretch kept
    assert sliced == (2, 1, False)  # the failure count unchanged since: a slice again
    got = list(savefile.frames(path))
    assert len(got) == counters["sent"] and all(f.data == frame for f in got)
    assert len(tshark_fields(path, "frame.number")) == counters["sent"]


def test_stretches_around_a_loss_report_in_the_middle(tmp_path, one_cpu):
    """The kernel's records with a loss report between them (as when the reader took the
    ring while it was full): both stretches are kept whole, the report counted."""
    want = matching(frames("tc_in"))[:6]
    with Capturing("tc_in", tmp_path / "x.pcapng", events=False) as cap:
        for frame in want:
            cap.send(frame)
        ((ring, span),) = cap.reader.drain_spans()
        chunk = span.tobytes()
        span.release()
        offsets = [pos for pos, _ in capture.Records(False).walk(ring, chunk)]
        lost = struct.pack("=IHHQQ", 2, 0, 24, 0, 5)  # PERF_RECORD_LOST: 5 records
        spliced = chunk[:offsets[3]] + lost + chunk[offsets[3]:]
        records = capture.Records(False)
        run = records.stretches(ring, spliced)
    assert (run.packets, run.walked, len(run.parts), records.lost) == (6, True, 2, 5)
    path = tmp_path / "y.pcapng"
    with pcapng.PcapngWriter(str(path), abi.MAX_SNAPLEN) as w:
        w.describe(0, "lo")
        w.write_run(run.parts, run.packets)
    assert [f.data for f in savefile.frames(path)] == want
    assert len(tshark_fields(path, "frame.number")) == 6
