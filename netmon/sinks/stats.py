"""--stats: every N seconds, the summary's lines so far on stderr."""

from __future__ import annotations

import time

from netmon.escape import visible
from netmon.pipeline import Context, Sink


class StatsSink(Sink):
    @classmethod
    def wanted(cls, settings) -> bool:
        return bool(settings.stats_every)

    def __init__(self, ctx: Context):
        self._every = ctx.settings.stats_every
        self._err = ctx.err
        self._tally = ctx.tally
        self._next = time.monotonic() + self._every

    def tick(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next += self._every
        for line in self._tally().lines():
            self._err.write(f"netmon: stats: {visible(line)}\n")
        self._err.flush()
