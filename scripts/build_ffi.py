#!/usr/bin/env python3
"""Write cffi's out-of-line ABI modules: netmon/kernel/_libbpf_ffi.py for
netmon/kernel/libbpf.h, and netmon/expression/_pcap_ffi.py for netmon/expression/pcap.h.

cffi parses the C declarations here, at build time, and writes them out as Python
modules; at run time netmon imports them and nothing parses C (pycparser cost ~60 ms
of every start, minutes under emulation). No compiler is involved: it is still ABI
mode, and the wheel stays py3-none-any. libpcap's declarations get a module of their
own: its struct bpf_insn and struct bpf_program are not libbpf's.

Run by the hatchling build hook (hatch_build.py) for wheels, sdists and
editable installs.

    scripts/build_ffi.py [ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

# (module, its declarations, extra declarations) relative to the root
MODULES = [
    # libbpf prints through vsnprintf; declared beside libbpf's own API.
    ("netmon.kernel._libbpf_ffi", "netmon/kernel/libbpf.h",
     "int vsnprintf(char *str, size_t size, const char *format, void *ap);"),
    ("netmon.expression._pcap_ffi", "netmon/expression/pcap.h", ""),
]
TARGETS = [module.replace(".", "/") + ".py" for module, _, _ in MODULES]


def build(root: Path) -> list[Path]:
    targets = []
    for (module, header, extra), target in zip(MODULES, TARGETS):
        ffibuilder = FFI()
        ffibuilder.cdef((root / header).read_text())
        if extra:
            ffibuilder.cdef(extra)
        ffibuilder.set_source(module, None)
        ffibuilder.emit_python_code(str(root / target))
        targets.append(root / target)
    return targets


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    for target in build(root):
        print(target)
