"""[HOST:]PORT values of --metrics and --ipfix: parsed and resolved before anything starts."""

from __future__ import annotations

import socket


def parse(text: str, default_host: str | None = None) -> tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT' or, with a default host, 'PORT' -> (address, port).

    A name is resolved here, once: a wrong one is a usage error, not a failure later.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        if default_host is None:
            raise ValueError(f"{text!r} is not HOST:PORT")
        host, port_text = default_host, text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [ADDR]:PORT")
    if not host:
        raise ValueError(f"{text!r} has no host before the ':'")
    try:
        port = int(port_text, 10)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    try:
        address = sockaddr(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"{text!r}: cannot resolve {host!r} ({exc})") from None
    if len(address) == 4 and address[3]:  # a link-local address's zone: kept, as typed
        return f"{address[0]}%{host.partition('%')[2] or address[3]}", port
    return address[0], port


def sockaddr(host: str, port: int) -> tuple:
    """The socket address of ``host`` (a zone, ``fe80::1%eth0``, becomes its scope id:
    Python's connect() would drop the zone of the text)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4]


def display(host: str, port: int) -> str:
    """How the user writes the address back: brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
