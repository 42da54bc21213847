"""--totals PATH: what the kernel counted, added to a SQLite database once a minute.

The kernel counts every matching packet by interface, direction and protocol
(the same counters --metrics serves). Each write reads them, adds what grew
since the last read to the current hour's rows (store.Writer), and commits
once. An interface that goes away gives its last counts first, and they are
written at once; a tap made anew starts from zero under a new ifindex, and its
guest's totals go on (store.Key). A write that fails is counted and retried
with the next: nothing read is dropped while the run lasts.
"""

from __future__ import annotations

import sqlite3
import time

from netmon.escape import visible
from netmon.totals import store
from netmon.events import DIR_NAMES
from netmon.kernel.abi import PROTO_NAMES
from netmon.errors import TotalsUnavailable
from netmon.pipeline import Context, Sink, Start
from netmon.host import proxmox

Counts = dict[str, int]
TCP_COUNTERS = ("tcp_data", "tcp_retrans", "tcp_reorder")  # what the tcp tables keep
SNAPSHOT_EVERY = 300.0  # seconds between two --totals-snapshot copies


class _Trouble:
    """A failure that repeats (a full disk, storage away) is said once, and once more
    when it clears: not a line per try."""

    def __init__(self, err):
        self._err = err
        self.on = False

    def say(self, text: str) -> None:
        self._err.write(visible(f"netmon: {text}") + "\n")
        self._err.flush()

    def failed(self, text: str, again: bool = False) -> None:
        """Said if it is new (``again``: said whatever came before, the last chance)."""
        if again or not self.on:
            self.say(text)
        self.on = True

    def cleared(self, text: str) -> None:
        if self.on:
            self.on = False
            self.say(text)


