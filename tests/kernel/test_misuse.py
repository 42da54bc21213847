"""Issue 17's reproductions: what a careless or hostile user tried, each held to its fix.

The unit tests need no kernel (each refusal comes before anything is loaded); the
ones marked kernel run a file through the real program (-r) or a run in a namespace.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from netmon import cli, endpoint
from netmon.cli import ExitStatus
from netmon.report import Summary
from netmon.kernel import config as nm_config
from tests.conftest import CORPUS, ROOT
from tests.support.netns import ping, scaled
from tests.support.runner import Netmon
from tests.support.tmux import wait_pane

CAPTURE = CORPUS / "dns_tcp_8053.pcap"  # 11 TCP frames
# An interface that does not exist: should a refusal below ever regress, the run stops at
# "does not exist" instead of watching a host interface.
NOWHERE = "nmt-none0"


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def netmon(*argv: str, shell: str = "", **kw) -> subprocess.CompletedProcess:
    """netmon as a process; ``shell``: redirections after it (``>&-`` closes stdout)."""
    cmd = " ".join([sys.executable, "-m", "netmon", *argv]) + " " + shell
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT, **kw)


def one_line(err: str, fragment: str) -> None:
    assert err.count("\n") == 1 and err.startswith("netmon: error: "), err
    assert fragment in err and "Traceback" not in err


# -- 1. -r X -w X ---------------------------------------------------------------

@pytest.mark.parametrize("through_link", [False, True])
def test_reading_and_writing_one_file_is_refused_before_it_is_touched(capsys, tmp_path,
                                                                      through_link):
    victim = tmp_path / "x.pcap"
    victim.write_bytes(CAPTURE.read_bytes())
    written = victim
    if through_link:
        written = tmp_path / "link.pcap"
        written.symlink_to(victim)
    status, out, err = run_cli(capsys, "-r", str(victim), "-w", str(written))
    assert status == ExitStatus.USAGE and out == ""
    one_line(err, "-r and -w name the same file")
    assert victim.read_bytes() == CAPTURE.read_bytes()


# -- 2. closed standard streams ----------------------------------------------------

def test_a_closed_stdout_is_one_line_when_the_run_writes_there():
    res = netmon("-r", str(CAPTURE), shell=">&-")
    assert res.returncode == ExitStatus.USAGE
    one_line(res.stderr, "standard output is closed")


# -- 9. options that were silently ignored -------------------------------------------

@pytest.mark.parametrize("argv,fragment", [
    (["-i", NOWHERE, "-s", "100"], "-s sets how much of each packet -w keeps"),
    (["top", "-i", NOWHERE, "--json"], "top draws a view for people"),
    (["-i", NOWHERE, "--src-ip", "::/0", "--dst-ip", "10.0.0.0/8"],
     "--src-ip ::/0 and --dst-ip 10.0.0.0/8 are IPv6 and IPv4: no packet matches both"),
    (["-i", NOWHERE, "--host", "2001:db8::/32", "--src-ip", "10.0.0.1"], "no packet matches both"),
])
def test_options_that_did_nothing_are_refused(capsys, argv, fragment):
    status, out, err = run_cli(capsys, *argv)
    assert status == ExitStatus.USAGE and out == ""
    one_line(err, fragment)


# -- 10. a junk object -----------------------------------------------------------------

def test_a_junk_object_is_an_environment_problem(capsys, monkeypatch, tmp_path):
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(os.urandom(256))
    monkeypatch.setenv("NETMON_BPF_OBJECT", str(junk))
    monkeypatch.setattr("netmon.host.system.check_privileges", lambda caps=None: None)
    status, _, err = run_cli(capsys, "-r", str(CAPTURE))
    assert status == ExitStatus.ENVIRONMENT
    one_line(err, "rebuild it with `make` or reinstall the netmon wheel")


# -- 11. a full flow table is not "lost" -------------------------------------------

def test_a_full_flow_table_is_said_as_such():
    s = Summary(counters={"seen": 700, "matched": 700, "flow_overflow": 630})
    line = s.line()
    assert ", 0 lost (0 send failures, 0 reported by the perf buffer)" in line
    assert line.endswith(", 630 not counted in flows: the table was full (--flow-entries)")


# -- 6. a collector's zone -----------------------------------------------------------

def test_a_link_local_collector_keeps_its_zone():
    host, port = endpoint.parse("[fe80::1%lo]:4739")
    assert (host, port) == ("fe80::1%lo", 4739)
    assert endpoint.display(host, port) == "[fe80::1%lo]:4739"
    assert endpoint.sockaddr(host, port)[3] == socket.if_nametoindex("lo")


# -- on the kernel ---------------------------------------------------------------------

@pytest.mark.kernel
def test_a_closed_stderr_still_runs(tmp_path):
    res = netmon("-r", str(CAPTURE), shell="2>&-")
    assert res.returncode == 0 and res.stdout.count("\n") == 11


@pytest.mark.kernel
def test_a_device_that_is_full_is_exit_11_and_one_line():
    res = netmon("-r", str(CAPTURE), "-w", "/dev/full")
    assert res.returncode == ExitStatus.CAPTURE_WRITE
    one_line(res.stderr, "writing /dev/full: no space left on device")


@pytest.mark.kernel
def test_read_from_standard_input_as_tcpdump_does():
    direct = netmon("-r", str(CAPTURE), "--json")
    piped = netmon("-r", "-", "--json", shell=f"< {CAPTURE}")
    assert piped.returncode == 0 and direct.returncode == 0
    assert piped.stdout == direct.stdout and len(piped.stdout.splitlines()) == 11
    assert [json.loads(line)["frame"] for line in piped.stdout.splitlines()] == list(range(1, 12))


@pytest.mark.kernel
def test_an_unroutable_collector_at_start_is_counted_not_fatal(netns):
    n = netns  # no default route: 10.255.0.1 cannot be reached
    with Netmon(n, "--ipfix", "10.255.0.1:4739") as nm:
        nm.wait_ready()
        time.sleep(scaled(1.5))  # a tick or more: the templates are tried, and fail
        assert nm.stop() == 0
    summary = "\n".join(nm.err)
    assert "IPFIX: flow records to 10.255.0.1:4739" in summary
    unsent = re.search(r"flow records sent to 10\.255\.0\.1:4739 as IPFIX, (\d+) messages",
                       summary)
    assert unsent and int(unsent.group(1)) >= 1, summary


# -- 4. an interface gone while netmon starts ------------------------------------------

def test_enodev_while_attaching_means_the_interface_went_away():
    import errno

    from netmon.errors import InterfaceGone, LibbpfError
    from netmon.kernel import attach
    from netmon.kernel.choices import Mode

    exc = attach._attach_error(LibbpfError(errno.ENODEV, "attaching XDP to fx: No such device"),
                               "fx", Mode.NATIVE)
    assert isinstance(exc, InterfaceGone) and str(exc) == "interface fx went away"
    assert str(attach._tc_error(-errno.ENODEV, "fx in")) == "interface fx went away"
    assert cli.exit_status(exc) == ExitStatus.INTERFACE_GONE


@pytest.mark.kernel
@pytest.mark.parametrize("delay", [0.2, 0.4, 0.6])
def test_an_interface_deleted_while_netmon_starts_is_gone_not_a_driver_problem(netns, delay):
    n = netns
    fx = "nmt-fx"
    n.link("nmt-fa", fx)  # b's end is fx
    with Netmon(n, interface=fx) as nm:
        time.sleep(scaled(delay))
        n.run(n.b, "ip", "link", "del", fx)
        rc = nm.wait_exit(30)
    err = "\n".join(nm.err)
    # Before netmon lists the interfaces: it does not exist (4); after: it went away (9).
    assert rc in (ExitStatus.NO_INTERFACE, ExitStatus.INTERFACE_GONE), err
    assert "driver" not in err and "Traceback" not in err
    assert f"interface {fx} went away" in err or "does not exist" in err


# -- 7. top in a background process group, and after Ctrl-Z and fg --------------------

@pytest.fixture
def tmux(netns):
    if subprocess.run(["which", "tmux"], capture_output=True).returncode:
        pytest.skip("needs tmux (apt-get install tmux)")
    session = f"nmt-hard-{netns.id}"
    yield session
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@pytest.mark.kernel
def test_top_in_a_background_process_group_draws_and_does_not_crash(netns, tmux):
    n = netns
    # timeout runs netmon in a process group of its own: not the terminal's foreground.
    cmd = " ".join(["timeout", "-s", "INT", str(scaled(6)),
                    *n.exec_args(n.b, sys.executable, "-m", "netmon", "top", "-i", n.b_if)])
    subprocess.run(["tmux", "new-session", "-d", "-s", tmux, "-x", "80", "-y", "24",
                    f"cd {ROOT} && {cmd}; echo rc=$?; sleep 30"], check=True)
    screen = wait_pane(tmux, "netmon top")
    assert f"netmon top: {n.b_if}" in screen, screen
    screen = wait_pane(tmux, "rc=", 30)
    # timeout's own status for a command it stopped; netmon's summary says it ended well.
    assert "rc=124" in screen and "packets seen" in screen, screen
    assert "Traceback" not in screen and "termios" not in screen, screen


@pytest.mark.kernel
def test_top_keys_work_after_ctrl_z_and_fg(netns, tmux):
    n = netns
    cmd = " ".join(n.exec_args(n.b, sys.executable, "-m", "netmon", "top", "-i", n.b_if))
    subprocess.run(["tmux", "new-session", "-d", "-s", tmux, "-x", "80", "-y", "24", "bash"],
                   check=True)
    keys = ["tmux", "send-keys", "-t", tmux]
    subprocess.run([*keys, f"cd {ROOT} && {cmd}; echo rc=$?", "Enter"], check=True)
    assert "sort: rate" in wait_pane(tmux, "sort: rate")
    subprocess.run([*keys, "C-z"], check=True)
    assert "Stopped" in wait_pane(tmux, "Stopped")
    subprocess.run([*keys, "fg", "Enter"], check=True)
    time.sleep(scaled(1.5))  # it runs again, and draws
    subprocess.run([*keys, "s"], check=True)
    screen = wait_pane(tmux, "sort: bytes")
    assert "sort: bytes" in screen, screen
    subprocess.run([*keys, "q"], check=True)
    # The list's "echo rc" is dropped by bash once the job was stopped: the summary
    # (after q, never after a crash) says netmon ended as it should.
    screen = wait_pane(tmux, "packets seen", 30)
    assert "packets seen" in screen and "Traceback" not in screen, screen


# -- 5. kill -9 with an XDP program attached through netlink ----------------------------

@pytest.mark.kernel
def test_the_xdp_program_a_killed_netmon_left_is_removed_by_the_next(netns):
    n = netns
    nm = Netmon(n, "--attach", "netlink").wait_ready()  # netlink: it outlives netmon
    left = n.xdp_prog_id()
    assert left != 0
    nm.proc.kill()
    nm.proc.wait()
    assert n.xdp_prog_id() == left  # nothing detaches a netlink attachment but netmon
    with Netmon(n, "--protocol", "icmp", "--count", "1") as again:
        again.wait_ready()
        assert (f"Note: removed the XDP program (id {left}) a netmon that is no longer running "
                f"(pid {nm.proc.pid}) left on {n.b_if}") in again.err
        assert n.xdp_prog_id() not in (0, left)  # its own, in XDP: the interface was freed
        ping(n, n.b_ip)
        assert again.wait_exit() == 0
    assert n.xdp_prog_id() == 0


@pytest.mark.kernel
def test_a_running_netmons_xdp_program_is_left_alone(netns):
    n = netns
    with Netmon(n, "--attach", "netlink") as first:
        first.wait_ready()
        theirs = n.xdp_prog_id()
        with Netmon(n, "--count", "1") as second:
            second.wait_ready()
            assert not [line for line in second.err if "removed the XDP program" in line]
            assert f"already has an XDP program (id {theirs})" in "\n".join(second.err)
            second.stop()
        assert n.xdp_prog_id() == theirs
        first.stop()
    assert n.xdp_prog_id() == 0


# -- 12. what start-up waits on ------------------------------------------------------------

@pytest.mark.kernel
def test_the_verifiers_instruction_count_is_read_back():
    from netmon.kernel import facts
    from netmon.kernel.loader import MonitorProgram, verified_insns

    with MonitorProgram(nm_config.pack(), hooks=("xdp",)) as prog:
        insns = verified_insns(prog.prog_fd)
    if not facts.supports("verified_insns"):
        assert insns is None
    else:
        assert insns > 1000  # the parser's paths: tens of thousands at the least
