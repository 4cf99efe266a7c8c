"""Helpers for the chat/platform API tests: keys, assistants, SSE reading, audio."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from gateway.audio import pcm
from gateway.store.db import Database
from gateway.store.keys import KeyStore
from gateway.store.models import Assistant

DATA = Path(__file__).resolve().parents[1] / "data"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def make_key(gw: Any, assistant_id: str | None = None) -> str:
    db = Database.from_config(gw.cfg)
    try:
        _, key = await KeyStore(db).create("test", assistant_id=assistant_id)
    finally:
        await db.close()
    return key


async def add_assistant(gw: Any, assistant_id: str, **fields: Any) -> None:
    """A second assistant, straight into the gateway's database."""
    db = Database.from_config(gw.cfg)
    try:
        async with db.session() as s:
            fields.setdefault("template_variables", {})
            fields.setdefault("tools", [])
            s.add(Assistant(id=assistant_id, name=fields.pop("name", assistant_id), **fields))
            await s.commit()
    finally:
        await db.close()


def client(gw: Any, key: str | None = None, **headers: str) -> httpx.AsyncClient:
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.AsyncClient(base_url=gw.base, headers=headers, timeout=120)


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) >= {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and "Traceback" not in resp.text
    return body


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``event:`` / ``data:`` blocks of an SSE body (comments such as pings skipped)."""
    events: list[tuple[str, dict[str, Any]]] = []
    for block in re.split(r"\r?\n\r?\n", text):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


async def post_sse(http: httpx.AsyncClient, url: str, **kwargs: Any) -> tuple[
        httpx.Response, list[tuple[str, dict[str, Any]]]]:
    async with http.stream("POST", url, **kwargs) as resp:
        body = (await resp.aread()).decode()
    if resp.status_code != 200:
        return resp, []
    assert resp.headers["content-type"].startswith("text/event-stream")
    return resp, parse_sse(body)


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [n for n, _ in events]


def wav_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def convert(name: str, fmt: str, *, rate: int | None = None, stereo: bool = False,
            subtype: str | None = None) -> bytes:
    """A test WAV re-encoded by soundfile (FLAC, OGG Vorbis, another rate, stereo)."""
    samples, src = sf.read(DATA / name, dtype="float32")
    if rate and rate != src:
        samples = pcm.to_float(pcm.resample(pcm.from_float(samples), src, rate))
    if stereo:
        samples = np.stack([samples, samples * 0.5], axis=1)
    out = io.BytesIO()
    sf.write(out, samples, rate or src, format=fmt, subtype=subtype)
    return out.getvalue()


def decoded_audio(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(base64.b64decode(d["audio"]) for n, d in events if n == "audio")
