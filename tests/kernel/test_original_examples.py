"""Every usage example of the original tool works with netmon in its place.

The examples are read from ../shared/original-tool.md. Namespace b gets the
interfaces they name (ens18, and eth0, the original's default).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.support.netns import NetnsPair, ping
from tests.support.runner import Netmon

ORIGINAL = ROOT.parent / "shared" / "original-tool.md"
BINARY = "aya-network-monitor"


def examples() -> list[list[str]]:
    if not ORIGINAL.is_file():
        return []
    text = ORIGINAL.read_text()
    found = []
    for line in text.splitlines():
        m = re.match(rf"\s*sudo {BINARY}(.*?)(#.*)?$", line)
        if m:
            found.append(shlex.split(m.group(1)))
    return found


EXAMPLES = examples()
RUNNABLE = [args for args in EXAMPLES if "--help" not in args]


def test_the_examples_were_found():
    if not ORIGINAL.is_file():
        pytest.skip(f"{ORIGINAL} is absent")
    assert len(EXAMPLES) >= 10
    assert ["--help"] in EXAMPLES


def test_help_example():
    res = subprocess.run([sys.executable, "-m", "netmon", "--help"], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 0 and "--dst-port" in res.stdout


@pytest.fixture(scope="module")
def original_host():
    with NetnsPair(b_if="ens18") as pair:
        # The original's default interface, in the same namespace.
        pair.run(pair.a, "ip", "link", "add", "veth2", "type", "veth", "peer", "name", "eth0",
                 "netns", pair.b)
        pair.run(pair.b, "ip", "link", "set", "eth0", "up")
        yield pair


@pytest.mark.kernel
@pytest.mark.parametrize("args", RUNNABLE, ids=lambda a: " ".join(a) or "(no options)")
def test_example_runs(original_host, args):
    n = original_host
    nm = Netmon(n, *args, interface=None)
    with nm:
        nm.wait_ready()
        unfiltered = not any(a.startswith("--") for a in args)
        if unfiltered and "ens18" in args:
            ping(n, n.b_ip)
            assert nm.wait_lines(1)[0].startswith(f"ICMP {n.a_ip} -> {n.b_ip} (")
        assert nm.stop() == 0
    expected_if = args[args.index("-i") + 1] if "-i" in args else "eth0"
    assert f"Interface: {expected_if}" in nm.err
    if "--protocol" in args:
        assert f"  Protocol: {args[args.index('--protocol') + 1]}" in nm.err
    for opt, label in (("--src-ip", "Source IP"), ("--dst-ip", "Destination IP"),
                       ("--src-port", "Source port"), ("--dst-port", "Destination port")):
        if opt in args:
            assert f"  {label}: {args[args.index(opt) + 1]}" in nm.err
