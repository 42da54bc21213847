"""top on a terminal: rich redraws the view in place; keys are read one at a time."""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
import termios
import time
import tty
from typing import TextIO

from netmon.flows import WINDOWS
from netmon.sinks.top.view import DROP_ROWS, DropRates, TopView, human

def _in_foreground(fd: int) -> bool:
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


def _retry(call, *args):
    """A terminal call, again when a signal (SIGCONT, SIGWINCH) interrupted it."""
    while True:
        try:
            return call(*args)
        except termios.error as exc:
            if exc.args[0] != errno.EINTR:
                raise


WHERE_MAX = 16  # the WHERE column's width at most: a guest's name and NIC, a direction
# The width a key may claim from the other columns: a whole IPv4 flow with its ports
# ("255.255.255.255:65535 -> 255.255.255.255:65535"). Longer ones (IPv6, ICMP's types) get
# what is left and are cut at the end where that is not enough.
KEY_CLAIM = 45
# What gives way when a row does not fit, first to last: the flow's addresses and ports are
# what a row is, so they are cut only when nothing else is left to give.
GIVES_WAY = ("RETR%", "RTT", "10", "PKT/S", "40")


def _fitting(width: int, rows, flows: bool, where: str | None, view: TopView) -> set:
    """The optional columns that fit beside the rows' keys (PKT/S and the windows'
    seconds), the others given up in GIVES_WAY's order."""
    def need(title: str, cells) -> int:
        return max([len(title), *map(len, cells)]) + 1  # one space between columns

    fixed = min(need("", [r.endpoints for r in rows]), KEY_CLAIM + 1)
    fixed += need("PROTO", [r.proto for r in rows]) if flows else 0
    fixed += min(need(where, [r.where for r in rows]), WHERE_MAX + 1) if where else 0
    for i, title in enumerate(view.total_titles):
        fixed += need(title, [view.total_cells(r)[i] for r in rows])
    optional = {"PKT/S": need("PKT/S", [f"{r.pps:.0f}" for r in rows])}
    for i, w in enumerate(WINDOWS):
        optional[str(w)] = need(f"{w}s", [human(r.bps[i], "b") for r in rows])
    if view.tcp_shown(rows):  # RTT and RETR%: what the view's TCP columns need
        for name, title, i in (("RTT", view.tcp_titles[0], 0), ("RETR%", "RETR%", 1)):
            optional[name] = need(title, [view.tcp_cells(r)[i] for r in rows])
    chosen = dict(optional)
    for name in GIVES_WAY:
        if fixed + sum(chosen.values()) <= width:
            break
        chosen.pop(name, None)  # TCP health's, where they are not shown
    return {int(k) if k.isdigit() else k for k in chosen}


