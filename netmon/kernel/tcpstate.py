"""TCP health's maps: the RTT histograms read, the connections' state swept.

The kernel keeps a histogram per interface slot and the direction of the packets that
start samples (rtthist), and a state entry per connection (tcpstate). A connection
that ends, or goes quiet, leaves its entry: netmon sweeps them. Each sweep moves the
generation on (tcpgen); a packet marks its connection's entry with the generation it
sees; an entry no packet marked since the sweep before last is deleted. A connection
quiet that long (two sweeps) that comes back is followed anew: its next segment
starts its sequence, nothing is counted wrong.
"""

from __future__ import annotations

import os
import struct
import time

from netmon.kernel import libbpf
from netmon.kernel.abi import RTT_BUCKETS, RTT_HIST, TCP_HALF, TCP_STATE
from netmon.kernel.libbpf import ffi

SWEEP_SECONDS = 30.0
SWEEP_ENV = "NETMON_TCP_SWEEP"  # another period, in seconds: for tests


def sweep_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get(SWEEP_ENV, SWEEP_SECONDS)))
    except ValueError:
        return SWEEP_SECONDS
_GEN_AT = 2 * TCP_HALF.size  # struct nm_tcp_state's gen


def read_histogram(fd: int, index: int) -> tuple[int, int, list[int]]:
    """struct nm_rtt_hist: (count, sum_ns, the buckets) (tcphealth.Histogram's fields)."""
    value = ffi.new("char[]", RTT_HIST.size)
    libbpf.ensure(libbpf.lib().bpf_map_lookup_elem(fd, ffi.new("__u32 *", index), value),
                  "reading an RTT histogram")
    fields = RTT_HIST.unpack(ffi.buffer(value))
    return fields[0], fields[1], list(fields[2:2 + RTT_BUCKETS])


def clear_histogram(fd: int, index: int) -> None:
    libbpf.ensure(libbpf.lib().bpf_map_update_elem(
        fd, ffi.new("__u32 *", index), ffi.new("char[]", RTT_HIST.size), 0),
        "clearing an RTT histogram")


class Sweeper:
    """Deletes the state of connections no packet touched for two sweeps."""

    def __init__(self, state_fds: tuple[tuple[int, int], ...], gen_fd: int):
        """``state_fds``: each state table's fd and key size (MonitorProgram.tcpstate_fds)."""
        self._state_fds, self._gen_fd = state_fds, gen_fd
        self.gen = 0
        self.expired = 0  # entries deleted: connections that ended or went quiet
        self._every = sweep_seconds()
        self._next = time.monotonic() + self._every

    def tick(self) -> None:
        """A sweep, when one is due (the run's loop calls this at every poll)."""
        now = time.monotonic()
        if now >= self._next:
            self.sweep()
            self._next = now + self._every

    def sweep(self) -> int:
        """One sweep; returns the entries it deleted."""
        lib = libbpf.lib()
        self.gen += 1
        libbpf.ensure(lib.bpf_map_update_elem(self._gen_fd, ffi.new("__u32 *", 0),
                                              ffi.new("__u32 *", self.gen), 0),
                      "moving the TCP state's generation on")
        deleted = 0
        for fd, size in self._state_fds:
            key, nxt = ffi.new("char[]", size), ffi.new("char[]", size)
            value = ffi.new("char[]", TCP_STATE.size)
            old, first = [], True
            while lib.bpf_map_get_next_key(fd, ffi.NULL if first else key, nxt) == 0:
                first = False
                ffi.memmove(key, nxt, size)
                if lib.bpf_map_lookup_elem(fd, key, value) != 0:
                    continue  # deleted by now
                gen = struct.unpack_from("=I", ffi.buffer(value), _GEN_AT)[0]
                # Serial: the generations wrap after 2^32 sweeps.
                if (self.gen - gen) & 0xFFFFFFFF >= 2:
                    old.append(bytes(ffi.buffer(key)))
            for raw in old:
                if lib.bpf_map_delete_elem(fd, ffi.from_buffer(raw)) == 0:
                    self.expired += 1
                    deleted += 1
        return deleted
