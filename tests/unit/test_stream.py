"""Lines to a pipe: all of them through a signal, a count of those a departed reader missed."""

import io
import os
import signal
import subprocess
import sys
import threading
import time

from netmon.report import Summary
from netmon.sinks.stream import LineStream, LinesOut
from tests.support.netns import ROOT

LINE = "y" * 99 + "\n"
LINES = 3000  # 300 kB: several times what a pipe holds


# A child whose stdout is a pipe no one reads yet: SIGINT comes while its write blocks.
# (sys.stdout's own write() drops what a signal cut short: 272 of 600 lines arrived.)
CHILD = """
import signal, sys
from netmon.sinks.stream import LineStream
fired = []
signal.signal(signal.SIGINT, lambda signum, frame: fired.append(signum))
stream = LineStream(sys.stdout, "standard output")
sys.stderr.write("writing\\n"); sys.stderr.flush()
stream.write(%r * %d)
sys.stderr.write(f"fired {fired} unread {stream.unread}\\n")
"""


def test_a_signal_during_a_write_to_a_full_pipe_loses_nothing():
    child = subprocess.Popen([sys.executable, "-c", CHILD % (LINE, LINES)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stderr.readline() == b"writing\n"
        time.sleep(0.5)  # not a measurement: time for the write to fill the pipe and block
        child.send_signal(signal.SIGINT)
        time.sleep(0.5)  # and for the signal to land before anyone reads
        out = child.stdout.read()
        err = child.stderr.read().decode()
    finally:
        child.kill()
        child.wait()
    assert err == "fired [2] unread 0\n"
    assert out == (LINE * LINES).encode()


def test_a_reader_gone_before_the_write_misses_every_line():
    r, w = os.pipe()
    os.close(r)
    with open(w, "w", closefd=False) as out:
        sink = LinesOut(out, "standard output", escape=False)
        sink._out.write("one\ntwo\n")
        assert sink.stop  # the run ends: no one reads
        sink._out.write("three\n")  # a batch already on its way: counted, not written
    os.close(w)
    summary = Summary(shown=3)
    sink.report(summary)
    assert summary.unread == {"standard output": 3}
    assert summary.lines()[0] == "3 lines did not reach standard output: its reader went away"
    assert ", 0 shown," in summary.line()


def test_a_reader_gone_midway_misses_the_lines_it_did_not_get_whole():
    r, w = os.pipe()
    got = []

    def read_some_then_go():
        while sum(map(len, got)) < 10_050:  # 100 whole lines and part of the 101st
            got.append(os.read(r, 10_050 - sum(map(len, got))))
        os.close(r)

    reader = threading.Thread(target=read_some_then_go)
    reader.start()
    with open(w, "w", closefd=False) as out:
        stream = LineStream(out, "standard output")
        stream.write(LINE * LINES)
    reader.join()
    os.close(w)
    assert stream.gone
    # What the pipe held when its reader closed it counts as reached: it left netmon whole.
    assert 1 <= stream.unread <= LINES - 100


def test_without_a_descriptor_the_stream_is_written_as_is():
    out = io.StringIO()
    stream = LineStream(out, "standard output")
    stream.write("a\nb\n")
    assert out.getvalue() == "a\nb\n" and stream.unread == 0
