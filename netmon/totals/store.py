"""--totals: the kernel's counts by guest, kept in SQLite for as long as they are wanted.

One database file (WAL mode: readers never block the one writer). What is kept:
packets and bytes per hour, per key, direction and protocol. A key is a guest's
NIC (``tap100i0`` and ``veth100i0`` are guest 100, NIC 0), so a guest's totals
go on across VM restarts, new tap ifindexes, netmon restarts and reboots; any
other interface is keyed by its name. Hourly rows older than ``keep_days`` are
folded into daily rows (local days), which are kept.

netmon's files are marked (SQLite's application_id, APPLICATION_ID): a file that is
not SQLite, another program's database, or a damaged one (``PRAGMA quick_check``) is
refused in one line and left as it is, before anything is written to it.

The writer takes an exclusive flock(2) on the file: a second netmon writing it is
refused. SQLite's own locks are POSIX locks, which flock does not touch; the
flock's descriptor stays open until SQLite has closed (closing any descriptor of
the file drops a process's POSIX locks).

Plain Python: no kernel. sinks/totals.py feeds it, totals/report.py reads it.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import socket
import sqlite3
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass

from netmon.errors import TotalsUnavailable
from netmon.host import proxmox

DEFAULT_PATH = "/var/lib/netmon/totals.db"
DEFAULT_KEEP_DAYS = 90
DEFAULT_EVERY = 60.0  # seconds between two writes
HOUR = 3600
SCHEMA_VERSION = 1
APPLICATION_ID = 0x4E4D5444  # "NMTD" in the header of every database netmon makes
SQLITE_HEADER = b"SQLite format 3\x00"
OUR_TABLES = {"meta", "guests", "hourly", "daily"}

# ``start``: the Unix time the hour (or the local day) began. A host interface is
# guest 0, nic -1 and its name; a guest's NIC has interface ''. Each table is one
# B-tree on its key (WITHOUT ROWID): the upsert and the reports walk it in order.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS guests(
    guest INTEGER PRIMARY KEY, name TEXT, seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hourly(
    start INTEGER NOT NULL, guest INTEGER NOT NULL, nic INTEGER NOT NULL,
    interface TEXT NOT NULL, direction TEXT NOT NULL, protocol TEXT NOT NULL,
    packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY(start, guest, nic, interface, direction, protocol)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daily(
    start INTEGER NOT NULL, guest INTEGER NOT NULL, nic INTEGER NOT NULL,
    interface TEXT NOT NULL, direction TEXT NOT NULL, protocol TEXT NOT NULL,
    packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY(start, guest, nic, interface, direction, protocol)) WITHOUT ROWID;
""" + "".join(f"""
CREATE TABLE IF NOT EXISTS rtt_{span}(
    start INTEGER NOT NULL, guest INTEGER NOT NULL, nic INTEGER NOT NULL,
    interface TEXT NOT NULL, component TEXT NOT NULL, bucket INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    PRIMARY KEY(start, guest, nic, interface, component, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tcp_{span}(
    start INTEGER NOT NULL, guest INTEGER NOT NULL, nic INTEGER NOT NULL,
    interface TEXT NOT NULL, direction TEXT NOT NULL, data INTEGER NOT NULL,
    retrans INTEGER NOT NULL, reorder INTEGER NOT NULL,
    PRIMARY KEY(start, guest, nic, interface, direction)) WITHOUT ROWID;
""" for span in ("hourly", "daily"))
# TCP health (netmon rtt --totals): RTT samples per hour, key, component and the kernel's
# histogram bucket (tcphealth.bucket_bounds: buckets add up exactly, so hours fold into
# days and days into months without losing a percentile's footing), and data segments,
# retransmitted and out of order, per hour, key and direction. Made in every database
# (CREATE ... IF NOT EXISTS): one older netmon made has them from its next write.
TCP_TABLES = ("rtt_hourly", "rtt_daily", "tcp_hourly", "tcp_daily")

_ADD = """
INSERT INTO hourly VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO UPDATE SET packets = packets + excluded.packets,
                          bytes = bytes + excluded.bytes
"""
_ADD_RTT = """
INSERT INTO rtt_hourly VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO UPDATE SET samples = samples + excluded.samples
"""
_ADD_TCP = """
INSERT INTO tcp_hourly VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO UPDATE SET data = data + excluded.data, retrans = retrans + excluded.retrans,
                          reorder = reorder + excluded.reorder
"""

