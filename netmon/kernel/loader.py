"""The BPF object's lifecycle: open, check, configure, load, close.

``MonitorProgram`` owns the loaded object (one load, whatever the number of
interfaces), with the interface slots its counters are kept under (``slots``,
kernel/slots.py); ``attach()`` hooks one of its programs on an interface
(kernel/attach.py does the work, kernel/hooks.py names the programs). It takes
plain values: a config's bytes (kernel/config.py), hook names, a mode and method. Everything closes once, idempotently, and
is a context manager, so normal exit, signals and errors share one path.
"""

from __future__ import annotations

import contextlib
import functools
import errno
import os
import re
import struct
import typing
from importlib import resources
from pathlib import Path

from netmon.errors import (KernelTooOld, LibbpfError, NetmonError, ObjectMismatch,
                           PermissionProblem, ProgramRejected)
from netmon.expression import ebpf
from netmon.kernel import drops, facts, libbpf, splice
from netmon.kernel.abi import (CONFIG, FLOW_TABLES, HDR_BUF, IF_SLOTS, STRUCTS, TCP_KEY,
                               TCP_KEY4)
from netmon.kernel.attach import Attachment
from netmon.kernel.choices import Method, Mode
from netmon.kernel.hooks import HOOKS
from netmon.kernel.libbpf import ffi
from netmon.kernel.slots import Slots

OBJECT_NAME = "xdp_monitor.bpf.o"
# TCP health's programs, XDP's and tc's, and the tables the hooks tail-call them through
TCP_PROGRAMS = ("nm_tcp_xdp", "nm_tcp_tc")
TCP_PROG_TABLES = ("tcpprog_xdp", "tcpprog_tc")


def object_path() -> Path:
    """The BPF object shipped inside the package (built by clang at build time).

    NETMON_BPF_OBJECT names another build of it, for development.
    """
    override = os.environ.get("NETMON_BPF_OBJECT")
    path = Path(override) if override else Path(str(resources.files("netmon").joinpath(
        "_bpf", OBJECT_NAME)))
    if not path.is_file():
        raise ObjectMismatch(
            f"BPF object {path} is missing: build it with `make` or reinstall the netmon wheel"
        )
    return path


