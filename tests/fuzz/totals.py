"""Totals databases as a disk, a crash or a hostile hand leaves them: netmon's own file,
with and without the WAL a killed writer leaves, its bytes changed where SQLite keeps
its structure (the file header, page headers, cell pointers) and anywhere else, or cut.

Each is read as `netmon totals` reads it (cli.main, every view). What may happen: the
report (status 0), or one line and status 12. A traceback, another status, or a second
line is a finding.
"""

from __future__ import annotations

import contextlib
import io
import random
import struct
import time
import traceback
from pathlib import Path

from netmon import cli
from netmon.totals import store
from netmon.totals.store import Key, Writer
from tests.fuzz import Finding, Report

VIEWS = (["--days"], ["--hours"], ["--months"], ["--top", "3"], ["--json"],
         ["--months", "--json"], ["--guest", "101"], ["--days", "--month-start", "15"],
         ["--rtt", "--hours"], ["--rtt", "--days", "--json"], ["--html", "-"])


def templates(tmp: Path) -> list[tuple[bytes, bytes | None]]:
    """(database, its WAL or None): a closed one, and one whose writer was never closed
    (the WAL a kill -9 leaves), each with days folded and hours, several guests."""
    out = []
    now = time.time()
    hour = store.hour_of(now)
    rows = [(hour - h * 3600, Key(100 + g % 7, g % 3) if g % 5 else Key(interface=f"eth{g}"),
             "in" if h % 2 else "out", ("tcp", "udp", "icmp")[g % 3], 1 + g, 100 * (1 + g))
            for h in range(0, 24 * 40, 7) for g in range(12)]
    names = {100 + g: f"guest-{g}" for g in range(7)}
    # TCP health's rows (netmon rtt --totals): buckets and segments beside the traffic
    rtt = [(hour - h * 3600, Key(100 + g % 7, 0), ("network", "guest")[g % 2], 20 + g * 3,
            1 + g) for h in range(0, 24 * 40, 11) for g in range(6)]
    tcp = [(hour - h * 3600, Key(100 + g % 7, 0), ("in", "out")[g % 2], 100 + g, g, g % 2)
           for h in range(0, 24 * 40, 11) for g in range(6)]
    for closed in (True, False):
        path = tmp / f"template-{closed}.db"
        w = Writer(str(path), keep_days=7)
        w.add(rows[:len(rows) // 2], names, now, rtt=rtt, tcp=tcp)
        w.add(rows[len(rows) // 2:], names, now)
        if closed:
            w.close()
            out.append((path.read_bytes(), None))
        else:  # as kill -9 leaves it: the database and the WAL, read before close
            wal = Path(str(path) + "-wal")
            out.append((path.read_bytes(), wal.read_bytes() if wal.exists() else None))
            w.close()
    return out


def mutated(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    page = struct.unpack_from(">H", buf, 16)[0] if len(buf) > 18 else 4096
    page = 65536 if page == 1 else page or 4096
    for _ in range(rng.randrange(1, 5)):
        if not buf:
            break
        where = rng.random()
        if where < 0.25:  # the database header
            at = rng.randrange(min(100, len(buf)))
        elif where < 0.7:  # a page's header or cell pointers
            first = rng.randrange(max(1, len(buf) // page)) * page
            at = min(len(buf) - 1, first + (100 if first == 0 else 0) + rng.randrange(24))
        else:
            at = rng.randrange(len(buf))
        how = rng.randrange(3)
        if how == 0:
            buf[at] ^= 1 << rng.randrange(8)
        elif how == 1:
            buf[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.getrandbits(8)))
        else:
            buf[at:at + 4] = struct.pack(">I", rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF,
                                                           rng.getrandbits(32))))
    if rng.random() < 0.1:
        del buf[rng.randrange(len(buf) + 1):]
    return bytes(buf)


def read_as_netmon_totals(path: Path, view: list[str]) -> str | None:
    """What went wrong reading it, or None."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["totals", "--db", str(path), "--since", "1970-01", *view])
    text = err.getvalue()
    if status == cli.ExitStatus.SUCCESS and not text:
        return None
    if status == cli.ExitStatus.TOTALS and text.count("\n") == 1 \
            and text.startswith("netmon: error: "):
        return None
    return f"status {status}, stderr {text[-300:]!r}"


def campaign(n: int, seed: int, tmp: Path) -> Report:
    rng = random.Random(seed)
    report = Report("totals databases")
    bases = templates(tmp)
    path = tmp / "fuzzed.db"
    for _ in range(n):
        db, wal = rng.choice(bases)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        if wal is not None and rng.random() < 0.5:
            path.write_bytes(db)
            Path(str(path) + "-wal").write_bytes(mutated(rng, wal))
        else:
            path.write_bytes(mutated(rng, db))
            if wal is not None:
                Path(str(path) + "-wal").write_bytes(wal)
        report.inputs += 1
        view = rng.choice(VIEWS)
        try:
            what = read_as_netmon_totals(path, view)
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        if what is None:
            report.count("read or refused in one line")
        else:
            report.findings.append(Finding(what.splitlines()[0], path.read_bytes(),
                                           f"{' '.join(view)}\n{what}"))
    return report
