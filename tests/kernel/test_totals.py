"""--totals and netmon totals (issue 20): the kernel's counts by guest, kept in SQLite.

The unit tests write databases through totals.Writer at chosen times (TZ fixed to
UTC+1 with no summer time, so days are local and not UTC); the kernel tests run
netmon on fake guests (a /etc/pve tree of their own) and compare what the
database holds with what was sent and what the kernel counted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import pytest

from netmon import cli
from netmon.totals import report as totals_report
from netmon.totals import store as totals
from netmon.errors import TotalsUnavailable, UsageError
from netmon.totals.store import Key, Writer
from tests.support.netns import ROOT, NetnsPair, ping, scaled
from tests.support.runner import Netmon

kernel = pytest.mark.kernel
ICMP_ECHO = 98  # bytes on the wire of ping's echo request or reply (56 bytes of data)


@pytest.fixture
def tz(monkeypatch):
    """Local time an hour ahead of UTC, all year: a local day is not a UTC day."""
    monkeypatch.setenv("TZ", "XXX-1")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def now(tz) -> int:
    """The reports' "now" in the unit tests: noon on 2026-12-03, local time."""
    return at("2026-12-03 12:00")


def at(text: str) -> int:
    """Local 'YYYY-MM-DD HH:MM' as a Unix time."""
    return int(time.mktime(time.strptime(text, "%Y-%m-%d %H:%M")))


def test_keys_are_a_guests_nic_or_the_interface():
    assert Key.of("tap100i0") == Key(100, 0)
    assert Key.of("veth101i2") == Key(101, 2)
    # The firewall's pair carries the tap's packets again: not the guest's (no double count).
    assert Key.of("fwpr100p0") == Key(interface="fwpr100p0")
    assert Key.of("vmbr0") == Key(interface="vmbr0")


def _report(db, *args, now: float | None = None) -> list:
    out = _run_totals(db, "--json", *args, now=now)
    return [json.loads(line) for line in out.splitlines()]


def _figures(rows: list) -> list:
    """Report rows without their "as of" (each write moves it)."""
    return [{k: v for k, v in row.items() if k != "as_of"} for row in rows]


def _run_totals(db, *args, now: float | None = None) -> str:
    import io

    q = _query(db, *args)
    if now is not None:  # the report's "now"; else the clock's
        q.now = now
    buf = io.StringIO()
    totals_report.report(q, buf)
    return buf.getvalue()


def _query(db, *args) -> totals_report.Query:
    """The Query `netmon totals ARGS` makes (parsed by the real CLI)."""
    made = {}
    real = totals_report.report
    try:
        totals_report.report = lambda q, out: made.setdefault("q", q)
        assert cli.main(["totals", "--db", str(db), *args]) == 0
    finally:
        totals_report.report = real
    return made["q"]


def _fill(path, rows, names=None, keep=90, now=None):
    with Writer(str(path), keep) as w:
        w.add(rows, names or {}, now=now)


def test_days_months_top_and_json_add_up(tmp_path, now):
    db = tmp_path / "t.db"
    web, mail = Key(100, 0), Key(101, 0)
    rows = [
        # 23:00 local on Nov 30 is still November; 00:00 on Dec 1 is December.
        (totals.hour_of(at("2026-11-30 23:00")), web, "in", "tcp", 10, 1000),
        (totals.hour_of(at("2026-12-01 00:00")), web, "in", "tcp", 20, 2000),
        (totals.hour_of(at("2026-12-01 00:00")), Key(100, 1), "out", "udp", 5, 500),
        (totals.hour_of(at("2026-12-02 10:00")), mail, "out", "tcp", 1, 64),
        (totals.hour_of(at("2026-12-02 10:00")), Key(interface="vmbr0"), "in", "icmp", 3, 294),
    ]
    _fill(db, rows, {100: "web1", 101: None}, now=now)
    _fill(db, rows[1:2], {100: None}, now=now)  # added again: sums; the name is kept
    days = _report(db, "--days", now=now)
    assert [(d["day"], d["guest"], d["guest_name"], d["interface"], d["in_packets"],
             d["out_packets"], d["bytes"]) for d in days] == [
        ("2026-11-30", 100, "web1", None, 10, 0, 1000),
        ("2026-12-01", 100, "web1", None, 40, 5, 4500),  # NICs 0 and 1 together
        ("2026-12-02", 101, None, None, 0, 1, 64),
        ("2026-12-02", None, None, "vmbr0", 3, 0, 294)]
    assert days[1]["protocols"] == {"tcp": {"packets": 40, "bytes": 4000},
                                    "udp": {"packets": 5, "bytes": 500}}
    months = _report(db, "--months", now=now)
    assert [(m["month"], m["guest"] or m["interface"], m["packets"]) for m in months] == [
        ("2026-11", 100, 10), ("2026-12", 100, 45), ("2026-12", 101, 1),
        ("2026-12", "vmbr0", 3)]
    # Billing months from the 2nd: Nov 30 and Dec 1 are in the month from Nov 2.
    billed = _report(db, "--months", "--month-start", "2", now=now)
    assert [(m["month"], m["guest"] or m["interface"], m["packets"]) for m in billed] == [
        ("2026-11-02", 100, 55), ("2026-12-02", 101, 1), ("2026-12-02", "vmbr0", 3)]
    top = _report(db, "--top", "2", now=now)  # this month (December)
    assert [(t["rank"], t["guest"] or t["interface"], t["bytes"]) for t in top] == [
        (1, 100, 4500), (2, "vmbr0", 294)]
    ranked = _report(db, "--top", "5", "--since", "2026-11", now=now)
    assert [t["guest"] for t in ranked] == [100, None, 101]
    narrowed = _report(db, "--guest", "100", "--until", "2026-11-30", now=now)
    assert [d["day"] for d in narrowed] == ["2026-11-30"]
    hours = _report(db, "--hours", "--since", "2026-12-01", now=now)
    assert [(h["hour"], h["guest"] or h["interface"]) for h in hours] == [
        ("2026-12-01 00:00", 100), ("2026-12-02 10:00", 101), ("2026-12-02 10:00", "vmbr0")]


