"""-w: packets into pcapng files (the kernel builds each packet's block; pcapng/writer.py
writes them, rotating files as -C, -W and -G ask)."""

from __future__ import annotations

from netmon.pcapng.writer import PcapngWriter
from netmon.pipeline import Context, Delivery, Sink, Start


class PcapngSink(Sink):
    wants = Delivery.CAPTURE
    start = Start.ATTACHING  # a file that cannot be written stops the run before any attach

    @classmethod
    def wanted(cls, settings) -> bool:
        return settings.capture is not None

    @classmethod
    def writes_stdout(cls, settings) -> bool:
        return settings.capture.path == "-"

    def __init__(self, ctx: Context):
        c = self._capture = ctx.settings.capture
        self.writer = PcapngWriter(c.path, c.snaplen, c.file_mb, c.file_count,
                                   c.rotate_seconds, ctx.owner)
        self._closed = False

    def rows(self, rows, blocks=None, frames=None) -> None:
        self.writer.write(blocks)

    def runs(self, runs) -> None:
        for run in runs:
            self.writer.write_run(run.parts, run.packets)

    def interface(self, index: int, name: str | None) -> None:
        self.writer.describe(index, name)

    def tick(self) -> None:
        self.writer.tick()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()

    def report(self, summary) -> None:
        summary.written = (self.writer.packets, self.writer.files, self._capture.path)
