"""netmon totals --html: its figures are `netmon totals --json`'s, it fetches nothing,
it escapes what others named, and it renders (in Chromium, where installed) to a page
that is not blank. No kernel."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from netmon.errors import UsageError
from netmon.totals import html as html_report
from netmon.totals import report
from netmon.totals.store import Key, Writer, hour_of
from tests.support import totalsdemo
from tests.support.browser import CHROMIUM, screenshot

NOW = totalsdemo.NOW
TWO = {100: "web1", 101: "db1"}


class Marks(HTMLParser):
    """Every element with data- attributes, with its section's (the key it is of)."""

    def __init__(self):
        super().__init__()
        self.marks: list[dict] = []
        self.section: dict = {}
        self.head: dict = {}

    def handle_starttag(self, tag, attrs):
        data = {k[5:]: v for k, v in attrs if k.startswith("data-")}
        if tag == "section":
            self.section = data
        elif tag == "p" and "since" in data:
            self.head = data
        elif data:
            self.marks.append({"tag": tag, **data, **{f"of_{k}": v for k, v in
                                                        self.section.items()}})


def _report(db: Path, now: float = NOW, **kw) -> tuple[str, Marks]:
    out = io.StringIO()
    html_report.write(report.Query(db=(str(db),), html="-", now=now, **kw), out)
    marks = Marks()
    marks.feed(out.getvalue())
    return out.getvalue(), marks


