"""The perf buffer's owner: raw records in, batches of bytes out, losses counted.

The callbacks run inside perf_buffer__poll() and do the least possible work:
copy the record and append it. Decoding happens later, on the whole batch.
"""

from __future__ import annotations

import errno

from netmon import libbpf
from netmon.events import EVENT_SIZE
from netmon.libbpf import ffi

DEFAULT_PAGES = 64  # per CPU; 256 KiB each, ~3,600 events of headroom per CPU


@ffi.callback("void(void *, int, void *, __u32)")
def _on_sample(ctx, cpu, data, size):
    reader = ffi.from_handle(ctx)
    if size < EVENT_SIZE:
        reader.short_records += 1
        return
    reader._batch.append(ffi.buffer(data, EVENT_SIZE)[:])


@ffi.callback("void(void *, int, __u64)")
def _on_lost(ctx, cpu, count):
    ffi.from_handle(ctx).lost += count


class PerfReader:
    """Reads nm_event records from the program's perf event array."""

    def __init__(self, map_fd: int, pages: int = DEFAULT_PAGES):
        if pages < 1 or pages & (pages - 1):
            raise ValueError(f"buffer pages must be a power of two, not {pages}")
        self.lost = 0  # records the kernel dropped because the buffer was full
        self.short_records = 0  # records too short to be events
        self._batch: list[bytes] = []
        self._closed = False
        self._handle = ffi.new_handle(self)  # keeps ctx alive as long as we are
        self._pb = libbpf.ensure(
            libbpf.lib().perf_buffer__new(map_fd, pages, _on_sample, _on_lost,
                                          self._handle, ffi.NULL),
            "opening the perf buffer",
        )

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Wait up to ``timeout_ms`` for records; return those that arrived."""
        rc = libbpf.lib().perf_buffer__poll(self._pb, timeout_ms)
        if rc < 0 and -rc != errno.EINTR:  # a signal is how the user stops us
            libbpf.ensure(rc, "polling the perf buffer")
        return self._take()

    def drain(self) -> list[bytes]:
        """Whatever is left in the buffer, without waiting."""
        rc = libbpf.lib().perf_buffer__consume(self._pb)
        if rc < 0 and -rc != errno.EINTR:
            libbpf.ensure(rc, "draining the perf buffer")
        return self._take()

    def _take(self) -> list[bytes]:
        batch, self._batch = self._batch, []
        return batch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        libbpf.lib().perf_buffer__free(self._pb)
        self._pb = ffi.NULL

    def __enter__(self) -> "PerfReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
