"""--totals with netmon rtt: round trips and retransmissions per hour, folded into days
exactly, read back by `netmon totals --rtt`. No kernel."""

import io
import json
import sqlite3
import time

import pytest

from netmon import tcphealth
from netmon.errors import TotalsUnavailable, UsageError
from netmon.totals import report
from netmon.totals.store import HOUR, Key, Writer, day_start, hour_of

NOW = 1_796_000_000.0  # a fixed time: the folds below are whole days


def _write(path, now=NOW, keep_days=90):
    with Writer(str(path), keep_days=keep_days) as w:
        for h in range(30):  # 30 hours back from now: some of them on other days
            hour = hour_of(now) - h * HOUR
            w.add([], {100: "web1"}, now,
                  rtt=[(hour, Key(100, 0), "network", tcphealth.bucket_of(20_000_000), 3),
                       (hour, Key(100, 0), "network", tcphealth.bucket_of(45_000_000), 1),
                       (hour, Key(100, 0), "guest", tcphealth.bucket_of(300_000), 2)],
                  tcp=[(hour, Key(100, 0), "in", 100, 2, 1), (hour, Key(100, 1), "out", 50, 0, 0)])


def _json(path, **kw) -> list[dict]:
    out = io.StringIO()
    report.report(report.Query(db=(str(path),), rtt=True, json=True, now=NOW, **kw), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_hours_fold_into_days_exactly(tmp_path):
    """The same 30 hours read per day before and after the fold: every bucket, every
    segment count the same."""
    _write(tmp_path / "a.db")
    before = _json(tmp_path / "a.db", view="days", since="2026-01-01")
    # A write far ahead (keep 1 day): every hour of them folded into its day.
    with Writer(str(tmp_path / "a.db"), keep_days=1) as w:
        w.add([], {}, NOW + 5 * 86400)
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT count(*) FROM rtt_hourly").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM tcp_daily").fetchone()[0] > 0
    after = _json(tmp_path / "a.db", view="days", since="2026-01-01")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "as_of"} for r in rows]  # noqa: E731
    assert strip(before) == strip(after) and len(before) >= 4
    network = [r for r in after if r.get("component") == "network"]
    assert sum(r["samples"] for r in network) == 30 * 4
    sent = [r["sent"] for r in after if "sent" in r]
    assert sum(s["segments"] for s in sent) == 30 * 100
    assert sum(s["retransmitted"] for s in sent) == 30 * 2


def test_an_hours_percentiles_name_the_guest_and_its_component(tmp_path):
    _write(tmp_path / "a.db")
    rows = _json(tmp_path / "a.db", view="hours", guests=(100,))
    hour = time.strftime("%Y-%m-%d %H:00", time.localtime(hour_of(NOW)))
    net = next(r for r in rows if r["hour"] == hour and r.get("component") == "network")
    assert (net["guest"], net["guest_name"], net["samples"]) == (100, "web1", 4)
    lo, hi = tcphealth.bucket_bounds(tcphealth.bucket_of(45_000_000))
    assert lo <= net["p99_ns"] <= hi  # the slow one is the 99th percentile
    assert net["buckets"] == [[tcphealth.bucket_bounds(tcphealth.bucket_of(20_000_000))[0], 3],
                              [lo, 1]]
    seg = next(r for r in rows if r["hour"] == hour and "sent" in r)
    # On a guest's tap, in is what the guest sent (net0 in, net1 out: one guest).
    assert seg["sent"] == {"segments": 100, "retransmitted": 2, "out_of_order": 1}
    assert seg["received"]["segments"] == 50
    out = io.StringIO()
    report.report(report.Query(db=(str(tmp_path / "a.db"),), rtt=True, view="hours",
                               now=NOW), out)
    assert "guest 100 (web1)" in out.getvalue() and "network" in out.getvalue()


def test_a_database_from_before_keeps_none_and_says_so(tmp_path):
    _write(tmp_path / "a.db")
    with sqlite3.connect(tmp_path / "a.db") as db:
        for table in ("rtt_hourly", "rtt_daily", "tcp_hourly", "tcp_daily"):
            db.execute(f"DROP TABLE {table}")
    out = io.StringIO()
    report.report(report.Query(db=(str(tmp_path / "a.db"),), rtt=True, now=NOW), out)
    assert "no round trips or TCP segments in the period" in out.getvalue()


@pytest.mark.parametrize("sql", [
    "UPDATE rtt_hourly SET component = 'x'",
    "UPDATE rtt_hourly SET bucket = 500 WHERE component = 'guest'",
    "UPDATE rtt_hourly SET samples = -1",
    "UPDATE tcp_hourly SET direction = 'sideways'",
    "UPDATE tcp_hourly SET retrans = 'many'",
])
def test_a_damaged_row_is_one_line_naming_no_value(tmp_path, sql):
    _write(tmp_path / "a.db")
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute(sql)
    with pytest.raises(TotalsUnavailable, match="a round-trip or segment row holds a value "
                                                "netmon does not write"):
        _json(tmp_path / "a.db", view="hours")


def test_rtt_goes_without_top_and_csv(tmp_path):
    _write(tmp_path / "a.db")
    for kw in (dict(top=3), dict(csv=True)):
        with pytest.raises(UsageError, match="--rtt shows round trips"):
            report.report(report.Query(db=(str(tmp_path / "a.db"),), rtt=True, **kw),
                          io.StringIO())


def test_day_start_is_a_midnight():
    assert time.localtime(day_start(NOW)).tm_hour == 0
