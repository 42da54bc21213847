"""A filter expression put into netmon's programs as libbpf loads them.

bpf/xdp_monitor.bpf.c calls a function, ``nm_expr()``, where the expression belongs.
libbpf links each program (its subprograms copied in, its calls and maps relocated),
then, just before BPF_PROG_LOAD, calls the prepare function of the program's section
handler. netmon registers handlers for the sections its programs use ("xdp", "tc",
"tp_btf/kfree_skb": the program types libbpf itself gives them; for the last, it also
finds the tracepoint in the kernel's BTF, as libbpf's own handler would) whose prepare
function puts the expression's translation (netmon/expression/translate.py) in place of each call to
``nm_expr()``, drops the function itself, and moves what the edits move: jumps and
calls across them, the BTF function and line records after them. The program then
loads as one whole, verified with the expression in it.

Inline, not in the function: a BPF-to-BPF call and its return cost 7-9 ns here, more
than a short expression itself (a return goes through a thunk on CPUs with return
mitigations: AMD's Safe RET, retbleed's); see the README's bench.

libbpf 1.1 has no other point between linking and loading (bpf_object__prepare()
came in 1.6). The handlers are registered the first time an expression is loaded and
stay for the process's life, doing nothing while no splice is under way: libbpf before
1.3 frees its array of handlers when the last one is unregistered but keeps using the
pointer (fixed upstream by "libbpf: Fix realloc API handling in zero-sized edge
cases"); the next registration then corrupted the heap (seen here, with 1.1.2).
"""

from __future__ import annotations

import bisect
import errno
import functools
import struct
from typing import Callable

from netmon.errors import LibbpfError
from netmon.expression import ebpf
from netmon.kernel import libbpf
from netmon.kernel.libbpf import ffi

STUB = "nm_expr"
# (section, enum bpf_prog_type, enum bpf_attach_type): as libbpf's own handlers have them
SECTIONS = [("xdp", 6, libbpf.BPF_XDP), ("tc", 3, 0),
            ("tp_btf/kfree_skb", 26, libbpf.BPF_TRACE_RAW_TP)]
TRACEPOINT = "btf_trace_kfree_skb"  # what the drops program attaches to, in vmlinux's BTF
INSN = 8
_CALL = ebpf.JMP | ebpf.CALL
_LD_IMM64 = ebpf.LD | ebpf.IMM | ebpf.DW
_PSEUDO_FUNC = 4
_GOTOL = ebpf.JMP32 | ebpf.JA  # a jump with a 32-bit offset in imm


def _fields(insn: bytes) -> tuple[int, int, int, int, int]:
    """code, dst, src, off, imm."""
    code, regs, off, imm = struct.unpack("<BBhi", insn)
    return code, regs & 0xF, regs >> 4, off, imm


def _split(insns: bytes) -> list[bytes]:
    return [insns[i:i + INSN] for i in range(0, len(insns), INSN)]


def _branches(old: list[bytes]):
    """(pc, target, kind) of each jump and BPF-to-BPF call; kind: "off" or "imm", the
    field that holds it. The second half of a 16-byte load is skipped."""
    pc = 0
    while pc < len(old):
        code, _, src, off, imm = _fields(old[pc])
        if code == _LD_IMM64:
            if src == _PSEUDO_FUNC:
                raise ValueError("a callback's address in the program: not moved by the splice")
            pc += 2
            continue
        if code & 0x07 in (ebpf.JMP, ebpf.JMP32):
            op = code & 0xF0
            if code == _CALL:
                if src == ebpf.PSEUDO_CALL:
                    yield pc, pc + 1 + imm, "imm"
            elif code == _GOTOL:
                yield pc, pc + 1 + imm, "imm"
            elif op != ebpf.EXIT:
                yield pc, pc + 1 + off, "off"
        pc += 1


def calls_to(insns: bytes, at: int) -> list[int]:
    """Where the program calls the function that starts at ``at``."""
    old = _split(insns)
    return [pc for pc, target, kind in _branches(old)
            if kind == "imm" and old[pc][0] == _CALL and target == at]


