"""eBPF instructions as the kernel takes them (struct bpf_insn, 8 bytes each), and a small
assembler with labels: what the translator writes its programs in.

Only what the translator needs: 32- and 64-bit ALU, loads and stores, forward and
backward jumps to labels, helper calls, exit.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

# Instruction classes.
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# Sizes and modes (loads and stores).
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, MEM = 0x00, 0x60
SIZES = {1: B, 2: H, 4: W, 8: DW}
# Operand source.
K, X = 0x00, 0x08
# ALU operations.
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
TO_BE = 0x08  # with END: to big endian (a swap on little-endian machines)
# Jump operations.
JA, JEQ, JGT, JGE, JSET, JNE = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
JLT, JLE = 0xA0, 0xB0
CALL, EXIT = 0x80, 0x90
PSEUDO_CALL = 1  # src_reg of a BPF-to-BPF call

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

_INSN = struct.Struct("<BBhi")


def _imm32(value: int) -> int:
    """A 32-bit immediate as the signed field holds it (the kernel reads the same bits)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None  # a jump's label, resolved by Asm.assemble()

    def encode(self) -> bytes:
        return _INSN.pack(self.code, (self.src << 4) | self.dst, self.off, _imm32(self.imm))


class TooFar(ValueError):
    """A jump past the 16-bit offset a BPF jump can hold."""


class Asm:
    """Instructions in order, with labels; assemble() resolves the jumps."""

    def __init__(self):
        self.insns: list[Insn] = []
        self.labels: dict[str, int] = {}
        self._serial = 0

    def new_label(self, hint: str = "L") -> str:
        self._serial += 1
        return f"{hint}.{self._serial}"

    def label(self, name: str) -> None:
        if name in self.labels:
            raise ValueError(f"label {name} placed twice")
        self.labels[name] = len(self.insns)

    def emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
             target: str | None = None) -> None:
        self.insns.append(Insn(code, dst, src, off, imm, target))

    # ALU
    def alu32(self, op: int, dst: int, imm: int) -> None:
        self.emit(ALU | op | K, dst, imm=imm)

    def alu32_reg(self, op: int, dst: int, src: int) -> None:
        self.emit(ALU | op | X, dst, src)

    def alu64(self, op: int, dst: int, imm: int) -> None:
        self.emit(ALU64 | op | K, dst, imm=imm)

    def alu64_reg(self, op: int, dst: int, src: int) -> None:
        self.emit(ALU64 | op | X, dst, src)

    def mov32(self, dst: int, imm: int) -> None:
        """dst = imm as an unsigned 32-bit value (the upper half zero)."""
        self.alu32(MOV, dst, imm)

    def mov64_reg(self, dst: int, src: int) -> None:
        self.alu64_reg(MOV, dst, src)

    def to_be(self, dst: int, bits: int) -> None:
        self.emit(ALU | END | TO_BE, dst, imm=bits)

    # memory
    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        self.emit(LDX | MEM | SIZES[size], dst, src, off)

    def stx(self, size: int, dst: int, off: int, src: int) -> None:
        self.emit(STX | MEM | SIZES[size], dst, src, off)

    def st(self, size: int, dst: int, off: int, imm: int) -> None:
        self.emit(ST | MEM | SIZES[size], dst, off=off, imm=imm)

    # control
    def jump(self, target: str) -> None:
        self.emit(JMP | JA, target=target)

    def jump_if(self, op: int, dst: int, imm: int, target: str, wide: bool = True) -> None:
        """if (dst op imm) goto target; wide: 64-bit compare (imm sign-extended), else 32."""
        self.emit((JMP if wide else JMP32) | op | K, dst, imm=imm, target=target)

    def jump_if_reg(self, op: int, dst: int, src: int, target: str, wide: bool = True) -> None:
        self.emit((JMP if wide else JMP32) | op | X, dst, src, target=target)

    def call(self, helper: int) -> None:
        self.emit(JMP | CALL, imm=helper)

    def exit(self) -> None:
        self.emit(JMP | EXIT)

    def reachable(self) -> list[bool]:
        """Which instructions some path from the first reaches. Falling off the end is
        the caller going on (a translation is put in place of a call)."""
        n = len(self.insns)
        seen = [False] * n
        todo = [0]
        while todo:
            pc = todo.pop()
            if pc >= n or seen[pc]:
                continue
            seen[pc] = True
            insn = self.insns[pc]
            op = insn.code & 0xF0
            if insn.code & 0x07 in (JMP, JMP32) and op == EXIT:
                continue
            if insn.target is not None:
                todo.append(self.labels[insn.target])
                if insn.code & 0x07 == JMP and op == JA:
                    continue
            todo.append(pc + 1)
        return seen

    def assemble(self) -> list[Insn]:
        """The instructions with every jump's offset filled in, those no path reaches
        left out: the verifier refuses a program with any (a constant expression, `32 >
        0`, compiles to a lone `ret`, and the reject path after it is never taken)."""
        keep = self.reachable()
        if not all(keep):
            moved = list(itertools.accumulate(keep, initial=0))  # old index -> new index
            self.labels = {name: moved[at] for name, at in self.labels.items()}
            self.insns = [insn for insn, kept in zip(self.insns, keep) if kept]
        out = []
        for pc, insn in enumerate(self.insns):
            if insn.target is not None:
                off = self.labels[insn.target] - (pc + 1)
                if not -(1 << 15) <= off < (1 << 15):
                    raise TooFar(f"a jump of {off} instructions")
                insn = Insn(insn.code, insn.dst, insn.src, off, insn.imm)
            out.append(insn)
        return out


def encode(insns: list[Insn]) -> bytes:
    return b"".join(i.encode() for i in insns)
