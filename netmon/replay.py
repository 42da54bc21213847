"""-r: a capture file's frames through the same BPF program, so filters and output are live's.

Each frame runs through the loaded XDP program with BPF_PROG_TEST_RUN, which
parses, filters, counts and sends its event (and with -w its bytes) through the
perf buffer exactly as on the wire. The event is then given back what the file
knows and the test run cannot: the frame's time, its length on the wire, its
interface name and its direction. Which frame an event belongs to is told by
time: the kernel stamps each event with CLOCK_MONOTONIC, the clock Python reads
around each test run, so every event falls inside its own frame's window.
"""

from __future__ import annotations

import bisect
import errno
import time
from typing import TextIO

from netmon import events, libbpf, output, savefile, system
from netmon.events import DIR_IN, DIR_OUT
from netmon.errors import LibbpfError
from netmon.filters import FilterSpec
from netmon.monitor import Delivery, Interfaces, Settings, Summary
from netmon.program import MonitorProgram, prog_test_run
from netmon.reader import RECORD_SIZE_AT, SAMPLE_HEAD, SAMPLE_TAIL, PerfReader

ETH_HLEN = 14  # BPF_PROG_TEST_RUN refuses anything shorter
BATCH = 256  # frames run between two drains of the perf buffer
# Interfaces named in the file get indexes of their own, far from any real one.
_FIRST_INDEX = 1 << 30


def read_capture(settings: Settings, spec: FilterSpec, path: str, out: TextIO,
                 err: TextIO) -> Summary:
    """Every frame of ``path`` through the program; stops at --count or the file's end.

    A damaged file: what came before the damage is delivered, then CaptureDamaged.
    """
    libbpf.lib()
    system.check_privileges()
    frames = savefile.frames(path)
    summary = Summary()
    known = Interfaces()
    indexes: dict[str | None, int] = {}
    capture = settings.capture
    decoder = events.Decoder()
    short = 0  # frames too short to run: malformed
    too_big = 0
    writer = capture.writer() if capture else None
    try:
        with MonitorProgram(spec.kernel_config(capture.snaplen if capture else 0),
                            hooks=("xdp",)) as prog, \
                PerfReader(prog.events_fd, settings.pages, sized=capture is not None) as reader:
            deliver = Delivery(settings, known, summary, out, err, writer, output.Clock(0))
            batch: list[tuple[int, savefile.Frame]] = []

            def flush() -> None:
                starts = [start for start, _ in batch]
                rows, datas = [], None
                for chunk in reader.drain():
                    if capture is None:
                        rows += decoder.rows(chunk, SAMPLE_HEAD, SAMPLE_TAIL)
                    else:
                        r, d = decoder.sized_rows(chunk, SAMPLE_HEAD, RECORD_SIZE_AT,
                                                  capture.snaplen)
                        rows += r
                        datas = (datas or []) + d
                order = sorted(range(len(rows)), key=lambda i: rows[i][0])
                fixed = []
                for i in order:
                    _, _, _, key, _, segs = rows[i]
                    frame = batch[bisect.bisect_right(starts, rows[i][0]) - 1][1]
                    ifindex = indexes.get(frame.ifname)
                    if ifindex is None:
                        ifindex = indexes[frame.ifname] = _FIRST_INDEX + len(indexes)
                        known.learn(ifindex, frame.ifname or "-")
                    fixed.append((frame.ts_ns, ifindex, frame.origlen, key,
                                  DIR_OUT if frame.outbound else DIR_IN, segs))
                deliver(fixed, [datas[i] for i in order] if datas is not None else None)
                deliver.tick()
                batch.clear()

            try:
                for frame in frames:
                    if deliver.count_reached():
                        break
                    if len(frame.data) < ETH_HLEN:
                        short += 1
                        continue
                    start = time.monotonic_ns()
                    try:
                        prog_test_run(prog.prog_fd, frame.data)
                    except LibbpfError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        too_big += 1  # past what this kernel's test runs take
                        continue
                    batch.append((start, frame))
                    if len(batch) >= BATCH:
                        flush()
            finally:
                flush()  # what came before an error is shown before it
            summary.counters = prog.counters()
            summary.perf_lost = reader.lost
            summary.undecodable = decoder.undecodable + reader.foreign
    finally:
        if writer is not None:
            writer.close()
            summary.written = (writer.packets, writer.files, capture.path)
    for name in ("seen", "malformed"):
        summary.counters[name] = summary.counters.get(name, 0) + short
    if too_big:
        summary.counters["seen"] += too_big
        err.write(f"netmon: {too_big} frames were longer than this kernel's "
                  "BPF_PROG_TEST_RUN takes and were not run\n")
    return summary
