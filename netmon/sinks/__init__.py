"""Where batches end up. Each sink is a room of its own: a file here and a row below.

A sink says when a run has it (``wanted(settings)``), what it needs the kernel
to send (``wants``), and when it is made (``start``); pipeline.Sink has the rest.
The order below is the order each batch reaches them: the file is written before
a line is printed, a record is sent to the collector before it is shown.
"""

from netmon.sinks.drops import DropLinesSink
from netmon.sinks.flowrecords import FlowRecordsSink
from netmon.sinks.ipfix import IpfixSink
from netmon.sinks.lines import LinesSink
from netmon.sinks.metrics import MetricsSink
from netmon.sinks.pcapng import PcapngSink
from netmon.sinks.rtt import RttLinesSink
from netmon.sinks.stats import StatsSink
from netmon.sinks.top import TopSink
from netmon.sinks.totals import TotalsSink

SINKS = (MetricsSink, TotalsSink, PcapngSink, LinesSink, DropLinesSink, RttLinesSink, IpfixSink,
         FlowRecordsSink, TopSink, StatsSink)


def for_run(settings) -> list[type]:
    """The sinks a run with these settings has, in delivery order."""
    return [sink for sink in SINKS if sink.wanted(settings)]
