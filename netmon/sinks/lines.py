"""Event lines: text or JSON, one line per packet, one write per batch.

On stdout; on stderr when -w writes the packets and --print asks for lines too
(stdout may be the capture itself, -w -).
"""

from __future__ import annotations

from netmon.sinks import formats
from netmon.pipeline import Context, Delivery
from netmon.sinks.stream import LinesOut


class LinesSink(LinesOut):
    wants = Delivery.EVENTS
    shows_events = True

    @classmethod
    def wanted(cls, settings) -> bool:
        if settings.flows is not None or settings.quiet or settings.drops:
            return False
        return settings.capture is None or settings.capture.print_lines

    @classmethod
    def writes_stdout(cls, settings) -> bool:
        return settings.capture is None  # with -w, lines (--print) go to stderr

    def __init__(self, ctx: Context):
        s = ctx.settings
        if s.capture is not None:
            super().__init__(ctx.err, "standard error", escape=not s.json)
        else:
            super().__init__(ctx.out, "standard output", escape=not s.json)
        if s.json:
            self._fmt = formats.JsonFormat(ctx.interfaces.info, ctx.clock)
        else:
            self._fmt = formats.TextFormat(ctx.interfaces.name if s.labelled else None)

    def rows(self, rows, blocks=None, frames=None) -> None:
        if None in rows:  # frames an expression matched that carry no IP packet: no line
            keep = [i for i, row in enumerate(rows) if row is not None]
            rows = [rows[i] for i in keep]
            frames = [frames[i] for i in keep] if frames is not None else None
        self._out.write(self._fmt.render(rows, frames))

    def forget(self, ifindex: int, last) -> None:
        if isinstance(self._fmt, formats.TextFormat):
            self._fmt.forget(ifindex)
