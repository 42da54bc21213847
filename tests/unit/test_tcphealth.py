"""TCP health in user space: buckets, percentiles, components, lines, options. No kernel."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmon import tcphealth
from netmon.errors import UsageError
from netmon.events import DIR_IN, DIR_OUT, make_event
from netmon.kernel.abi import RTT_BUCKETS, TK_RETRANS, TK_RTT_ICMP, TK_RTT_SYN, TK_RTT_TS
from netmon.options import Direction, Options, build
from netmon.report import banner
from netmon.sinks import formats


@given(st.integers(min_value=0, max_value=1 << 44))
def test_every_rtt_falls_in_its_bucket(ns):
    b = tcphealth.bucket_of(ns)
    lo, hi = tcphealth.bucket_bounds(b)
    assert lo <= ns and (ns < hi or b == RTT_BUCKETS - 1)


def test_buckets_tile_the_range_four_to_a_power_of_two():
    bounds = [tcphealth.bucket_bounds(b) for b in range(RTT_BUCKETS)]
    assert bounds[0] == (0, 1024) and bounds[1] == (1024, 1280) and bounds[4] == (1792, 2048)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    # Within a quarter of the lower bound: a LAN's 50 us and a WAN's 200 ms alike.
    assert all((hi - lo) / lo <= 0.25 for lo, hi in bounds[1:])


def test_percentiles_interpolate_within_the_bucket():
    h = tcphealth.Histogram()
    for ns in [1_000_000] * 98 + [40_000_000] * 2:
        b = tcphealth.bucket_of(ns)
        h.buckets[b] += 1
        h.count += 1
        h.sum_ns += ns
    lo, hi = tcphealth.bucket_bounds(tcphealth.bucket_of(1_000_000))
    assert lo <= h.quantile(0.5) < hi
    lo, hi = tcphealth.bucket_bounds(tcphealth.bucket_of(40_000_000))
    assert lo <= h.quantile(0.99) <= hi
    assert h.mean == pytest.approx(1_780_000)
    assert tcphealth.Histogram().quantile(0.5) is None


def test_histograms_add_exactly():
    a, b = tcphealth.Histogram(), tcphealth.Histogram()
    a.buckets[3], b.buckets[3], b.buckets[7] = 2, 5, 1
    a.count, b.count = 2, 6
    a.add(b)
    assert (a.count, a.buckets[3], a.buckets[7]) == (8, 7, 1)


@pytest.mark.parametrize("guest,start,name", [
    (True, DIR_IN, "network"),  # the guest sent it; the remote answered
    (True, DIR_OUT, "guest"),  # sent to the guest; the guest answered
    (False, DIR_OUT, "network"),  # the host sent it out
    (False, DIR_IN, "local"),  # came in; this host (or behind it) answered
])
def test_components_by_interface_and_direction(guest, start, name):
    assert tcphealth.component(guest, start) == name


def _row(kind, rtt=0, seq=0, direction=DIR_IN, proto=6, **kw):
    ev = make_event(123, 7, 1514, 4, proto, "10.0.0.9", "10.0.0.1",
                    *(() if proto == 1 else (51000, 443)), dir=direction, **kw)
    return (*ev, rtt, seq, kind)


GUEST = {"ifname": "tap100i0", "guest": 100, "guest_name": "web1"}


def test_text_lines():
    fmt = formats.TcpText(lambda i: GUEST)
    assert fmt.line(_row(TK_RTT_TS, 20_312_000)) == \
        "tap100i0 (web1) network TCP 10.0.0.9:51000 -> 10.0.0.1:443 rtt 20.3 ms"
    assert fmt.line(_row(TK_RTT_SYN, 51_000, direction=DIR_OUT)) == \
        "tap100i0 (web1) guest TCP 10.0.0.9:51000 -> 10.0.0.1:443 rtt 0.051 ms (handshake)"
    assert fmt.line(_row(TK_RTT_ICMP, 1_500_000, proto=1, icmp_type=8, icmp_code=0)) == \
        "tap100i0 (web1) network ICMP 10.0.0.9 -> 10.0.0.1 rtt 1.500 ms (echo)"
    assert fmt.line(_row(TK_RETRANS, seq=4242, tcp_flags=0x18)) == \
        "tap100i0 (web1) in TCP 10.0.0.9:51000 -> 10.0.0.1:443 (1514b) retransmission seq 4242"
    host = formats.TcpText(lambda i: {"ifname": "eno1"})
    assert host.line(_row(TK_RTT_TS, 2_000_000, direction=DIR_OUT)).startswith(
        "eno1 network TCP")
    assert host.line(_row(TK_RTT_TS, 2_000_000)).startswith("eno1 local TCP")


def test_json_lines():
    fmt = formats.TcpJson(lambda i: dict(GUEST), formats.Clock(0))
    rec = json.loads(fmt.line(_row(TK_RTT_TS, 20_312_000)))
    assert rec["event"] == "rtt" and rec["component"] == "network"
    assert rec["method"] == "timestamp" and rec["rtt_ns"] == 20_312_000
    assert (rec["src"], rec["sport"], rec["guest_name"]) == ("10.0.0.9", 51000, "web1")
    assert "len" not in rec
    rec = json.loads(fmt.line(_row(TK_RETRANS, seq=9)))
    assert (rec["event"], rec["seq"], rec["dir"], rec["len"]) == ("retransmission", 9, "in", 1514)


def test_rtt_watches_both_directions_and_refuses_what_it_cannot_go_with():
    s = build(Options(rtt=True), cpus=2, default_interface=lambda: "eth9")
    assert s.directions == (DIR_IN, DIR_OUT) and s.tcp is not None
    for kw in (dict(write="x"), dict(top=True), dict(drops=True), dict(read="x"),
               dict(flow_records=True)):
        with pytest.raises(UsageError, match="netmon rtt measures round trips live"):
            build(Options(rtt=True, **kw), cpus=2, default_interface=lambda: "eth9")
    with pytest.raises(UsageError, match="--rtt-entries sizes"):
        build(Options(rtt_entries=5), cpus=2, default_interface=lambda: "eth9")


def test_the_banner_says_what_one_direction_or_a_one_way_filter_costs():
    from netmon.filters import FilterSpec

    s = build(Options(rtt=True, direction=Direction.IN, spec=FilterSpec(dport=(443,))),
              cpus=2, default_interface=lambda: "eth9")
    text = banner(s, [], [])
    assert "Measuring: round-trip times" in text
    assert "with one direction watched no RTT is measured" in text
    assert "--host and --port hold for both" in text


def test_the_summary_tables():
    h = tcphealth.Histogram()
    h.buckets[tcphealth.bucket_of(20_000_000)] = 10
    h.count, h.sum_ns = 10, 200_000_000
    rows = tcphealth.summary_lines(
        {("tap100i0 (web1)", "network"): h, ("tap100i0 (web1)", "guest"): tcphealth.Histogram()},
        {("tap100i0 (web1)", DIR_IN): tcphealth.Retransmissions(1000, 19, 2)}, 3, 0)
    assert rows[1].startswith("  tap100i0 (web1)  network       10 samples  median ")
    assert not any("guest " in row for row in rows)  # no samples: no row
    assert rows[3] == ("  tap100i0 (web1)  in        1000 data segments, 19 retransmitted "
                       "(1.90%), 2 out of order")
    assert rows[4].startswith("3 samples given up")
    assert tcphealth.summary_lines({}, {}, 0, 0) == ["no round trips measured"]


def test_the_book_gives_each_flow_its_samples_and_retransmissions():
    """Records come as the kernel makes them, a flow's counts once a second: a sample of
    a flow the tables have not shown yet waits for it."""
    from netmon.flows import FLOW_KEY4, FlowBook
    from netmon.sinks.top.view import retrans_cell, rtt_cell

    S = 1_000_000_000
    raw = FLOW_KEY4.pack(7, DIR_IN, 4, 6, 0, 51000, 443, bytes([10, 0, 0, 9]),
                         bytes([10, 0, 0, 1]))
    book = FlowBook(0)
    book.tcp([_row(TK_RTT_TS, 2_000_000)])  # before the flow is in the book
    book.add([(raw, 0x18, 100, 100_000, 1 * S, 1 * S)], 1 * S)
    flow = book.flows[raw]
    book.tcp([_row(TK_RTT_TS, 4_000_000), _row(TK_RETRANS, seq=5)])
    book.add([(raw, 0x18, 100, 100_000, 2 * S, 2 * S)], 2 * S)
    p50, p99, share = book.tcp_window([flow], 10)
    assert (p50, p99, share) == (3_000_000, 4_000_000, 1 / 200)
    assert (rtt_cell((p50, p99)), retrans_cell(share)) == ("3.00/4.00ms", "0.5")
    assert (rtt_cell((None, None)), retrans_cell(None)) == ("-", "-")
    [record] = book.flush()
    assert (record.rtts, record.retrans) == ((2_000_000, 4_000_000), 1)
    out = formats.FlowRecordJson(lambda i: {"ifname": "tap100i0"}, formats.Clock(0),
                                 tcp=True).record(record)
    assert (out["rtt_samples"], out["rtt_min_ns"], out["rtt_max_ns"], out["retransmissions"]) \
        == (2, 2_000_000, 4_000_000, 1)


def test_top_moves_its_tcp_columns_from_window_to_window():
    """The w key: RTT and RETR% over 10 s at first, then 40 s, then 2 s; samples older
    than a window leave its figures."""
    from netmon.flows import FLOW_KEY4, FlowBook
    from netmon.sinks.top.view import TopView

    S = 1_000_000_000
    raw = FLOW_KEY4.pack(7, DIR_IN, 4, 6, 0, 51000, 443, bytes([10, 0, 0, 9]),
                         bytes([10, 0, 0, 1]))
    book = FlowBook(0)
    book.add([(raw, 0x18, 100, 100_000, 1 * S, 1 * S)], 1 * S)
    book.tcp([_row(TK_RTT_TS, 2_000_000), _row(TK_RETRANS, seq=5)])
    for t in range(2, 7):  # five more seconds of packets, no samples
        book.add([(raw, 0x18, 100, 100_000, 1 * S, t * S)], t * S)
    view = TopView(book, None, tcp=True)
    assert view.tcp_titles == ("RTT 10s", "RETR%")
    [row] = view.top()
    assert (row.rtt, row.retrans) == ((2_000_000, 2_000_000), 1 / 600)
    view.next_window()
    assert view.tcp_titles == ("RTT 40s", "RETR%")
    [row] = view.top()
    assert row.rtt == (2_000_000, 2_000_000)
    view.next_window()
    assert view.tcp_titles == ("RTT 2s", "RETR%")
    [row] = view.top()
    assert (row.rtt, row.retrans) == ((None, None), 0.0)
    view.next_window()
    assert view.tcp_titles == ("RTT 10s", "RETR%")


_ifinfos = st.one_of(
    st.just({}), st.just({"ifname": "vmbr0"}),
    st.fixed_dictionaries({"ifname": st.text(max_size=15), "guest": st.integers(100, 999),
                           "guest_name": st.one_of(st.none(), st.text(max_size=40))}))


@given(rows=st.lists(st.tuples(
    st.integers(0, 1 << 62), st.sampled_from([4, 6]), st.sampled_from([6, 1, 58]),
    st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 4094),
    st.sampled_from([DIR_IN, DIR_OUT]),
    st.sampled_from([TK_RTT_TS, TK_RTT_SYN, TK_RTT_ICMP, TK_RETRANS]),
    st.integers(0, 1 << 40), st.integers(1, 3)), max_size=20),
    infos=st.lists(_ifinfos, min_size=3, max_size=3), offset=st.integers(0, 1 << 61))
def test_json_lines_made_fast_are_the_fields_lines_byte_for_byte(rows, infos, offset):
    """TcpJson.render() puts a sample's line together from cached parts; line() builds
    it from the event's fields. Any row, any interface's fields: the same bytes."""
    fmt = formats.TcpJson(lambda i: infos[i - 1], formats.Clock(offset))
    made = []
    for ts, family, proto, sport, dport, vlan, direction, kind, rtt, ifindex in rows:
        if family == 6 and proto == 1:
            proto = 58
        src, dst = ("10.0.0.9", "10.0.0.1") if family == 4 else ("2001:db8::9", "fe80::1")
        ports = (sport, dport) if proto == 6 else ()
        icmp = {} if proto == 6 else {"icmp_type": 8, "icmp_code": 0}
        ev = make_event(ts, ifindex, 1514, family, proto, src, dst, *ports, dir=direction,
                        vlan=vlan or None, **icmp)
        made.append((*ev, rtt, 7, kind))
    assert fmt.render(made) == "".join(fmt.line(row) + "\n" for row in made)
