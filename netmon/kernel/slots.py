"""Interface slots: the object's counters per watched interface and direction.

The program counts each frame under its interface's slot (slot 0: interfaces not
registered), found through a direct-mapped cache (ifcache, by ifindex modulo
IF_CACHE) and, where two interfaces share a cache line, a hash (ifslots). ``Slots``
hands slots out and back, and reads and sums the per-CPU counters; a slot given
back keeps its counts as "retired", so the totals never go down.
"""

from __future__ import annotations

from netmon.errors import AttachFailed
from netmon.kernel import libbpf
from netmon.kernel.abi import COUNTER_NAMES, DIR_IN, DIR_OUT, IF_CACHE, IF_SLOTS
from netmon.kernel.libbpf import ffi


class Slots:
    """The slot registry of one loaded object (its counters, ifcache and ifslots maps)."""

    def __init__(self, counters_fd: int, ifcache_fd: int, ifslots_fd: int,
                 capture: bool = False):
        """``capture``: slots are a capture's interface ids, never given out twice."""
        self._counters_fd = counters_fd
        self._ifcache_fd = ifcache_fd
        self._ifslots_fd = ifslots_fd
        self._capture = capture
        self._ncpus = libbpf.ensure(libbpf.lib().libbpf_num_possible_cpus(), "counting CPUs")
        self._slots: dict[int, int] = {}  # ifindex -> slot
        self._free = list(range(IF_SLOTS - 1, 0, -1))
        self._retired = dict.fromkeys(COUNTER_NAMES, 0)  # counts of unregistered slots
        # Called with (ifindex, slot) as an interface is unregistered, before its slot
        # is free (what else is kept per slot is read and cleared then: RTT histograms).
        self.on_unregister: list = []

    def register(self, ifindex: int) -> None:
        """Count ``ifindex``'s frames apart from now on (before attaching to it)."""
        if ifindex in self._slots:
            return
        if not self._free:
            raise AttachFailed(f"netmon watches at most {IF_SLOTS - 1} interfaces at once"
                               + (" (in one capture, ever)" if self._capture else ""))
        slot = self._free.pop()
        lib = libbpf.lib()
        key = ffi.new("__u32 *", ifindex % IF_CACHE)
        cached = ffi.new("__u32[2]")  # struct nm_ifslot: ifindex, slot
        libbpf.ensure(lib.bpf_map_lookup_elem(self._ifcache_fd, key, cached), "reading ifcache")
        if cached[0] not in self._slots:  # free (0), or left by an interface now gone
            cached[0], cached[1] = ifindex, slot
            libbpf.ensure(lib.bpf_map_update_elem(self._ifcache_fd, key, cached, 0),
                          "registering an interface")
        else:  # the cache line belongs to another watched interface
            libbpf.ensure(lib.bpf_map_update_elem(
                self._ifslots_fd, ffi.new("__u32 *", ifindex), ffi.new("__u32 *", slot), 0),
                "registering an interface")
        self._slots[ifindex] = slot

    def unregister(self, ifindex: int) -> dict[int, dict[str, int]]:
        """Stop counting ``ifindex`` apart; returns its last counts by direction."""
        slot = self._slots.pop(ifindex, None)
        if slot is None:
            return {}
        for call in self.on_unregister:
            call(ifindex, slot)
        lib = libbpf.lib()
        key = ffi.new("__u32 *", ifindex % IF_CACHE)
        cached = ffi.new("__u32[2]")
        libbpf.ensure(lib.bpf_map_lookup_elem(self._ifcache_fd, key, cached), "reading ifcache")
        if cached[0] == ifindex:
            libbpf.ensure(lib.bpf_map_update_elem(self._ifcache_fd, key,
                                                  ffi.new("__u32[2]"), 0), "unregistering")
        else:
            lib.bpf_map_delete_elem(self._ifslots_fd, ffi.new("__u32 *", ifindex))
        last = {}
        zero = ffi.new("__u64[]", self._ncpus * len(COUNTER_NAMES))
        for direction in (DIR_IN, DIR_OUT):
            last[direction] = self._read_slot(slot * 2 + direction)
            for name, value in last[direction].items():
                self._retired[name] += value
            libbpf.ensure(lib.bpf_map_update_elem(
                self._counters_fd, ffi.new("__u32 *", slot * 2 + direction), zero, 0),
                "clearing counters")
        if not self._capture:  # a capture file's interface ids stay the slots they had
            self._free.append(slot)
        return last

    def registered(self) -> dict[int, int]:
        """ifindex -> slot of every registered interface."""
        return dict(self._slots)

    def slot(self, ifindex: int) -> int:
        """The registered interface's slot: its interface id in a capture file."""
        return self._slots[ifindex]

    def _read_slot(self, index: int) -> dict[str, int]:
        n = len(COUNTER_NAMES)
        values = ffi.new("__u64[]", self._ncpus * n)
        libbpf.ensure(libbpf.lib().bpf_map_lookup_elem(
            self._counters_fd, ffi.new("__u32 *", index), values), "reading counters")
        return {name: sum(values[cpu * n + i] for cpu in range(self._ncpus))
                for i, name in enumerate(COUNTER_NAMES)}

    def counters(self, ifindex: int | None = None, direction: int | None = None
                 ) -> dict[str, int]:
        """Counters summed over CPUs: of one interface and direction, or of everything."""
        if ifindex is not None:
            slot = self._slots.get(ifindex)
            if slot is None:
                return dict.fromkeys(COUNTER_NAMES, 0)
            return self._read_slot(slot * 2 + (direction or DIR_IN))
        total = dict(self._retired)
        for slot in [0, *self._slots.values()]:
            for d in (DIR_IN, DIR_OUT):
                for name, value in self._read_slot(slot * 2 + d).items():
                    total[name] += value
        return total