# The local day an hour is in, as the Unix time of its midnight.
DAY_OF_START = "CAST(strftime('%s', date(start, 'unixepoch', 'localtime'), 'utc') AS INTEGER)"
_FOLD = f"""
INSERT INTO daily
SELECT {DAY_OF_START}, guest, nic, interface, direction, protocol, sum(packets), sum(bytes)
FROM hourly WHERE start < ? GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT DO UPDATE SET packets = packets + excluded.packets,
                          bytes = bytes + excluded.bytes
"""
_FOLD_RTT = f"""
INSERT INTO rtt_daily
SELECT {DAY_OF_START}, guest, nic, interface, component, bucket, sum(samples)
FROM rtt_hourly WHERE start < ? GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT DO UPDATE SET samples = samples + excluded.samples
"""
_FOLD_TCP = f"""
INSERT INTO tcp_daily
SELECT {DAY_OF_START}, guest, nic, interface, direction, sum(data), sum(retrans), sum(reorder)
FROM tcp_hourly WHERE start < ? GROUP BY 1, 2, 3, 4, 5
ON CONFLICT DO UPDATE SET data = data + excluded.data, retrans = retrans + excluded.retrans,
                          reorder = reorder + excluded.reorder
"""


@dataclass(frozen=True)
class Key:
    """Whose traffic: a guest's NIC, or a host interface by name."""

    guest: int = 0
    nic: int = -1
    interface: str = ""

    @classmethod
    def of(cls, ifname: str) -> "Key":
        """A guest's tap or veth by guest and NIC number; any other interface by name
        (fwln/fwpr carry the same packets as the tap: not the guest's, or it counts twice)."""
        nic = proxmox.guest_nic(ifname)
        return cls(*nic) if nic is not None else cls(interface=ifname)


def hour_of(t: float) -> int:
    return int(t) // HOUR * HOUR


def day_start(t: float) -> int:
    """The Unix time of the local midnight that begins ``t``'s day."""
    lt = time.localtime(t)
    return int(time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1)))


def _text(raw: bytes) -> str:
    # A damaged page can hold bytes that are not UTF-8 where text should be: shown
    # replaced, never a UnicodeDecodeError (found by tests/fuzz).
    return raw.decode("utf-8", "replace")


def told(exc: Exception) -> str:
    """SQLite's reason, without what it may quote of the file (a schema's object names:
    `malformed database schema (name) - ...`): an error never shows a file's contents."""
    if isinstance(exc, sqlite3.Error):
        return str(exc).split(" (")[0].split(" - ")[0]
    if isinstance(exc, UnicodeDecodeError):  # SQLite's own message was not UTF-8
        return "text that is not UTF-8"
    return getattr(exc, "strerror", None) or type(exc).__name__


def _uri(path: str, mode: str) -> str:
    """A file: URI for ``path``, whatever characters it holds (?, #, %)."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?{mode}"


def connect_read(path: str) -> sqlite3.Connection:
    """The database for reading (no write access needed); TotalsUnavailable if there is
    none. A WAL database needs its -shm file, which a reader without write access to
    the directory cannot make (or recover, after a writer was killed): such a reader
    reads a private copy of the database and its WAL (_private_copy), and gets the
    figures every reader gets."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TotalsUnavailable(f"{path}: no such database (netmon --totals {path} makes "
                                f"it)") from None
    except OSError as exc:
        raise TotalsUnavailable(f"{path}: {exc.strerror}") from None
    if os.path.isdir(path) or not st.st_size:
        raise TotalsUnavailable(f"{path}: not a netmon totals database ("
                                f"{'a directory' if os.path.isdir(path) else 'empty'})")
    if not os.access(path, os.R_OK):
        raise TotalsUnavailable(f"{path}: not readable by this user")
    error: Exception | None = None
    for where, mode in ((path, "mode=ro"), (None, "mode=ro")):
        db = None
        try:
            if where is None:  # no -shm this user may use: a copy of its own
                where = _private_copy(path)
            db = sqlite3.connect(_uri(where, mode), uri=True)
            db.text_factory = _text
            db.execute("SELECT count(*) FROM hourly").fetchall()  # all: no read left open
            return db
        except (sqlite3.DatabaseError, UnicodeDecodeError, OSError) as exc:
            error = exc
            if db is not None:
                db.close()
    raise TotalsUnavailable(f"{path}: not a netmon totals database ({told(error)})")


