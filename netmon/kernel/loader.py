"""The BPF object's lifecycle: open, configure, load, attach, detach, close.

``MonitorProgram`` owns the loaded object (one load, whatever the number of
interfaces) and the interface slots its counters are kept under. Its
``attach_xdp`` and ``attach_tc`` return attachments that each own one hook on
one interface. All close once, idempotently, and are context managers, so
normal exit, signals and errors share one path.

Hooks: XDP for ingress (bpf_link on >= 5.9, netlink before); tc for either
direction (a tcx link on >= 6.6; before, a cls_bpf filter on a clsact qdisc,
marked with netmon's priority and its pid as the handle so that a later netmon
can tell the filters of a killed one and remove them).
"""

from __future__ import annotations

import enum
import errno
import os
import re
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from netmon import system
from netmon.kernel import libbpf
from netmon.sources import netlink
from netmon.errors import (
    AttachFailed,
    KernelTooOld,
    LibbpfError,
    ObjectMismatch,
    PermissionProblem,
    ProgramRejected,
    XdpBusy,
)
from netmon.events import DIR_IN, DIR_NAMES, DIR_OUT, EVENT_SIZE
from netmon.filters import CONFIG_SIZE
from netmon.kernel.libbpf import ffi

PROGRAM_NAME = "xdp_monitor"
# The object's programs, by hook.
PROGRAMS = {"xdp": PROGRAM_NAME, "tc_in": "tc_ingress", "tc_out": "tc_egress"}
FRAGS_KERNEL = (5, 18)  # BPF_F_XDP_HAS_FRAGS, bpf_xdp_get_buff_len(), bpf_xdp_load_bytes()
OBJECT_NAME = "xdp_monitor.bpf.o"
# Counter order of enum nm_counter in bpf/xdp_monitor.h.
# enum nm_proto: the protocols matched packets are counted by (--metrics' label values).
PROTO_NAMES = ("tcp", "udp", "sctp", "icmp", "icmpv6", "other")
COUNTER_NAMES = ("seen", "non_ip", "malformed", "matched", "sent", "send_failed",
                 "pull_failed", "copy_failed", "flow_overflow", "flow_overflow_bytes",
                 *(f"packets_{p}" for p in PROTO_NAMES), *(f"bytes_{p}" for p in PROTO_NAMES))
FLOW_TABLES = ("flows0", "flows1")  # bpf/xdp_monitor.h: counted into by turns
NM_IF_SLOTS = 512  # bpf/xdp_monitor.h: interface slots (0: interfaces not registered)
NM_IF_CACHE = 1024
# cls_bpf (kernels < 6.6): netmon's filters go first, at priority 1, where a filter
# that ends classification (TC_ACT_OK, TC_ACT_SHOT) cannot hide packets from them. Other
# bpf filters at priority 1 share the classifier, which runs its newest filter first.
# Where priority 1 holds another kind of classifier, they go to TC_PRIORITY_LATER.
TC_PRIORITY, TC_PRIORITY_LATER = 1, 0x4E4D
# Their handle marks them: "N" in the top byte, the pid of the netmon in the rest.
TC_HANDLE_MARK = 0x4E << 24


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
    # bpf_link (XDP, tcx): detached by the kernel when netmon dies, even on kill -9
    LINK = "link"
    # XDP by netlink (< 5.9), tc by a cls_bpf filter (< 6.6): netmon detaches it
    NETLINK = "netlink"


class Hook(str, enum.Enum):
    """Which hook watches ingress."""

    AUTO = "auto"  # XDP, or tc where XDP is taken or many interfaces are watched
    XDP = "xdp"
    TC = "tc"


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


def xdp_can_capture() -> bool:
    """XDP copies packets for -w with bpf_xdp_load_bytes(), from 5.18 on; tc always can."""
    return system.kernel_version() >= FRAGS_KERNEL


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


