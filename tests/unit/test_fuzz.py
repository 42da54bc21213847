"""The fuzzers' short runs (the long ones: `make fuzz`): capture files as -r and -w read
and write them, and totals databases as `netmon totals` reads them. Seeds fixed so a
failure replays; NETMON_FUZZ_SEED draws others."""

import os

from tests.fuzz import captures, totals

SEED = int(os.environ.get("NETMON_FUZZ_SEED", "26"))


def _clean(report) -> None:
    assert not report.findings, "\n".join(f"{f.what}\n{f.detail}" for f in report.findings[:3])


def test_capture_files_are_read_or_refused_in_one_line(tmp_path):
    report = captures.campaign(3000, SEED, tmp_path)
    _clean(report)
    # The inputs reach every outcome: frames, refusals, damage (not all one kind).
    assert {"read to the end", "refused (status 10)", "damaged (status 10)"} <= set(
        report.counts) and report.counts["frames read"] > 1000


def test_totals_databases_are_read_or_refused_in_one_line(tmp_path):
    _clean(totals.campaign(150, SEED, tmp_path))
