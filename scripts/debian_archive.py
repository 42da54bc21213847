"""The Debian archive this machine's own apt sources name: the mirror the kernel matrix,
the userlands and the container's base image are fetched from (no host is written down)."""

from __future__ import annotations

import glob
import re
import sys
from pathlib import Path


def debian_mirror() -> str:
    """The Debian archive this machine's own apt sources use."""
    texts = []
    for path in ["/etc/apt/sources.list", *glob.glob("/etc/apt/sources.list.d/*")]:
        try:
            texts.append(Path(path).read_text())
        except OSError:
            continue
    for text in texts:
        # deb822 stanzas (URIs: / Suites:) and one-line "deb URI suite ..." entries
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    sys.exit("no Debian archive in this machine's apt sources")
