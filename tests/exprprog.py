"""A translated expression in a program of its own, to run with BPF_PROG_TEST_RUN: the
tests hold its verdict to libpcap's, frame by frame.

The program calls the translated function as netmon's programs call nm_expr(): (ctx,
data, data_end, args), args on its stack, a BPF-to-BPF call. It returns the verdict
(XDP_PASS for a match, XDP_DROP for none; at tc 1 and 0): a test run's return value,
which touches no traffic.
"""

from __future__ import annotations

import errno
import os

from netmon.expression import ebpf as e
from netmon.expression import translate as t
from netmon.expression.ebpf import R0, R1, R2, R3, R4, R6, R10
from netmon.errors import LibbpfError
from netmon.kernel import libbpf
from netmon.kernel.loader import prog_test_run

BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP = 3, 6
XDP_DROP, XDP_PASS = 1, 2
# struct xdp_md and struct __sk_buff: data and data_end
CTX_DATA = {"xdp": (0, 4), "tc": (76, 80)}
ARGS_AT = -16


def caller(hook: str, body_len: int) -> list[e.Insn]:
    asm = e.Asm()
    data_at, end_at = CTX_DATA[hook]
    asm.mov64_reg(R6, R1)
    asm.ldx(4, R2, R6, data_at)
    asm.ldx(4, R3, R6, end_at)
    asm.mov64_reg(R4, R3)
    asm.alu64_reg(e.SUB, R4, R2)  # the wire length: the whole frame is there
    asm.stx(4, R10, ARGS_AT + t.ARG_WIRE_LEN, R4)
    asm.st(4, R10, ARGS_AT + t.ARG_IFINDEX, 7)
    asm.st(4, R10, ARGS_AT + t.ARG_TAG, 0)
    asm.st(4, R10, ARGS_AT + t.ARG_DIR, 0)  # dir, tagged, padding
    asm.mov64_reg(R4, R10)
    asm.alu64(e.ADD, R4, ARGS_AT)
    asm.mov64_reg(R1, R6)
    call_at = len(asm.insns)
    asm.emit(e.JMP | e.CALL, src=e.PSEUDO_CALL, imm=0)  # patched below
    if hook == "xdp":
        asm.alu32(e.ADD, R0, XDP_DROP)  # 0 -> DROP, 1 -> PASS
    asm.exit()
    insns = asm.assemble()
    insns[call_at].imm = len(insns) - (call_at + 1)
    return insns


class ExprProgram:
    def __init__(self, body: list[e.Insn], hook: str):
        insns = caller(hook, len(body)) + body
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
        return ret == (XDP_PASS if self.hook == "xdp" else 1)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ExprProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
