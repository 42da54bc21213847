"""netmon's exceptions. Each carries a message meant for the user, whole, on one line.

The CLI maps each class to an exit status; nothing below it knows exit codes.
"""

from __future__ import annotations

import re

QUOTED_MAX = 100  # characters of what was typed that an error quotes whole


def quoted(text: str) -> str:
    """What the user typed, quoted as an error shows it: whole if short, else its start and
    how long it is (an expression of 10,000 terms, or a whole -F file, is no line)."""
    if len(text) <= QUOTED_MAX:
        return repr(text)
    return f"{text[:QUOTED_MAX - 40]!r}... ({len(text):,} characters)"


class NetmonError(Exception):
    """Base class: something the user can understand and usually fix."""


class UsageError(NetmonError):
    """An option value that cannot be used."""


class ExpressionInvalid(UsageError):
    """A filter expression libpcap refused, or one netmon cannot run in the kernel: the
    reason, then the expression quoted (cut when long)."""

    def __init__(self, reason: str, expression: str):
        super().__init__(f"{reason}: {quoted(expression)}")
        self.reason = reason

    def from_file(self, path: str) -> "ExpressionInvalid":
        """The same refusal for an expression -F read from ``path``, which shows nothing
        of the file: it may be any file (-F /etc/shadow, through a sudo rule), and
        libpcap's reason may quote a word of it (unknown host 'root:$6$...')."""
        reason = re.sub(r"'[^']*'", "…", self.reason)  # unknown host '…'
        reason = re.sub(r"(illegal token)\b.*", r"\1", reason)  # illegal token: x
        error = ExpressionInvalid.__new__(ExpressionInvalid)
        UsageError.__init__(error, f"-F {path}: not a filter expression netmon can run "
                                   f"({reason})")
        error.reason = reason
        return error


class LibpcapMissing(NetmonError):
    """An expression was given and libpcap.so.0.8, which compiles it, is absent."""


class PermissionProblem(NetmonError):
    """Not root, or missing the capabilities XDP and perf buffers need."""


class InterfaceNotFound(NetmonError):
    """The named interface does not exist in this network namespace."""


class LibbpfMissing(NetmonError):
    """libbpf.so.1 is absent or older than netmon supports."""


class KernelTooOld(NetmonError):
    """The running kernel lacks what the program needs."""


class ProgramRejected(NetmonError):
    """The kernel's verifier refused the BPF program."""


class XdpBusy(NetmonError):
    """The interface already has an XDP program that netmon did not attach."""


class InterfaceGone(NetmonError):
    """A named interface went away (while netmon started, or ran, without --follow)."""


class AttachFailed(NetmonError):
    """The kernel refused to attach the program in any allowed mode."""


class ObjectMismatch(NetmonError):
    """The BPF object does not match this netmon's idea of its layout."""


class LibbpfError(NetmonError):
    """A libbpf call failed; ``errno`` holds the positive error number."""

    def __init__(self, errno: int, message: str):
        super().__init__(message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return self.message


class CaptureDamaged(NetmonError):
    """The file stops making sense at ``offset``; the frames before it were read."""

    def __init__(self, path: str, offset: int, what: str):
        super().__init__(f"{path}: damaged at byte {offset}: {what}")
        self.offset = offset


class CaptureUnreadable(NetmonError):
    """Not a capture netmon can read: another format, or a link type other than Ethernet."""


class CaptureWriteError(NetmonError):
    """The capture file could not be written (a full disk, an I/O error)."""


class MetricsUnavailable(NetmonError):
    """The endpoint cannot be served: the port is taken, the address is not ours."""


class TotalsUnavailable(NetmonError):
    """--totals: the database cannot be opened or written, or another netmon writes it;
    netmon totals: there is none, or it cannot be read."""
