"""What each kernel can do for netmon: one table of the versions that matter, one check.

Every decision that depends on the kernel's version reads it here (``supports()``),
so a fact is written once: the policy that picks hooks, the loader that marks the
XDP program frags-aware, the expression's translation for XDP, the tests' skips.
Where the kernel can be asked instead (a tcx link that EINVALs, an XDP link that
EINVALs, the drop reasons' enum in BTF), netmon asks; the table then says why.
"""

from __future__ import annotations

import platform
import re

from netmon.errors import KernelTooOld

# feature -> (the first Linux that has it, what it is)
KERNEL: dict[str, tuple[tuple[int, int], str]] = {
    # Global data (.rodata config) needs 5.2 and bounded loops 5.3; 5.4 is the oldest
    # long-term kernel with both.
    "netmon": ((5, 4), "netmon's oldest kernel"),
    "xdp_link": ((5, 9), "XDP through a bpf_link, detached when its last fd closes"),
    "verified_insns": ((5, 16), "the verifier's instruction count in bpf_prog_info"),
    "drop_reasons": ((5, 17), "enum skb_drop_reason, kfree_skb's third argument"),
    # BPF_F_XDP_HAS_FRAGS, bpf_xdp_get_buff_len(), bpf_xdp_load_bytes(), and
    # BPF_PROG_TEST_RUN's multi-buffer frames and live frames.
    "frags": ((5, 18), "multi-buffer XDP: XDP copies packets (-w) and reads whole lengths"),
    "tcx": ((6, 6), "tc programs through tcx links instead of cls_bpf filters"),
}


def kernel_version(release: str | None = None) -> tuple[int, int]:
    release = release or platform.release()
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        return (0, 0)
    return (int(m.group(1)), int(m.group(2)))


def since(feature: str) -> tuple[int, int]:
    """The first kernel with ``feature`` (a key of KERNEL)."""
    return KERNEL[feature][0]


def supports(feature: str, release: str | None = None) -> bool:
    """Whether this kernel (or ``release``) has ``feature``."""
    return kernel_version(release) >= since(feature)


def check_kernel(release: str | None = None) -> None:
    release = release or platform.release()
    if not supports("netmon", release):
        need = ".".join(map(str, since("netmon")))
        raise KernelTooOld(f"kernel {release} is too old: netmon needs Linux >= {need}")
