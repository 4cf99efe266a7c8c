"""Function tools in real voice turns: speech over the WebSocket, Whisper, OpenAILLM (the
official client) against the local OpenAI-format server answering with tool calls, a
webhook on a real local HTTP server, Piper speaking the answer. Also the chat SSE stream
and a phone call ended by the end_call tool."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from voice_client import VoiceClient, silence, wav
from webhook_server import WebhookServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "providers"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from chat_helpers import make_key, parse_sse
from openai_server import LocalOpenAIServer
from test_twilio import PhoneCall, stream_url

KB_PASSAGE = "The gateway is a voice server for browsers and kiosks."
QUERY_SCHEMA = {"type": "object", "required": ["query"],
                "properties": {"query": {"type": "string", "description": "the question"}}}


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as server:
        yield server


@pytest.fixture
def openai_llm(llm_server: LocalOpenAIServer) -> Iterator[LocalOpenAIServer]:
    llm_server.reset()
    yield llm_server
    llm_server.reset()


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


def tool_gateway(gateway_factory: Any, upstream: LocalOpenAIServer, **sections: Any) -> Any:
    """A gateway whose LLM is OpenAILLM on the local server, in its tool-calling mood."""
    return gateway_factory(
        llm={"provider": "openai", "base_url": upstream.base_url, "api_key": upstream.api_key,
             "model": "tools", "first_token_timeout_s": 10, "total_timeout_s": 30},
        knowledge={"top_k": 1}, **sections)


async def set_tools(gw: Any, tools: list[Any]) -> None:
    """Declare the default assistant's tools through the assistants API (admin key)."""
    key = await make_key(gw)
    async with httpx.AsyncClient(base_url=gw.base,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        resp = await http.patch("/api/v1/assistants/default", json={"tools": tools})
    assert resp.status_code == 200, resp.text


async def voice_turn(gw: Any) -> tuple[VoiceClient, str]:
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    await client.stream(wav("what_is_the_gateway.wav") + silence(600), speed=3.0)
    end = await client.wait_for("stream_end", timeout=90)
    await client.close()
    return client, end["response_id"]


def assert_tool_order(client: VoiceClient, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """tool_start, then tool_end, both before the spoken answer; returns both events."""
    types = client.types()
    start, end = first(client, "tool_start"), first(client, "tool_end")
    assert start["name"] == end["name"] == name
    assert start["tool_call_id"] == end["tool_call_id"]
    assert (types.index("stream_start") < types.index("tool_start") < types.index("tool_end")
            < types.index("token") < types.index("tts_start") < types.index("<audio>")), types
    assert end["ok"] is True and end["duration_ms"] >= 0
    return start, end


async def stored_tools(gw: Any, conversation_id: str) -> list[dict[str, Any]]:
    key = await make_key(gw)  # conversations are read with a key (anonymous callers see none)
    async with httpx.AsyncClient(base_url=gw.base,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        for _ in range(50):  # voice turns are written in the background
            resp = await http.get(f"/api/conversation/{conversation_id}/messages")
            replies = [m for m in resp.json().get("messages", []) if m["role"] == "assistant"]
            if replies:
                return list(replies[-1]["metadata"].get("tools", []))
            await asyncio.sleep(0.1)
    raise AssertionError("the voice turn was not stored")


def first(client: VoiceClient, kind: str) -> dict[str, Any]:
    found = client.events(kind)
    assert found, f"no {kind}: {client.types()[-40:]}"
    return found[0]


async def test_webhook_tool_in_a_voice_turn(gateway_factory, openai_llm, hooks) -> None:
    gw = tool_gateway(gateway_factory, openai_llm)
    await set_tools(gw, [{"type": "webhook", "name": "parcel_status",
                          "description": "Where the caller's parcel is",
                          "parameters": QUERY_SCHEMA, "url": hooks.url("/echo"),
                          "headers": {"Authorization": "Bearer hook-secret"}}])
    client, rid = await voice_turn(gw)

    final = [e for e in client.events("transcription") if e["final"]][0]
    start, end = assert_tool_order(client, "parcel_status")
    assert start["arguments"] == {"query": final["text"]}
    assert start["response_id"] == end["response_id"] == rid
    hit = hooks.hits[-1]
    assert hit.body == {"query": final["text"]}
    assert hit.headers["authorization"] == "Bearer hook-secret"
    assert hooks.answer in end["result_summary"]
    # The result went back to the model, and its answer is what was spoken.
    follow = openai_llm.requests[-1].messages
    assert follow[-1]["role"] == "tool" and hooks.answer in follow[-1]["content"]
    reply = client.events("agent_response")[0]["text"]
    assert hooks.answer in reply
    words = " ".join(w["word"] for e in client.events("word_timing") for w in e["words"])
    assert "parcel arrives on friday" in words.lower()
    assert client.audio_between("tts_start", "tts_complete", rid)
    session = client.events("session_started")[0]
    tools = await stored_tools(gw, session["conversation_id"])
    assert [t["name"] for t in tools] == ["parcel_status"] and tools[0]["ok"]


async def test_knowledge_base_tool_in_a_voice_turn(gateway_factory, openai_llm) -> None:
    gw = tool_gateway(gateway_factory, openai_llm, tools={"enabled": ["search_knowledge_base"]})
    client, _ = await voice_turn(gw)

    start, end = assert_tool_order(client, "search_knowledge_base")
    assert "gateway" in start["arguments"]["query"].lower()
    assert end["result_summary"].startswith("1 passage(s)")
    tool_msg = openai_llm.requests[-1].messages[-1]
    assert tool_msg["role"] == "tool" and KB_PASSAGE in tool_msg["content"]
    reply = client.events("agent_response")[0]["text"]
    assert KB_PASSAGE in reply


async def test_slow_tool_gets_a_spoken_filler(gateway_factory, openai_llm, hooks) -> None:
    gw = tool_gateway(gateway_factory, openai_llm, tools={"filler_after_ms": 300})
    await set_tools(gw, [{"type": "webhook", "name": "parcel_status",
                          "parameters": QUERY_SCHEMA, "url": hooks.url("/slow?s=1.5")}])
    client, _ = await voice_turn(gw)

    types = client.types()
    tokens = [e["text"] for e in client.events("token")]
    assert tokens[0] == "One moment, let me check that. "
    # The filler is heard while the tool runs: its audio starts before tool_end.
    assert types.index("tool_start") < types.index("tts_start") < types.index("tool_end")
    assert types.index("<audio>") < types.index("tool_end")
    reply = client.events("agent_response")[0]["text"]
    assert reply.startswith("One moment") and hooks.answer in reply
    assert client.events("tool_end")[0]["duration_ms"] >= 1400


async def test_failed_tool_still_answers(gateway_factory, openai_llm, hooks) -> None:
    gw = tool_gateway(gateway_factory, openai_llm)
    await set_tools(gw, [{"type": "webhook", "name": "parcel_status",
                          "parameters": QUERY_SCHEMA, "url": hooks.url("/fail")}])
    client, _ = await voice_turn(gw)
    end = client.events("tool_end")[0]
    assert end["ok"] is False and "HTTP 500" in end["result_summary"]
    assert not client.events("error")
    assert "inventory database is down" in client.events("agent_response")[0]["text"]
    assert client.events("tts_complete")


async def test_chat_sse_shows_tool_events(gateway_factory, openai_llm) -> None:
    gw = tool_gateway(gateway_factory, openai_llm, tools={"enabled": ["search_knowledge_base"]})
    headers = {"Authorization": f"Bearer {await make_key(gw)}"}
    async with httpx.AsyncClient(base_url=gw.base, timeout=60, headers=headers) as http:
        async with http.stream("POST", "/api/chat", params={"stream": "true"},
                               json={"message": "What is the gateway?"}) as resp:
            body = (await resp.aread()).decode()
        assert resp.status_code == 200
        events = parse_sse(body)
        names = [n for n, _ in events]
        assert names[:3] == ["stream_start", "tool_start", "tool_end"], names
        assert names[-2:] == ["agent_response", "stream_end"]
        assert set(names[3:-2]) == {"token"}
        start, end = events[1][1], events[2][1]
        assert start["name"] == start["tool"] == "search_knowledge_base"
        assert start["arguments"] == start["input"] == {"query": "What is the gateway?"}
        assert end["ok"] is True and end["output"] == end["result_summary"]
        assert end["tool_call_id"] == start["tool_call_id"]
        final = events[-2][1]
        assert KB_PASSAGE in final["response"]
        stored = (await http.get(
            f"/api/conversation/{final['conversation_id']}/messages")).json()["messages"]
    assert stored[-1]["metadata"]["tools"][0]["name"] == "search_knowledge_base"


async def test_end_call_tool_hangs_up_after_the_goodbye(gateway_factory, openai_llm) -> None:
    gw = tool_gateway(gateway_factory, openai_llm, tools={"enabled": ["end_call"]})
    openai_llm.reply = "Goodbye!"  # the answer after the tool result
    async with websockets.connect(stream_url(gw)) as ws:
        call = PhoneCall(ws)
        await call.start({})
        await call.speak(wav("what_is_the_gateway.wav") + silence(700))
        await call.reader  # the gateway closes the stream
    assert ws.close_code == 1000 and ws.close_reason == "call ended"
    marks = [m["mark"]["name"] for m in call.events("mark")]
    assert marks[-1] == "end_call" and marks[-2].endswith(":end"), marks
    assert call.reply_audio()  # the goodbye was said before the hang-up
    offered = [t["function"]["name"] for t in openai_llm.requests[0].body["tools"]]
    assert offered == ["end_call"]
