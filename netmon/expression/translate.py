"""Classic BPF (libpcap's output) translated into eBPF: what netmon puts in place of
the call to ``nm_expr()`` in bpf/xdp_monitor.bpf.c (netmon/kernel/splice.py).

It runs inline, in its caller's frame: a BPF-to-BPF call and return cost more than a
short expression (measured, README). It starts where the call was, with the call's
arguments in place: r1 the hook's context, r2 the frame's first byte, r3 the end of
what direct access reaches, r4 a ``struct nm_expr_frame`` on the caller's stack, at a
constant offset from r10 (``frame``: the splice reads it off the call site). It leaves
r0 1 when the frame matches, 0 when not, and r6-r9 as it found them (it keeps them in
the frame's room meanwhile); r1-r5 it clobbers, as a call would. Semantics are
libpcap's (bpf_filter.c): a load past the frame's end rejects, as does a division by
zero; A and X are unsigned 32-bit; every compare is unsigned.

Registers: A in r6, X in r9, data in r7, data_end in r8 (callee-saved, so they survive
the helper calls that read bytes direct access cannot reach); ctx, M[] and the
helper's buffer in the frame's room.

At tc the kernel may have taken the frame's outer VLAN tag into the skb's metadata
(args.tagged): the frame's bytes then lack the 4 bytes after the MAC addresses. The
expression is translated twice, for the frame as it is and for that case, where each
load maps the wire offset onto the bytes (the tag itself comes from args), so an
expression sees the frame as it was on the wire at every hook.
"""

from __future__ import annotations

from dataclasses import dataclass

from netmon.expression import cbpf
from netmon.expression import ebpf as e
from netmon.expression.ebpf import R0, R1, R2, R3, R4, R6, R7, R8, R9, R10
from netmon.expression.libpcap import Insn

# struct nm_expr_frame (bpf/xdp_monitor.h): offsets from its start. First its args
# (the caller's), then the room: the caller's r6-r9, ctx, M[0..15], the helpers'
# buffer, a value built byte by byte and its offset (loads across a tag in metadata).
ARG_WIRE_LEN, ARG_IFINDEX, ARG_TAG, ARG_DIR, ARG_TAGGED = 0, 4, 8, 12, 13
NM_DIR_OUT = 1
SAVED_AT = 16
CTX_AT = SAVED_AT + 8 * 4
MEM_AT = CTX_AT + 8
SCRATCH_AT = MEM_AT + 4 * cbpf.MEMWORDS
VALUE_AT = SCRATCH_AT + 8
OFFSET_AT = VALUE_AT + 8
FRAME_SIZE = OFFSET_AT + 8
CALLEE_SAVED = (R6, R7, R8, R9)
MAX_DIRECT = 0xFFFF  # the verifier's MAX_PACKET_OFF: direct access reaches no further
ETH_ADDRS = 12  # a tag sits after the MAC addresses
TAG_LEN = 4

# Helpers that copy bytes of the frame direct access cannot reach.
BPF_FUNC_SKB_LOAD_BYTES = 26
BPF_FUNC_XDP_LOAD_BYTES = 189


@dataclass(frozen=True)
class Target:
    """What the hook offers the expression.

    ``load_bytes``: the helper for bytes past data_end (None: there are none to read,
    a load there rejects); ``tagged``: whether the frame's outer tag can be in metadata.
    """
    load_bytes: int | None
    tagged: bool
    reach: int = MAX_DIRECT  # data + reach: the furthest a load may read


XDP = Target(load_bytes=None, tagged=False)
XDP_FRAGS = Target(load_bytes=BPF_FUNC_XDP_LOAD_BYTES, tagged=False)  # >= 5.18
TC = Target(load_bytes=BPF_FUNC_SKB_LOAD_BYTES, tagged=True)


def in_buffer(size: int) -> Target:
    """netmon drops: a copy of the dropped packet's first ``size`` bytes in a map value
    (NM_HDR_BUF, the kernel's side says), where a load's offset must be bounded as a
    number (a pointer compare with its end proves nothing there): loads past them reject."""
    return Target(load_bytes=None, tagged=False, reach=size)