class TotalsSink(Sink):
    start = Start.FIRST  # a database another netmon writes stops the run before it starts

    @classmethod
    def wanted(cls, settings) -> bool:
        return settings.totals is not None

    def __init__(self, ctx: Context):
        t = ctx.settings.totals
        self._ctx = ctx
        self._every = t.every
        self._writer = store.Writer(t.path, t.keep_days)
        self._last: dict[tuple[int, int], Counts] = {}  # (ifindex, direction) -> as last read
        # (hour, key, direction, protocol) -> [packets, bytes], not yet committed
        self._pending: dict[tuple[int, store.Key, str, str], list[int]] = {}
        self._names: dict[int, str | None] = {}  # guests seen since the last write
        # TCP health (netmon rtt --totals): (hour, key, direction) -> [data segments,
        # retransmitted, out of order]; (hour, key, component, bucket) -> samples; each
        # histogram's buckets as last read, by (interface, component)
        self._pending_tcp: dict[tuple[int, store.Key, str], list[int]] = {}
        self._pending_rtt: dict[tuple[int, store.Key, str, int], int] = {}
        self._last_rtt: dict[tuple[str, str], list[int]] = {}
        self._next = time.monotonic() + self._every
        self.writes = 0
        self.failed = 0
        self.unwritten: tuple[int, int] | None = None  # packets, bytes the last write lost
        self._writes_failing = _Trouble(ctx.err)
        self._snapshot = t.snapshot
        self._next_snapshot = time.monotonic()  # the first with the first write
        self.snapshots = 0
        self._snapshots_failing = _Trouble(ctx.err)

    def _grown(self, ifindex: int, ifname: str, direction: int, now: Counts,
               hour: int) -> None:
        """What ``ifindex`` counted in ``direction`` since the last read, into pending."""
        before = self._last.get((ifindex, direction), {})
        self._last[(ifindex, direction)] = now
        key = store.Key.of(ifname)
        if key.guest and key.guest not in self._names:
            self._names[key.guest] = proxmox.guest_name(key.guest)
        for proto in PROTO_NAMES:
            packets = now.get(f"packets_{proto}", 0) - before.get(f"packets_{proto}", 0)
            octets = now.get(f"bytes_{proto}", 0) - before.get(f"bytes_{proto}", 0)
            if packets or octets:
                slot = self._pending.setdefault((hour, key, DIR_NAMES[direction], proto),
                                                [0, 0])
                slot[0] += packets
                slot[1] += octets
        grown = [now.get(c, 0) - before.get(c, 0) for c in TCP_COUNTERS]
        if any(grown):
            slot = self._pending_tcp.setdefault((hour, key, DIR_NAMES[direction]), [0, 0, 0])
            for i, n in enumerate(grown):
                slot[i] += n

    def _rtt_grown(self, hists: dict, hour: int) -> None:
        """What each RTT histogram gained since the last read, bucket by bucket."""
        for (ifname, component), h in hists.items():
            before = self._last_rtt.get((ifname, component))
            self._last_rtt[(ifname, component)] = list(h.buckets)
            key = store.Key.of(ifname)
            for bucket, n in enumerate(h.buckets):
                n -= before[bucket] if before else 0
                if n > 0:
                    slot = (hour, key, component, bucket)
                    self._pending_rtt[slot] = self._pending_rtt.get(slot, 0) + n

    def _read(self) -> None:
        hour = store.hour_of(time.time())
        for ifindex, (ifname, by_direction) in self._ctx.watched().items():
            for direction, counts in by_direction.items():
                self._grown(ifindex, ifname, direction, counts, hour)
        if self._ctx.settings.rtt_alone:  # the kernel's RTT histograms (the feed's figures)
            hists = self._ctx.tally().rtt_hists
            if hists:
                self._rtt_grown(hists, hour)

    def _write(self, last: bool = False) -> None:
        """The pending counts into the database. One that fails (a full disk, say) is kept
        and tried again next time; the ``last`` one, at exit, has no next time: what it
        held is said, and the run's exit status says so too (Summary.totals)."""
        rows = [(hour, key, d, p, n, b) for (hour, key, d, p), (n, b) in self._pending.items()]
        try:
            self._follow_the_path()
            self._writer.add(
                rows, self._names,
                rtt=[(*k, n) for k, n in self._pending_rtt.items()],
                tcp=[(*k, *v) for k, v in self._pending_tcp.items()])
        except (sqlite3.Error, TotalsUnavailable) as exc:
            self.failed += 1
            if last:
                self.unwritten = (sum(n for n, _ in self._pending.values()),
                                  sum(b for _, b in self._pending.values()))
                then = "at exit: {} packets ({} bytes) are not in it".format(*self.unwritten)
            else:
                then = f"trying again every {self._every:g} s"
            where = "" if isinstance(exc, TotalsUnavailable) else f"--totals {self._writer.path}: "
            why = exc if isinstance(exc, TotalsUnavailable) else store.told(exc)
            self._writes_failing.failed(f"{where}{why}; {then}", again=last)
            return
        self._writes_failing.cleared(f"--totals {self._writer.path}: written again, with the "
                                     f"counts the failed writes held")
        self.writes += 1
        self._pending.clear()
        self._pending_rtt.clear()
        self._pending_tcp.clear()
        self._names.clear()
        if self._snapshot and (last or time.monotonic() >= self._next_snapshot):
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        """A copy for the cluster's shared storage. One that fails is said once and tried
        again at the next write; the database itself is not touched by it."""
        self._next_snapshot = time.monotonic() + SNAPSHOT_EVERY
        try:
            self._writer.snapshot(self._snapshot)
        except (sqlite3.Error, OSError) as exc:
            self._next_snapshot = time.monotonic()  # again with the next write
            self._snapshots_failing.failed(f"--totals-snapshot {self._snapshot}: "
                                           f"{store.told(exc)}; trying again with each write")
            return
        self._snapshots_failing.cleared(f"--totals-snapshot {self._snapshot}: written again")
        self.snapshots += 1

    def _follow_the_path(self) -> None:
        """The database deleted or replaced under a running netmon: said, and a new one
        opened at the path, so that what comes next is not written into a file no one can
        read (TotalsUnavailable: another netmon took the path meanwhile)."""
        if not self._writer.is_open:  # the last try to open it failed, and said so
            self._writer.reopen()
            return
        moved = self._writer.moved()
        if moved:
            self._ctx.err.write(visible(f"netmon: --totals {self._writer.path}: the database "
                                        f"was {moved} while netmon wrote it; writing to a new "
                                        f"one there") + "\n")
            self._ctx.err.flush()
            self._writer.reopen()

    def tick(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._every
        self._read()
        self._write()

    def forget(self, ifindex: int, last) -> None:
        """Its last counts, written now: its name may come back as another interface."""
        ifname, counts_by_direction = last
        hour = store.hour_of(time.time())
        for direction, counts in counts_by_direction.items():
            self._grown(ifindex, ifname, direction, counts, hour)
        for direction in list(counts_by_direction):
            self._last.pop((ifindex, direction), None)
        self._write()

    def report(self, summary) -> None:
        summary.totals = (self._writer.path, self.writes, self.failed, self.unwritten)
        if self._snapshot:
            summary.totals_snapshots = (self._snapshot, self.snapshots)

    def close(self) -> None:
        try:
            self._read()
        except Exception:  # noqa: BLE001 - the program is gone (an error path): keep what was read
            pass
        self._write(last=True)
        self._writer.close()
