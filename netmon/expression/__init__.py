"""tcpdump's filter language: expressions compiled by libpcap into classic BPF, which
netmon translates into eBPF and runs inside its own programs, at every hook.

    compiled(text)  the classic program, checked; ExpressionInvalid in one line if not
    body(text, target, frame)  its translation for a hook's target (translate.XDP, ...),
                               to put where nm_expr() is called

Each takes the ``netmask`` `ip broadcast` compares with (NETMASK_UNKNOWN, as libpcap
says, where the run knows none), as tcpdump passes it to pcap_compile(): one run
compiles its expression with one.

It depends on nothing of netmon's above it (libpcap through cffi, and netmon.errors):
which target a hook needs is the caller's to say (kernel/loader.py), as pwru's
internal/libpcap leaves it to its caller.
"""

from __future__ import annotations

import functools

NETMASK_UNKNOWN = 0xFFFFFFFF  # libpcap's PCAP_NETMASK_UNKNOWN
FILE_NETMASK = 0  # tcpdump -r's: `ip broadcast` is 0.0.0.0 or 255.255.255.255


@functools.lru_cache(maxsize=8)
def compiled(text: str, netmask: int = NETMASK_UNKNOWN) -> tuple:
    """libpcap's classic BPF for the expression on Ethernet frames, checked for what
    netmon can run."""
    from netmon.expression import cbpf, libpcap

    insns = libpcap.compile(text, netmask)
    cbpf.check(insns, text)
    return insns


def reads_the_interface(text: str, netmask: int = NETMASK_UNKNOWN) -> bool:
    """Whether it asks what only a live hook knows: `inbound`, `outbound`, `ifindex`."""
    from netmon.expression import cbpf

    return any(cbpf.extension(i) is not None for i in compiled(text, netmask))


def reads_the_length(text: str, netmask: int = NETMASK_UNKNOWN) -> bool:
    """Whether it reads the wire length (`len`, `greater`, `less`)."""
    from netmon.expression import cbpf

    return any(cbpf.mode(i.code) == cbpf.LEN and cbpf.cls(i.code) in (cbpf.LD, cbpf.LDX)
               for i in compiled(text, netmask))


def farthest_read(text: str, netmask: int = NETMASK_UNKNOWN) -> int:
    """How far into the frame its packet loads can reach at the least: the largest
    offset + size of an absolute or indexed load (an index only adds to it); 0 for none.
    A hook that holds fewer bytes can never answer a load past them."""
    from netmon.expression import cbpf

    return max((i.k + (cbpf.SIZE_BYTES[cbpf.size(i.code)] if cbpf.mode(i.code) != cbpf.MSH
                       else 1)
                for i in compiled(text, netmask)
                if cbpf.cls(i.code) in (cbpf.LD, cbpf.LDX)
                and cbpf.mode(i.code) in (cbpf.ABS, cbpf.IND, cbpf.MSH)
                and i.k < cbpf.SKF_AD_OFF), default=0)


def body(text: str, target, frame: int, netmask: int = NETMASK_UNKNOWN) -> bytes:
    """The expression translated for a hook's ``target`` (a translate.Target), to put in
    place of a call whose caller keeps its struct nm_expr_frame at r10 + frame."""
    from netmon.expression import ebpf, translate

    try:
        return ebpf.encode(translate.translate(compiled(text, netmask), target, frame))
    except ebpf.TooFar as exc:
        raise too_long(text, exc) from None


def too_long(text: str, exc: Exception) -> Exception:
    """The one-line error for a translation past what a BPF jump reaches, in itself or
    in the program it goes into."""
    from netmon.errors import ExpressionInvalid

    return ExpressionInvalid(f"netmon cannot run this expression in the kernel: it is "
                             f"too long ({exc}, past what a BPF jump reaches)", text)