def test_the_table_view(tmp_path, now):
    db = tmp_path / "t.db"
    hour = totals.hour_of(at("2026-12-02 10:00"))
    _fill(db, [(hour, Key(100, 0), "in", "tcp", 1234, 3 * 1024 ** 3),
               (hour, Key(100, 0), "out", "tcp", 1000, 1536)], {100: "web1"}, now=now)
    assert _run_totals(db, "--days", now=now).splitlines() == [
        f"as of 2026-12-03 12:00:00: the last write to {db}",  # now's write
        "bytes on the wire, Ethernet header included; 1 KiB = 1024 B",
        "",
        "guest 100 (web1)",  # what it received is what its tap sent out
        "  day         received      sent     total  packets",
        "  -------------------------------------------------",
        "  2026-12-02  1.50 KiB  3.00 GiB  3.00 GiB    2,234",
        "  -------------------------------------------------",
        "  total       1.50 KiB  3.00 GiB  3.00 GiB    2,234",
        ""]
    assert _run_totals(db, "--days", "--since", "2026-12-03", now=now) == (
        f"as of 2026-12-03 12:00:00: the last write to {db}\n{totals_report.BYTES_NOTE}\n\n"
        "no traffic in the period\n")


def test_old_hours_fold_into_days_and_keep_their_sums(tmp_path, now):
    db = tmp_path / "t.db"
    k = Key(100, 0)
    old = [(totals.hour_of(at(f"2026-11-0{d} {h:02d}:00")), k, "in", "udp", d * 100 + h, 1)
           for d in (1, 2) for h in (0, 5, 23)]
    recent = [(totals.hour_of(at("2026-12-02 01:00")), k, "in", "udp", 7, 1)]
    _fill(db, old + recent, now=at("2026-11-03 00:00"))  # nothing old enough yet
    before = _report(db, "--days", "--since", "2026-11", now=now)
    _fill(db, [], keep=10, now=now)  # hours before Nov 23 become days
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM hourly").fetchone()[0] == 1
        assert c.execute("SELECT count(*) FROM daily").fetchone()[0] == 2
    assert _figures(_report(db, "--days", "--since", "2026-11", now=now)) == _figures(before)
    assert [(d["day"], d["packets"]) for d in before] == [
        ("2026-11-01", 100 * 3 + 28), ("2026-11-02", 200 * 3 + 28), ("2026-12-02", 7)]
    # A day folded, then more hours of it (a clock set back): the day adds them.
    _fill(db, [(totals.hour_of(at("2026-11-01 06:00")), k, "in", "udp", 1, 1)], keep=10,
          now=now)
    _fill(db, [], keep=9, now=now + 86400)
    assert _report(db, "--days", "--since", "2026-11", now=now)[0]["packets"] == 329


def test_a_second_writer_is_refused_and_readers_go_on(tmp_path):
    path = str(tmp_path / "t.db")
    hour = totals.hour_of(time.time())
    with Writer(path) as w:
        w.add([(hour, Key(100, 0), "in", "tcp", 1, 1)], {})
        with pytest.raises(TotalsUnavailable, match=rf"--totals {re.escape(path)}: another "
                           rf"netmon is writing it \(pid {os.getpid()}\); one writer at a time"):
            Writer(path)
        reader = totals.connect_read(path)
        w.add([(hour, Key(100, 0), "in", "tcp", 1, 1)], {})  # while it is open
        assert reader.execute("SELECT packets FROM hourly").fetchone() == (2,)
        reader.close()
    Writer(path).close()  # free again


def test_not_a_database_and_none_at_all_are_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 100)
    assert cli.main(["totals", "--db", str(junk)]) == cli.ExitStatus.TOTALS
    assert cli.main(["totals", "--db", str(tmp_path / "none.db")]) == cli.ExitStatus.TOTALS
    assert cli.main(["totals", "--db", str(junk), "--days", "--months"]) == cli.ExitStatus.USAGE
    assert cli.main(["totals", "--db", str(junk), "--month-start", "31"]) == \
        cli.ExitStatus.USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"netmon: error: {junk}: not a netmon totals database (")
    assert err[1:] == [
        f"netmon: error: {tmp_path / 'none.db'}: no such database (netmon --totals "
        f"{tmp_path / 'none.db'} makes it)",
        "netmon: error: --hours, --days and --months: one at a time",
        "netmon: error: --month-start takes a day from 1 to 28 (every month has it)"]
    with pytest.raises(UsageError, match="not a time"):
        totals_report.parse_time("yesterday", end=False)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to read as another user")
