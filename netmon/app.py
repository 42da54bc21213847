"""The run: pick the source, build the sinks the settings ask for, loop, summarise.

Wiring only. The sinks say what they need from the kernel (pipeline.delivery),
the live source loads and attaches accordingly (kernel/hooks.py chooses), and
the loop below moves batches from the source to the pipeline until a signal,
--count, a sink (a view's q) or a named interface that went away ends it.
"""

from __future__ import annotations

import gc
import signal
from contextlib import ExitStack, contextmanager
from typing import TextIO

from netmon import output, sinks, system
from netmon.errors import UsageError
from netmon.kernel import drops, hooks, libbpf
from netmon.pipeline import Context, Pipeline, Start, delivery
from netmon.report import Summary, banner
from netmon.settings import Hook, Settings
from netmon.sources.interfaces import Interfaces
from netmon.sources.live import LiveSource


def run(settings: Settings, out: TextIO, err: TextIO) -> Summary:
    """Monitor until stopped, or read the file -r names; the summary of what was seen."""
    if settings.read is not None:
        from netmon.sources.replay import replay

        return replay(settings, out, err)
    return live(settings, out, err)


class _Stop:
    """Set by SIGINT/SIGTERM/SIGHUP; the loop checks it after every poll."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


@contextmanager
def _signals_stop(stop: _Stop):
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, stop) for s in sigs}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def live(settings: Settings, out: TextIO, err: TextIO) -> Summary:
    system.check_kernel()
    libbpf.lib()  # a missing libbpf is reported before anything else is tried
    system.check_privileges()
    if settings.capture and settings.hook is Hook.XDP and not hooks.xdp_can_capture():
        raise UsageError("capturing (-w) through XDP needs Linux 5.18 or later "
                         "(bpf_xdp_load_bytes); leave out --hook xdp to capture with tc")
    kinds = sinks.for_run(settings)
    shows_lines = any(k.shows_events for k in kinds)
    pipeline = Pipeline(settings.count)
    stop = _Stop()
    clock = output.Clock()
    ctx = Context(settings, out, err, clock, Interfaces(), tally=pipeline.tally,
                  libbpf_version=libbpf.version() if settings.metrics else "",
                  drop_names=drops.Names() if settings.drops else None)

    def say(text: str) -> None:
        err.write(f"netmon: {text}\n")
        err.flush()

    with ExitStack() as stack:
        stack.enter_context(_signals_stop(stop))
        stack.callback(pipeline.close)
        pipeline.make(kinds, Start.FIRST, ctx)
        source = LiveSource(stack, settings, delivery(kinds), pipeline, ctx.interfaces, say,
                            shows_lines or settings.count is not None, clock.offset_ns,
                            ctx.drop_names)
        pipeline.make(kinds, Start.ATTACHING, ctx)
        notes = source.start(shows_lines)
        err.write(banner(settings, list(source.watch.attached.values()), notes))
        err.flush()
        ctx.counters, ctx.watched, ctx.book = source.prog.counters, source.watch.counters, \
            source.book
        pipeline.make(kinds, Start.RUNNING, ctx)
        source.wake_on([fd for sink in pipeline.sinks for fd in sink.watch_fds()])
        # Everything made so far lives until exit; keep the collector from walking it
        # again and again while the loop allocates rows by the thousand.
        gc.freeze()
        try:
            while not (stop.requested or pipeline.stopped or pipeline.summary.gone):
                source.poll()
                pipeline.tick()
                source.link_changes()
            source.finish()
            pipeline.close()
        except BrokenPipeError:
            pass  # the reader of our output went away: stop quietly
        pipeline.tally()
    return pipeline.summary
