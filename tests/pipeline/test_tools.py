"""The tool runner and the LLM/tool loop, with webhooks on a real local HTTP server.

The LLM side here is a scripted stream (a provider is just a function from a request to
items); the OpenAI wire format of tool calls is tested in tests/providers and end to end
in tests/transports/test_voice_tools.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from webhook_server import WebhookServer

from gateway.config import Config, ConfigError
from gateway.pipeline.events import END_CALL, TRANSFER, Handoff
from gateway.pipeline.tools import (
    ClientCalls,
    Filler,
    ToolContext,
    ToolEvent,
    ToolLoop,
    ToolRunner,
    validate_declarations,
)
from gateway.providers.base import ChatRequest, Message, Passage, ToolCall, ToolSpec

ORDER_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["order_id"],
                "properties": {"order_id": {"type": "string", "pattern": "^[0-9]+$"},
                               "express": {"type": "boolean"}}}


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


def hook(hooks: WebhookServer, path: str, name: str = "order_status", **extra: Any
         ) -> dict[str, Any]:
    return {"type": "webhook", "name": name, "description": "Where an order is",
            "parameters": ORDER_SCHEMA, "url": hooks.url(path), **extra}


def runner(**tools: Any) -> ToolRunner:
    return ToolRunner(Config().replace(tools=tools) if tools else Config())


async def toolbox(declared: list[Any], telephony: bool = False, retrieve: Any = None,
                  **tools: Any) -> Any:
    ctx = ToolContext("asst_1", "sess_1", telephony, retrieve)
    return await runner(**tools).toolbox(ctx, declared)


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(f"call_{name}", name, arguments, json.dumps(arguments))


# --- the runner ------------------------------------------------------------------------


async def test_webhook_success(hooks: WebhookServer) -> None:
    box = await toolbox([hook(hooks, "/echo", headers={"Authorization": "Bearer s3cret"})])
    assert [s.name for s in box.specs] == ["order_status"]
    assert box.specs[0].parameters == ORDER_SCHEMA
    result = await box.run(call("order_status", order_id="42"))
    assert result.ok, result.content
    assert json.loads(result.content) == {"answer": hooks.answer, "got": {"order_id": "42"}}
    assert hooks.answer in result.summary and result.duration_ms > 0
    sent = hooks.hits[-1]
    assert sent.body == {"order_id": "42"}
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["authorization"] == "Bearer s3cret"
    assert sent.headers["x-gateway-assistant-id"] == "asst_1"
    assert sent.headers["x-gateway-session-id"] == "sess_1"


async def test_webhook_plain_text_and_truncation(hooks: WebhookServer) -> None:
    box = await toolbox([hook(hooks, "/text", "hours"), hook(hooks, "/big", "dump")],
                        max_result_chars=500)
    text = await box.run(call("hours", order_id="1"))
    assert text.ok and text.content == "Open until 9 pm."
    big = await box.run(call("dump", order_id="1"))
    assert big.ok and big.content.endswith("…[truncated]")
    assert len(big.content) < 600 and len(big.summary) <= 200


async def test_webhook_timeout_is_an_error_result(hooks: WebhookServer) -> None:
    box = await toolbox([hook(hooks, "/slow?s=2", timeout_s=0.3)])
    started = time.monotonic()
    result = await box.run(call("order_status", order_id="42"))
    assert time.monotonic() - started < 1.0
    assert not result.ok
    assert json.loads(result.content) == {"error": "order_status timed out after 0.3 s"}


async def test_webhook_http_error_is_an_error_result(hooks: WebhookServer) -> None:
    box = await toolbox([hook(hooks, "/fail")])
    result = await box.run(call("order_status", order_id="42"))
    assert not result.ok
    error = json.loads(result.content)["error"]
    assert "HTTP 500" in error and "inventory database is down" in error


async def test_unreachable_webhook_is_an_error_result(hooks: WebhookServer) -> None:
    box = await toolbox([{**hook(hooks, "/echo"), "url": "http://127.0.0.1:9/nothing"}])
    result = await box.run(call("order_status", order_id="42"))
    assert not result.ok and "could not be reached" in result.content


async def test_schema_violation_is_an_error_result(hooks: WebhookServer) -> None:
    box = await toolbox([hook(hooks, "/echo")])
    before = len(hooks.hits)
    for args, expected in (({}, "'order_id' is a required property"),
                           ({"order_id": "abc"}, "order_id: 'abc' does not match"),
                           ({"order_id": "1", "colour": "red"}, "Additional properties")):
        result = await box.run(call("order_status", **args))
        assert not result.ok
        assert expected in json.loads(result.content)["error"], result.content
    bad_json = await box.run(ToolCall("c1", "order_status", {}, '{"order_id": '))
    assert not bad_json.ok and "not a JSON object" in bad_json.content
    unknown = await box.run(call("launch_rocket"))
    assert not unknown.ok and "no tool named 'launch_rocket'" in unknown.content
    assert len(hooks.hits) == before  # nothing invalid was sent


async def test_builtins() -> None:
    asked: list[tuple[str, str]] = []

    async def retrieve(assistant_id: str, query: str) -> list[Passage]:
        asked.append((assistant_id, query))
        return [Passage("Parking", "Parking is\nfree for members.", "parking.md", 0.9)]

    box = await toolbox(["search_knowledge_base", {"type": "builtin", "name":
                                                   "get_current_datetime"}], retrieve=retrieve)
    found = await box.run(call("search_knowledge_base", query="parking"))
    assert found.ok and asked == [("asst_1", "parking")]
    assert json.loads(found.content) == {
        "passages": [{"title": "Parking", "text": "Parking is free for members."}]}
    assert found.summary == "1 passage(s): Parking"

    now = await box.run(call("get_current_datetime", timezone="Asia/Tokyo"))
    value = json.loads(now.content)
    assert now.ok and value["timezone"] == "Asia/Tokyo" and value["datetime"].endswith("+09:00")
    default = json.loads((await box.run(call("get_current_datetime"))).content)
    assert default["timezone"] == "UTC"
    bad = await box.run(call("get_current_datetime", timezone="Mars/Olympus"))
    assert not bad.ok and "unknown time zone" in bad.content


async def test_telephony_tools_only_on_calls() -> None:
    declared = ["end_call", {"type": "builtin", "name": "transfer_call",
                             "destination": "+15550100"}]
    assert not await toolbox(declared)  # a browser session: nothing to hang up
    box = await toolbox(declared, telephony=True)
    assert [s.name for s in box.specs] == ["end_call", "transfer_call"]
    assert "destination" not in box.specs[1].parameters["properties"]  # declared: fixed
    ended = await box.run(call("end_call", reason="caller said bye"))
    assert ended.ok and ended.signal == Handoff(END_CALL, "caller said bye")
    moved = await box.run(call("transfer_call", reason="billing"))
    assert moved.signal == Handoff(TRANSFER, "billing", "+15550100")


async def test_config_default_applies_without_declarations() -> None:
    box = await toolbox([], enabled=["get_current_datetime"])
    assert [s.name for s in box.specs] == ["get_current_datetime"]
    declared = await toolbox(["search_knowledge_base"], enabled=["get_current_datetime"])
    assert [s.name for s in declared.specs] == ["search_knowledge_base"]


def test_unknown_enabled_builtin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown built-in tool.*launch_rocket"):
        Config().replace(tools={"enabled": ["get_current_datetime", "launch_rocket"]})


def test_declaration_problems(hooks: WebhookServer) -> None:
    good = hook(hooks, "/echo")
    assert validate_declarations([good, "end_call"]) == []
    problems = validate_declarations([
        {"type": "builtin", "name": "launch_rocket"},
        {**good, "name": "has space"},
        {**good, "url": "ftp://example.com"},
        {**good, "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}},
        {**good, "parameters": {"type": "string"}},
        {**good, "timeout_s": 0},
        {**good, "headers": {"x": "a\r\nb"}},
        {"type": "ftp"}, 7, good, good,
    ])
    assert [p.split(":")[0] for p in problems] == [f"tools[{i}]" for i in (0, 1, 2, 3, 4, 5, 6,
                                                                           7, 8, 10)]
    assert "declared twice" in problems[-1]
    odd = validate_declarations([{**good, "parameters": {"type": "object", "$schema": True}}])
    assert odd == ["tools[0]: order_status: parameters is not a valid JSON schema"]


# --- the loop --------------------------------------------------------------------------


class ScriptedLLM:
    """Calls the tools it is told to while tools are offered and no result came back
    yet; then answers with the tool results it was given."""

    def __init__(self, calls: list[ToolCall], preamble: str = "") -> None:
        self.calls = calls
        self.preamble = preamble
        self.requests: list[ChatRequest] = []

    async def __call__(self, request: ChatRequest) -> AsyncIterator[str | ToolCall]:
        self.requests.append(request)
        last = request.messages[-1]
        if request.tools and last.role != "tool":
            if self.preamble:
                yield self.preamble
            for c in self.calls:
                yield c
            return
        results = [m.content for m in request.messages if m.role == "tool"]
        for word in f"Result: {' | '.join(results)}".split(" "):
            yield word + " "


def request() -> ChatRequest:
    return ChatRequest([Message("system", "Be brief."), Message("user", "Where is order 42?")])


async def drain(loop: ToolLoop) -> list[Any]:
    return [item async for item in loop.run()]


async def test_loop_runs_calls_and_feeds_results_back(hooks: WebhookServer) -> None:
    llm = ScriptedLLM([call("order_status", order_id="42"), call("get_current_datetime")])
    r = runner()
    box = await r.toolbox(ToolContext("asst_1"), [hook(hooks, "/echo"), "get_current_datetime"])
    loop = ToolLoop(llm, request(), box, r.cfg)
    items = await drain(loop)
    events = [i for i in items if isinstance(i, ToolEvent)]
    assert [(e.type, e.data["name"]) for e in events[:2]] == [
        ("tool_start", "order_status"), ("tool_start", "get_current_datetime")]
    assert {e.data["name"] for e in events[2:]} == {"order_status", "get_current_datetime"}
    assert all(e.type == "tool_end" and e.data["ok"] for e in events[2:])
    assert events[0].data["arguments"] == {"order_id": "42"}
    text = "".join(i for i in items if isinstance(i, str))
    first_token = next(n for n, i in enumerate(items) if isinstance(i, str))
    assert hooks.answer in text and items.index(events[-1]) < first_token
    # The follow-up request: the assistant's calls, then one result per call, in order.
    follow = llm.requests[1].messages
    assert follow[-3].role == "assistant" and [c.name for c in follow[-3].tool_calls] == [
        "order_status", "get_current_datetime"]
    assert [(m.role, m.tool_call_id) for m in follow[-2:]] == [
        ("tool", "call_order_status"), ("tool", "call_get_current_datetime")]
    assert sorted(r["name"] for r in loop.records) == ["get_current_datetime", "order_status"]
    assert all(r["ok"] and r["result"] for r in loop.records)
    assert not any(isinstance(i, Filler) for i in items)


async def test_slow_tool_gets_one_filler(hooks: WebhookServer) -> None:
    llm = ScriptedLLM([call("order_status", order_id="1"), call("order_status", order_id="2")])
    r = runner(filler_after_ms=150)
    box = await r.toolbox(ToolContext("a"), [hook(hooks, "/slow?s=0.6")])
    started = time.monotonic()
    items = await drain(ToolLoop(llm, request(), box, r.cfg))
    kinds = [type(i).__name__ if not isinstance(i, ToolEvent) else i.type for i in items]
    assert kinds[:4] == ["tool_start", "tool_start", "Filler", "tool_end"], kinds
    assert kinds.count("Filler") == 1
    assert items[2] == Filler("One moment, let me check that.")
    assert 0.5 < time.monotonic() - started < 1.5  # the two calls ran side by side


async def test_no_filler_once_the_model_spoke(hooks: WebhookServer) -> None:
    llm = ScriptedLLM([call("order_status", order_id="1")], preamble="Let me look. ")
    r = runner(filler_after_ms=50)
    box = await r.toolbox(ToolContext("a"), [hook(hooks, "/slow?s=0.3")])
    items = await drain(ToolLoop(llm, request(), box, r.cfg))
    assert items[0] == "Let me look. " and not any(isinstance(i, Filler) for i in items)


async def test_failed_tool_does_not_end_the_turn(hooks: WebhookServer) -> None:
    llm = ScriptedLLM([call("order_status", order_id="42")])
    r = runner()
    box = await r.toolbox(ToolContext("a"), [hook(hooks, "/slow?s=2", timeout_s=0.2)])
    loop = ToolLoop(llm, request(), box, r.cfg)
    items = await drain(loop)
    end = next(i for i in items if isinstance(i, ToolEvent) and i.type == "tool_end")
    assert end.data["ok"] is False and "timed out" in end.data["result_summary"]
    assert "timed out after 0.2 s" in "".join(i for i in items if isinstance(i, str))
    assert loop.records[0]["ok"] is False


async def test_rounds_are_bounded(hooks: WebhookServer) -> None:
    class Insistent(ScriptedLLM):
        async def __call__(self, request: ChatRequest) -> AsyncIterator[str | ToolCall]:
            self.requests.append(request)
            if request.tools:
                yield call("order_status", order_id=str(len(self.requests)))
            else:
                yield "Fine, here it is."

    llm = Insistent([])
    r = runner(max_rounds=2)
    box = await r.toolbox(ToolContext("a"), [hook(hooks, "/echo")])
    items = await drain(ToolLoop(llm, request(), box, r.cfg))
    assert [bool(rq.tools) for rq in llm.requests] == [True, True, False]
    assert items[-1] == "Fine, here it is."


async def test_cancelling_the_turn_cancels_running_tools(hooks: WebhookServer) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_retrieve(assistant_id: str, query: str) -> list[Passage]:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return []

    llm = ScriptedLLM([call("search_knowledge_base", query="x")])
    r = runner(timeout_s=30)
    box = await r.toolbox(ToolContext("a", retrieve=slow_retrieve), ["search_knowledge_base"])

    async def consume() -> None:
        async for _ in ToolLoop(llm, request(), box, r.cfg).run():
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 2)
    task.cancel()  # a barge-in
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.wait_for(cancelled.wait(), 2)


async def test_calls_per_round_are_bounded(hooks: WebhookServer) -> None:
    llm = ScriptedLLM([call("get_current_datetime") for _ in range(20)])
    r = runner()
    box = await r.toolbox(ToolContext("a"), ["get_current_datetime"])
    items = await drain(ToolLoop(llm, request(), box, r.cfg))
    starts = [i for i in items if isinstance(i, ToolEvent) and i.type == "tool_start"]
    assert len(starts) == 8
    follow = llm.requests[1].messages
    assert len(follow[-9].tool_calls) == 8 and all(m.role == "tool" for m in follow[-8:])


async def test_no_tools_means_one_plain_round() -> None:
    llm = ScriptedLLM([call("order_status", order_id="1")])
    r = runner()
    box = await r.toolbox(ToolContext("a"), [])
    items = await drain(ToolLoop(llm, request(), box, r.cfg))
    assert len(llm.requests) == 1 and llm.requests[0].tools == ()
    assert all(isinstance(i, str) for i in items)


WEATHER = ToolSpec("get_weather", "The forecast.", {"type": "object",
                                                    "properties": {"city": {"type": "string"}}})


async def test_a_client_tool_call_ends_the_reply_after_the_gateways_own() -> None:
    """One round calls a built-in and the client's function: the built-in runs here, the
    loop ends with the client's call (nothing more asked of the model)."""
    llm = ScriptedLLM([call("get_current_datetime"), call("get_weather", city="Lisbon")],
                      preamble="Let me check. ")
    r = runner()
    box = await r.toolbox(ToolContext("a"), ["get_current_datetime"])
    loop = ToolLoop(llm, request(), box, r.cfg, client=(WEATHER,), tool_choice="required")
    items = await drain(loop)
    assert len(llm.requests) == 1
    assert [t.name for t in llm.requests[0].tools] == ["get_current_datetime", "get_weather"]
    assert llm.requests[0].tool_choice == "required"
    end = items[-1]
    assert isinstance(end, ClientCalls) and not any(isinstance(i, ClientCalls)
                                                    for i in items[:-1])
    assert [c.name for c in end.calls] == ["get_current_datetime", "get_weather"]
    assert [c.name for c in end.client] == ["get_weather"]
    assert [(m.role, m.tool_call_id) for m in end.results] == [
        ("tool", "call_get_current_datetime")]
    assert [e.data["name"] for e in items if isinstance(e, ToolEvent)] == [
        "get_current_datetime", "get_current_datetime"]  # start, end: only the gateway's
    assert items[0] == "Let me check. "


async def test_tool_choice_applies_to_the_first_round_only() -> None:
    llm = ScriptedLLM([call("get_current_datetime")])
    r = runner()
    box = await r.toolbox(ToolContext("a"), ["get_current_datetime"])
    await drain(ToolLoop(llm, request(), box, r.cfg, client=(WEATHER,),
                         tool_choice="get_current_datetime"))
    assert [rq.tool_choice for rq in llm.requests] == ["get_current_datetime", None]
