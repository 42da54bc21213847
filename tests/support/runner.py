"""netmon as the tests run it: a process in a test namespace, its output collected as it
comes, stopped on every path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from tests.support.netns import ROOT, NetnsPair, scaled

READY = "Press Ctrl-C to stop"


class Netmon:
    """netmon running in namespace b on its veth, its output collected as it comes."""

    def __init__(self, pair: NetnsPair, *args: str, interface: str | None = "",
                 env: dict[str, str] | None = None, command: list[str] | None = None,
                 ns: str | None = None):
        """``interface`` "" means b's veth; None passes no -i at all.

        ``command`` runs another netmon (an installed copy) instead of this tree's;
        ``ns``: in that namespace instead of b.
        """
        self.pair = pair
        iface = ["-i", interface or pair.b_if] if interface is not None else []
        command = command or [sys.executable, "-m", "netmon"]
        cmd = pair.exec_args(ns or pair.b, *command, *iface, *args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT, env={**os.environ, **(env or {})})
        self.out: list[str] = []
        self.err: list[str] = []
        self._ready = threading.Event()
        self._new_out = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(s, l), daemon=True)
                         for s, l in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    def _pump(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._new_out:
                lines.append(line.rstrip("\n"))
                if READY in line:
                    self._ready.set()
                self._new_out.notify_all()
        with self._new_out:
            self._ready.set()  # no more output: wake anyone waiting
            self._new_out.notify_all()

    def wait_ready(self, timeout: float = 30) -> "Netmon":
        self._ready.wait(scaled(timeout))
        if READY not in "\n".join(self.err):
            self.stop()
            raise AssertionError(f"netmon did not start: rc={self.proc.returncode} "
                                 f"stderr={self.err}")
        return self

    def wait_lines(self, n: int, timeout: float = 30) -> list[str]:
        """Wait until stdout has ``n`` lines (while netmon keeps running)."""
        with self._new_out:
            self._new_out.wait_for(lambda: len(self.out) >= n or self.proc.poll() is not None,
                                   scaled(timeout))
            return list(self.out)

    def wait_stderr(self, prefix: str, after: int = 0, timeout: float = 30) -> list[str]:
        """Wait for a stderr line starting with ``prefix`` past the first ``after`` lines."""
        def seen() -> bool:
            return any(line.startswith(prefix) for line in self.err[after:])

        with self._new_out:
            self._new_out.wait_for(lambda: seen() or self.proc.poll() is not None,
                                   scaled(timeout))
            return list(self.err)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            rc = self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"netmon did not exit by itself; stdout={self.out}")
        self._join()
        return rc

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(scaled(30))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._join()
        return self.proc.returncode

    def _join(self) -> None:
        for t in self._threads:
            t.join(scaled(10))

    def __enter__(self) -> "Netmon":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(signal.SIGKILL)
