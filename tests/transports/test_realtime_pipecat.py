"""Pipecat's OpenAI Realtime service (``pipecat-ai``'s ``OpenAIRealtimeLLMService``)
against the gateway, unchanged except for the URL: speech in, the client's function
called through pipecat's own function-calling machinery (``register_function``, the
context aggregators), and the spoken answer using its result. Its dependencies are
installed for the tests by ``scripts/install --test`` (the pipecat-ai wheel itself
without its own)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import test_realtime_tools as tools
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import Frame, InputAudioRawFrame, TTSAudioRawFrame, TTSTextFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from test_realtime import api_key, speech

from gateway.audio import pcm

CHUNK = 24000 * 40 // 1000 * 2  # 40 ms of 24 kHz s16le
FORECAST = tools.FORECAST
llm_server, upstream = tools.llm_server, tools.upstream  # the tool-calling model server


class Collect(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append(frame)
        await self.push_frame(frame, direction)

    def said(self) -> str:
        return "".join(f.text for f in self.frames if isinstance(f, TTSTextFrame))

    def audio(self) -> bytes:
        return b"".join(f.audio for f in self.frames if isinstance(f, TTSAudioRawFrame))


async def test_pipecat_realtime_service_calls_a_function(gateway_factory, upstream) -> None:
    gw = tools.tool_gateway(gateway_factory, upstream)
    calls: list[dict[str, Any]] = []

    async def get_weather(params: FunctionCallParams) -> None:
        calls.append(dict(params.arguments))
        await params.result_callback({"forecast": FORECAST})

    weather = FunctionSchema(name="get_weather", description="The weather forecast for a city.",
                             properties={"city": {"type": "string"}}, required=["city"])
    llm = OpenAIRealtimeLLMService(
        api_key=await api_key(gw), base_url=f"ws://127.0.0.1:{gw.cfg.server.port}/v1/realtime",
        session_properties=events.SessionProperties(
            instructions="You are a helpful voice assistant.",
            tools=ToolsSchema(standard_tools=[weather]),
            audio=events.AudioConfiguration(input=events.AudioInput(
                turn_detection=events.TurnDetection(silence_duration_ms=500)))))
    llm.register_function("get_weather", get_weather)
    context = LLMContext(messages=[], tools=ToolsSchema(standard_tools=[weather]))
    pair = LLMContextAggregatorPair(context)
    out = Collect()
    task = PipelineTask(Pipeline([pair.user(), llm, out, pair.assistant()]))
    runner = asyncio.create_task(PipelineRunner(handle_sigint=False).run(task))
    try:
        await asyncio.sleep(1.0)  # connected, session set up
        audio = speech("what_is_the_gateway.wav")
        start = time.monotonic()
        for i, off in enumerate(range(0, len(audio), CHUNK)):
            await asyncio.sleep(max(0.0, start + i * 0.04 - time.monotonic()))
            await task.queue_frame(InputAudioRawFrame(audio[off:off + CHUNK], 24000, 1))
        deadline = time.monotonic() + 60
        # The answer's words, and its first half second of speech.
        while not (FORECAST in out.said() and len(out.audio()) >= 24000) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await task.cancel()
        await asyncio.wait_for(runner, 10)
    assert calls and set(calls[0]) == {"city"}
    assert FORECAST in out.said(), out.said()
    assert pcm.rms_dbfs(out.audio()) > -35
