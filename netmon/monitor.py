"""The loop that ties netmon together: load, attach, poll, show, stop, summarise."""

from __future__ import annotations

import gc
import signal
import socket
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, TextIO

from netmon import events, libbpf, output, system
from netmon.filters import FilterSpec
from netmon.program import MonitorProgram, Method, Mode
from netmon.reader import DEFAULT_PAGES, SAMPLE_HEAD, SAMPLE_TAIL, PerfReader

RULE = "═" * 39


@dataclass(frozen=True)
class Settings:
    interface: str
    mode: Mode = Mode.AUTO
    method: Method = Method.AUTO
    json: bool = False
    count: int | None = None  # stop after this many shown events
    pages: int = DEFAULT_PAGES
    poll_ms: int = 100  # also the longest an event waits before it is shown
    stats_every: float | None = None  # seconds between --stats lines


@dataclass
class Summary:
    """Where every packet went: the kernel's counters and user space's."""

    shown: int = 0
    perf_lost: int = 0  # records the perf buffer reported lost (ring full)
    undecodable: int = 0  # records that were not events of a known family
    counters: dict[str, int] = field(default_factory=dict)
    mode: str = ""
    method: str = ""

    @property
    def lost(self) -> int:
        # A full ring fails the kernel's send and is reported in the ring once there
        # is room: the same loss seen twice, the first count being the sooner.
        return max(self.perf_lost, self.counters.get("send_failed", 0)) + self.undecodable

    def line(self) -> str:
        c = self.counters
        return (f"{c.get('seen', 0)} packets seen ({c.get('non_ip', 0)} not IP, "
                f"{c.get('malformed', 0)} malformed), {c.get('matched', 0)} matched, "
                f"{c.get('sent', 0)} sent, {self.shown} shown, {self.lost} lost "
                f"({c.get('send_failed', 0)} send failures, {self.perf_lost} reported "
                f"by the perf buffer)")


class _Stop:
    """Set by SIGINT/SIGTERM; the loop checks it after every poll."""

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


def _ifname_lookup() -> Callable[[int], str]:
    cache: dict[int, str] = {}

    def lookup(ifindex: int) -> str:
        name = cache.get(ifindex)
        if name is None:
            try:
                name = socket.if_indextoname(ifindex)
            except OSError:
                name = str(ifindex)
            cache[ifindex] = name
        return name

    return lookup


def banner(settings: Settings, spec: FilterSpec, mode: str, method: str) -> str:
    lines = [
        RULE,
        "     netmon: eBPF/XDP network traffic monitor",
        RULE,
        f"Interface: {settings.interface}",
        f"Attach mode: {mode} ({'bpf_link' if method == 'link' else 'netlink'})",
        "Architecture: eBPF/XDP (kernel, filters applied there) → perf buffer → Python",
        "",
    ]
    rows = spec.describe()
    if rows:
        lines.append("Filters:")
        lines += [f"  {label}: {value}" for label, value in rows]
    else:
        lines.append("Filters: none (all IP traffic)")
    lines += [RULE, "", "Monitoring...", "Press Ctrl-C to stop", ""]
    return "\n".join(lines)


def run(settings: Settings, spec: FilterSpec, out: TextIO, err: TextIO) -> Summary:
    """Monitor until stopped (signal, --count reached, or a closed stdout)."""
    system.check_kernel()
    libbpf.lib()  # a missing libbpf is reported before anything else is tried
    system.check_privileges()
    ifindex = system.ifindex(settings.interface)

    fmt = output.JsonFormat(_ifname_lookup()) if settings.json else output.TextFormat()
    decoder = events.Decoder()
    summary = Summary()
    stop = _Stop()
    with ExitStack() as stack:
        stack.enter_context(_signals_stop(stop))
        prog = stack.enter_context(MonitorProgram(spec.kernel_config()))
        reader = stack.enter_context(PerfReader(prog.events_fd, settings.pages))
        attachment = stack.enter_context(
            prog.attach(ifindex, settings.interface, settings.mode, settings.method))
        summary.mode, summary.method = attachment.mode, attachment.method.value
        err.write(banner(settings, spec, summary.mode, summary.method))
        err.flush()

        def show(chunks: list[bytes]) -> None:
            for chunk in chunks:
                evs = decoder.rows(chunk, SAMPLE_HEAD, SAMPLE_TAIL)
                if settings.count is not None:
                    evs = evs[: settings.count - summary.shown]
                if evs:
                    out.write(fmt.render(evs))
                    summary.shown += len(evs)
            out.flush()

        def count_reached() -> bool:
            return settings.count is not None and summary.shown >= settings.count

        def tally() -> Summary:
            summary.counters = prog.counters()
            summary.perf_lost = reader.lost
            summary.undecodable = decoder.undecodable + reader.foreign
            return summary

        # Everything made so far lives until exit; keep the collector from walking it
        # again and again while the loop allocates rows by the thousand.
        gc.freeze()
        next_stats = time.monotonic() + (settings.stats_every or 0)
        try:
            while not (stop.requested or count_reached()):
                show(reader.poll(settings.poll_ms))
                if settings.stats_every and time.monotonic() >= next_stats:
                    next_stats += settings.stats_every
                    err.write(f"netmon: stats: {tally().line()}\n")
                    err.flush()
            # Unhook first, so what is left in the buffer is all there will be.
            attachment.close()
            if not count_reached():
                show(reader.drain())
        except BrokenPipeError:
            pass  # the reader of our output went away: stop quietly
        tally()
    return summary
