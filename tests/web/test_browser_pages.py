"""End to end in a real browser: Debian's Chromium opens the gateway's pages, a speech
WAV is its microphone, and the pages' own state (``window.__voice``/``__kiosk``) and DOM
say what was heard, shown and played. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from chromium import chromium, needs_chromium, screenshot, speech_wav, watch
from playwright.async_api import Page

from gateway.store.db import Database
from gateway.store.keys import KeyStore

pytestmark = [needs_chromium, pytest.mark.slow]

SPEECH = "what_is_the_gateway.wav"
VIEWPORT = {"width": 1280, "height": 800}


async def state(page: Page, name: str) -> Any:
    return await page.evaluate(f"JSON.parse(JSON.stringify(window.{name}))")


async def wait_for(page: Page, condition: str, timeout_s: float, problems: list[str]) -> None:
    try:
        await page.wait_for_function(condition, timeout=timeout_s * 1000, polling=50)
    except Exception as exc:
        hook = await page.evaluate("JSON.stringify(window.__voice || window.__kiosk)")
        raise AssertionError(f"page never reached {condition!r}; page problems: {problems}; "
                             f"page state: {hook}") from exc


async def test_voice_page_transcribes_answers_and_plays(gateway_factory, tmp_path: Path) -> None:
    gw = gateway_factory()
    async with chromium(speech_wav(tmp_path, SPEECH)) as browser:
        page = await browser.new_page(viewport=VIEWPORT)
        problems = watch(page)
        await page.goto(f"{gw.base}/")
        await page.click("#start")
        await wait_for(page, "window.__voice.transcripts.length > 0", 30, problems)
        await wait_for(page, "window.__voice.audio.played >= 40", 30, problems)
        await screenshot(page, "voice-page-reply")
        hook = await state(page, "__voice")
        shown = await page.inner_text("#log")
        latency = await page.inner_text("#latency")

    assert "gateway" in hook["transcripts"][0].lower(), hook["transcripts"]
    assert "gateway" in shown.lower()
    assert "voice server" in shown.lower(), shown  # the reply text, streamed in as tokens
    assert hook["events"]["token"] >= 3
    audio = hook["audio"]
    assert audio["bytes"] == audio["chunks"] * 960  # 20 ms of s16le at 24 kHz each
    assert audio["loud"] >= 20, audio  # real speech, not silence
    figures = hook["latency"][0]
    assert 0 <= figures["first_token_ms"] <= figures["first_audio_ms"] <= figures["heard_ms"]
    assert figures["server"]["first_audio_ms"] > 0
    assert "ms" in latency
    assert not problems, problems


async def test_voice_page_stops_playback_on_interrupt(gateway_factory, tmp_path: Path) -> None:
    gw = gateway_factory()
    async with chromium(speech_wav(tmp_path, SPEECH)) as browser:
        page = await browser.new_page(viewport=VIEWPORT)
        problems = watch(page)
        await page.goto(f"{gw.base}/")
        await page.click("#start")
        await wait_for(page, "window.__voice.audio.played >= 25", 40, problems)
        await page.click("#interrupt")
        await wait_for(page, "window.__voice.events.interrupted >= 1", 5, problems)
        stopped = await state(page, "__voice")
        await asyncio.sleep(0.5)
        later = await state(page, "__voice")
        await screenshot(page, "voice-page-interrupted")

    assert stopped["audio"]["stops"] == 1
    assert stopped["audio"]["active"] == 0  # every scheduled buffer was stopped at once
    assert later["audio"]["played"] == stopped["audio"]["played"]  # nothing played after
    assert later["audio"]["active"] == 0
    assert not problems, problems


async def test_voice_page_over_webrtc(gateway_factory, tmp_path: Path) -> None:
    gw = gateway_factory()
    # Chromium leaves loopback out of its ICE candidates unless told; the gateway offers
    # 127.0.0.1 only in tests, so no media leaves the machine.
    args = ["--allow-loopback-in-peer-connection"]
    async with chromium(speech_wav(tmp_path, SPEECH), args) as browser:
        page = await browser.new_page(viewport=VIEWPORT)
        problems = watch(page)
        await page.goto(f"{gw.base}/?transport=webrtc")
        await page.click("#start")
        await wait_for(page, "window.__voice.transcripts.length > 0", 30, problems)
        await wait_for(page, "window.__voice.rtc && window.__voice.rtc.loud >= 25", 30, problems)
        await screenshot(page, "voice-page-webrtc")
        hook = await state(page, "__voice")
        shown = await page.inner_text("#log")

    assert "gateway" in hook["transcripts"][0].lower(), hook["transcripts"]
    assert "voice server" in shown.lower(), shown
    assert hook["audio"]["chunks"] == 0  # the reply came as the Opus track, not as binary
    figures = hook["latency"][0]
    assert 0 <= figures["first_token_ms"] <= figures["heard_ms"]
    assert not problems, problems


# -- the kiosk ------------------------------------------------------------------------------

KIOSK_ARGS = ("--autoplay-policy=no-user-gesture-required",)  # as a kiosk browser runs


async def api_key(gw) -> str:
    db = Database.from_config(gw.cfg)
    _, key = await KeyStore(db).create("kiosk-backend")
    await db.close()
    return key


def mint_token(gw, key: str) -> str:
    """What the integrator's backend does: POST /api/get-access-token with its API key."""
    resp = httpx.post(f"{gw.base}/api/get-access-token", headers={"Authorization": f"Bearer {key}"},
                      json={"avatarId": "Pedro_Blue_Shirt_public", "voiceId": "joe"}, timeout=10)
    resp.raise_for_status()
    return str(resp.json()["token"])


