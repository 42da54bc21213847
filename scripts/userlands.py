#!/usr/bin/env python3
"""Install the wheel, and run its kernel tests, in the userlands of Proxmox VE 7, 8 and 9.

Each userland is a Debian root filesystem made with mmdebstrap from the Debian
archive this machine's own apt sources name (kept as build/userlands/SUITE-*.tar).
The wheel (dist/, `make wheel`) goes into a virtualenv of that Debian's Python,
with its libbpf, and the kernel tests (tests/ copied beside it, so that netmon is
imported from the wheel) run there on the running kernel: chroot in a private
mount namespace, the host's /sys, /dev and CA bundle bound in. Debian 11's
libbpf 0.3 must give the one-line "too old" error instead.

Prints a line per userland, then `userlands: N passed, M failed`; exits non-zero
if any failed.

    scripts/userlands.py [--only 11,12,13] [--wheel WHEEL]   (make test-userlands)
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from debian_archive import debian_mirror

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "userlands"
COMMON = ["python3", "python3-venv", "iproute2", "iputils-ping", "procps", "util-linux",
          "ethtool", "ca-certificates"]


@dataclass(frozen=True)
class Userland:
    debian: str
    suite: str
    proxmox: str
    libbpf: str  # the package
    tests: bool  # False: netmon must refuse the old libbpf in one line
    libpcap: str = ""  # the package with libpcap.so.0.8, for filter expressions


USERLANDS = {
    "11": Userland("11", "bullseye", "Proxmox VE 7", "libbpf0", tests=False),
    "12": Userland("12", "bookworm", "Proxmox VE 8", "libbpf1", tests=True,
                   libpcap="libpcap0.8"),
    "13": Userland("13", "trixie", "Proxmox VE 9", "libbpf1", tests=True,
                   libpcap="libpcap0.8t64"),
}

# The kernel tests that exercise what a userland changes (Python, libbpf, cffi, iproute2,
# the wheel's own object): load and test runs, attach, lines, directions, flows, and
# the exporters. The kernel matrix covers kernels; make test the whole suite.
TESTS = [
    "tests/kernel/test_program.py",
    "tests/kernel/test_lines.py::test_every_protocol_unfiltered",
    "tests/kernel/test_lines.py::test_banner_and_summary_go_to_stderr",
    "tests/kernel/test_lines.py::test_filters",
    "tests/kernel/test_lines.py::test_attach_modes",
    "tests/kernel/test_lines.py::test_a_tiny_memlock_limit_is_no_obstacle",
    "tests/kernel/test_directions.py::test_egress_shows_what_the_interface_sends",
    "tests/kernel/test_flow_table.py::test_reading_the_tables_loses_no_count",
    "tests/kernel/test_flow_table.py::test_a_table_too_small_counts_the_overflow",
    "tests/kernel/test_export.py::test_a_collector_that_is_not_there_stops_nothing",
    "tests/kernel/test_export.py::test_a_metrics_port_in_use_is_one_line",
    # Filter expressions: the userland's own libpcap compiles them (Debian 13 renamed
    # the package), the wheel's translation is spliced into its object by its libbpf.
    "tests/kernel/test_expression.py::test_the_corpus_gets_libpcaps_verdicts[tcp port 443 and host 10.0.0.5-xdp]",
    "tests/kernel/test_expression.py::test_a_long_or_chain_is_verified_in_each_program",
    "tests/kernel/test_expression.py::test_an_expression_at_every_hook[xdp-in]",
]
SKIP = ["tests/kernel/test_program.py::test_random_specs_agree"]  # slow, and the same everywhere
PIP_PACKAGES = ["pytest", "hypothesis", "scapy"]


def rootfs(u: Userland, mirror: str) -> Path:
    """SUITE-PACKAGES.tar, made once with mmdebstrap (named by what it holds, so that a
    changed package list makes a new one)."""
    packages = [*COMMON, u.libbpf, *([u.libpcap] if u.libpcap else [])]
    tag = hashlib.sha256(",".join(packages).encode()).hexdigest()[:8]
    tar = WORK / f"{u.suite}-{tag}.tar"
    if not tar.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        part = tar.with_suffix(".part.tar")
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase",
                        f"--include={','.join(packages)}", u.suite, str(part),
                        f"deb {mirror} {u.suite} main"], check=True)
        part.rename(tar)
    return tar


def inside(u: Userland) -> str:
    """The shell script run in the userland."""
    install = (f"python3 -m venv /opt/netmon && /opt/netmon/bin/pip install -q "
               f"--disable-pip-version-check /w/$(cd /w && ls netmon-*.whl) "
               f"{' '.join(PIP_PACKAGES) if u.tests else ''}")
    head = (f"set -e; . /etc/os-release; echo \"$PRETTY_NAME, $(python3 -V), "
            f"$(dpkg-query -W -f '${{Package}} ${{Version}}' {u.libbpf})\"; {install}; cd /w; ")
    if u.tests:
        deselect = " ".join(f"--deselect {t}" for t in SKIP)
        return head + (f"exec /opt/netmon/bin/python -m pytest -q -p no:cacheprovider "
                       f"{deselect} {shlex.join(TESTS)}")
    # netmon must stop at libbpf, in one line, with the environment exit status (5).
    return head + ("set +e; /opt/netmon/bin/netmon -i lo 2>/w/err; rc=$?; cat /w/err; "
                   "test $rc -eq 5 && test $(wc -l </w/err) -eq 1 && "
                   "grep -q 'libbpf 0\\.[0-9.]* is too old' /w/err")


def run(u: Userland, tar: Path, wheel: Path) -> tuple[bool, str]:
    root = WORK / u.suite
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "-xf", str(tar)], check=True)
    w = root / "w"
    w.mkdir()
    shutil.copy(wheel, w)
    shutil.copytree(ROOT / "tests", w / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    if Path("/etc/pip.conf").exists():  # the host's package index settings
        shutil.copy("/etc/pip.conf", root / "etc" / "pip.conf")
    r = shlex.quote(str(root))
    # The root a mount point: `ip netns exec` makes / a slave mount, which needs one.
    mounts = (f"mount --bind {r} {r} && mount -t proc proc {r}/proc && mount --rbind /sys {r}/sys && "
              f"mount --rbind /dev {r}/dev && mount -t tmpfs tmpfs {r}/run && "
              f"mount -t tmpfs tmpfs {r}/tmp && "
              # pip must trust what the host trusts (a proxy's authority, say)
              f"mount --bind -o ro /etc/ssl/certs {r}/etc/ssl/certs && ")
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           mounts + f"exec chroot {r} /bin/sh -c {shlex.quote(inside(u))}"]
    log = WORK / f"{u.suite}.log"
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).returncode
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    shutil.rmtree(root, ignore_errors=True)  # the mount namespace, and its mounts, are gone
    about = lines[0] if lines else "no output"
    last = lines[-1].strip("= ") if lines else ""
    return rc == 0, f"{about}: {last}"


def main() -> int:
    ap = argparse.ArgumentParser(description="netmon's wheel in Debian 11, 12 and 13")
    ap.add_argument("--only", help="comma-separated Debian releases (default: 11,12,13)")
    ap.add_argument("--wheel", help="the wheel to install (default: the one in dist/)")
    args = ap.parse_args()
    wheels = [args.wheel] if args.wheel else glob.glob(str(ROOT / "dist" / "netmon-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"userlands: need exactly one wheel (make wheel), found {wheels}")
    mirror = debian_mirror()
    outcomes = []
    for name in (args.only.split(",") if args.only else list(USERLANDS)):
        u = USERLANDS[name]
        start = time.monotonic()
        ok, line = run(u, rootfs(u, mirror), Path(wheels[0]))
        print(f"userland Debian {u.debian} ({u.proxmox}) {line}: "
              f"{'passed' if ok else 'FAILED'} ({time.monotonic() - start:.0f} s)", flush=True)
        if not ok:
            print(f"  log: {WORK / (u.suite + '.log')}", flush=True)
        outcomes.append(ok)
    passed = sum(outcomes)
    print(f"userlands: {passed} passed, {len(outcomes) - passed} failed")
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
