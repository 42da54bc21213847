"""A page as a person's browser shows it: headless Chromium (Debian's chromium package)
takes a screenshot, and says what it logged (console messages, refused loads)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2400,
               timeout: float = 120) -> list[str]:
    """``page`` rendered into ``png``; returns the lines Chromium logged about the page
    itself (console messages and errors, a Content-Security-Policy's refusals), not about
    the machine (no GPU, no D-Bus)."""
    with tempfile.TemporaryDirectory(prefix="nmt-chromium-") as profile:
        res = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--enable-logging=stderr", "--v=0", f"--screenshot={png}",
             page.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium failed ({res.returncode}): {res.stderr[-2000:]}")
    return [line for line in res.stderr.splitlines()
            if "CONSOLE" in line or "Refused" in line or ":ERROR:" in line and
            ("blink" in line or "content/" in line)]
