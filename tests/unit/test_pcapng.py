"""pcapng writing and pcap/pcapng reading, as plain Python, checked with tshark where it helps."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from netmon.pcapng import writer as pcapng
from netmon.kernel import abi
from netmon.pcapng import reader as savefile
from tests.support.tshark import tshark_fields

FRAME = bytes.fromhex("0200000000020200000000010800") + bytes(range(46))  # 60 bytes
epb = pcapng.enhanced_packet


@pytest.fixture
def tshark():
    if shutil.which("tshark") is None:
        if os.environ.get("NETMON_REQUIRE_KERNEL") == "1":
            pytest.fail("tshark is missing (apt-get install tshark)")
        pytest.skip("needs tshark (apt-get install tshark)")
    return tshark_fields


def test_written_packets_read_back(tmp_path):
    path = tmp_path / "x.pcapng"
    with pcapng.PcapngWriter(str(path), 65535) as w:
        w.describe(0, "veth1")
        w.describe(1, "tap100i0")
        w.write([epb(0, 1_700_000_000_123_456_789, FRAME, 60, False),
                 epb(1, 1_700_000_001_000_000_001, FRAME[:33], 1514, True)])
    got = list(savefile.frames(path))
    assert [(f.ifname, f.outbound, f.data, f.origlen, f.ts_ns, f.number) for f in got] == [
        ("veth1", False, FRAME, 60, 1_700_000_000_123_456_789, 1),
        ("tap100i0", True, FRAME[:33], 1514, 1_700_000_001_000_000_001, 2)]


def test_tshark_reads_names_directions_and_nanoseconds(tmp_path, tshark):
    path = tmp_path / "x.pcapng"
    with pcapng.PcapngWriter(str(path), 262) as w:
        w.describe(0, "veth1")
        w.describe(1, "tap100i0")
        w.write([epb(0, 1_700_000_000_123_456_789, FRAME, 60, False),
                 epb(1, 1_700_000_001_000_000_001, FRAME[:33], 1514, True)])
    assert tshark(path, "frame.interface_name", "frame.packet_flags_direction", "frame.len",
                  "frame.cap_len", "frame.time_epoch") == [
        ["veth1", "0x00000001", "60", "60", "1700000000.123456789"],
        ["tap100i0", "0x00000002", "1514", "33", "1700000001.000000001"]]


def test_rotation_by_size_keeps_n_whole_files(tmp_path, tshark):
    path = tmp_path / "ring.pcapng"
    with pcapng.PcapngWriter(str(path), 65535, file_mb=0.001, file_count=3) as w:
        w.describe(0, "eth0")
        for i in range(200):
            w.write([epb(0, 1_700_000_000_000_000_000 + i, FRAME, 60, False)])
            w.flush()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ring.pcapng", "ring.pcapng.1", "ring.pcapng.2"]
    seen = 0
    for name in names:
        rows = tshark(tmp_path / name, "frame.interface_name")
        assert rows and all(r == ["eth0"] for r in rows)  # each file stands alone
        seen += len(rows)
        assert (tmp_path / name).stat().st_size <= 1000 + 200  # one packet over at most
    assert seen < 200  # the ring dropped the oldest files


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_files_made_for_a_run_that_gives_root_up_are_its_users(tmp_path):
    """A file the writer makes is given to the user the run becomes (a ring opens it
    again after the drop); one that was there already keeps its owner."""
    there = tmp_path / "ring.pcapng.1"
    there.write_bytes(b"old")
    path = tmp_path / "ring.pcapng"
    with pcapng.PcapngWriter(str(path), 65535, file_mb=0.001, file_count=3,
                             owner=(65534, 65534)) as w:
        w.describe(0, "eth0")
        for i in range(40):
            w.write([epb(0, 1_700_000_000_000_000_000 + i, FRAME, 60, False)])
            w.flush()
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in tmp_path.iterdir()}
    assert owners == {"ring.pcapng": (65534, 65534), "ring.pcapng.1": (0, 0),
                      "ring.pcapng.2": (65534, 65534)}
    assert there.stat().st_size > 3  # truncated and written all the same


def test_a_file_the_ring_cannot_open_again_is_one_clear_error(tmp_path):
    """The next file of a ring cannot be made: the error names it and why, and closing the
    writer afterwards does not close the file before it a second time (EBADF)."""
    where = tmp_path / "gone"
    where.mkdir()
    w = pcapng.PcapngWriter(str(where / "ring.pcapng"), 65535, file_mb=0.001, file_count=3)
    w.describe(0, "eth0")
    shutil.rmtree(where)
    with pytest.raises(pcapng.CaptureWriteError,
                       match=r"cannot write .*ring\.pcapng\.1: No such file or directory"):
        for i in range(40):
            w.write([epb(0, 1_700_000_000_000_000_000 + i, FRAME, 60, False)])
            w.flush()
    w.close()


def test_a_run_of_blocks_is_written_whole_or_split_where_a_file_fills(tmp_path, tshark):
    """Runs are what the kernel's records become (sources/records.py): EPBs with gap
    blocks between them, given as parts cut anywhere (a ring's wrap)."""
    gap = struct.pack("=II", abi.CAP_BLOCK, 32) + bytes(20) + struct.pack("=I", 32)
    run = b"".join(epb(0, i, FRAME, 60, False) + gap for i in range(40))
    whole = tmp_path / "w.pcapng"
    with pcapng.PcapngWriter(str(whole), 65535) as w:
        w.describe(0, "eth0")
        w.write_run([memoryview(run)[:1001], memoryview(run)[1001:]], 40)
    assert w.packets == 40 and w.files == 1
    assert [f.ts_ns for f in savefile.frames(whole)] == list(range(40))
    split = tmp_path / "s.pcapng"
    with pcapng.PcapngWriter(str(split), 65535, file_mb=0.001) as w:
        w.describe(0, "eth0")
        w.write_run([run[:1001], run[1001:]], 40)
    names = [split.name] + [f"{split.name}.{i}" for i in range(1, w.files)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != whole.name) == sorted(names)
    assert w.files > 2 and w.packets == 40
    stamps = [f.ts_ns for name in names for f in savefile.frames(tmp_path / name)]
    assert stamps == list(range(40))
    for name in names:
        assert len(tshark(tmp_path / name, "frame.number")) > 0
        # A file is cut before the packet that finds it full: one packet (and its gap) over.
        assert (tmp_path / name).stat().st_size <= 1000 + len(run) // 40


def test_rotation_by_time(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(pcapng.time, "monotonic", lambda: clock[0])
    path = tmp_path / "t.pcapng"
    with pcapng.PcapngWriter(str(path), 65535, rotate_seconds=10) as w:
        w.describe(0, "eth0")
        for step in range(3):
            w.write([epb(0, step, FRAME, 60, False)])
            w.tick()
            clock[0] += 10
    # As tcpdump -G: a new file when a packet comes after the time is up.
    names = ["t.pcapng", "t.pcapng.1", "t.pcapng.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert [[f.ts_ns for f in savefile.frames(tmp_path / n)] for n in names] == [[0], [1], [2]]


def _pcap(order: str, magic: int, linktype: int, snaplen: int, records: list) -> bytes:
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for sec, frac, data, origlen in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), origlen) + data
    return out


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_micro_and_nanoseconds_either_byte_order(tmp_path, order):
    for magic, frac, ns in ((0xA1B2C3D4, 5, 5_000), (0xA1B23C4D, 5, 5)):
        path = tmp_path / "x.pcap"
        path.write_bytes(_pcap(order, magic, 1, 65535, [(7, frac, FRAME, 60)]))
        (frame,) = savefile.frames(path)
        assert (frame.ts_ns, frame.data, frame.ifname, frame.outbound) == \
            (7_000_000_000 + ns, FRAME, None, None)


def test_records_past_the_snaplen_are_cut_to_it(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(_pcap("<", 0xA1B2C3D4, 1, 20, [(1, 0, FRAME, 60), (2, 0, FRAME[:20], 60)]))
    assert [(f.data, f.origlen) for f in savefile.frames(path)] == \
        [(FRAME[:20], 60), (FRAME[:20], 60)]


def test_linux_cooked_captures_become_ethernet(tmp_path):
    ip = FRAME[14:]
    sll = struct.pack(">HHH", 4, 1, 6) + bytes.fromhex("020000000001") + b"\0\0" + b"\x08\x00"
    sll2 = b"\x08\x00" + b"\0\0" + struct.pack(">IHBB", 2, 1, 0, 6) + \
        bytes.fromhex("020000000001") + b"\0\0"
    for linktype, head, outbound in ((113, sll, True), (276, sll2, False)):
        path = tmp_path / "x.pcap"
        path.write_bytes(_pcap("<", 0xA1B2C3D4, linktype, 65535, [(1, 0, head + ip, 60)]))
        (frame,) = savefile.frames(path)
        assert frame.data == bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00" + ip
        assert frame.outbound is outbound and frame.origlen == 60 + 14 - len(head)


def test_a_cooked_frame_the_file_says_is_shorter_than_its_header(tmp_path):
    # A record's length on the wire of 0: the made-up Ethernet length stays 0, not -6
    # (-w could not encode it: found by tests/fuzz), and libpcap gets the file's 0.
    sll2 = b"\x08\x00" + b"\0\0" + struct.pack(">IHBB", 2, 1, 0, 6) + bytes(8)
    path = tmp_path / "x.pcap"
    path.write_bytes(_pcap("<", 0xA1B2C3D4, 276, 65535, [(1, 0, sll2 + FRAME[14:], 0)]))
    (frame,) = savefile.frames(path)
    assert frame.origlen == 0 and frame.as_filed == (sll2 + FRAME[14:], 0)
    pcapng.enhanced_packet(0, frame.ts_ns, frame.data, frame.origlen, False)


def test_other_link_types_and_formats_are_refused(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(_pcap("<", 0xA1B2C3D4, 101, 65535, [(1, 0, FRAME[14:], 46)]))
    with pytest.raises(savefile.CaptureUnreadable, match=r"link type 101 \(raw IP\) is not "
                                                         r"Ethernet"):
        list(savefile.frames(path))
    path.write_text("hello, world\n")
    with pytest.raises(savefile.CaptureUnreadable, match="not a pcap or pcapng file"):
        list(savefile.frames(path))


def test_damage_names_the_byte_offset_after_the_good_frames(tmp_path):
    path = tmp_path / "x.pcapng"
    with pcapng.PcapngWriter(str(path), 65535) as w:
        w.describe(0, "eth0")
        w.write([epb(0, 1, FRAME, 60, False)] * 3)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    got = []
    with pytest.raises(savefile.CaptureDamaged) as exc:
        for frame in savefile.frames(path):
            got.append(frame)
    assert len(got) == 2
    last_block = len(data) - len(pcapng.enhanced_packet(0, 1, FRAME, 60, False))
    assert exc.value.offset == last_block
    assert f"damaged at byte {last_block}: block cut short" in str(exc.value)


def test_a_full_disk_leaves_whole_blocks(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        path = mnt / "full.pcapng"
        with pytest.raises(pcapng.CaptureWriteError, match=r"no space left on device; \d+ "
                                                           r"packets could not be written"):
            with pcapng.PcapngWriter(str(path), 65535) as w:
                w.describe(0, "eth0")
                for _ in range(200):
                    w.write([epb(0, 1, bytes(1514), 1514, False)] * 10)
                    w.flush()
        frames = list(savefile.frames(path))  # whole blocks only: no damage
        assert len(frames) == w.packets > 0
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