class Screen:
    """The view on a terminal: rich redraws it in place; keys are read unbuffered."""

    def __init__(self, view: TopView, out: TextIO):
        from rich.console import Console
        from rich.live import Live

        # What draw() needs, imported now: after -Z the interpreter's own files may be
        # out of the user's reach (a Python under /root).
        for module in ("rich.table", "rich.text"):
            importlib.import_module(module)

        self._view = view
        self._console = Console(file=out)
        self._live = Live(console=self._console, auto_refresh=False, screen=True,
                          transient=True)
        self._stdin = sys.stdin.fileno() if sys.stdin.isatty() else None
        self._saved = None
        self._continued = False  # SIGCONT came: after Ctrl-Z and fg, the keys need re-arming
        self._previous_cont = None

    def _arm(self) -> None:
        """Keys one at a time, unechoed, if the terminal is ours (the foreground's): a
        background process that touched its modes would be stopped (SIGTTOU)."""
        if self._stdin is None or not _in_foreground(self._stdin):
            return
        if self._saved is None:
            self._saved = _retry(termios.tcgetattr, self._stdin)
        _retry(tty.setcbreak, self._stdin)

    def _on_cont(self, signum, frame) -> None:
        self._continued = True

    def __enter__(self) -> "Screen":
        self._arm()
        self._previous_cont = signal.signal(signal.SIGCONT, self._on_cont)
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)
        signal.signal(signal.SIGCONT, self._previous_cont or signal.SIG_DFL)
        if self._saved is not None and _in_foreground(self._stdin):
            _retry(termios.tcsetattr, self._stdin, termios.TCSADRAIN, self._saved)

    def resumed(self) -> bool:
        """Back from a stop (Ctrl-Z, then fg): keys re-armed; True once, to redraw."""
        if not self._continued:
            return False
        self._continued = False
        self._arm()
        return True

    @property
    def keys_fd(self) -> int | None:
        return self._stdin

    def key(self) -> str:
        """The key pressed (stdin was readable)."""
        try:
            return os.read(self._stdin, 16).decode(errors="replace")[-1:]
        except OSError:
            return ""

    def draw(self, title: str, lost: int, overflow: int, drops: DropRates | None = None) -> None:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        width = self._console.width
        rows = self._view.top()
        flows = self._view.by == "flow"
        where = self._view.where_title if width >= 60 else None
        optional = _fitting(width, rows, flows, where, self._view)
        table = Table(box=None, pad_edge=False, expand=True, header_style="bold",
                      padding=(0, 1, 0, 0))
        if flows:
            table.add_column("PROTO", no_wrap=True)
        table.add_column(self._view.key_title, no_wrap=True, overflow="ellipsis", ratio=1)
        if where:
            table.add_column(where, no_wrap=True, overflow="ellipsis", max_width=WHERE_MAX)
        if "PKT/S" in optional:
            table.add_column("PKT/S", justify="right", no_wrap=True)
        shown = [i for i, w in enumerate(WINDOWS) if w in optional]
        for i in shown:
            table.add_column(f"{WINDOWS[i]}s", justify="right", no_wrap=True)
        tcp = [i for i, name in enumerate(("RTT", "RETR%")) if name in optional]
        for i in tcp:
            table.add_column(self._view.tcp_titles[i], justify="right", no_wrap=True)
        for column in self._view.total_titles:
            table.add_column(column, justify="right", no_wrap=True)
        for r in rows:
            cells = ([r.proto] if flows else []) + [r.endpoints] + ([r.where] if where else [])
            cells += [f"{r.pps:.0f}"] if "PKT/S" in optional else []
            cells += [human(r.bps[i], "b") for i in shown]
            cells += [self._view.tcp_cells(r)[i] for i in tcp]
            # Text, not str: rich reads "[...]" in a str as markup, and an IPv6 address in
            # brackets ([fd00::1]:443) or a guest named "[blink]x" is not.
            table.add_row(*map(Text, cells + self._view.total_cells(r)))
        head = self._view.header(title, lost, overflow)
        # Which bytes, in which units: totals and metrics count the wire's, in KiB.
        hint = Text("s: sort  b: by  q: quit  (IP bytes, k = 1000)"
                    + time.strftime("  %H:%M:%S"), style="dim")
        lines = [Text(head[0], style="bold"), Text(head[1]), hint]
        for line in lines:  # one row each, whatever the width
            line.no_wrap, line.overflow = True, "ellipsis"
        parts = [*lines, table]
        if drops is not None:
            panel = Table(box=None, pad_edge=False, expand=True, header_style="bold",
                          padding=(0, 1, 0, 0))
            panel.add_column("DROPS", no_wrap=True, overflow="ellipsis", max_width=16)
            panel.add_column("WHY", no_wrap=True, overflow="ellipsis", ratio=1)
            for i in shown:
                panel.add_column(f"{WINDOWS[i]}s/s", justify="right", no_wrap=True)
            panel.add_column("TOTAL", justify="right", no_wrap=True)
            for where_, why, rates, total in drops.top(DROP_ROWS):
                panel.add_row(*map(Text, [where_, why, *(f"{rates[i]:.0f}" for i in shown),
                                          str(total)]))
            parts += [Text(""), panel if panel.row_count else Text("no drops", style="dim")]
        self._live.update(Group(*parts), refresh=True)
