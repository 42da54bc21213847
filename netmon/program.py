"""The BPF object's lifecycle: open, configure, load, attach, detach, close.

``MonitorProgram`` owns the loaded object; ``attach`` returns an ``Attachment``
that owns the hook on one interface. Both close once, idempotently, and are
context managers, so normal exit, signals and errors share one path.
"""

from __future__ import annotations

import enum
import errno
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from netmon import libbpf, system
from netmon.errors import (
    AttachFailed,
    KernelTooOld,
    LibbpfError,
    ObjectMismatch,
    PermissionProblem,
    ProgramRejected,
    XdpBusy,
)
from netmon.events import EVENT_SIZE
from netmon.filters import CONFIG_SIZE
from netmon.libbpf import ffi

PROGRAM_NAME = "xdp_monitor"
FRAGS_KERNEL = (5, 18)  # BPF_F_XDP_HAS_FRAGS and bpf_xdp_get_buff_len()
OBJECT_NAME = "xdp_monitor.bpf.o"
# Counter order of enum nm_counter in bpf/xdp_monitor.h.
COUNTER_NAMES = ("seen", "non_ip", "malformed", "matched", "sent", "send_failed")


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


class Mode(str, enum.Enum):
    """How the program hooks the interface."""

    AUTO = "auto"
    NATIVE = "native"  # in the driver (XDP_FLAGS_DRV_MODE)
    GENERIC = "generic"  # in the stack after the skb is built (XDP_FLAGS_SKB_MODE)


class Method(str, enum.Enum):
    """Which kernel interface attaches it."""

    AUTO = "auto"
    LINK = "link"  # bpf_link: detached by the kernel when netmon dies, even on kill -9
    NETLINK = "netlink"  # kernels < 5.9: netmon detaches it on every exit path


_MODE_FLAGS = {Mode.NATIVE: libbpf.XDP_FLAGS_DRV_MODE, Mode.GENERIC: libbpf.XDP_FLAGS_SKB_MODE}
_ATTACHED_MODE = {libbpf.XDP_ATTACHED_DRV: "native", libbpf.XDP_ATTACHED_SKB: "generic",
                  libbpf.XDP_ATTACHED_HW: "offload", libbpf.XDP_ATTACHED_MULTI: "multi"}


@dataclass(frozen=True)
class XdpState:
    """What is hooked on an interface now (program ids; 0 = none)."""

    prog_id: int
    drv_prog_id: int
    skb_prog_id: int
    hw_prog_id: int
    mode: str | None


def query(ifindex: int) -> XdpState:
    opts = libbpf.new_opts("bpf_xdp_query_opts")
    libbpf.ensure(libbpf.lib().bpf_xdp_query(ifindex, 0, opts), "bpf_xdp_query")
    ids = (opts.drv_prog_id, opts.skb_prog_id, opts.hw_prog_id)
    return XdpState(
        prog_id=opts.prog_id or next((i for i in ids if i), 0),
        drv_prog_id=opts.drv_prog_id,
        skb_prog_id=opts.skb_prog_id,
        hw_prog_id=opts.hw_prog_id,
        mode=_ATTACHED_MODE.get(opts.attach_mode),
    )


