"""A --totals database with known traffic, as netmon would have written it: guests with
a day's rhythm (busy afternoons, quiet nights), a host interface, and round trips for
the last days. For the report's tests, its screenshot and its bench."""

from __future__ import annotations

import math

from netmon import tcphealth
from netmon.totals.store import HOUR, Key, Writer, hour_of

NOW = 1_796_000_000.0  # a fixed time (2026-11-29): runs give the same bytes
GUESTS = {100: "web1", 101: "db1", 102: "backup"}


def hourly(guest: int, hour: int) -> tuple[int, int]:
    """(bytes the guest sent, bytes it received) in the hour starting at ``hour``."""
    of_day = (hour // HOUR) % 24
    shape = 0.25 + 0.75 * max(0.0, math.sin(math.pi * (of_day - 6) / 16))
    scale = {100: 400 << 20, 101: 120 << 20}.get(guest, 30 << 20)
    if guest == 102 and of_day == 2:  # the backup's night
        return 3 << 30, 2 << 20
    sent = int(scale * shape * (1 + (guest + hour // HOUR) % 7 / 10))
    return sent, sent // 3 + guest * 1000


def write(path: str, now: float = NOW, days: int = 30, guests: dict[int, str] = GUESTS,
          keep_days: int = 90, rtt: bool = True, interface: str = "vmbr0") -> None:
    """``days`` of hourly rows up to ``now``; with ``keep_days`` below that, the older
    hours folded into days as netmon folds them."""
    last = hour_of(now)
    with Writer(path, keep_days=keep_days) as w:
        rows, tcp_rows, rtt_rows = [], [], []
        for h in range(days * 24):
            hour = last - h * HOUR
            for guest in guests:
                sent, received = hourly(guest, hour)
                key = Key(guest, 0)
                # On a guest's tap, "in" is what the guest sent.
                rows += [(hour, key, "in", "tcp", sent // 1400 + 1, sent),
                         (hour, key, "out", "tcp", received // 1400 + 1, received)]
            if interface:
                rows.append((hour, Key(0, -1, interface), "in", "udp", h + 1, (h + 1) * 1000))
            if rtt and h < 7 * 24 and 100 in guests:
                of_day = (hour // HOUR) % 24
                slow = 35_000_000 if 14 <= of_day < 17 else 18_000_000  # afternoons
                rtt_rows += [(hour, Key(100, 0), "network", tcphealth.bucket_of(slow), 40),
                             (hour, Key(100, 0), "network",
                              tcphealth.bucket_of(slow * 3), 1),
                             (hour, Key(100, 0), "guest", tcphealth.bucket_of(300_000), 38)]
                tcp_rows.append((hour, Key(100, 0), "in", 5000, 12, 2))
            if len(rows) > 20_000:
                w.add(rows, guests, now, rtt=rtt_rows, tcp=tcp_rows)
                rows, tcp_rows, rtt_rows = [], [], []
        w.add(rows, guests, now, rtt=rtt_rows, tcp=tcp_rows)
