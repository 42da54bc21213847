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
        if settings.flows is not None or settings.quiet or settings.drops \
                or settings.rtt_alone:
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
            # Guests watched (--guest): a line names the guest beside its interface.
            guests = s.selection.guests or s.selection.all_guests
            names = (lambda i: formats.with_guest(ctx.interfaces.info(i))) if guests \
                else ctx.interfaces.name
            stamp = formats.stamps(s.timestamps, ctx.clock)
            if s.read is not None:  # a file's frames: as live lines, where it says where
                self._fmt = formats.TextFormat(stamp=stamp, labels=self._filed(ctx.interfaces))
            else:
                self._fmt = formats.TextFormat(names if s.labelled else None, stamp)

    @staticmethod
    def _filed(interfaces):
        """-r: a frame's interface and direction, as a live line names them, where the
        file records both (netmon's own pcapng does); else none, the original line."""
        def label(ifindex: int, direction: int) -> str:
            name = interfaces.name(ifindex)
            if name is None or ifindex in interfaces.undirected:
                return ""
            return f"{name} {formats.DIR_NAMES[direction]}"
        return label

    def rows(self, rows, blocks=None, frames=None) -> None:
        if None in rows:  # frames an expression matched that carry no IP packet: no line
            keep = [i for i, row in enumerate(rows) if row is not None]
            rows = [rows[i] for i in keep]
            frames = [frames[i] for i in keep] if frames is not None else None
        self._out.write(self._fmt.render(rows, frames))

    def forget(self, ifindex: int, last) -> None:
        if isinstance(self._fmt, formats.TextFormat):
            self._fmt.forget(ifindex)
