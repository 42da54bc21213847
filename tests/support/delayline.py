"""A delay line in user space: frames from one interface out of another, after a while.

netem is not in every kernel netmon is tested on (this machine's has none), so the
known delays the RTT tests need are made here: a process in its own namespace reads
every frame arriving on each of two veths with a packet socket and sends it out of the
other after a fixed time, per direction; it may also drop every Nth TCP data segment
one way (a loss beyond the watched interface, known exactly). Offloads must be off on
the path (GSO, GRO, TSO, checksums) so that each frame crosses whole and as itself.

    python -m tests.support.delayline IF_A IF_B --to-b MS --to-a MS [--drop-every N]

On SIGTERM it prints {"forwarded": n, "dropped": n} and exits.
"""

from __future__ import annotations

import argparse
import collections
import json
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def _tcp_data(frame: bytes) -> bool:
    """An IPv4 TCP segment with payload (untagged Ethernet)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return False
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    off = 14 + ihl
    if len(frame) < off + 13:
        return False
    return total - ihl - (frame[off + 12] >> 4) * 4 > 0


def run(if_a: str, if_b: str, to_b: float, to_a: float, drop_every: int) -> dict:
    socks = {}
    for name in (if_a, if_b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.bind((name, 0))
        socks[name] = s
    other = {if_a: (socks[if_b], to_b), if_b: (socks[if_a], to_a)}
    queue: collections.deque = collections.deque()  # (when, socket, frame): FIFO per delay
    stats = {"forwarded": 0, "dropped": 0}
    data_to_b = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    by_fd = {s.fileno(): name for name, s in socks.items()}
    print("ready", flush=True)
    while not stop:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, out, frame = queue.popleft()
            try:
                out.send(frame)
                stats["forwarded"] += 1
            except OSError:
                pass
        wait = max(0.0, queue[0][0] - now) if queue else 0.2
        try:
            ready, _, _ = select.select(list(by_fd), [], [], wait)
        except InterruptedError:
            continue
        for fd in ready:
            name = by_fd[fd]
            frame, addr = socks[name].recvfrom(65536)
            if addr[2] == PACKET_OUTGOING:
                continue  # our own send
            out, delay = other[name]
            if name == if_a and drop_every and _tcp_data(frame):
                data_to_b += 1
                if data_to_b % drop_every == 0:
                    stats["dropped"] += 1
                    continue
            # Two delays, one queue: a frame never overtakes one queued before it with
            # the same delay; with two different ones, each way keeps its order.
            item = (time.monotonic() + delay / 1000, out, frame)
            if queue and item[0] < queue[-1][0]:
                queue = collections.deque(sorted([*queue, item], key=lambda q: q[0]))
            else:
                queue.append(item)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("if_a")
    ap.add_argument("if_b")
    ap.add_argument("--to-b", type=float, default=0.0, help="ms added to frames a -> b")
    ap.add_argument("--to-a", type=float, default=0.0, help="ms added to frames b -> a")
    ap.add_argument("--drop-every", type=int, default=0,
                    help="drop every Nth TCP data segment a -> b")
    args = ap.parse_args()
    stats = run(args.if_a, args.if_b, args.to_b, args.to_a, args.drop_every)
    print(json.dumps(stats), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
