"""(r) netmon totals --html: how long the report takes, against the JSON lines of the same
days (`netmon totals --days --json`), side by side in turns, as a person runs them (a
process each, start-up included).

Databases from tests/support/totalsdemo.py: a year of one guest's hours folded into days
(all but the last day), and 500 guests with a month of hours each (12,000 hours a day:
~360,000 rows per direction).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def bench_report(tmp: Path, repeats: int) -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from tests.support import totalsdemo

    cases = {
        "a year, one guest (365 days)": ("year.db", dict(guests={100: "web1"}, days=365,
                                                          keep_days=1, rtt=False),
                                         ["--since", "2025-11-30"]),
        "500 guests, 30 days of hours": ("many.db", dict(
            guests={100 + i: f"vm{i}" for i in range(500)}, days=30, rtt=False), []),
    }
    rows = []
    for label, (name, kw, period) in cases.items():
        db = tmp / name
        totalsdemo.write(str(db), **kw)
        base = [sys.executable, "-m", "netmon", "totals", "--db", str(db), *period]
        page = tmp / "report.html"
        json_s, html_s = [], []
        for _ in range(repeats):
            json_s.append(_timed([*base, "--days", "--json"]))
            html_s.append(_timed([*base, "--html", str(page)]))
        rows.append({"case": label, "json": statistics.median(json_s),
                     "html": statistics.median(html_s), "size": page.stat().st_size})
    return rows
