"""HTTP from inside a test namespace: a free port there, and a GET of a URL there."""

from __future__ import annotations


def free_port(n, ns: str) -> int:
    code = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); " \
           "print(s.getsockname()[1])"
    return int(n.python(ns, code).stdout)


def http_get(n, url: str) -> str:
    code = "import sys, urllib.request; " \
           "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    return n.python(n.b, code, url).stdout
