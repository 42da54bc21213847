"""Build hook: compile the BPF object with clang and write the cffi module whenever a
wheel, sdist or editable install is built.

The object's recipe lives in the Makefile (one place); this hook only runs it.
cffi's out-of-line ABI module comes from scripts/build_ffi.py (cffi is a build
requirement). Both go into the build as artifacts, so the wheel is py3-none-any and the
target host needs no compiler and parses no C. An sdist ships the object too: a wheel built
from it on a host without clang reuses that object, since make sees it fresh.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
from pathlib import Path

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
        builder = runpy.run_path(os.path.join(root, "scripts", "build_ffi.py"))
        builder["build"](Path(root))
        build_data["artifacts"].extend(builder["TARGETS"])
