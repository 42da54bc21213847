"""The wheel, as a Proxmox host gets it: built once, installed where no compiler exists.

The wheel is built by scripts/build-wheel.sh (as `make wheel` and Dockerfile.build do),
installed into a fresh virtualenv inside a private mount namespace where /dev/null is
bound over every compiler, and then monitors real traffic from there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT
from tests.support.netns import NetnsPair, ping
from tests.support.runner import Netmon

pytestmark = pytest.mark.kernel

COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "clang-14", "clang-15", "clang-16", "llc",
             "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-gcc-12", "aarch64-linux-gnu-gcc", "tcc")


def without_compilers() -> list[str]:
    """A command prefix that runs the rest in a mount namespace with the compilers blanked."""
    paths = sorted({os.path.realpath(p) for name in COMPILERS if (p := shutil.which(name))})
    binds = "".join(f"mount --bind /dev/null {shlex.quote(p)} && " for p in paths)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", binds + 'exec "$@"',
            "sh"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A virtualenv with the wheel installed, compilers hidden throughout."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([str(ROOT / "scripts" / "build-wheel.sh"), str(tmp / "dist")], check=True,
                   cwd=ROOT, capture_output=True)
    (wheel,) = (tmp / "dist").glob("netmon-*-py3-none-any.whl")
    hide = without_compilers()
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    res = subprocess.run([*hide, str(venv / "bin" / "pip"), "install", "-q",
                          "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr
    return wheel, venv, hide


def test_the_wheel_is_pure_python_with_the_object_inside(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "netmon/_bpf/xdp_monitor.bpf.o" in names
    # cffi's declarations, written at build time: nothing parses C on the target.
    assert {"netmon/kernel/_libbpf_ffi.py", "netmon/expression/_pcap_ffi.py"} <= set(names)
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    # The Prometheus rules and the Grafana dashboard, for PREFIX/share/netmon.
    data = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    assert {"share/netmon/prometheus/netmon-rules.yml",
            "share/netmon/prometheus/netmon-rules.test.yml",
            "share/netmon/grafana/netmon-dashboard.json"} <= data, data
    assert "Tag: py3-none-any" in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()


def test_compilers_really_are_hidden(installed):
    _, _, hide = installed
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            res = subprocess.run([*hide, name, "--version"], capture_output=True)
            assert res.returncode != 0, f"{name} still runs"


def test_installed_copy_monitors_real_traffic(installed):
    _, venv, hide = installed
    where = subprocess.run([*hide, str(venv / "bin" / "python"), "-c",
                            "import netmon.kernel.loader as p; print(p.object_path())"],
                           capture_output=True, text=True, cwd="/", check=True).stdout.strip()
    assert where.startswith(str(venv)), where
    with NetnsPair() as n:
        with Netmon(n, "--protocol", "icmp", "--count", "1",
                    command=[*hide, str(venv / "bin" / "netmon")]) as nm:
            nm.wait_ready()
            ping(n, n.b_ip)
            assert nm.wait_exit() == 0
        assert nm.out == [f"ICMP {n.a_ip} -> {n.b_ip} ({14 + 20 + 8 + 56}b)"]
        assert n.xdp_prog_id() == 0
        # A filter expression: libpcap from the system, the translation spliced in.
        with Netmon(n, "--count", "1", "icmp", "and", "src", "host", n.a_ip,
                    command=[*hide, str(venv / "bin" / "netmon")]) as nm:
            nm.wait_ready()
            ping(n, n.b_ip)
            assert nm.wait_exit() == 0
        assert nm.out == [f"ICMP {n.a_ip} -> {n.b_ip} ({14 + 20 + 8 + 56}b)"]
