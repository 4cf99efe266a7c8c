"""``gateway eval``: play a scenario set against a running gateway and write the report.

The set's knowledge base goes into a fresh assistant (``POST /api/v1/assistants``, then
``POST /api/v1/documents/import``); each scenario is one voice session on the v1
WebSocket, run one after another so that their latencies do not disturb each other.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import websockets

from gateway.errors import GatewayError
from gateway.evaluation import report
from gateway.evaluation.analysis import Marks, Rec, Result, analyze
from gateway.evaluation.audio import Clip, Voices
from gateway.evaluation.call import Call
from gateway.evaluation.scenario import Scenario, ScenarioSet
from gateway.evaluation.scoring import numbers
from gateway.providers.base import ProviderError

HTTP_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 20.0  # caller's last voiced frame -> the reply starts
ANSWER_TIMEOUT_S = 30.0  # the reply starts -> its whole text / first audio
REPLY_END_TIMEOUT_S = 60.0  # a reply being talked over -> its end
AFTER_REPLY_S = 1.5  # how long a backchannel or noise is watched for a reply of its own
IMPORT_BATCH = 100


class EvalError(GatewayError):
    """The run cannot go on (gateway unreachable, refused credentials, bad set)."""


@dataclass(frozen=True, slots=True)
class Options:
    url: str  # http://host:port
    api_key: str | None
    out: Path
    assistant: str | None = None  # use this one as it is: no new assistant, no import
    keep: bool = False  # keep the assistant created for the run
    only: tuple[str, ...] = ()  # scenario kinds or ids
    transport: str = "v1"


def ws_url(base: str, assistant: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, "/api/v1/voice/ws",
                       f"assistant_id={quote(assistant)}", ""))


class Gateway:
    """The HTTP side: creating the assistant and importing its knowledge base."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.headers = {"x-api-key": opts.api_key} if opts.api_key else {}
        self.http = httpx.AsyncClient(base_url=opts.url, headers=self.headers,
                                      timeout=HTTP_TIMEOUT_S)
        self.created: str | None = None

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            r = await self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise EvalError(f"{method} {path}: cannot reach the gateway at "
                            f"{self.opts.url} ({type(exc).__name__})") from None
        if r.status_code in (401, 403):
            raise EvalError(f"{method} {path}: {r.status_code}: an admin API key is needed "
                            "(`gateway keys create --name eval`, then --api-key KEY)")
        if r.status_code >= 400:
            raise EvalError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        body: dict[str, Any] = r.json()
        return body

    async def setup(self, sset: ScenarioSet) -> str:
        if self.opts.assistant:
            return self.opts.assistant
        aid = f"eval-{uuid.uuid4().hex[:10]}"
        fields = {"name": f"eval: {sset.name}", **sset.assistant, "id": aid}
        await self._call("POST", "/api/v1/assistants", json=fields)
        self.created = aid
        docs = [{"title": d.title, "content": d.content} for d in sset.documents]
        for i in range(0, len(docs), IMPORT_BATCH):
            body = await self._call("POST", "/api/v1/documents/import",
                                    json={"chatModelId": aid,
                                          "documents": docs[i:i + IMPORT_BATCH]})
            bad = [d for d in body.get("documents", []) if d.get("status") != "ready"]
            if bad:
                raise EvalError(f"documents not ready after import: {bad[:3]}")
        return aid

    async def teardown(self) -> None:
        if self.created and not self.opts.keep:
            try:
                await self._call("DELETE", f"/api/v1/assistants/{self.created}")
            except EvalError:
                pass  # the report is what matters; a leftover assistant is harmless
        await self.http.aclose()


def synthesize(scenarios: list[Scenario], voices: Voices) -> dict[str, tuple[Clip, Clip | None]]:
    """Every caller's audio, made before the first call (no synthesis during a timing)."""
    try:
        return {s.id: (voices.clip(s.caller), voices.clip(s.overlay) if s.overlay else None)
                for s in scenarios}
    except (ProviderError, ValueError, OSError) as exc:
        raise EvalError(f"cannot make the callers' audio: {exc}") from None


async def run_scenario(s: Scenario, clips: tuple[Clip, Clip | None], url: str,
                       headers: dict[str, str]) -> tuple[list[Rec], Marks | None, float]:
    async with Call.open(url, headers) as call:
        log, marks = await _converse(call, s, clips)
        return log, marks, call.mic.max_lag_ms


