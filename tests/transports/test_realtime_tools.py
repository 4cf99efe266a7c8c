"""Client-side function calling on ``/v1/realtime`` with the official ``openai`` client:
a spoken question, the gateway's LLM (OpenAILLM against the local chat-completions
server, in its tool-calling mood) calls the CLIENT's function, the client runs it and
sends the output, and the spoken answer uses it. Every server event validates against
the SDK's models (``Recorder``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_realtime import VAD_SESSION, Recorder, connect, speech

from gateway.audio import pcm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "providers"))
from openai_server import LocalOpenAIServer

WEATHER = {"type": "function", "name": "get_weather",
           "description": "The weather forecast for a city.",
           "parameters": {"type": "object", "required": ["city"],
                          "properties": {"city": {"type": "string"}}}}
FORECAST = "sunny and twenty one degrees"


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as server:
        yield server


@pytest.fixture
def upstream(llm_server: LocalOpenAIServer) -> Iterator[LocalOpenAIServer]:
    llm_server.reset()
    yield llm_server
    llm_server.reset()


def tool_gateway(gateway_factory: Any, upstream: LocalOpenAIServer, **sections: Any) -> Any:
    return gateway_factory(
        llm={"provider": "openai", "base_url": upstream.base_url, "api_key": upstream.api_key,
             "model": "tools", "first_token_timeout_s": 10, "total_timeout_s": 30},
        **{"tools": {"enabled": []}, **sections})


async def call_and_answer(conn: Any, rec: Recorder, done_count: int = 1) -> tuple[Any, Any]:
    """The spoken question's response (a function call), then the client's output and
    response.create; returns both response.done events."""
    asked = await rec.wait("response.done", count=done_count, timeout=90)
    call = next(i for i in asked.response.output if i.type == "function_call")
    args = json.loads(call.arguments)
    await conn.conversation.item.create(item={
        "type": "function_call_output", "call_id": call.call_id,
        "output": json.dumps({"city": args.get("city"), "forecast": FORECAST})})
    await conn.response.create()
    answered = await rec.wait("response.done", count=done_count + 1, timeout=90)
    return asked, answered


async def test_spoken_question_calls_the_clients_function(gateway_factory, upstream) -> None:
    gw = tool_gateway(gateway_factory, upstream)
    async with await connect(gw) as conn:
        rec = Recorder(conn)
        await rec.wait("session.created")
        await conn.session.update(session={**VAD_SESSION, "tools": [WEATHER],
                                           "tool_choice": "auto"})
        await rec.wait("session.updated")
        await rec.speak(speech("what_is_the_gateway.wav"))
        asked, answered = await call_and_answer(conn, rec)
    heard = (await rec.wait("conversation.item.input_audio_transcription.completed")).transcript
    # The call: an output item of type function_call, its JSON arguments streamed.
    assert asked.response.status == "completed"
    assert [i.type for i in asked.response.output] == ["function_call"]
    call = asked.response.output[0]
    done = await rec.wait("response.function_call_arguments.done")
    assert (done.call_id, done.name, done.item_id) == (call.call_id, "get_weather", call.id)
    assert json.loads(done.arguments) == {"city": heard}  # the model's own JSON text
    assert "".join(d.delta for d in rec.of("response.function_call_arguments.delta")) \
        == done.arguments
    added = [e for e in rec.of("response.output_item.added") if e.item.type == "function_call"]
    assert added and added[0].output_index == 0 and added[0].item.call_id == call.call_id
    assert not rec.audio(asked.response.id)  # nothing was said before the call
    # The answer: spoken, from the client's output.
    assert answered.response.status == "completed"
    message = answered.response.output[0]
    assert message.type == "message" and FORECAST in message.content[0].transcript
    assert pcm.rms_dbfs(rec.audio(answered.response.id)) > -35
    # What the model was sent the second time: the call and the client's result.
    sent = upstream.last.messages
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "tool"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[-1]["tool_call_id"] == call.call_id and FORECAST in sent[-1]["content"]
    assert [t["function"]["name"] for t in upstream.requests[0].body["tools"]] == ["get_weather"]


async def test_server_tools_run_in_the_gateway_beside_the_clients(gateway_factory,
                                                                  upstream) -> None:
    """One round asks for the assistant's knowledge-base search and the client's function:
    the gateway runs its own, the client gets only its own; both results reach the model."""
    gw = tool_gateway(gateway_factory, upstream,
                      tools={"enabled": ["search_knowledge_base"]})
    upstream.tool_plan = [("search_knowledge_base", {"query": "what is the gateway"}),
                          ("get_weather", {"city": "Lisbon"})]
    async with await connect(gw) as conn:
        rec = Recorder(conn)
        await rec.wait("session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "tools": [WEATHER]})
        await rec.wait("session.updated")
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Weather in Lisbon?"}]})
        await conn.response.create()
        asked, answered = await call_and_answer(conn, rec)
    assert [(i.type, i.name) for i in asked.response.output] == [("function_call",
                                                                  "get_weather")]
    assert json.loads(asked.response.output[0].arguments) == {"city": "Lisbon"}
    assert FORECAST in answered.response.output[0].content[0].text
    sent = upstream.last.messages
    assert [m["role"] for m in sent[-4:]] == ["user", "assistant", "tool", "tool"]
    assert [c["function"]["name"] for c in sent[-3]["tool_calls"]] == [
        "search_knowledge_base", "get_weather"]
    assert "voice server" in sent[-2]["content"]  # the gateway's own search result
    assert FORECAST in sent[-1]["content"]


async def test_llm_without_tools_says_so_once(gateway) -> None:
    async with await connect(gateway) as conn:
        rec = Recorder(conn)
        await rec.wait("session.created")
        for _ in range(2):
            await conn.session.update(session={"type": "realtime", "tools": [WEATHER]})
        await rec.wait("session.updated", count=2)
        await conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        await rec.wait("session.updated", count=3)
        told = await rec.wait("error")
    assert len(rec.of("error")) == 1
    assert told.error.code == "tools_not_supported" and told.error.param == "session.tools"
    assert "cannot call functions" in told.error.message
