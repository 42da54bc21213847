"""Flows: the book keeping in user space, the records' formats, and the view's text.

No kernel here; tests/test_flow_table.py holds the kernel's tables and the
whole tool to what was sent.
"""

from __future__ import annotations

import json

import pytest

from netmon import cli, protocols
from netmon.sinks import formats
from netmon.cli import ExitStatus
from netmon.flows import (END_ACTIVE, END_FORCED, END_IDLE, FLOW_KEY, FlowBook, FlowKey,
                          FlowRecord)
from netmon.sinks.top.view import BYS, Groups, TopView, human

S = 1_000_000_000  # ns


def key(sport: int = 5000, dport: int = 80, proto: int = 6, dir: int = 0, family: int = 4,
        ifindex: int = 7) -> bytes:
    src, dst = (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) if family == 4 else \
        (bytes.fromhex("20010db8" + "0" * 23 + "1"), bytes.fromhex("20010db8" + "0" * 23 + "2"))
    return FLOW_KEY.pack(ifindex, dir, family, proto, 0, sport, dport, src, dst)


def row(raw: bytes, packets: int, nbytes: int, first: int, last: int, flags: int = 0):
    return (raw, flags, packets, nbytes, first, last)


def test_counts_add_up_and_idle_flows_end():
    book = FlowBook(0, idle=3, active=60)
    a, b = key(1), key(2)
    assert book.add([row(a, 2, 200, 1 * S, 1 * S, 0x02), row(b, 1, 60, 1 * S, 1 * S)], 1 * S) == []
    assert book.add([row(a, 3, 300, 2 * S, 2 * S, 0x10)], 2 * S) == []
    assert book.add([row(a, 1, 100, 3 * S, 3 * S, 0x01)], 3 * S) == []
    # b's last packet was at 1 s: idle for 3 s at 4 s.
    (ended,) = book.add([], 4 * S)
    assert ended == FlowRecord(FlowKey.decode(b), 1 * S, 1 * S, 1, 60, 0, END_IDLE)
    assert (book.seen, book.active, book.ended) == (2, 1, 1)
    (last,) = book.flush()
    assert last == FlowRecord(FlowKey.decode(a), 1 * S, 3 * S, 6, 600, 0x13, END_FORCED)
    assert (book.active, book.ended) == (0, 2)


def test_active_timeout_splits_a_long_flow_without_losing_a_packet():
    book = FlowBook(0, idle=15, active=2)
    a = key()
    records = []
    for t in range(1, 9):
        records += book.add([row(a, 10, 1000, t * S, t * S)], t * S)
    records += book.flush()
    assert [r.reason for r in records] == [END_ACTIVE] * 3 + [END_FORCED]
    assert [r.packets for r in records] == [30, 20, 20, 10]
    assert sum(r.bytes for r in records) == 8000
    # Each record starts where the one before it ended.
    assert all(r2.first_ns == r1.last_ns for r1, r2 in zip(records, records[1:]))
    assert book.seen == 1


def test_rates_over_the_windows():
    book = FlowBook(0)
    a = key()
    for t in range(1, 21):
        book.add([row(a, 100, 125_000, t * S, t * S)], t * S)  # 1 Mb/s, 100 packets/s
    flow = book.flows[a]
    assert book.rate(flow, 2) == pytest.approx((1e6, 100))
    assert book.rate(flow, 40) == pytest.approx((1e6, 100))  # the 20 s there are
    book.add([], 21 * S)
    book.add([], 22 * S)
    assert book.rate(flow, 2) == (0.0, 0.0)
    assert book.rate(flow, 10) == pytest.approx((8e5, 80))


def clock() -> formats.Clock:
    return formats.Clock(1_700_000_000 * S)


def test_record_json_uses_ipfix_names():
    info = {7: {"ifname": "tap100i0", "guest": 100, "guest_name": "web"}}.__getitem__
    fmt = formats.FlowRecordJson(info, clock())
    tcp = FlowRecord(FlowKey.decode(key()), 1 * S, 3 * S + 500_000, 6, 600, 0x12, END_IDLE)
    assert json.loads(fmt.render([tcp])) == {
        "flowStartMilliseconds": 1_700_000_001_000, "flowEndMilliseconds": 1_700_000_003_000,
        "packetDeltaCount": 6, "octetDeltaCount": 600, "protocolIdentifier": 6,
        "sourceIPv4Address": "10.0.0.1", "destinationIPv4Address": "10.0.0.2",
        "sourceTransportPort": 5000, "destinationTransportPort": 80, "tcpControlBits": 0x12,
        "ingressInterface": 7, "flowDirection": 0, "flowEndReason": 1,
        "interfaceName": "tap100i0", "guest": 100, "guest_name": "web"}
    icmp6 = FlowRecord(FlowKey.decode(key(128, 0, proto=58, dir=1, family=6)), S, S, 1, 104, 0,
                       END_FORCED)
    got = json.loads(fmt.render([icmp6]))
    assert got["icmpTypeCodeIPv6"] == 128 << 8 and got["egressInterface"] == 7
    assert got["sourceIPv6Address"] == "2001:db8::1" and got["flowDirection"] == 1
    assert "sourceTransportPort" not in got and "tcpControlBits" not in got


