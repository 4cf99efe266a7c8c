"""``openai``: any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, Ollama).

Streams content deltas with the official ``openai.AsyncOpenAI`` client. Function tools
offered in the request are sent as ``tools``; the streamed ``tool_calls`` deltas are put
together (id and name first, the arguments' JSON in pieces) and yielded as ``ToolCall``
items when the choice finishes. The client retries
once on its own (429, 5xx, timeouts, connection errors) before the first byte; the
first-token and total timeouts are enforced here around every step of the stream, so a
retry sleep or a silent server can never hold a turn longer than configured.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import openai
from openai import AsyncOpenAI, AsyncStream, Omit
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolParam,
)

from gateway.config import Config

from .base import ChatRequest, Message, Passage, ProviderError, ToolCall, ToolSpec
from .openai_audio import ErrorMapper, safe_url

# Local servers ignore the key, but the client refuses to start without one.
PLACEHOLDER_KEY = "not-needed"
CONNECT_TIMEOUT_S = 5.0


class OpenAILLM:
    name = "openai"
    calls_tools = True  # offered tools reach the model (a client's function tools too)

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        first_token_timeout_s: float = 10.0,
        total_timeout_s: float = 60.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        max_retries: int = 1,
    ) -> None:
        if not base_url or not model:
            raise ProviderError("llm.base_url and llm.model must be set", retryable=False)
        if first_token_timeout_s <= 0 or total_timeout_s <= 0:
            raise ProviderError("LLM timeouts must be positive", retryable=False)
        self.model = model
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
        self._api_key = api_key or PLACEHOLDER_KEY
        self._where = safe_url(base_url)
        # The same mapping as the OpenAI speech providers: one place decides what is
        # retryable and keeps the key out of every message.
        self._errors = ErrorMapper("LLM", base_url, api_key, "llm.api_key")
        self._client = AsyncOpenAI(
            api_key=self._api_key,
            base_url=base_url,
            # openai.Timeout is httpx2.Timeout, the transport the v3 client runs on.
            # The read timeout also bounds every gap between two streamed chunks.
            timeout=openai.Timeout(
                first_token_timeout_s, connect=connect_timeout_s, read=first_token_timeout_s
            ),
            max_retries=max_retries,
        )

    @classmethod
    def from_config(cls, cfg: Config) -> OpenAILLM:
        llm = cfg.llm
        return cls(
            base_url=llm.base_url,
            model=llm.model,
            api_key=llm.api_key,
            first_token_timeout_s=llm.first_token_timeout_s,
            total_timeout_s=llm.total_timeout_s,
        )

    def __repr__(self) -> str:  # never show the key
        return f"OpenAILLM(model={self.model!r}, base_url={self._where!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | ToolCall, None]:
        """Content deltas in order, then any tool calls; closing this generator closes
        the HTTP response."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        total_deadline = start + self.total_timeout_s
        first_deadline = min(start + self.first_token_timeout_s, total_deadline)
        response: AsyncStream[ChatCompletionChunk] | None = None
        got_token = False
        calls = ToolCallAssembler()
        try:
            response = await self._step(self._create(request), first_deadline, got_token)
            while True:
                deadline = total_deadline if got_token else first_deadline
                chunk = await self._step(_next_chunk(response), deadline, got_token)
                if chunk is None:
                    break
                text = _content(chunk)
                if text:
                    got_token = True
                    yield text
                got_token = calls.add(chunk) or got_token  # a tool call is output too
                if _finished(chunk):
                    for call in calls.take():
                        yield call
            for call in calls.take():  # servers that end the stream without a finish_reason
                yield call
        finally:
            if response is not None:
                await response.close()

    async def _create(self, request: ChatRequest) -> AsyncStream[ChatCompletionChunk]:
        return await self._client.chat.completions.create(
            model=self.model,
            messages=build_messages(request.messages, request.passages),
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stream=True,
            tools=build_tools(request.tools) if request.tools else openai.omit,
            tool_choice=build_tool_choice(request) if request.tools else openai.omit,
        )

    async def _step(self, awaitable: Any, deadline: float, got_token: bool) -> Any:
        # A timeout per await, never across a ``yield``: a scope left open while the
        # consumer runs would cancel the consumer's code instead of ours.
        try:
            async with asyncio.timeout_at(deadline):
                return await awaitable
        except TimeoutError as exc:
            raise self._timeout_error(got_token) from exc
        except openai.OpenAIError as exc:
            raise self._map_error(exc) from exc
        except json.JSONDecodeError as exc:  # the client does not wrap bad SSE data
            raise ProviderError(
                f"LLM server at {self._where} sent a malformed stream", retryable=False
            ) from exc

    def _timeout_error(self, got_token: bool) -> ProviderError:
        if got_token:
            return ProviderError(
                f"LLM reply exceeded the total timeout of {self.total_timeout_s:g} s"
            )
        limit = min(self.first_token_timeout_s, self.total_timeout_s)
        return ProviderError(f"LLM sent no token within {limit:g} s (first-token timeout)")

    def _map_error(self, exc: openai.OpenAIError) -> ProviderError:
        return self._errors.map(exc)


