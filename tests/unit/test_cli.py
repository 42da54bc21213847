"""The CLI's contract: bad input is one line on stderr and a non-zero status."""

import pytest

from netmon import __version__, cli
from netmon.cli import ExitStatus


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("argv,fragment", [
    (["--protocol", "xyz"], "unknown protocol 'xyz'"),
    (["--src-ip", "300.1.1.1"], "'300.1.1.1' is not an IP address"),
    (["--dst-ip", "10.0.0.1/8"], "host bits set"),
    (["--src-port", "x"], "'x' is not a port number"),
    (["--dst-port", "70000"], "out of range"),
    (["--protocol", "icmp", "--dst-port", "53"], "port filters need a protocol with ports"),
    (["--count", "0"], "--count"),
    (["--mode", "turbo"], "--mode"),
    (["--buffer-pages", "3"], "power of two"),
    (["--host", "2001:db8::1/129"], "'2001:db8::1/129' is not an IP address"),
    (["--port", "65536"], "out of range"),
    (["--vlan", "4095"], "VLAN id 4095 is out of range"),
    (["--protocol", "esp", "--port", "1"], "not esp"),
    (["--no-such-option"], "No such option"),
    (["-i", "veth1,"], "empty interface name in 'veth1,'"),
    (["-i", "a" * 20], "is not a valid interface name"),
    (["--hook", "xdp", "-Q", "out"], "--hook xdp watches ingress only"),
    (["--direction", "sideways"], "--direction"),
    (["--hook", "ebpf"], "--hook"),
    (["--guest", "0"], "--guest 0: a guest id is 1 to 999999999"),
    (["--print"], "--print, -C, -W and -G go with -w FILE"),
    (["-w", "x.pcapng", "-W", "3"], "-W N needs -C or -G"),
    (["-w", "-", "-C", "10"], "-w - writes to standard output"),
    (["-w", "x.pcapng", "-s", "0"], "--snaplen"),
    (["-w", "x.pcapng", "-s", "70000"], "--snaplen"),
    (["-r", "x.pcap", "--direction", "both"], "-r reads a capture file"),
])
def test_bad_values_are_one_line_and_usage_status(capsys, argv, fragment):
    status, out, err = run_cli(capsys, "-i", "nmt-none0", *argv)
    assert status == ExitStatus.USAGE
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("netmon: error: ")
    assert fragment in err
    assert "Traceback" not in err


def test_version(capsys):
    status, out, _ = run_cli(capsys, "--version")
    assert status == ExitStatus.SUCCESS and out == f"netmon {__version__}\n"


def test_help_lists_the_original_options(capsys):
    status, out, _ = run_cli(capsys, "--help")
    assert status == ExitStatus.SUCCESS
    for opt in ("--interface", "--protocol", "--src-ip", "--dst-ip", "--src-port",
                "--dst-port", "--mode", "--json", "--count", "--version", "--host", "--port",
                "--vlan", "--stats", "--buffer-pages"):
        assert opt in out


def test_missing_interface(capsys, monkeypatch):
    # Everything before the interface lookup passes as root; pretend we are.
    monkeypatch.setattr("netmon.host.system.check_privileges", lambda caps=None: None)
    status, out, err = run_cli(capsys, "-i", "nmt-nope0")
    assert status == ExitStatus.NO_INTERFACE
    assert err.startswith("netmon: error: interface 'nmt-nope0' does not exist; available:")
    assert err.count("\n") == 1


def test_not_root(capsys, monkeypatch):
    monkeypatch.setattr("netmon.host.system.effective_caps", lambda status_text=None: 0)
    status, _, err = run_cli(capsys, "-i", "nmt-none0")
    assert status == ExitStatus.PERMISSION
    assert "netmon needs root" in err and err.count("\n") == 1


def test_missing_libbpf(capsys, monkeypatch):
    from netmon.kernel import libbpf

    monkeypatch.setattr(libbpf, "_lib", None)
    monkeypatch.setattr(libbpf, "LIBBPF_SONAME", "libbpf-nmt-missing.so.1")
    status, _, err = run_cli(capsys, "-i", "nmt-none0")
    assert status == ExitStatus.ENVIRONMENT
    assert "apt-get install libbpf1" in err and err.count("\n") == 1


def test_old_kernel(capsys, monkeypatch):
    monkeypatch.setattr("platform.release", lambda: "4.19.0-26-amd64")
    status, _, err = run_cli(capsys, "-i", "nmt-none0")
    assert status == ExitStatus.ENVIRONMENT
    assert "kernel 4.19.0-26-amd64 is too old" in err


def test_too_old_libbpf(capsys, monkeypatch):
    from netmon.kernel import libbpf

    monkeypatch.setattr(libbpf, "_lib", None)
    monkeypatch.setattr(libbpf, "MIN_VERSION", (99, 0))
    status, _, err = run_cli(capsys, "-i", "nmt-none0")
    assert status == ExitStatus.ENVIRONMENT
    assert "is too old, netmon needs libbpf >= 99.0" in err and err.count("\n") == 1


def test_capture_through_xdp_on_a_kernel_without_xdp_load_bytes(capsys, monkeypatch):
    monkeypatch.setattr("netmon.host.system.check_privileges", lambda caps=None: None)
    monkeypatch.setattr("platform.release", lambda: "5.10.0-30-amd64")
    status, _, err = run_cli(capsys, "-i", "nmt-none0", "--hook", "xdp", "-w", "x.pcapng")
    assert status == ExitStatus.USAGE and err.count("\n") == 1
    assert "capturing (-w) through XDP needs Linux 5.18 or later" in err


def test_an_error_gets_the_status_of_its_nearest_mapped_class(capsys, monkeypatch):
    """The status is looked up along the error's class hierarchy: a subclass of a mapped
    error gets its parent's status, not the default (1); only an error no mapped class
    covers gets 1. Through main(), as a user meets it."""
    from netmon import errors

    class FromAFutureAttach(errors.AttachFailed):
        pass

    class Unmapped(errors.NetmonError):
        pass

    assert cli.exit_status(FromAFutureAttach("x")) == ExitStatus.ATTACH
    assert cli.exit_status(errors.ExpressionInvalid("x", "y")) == ExitStatus.USAGE  # its own row
    assert cli.exit_status(Unmapped("x")) == ExitStatus.ERROR

    def fails(*args, **kw):
        raise FromAFutureAttach("cannot attach to nmt-x0: a reason to come")

    monkeypatch.setattr(cli, "run", fails)
    status, out, err = run_cli(capsys, "-i", "lo")
    assert status == ExitStatus.ATTACH
    assert err == "netmon: error: cannot attach to nmt-x0: a reason to come\n" and out == ""
