"""Test traffic, run inside a test namespace: ``python -m tests.support.traffic KIND ...``.

udp SRC SPORT DST DPORT PAYLOAD [COUNT]   datagrams of PAYLOAD bytes
flows SRC SPORT DST DPORT PAYLOAD FLOWS COUNT  COUNT datagrams to each of FLOWS
                                          ports from DPORT on, in turn
tcp SRC SPORT DST DPORT PAYLOAD           connect, send PAYLOAD bytes, close
syn SRC SPORT DST DPORT                   one SYN to a closed port (b answers RST)
raw IFNAME HEX                            one Ethernet frame, as given, out of IFNAME
frames IFNAME COUNT HEX...                each frame COUNT times, in turn, out of IFNAME
listen ADDR PORT                          accept one connection, read it all, exit
echo ADDR PORT                            accept one connection, send back each message
                                          at once, exit when it closes
pingpong DST DPORT COUNT SIZE             COUNT messages of SIZE bytes, each after the
                                          answer to the one before (echo's)
bulk DST DPORT BYTES                      connect, send BYTES in 1000-byte writes, close
"""

from __future__ import annotations

import socket
import sys
import time

from tests.support.netns import scaled


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def udp(src: str, sport: int, dst: str, dport: int, payload: int, count: int = 1) -> None:
    with socket.socket(_family(dst), socket.SOCK_DGRAM) as s:
        s.bind((src, sport))
        for _ in range(count):
            s.sendto(b"n" * payload, (dst, dport))


def flows(src: str, sport: int, dst: str, dport: int, payload: int, nflows: int,
          count: int) -> None:
    with socket.socket(_family(dst), socket.SOCK_DGRAM) as s:
        s.bind((src, sport))
        for _ in range(count):
            for port in range(dport, dport + nflows):
                s.sendto(b"n" * payload, (dst, port))


def tcp(src: str, sport: int, dst: str, dport: int, payload: int) -> None:
    with socket.socket(_family(dst), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((src, sport))
        s.connect((dst, dport))
        s.sendall(b"n" * payload)
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass


def syn(src: str, sport: int, dst: str, dport: int) -> None:
    with socket.socket(_family(dst), socket.SOCK_STREAM) as s:
        s.bind((src, sport))
        try:
            s.connect((dst, dport))
        except ConnectionRefusedError:
            return
    raise SystemExit(f"{dst}:{dport} accepted; syn needs a closed port")


def raw(ifname: str, frame_hex: str) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        s.send(bytes.fromhex(frame_hex))


def frames(ifname: str, count: int, *frames_hex: str) -> None:
    """Each frame ``count`` times, in turn, paced so that nothing waits in a queue long."""
    frames_ = [bytes.fromhex(h) for h in frames_hex]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        for i in range(int(count)):
            for f in frames_:
                s.send(f)
            if i % 50 == 49:
                time.sleep(0.001)


def _accept_one(addr: str, port: int) -> socket.socket:
    """The one connection a server takes ("ready" once it listens)."""
    with socket.socket(_family(addr), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(1)
        print("ready", flush=True)
        s.settimeout(scaled(30))
        return s.accept()[0]


def listen(addr: str, port: int) -> None:
    with _accept_one(addr, port) as conn:
        while conn.recv(65536):
            pass


def echo(addr: str, port: int) -> None:
    with _accept_one(addr, port) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)


def pingpong(dst: str, dport: int, count: int, size: int) -> None:
    """Each message answered before the next: every segment is echoed at once by data
    (no delayed ACK in a round trip), so each RTT sample is the path's and the peer's."""
    with socket.create_connection((dst, dport), timeout=scaled(30)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            c.sendall(b"p" * size)
            got = 0
            while got < size:
                chunk = c.recv(65536)
                if not chunk:
                    raise SystemExit("the echo closed early")
                got += len(chunk)


def bulk(dst: str, dport: int, nbytes: int) -> None:
    with socket.create_connection((dst, dport), timeout=scaled(30)) as c:
        sent = 0
        while sent < nbytes:
            c.sendall(b"b" * min(1000, nbytes - sent))
            sent += 1000
            time.sleep(0.0005)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    fn = {"udp": udp, "flows": flows, "tcp": tcp, "syn": syn, "raw": raw, "frames": frames,
          "listen": listen, "echo": echo, "pingpong": pingpong, "bulk": bulk}[kind]
    fn(*[int(a) if a.isdigit() and kind not in ("raw", "frames") else a for a in args])
