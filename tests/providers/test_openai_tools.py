"""OpenAILLM with function tools, against the local OpenAI-format server: the request's
``tools``, tool-call deltas streamed in pieces, and the follow-up with the results."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from openai_server import LocalOpenAIServer

from gateway.config import Config
from gateway.providers.base import ChatRequest, Message, ToolCall, ToolSpec
from gateway.providers.openai_llm import OpenAILLM, build_messages

WEATHER = ToolSpec("get_weather", "The weather in a city",
                   {"type": "object", "required": ["city"],
                    "properties": {"city": {"type": "string"}}})
CLOCK = ToolSpec("get_current_datetime", "The time", {"type": "object", "properties": {}})
ASK = ChatRequest([Message("system", "Be brief."), Message("user", "Paris")],
                  tools=(WEATHER, CLOCK))


@asynccontextmanager
async def llm_for(server: LocalOpenAIServer) -> AsyncIterator[OpenAILLM]:
    provider = OpenAILLM.from_config(Config().replace(llm={
        "provider": "openai", "base_url": server.base_url, "api_key": server.api_key,
        "model": "tools", "first_token_timeout_s": 2, "total_timeout_s": 5}))
    try:
        yield provider
    finally:
        await provider.aclose()


async def test_streamed_tool_calls_are_put_together(openai_server: LocalOpenAIServer) -> None:
    openai_server.tool_plan = [("get_weather", {"city": "Paris, France"}),
                               ("get_current_datetime", {})]
    async with llm_for(openai_server) as llm:
        items = [item async for item in llm.stream(ASK)]
    assert [type(i) for i in items] == [ToolCall, ToolCall]
    weather, clock = items
    assert isinstance(weather, ToolCall) and isinstance(clock, ToolCall)
    assert weather.name == "get_weather" and weather.arguments == {"city": "Paris, France"}
    assert weather.id.startswith("call_") and weather.id != clock.id
    assert json.loads(weather.raw_arguments) == weather.arguments
    assert clock.arguments == {} and not clock.arguments_invalid
    sent = openai_server.last.body
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description":
                                          "The weather in a city",
                                          "parameters": dict(WEATHER.parameters)}},
        {"type": "function", "function": {"name": "get_current_datetime",
                                          "description": "The time",
                                          "parameters": {"type": "object", "properties": {}}}}]
    assert openai_server.last.wait() == "completed"  # the handler ends just after its last byte


async def test_default_plan_fills_string_arguments(openai_server: LocalOpenAIServer) -> None:
    async with llm_for(openai_server) as llm:
        items = [item async for item in llm.stream(ASK)]
    assert items == [ToolCall(items[0].id, "get_weather", {"city": "Paris"},  # type: ignore
                              '{"city": "Paris"}')]


async def test_results_go_back_and_are_used(openai_server: LocalOpenAIServer) -> None:
    call = ToolCall("call_abc", "get_weather", {"city": "Paris"}, '{"city":"Paris"}')
    follow = ChatRequest([*ASK.messages, Message("assistant", "", tool_calls=(call,)),
                          Message("tool", '{"forecast": "sunny, 24 C"}',
                                  tool_call_id="call_abc", name="get_weather")],
                         tools=ASK.tools)
    async with llm_for(openai_server) as llm:
        text = "".join([t async for t in llm.stream(follow) if isinstance(t, str)])
    assert text == "Here is what I found: sunny, 24 C"
    messages = openai_server.last.messages
    assert messages[-2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_abc",
                            "content": '{"forecast": "sunny, 24 C"}'}


async def test_no_tools_no_tools_field(openai_server: LocalOpenAIServer) -> None:
    async with llm_for(openai_server) as llm:
        text = "".join([t async for t in llm.stream(ChatRequest(ASK.messages))
                        if isinstance(t, str)])
    assert text == "Echo: Paris" and "tools" not in openai_server.last.body


def test_bad_arguments_are_flagged() -> None:
    call = ToolCall("c", "get_weather", {}, '{"city": ')
    assert call.arguments_invalid
    built = build_messages([Message("assistant", "Checking.", tool_calls=(call,))], ())
    assert built[0]["tool_calls"][0]["function"]["arguments"] == '{"city": '  # type: ignore