def translate(insns: tuple[Insn, ...], target: Target, frame: int) -> list[e.Insn]:
    """The translation, to put in place of the call (cbpf.check() must have passed);
    ``frame``: where the caller's struct nm_expr_frame is, from r10."""
    if frame % 8 or frame > -FRAME_SIZE:
        raise ValueError(f"no struct nm_expr_frame at r10{frame:+}: not 8-aligned, or "
                         f"not below r10")
    asm = e.Asm()
    for i, reg in enumerate(CALLEE_SAVED):
        asm.stx(8, R10, frame + SAVED_AT + 8 * i, reg)
    asm.stx(8, R10, frame + CTX_AT, R1)
    asm.mov64_reg(R7, R2)
    asm.mov64_reg(R8, R3)
    asm.mov32(R6, 0)
    asm.mov32(R9, 0)
    # M[]: the slots the program reads start at 0 (cbpf.check() refused any read before a
    # write; the verifier wants them written); most programs use none.
    for slot in sorted({i.k for i in insns if cbpf.mode(i.code) == cbpf.MEM
                        and cbpf.cls(i.code) in (cbpf.LD, cbpf.LDX)}):
        asm.st(4, R10, frame + MEM_AT + 4 * slot, 0)
    if target.tagged:
        asm.ldx(1, R1, R10, frame + ARG_TAGGED)
        asm.jump_if(e.JNE, R1, 0, "tagged")
    # A frame that holds every byte the constant loads read: one bounds check here, none
    # at each of them (the verifier carries this one to them all).
    limit = fast_limit(insns)
    if limit:
        asm.mov64_reg(R1, R7)
        asm.alu64(e.ADD, R1, limit)
        asm.jump_if_reg(e.JGT, R1, R8, "checked")
        _Body(asm, insns, target, frame, tagged=False, prefix="f", checked_from=limit).emit()
        asm.label("checked")
    _Body(asm, insns, target, frame, tagged=False, prefix="p").emit()
    if target.tagged:
        asm.label("tagged")
        _Body(asm, insns, target, frame, tagged=True, prefix="t").emit()
    asm.label("reject")
    asm.mov32(R0, 0)
    asm.jump("done")
    asm.label("accept")
    asm.mov32(R0, 1)
    asm.label("done")  # the caller's registers back, and on with the caller
    for i, reg in enumerate(CALLEE_SAVED):
        asm.ldx(8, reg, R10, frame + SAVED_AT + 8 * i)
    return asm.assemble()


FAST_MAX = 128  # the most bytes the one up-front check may cover (a load's offset field)


def fast_limit(insns: tuple[Insn, ...]) -> int:
    """The end of the furthest bytes a constant-offset load reads (within FAST_MAX), or 0."""
    ends = [i.k + cbpf.SIZE_BYTES[cbpf.size(i.code)] for i in insns
            if (cbpf.cls(i.code), cbpf.mode(i.code)) in ((cbpf.LD, cbpf.ABS), (cbpf.LDX, cbpf.MSH))
            and cbpf.extension(i) is None]
    ends = [end for end in ends if end <= FAST_MAX]
    return max(ends, default=0)


