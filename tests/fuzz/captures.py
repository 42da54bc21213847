"""Capture files as a careless or hostile sender makes them: pcap and pcapng built from
random blocks (every block type, both byte orders, lengths that lie, options that
overflow, times at the ends of their range), and the test corpus's files mutated.

Each is read as -r reads it (pcapng.reader.frames) and each frame is encoded as -w
writes it. What may happen: frames, CaptureUnreadable (status 10: not a capture netmon
reads) or CaptureDamaged (status 10: the place it stopped making sense). Any other
exception is a finding: it would have been a traceback (issue 26 found one by hand:
a timestamp -w could not encode).
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import traceback
from pathlib import Path

from netmon.errors import CaptureDamaged, CaptureUnreadable
from netmon.pcapng import reader as savefile
from netmon.pcapng import writer as pcapng
from tests.fuzz import Finding, Report

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = ROOT / "tests" / "data" / "tcpdump"
INTERESTING32 = (0, 1, 2, 3, 4, 8, 12, 16, 28, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x3FFFF,
                 0x40000, 0x40001, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
LINKTYPES = (1, 1, 1, 113, 276, 0, 101, 105, 127, 228, 229, 0xFFFF)
# pcapng: SHB, IDB, PB (obsolete), SPB, NRB, ISB, EPB, DSB, custom, and unknown
BLOCK_TYPES = (0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 0x0A, 0xBAD, 0x40000BAD, 0x12345678)


def _u32(rng: random.Random) -> int:
    return rng.choice(INTERESTING32) if rng.random() < 0.6 else rng.getrandbits(32)


def _payload(rng: random.Random, seeds: list[bytes]) -> bytes:
    if seeds and rng.random() < 0.7:
        frame = rng.choice(seeds)
        return frame[:rng.choice((len(frame), len(frame), rng.randrange(len(frame) + 1)))]
    return rng.randbytes(rng.choice((0, 1, 13, 14, 15, 19, 20, 60, rng.randrange(200))))


def _options(rng: random.Random, order: str, codes: tuple[int, ...]) -> bytes:
    out = b""
    for _ in range(rng.randrange(4)):
        code = rng.choice(codes + (0, 1, rng.getrandbits(16)))
        if code == 9:  # if_tsresol: every exponent, both bases
            value = bytes([rng.getrandbits(8)])
        elif code == 14:  # if_tsoffset: the ends of a signed 64-bit second count
            value = struct.pack(order + "q", rng.choice(
                (0, 1, -1, 1 << 62, -(1 << 62), (1 << 63) - 1, -(1 << 63))))
        elif code == 2 and rng.random() < 0.5:  # if_name / epb_flags
            value = rng.choice((b"eth0", "tap100i0\u202e".encode(), b"\x1b[2J", b"\xff\xfe",
                                b"x" * 300, struct.pack(order + "I", rng.getrandbits(32))))
        else:
            value = rng.randbytes(rng.randrange(12))
        length = len(value) if rng.random() < 0.9 else rng.getrandbits(16)
        out += struct.pack(order + "HH", code, length) + value + b"\0" * (-len(value) % 4)
    if rng.random() < 0.8:
        out += b"\0\0\0\0"  # opt_endofopt
    return out


def _block(rng: random.Random, order: str, kind: int, body: bytes) -> bytes:
    length = 12 + len(body) + (-len(body) % 4)
    body += b"\0" * (-len(body) % 4)
    head = length if rng.random() < 0.93 else _u32(rng)
    tail = length if rng.random() < 0.95 else _u32(rng)
    return struct.pack(order + "II", kind, head) + body + struct.pack(order + "I", tail)


def pcapng_file(rng: random.Random, seeds: list[bytes]) -> bytes:
    order = rng.choice("<>")
    out = b""
    interfaces = 0
    for _ in range(rng.randrange(1, 12)):
        kind = rng.choice(BLOCK_TYPES) if out else 0x0A0D0D0A
        if kind == 0x0A0D0D0A:
            bom = struct.pack(order + "I", 0x1A2B3C4D) if rng.random() < 0.95 \
                else rng.randbytes(4)
            body = bom + struct.pack(order + "HHq", 1, rng.choice((0, 1, 2)),
                                     rng.choice((-1, 0, 28, rng.getrandbits(40))))
            body += _options(rng, order, (2, 3, 4))
            interfaces = 0
        elif kind == 1:
            body = struct.pack(order + "HHI", rng.choice(LINKTYPES), 0, _u32(rng))
            body += _options(rng, order, (2, 9, 14, 12, 3))
            interfaces += 1
        elif kind in (6, 2):  # EPB, or the obsolete PB (interface id in 16 bits)
            data = _payload(rng, seeds)
            caplen = len(data) if rng.random() < 0.8 else _u32(rng)
            origlen = len(data) if rng.random() < 0.5 else _u32(rng)
            iface = rng.randrange(interfaces + 1) if rng.random() < 0.9 else _u32(rng)
            if kind == 6:
                head = struct.pack(order + "IIIII", iface, _u32(rng), _u32(rng), caplen, origlen)
            else:
                head = struct.pack(order + "HHIIII", iface & 0xFFFF, 0, _u32(rng), _u32(rng),
                                   caplen, origlen)
            body = head + data + b"\0" * (-len(data) % 4) + _options(rng, order, (2, 3, 4))
        elif kind == 3:
            data = _payload(rng, seeds)
            body = struct.pack(order + "I", len(data) if rng.random() < 0.7 else _u32(rng)) + data
        else:
            body = rng.randbytes(rng.randrange(40))
        out += _block(rng, order, kind, body)
    return _cut(rng, out)


def pcap_file(rng: random.Random, seeds: list[bytes]) -> bytes:
    order = rng.choice("<>")
    magic = rng.choice((0xA1B2C3D4, 0xA1B23C4D)) if rng.random() < 0.95 else _u32(rng)
    linktype = rng.choice(LINKTYPES) | (rng.getrandbits(16) << 16 if rng.random() < 0.1 else 0)
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, _u32(rng), linktype)
    for _ in range(rng.randrange(8)):
        data = _payload(rng, seeds)
        caplen = len(data) if rng.random() < 0.85 else _u32(rng)
        origlen = len(data) if rng.random() < 0.5 else _u32(rng)
        out += struct.pack(order + "IIII", _u32(rng), _u32(rng), caplen, origlen) + data
    return _cut(rng, out)


def _cut(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.15:
        return data[:rng.randrange(len(data) + 1)]
    return data


def mutated(rng: random.Random, seed: bytes) -> bytes:
    """A corpus file with a few of its bytes changed: most often in its first block and
    record headers, where lengths and types are."""
    data = bytearray(seed[:rng.choice((len(seed), 4096, 65536))])
    for _ in range(rng.randrange(1, 6)):
        if not data:
            break
        at = rng.randrange(min(len(data), 128)) if rng.random() < 0.5 \
            else rng.randrange(len(data))
        how = rng.randrange(4)
        if how == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif how == 1:
            data[at] = rng.getrandbits(8)
        elif how == 2:
            data[at:at + 4] = struct.pack(rng.choice("<>") + "I", _u32(rng))
        else:
            del data[at:at + rng.randrange(1, 16)]
    return _cut(rng, bytes(data))


def seed_files() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("*.pcap*")) if p.stat().st_size < 200_000]


def seed_frames(files: list[bytes], tmp: Path) -> list[bytes]:
    """A few hundred of the corpus's frames, payloads for built files."""
    out = []
    for i, data in enumerate(files[:60]):
        path = tmp / f"seed{i}"
        path.write_bytes(data)
        try:
            out += [f.data for _, f in zip(range(8), savefile.frames(path))]
        except (CaptureUnreadable, CaptureDamaged):
            continue
    return out