async def _converse(call: Call, s: Scenario,
                    clips: tuple[Clip, Clip | None]) -> tuple[list[Rec], Marks | None]:
    caller, overlay = clips
    played = await call.mic.play(caller)
    marks = Marks(played.first_voiced, played.last_voiced)
    start = await call.wait(lambda r: r.t >= played.last_voiced and _type(r) == "stream_start",
                            REPLY_TIMEOUT_S)
    if start is None or start.event is None:
        return call.log, marks
    rid = start.event["response_id"]
    first_audio = await call.wait(lambda r: r.t > start.t and r.audio > 0, ANSWER_TIMEOUT_S)
    if overlay is None or first_audio is None:
        await call.wait(lambda r: _type(r) == "agent_response"
                        and r.event is not None and r.event.get("response_id") == rid,
                        ANSWER_TIMEOUT_S)
        return call.log, marks
    await asyncio.sleep(max(0.0, first_audio.t + s.at_ms / 1000 - time.monotonic()))
    if await call.wait(lambda r: _type(r) == "stream_end" and r.event is not None
                       and r.event.get("response_id") == rid, 0) is not None:
        return call.log, marks  # the reply ended before the overlay's time
    o = await call.mic.play(overlay)
    marks = Marks(played.first_voiced, played.last_voiced, o.first_voiced, o.last_voiced)
    await call.wait(lambda r: _type(r) == "stream_end" and r.event is not None
                    and r.event.get("response_id") == rid, REPLY_END_TIMEOUT_S)
    if s.kind == "barge_in":
        await call.wait(lambda r: _type(r) == "agent_response" and r.event is not None
                        and r.event.get("response_id") != rid, REPLY_TIMEOUT_S)
        await call.wait(lambda r: r.audio > 0 and r.t > o.last_voiced, ANSWER_TIMEOUT_S)
    else:  # does the backchannel or noise get a reply of its own?
        await asyncio.sleep(AFTER_REPLY_S)
    return call.log, marks


def _load() -> float | None:
    """This machine's 1-minute load average (figures from a busy machine are slower)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _type(r: Rec) -> str | None:
    return None if r.event is None else str(r.event.get("type"))


def _selected(sset: ScenarioSet, only: tuple[str, ...]) -> list[Scenario]:
    if not only:
        return list(sset.scenarios)
    chosen = [s for s in sset.scenarios if s.kind in only or s.id in only]
    if not chosen:
        raise EvalError(f"no scenario matches {', '.join(only)}")
    return chosen


async def run(sset: ScenarioSet, opts: Options, progress: Any = print) -> dict[str, Any]:
    if opts.transport != "v1":
        raise EvalError(f"transport {opts.transport!r} is not supported (v1)")
    scenarios = _selected(sset, opts.only)
    progress(f"synthesizing {len(scenarios)} callers")
    clips = await asyncio.to_thread(synthesize, scenarios, Voices())
    load_before = _load()
    known = set().union(*(numbers(d.title + "\n" + d.content) for d in sset.documents))
    gw = Gateway(opts)
    started, t0 = datetime.now(UTC), time.monotonic()
    results: list[Result] = []
    try:
        aid = await gw.setup(sset)
        url = ws_url(opts.url, aid)
        for i, s in enumerate(scenarios, 1):
            try:
                log, marks, lag = await run_scenario(s, clips[s.id], url, gw.headers)
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                res = Result(s.id, s.kind, s.caller.label, reason=f"call failed: {exc!r}"[:300])
            else:
                res = analyze(s, log, marks, known) if marks else Result(
                    s.id, s.kind, s.caller.label, reason="caller audio not sent")
                res.client_lag_ms = round(lag, 1)
            results.append(res)
            progress(f"[{i}/{len(scenarios)}] {s.kind} {s.id}: "
                     f"{'ok' if res.passed else 'FAIL ' + res.reason} "
                     f"(latency {res.latency_ms if res.latency_ms is not None else '-'} ms)")
    finally:
        await gw.teardown()
    meta = {"set": sset.name, "url": opts.url, "transport": opts.transport, "assistant": aid,
            "cpus": os.cpu_count(), "load_before": load_before, "load_after": _load(),
            "started": started.isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - t0, 1)}
    summary = report.summarize(results, meta)
    report.write(opts.out, summary, results)
    return summary
