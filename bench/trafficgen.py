"""Offer a fixed number of frames at a fixed rate out of a veth, from inside its namespace.

The frames are sent the way xdp-trafficgen sends them: an XDP program that
returns XDP_TX runs under BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES,
so each run transmits the frame out of the interface named in the context.

    python -m bench.trafficgen OBJ IFNAME FRAME_HEX COUNT RATE [FLOWS]
        RATE 0: as fast as it can; FLOWS: an IPv4 UDP frame (checksum 0) is sent from
        that many source ports in turn, from its own on (see xdp_tx.bpf.c)

Prints one JSON object: frames offered and seconds taken.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path

from netmon.kernel import libbpf
from netmon.kernel.libbpf import ffi
from netmon.kernel.loader import BpfObject

# One live-frames run costs ~25 ms of setup and teardown on current kernels
# whatever its size, so pacing works in bursts: each run sends what is due by
# then. At 40,000 frames/s that is ~1,000 frames per run.
MAX_CHUNK = 65536


def xdp_md(ifindex: int, frame_len: int) -> bytes:
    # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    return struct.pack("=6I", 0, frame_len, 0, ifindex, 0, 0)


def generate(obj_path: Path, ifname: str, frame: bytes, count: int, rate: float,
             flows: int = 1) -> dict:
    ifindex = socket.if_nametoindex(ifname)
    lib = libbpf.lib()

    def prepare(obj: BpfObject) -> None:
        sport = struct.unpack_from("!H", frame, 14 + 20)[0] if flows > 1 else 0
        value = struct.pack("=IHH", flows, sport, 0)  # .rodata: xdp_tx.bpf.c's gen
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

        sent = 0
        start = time.monotonic()
        while sent < count:
            if rate > 0:
                due = min(count, int((time.monotonic() - start) * rate) + 1)
                if due <= sent:
                    time.sleep((sent + 1) / rate - (time.monotonic() - start))
                    continue
                n = min(due - sent, MAX_CHUNK)
            else:
                n = min(MAX_CHUNK, count - sent)
            burst(n)
            sent += n
        return {"offered": sent, "seconds": time.monotonic() - start}


if __name__ == "__main__":
    obj, ifname, frame_hex, count, rate, *flows = sys.argv[1:]
    print(json.dumps(generate(Path(obj), ifname, bytes.fromhex(frame_hex), int(count),
                              float(rate), int(flows[0]) if flows else 1)))