def test_reading_needs_read_access_only():
    """As nobody, from a directory it cannot write: while netmon writes (the -shm is
    there) and after (it is not)."""
    where = tempfile.mkdtemp(prefix="nmt-totals-", dir="/tmp")
    os.chmod(where, 0o755)
    try:
        _read_as_nobody(os.path.join(where, "t.db"))
    finally:
        shutil.rmtree(where)


def _read_as_nobody(path: str) -> None:
    as_nobody = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                 sys.executable, "-m", "netmon", "totals", "--db", path, "--json",
                 "--since", "1970-01"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with Writer(path) as w:
        w.add([(totals.hour_of(time.time()), Key(100, 0), "in", "tcp", 5, 50)], {})
        live = subprocess.run(as_nobody, capture_output=True, text=True, cwd=ROOT, env=env)
    assert not os.path.exists(path + "-shm")
    after = subprocess.run(as_nobody, capture_output=True, text=True, cwd=ROOT, env=env)
    for got in (live, after):
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["in_packets"] == 5


# -- live: the kernel's counts ---------------------------------------------------------


def _guests(n: NetnsPair, tmp_path) -> dict[str, str]:
    """Two fake guests in b (taps 100 and 101, web1 and mail1); env for netmon."""
    pve = tmp_path / "pve"
    (pve / "qemu-server").mkdir(parents=True)
    (pve / "qemu-server" / "100.conf").write_text("name: web1\n")
    (pve / "qemu-server" / "101.conf").write_text("name: mail1\n")
    return {"NETMON_PVE_DIR": str(pve)}


def _sums(db, *more) -> dict[tuple[int, str], tuple[int, int]]:
    """(guest, direction) -> (packets, bytes), over all time, read as netmon totals does."""
    out = {}
    for row in _report(db, "--months", "--since", "1970-01", *more):
        for d in ("in", "out"):
            key = (row["guest"] or row["interface"], d)
            p, b = out.get(key, (0, 0))
            out[key] = (p + row[f"{d}_packets"], b + row[f"{d}_bytes"])
    return out


def _matched(nm: Netmon, ifname: str, direction: str) -> int:
    line = next(line for line in nm.err if line.startswith(f"netmon: {ifname} {direction}: "))
    return int(re.search(r"(\d+) matched", line).group(1))


@kernel
def test_totals_equal_the_kernels_counts_per_guest_and_direction(netns, tmp_path):
    n = netns
    env = _guests(n, tmp_path)
    _, web = n.link("nmt-g0", "tap100i0")
    _, mail = n.link("nmt-g1", "tap101i0")
    db = tmp_path / "totals.db"
    with Netmon(n, "-i", "tap*", "-Q", "both", "--quiet", "--totals", str(db),
                interface=None, env=env) as nm:
        nm.wait_ready()
        assert f"Totals: added to {db} every 60 s (netmon totals --db {db})" in nm.err
        ping(n, web, 7)
        ping(n, mail, 3)
        assert nm.stop() == 0
    assert "netmon: totals: 1 writes to " + str(db) in nm.err
    got = _sums(db)
    assert got == {(100, "in"): (7, 7 * ICMP_ECHO), (100, "out"): (7, 7 * ICMP_ECHO),
                   (101, "in"): (3, 3 * ICMP_ECHO), (101, "out"): (3, 3 * ICMP_ECHO)}
    for ifname, guest in (("tap100i0", 100), ("tap101i0", 101)):
        for d in ("in", "out"):
            assert got[(guest, d)][0] == _matched(nm, ifname, d)
    names = dict(sqlite3.connect(db).execute("SELECT guest, name FROM guests").fetchall())
    assert names == {100: "web1", 101: "mail1"}
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@kernel
def test_a_new_tap_and_a_new_netmon_continue_a_guests_totals(netns, tmp_path):
    n = netns
    env = _guests(n, tmp_path)
    _, web = n.link("nmt-g0", "tap100i0")
    db = tmp_path / "totals.db"
    args = ("-i", "tap*", "-Q", "both", "--quiet", "--totals", str(db))
    with Netmon(n, *args, interface=None, env=env) as nm:
        nm.wait_ready()
        ping(n, web, 4)
        # The VM restarts: its tap is deleted and made anew (another ifindex).
        n.run(n.a, "ip", "link", "del", "nmt-g0")
        nm.wait_stderr("netmon: interface tap100i0 went away")
        _, web = n.link("nmt-g0", "tap100i0")
        nm.wait_stderr("netmon: watching tap100i0")
        ping(n, web, 5)
        assert nm.stop() == 0
    # It went away: its counts were written then, the rest at exit.
    assert f"netmon: totals: 2 writes to {db}" in nm.err
    assert _sums(db)[(100, "in")] == (9, 9 * ICMP_ECHO)
    with Netmon(n, *args, interface=None, env=env) as nm:  # netmon restarted
        nm.wait_ready()
        ping(n, web, 2)
        assert nm.stop() == 0
    assert _sums(db) == {(100, "in"): (11, 11 * ICMP_ECHO), (100, "out"): (11, 11 * ICMP_ECHO)}