def test_record_text():
    fmt = formats.FlowRecordText({7: "veth1"}.__getitem__, clock())
    tcp = FlowRecord(FlowKey.decode(key()), 1 * S, 3 * S + 500_000_000, 6, 600, 0x1B, END_IDLE)
    line = fmt.render([tcp])
    assert line.endswith(" 2.500s veth1 in TCP 10.0.0.1:5000 -> 10.0.0.2:80 6 packets 600 "
                         "bytes ...AP.SF idle\n")
    icmp = FlowRecord(FlowKey.decode(key(8, 0, proto=1, dir=1)), S, S, 1, 98, 0, END_ACTIVE)
    assert fmt.render([icmp]).endswith(
        " 0.000s veth1 out ICMP 10.0.0.1 -> 10.0.0.2 type 8 code 0 1 packets 98 bytes active\n")


def test_plain_top_table_sorts_and_sums():
    book = FlowBook(0)
    big, small = key(1), key(2, proto=17)
    for t in range(1, 4):
        book.add([row(big, 10, 125_000, t * S, t * S), row(small, 1000, 12_500, t * S, t * S)],
                 t * S)
    view = TopView(book, None)
    text = view.plain("netmon top: veth1", lost=0, overflow=5)
    lines = text.splitlines()
    assert lines[0] == "netmon top: veth1  sort: rate  flows: 2  lost: 0  overflow: 5"
    assert lines[1] == "in: TCP 1Mb/s UDP 100kb/s"
    assert lines[2].split() == ["PROTO", "FLOW", "PKT/S", "2s", "10s", "40s", "TOTAL"]
    assert lines[3].split() == ["TCP", "10.0.0.1:1", "->", "10.0.0.2:80", "10", "1Mb", "1Mb",
                                "1Mb", "375kB"]
    assert lines[4].split()[0] == "UDP"
    view.sort = "packets"
    assert view.plain("t", 0, 0).splitlines()[3].split()[0] == "UDP"


def test_top_by_guest_interface_host_and_port_sums_the_flows():
    book = FlowBook(0)
    info = {7: {"ifname": "tap100i0", "guest": 100, "guest_name": "web1"},
            8: {"ifname": "tap100i1", "guest": 100, "guest_name": "web1"},
            9: {"ifname": "tap101i0", "guest": 101, "guest_name": None},
            3: {"ifname": "vmbr0"}}
    flows = [(key(40001, 443, ifindex=7), 10, 125_000), (key(40002, 443, ifindex=8), 10, 250_000),
             (key(53, 40003, proto=17, ifindex=9), 5, 25_000),
             (key(40004, 22, ifindex=3), 1, 12_500)]
    for t in range(1, 3):
        book.add([row(raw, p, b, t * S, t * S) for raw, p, b in flows], t * S)
    view = TopView(book, None, by="guest", groups=Groups(info.__getitem__, both=False))

    def table(by):
        view.by = by
        return [line.split() for line in view.plain("t", 0, 0).splitlines()[2:] if line]

    guests = table("guest")
    assert guests[0] == ["GUEST", "PKT/S", "2s", "10s", "40s", "TOTAL"]
    # web1's two NICs together: 3 Mb/s, 750 kB over two seconds
    assert guests[1:] == [["web1", "(100)", "20", "3Mb", "3Mb", "3Mb", "750kB"],
                          ["vm101", "5", "200kb", "200kb", "200kb", "50kB"],
                          ["vmbr0", "1", "100kb", "100kb", "100kb", "25kB"]]
    assert [r[0] for r in table("interface")[1:]] == ["tap100i1", "tap100i0", "tap101i0",
                                                       "vmbr0"]
    hosts = table("host")  # every flow is 10.0.0.1 <-> 10.0.0.2: both ends have it all
    assert [r[0] for r in hosts[1:]] == ["10.0.0.1", "10.0.0.2"]
    assert hosts[1][-1] == hosts[2][-1] == "825kB"
    ports = table("port")
    assert [r[0] for r in ports[1:]] == ["TCP/443", "UDP/53", "TCP/22"]
    view.sort = "packets"
    assert table("port")[1][0] == "TCP/443"
    assert view.plain("t", 0, 0).splitlines()[0] == \
        "t  sort: packets  by: port  flows: 4  lost: 0  overflow: 0"
    view.by = "flow"
    seen = []
    for _ in BYS:
        view.next_by()
        seen.append(view.by)
    assert seen == ["guest", "interface", "host", "port", "flow"]