def _json(db: Path, **kw) -> list[dict]:
    out = io.StringIO()
    report.report(report.Query(db=(str(db),), json=True, now=NOW, **kw), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _when(t: str) -> str:
    return dt.datetime.fromtimestamp(int(t)).strftime("%Y-%m-%d %H:%M")


def _key(row: dict) -> tuple[str, str]:
    return (str(row["guest"] or ""), row["interface"] or "") if not row["guest"] else \
        (str(row["guest"]), "")


@pytest.fixture
def two_guests(tmp_path) -> Path:
    db = tmp_path / "two.db"
    totalsdemo.write(str(db), guests=TWO)
    return db


def test_its_figures_are_the_json_ones(two_guests):
    """Day bars, heat map cells, the top table and the round trips: each mark's exact
    figure equals `netmon totals --json`'s for the same period (given as the report
    gives it)."""
    text, m = _report(two_guests)
    since = _when(m.head["since"])
    # Per day: every (key, day) with traffic as --days --json has it; the other days 0.
    days = {(_key(r), r["day"]): (r["received_bytes"], r["sent_bytes"])
            for r in _json(two_guests, view="days")}
    bars: dict = {}
    for mark in m.marks:
        if "day" in mark:
            key = ((mark["of_guest"], "") if mark["of_guest"] else ("", mark["of_interface"]),
                   mark["day"])
            got = bars.setdefault(key, [0, 0])
            got[0 if "received" in mark else 1] = int(mark.get("received", mark.get("sent")))
    assert {k: tuple(v) for k, v in bars.items() if any(v)} == days
    assert len(days) >= 3 * 30 - 3
    # Per hour over the heat map's days: as --hours --json from its first hour.
    heat_since = min(mark["hour"] for mark in m.marks if mark["tag"] == "rect" and "hour" in mark)
    hours = {(_key(r), r["hour"]): (r["received_bytes"], r["sent_bytes"])
             for r in _json(two_guests, view="hours", since=heat_since)}
    cells = {((mark["of_guest"], "") if mark["of_guest"] else ("", mark["of_interface"]),
              mark["hour"]): (int(mark["received"]), int(mark["sent"]))
             for mark in m.marks if mark["tag"] == "rect" and "hour" in mark}
    assert cells == hours and len(cells) > 3 * 6 * 24
    # The top: as --top 10 --json over the period.
    top = [(r["rank"], r["received_bytes"], r["sent_bytes"], r["bytes"], r["packets"])
           for r in _json(two_guests, top=10, since=since)]
    rows = [(int(x["rank"]), int(x["received"]), int(x["sent"]), int(x["bytes"]),
             int(x["packets"])) for x in m.marks if "rank" in x]
    assert rows == top and len(rows) == 3
    # --top N ranks N over the same period (the last 30 days), not this month's: ten days
    # into the next month, both begin 30 days back.
    later = NOW + 10 * 86400
    _, m3 = _report(two_guests, now=later, top=2)
    _, m30 = _report(two_guests, now=later)
    assert m3.head == m30.head and sum(1 for x in m3.marks if "rank" in x) == 2
    assert int(m30.head["since"]) < later - 29 * 86400
    # Round trips: as --rtt --hours --json, median and 99th percentile in ns.
    rtt = {(r["hour"], r["component"]): (r["samples"], r["median_ns"], r["p99_ns"])
           for r in _json(two_guests, view="hours", since=heat_since, rtt=True)
           if "component" in r}
    points = {(x["hour"], x["component"]): (int(x["samples"]), int(x["median-ns"]),
                                            int(x["p99-ns"]))
              for x in m.marks if "component" in x}
    assert points == rtt and len(points) > 2 * 6 * 24
    assert "web1" in text and "db1" in text


def test_it_fetches_nothing_and_runs_nothing(two_guests):
    text, _ = _report(two_guests)
    for needle in ("://", "<script", "src=", "href=", "url(", "@import", "<link"):
        assert needle not in text, needle
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_names_others_chose_are_escaped(tmp_path):
    evil = '"><script>x\x1b[31m'  # within the 24 characters a name is shown with
    db = tmp_path / "evil.db"
    totalsdemo.write(str(db), guests={100: evil}, days=2, interface='<b>eth"0')
    text, _ = _report(db)
    assert "<script" not in text and "\x1b" not in text and "<b>" not in text
    assert "&quot;&gt;&lt;script&gt;x" in text and "&lt;b&gt;eth&quot;0" in text


def test_an_empty_database_one_guest_and_500_guests_render(tmp_path):
    with Writer(str(tmp_path / "empty.db"), keep_days=90) as w:
        w.add([], {}, NOW)
    text, m = _report(tmp_path / "empty.db")
    assert "No traffic in the period" in text and not m.marks
    totalsdemo.write(str(tmp_path / "one.db"), guests={100: "web1"}, days=3, interface="")
    text, m = _report(tmp_path / "one.db")
    assert text.count("<section data-guest") == 1
    many = {100 + i: f"vm{i}" for i in range(500)}
    db = tmp_path / "many.db"
    with Writer(str(db), keep_days=90) as w:  # a day of hours for each
        last = hour_of(NOW)
        w.add([(last - h * 3600, Key(g, 0), "in", "tcp", 1, 1000 + g)
               for g in many for h in range(24)], many, NOW)
    text, m = _report(db)
    assert text.count("<section data-guest") == 500
    assert sum(1 for x in m.marks if x.get("rank")) == 10


def test_a_year_folded_into_days_renders(tmp_path):
    """A year of hourly rows, all but the last day's folded into days: a bar a day."""
    db = tmp_path / "year.db"
    totalsdemo.write(str(db), guests={100: "web1"}, days=365, keep_days=1, rtt=False)
    since = dt.date.fromtimestamp(NOW - 364 * 86400).isoformat()
    text, m = _report(db, since=since)
    bars = {x["day"] for x in m.marks if "day" in x}
    assert len(bars) == 365
    assert {(r["day"], r["sent_bytes"]) for r in _json(db, view="days", since=since)
            if r["guest"]} == {(x["day"], int(x["sent"])) for x in m.marks
                               if "sent" in x and "day" in x and x["of_guest"]
                               and int(x["sent"])}


@pytest.mark.parametrize("kw, said", [
    ({"json": True}, "--html draws its own report"),
    ({"rtt": True}, "--html draws its own report"),
    ({"view": "hours"}, "--html draws days and hours"),
])
def test_what_it_goes_without_is_one_line(two_guests, kw, said):
    with pytest.raises(UsageError, match=re.escape(said)):
        html_report.write(report.Query(db=(str(two_guests),), html="-", now=NOW, **kw),
                      io.StringIO())


def test_the_file_is_written_whole_or_refused_in_one_line(two_guests, tmp_path):
    out = tmp_path / "report.html"
    n = html_report.write(report.Query(db=(str(two_guests),), html=str(out), now=NOW),
                      io.StringIO())
    assert n == 3 and out.read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(UsageError, match=r"^--html /nonexistent/dir/r.html: No such file"):
        html_report.write(report.Query(db=(str(two_guests),), html="/nonexistent/dir/r.html",
                                   now=NOW), io.StringIO())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".netmon-report-")] == []


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (make deps installs it)")
def test_chromium_renders_it_without_a_complaint_and_not_blank(two_guests, tmp_path):
    from PIL import Image

    page, png = tmp_path / "report.html", tmp_path / "report.png"
    html_report.write(report.Query(db=(str(two_guests),), html=str(page), now=NOW),
                  io.StringIO())
    logged = screenshot(page, png, 1280, 1600)
    assert logged == []
    for width in (1280, 390):  # a laptop's and a phone's width
        shot = tmp_path / f"report-{width}.png"
        assert screenshot(page, shot, width, 1600) == []
        img = Image.open(shot).convert("RGB")
        assert img.size == (width, 1600)
        colours = img.getcolors(maxcolors=1 << 20)
        white = max(colours)[0]  # the background, the commonest colour
        painted = sum(n for n, _ in colours) - white
        # Bars, heat cells and text: many colours and a good share of the page.
        assert len(colours) > 50 and painted > 0.05 * width * 1600, (len(colours), painted)
        # The bars' colours are there, as the legend says.
        assert {(0x2b, 0x6c, 0xb0), (0xdd, 0x6b, 0x20)} <= {c for _, c in colours}