class BpfObject:
    """One BPF object file, opened, prepared and loaded into the kernel; closes once.

    ``prepare(obj)`` runs between open and load: the only time .rodata can be set.
    """

    def __init__(self, path: Path, prepare=None):
        self.path = path
        self._closed = False
        try:
            self._obj = libbpf.ensure(
                libbpf.lib().bpf_object__open_file(str(path).encode(), ffi.NULL),
                f"opening {path}")
        except LibbpfError as exc:  # not an object, a truncated one, another machine's
            raise ObjectMismatch(f"{exc}: rebuild it with `make` or reinstall the netmon "
                                 f"wheel") from None
        try:
            if prepare is not None:
                prepare(self)
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        libbpf.messages.clear()
        rc = libbpf.lib().bpf_object__load(self._obj)
        if rc >= 0:
            return
        err = -rc
        log = _verifier_log()
        if err in (errno.EPERM, errno.EACCES) and not log:
            raise PermissionProblem(
                "permission denied loading the BPF program: run netmon as root (sudo)"
            )
        if log:
            raise ProgramRejected("the kernel's verifier rejected the program: " + log)
        if err in (errno.EINVAL, errno.ENOTSUP, errno.E2BIG):
            raise KernelTooOld(
                f"the kernel refused the BPF program ({libbpf.strerror(err)}); "
                "it may be too old for netmon (needs Linux >= 5.4)"
            )
        libbpf.ensure(rc, "loading the BPF program")

    def rodata(self):
        """The object's .rodata map (before load, its initial value can be set)."""
        lib = libbpf.lib()
        m = lib.bpf_object__next_map(self._obj, ffi.NULL)
        while m != ffi.NULL:
            if ffi.string(lib.bpf_map__name(m)).decode().endswith(".rodata"):
                return m
            m = lib.bpf_object__next_map(self._obj, m)
        raise ObjectMismatch(f"{self.path} has no .rodata map; rebuild it")

    def map(self, name: str):
        return libbpf.ensure(libbpf.lib().bpf_object__find_map_by_name(self._obj, name.encode()),
                             f"finding map {name}")

    def map_fd(self, name: str) -> int:
        return libbpf.ensure(libbpf.lib().bpf_map__fd(self.map(name)), f"map {name} fd")

    def program(self, name: str):
        return libbpf.ensure(
            libbpf.lib().bpf_object__find_program_by_name(self._obj, name.encode()),
            f"finding program {name}")

    def program_fd(self, name: str) -> int:
        return libbpf.ensure(libbpf.lib().bpf_program__fd(self.program(name)),
                             f"program {name} fd")

    def struct_size(self, name: str) -> int | None:
        """Size of ``struct name`` in the object's BTF, None if it has none."""
        lib = libbpf.lib()
        btf = lib.bpf_object__btf(self._obj)
        if btf == ffi.NULL:
            return None
        type_id = lib.btf__find_by_name_kind(btf, name.encode(), libbpf.BTF_KIND_STRUCT)
        return lib.btf__type_by_id(btf, type_id).size if type_id > 0 else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        libbpf.lib().bpf_object__close(self._obj)

    def __enter__(self) -> "BpfObject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MonitorProgram:
    """netmon's object, loaded once with one filter spec's config.

    ``hooks`` names the programs to load (keys of hooks.HOOKS); the others are
    not loaded at all, which spares their verification at start.
    """

    def __init__(self, config: bytes, path: Path | None = None,
                 hooks: typing.Iterable[str] = tuple(HOOKS), capture: bool = False,
                 flow_entries: int = 0, expression: str | None = None,
                 netmask: int = 0xFFFFFFFF, tcp_entries: int = 0):
        """``capture``: the config has a snaplen; each CPU gets a record builder, and
        interface slots (the capture's interface ids) are never given out twice.
        ``flow_entries``: the config counts flows, in tables of this many entries.
        ``expression``: a filter expression (the config says so too), spliced into each
        program as it loads, compiled with ``netmask`` (FilterSpec.netmask).
        ``tcp_entries``: the config measures TCP health, keeping this many connections'
        state."""
        if len(config) != CONFIG.size:
            raise ObjectMismatch(f"config is {len(config)} bytes, expected {CONFIG.size}")
        self._config = config
        self._capture = capture
        self._flow_entries = flow_entries
        self._tcp_entries = tcp_entries
        self.hooks = tuple(hooks)
        # Multi-buffer frames (jumbo MTUs, GRO) reach the XDP program whole instead of
        # making native attach fail, where the kernel has them; its expression then reads
        # bytes past the first buffer with bpf_xdp_load_bytes().
        self._frags = "xdp" in self.hooks and facts.supports("frags")
        self._splicer = None
        if expression is not None:
            from netmon import expression as expr
            expr.compiled(expression, netmask)  # its errors before anything loads
            self._splicer = splice.Splicer({
                HOOKS[h].program: functools.partial(expr.body, expression,
                                                    expression_target(h, self._frags),
                                                    netmask=netmask)
                for h in self.hooks})
        try:
            with self._splicer or contextlib.nullcontext():
                self.obj = BpfObject(path or object_path(), prepare=self._configure)
        except NetmonError:
            if self._splicer is not None and self._splicer.error is not None:
                error = self._splicer.error  # what went wrong in the splice
                if isinstance(error, ebpf.TooFar):  # the program's jumps across it
                    error = expr.too_long(expression, error)
                raise error from None
            raise
        self._drops_link = -1
        try:
            self.prog_fds = {hook: self.obj.program_fd(HOOKS[hook].program) for hook in self.hooks}
            if "drops" in self.hooks:  # on its tracepoint now: slots say what it counts
                self._drops_link = drops.attach(self.prog_fds["drops"])
            self.drops_fd = self.obj.map_fd("drops")
            self.prog_fd = self.prog_fds.get("xdp", -1)
            self.events_fd = self.obj.map_fd("events")
            self.counters_fd = self.obj.map_fd("counters")
            self._wirelen_fd = self.obj.map_fd("wirelen")
            self._wirelen = 0
            # TCP health's state: IPv6's table and IPv4's (keys of their own sizes)
            self.tcpstate_fds = ((self.obj.map_fd("tcpstate"), TCP_KEY.size),
                                 (self.obj.map_fd("tcpstate4"), TCP_KEY4.size))
            self.rtthist_fd = self.obj.map_fd("rtthist")
            self.tcpgen_fd = self.obj.map_fd("tcpgen")
            self._link_tcp_programs()
            self.slots = Slots(self.counters_fd, self.obj.map_fd("ifcache"),
                               self.obj.map_fd("ifslots"), capture)
        except BaseException:
            self.close()
            raise

    def _configure(self, obj: BpfObject) -> None:
        # The object's structs must be the ones the Python mirrors describe.
        for name, size in STRUCTS.items():
            btf_size = obj.struct_size(name)
            if btf_size is None:
                raise ObjectMismatch(f"BPF object has no BTF for struct {name}; rebuild it")
            if btf_size != size:
                raise ObjectMismatch(
                    f"struct {name} is {btf_size} bytes in the BPF object but {size} in "
                    "netmon: the object and the Python package are from different builds"
                )
        rodata = obj.rodata()
        lib = libbpf.lib()
        if self._splicer is not None:
            self._splicer.btf = lib.bpf_object__btf(obj._obj)
        if lib.bpf_map__value_size(rodata) != CONFIG.size:
            raise ObjectMismatch(
                f"{obj.path}: .rodata is {lib.bpf_map__value_size(rodata)} bytes, "
                f"netmon's config is {CONFIG.size}; rebuild the object"
            )
        libbpf.ensure(lib.bpf_map__set_initial_value(rodata, self._config, len(self._config)),
                      "setting the filter config")
        # One entry each when unused: they are preallocated.
        for table in (t for side in FLOW_TABLES for t in side):
            libbpf.ensure(lib.bpf_map__set_max_entries(obj.map(table), self._flow_entries or 1),
                          "sizing the flow tables")
        # TCP health's maps, an entry apiece when unused (they are preallocated).
        for table in ("tcpstate", "tcpstate4"):
            libbpf.ensure(lib.bpf_map__set_max_entries(obj.map(table), self._tcp_entries or 1),
                          "sizing the TCP state tables")
        libbpf.ensure(lib.bpf_map__set_max_entries(
            obj.map("rtthist"), IF_SLOTS * 2 if self._tcp_entries else 1),
            "sizing the RTT histograms")
        if self._capture:
            libbpf.ensure(lib.bpf_map__set_max_entries(
                obj.map("scratch"), libbpf.ensure(lib.libbpf_num_possible_cpus(), "counting CPUs")),
                "sizing the capture buffers")
        for hook, kind in HOOKS.items():
            if hook not in self.hooks:
                libbpf.ensure(lib.bpf_program__set_autoload(obj.program(kind.program), False),
                              f"leaving {kind.program} unloaded")
        for name, wanted in self._tcp_programs().items():
            if not wanted:
                libbpf.ensure(lib.bpf_program__set_autoload(obj.program(name), False),
                              f"leaving {name} unloaded")
        if self._frags:  # the program reads the first buffer, reports the whole length
            # (TCP health's, which the XDP hook tail-calls, must be marked alike)
            for name in (HOOKS["xdp"].program, TCP_PROGRAMS[0]):
                prog = obj.program(name)
                libbpf.ensure(lib.bpf_program__set_flags(
                    prog, lib.bpf_program__flags(prog) | libbpf.BPF_F_XDP_HAS_FRAGS),
                    "marking the program frags-aware")

    def _tcp_programs(self) -> dict[str, bool]:
        """TCP health's programs (tcpprogs' slots, in order): each loaded where a hook
        that tail-calls it is, and TCP health is on."""
        tc = any(HOOKS[h].target == "tc" for h in self.hooks)
        return {TCP_PROGRAMS[0]: bool(self._tcp_entries) and "xdp" in self.hooks,
                TCP_PROGRAMS[1]: bool(self._tcp_entries) and tc}

    def _link_tcp_programs(self) -> None:
        """The hooks tail-call TCP health's programs through tcpprog_xdp and tcpprog_tc."""
        lib = libbpf.lib()
        for table, (name, loaded) in zip(TCP_PROG_TABLES, self._tcp_programs().items()):
            if loaded:
                libbpf.ensure(lib.bpf_map_update_elem(
                    self.obj.map_fd(table), ffi.new("__u32 *", 0),
                    ffi.new("__u32 *", self.obj.program_fd(name)), 0),
                    "linking TCP health's program")

    def wire_len(self, length: int) -> None:
        """-r (config.pack(replay=True)): the next test runs' frames were this long on
        the wire (0: as long as the bytes they are given). Written when it changes."""
        if length != self._wirelen:
            lib = libbpf.lib()
            libbpf.ensure(lib.bpf_map_update_elem(self._wirelen_fd, ffi.new("__u32 *", 0),
                                                  ffi.new("__u32 *", length), 0),
                          "telling the program a frame's length")
            self._wirelen = length

    def counters(self, ifindex: int | None = None, direction: int | None = None
                 ) -> dict[str, int]:
        """Counters summed over CPUs: of one interface and direction, or of everything."""
        return self.slots.counters(ifindex, direction)

    def attach(self, hook: str, ifindex: int, ifname: str, mode: Mode = Mode.AUTO,
               method: Method = Method.AUTO) -> Attachment:
        """Hook this object's ``hook`` program (a name in hooks.HOOKS) on an interface."""
        return HOOKS[hook].attach(self.prog_fds[hook], ifindex, ifname, mode, method)

    def close(self) -> None:
        if self._drops_link >= 0:
            libbpf.close_fd(self._drops_link)
            self._drops_link = -1
        self.obj.close()

    def __enter__(self) -> "MonitorProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def expression_target(hook: str, frags: bool):
    """What a hook offers a filter expression (HOOKS[hook].target, as a translate.Target):
    XDP reads past its first buffer only where the program is frags-aware; netmon drops
    reads a copy of the packet's first HDR_BUF bytes. (translate loads libpcap's cffi
    module: only runs with an expression import it.)"""
    from netmon.expression import translate

    kind = HOOKS[hook].target
    if kind == "xdp":
        return translate.XDP_FRAGS if frags else translate.XDP
    if kind == "drops":
        return translate.in_buffer(HDR_BUF)
    return translate.TC


