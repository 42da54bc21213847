"""netmon top's sink: the view redrawn once a second, on a terminal (screen.py) or as
plain text (view.py), and the keys that change it."""

from __future__ import annotations

import select
import time

from netmon.escape import visible
from netmon.flows import Flow
from netmon.host import proxmox
from netmon.pipeline import Context, Delivery, Sink
from netmon.sinks.top.screen import Screen
from netmon.sinks.top.view import DROP_ROWS, ROWS_DEFAULT, DropRates, Groups, TopView

class TopSink(Sink):
    """netmon top: the view redrawn once a second, on a terminal (rich) or as plain text."""

    wants = Delivery.FLOWS

    @classmethod
    def wanted(cls, settings) -> bool:
        return settings.flows is not None and settings.flows.top

    @classmethod
    def writes_stdout(cls, settings) -> bool:
        return True

    @classmethod
    def takes_terminal(cls, settings, out) -> bool:
        return out.isatty()

    def __init__(self, ctx: Context):
        s = ctx.settings
        self._counters = ctx.counters
        self._out = ctx.out
        self._interfaces = ctx.interfaces
        self._title = f"netmon top: {s.selection.title()}"
        self._many = not s.selection.single
        self._both = len(s.directions) > 1
        self._tally = ctx.tally
        # --drops: a panel of the kernel's drops below the flows, which make room for it.
        self._drops = DropRates(time.monotonic(), self._name) if s.drops else None
        self._view = TopView(ctx.book, self._where if self._many or self._both else None,
                             "WHERE" if self._many else "DIR", s.flows.sort,
                             ROWS_DEFAULT - DROP_ROWS - 2 if s.drops else ROWS_DEFAULT,
                             s.flows.by, Groups(self._interfaces.info, self._both),
                             tcp=s.tcp is not None)
        self._screen = Screen(self._view, ctx.out) if self.takes_terminal(s, ctx.out) else None
        self._quit = False
        if self._screen is not None:
            self._screen.__enter__()

    def _where(self, flow: Flow) -> str:
        """The interface (a guest's name for a guest's) and the direction, as needed."""
        if not self._many:
            return flow.key.direction
        name = self._shown(self._interfaces.info(flow.key.ifindex))
        return f"{name} {flow.key.direction}" if self._both else name

    @staticmethod
    def _shown(info: dict) -> str:
        """A host interface by name; a guest's by the guest's name (vmN without one) and
        the NIC, as its config names it (web1/net1 is tap100i1): two NICs read apart."""
        if "guest" not in info:
            return visible(info["ifname"])
        name = info.get("guest_name") or f"vm{info['guest']}"
        nic = proxmox.guest_nic(info["ifname"])
        return visible(f"{name}/net{nic[1]}" if nic else name)

    def _name(self, ifname: str) -> str:
        """A drop's interface as the view shows interfaces (its guest's name for a guest's)."""
        return self._shown(proxmox.interface_info(ifname))

    def watch_fds(self) -> list[int]:
        fd = self._screen.keys_fd if self._screen is not None else None
        return [] if fd is None else [fd]

    def tick(self) -> None:
        """A key pressed in the view: q quits, s changes the sort, b the rows, w TCP
        health's window."""
        if self._screen is not None and self._screen.resumed():
            self._draw()
        fds = self.watch_fds()
        if not fds or not select.select(fds, [], [], 0)[0]:
            return
        key = self._screen.key()
        if key == "q":
            self._quit = True
        elif key == "s":
            self._view.next_sort()
            self._draw()
        elif key == "b":
            self._view.next_by()
            self._draw()
        elif key == "w" and self._view.tcp:
            self._view.next_window()
            self._draw()

    @property
    def stop(self) -> bool:
        return self._quit

    def flows(self, records, final=False) -> int:
        if not final:
            self._draw()
        return 0

    def _draw(self) -> None:
        c = self._counters()
        lost, overflow = c.get("send_failed", 0), c.get("flow_overflow", 0)
        if self._drops is not None:
            self._drops.add(time.monotonic(), self._tally().drops or [])
        if self._screen is not None:
            self._screen.draw(self._title, lost, overflow, self._drops)
        else:
            text = self._view.plain(self._title, lost, overflow)
            if self._drops is not None:
                text = text[:-1] + "\n".join(self._drops.plain(DROP_ROWS)) + "\n\n"
            self._out.write(text)
            self._out.flush()

    def close(self) -> None:
        screen, self._screen = self._screen, None
        if screen is not None:
            screen.__exit__(None, None, None)