async def mouth_over_time(page: Page, seconds: float) -> list[tuple[str, str, int]]:
    """(path, viseme, chunks played) sampled every 40 ms."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(tuple(await page.evaluate(
            "[document.getElementById('mouth').getAttribute('d'),"
            " document.getElementById('mouth').dataset.viseme, window.__kiosk.audio.played]")))
        await asyncio.sleep(0.04)
    return samples


async def test_kiosk_lip_syncs_the_reply(gateway_factory, tmp_path: Path) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    token = await asyncio.to_thread(mint_token, gw, await api_key(gw))
    async with chromium(speech_wav(tmp_path, SPEECH), KIOSK_ARGS) as browser:
        page = await browser.new_page(viewport=VIEWPORT)
        problems = watch(page)
        await page.goto(f"{gw.base}/kiosk?token={token}")
        await wait_for(page, "window.__kiosk.sessions === 1", 15, problems)
        assert "token=" not in page.url  # a spent token is not left for a reload
        closed_mouth = await page.get_attribute("#mouth", "d")
        await wait_for(page, "window.__kiosk.transcripts.length > 0", 30, problems)
        await wait_for(page, "window.__kiosk.audio.played >= 10", 30, problems)
        samples = await mouth_over_time(page, 2.0)
        await screenshot(page, "kiosk-speaking")
        hook = await state(page, "__kiosk")

    assert "gateway" in hook["transcripts"][0].lower()
    assert hook["audio"]["loud"] >= 20
    paths = {d for d, _, _ in samples}
    shapes = {v for _, v, _ in samples}
    assert len(paths) >= 10, samples  # the mouth moves while the reply plays
    assert closed_mouth not in paths or len(paths) > 1
    assert samples[-1][2] > samples[0][2]  # and audio was playing meanwhile
    assert hook["visemeEvents"] >= 1 and hook["wordEvents"] >= 1, hook
    assert len(shapes - {"sil", "level"}) >= 4, shapes  # driven by the viseme events
    # In sync: frame by frame, the mouth is open when the audio heard is loud.
    _, rms, opening = np.array(hook["sync"], dtype=float).T
    loudness = 20 * np.log10(np.maximum(rms, 1e-5))
    assert len(opening) >= 50 and np.corrcoef(loudness, opening)[0, 1] > 0.2
    assert hook["closes"] == []
    assert not problems, problems


class TokenBackend:
    """An integrator's backend on loopback: GET /token mints a fresh session token."""

    def __init__(self, gw, key: str) -> None:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"token": mint_token(gw, key)}).encode()
                backend.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.served = 0
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/token"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


async def test_kiosk_reconnects_with_a_fresh_token(gateway_factory) -> None:
    # No microphone and a 2 s idle timeout: the server drops the silent session (4408)
    # and the kiosk must come back on its own, with a token from token_url each time.
    gw = gateway_factory(server={"allow_anonymous": "false", "idle_timeout_s": 2})
    key = await api_key(gw)
    backend = TokenBackend(gw, key)
    first = await asyncio.to_thread(mint_token, gw, key)
    try:
        async with chromium(None, KIOSK_ARGS) as browser:
            page = await browser.new_page(viewport=VIEWPORT)
            problems = watch(page)
            await page.goto(f"{gw.base}/kiosk?token={first}&token_url={backend.url}")
            await wait_for(page, "window.__kiosk.sessions >= 3", 30, problems)
            await screenshot(page, "kiosk-reconnected")
            hook = await state(page, "__kiosk")
    finally:
        backend.close()

    assert hook["closes"][0]["code"] == 4408
    assert hook["tokensFetched"] >= 2 and backend.served == hook["tokensFetched"]
    assert all(c["code"] != 4401 for c in hook["closes"]), hook["closes"]  # no token reused
