"""A filter expression spliced into netmon's programs as libbpf loads them.

bpf/xdp_monitor.bpf.c keeps a function, ``nm_expr()``, whose body stands in for the
expression. libbpf links each program (its subprograms copied in, its calls and maps
relocated), then, just before BPF_PROG_LOAD, calls the prepare function of the
program's section handler. netmon registers handlers for the sections its programs
use ("xdp", "tc": the program types libbpf itself gives them) whose prepare function
replaces that body with the expression's translation (netmon/expression/translate.py)
and moves what follows it: calls across it, and the BTF function and line records
after it. The program then loads as one whole, verified with the expression in it.

libbpf 1.1 has no other point between linking and loading (bpf_object__prepare()
came in 1.6). The handlers are registered the first time an expression is loaded and
stay for the process's life, doing nothing while no splice is under way: libbpf before
1.3 frees its array of handlers when the last one is unregistered but keeps using the
pointer (fixed upstream by "libbpf: Fix realloc API handling in zero-sized edge
cases"); the next registration then corrupted the heap (seen here, with 1.1.2).
"""

from __future__ import annotations

import errno
import struct

from netmon.errors import LibbpfError
from netmon.expression import ebpf
from netmon.kernel import libbpf
from netmon.kernel.libbpf import ffi

STUB = "nm_expr"
# (section, enum bpf_prog_type, enum bpf_attach_type): as libbpf's own handlers have them
SECTIONS = [("xdp", 6, libbpf.BPF_XDP), ("tc", 3, 0)]
INSN = 8
_CALL = ebpf.JMP | ebpf.CALL
_LD_IMM64 = ebpf.LD | ebpf.IMM | ebpf.DW
_PSEUDO_FUNC = 4


def splice(insns: bytes, stub_at: int, stub_end: int, body: bytes) -> bytes:
    """The program's instructions with [stub_at, stub_end) replaced by body, each call
    that crosses the stub moved by the difference."""
    old = [bytearray(insns[i:i + INSN]) for i in range(0, len(insns), INSN)]
    delta = len(body) // INSN - (stub_end - stub_at)

    def moved(pc: int) -> int:
        return pc + delta if pc >= stub_end else pc

    out = []
    for pc, insn in enumerate(old):
        if stub_at <= pc < stub_end:
            if pc == stub_at:
                out.append(body)
            continue
        code, regs = insn[0], insn[1]
        if code == _LD_IMM64 and regs >> 4 == _PSEUDO_FUNC:
            raise ValueError("a callback's address in the program: not moved by the splice")
        if code == _CALL and regs >> 4 == ebpf.PSEUDO_CALL:
            (imm,) = struct.unpack_from("<i", insn, 4)
            target = pc + 1 + imm
            if stub_at < target < stub_end:
                raise ValueError("a call into the middle of the stub")
            struct.pack_into("<i", insn, 4, moved(target) - moved(pc) - 1)
        out.append(bytes(insn))
    return b"".join(out)


def moved_records(data: bytes, count: int, size: int, stub_at: int, stub_end: int,
                  delta: int) -> tuple[bytes, int]:
    """BTF func or line records (each starting with its instruction offset) for the
    spliced program: those inside the stub but its first gone, those after it moved."""
    out = []
    for i in range(count):
        rec = bytearray(data[i * size:(i + 1) * size])
        (at,) = struct.unpack_from("<I", rec)
        if stub_at < at < stub_end:
            continue
        if at >= stub_end:
            struct.pack_into("<I", rec, 0, at + delta)
        out.append(bytes(rec))
    return b"".join(out), len(out)


_active: "Splicer | None" = None  # the splice under way, if any
_handlers: list[int] = []  # libbpf's ids of the registered handlers (never unregistered)


def _prepare_any(prog, opts, cookie) -> int:
    return _active._prepare(prog, opts, cookie) if _active is not None else 0


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
    """While an object opens and loads (``with``): puts each program's body in."""

    def __init__(self, bodies: dict[str, bytes]):
        """``bodies``: program name -> the expression's translation for its hook."""
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
        if len(at) != 1:
            raise LibbpfError(errno.ENOENT, f"{name}: the program has no {STUB}() to hold the "
                                            f"expression: rebuild the BPF object")
        stub_at = at[0]
        stub_end = next((off for off, _ in starts if off > stub_at), count)
        delta = len(body) // INSN - (stub_end - stub_at)
        spliced = splice(insns, stub_at, stub_end, body)
        new_funcs, nfuncs = moved_records(funcs, opts.func_info_cnt, opts.func_info_rec_size,
                                          stub_at, stub_end, delta)
        lines = bytes(ffi.buffer(opts.line_info, opts.line_info_cnt * opts.line_info_rec_size))
        new_lines, nlines = moved_records(lines, opts.line_info_cnt, opts.line_info_rec_size,
                                          stub_at, stub_end, delta)
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
