"""A real local HTTP server speaking the OpenAI REST wire format, for provider tests.

Uvicorn serves a FastAPI app from a background thread on 127.0.0.1 (ephemeral port), so
the official client goes through its whole HTTP stack. Chat completions here; the audio
endpoints (transcriptions, speech) in openai_audio_routes.py, sharing ``check_auth``,
``openai_error`` and the behaviours.

Behaviour is chosen per request: ``server.behaviour`` if set, else the request's
``model`` when it names a behaviour (``"rate_limit"``), else ``"normal"``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

BEHAVIOURS = (
    "normal",  # echo reply
    "unauthorized",  # 401 as for a wrong key
    "rate_limit",  # 429 rate_limit_exceeded
    "quota",  # 429 insufficient_quota
    "server_error",  # 500
    "traceback",  # 500 whose message is a traceback naming internal paths, hosts, users
    "hang",  # accept the request, never send a byte
    "stall",  # stream `stall_after` content chunks, then go silent
    "slow",  # stream a content chunk every `token_delay_s` (or 0.05 s), for ever
    "tools",  # call the offered tools (streamed in pieces); after a tool result, echo it
)
DEFAULT_KEY = "sk-test-0123456789abcdefLOCAL"
# What a badly configured upstream answers (issue 9 reproduced it): none of it may reach
# a client.
INTERNAL_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/internal-llm/app/worker.py", line 88, in generate\n'
    "    conn = connect('postgresql://svc_llm@db-primary.internal.corp:5432/llm')\n"
    "psycopg.OperationalError: connection to db-primary.internal.corp:5432 user=svc_llm "
    "failed: could not connect to 10.0.3.17\n"
)


def openai_error(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    """An error in OpenAI's documented shape."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers={"x-request-id": _request_id()})


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def _mask(key: str) -> str:
    # How OpenAI quotes a rejected key: a few leading and trailing characters.
    return f"{key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}" if len(key) > 8 else "***"


@dataclass
class RecordedRequest:
    """One request as the server saw it. ``outcome`` is set when the handler ends."""

    path: str
    headers: dict[str, str]
    body: Any
    behaviour: str = "normal"
    outcome: str = "pending"  # completed | disconnected | released | capped | error:<status>
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def finish(self, outcome: str) -> None:
        if not self.finished.is_set():
            self.outcome = outcome
            self.finished.set()

    def wait(self, timeout: float = 2.0) -> str:
        """Block until the handler ended (or timeout); return its outcome."""
        self.finished.wait(timeout)
        return self.outcome

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


