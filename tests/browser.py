"""Headless Chromium, where it is installed (Debian's ``chromium``): a page's screenshot, as a
user's browser draws it, scripts run. CI has no browser: the tests that need one say so."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No network beyond the page: the machine's closed network refuses Chromium's own connections.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def dom(url: str, *, wait_ms: int = 3000) -> str:
    """The page's DOM after ``wait_ms`` of its (virtual) time: what its scripts made of it."""
    return _chromium(url, "--dump-dom", wait_ms=wait_ms)


def screenshot(
    url: str, path: Path, *, width: int = 1400, height: int = 1000, wait_ms: int = 8000
) -> Path:
    """``url`` drawn into the PNG at ``path``, after ``wait_ms`` of the page's (virtual) time."""
    _chromium(url, f"--screenshot={path}", f"--window-size={width},{height}", wait_ms=wait_ms)
    return path


def _chromium(url: str, *flags: str, wait_ms: int) -> str:
    """Chromium run headless on ``url`` with ``flags`` in a profile of its own; its stdout."""
    assert CHROMIUM is not None, "no chromium installed"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={wait_ms}",
                *flags,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    return done.stdout


def drawn_on(path: Path) -> float:
    """How much a screenshot varies (0: a blank page)."""
    import matplotlib.image

    image = matplotlib.image.imread(path)
    return float(image[..., :3].std())
