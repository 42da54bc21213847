"""libpcap (libpcap.so.0.8), through cffi in ABI mode: a filter expression compiled into
classic BPF for Ethernet frames, as tcpdump compiles it; and classic BPF run on a frame
in user space, as libpcap runs it (the tests hold netmon's kernel code to that).

Loaded only when an expression is given: without one, netmon needs no libpcap.
"""

from __future__ import annotations

from typing import NamedTuple

from netmon.errors import ExpressionInvalid, LibpcapMissing, ObjectMismatch

try:
    from netmon.expression._pcap_ffi import ffi
except ImportError:  # a source tree nobody built
    raise ObjectMismatch("netmon/expression/_pcap_ffi.py is missing: build netmon with "
                         "`make install` or reinstall the wheel") from None

LIBPCAP_SONAME = "libpcap.so.0.8"  # Debian's libpcap0.8 (libpcap0.8t64 from Debian 13)
DLT_EN10MB = 1
SNAPLEN = 262144  # tcpdump's default: loads past a frame's end are what reject, not this
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF

_lib = None


class Insn(NamedTuple):
    """One classic BPF instruction, as libpcap's struct bpf_insn holds it."""
    code: int
    jt: int
    jf: int
    k: int


def lib():
    global _lib
    if _lib is None:
        try:
            _lib = ffi.dlopen(LIBPCAP_SONAME)
        except OSError:
            raise LibpcapMissing(f"filter expressions are compiled by libpcap, and "
                                 f"{LIBPCAP_SONAME} is missing: install the libpcap0.8 package "
                                 f"(libpcap0.8t64 on Debian 13)") from None
    return _lib


def version() -> str:
    return ffi.string(lib().pcap_lib_version()).decode()


def compile(expression: str, netmask: int = PCAP_NETMASK_UNKNOWN,
            linktype: int = DLT_EN10MB) -> tuple[Insn, ...]:
    """The expression as classic BPF for frames of ``linktype`` (Ethernet unless said),
    optimized as tcpdump does; ``netmask`` (IPv4, host order) is what `ip broadcast`
    compares with: the interface's, 0 for a file (tcpdump's), or unknown.

    Raises ExpressionInvalid with libpcap's own message and the expression. Host names
    are resolved here, once, as tcpdump does.
    """
    handle = lib().pcap_open_dead(linktype, SNAPLEN)
    if handle == ffi.NULL:
        raise MemoryError("pcap_open_dead")
    prog = ffi.new("struct bpf_program *")
    try:
        if lib().pcap_compile(handle, prog, expression.encode(), 1, netmask) != 0:
            message = ffi.string(lib().pcap_geterr(handle)).decode(errors="replace")
            raise ExpressionInvalid(message, expression)
        insns = tuple(Insn(i.code, i.jt, i.jf, i.k) for i in prog.bf_insns[0:prog.bf_len])
        lib().pcap_freecode(prog)
        return insns
    finally:
        lib().pcap_close(handle)


class Program:
    """Classic BPF held in libpcap's own form, to run with pcap_offline_filter()."""

    def __init__(self, insns: tuple[Insn, ...]):
        self._insns = ffi.new("struct bpf_insn[]", [tuple(i) for i in insns])
        self._prog = ffi.new("struct bpf_program *", (len(insns), self._insns))
        self._hdr = ffi.new("struct pcap_pkthdr *")

    def matches(self, frame: bytes, wire_len: int | None = None) -> bool:
        """libpcap's verdict on the frame (its first len(frame) bytes, of wire_len)."""
        self._hdr.caplen = len(frame)
        self._hdr.len = len(frame) if wire_len is None else wire_len
        return lib().pcap_offline_filter(self._prog, self._hdr, frame) != 0
