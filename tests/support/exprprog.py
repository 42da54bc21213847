"""A translated expression in a program of its own, to run with BPF_PROG_TEST_RUN: the
tests hold its verdict to libpcap's, frame by frame.

The program sets up what netmon's programs have where they call nm_expr(): r1 ctx, r2
data, r3 data_end, r4 a struct nm_expr_frame on its stack, and r6-r9 holding values of
the caller's own; the translation goes in place of the call, as netmon puts it. The
program then returns the verdict (XDP_PASS for a match, XDP_DROP for none; at tc 1
and 0), or BROKEN if the caller's registers did not come back as they were: a test
run's return value, which touches no traffic.
"""

from __future__ import annotations

import errno
import os

from netmon.expression import ebpf as e
from netmon.expression import translate as t
from netmon.expression.ebpf import R0, R1, R2, R3, R4, R6, R7, R8, R9, R10
from netmon.errors import LibbpfError
from netmon.kernel import libbpf
from netmon.kernel.loader import prog_test_run

BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP = 3, 6
XDP_DROP, XDP_PASS = 1, 2
BROKEN = 77
# struct xdp_md and struct __sk_buff: data and data_end
CTX_DATA = {"xdp": (0, 4), "tc": (76, 80)}
# The caller's frame below a few slots of its own, as a compiled caller's would be.
FRAME_AT = -16 - t.FRAME_SIZE
# What the caller keeps in r7-r9 across the expression (r6 keeps ctx).
KEPT = {R7: 0x1234567, R8: 0x7654321, R9: 0x2468ACE}


def program(hook: str, target: t.Target, insns: tuple) -> list[e.Insn]:
    asm = e.Asm()
    data_at, end_at = CTX_DATA[hook]
    asm.mov64_reg(R6, R1)
    asm.ldx(4, R2, R6, data_at)
    asm.ldx(4, R3, R6, end_at)
    asm.mov64_reg(R4, R3)
    asm.alu64_reg(e.SUB, R4, R2)  # the wire length: the whole frame is there
    asm.stx(4, R10, FRAME_AT + t.ARG_WIRE_LEN, R4)
    asm.st(4, R10, FRAME_AT + t.ARG_IFINDEX, 7)
    asm.st(4, R10, FRAME_AT + t.ARG_TAG, 0)
    asm.st(4, R10, FRAME_AT + t.ARG_DIR, 0)  # dir, tagged, padding
    for reg, value in KEPT.items():
        asm.mov32(reg, value)
    asm.mov64_reg(R4, R10)
    asm.alu64(e.ADD, R4, FRAME_AT)
    asm.mov64_reg(R1, R6)
    asm.insns += t.translate(insns, target, FRAME_AT)  # self-contained: its jumps resolved
    for reg, value in KEPT.items():
        asm.jump_if(e.JNE, reg, value, "broken")
    if hook == "xdp":
        asm.alu32(e.ADD, R0, XDP_DROP)  # 0 -> DROP, 1 -> PASS
    asm.exit()
    asm.label("broken")
    asm.mov32(R0, BROKEN)
    asm.exit()
    return asm.assemble()


class ExprProgram:
    def __init__(self, expression: tuple, target: t.Target, hook: str):
        """``expression``: libpcap's classic program, translated for ``target``."""
        insns = program(hook, target, expression)
        code = e.encode(insns)
        prog_type = BPF_PROG_TYPE_XDP if hook == "xdp" else BPF_PROG_TYPE_SCHED_CLS
        log = libbpf.ffi.new("char[]", 1 << 20)
        opts = libbpf.new_opts("bpf_prog_load_opts", log_buf=log, log_size=1 << 20,
                               log_level=0)
        fd = libbpf.lib().bpf_prog_load(prog_type, b"nm_expr_test", b"GPL", code,
                                        len(insns), opts)
        if fd < 0:
            opts.log_level = 1
            libbpf.lib().bpf_prog_load(prog_type, b"nm_expr_test", b"GPL", code,
                                       len(insns), opts)
            text = libbpf.ffi.string(log).decode(errors="replace").splitlines()
            raise AssertionError(f"load failed ({-fd}): " + "\n".join(text[-25:]))
        self.fd, self.hook = fd, hook

    def matches(self, frame: bytes) -> bool | None:
        """The verdict; None for a frame the kernel's test run refuses (EINVAL: a tc test
        run builds an skb, and takes no frame its checks call malformed)."""
        try:
            ret, _ = prog_test_run(self.fd, frame)
        except LibbpfError as exc:
            if exc.errno == errno.EINVAL:
                return None
            raise
        assert ret != BROKEN, "the translation did not give the caller's registers back"
        return ret == (XDP_PASS if self.hook == "xdp" else 1)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ExprProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
