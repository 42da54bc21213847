"""Least privilege (issue 27): once opened, loaded and attached, netmon becomes the -Z
user (by default the package's user, else nobody) and keeps only the capabilities the
run still needs: an untrusted capture is parsed as nobody, with nothing (from Linux 6.5:
an fd's holder may run the program) or CAP_BPF alone."""

from __future__ import annotations

import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from netmon.host import privileges
from netmon.host.system import CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN
from netmon.kernel import facts
from tests.support.netns import ROOT, ping, scaled
from tests.support.runner import Netmon

DATA = Path(__file__).parent.parent / "data" / "tcpdump"
NOBODY = pwd.getpwnam("nobody").pw_uid


def _mask(caps) -> int:
    return sum(1 << c for c in caps)


def _status(pid: int) -> tuple[int, int]:
    """(real uid, effective capabilities) of a running process."""
    text = Path(f"/proc/{pid}/status").read_text()
    uid = int(re.search(r"^Uid:\s+(\d+)", text, re.M).group(1))
    return uid, int(re.search(r"^CapEff:\s+([0-9a-f]+)", text, re.M).group(1), 16)


def _wait_for(pid: int, uid: int, caps: int) -> tuple[int, int]:
    """(uid, effective capabilities) once they are these, or as they are when the time is
    up. Both: between setresuid() and capset() the uid has changed and the effective set
    is empty for a moment."""
    deadline = time.monotonic() + scaled(20)
    status = _status(pid)
    while status != (uid, caps) and time.monotonic() < deadline:
        time.sleep(0.05)
        status = _status(pid)
    return status


def test_what_each_kernel_keeps_for_bpf():
    assert privileges.kept_for_bpf((6, 5), 2) == set()
    assert privileges.kept_for_bpf((6, 1), 2) == {CAP_BPF}
    assert privileges.kept_for_bpf((5, 10), 1) == {CAP_BPF}
    assert privileges.kept_for_bpf((5, 4), 2) == {CAP_SYS_ADMIN}
    assert privileges.kept_for_bpf((6, 1), 0) == set()  # unprivileged BPF allowed
    assert privileges.Kept("nobody").describe() == "running as nobody with no capabilities"
    assert privileges.Kept("nobody", (CAP_NET_ADMIN, CAP_BPF)).describe() == \
        "running as nobody with CAP_NET_ADMIN, CAP_BPF"


