"""netmon drops: a line per dropped packet (text or JSON), with the kernel's reason and
the place it dropped it."""

from __future__ import annotations

from netmon.sinks import formats
from netmon.pipeline import Context, Delivery
from netmon.sinks.stream import LinesOut


class DropLinesSink(LinesOut):
    wants = Delivery.DROPS
    shows_events = True

    @classmethod
    def wanted(cls, settings) -> bool:
        return settings.drops and not settings.quiet and settings.flows is None

    @classmethod
    def writes_stdout(cls, settings) -> bool:
        return True

    def __init__(self, ctx: Context):
        s = ctx.settings
        super().__init__(ctx.out, "standard output", escape=not ctx.settings.json)
        # The kernel's names for reasons and places, through the context: a sink stays
        # plain Python (DESIGN's wall).
        reason, where = ctx.drop_names.reason, ctx.drop_names.location
        if s.json:
            self._fmt = formats.DropJson(ctx.interfaces.info, reason, where, ctx.clock)
        else:
            self._fmt = formats.DropText(ctx.interfaces.name, reason, where,
                                         formats.stamps(s.timestamps, ctx.clock))

    def rows(self, rows, blocks=None, frames=None) -> None:
        self._out.write(self._fmt.render(rows))