def test_top_keeps_a_row_for_the_longest_window_and_the_runs_totals():
    """A flow that ended (idle, 15 s) stays in top while it has packets in the 40 s
    window; a guest keeps its row and the run's TOTAL, also once its flows ended and left
    every window, and the header no longer says "no traffic yet"."""
    book = FlowBook(0, idle=15, active=600)
    info = {7: {"ifname": "tap100i0", "guest": 100, "guest_name": "web1"}}
    view = TopView(book, None, by="guest", groups=Groups(info.__getitem__, both=False))
    assert view.header("t", 0, 0)[1] == "no traffic yet"
    raw = key(40001, 443)
    book.add([row(raw, 10, 100_000, 1 * S, 1 * S)], 1 * S)

    def rows(by):
        view.by = by
        return [(r.endpoints, r.bps[-1] > 0, r.total) for r in view.top()]

    for t in range(2, 21):
        book.add([], t * S)
    assert book.active == 0  # ended at 16 s
    assert rows("flow") == [("10.0.0.1:40001 -> 10.0.0.2:443", True, 100_000)]
    assert rows("guest") == [("web1 (100)", True, 100_000)]
    assert view.header("t", 0, 0)[1] == "no traffic in the last 2 s"
    for t in range(21, 61):
        book.add([], t * S)
    assert rows("flow") == []  # out of the 40 s window
    assert rows("guest") == [("web1 (100)", False, 100_000)]  # the run's total
    book.add([row(raw, 5, 50_000, 61 * S, 61 * S)], 61 * S)  # it comes back
    assert rows("guest") == [("web1 (100)", True, 150_000)]
    assert rows("flow") == [("10.0.0.1:40001 -> 10.0.0.2:443", True, 50_000)]


def test_a_flow_that_comes_back_is_one_row():
    book = FlowBook(0, idle=3, active=600)
    raw = key(40001, 443)
    book.add([row(raw, 1, 1000, 1 * S, 1 * S)], 1 * S)
    for t in range(2, 6):
        book.add([], t * S)
    book.add([row(raw, 1, 500, 6 * S, 6 * S)], 6 * S)  # ended at 4 s, back at 6 s
    view = TopView(book, None)
    assert [r.total for r in view.top()] == [500]


def _drawn(view) -> list[str]:
    """The view as top draws it on a terminal (rich, 80 columns), escapes taken out."""
    import io
    import re

    from netmon.sinks.top.screen import Screen

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    screen = Screen(view, out)
    screen.__enter__()
    try:
        screen.draw("netmon top: t", 0, 0)
        return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue()).splitlines()
    finally:
        screen.__exit__(None, None, None)


def test_top_on_a_terminal_draws_brackets_as_they_are(monkeypatch):
    """rich reads "[...]" in a str as markup: an IPv6 flow's "[fd00::1]:443" vanished
    from the view, and a guest named "[blink]web" would have styled it. Cells are text."""
    from netmon.sinks.top.view import Row

    view = TopView(FlowBook(0), lambda f: "", "WHERE")
    monkeypatch.setattr(view, "top", lambda: [Row(
        "UDP", "[fd00::1]:40003 -> [fd00::2]:443", "[blink]w", 1, (8.0, 8.0, 8.0), 100)])
    row = next(line for line in _drawn(view) if line.startswith("UDP"))
    assert "[fd00::1]:40003 -> [fd00::2]:443" in row and "[blink]w" in row, row


