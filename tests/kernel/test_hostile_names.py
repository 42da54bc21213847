"""Names others choose never reach a terminal raw (issue 27): a guest named with escape
sequences in its Proxmox config, an interface whose name carries ESC. Lines, the banner,
the summary, `top`, `netmon totals` and errors show them escaped (`\\x1b`); JSON and the
totals database keep them exact."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys

import pytest

from netmon import cli
from netmon.escape import visible
from tests.support.netns import ROOT, ping, scaled
from tests.support.runner import Netmon
from tests.support.tmux import wait_pane

pytestmark = pytest.mark.kernel

EVIL = "\x1b[2J\x1b[H\x1b[31mEVIL\x1b]0;pwned-title\x07"
SHOWN = "\\x1b[2J\\x1b[H\\x1b[31mEVIL\\x1b]0;pwned-title\\x07"
ESC_IF = "ev\x1bil0"  # Linux takes any byte in a name but '/', ':' and whitespace


def _guest(tmp_path) -> dict[str, str]:
    pve = tmp_path / "pve"
    (pve / "qemu-server").mkdir(parents=True)
    (pve / "qemu-server" / "100.conf").write_text(f"name: {EVIL}\n")
    return {"NETMON_PVE_DIR": str(pve)}


def test_escapes_are_escaped():
    assert visible(EVIL) == SHOWN
    assert visible("tap\u202e0i001pat \\ ok\nnext") == "tap\\u202e0i001pat \\\\ ok\nnext"
    assert visible("web1 (100)") == "web1 (100)"


def test_an_interface_named_with_escapes_in_lines_banner_and_summary(netns):
    n = netns
    _, ip = n.link("nmt-h0", ESC_IF)
    with Netmon(n, "-i", ESC_IF, "-i", n.b_if, "--protocol", "icmp", "--count", "1",
                interface=None) as nm:
        nm.wait_ready()
        ping(n, ip)
        assert nm.wait_exit() == 0
    text = "\n".join(nm.out + nm.err)
    assert "\x1b" not in text
    assert nm.out[0].startswith("ev\\x1bil0 in ICMP ")
    assert any(line.startswith("Interfaces: ev\\x1bil0, ") for line in nm.err)
    assert any(line.startswith("netmon: ev\\x1bil0 in: ") for line in nm.err)
    with Netmon(n, "-i", ESC_IF, "--json", "--protocol", "icmp", "--count", "1",
                interface=None) as nm:
        nm.wait_ready()
        ping(n, ip)
        assert nm.wait_exit() == 0
    assert json.loads(nm.out[0])["ifname"] == ESC_IF  # exact, JSON-escaped


def test_an_error_naming_it_is_escaped(capsys):
    assert cli.main(["-i", "nmt-\x1b]0;t\x07", "--count", "1"]) == cli.ExitStatus.NO_INTERFACE
    err = capsys.readouterr().err
    assert "\x1b" not in err and "nmt-\\x1b]0;t\\x07" in err


def test_a_guest_named_with_escapes_in_totals(netns, tmp_path, capsys):
    n = netns
    env = _guest(tmp_path)
    _, web = n.link("nmt-g0", "tap100i0")
    db = tmp_path / "totals.db"
    with Netmon(n, "-i", "tap*", "-Q", "both", "--quiet", "--totals", str(db),
                interface=None, env=env) as nm:
        nm.wait_ready()
        ping(n, web, 2)
        assert nm.stop() == 0
    stored = sqlite3.connect(db).execute("SELECT name FROM guests").fetchone()[0]
    assert stored == EVIL  # kept as read
    for view in (["--months"], ["--top", "3"]):
        assert cli.main(["totals", "--db", str(db), "--since", "1970-01", *view]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "guest 100 (\\x1b[2J\\x1b[H\\x1b[31mEV…)" in out, out
    assert cli.main(["totals", "--db", str(db), "--since", "1970-01", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {row["guest_name"] for row in rows} == {EVIL}


def test_a_guest_named_with_escapes_in_top(netns, tmp_path):
    """tmux shows the name written out, and the escape meant to retitle the window did
    not: the pane's title is as it was."""
    if subprocess.run(["which", "tmux"], capture_output=True).returncode:
        pytest.skip("needs tmux (apt-get install tmux)")
    n = netns
    env = _guest(tmp_path)
    _, web = n.link("nmt-g0", "tap100i0")
    session = f"nmt-evil-{n.id}"
    cmd = " ".join(["env", f"NETMON_PVE_DIR={shlex.quote(env['NETMON_PVE_DIR'])}",
                    *n.exec_args(n.b, sys.executable, "-m", "netmon", "top", "--by", "guest",
                                 "-i", "'tap*'")])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30",
                    f"cd {ROOT} && {cmd}"], check=True)
    try:
        title = subprocess.run(["tmux", "display", "-p", "-t", session, "#{pane_title}"],
                               capture_output=True, text=True).stdout
        wait_pane(session, "by: guest")
        ping(n, web, 5)
        screen = wait_pane(session, "EVIL", seconds=10 * scaled(1))
        after = subprocess.run(["tmux", "display", "-p", "-t", session, "#{pane_title}"],
                               capture_output=True, text=True).stdout
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert "\\x1b[2J\\x1b[H\\x1b[31mEVIL" in screen, screen
    assert "pwned" not in after and after == title