def _written(db) -> int:
    """Packets in the database so far (read while netmon writes it)."""
    try:
        c = totals.connect_read(str(db))
    except TotalsUnavailable:
        return 0
    try:
        return c.execute("SELECT coalesce(sum(packets), 0) FROM hourly").fetchone()[0]
    finally:
        c.close()


@kernel
def test_kill_9_loses_at_most_the_last_interval_and_leaves_an_intact_database(netns,
                                                                                  tmp_path):
    n = netns
    env = _guests(n, tmp_path)
    _, web = n.link("nmt-g0", "tap100i0")
    db = tmp_path / "totals.db"
    with Netmon(n, "-i", "tap100i0", "--quiet", "--totals", str(db), "--totals-every", "1",
                interface=None, env=env) as nm:
        nm.wait_ready()
        ping(n, web, 6)
        deadline = time.monotonic() + scaled(10)
        while _written(db) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _written(db) == 6  # written within a second or so: what follows may be lost
        # A second netmon writing it is refused in one line; readers are not.
        with Netmon(n, "-i", "tap100i0", "--quiet", "--totals", str(db),
                    interface=None, env=env) as second:
            assert second.wait_exit() == cli.ExitStatus.TOTALS
        assert second.err == [f"netmon: error: --totals {db}: another netmon is writing it "
                              f"(pid {nm.proc.pid}); one writer at a time"]
        ping(n, web, 3)
        nm.proc.kill()
        nm.proc.wait()
    assert 6 <= _written(db) <= 9
    result = subprocess.run(["sqlite3", str(db), "pragma integrity_check"],
                            capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result


# -- a ledger that is never wrong: what is not netmon's, or is damaged, is refused -------


def _sqlite(path, *sql: str) -> None:
    db = sqlite3.connect(path)
    for statement in sql:
        db.execute(statement)
    db.commit()
    db.close()


def test_another_programs_database_and_a_file_that_is_not_sqlite_are_left_untouched(
        tmp_path):
    app = str(tmp_path / "app.db")
    _sqlite(app, "CREATE TABLE users(name TEXT)", "INSERT INTO users VALUES ('ann')")
    one_byte = tmp_path / "one.db"
    one_byte.write_bytes(b"x")
    before = {p: open(p, "rb").read() for p in (app, str(one_byte))}
    with pytest.raises(TotalsUnavailable, match=r"another program's database \(application_id "
                                                r"0x0, 1 tables, not netmon's\); netmon "
                                                r"leaves it") as exc:
        Writer(app)
    assert "users" not in str(exc.value)  # its contents are not shown
    with pytest.raises(TotalsUnavailable, match="not a SQLite database; netmon leaves it"):
        Writer(str(one_byte))
    assert {p: open(p, "rb").read() for p in before} == before
    assert sorted(os.listdir(tmp_path)) == ["app.db", "one.db"]  # no -wal, no -shm
    db = sqlite3.connect(app)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    db.close()


def test_netmons_files_are_marked_and_an_unmarked_one_of_its_own_is_taken(tmp_path):
    path = str(tmp_path / "t.db")
    Writer(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone() == (totals.APPLICATION_ID,)
    db.execute("PRAGMA application_id = 0")  # as a netmon before the mark made it
    db.commit()
    db.close()
    with Writer(path) as w:  # netmon's tables: its own, marked now
        w.add([(totals.hour_of(time.time()), Key(100, 0), "in", "tcp", 3, 30)], {})
    assert json.loads(_run_totals(path, "--json", "--since", "1970-01"))["in_packets"] == 3


def _damage(path: str, table: str) -> None:
    """Garbage over the start of ``table``'s B-tree root page, its header included (a page
    type that is none: garbage in the cell pointers alone is found, or read past, as the
    bytes beyond the page happen to be)."""
    db = sqlite3.connect(path)
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
                      ).fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xff" * 64)


@pytest.mark.parametrize("table", ["hourly", "guests", "daily"])
def test_a_damaged_database_is_refused_at_start_and_read_in_one_line(tmp_path, capsys,
                                                                      table):
    path = str(tmp_path / "t.db")
    hour = totals.hour_of(time.time())
    with Writer(path, keep_days=1) as w:  # a fold fills daily too
        w.add([(hour - 3 * 86400, Key(100, 0), "in", "tcp", 3, 30),
               (hour, Key(101, 0), "in", "tcp", 3, 30)], {100: "web", 101: "db"})
    _damage(path, table)
    with pytest.raises(TotalsUnavailable, match=rf"--totals {re.escape(path)}: damaged \("):
        Writer(path)
    assert cli.main(["totals", "--db", path, "--months", "--since", "1970-01"]) == \
        cli.ExitStatus.TOTALS
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"netmon: error: {path}: ")


