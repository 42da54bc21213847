"""Offer a fixed number of frames at a fixed rate out of a veth, from inside its namespace.

Two generators, the first that the kernel allows:

- ``xdp-live-frames``: as xdp-trafficgen sends them, an XDP program that returns
  XDP_TX runs under BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, so each run
  transmits the frame out of the interface named in the context (Linux >= 5.18;
  some kernel builds refuse it with EPERM).
- ``packet-socket``: where the kernel refuses live frames, sendmmsg() on an
  AF_PACKET socket bound to the interface with PACKET_QDISC_BYPASS (straight to the
  driver, as the XDP_TX path goes), 1,024 frames a call. The same frames: with FLOWS
  each from the next source port, as xdp_tx.bpf.c writes them.

    python -m bench.trafficgen OBJ IFNAME FRAME_HEX COUNT RATE [FLOWS[:conv]]
        RATE 0: as fast as it can; FLOWS: an IPv4 UDP frame (checksum 0) is sent from
        that many source ports in turn, from its own on; FLOWS:conv: an IPv4 TCP data
        segment with timestamps is the first of that many TCP conversations in turn,
        both ways (see xdp_tx.bpf.c; the packet socket repeats CONV_FRAMES_MAX of them)
    NETMON_TRAFFICGEN=packet-socket: that generator, whatever the kernel allows.

Prints one JSON object: frames offered, seconds taken and the generator used.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

from netmon.errors import LibbpfError
from netmon.kernel import libbpf
from netmon.kernel.libbpf import ffi
from netmon.kernel.loader import BpfObject

# One live-frames run costs ~25 ms of setup and teardown on current kernels
# whatever its size, so pacing works in bursts: each run sends what is due by
# then. At 40,000 frames/s that is ~1,000 frames per run.
MAX_CHUNK = 65536
LIVE, PACKET = "xdp-live-frames", "packet-socket"
FORCE_ENV = "NETMON_TRAFFICGEN"
# What a kernel says when it will not run live frames: EPERM (a build that refuses
# them), EINVAL or EOPNOTSUPP (one older than 5.18, which knows no such flag).
REFUSED = (errno.EPERM, errno.EINVAL, errno.EOPNOTSUPP)
UDP_SPORT_AT = 14 + 20  # xdp_tx.bpf.c's: IPv4 without options
CONV_HEAD = 14 + 20 + 20 + 12  # xdp_tx.bpf.c's conversations: up to the data
CONV_FRAMES_MAX = 200_000  # the packet socket's conversations: that many frames, again
SEND_BATCH = 1024  # frames per sendmmsg()
SOL_PACKET, PACKET_QDISC_BYPASS = 263, 20


def xdp_md(ifindex: int, frame_len: int) -> bytes:
    # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    return struct.pack("=6I", 0, frame_len, 0, ifindex, 0, 0)


def paced(count: int, rate: float, max_chunk: int, send) -> int:
    """Call ``send(n)`` until ``count`` frames went, each call what is due by then (RATE 0:
    as much as a call takes); returns how many went."""
    sent = 0
    start = time.monotonic()
    while sent < count:
        if rate > 0:
            due = min(count, int((time.monotonic() - start) * rate) + 1)
            if due <= sent:
                # The clock may have passed the next frame's time since `due` was read.
                time.sleep(max(0.0, (sent + 1) / rate - (time.monotonic() - start)))
                continue
            n = min(due - sent, max_chunk)
        else:
            n = min(max_chunk, count - sent)
        send(n)
        sent += n
    return sent


def gen_config(frame: bytes, flows: int, conv: bool) -> bytes:
    """xdp_tx.bpf.c's gen (its .rodata): from the frame, its ports, addresses, data."""
    sport, dport = struct.unpack_from("!HH", frame, UDP_SPORT_AT)
    a_ip, b_ip = frame[26:30], frame[30:34]
    return struct.pack("=IHH4s4sHHI", flows, sport if flows > 1 or conv else 0, int(conv),
                       a_ip, b_ip, dport, 0, max(0, len(frame) - CONV_HEAD))


def conv_frames(frame: bytes, flows: int, total: int) -> list[bytes]:
    """The first ``total`` frames of xdp_tx.bpf.c's conversations, as it writes them."""
    base, b_port = struct.unpack_from("!HH", frame, UDP_SPORT_AT)
    a_ip, b_ip = frame[26:30], frame[30:34]
    p = len(frame) - CONV_HEAD
    out = []
    for sent in range(total):
        conn, rnd = sent % flows, sent // flows
        r, a_port = rnd >> 1, (base + conn) & 0xFFFF
        f = bytearray(frame)
        if not rnd & 1:
            f[26:34] = a_ip + b_ip
            struct.pack_into("!HHII", f, 34, a_port, b_port, (1 + r * p) & 0xFFFFFFFF,
                             (1 + r * p) & 0xFFFFFFFF)
            struct.pack_into("!II", f, 58, 2 * r + 1, 2 * r)
        else:
            f[26:34] = b_ip + a_ip
            struct.pack_into("!HHII", f, 34, b_port, a_port, (1 + r * p) & 0xFFFFFFFF,
                             (1 + (r + 1) * p) & 0xFFFFFFFF)
            struct.pack_into("!II", f, 58, 2 * r + 2, 2 * r + 1)
        out.append(bytes(f))
    return out


