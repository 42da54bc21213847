#!/usr/bin/env python3
"""Build the wheel with Dockerfile.build for real, with podman, and check it is `make wheel`'s.

No container registry is reachable here, so the base image the Dockerfile names
(debian:bookworm) is made with mmdebstrap from the Debian archive in this
machine's apt sources and imported with `podman import`. Debian's podman 4.3
builds in chroot isolation here (`podman run` does not work on these machines).
pip inside the build trusts what the host trusts: the host's CA bundle and a
pip configuration naming it are mounted read-only (the bundle beside the
image's own certificates, which apt still updates).

Then scripts/build-wheel.sh builds the same commit on the host, and the two
wheels must have the same sha256. Prints both; exits non-zero if they differ.

    scripts/container-wheel.py          (make wheel-container)
"""

from __future__ import annotations

import argparse
import configparser
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from debian_archive import debian_mirror

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "container"
IMAGE = "docker.io/library/debian:bookworm"  # what FROM debian:bookworm resolves to
HOST_CA = "/etc/pip-host-ca.crt"  # where the build sees the host's CA bundle


def base_image() -> None:
    if subprocess.run(["podman", "image", "exists", IMAGE]).returncode == 0:
        return
    tar = WORK / "bookworm.tar"
    if not tar.exists():
        part = tar.with_suffix(".part.tar")
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(part),
                        f"deb {debian_mirror()} bookworm main"], check=True)
        part.rename(tar)
    subprocess.run(["podman", "import", "--quiet", str(tar), IMAGE], check=True,
                   stdout=subprocess.DEVNULL)


def pip_config() -> Path:
    """The host's pip settings (its index), trusting the host's CA bundle at HOST_CA."""
    conf = configparser.ConfigParser()
    conf.read([p for p in ("/etc/pip.conf",) if os.path.exists(p)])
    if not conf.has_section("global"):
        conf.add_section("global")
    conf.set("global", "cert", HOST_CA)
    path = WORK / "pip.conf"
    with open(path, "w") as f:
        conf.write(f)
    return path


def host_ca() -> str:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate):
            return candidate
    sys.exit("container-wheel: no CA bundle on this host for pip to trust")


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main() -> int:
    argparse.ArgumentParser(description="Dockerfile.build with podman, checked against "
                            "make wheel").parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    out, host_out = WORK / "dist", WORK / "host-dist"
    for d in (out, host_out):
        shutil.rmtree(d, ignore_errors=True)
    start = time.monotonic()
    base_image()
    subprocess.run(["podman", "build", "--quiet", "--isolation", "chroot", "--pull=never",
                    "--network=host", "-v", f"{pip_config()}:/etc/pip.conf:ro",
                    "-v", f"{host_ca()}:{HOST_CA}:ro", "-f", "Dockerfile.build",
                    "-o", str(out), "."], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    built = time.monotonic() - start
    # The build's layers are of no further use; only dangling images go.
    subprocess.run(["podman", "image", "prune", "-f"], stdout=subprocess.DEVNULL)
    subprocess.run([str(ROOT / "scripts" / "build-wheel.sh"), str(host_out)], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    (container,) = glob.glob(str(out / "netmon-*.whl"))
    (host,) = glob.glob(str(host_out / "netmon-*.whl"))
    a, b = sha256(container), sha256(host)
    print(f"podman build ({built:.0f} s): {a}  {Path(container).name}")
    print(f"make wheel:           {b}  {Path(host).name}")
    if a != b:
        print("container-wheel: the wheels differ")
        return 1
    print("container-wheel: the same wheel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