@dataclass(frozen=True)
class Ledger:
    """What a database says of itself: its ledger's id (copies share it), the node that
    wrote it, and when it was last written (None: by a netmon before these were kept)."""

    path: str
    ledger: str | None
    node: str | None
    written: int | None


def ledger_of(db: sqlite3.Connection, path: str) -> Ledger:
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN "
                           "('ledger', 'node', 'written')").fetchall())
    text = lambda v: v if type(v) is str else None  # noqa: E731 (a damaged value: unknown)
    written = meta.get("written")
    return Ledger(path, text(meta.get("ledger")), text(meta.get("node")),
                  written if type(written) is int else None)


def _private_copy(path: str) -> str:
    """The database and its WAL, copied where this user can make the -shm file: a reader
    without write access (no -shm there, or one left by a killed writer that a read-only
    reader cannot recover) then reads what the writer committed, WAL included, as root
    does. Removed at exit. (No writer runs then: a running one keeps a -shm readers use.)"""
    where = tempfile.mkdtemp(prefix="netmon-totals-")
    atexit.register(shutil.rmtree, where, True)
    copy = os.path.join(where, "totals.db")
    shutil.copyfile(path, copy)
    if os.path.exists(path + "-wal"):
        shutil.copyfile(path + "-wal", copy + "-wal")
    return copy


def _refusal(path: str, fd: int) -> str | None:
    """Why the file at ``path`` (open as ``fd``) is not netmon's to write, or None: empty
    (a new one), or marked as netmon's (or unmarked with netmon's tables: made before the
    mark). Read as an immutable file: no lock, no -shm or -wal made, nothing changed."""
    if not os.fstat(fd).st_size:
        return None
    if os.pread(fd, 16, 0) != SQLITE_HEADER:
        return "not a SQLite database; netmon leaves it as it is"
    db = None
    try:
        db = sqlite3.connect(_uri(path, "immutable=1"), uri=True)
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = "
                                           "'table'")}
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        return f"damaged ({told(exc)}); netmon leaves it as it is"
    finally:
        if db is not None:
            db.close()
    if app != APPLICATION_ID and not (app == 0 and OUR_TABLES <= tables):
        return (f"another program's database (application_id {app:#x}, {len(tables)} "
                f"tables, not netmon's); netmon leaves it as it is")
    return None


