"""The fuzzers' short runs that need the kernel: random expressions against libpcap at
XDP and tc, and built capture files through `netmon -r` itself (`make fuzz`: the long
ones)."""

import os

import pytest

from tests.fuzz import captures, expressions

pytestmark = pytest.mark.kernel
SEED = int(os.environ.get("NETMON_FUZZ_SEED", "26"))


def test_random_expressions_get_libpcaps_verdicts():
    report = expressions.campaign(400, SEED)
    assert not report.findings, "\n".join(f.what for f in report.findings[:5])
    # Most compile and many match the frame their values came from: the grammar is not
    # spending its inputs on libpcap's syntax errors.
    assert report.counts["compiled and run"] > 300 and report.counts["matched its frame"] > 60


def test_built_capture_files_through_netmon(tmp_path):
    report = captures.campaign(120, SEED, tmp_path, through_every=20)
    assert report.counts["run through netmon -r"] == 6
    assert not report.findings, "\n".join(f.what for f in report.findings[:3])
