"""Shared fixtures. Kernel tests need root, libbpf.so.1, the built object and netns.

Where those are missing the kernel tests skip with the reason; with
NETMON_REQUIRE_KERNEL=1 (set by .ci/run) they fail instead, so CI cannot pass
without running them for real.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "tcpdump"  # tcpdump's test captures: see PROVENANCE


@functools.lru_cache(maxsize=None)
def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (BPF, XDP and network namespaces)"
    for tool in ("ip", "ping"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 iputils-ping)"
    try:
        from netmon.kernel import libbpf, loader as program

        libbpf.lib()
        program.object_path()
    except Exception as exc:  # the reason is the message
        return str(exc)
    probe = subprocess.run(["ip", "netns", "add", f"nmt-probe-{os.getpid()}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"nmt-probe-{os.getpid()}"], capture_output=True)
    return None


def pytest_runtest_setup(item):
    if "kernel" not in item.keywords:
        return
    reason = kernel_unavailable()
    if reason is None:
        return
    if os.environ.get("NETMON_REQUIRE_KERNEL") == "1":
        pytest.fail(f"kernel test cannot run, but NETMON_REQUIRE_KERNEL=1: {reason}")
    pytest.skip(f"kernel test: {reason}")


@pytest.fixture(autouse=True)
def _reachable_tmp_path(request):
    """netmon gives root up once attached (README: Privileges): what a test hands it in
    its tmp_path after that (a fake /etc/pve to read, rotated captures and a totals
    database made anew to write) must be open to the user it becomes, as a directory
    given to tcpdump -Z must be. pytest makes them root's alone."""
    if "tmp_path" not in request.fixturenames:
        return
    tmp = request.getfixturevalue("tmp_path")
    tmp.chmod(0o777)
    for parent in (tmp.parent, tmp.parent.parent):  # pytest-N, pytest-of-root
        parent.chmod(0o711)


@pytest.fixture
def netns():
    from tests.support.netns import NetnsPair

    with NetnsPair() as pair:
        yield pair


@pytest.fixture(scope="session")
def bpf_objects(tmp_path_factory):
    """Build one of the other BPF programs (bpf/ or tests/bpf/) with the Makefile's recipe."""
    clang = shutil.which(os.environ.get("CLANG", "clang"))
    build = tmp_path_factory.mktemp("bpf")

    def build_object(name: str) -> Path:
        if clang is None:
            pytest.skip(f"needs clang to build {name}.bpf.o")
        out = build / f"{name}.bpf.o"
        subprocess.run(["make", "-s", "-C", str(ROOT), f"BUILD={build}", str(out)], check=True)
        return out

    return build_object


@pytest.fixture(scope="session")
def pass_object(bpf_objects) -> Path:
    """The empty XDP_PASS program: someone else's program, for netmon to leave alone."""
    return bpf_objects("xdp_pass")


@pytest.fixture
def one_cpu():
    """Pin the test to one CPU: test runs then write into one perf ring, in order."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
