"""Build hook: compile the BPF object with clang whenever a wheel or sdist is built.

The recipe lives in the Makefile (one place); this hook only runs it and adds
the object to the build as an artifact, so the wheel is py3-none-any and the
target host needs no compiler. An sdist ships the object too: a wheel built
from it on a host without clang reuses that object, since make sees it fresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

OBJECT = "netmon/_bpf/xdp_monitor.bpf.o"


class BpfObjectHook(BuildHookInterface):
    PLUGIN_NAME = "bpf-object"

    def initialize(self, version: str, build_data: dict) -> None:
        root = self.root
        target = os.path.join(root, OBJECT)
        if shutil.which("make") is None:
            if not os.path.exists(target):
                raise RuntimeError("building netmon needs make and clang to compile the BPF object")
        else:
            subprocess.run(["make", "-s", "-C", root, OBJECT], check=True)
        build_data["artifacts"].append(OBJECT)
