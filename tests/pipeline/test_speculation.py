"""Speculative first speech: made for the words at a pause, taken only for the very same
sentence, voice and rate, never with an LLM that could act or bill, cancelled cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import structlog

from gateway.config import Config
from gateway.pipeline.reply import Reply, ReplyRequest
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.speculation import FirstSpeech, request_for
from gateway.providers.base import ChatRequest, Speech
from gateway.providers.null import NullSTT, NullTTS, NullVAD

LOG = structlog.get_logger("test")


class Selecting:
    """An LLM like ``grounded``: says one fixed sentence, may be run ahead."""

    name = "selecting"
    inline = True
    speculative = True

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests: list[ChatRequest] = []

    def generate(self, request: ChatRequest) -> Iterator[str]:
        self.requests.append(request)
        yield self.text


def runtime(llm: Any) -> Runtime:
    cfg = Config().replace(turn={"detector": "silence"}, embedder={"provider": "null"})
    return Runtime.load(cfg, overrides={"llm": llm, "stt": NullSTT(), "tts": NullTTS(),
                                        "vad": NullVAD.from_config(cfg), "embedder": None})


class Synth:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.texts: list[str] = []
        self.delay_s = delay_s

    async def __call__(self, text: str) -> Speech:
        self.texts.append(text)
        await asyncio.sleep(self.delay_s)
        return Speech(text.encode(), 16000)


def reply(rt: Runtime, text: str = "When do you open?") -> Reply:
    return Reply(rt, request_for(ReplyRequest("default", "P", (), text, speech=True,
                                              tools=None)))


async def test_the_same_first_sentence_takes_the_speech_made_ahead_once() -> None:
    rt = runtime(Selecting("We open at nine. Closing is at six."))
    synth, first = Synth(delay_s=0.05), FirstSpeech(LOG)
    first.start((1, 0), reply(rt), "amy", 16000, synth, lambda: rt.speculative("default"))
    assert first.pending == (1, 0)
    speech = await first.prepared("We open at nine.", "amy", 16000)  # waits for it
    assert speech is not None and speech.pcm == b"We open at nine."
    assert synth.texts == ["We open at nine."]
    assert await first.prepared("We open at nine.", "amy", 16000) is None  # once
    assert first.pending is None
    rt.close()


async def test_another_sentence_voice_or_rate_gets_nothing_and_drops_it() -> None:
    rt = runtime(Selecting("We open at nine."))
    for ask in (("We open at ten.", "amy", 16000), ("We open at nine.", "joe", 16000),
                ("We open at nine.", "amy", 8000)):
        synth, first = Synth(delay_s=0.5), FirstSpeech(LOG)
        first.start((1, 0), reply(rt), "amy", 16000, synth, lambda: rt.speculative("default"))
        await asyncio.sleep(0.05)  # the sentence is known, its speech still being made
        assert await first.prepared(*ask) is None
        assert first.pending is None
    rt.close()


async def test_an_llm_that_is_not_speculative_is_never_run_ahead() -> None:
    llm = Selecting("We open at nine.")
    llm.speculative = False  # e.g. a cloud model: a billed request, tools
    rt = runtime(llm)
    synth, first = Synth(), FirstSpeech(LOG)
    first.start((1, 0), reply(rt), None, 16000, synth, lambda: rt.speculative("default"))
    assert await first.prepared("We open at nine.", None, 16000) is None
    assert llm.requests == [] and synth.texts == []
    rt.close()


async def test_a_newer_pause_or_a_close_cancels_the_speculation() -> None:
    rt = runtime(Selecting("We open at nine."))
    synth, first = Synth(delay_s=5), FirstSpeech(LOG)
    first.start((1, 0), reply(rt), None, 16000, synth, lambda: rt.speculative("default"))
    await asyncio.sleep(0.05)
    older = first._task
    first.start((1, 1), reply(rt), None, 16000, synth, lambda: rt.speculative("default"))
    await asyncio.sleep(0.05)
    assert older is not None and older.cancelled() and first.pending == (1, 1)
    first.cancel()
    assert first.pending is None
    assert await first.prepared("We open at nine.", None, 16000) is None
    rt.close()


def test_a_speculative_request_offers_no_tools() -> None:
    base = ReplyRequest("a1", "P", (), "q", tools=[{"type": "webhook"}], telephony=True,
                        client_tools=(), speech=False)
    safe = request_for(base)
    assert safe.tools == [] and not safe.telephony and safe.speech and safe.text == "q"