class Writer:
    """The one writer of a totals database, until close()."""

    def __init__(self, path: str, keep_days: int = DEFAULT_KEEP_DAYS):
        self.path = path
        self.keep_days = keep_days
        self._lock_fd = -1
        self._db: sqlite3.Connection | None = None
        self._folded_before = 0  # the cutoff of the last fold
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        path = self.path
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
            self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise TotalsUnavailable(f"--totals {path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TotalsUnavailable(
                f"--totals {path}: another netmon is writing it{self._writer_pid()}; "
                f"one writer at a time") from None
        why = _refusal(path, self._lock_fd)
        if why:
            raise TotalsUnavailable(f"--totals {path}: {why}")
        try:
            # autocommit off (isolation_level None: transactions are begun by hand)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10)
            self._db.text_factory = _text
            # Damaged pages are refused now, not met by every write later.
            try:
                check = [r[0] for r in self._db.execute("PRAGMA quick_check")]
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                check = [told(exc)]
            if check != ["ok"]:
                raise TotalsUnavailable(f"--totals {path}: damaged ({check[0]}); netmon "
                                        f"leaves it as it is")
            # The mark first: a new file's goes into the file itself, not the WAL.
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL: a killed process loses no committed transaction; only a
            # power cut can lose the last ones (never the file's integrity).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            with self.transaction() as db:
                version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if version is not None and version[0] > SCHEMA_VERSION:
                    raise TotalsUnavailable(f"--totals {path}: written by a newer netmon "
                                            f"(schema {version[0]})")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                           (SCHEMA_VERSION,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('writer_pid', ?)",
                           (os.getpid(),))
                # Which ledger this is, made once: copies and snapshots of one ledger are
                # known as such when several databases are read (netmon totals --db ...).
                db.execute("INSERT OR IGNORE INTO meta VALUES ('ledger', ?)",
                           (uuid.uuid4().hex,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('node', ?)",
                           (socket.gethostname(),))
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise TotalsUnavailable(f"--totals {path}: not a netmon totals database "
                                    f"({told(exc)})") from None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def moved(self) -> str | None:
        """Whether the path still names the file this writer holds: None, or "deleted" or
        "replaced" (the path's device and inode are another file's)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        except OSError:
            return None  # not knowable now (a directory gone unreadable): write on
        held = os.fstat(self._lock_fd)
        return None if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino) else "replaced"

    def reopen(self) -> None:
        """Let go of the file held and open what the path names now (a new database where
        there is none): the lock goes with it, so two netmons never write one path."""
        self.close()
        try:
            self._open()
        except BaseException:
            self.close()  # the descriptor a refused open took, too
            raise

    def _writer_pid(self) -> str:
        try:
            db = connect_read(self.path)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'writer_pid'").fetchone()
            finally:
                db.close()
        except (TotalsUnavailable, sqlite3.DatabaseError):
            return ""
        return f" (pid {row[0]})" if row else ""

    def transaction(self):
        return _Transaction(self._db)

    def add(self, rows: list[tuple[int, Key, str, str, int, int]],
            names: dict[int, str | None], now: float | None = None,
            rtt: list[tuple[int, Key, str, int, int]] = (),
            tcp: list[tuple[int, Key, str, int, int, int]] = ()) -> None:
        """One transaction: (hour, key, direction, protocol, packets, bytes) rows added to
        the hours' totals, guests' names as last seen (None: unknown, the old one kept),
        and the hours older than ``keep_days`` folded into days. TCP health: ``rtt``,
        (hour, key, component, bucket, samples); ``tcp``, (hour, key, direction, data
        segments, retransmitted, out of order)."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            db.executemany(_ADD, [(hour, k.guest, k.nic, k.interface, d, p, n, b)
                                  for hour, k, d, p, n, b in rows if n or b])
            db.executemany(_ADD_RTT, [(hour, k.guest, k.nic, k.interface, c, b, n)
                                      for hour, k, c, b, n in rtt if n])
            db.executemany(_ADD_TCP, [(hour, k.guest, k.nic, k.interface, d, n, r, o)
                                      for hour, k, d, n, r, o in tcp if n or r or o])
            for guest, name in names.items():
                db.execute("INSERT INTO guests VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
                           "name = coalesce(excluded.name, name), seen = excluded.seen",
                           (guest, name, int(now)))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('written', ?)", (int(now),))
            self._fold(db, now)

    def snapshot(self, path: str) -> None:
        """A consistent copy of the database at ``path`` (SQLite's online backup), made
        beside it and renamed into place: a reader never sees half of one. One file, no
        WAL (journal_mode DELETE), so it can live where a WAL cannot (a network file
        system) and be read from there."""
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            dst = sqlite3.connect(tmp)
            try:
                self._db.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _fold(self, db: sqlite3.Connection, now: float) -> None:
        """Hours before the local midnight ``keep_days`` ago become days (whole days:
        the fold's cutoff is always a midnight)."""
        cutoff = day_start(now - self.keep_days * 86400)
        if cutoff <= self._folded_before:
            return
        db.execute(_FOLD, (cutoff,))
        db.execute("DELETE FROM hourly WHERE start < ?", (cutoff,))
        db.execute(_FOLD_RTT, (cutoff,))
        db.execute("DELETE FROM rtt_hourly WHERE start < ?", (cutoff,))
        db.execute(_FOLD_TCP, (cutoff,))
        db.execute("DELETE FROM tcp_hourly WHERE start < ?", (cutoff,))
        self._folded_before = cutoff

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
        if self._lock_fd >= 0:  # after SQLite's close: see the module's docstring
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind, exc, tb) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
