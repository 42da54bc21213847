"""netmon's cffi binding to libbpf.so.1, in ABI mode: nothing is compiled at install.

The declarations live in ``libbpf.h`` beside this file; the build turns them into
the out-of-line module ``_libbpf_ffi`` (scripts/build_ffi.py), so no C is parsed
at run time. Every call whose result
can signal an error goes through :func:`ensure`, which turns libbpf 1.x's two
conventions (``-errno`` from int APIs, NULL plus ``errno`` from pointer APIs)
into one :class:`LibbpfError` that says what failed.

libbpf's own messages are captured rather than printed, so that netmon decides
what reaches stderr; the verifier log among them is kept for error reports.
"""

from __future__ import annotations

import collections
import contextlib
import errno as errno_mod
import os
import re

from netmon.errors import LibbpfError, LibbpfMissing, ObjectMismatch

try:
    from netmon.kernel._libbpf_ffi import ffi
except ImportError:  # a source tree nobody built
    raise ObjectMismatch("netmon/kernel/_libbpf_ffi.py is missing: build netmon with `make install` "
                         "or reinstall the wheel") from None

LIBBPF_SONAME = "libbpf.so.1"
MIN_VERSION = (1, 0)

# Constants from the kernel UAPI (linux/bpf.h, linux/if_link.h).
BPF_XDP = 37  # enum bpf_attach_type
BPF_TRACE_RAW_TP = 23
BPF_TCX_INGRESS = 46  # tcx links, Linux >= 6.6 (libbpf 1.1 predates them)
BPF_TCX_EGRESS = 47
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2  # enum bpf_tc_attach_point
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = range(5)
BTF_KIND_STRUCT = 4
BTF_KIND_ENUM = 6
BTF_KIND_TYPEDEF = 8
XDP_PASS = 2
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_F_XDP_HAS_FRAGS = 1 << 5
# struct bpf_prog_info and struct bpf_map_info (append-only UAPI): the fields netmon reads,
# by offset; older kernels fill less of them.
PROG_INFO_SIZE = 232
PROG_NR_MAP_IDS, PROG_NAME, PROG_VERIFIED_INSNS = 52, 64, 216  # map_ids follows nr_map_ids
MAP_INFO_SIZE = 88
MAP_VALUE_SIZE, MAP_NAME = 12, 24

_LIBBPF_WARN, _LIBBPF_INFO, _LIBBPF_DEBUG = range(3)

_lib = None
_libc = ffi.dlopen(None)

# libbpf's recent messages, newest last. Verifier logs arrive as one message.
messages: collections.deque[str] = collections.deque(maxlen=64)
_msg_buf = ffi.new("char[]", 1 << 20)


@ffi.callback("int(int, const char *, void *)")
def _on_print(level, fmt, ap):
    # Debug output is never shown; skip the formatting cost.
    if level == _LIBBPF_DEBUG:
        return 0
    n = _libc.vsnprintf(_msg_buf, len(_msg_buf), fmt, ap)
    if n > 0:
        messages.append(ffi.string(_msg_buf).decode("utf-8", "replace"))
    return 0


def lib():
    """The loaded libbpf, opened on first use with its print hook installed."""
    global _lib
    if _lib is None:
        need = ".".join(map(str, MIN_VERSION))
        try:
            loaded = ffi.dlopen(LIBBPF_SONAME)
        except OSError as exc:
            old = _old_libbpf()
            if old:
                raise LibbpfMissing(
                    f"libbpf {old} is too old, netmon needs libbpf >= {need}; install libbpf1 "
                    "from Debian 12 / Proxmox VE 8 or newer (apt-get install libbpf1)"
                ) from None
            raise LibbpfMissing(
                f"{LIBBPF_SONAME} not found ({exc}); install it with: apt-get install libbpf1"
            ) from None
        version = (loaded.libbpf_major_version(), loaded.libbpf_minor_version())
        if version < MIN_VERSION:
            found = ffi.string(loaded.libbpf_version_string()).decode()
            raise LibbpfMissing(
                f"libbpf {found} is too old, netmon needs libbpf >= {need}; "
                "install libbpf1 from Debian 12 / Proxmox VE 8 or newer (apt-get install libbpf1)"
            )
        loaded.libbpf_set_print(_on_print)
        _lib = loaded
    return _lib


def _old_libbpf() -> str | None:
    """The version of a libbpf 0.x (Debian 11, Proxmox VE 7), if one is installed.

    Before 0.6 libbpf cannot tell its version: the file the loader mapped names it.
    """
    try:
        handle = ffi.dlopen("libbpf.so.0")  # held: unmapped again once it is collected
        with open("/proc/self/maps") as maps:
            for line in maps:
                m = re.search(r"/libbpf\.so\.(0\.[\d.]+)$", line.strip())
                if m:
                    return m.group(1)
        del handle
    except OSError:
        return None
    return "0.x"


def version() -> str:
    return ffi.string(lib().libbpf_version_string()).decode()


def strerror(err: int) -> str:
    buf = ffi.new("char[]", 256)
    lib().libbpf_strerror(err, buf, len(buf))
    return ffi.string(buf).decode("utf-8", "replace")


def ensure(result, what: str):
    """Return ``result``, or raise LibbpfError if it signals an error.

    Int results are ``-errno`` on failure; pointer results are NULL with the
    error in ``errno``.
    """
    if isinstance(result, int):
        if result < 0:
            raise LibbpfError(-result, f"{what}: {strerror(-result)}")
        return result
    if result == ffi.NULL:
        err = ffi.errno or errno_mod.EINVAL
        raise LibbpfError(err, f"{what}: {strerror(err)}")
    return result


def new_opts(ctype: str, **fields):
    """A zeroed libbpf opts struct with ``sz`` set, as libbpf requires."""
    opts = ffi.new(f"struct {ctype} *")
    opts.sz = ffi.sizeof(f"struct {ctype}")
    for name, value in fields.items():
        setattr(opts, name, value)
    return opts


def obj_info(fd: int, size: int, preset: tuple[int, bytes] | None = None) -> tuple[bytes, int]:
    """BPF_OBJ_GET_INFO_BY_FD into ``size`` zeroed bytes: (the info, how much of it the kernel
    filled). ``preset``: bytes written at an offset first (an array's length and address,
    for the kernel to fill the array)."""
    buf = ffi.new("char[]", size)
    if preset is not None:
        ffi.memmove(buf + preset[0], preset[1], len(preset[1]))
    length = ffi.new("__u32 *", size)
    ensure(lib().bpf_obj_get_info_by_fd(fd, buf, length), "reading BPF object info")
    return ffi.buffer(buf, size)[:], length[0]


@contextlib.contextmanager
def vmlinux_btf():
    """The running kernel's BTF while the block runs (None where the kernel has none)."""
    btf = lib().btf__load_vmlinux_btf()
    try:
        yield None if btf == ffi.NULL else btf
    finally:
        if btf != ffi.NULL:
            lib().btf__free(btf)


def close_fd(fd: int) -> None:
    if fd >= 0:
        os.close(fd)
