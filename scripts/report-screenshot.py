#!/usr/bin/env python3
"""docs/report.png, the README's picture of `netmon totals --html`: the report of
tests/support/totalsdemo.py's database (three guests and a bridge, a month of hours,
a week of round trips), as headless Chromium shows it 1280 pixels wide.

    TZ=UTC python3 scripts/report-screenshot.py [OUT.png]
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netmon.totals import html, report  # noqa: E402
from tests.support import totalsdemo  # noqa: E402
from tests.support.browser import CHROMIUM, screenshot  # noqa: E402


def main() -> int:
    out = (Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report.png").resolve()
    if CHROMIUM is None:
        print("report-screenshot: needs chromium (make deps installs it)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="nmt-report-") as tmp:
        os.chdir(tmp)  # the report names the database as given: totals.db
        page = Path(tmp) / "report.html"
        totalsdemo.write("totals.db")
        html.write(report.Query(db=("totals.db",), html=str(page), now=totalsdemo.NOW),
                      io.StringIO())
        logged = screenshot(page, out, 1280, 1560)
    if logged:
        print("\n".join(logged), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
