"""Function tools: which tools a turn offers the LLM, running its calls, and the loop
that feeds the results back until the model answers in words.

Tools are declared per assistant (its ``tools`` column), a list of
``{"type": "builtin", "name": ...}`` and ``{"type": "webhook", "name", "description",
"parameters" (JSON schema), "url", "timeout_s", "headers"}``; an assistant that declares
none gets the built-ins named in ``[tools] enabled``. The runtime owns one ``ToolRunner``;
each turn asks it for a ``Toolbox`` and drives a ``ToolLoop``, shared by the voice session
and the chat engine. Every call runs under its own timeout, concurrently with the turn's
other calls; a call that fails (bad arguments, timeout, HTTP error) gives the model an
``{"error": ...}`` result, never a dead turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from gateway.config import Config, ToolsConfig
from gateway.providers.base import ChatRequest, Message, ToolCall, ToolSpec

from . import tool_kinds as kinds
from .events import Handoff
from .tool_kinds import Output, Tool, ToolContext, ToolFailure

log = structlog.get_logger("gateway.tools")

SUMMARY_CHARS = 200  # tool_end's result_summary
MAX_CALLS_PER_ROUND = 8  # a model asking for more at once gets the first ones run
STORED_RESULT_CHARS = 2000  # a result as kept in the conversation's message meta
DECLARATIONS_TIMEOUT_S = 1.0

__all__ = ["ClientCalls", "Filler", "Output", "Tool", "ToolContext", "ToolEvent", "ToolFailure",
           "ToolLoop", "ToolResult", "ToolRunner", "Toolbox", "validate_declarations"]


@dataclass(frozen=True, slots=True)
class ToolResult:
    ok: bool
    content: str  # what the model reads: JSON text (or the webhook's plain text), bounded
    summary: str  # a short version for tool_end
    duration_ms: float
    signal: Handoff | None = None  # end_call / transfer_call, for the transport


class Toolbox:
    """The tools one session may use, by name."""

    def __init__(self, tools: Iterable[Tool], ctx: ToolContext, max_result_chars: int) -> None:
        self.tools = {t.spec.name: t for t in tools}
        self.ctx = ctx
        self.max_result_chars = max_result_chars

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(t.spec for t in self.tools.values())

    def __bool__(self) -> bool:
        return bool(self.tools)

    async def run(self, call: ToolCall) -> ToolResult:
        """One call, checked against its schema and bounded by its timeout."""
        started = time.perf_counter()
        try:
            out = await self._run(call)
        except ToolFailure as exc:
            return self._result(False, {"error": str(exc)}, started)
        except Exception as exc:  # a bug in a tool must not end the turn
            log.error("tool_crashed", tool=call.name, exc_info=exc)
            return self._result(False, {"error": f"{call.name} failed"}, started)
        return self._result(True, out.value, started, out.summary, out.signal)

    async def _run(self, call: ToolCall) -> Output:
        tool = self.tools.get(call.name)
        if tool is None:
            raise ToolFailure(f"there is no tool named {call.name!r}")
        if call.arguments_invalid:
            raise ToolFailure("the arguments are not a JSON object")
        problem = tool.check(call.arguments)
        if problem:
            raise ToolFailure(f"invalid arguments: {problem}")
        try:
            async with asyncio.timeout(tool.timeout_s):
                return await tool.handler(call.arguments, self.ctx)
        except TimeoutError:
            raise ToolFailure(f"{call.name} timed out after {tool.timeout_s:g} s") from None

    def _result(self, ok: bool, value: Any, started: float, summary: str | None = None,
                signal: Handoff | None = None) -> ToolResult:
        content = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                                   default=str)
        if len(content) > self.max_result_chars:
            content = content[: self.max_result_chars] + " …[truncated]"
        return ToolResult(ok, content, _clip(summary or content, SUMMARY_CHARS),
                          round((time.perf_counter() - started) * 1000.0, 1), signal)


class ToolRunner:
    """Owned by the runtime: resolves each session's tools and holds the HTTP client
    webhook calls share."""

    def __init__(self, cfg: Config) -> None:
        self.cfg: ToolsConfig = cfg.tools
        # Set by the app once the database is up: async (assistant_id) -> declared list.
        self.declarations: Callable[[str], Awaitable[list[Any] | None]] | None = None
        self._http: httpx.AsyncClient | None = None

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            # No redirects: a webhook answers at the URL it was declared with.
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def toolbox(self, ctx: ToolContext, declared: Sequence[Any] | None = None) -> Toolbox:
        """The tools of ``ctx.assistant_id`` (``declared``: its list, already loaded)."""
        if declared is None:
            declared = await self._load(ctx.assistant_id)
        return self.build(declared, ctx)

    def build(self, declared: Sequence[Any], ctx: ToolContext) -> Toolbox:
        items = list(declared) or [{"type": "builtin", "name": n} for n in self.cfg.enabled]
        tools, problems = kinds.parse(items, self.cfg, self.http)
        if problems:
            log.warning("tool_declarations_skipped", assistant_id=ctx.assistant_id,
                        problems=problems[:5])
        usable = [t for t in tools if ctx.telephony or not t.telephony_only]
        return Toolbox(usable, ctx, self.cfg.max_result_chars)

    async def _load(self, assistant_id: str) -> list[Any]:
        if self.declarations is None:
            return []
        try:
            async with asyncio.timeout(DECLARATIONS_TIMEOUT_S):
                return list(await self.declarations(assistant_id) or [])
        except Exception as exc:  # the configured defaults then, never a failed turn
            log.warning("tool_declarations_not_loaded", error=str(exc))
            return []


def validate_declarations(items: Sequence[Any], cfg: Config | None = None) -> list[str]:
    """What is wrong with an assistant's ``tools`` list ([] when it is usable)."""
    _, problems = kinds.parse(list(items), (cfg or Config()).tools, lambda: None)
    return problems