@pytest.mark.parametrize("change,views", [
    # Days and months read the hour through date(): a fraction of a second is harmless.
    ("UPDATE hourly SET start = start + 0.5", [["--hours"]]),
    ("UPDATE hourly SET direction = 'o'", None), ("UPDATE hourly SET bytes = -1", None),
    ("UPDATE hourly SET packets = 1.5", None), ("UPDATE guests SET name = x'1b5b324a'", None)])
def test_values_netmon_never_writes_are_damage_in_one_line(tmp_path, capsys, change, views):
    """SQLite keeps any value in any column: a changed page can hold a NULL hour or a
    direction that is neither (tracebacks the fuzzer found). The ledger is refused whole."""
    path = str(tmp_path / "t.db")
    with Writer(path) as w:
        w.add([(totals.hour_of(time.time()), Key(100, 0), "in", "tcp", 3, 30)], {100: "web"})
    db = sqlite3.connect(path)
    db.execute(change)
    db.commit()
    db.close()
    for view in views or (["--days"], ["--hours"], ["--months", "--json"], ["--top", "2"]):
        status = cli.main(["totals", "--db", path, "--since", "1970-01", *view])
        err = capsys.readouterr().err
        assert status == cli.ExitStatus.TOTALS, (change, view)
        assert err.startswith(f"netmon: error: {path}: damaged (a ") and err.count("\n") == 1
        assert "not one netmon writes" in err


def test_a_schema_that_is_not_utf8_is_damage_in_one_line(tmp_path, capsys):
    """Bytes that are not UTF-8 where SQLite keeps text (the schema, here): Python's
    sqlite3 raised UnicodeDecodeError, a traceback (found by tests/fuzz)."""
    path = tmp_path / "t.db"
    with Writer(str(path)) as w:
        w.add([(totals.hour_of(time.time()), Key(100, 0), "in", "tcp", 3, 30)], {100: "web"})
    data = bytearray(path.read_bytes())
    # A keyword of the guests table's SQL: SQLite's error quotes the bytes near it.
    at = data.index(b"CREATE TABLE guests") + 3
    data[at] = 0xEB
    path.write_bytes(bytes(data))
    for args in (["totals", "--db", str(path), "--months"], ["--totals", str(path)]):
        assert cli.main(args) == cli.ExitStatus.TOTALS
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "(text that is not UTF-8)" in err, err


@pytest.mark.parametrize("name", ["x?y.db", "e%41.db", "a#b.db", "dir"])
def test_any_db_path_is_read_as_named_or_refused_in_one_line(tmp_path, capsys, name):
    path = tmp_path / name
    if name == "dir":
        path.mkdir()
    else:
        with Writer(str(path)) as w:
            w.add([(totals.hour_of(time.time()), Key(100, 0), "in", "tcp", 4, 40)], {})
    status = cli.main(["totals", "--db", str(path), "--json", "--since", "1970-01"])
    out, err = capsys.readouterr()
    # Nothing but the database's own files (a file "a" for a#b.db, as a URI would cut it)
    assert all(f.startswith(name) for f in os.listdir(tmp_path)), os.listdir(tmp_path)
    if name == "dir":
        assert status == cli.ExitStatus.TOTALS
        assert err == f"netmon: error: {path}: not a netmon totals database (a directory)\n"
    else:
        assert status == 0 and json.loads(out)["in_packets"] == 4, err


def test_a_guest_id_past_any_proxmox_guests_is_a_usage_error(tmp_path, capsys):
    status = cli.main(["totals", "--db", str(tmp_path / "t.db"), "--guest",
                       "999999999999999999999"])
    assert status == cli.ExitStatus.USAGE
    assert capsys.readouterr().err.count("\n") == 1


@contextmanager
def small_disk(tmp_path):
    """A 256 KiB tmpfs of the test's own, unmounted on every path."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "nmt-totals", str(small)],
                   check=True)
    try:
        yield small
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def fill(disk) -> None:
    """``disk`` filled up, by a file of its own (filler)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        with pytest.raises(OSError, match="No space left"):
            while True:
                f.write(bytes(65536))


@kernel
def test_a_write_that_fails_at_exit_says_what_it_lost_and_exits_12(netns, tmp_path):
    """A full file system at exit: there is no next write to keep the counts for. The
    packets and bytes not written are said, and the status is 12 (it was 0, and "kept
    for the next")."""
    n = netns
    with small_disk(tmp_path) as small:
        db = small / "totals.db"
        with Netmon(n, "-Q", "both", "--quiet", "--totals", str(db)) as nm:
            nm.wait_ready()
            ping(n, n.b_ip, 5)
            fill(small)
            status = nm.stop()
        assert status == cli.ExitStatus.TOTALS, nm.err
        assert (f"netmon: totals: 0 writes to {db}, 1 failed; the last, at exit: 10 packets "
                f"({10 * ICMP_ECHO} bytes) not written") in nm.err
        assert any(line.startswith(f"netmon: --totals {db}: ") and line.endswith(
            f"at exit: 10 packets ({10 * ICMP_ECHO} bytes) are not in it") for line in nm.err)


def _until(what, want, seconds: float = 15):
    """``what()`` once it equals ``want`` (or its last value, when the time is up)."""
    deadline = time.monotonic() + scaled(seconds)
    got = what()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.2)
        got = what()
    return got


