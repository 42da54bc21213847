"""The run, live or replay: pick the source, build the sinks the settings ask for, loop,
summarise.

Wiring only, and the one wiring of every run. The sinks say what they need from the
kernel (pipeline.delivery); the source loads and attaches accordingly (the live one:
sources/policy.py chooses the hooks; -r's: the XDP program, run by BPF_PROG_TEST_RUN);
the loop below moves batches from the source to the pipeline until a signal, --count,
a sink (a view's q), a named interface that went away, or the file's end stops it.
Both sources have one face: start() attaches (or loads) and says what to note,
poll() hands a batch on, finish() hands on what is left, link_changes() follows
interfaces.
"""

from __future__ import annotations

import gc
import signal
from contextlib import ExitStack, contextmanager
from typing import TextIO

from netmon import sinks
from netmon.errors import UsageError
from netmon.escape import visible
from netmon.host import privileges, system
from netmon.host.interfaces import Interfaces
from netmon.kernel import drops, facts, libbpf
from netmon.kernel.choices import Hook, Method
from netmon.pipeline import Context, Pipeline, Start, delivery
from netmon.report import Summary, banner
from netmon.settings import Settings
from netmon.sinks import formats
from netmon.sources import policy
from netmon.sources.live import LiveSource


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


def _check(settings: Settings) -> None:
    """What the run needs of the host, each said in one line before anything is touched."""
    if settings.read is None:
        facts.check_kernel()
    libbpf.lib()  # a missing libbpf is reported before anything else is tried
    system.check_privileges()
    if settings.read is None and settings.capture and settings.hook is Hook.XDP \
            and not policy.xdp_can_capture():
        raise UsageError("capturing (-w) through XDP needs Linux 5.18 or later "
                         "(bpf_xdp_load_bytes); leave out --hook xdp to capture with tc")


def _relinquish(settings: Settings, account, attached: list) -> privileges.Kept | None:
    """Everything is open, loaded and attached: become ``account`` (privileges.account():
    the -Z user, by default the package's user, else nobody; None, -Z root, stays root),
    keeping only what the run still needs: the bpf() calls of test runs and map reads
    (nothing from Linux 6.5); CAP_NET_ADMIN with CAP_BPF where interfaces are attached
    later (--follow, globs, guests, any); CAP_NET_ADMIN alone where a hook goes through
    netlink, to detach it. A fixed set of interfaces whose links close with their fds
    keeps nothing more."""
    if account is None:
        return privileges.Kept("root") if settings.user else None
    release = facts.kernel_version()
    keep = privileges.kept_for_bpf(release)
    if settings.read is None:
        if settings.follow or settings.selection.dynamic:
            keep |= {system.CAP_NET_ADMIN,
                     system.CAP_BPF if release >= (5, 8) else system.CAP_SYS_ADMIN}
        elif any(getattr(hook, "method", Method.LINK) is not Method.LINK  # drops': a link
                 for _, hooks in attached for hook in hooks):
            keep.add(system.CAP_NET_ADMIN)
    return privileges.drop(account, keep)


def run(settings: Settings, out: TextIO, err: TextIO) -> Summary:
    """Monitor until stopped, or read the file -r names; the summary of what was seen."""
    _check(settings)
    account = privileges.account(settings.user)  # an unknown -Z user before anything opens
    live = settings.read is None
    kinds = sinks.for_run(settings)
    shows_lines = any(k.shows_events for k in kinds)
    pipeline = Pipeline(settings.count)
    pipeline.summary.shows_lines = shows_lines
    stop = _Stop()
    # -r: the events' times are the file's, not the kernel's clock.
    clock = formats.Clock() if live else formats.Clock(0)
    ctx = Context(settings, out, err, clock, Interfaces(), tally=pipeline.tally,
                  libbpf_version=libbpf.version() if settings.metrics else "",
                  drop_names=drops.Names() if settings.drops else None,
                  owner=(account.pw_uid, account.pw_gid) if account else None)

    def say(text: str) -> None:
        err.write(f"netmon: {visible(text)}\n")
        err.flush()

    with ExitStack() as stack:
        if live:  # -r stops at Ctrl-C at once, without a summary, as tcpdump -r does
            stack.enter_context(_signals_stop(stop))
        stack.callback(pipeline.close)
        pipeline.make(kinds, Start.FIRST, ctx)
        if live:
            source = LiveSource(stack, settings, delivery(kinds), pipeline, ctx.interfaces,
                                say, shows_lines, clock.offset_ns, ctx.drop_names)
        else:
            # Imported here: a live run's start-up does not pay for the capture reader.
            from netmon.sources.replay import ReplaySource

            source = ReplaySource(stack, settings, pipeline, ctx.interfaces)
        pipeline.make(kinds, Start.ATTACHING, ctx)
        notes = source.start()
        if live:  # -r's output is the events alone, and the summary after them
            screen = any(k.takes_terminal(settings, out) for k in kinds)
            err.write(visible(banner(settings, source.attached(), notes,
                                      how_to_stop=not screen)))
            err.flush()
        ctx.counters, ctx.watched, ctx.book = source.counters, source.watched, source.book
        pipeline.make(kinds, Start.RUNNING, ctx)
        source.wake_on([fd for sink in pipeline.sinks for fd in sink.watch_fds()])
        # Everything is open now (a view's terminal too): root is given up.
        kept = _relinquish(settings, account, source.attached())
        if kept is not None:
            pipeline.summary.kept = kept.describe()
        # Everything made so far lives until exit; keep the collector from walking it
        # again and again while the loop allocates rows by the thousand.
        gc.freeze()
        try:
            while not (stop.requested or pipeline.stopped or pipeline.summary.gone
                       or source.done):
                source.poll()
                pipeline.tick()
                source.link_changes()
            source.finish()
            pipeline.close()
        except BrokenPipeError:
            # The reader of a live run's output went away: stop quietly. -r's (-r | head)
            # ends in the error's one line, as it always has.
            if not live:
                raise
        return pipeline.tally()
