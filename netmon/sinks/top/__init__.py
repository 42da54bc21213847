"""netmon top: the flows with the highest rates, redrawn every second; with --drops, the
kernel's drops per second by interface and reason below them.

    view.py    the rows, their order, the header, the drops panel; the plain text
    screen.py  the view on a terminal (rich), and the keys
    sink.py    TopSink: the pipeline's end that feeds and redraws them

On a terminal the view is drawn with rich: a header with the totals per
direction and protocol and what was lost, then one row per flow, or per guest,
interface, host or port (--by: the flows' rates and totals summed). Keys: ``s``
changes the sort (rate, bytes, packets), ``b`` what a row is, ``q`` quits. The table fits 80
columns (addresses are cut with an ellipsis) and drops the slower rate
windows, then the interface, in narrower terminals. When stdout is not a
terminal, a plain table is printed per interval instead.
"""

from netmon.sinks.top.sink import TopSink

__all__ = ["TopSink"]
