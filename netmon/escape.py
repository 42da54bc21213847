"""Text from others, made visible: what netmon shows a person never carries a byte that a
terminal acts on.

Guest names come from whoever owns the guest (Proxmox's config), interface names from
whoever made the interface, paths and expressions from a command line a script built.
Shown raw, `\\x1b[2J` clears the screen of whoever runs `netmon top`, `\\x1b]0;...\\x07`
retitles the window, and a right-to-left override turns a line around. Every human-
facing line goes through visible(): control characters (C0 but the newline between
lines, DEL, C1), Unicode's bidirectional controls, and the backslash that would make
an escape ambiguous are written as Python writes them (`\\x1b`, `\\u202e`, `\\\\`).
JSON, Prometheus and IPFIX carry names exactly, escaped as their formats require;
the totals database keeps them as read.
"""

from __future__ import annotations

import re

# C0 but \n, DEL, C1; the bidi embeddings, overrides, isolates and marks; the backslash.
_HIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069\\\\]")


def _escaped(m: re.Match) -> str:
    c = m.group()
    if c == "\\":
        return "\\\\"
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def visible(text: str) -> str:
    """``text`` with what a terminal would act on written out; newlines kept (a batch
    of lines is escaped at once)."""
    if _HIDDEN.search(text) is None:  # nearly always: one scan, no copy
        return text
    return _HIDDEN.sub(_escaped, text)
