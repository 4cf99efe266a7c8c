"""``hybrid`` LLM: a company's own backend answers (the SmarterAvatar "Hybrid Integration").

The gateway keeps the voice (VAD, STT, TTS, avatar); the backend owns the answers:

    POST [hybrid] url
    {"message": "<user question>", "sessionId": "<conversation id>",
     "context": {"history": [{"role", "content"}...], "passages": [{"title", "text",
                 "source", "score"}...], "systemPrompt": "..."}}

A JSON reply ``{"response": "...", "sources": [...]}`` is spoken, handed on in word-sized
tokens so the first sentence goes to TTS at once. A backend that answers
``text/event-stream`` is streamed: ``data: {"token": "..."}`` lines, or ``event: token``
events (data ``{"text"|"token"|"delta": ...}``, a JSON string or plain text), and a final
``{"response", "sources"}`` (spoken only if no token came), ``[DONE]``, or
``event: error`` / ``{"error": ...}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx

from gateway.config import Config
from gateway.redact import Redactor

from .base import ChatRequest, ProviderError
from .openai_audio import safe_url

CONNECT_TIMEOUT_S = 5.0
_MAX_DETAIL = 300
_WORDS = re.compile(r"\S+\s*")


class HybridLLM:
    name = "hybrid"

    def __init__(self, *, url: str, timeout_s: float = 30.0, api_key: str = "",
                 headers: Sequence[str] = (), connect_timeout_s: float = CONNECT_TIMEOUT_S
                 ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ProviderError("hybrid.url must be an http(s) URL", retryable=False)
        self.url = url
        self._where = safe_url(url)
        sent = parse_headers(headers)
        if api_key:
            sent["Authorization"] = f"Bearer {api_key}"
        sent["Accept"] = "text/event-stream, application/json"
        self._redactor = Redactor([api_key, *(v for k, v in sent.items() if k != "Accept")])
        self._client = httpx.AsyncClient(
            headers=sent, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            follow_redirects=False,
        )

    @classmethod
    def from_config(cls, cfg: Config) -> HybridLLM:
        h = cfg.hybrid
        return cls(url=h.url, timeout_s=h.timeout_s, api_key=h.api_key, headers=h.headers)

    def __repr__(self) -> str:  # never show the key or the headers
        return f"HybridLLM(url={self._where!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        """The backend's reply as tokens; closing this generator closes the response."""
        try:
            async with self._client.stream("POST", self.url, json=request_body(request)) as rsp:
                if rsp.status_code >= 400:
                    await rsp.aread()
                    raise self._status_error(rsp)
                if rsp.headers.get("content-type", "").startswith("text/event-stream"):
                    async for token in self._sse_tokens(rsp):
                        yield token
                    return
                await rsp.aread()
                for token in _WORDS.findall(self._json_reply(rsp)):
                    yield token
        except httpx.TimeoutException as exc:
            raise ProviderError(f"hybrid backend at {self._where} timed out") from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"cannot reach hybrid backend at {self._where} "
                                f"({type(exc).__name__})") from exc

    def _json_reply(self, rsp: httpx.Response) -> str:
        try:
            body = rsp.json()
        except ValueError:
            raise ProviderError(f"hybrid backend at {self._where} answered with no JSON",
                                retryable=False) from None
        if not isinstance(body, dict) or not isinstance(body.get("response"), str):
            raise ProviderError(f"hybrid backend at {self._where} answered without a "
                                "\"response\" text", retryable=False)
        return str(body["response"])

    async def _sse_tokens(self, rsp: httpx.Response) -> AsyncIterator[str]:
        spoke = False
        async for event, data in sse_events(rsp.aiter_lines()):
            if data.strip() == "[DONE]" or event in ("done", "end"):
                return
            value = _decode(data)
            if event == "error" or (isinstance(value, dict) and value.get("error")):
                raise self._stream_error(value)
            if isinstance(value, dict) and isinstance(value.get("response"), str):
                if not spoke:  # a final answer with no tokens before it
                    for token in _WORDS.findall(value["response"]):
                        yield token
                return
            token = _token(event, value)
            if token:
                spoke = True
                yield token

    def _scrub(self, text: str) -> str:
        return self._redactor.scrub(text)[:_MAX_DETAIL]

    def _status_error(self, rsp: httpx.Response) -> ProviderError:
        status = rsp.status_code
        detail = _message(_decode(rsp.text)) or rsp.reason_phrase
        if status in (401, 403):
            detail = "the backend refused the gateway's credentials; check hybrid.api_key"
        retryable = status in (408, 409, 425, 429) or status >= 500
        return ProviderError(f"hybrid backend returned HTTP {status}: {self._scrub(detail)}",
                             retryable=retryable)

    def _stream_error(self, value: Any) -> ProviderError:
        return ProviderError(f"hybrid backend stream error: "
                             f"{self._scrub(_message(value) or 'unknown error')}")


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The SmarterAvatar shape: the question, the session, and the context around it."""
    messages = list(request.messages)
    system = messages[0].content if messages and messages[0].role == "system" else ""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    history = [{"role": m.role, "content": m.content} for i, m in enumerate(messages)
               if m.role in ("user", "assistant") and m.content and i != last_user]
    passages = [{"title": p.title, "text": p.text, "source": p.source, "score": p.score}
                for p in request.passages]
    context: dict[str, Any] = {"history": history, "passages": passages}
    if system:
        context["systemPrompt"] = system
    return {"message": request.question, "sessionId": request.session_id, "context": context}


def parse_headers(entries: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, value = entry.partition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) per server-sent event ("message" when it has no name)."""
    event, data = "", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
        elif not line.startswith(":"):  # ":" lines are comments (keep-alives)
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event or "message", "\n".join(data)


def _decode(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


def _token(event: str, value: Any) -> str:
    if isinstance(value, dict):
        for key in ("token", "text", "delta", "content"):
            if isinstance(value.get(key), str):
                return str(value[key])
        return ""
    if isinstance(value, str) and event in ("message", "token"):
        return value
    return ""


def _message(value: Any) -> str:
    if isinstance(value, dict):
        inner = value.get("error", value)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("detail") or "")
        return str(inner or value.get("message") or "")
    return str(value or "")[:_MAX_DETAIL]