class _Body:
    """One translation of the classic program. ``checked_from``: constant loads that end
    before it need no check of their own (one was made before this translation)."""

    def __init__(self, asm: e.Asm, insns: tuple[Insn, ...], target: Target, frame: int,
                 tagged: bool, prefix: str, checked_from: int = 0):
        self.asm, self.insns, self.target, self.tagged = asm, insns, target, tagged
        self.frame, self.prefix, self.checked_from = frame, prefix, checked_from

    def at(self, pc: int) -> str:
        return f"{self.prefix}{pc}"

    def emit(self) -> None:
        for pc, insn in enumerate(self.insns):
            self.asm.label(self.at(pc))
            self.one(pc, insn)

    def one(self, pc: int, insn: Insn) -> None:
        asm, c, k = self.asm, insn.code, insn.k
        kind = cbpf.cls(c)
        if kind == cbpf.LD:
            self.load_a(insn)
        elif kind == cbpf.LDX:
            if not self.load_plain(R9, cbpf.mode(c), k):  # MSH: X = 4 * (P[k] & 0xf)
                self.load_const(R9, 1, k)
                asm.alu32(e.AND, R9, 0xF)
                asm.alu32(e.LSH, R9, 2)
        elif kind == cbpf.ST:
            asm.stx(4, R10, self.frame + MEM_AT + 4 * k, R6)
        elif kind == cbpf.STX:
            asm.stx(4, R10, self.frame + MEM_AT + 4 * k, R9)
        elif kind == cbpf.ALU:
            self.alu(insn)
        elif kind == cbpf.JMP:
            self.jmp(pc, insn)
        elif kind == cbpf.RET:
            r = cbpf.rval(c)
            if r == cbpf.RVAL_K:
                asm.jump("accept" if k else "reject")
            else:
                asm.jump_if(e.JNE, R6 if r == cbpf.RVAL_A else R9, 0, "accept", wide=False)
                asm.jump("reject")
        else:  # MISC
            if cbpf.op(c) == cbpf.TAX:
                asm.mov64_reg(R9, R6)
            else:
                asm.mov64_reg(R6, R9)

    # --- loads into A ---------------------------------------------------------------
    def load_plain(self, dst: int, m: int, k: int) -> bool:
        """A or X from a constant, memory or the wire length; False for a packet load."""
        if m == cbpf.IMM:
            self.asm.mov32(dst, k)
        elif m == cbpf.MEM:
            self.asm.ldx(4, dst, R10, self.frame + MEM_AT + 4 * k)
        elif m == cbpf.LEN:
            self.wire_len(dst)
        else:
            return False
        return True

    def load_a(self, insn: Insn) -> None:
        asm, c, k = self.asm, insn.code, insn.k
        m = cbpf.mode(c)
        if self.load_plain(R6, m, k):
            return
        if m == cbpf.ABS:
            ext = cbpf.extension(insn)
            if ext is not None:
                self.extension(ext)
            else:
                self.load_const(R6, cbpf.SIZE_BYTES[cbpf.size(c)], k)
        else:  # IND: P[X + k]
            asm.mov32(R1, k)
            asm.mov64_reg(R2, R9)
            asm.alu64_reg(e.ADD, R2, R1)
            self.load_at_r2(R6, cbpf.SIZE_BYTES[cbpf.size(c)])

    def wire_len(self, dst: int) -> None:
        self.asm.ldx(4, dst, R10, self.frame + ARG_WIRE_LEN)

    def extension(self, ext: int) -> None:
        asm = self.asm
        if ext == cbpf.SKF_AD_IFINDEX:
            asm.ldx(4, R6, R10, self.frame + ARG_IFINDEX)
        else:  # SKF_AD_PKTTYPE: PACKET_OUTGOING for what the interface sends, else HOST (0)
            asm.ldx(1, R6, R10, self.frame + ARG_DIR)
            asm.alu32(e.MUL, R6, cbpf.PACKET_OUTGOING // NM_DIR_OUT)

    def load_const(self, dst: int, size: int, k: int) -> None:
        """dst = the frame's `size` bytes at wire offset k, big endian; reject past its end."""
        if not self.tagged or k + size <= ETH_ADDRS:
            self.load_bytes_const(dst, size, k)
        elif k >= ETH_ADDRS + TAG_LEN:
            self.load_bytes_const(dst, size, k - TAG_LEN)
        else:  # the load reads some of the tag: byte by byte
            asm = self.asm
            asm.mov32(R0, 0)
            asm.stx(4, R10, self.frame + VALUE_AT, R0)
            for i in range(k, k + size):
                if i < ETH_ADDRS:
                    self.load_bytes_const(R3, 1, i)
                elif i < ETH_ADDRS + TAG_LEN:
                    self.tag_byte(R3, i)
                else:
                    self.load_bytes_const(R3, 1, i - TAG_LEN)
                asm.ldx(4, R0, R10, self.frame + VALUE_AT)
                asm.alu32(e.LSH, R0, 8)
                asm.alu32_reg(e.OR, R0, R3)
                asm.stx(4, R10, self.frame + VALUE_AT, R0)
            asm.ldx(4, dst, R10, self.frame + VALUE_AT)

    def tag_byte(self, dst: int, i: int) -> None:
        """Byte i (12..15) of the wire frame: the metadata tag's TPID and TCI."""
        asm = self.asm
        asm.ldx(4, dst, R10, self.frame + ARG_TAG)
        asm.alu32(e.RSH, dst, 8 * (ETH_ADDRS + TAG_LEN - 1 - i))
        asm.alu32(e.AND, dst, 0xFF)

    def load_bytes_const(self, dst: int, size: int, off: int) -> None:
        """dst = `size` bytes at offset `off` of the bytes the hook has, big endian."""
        asm = self.asm
        if off + size <= self.checked_from:
            asm.ldx(size, dst, R7, off)
            self.big_endian(dst, size)
            return
        slow, done = asm.new_label("slow"), asm.new_label("done")
        if off + size > self.target.reach:
            asm.mov32(R2, off)
            self.slow_load(dst, size)
            return
        asm.mov64_reg(R1, R7)
        asm.alu64(e.ADD, R1, off)
        asm.mov64_reg(R2, R1)
        asm.alu64(e.ADD, R2, size)
        asm.jump_if_reg(e.JGT, R2, R8, slow)
        self.read_r1(dst, size, slow, done, off)

    def load_at_r2(self, dst: int, size: int) -> None:
        """dst = the frame's `size` bytes at the wire offset in r2 (64 bits, from X + k)."""
        if not self.tagged:
            self.load_bytes_at_r2(dst, size)
            return
        asm = self.asm
        low, high, done = asm.new_label("low"), asm.new_label("high"), asm.new_label("done")
        asm.jump_if(e.JGE, R2, ETH_ADDRS + TAG_LEN, high)
        asm.jump_if(e.JLE, R2, ETH_ADDRS - size, low)
        # Some of the tag: byte by byte, each from the bytes or the tag.
        asm.stx(8, R10, self.frame + OFFSET_AT, R2)
        asm.mov32(R0, 0)
        asm.stx(4, R10, self.frame + VALUE_AT, R0)
        for j in range(size):
            from_tag, from_bytes, next_ = (asm.new_label("tag"), asm.new_label("bytes"),
                                           asm.new_label("next"))
            asm.ldx(8, R2, R10, self.frame + OFFSET_AT)
            asm.alu64(e.ADD, R2, j)
            asm.jump_if(e.JLT, R2, ETH_ADDRS, from_bytes)
            asm.jump_if(e.JLT, R2, ETH_ADDRS + TAG_LEN, from_tag)
            asm.alu64(e.SUB, R2, TAG_LEN)
            asm.label(from_bytes)
            self.load_bytes_at_r2(R3, 1)
            asm.jump(next_)
            asm.label(from_tag)  # tag byte r2 - 12: (tag >> 8 * (15 - r2)) & 0xff
            asm.mov32(R3, ETH_ADDRS + TAG_LEN - 1)
            asm.alu64_reg(e.SUB, R3, R2)
            asm.alu64(e.LSH, R3, 3)
            asm.ldx(4, R0, R10, self.frame + ARG_TAG)
            asm.alu64_reg(e.RSH, R0, R3)
            asm.mov64_reg(R3, R0)
            asm.alu32(e.AND, R3, 0xFF)
            asm.label(next_)
            asm.ldx(4, R0, R10, self.frame + VALUE_AT)
            asm.alu32(e.LSH, R0, 8)
            asm.alu32_reg(e.OR, R0, R3)
            asm.stx(4, R10, self.frame + VALUE_AT, R0)
        asm.ldx(4, dst, R10, self.frame + VALUE_AT)
        asm.jump(done)
        asm.label(high)
        asm.alu64(e.SUB, R2, TAG_LEN)
        asm.label(low)
        self.load_bytes_at_r2(dst, size)
        asm.label(done)

    def load_bytes_at_r2(self, dst: int, size: int) -> None:
        """dst = `size` bytes at the offset in r2 of the bytes the hook has, big endian."""
        asm = self.asm
        slow, done = asm.new_label("slow"), asm.new_label("done")
        # Bounds the verifier can follow: an offset direct access may reach, then the end.
        asm.jump_if(e.JGT, R2, self.target.reach - size, slow)
        asm.mov64_reg(R1, R7)
        asm.alu64_reg(e.ADD, R1, R2)
        asm.mov64_reg(R3, R1)
        asm.alu64(e.ADD, R3, size)
        asm.jump_if_reg(e.JGT, R3, R8, slow)
        self.read_r1(dst, size, slow, done)

    def read_r1(self, dst: int, size: int, slow: str, done: str, off: int | None = None) -> None:
        """The load itself, at r1 (bounds checked), then its slow path: the helper, with
        the offset in r2 (put there now if it is a constant, ``off``)."""
        asm = self.asm
        asm.ldx(size, dst, R1, 0)
        self.big_endian(dst, size)
        asm.jump(done)
        asm.label(slow)
        if off is not None:
            asm.mov32(R2, off)
        self.slow_load(dst, size)
        asm.label(done)

    def slow_load(self, dst: int, size: int) -> None:
        """Bytes past what direct access reaches (r2: their offset): copied by the hook's
        helper, or none (reject)."""
        asm = self.asm
        if self.target.load_bytes is None:
            asm.jump("reject")
            return
        asm.mov64_reg(R1, R2)
        asm.alu64(e.RSH, R1, 32)
        asm.jump_if(e.JNE, R1, 0, "reject")  # past 4 GiB: past any frame
        asm.ldx(8, R1, R10, self.frame + CTX_AT)
        asm.mov64_reg(R3, R10)
        asm.alu64(e.ADD, R3, self.frame + SCRATCH_AT)
        asm.mov32(R4, size)
        asm.call(self.target.load_bytes)
        asm.jump_if(e.JNE, R0, 0, "reject")  # past the frame's end
        asm.ldx(size, dst, R10, self.frame + SCRATCH_AT)
        self.big_endian(dst, size)

    def big_endian(self, dst: int, size: int) -> None:
        if size > 1:
            self.asm.to_be(dst, 8 * size)

    # --- arithmetic and jumps ----------------------------------------------------------
    def alu(self, insn: Insn) -> None:
        asm, c, k = self.asm, insn.code, insn.k
        o = cbpf.op(c)
        if o == cbpf.NEG:
            asm.alu32(e.NEG, R6, 0)
            return
        if cbpf.src(c) == cbpf.X:
            if o in (cbpf.DIV, cbpf.MOD):
                asm.jump_if(e.JEQ, R9, 0, "reject", wide=False)
            if o in (cbpf.LSH, cbpf.RSH):  # libpcap: a shift by 32 or more gives 0
                big, done = asm.new_label("big"), asm.new_label("done")
                asm.jump_if(e.JGE, R9, 32, big, wide=False)
                asm.alu32_reg(o, R6, R9)
                asm.jump(done)
                asm.label(big)
                asm.mov32(R6, 0)
                asm.label(done)
                return
            asm.alu32_reg(o, R6, R9)
            return
        if o in (cbpf.DIV, cbpf.MOD) and k == 0:
            asm.jump("reject")
        elif o in (cbpf.LSH, cbpf.RSH) and k >= 32:
            asm.mov32(R6, 0)
        else:
            asm.alu32(o, R6, k)

    def jmp(self, pc: int, insn: Insn) -> None:
        asm, c, k = self.asm, insn.code, insn.k
        o = cbpf.op(c)
        if o == cbpf.JA:
            asm.jump(self.at(pc + 1 + k))
            return
        yes, no = self.at(pc + 1 + insn.jt), self.at(pc + 1 + insn.jf)
        op = {cbpf.JEQ: e.JEQ, cbpf.JGT: e.JGT, cbpf.JGE: e.JGE, cbpf.JSET: e.JSET}[o]
        if cbpf.src(c) == cbpf.X:
            asm.jump_if_reg(op, R6, R9, yes, wide=False)
        else:
            asm.jump_if(op, R6, k, yes, wide=False)
        if insn.jf:
            asm.jump(no)