async def _next_chunk(response: AsyncStream[ChatCompletionChunk]) -> ChatCompletionChunk | None:
    try:
        return await response.__anext__()
    except StopAsyncIteration:
        return None


def _finished(chunk: ChatCompletionChunk) -> bool:
    return bool(chunk.choices) and chunk.choices[0].finish_reason is not None


class ToolCallAssembler:
    """Streamed ``tool_calls`` deltas, by index: the id and name come in the first piece,
    the arguments' JSON text in the pieces that follow."""

    def __init__(self) -> None:
        self._parts: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def add(self, chunk: ChatCompletionChunk) -> bool:
        """Take a chunk's tool-call deltas; True if it had any."""
        if not chunk.choices:
            return False
        deltas = getattr(chunk.choices[0].delta, "tool_calls", None) or []
        for delta in deltas:
            index = delta.index if delta.index is not None else len(self._parts)
            part = self._parts.setdefault(index, ["", "", ""])
            if delta.id:
                part[0] = delta.id
            fn = delta.function
            if fn is not None:
                part[1] = part[1] or (fn.name or "")
                part[2] += fn.arguments or ""
        return bool(deltas)

    def take(self) -> list[ToolCall]:
        """The calls put together so far, in index order (and forget them)."""
        calls = [_tool_call(*self._parts[i]) for i in sorted(self._parts)]
        self._parts.clear()
        return [c for c in calls if c.name]


def _tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    try:
        decoded = json.loads(raw) if raw.strip() else {}
    except ValueError:
        decoded = {}
    arguments = decoded if isinstance(decoded, dict) else {}
    # Some compatible servers send no id; the follow-up request needs one.
    return ToolCall(call_id or f"call_{uuid.uuid4().hex[:24]}", name, arguments, raw)


def build_tools(tools: Sequence[ToolSpec]) -> list[ChatCompletionToolParam]:
    return [{"type": "function",
             "function": {"name": t.name, "description": t.description,
                          "parameters": dict(t.parameters)}}
            for t in tools]


def build_tool_choice(request: ChatRequest) -> ChatCompletionToolChoiceOptionParam | Omit:
    choice = request.tool_choice
    if choice in (None, "auto"):
        return openai.omit  # the server's default
    if choice in ("required", "none"):
        return "required" if choice == "required" else "none"
    return {"type": "function", "function": {"name": str(choice)}}


def _content(chunk: ChatCompletionChunk) -> str:
    # Role-only chunks, usage-only chunks (no choices) and reasoning deltas carry no content.
    if not chunk.choices:
        return ""
    delta = getattr(chunk.choices[0], "delta", None)
    return getattr(delta, "content", None) or ""


def build_messages(
    messages: Sequence[Message], passages: Sequence[Passage]
) -> list[ChatCompletionMessageParam]:
    """System prompt (with the passages as a numbered Facts block), history, user message."""
    system = messages[0].content if messages and messages[0].role == "system" else ""
    rest = messages[1:] if messages and messages[0].role == "system" else messages
    if passages:
        system = f"{system}\n\n{facts_block(passages)}".strip()
    out: list[ChatCompletionMessageParam] = []
    if system:
        out.append({"role": "system", "content": system})
    for msg in rest:
        if msg.role == "system":
            out.append({"role": "system", "content": msg.content})
        elif msg.role == "user":
            out.append({"role": "user", "content": msg.content})
        elif msg.role == "assistant" and msg.tool_calls:
            out.append({"role": "assistant", "content": msg.content or None,
                        "tool_calls": [_call_param(c) for c in msg.tool_calls]})
        elif msg.role == "assistant":
            out.append({"role": "assistant", "content": msg.content})
        elif msg.role == "tool" and msg.tool_call_id:
            out.append({"role": "tool", "tool_call_id": msg.tool_call_id,
                        "content": msg.content})
        # A "tool" message without its call's id cannot be sent: the API refuses it.
    return out


def _call_param(call: ToolCall) -> ChatCompletionMessageToolCallParam:
    return {"id": call.id, "type": "function",
            "function": {"name": call.name,
                         "arguments": call.raw_arguments or json.dumps(call.arguments)}}


def facts_block(passages: Sequence[Passage]) -> str:
    lines = ["Facts:"]
    for i, passage in enumerate(passages, 1):
        title = f"{passage.title}: " if passage.title else ""
        lines.append(f"{i}. {title}{' '.join(passage.text.split())}")
    return "\n".join(lines)
