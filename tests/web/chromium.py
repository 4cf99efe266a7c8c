"""Debian's Chromium driven by Playwright for Python (no browser download: the system
binary at /usr/bin/chromium), with a WAV file as its microphone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DATA = ROOT / "tests" / "data"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium "
    "(scripts/install --test installs it)",
)

# Quiet, reproducible, no network of its own. Playwright adds a fresh temporary
# --user-data-dir itself (it refuses one passed in args).
BASE_ARGS = (
    "--no-sandbox",  # root in a container: the setuid sandbox is unavailable
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
)


def speech_wav(tmp: Path, name: str, lead_ms: int = 600, tail_ms: int = 2000) -> Path:
    """``name`` with silence around it: the page connects during the lead, and the
    tail lets the server's VAD see the end of the turn."""
    audio, rate = sf.read(DATA / name, dtype="int16")
    lead = np.zeros(rate * lead_ms // 1000, dtype=np.int16)
    tail = np.zeros(rate * tail_ms // 1000, dtype=np.int16)
    out = tmp / f"mic-{name}"
    sf.write(out, np.concatenate([lead, audio, tail]), rate, subtype="PCM_16")
    return out


@asynccontextmanager
async def chromium(microphone: Path | None, extra: Sequence[str] = ()) -> AsyncIterator[Browser]:
    """Headless Chromium; ``microphone`` is played once (``%noloop``) as the fake
    capture device from the moment the page opens it, silence after."""
    args = list(BASE_ARGS)
    if microphone is not None:
        args += ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-audio-capture={microphone}%noloop"]
    args += list(extra)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                           args=args, timeout=60_000)
        try:
            yield browser
        finally:
            await browser.close()


def watch(page: Page) -> list[str]:
    """Collects the page's uncaught errors and console errors (printed on failure)."""
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            problems.append(f"console: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    return problems


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path
