"""--flows: one line per flow as it ends (text, or JSON with IPFIX's field names)."""

from __future__ import annotations

from netmon.sinks import formats
from netmon.pipeline import Context, Delivery
from netmon.sinks.stream import LinesOut


class FlowRecordsSink(LinesOut):
    wants = Delivery.FLOWS

    @classmethod
    def wanted(cls, settings) -> bool:
        return settings.flows is not None and settings.flows.print_records \
            and not settings.flows.top

    @classmethod
    def writes_stdout(cls, settings) -> bool:
        return True

    def __init__(self, ctx: Context):
        super().__init__(ctx.out, "standard output", escape=not ctx.settings.json)
        if ctx.settings.json:
            self._fmt = formats.FlowRecordJson(ctx.interfaces.info, ctx.clock,
                                               tcp=ctx.settings.tcp is not None)
        else:
            self._fmt = formats.FlowRecordText(ctx.interfaces.name, ctx.clock)

    def flows(self, records, final=False) -> int:
        if not records:
            return 0
        self._out.write(self._fmt.render(records))
        return len(records)
