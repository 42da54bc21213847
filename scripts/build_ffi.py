#!/usr/bin/env python3
"""Write netmon/kernel/_libbpf_ffi.py: cffi's out-of-line ABI module for netmon/kernel/libbpf.h.

cffi parses the C declarations here, at build time, and writes them out as a
Python module; at run time netmon imports that module and nothing parses C
(pycparser cost ~60 ms of every start, minutes under emulation). No compiler is
involved: it is still ABI mode, and the wheel stays py3-none-any.

Run by the hatchling build hook (hatch_build.py) for wheels, sdists and
editable installs.

    scripts/build_ffi.py [ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

MODULE = "netmon.kernel._libbpf_ffi"
# libbpf prints through this; declared beside libbpf's own API.
EXTRA = "int vsnprintf(char *str, size_t size, const char *format, void *ap);"


def build(root: Path) -> Path:
    ffibuilder = FFI()
    ffibuilder.cdef((root / "netmon" / "kernel" / "libbpf.h").read_text())
    ffibuilder.cdef(EXTRA)
    ffibuilder.set_source(MODULE, None)
    target = root / "netmon" / "kernel" / "_libbpf_ffi.py"
    ffibuilder.emit_python_code(str(target))
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)))
