"""The kernel's two flow tables, flipped and read once a second (struct layouts: abi.py).

Each hook adds every matching packet to its flow in the table flowside names;
FlowTable.take() flips flowside, waits until no program still counts into the
other table (flowsync), then reads and empties it with batch operations where
the kernel has them. Its rows go to flows.FlowBook, which is plain Python.
"""

from __future__ import annotations

import time

from netmon.kernel import libbpf
from netmon.kernel.abi import FLOW_KEY, FLOW_KEY4, FLOW_TABLES, FLOW_VALUE
from netmon.kernel.libbpf import ffi
from netmon.kernel.loader import MonitorProgram

BPF_MAP_TYPE_PERCPU_HASH = 5
ENOENT = 2


class FlowTable:
    """The kernel's two flow tables: take() gives the last interval's flows."""

    def __init__(self, prog: MonitorProgram, entries: int):
        obj = prog.obj
        lib = libbpf.lib()
        # Per side: (fd, key size) of its IPv6 table and of its IPv4 one.
        self._fds = [((obj.map_fd(six), FLOW_KEY.size), (obj.map_fd(four), FLOW_KEY4.size))
                     for six, four in FLOW_TABLES]
        self._side_fd = obj.map_fd("flowside")
        self._sync_fd = obj.map_fd("flowsync")
        self._sync_value = ffi.new("__u32 *", obj.map_fd("flowsync_inner"))
        self._zero = ffi.new("__u32 *", 0)
        self._side = 0
        percpu = lib.bpf_map__type(obj.map(FLOW_TABLES[0][0])) == BPF_MAP_TYPE_PERCPU_HASH
        self._cpus = libbpf.ensure(lib.libbpf_num_possible_cpus(), "counting CPUs") \
            if percpu else 1
        self._entries = entries
        self._keys = ffi.new("char[]", entries * FLOW_KEY.size)
        self._values = ffi.new("char[]", entries * FLOW_VALUE.size * self._cpus)
        self._batch = ffi.new("char[]", 8)  # the kernel's position in a hash map: a bucket
        self._batch_ops = True
        self._taken_ns = 0

    def take(self) -> list[tuple[bytes, int, int, int, int, int]]:
        """Flip the tables, wait until no program counts into the old one, read and empty it.

        Returns (raw key, tcp_flags, packets, bytes, first_ns, last_ns) per flow.
        """
        lib = libbpf.lib()
        idle = self._side
        self._side ^= 1
        libbpf.ensure(lib.bpf_map_update_elem(self._side_fd, self._zero,
                                              ffi.new("__u32 *", self._side), 0),
                      "switching flow tables")
        # Returns once every program running now has finished (see flowsync).
        libbpf.ensure(lib.bpf_map_update_elem(self._sync_fd, self._zero, self._sync_value, 0),
                      "waiting for the flow table's writers")
        # No packet is counted into it from now on: the latest any flow in it was seen.
        self._taken_ns = time.monotonic_ns()
        return [row for fd, size in self._fds[idle] for row in self._read(fd, size)]

    def _read(self, fd: int, size: int) -> list:
        if self._batch_ops:
            try:
                return self._read_batches(fd, size)
            except libbpf.LibbpfError as exc:
                if exc.errno not in (22, 95, 524):  # EINVAL, EOPNOTSUPP, ENOTSUPP: < 5.6
                    raise
                self._batch_ops = False
        return self._read_one_by_one(fd, size)

    def _read_batches(self, fd: int, size: int) -> list:
        """BPF_MAP_LOOKUP_AND_DELETE_BATCH: all of it in a call or a few."""
        lib = libbpf.lib()
        opts = libbpf.new_opts("bpf_map_batch_opts")
        count = ffi.new("__u32 *")
        rows = []
        first = True
        while True:
            count[0] = self._entries
            rc = lib.bpf_map_lookup_and_delete_batch(
                fd, ffi.NULL if first else self._batch, self._batch, self._keys,
                self._values, count, opts)
            if rc < 0 and rc != -ENOENT:
                libbpf.ensure(rc, "reading the flow table")
            rows += self._rows(count[0], size)
            if rc == -ENOENT or count[0] == 0:
                return rows
            first = False

    def _read_one_by_one(self, fd: int, size: int) -> list:
        """Kernels without batch operations: nothing writes this table now, so a walk
        and a delete per flow lose nothing either."""
        lib = libbpf.lib()
        n = 0
        key = ffi.NULL
        while n < self._entries:
            nxt = self._keys + n * size
            if lib.bpf_map_get_next_key(fd, key, nxt) < 0:
                break
            key = nxt
            n += 1
        for i in range(n):
            k = self._keys + i * size
            libbpf.ensure(lib.bpf_map_lookup_elem(
                fd, k, self._values + i * FLOW_VALUE.size * self._cpus), "reading a flow")
            lib.bpf_map_delete_elem(fd, k)
        return self._rows(n, size)

    def _rows(self, n: int, size: int) -> list:
        keys = ffi.buffer(self._keys, n * size)[:]
        values = ffi.buffer(self._values, n * FLOW_VALUE.size * self._cpus)[:]
        stride = FLOW_VALUE.size * self._cpus
        taken = self._taken_ns  # a flow's last_ns 0: packets came after the first
        rows = []
        for i in range(n):
            key = keys[i * size:(i + 1) * size]
            if self._cpus == 1:
                packets, nbytes, first, last, seen = FLOW_VALUE.unpack_from(values, i * stride)
                flags = _flags(seen)
                last = last or taken
            else:  # per-CPU copies: the sum, the union, the earliest and the latest
                flags = packets = nbytes = last = 0
                first = None
                for cpu in range(self._cpus):
                    p, b, t0, t1, seen = FLOW_VALUE.unpack_from(
                        values, i * stride + cpu * FLOW_VALUE.size)
                    f = _flags(seen)
                    if p:
                        flags |= f
                        packets += p
                        nbytes += b
                        if t0:  # the CPU that made the entry stamped it
                            first = t0 if first is None else min(first, t0)
                        last = max(last, t1 or taken)
                first = first or 0
            rows.append((key, flags, packets, nbytes, first, last))
        return rows


_FLAGS: dict[bytes, int] = {}  # a byte per flag, each 0 or 1: at most 256 of them


def _flags(seen: bytes) -> int:
    """The TCP flags byte from struct nm_flow's byte per flag (looked up: most flows of a
    read share a handful of patterns, all zeros for UDP)."""
    flags = _FLAGS.get(seen)
    if flags is None:
        flags = sum(1 << i for i, b in enumerate(seen) if b)
        if len(_FLAGS) < 1024:
            _FLAGS[seen] = flags
    return flags
