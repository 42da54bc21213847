"""Lines to a reader: every byte of what is counted as shown, or a count of what was not.

Why not ``stream.write()``: Python's buffered writer returns a short count when a
signal interrupts a write to a full pipe, and the text layer above it drops the
rest without a word (SIGINT while the reader of ``netmon --json | slow`` lagged
lost 328 of 600 lines, all counted as shown). tcpdump writes out what it formatted
before it exits; so does this, with os.write() in a loop until the last byte is
taken. Where the reader has gone (EPIPE), the lines that did not reach it whole are
counted, the sink asks the run to stop, and the summary says how many.
"""

from __future__ import annotations

import os
from typing import TextIO

from netmon.escape import visible
from netmon.pipeline import Sink


class LineStream:
    """Whole lines to ``out``; ``unread``: lines its reader never got (it went away).
    ``escape``: lines for a person (text, not JSON), made visible (netmon/escape.py)."""

    def __init__(self, out: TextIO, name: str, escape: bool = False):
        self.name = name  # "standard output": what the summary calls it
        self.unread = 0
        self.gone = False
        self._escape = escape
        self._out = out
        try:
            self._fd = out.fileno()
        except (AttributeError, OSError, ValueError):  # a StringIO: no descriptor
            self._fd = None
        self._encoding = getattr(out, "encoding", None) or "utf-8"
        self._errors = getattr(out, "errors", None) or "strict"

    def write(self, text: str) -> None:
        if not text:
            return
        if self._escape:
            text = visible(text)
        if self.gone:
            self.unread += text.count("\n")
            return
        if self._fd is None:
            self._out.write(text)
            self._out.flush()
            return
        data = text.encode(self._encoding, self._errors)
        done = 0
        try:
            self._out.flush()  # anything another writer left in the text layer goes first
            view = memoryview(data)
            while done < len(data):
                # os.write() is retried on EINTR (PEP 475) and its short counts are ours
                # to follow: the signal's handler only asks the loop to stop.
                done += os.write(self._fd, view[done:])
        except BrokenPipeError:
            self.gone = True
            self.unread += text.count("\n") - data.count(b"\n", 0, done)


class LinesOut(Sink):
    """A sink whose lines go to a LineStream: it stops the run when the reader has gone,
    and the summary counts what did not reach the reader."""

    def __init__(self, out: TextIO, name: str, escape: bool):
        self._out = LineStream(out, name, escape)

    @property
    def stop(self) -> bool:
        return self._out.gone

    def report(self, summary) -> None:
        if self._out.unread:
            summary.unread[self._out.name] = self._out.unread