@kernel
def test_a_database_deleted_under_netmon_is_made_anew_and_never_written_by_two(netns,
                                                                               tmp_path):
    """rm totals.db* while netmon writes it: netmon says so and writes a new one at the
    path (it went on writing into the unlinked file, and a second netmon was let in:
    3,500 of 4,000 packets lost). A second netmon is still refused."""
    n = netns
    db = tmp_path / "totals.db"
    with Netmon(n, "-Q", "both", "--quiet", "--totals", str(db), "--totals-every", "1") as nm:
        nm.wait_ready()
        ping(n, n.b_ip, 3)
        assert _until(lambda: _written(db), 6) == 6
        for f in tmp_path.glob("totals.db*"):
            f.unlink()
        ping(n, n.b_ip, 4)
        assert _until(lambda: _written(db), 8) == 8  # in the new file, at the path
        assert (f"netmon: --totals {db}: the database was deleted while netmon wrote it; "
                f"writing to a new one there") in nm.err
        second = Netmon(n, "-i", "lo", "--quiet", "--totals", str(db), interface=None)
        assert second.wait_exit() == cli.ExitStatus.TOTALS
        assert any("another netmon is writing it" in line for line in second.err)
        ping(n, n.b_ip, 1)
        assert nm.stop() == 0
    assert _written(db) == 10


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to read as another user")
@pytest.mark.parametrize("shm", ["left", "gone"])
def test_a_reader_without_write_access_sees_what_a_killed_writer_committed(shm):
    """kill -9 leaves the WAL behind, with its -shm or (cleaned up, restored from a
    backup) without: a reader that can write neither (nobody) reads the same figures as
    root (it read the file alone: 300 of 800)."""
    where = tempfile.mkdtemp(prefix="nmt-totals-", dir="/tmp")
    os.chmod(where, 0o755)
    path = os.path.join(where, "t.db")
    try:
        hour = totals.hour_of(time.time())
        code = ("import os, sys; from netmon.totals.store import Key, Writer\n"
                "w = Writer(sys.argv[1])\n"
                f"w.add([({hour}, Key(100, 0), 'in', 'tcp', 300, 3000)], {{}})\n"
                "w._db.execute('PRAGMA wal_checkpoint(TRUNCATE)')\n"
                f"w.add([({hour}, Key(100, 0), 'in', 'tcp', 500, 5000)], {{}})\n"
                "os._exit(0)  # as kill -9: nothing closed, the WAL not checkpointed\n")
        subprocess.run([sys.executable, "-c", code, path], check=True, cwd=ROOT)
        assert os.path.getsize(path + "-wal") > 0
        if shm == "gone":
            os.unlink(path + "-shm")
        argv = [sys.executable, "-m", "netmon", "totals", "--db", path, "--json", "--since",
                "1970-01"]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        nobody = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup",
                                 "--clear-groups", *argv], capture_output=True, text=True,
                                cwd=ROOT, env=env)
        assert nobody.returncode == 0, nobody.stderr
        root = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env)
        assert json.loads(nobody.stdout)["in_packets"] == json.loads(root.stdout)[
            "in_packets"] == 800
    finally:
        shutil.rmtree(where)


def test_a_since_after_now_says_so(tmp_path, capsys):
    path = str(tmp_path / "t.db")
    Writer(path).close()
    assert cli.main(["totals", "--db", path, "--since", "9999-12-31"]) == cli.ExitStatus.USAGE
    assert capsys.readouterr().err == ("netmon: error: --since 9999-12-31 is after now: the "
                                       "period is empty\n")  # not "--until is before --since"


@kernel
def test_a_full_disk_is_said_once_and_its_counts_written_when_there_is_room(netns, tmp_path):
    n = netns
    with small_disk(tmp_path) as small:
        db = small / "totals.db"
        with Netmon(n, "-Q", "both", "--quiet", "--totals", str(db), "--totals-every", "1"
                    ) as nm:
            nm.wait_ready()
            fill(small)
            ping(n, n.b_ip, 3)
            nm.wait_stderr(f"netmon: --totals {db}: ")
            time.sleep(scaled(3.5))  # three more writes that fail
            (small / "filler").unlink()
            nm.wait_stderr(f"netmon: --totals {db}: written again")
            assert nm.stop() == 0
        failing = [line for line in nm.err if line.startswith(f"netmon: --totals {db}: ")
                   and "trying again every 1 s" in line]
        assert len(failing) == 1, nm.err
        assert _written(db) == 6