@pytest.mark.kernel
def test_reading_a_capture_runs_as_nobody(tmp_path):
    """`netmon -r -` from a pipe, the frames held back: while it waits for them it is
    nobody with what its kernel's bpf() calls need; the frames are then read as before.
    A capture only root may read is opened before the drop."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    capture = private / "afs.pcap"
    shutil.copy(DATA / "afs.pcap", capture)
    capture.chmod(0o600)
    data = capture.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "netmon", "-r", "-", "--json"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    try:
        proc.stdin.write(data[:24 + 16 + 86])  # the header and the first frame
        proc.stdin.flush()
        want = privileges.kept_for_bpf(facts.kernel_version())
        uid, caps = _wait_for(proc.pid, NOBODY, _mask(want))
        proc.stdin.write(data[24 + 16 + 86:])
        proc.stdin.close()
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(scaled(60))
    finally:
        proc.kill()
        proc.wait()
    assert (uid, caps) == (NOBODY, _mask(want))
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 601
    assert err.decode().splitlines()[-2] == privileges.Kept("nobody", tuple(
        sorted(want))).describe().join(["netmon: ", ""])
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(capture), "-c", "1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1, res.stderr
    res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(capture), "-c", "1",
                          "-Z", "root"], capture_output=True, text=True, cwd=ROOT)
    assert "netmon: running as root, every privilege kept (-Z root)" in res.stderr


def _attach_caps(release) -> set:
    return {CAP_NET_ADMIN, CAP_BPF if release >= (5, 8) else CAP_SYS_ADMIN}


@pytest.mark.kernel
@pytest.mark.parametrize("method", ["link", "netlink"])
def test_a_fixed_interface_keeps_only_what_detaching_needs(netns, method):
    """-Z nobody on one interface: attached through a bpf_link, nothing beyond what the
    kernel's bpf() calls need (the link closes with its fd); through netlink, also
    CAP_NET_ADMIN, to detach it. Lines still come; the program is gone at exit."""
    n = netns
    with Netmon(n, "-Z", "nobody", "--attach", method, "--protocol", "icmp") as nm:
        nm.wait_ready()
        release = facts.kernel_version()
        want = privileges.kept_for_bpf(release) | (
            {CAP_NET_ADMIN} if method == "netlink" else set())
        # `ip netns exec` execs netmon: the same process
        assert _wait_for(nm.proc.pid, NOBODY, _mask(want)) == (NOBODY, _mask(want))
        ping(n, n.b_ip, 2)
        assert len(nm.wait_lines(2)) == 2
        assert nm.stop() == 0
    assert f"netmon: {privileges.Kept('nobody', tuple(sorted(want))).describe()}" in nm.err
    assert n.xdp_prog_id() == 0


@pytest.mark.kernel
def test_a_live_run_gives_root_up_by_default_and_z_root_keeps_it(netns):
    """Without -Z a live run becomes the package's user (nobody where there is none), as
    -r does; -Z root keeps every privilege, as before, and says so."""
    n = netns
    user = pwd.getpwnam(privileges.default_user())
    want = privileges.kept_for_bpf(facts.kernel_version())
    with Netmon(n, "--protocol", "icmp") as nm:
        nm.wait_ready()
        assert _wait_for(nm.proc.pid, user.pw_uid, _mask(want)) == (user.pw_uid, _mask(want))
        ping(n, n.b_ip, 2)
        assert len(nm.wait_lines(2)) == 2
        assert nm.stop() == 0
    assert f"netmon: {privileges.Kept(user.pw_name, tuple(sorted(want))).describe()}" \
        in nm.err
    with Netmon(n, "-Z", "root", "--protocol", "icmp") as nm:
        nm.wait_ready()
        ping(n, n.b_ip, 1)
        nm.wait_lines(1)
        uid, caps = _status(nm.proc.pid)
        assert nm.stop() == 0
    assert uid == 0 and caps & _mask(_attach_caps(facts.kernel_version())), (uid, caps)
    assert "netmon: running as root, every privilege kept (-Z root)" in nm.err


@pytest.mark.kernel
def test_follow_keeps_what_attaching_later_needs(netns):
    """--follow: the interface is made after netmon gave root up; netmon, as nobody with
    CAP_NET_ADMIN and CAP_BPF, attaches to it and shows its packets."""
    n = netns
    with Netmon(n, "-Z", "nobody", "--follow", "--protocol", "icmp", "-i", "nmt-late",
                interface=None) as nm:
        nm.wait_ready()
        want = privileges.kept_for_bpf(facts.kernel_version()) | _attach_caps(
            facts.kernel_version())
        assert _wait_for(nm.proc.pid, NOBODY, _mask(want)) == (NOBODY, _mask(want))
        _, ip = n.link("nmt-late0", "nmt-late")
        nm.wait_stderr("netmon: watching nmt-late")
        ping(n, ip, 2)
        assert len(nm.wait_lines(2)) == 2, nm.err
        assert nm.stop() == 0


@pytest.mark.kernel
def test_totals_and_rotation_keep_writing_as_the_user(netns):
    """--totals and -w with rotation under -Z nobody, in a directory nobody owns (as
    tcpdump's -Z wants for -C): the database and every file are written."""
    n = netns
    where = Path(tempfile.mkdtemp(prefix="nmt-z-"))
    try:
        shutil.chown(where, "nobody", "nogroup")
        with Netmon(n, "-Z", "nobody", "--protocol", "icmp", "--quiet", "--totals",
                    str(where / "t.db"), "--totals-every", "1") as nm:
            nm.wait_ready()
            ping(n, n.b_ip, 3)
            time.sleep(scaled(1.5))
            assert nm.stop() == 0
        assert "netmon: totals: " in "\n".join(nm.err) and " failed" not in "\n".join(nm.err)
        with Netmon(n, "-Z", "nobody", "--protocol", "icmp", "-w", str(where / "c.pcapng"),
                    "-G", "1") as nm:
            nm.wait_ready()
            for _ in range(3):
                ping(n, n.b_ip)
                time.sleep(scaled(1.2))
            assert nm.stop() == 0
        files = sorted(p.name for p in where.glob("c.pcapng*"))
        assert len(files) >= 2, (files, nm.err)
        assert all((where / f).stat().st_size > 0 for f in files)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_an_unknown_user_is_one_line(capsys):
    from netmon import cli

    assert cli.main(["-r", str(DATA / "afs.pcap"), "-Z", "nmt-no-such-user"]) == \
        cli.ExitStatus.USAGE
    assert capsys.readouterr().err == "netmon: error: -Z nmt-no-such-user: no such user\n"


@pytest.mark.kernel
def test_drops_as_nobody(netns):
    """netmon drops -Z nobody: the tracepoint's link and the kernel's names were taken as
    root; as nobody it still tells each drop, with its reason and place."""
    import json

    from tests.support.netns import send

    n = netns
    with Netmon(n, "drops", "-i", n.b_if, "--json", "-Z", "nobody", interface=None) as nm:
        nm.wait_ready()
        want = privileges.kept_for_bpf(facts.kernel_version())
        assert _wait_for(nm.proc.pid, NOBODY, _mask(want)) == (NOBODY, _mask(want))
        send(n, "udp", n.a_ip, 40092, n.b_ip, 5092, 10, 3)
        nm.wait_lines(3)
        assert nm.stop() == 0
    got = [json.loads(line) for line in nm.out]
    assert [(d["ifname"], d["dport"]) for d in got] == [(n.b_if, 5092)] * 3
    assert all(d["location"].startswith("__udp4_lib_rcv+0x") for d in got)


@pytest.mark.kernel
def test_top_as_nobody_draws_and_quits(netns):
    """top -Z nobody in tmux: everything it needs is opened and imported before the drop
    (its first draw imported rich's table after it, which a Python under /root refuses)."""
    from tests.support.tmux import wait_pane

    if shutil.which("tmux") is None:
        pytest.skip("needs tmux (apt-get install tmux)")
    n = netns
    session = f"nmt-ztop-{n.id}"
    cmd = " ".join(n.exec_args(n.b, sys.executable, "-m", "netmon", "top", "-i", n.b_if,
                               "-Z", "nobody"))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    f"cd {ROOT} && {cmd}; sleep 30"], check=True)
    try:
        wait_pane(session, "no traffic yet")  # attached, and root given up
        ping(n, n.b_ip, 3)
        screen = wait_pane(session, "ICMP")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert "netmon top" in screen and "ICMP" in screen, screen
