"""The splice's instruction surgery (netmon/kernel/splice.py), on programs written
here: what moves when a call gives way to the expression and its function goes.
(The kernel's verifier checks the real result in test_expression.)"""

from __future__ import annotations

import pytest

from netmon.expression import ebpf as e
from netmon.expression.ebpf import R0, R1, R2, R3, R4, R6, R10
from netmon.kernel import splice


def caller_and_stub() -> tuple[bytes, int, int, int]:
    """main: a jump over the call, a jump back across it, a 16-byte load, a call to a
    later function; then the stub; then that later function. Returns the program, the
    call's offset, the stub's start and end."""
    asm = e.Asm()
    asm.mov64_reg(R6, R1)
    asm.label("top")
    asm.jump_if(e.JEQ, R6, 0, "after")          # 1: across the call, forward
    asm.emit(e.LD | e.IMM | e.DW, R2, imm=5)      # 2-3: a 16-byte load
    asm.emit(0)
    asm.mov64_reg(R4, R10)                        # 4
    asm.alu64(e.ADD, R4, -160)                    # 5
    asm.mov64_reg(R1, R6)                         # 6
    asm.emit(e.JMP | e.CALL, src=e.PSEUDO_CALL, target="stub")  # 7
    asm.label("after")
    asm.jump_if(e.JNE, R0, 7, "top")              # 8: across the call, back
    asm.emit(e.JMP | e.CALL, src=e.PSEUDO_CALL, target="later")  # 9: across the stub
    asm.exit()                                    # 10
    asm.label("stub")
    asm.mov32(R0, 1)                              # 11
    asm.exit()                                    # 12
    asm.label("later")
    asm.mov32(R0, 0)                              # 13
    asm.exit()                                    # 14
    insns = asm.assemble()
    for insn in insns:  # calls hold their offset in imm
        if insn.code == e.JMP | e.CALL:
            insn.imm, insn.off = insn.off, 0
    return e.encode(insns), 7, 11, 13


def decoded(code: bytes) -> list[tuple[int, int, int, int, int]]:
    return [splice._fields(code[i:i + 8]) for i in range(0, len(code), 8)]


def test_the_call_gives_way_and_the_stub_goes():
    code, call_at, stub_at, stub_end = caller_and_stub()
    assert splice.calls_to(code, stub_at) == [call_at]
    assert splice.frame_of(code, call_at) == -160
    body = e.encode([e.Insn(e.ALU | e.MOV, R0, imm=1)] * 3)  # 3 for 1: the rest moves by 2
    out = decoded(splice.patch(code, [(call_at, call_at + 1, body), (stub_at, stub_end, b"")]))
    assert len(out) == 15 + 2 - 2
    assert out[1][3] == 6 + 2              # the forward jump still lands after the body
    assert out[10][3] == -(10 - 1 + 1)     # the backward jump still lands on 1
    assert out[11][4] == 13 - 12           # the later function moved back by the stub's 2
    assert out[2][0] == e.LD | e.IMM | e.DW and out[3] == (0, 0, 0, 0, 0)
    assert out[7:10] == [(e.ALU | e.MOV, R0, 0, 0, 1)] * 3


def test_a_branch_into_an_edit_is_refused():
    code, call_at, stub_at, stub_end = caller_and_stub()
    with pytest.raises(ValueError, match="middle"):
        splice.patch(code, [(0, 2, b"")])  # the jump back lands on 1


def test_a_jump_stretched_past_its_reach_is_too_far():
    code, call_at, stub_at, stub_end = caller_and_stub()
    body = e.encode([e.Insn(e.ALU | e.MOV, R0, imm=1)] * 32767)
    with pytest.raises(e.TooFar):
        splice.patch(code, [(call_at, call_at + 1, body)])


def test_a_call_that_does_not_pass_its_frame_as_built_is_refused():
    code, call_at, _, _ = caller_and_stub()
    other = bytearray(code)
    other[5 * 8:6 * 8] = e.Insn(e.ALU64 | e.MOV | e.X, R4, R3).encode()  # r4 = r3
    with pytest.raises(ValueError, match="as it was built"):
        splice.frame_of(bytes(other), call_at)
    landed = bytearray(code)  # the jump at 1 now lands between `r4 = r10` and the call
    landed[1 * 8:2 * 8] = e.Insn(e.JMP | e.JEQ, R6, 0, off=3).encode()
    with pytest.raises(ValueError, match="as it was built"):
        splice.frame_of(bytes(landed), call_at)