def read_as_r_and_w(path: Path) -> int:
    """Read the file as -r does and encode its frames as -w does; how many frames."""
    n = 0
    for frame in savefile.frames(path):
        frame.as_filed
        pcapng.enhanced_packet(0, pcapng.in_range(frame.ts_ns), frame.data[:262144],
                               frame.origlen, frame.outbound)
        if frame.ifname is not None:
            pcapng.interface_description(frame.ifname, 262144)
        n += 1
    return n


def through_netmon(path: Path, tmp: Path) -> str | None:
    """`netmon -r FILE --json` and `netmon -r FILE -w OUT`, for real (the kernel runs the
    frames): what went wrong, or None. Right is status 0 with a summary last, or 10
    with one error line last; never a traceback."""
    for extra in (["--json"], ["-w", str(tmp / "out.pcapng")]):
        res = subprocess.run([sys.executable, "-m", "netmon", "-r", str(path), *extra],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        last = res.stderr.splitlines()[-1:] or [""]
        if "Traceback" in res.stderr or res.returncode not in (0, 10):
            return f"netmon -r {' '.join(extra)}: status {res.returncode}: {res.stderr[-300:]}"
        if res.returncode == 10 and not last[0].startswith("netmon: error: "):
            return f"netmon -r {' '.join(extra)}: status 10 without an error line"
        if res.returncode == 0 and " packets seen " not in last[0]:
            return f"netmon -r {' '.join(extra)}: status 0 without a summary: {last[0]}"
    return None


def campaign(n: int, seed: int, tmp: Path, through_every: int = 0) -> Report:
    """``n`` files; every ``through_every``-th of them (0: none) through netmon itself."""
    rng = random.Random(seed)
    report = Report("capture files")
    files = seed_files()
    frames = seed_frames(files, tmp)
    path = tmp / "input"
    for _ in range(n):
        kind = rng.random()
        data = (pcapng_file(rng, frames) if kind < 0.4 else pcap_file(rng, frames)
                if kind < 0.6 else mutated(rng, rng.choice(files)))
        path.write_bytes(data)
        report.inputs += 1
        try:
            report.count("frames read", read_as_r_and_w(path))
            report.count("read to the end")
        except CaptureUnreadable:
            report.count("refused (status 10)")
        except CaptureDamaged:
            report.count("damaged (status 10)")
        except Exception as exc:
            report.findings.append(Finding(f"{type(exc).__name__}: {exc}", data,
                                           traceback.format_exc()))
        if through_every and report.inputs % through_every == 0:
            report.count("run through netmon -r")
            what = through_netmon(path, tmp)
            if what is not None:
                report.findings.append(Finding(what, data))
    return report