def verified_insns(prog_fd: int) -> int | None:
    """How many instructions the verifier went through to load the program (the cost
    of start-up that grows with its paths); None where the kernel does not say (< 5.16)."""
    info, filled = libbpf.obj_info(prog_fd, libbpf.PROG_INFO_SIZE)
    at = libbpf.PROG_VERIFIED_INSNS
    return struct.unpack_from("=I", info, at)[0] if filled >= at + 4 else None


def prog_test_run(prog_fd: int, frame: bytes, repeat: int = 1) -> tuple[int, int]:
    """Run an XDP program on one frame with BPF_PROG_TEST_RUN.

    Returns (the program's return value, average nanoseconds per run). The
    program runs for real: its maps, counters and perf output all work.
    """
    data = ffi.from_buffer(frame)
    opts = libbpf.new_opts("bpf_test_run_opts", data_in=data, data_size_in=len(frame),
                           repeat=repeat)
    libbpf.ensure(libbpf.lib().bpf_prog_test_run_opts(prog_fd, opts), "BPF_PROG_TEST_RUN")
    return opts.retval, opts.duration


def _verifier_log(max_lines: int = 3) -> str:
    """The tail of the verifier log libbpf printed for the failed load, on one line.

    The last lines say why; the statistics line after them does not.
    """
    for msg in reversed(libbpf.messages):
        m = re.search(r"-- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --", msg, re.S)
        if m:
            lines = [ln.strip() for ln in m.group(1).splitlines()
                     if ln.strip() and not ln.startswith(("processed ", "verification time"))]
            return " | ".join(lines[-max_lines:])
    return ""