def test_a_long_guest_name_is_cut_in_tables_and_whole_in_json(tmp_path, capsys):
    path = str(tmp_path / "t.db")
    long_name = "a-very-long-guest-name-" * 3  # 69 characters
    with Writer(path) as w:
        w.add([(totals.hour_of(time.time()), Key(999999999, 0), "in", "tcp", 10**9, 10**15)],
              {999999999: long_name})
    assert cli.main(["totals", "--db", path, "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("as of ") and lines[2] == ""
    lines = lines[3:]  # the table
    assert max(map(len, lines)) <= 100  # it was past 130
    assert "(a-very-long-guest-name-…)" in lines[2]
    assert cli.main(["totals", "--db", path, "--top", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["guest_name"] == long_name


# -- issue 28, item 6: totals one can trust at a glance, and across a cluster ------------

def test_every_report_says_as_of_when(tmp_path, now):
    db = tmp_path / "t.db"
    hour = totals.hour_of(at("2026-12-02 10:00"))
    _fill(db, [(hour, Key(100, 0), "in", "tcp", 1, 100)], {100: "web1"},
          now=at("2026-12-02 10:30"))
    assert _run_totals(db, "--top", "3", now=now).startswith(
        f"as of 2026-12-02 10:30:00: the last write to {db}\n")
    (row,) = _report(db, now=now)
    assert row["as_of"] == "2026-12-02T10:30:00+01:00"
    import csv
    import io
    (head, cells) = csv.reader(io.StringIO(_run_totals(db, "--csv", now=now)))
    assert dict(zip(head, cells))["as_of"] == "2026-12-02T10:30:00+01:00"
    # A database an older netmon wrote has no such time: said, not guessed.
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM meta WHERE key = 'written'")
    assert _run_totals(db, now=now).startswith(
        "as of an unknown time (an older netmon wrote it): the last write to ")
    assert _report(db, now=now)[0]["as_of"] is None


def test_a_migrated_guests_month_is_one_across_the_nodes_databases(tmp_path, now):
    """Guest 100 ran on pve1, then on pve2 (its month split over two files); pve2 knows
    its new name. Read together (repeated --db, or a glob), the month is the sum, to the
    byte, named as last seen; another guest's is its own."""
    pve1, pve2 = tmp_path / "pve1.db", tmp_path / "pve2.db"
    web = Key(100, 0)
    _fill(pve1, [(totals.hour_of(at("2026-12-01 10:00")), web, "in", "tcp", 7, 7_000),
                 (totals.hour_of(at("2026-12-01 10:00")), Key(101, 0), "out", "udp", 1, 60)],
          {100: "web1"}, now=at("2026-12-01 11:00"))
    _fill(pve2, [(totals.hour_of(at("2026-12-02 09:00")), web, "in", "tcp", 5, 5_000),
                 (totals.hour_of(at("2026-12-02 09:00")), Key(100, 1), "out", "tcp", 3, 300)],
          {100: "web1-new"}, now=at("2026-12-02 11:00"))
    for args in (["--db", str(pve2)], ["--db", str(tmp_path / "pve*.db")]):
        q = _query(pve1, "--months", "--json", *args)
        q.now = now
        import io
        buf = io.StringIO()
        totals_report.report(q, buf)
        rows = {r["guest"]: r for r in map(json.loads, buf.getvalue().splitlines())}
        assert (rows[100]["in_bytes"], rows[100]["out_bytes"], rows[100]["packets"]) == \
            (12_000, 300, 15)
        assert rows[100]["guest_name"] == "web1-new" and rows[101]["bytes"] == 60
        assert rows[100]["as_of"] == "2026-12-01T11:00:00+01:00"  # the older of the two
    text = _run_totals(pve1, "--db", str(pve2), now=now)
    assert f"as of 2026-12-01 11:00:00: the last write to {pve1}, node " in text
    assert f"as of 2026-12-02 11:00:00: the last write to {pve2}, node " in text


def test_a_snapshot_and_its_database_are_read_once(tmp_path, now):
    """--totals-snapshot's copy (SQLite's online backup, one file without a WAL) and the
    database it was taken of, both given: the same ledger, read once (the newer)."""
    db, snap = tmp_path / "t.db", tmp_path / "shared" / "pve1.db"
    snap.parent.mkdir()
    hour = totals.hour_of(at("2026-12-02 10:00"))
    with Writer(str(db)) as w:
        w.add([(hour, Key(100, 0), "in", "tcp", 4, 400)], {100: "web1"},
              now=at("2026-12-02 10:30"))
        w.snapshot(str(snap))
        w.add([(hour, Key(100, 0), "in", "tcp", 1, 100)], {}, now=at("2026-12-02 10:31"))
    with sqlite3.connect(snap) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not list(snap.parent.glob("*.tmp-*")) and not (snap.parent / "pve1.db-wal").exists()
    assert _report(snap, now=now)[0]["packets"] == 4  # as of the snapshot
    both = _report(db, "--db", str(snap), now=now)
    assert [r["packets"] for r in both] == [5]  # the newer copy, once
    assert f"{snap} left out: a copy of {db}'s ledger (read once)" in \
        _run_totals(snap, "--db", str(db), now=now)


def test_a_row_per_nic(tmp_path, now):
    db = tmp_path / "t.db"
    hour = totals.hour_of(at("2026-12-02 10:00"))
    _fill(db, [(hour, Key(100, 0), "in", "tcp", 1, 100), (hour, Key(100, 1), "in", "tcp", 2, 200),
               (hour, Key(interface="vmbr0"), "in", "tcp", 3, 300)], {100: "web1"}, now=now)
    rows = _report(db, "--by-nic", now=now)
    assert [(r["guest"], r["nic"], r["interface"], r["bytes"]) for r in rows] == [
        (100, 0, None, 100), (100, 1, None, 200), (None, None, "vmbr0", 300)]
    text = _run_totals(db, "--by-nic", now=now)
    assert "guest 100 (web1) net0\n" in text and "guest 100 (web1) net1\n" in text


def test_csv_for_a_spreadsheet_runs_no_guests_formula(tmp_path, now):
    """A guest named '=HYPERLINK(...)' is text in the spreadsheet, not a formula."""
    import csv
    import io

    db = tmp_path / "t.db"
    hour = totals.hour_of(at("2026-12-02 10:00"))
    evil = '=HYPERLINK("http://x.invalid","click")'
    _fill(db, [(hour, Key(100, 0), "in", "tcp", 1, 100), (hour, Key(100, 0), "out", "tcp", 2, 50)],
          {100: evil}, now=now)
    rows = list(csv.DictReader(io.StringIO(_run_totals(db, "--csv", now=now))))
    assert rows == [{"day": "2026-12-02", "guest": "100", "guest_name": "'" + evil,
                     "interface": "", "received_packets": "2", "received_bytes": "50",
                     "sent_packets": "1", "sent_bytes": "100", "packets": "3", "bytes": "150",
                     "as_of": "2026-12-03T12:00:00+01:00"}]
    with pytest.raises(UsageError):
        _run_totals(db, "--csv", "--json", now=now)


@kernel
def test_a_snapshot_for_shared_storage_holds_what_the_database_does(netns, tmp_path):
    """--totals-snapshot: a copy in the cluster's shared directory, taken with the first
    write and at exit, as the user netmon became; read from there (a glob over the nodes'
    copies) it says what the node's own database says, and both given are read once."""
    n = netns
    env = _guests(n, tmp_path)
    _, web = n.link("nmt-g0", "tap100i0")
    db, shared = tmp_path / "totals.db", tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the netmon user's, as a node's directory on shared storage is
    with Netmon(n, "--guest", "all", "--quiet", "--totals", str(db), "--totals-every", "1",
                "--totals-snapshot", str(shared / "pve1.db"), interface=None, env=env) as nm:
        nm.wait_ready()
        ping(n, web, 4)
        assert nm.stop() == 0
    assert any(line.startswith("netmon: totals: ") and line.endswith(
        f" snapshots to {shared / 'pve1.db'}") for line in nm.err), nm.err
    assert sorted(p.name for p in shared.iterdir()) == ["pve1.db"]
    assert _sums(shared / "*.db") == _sums(db) == {(100, "in"): (4, 4 * ICMP_ECHO),
                                                   (100, "out"): (4, 4 * ICMP_ECHO)}
    assert _sums(db, "--db", str(shared / "pve1.db")) == _sums(db)


def test_rows_say_what_the_guest_received_and_sent(tmp_path, now):
    """On a guest's tap "in" is what the guest sent: a guest's row says received and sent
    as the guest sees them (JSON keeps in and out as the tap counted them); a host
    interface's received is its in."""
    db = tmp_path / "t.db"
    hour = totals.hour_of(at("2026-12-02 10:00"))
    _fill(db, [(hour, Key(100, 0), "in", "tcp", 1, 100), (hour, Key(100, 0), "out", "tcp", 9, 900),
               (hour, Key(interface="vmbr0"), "in", "udp", 2, 200)], {100: "web1"}, now=now)
    rows = {r["guest"] or r["interface"]: r for r in _report(db, now=now)}
    web, bridge = rows[100], rows["vmbr0"]
    assert (web["received_bytes"], web["sent_bytes"], web["in_bytes"], web["out_bytes"]) == \
        (900, 100, 100, 900)
    assert (bridge["received_packets"], bridge["received_bytes"], bridge["sent_bytes"]) == \
        (2, 200, 0)
    top = _run_totals(db, "--top", "2", now=now).splitlines()
    assert top[4].split() == ["received", "sent", "total", "packets"]
    assert top[5].split()[4:6] == ["900", "B"]  # "1. guest 100 (web1)  900 B  100 B ..."


@kernel
def test_a_snapshot_that_cannot_be_made_is_said_once_and_the_totals_go_on(netns, tmp_path):
    """Shared storage away (its directory missing): said once, not at every write; the
    node's own database is written all the same, and the run ends well."""
    n = netns
    env = _guests(n, tmp_path)
    _, web = n.link("nmt-g0", "tap100i0")
    db, away = tmp_path / "totals.db", tmp_path / "unmounted" / "pve1.db"
    with Netmon(n, "--guest", "all", "--quiet", "--totals", str(db), "--totals-every", "1",
                "--totals-snapshot", str(away), interface=None, env=env) as nm:
        nm.wait_ready()
        ping(n, web, 2)
        time.sleep(scaled(3.5))  # writes, each trying the snapshot again
        assert nm.stop() == 0
    said = [line for line in nm.err if line.startswith(f"netmon: --totals-snapshot {away}: ")]
    assert said == [f"netmon: --totals-snapshot {away}: unable to open database file; trying "
                    f"again with each write"], nm.err
    assert _sums(db)[(100, "in")] == (2, 2 * ICMP_ECHO)
    assert f"netmon: totals: 0 snapshots to {away}" in nm.err
