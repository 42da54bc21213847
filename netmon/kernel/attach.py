"""Hooking a loaded program on an interface, and unhooking it: XDP and tc, each two ways.

XDP for ingress: a bpf_link on >= 5.9, netlink before. tc for either direction:
a tcx link on >= 6.6; before, a cls_bpf filter on a clsact qdisc, marked with
netmon's priority and its pid as the handle so that a later netmon can tell
the filters of a killed one and remove them. Each attachment owns one hook on
one interface and closes once, idempotently (a context manager too), so normal
exit, signals and errors share one path. What hooks exist is hooks.py's; which one a
run uses for an interface is policy, above kernel/ (sources/policy.py).
"""

from __future__ import annotations

import errno
import os
import struct
import typing
from dataclasses import dataclass

from netmon.errors import AttachFailed, InterfaceGone, LibbpfError, PermissionProblem, XdpBusy
from netmon.kernel import libbpf, netlink
from netmon.kernel.choices import Method, Mode
from netmon.kernel.abi import CONFIG, CONFIG_OWNER_OFFSET, DIR_IN, DIR_NAMES, XDP_PROGRAM
from netmon.kernel.libbpf import ffi

# cls_bpf (kernels < 6.6): netmon's filters go first, at priority 1, where a filter
# that ends classification (TC_ACT_OK, TC_ACT_SHOT) cannot hide packets from them. Other
# bpf filters at priority 1 share the classifier, which runs its newest filter first.
# Where priority 1 holds another kind of classifier, they go to TC_PRIORITY_LATER.
TC_PRIORITY, TC_PRIORITY_LATER = 1, 0x4E4D
# Their handle marks them: "N" in the top byte, the pid of the netmon in the rest.
TC_HANDLE_MARK = 0x4E << 24


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
    """What is hooked there; nothing, for an interface that is gone (attaching says so)."""
    opts = libbpf.new_opts("bpf_xdp_query_opts")
    rc = libbpf.lib().bpf_xdp_query(ifindex, 0, opts)
    if rc == -errno.ENODEV:
        return XdpState(0, 0, 0, 0, None)
    libbpf.ensure(rc, "bpf_xdp_query")
    ids = (opts.drv_prog_id, opts.skb_prog_id, opts.hw_prog_id)
    return XdpState(
        prog_id=opts.prog_id or next((i for i in ids if i), 0),
        drv_prog_id=opts.drv_prog_id,
        skb_prog_id=opts.skb_prog_id,
        hw_prog_id=opts.hw_prog_id,
        mode=_ATTACHED_MODE.get(opts.attach_mode),
    )


def _name(info: bytes, at: int) -> str:
    return info[at:at + 16].split(b"\0", 1)[0].decode(errors="replace")


def netmon_owner(prog_id: int) -> int | None:
    """The pid of the netmon that loaded XDP program ``prog_id``, from its .rodata
    (nm_config.owner); None for a program that is not netmon's."""
    lib = libbpf.lib()
    prog_fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if prog_fd < 0:
        return None  # gone meanwhile
    try:
        info, _ = libbpf.obj_info(prog_fd, libbpf.PROG_INFO_SIZE)
        if _name(info, libbpf.PROG_NAME) != XDP_PROGRAM:
            return None
        count = struct.unpack_from("=I", info, libbpf.PROG_NR_MAP_IDS)[0]
        ids = ffi.new("__u32[]", max(count, 1))
        # Asked again with room for them: the kernel fills in the map ids.
        libbpf.obj_info(prog_fd, libbpf.PROG_INFO_SIZE, (
            libbpf.PROG_NR_MAP_IDS, struct.pack("=IQ", count, int(ffi.cast("uintptr_t", ids)))))
        return next((o for o in map(_rodata_owner, ids[0:count]) if o is not None), None)
    finally:
        os.close(prog_fd)


def _rodata_owner(map_id: int) -> int | None:
    lib = libbpf.lib()
    fd = lib.bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        return None
    try:
        info, _ = libbpf.obj_info(fd, libbpf.MAP_INFO_SIZE)
        value_size = struct.unpack_from("=I", info, libbpf.MAP_VALUE_SIZE)[0]
        if not _name(info, libbpf.MAP_NAME).endswith(".rodata") or value_size != CONFIG.size:
            return None
        value = ffi.new("char[]", value_size)
        if lib.bpf_map_lookup_elem(fd, ffi.new("__u32 *", 0), value) < 0:
            return None
        return struct.unpack_from("=I", ffi.buffer(value, value_size), CONFIG_OWNER_OFFSET)[0]
    finally:
        os.close(fd)