class _Hooked:
    """One program hooked on one interface: through a link, or unhooked by netmon.

    ``close()`` unhooks once: a link's fd is closed (the kernel unhooks it),
    anything else goes through the subclass's ``_unhook()``.
    """

    method: Method
    _link_fd: int = -1
    _closed: bool = False

    def _unhook(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.method is Method.LINK:
            libbpf.close_fd(self._link_fd)
        else:
            self._unhook()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class XdpAttachment(_Hooked):
    """The XDP program hooked on one interface's ingress; ``close()`` unhooks it."""

    hook = "xdp"
    direction = DIR_IN

    def __init__(self, ifindex: int, ifname: str, prog_fd: int, method: Method,
                 flags: int, link_fd: int = -1):
        self.ifindex = ifindex
        self.ifname = ifname
        self.method = method
        self.notes: list[str] = []
        self._prog_fd = prog_fd
        self._flags = flags
        self._link_fd = link_fd
        self.mode = query(ifindex).mode or "unknown"

    def describe(self) -> str:
        return f"{self.mode} ({'bpf_link' if self.method is Method.LINK else 'netlink'})"

    def _unhook(self) -> None:
        # Unhook only if the program there is still ours: never another's.
        opts = libbpf.new_opts("bpf_xdp_attach_opts", old_prog_fd=self._prog_fd)
        rc = libbpf.lib().bpf_xdp_detach(
            self.ifindex, self._flags | libbpf.XDP_FLAGS_REPLACE, opts
        )
        if rc < 0 and -rc not in (errno.ENODEV, errno.EEXIST, errno.ENOENT):
            libbpf.ensure(rc, f"detaching XDP from {self.ifname}")


class TcAttachment(_Hooked):
    """A tc program hooked on one interface and direction; ``close()`` unhooks it.

    Either a tcx link (the kernel unhooks it when netmon dies) or a cls_bpf
    filter, handle = netmon's pid, which netmon deletes itself.
    """

    hook = "tc"

    def __init__(self, ifindex: int, ifname: str, direction: int, link_fd: int = -1,
                 handle: int = 0, priority: int = 0, notes: list[str] | None = None):
        self.ifindex = ifindex
        self.ifname = ifname
        self.direction = direction
        self.method = Method.LINK if link_fd >= 0 else Method.NETLINK
        self.mode = "tc"
        self._link_fd = link_fd
        self._handle = handle
        self._priority = priority
        self.notes = notes or []  # what attaching found and did, for the user

    def describe(self) -> str:
        return f"tc ({'tcx' if self.method is Method.LINK else 'cls_bpf'})"

    def _unhook(self) -> None:
        hook = _tc_hook(self.ifindex, self.direction)
        opts = libbpf.new_opts("bpf_tc_opts", handle=self._handle, priority=self._priority)
        rc = libbpf.lib().bpf_tc_detach(hook, opts)
        # Gone with its interface, or removed by hand: nothing left to undo.
        if rc < 0 and -rc not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            libbpf.ensure(rc, f"detaching tc from {self.ifname}")
        # The clsact qdisc stays, even one netmon created: another program may have
        # filters on it by now, and an empty one costs nothing.


Attachment = typing.Union[XdpAttachment, TcAttachment]


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

    ``hooks`` names the programs to load (keys of PROGRAMS); the others are
    not loaded at all, which spares their verification at start.
    """

    def __init__(self, config: bytes, path: Path | None = None,
                 hooks: typing.Iterable[str] = tuple(PROGRAMS), capture: bool = False,
                 flow_entries: int = 0):
        """``capture``: the config has a snaplen; each CPU gets a record builder, and
        interface slots (the capture's interface ids) are never given out twice.
        ``flow_entries``: the config counts flows, in tables of this many entries."""
        if len(config) != CONFIG_SIZE:
            raise ObjectMismatch(f"config is {len(config)} bytes, expected {CONFIG_SIZE}")
        self._config = config
        self._capture = capture
        self._flow_entries = flow_entries
        self.hooks = tuple(hooks)
        self.obj = BpfObject(path or object_path(), prepare=self._configure)
        try:
            self.prog_fds = {hook: self.obj.program_fd(PROGRAMS[hook]) for hook in self.hooks}
            self.prog_fd = self.prog_fds.get("xdp", -1)
            self.events_fd = self.obj.map_fd("events")
            self.counters_fd = self.obj.map_fd("counters")
            self._ifcache_fd = self.obj.map_fd("ifcache")
            self._ifslots_fd = self.obj.map_fd("ifslots")
            self._ncpus = libbpf.ensure(libbpf.lib().libbpf_num_possible_cpus(),
                                        "counting CPUs")
        except BaseException:
            self.close()
            raise
        self._slots: dict[int, int] = {}  # ifindex -> slot
        self._free = list(range(NM_IF_SLOTS - 1, 0, -1))
        self._retired = dict.fromkeys(COUNTER_NAMES, 0)  # counts of unregistered slots

    def _configure(self, obj: BpfObject) -> None:
        # The object's structs must be the ones the Python mirrors describe.
        for name, size in (("nm_event", EVENT_SIZE), ("nm_config", CONFIG_SIZE),
                           ("nm_counters", 8 * len(COUNTER_NAMES))):
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
        for table in FLOW_TABLES:  # one entry each when unused: they are preallocated
            libbpf.ensure(lib.bpf_map__set_max_entries(obj.map(table), self._flow_entries or 1),
                          "sizing the flow tables")
        if self._capture:
            libbpf.ensure(lib.bpf_map__set_max_entries(
                obj.map("scratch"), libbpf.ensure(lib.libbpf_num_possible_cpus(), "counting CPUs")),
                "sizing the capture buffers")
        for hook, name in PROGRAMS.items():
            if hook not in self.hooks:
                libbpf.ensure(lib.bpf_program__set_autoload(obj.program(name), False),
                              f"leaving {name} unloaded")
        if "xdp" in self.hooks and system.kernel_version() >= FRAGS_KERNEL:
            # Multi-buffer frames (jumbo MTUs, GRO) reach the program whole instead of
            # making native attach fail; the program reads the first buffer and
            # reports the whole length.
            prog = obj.program(PROGRAM_NAME)
            libbpf.ensure(lib.bpf_program__set_flags(
                prog, lib.bpf_program__flags(prog) | libbpf.BPF_F_XDP_HAS_FRAGS),
                "marking the program frags-aware")

    # -- interface slots: counters per interface and direction ----------------

    def register(self, ifindex: int) -> None:
        """Count ``ifindex``'s frames apart from now on (before attaching to it)."""
        if ifindex in self._slots:
            return
        if not self._free:
            raise AttachFailed(f"netmon watches at most {NM_IF_SLOTS - 1} interfaces at once"
                               + (" (in one capture, ever)" if self._capture else ""))
        slot = self._free.pop()
        lib = libbpf.lib()
        key = ffi.new("__u32 *", ifindex % NM_IF_CACHE)
        cached = ffi.new("__u32[2]")  # struct nm_ifslot: ifindex, slot
        libbpf.ensure(lib.bpf_map_lookup_elem(self._ifcache_fd, key, cached), "reading ifcache")
        if cached[0] not in self._slots:  # free (0), or left by an interface now gone
            cached[0], cached[1] = ifindex, slot
            libbpf.ensure(lib.bpf_map_update_elem(self._ifcache_fd, key, cached, 0),
                          "registering an interface")
        else:  # the cache line belongs to another watched interface
            libbpf.ensure(lib.bpf_map_update_elem(
                self._ifslots_fd, ffi.new("__u32 *", ifindex), ffi.new("__u32 *", slot), 0),
                "registering an interface")
        self._slots[ifindex] = slot

    def unregister(self, ifindex: int) -> dict[int, dict[str, int]]:
        """Stop counting ``ifindex`` apart; returns its last counts by direction."""
        slot = self._slots.pop(ifindex, None)
        if slot is None:
            return {}
        lib = libbpf.lib()
        key = ffi.new("__u32 *", ifindex % NM_IF_CACHE)
        cached = ffi.new("__u32[2]")
        libbpf.ensure(lib.bpf_map_lookup_elem(self._ifcache_fd, key, cached), "reading ifcache")
        if cached[0] == ifindex:
            libbpf.ensure(lib.bpf_map_update_elem(self._ifcache_fd, key,
                                                  ffi.new("__u32[2]"), 0), "unregistering")
        else:
            lib.bpf_map_delete_elem(self._ifslots_fd, ffi.new("__u32 *", ifindex))
        last = {}
        zero = ffi.new("__u64[]", self._ncpus * len(COUNTER_NAMES))
        for direction in (DIR_IN, DIR_OUT):
            last[direction] = self._read_slot(slot * 2 + direction)
            for name, value in last[direction].items():
                self._retired[name] += value
            libbpf.ensure(lib.bpf_map_update_elem(
                self.counters_fd, ffi.new("__u32 *", slot * 2 + direction), zero, 0),
                "clearing counters")
        if not self._capture:  # a capture file's interface ids stay the slots they had
            self._free.append(slot)
        return last

    def slot(self, ifindex: int) -> int:
        """The registered interface's slot: its interface id in a capture file."""
        return self._slots[ifindex]

    def _read_slot(self, index: int) -> dict[str, int]:
        n = len(COUNTER_NAMES)
        values = ffi.new("__u64[]", self._ncpus * n)
        libbpf.ensure(libbpf.lib().bpf_map_lookup_elem(
            self.counters_fd, ffi.new("__u32 *", index), values), "reading counters")
        return {name: sum(values[cpu * n + i] for cpu in range(self._ncpus))
                for i, name in enumerate(COUNTER_NAMES)}

    def counters(self, ifindex: int | None = None, direction: int | None = None
                 ) -> dict[str, int]:
        """Counters summed over CPUs: of one interface and direction, or of everything."""
        if ifindex is not None:
            slot = self._slots.get(ifindex)
            if slot is None:
                return dict.fromkeys(COUNTER_NAMES, 0)
            return self._read_slot(slot * 2 + (direction or DIR_IN))
        total = dict(self._retired)
        for slot in [0, *self._slots.values()]:
            for d in (DIR_IN, DIR_OUT):
                for name, value in self._read_slot(slot * 2 + d).items():
                    total[name] += value
        return total

    # -- hooks -----------------------------------------------------------------

    def attach_xdp(self, ifindex: int, ifname: str, mode: Mode = Mode.AUTO,
                   method: Method = Method.AUTO) -> XdpAttachment:
        return attach_xdp(self.prog_fds["xdp"], ifindex, ifname, mode, method)

    def attach_tc(self, ifindex: int, ifname: str, direction: int,
                  method: Method = Method.AUTO) -> TcAttachment:
        hook = "tc_in" if direction == DIR_IN else "tc_out"
        return attach_tc(self.prog_fds[hook], ifindex, ifname, direction, method)

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


def attach_xdp(prog_fd: int, ifindex: int, ifname: str, mode: Mode = Mode.AUTO,
               method: Method = Method.AUTO) -> XdpAttachment:
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
                    method: Method) -> XdpAttachment:
    lib = libbpf.lib()
    if method is not Method.NETLINK:
        opts = libbpf.new_opts("bpf_link_create_opts", flags=flags)
        link_fd = lib.bpf_link_create(prog_fd, ifindex, libbpf.BPF_XDP, opts)
        if link_fd >= 0:
            try:
                return XdpAttachment(ifindex, ifname, prog_fd, Method.LINK, flags, link_fd)
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
        return XdpAttachment(ifindex, ifname, prog_fd, Method.NETLINK, flags)
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



def _tc_hook(ifindex: int, direction: int):
    point = libbpf.BPF_TC_INGRESS if direction == DIR_IN else libbpf.BPF_TC_EGRESS
    return libbpf.new_opts("bpf_tc_hook", ifindex=ifindex, attach_point=point)


def attach_tc(prog_fd: int, ifindex: int, ifname: str, direction: int,
              method: Method = Method.AUTO) -> TcAttachment:
    """Hook a tc program on one direction of an interface, after whatever is there.

    A tcx link where the kernel has them (>= 6.6), else a cls_bpf filter in
    direct-action mode on the clsact qdisc (created if missing). Other programs
    and filters on the hook stay as they are; the program returns "next" so they
    still run.
    """
    lib = libbpf.lib()
    where = f"{ifname} {DIR_NAMES[direction]}"
    # Whatever this netmon uses, filters a killed one left would go on running.
    notes = remove_stale_filters(ifindex, ifname, direction)
    if method is not Method.NETLINK:
        attach_type = libbpf.BPF_TCX_INGRESS if direction == DIR_IN else libbpf.BPF_TCX_EGRESS
        link_fd = lib.bpf_link_create(prog_fd, ifindex, attach_type,
                                      libbpf.new_opts("bpf_link_create_opts"))
        if link_fd >= 0:
            return TcAttachment(ifindex, ifname, direction, link_fd=link_fd, notes=notes)
        # EINVAL: a kernel < 6.6, which knows no tcx attach types.
        if method is Method.LINK or -link_fd != errno.EINVAL:
            raise _tc_error(link_fd, where)
    hook = _tc_hook(ifindex, direction)
    rc = lib.bpf_tc_hook_create(hook)
    if rc < 0 and -rc != errno.EEXIST:
        raise _tc_error(rc, f"{where} (creating its clsact qdisc)")
    handle = TC_HANDLE_MARK | os.getpid()
    for priority in (TC_PRIORITY, TC_PRIORITY_LATER):
        opts = libbpf.new_opts("bpf_tc_opts", prog_fd=prog_fd, handle=handle, priority=priority)
        rc = lib.bpf_tc_attach(hook, opts)
        # EINVAL: priority 1 holds another kind of classifier, or another protocol.
        if rc >= 0 or -rc != errno.EINVAL or priority == TC_PRIORITY_LATER:
            break
        notes.append(f"tc priority {TC_PRIORITY} on {where} holds another classifier: netmon's "
                     f"filter runs at {TC_PRIORITY_LATER}, after the filters before it")
    if rc < 0:
        raise _tc_error(rc, where)
    return TcAttachment(ifindex, ifname, direction, handle=handle, priority=priority,
                        notes=notes)


def _tc_error(rc: int, where: str) -> Exception:
    err = -rc
    if err in (errno.EPERM, errno.EACCES):
        return PermissionProblem(f"permission denied attaching tc to {where}: run netmon as root")
    if err == errno.ENODEV:
        return AttachFailed(f"cannot attach tc to {where}: the interface is gone")
    return AttachFailed(f"cannot attach tc to {where}: {libbpf.strerror(err)}")


def _netmon_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"netmon" in f.read()
    except OSError:
        return False


def remove_stale_filters(ifindex: int, ifname: str, direction: int) -> list[str]:
    """Delete the cls_bpf filters of netmons that are no longer running; say which.

    netmon's filters are told apart by their handle (TC_HANDLE_MARK, then the pid
    of the netmon that added it) and their program's name.
    """
    parent = netlink.TC_H_CLSACT_INGRESS if direction == DIR_IN else netlink.TC_H_CLSACT_EGRESS
    notes = []
    for f in netlink.tc_filters(ifindex, parent):
        ours = (f.handle & 0xFF000000 == TC_HANDLE_MARK and f.kind == "bpf"
                and (f.name or "").startswith(tuple(PROGRAMS.values())))
        pid = f.handle & 0xFFFFFF
        if not ours or _netmon_alive(pid):
            continue
        opts = libbpf.new_opts("bpf_tc_opts", handle=f.handle, priority=f.priority)
        rc = libbpf.lib().bpf_tc_detach(_tc_hook(ifindex, direction), opts)
        if rc < 0 and -rc != errno.ENOENT:
            raise _tc_error(rc, f"{ifname} {DIR_NAMES[direction]} (removing a stale filter)")
        notes.append(f"removed the tc filter a netmon that is no longer running (pid "
                     f"{pid}) left on {ifname} {DIR_NAMES[direction]}")
    return notes