def frame_of(insns: bytes, call_at: int) -> int:
    """The offset from r10 of the call's fourth argument (the caller's struct
    nm_expr_frame): the compiler sets it as ``r4 = r10; r4 += K``, right before the call
    (nothing between them a jump lands on, or a call that clobbers r4)."""
    old = _split(insns)
    landings = {target for _, target, _ in _branches(old)}
    offset = None
    for pc in range(call_at - 1, max(call_at - 16, -1), -1):
        code, dst, src, _, imm = _fields(old[pc])
        if pc + 1 in landings or code == _CALL:
            break
        if dst != 4 or code & 0x07 not in (ebpf.ALU, ebpf.ALU64, ebpf.LDX, ebpf.LD):
            continue
        if offset is None and code == ebpf.ALU64 | ebpf.ADD | ebpf.K:
            offset = imm
        elif offset is not None and code == ebpf.ALU64 | ebpf.MOV | ebpf.X and src == 10:
            return offset
        else:
            break
    raise ValueError(f"the call to {STUB}() at instruction {call_at} does not pass a place "
                     f"on its caller's stack as it was built to")


def patch(insns: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """The program with each [start, end) of ``edits`` replaced by its instructions,
    every jump and call across an edit moved (ebpf.TooFar if one no longer reaches).
    A branch may land on an edit's start (then on its first new instruction), not
    inside it."""
    old = _split(insns)
    edits = sorted(edits)
    new_pc = remap(edits)
    fixed = {}
    for pc, target, kind in _branches(old):
        if any(start <= pc < end for start, end, _ in edits):
            continue  # replaced
        if any(start < target < end for start, end, _ in edits):
            raise ValueError(f"a branch at {pc} into the middle of an edit")
        delta = new_pc(target) - new_pc(pc) - 1
        code, dst, src, off, imm = _fields(old[pc])
        if kind == "off":
            if not -(1 << 15) <= delta < (1 << 15):
                raise ebpf.TooFar(f"a jump of {delta} instructions")
            off = delta
        else:
            imm = delta
        fixed[pc] = struct.pack("<BBhi", code, src << 4 | dst, off, imm)
    out, pc = [], 0
    starts = {start: (end, body) for start, end, body in edits}
    while pc < len(old):
        if pc in starts:
            end, body = starts[pc]
            out.append(body)
            pc = end
            continue
        out.append(fixed.get(pc, old[pc]))
        pc += 1
    return b"".join(out)


def remap(edits: list[tuple[int, int, bytes]]) -> Callable[[int], int]:
    """Old instruction offset -> new, for offsets outside the edits or at their starts."""
    ends = [end for _, end, _ in edits]
    shifts = [0]
    for start, end, body in edits:
        shifts.append(shifts[-1] + len(body) // INSN - (end - start))

    def new_pc(pc: int) -> int:
        return pc + shifts[bisect.bisect_right(ends, pc)]
    return new_pc


def moved_records(data: bytes, count: int, size: int, gone: tuple[int, int],
                  new_pc: Callable[[int], int]) -> tuple[bytes, int]:
    """BTF func or line records (each starting with its instruction offset) for the
    patched program: those of the dropped function gone, the rest moved."""
    out = []
    for i in range(count):
        rec = bytearray(data[i * size:(i + 1) * size])
        (at,) = struct.unpack_from("<I", rec)
        if gone[0] <= at < gone[1]:
            continue
        struct.pack_into("<I", rec, 0, new_pc(at))
        out.append(bytes(rec))
    return b"".join(out), len(out)


_active: "Splicer | None" = None  # the splice under way, if any
_handlers: list[int] = []  # libbpf's ids of the registered handlers (never unregistered)


def _prepare_any(prog, opts, cookie) -> int:
    if opts.expected_attach_type == libbpf.BPF_TRACE_RAW_TP and not opts.attach_btf_id:
        # libbpf's own handler finds the tracepoint the section names; in its place, so
        # does this one.
        opts.attach_btf_id = _tracepoint_id()
    return _active._prepare(prog, opts, cookie) if _active is not None else 0


@functools.lru_cache(maxsize=1)
def _tracepoint_id() -> int:
    with libbpf.vmlinux_btf() as btf:
        if btf is None:
            raise LibbpfError(errno.ENOENT, "reading the kernel's BTF")
        return libbpf.ensure(libbpf.lib().btf__find_by_name_kind(
            btf, TRACEPOINT.encode(), libbpf.BTF_KIND_TYPEDEF),
            f"finding {TRACEPOINT} in the kernel's BTF")


def _failed(exc_type, exc, tb) -> int:
    if _active is not None:
        _active.error = exc
    return -errno.EINVAL


_callback = ffi.callback("int(struct bpf_program *, struct bpf_prog_load_opts *, long)",
                         _prepare_any, onerror=_failed)
_handler_opts = None


def _register() -> None:
    global _handler_opts
    if _handlers:
        return
    _handler_opts = libbpf.new_opts("libbpf_prog_handler_opts", prog_prepare_load_fn=_callback)
    for sec, prog_type, attach_type in SECTIONS:
        _handlers.append(libbpf.ensure(
            libbpf.lib().libbpf_register_prog_handler(sec.encode(), prog_type, attach_type,
                                                      _handler_opts),
            f"registering a handler for SEC(\"{sec}\")"))


class Splicer:
    """While an object opens and loads (``with``): puts the expression in each program."""

    def __init__(self, bodies: dict[str, Callable[[int], bytes]]):
        """``bodies``: program name -> the expression's translation for its hook, given
        where the caller keeps its struct nm_expr_frame (translate.translate's frame)."""
        self.bodies = bodies
        self.btf = None  # the object's BTF, set once it is open
        self.error: BaseException | None = None
        self._keep: list = []  # buffers libbpf reads until the load

    def __enter__(self) -> "Splicer":
        global _active
        _register()
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None

    def _prepare(self, prog, opts, cookie) -> int:
        lib = libbpf.lib()
        name = ffi.string(lib.bpf_program__name(prog)).decode()
        body = self.bodies.get(name)
        if body is None:
            return 0
        count = lib.bpf_program__insn_cnt(prog)
        insns = bytes(ffi.buffer(lib.bpf_program__insns(prog), count * INSN))
        funcs = bytes(ffi.buffer(opts.func_info, opts.func_info_cnt * opts.func_info_rec_size))
        starts = sorted(struct.unpack_from("<II", funcs, i * opts.func_info_rec_size)
                        for i in range(opts.func_info_cnt))
        at = [off for off, type_id in starts if self._name(type_id) == STUB]
        calls = calls_to(insns, at[0]) if len(at) == 1 else []
        if not calls:
            raise LibbpfError(errno.ENOENT, f"{name}: the program has no {STUB}() to hold the "
                                            f"expression: rebuild the BPF object")
        stub = (at[0], next((off for off, _ in starts if off > at[0]), count))
        edits = [(pc, pc + 1, body(frame_of(insns, pc))) for pc in calls] + [(*stub, b"")]
        spliced = patch(insns, edits)
        new_pc = remap(sorted(edits))
        new_funcs, nfuncs = moved_records(funcs, opts.func_info_cnt, opts.func_info_rec_size,
                                          stub, new_pc)
        lines = bytes(ffi.buffer(opts.line_info, opts.line_info_cnt * opts.line_info_rec_size))
        new_lines, nlines = moved_records(lines, opts.line_info_cnt, opts.line_info_rec_size,
                                          stub, new_pc)
        code = ffi.new("char[]", spliced)
        funcs_buf, lines_buf = ffi.new("char[]", new_funcs or b"\0"), ffi.new("char[]", new_lines or b"\0")
        self._keep += [code, funcs_buf, lines_buf]
        libbpf.ensure(lib.bpf_program__set_insns(prog, code, len(spliced) // INSN),
                      f"{name}: putting the expression in")
        opts.func_info, opts.func_info_cnt = funcs_buf, nfuncs
        opts.line_info, opts.line_info_cnt = lines_buf, nlines
        return 0

    def _name(self, type_id: int) -> str:
        lib = libbpf.lib()
        t = lib.btf__type_by_id(self.btf, type_id)
        return ffi.string(lib.btf__name_by_offset(self.btf, t.name_off)).decode() if t else ""