class LocalOpenAIServer:
    """``with LocalOpenAIServer() as srv: AsyncOpenAI(base_url=srv.base_url, ...)``."""

    def __init__(self, api_key: str = DEFAULT_KEY) -> None:
        self.api_key = api_key
        self.app = FastAPI()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self.reset()
        self._add_chat_routes()
        from openai_audio_routes import add_audio_routes  # here: it imports this module

        add_audio_routes(self)  # /v1/audio/transcriptions and /v1/audio/speech

    # --- knobs -------------------------------------------------------------------

    def reset(self) -> None:
        """Back to defaults between tests; frees handlers still hanging from the last one."""
        self.behaviour: str | None = None
        self.reply: str | None = None  # None: "Echo: <last user message>"
        self.token_delay_s = 0.0
        self.stall_after = 2
        self.hang_cap_s = 30.0  # hung handlers give up after this anyway
        self.echo_key_in_errors = False  # a misbehaving proxy that quotes the whole key
        self.force_usage_chunk = False  # like servers that always send usage
        # "tools": the calls to make, as (name, arguments); None: the first offered tool,
        # its string arguments filled with the last user message.
        self.tool_plan: list[tuple[str, dict[str, Any]]] | None = None
        self.tool_always = False  # call tools even after a tool result (round limits)
        with self._lock:
            self.requests.clear()
        self.release_hung()

    def release_hung(self) -> None:
        """Let every hanging or stalled handler return (their clients are gone)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._swap_release)
            except RuntimeError:  # the loop closed meanwhile: nothing is waiting
                pass

    def _swap_release(self) -> None:
        # Waiting handlers hold the old event; later requests get a fresh, unset one.
        old, self._release = self._release, asyncio.Event()
        if old is not None:
            old.set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("server not started")
        return int(self._sock.getsockname()[1])

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            return self.requests[-1]

    # --- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> LocalOpenAIServer:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only then;
        # without it Nagle + delayed ACK add ~40 ms to every reply on a kept-alive connection.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="openai-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("local OpenAI server did not start")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        assert self._server is not None and self._sock is not None
        self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
        await self._server.serve(sockets=[self._sock])

    def stop(self) -> None:
        self.release_hung()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None
        self._loop = None

    def __enter__(self) -> LocalOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- shared helpers for routes -------------------------------------------------

    async def record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        rec = RecordedRequest(request.url.path, dict(request.headers), body)
        with self._lock:
            self.requests.append(rec)
        return rec

    def check_auth(self, request: Request) -> JSONResponse | None:
        """OpenAI's 401 responses, or None when the bearer key matches."""
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        key = auth.removeprefix("Bearer ")
        if key != self.api_key:
            shown = key if self.echo_key_in_errors else _mask(key)
            return openai_error(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        return None

    async def wait_released(self) -> bool:
        """Hang until released by the test (True) or the cap passes (False)."""
        assert self._release is not None
        try:
            async with asyncio.timeout(self.hang_cap_s):
                await self._release.wait()
            return True
        except TimeoutError:
            return False

    # --- chat completions ------------------------------------------------------------

    def _add_chat_routes(self) -> None:
        @self.app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            rec = await self.record(request)
            denied = self.check_auth(request)
            if denied is not None:
                rec.finish("error:401")
                return denied
            body = rec.body if isinstance(rec.body, dict) else {}
            model = str(body.get("model", ""))
            rec.behaviour = self.behaviour or (model if model in BEHAVIOURS else "normal")
            return await self._chat_response(request, rec, body)

    async def _chat_response(
        self, request: Request, rec: RecordedRequest, body: dict[str, Any]
    ) -> Response:
        if not body.get("model") or not isinstance(body.get("messages"), list):
            rec.finish("error:400")
            return openai_error(
                400, "you must provide a model parameter", "invalid_request_error", None, "model"
            )
        early = self._error_for(rec.behaviour)
        if early is not None:
            rec.finish(f"error:{early.status_code}")
            return early
        if rec.behaviour == "hang":
            return await self._hang(request, rec)
        if body.get("stream"):
            calls = self._tool_calls(rec, body)
            return StreamingResponse(
                self._tool_sse(rec, body, calls) if calls else self._sse(rec, body),
                media_type="text/event-stream",
                headers={"x-request-id": _request_id(), "cache-control": "no-cache"},
            )
        rec.finish("completed")
        return JSONResponse(
            _completion(body, self._reply_text(body)), headers={"x-request-id": _request_id()}
        )

    def _error_for(self, behaviour: str) -> JSONResponse | None:
        if behaviour == "unauthorized":
            return openai_error(
                401,
                "Incorrect API key provided: sk-***.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if behaviour == "rate_limit":
            key_note = f" (key {self.api_key})" if self.echo_key_in_errors else ""
            return openai_error(
                429,
                f"Rate limit reached for requests{key_note}. Please try again in 1s.",
                "requests",
                "rate_limit_exceeded",
            )
        if behaviour == "quota":
            return openai_error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            )
        if behaviour == "traceback":
            return openai_error(500, INTERNAL_TRACEBACK, "server_error")
        if behaviour == "server_error":
            key_note = f" (key {self.api_key})" if self.echo_key_in_errors else ""
            return openai_error(
                500,
                f"The server had an error while processing your request{key_note}. "
                "Sorry about that!",
                "server_error",
            )
        return None

    async def _hang(self, request: Request, rec: RecordedRequest) -> Response:
        # No status line, no headers: the client sees nothing until it gives up.
        poll = asyncio.create_task(_until_disconnected(request))
        release = asyncio.create_task(self.wait_released())
        done, pending = await asyncio.wait({poll, release}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        rec.finish("disconnected" if poll in done else "released" if release.result() else "capped")
        return Response(status_code=504)

    def _reply_text(self, body: dict[str, Any]) -> str:
        if self.reply is not None:
            return self.reply
        results = _tool_results(body.get("messages", []))
        if results:  # a model that answers from what its tools returned
            return f"Here is what I found: {' '.join(results)}"
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        return f"Echo: {users[-1].get('content', '') if users else ''}"

    async def _sse(self, rec: RecordedRequest, body: dict[str, Any]) -> AsyncIterator[str]:
        chunk = _ChunkFactory(str(body["model"]))
        tokens = _tokens(self._reply_text(body))
        try:
            yield _event(chunk.make({"role": "assistant", "content": "", "refusal": None}))
            for i, token in enumerate(_forever(tokens) if rec.behaviour == "slow" else tokens):
                if rec.behaviour == "stall" and i == self.stall_after:
                    rec.finish("released" if await self.wait_released() else "capped")
                    return
                if self.token_delay_s or rec.behaviour == "slow":
                    await asyncio.sleep(self.token_delay_s or 0.05)
                yield _event(chunk.make({"content": token}))
            yield _event(chunk.make({}, finish_reason="stop"))
            include = (body.get("stream_options") or {}).get("include_usage")
            if include or self.force_usage_chunk:
                yield _event(chunk.usage(body, tokens))
            yield "data: [DONE]\n\n"
            rec.finish("completed")
        finally:
            # Starlette cancels this generator when the client goes away.
            rec.finish("disconnected")


    # --- function tools ------------------------------------------------------------------

    def _tool_calls(self, rec: RecordedRequest, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The tool calls to answer with, in OpenAI's message shape; [] for a text reply."""
        tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
        messages = body.get("messages", [])
        after_result = bool(messages) and messages[-1].get("role") == "tool"
        if rec.behaviour != "tools" or not tools or (after_result and not self.tool_always):
            return []
        plan = self.tool_plan
        if plan is None:
            first = tools[0]
            plan = [(first["name"], _fill(first.get("parameters") or {}, _last_user(body)))]
        return [{"id": f"call_{uuid.uuid4().hex[:24]}", "name": name,
                 "arguments": json.dumps(args)} for name, args in plan]

    async def _tool_sse(self, rec: RecordedRequest, body: dict[str, Any],
                        calls: list[dict[str, Any]]) -> AsyncIterator[str]:
        """As OpenAI streams tool calls: id, type and name first (empty arguments), then
        the arguments' JSON text in small pieces, then finish_reason "tool_calls"."""
        chunk = _ChunkFactory(str(body["model"]))
        try:
            yield _event(chunk.make({"role": "assistant", "content": None, "refusal": None}))
            for index, call in enumerate(calls):
                head = {"index": index, "id": call["id"], "type": "function",
                        "function": {"name": call["name"], "arguments": ""}}
                yield _event(chunk.make({"tool_calls": [head]}))
                text = call["arguments"]
                for start in range(0, len(text), 7):
                    if self.token_delay_s:
                        await asyncio.sleep(self.token_delay_s)
                    piece = {"index": index, "function": {"arguments": text[start:start + 7]}}
                    yield _event(chunk.make({"tool_calls": [piece]}))
            yield _event(chunk.make({}, finish_reason="tool_calls"))
            yield "data: [DONE]\n\n"
            rec.finish("completed")
        finally:
            rec.finish("disconnected")


def _last_user(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def _fill(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """Arguments for a JSON schema: every string property gets ``text``."""
    samples = {"string": text, "integer": 1, "number": 1.5, "boolean": True}
    props = schema.get("properties") or {}
    return {name: samples[p.get("type", "string")] for name, p in props.items()
            if p.get("type", "string") in samples}


def _tool_results(messages: list[dict[str, Any]]) -> list[str]:
    """The string values in the tool results after the last assistant message."""
    out: list[str] = []
    for msg in reversed(messages):
        if msg.get("role") != "tool":
            break
        try:
            out[:0] = _strings(json.loads(msg.get("content") or ""))
        except ValueError:
            out[:0] = [str(msg.get("content") or "")]
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [] if value is None else [str(value)]


async def _until_disconnected(request: Request) -> None:
    # The body is already read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _ChunkFactory:
    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_local",
            "service_tier": "default",
        }

    def make(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._base(), "choices": [choice]}

    def usage(self, body: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
        return {**self._base(), "choices": [], "usage": _usage(body, tokens)}


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _tokens(text: str) -> list[str]:
    # Word-sized pieces with their trailing space, like a BPE tokenizer's output joined.
    return re.findall(r"\S+\s*", text) or [""]


def _forever(tokens: list[str]) -> Iterator[str]:
    while True:
        yield from tokens


def _usage(body: dict[str, Any], tokens: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(tokens),
        "total_tokens": prompt + len(tokens),
    }


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [],
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_local",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(body, _tokens(text)),
        "service_tier": "default",
    }
