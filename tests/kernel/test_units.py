"""The systemd units, hardened (issue 27): systemd-analyze scores them and checks their
text; systemd is not PID 1 here, so netmon runs as the unit would run it, under setpriv:
an unprivileged user, the unit's ambient capabilities and bounding set, no_new_privs.
It watches, follows a guest's new tap and writes its totals."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from netmon.host.system import CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON
from tests.support.netns import ping, scaled
from tests.support.runner import Netmon

ROOT = Path(__file__).resolve().parent.parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
CAPS = {"CAP_BPF": CAP_BPF, "CAP_PERFMON": CAP_PERFMON, "CAP_NET_ADMIN": CAP_NET_ADMIN}


def _setting(unit: Path, key: str) -> str:
    return re.search(rf"^{key}=(.*)$", unit.read_text(), re.M).group(1)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_units_score_two_or_better_and_verify_clean(unit):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze (the systemd package)")
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                         capture_output=True, text=True)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout).group(1))
    assert score <= 2.0, res.stdout
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    # The capabilities it keeps are the ones it may have, and no more than netmon needs.
    assert _setting(unit, "AmbientCapabilities").split() == \
        _setting(unit, "CapabilityBoundingSet").split() == list(CAPS)


@pytest.mark.kernel
def test_netmon_as_the_totals_unit_runs_it(netns):
    """setpriv with the unit's user (nobody here: the package's netmon user is the
    operator's to make), ambient capabilities and bounding set: netmon watches both
    directions of the guests' taps, attaches one that appears later, and its totals
    are written to a directory that user owns."""
    n = netns
    unit = ROOT / "systemd" / "netmon-totals.service"
    caps = ",".join("+" + c.lower()[4:] for c in _setting(unit, "AmbientCapabilities").split())
    # The state directory the unit's user owns (pytest's own is root's alone).
    state = Path(tempfile.mkdtemp(prefix="nmt-state-"))
    shutil.chown(state, "nobody", "nogroup")
    state.chmod(0o750)
    db = state / "totals.db"
    try:
        _as_the_unit_runs_it(n, db, caps)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _as_the_unit_runs_it(n, db: Path, caps: str) -> None:
    _, first = n.link("nmt-g0", "tap100i0")
    command = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
               f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
               f"--bounding-set=-all,{caps}", "--no-new-privs", "--",
               sys.executable, "-m", "netmon", "--guest", "all", "--quiet",
               "--totals", str(db), "--totals-every", "1"]  # the unit's, and a write a second
    # Already the unit's user: what netmon gives up once attached is CAP_PERFMON (the perf
    # buffers are open); it keeps what attaching a later tap needs.
    kept = {CAP_NET_ADMIN, CAP_BPF}
    with Netmon(n, command=command, interface=None) as nm:
        nm.wait_ready()
        deadline = time.monotonic() + scaled(20)
        while True:
            status = Path(f"/proc/{nm.proc.pid}/status").read_text()
            eff = int(re.search(r"^CapEff:\s+([0-9a-f]+)", status, re.M).group(1), 16)
            if eff == sum(1 << c for c in kept) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert re.search(r"^Uid:\s+65534\s", status, re.M), status
        assert eff == sum(1 << c for c in kept), hex(eff)
        ping(n, first, 3)
        _, later = n.link("nmt-g1", "tap101i0")  # a guest started after netmon
        nm.wait_stderr("netmon: watching tap101i0", timeout=20)
        ping(n, later, 2)
        time.sleep(scaled(2.5))  # a write or two
        assert nm.stop(15) == 0
    out = subprocess.run([sys.executable, "-m", "netmon", "totals", "--db", str(db),
                          "--months", "--json", "--since", "1970-01"],
                         capture_output=True, text=True, cwd=ROOT)
    rows = {r["guest"]: (r["in_packets"], r["out_packets"]) for r in map(json.loads,
                                                                          out.stdout.splitlines())}
    assert db.stat().st_uid == 65534
    assert "netmon: running as nobody with CAP_NET_ADMIN, CAP_BPF" in nm.err
    assert rows == {100: (3, 3), 101: (2, 2)}, (rows, nm.err)


@pytest.mark.kernel
def test_a_user_with_no_name_runs_as_its_number():
    """systemd's DynamicUser= gives a uid no passwd entry names: netmon, started as it with
    the unit's capabilities, reads a capture and says whom it ran as (a KeyError before)."""
    caps = "+bpf,+perfmon,+net_admin"
    data = ROOT / "tests" / "data" / "tcpdump" / "afs.pcap"
    res = subprocess.run(["setpriv", "--reuid", "54321", "--regid", "54321", "--clear-groups",
                          f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
                          "--no-new-privs", "--", sys.executable, "-m", "netmon", "-r",
                          str(data), "-c", "1"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("UDP ")
    assert res.stderr.splitlines()[0].startswith("netmon: running as 54321 with "), res.stderr
