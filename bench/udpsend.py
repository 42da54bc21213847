"""Send UDP datagrams through the stack at a fixed rate: traffic that leaves by tc egress.

The XDP_TX generator (bench/trafficgen.py) bypasses the egress path, so what an
interface *sends* is made here, with sendto() in a paced loop.

    python -m bench.udpsend SRC DST DPORT PAYLOAD COUNT RATE

Prints one JSON object: datagrams sent and seconds taken.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def send(src: str, dst: str, dport: int, payload: int, count: int, rate: float) -> dict:
    data = b"x" * payload
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 40000))
        start = time.perf_counter()
        sent = 0
        while sent < count:
            due = count if not rate else min(count, int((time.perf_counter() - start) * rate) + 1)
            while sent < due:
                try:
                    s.sendto(data, (dst, dport))
                except OSError:  # ENOBUFS: the qdisc is full; retry
                    continue
                sent += 1
        return {"sent": sent, "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    src, dst, dport, payload, count, rate = sys.argv[1:]
    print(json.dumps(send(src, dst, int(dport), int(payload), int(count), float(rate))))
