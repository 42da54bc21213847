"""Each command's help (issue 28, item 8): its own purpose, options, keys and examples,
and every example run as printed (live ones on a bridge-named veth and a guest's tap in a
test namespace, with a Proxmox config; totals ones on a database with known rows)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netmon import cli, usage
from netmon.totals.store import Key, Writer, hour_of
from tests.support.netns import ROOT, Listener, NetnsPair, ping, send
from tests.support.pve import fake_pve
from tests.support.runner import Netmon


def _help(capsys, *argv: str) -> str:
    assert cli.main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_each_command_has_its_own_help(capsys):
    main, top, drops = (_help(capsys), _help(capsys, "top"), _help(capsys, "drops"))
    totals, rtt = _help(capsys, "totals"), _help(capsys, "rtt")
    assert len({main, top, drops, totals, rtt}) == 5  # not the main help word for word
    for name in ("top", "drops", "rtt", "totals"):  # netmon's help lists its commands
        assert f"netmon {name} " in main.split("Commands:")[1]
    assert top.startswith("Usage: netmon top [OPTIONS]") and "Keys:" in top
    assert all(f"  {key}  " in top for key, _ in usage.TOP.keys)
    assert drops.startswith("Usage: netmon drops [OPTIONS]")
    # Each shows the options its mode takes, not those it refuses.
    assert "--sort" in top and "--by" in top and "--write" not in top and "--json" not in top
    assert "--json" in drops and "--direction" not in drops and "--flows" not in drops
    assert "--ipfix" not in drops and "--guest" in drops
    assert rtt.startswith("Usage: netmon rtt [OPTIONS]")
    assert "--rtt-entries" in rtt and "--write" not in rtt and "--sort" not in rtt
    assert "--rtt-entries" in top and "--rtt-entries" not in drops
    for text, command in ((main, usage.MONITOR), (top, usage.TOP), (drops, usage.DROPS),
                          (totals, usage.TOTALS), (rtt, usage.RTT)):
        assert command.summary.split()[1] in text.split("Options:")[0]
        examples = text.split("Examples:")[1]
        assert len(command.examples) >= 2
        assert all(line in examples for line, _ in command.examples)


def test_help_after_a_mode_word_only_when_asked():
    assert not cli._asks_help(["top", "-i", "x", "--", "-h"])
    assert cli._asks_help(["drops", "-i", "x", "-h"])


@pytest.mark.kernel
def test_every_live_example_runs_as_printed(tmp_path):
    """On a veth named vmbr0 and guest 100's tap (its config says web1): each example
    starts, watches and stops with status 0 and no error; the first one's line is the
    HTTPS segment sent, the capture has the DNS datagram."""
    env = fake_pve(tmp_path, {100: "web1"})
    examples = [line for c in (usage.MONITOR, usage.TOP, usage.DROPS, usage.RTT)
                for line, _ in c.examples]
    capture = Path("/tmp/vmbr0.pcapng")  # as the example names it
    totals = [Path(f"/tmp/netmon-rtt.db{end}") for end in ("", "-wal", "-shm")]
    with NetnsPair(b_if="vmbr0") as n:
        _, tap_ip = n.link("nmt-g100", "tap100i0")
        for i, line in enumerate(examples):
            args = shlex.split(line)[1:]  # after "netmon"
            try:
                with Netmon(n, *args, interface=None, env=env) as nm:
                    nm.wait_ready()
                    with Listener(n, n.b_ip, 443):
                        send(n, "tcp", n.a_ip, 40400 + i, n.b_ip, 443, 20)
                    send(n, "udp", n.a_ip, 40053, n.b_ip, 53, 20, 1)
                    ping(n, tap_ip, 1)
                    time.sleep(0.5)
                    status = nm.stop()
                assert status == 0 and not [e for e in nm.err if "error" in e], (line, nm.err)
                if line == usage.MONITOR.examples[0][0]:
                    assert nm.out and all(
                        o.startswith(f"TCP {n.a_ip}:40400 -> {n.b_ip}:443 (") for o in nm.out
                    ), nm.out
                if line == usage.RTT.examples[1][0]:  # the HTTPS connection's handshake
                    assert any(json.loads(o)["method"] == "handshake" for o in nm.out), nm.out
                if "-w" in args:  # the datagram to port 53, and nothing else
                    assert "1 packets written" in "\n".join(nm.err), nm.err
            finally:
                for path in (capture, *totals):
                    path.unlink(missing_ok=True)


def test_every_totals_example_runs_as_printed(tmp_path):
    db = tmp_path / "totals.db"
    now = time.time()
    with Writer(str(db)) as w:
        w.add([(hour_of(now), Key(100, 0), "in", "tcp", 3, 300),
               (hour_of(now), Key(interface="vmbr0"), "out", "udp", 2, 200)], {100: "web1"},
              now, rtt=[(hour_of(now), Key(100, 0), "network", 60, 5)],
              tcp=[(hour_of(now), Key(100, 0), "in", 100, 2, 0)])
    for line, _ in usage.TOTALS.examples:
        # The default database is the service's; this one stands in for it.
        args = shlex.split(line)[2:] + ["--db", str(db)]
        page = None
        if "--html" in args:  # the report to this test's directory, not the example's
            page = tmp_path / "report.html"
            args[args.index("--html") + 1] = str(page)
        res = subprocess.run([sys.executable, "-m", "netmon", "totals", *args],
                             capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "TZ": "UTC"})
        assert res.returncode == 0 and not res.stderr, (line, res.stderr)
        shown = page.read_text() if page else res.stdout
        assert "web1" in shown, (line, shown)
        if "--json" in args:
            rows = [json.loads(r) for r in res.stdout.splitlines()]
            assert {r.get("guest") for r in rows} >= {100}
