"""Classic BPF, as libpcap compiles expressions into it: the opcodes, and the checks a
program must pass before netmon translates it (forward jumps inside the program, memory
slots written before they are read, nothing netmon cannot run).

linux/filter.h and pcap/bpf.h define the encoding: class in bits 0-2, then size and mode
(loads) or operation and source (ALU, jumps).
"""

from __future__ import annotations

from netmon.errors import ExpressionInvalid
from netmon.expression.libpcap import Insn

# classes
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
# load sizes and modes
W, H, B = 0x00, 0x08, 0x10
SIZE_BYTES = {W: 4, H: 2, B: 1}
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
# ALU operations (the same numbers as eBPF's)
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
# jumps
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
# operand source; return value source
K, X = 0x00, 0x08
RVAL_K, RVAL_X, RVAL_A = 0x00, 0x08, 0x10
# misc
TAX, TXA = 0x00, 0x80
MEMWORDS = 16

# Linux's classic BPF extensions: loads at negative offsets (SKF_AD_OFF + n). libpcap
# compiles `inbound`/`outbound` and `ifindex N` into them, even for a dead handle.
SKF_AD_OFF = 0xFFFFF000  # -0x1000 as an unsigned 32-bit offset
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8
PACKET_OUTGOING = 4

ALU_OPS = {ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR}


def cls(code: int) -> int:
    return code & 0x07


def size(code: int) -> int:
    return code & 0x18


def mode(code: int) -> int:
    return code & 0xE0


def op(code: int) -> int:
    return code & 0xF0


def src(code: int) -> int:
    return code & 0x08


def rval(code: int) -> int:
    return code & 0x18


def extension(insn: Insn) -> int | None:
    """The Linux extension a load reads (SKF_AD_*), or None for a packet load."""
    if cls(insn.code) == LD and mode(insn.code) == ABS and insn.k >= SKF_AD_OFF:
        return insn.k - SKF_AD_OFF
    return None


def targets(pc: int, insn: Insn) -> list[int]:
    """Where control goes after the instruction (none after a return)."""
    c = insn.code
    if cls(c) == RET:
        return []
    if cls(c) == JMP:
        if op(c) == JA:
            return [pc + 1 + insn.k]
        return [pc + 1 + insn.jt, pc + 1 + insn.jf]
    return [pc + 1]


def check(insns: tuple[Insn, ...], expression: str) -> None:
    """Refuse, in one line, what netmon cannot translate faithfully.

    Jumps: classic BPF's offsets are unsigned, but a `ja` of 2^32 - n wraps around to
    a backward jump (libpcap's `protochain` loops that way). Memory: a slot read on some
    path before it is written (its value would be undefined).
    """
    def refuse(what: str) -> ExpressionInvalid:
        return ExpressionInvalid(f"netmon cannot run this expression in the kernel: {what}",
                                 expression)

    if not insns:
        raise refuse("it compiled to nothing")
    n = len(insns)
    written: list[int | None] = [None] * n  # per instruction: the slots surely written before
    written[0] = 0
    for pc, insn in enumerate(insns):
        c = insn.code
        if written[pc] is None:
            continue  # unreachable
        known = written[pc]
        kind = cls(c)
        if kind in (LD, LDX):
            m = mode(c)
            if m == MEM and not known >> insn.k & 1:
                raise refuse(f"memory slot {insn.k} is read before it is written")
            if m == ABS and insn.k >= SKF_AD_OFF:
                ext = insn.k - SKF_AD_OFF
                if kind != LD or ext not in (SKF_AD_PKTTYPE, SKF_AD_IFINDEX):
                    raise refuse(f"Linux extension {ext} (only inbound, outbound and ifindex "
                                 f"are supported)")
            if kind == LD and m not in (IMM, ABS, IND, MEM, LEN):
                raise refuse(f"instruction {pc} (code {c:#x})")
            if kind == LDX and m not in (IMM, MEM, LEN, MSH):
                raise refuse(f"instruction {pc} (code {c:#x})")
            if m in (MEM,) and insn.k >= MEMWORDS:
                raise refuse(f"memory slot {insn.k}")
        elif kind in (ST, STX):
            if insn.k >= MEMWORDS:
                raise refuse(f"memory slot {insn.k}")
            known |= 1 << insn.k
        elif kind == ALU:
            if op(c) not in ALU_OPS:
                raise refuse(f"instruction {pc} (code {c:#x})")
        elif kind == JMP:
            if op(c) not in (JA, JEQ, JGT, JGE, JSET):
                raise refuse(f"instruction {pc} (code {c:#x})")
        elif kind == MISC:
            if op(c) not in (TAX, TXA):
                raise refuse(f"instruction {pc} (code {c:#x})")
        for t in targets(pc, insn):
            if not pc < t < n:
                raise refuse("a backward jump (protochain, say)" if t <= pc or t >= 1 << 32
                             else f"a jump past the end at instruction {pc}")
            written[t] = known if written[t] is None else written[t] & known
        if kind != RET and kind != JMP and pc + 1 >= n:
            raise refuse("it runs off its end")