class Attachment:
    """The program hooked on one interface; ``close()`` unhooks it."""

    def __init__(self, ifindex: int, ifname: str, prog_fd: int, method: Method,
                 flags: int, link_fd: int = -1):
        self.ifindex = ifindex
        self.ifname = ifname
        self.method = method
        self._prog_fd = prog_fd
        self._flags = flags
        self._link_fd = link_fd
        self._closed = False
        self.mode = query(ifindex).mode or "unknown"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.method is Method.LINK:
            libbpf.close_fd(self._link_fd)
            return
        # Unhook only if the program there is still ours: never another's.
        opts = libbpf.new_opts("bpf_xdp_attach_opts", old_prog_fd=self._prog_fd)
        rc = libbpf.lib().bpf_xdp_detach(
            self.ifindex, self._flags | libbpf.XDP_FLAGS_REPLACE, opts
        )
        if rc < 0 and -rc not in (errno.ENODEV, errno.EEXIST, errno.ENOENT):
            libbpf.ensure(rc, f"detaching XDP from {self.ifname}")

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BpfObject:
    """One BPF object file, opened, prepared and loaded into the kernel; closes once.

    ``prepare(obj)`` runs between open and load: the only time .rodata can be set.
    """

    def __init__(self, path: Path, prepare=None):
        self.path = path
        self._closed = False
        self._obj = libbpf.ensure(
            libbpf.lib().bpf_object__open_file(str(path).encode(), ffi.NULL), f"opening {path}"
        )
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

    def map_fd(self, name: str) -> int:
        lib = libbpf.lib()
        m = libbpf.ensure(lib.bpf_object__find_map_by_name(self._obj, name.encode()),
                          f"finding map {name}")
        return libbpf.ensure(lib.bpf_map__fd(m), f"map {name} fd")

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
    """netmon's XDP object, loaded with one filter spec's config."""

    def __init__(self, config: bytes, path: Path | None = None):
        if len(config) != CONFIG_SIZE:
            raise ObjectMismatch(f"config is {len(config)} bytes, expected {CONFIG_SIZE}")
        self._config = config
        self.obj = BpfObject(path or object_path(), prepare=self._configure)
        try:
            self.prog_fd = self.obj.program_fd(PROGRAM_NAME)
            self.events_fd = self.obj.map_fd("events")
            self.counters_fd = self.obj.map_fd("counters")
            self._ncpus = libbpf.ensure(libbpf.lib().libbpf_num_possible_cpus(),
                                        "counting CPUs")
        except BaseException:
            self.close()
            raise

    def _configure(self, obj: BpfObject) -> None:
        # The object's structs must be the ones the Python mirrors describe.
        for name, size in (("nm_event", EVENT_SIZE), ("nm_config", CONFIG_SIZE)):
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
        if lib.bpf_map__value_size(rodata) != CONFIG_SIZE:
            raise ObjectMismatch(
                f"{obj.path}: .rodata is {lib.bpf_map__value_size(rodata)} bytes, "
                f"netmon's config is {CONFIG_SIZE}; rebuild the object"
            )
        libbpf.ensure(lib.bpf_map__set_initial_value(rodata, self._config, len(self._config)),
                      "setting the filter config")
        if system.kernel_version() >= FRAGS_KERNEL:
            # Multi-buffer frames (jumbo MTUs, GRO) reach the program whole instead of
            # making native attach fail; the program reads the first buffer and
            # reports the whole length.
            prog = obj.program(PROGRAM_NAME)
            libbpf.ensure(lib.bpf_program__set_flags(
                prog, lib.bpf_program__flags(prog) | libbpf.BPF_F_XDP_HAS_FRAGS),
                "marking the program frags-aware")

    def counters(self) -> dict[str, int]:
        """The program's per-CPU counters, summed over CPUs."""
        lib = libbpf.lib()
        key = ffi.new("__u32 *")
        values = ffi.new("__u64[]", self._ncpus)
        out = {}
        for idx, name in enumerate(COUNTER_NAMES):
            key[0] = idx
            libbpf.ensure(lib.bpf_map_lookup_elem(self.counters_fd, key, values),
                          "reading counters")
            out[name] = sum(values)
        return out

    def attach(self, ifindex: int, ifname: str, mode: Mode = Mode.AUTO,
               method: Method = Method.AUTO) -> Attachment:
        return attach(self.prog_fd, ifindex, ifname, mode, method)

    def close(self) -> None:
        self.obj.close()

    def __enter__(self) -> "MonitorProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def attach(prog_fd: int, ifindex: int, ifname: str, mode: Mode = Mode.AUTO,
           method: Method = Method.AUTO) -> Attachment:
    """Hook ``prog_fd`` on an interface; refuse if any XDP program is there already.

    AUTO mode tries native (driver) mode first and falls back to generic (SKB)
    mode where the driver has no XDP support.
    """
    existing = query(ifindex)
    if existing.prog_id:
        raise XdpBusy(
            f"interface {ifname} already has an XDP program (id {existing.prog_id}, "
            f"{existing.mode or 'unknown'} mode); netmon leaves it alone. "
            f"See: bpftool net show dev {ifname}"
        )
    modes = [Mode.NATIVE, Mode.GENERIC] if mode is Mode.AUTO else [mode]
    last_error: LibbpfError | None = None
    for m in modes:
        try:
            return _attach_in_mode(prog_fd, ifindex, ifname, _MODE_FLAGS[m], method)
        except LibbpfError as exc:
            last_error = exc
            # Native mode unsupported by this driver: try the next mode.
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ERANGE):
                continue
            raise _attach_error(exc, ifname, m) from None
    assert last_error is not None
    raise _attach_error(last_error, ifname, modes[-1]) from None


def _attach_in_mode(prog_fd: int, ifindex: int, ifname: str, flags: int,
                    method: Method) -> Attachment:
    lib = libbpf.lib()
    if method is not Method.NETLINK:
        opts = libbpf.new_opts("bpf_link_create_opts", flags=flags)
        link_fd = lib.bpf_link_create(prog_fd, ifindex, libbpf.BPF_XDP, opts)
        if link_fd >= 0:
            try:
                return Attachment(ifindex, ifname, prog_fd, Method.LINK, flags, link_fd)
            except BaseException:
                os.close(link_fd)
                raise
        # EINVAL from BPF_LINK_CREATE on a kernel < 5.9: no XDP links yet.
        if method is Method.LINK or -link_fd != errno.EINVAL:
            libbpf.ensure(link_fd, f"attaching XDP to {ifname}")
    flags |= libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST
    libbpf.ensure(lib.bpf_xdp_attach(ifindex, prog_fd, flags, ffi.NULL),
                  f"attaching XDP to {ifname}")
    try:
        return Attachment(ifindex, ifname, prog_fd, Method.NETLINK, flags)
    except BaseException:
        lib.bpf_xdp_detach(ifindex, flags, ffi.NULL)
        raise


def _attach_error(exc: LibbpfError, ifname: str, mode: Mode) -> Exception:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return PermissionProblem(f"permission denied attaching XDP to {ifname}: run netmon as root")
    if exc.errno in (errno.EBUSY, errno.EEXIST):
        return XdpBusy(f"interface {ifname} already has an XDP program; netmon leaves it alone")
    hint = ""
    if mode is Mode.NATIVE:
        hint = " (the driver may not support native XDP: try --mode generic)"
    kernel_msg = next((m.strip() for m in reversed(libbpf.messages)
                       if "Kernel error message" in m), "")
    if kernel_msg:
        hint += f" [{kernel_msg.split(':', 2)[-1].strip()}]"
    return AttachFailed(f"cannot attach XDP to {ifname} in {mode.value} mode: "
                        f"{exc.message}{hint}")

