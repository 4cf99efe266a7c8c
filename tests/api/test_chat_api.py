"""POST /api/chat (both seed shapes, JSON and SSE) and POST /api/chat/voice, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import socket

import numpy as np
import pytest
import soundfile as sf
from chat_helpers import (
    add_assistant,
    assert_error,
    client,
    decoded_audio,
    make_key,
    names,
    parse_sse,
    post_sse,
    wav_bytes,
)

from gateway.audio import pcm
from gateway.protocol.errors import provider_message
from gateway.store.db import Database
from gateway.store.models import ChatMessage

QUESTION = "What is the gateway?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_union_shape(body: dict) -> None:
    """Both seeds' answers: SmarterAvatar's and the Chat SDK Platform's."""
    assert {"response", "sources", "sessionId", "message", "conversation_id",
            "message_id"} <= set(body)
    assert body["response"] == body["message"] and body["response"].strip()
    for source in body["sources"]:
        assert isinstance(source["title"], str) and "url" in source


async def test_smarteravatar_shape(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        first = await http.post("/api/chat", json={
            "message": QUESTION, "sessionId": "optional-session-id", "history": []})
        assert first.status_code == 200, first.text
        body = first.json()
        assert_union_shape(body)
        assert body["sessionId"] == "optional-session-id"
        assert "gateway" in body["response"].lower()
        assert body["sources"] and body["sources"][0]["title"]
        again = (await http.post("/api/chat", json={
            "message": "Tell me about barge-in", "sessionId": "optional-session-id"})).json()
        assert again["conversation_id"] == body["conversation_id"]
        fresh = (await http.post("/api/chat", json={"message": QUESTION})).json()
        assert fresh["sessionId"] and fresh["conversation_id"] != body["conversation_id"]
        msgs = (await http.get(f"/api/conversation/{body['conversation_id']}/messages")).json()
    assert [m["role"] for m in msgs["messages"]] == ["user", "assistant"] * 2
    assert msgs["messages"][0]["content"] == QUESTION
    assert msgs["messages"][1]["id"] == body["message_id"]


async def test_platform_shape_continues_a_conversation(gateway) -> None:
    seed = {"message": "Hello, how can you help me?", "model": "gpt-4o", "user_id": "user123",
            "conversation_id": None, "system_prompt": "You are a helpful assistant."}
    async with client(gateway, await make_key(gateway)) as http:
        first = await http.post("/api/chat", json=seed)
        assert first.status_code == 200, first.text
        body = first.json()
        assert_union_shape(body)
        assert body["conversation_id"].startswith("conv_")
        assert body["message_id"].startswith("msg_")
        second = (await http.post("/api/chat", json={
            **seed, "message": QUESTION, "conversation_id": body["conversation_id"]})).json()
        assert second["conversation_id"] == body["conversation_id"]
        assert second["sessionId"] == body["sessionId"]
        listed = (await http.get("/api/conversations", params={"user_id": "user123"})).json()
    assert [c["id"] for c in listed["conversations"]] == [body["conversation_id"]]
    assert listed["conversations"][0]["message_count"] == 4
    assert listed["conversations"][0]["title"] == "Hello, how can you help me?"


async def test_model_may_name_an_assistant(gateway) -> None:
    await add_assistant(gateway, "museum", name="Museum guide", allow_anonymous=True)
    async with client(gateway, await make_key(gateway)) as http:
        by_model = (await http.post("/api/chat", json={"message": "hi", "model": "museum"}))
        by_header = await http.post("/api/chat", json={"message": "hi"},
                                    headers={"x-chat-model-id": "museum"})
        by_body = await http.post("/api/chat", json={"message": "hi", "chatModelId": "museum"})
        listed = (await http.get("/api/conversations",
                                 headers={"x-chat-model-id": "museum"})).json()
        default = (await http.get("/api/conversations")).json()
    ids = {r.json()["conversation_id"] for r in (by_model, by_header, by_body)}
    assert {c["id"] for c in listed["conversations"]} == ids
    assert default["total"] == 0


async def test_streaming_events_in_order(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        for kwargs in ({"params": {"stream": "true"}, "json": {"message": QUESTION}},
                       {"json": {"message": QUESTION, "stream": True, "sessionId": "s-1"}}):
            resp, events = await post_sse(http, "/api/chat", **kwargs)
            assert resp.status_code == 200
            seq = names(events)
            assert seq[0] == "stream_start" and seq[-2:] == ["agent_response", "stream_end"]
            assert set(seq[1:-2]) == {"token"} and len(seq) > 4
            start, final, end = events[0][1], events[-2][1], events[-1][1]
            text = "".join(d["text"] for n, d in events if n == "token")
            assert_union_shape(final)
            assert final["response"] == text.strip()
            assert final["message_id"] == start["message_id"] == end["message_id"]
            assert final["conversation_id"] == start["conversation_id"]
            assert end["finish_reason"] == "stop"
        assert final["sessionId"] == "s-1"
        stored = (await http.get(f"/api/conversation/{final['conversation_id']}/messages")).json()
    assert stored["messages"][-1]["content"] == text.strip()


async def test_acknowledged_reply_is_already_committed(gateway) -> None:
    """When agent_response arrives, another connection already sees both messages."""
    db = Database.from_config(gateway.cfg)
    try:
        async with client(gateway) as http, http.stream(
                "POST", "/api/chat?stream=true", json={"message": QUESTION}) as resp:
            buffer = ""
            async for chunk in resp.aiter_text():
                buffer += chunk
                done = [d for n, d in parse_sse(buffer) if n == "agent_response"]
                if done:
                    async with db.session() as s:
                        found = await s.get(ChatMessage, done[0]["message_id"])
                        user = await s.get(ChatMessage, done[0]["user_message_id"])
                    assert found is not None and user is not None
                    assert found.content == done[0]["response"]
                    break
            else:
                pytest.fail("no agent_response")
    finally:
        await db.close()


async def test_history_from_the_client_is_accepted(gateway) -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
               {"role": "system", "content": "ignored"}, {"role": "user", "content": ""}]
    async with client(gateway) as http:
        resp = await http.post("/api/chat", json={"message": QUESTION, "history": history})
    assert resp.status_code == 200, resp.text


async def test_request_errors(gateway) -> None:
    async with client(gateway) as http:
        body = assert_error(await http.post("/api/chat", json={"sessionId": "x"}),
                            400, "INVALID_REQUEST")
        assert "message" in body["error"]["message"]
        assert_error(await http.post("/api/chat", json={"message": "   "}), 400,
                     "INVALID_REQUEST")
        assert_error(await http.post("/api/chat", content=b"{not json",
                                     headers={"content-type": "application/json"}),
                     400, "INVALID_REQUEST")
        assert_error(await http.post("/api/chat", json={"message": "x" * 9000}), 400,
                     "INVALID_REQUEST")
        # Text PostgreSQL could not store is refused up front (not a 500).
        for bad in ({"message": "hi\u0000"}, {"message": "hi", "sessionId": "a\u0000"},
                    {"message": "hi", "context": {"k": "\u0000"}}):
            assert_error(await http.post("/api/chat", json=bad), 400, "INVALID_REQUEST")
        # An unknown conversation is not made under the client's id: a new one starts.
        unknown = await http.post("/api/chat", json={"message": "hi",
                                                     "conversation_id": "conv_nope"})
        assert unknown.status_code == 200
        assert unknown.json()["conversation_id"] not in ("conv_nope", None)
        resp, events = await post_sse(http, "/api/chat?stream=true",
                                      json={"message": "hi", "conversation_id": "conv_nope"})
        assert resp.status_code == 200 and events[0][1]["conversation_id"] != "conv_nope"
    async with client(gateway, await make_key(gateway)) as admin:
        assert_error(await admin.post("/api/chat", json={"message": "hi",
                                                         "chatModelId": "no-such-model"}),
                     404, "INVALID_MODEL_ID")


async def test_keys_are_scoped_to_their_assistant(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    await add_assistant(gw, "other")
    key_a, key_b = await make_key(gw, "default"), await make_key(gw, "other")
    async with client(gw) as anon:
        assert_error(await anon.post("/api/chat", json={"message": "hi"}), 401, "UNAUTHORIZED")
    async with client(gw, key_b) as b:
        conv = (await b.post("/api/chat", json={"message": QUESTION})).json()["conversation_id"]
        assert (await b.get(f"/api/conversation/{conv}/messages")).status_code == 200
    async with client(gw, key_a) as a:
        assert_error(await a.get(f"/api/conversation/{conv}/messages"), 404, "NOT_FOUND")
        assert_error(await a.delete(f"/api/conversation/{conv}"), 404, "NOT_FOUND")
        other = await a.post("/api/chat", json={"message": "hi", "conversation_id": conv})
        assert other.status_code == 200 and other.json()["conversation_id"] != conv
        assert_error(await a.post("/api/chat", json={"message": "hi", "chatModelId": "other"}),
                     403, "FORBIDDEN")
        mine = (await a.get("/api/conversations")).json()["conversations"]
        assert [c["id"] for c in mine] == [other.json()["conversation_id"]]
        hits = (await a.post("/api/search/messages", json={"query": "gateway"})).json()
        assert conv not in {h["conversation_id"] for h in hits["results"]}
    async with client(gw, key_b) as b:  # b's conversation got nothing of a's
        assert (await b.get(f"/api/conversation/{conv}/messages")).json()["total"] == 2


@pytest.fixture
def failing_llm_gateway(gateway_factory):
    # An OpenAI-compatible LLM on a port nobody listens on: a real connection failure.
    return gateway_factory(llm={"provider": "openai", "api_key": "sk-test",
                                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                                "first_token_timeout_s": 5, "total_timeout_s": 10})


async def test_provider_error(failing_llm_gateway) -> None:
    gw = failing_llm_gateway
    async with client(gw, await make_key(gw)) as http:
        body = assert_error(await http.post("/api/chat", json={"message": QUESTION}),
                            502, "PROVIDER_ERROR")
        assert body["error"]["message"] == provider_message("llm")  # not the provider's
        resp, events = await post_sse(http, "/api/chat", json={"message": QUESTION,
                                                                "stream": True})
        assert resp.status_code == 200
        assert names(events) == ["stream_start", "error", "stream_end"]
        assert events[1][1]["error"]["code"] == "PROVIDER_ERROR"
        assert events[2][1]["finish_reason"] == "error"
        # Nothing was acknowledged, so nothing was stored.
        assert (await http.get("/api/conversations")).json()["total"] == 0


# --- voice -----------------------------------------------------------------------------


async def voice_turn(gw, wav: bytes, **fields: str):
    async with client(gw) as http:
        return await post_sse(http, "/api/chat/voice",
                              files={"audio": ("q.wav", wav, "audio/wav")}, data=fields)


@pytest.mark.slow
async def test_voice_chat(gateway) -> None:
    resp, events = await voice_turn(gateway, wav_bytes("what_is_the_gateway.wav"),
                                    sessionId="voice-1", sample_rate="16000")
    assert resp.status_code == 200
    seq = names(events)
    assert seq[0] == "transcription" and seq[1] == "stream_start" and seq[-1] == "stream_end"
    assert "gateway" in events[0][1]["text"].lower()
    assert "token" in seq and "agent_response" in seq
    assert seq.index("tts_start") < seq.index("audio") < seq.index("tts_complete")
    assert seq.index("tts_complete") == len(seq) - 2
    assert max(i for i, n in enumerate(seq) if n == "token") < seq.index("agent_response")
    start = events[seq.index("tts_start")][1]
    assert start == {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}
    chunks = [d for n, d in events if n == "audio"]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert all(c["duration_ms"] <= 500 for c in chunks)
    audio = decoded_audio(events)
    assert len(audio) == sum(len(base64.b64decode(c["audio"])) for c in chunks)
    assert pcm.rms_dbfs(audio) > -40.0  # speech, not silence
    complete = events[seq.index("tts_complete")][1]
    assert complete["duration_ms"] == pytest.approx(pcm.duration_ms(len(audio), 16000), abs=5)
    reply = events[seq.index("agent_response")][1]
    assert reply["sessionId"] == "voice-1"
    async with client(gateway, await make_key(gateway)) as http:
        msgs = (await http.get(f"/api/conversation/{reply['conversation_id']}/messages")).json()
    assert msgs["messages"][0]["content"] == events[0][1]["text"]
    assert msgs["messages"][0]["metadata"]["source"] == "voice"
    assert msgs["messages"][1]["content"] == reply["response"]


@pytest.mark.slow
async def test_voice_chat_bad_uploads(gateway) -> None:
    async with client(gateway) as http:
        junk = {"audio": ("q.wav", b"RIFF....not audio at all", "audio/wav")}
        assert_error(await http.post("/api/chat/voice", files=junk), 400, "INVALID_REQUEST")
        assert_error(await http.post("/api/chat/voice", data={"language": "en"}), 400,
                     "INVALID_REQUEST")
        silence = pcm_wav(b"\0\0" * 16000)
        assert_error(await http.post("/api/chat/voice", files={"audio": ("s.wav", silence)}),
                     400, "INVALID_REQUEST")
        wav = wav_bytes("what_is_the_gateway.wav")
        assert_error(await http.post("/api/chat/voice", files={"audio": ("q.wav", wav)},
                                     data={"voice": "nobody"}), 400, "INVALID_REQUEST")
        huge = {"audio": ("big.wav", b"\0" * (21 * 1024 * 1024), "audio/wav")}
        resp = await http.post("/api/chat/voice", files=huge)
        assert resp.status_code in (400, 413)
        assert resp.json()["error"]["code"] == "INVALID_REQUEST"


def pcm_wav(data: bytes, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.frombuffer(data, dtype="<i2"), rate, format="WAV")
    return out.getvalue()


@pytest.mark.slow
async def test_two_voice_turns_at_once(gateway) -> None:
    """Two voice turns at once: both complete, each in its own conversation."""
    wav = wav_bytes("what_is_the_gateway.wav")
    results = await asyncio.gather(voice_turn(gateway, wav), voice_turn(gateway, wav))
    convs = set()
    for resp, events in results:
        assert resp.status_code == 200
        assert names(events)[-1] == "stream_end"
        convs.add(events[1][1]["conversation_id"])
    assert len(convs) == 2
