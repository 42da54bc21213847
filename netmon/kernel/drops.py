"""What netmon drops needs from the running kernel: the names of its drop reasons, the
functions its drop locations are in, and the kernel's count of drops.

The reasons are enum skb_drop_reason, whose values differ between kernels (members
come and go in the middle): their names are read from this kernel's BTF, never from
a table here. Kernels before 5.17 give no reason at all, only the location.
"""

from __future__ import annotations

import bisect
import functools

from netmon.errors import LibbpfError
from netmon.kernel import libbpf
from netmon.kernel.abi import DROP_KEY
from netmon.kernel.libbpf import ffi

REASON_ENUM = "skb_drop_reason"
REASON_PREFIX = "SKB_DROP_REASON_"
KALLSYMS = "/proc/kallsyms"


@functools.lru_cache(maxsize=1)
def reasons() -> dict[int, str]:
    """This kernel's drop reasons, by value, without their SKB_DROP_REASON_ prefix;
    empty before 5.17 (the kernel has none to give)."""
    lib = libbpf.lib()
    with libbpf.vmlinux_btf() as btf:
        if btf is None:
            return {}
        type_id = lib.btf__find_by_name_kind(btf, REASON_ENUM.encode(), libbpf.BTF_KIND_ENUM)
        if type_id <= 0:
            return {}
        t = lib.btf__type_by_id(btf, type_id)
        members = ffi.cast("struct btf_enum *", ffi.cast("char *", t) + ffi.sizeof(t[0]))
        out = {}
        for i in range(t.info & 0xFFFF):  # vlen
            name = ffi.string(lib.btf__name_by_offset(btf, members[i].name_off)).decode()
            out[members[i].val] = name.removeprefix(REASON_PREFIX)
        return out


def reason_name(value: int) -> str | None:
    """A reason's name on this kernel; None where the kernel gives none (0, < 5.17)."""
    if not value:
        return None
    return reasons().get(value, f"reason {value}")


class Symbols:
    """Kernel text addresses as function+offset, from /proc/kallsyms (read once: by
    load(), or the first time one is asked for)."""

    def __init__(self, path: str = KALLSYMS):
        self._path = path
        self._starts: list[int] | None = None
        self._names: list[str] = []
        self._cache: dict[int, str] = {}

    def load(self) -> None:
        entries = []
        try:
            with open(self._path) as f:
                for line in f:
                    addr, kind, name = line.split()[:3]
                    if kind in "tT":
                        entries.append((int(addr, 16), name))
        except OSError:
            pass
        entries.sort()
        self._starts = [a for a, _ in entries]
        self._names = [n for _, n in entries]
        if self._starts and not any(self._starts):  # kptr_restrict hides the addresses
            self._starts, self._names = [], []

    def name(self, address: int) -> str:
        """``nf_hook_slow+0x10a``; the address in hex where no symbol holds it."""
        text = self._cache.get(address)
        if text is None:
            if self._starts is None:
                self.load()
            i = bisect.bisect_right(self._starts, address) - 1
            text = (f"{self._names[i]}+{address - self._starts[i]:#x}" if i >= 0
                    else f"{address:#x}")
            if len(self._cache) < 65536:
                self._cache[address] = text
        return text


class Names:
    """What a drop's numbers mean on this kernel: its reason's name, its location's
    function and offset."""

    def __init__(self, symbols: Symbols | None = None):
        """Read now (0.2 s of kallsyms, BTF): at the first drop, while the rings fill,
        it cost drops at 40,000 a second (bench n)."""
        self.symbols = symbols or Symbols()
        self.symbols.load()
        reasons()

    def reason(self, value: int) -> str | None:
        return reason_name(value)

    def location(self, address: int) -> str:
        return self.symbols.name(address)


def table(fd: int) -> dict[tuple[int, int, int], int]:
    """The kernel's drops table summed over CPUs: (ifindex, reason, location) -> drops."""
    lib = libbpf.lib()
    cpus = lib.libbpf_num_possible_cpus()
    key, next_key = ffi.new("char[]", DROP_KEY.size), ffi.new("char[]", DROP_KEY.size)
    values = ffi.new("__u64[]", cpus)
    out = {}
    at = ffi.NULL
    while lib.bpf_map_get_next_key(fd, at, next_key) == 0:
        ffi.memmove(key, next_key, DROP_KEY.size)
        at = key
        if lib.bpf_map_lookup_elem(fd, key, values) < 0:
            continue  # deleted meanwhile: never, netmon deletes none
        out[DROP_KEY.unpack(bytes(ffi.buffer(key)))] = sum(values)
    return out


def attach(prog_fd: int) -> int:
    """The program on the tracepoint skb:kfree_skb (a BTF one: its load named it); its
    link's fd, whose close detaches it."""
    fd = libbpf.lib().bpf_raw_tracepoint_open(ffi.NULL, prog_fd)
    if fd < 0:
        raise LibbpfError(-fd, "attaching to the tracepoint skb:kfree_skb")
    return fd
