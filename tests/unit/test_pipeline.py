"""The pipeline: fan-out in order, --count, the delivery the sinks agree on, the sinks' choice."""

import io

import pytest

from netmon import sinks
from netmon.events import make_event
from netmon.pipeline import Delivery, Pipeline, Sink, delivery
from netmon.settings import Capture, FlowSettings, Settings
from netmon.host.interfaces import Selection
from netmon.sources.records import Run


class Recorder(Sink):
    def __init__(self, name, log, shown=0):
        self.name, self.log, self.shown = name, log, shown
        self.closed = 0

    def rows(self, rows, blocks=None, frames=None):
        self.log.append((self.name, "rows", list(rows), blocks, frames))

    def runs(self, runs):
        self.log.append((self.name, "runs", len(runs)))

    def flows(self, records, final=False):
        self.log.append((self.name, "flows", len(records), final))
        return self.shown

    def close(self):
        self.closed += 1

    def report(self, summary):
        summary.written = (self.name, 0, "")


def rows(n):
    return [tuple(make_event(i, 1, 60, 4, 6, "10.0.0.1", "10.0.0.2", 1, 2)) for i in range(n)]


def test_every_sink_gets_every_batch_in_order():
    log = []
    p = Pipeline()
    p.add(Recorder("a", log))
    p.add(Recorder("b", log))
    p.rows(rows(3), [b"x"] * 3, [1, 2, 3])
    assert [(e[0], e[1], len(e[2])) for e in log] == [("a", "rows", 3), ("b", "rows", 3)]
    assert log[0][3] == [b"x"] * 3 and log[0][4] == [1, 2, 3]
    assert p.summary.shown == 3


def test_count_cuts_the_batch_and_stops():
    log = []
    p = Pipeline(count=4)
    p.add(Recorder("a", log))
    p.rows(rows(3), [b"1", b"2", b"3"])
    p.rows(rows(3), [b"4", b"5", b"6"])
    assert len(log[1][2]) == 1 and log[1][3] == [b"4"]
    assert p.summary.shown == 4 and p.count_reached and p.stopped
    p.rows(rows(2))
    assert len(log) == 2  # nothing past the count


def test_runs_count_their_packets():
    p = Pipeline()
    p.add(Recorder("a", []))
    p.runs([Run(1, [b""], 5), Run(2, [b""], 2)])
    assert p.summary.shown == 7


def test_flow_records_shown_once_whoever_shows_them():
    log = []
    p = Pipeline()
    p.add(Recorder("collector", log, shown=0))
    p.add(Recorder("printer", log, shown=2))
    p.flows(["r1", "r2"])
    p.flows(["r3"], final=True)
    assert p.summary.shown == 4
    assert log[-1] == ("printer", "flows", 1, True)


def test_close_once_and_the_sinks_report():
    p = Pipeline()
    a = p.add(Recorder("a", []))
    filled = []
    p.reports(lambda summary: filled.append(summary))
    p.close()
    p.close()
    assert a.closed == 1
    assert p.tally().written == ("a", 0, "") and filled == [p.summary]


def test_a_sink_can_stop_the_run():
    class Quit(Sink):
        stop = True

    p = Pipeline()
    assert not p.stopped
    p.add(Quit())
    assert p.stopped


def kind(wants):
    return type("K", (Sink,), {"wants": wants})


def test_delivery_is_the_one_the_sinks_want():
    assert delivery([]) is Delivery.COUNTS
    assert delivery([kind(None), kind(Delivery.EVENTS)]) is Delivery.EVENTS
    # Capture records carry events for the lines beside them.
    assert delivery([kind(Delivery.CAPTURE), kind(Delivery.EVENTS)]) is Delivery.CAPTURE
    with pytest.raises(ValueError):
        delivery([kind(Delivery.FLOWS), kind(Delivery.EVENTS)])


ONE = Selection(("eth0",))


@pytest.mark.parametrize("settings,names,want", [
    (Settings(ONE), ["LinesSink"], Delivery.EVENTS),
    (Settings(ONE, quiet=True, metrics=("127.0.0.1", 9)), ["MetricsSink"], Delivery.COUNTS),
    (Settings(ONE, capture=Capture("x")), ["PcapngSink"], Delivery.CAPTURE),
    (Settings(ONE, capture=Capture("x", print_lines=True)), ["PcapngSink", "LinesSink"],
     Delivery.CAPTURE),
    (Settings(ONE, flows=FlowSettings(top=True), stats_every=1.0), ["TopSink", "StatsSink"],
     Delivery.FLOWS),
    (Settings(ONE, flows=FlowSettings(), ipfix=("127.0.0.1", 4739, 1)),
     ["IpfixSink", "FlowRecordsSink"], Delivery.FLOWS),
    (Settings(ONE, flows=FlowSettings(print_records=False), ipfix=("127.0.0.1", 4739, 1)),
     ["IpfixSink"], Delivery.FLOWS),
])
def test_the_sinks_a_run_has(settings, names, want):
    kinds = sinks.for_run(settings)
    assert [k.__name__ for k in kinds] == names
    assert delivery(kinds) is want


def test_lines_sink_writes_one_line_per_row():
    from netmon.sinks import formats
    from netmon.pipeline import Context
    from netmon.sinks.lines import LinesSink
    from netmon.host.interfaces import Interfaces

    out = io.StringIO()
    sink = LinesSink(Context(Settings(ONE), out, io.StringIO(), formats.Clock(0), Interfaces()))
    p = Pipeline()
    p.add(sink)
    p.rows(rows(2))
    assert out.getvalue() == "TCP 10.0.0.1:1 -> 10.0.0.2:2 (60b)\n" * 2


def test_the_plain_rooms_load_no_kernel_binding():
    """Sinks, settings, the pipeline, flows and formats stay plain Python (DESIGN's wall)."""
    import subprocess
    import sys

    code = ("import sys, netmon.sinks, netmon.settings, netmon.options, netmon.pipeline, netmon.report, "
            "netmon.flows, netmon.sinks.formats, netmon.filters, netmon.events; "
            "print(sorted(m for m in sys.modules if m == 'cffi' or m.startswith('_cffi') "
            "or m.endswith('libbpf') or m.endswith('_libbpf_ffi')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_parsing_the_command_line_loads_no_validation_framework():
    """typer 0.29 checks every option through pydantic as the command starts: 0.17 s of
    each start-up (issue 17, item 12). Parsing a command line must not load it."""
    import subprocess
    import sys

    code = ("import sys; from netmon import cli; "
            "cli.main(['-i', 'nmt-none0', '--protocol', 'tcp', '--dst-port', '443']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "[]", res.stderr