# --- the LLM / tool loop ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolEvent:
    """``tool_start`` / ``tool_end`` for the client (the caller adds its ids)."""

    type: str
    data: dict[str, Any]
    signal: Handoff | None = None


@dataclass(frozen=True, slots=True)
class Filler:
    """Say this now: a tool is slow and nothing has been said yet in the turn."""

    text: str


@dataclass(frozen=True, slots=True)
class ClientCalls:
    """The reply ends here: the model called tools that belong to the client (declared by
    it, e.g. in a Realtime ``session.update``). ``calls`` is the round's every call (the
    assistant message asking for them), ``client`` those the client runs, ``results`` the
    gateway's own calls of the round, already run (their ``tool`` messages)."""

    calls: tuple[ToolCall, ...]
    client: tuple[ToolCall, ...]
    results: tuple[Message, ...]


Stream = Callable[[ChatRequest], AsyncIterator[Any]]


@dataclass
class ToolLoop:
    """One turn's LLM rounds. ``run()`` yields the reply's tokens (``str``) with
    ``ToolEvent`` and ``Filler`` items between them; ``records`` keeps the calls made."""

    stream: Stream
    request: ChatRequest
    toolbox: Toolbox
    cfg: ToolsConfig
    client: tuple[ToolSpec, ...] = ()  # the client's own function tools (it runs them)
    tool_choice: str | None = None  # for the first round (later rounds: the model's choice)
    records: list[dict[str, Any]] = field(default_factory=list)
    spoke: bool = False
    filled: bool = False

    def _offer(self, round_no: int) -> ChatRequest:
        # The last round offers no tools: the model has to answer in words.
        if round_no >= self.cfg.max_rounds:
            return dataclasses.replace(self.request, tools=())
        own = self.toolbox.specs
        names = {t.name for t in own}
        specs = (*own, *(t for t in self.client if t.name not in names))
        return dataclasses.replace(self.request, tools=specs,
                                   tool_choice=self.tool_choice if round_no == 0 else None)

    async def run(self) -> AsyncGenerator[str | ToolEvent | Filler | ClientCalls, None]:
        request = self.request
        for round_no in range(self.cfg.max_rounds + 1):
            text, calls = "", []
            rq = dataclasses.replace(self._offer(round_no), messages=request.messages)
            offer = bool(rq.tools)
            async with contextlib.aclosing(_agen(self.stream(rq))) as items:
                async for item in items:
                    if isinstance(item, ToolCall):
                        if offer:
                            calls.append(item)
                        continue
                    text += item
                    self.spoke = self.spoke or bool(item.strip())
                    yield item
            if not calls:
                return
            calls = calls[:MAX_CALLS_PER_ROUND]
            theirs = tuple(c for c in calls if c.name not in self.toolbox.tools
                           and any(t.name == c.name for t in self.client))
            own = [c for c in calls if c not in theirs]
            results: list[ToolResult | None] = [None] * len(own)
            async for event in self._run_calls(own, results):
                yield event
            if theirs:  # the client runs these; its outputs continue the conversation
                yield ClientCalls(tuple(calls), theirs, tuple(
                    Message("tool", r.content if r else '{"error": "not run"}',
                            tool_call_id=c.id, name=c.name)
                    for c, r in zip(own, results, strict=True)))
                return
            if text and not text[-1].isspace():
                yield " "  # the next round's words do not run into this round's
            request = dataclasses.replace(request, messages=[
                *request.messages, Message("assistant", text, tool_calls=tuple(calls)),
                *(Message("tool", r.content if r else '{"error": "not run"}',
                          tool_call_id=c.id, name=c.name)
                  for c, r in zip(own, results, strict=True))])

    async def _run_calls(self, calls: list[ToolCall], results: list[ToolResult | None]
                         ) -> AsyncIterator[ToolEvent | Filler]:
        for call in calls:
            yield ToolEvent("tool_start", {"tool_call_id": call.id, "name": call.name,
                                           "arguments": call.arguments})
        tasks = {asyncio.create_task(self.toolbox.run(c), name=f"tool:{c.name}"): i
                 for i, c in enumerate(calls)}
        loop = asyncio.get_running_loop()
        filler_at = loop.time() + self.cfg.filler_after_ms / 1000.0
        pending = set(tasks)
        try:
            while pending:
                wait = max(0.0, filler_at - loop.time()) if self._may_fill() else None
                done, pending = await asyncio.wait(pending, timeout=wait,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=tasks.__getitem__):
                    index = tasks[task]
                    results[index] = task.result()
                    yield self._ended(calls[index], task.result())
                if pending and self._may_fill() and loop.time() >= filler_at:
                    self.filled = True
                    yield Filler(self.cfg.filler_text)
        finally:
            for task in pending:  # the turn was cancelled (barge-in, session end)
                task.cancel()

    def _may_fill(self) -> bool:
        # Once per turn, and only while nothing has been said (a filler after words
        # would interrupt the model's own sentence).
        return not (self.filled or self.spoke) and bool(self.cfg.filler_text)

    def _ended(self, call: ToolCall, result: ToolResult) -> ToolEvent:
        self.records.append({"id": call.id, "name": call.name, "arguments": call.arguments,
                             "ok": result.ok, "duration_ms": result.duration_ms,
                             "result": _clip(result.content, STORED_RESULT_CHARS)})
        log.info("tool_called", tool=call.name, ok=result.ok, ms=result.duration_ms)
        return ToolEvent("tool_end", {"tool_call_id": call.id, "name": call.name,
                                      "result_summary": result.summary,
                                      "duration_ms": result.duration_ms, "ok": result.ok},
                         result.signal)


async def _agen(items: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    """Any async iterator as an async generator (so ``aclosing`` can close it), which
    closes the underlying stream too."""
    try:
        async for item in items:
            yield item
    finally:
        closer = getattr(items, "aclose", None)
        if closer is not None:
            await closer()


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sse_payload(event: ToolEvent) -> dict[str, Any]:
    """A tool event as the chat SSE stream sends it: the voice protocol's fields plus the
    seed's ``tool`` / ``input`` / ``output`` names."""
    data = dict(event.data)
    if event.type == "tool_start":
        return {**data, "tool": data["name"], "input": data["arguments"]}
    return {**data, "tool": data["name"], "output": data["result_summary"]}


def known_builtins() -> Mapping[str, str]:
    """Built-in tool names and what they do (for docs and the features list)."""
    return {name: b.description for name, b in kinds.BUILTINS.items()}