def remove_stale_xdp(ifindex: int, ifname: str) -> list[str]:
    """Detach the XDP program a netmon that is no longer running left (attached through
    netlink, it outlives a kill -9); say so. Any other program is left as it is."""
    state = query(ifindex)
    if not state.prog_id:
        return []
    owner = netmon_owner(state.prog_id)
    if not owner or _netmon_alive(owner):
        return []
    prog_fd = libbpf.lib().bpf_prog_get_fd_by_id(state.prog_id)
    if prog_fd < 0:
        return []
    try:
        flags = libbpf.XDP_FLAGS_REPLACE | (libbpf.XDP_FLAGS_SKB_MODE if state.skb_prog_id
                                            else libbpf.XDP_FLAGS_DRV_MODE)
        opts = libbpf.new_opts("bpf_xdp_attach_opts", old_prog_fd=prog_fd)
        rc = libbpf.lib().bpf_xdp_detach(ifindex, flags, opts)
        if rc < 0 and -rc not in (errno.ENODEV, errno.EEXIST, errno.ENOENT):
            libbpf.ensure(rc, f"removing a stale XDP program from {ifname}")
    finally:
        os.close(prog_fd)
    return [f"removed the XDP program (id {state.prog_id}) a netmon that is no longer running "
            f"(pid {owner}) left on {ifname}"]


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


class DropsWatch:
    """netmon drops on one interface: nothing is hooked on it (the program is on a
    tracepoint, for every interface at once); its slot counts its drops apart."""

    hook = "drops"
    direction = DIR_IN

    def __init__(self, ifindex: int, ifname: str):
        self.ifindex = ifindex
        self.ifname = ifname
        self.notes: list[str] = []

    def describe(self) -> str:
        return "drops (skb:kfree_skb)"

    def close(self) -> None:
        pass


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
    if exc.errno == errno.ENODEV:  # deleted between listing and attaching: not the driver
        return InterfaceGone(f"interface {ifname} went away")
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
              method: Method = Method.AUTO, ours: tuple[str, ...] = ()) -> TcAttachment:
    """Hook a tc program on one direction of an interface, after whatever is there.

    A tcx link where the kernel has them (>= 6.6), else a cls_bpf filter in
    direct-action mode on the clsact qdisc (created if missing). Other programs
    and filters on the hook stay as they are; the program returns "next" so they
    still run. ``ours``: the names of netmon's programs, whose filters a killed
    netmon may have left.
    """
    lib = libbpf.lib()
    where = f"{ifname} {DIR_NAMES[direction]}"
    # Whatever this netmon uses, filters a killed one left would go on running.
    notes = remove_stale_filters(ifindex, ifname, direction, ours)
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
    if err == errno.ENODEV:  # where is "IFNAME DIRECTION"
        return InterfaceGone(f"interface {where.split()[0]} went away")
    return AttachFailed(f"cannot attach tc to {where}: {libbpf.strerror(err)}")


def _netmon_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"netmon" in f.read()
    except OSError:
        return False


def remove_stale_filters(ifindex: int, ifname: str, direction: int,
                         ours: tuple[str, ...]) -> list[str]:
    """Delete the cls_bpf filters of netmons that are no longer running; say which.

    netmon's filters are told apart by their handle (TC_HANDLE_MARK, then the pid
    of the netmon that added it) and their program's name.
    """
    parent = netlink.TC_H_CLSACT_INGRESS if direction == DIR_IN else netlink.TC_H_CLSACT_EGRESS
    notes = []
    for f in netlink.tc_filters(ifindex, parent):
        netmons = (f.handle & 0xFF000000 == TC_HANDLE_MARK and f.kind == "bpf"
                and (f.name or "").startswith(ours))
        pid = f.handle & 0xFFFFFF
        if not netmons or _netmon_alive(pid):
            continue
        opts = libbpf.new_opts("bpf_tc_opts", handle=f.handle, priority=f.priority)
        rc = libbpf.lib().bpf_tc_detach(_tc_hook(ifindex, direction), opts)
        if rc < 0 and -rc != errno.ENOENT:
            raise _tc_error(rc, f"{ifname} {DIR_NAMES[direction]} (removing a stale filter)")
        notes.append(f"removed the tc filter a netmon that is no longer running (pid "
                     f"{pid}) left on {ifname} {DIR_NAMES[direction]}")
    return notes
