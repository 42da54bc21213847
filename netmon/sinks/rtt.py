"""netmon rtt: a line per round-trip time sample and per retransmission (text or JSON)."""

from __future__ import annotations

from netmon.pipeline import Context, Delivery
from netmon.sinks import formats
from netmon.sinks.stream import LinesOut


class RttLinesSink(LinesOut):
    wants = Delivery.TCP
    shows_events = True

    @classmethod
    def wanted(cls, settings) -> bool:
        return settings.rtt_alone and not settings.quiet

    @classmethod
    def writes_stdout(cls, settings) -> bool:
        return True

    def __init__(self, ctx: Context):
        s = ctx.settings
        super().__init__(ctx.out, "standard output", escape=not s.json)
        if s.json:
            self._fmt = formats.TcpJson(ctx.interfaces.info, ctx.clock)
        else:
            self._fmt = formats.TcpText(ctx.interfaces.info,
                                        formats.stamps(s.timestamps, ctx.clock))

    def rows(self, rows, blocks=None, frames=None) -> None:
        self._out.write(self._fmt.render(rows))
