"""The one reply engine: its items (tokens, speech sentences, failures), its sources, and
the same answer through every path (``/api/chat``, ``/api/chat/voice``, a voice session)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from gateway.errors import ProviderError
from gateway.pipeline.reply import (
    Failed,
    Reply,
    ReplyRequest,
    SpokenSentence,
    Token,
    cited,
    paired,
    sources_of,
)
from gateway.pipeline.runtime import Runtime
from gateway.providers.base import ChatRequest, Message, Passage, ToolCall
from gateway.providers.null import NullSTT, NullTTS, NullVAD

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from chat_helpers import client, make_key, post_sse, wav_bytes
from voice_client import VoiceClient


class ScriptedLLM:
    """Says its tokens, then fails if asked to; records the requests it got."""

    name = "scripted"
    inline = True

    def __init__(self, tokens: list[str], fail: bool = False) -> None:
        self.tokens = tokens
        self.fail = fail
        self.requests: list[ChatRequest] = []

    def generate(self, request: ChatRequest) -> Iterator[str]:
        self.requests.append(request)
        yield from self.tokens
        if self.fail:
            raise ProviderError("upstream said 500")


def runtime(model: ScriptedLLM, **sections: dict[str, Any]) -> Runtime:
    cfg = Config().replace(turn={"detector": "silence"}, embedder={"provider": "null"},
                           **sections)
    return Runtime.load(cfg, overrides={"llm": model, "stt": NullSTT(), "tts": NullTTS(),
                                        "vad": NullVAD.from_config(cfg), "embedder": None})


async def collect(reply: Reply) -> list[Any]:
    async with contextlib.aclosing(reply.items()) as items:
        return [item async for item in items]


LONG = ["On Sundays the pool opens late, ", "at ten in the morning", ". Bring a towel. ",
        "Lockers take coins."]


async def test_tokens_and_speech_sentences_with_the_first_clause_cut() -> None:
    llm = ScriptedLLM(LONG)
    rt = runtime(llm)
    history = [Message("user", "Hi"), Message("assistant", "Hello!")]
    reply = Reply(rt, ReplyRequest("default", "Be brief.", history, "When does it open?",
                                   conversation_id="conv_1", speech=True))
    items = await collect(reply)
    assert [i.text for i in items if isinstance(i, Token)] == LONG
    assert reply.text == "".join(LONG)
    assert [i.text for i in items if isinstance(i, SpokenSentence)] == [
        "On Sundays the pool opens late,", "at ten in the morning.", "Bring a towel.",
        "Lockers take coins."]
    request = llm.requests[0]
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.messages[0].content == "Be brief."
    assert request.session_id == "conv_1"
    assert reply.first_token_at is not None and reply.sources == [] and reply.tools == []
    rt.close()


async def test_text_only_has_no_sentences_and_history_is_bounded() -> None:
    llm = ScriptedLLM(["Fine."])
    rt = runtime(llm, llm={"history_turns": 1})
    history = [Message("user", f"q{i}") if i % 2 == 0 else Message("assistant", f"a{i}")
               for i in range(6)]
    items = await collect(Reply(rt, ReplyRequest("default", "P", history, "now?")))
    assert items == [Token("Fine.")]
    assert [m.content for m in llm.requests[0].messages] == ["P", "q4", "a5", "now?"]
    rt.close()


async def test_a_failed_llm_is_an_item_and_what_was_said_is_still_spoken() -> None:
    rt = runtime(ScriptedLLM(["Half a sent"], fail=True))
    items = await collect(Reply(rt, ReplyRequest("default", "P", (), "q", speech=True)))
    assert items[:2] == [Token("Half a sent"), Token(" ")]  # the failover's word gap
    assert isinstance(items[2], Failed) and isinstance(items[2].error, ProviderError)
    assert items[3:] == [SpokenSentence("Half a sent")]
    rt.close()


def test_one_source_per_document_at_its_best_relevance_in_retrieval_order() -> None:
    p = [Passage("Hours", "t", "doc_b", score=0.5, document_id="doc_b", document_title="B"),
         Passage("Prices", "t", "https://x.example/a", score=0.4, document_id="doc_a",
                 document_title="A"),
         Passage("More hours", "t", "doc_b", score=0.7, document_id="doc_b",
                 document_title="B")]
    assert sources_of(p) == [
        {"title": "B", "url": None, "document_id": "doc_b", "relevance": 0.7},
        {"title": "A", "url": "https://x.example/a", "document_id": "doc_a", "relevance": 0.4}]


def test_an_answer_cites_what_it_quotes_and_i_dont_know_cites_nothing() -> None:
    hours = Passage("Hours", "We open at 9 am. But swimming caps are not required.", "d1",
                    score=0.6, document_id="d1", document_title="Hours")
    prices = Passage("Prices", "An adult swim costs 6 pounds.", "d2", score=0.5,
                     document_id="d2", document_title="Prices")
    both = [hours, prices]
    assert cited(both, "I'm sorry, I don't know that.") == []
    assert cited(both, "I don\u2019t know, sorry.") == []
    assert [s["document_id"] for s in cited(both, "Swimming caps are not required.")] == ["d1"]
    assert [s["document_id"] for s in cited(both, "An adult swim costs 6 pounds.")] == ["d2"]
    # A model's own words: everything it was given; no words yet (a tool call): the same.
    assert [s["document_id"] for s in cited(both, "You can swim from nine.")] == ["d1", "d2"]
    assert [s["document_id"] for s in cited(both, "")] == ["d1", "d2"]


@pytest.mark.slow
async def test_the_same_question_gets_the_same_answer_on_every_path(gateway) -> None:
    async with client(gateway) as http:
        resp, voice = await post_sse(
            http, "/api/chat/voice", data={"sample_rate": "16000"},
            files={"audio": ("q.wav", wav_bytes("what_is_the_gateway.wav"), "audio/wav")})
        assert resp.status_code == 200, resp.text
        question = dict(voice)["transcription"]["text"]
        by_voice = dict(voice)["agent_response"]
        by_chat = (await http.post("/api/chat", json={"message": question})).json()
        _, sse = await post_sse(http, "/api/chat", json={"message": question, "stream": True})
        by_sse = dict(sse)["agent_response"]
    session = await VoiceClient.connect(gateway.ws_url)
    await session.wait_for("session_started")
    await session.send_json({"type": "text", "text": question})
    by_session = await session.wait_for("agent_response", timeout=30)
    await session.close()
    assert by_chat["response"] and by_chat["sources"], by_chat
    assert by_chat["sources"][0].keys() == {"title", "url", "document_id", "relevance"}
    for other in (by_voice, by_sse):
        assert (other["response"], other["sources"]) == (by_chat["response"], by_chat["sources"])
    assert (by_session["text"], by_session["sources"]) == (by_chat["response"],
                                                         by_chat["sources"])


class BuggyLLM(ScriptedLLM):
    """A provider with a bug: a plain exception, which no failover turns into a
    ProviderError (the inline path), after a first word."""

    def generate(self, request: ChatRequest) -> Iterator[str]:
        yield "Well"
        raise RuntimeError("KeyError at /srv/gateway/llm.py:12")


@pytest.mark.slow
async def test_a_crashing_reply_on_the_http_paths_is_internal_error(gateway_factory) -> None:
    gw = gateway_factory(providers={"llm": BuggyLLM([])})
    async with client(gw) as http:  # its own: uvicorn closes a connection after a 500
        resp = await http.post("/api/chat", json={"message": "hours?"})
        assert resp.status_code == 500
        assert resp.json()["error"] == {"code": "INTERNAL_ERROR", "message": "internal error"}
    async with client(gw) as http:
        _, sse = await post_sse(http, "/api/chat", json={"message": "hours?", "stream": True})
        assert [n for n, _ in sse] == ["stream_start", "token", "error", "stream_end"]
        assert sse[2][1]["error"] == {"code": "INTERNAL_ERROR", "message": "internal error"}
        assert sse[3][1]["finish_reason"] == "error"
        _, voice = await post_sse(
            http, "/api/chat/voice",
            files={"audio": ("q.wav", wav_bytes("what_is_the_gateway.wav"), "audio/wav")})
        names = [n for n, _ in voice]
        assert names[0] == "transcription" and names[-1] == "stream_end", names
        assert dict(voice)["error"]["error"]["code"] == "INTERNAL_ERROR"
        assert "agent_response" not in names
    async with client(gw, await make_key(gw)) as http:
        resp = await http.post("/api/v1/chat/query",
                               json={"chatModelId": "default", "query": "hours?"})
        assert resp.status_code == 500, resp.text
        assert resp.json()["error"]["code"] == "INTERNAL_ERROR"


def test_history_pairs_tool_calls_with_their_results() -> None:
    """What an LLM API accepts: a result only after its call, a call only with all its
    results (one the client never answered becomes its words; a result whose call fell
    out of the window is dropped)."""
    asked = ToolCall("call_1", "get_weather", {"city": "Lisbon"}, '{"city": "Lisbon"}')
    unanswered = ToolCall("call_2", "get_weather", {}, "{}")
    history = [
        Message("tool", "orphan", tool_call_id="call_0"),
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(asked,)),
        Message("tool", "sunny", tool_call_id="call_1"),
        Message("assistant", "It is sunny."),
        Message("user", "And tomorrow?"),
        Message("assistant", "Let me look.", tool_calls=(unanswered,)),
        Message("user", "Never mind."),
    ]
    assert paired(history) == [history[1], history[2], history[3], history[4], history[5],
                               Message("assistant", "Let me look."), history[7]]
