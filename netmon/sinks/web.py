"""The metrics endpoint's HTTP server, as exporters are run in production: no client
holds it, and with --web-config it speaks TLS and asks for a password.

prometheus_client's own server starts a thread per connection and never times one
out: 400 clients that connect and say nothing held 400 threads for as long as they
liked, with a listen backlog of 5. Here a connection has REQUEST_SECONDS for its whole
request (a watchdog closes one that dribbles a byte at a time), at most CONNECTIONS are
served at once (more are closed at once), and the backlog is BACKLOG. A
TLS handshake happens in the connection's own thread, under the same watchdog.

--web-config FILE takes the Prometheus exporter toolkit's web configuration, so the
file an operator has for node_exporter works: ``tls_server_config`` (cert_file,
key_file, client_auth_type, client_ca_file, min_version, max_version) and
``basic_auth_users`` (bcrypt hashes, as `htpasswd -nBC 10` makes). Paths are relative to
the file. Anything else in it is refused in one line.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from netmon.errors import UsageError

REQUEST_SECONDS = 10.0  # the most a connection has for its request and the answer
CONNECTIONS = 256  # served at once; more are closed as they come
BACKLOG = 128
_AUTH_CACHE = 64  # passwords already checked (bcrypt costs ~50 ms a check)


@dataclass
class WebConfig:
    """What a web configuration file asks for."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash


_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version"}


def load_web_config(path: str) -> WebConfig:
    """The file's TLS and users, or UsageError in one line (naming the file and the key,
    never quoting the file: it holds password hashes)."""
    try:
        import yaml
    except ImportError:
        raise UsageError("--web-config needs PyYAML (pip install pyyaml)") from None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise UsageError(f"--web-config {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UsageError(f"--web-config {path}: not a YAML file") from None
    data = data or {}
    if not isinstance(data, dict):
        raise UsageError(f"--web-config {path}: not a web configuration (a mapping)")
    unknown = set(data) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise UsageError(f"--web-config {path}: netmon does not take {sorted(unknown)[0]!r} "
                         f"(it takes tls_server_config and basic_auth_users)")
    base = os.path.dirname(os.path.abspath(path))
    config = WebConfig()
    tls = data.get("tls_server_config")
    if tls is not None:
        config.tls = _tls(path, base, tls)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict) or not all(
            isinstance(u, str) and isinstance(h, str) and h.startswith("$2") for u, h in
            users.items()):
        raise UsageError(f"--web-config {path}: basic_auth_users maps users to bcrypt hashes")
    if users and importlib.util.find_spec("bcrypt") is None:  # checked now, used per request
        raise UsageError("--web-config basic_auth_users needs bcrypt (pip install bcrypt)")
    config.users = {u: h.encode() for u, h in users.items()}
    return config


def _tls(path: str, base: str, tls) -> ssl.SSLContext:
    if not isinstance(tls, dict) or set(tls) - _TLS_KEYS:
        raise UsageError(f"--web-config {path}: tls_server_config takes "
                         f"{', '.join(sorted(_TLS_KEYS))}")
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise UsageError(f"--web-config {path}: tls_server_config needs cert_file and "
                         f"key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        for key, attr in (("min_version", "minimum_version"), ("max_version",
                                                               "maximum_version")):
            if key in tls:
                setattr(ctx, attr, _VERSIONS[tls[key]])
        ctx.verify_mode = _CLIENT_AUTH[tls.get("client_auth_type", "NoClientCert")]
    except (KeyError, TypeError):
        raise UsageError(f"--web-config {path}: client_auth_type or a TLS version netmon "
                         f"does not know") from None
    try:
        ctx.load_cert_chain(os.path.join(base, tls["cert_file"]),
                            os.path.join(base, tls["key_file"]))
        if tls.get("client_ca_file"):
            ctx.load_verify_locations(os.path.join(base, tls["client_ca_file"]))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--web-config {path}: the certificate or key cannot be used "
                         f"({getattr(exc, 'strerror', None) or exc.__class__.__name__})"
                         ) from None
    if ctx.verify_mode != ssl.CERT_NONE and not tls.get("client_ca_file"):
        raise UsageError(f"--web-config {path}: client_auth_type needs client_ca_file")
    return ctx


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_SECONDS  # each read and write (StreamRequestHandler.setup)

    def setup(self) -> None:
        # The whole request, however slowly it comes: closed when the time is up.
        self._watchdog = threading.Timer(REQUEST_SECONDS, self._cut)
        self._watchdog.daemon = True
        self._watchdog.start()
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def _cut(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self._watchdog.cancel()
        try:
            super().finish()
        except OSError:
            pass

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ssl.SSLError, ValueError):
            pass  # a client that went away, or was cut: nothing to tell it

    def log_message(self, format, *args) -> None:
        pass  # a scrape every few seconds is not news


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], family: int, app, config: WebConfig):
        self.address_family = family
        self._slots = threading.BoundedSemaphore(CONNECTIONS)
        self._tls = config.tls
        super().__init__(address, _Handler)
        self.set_app(_with_auth(app, config.users) if config.users else app)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def get_request(self):
        sock, addr = self.socket.accept()
        if self._tls is not None:  # handshake later, in the connection's thread
            sock = self._tls.wrap_socket(sock, server_side=True,
                                         do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # CONNECTIONS are being served
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        pass  # one client's trouble is its own; the server goes on


def _with_auth(app, users: dict[str, bytes]):
    import bcrypt

    checked: dict[bytes, bool] = {}
    lock = threading.Lock()

    def authorized(header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        with lock:
            if key in checked:
                return checked[key]
        ok = bcrypt.checkpw(password.encode(), hashed)
        with lock:
            if len(checked) >= _AUTH_CACHE:
                checked.clear()
            checked[key] = ok
        return ok

    def guarded(environ, start_response):
        if authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="netmon"'),
                                            ("Content-Type", "text/plain")])
        return [b"Unauthorized\n"]

    return guarded


def serve(host: str, port: int, app, config: WebConfig) -> tuple[Server, threading.Thread]:
    """The server on its own thread; OSError where the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = Server((host, port), family, app, config)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, thread