def live_frames(obj_path: Path, ifname: str, frame: bytes, count: int, rate: float,
                flows: int = 1, conv: bool = False) -> int:
    """The XDP_TX generator; LibbpfError (errno in REFUSED) where the kernel refuses it,
    before any frame went."""
    ifindex = socket.if_nametoindex(ifname)
    lib = libbpf.lib()

    def prepare(obj: BpfObject) -> None:
        value = gen_config(frame, flows, conv)
        libbpf.ensure(lib.bpf_map__set_initial_value(obj.rodata(), value, len(value)),
                      "setting the flow count")

    with BpfObject(obj_path, prepare=prepare) as obj:
        prog_fd = obj.program_fd("xdp_tx")
        data = ffi.from_buffer(frame)
        ctx = ffi.from_buffer(xdp_md(ifindex, len(frame)))

        def burst(n: int) -> None:
            opts = libbpf.new_opts(
                "bpf_test_run_opts", data_in=data, data_size_in=len(frame), ctx_in=ctx,
                ctx_size_in=len(ctx), repeat=n, flags=libbpf.BPF_F_TEST_XDP_LIVE_FRAMES)
            libbpf.ensure(lib.bpf_prog_test_run_opts(prog_fd, opts), "live-frames test run")

        return paced(count, rate, MAX_CHUNK, burst)


def flow_frames(frame: bytes, flows: int) -> list[bytes]:
    """The frame from each of ``flows`` source ports in turn, from its own on (u16
    wrapping), as xdp_tx.bpf.c sends it."""
    if flows <= 1:
        return [frame]
    base = struct.unpack_from("!H", frame, UDP_SPORT_AT)[0]
    out = []
    for i in range(flows):
        f = bytearray(frame)
        struct.pack_into("!H", f, UDP_SPORT_AT, (base + i) & 0xFFFF)
        out.append(bytes(f))
    return out


class PacketSocket:
    """sendmmsg() on an AF_PACKET socket that bypasses the qdisc: the frames go to the
    driver as they are, SEND_BATCH a call, in turn from ``frames``."""

    _CDEF = """
        struct iovec { void *iov_base; size_t iov_len; };
        struct msghdr { void *msg_name; unsigned int msg_namelen; struct iovec *msg_iov;
                        size_t msg_iovlen; void *msg_control; size_t msg_controllen;
                        int msg_flags; };
        struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
        int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
    """

    def __init__(self, ifname: str, frames: list[bytes]):
        from cffi import FFI

        self._ffi = FFI()
        self._ffi.cdef(self._CDEF)
        self._libc = self._ffi.dlopen(None)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self._sock.bind((ifname, 0))
        # A message per frame, the frames in turn, and a batch more, so that any
        # SEND_BATCH messages from any position are the next frames in turn.
        self._buffers = [self._ffi.from_buffer(f) for f in frames]
        n = self._frames = len(frames)
        self._iovs = self._ffi.new("struct iovec[]", n + SEND_BATCH)
        self._msgs = self._ffi.new("struct mmsghdr[]", n + SEND_BATCH)
        for j in range(n + SEND_BATCH):
            buf = self._buffers[j % n]
            self._iovs[j].iov_base, self._iovs[j].iov_len = buf, len(buf)
            self._msgs[j].msg_hdr.msg_iov, self._msgs[j].msg_hdr.msg_iovlen = self._iovs + j, 1
        self._pos = 0

    def send(self, n: int) -> None:
        """``n`` frames (at most SEND_BATCH), all of them: a partial send is sent on."""
        fd = self._sock.fileno()
        done = 0
        while done < n:
            rc = self._libc.sendmmsg(fd, self._msgs + self._pos + done, n - done, 0)
            if rc < 0:
                err = self._ffi.errno
                if err in (errno.EINTR, errno.EAGAIN, errno.ENOBUFS):
                    continue
                raise OSError(err, os.strerror(err))
            done += rc
        self._pos = (self._pos + n) % self._frames

    def close(self) -> None:
        self._sock.close()


def packet_socket(ifname: str, frame: bytes, count: int, rate: float, flows: int = 1,
                  conv: bool = False) -> int:
    frames = (conv_frames(frame, flows, min(count, CONV_FRAMES_MAX)) if conv
              else flow_frames(frame, flows))
    sender = PacketSocket(ifname, frames)
    try:
        return paced(count, rate, SEND_BATCH, sender.send)
    finally:
        sender.close()


def generate(obj_path: Path, ifname: str, frame: bytes, count: int, rate: float,
             flows: int = 1, conv: bool = False) -> dict:
    generator = os.environ.get(FORCE_ENV) or LIVE
    start = time.monotonic()
    if generator == LIVE:
        try:
            sent = live_frames(obj_path, ifname, frame, count, rate, flows, conv)
        except LibbpfError as exc:
            if exc.errno not in REFUSED:
                raise
            print(f"trafficgen: live frames refused ({exc}): sending from a packet socket",
                  file=sys.stderr)
            generator = PACKET
            start = time.monotonic()
    if generator == PACKET:
        sent = packet_socket(ifname, frame, count, rate, flows, conv)
    elif generator != LIVE:
        raise SystemExit(f"trafficgen: {FORCE_ENV}={generator}: {LIVE} or {PACKET}")
    return {"offered": sent, "seconds": time.monotonic() - start, "generator": generator}


if __name__ == "__main__":
    obj, ifname, frame_hex, count, rate, *flows = sys.argv[1:]
    nflows, _, mode = (flows[0] if flows else "1").partition(":")
    print(json.dumps(generate(Path(obj), ifname, bytes.fromhex(frame_hex), int(count),
                              float(rate), int(nflows), mode == "conv")))
