"""How a program may be hooked, as a user chooses it: the ingress hook, the XDP mode and
the attach method. Plain enums, so that settings can hold them without loading libbpf
(the wall around plain Python); attach.py and hooks.py act on them.
"""

from __future__ import annotations

import enum


class Hook(str, enum.Enum):
    """Which hook watches ingress, as asked for (--hook)."""

    AUTO = "auto"  # XDP, or tc where XDP is taken or many interfaces are watched
    XDP = "xdp"
    TC = "tc"


class Mode(str, enum.Enum):
    """How the XDP program hooks the interface."""

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
