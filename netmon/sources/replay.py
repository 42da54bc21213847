"""-r: a capture file's frames through the same BPF program, so filters and output are live's.

Each frame runs through the loaded XDP program with BPF_PROG_TEST_RUN, which
parses, filters and counts it and sends its event through the perf buffer
exactly as on the wire. The event is then given back what the file knows and the
test run cannot: the frame's time, its length on the wire, its interface name,
its direction, and for -w its bytes (the same bytes the kernel would copy).
Which frame an event belongs to is told by time: the kernel stamps each event
with CLOCK_MONOTONIC, the clock Python reads around each test run, so every
event falls inside its own frame's window.

A test run takes a frame of up to ~64 KiB where the kernel builds multi-buffer
test frames (>= 5.18), and of a page before. The program reads headers only, so
a longer frame runs as its first RUN_LIMITS bytes; its event is the same.
"""

from __future__ import annotations

import bisect
import errno
import time
from typing import TextIO

from netmon import events, output, pcapng, system
from netmon.kernel import libbpf
from netmon.sources import savefile
from netmon.errors import LibbpfError
from netmon.events import DIR_IN, DIR_OUT
from netmon.filters import FilterSpec
from netmon.monitor import Delivery, Interfaces, Settings, Summary
from netmon.kernel.loader import MonitorProgram, prog_test_run
from netmon.sources.reader import SAMPLE_HEAD, SAMPLE_TAIL, PerfReader

ETH_HLEN = 14  # BPF_PROG_TEST_RUN refuses anything shorter
RUN_LIMITS = (65536, 3072)  # the most of a frame a test run is given, by kernel
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
    limits = list(RUN_LIMITS)
    writer = capture.writer() if capture else None
    try:
        with MonitorProgram(spec.kernel_config(), hooks=("xdp",)) as prog, \
                PerfReader(prog.events_fd, settings.pages) as reader:
            deliver = Delivery(settings, known, summary, out, err, writer, output.Clock(0))
            batch: list[tuple[int, savefile.Frame]] = []

            def flush() -> None:
                starts = [start for start, _ in batch]
                rows = []
                for chunk in reader.drain():
                    rows += decoder.rows(chunk, SAMPLE_HEAD, SAMPLE_TAIL)
                rows.sort(key=events.BY_TIME)
                fixed, numbers, blocks = [], [], []
                for ts, _, _, key, _, segs in rows:
                    frame = batch[bisect.bisect_right(starts, ts) - 1][1]
                    ifindex = indexes.get(frame.ifname)
                    if ifindex is None:
                        ifindex = indexes[frame.ifname] = _FIRST_INDEX + len(indexes)
                        known.learn(ifindex, frame.ifname)  # None: the file names none
                        if writer is not None:
                            writer.describe(ifindex - _FIRST_INDEX, frame.ifname)
                    fixed.append((frame.ts_ns, ifindex, frame.origlen, key,
                                  DIR_OUT if frame.outbound else DIR_IN, segs))
                    numbers.append(frame.number)
                    if writer is not None:
                        blocks.append(pcapng.enhanced_packet(
                            ifindex - _FIRST_INDEX, frame.ts_ns, frame.data[:capture.snaplen],
                            frame.origlen, frame.outbound))
                deliver(fixed, blocks, numbers)
                deliver.tick()
                batch.clear()

            def run(data: bytes) -> None:
                while True:
                    try:
                        prog_test_run(prog.prog_fd, data[:limits[0]])
                        return
                    except LibbpfError as exc:
                        # Too long for this kernel's test runs: the smaller limit.
                        too_long = exc.errno in (errno.EINVAL, errno.ENOMEM, errno.E2BIG,
                                                 errno.EMSGSIZE)  # the last: 5.10
                        if not too_long or len(limits) == 1 or len(data) <= limits[1]:
                            raise
                        limits.pop(0)

            try:
                for frame in frames:
                    if deliver.count_reached():
                        break
                    if len(frame.data) < ETH_HLEN:
                        short += 1
                        continue
                    start = time.monotonic_ns()
                    run(frame.data)
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
    return summary