def test_a_guests_row_says_what_it_received_and_sent():
    """Both directions watched: one row per guest (they ranked apart as two), its bytes
    as the guest sees them: on its tap, out is what it received and in what it sent. An
    interface's row says in and out, as the interface sees them."""
    book = FlowBook(0)
    info = {7: {"ifname": "tap100i0", "guest": 100, "guest_name": "web1"},
            3: {"ifname": "vmbr0"}}
    sent_by_guest = key(40001, 443, dir=0, ifindex=7)  # into the host from the guest
    got_by_guest = key(443, 40001, dir=1, ifindex=7)  # out of the host to the guest
    on_bridge = key(40002, 22, dir=0, ifindex=3)
    book.add([row(sent_by_guest, 10, 1_000, S, S), row(got_by_guest, 20, 30_000, S, S),
              row(on_bridge, 1, 50, S, S)], S)
    view = TopView(book, None, by="guest", groups=Groups(info.__getitem__, both=True))
    lines = view.plain("t", 0, 0).splitlines()
    assert lines[2].split() == ["GUEST", "PKT/S", "2s", "10s", "40s", "RECEIVED", "SENT"]
    assert [line.split()[:2] + line.split()[-2:] for line in lines[3:] if line] == [
        ["web1", "(100)", "30kB", "1kB"], ["vmbr0", "1", "50B", "0B"]]  # it received them
    view.by = "interface"
    lines = view.plain("t", 0, 0).splitlines()
    assert lines[2].split()[-2:] == ["IN", "OUT"]
    assert [line.split()[0:1] + line.split()[-2:] for line in lines[3:] if line] == [
        ["tap100i0", "1kB", "30kB"], ["vmbr0", "50B", "0B"]]
    view.by = "host"  # one end each: no split
    assert view.plain("t", 0, 0).splitlines()[2].split()[-1] == "TOTAL"
    view.by = "guest"  # and on a terminal, under its own title
    drawn = [line.rstrip() for line in _drawn(view) if line.strip()]
    assert drawn[0].startswith("netmon top: t  sort: rate  by: guest"), drawn
    assert drawn[3].split()[-2:] == ["RECEIVED", "SENT"], drawn
    assert drawn[4].split()[-2:] == ["30kB", "1kB"], drawn


def test_human_units():
    assert [human(v, "b") for v in (0, 999, 1000, 1234567, 5.5e9)] == \
        ["0b", "999b", "1kb", "1.23Mb", "5.5Gb"]


@pytest.mark.parametrize("argv,fragment", [
    (["--flows", "--top"], "one at a time"),
    (["top", "--flows"], "one at a time"),
    (["--flows", "-w", "x.pcapng"], "without -w or -r"),
    (["top", "--sort", "speed"], "--sort takes rate, bytes or packets"),
    (["top", "--by", "vm"], "--by takes flow, guest, interface, host or port, not 'vm'"),
    (["--by", "guest"], "--by says what a row of top is: it goes with top"),
    (["--flows", "--flow-entries", "0"], "--flow-entries"),
    (["--flows", "--flow-idle", "0"], "--flow-idle"),
])
def test_bad_flow_options(capsys, argv, fragment):
    status = cli.main([*argv, "-i", "nmt-none0"])
    _, err = capsys.readouterr()
    assert status == ExitStatus.USAGE and err.count("\n") == 1 and fragment in err


def test_top_shows_what_sorting_every_flow_would():
    """The view rates only the flows that can make its rows (issue 17: 20,000 flows cost
    28% of a core when every one was rated): held to sorting every flow by its full key,
    and to the header's sums taken over every flow, on random books."""
    import random

    from netmon.events import DIR_NAMES
    from netmon.flows import WINDOWS
    from netmon.sinks.top.view import TopView

    def reference(book, sort, n):
        def full(f):
            rates = [book.rate(f, w)[0] for w in WINDOWS]
            return {"rate": (*rates, f.total_bytes), "bytes": f.total_bytes,
                    "packets": f.total_packets}[sort]
        # Ties to the older flow (the lower serial): the book's order, ended flows too.
        return sorted(sorted(book.recent(), key=lambda f: f.serial), key=full,
                      reverse=True)[:n]

    for seed in range(6):
        rnd = random.Random(seed)
        keys = [key(sport=i, proto=rnd.choice([6, 17, 1]), dir=rnd.randint(0, 1))
                for i in range(1, 200)]
        book = FlowBook(0, idle=rnd.choice([3, 15]), active=rnd.choice([5, 60]))
        now = 0
        for _ in range(50):
            now += rnd.choice([S, S + S // 10, S - S // 10])
            picked = rnd.sample(keys, rnd.randint(0, 30))
            book.add([row(k, p := rnd.choice([1, 2]), p * rnd.choice([100, 1500]), now, now)
                      for k in picked], now)
            for sort in ("rate", "bytes", "packets"):
                view = TopView(book, None, sort=sort, rows=rnd.choice([3, 20]))
                assert view._chosen() == reference(book, sort, view.rows)
            totals = {}
            for f in sorted(book.recent(distinct=False), key=lambda f: f.serial):
                if f.ended and f not in book.window[0]:
                    continue  # its kind is shown while a flow of it is in the book
                k = (DIR_NAMES[f.key.dir], protocols.name(f.key.ipproto))
                totals[k] = totals.get(k, 0.0) + book.rate(f, WINDOWS[0])[0]
            assert view.totals() == totals
