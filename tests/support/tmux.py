"""A terminal view as a person sees it: tmux runs it, capture-pane reads it."""

from __future__ import annotations

import subprocess
import time

from tests.support.netns import scaled


def pane(session: str) -> str:
    """What a tmux session's pane shows now, as a person sees it."""
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True, check=True).stdout


def wait_pane(session: str, text: str, seconds: float = 15) -> str:
    """The pane once it shows ``text`` (or as it is when the time is up)."""
    deadline = time.monotonic() + scaled(seconds)
    screen = pane(session)
    while text not in screen and time.monotonic() < deadline:
        time.sleep(0.2)
        screen = pane(session)
    return screen
